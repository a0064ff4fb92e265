//! `/proc/PID/maps` and `/proc/PID/smaps`.
//!
//! A maps line is
//! `start-end perms offset major:minor inode<padding>name`, where the name
//! is free text: empty for anonymous memory, a path (which may contain
//! spaces, with newlines escaped as `\012`, and may end in ` (deleted)`),
//! or a bracketed kernel name (`[heap]`, `[vdso]`, `[anon:name]` ...).

use super::{dec, hex64, read_parsed, ParseError, Pid, ProcError};

/// One virtual memory area.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// `s` in the permissions (MAP_SHARED), `p` otherwise.
    pub shared: bool,
    /// File offset in bytes.
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The raw name field: may be empty, may contain spaces, may end with
    /// " (deleted)".
    pub name: String,
    /// Two-letter VmFlags from smaps (`rd`, `wr`, `mr`, `gd`, `ht`, `dd`,
    /// `wf`, `um`, `uw` ...); empty when parsed from maps.
    pub vm_flags: Vec<String>,
    // The following are from smaps (KiB), all 0 when parsed from maps.
    pub size: u64,
    /// Page size the kernel uses for this VMA (KiB): 4 normally, 2048 or
    /// 1048576 for hugetlbfs mappings.
    pub kernel_page_size: u64,
    pub mmu_page_size: u64,
    pub rss: u64,
    pub pss: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub anonymous: u64,
    pub anon_huge_pages: u64,
    pub swap: u64,
    pub locked: u64,
}

/// A mapping the kernel names in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecialVma {
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
    Stack,
    Heap,
    Uprobes,
    /// Any other bracketed name, brackets included (`[foo]`).
    Other(String),
}

