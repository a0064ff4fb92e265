//! What both renderers (text and JSON) derive from the images: handlers
//! worth showing, decoded pending signals, timers, mapping notes, the tree
//! order, and the one-line descriptions shared by both.

use crate::images::pb;

use super::load::{ImageSet, Task};
use super::names::{self, hex, human};

pub fn ids_text(ids: &pb::TaskKobjIdsEntry) -> String {
    let mut s = format!(
        "vm {}, files {}, fs {}, sighand {}",
        ids.vm_id, ids.files_id, ids.fs_id, ids.sighand_id
    );
    let ns: Vec<String> = ns_ids(ids)
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !ns.is_empty() {
        s += &format!("; ns: {}", ns.join(", "));
    }
    s
}

/// The namespace ids that are set, in a fixed order.
pub fn ns_ids(ids: &pb::TaskKobjIdsEntry) -> Vec<(&'static str, u32)> {
    [
        ("pid", ids.pid_ns_id),
        ("net", ids.net_ns_id),
        ("ipc", ids.ipc_ns_id),
        ("uts", ids.uts_ns_id),
        ("mnt", ids.mnt_ns_id),
        ("user", ids.user_ns_id),
        ("cgroup", ids.cgroup_ns_id),
        ("time", ids.time_ns_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}

pub fn pre_dump_mode(m: u32) -> String {
    match m {
        1 => "splice".into(),
        2 => "read".into(),
        v => v.to_string(),
    }
}

pub fn network_lock(m: u32) -> String {
    match m {
        1 => "iptables".into(),
        2 => "nftables".into(),
        3 => "skip".into(),
        v => v.to_string(),
    }
}

pub fn arch(mtype: i32) -> String {
    pb::core_entry::March::try_from(mtype)
        .map(|m| m.as_str_name().to_string())
        .unwrap_or_else(|_| format!("arch {mtype}"))
}

pub fn loginuid(l: u32) -> String {
    if l == u32::MAX {
        "unset".to_string()
    } else {
        l.to_string()
    }
}

/// Tasks in tree order (parents before children, siblings by pid), with
/// their depth.
pub fn tree_order(tasks: &[Task]) -> Vec<(usize, &Task)> {
    let pids: std::collections::BTreeSet<u32> = tasks.iter().map(|t| t.pid()).collect();
    let mut out = Vec::new();
    fn walk<'a>(t: &'a Task, depth: usize, tasks: &'a [Task], out: &mut Vec<(usize, &'a Task)>) {
        out.push((depth, t));
        if out.len() > tasks.len() {
            return; // a cycle in a damaged tree
        }
        for c in tasks
            .iter()
            .filter(|c| c.tree.ppid == t.pid() && c.pid() != t.pid())
        {
            walk(c, depth + 1, tasks, out);
        }
    }
    for t in tasks
        .iter()
        .filter(|t| !pids.contains(&t.tree.ppid) || t.tree.ppid == t.pid())
    {
        walk(t, 0, tasks, &mut out);
    }
    // Whatever a damaged tree left unreached.
    for t in tasks {
        if !out.iter().any(|(_, o)| o.pid() == t.pid()) {
            out.push((0, t));
        }
    }
    out
}

/// A file id as people want it: the path, or why there is none.
pub fn file_ref(set: &ImageSet, id: u32) -> String {
    match (&set.files_img, set.file_path(id)) {
        (_, Some(p)) => p,
        (Ok(_), None) => format!("(file id {id}, not in files.img)"),
        (Err(_), None) => format!("(file id {id}; files.img cannot be read)"),
    }
}

pub fn tc_blocked(tc: &pb::TaskCoreEntry) -> u64 {
    tc.blk_sigset
}

/// One signal disposition that is not the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    pub sig: u32,
    pub handler: u64,
    pub flags: u64,
    pub mask: u64,
    pub restorer: u64,
    pub compat: bool,
}

impl Handler {
    pub fn text(&self) -> String {
        let mut s = format!("{:<11} ", names::signal(self.sig));
        match self.handler {
            0 | 1 => s += &names::handler(self.handler),
            a => s += &format!("handler {}", hex(a)),
        }
        if self.flags != 0 {
            s += &format!("  flags {}", names::flags(self.flags, names::SA_FLAGS, "0"));
        }
        if self.mask != 0 {
            s += &format!("  mask {}", names::sigset(self.mask));
        }
        if self.restorer != 0 {
            s += &format!("  restorer {}", hex(self.restorer));
        }
        if self.compat {
            s += "  (compat)";
        }
        s
    }
}

