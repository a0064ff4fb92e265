//! `/proc/PID/status` (and `/proc/PID/task/TID/status`): `Key:\tvalue` lines.
//!
//! Signal and capability masks are hexadecimal; the Name is the task's comm
//! with `\n` and `\\` escaped by the kernel (undone here).

use super::{dec, hex64, read_parsed, ParseError, Pid, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The comm, unescaped.
    pub name: String,
    /// None for tasks without an fs_struct (kernel threads).
    pub umask: Option<u32>,
    /// The state letter (`R` of `R (running)`).
    pub state: char,
    pub tgid: Pid,
    pub ngid: Pid,
    pub pid: Pid,
    pub ppid: Pid,
    pub tracer_pid: Pid,
    /// real, effective, saved, filesystem.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub fd_size: u64,
    pub groups: Vec<u32>,
    /// One entry per pid namespace, outermost (the reader's) first.
    pub ns_tgid: Vec<i32>,
    pub ns_pid: Vec<i32>,
    pub ns_pgid: Vec<i32>,
    pub ns_sid: Vec<i32>,
    /// `Kthread:` (6.x kernels); None when the line is absent.
    pub kthread: Option<bool>,
    pub threads: u32,
    /// (queued, limit).
    pub sig_q: (u64, u64),
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// SECCOMP_MODE_*: 0 disabled, 1 strict, 2 filter.
    pub seccomp: u32,
    pub seccomp_filters: u32,
    pub speculation_store_bypass: String,
    pub speculation_indirect_branch: String,
    /// `THP_enabled:` (false after PR_SET_THP_DISABLE); None when absent.
    pub thp_enabled: Option<bool>,
    pub core_dumping: bool,
    pub cpus_allowed_list: String,
    pub mems_allowed_list: String,
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
    /// Every line not decoded into a field above (VmRSS, untag_mask ...),
    /// as (key, trimmed value).
    pub other: Vec<(String, String)>,
}

/// Undo the kernel's escaping of the Name line (`\n` -> "\\n", `\` -> "\\\\";
/// also the other ESCAPE_SPACE/ESCAPE_SPECIAL sequences for safety).
pub fn unescape_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('a') => out.push('\x07'),
            Some('e') => out.push('\x1b'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn ids<T: std::str::FromStr>(v: &str, key: &str) -> Result<Vec<T>, String> {
    v.split_ascii_whitespace().map(|w| dec(w, key)).collect()
}

fn id4(v: &str, key: &str) -> Result<[u32; 4], String> {
    let x: Vec<u32> = ids(v, key)?;
    x.try_into()
        .map_err(|_| format!("{key}: expected 4 ids, got {v:?}"))
}

fn flag(v: &str, key: &str) -> Result<bool, String> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("{key}: expected 0 or 1, got {v:?}")),
    }
}