impl Vma {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The kernel-named mappings. Named anonymous memory (`[anon:NAME]`,
    /// `[anon_shmem:NAME]`, from PR_SET_VMA_ANON_NAME) is *not* special:
    /// it is ordinary anonymous or shared-anonymous memory, see
    /// [`Vma::anon_name`].
    pub fn is_special(&self) -> Option<SpecialVma> {
        let n = self.name.as_str();
        if !(n.starts_with('[') && n.ends_with(']')) || self.anon_name().is_some() {
            return None;
        }
        Some(match n {
            "[vdso]" => SpecialVma::Vdso,
            "[vvar]" => SpecialVma::Vvar,
            "[vvar_vclock]" => SpecialVma::VvarVclock,
            "[vsyscall]" => SpecialVma::Vsyscall,
            "[stack]" => SpecialVma::Stack,
            "[heap]" => SpecialVma::Heap,
            "[uprobes]" => SpecialVma::Uprobes,
            other => SpecialVma::Other(other.to_string()),
        })
    }

    /// The name given with PR_SET_VMA_ANON_NAME: `[anon:NAME]` (private) or
    /// `[anon_shmem:NAME]` (shared anonymous).
    pub fn anon_name(&self) -> Option<&str> {
        let inner = self.name.strip_prefix('[')?.strip_suffix(']')?;
        inner
            .strip_prefix("anon:")
            .or_else(|| inner.strip_prefix("anon_shmem:"))
    }

    /// Memory with no file behind it: unnamed, `[heap]`, `[stack]` or
    /// `[anon:NAME]`. Not the kernel's own mappings (vdso, vvar, vsyscall,
    /// uprobes), and not shared anonymous memory, which the kernel backs with
    /// a shmem inode (see [`Vma::is_shared_anon`]).
    pub fn is_anon(&self) -> bool {
        self.inode == 0
            && self.dev_major == 0
            && self.dev_minor == 0
            && !self.is_shared_anon()
            && matches!(
                self.is_special(),
                None | Some(SpecialVma::Heap) | Some(SpecialVma::Stack)
            )
    }

    /// MAP_SHARED|MAP_ANONYMOUS memory: `/dev/zero (deleted)` on a shmem
    /// inode, or `[anon_shmem:NAME]`.
    pub fn is_shared_anon(&self) -> bool {
        self.shared
            && self.inode != 0
            && (self.name == "/dev/zero (deleted)" || self.name.starts_with("[anon_shmem:"))
    }

    /// A System V shared memory segment (`/SYSV0000abcd (deleted)`, the
    /// key in hex). The inode is the shm id, which may be 0.
    pub fn is_sysv_shm(&self) -> bool {
        self.shared
            && self
                .name
                .strip_prefix("/SYSV")
                .and_then(|r| r.strip_suffix(" (deleted)"))
                .is_some_and(|k| k.len() == 8 && k.chars().all(|c| c.is_ascii_hexdigit()))
    }

    /// Backed by an inode: a regular file, a device, memfd, or shmem
    /// (which includes shared anonymous memory and SysV shm).
    pub fn is_file(&self) -> bool {
        self.inode != 0
    }

    /// The name ends with " (deleted)": the file was unlinked.
    pub fn deleted(&self) -> bool {
        self.name.ends_with(" (deleted)")
    }

    /// The name without a trailing " (deleted)". Newlines in the path
    /// stay escaped as `\012` (the kernel does not escape backslashes, so
    /// this cannot be undone reliably; use map_files for the real path).
    pub fn path(&self) -> &str {
        self.name
            .strip_suffix(" (deleted)")
            .unwrap_or(self.name.as_str())
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.iter().any(|f| f == flag)
    }
}

/// Parse one maps line (also the header line of an smaps entry).
pub fn parse_maps_line(line: &str) -> Result<Vma, String> {
    let mut rest = line;
    let mut field = |what: &str| -> Result<&str, String> {
        let r = rest.trim_start_matches(' ');
        let end = r.find(' ').unwrap_or(r.len());
        if end == 0 {
            return Err(format!("missing {what}"));
        }
        let (f, tail) = r.split_at(end);
        rest = tail;
        Ok(f)
    };
    let range = field("address range")?;
    let perms = field("permissions")?;
    let offset = field("offset")?;
    let dev = field("device")?;
    let inode = field("inode")?;
    // The name starts after the padding; a name never starts with a space
    // (paths are absolute, kernel names are bracketed).
    let name = rest.trim_start_matches(' ');

    let (s, e) = range
        .split_once('-')
        .ok_or_else(|| format!("bad address range {range:?}"))?;
    let start = hex64(s, "start address")?;
    let end = hex64(e, "end address")?;
    if end < start {
        return Err(format!("address range {range:?} ends before it starts"));
    }
    let p = perms.as_bytes();
    if p.len() != 4 {
        return Err(format!("bad permissions {perms:?}"));
    }
    let flag = |i: usize, yes: u8| -> Result<bool, String> {
        match p[i] {
            c if c == yes => Ok(true),
            b'-' => Ok(false),
            _ => Err(format!("bad permissions {perms:?}")),
        }
    };
    let read = flag(0, b'r')?;
    let write = flag(1, b'w')?;
    let exec = flag(2, b'x')?;
    let shared = match p[3] {
        b's' => true,
        b'p' => false,
        _ => return Err(format!("bad permissions {perms:?}")),
    };
    let offset = hex64(offset, "offset")?;
    let (ma, mi) = dev
        .split_once(':')
        .ok_or_else(|| format!("bad device {dev:?}"))?;
    let dev_major = u32::from_str_radix(ma, 16).map_err(|_| format!("bad device {dev:?}"))?;
    let dev_minor = u32::from_str_radix(mi, 16).map_err(|_| format!("bad device {dev:?}"))?;
    let inode = dec(inode, "inode")?;
    Ok(Vma {
        start,
        end,
        read,
        write,
        exec,
        shared,
        offset,
        dev_major,
        dev_minor,
        inode,
        name: name.to_string(),
        ..Vma::default()
    })
}

/// Parse the text of `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<Vma>, ParseError> {
    // split('\n'), not lines(): a name may end in '\r'.
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_maps_line(l).map_err(|r| ParseError::new("maps", i + 1, r)))
        .collect()
}

/// Does this smaps line start a new entry (`hex-hex ...`)?
fn is_smaps_header(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    match first.split_once('-') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_hexdigit())
                && b.bytes().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// Parse the text of `/proc/PID/smaps`: the maps header of each entry plus
/// its VmFlags and sizes.
pub fn parse_smaps(text: &str) -> Result<Vec<Vma>, ParseError> {
    let mut out: Vec<Vma> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let err = |r: String| ParseError::new("smaps", i + 1, r);
        if line.is_empty() {
            continue;
        }
        if is_smaps_header(line) {
            out.push(parse_maps_line(line).map_err(err)?);
            continue;
        }
        let vma = out
            .last_mut()
            .ok_or_else(|| err("field before the first mapping".into()))?;
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| err(format!("expected \"Key: value\", got {line:?}")))?;
        if key == "VmFlags" {
            vma.vm_flags = value.split_ascii_whitespace().map(str::to_string).collect();
            continue;
        }
        let slot = match key {
            "Size" => &mut vma.size,
            "KernelPageSize" => &mut vma.kernel_page_size,
            "MMUPageSize" => &mut vma.mmu_page_size,
            "Rss" => &mut vma.rss,
            "Pss" => &mut vma.pss,
            "Shared_Clean" => &mut vma.shared_clean,
            "Shared_Dirty" => &mut vma.shared_dirty,
            "Private_Clean" => &mut vma.private_clean,
            "Private_Dirty" => &mut vma.private_dirty,
            "Anonymous" => &mut vma.anonymous,
            "AnonHugePages" => &mut vma.anon_huge_pages,
            "Swap" => &mut vma.swap,
            "Locked" => &mut vma.locked,
            _ => continue, // Pss_Dirty, KSM, THPeligible, ProtectionKey ...
        };
        let v = value.trim();
        let num = v.strip_suffix(" kB").unwrap_or(v).trim();
        *slot = dec(num, key).map_err(err)?;
    }
    Ok(out)
}