/// The handlers that differ from the default: a handler or SIG_IGN, or
/// SIG_DFL with flags (other than SA_RESTORER) or a mask, in signal order.
pub fn sigactions(tc: &pb::TaskCoreEntry) -> Vec<Handler> {
    tc.sigactions
        .iter()
        .enumerate()
        .filter(|(_, sa)| sa.sigaction != 0 || sa.flags & !names::SA_RESTORER != 0 || sa.mask != 0)
        .map(|(i, sa)| Handler {
            sig: names::sigaction_signal(i),
            handler: sa.sigaction,
            flags: sa.flags,
            mask: sa.mask,
            restorer: sa.restorer,
            compat: sa.compat_sigaction == Some(true),
        })
        .collect()
}

/// A pending signal, from its raw siginfo_t.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub errno: i32,
    pub code: i32,
    /// Sender pid and uid (SI_USER, SI_TKILL, SI_QUEUE, SIGCHLD).
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    /// Timer id and overrun (SI_TIMER).
    pub timer: Option<(i32, i32)>,
    pub len: usize,
}

impl SigInfo {
    pub fn parse(b: &[u8]) -> SigInfo {
        let i32_at = |o: usize| {
            b.get(o..o + 4)
                .map(|s| i32::from_le_bytes(s.try_into().unwrap()))
                .unwrap_or(0)
        };
        let signo = i32_at(0);
        let code = i32_at(8);
        let sender = code == libc::SI_USER
            || code == libc::SI_TKILL
            || code == libc::SI_QUEUE
            || signo == libc::SIGCHLD;
        SigInfo {
            signo,
            errno: i32_at(4),
            code,
            pid: sender.then(|| i32_at(16)),
            uid: sender.then(|| i32_at(20) as u32),
            timer: (code == libc::SI_TIMER).then(|| (i32_at(16), i32_at(20))),
            len: b.len(),
        }
    }

    pub fn code_name(&self) -> String {
        if self.signo == libc::SIGCHLD && self.code > 0 {
            let n = match self.code {
                1 => "CLD_EXITED",
                2 => "CLD_KILLED",
                3 => "CLD_DUMPED",
                4 => "CLD_TRAPPED",
                5 => "CLD_STOPPED",
                6 => "CLD_CONTINUED",
                _ => "",
            };
            if !n.is_empty() {
                return n.to_string();
            }
        }
        names::si_code(self.code)
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "{} ({}",
            names::signal(self.signo.max(0) as u32),
            self.code_name()
        );
        if let (Some(p), Some(u)) = (self.pid, self.uid) {
            s += &format!(" from pid {p} uid {u}");
        }
        if let Some((id, ov)) = self.timer {
            s += &format!(" timer {id} overrun {ov}");
        }
        if self.errno != 0 {
            s += &format!(" errno {}", self.errno);
        }
        s + ")"
    }
}

/// The armed interval timers, one line each.
pub fn itimers(t: &pb::TaskTimersEntry) -> Vec<String> {
    [
        ("ITIMER_REAL", &t.real),
        ("ITIMER_VIRTUAL", &t.virt),
        ("ITIMER_PROF", &t.prof),
    ]
    .into_iter()
    .filter(|(_, i)| i.isec != 0 || i.iusec != 0 || i.vsec != 0 || i.vusec != 0)
    .map(|(name, i)| {
        format!(
            "{name:<15}value {}  interval {}",
            names::duration(i.vsec, i.vusec, 1_000_000),
            names::duration(i.isec, i.iusec, 1_000_000)
        )
    })
    .collect()
}

pub fn posix_timer(p: &pb::PosixTimerEntry) -> String {
    let mut s = format!(
        "id {}  {}  {}",
        p.it_id,
        names::clock(p.clock_id),
        names::sigev_notify(p.it_sigev_notify)
    );
    if p.it_sigev_notify as i32 != libc::SIGEV_NONE {
        s += &format!(" {}", names::signal(p.si_signo));
    }
    if let Some(t) = p.notify_thread_id {
        s += &format!(" to thread {t}");
    }
    s += &format!(
        "  value {}  interval {}  overrun {}",
        names::duration(p.vsec, p.vnsec, 1_000_000_000),
        names::duration(p.isec, p.insec, 1_000_000_000),
        p.overrun
    );
    if p.sival_ptr != 0 {
        s += &format!("  sival {}", hex(p.sival_ptr));
    }
    s
}