pub fn parse(text: &str) -> Result<Status, ParseError> {
    let mut s = Status::default();
    // Lines that must be present.
    const REQUIRED: [&str; 21] = [
        "Name",
        "State",
        "Tgid",
        "Pid",
        "PPid",
        "TracerPid",
        "Uid",
        "Gid",
        "Threads",
        "SigQ",
        "SigPnd",
        "ShdPnd",
        "SigBlk",
        "SigIgn",
        "SigCgt",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ];
    let mut seen = [false; REQUIRED.len()];
    for (i, line) in text.split('\n').enumerate() {
        let err = |r: String| ParseError::new("status", i + 1, r);
        if line.is_empty() {
            continue;
        }
        let (key, raw) = line
            .split_once(':')
            .ok_or_else(|| err(format!("expected \"Key:\\tvalue\", got {line:?}")))?;
        if let Some(k) = REQUIRED.iter().position(|r| *r == key) {
            seen[k] = true;
        }
        let v = raw.trim();
        let r: Result<(), String> = (|| {
            match key {
                "Name" => s.name = unescape_name(raw.strip_prefix('\t').unwrap_or(raw)),
                "Umask" => s.umask = Some(super::oct32(v, key)?),
                "State" => s.state = v.chars().next().ok_or_else(|| "empty State".to_string())?,
                "Tgid" => s.tgid = dec(v, key)?,
                "Ngid" => s.ngid = dec(v, key)?,
                "Pid" => s.pid = dec(v, key)?,
                "PPid" => s.ppid = dec(v, key)?,
                "TracerPid" => s.tracer_pid = dec(v, key)?,
                "Uid" => s.uid = id4(v, key)?,
                "Gid" => s.gid = id4(v, key)?,
                "FDSize" => s.fd_size = dec(v, key)?,
                "Groups" => s.groups = ids(v, key)?,
                "NStgid" => s.ns_tgid = ids(v, key)?,
                "NSpid" => s.ns_pid = ids(v, key)?,
                "NSpgid" => s.ns_pgid = ids(v, key)?,
                "NSsid" => s.ns_sid = ids(v, key)?,
                "Kthread" => s.kthread = Some(flag(v, key)?),
                "Threads" => s.threads = dec(v, key)?,
                "SigQ" => {
                    let (a, b) = v
                        .split_once('/')
                        .ok_or_else(|| format!("SigQ: expected N/M, got {v:?}"))?;
                    s.sig_q = (dec(a, key)?, dec(b, key)?);
                }
                "SigPnd" => s.sig_pnd = hex64(v, key)?,
                "ShdPnd" => s.shd_pnd = hex64(v, key)?,
                "SigBlk" => s.sig_blk = hex64(v, key)?,
                "SigIgn" => s.sig_ign = hex64(v, key)?,
                "SigCgt" => s.sig_cgt = hex64(v, key)?,
                "CapInh" => s.cap_inh = hex64(v, key)?,
                "CapPrm" => s.cap_prm = hex64(v, key)?,
                "CapEff" => s.cap_eff = hex64(v, key)?,
                "CapBnd" => s.cap_bnd = hex64(v, key)?,
                "CapAmb" => s.cap_amb = hex64(v, key)?,
                "NoNewPrivs" => s.no_new_privs = flag(v, key)?,
                "Seccomp" => s.seccomp = dec(v, key)?,
                "Seccomp_filters" => s.seccomp_filters = dec(v, key)?,
                "Speculation_Store_Bypass" => s.speculation_store_bypass = v.to_string(),
                "SpeculationIndirectBranch" => s.speculation_indirect_branch = v.to_string(),
                "THP_enabled" => s.thp_enabled = Some(flag(v, key)?),
                "CoreDumping" => s.core_dumping = flag(v, key)?,
                "Cpus_allowed_list" => s.cpus_allowed_list = v.to_string(),
                "Mems_allowed_list" => s.mems_allowed_list = v.to_string(),
                "voluntary_ctxt_switches" => s.voluntary_ctxt_switches = dec(v, key)?,
                "nonvoluntary_ctxt_switches" => s.nonvoluntary_ctxt_switches = dec(v, key)?,
                _ => s.other.push((key.to_string(), v.to_string())),
            }
            Ok(())
        })();
        r.map_err(err)?;
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        return Err(ParseError::new(
            "status",
            0,
            format!("no {} line", REQUIRED[k]),
        ));
    }
    Ok(s)
}