pub fn read_maps(pid: Pid) -> Result<Vec<Vma>, ProcError> {
    read_parsed(pid, "maps", parse_maps)
}

pub fn read_smaps(pid: Pid) -> Result<Vec<Vma>, ProcError> {
    read_parsed(pid, "smaps", parse_smaps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAPS: &str = "\
55cf66202000-55cf66204000 r--p 00000000 fe:00 247282                     /usr/bin/head
55cf66204000-55cf6620a000 r-xp 00002000 fe:00 247282                     /usr/bin/head
5600aa000000-5600aa021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)
7f0000100000-7f0000101000 rw-p 00000000 00:00 0                          [anon:my buf]
7f0000101000-7f0000102000 rw-s 00000000 00:01 99                         [anon_shmem:shm name]
7f0000102000-7f0000103000 r--s 00000000 00:01 32769                      /SYSV0000abcd (deleted)
7f0000103000-7f0000104000 rw-p 00001000 103:02 42                        /tmp/a file with  spaces (deleted)
7f0000104000-7f0000105000 ---p 00000000 00:00 0 
7f5618e2c000-7f5618e2e000 r--p 00000000 00:00 0                          [vvar_vclock]
7f5618e2a000-7f5618e2c000 r--p 00000000 00:00 0                          [vvar]
7f5618e2e000-7f5618e30000 r-xp 00000000 00:00 0                          [vdso]
7ffd1a4f0000-7ffd1a511000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn maps_fixed() {
        let v = parse_maps(MAPS).unwrap();
        assert_eq!(v.len(), 14);
        let head = &v[1];
        assert_eq!(
            (head.start, head.end, head.offset),
            (0x55cf66204000, 0x55cf6620a000, 0x2000)
        );
        assert!(head.read && !head.write && head.exec && !head.shared);
        assert_eq!(
            (head.dev_major, head.dev_minor, head.inode),
            (0xfe, 0, 247282)
        );
        assert_eq!(head.name, "/usr/bin/head");
        assert!(head.is_file() && !head.is_anon() && head.is_special().is_none());
        assert_eq!(head.len(), 0x6000);

        assert_eq!(v[2].is_special(), Some(SpecialVma::Heap));
        assert!(v[2].is_anon());

        assert!(v[3].shared && v[3].is_shared_anon() && !v[3].is_anon() && v[3].deleted());
        assert_eq!(v[3].path(), "/dev/zero");

        assert_eq!(v[4].anon_name(), Some("my buf"));
        assert!(v[4].is_anon() && v[4].is_special().is_none());

        assert_eq!(v[5].anon_name(), Some("shm name"));
        assert!(v[5].is_shared_anon() && !v[5].is_anon());

        assert!(v[6].is_sysv_shm());
        // Segment id 0 shows inode 0.
        let id0 = parse_maps(
            "7f0000102000-7f0000103000 rw-s 00000000 00:01 0          /SYSV5eed0001 (deleted)\n",
        )
        .unwrap();
        assert!(id0[0].is_sysv_shm() && !id0[0].is_anon());

        assert_eq!(v[7].name, "/tmp/a file with  spaces (deleted)");
        assert_eq!(v[7].path(), "/tmp/a file with  spaces");
        assert_eq!((v[7].dev_major, v[7].dev_minor), (0x103, 2));
        assert!(v[7].deleted());

        assert_eq!(v[8].name, "");
        assert!(v[8].is_anon() && !v[8].read && !v[8].write && !v[8].exec);

        assert_eq!(v[9].is_special(), Some(SpecialVma::VvarVclock));
        assert_eq!(v[10].is_special(), Some(SpecialVma::Vvar));
        assert_eq!(v[11].is_special(), Some(SpecialVma::Vdso));
        assert!(!v[11].is_anon());
        assert_eq!(v[12].is_special(), Some(SpecialVma::Stack));
        assert_eq!(v[13].is_special(), Some(SpecialVma::Vsyscall));
        assert_eq!(v[13].start, 0xffffffffff600000);
    }

    #[test]
    fn maps_errors() {
        let e =
            parse_maps("00400000-00452000 r-xp 00000000 08:02 173521 /bin/x\nzz\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_maps("00400000-00452000 r-xq 00000000 08:02 1 /x").is_err());
        assert!(parse_maps("00400000-00452000 r-xp 00000000 0802 1 /x").is_err());
        assert!(parse_maps("00400000-00352000 r-xp 00000000 08:02 1 /x").is_err());
        assert!(parse_maps("00400000-00452000 r-xp 00000000 08:02").is_err());
        let e = parse_maps("00400000 r-xp 00000000 08:02 1 /x").unwrap_err();
        assert!(e.reason.contains("address range"), "{e}");
        assert_eq!(
            ["other", "[uprobes]", "[foo]"].map(|n| Vma {
                name: n.into(),
                ..Vma::default()
            }
            .is_special()),
            [
                None,
                Some(SpecialVma::Uprobes),
                Some(SpecialVma::Other("[foo]".into()))
            ]
        );
    }

    const SMAPS: &str = "\
7f5618e2c000-7f5618e2e000 r--p 00000000 00:00 0                          [vvar_vclock]
Size:                  8 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Anonymous:             0 kB
THPeligible:           0
VmFlags: rd mr pf io de dd 
7f0000000000-7f0040000000 rw-p 00000000 00:00 0 
Size:            1048576 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                2048 kB
Pss:                2048 kB
Pss_Dirty:          2048 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:      2048 kB
Referenced:         2048 kB
Anonymous:          2048 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                 12 kB
SwapPss:              12 kB
Locked:                0 kB
THPeligible:           1
ProtectionKey:         0
VmFlags: rd wr mr mw me ac 
";

    #[test]
    fn smaps_fixed() {
        let v = parse_smaps(SMAPS).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].is_special(), Some(SpecialVma::VvarVclock));
        assert_eq!(v[0].vm_flags, ["rd", "mr", "pf", "io", "de", "dd"]);
        assert!(v[0].has_flag("dd"));
        assert_eq!(v[0].size, 8);
        assert_eq!(v[1].len(), 1 << 30);
        assert_eq!((v[1].rss, v[1].anonymous, v[1].swap), (2048, 2048, 12));
        assert_eq!(v[1].private_dirty, 2048);
        assert_eq!(v[1].kernel_page_size, 4);
        assert!(v[1].has_flag("ac") && !v[1].has_flag("dd"));
        let e = parse_smaps("Size: 4 kB\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_smaps("7f0000000000-7f0040000000 rw-p 00000000 00:00 0\nRss: x kB\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("Rss"), "{e}");
    }

    #[test]
    fn self_maps_and_smaps() {
        let me = std::process::id() as Pid;
        let maps = read_maps(me).unwrap();
        let smaps = read_smaps(me).unwrap();
        assert!(maps.len() > 5);
        assert!(maps.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(maps
            .iter()
            .any(|v| v.is_special() == Some(SpecialVma::Vdso)));
        assert!(maps
            .iter()
            .any(|v| v.is_special() == Some(SpecialVma::Stack)));
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(maps
            .iter()
            .any(|v| v.is_file() && v.path() == exe.to_str().unwrap()));
        assert!(smaps.iter().all(|v| !v.vm_flags.is_empty()));
        assert!(smaps.iter().all(|v| v.size * 1024 == v.len()));
        let vdso = smaps
            .iter()
            .find(|v| v.is_special() == Some(SpecialVma::Vdso))
            .unwrap();
        assert!(vdso.exec && vdso.has_flag("ex"));
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "/[a-zA-Z0-9 ._()\\[\\]-]{0,30}",
            "/[a-z ]{1,10} \\(deleted\\)",
            "\\[[a-z_]{1,12}\\]",
            "\\[anon:[ -~]{1,20}\\]",
        ]
    }

    proptest! {
        #[test]
        fn maps_line_roundtrip(
            start in 0u64..(1 << 47), len in 0u64..(1 << 40),
            r: bool, w: bool, x: bool, s: bool,
            offset: u64, major in 0u32..4096, minor in 0u32..(1 << 20), inode: u64,
            name in name_strategy(),
        ) {
            let end = start + len;
            // The kernel's format: "%08lx-%08lx %c%c%c%c %08llx %02x:%02x %lu ",
            // then padding to column 73 when there is a name.
            let mut line = format!(
                "{start:08x}-{end:08x} {}{}{}{} {offset:08x} {major:02x}:{minor:02x} {inode} ",
                if r { 'r' } else { '-' },
                if w { 'w' } else { '-' },
                if x { 'x' } else { '-' },
                if s { 's' } else { 'p' },
            );
            if !name.is_empty() {
                while line.len() < 73 { line.push(' '); }
                line.push_str(&name);
            }
            let v = parse_maps_line(&line).unwrap();
            prop_assert_eq!(v, Vma {
                start, end, read: r, write: w, exec: x, shared: s, offset,
                dev_major: major, dev_minor: minor, inode, name,
                ..Vma::default()
            });
        }

        #[test]
        fn maps_never_panics(text in "[ -~\n]{0,200}") {
            let _ = parse_maps(&text);
            let _ = parse_smaps(&text);
        }
    }
}