/// The kernel's per-task PF_* flags (from /proc/PID/stat) that have kept
/// their values across kernel versions; the rest is shown in hex.
pub const PF_FLAGS: names::Flags = &[
    (0x0000_0004, "PF_EXITING"),
    (0x0000_0040, "PF_FORKNOEXEC"),
    (0x0000_0100, "PF_SUPERPRIV"),
    (0x0000_0200, "PF_DUMPCORE"),
    (0x0000_0400, "PF_SIGNALED"),
    (0x0000_0800, "PF_MEMALLOC"),
    (0x0020_0000, "PF_KTHREAD"),
    (0x0040_0000, "PF_RANDOMIZE"),
];

pub fn task_flags(f: u32) -> String {
    format!("{} ({:#x})", names::flags(f as u64, PF_FLAGS, "none"), f)
}

/// ax: a syscall's return value, shown signed, with the errno or restart
/// code it stands for.
pub fn ax(v: u64) -> String {
    let s = v as i64;
    if let Some(code) = names::restart_code(v) {
        format!("{s} (-{code})")
    } else if (-4095..0).contains(&s) {
        format!("{s} (-{})", names::errno(-s as i32))
    } else {
        hex(v)
    }
}

pub fn orig_ax(v: u64) -> String {
    if v as i64 == -1 {
        "-1".to_string()
    } else {
        format!("{v} ({})", names::syscall(v))
    }
}

/// xstate_bv components by name.
pub const XFEATURES: names::Flags = &[
    (1 << 0, "x87"),
    (1 << 1, "SSE"),
    (1 << 2, "AVX"),
    (1 << 3, "MPX-BNDREGS"),
    (1 << 4, "MPX-BNDCSR"),
    (1 << 5, "AVX512-opmask"),
    (1 << 6, "AVX512-ZMM_Hi256"),
    (1 << 7, "AVX512-Hi16_ZMM"),
    (1 << 8, "PT"),
    (1 << 9, "PKRU"),
    (1 << 11, "CET-U"),
    (1 << 12, "CET-S"),
    (1 << 17, "AMX-TILECFG"),
    (1 << 18, "AMX-TILEDATA"),
];

pub fn fpu_text(f: &pb::UserX86FpregsEntry) -> String {
    let mut parts = Vec::new();
    match &f.ckpt_xsave_raw {
        Some(raw) => parts.push(format!("xsave area {} bytes", raw.len())),
        None => parts.push("no raw xsave area (fxsave + split components only)".to_string()),
    }
    if let Some(x) = &f.xsave {
        parts.push(format!(
            "in use: {}",
            names::flags(x.xstate_bv, XFEATURES, "none")
        ));
    }
    parts.push(format!("mxcsr {:#x}", f.mxcsr));
    parts.join(", ")
}

pub fn rseq_text(r: Option<&pb::RseqEntry>) -> String {
    match r {
        None => "none".to_string(),
        Some(r) => {
            let mut s = format!(
                "{} size {} signature {:#x}",
                hex(r.rseq_abi_pointer),
                r.rseq_abi_size,
                r.signature
            );
            if let Some(cs) = r.rseq_cs_pointer.filter(|&p| p != 0) {
                s += &format!(", in critical section {}", hex(cs));
            }
            s
        }
    }
}

pub fn sas_text(s: &pb::ThreadSasEntry) -> String {
    if s.ss_flags & libc::SS_DISABLE as u32 != 0 {
        return "none (SS_DISABLE)".to_string();
    }
    let mut t = format!("{} size {}", hex(s.ss_sp), human(s.ss_size));
    if s.ss_flags != 0 {
        t += &format!(
            " flags {}",
            names::flags(s.ss_flags as u64, names::SS_FLAGS, "0")
        );
    }
    t
}

pub fn sched_text(tc: &pb::ThreadCoreEntry) -> String {
    let mut parts = Vec::new();
    if let Some(p) = tc.sched_policy {
        parts.push(names::sched_policy(p));
    }
    if let Some(n) = tc.sched_nice {
        parts.push(format!("nice {n}"));
    }
    if let Some(p) = tc.sched_prio.filter(|&p| p != 0) {
        parts.push(format!("priority {p}"));
    }
    if parts.is_empty() {
        "unknown".to_string()
    } else {
        parts.join(", ")
    }
}