impl Status {
    /// A line not decoded into a field (`VmRSS` -> `"1608 kB"`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `/proc/<pid>/status`.
pub fn read(pid: Pid) -> Result<Status, ProcError> {
    read_parsed(pid, "status", parse)
}

/// `/proc/<pid>/task/<tid>/status`: per-thread signal mask, credentials,
/// seccomp and capabilities.
pub fn read_task(pid: Pid, tid: Pid) -> Result<Status, ProcError> {
    read_parsed(pid, &format!("task/{tid}/status"), parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEXT: &str = "Name:\tmy \\\\odd\\nname
Umask:\t0022
State:\tS (sleeping)
Tgid:\t5179
Ngid:\t0
Pid:\t5180
PPid:\t5174
TracerPid:\t77
Uid:\t1000\t1001\t1002\t1003
Gid:\t0\t0\t0\t0
FDSize:\t256
Groups:\t4 24 27 
NStgid:\t5179\t1
NSpid:\t5180\t2
NSpgid:\t5174\t0
NSsid:\t4039\t0
Kthread:\t0
VmRSS:\t    1608 kB
untag_mask:\t0xffffffffffffffff
Threads:\t2
SigQ:\t3/96365
SigPnd:\t0000000000000100
ShdPnd:\t0000000000000000
SigBlk:\t0000000000010000
SigIgn:\t0000000000001000
SigCgt:\t0000000180000000
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t3
Speculation_Store_Bypass:\tvulnerable
SpeculationIndirectBranch:\talways enabled
Cpus_allowed:\t3
Cpus_allowed_list:\t0-1
Mems_allowed_list:\t0
THP_enabled:\t0
voluntary_ctxt_switches:\t10
nonvoluntary_ctxt_switches:\t2
";

    #[test]
    fn fixed() {
        let s = parse(TEXT).unwrap();
        assert_eq!(s.name, "my \\odd\nname");
        assert_eq!(s.umask, Some(0o22));
        assert_eq!(s.state, 'S');
        assert_eq!(
            (s.tgid, s.pid, s.ppid, s.tracer_pid),
            (5179, 5180, 5174, 77)
        );
        assert_eq!(s.uid, [1000, 1001, 1002, 1003]);
        assert_eq!(s.gid, [0; 4]);
        assert_eq!(s.groups, [4, 24, 27]);
        assert_eq!(s.ns_tgid, [5179, 1]);
        assert_eq!(s.ns_pid, [5180, 2]);
        assert_eq!(s.ns_pgid, [5174, 0]);
        assert_eq!(s.ns_sid, [4039, 0]);
        assert_eq!(s.kthread, Some(false));
        assert_eq!(s.threads, 2);
        assert_eq!(s.sig_q, (3, 96365));
        assert_eq!(s.sig_pnd, 1 << 8);
        assert_eq!(s.sig_blk, 1 << 16);
        assert_eq!(s.sig_ign, 1 << 12);
        assert_eq!(s.sig_cgt, 0x180000000);
        assert_eq!(s.cap_eff, 0x1fffeffffff);
        assert!(s.no_new_privs);
        assert_eq!((s.seccomp, s.seccomp_filters), (2, 3));
        assert_eq!(s.speculation_store_bypass, "vulnerable");
        assert_eq!(s.speculation_indirect_branch, "always enabled");
        assert_eq!(s.cpus_allowed_list, "0-1");
        assert_eq!(s.thp_enabled, Some(false));
        assert_eq!(
            (s.voluntary_ctxt_switches, s.nonvoluntary_ctxt_switches),
            (10, 2)
        );
        assert_eq!(s.get("VmRSS"), Some("1608 kB"));
        assert_eq!(s.get("Cpus_allowed"), Some("3"));
    }

    #[test]
    fn errors() {
        let e = parse(&TEXT.replace("Gid:\t0\t0\t0\t0", "Gid:\t0\t0\t0")).unwrap_err();
        assert_eq!(e.line, 10);
        assert!(e.reason.contains("expected 4 ids"), "{e}");
        let e = parse(&TEXT.replace("SigBlk:\t0000000000010000", "SigBlk:\tzz")).unwrap_err();
        assert!(e.reason.contains("SigBlk"), "{e}");
        let e = parse(&TEXT.replace("TracerPid:\t77\n", "")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.reason.contains("TracerPid"), "{e}");
        assert!(parse("garbage\n").is_err());
        assert!(parse(&TEXT.replace("NoNewPrivs:\t1", "NoNewPrivs:\t2")).is_err());
    }

    #[test]
    fn groups_empty() {
        let s = parse(&TEXT.replace("Groups:\t4 24 27 ", "Groups:\t ")).unwrap();
        assert!(s.groups.is_empty());
        let s = parse(&TEXT.replace("Umask:\t0022\n", "")).unwrap();
        assert_eq!(s.umask, None);
    }

    #[test]
    fn self_status() {
        let me = std::process::id() as Pid;
        let s = read(me).unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.tgid, me);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(s.uid[0], nix::unistd::getuid().as_raw());
        assert_eq!(*s.ns_pid.last().unwrap(), me);
        assert!(s.threads >= 1);
        assert!(s.umask.is_some());
        assert!(s.sig_q.1 > 0);
        assert!(!s.cpus_allowed_list.is_empty());
        let t = read_task(me, me).unwrap();
        assert_eq!(t.pid, me);
    }

    proptest! {
        #[test]
        fn name_escape_roundtrip(name in "[ -~\n\\\\]{0,15}") {
            // The kernel escapes only '\n' and '\\' in the Name line.
            let esc = name.replace('\\', "\\\\").replace('\n', "\\n");
            prop_assert_eq!(unescape_name(&esc), name);
        }

        #[test]
        fn masks_roundtrip(blk: u64, cgt: u64, eff: u64) {
            let t = TEXT
                .replace("SigBlk:\t0000000000010000", &format!("SigBlk:\t{blk:016x}"))
                .replace("SigCgt:\t0000000180000000", &format!("SigCgt:\t{cgt:016x}"))
                .replace("CapEff:\t000001fffeffffff", &format!("CapEff:\t{eff:016x}"));
            let s = parse(&t).unwrap();
            prop_assert_eq!((s.sig_blk, s.sig_cgt, s.cap_eff), (blk, cgt, eff));
        }
    }
}