/// The saved auxiliary vector up to AT_NULL, as (name, value) strings.
pub fn auxv(v: &[u64]) -> Vec<(String, String)> {
    v.chunks(2)
        .take_while(|c| c.len() == 2 && c[0] != 0)
        .map(|c| {
            let val = if names::auxv_is_number(c[0]) {
                c[1].to_string()
            } else {
                hex(c[1])
            };
            (names::auxv_type(c[0]), val)
        })
        .collect()
}

/// A mapping, described.
pub struct VmaView {
    pub kind: &'static str,
    /// The mapped file's path, for file mappings.
    pub file: Option<String>,
    /// File path, shmem id, map flags, madvise advice, ...
    pub notes: Vec<String>,
}

pub fn vma(set: &ImageSet, _task: &Task, v: &pb::VmaEntry) -> VmaView {
    use crate::images::vma::{
        VMA_ANON_SHARED, VMA_AREA_SYSVIPC, VMA_FILE_PRIVATE, VMA_FILE_SHARED,
    };
    use names::*;
    let kind = vma_kind(v.status);
    let mut notes = Vec::new();
    let mut file = None;
    if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
        let p = file_ref(set, v.shmid as u32);
        notes.push(p.clone());
        file = Some(p);
    } else if v.status & VMA_AREA_SYSVIPC != 0 {
        notes.push(format!("SysV shm id {}", v.shmid));
    } else if v.status & VMA_ANON_SHARED != 0 {
        match set.shmem.get(&v.shmid) {
            Some(Ok(pm)) if pm.pages_id != 0 => {
                notes.push(format!("shmem id {} (pages-{}.img)", v.shmid, pm.pages_id))
            }
            _ => notes.push(format!("shmem id {}", v.shmid)),
        }
    }
    let f = v.flags as i32;
    if f & libc::MAP_GROWSDOWN != 0 {
        notes.push("grows down".into());
    }
    if f & libc::MAP_NORESERVE != 0 {
        notes.push("noreserve".into());
    }
    if f & libc::MAP_LOCKED != 0 {
        notes.push("locked".into());
    }
    if let Some(m) = v.madv.filter(|&m| m != 0) {
        notes.extend(madv(m));
    }
    if v.status & VMA_FILE_SHARED != 0 {
        if let Some(ff) = v.fdflags {
            notes.push(format!("opened {}", open_flags(ff)));
        }
    }
    VmaView { kind, file, notes }
}

/// The other descriptors of the same open file: "fd 2" in the same task,
/// "pid 105 fd 3" in others (tasks sharing one fd table are not repeated).
pub fn fd_sharers(set: &ImageSet, task: &Task, fd: &pb::FdinfoEntry) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(fds) = &task.fdinfo {
        let mut own: Vec<u32> = fds
            .iter()
            .filter(|o| o.id == fd.id && o.fd != fd.fd)
            .map(|o| o.fd)
            .collect();
        own.sort_unstable();
        out.extend(own.into_iter().map(|n| format!("fd {n}")));
    }
    for (i, other) in set.tasks.iter().enumerate() {
        if other.pid() == task.pid() || other.fdinfo_name == task.fdinfo_name {
            continue;
        }
        // A table shared by several tasks is named once, by its first.
        if other.fdinfo_name.is_some()
            && set.tasks[..i]
                .iter()
                .any(|o| o.fdinfo_name == other.fdinfo_name)
        {
            continue;
        }
        if let Ok(fds) = &other.fdinfo {
            let mut theirs: Vec<u32> = fds.iter().filter(|o| o.id == fd.id).map(|o| o.fd).collect();
            theirs.sort_unstable();
            out.extend(
                theirs
                    .into_iter()
                    .map(|n| format!("pid {} fd {n}", other.pid())),
            );
        }
    }
    out
}

/// The tasks and threads of the image whose cgroup set is `id`, as
/// "pid 100", "thread 101".
pub fn cgroup_set_users(set: &ImageSet, id: u32) -> Vec<String> {
    let mut out = Vec::new();
    for t in &set.tasks {
        for (i, th) in t.threads.iter().enumerate() {
            let Ok(core) = &th.core else { continue };
            let task_set = core.tc.as_ref().and_then(|tc| tc.cg_set);
            let thread_set = core.thread_core.as_ref().and_then(|tc| tc.cg_set);
            if i == 0 && task_set.or(thread_set) == Some(id) {
                out.push(format!("pid {}", th.tid));
            } else if i > 0
                && thread_set == Some(id)
                && thread_set != t.tc().and_then(|tc| tc.cg_set)
            {
                out.push(format!("thread {}", th.tid));
            }
        }
    }
    out
}
