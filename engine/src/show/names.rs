//! Names for the numbers in images: signals, capabilities, flags, clocks,
//! syscalls, protections and sizes, spelled as the kernel headers spell
//! them (from `libc` where it has the constant).
//!
//! Every function here is pure and deterministic; unknown values come out
//! as numbers rather than being dropped.

use std::fmt::Write as _;

use crate::images::pagemap::{PAGE, PE_COW_PARENT, PE_LAZY, PE_PARENT, PE_PRESENT};
use crate::images::task::{
    TASK_ALIVE, TASK_DEAD, TASK_HELPER, TASK_STOPPED, TASK_THREAD, TASK_ZOMBIE,
};
use crate::images::vma::{
    VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_AIORING, VMA_AREA_HEAP, VMA_AREA_MEMFD,
    VMA_AREA_REGULAR, VMA_AREA_SHSTK, VMA_AREA_SOCKET, VMA_AREA_STACK, VMA_AREA_SYSVIPC,
    VMA_AREA_UPROBES, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_FILE_PRIVATE,
    VMA_FILE_SHARED,
};
use crate::kernel::restart::{ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS, ERESTART_RESTARTBLOCK};
use crate::kernel::seccomp::{SECCOMP_MODE_FILTER, SECCOMP_MODE_STRICT};

/// Flag tables: (bit mask, name).
pub type Flags = &'static [(u64, &'static str)];

/// `A|B|C` for the bits of `v` named in `table`, then the rest in hex;
/// `zero` when `v` is 0.
pub fn flags(v: u64, table: Flags, zero: &str) -> String {
    let names = flag_list(v, table);
    if names.is_empty() {
        zero.to_string()
    } else {
        names.join("|")
    }
}

/// The names of the bits of `v` (unknown bits as one hex number, last).
pub fn flag_list(v: u64, table: Flags) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = v;
    for &(mask, name) in table {
        if mask != 0 && v & mask == mask && rest & mask != 0 {
            out.push(name.to_string());
            rest &= !mask;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out
}

// ---------------------------------------------------------------- sizes

/// Bytes in binary units: "0 B", "512 B", "4 KiB", "1.5 MiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut div = 1u64;
    while unit + 1 < UNITS.len() && bytes / div >= 1024 {
        div *= 1024;
        unit += 1;
    }
    if bytes % div == 0 {
        format!("{} {}", bytes / div, UNITS[unit])
    } else {
        let v = bytes as f64 / div as f64;
        let s = if v < 10.0 {
            format!("{v:.2}")
        } else if v < 100.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        };
        format!("{s} {}", UNITS[unit])
    }
}

/// "1 page", "3 pages".
pub fn count(n: u64, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {what}{s}")
}

/// "50 us", "1 ms", "1500 ns": the largest unit that divides evenly.
pub fn nanoseconds(ns: u64) -> String {
    if ns != 0 && ns % 1_000_000_000 == 0 {
        format!("{} s", ns / 1_000_000_000)
    } else if ns != 0 && ns % 1_000_000 == 0 {
        format!("{} ms", ns / 1_000_000)
    } else if ns != 0 && ns % 1_000 == 0 {
        format!("{} us", ns / 1_000)
    } else {
        format!("{ns} ns")
    }
}

/// "1 page (4 KiB)", "3 pages (12 KiB)".
pub fn pages(n: u64) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} page{s} ({})", human(n * PAGE))
}

/// Seconds and a sub-second part of `unit_per_sec` units: "0s", "1.5s",
/// "0.000250s".
pub fn duration(sec: u64, frac: u64, unit_per_sec: u64) -> String {
    if frac == 0 {
        return format!("{sec}s");
    }
    let digits = match unit_per_sec {
        1_000_000 => 6,
        _ => 9,
    };
    let mut f = format!("{frac:0digits$}");
    while f.ends_with('0') {
        f.pop();
    }
    format!("{sec}.{f}s")
}

pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

// ---------------------------------------------------------------- signals

/// The signal's name as `kill -l` prints it: SIGTERM, SIGRTMIN+3,
/// SIGRTMAX-2; 32 and 33 (taken by glibc) are SIG32 and SIG33.
pub fn signal(sig: u32) -> String {
    let name = match sig as i32 {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => "",
    };
    if !name.is_empty() {
        return name.to_string();
    }
    // glibc's SIGRTMIN is 34 (32 and 33 are its own); kill -l numbers the
    // first half from SIGRTMIN, the second half back from SIGRTMAX (64).
    match sig {
        0 => "0".to_string(),
        34 => "SIGRTMIN".to_string(),
        35..=49 => format!("SIGRTMIN+{}", sig - 34),
        64 => "SIGRTMAX".to_string(),
        50..=63 => format!("SIGRTMAX-{}", 64 - sig),
        _ => format!("SIG{sig}"),
    }
}

/// The signals of a set (bit n-1 = signal n), in number order.
pub fn sigset_list(set: u64) -> Vec<String> {
    (1..=64u32)
        .filter(|s| set & (1u64 << (s - 1)) != 0)
        .map(signal)
        .collect()
}

/// "{SIGINT, SIGTERM}", "{}" or, for sets of more than 32 signals,
/// "all except {SIGKILL, SIGSTOP}" / "all".
pub fn sigset(set: u64) -> String {
    if set == u64::MAX {
        return "all".to_string();
    }
    if set.count_ones() > 32 {
        format!("all except {{{}}}", sigset_list(!set).join(", "))
    } else {
        format!("{{{}}}", sigset_list(set).join(", "))
    }
}

/// The signal of the i-th sigaction entry: CRIU stores signals 1..64
/// without SIGKILL and SIGSTOP.
pub fn sigaction_signal(i: usize) -> u32 {
    let mut sig = 0u32;
    let mut n = 0usize;
    loop {
        sig += 1;
        if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
            continue;
        }
        if n == i {
            return sig;
        }
        n += 1;
    }
}

pub const SA_RESTORER: u64 = 0x0400_0000;
const SA_UNSUPPORTED: u64 = 0x0000_0400;
const SA_EXPOSE_TAGBITS: u64 = 0x0000_0800;

pub const SA_FLAGS: Flags = &[
    (libc::SA_NOCLDSTOP as u64, "SA_NOCLDSTOP"),
    (libc::SA_NOCLDWAIT as u64, "SA_NOCLDWAIT"),
    (libc::SA_NODEFER as u64, "SA_NODEFER"),
    (libc::SA_ONSTACK as u64, "SA_ONSTACK"),
    (libc::SA_RESETHAND as u64, "SA_RESETHAND"),
    (libc::SA_RESTART as u64, "SA_RESTART"),
    (SA_RESTORER, "SA_RESTORER"),
    (libc::SA_SIGINFO as u64, "SA_SIGINFO"),
    (SA_UNSUPPORTED, "SA_UNSUPPORTED"),
    (SA_EXPOSE_TAGBITS, "SA_EXPOSE_TAGBITS"),
];

/// SIG_DFL, SIG_IGN or the handler's address.
pub fn handler(addr: u64) -> String {
    match addr {
        0 => "SIG_DFL".to_string(),
        1 => "SIG_IGN".to_string(),
        a => hex(a),
    }
}

pub const SS_FLAGS: Flags = &[
    (libc::SS_ONSTACK as u64, "SS_ONSTACK"),
    (libc::SS_DISABLE as u64, "SS_DISABLE"),
    (1 << 31, "SS_AUTODISARM"),
];

/// si_code of a pending signal.
pub fn si_code(code: i32) -> String {
    match code {
        libc::SI_USER => "SI_USER".into(),
        0x80 => "SI_KERNEL".into(),
        libc::SI_QUEUE => "SI_QUEUE".into(),
        libc::SI_TIMER => "SI_TIMER".into(),
        libc::SI_MESGQ => "SI_MESGQ".into(),
        libc::SI_ASYNCIO => "SI_ASYNCIO".into(),
        libc::SI_SIGIO => "SI_SIGIO".into(),
        libc::SI_TKILL => "SI_TKILL".into(),
        c => format!("si_code {c}"),
    }
}

pub fn sigev_notify(n: u32) -> String {
    match n as i32 {
        libc::SIGEV_SIGNAL => "SIGEV_SIGNAL".into(),
        libc::SIGEV_NONE => "SIGEV_NONE".into(),
        libc::SIGEV_THREAD => "SIGEV_THREAD".into(),
        libc::SIGEV_THREAD_ID => "SIGEV_THREAD_ID".into(),
        v => format!("sigev_notify {v}"),
    }
}

// ---------------------------------------------------------------- clocks

pub fn clock(id: u32) -> String {
    match id as i32 {
        libc::CLOCK_REALTIME => "CLOCK_REALTIME".into(),
        libc::CLOCK_MONOTONIC => "CLOCK_MONOTONIC".into(),
        libc::CLOCK_PROCESS_CPUTIME_ID => "CLOCK_PROCESS_CPUTIME_ID".into(),
        libc::CLOCK_THREAD_CPUTIME_ID => "CLOCK_THREAD_CPUTIME_ID".into(),
        libc::CLOCK_MONOTONIC_RAW => "CLOCK_MONOTONIC_RAW".into(),
        libc::CLOCK_REALTIME_COARSE => "CLOCK_REALTIME_COARSE".into(),
        libc::CLOCK_MONOTONIC_COARSE => "CLOCK_MONOTONIC_COARSE".into(),
        libc::CLOCK_BOOTTIME => "CLOCK_BOOTTIME".into(),
        libc::CLOCK_REALTIME_ALARM => "CLOCK_REALTIME_ALARM".into(),
        libc::CLOCK_BOOTTIME_ALARM => "CLOCK_BOOTTIME_ALARM".into(),
        libc::CLOCK_TAI => "CLOCK_TAI".into(),
        v => format!("clock {v}"),
    }
}

// ---------------------------------------------------------------- credentials

/// Capability names by number (CAP_LAST_CAP = 40, CAP_CHECKPOINT_RESTORE).
pub const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every capability this table knows.
pub const ALL_CAPS: u64 = (1u64 << CAPS.len()) - 1;

fn cap_name(bit: u32) -> String {
    CAPS.get(bit as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("cap{bit}"))
}

/// A capability set from its 32-bit words (lowest first).
pub fn cap_words(words: &[u32]) -> u64 {
    words
        .iter()
        .take(2)
        .enumerate()
        .fold(0, |acc, (i, &w)| acc | (w as u64) << (32 * i))
}

pub fn cap_list(set: u64) -> Vec<String> {
    (0..64)
        .filter(|b| set & (1u64 << b) != 0)
        .map(cap_name)
        .collect()
}

/// "none", "all", "all except CAP_SYS_RESOURCE" or the list of names.
/// "all" means every capability up to CAP_CHECKPOINT_RESTORE; bits above
/// it are named capN.
pub fn caps(set: u64) -> String {
    let extra = set & !ALL_CAPS;
    let known = set & ALL_CAPS;
    let extra_s = if extra != 0 {
        format!(" + {}", cap_list(extra).join(", "))
    } else {
        String::new()
    };
    if known == ALL_CAPS {
        format!("all{extra_s}")
    } else if known == 0 && extra == 0 {
        "none".to_string()
    } else if known.count_ones() > ALL_CAPS.count_ones() / 2 {
        format!(
            "all except {}{extra_s}",
            cap_list(ALL_CAPS & !known).join(", ")
        )
    } else {
        cap_list(set).join(", ")
    }
}

pub const SECUREBITS: Flags = &[
    (libc::SECBIT_NOROOT as u64, "SECBIT_NOROOT"),
    (libc::SECBIT_NOROOT_LOCKED as u64, "SECBIT_NOROOT_LOCKED"),
    (
        libc::SECBIT_NO_SETUID_FIXUP as u64,
        "SECBIT_NO_SETUID_FIXUP",
    ),
    (
        libc::SECBIT_NO_SETUID_FIXUP_LOCKED as u64,
        "SECBIT_NO_SETUID_FIXUP_LOCKED",
    ),
    (libc::SECBIT_KEEP_CAPS as u64, "SECBIT_KEEP_CAPS"),
    (
        libc::SECBIT_KEEP_CAPS_LOCKED as u64,
        "SECBIT_KEEP_CAPS_LOCKED",
    ),
    (
        libc::SECBIT_NO_CAP_AMBIENT_RAISE as u64,
        "SECBIT_NO_CAP_AMBIENT_RAISE",
    ),
    (
        libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED as u64,
        "SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED",
    ),
    (
        libc::SECBIT_EXEC_RESTRICT_FILE as u64,
        "SECBIT_EXEC_RESTRICT_FILE",
    ),
    (
        libc::SECBIT_EXEC_RESTRICT_FILE_LOCKED as u64,
        "SECBIT_EXEC_RESTRICT_FILE_LOCKED",
    ),
    (
        libc::SECBIT_EXEC_DENY_INTERACTIVE as u64,
        "SECBIT_EXEC_DENY_INTERACTIVE",
    ),
    (
        libc::SECBIT_EXEC_DENY_INTERACTIVE_LOCKED as u64,
        "SECBIT_EXEC_DENY_INTERACTIVE_LOCKED",
    ),
];

// ---------------------------------------------------------------- limits

pub const RLIMITS: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

pub fn rlimit_name(i: usize) -> String {
    RLIMITS
        .get(i)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("rlimit {i}"))
}

/// One rlimit value: "unlimited", sizes of the byte-counting limits in
/// binary units when that is exact ("8 MiB"), else the plain number (with
/// its unit for the time limits).
pub fn rlimit_value(i: usize, v: u64) -> String {
    if v == u64::MAX {
        return "unlimited".to_string();
    }
    let bytes = [
        libc::RLIMIT_FSIZE,
        libc::RLIMIT_DATA,
        libc::RLIMIT_STACK,
        libc::RLIMIT_CORE,
        libc::RLIMIT_RSS,
        libc::RLIMIT_MEMLOCK,
        libc::RLIMIT_AS,
        libc::RLIMIT_MSGQUEUE,
    ];
    if bytes.iter().any(|&r| r as usize == i) {
        if v >= 1024 && v % 1024 == 0 {
            return human(v);
        }
        return format!("{v} B");
    }
    if i == libc::RLIMIT_CPU as usize {
        return format!("{v}s");
    }
    if i == libc::RLIMIT_RTTIME as usize {
        return format!("{v}us");
    }
    v.to_string()
}

// ---------------------------------------------------------------- tasks

/// A wait status as waitpid reports it: "exited with 7", "killed by SIGKILL".
pub fn wait_status(st: u32) -> String {
    match st & 0x7f {
        0 => format!("exited with {}", (st >> 8) & 0xff),
        sig => format!(
            "killed by {}{}",
            signal(sig),
            if st & 0x80 != 0 { " (core dumped)" } else { "" }
        ),
    }
}

pub fn task_state(s: u32) -> String {
    match s {
        TASK_ALIVE => "alive".into(),
        TASK_DEAD => "dead".into(),
        TASK_STOPPED => "stopped".into(),
        TASK_HELPER => "helper".into(),
        TASK_THREAD => "thread".into(),
        TASK_ZOMBIE => "zombie".into(),
        v => format!("state {v}"),
    }
}

pub const PERSONALITY_FLAGS: Flags = &[
    (libc::UNAME26 as u64, "UNAME26"),
    (libc::ADDR_NO_RANDOMIZE as u64, "ADDR_NO_RANDOMIZE"),
    (0x0080000, "FDPIC_FUNCPTRS"),
    (libc::MMAP_PAGE_ZERO as u64, "MMAP_PAGE_ZERO"),
    (libc::ADDR_COMPAT_LAYOUT as u64, "ADDR_COMPAT_LAYOUT"),
    (libc::READ_IMPLIES_EXEC as u64, "READ_IMPLIES_EXEC"),
    (libc::ADDR_LIMIT_32BIT as u64, "ADDR_LIMIT_32BIT"),
    (libc::SHORT_INODE as u64, "SHORT_INODE"),
    (libc::WHOLE_SECONDS as u64, "WHOLE_SECONDS"),
    (libc::STICKY_TIMEOUTS as u64, "STICKY_TIMEOUTS"),
    (libc::ADDR_LIMIT_3GB as u64, "ADDR_LIMIT_3GB"),
];

/// "PER_LINUX", "PER_LINUX|ADDR_NO_RANDOMIZE", "PER_LINUX32".
pub fn personality(p: u32) -> String {
    let base = match p & 0xff {
        0x00 => "PER_LINUX".to_string(),
        0x08 => "PER_LINUX32".to_string(),
        0x10 => "PER_BSD".to_string(),
        v => format!("persona {v:#x}"),
    };
    let mut parts = vec![base];
    parts.extend(flag_list((p & !0xff) as u64, PERSONALITY_FLAGS));
    parts.join("|")
}

pub fn sched_policy(p: u32) -> String {
    let reset = p & libc::SCHED_RESET_ON_FORK as u32 != 0;
    let name = match (p & !(libc::SCHED_RESET_ON_FORK as u32)) as i32 {
        libc::SCHED_OTHER => "SCHED_OTHER".to_string(),
        libc::SCHED_FIFO => "SCHED_FIFO".to_string(),
        libc::SCHED_RR => "SCHED_RR".to_string(),
        libc::SCHED_BATCH => "SCHED_BATCH".to_string(),
        libc::SCHED_IDLE => "SCHED_IDLE".to_string(),
        libc::SCHED_DEADLINE => "SCHED_DEADLINE".to_string(),
        v => format!("policy {v}"),
    };
    if reset {
        format!("{name}|SCHED_RESET_ON_FORK")
    } else {
        name
    }
}

pub fn seccomp_mode(m: i32) -> String {
    match m {
        0 => "disabled".into(),
        SECCOMP_MODE_STRICT => "strict".into(),
        SECCOMP_MODE_FILTER => "filter".into(),
        v => format!("mode {v}"),
    }
}

/// prctl(PR_GET_DUMPABLE): SUID_DUMP_DISABLE/USER/ROOT.
pub fn dumpable(d: i32) -> String {
    match d {
        0 => "no (SUID_DUMP_DISABLE)".into(),
        1 => "yes (SUID_DUMP_USER)".into(),
        2 => "root only (SUID_DUMP_ROOT)".into(),
        v => format!("{v}"),
    }
}

pub fn auxv_type(t: u64) -> String {
    let name = match t {
        0 => "AT_NULL",
        1 => "AT_IGNORE",
        2 => "AT_EXECFD",
        3 => "AT_PHDR",
        4 => "AT_PHENT",
        5 => "AT_PHNUM",
        6 => "AT_PAGESZ",
        7 => "AT_BASE",
        8 => "AT_FLAGS",
        9 => "AT_ENTRY",
        10 => "AT_NOTELF",
        11 => "AT_UID",
        12 => "AT_EUID",
        13 => "AT_GID",
        14 => "AT_EGID",
        15 => "AT_PLATFORM",
        16 => "AT_HWCAP",
        17 => "AT_CLKTCK",
        23 => "AT_SECURE",
        24 => "AT_BASE_PLATFORM",
        25 => "AT_RANDOM",
        26 => "AT_HWCAP2",
        27 => "AT_RSEQ_FEATURE_SIZE",
        28 => "AT_RSEQ_ALIGN",
        29 => "AT_HWCAP3",
        30 => "AT_HWCAP4",
        31 => "AT_EXECFN",
        32 => "AT_SYSINFO",
        33 => "AT_SYSINFO_EHDR",
        51 => "AT_MINSIGSTKSZ",
        _ => return format!("AT_{t}"),
    };
    name.to_string()
}

/// Whether an auxv value is best read as a number (sizes, counts, ids)
/// rather than an address.
pub fn auxv_is_number(t: u64) -> bool {
    matches!(t, 4..=6 | 8 | 11..=14 | 17 | 23 | 27 | 28 | 51)
}

// ---------------------------------------------------------------- fsnotify

/// inotify watch masks: events, then the flags the kernel keeps with the
/// watch. IN_ALL_EVENTS first, so that a watch on everything reads so.
pub const INOTIFY_MASK: Flags = &[
    (libc::IN_ALL_EVENTS as u64, "IN_ALL_EVENTS"),
    (libc::IN_ACCESS as u64, "IN_ACCESS"),
    (libc::IN_MODIFY as u64, "IN_MODIFY"),
    (libc::IN_ATTRIB as u64, "IN_ATTRIB"),
    (libc::IN_CLOSE_WRITE as u64, "IN_CLOSE_WRITE"),
    (libc::IN_CLOSE_NOWRITE as u64, "IN_CLOSE_NOWRITE"),
    (libc::IN_OPEN as u64, "IN_OPEN"),
    (libc::IN_MOVED_FROM as u64, "IN_MOVED_FROM"),
    (libc::IN_MOVED_TO as u64, "IN_MOVED_TO"),
    (libc::IN_CREATE as u64, "IN_CREATE"),
    (libc::IN_DELETE as u64, "IN_DELETE"),
    (libc::IN_DELETE_SELF as u64, "IN_DELETE_SELF"),
    (libc::IN_MOVE_SELF as u64, "IN_MOVE_SELF"),
    (libc::IN_UNMOUNT as u64, "IN_UNMOUNT"),
    (libc::IN_Q_OVERFLOW as u64, "IN_Q_OVERFLOW"),
    (libc::IN_IGNORED as u64, "IN_IGNORED"),
    (libc::IN_ONLYDIR as u64, "IN_ONLYDIR"),
    (libc::IN_DONT_FOLLOW as u64, "IN_DONT_FOLLOW"),
    (libc::IN_EXCL_UNLINK as u64, "IN_EXCL_UNLINK"),
    (libc::IN_MASK_CREATE as u64, "IN_MASK_CREATE"),
    (libc::IN_MASK_ADD as u64, "IN_MASK_ADD"),
    (libc::IN_ISDIR as u64, "IN_ISDIR"),
    (libc::IN_ONESHOT as u64, "IN_ONESHOT"),
];

/// "IN_MODIFY|IN_ONESHOT": an inotify mask by name ("0" for none).
pub fn inotify_mask(mask: u32) -> String {
    flags(mask as u64, INOTIFY_MASK, "0")
}

/// fanotify event masks (marks and ignored masks).
pub const FANOTIFY_MASK: Flags = &[
    (libc::FAN_ACCESS, "FAN_ACCESS"),
    (libc::FAN_MODIFY, "FAN_MODIFY"),
    (libc::FAN_ATTRIB, "FAN_ATTRIB"),
    (libc::FAN_CLOSE_WRITE, "FAN_CLOSE_WRITE"),
    (libc::FAN_CLOSE_NOWRITE, "FAN_CLOSE_NOWRITE"),
    (libc::FAN_OPEN, "FAN_OPEN"),
    (libc::FAN_MOVED_FROM, "FAN_MOVED_FROM"),
    (libc::FAN_MOVED_TO, "FAN_MOVED_TO"),
    (libc::FAN_CREATE, "FAN_CREATE"),
    (libc::FAN_DELETE, "FAN_DELETE"),
    (libc::FAN_DELETE_SELF, "FAN_DELETE_SELF"),
    (libc::FAN_MOVE_SELF, "FAN_MOVE_SELF"),
    (libc::FAN_OPEN_EXEC, "FAN_OPEN_EXEC"),
    (libc::FAN_Q_OVERFLOW, "FAN_Q_OVERFLOW"),
    (libc::FAN_FS_ERROR, "FAN_FS_ERROR"),
    (libc::FAN_OPEN_PERM, "FAN_OPEN_PERM"),
    (libc::FAN_ACCESS_PERM, "FAN_ACCESS_PERM"),
    (libc::FAN_OPEN_EXEC_PERM, "FAN_OPEN_EXEC_PERM"),
    (libc::FAN_RENAME, "FAN_RENAME"),
    (libc::FAN_EVENT_ON_CHILD, "FAN_EVENT_ON_CHILD"),
    (libc::FAN_ONDIR, "FAN_ONDIR"),
];

/// "FAN_OPEN|FAN_ONDIR": a fanotify mask by name ("0" for none).
pub fn fanotify_mask(mask: u64) -> String {
    flags(mask, FANOTIFY_MASK, "0")
}

/// fanotify mark flags as a mark keeps them (fanotify_mark's flags).
pub const FANOTIFY_MARK_FLAGS: Flags = &[
    (libc::FAN_MARK_DONT_FOLLOW as u64, "FAN_MARK_DONT_FOLLOW"),
    (libc::FAN_MARK_ONLYDIR as u64, "FAN_MARK_ONLYDIR"),
    (libc::FAN_MARK_MOUNT as u64, "FAN_MARK_MOUNT"),
    (libc::FAN_MARK_FILESYSTEM as u64, "FAN_MARK_FILESYSTEM"),
    (libc::FAN_MARK_IGNORED_MASK as u64, "FAN_MARK_IGNORED_MASK"),
    (
        libc::FAN_MARK_IGNORED_SURV_MODIFY as u64,
        "FAN_MARK_IGNORED_SURV_MODIFY",
    ),
    (libc::FAN_MARK_EVICTABLE as u64, "FAN_MARK_EVICTABLE"),
    (libc::FAN_MARK_IGNORE as u64, "FAN_MARK_IGNORE"),
];

// ---------------------------------------------------------------- memory

/// "r-xp": protections and sharing as /proc/PID/maps shows them.
pub fn prot_maps(prot: u32, flags: u32) -> String {
    let mut s = String::with_capacity(4);
    s.push(if prot & libc::PROT_READ as u32 != 0 {
        'r'
    } else {
        '-'
    });
    s.push(if prot & libc::PROT_WRITE as u32 != 0 {
        'w'
    } else {
        '-'
    });
    s.push(if prot & libc::PROT_EXEC as u32 != 0 {
        'x'
    } else {
        '-'
    });
    s.push(if flags & libc::MAP_SHARED as u32 != 0 {
        's'
    } else {
        'p'
    });
    s
}

pub const PROT_FLAGS: Flags = &[
    (libc::PROT_READ as u64, "PROT_READ"),
    (libc::PROT_WRITE as u64, "PROT_WRITE"),
    (libc::PROT_EXEC as u64, "PROT_EXEC"),
    (libc::PROT_GROWSDOWN as u64, "PROT_GROWSDOWN"),
    (libc::PROT_GROWSUP as u64, "PROT_GROWSUP"),
];

pub const MAP_FLAGS: Flags = &[
    (libc::MAP_SHARED_VALIDATE as u64, "MAP_SHARED_VALIDATE"),
    (libc::MAP_SHARED as u64, "MAP_SHARED"),
    (libc::MAP_PRIVATE as u64, "MAP_PRIVATE"),
    (libc::MAP_FIXED as u64, "MAP_FIXED"),
    (libc::MAP_ANONYMOUS as u64, "MAP_ANONYMOUS"),
    (libc::MAP_32BIT as u64, "MAP_32BIT"),
    (libc::MAP_GROWSDOWN as u64, "MAP_GROWSDOWN"),
    (libc::MAP_DENYWRITE as u64, "MAP_DENYWRITE"),
    (libc::MAP_EXECUTABLE as u64, "MAP_EXECUTABLE"),
    (libc::MAP_LOCKED as u64, "MAP_LOCKED"),
    (libc::MAP_NORESERVE as u64, "MAP_NORESERVE"),
    (libc::MAP_POPULATE as u64, "MAP_POPULATE"),
    (libc::MAP_NONBLOCK as u64, "MAP_NONBLOCK"),
    (libc::MAP_STACK as u64, "MAP_STACK"),
    (libc::MAP_HUGETLB as u64, "MAP_HUGETLB"),
    (libc::MAP_SYNC as u64, "MAP_SYNC"),
    (libc::MAP_FIXED_NOREPLACE as u64, "MAP_FIXED_NOREPLACE"),
];

pub const VMA_STATUS: Flags = &[
    (VMA_AREA_REGULAR as u64, "VMA_AREA_REGULAR"),
    (VMA_AREA_STACK as u64, "VMA_AREA_STACK"),
    (VMA_AREA_VSYSCALL as u64, "VMA_AREA_VSYSCALL"),
    (VMA_AREA_VDSO as u64, "VMA_AREA_VDSO"),
    (VMA_AREA_HEAP as u64, "VMA_AREA_HEAP"),
    (VMA_FILE_PRIVATE as u64, "VMA_FILE_PRIVATE"),
    (VMA_FILE_SHARED as u64, "VMA_FILE_SHARED"),
    (VMA_ANON_SHARED as u64, "VMA_ANON_SHARED"),
    (VMA_ANON_PRIVATE as u64, "VMA_ANON_PRIVATE"),
    (VMA_AREA_SYSVIPC as u64, "VMA_AREA_SYSVIPC"),
    (VMA_AREA_SOCKET as u64, "VMA_AREA_SOCKET"),
    (VMA_AREA_VVAR as u64, "VMA_AREA_VVAR"),
    (VMA_AREA_AIORING as u64, "VMA_AREA_AIORING"),
    (VMA_AREA_MEMFD as u64, "VMA_AREA_MEMFD"),
    (VMA_AREA_UPROBES as u64, "VMA_AREA_UPROBES"),
    (VMA_AREA_SHSTK as u64, "VMA_AREA_SHSTK"),
];

/// What a mapping is, from its status bits: vsyscall, vdso, vvar, heap,
/// stack, sysv-shm, memfd, shmem (shared anonymous), file, anon.
pub fn vma_kind(status: u32) -> &'static str {
    let has = |b: u32| status & b != 0;
    if has(VMA_AREA_VSYSCALL) {
        "vsyscall"
    } else if has(VMA_AREA_VDSO) {
        "vdso"
    } else if has(VMA_AREA_VVAR) {
        "vvar"
    } else if has(VMA_AREA_HEAP) {
        "heap"
    } else if has(VMA_AREA_STACK) {
        "stack"
    } else if has(VMA_AREA_SYSVIPC) {
        "sysv-shm"
    } else if has(VMA_AREA_MEMFD) {
        "memfd"
    } else if has(VMA_AREA_AIORING) {
        "aio-ring"
    } else if has(VMA_AREA_UPROBES) {
        "uprobes"
    } else if has(VMA_AREA_SOCKET) {
        "socket"
    } else if has(VMA_ANON_SHARED) {
        "shmem"
    } else if has(VMA_FILE_PRIVATE | VMA_FILE_SHARED) {
        "file"
    } else if has(VMA_ANON_PRIVATE) {
        "anon"
    } else {
        "?"
    }
}

/// madvise advice names; VmaEntry.madv has bit n set for advice n.
pub fn madv(bits: u64) -> Vec<String> {
    (0..64u32)
        .filter(|b| bits & (1u64 << b) != 0)
        .map(|b| {
            match b as i32 {
                libc::MADV_RANDOM => "MADV_RANDOM",
                libc::MADV_SEQUENTIAL => "MADV_SEQUENTIAL",
                libc::MADV_WILLNEED => "MADV_WILLNEED",
                libc::MADV_DONTNEED => "MADV_DONTNEED",
                libc::MADV_FREE => "MADV_FREE",
                libc::MADV_REMOVE => "MADV_REMOVE",
                libc::MADV_DONTFORK => "MADV_DONTFORK",
                libc::MADV_DOFORK => "MADV_DOFORK",
                libc::MADV_MERGEABLE => "MADV_MERGEABLE",
                libc::MADV_UNMERGEABLE => "MADV_UNMERGEABLE",
                libc::MADV_HUGEPAGE => "MADV_HUGEPAGE",
                libc::MADV_NOHUGEPAGE => "MADV_NOHUGEPAGE",
                libc::MADV_DONTDUMP => "MADV_DONTDUMP",
                libc::MADV_DODUMP => "MADV_DODUMP",
                libc::MADV_WIPEONFORK => "MADV_WIPEONFORK",
                libc::MADV_KEEPONFORK => "MADV_KEEPONFORK",
                libc::MADV_COLD => "MADV_COLD",
                libc::MADV_PAGEOUT => "MADV_PAGEOUT",
                _ => return format!("madvise {b}"),
            }
            .to_string()
        })
        .collect()
}

pub fn pagemap_flags(f: u32) -> String {
    flags(
        f as u64,
        &[
            (PE_PARENT as u64, "PE_PARENT"),
            (PE_LAZY as u64, "PE_LAZY"),
            (PE_PRESENT as u64, "PE_PRESENT"),
            // ckpt's own: the parent's page, shared since fork
            (PE_COW_PARENT as u64, "PE_COW_PARENT"),
        ],
        "none",
    )
}

// ---------------------------------------------------------------- files

/// O_LARGEFILE as the kernel reports it on x86_64 (libc's constant is 0
/// there, because the flag is implied).
pub const O_LARGEFILE: u64 = 0o100000;
const O_TMPFILE_ONLY: u64 = 0o20000000;

/// Open flags: the access mode, then the other flags, "O_RDWR|O_APPEND".
pub fn open_flags(f: u32) -> String {
    open_flag_list(f).join("|")
}

pub fn open_flag_list(f: u32) -> Vec<String> {
    let f = f as u64;
    let mode = match f & libc::O_ACCMODE as u64 {
        m if m == libc::O_RDONLY as u64 => "O_RDONLY".to_string(),
        m if m == libc::O_WRONLY as u64 => "O_WRONLY".to_string(),
        m if m == libc::O_RDWR as u64 => "O_RDWR".to_string(),
        m => format!("O_ACCMODE={m}"),
    };
    let rest = f & !(libc::O_ACCMODE as u64);
    let mut out = vec![mode];
    // O_SYNC includes O_DSYNC's bit, O_TMPFILE includes O_DIRECTORY's:
    // name the composite first so its parts are not named twice.
    let table: Flags = &[
        (libc::O_CREAT as u64, "O_CREAT"),
        (libc::O_EXCL as u64, "O_EXCL"),
        (libc::O_NOCTTY as u64, "O_NOCTTY"),
        (libc::O_TRUNC as u64, "O_TRUNC"),
        (libc::O_APPEND as u64, "O_APPEND"),
        (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
        (libc::O_SYNC as u64, "O_SYNC"),
        (libc::O_DSYNC as u64, "O_DSYNC"),
        (libc::O_ASYNC as u64, "O_ASYNC"),
        (libc::O_DIRECT as u64, "O_DIRECT"),
        (O_LARGEFILE, "O_LARGEFILE"),
        (O_TMPFILE_ONLY | libc::O_DIRECTORY as u64, "O_TMPFILE"),
        (libc::O_DIRECTORY as u64, "O_DIRECTORY"),
        (libc::O_NOFOLLOW as u64, "O_NOFOLLOW"),
        (libc::O_NOATIME as u64, "O_NOATIME"),
        (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
        (libc::O_PATH as u64, "O_PATH"),
    ];
    out.extend(flag_list(rest, table));
    out
}

pub const EPOLL_EVENTS: Flags = &[
    (libc::EPOLLIN as u64, "EPOLLIN"),
    (libc::EPOLLPRI as u64, "EPOLLPRI"),
    (libc::EPOLLOUT as u64, "EPOLLOUT"),
    (libc::EPOLLERR as u64, "EPOLLERR"),
    (libc::EPOLLHUP as u64, "EPOLLHUP"),
    (libc::EPOLLRDNORM as u64, "EPOLLRDNORM"),
    (libc::EPOLLRDBAND as u64, "EPOLLRDBAND"),
    (libc::EPOLLWRNORM as u64, "EPOLLWRNORM"),
    (libc::EPOLLWRBAND as u64, "EPOLLWRBAND"),
    (libc::EPOLLMSG as u64, "EPOLLMSG"),
    (libc::EPOLLRDHUP as u64, "EPOLLRDHUP"),
    (libc::EPOLLEXCLUSIVE as u32 as u64, "EPOLLEXCLUSIVE"),
    (libc::EPOLLWAKEUP as u32 as u64, "EPOLLWAKEUP"),
    (libc::EPOLLONESHOT as u32 as u64, "EPOLLONESHOT"),
    (libc::EPOLLET as u32 as u64, "EPOLLET"),
];

/// The file type of an st_mode: "regular file", "directory", ...
pub fn file_type(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFLNK => "symlink",
        _ => "unknown type",
    }
}

// ---------------------------------------------------------------- inventory

pub fn lsm(t: i32) -> String {
    match t {
        0 => "none".into(),
        1 => "SELinux".into(),
        2 => "AppArmor".into(),
        v => format!("lsm {v}"),
    }
}

pub fn img_version(v: u32) -> String {
    match v {
        1 => "v1 (1)".into(),
        2 => "v1.1 (2)".into(),
        crate::images::magic::IMAGES_CKPT_COW => {
            "v1.1 with pages shared with the parent (ckpt only)".into()
        }
        v => format!("{v} (unknown)"),
    }
}

// ---------------------------------------------------------------- registers

/// The x86_64 syscall with this number, by name.
pub fn syscall(nr: u64) -> String {
    SYSCALLS
        .iter()
        .find(|&&(n, _)| n as u64 == nr)
        .map(|&(_, s)| s.trim_start_matches("SYS_").to_string())
        .unwrap_or_else(|| format!("syscall {nr}"))
}

/// The kernel's restart codes (include/linux/errno.h), which a thread
/// stopped inside a syscall reports in ax.
pub fn restart_code(ax: u64) -> Option<&'static str> {
    match ax as i64 {
        ERESTARTSYS => Some("ERESTARTSYS"),
        ERESTARTNOINTR => Some("ERESTARTNOINTR"),
        ERESTARTNOHAND => Some("ERESTARTNOHAND"),
        ERESTART_RESTARTBLOCK => Some("ERESTART_RESTARTBLOCK"),
        _ => None,
    }
}

pub fn errno(e: i32) -> String {
    let s = format!("{:?}", nix::errno::Errno::from_raw(e));
    if s.starts_with("Unknown") {
        format!("errno {e}")
    } else {
        s
    }
}

/// Where a thread stands with respect to system calls, from orig_ax and
/// ax: "not in a syscall", "in syscall nanosleep (will restart:
/// -ERESTART_RESTARTBLOCK)", "entering syscall read", "syscall read
/// returned -EINTR".
pub fn syscall_state(orig_ax: u64, ax: u64) -> String {
    if orig_ax as i64 == -1 {
        return "not in a syscall".to_string();
    }
    let name = syscall(orig_ax);
    if let Some(code) = restart_code(ax) {
        let how = if code == "ERESTART_RESTARTBLOCK" {
            "will restart via restart_syscall"
        } else {
            "will restart"
        };
        return format!("in syscall {name} ({how}: -{code})");
    }
    let ret = ax as i64;
    if ret == -(libc::ENOSYS as i64) {
        return format!("entering syscall {name}");
    }
    if (-4095..0).contains(&ret) {
        format!("syscall {name} returned -{}", errno(-ret as i32))
    } else {
        format!("syscall {name} returned {ret}")
    }
}

macro_rules! syscalls {
    ($($name:ident)*) => {
        /// x86_64 syscall numbers and their libc constant names ("SYS_read").
        pub const SYSCALLS: &[(libc::c_long, &str)] = &[ $( (libc::$name, stringify!($name)), )* ];
    };
}

syscalls! {
    SYS_read SYS_write SYS_open SYS_close SYS_stat SYS_fstat SYS_lstat SYS_poll SYS_lseek
    SYS_mmap SYS_mprotect SYS_munmap SYS_brk SYS_rt_sigaction SYS_rt_sigprocmask
    SYS_rt_sigreturn SYS_ioctl SYS_pread64 SYS_pwrite64 SYS_readv SYS_writev SYS_access
    SYS_pipe SYS_select SYS_sched_yield SYS_mremap SYS_msync SYS_mincore SYS_madvise
    SYS_shmget SYS_shmat SYS_shmctl SYS_dup SYS_dup2 SYS_pause SYS_nanosleep SYS_getitimer
    SYS_alarm SYS_setitimer SYS_getpid SYS_sendfile SYS_socket SYS_connect SYS_accept
    SYS_sendto SYS_recvfrom SYS_sendmsg SYS_recvmsg SYS_shutdown SYS_bind SYS_listen
    SYS_getsockname SYS_getpeername SYS_socketpair SYS_setsockopt SYS_getsockopt SYS_clone
    SYS_fork SYS_vfork SYS_execve SYS_exit SYS_wait4 SYS_kill SYS_uname SYS_semget SYS_semop
    SYS_semctl SYS_shmdt SYS_msgget SYS_msgsnd SYS_msgrcv SYS_msgctl SYS_fcntl SYS_flock
    SYS_fsync SYS_fdatasync SYS_truncate SYS_ftruncate SYS_getdents SYS_getcwd SYS_chdir
    SYS_fchdir SYS_rename SYS_mkdir SYS_rmdir SYS_creat SYS_link SYS_unlink SYS_symlink
    SYS_readlink SYS_chmod SYS_fchmod SYS_chown SYS_fchown SYS_lchown SYS_umask
    SYS_gettimeofday SYS_getrlimit SYS_getrusage SYS_sysinfo SYS_times SYS_ptrace SYS_getuid
    SYS_syslog SYS_getgid SYS_setuid SYS_setgid SYS_geteuid SYS_getegid SYS_setpgid
    SYS_getppid SYS_getpgrp SYS_setsid SYS_setreuid SYS_setregid SYS_getgroups SYS_setgroups
    SYS_setresuid SYS_getresuid SYS_setresgid SYS_getresgid SYS_getpgid SYS_setfsuid
    SYS_setfsgid SYS_getsid SYS_capget SYS_capset SYS_rt_sigpending SYS_rt_sigtimedwait
    SYS_rt_sigqueueinfo SYS_rt_sigsuspend SYS_sigaltstack SYS_utime SYS_mknod SYS_personality
    SYS_statfs SYS_fstatfs SYS_getpriority SYS_setpriority SYS_sched_setparam
    SYS_sched_getparam SYS_sched_setscheduler SYS_sched_getscheduler SYS_sched_get_priority_max
    SYS_sched_get_priority_min SYS_sched_rr_get_interval SYS_mlock SYS_munlock SYS_mlockall
    SYS_munlockall SYS_vhangup SYS_modify_ldt SYS_pivot_root SYS_prctl SYS_arch_prctl
    SYS_adjtimex SYS_setrlimit SYS_chroot SYS_sync SYS_acct SYS_settimeofday SYS_mount
    SYS_umount2 SYS_swapon SYS_swapoff SYS_reboot SYS_sethostname SYS_setdomainname SYS_iopl
    SYS_ioperm SYS_init_module SYS_delete_module SYS_quotactl SYS_gettid SYS_readahead
    SYS_setxattr SYS_lsetxattr SYS_fsetxattr SYS_getxattr SYS_lgetxattr SYS_fgetxattr
    SYS_listxattr SYS_llistxattr SYS_flistxattr SYS_removexattr SYS_lremovexattr
    SYS_fremovexattr SYS_tkill SYS_time SYS_futex SYS_sched_setaffinity SYS_sched_getaffinity
    SYS_set_thread_area SYS_io_setup SYS_io_destroy SYS_io_getevents SYS_io_submit
    SYS_io_cancel SYS_get_thread_area SYS_epoll_create SYS_remap_file_pages SYS_getdents64
    SYS_set_tid_address SYS_restart_syscall SYS_semtimedop SYS_fadvise64 SYS_timer_create
    SYS_timer_settime SYS_timer_gettime SYS_timer_getoverrun SYS_timer_delete
    SYS_clock_settime SYS_clock_gettime SYS_clock_getres SYS_clock_nanosleep SYS_exit_group
    SYS_epoll_wait SYS_epoll_ctl SYS_tgkill SYS_utimes SYS_mbind SYS_set_mempolicy
    SYS_get_mempolicy SYS_mq_open SYS_mq_unlink SYS_mq_timedsend SYS_mq_timedreceive
    SYS_mq_notify SYS_mq_getsetattr SYS_kexec_load SYS_waitid SYS_add_key SYS_request_key
    SYS_keyctl SYS_ioprio_set SYS_ioprio_get SYS_inotify_init SYS_inotify_add_watch
    SYS_inotify_rm_watch SYS_migrate_pages SYS_openat SYS_mkdirat SYS_mknodat SYS_fchownat
    SYS_futimesat SYS_newfstatat SYS_unlinkat SYS_renameat SYS_linkat SYS_symlinkat
    SYS_readlinkat SYS_fchmodat SYS_faccessat SYS_pselect6 SYS_ppoll SYS_unshare
    SYS_set_robust_list SYS_get_robust_list SYS_splice SYS_tee SYS_sync_file_range
    SYS_vmsplice SYS_move_pages SYS_utimensat SYS_epoll_pwait SYS_signalfd SYS_timerfd_create
    SYS_eventfd SYS_fallocate SYS_timerfd_settime SYS_timerfd_gettime SYS_accept4
    SYS_signalfd4 SYS_eventfd2 SYS_epoll_create1 SYS_dup3 SYS_pipe2 SYS_inotify_init1
    SYS_preadv SYS_pwritev SYS_rt_tgsigqueueinfo SYS_perf_event_open SYS_recvmmsg
    SYS_fanotify_init SYS_fanotify_mark SYS_prlimit64 SYS_name_to_handle_at
    SYS_open_by_handle_at SYS_clock_adjtime SYS_syncfs SYS_sendmmsg SYS_setns SYS_getcpu
    SYS_process_vm_readv SYS_process_vm_writev SYS_kcmp SYS_finit_module SYS_sched_setattr
    SYS_sched_getattr SYS_renameat2 SYS_seccomp SYS_getrandom SYS_memfd_create
    SYS_kexec_file_load SYS_bpf SYS_execveat SYS_userfaultfd SYS_membarrier SYS_mlock2
    SYS_copy_file_range SYS_preadv2 SYS_pwritev2 SYS_pkey_mprotect SYS_pkey_alloc
    SYS_pkey_free SYS_statx SYS_rseq SYS_pidfd_send_signal SYS_io_uring_setup
    SYS_io_uring_enter SYS_io_uring_register SYS_open_tree SYS_move_mount SYS_fsopen
    SYS_fsconfig SYS_fsmount SYS_fspick SYS_pidfd_open SYS_clone3 SYS_close_range SYS_openat2
    SYS_pidfd_getfd SYS_faccessat2 SYS_process_madvise SYS_epoll_pwait2 SYS_mount_setattr
    SYS_quotactl_fd SYS_landlock_create_ruleset SYS_landlock_add_rule
    SYS_landlock_restrict_self SYS_memfd_secret SYS_process_mrelease SYS_futex_waitv
    SYS_set_mempolicy_home_node SYS_fchmodat2 SYS_mseal
}

/// Items joined with ", " and wrapped into lines of at most `width`
/// characters, each line after the first starting with `indent`.
pub fn wrap(items: &[String], width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item},")
        } else {
            item.clone()
        };
        if line_len > 0 && line_len + 1 + piece.len() > width {
            let _ = write!(out, "\n{indent}");
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(&piece);
        line_len += piece.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal(15), "SIGTERM");
        assert_eq!(signal(34), "SIGRTMIN");
        assert_eq!(signal(35), "SIGRTMIN+1");
        assert_eq!(signal(49), "SIGRTMIN+15");
        assert_eq!(signal(50), "SIGRTMAX-14");
        assert_eq!(signal(64), "SIGRTMAX");
        assert_eq!(signal(32), "SIG32");
        assert_eq!(sigset(0), "{}");
        assert_eq!(sigset(1 << 9 | 1 << 14), "{SIGUSR1, SIGTERM}");
        assert_eq!(
            sigset(!(1u64 << 8 | 1 << 18)),
            "all except {SIGKILL, SIGSTOP}"
        );
        assert_eq!(sigaction_signal(0), 1);
        assert_eq!(sigaction_signal(8), 10);
        assert_eq!(sigaction_signal(61), 64);
    }

    #[test]
    fn capability_sets() {
        assert_eq!(caps(0), "none");
        assert_eq!(caps(0x1ff_ffff_ffff), "all");
        assert_eq!(caps(0x1ff_feff_ffff), "all except CAP_SYS_RESOURCE");
        assert_eq!(caps(1 << 21 | 1), "CAP_CHOWN, CAP_SYS_ADMIN");
        assert_eq!(caps(u64::MAX).split(" + ").next(), Some("all"));
        assert_eq!(cap_words(&[0xffff_ffff, 0x1ff]), 0x1ff_ffff_ffff);
    }

    #[test]
    fn fsnotify_masks() {
        assert_eq!(inotify_mask(0), "0");
        assert_eq!(
            inotify_mask(libc::IN_MODIFY | libc::IN_EXCL_UNLINK | libc::IN_ONESHOT),
            "IN_MODIFY|IN_EXCL_UNLINK|IN_ONESHOT"
        );
        assert_eq!(
            inotify_mask(libc::IN_ALL_EVENTS | libc::IN_DONT_FOLLOW),
            "IN_ALL_EVENTS|IN_DONT_FOLLOW"
        );
        assert_eq!(inotify_mask(libc::IN_ACCESS | 0x1000), "IN_ACCESS|0x1000");
        assert_eq!(
            fanotify_mask(libc::FAN_OPEN | libc::FAN_ONDIR),
            "FAN_OPEN|FAN_ONDIR"
        );
    }

    #[test]
    fn sizes_and_flags() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(1536 * 1024), "1.50 MiB");
        assert_eq!(human(8 << 20), "8 MiB");
        assert_eq!(human(114_688), "112 KiB");
        assert_eq!(open_flags(0o102002), "O_RDWR|O_APPEND|O_LARGEFILE");
        assert_eq!(open_flags(libc::O_SYNC as u32), "O_RDONLY|O_SYNC");
        assert_eq!(open_flags(0o20200000), "O_RDONLY|O_TMPFILE");
        assert_eq!(
            flags(0x1400_0004, SA_FLAGS, "0"),
            "SA_RESTART|SA_RESTORER|SA_SIGINFO"
        );
        assert_eq!(rlimit_value(7, 1024), "1024");
        assert_eq!(rlimit_value(3, 8 << 20), "8 MiB");
        assert_eq!(rlimit_value(3, u64::MAX), "unlimited");
        assert_eq!(personality(0x40000), "PER_LINUX|ADDR_NO_RANDOMIZE");
        assert_eq!(duration(1, 500_000_000, 1_000_000_000), "1.5s");
        assert_eq!(duration(0, 250, 1_000_000), "0.00025s");
    }

    #[test]
    fn syscalls() {
        assert_eq!(syscall(35), "nanosleep");
        assert_eq!(syscall(230), "clock_nanosleep");
        assert_eq!(syscall(9999), "syscall 9999");
        assert_eq!(
            syscall_state(230, (-516i64) as u64),
            "in syscall clock_nanosleep (will restart via restart_syscall: -ERESTART_RESTARTBLOCK)"
        );
        assert_eq!(syscall_state(u64::MAX, 0), "not in a syscall");
        assert_eq!(
            syscall_state(0, (-4i64) as u64),
            "syscall read returned -EINTR"
        );
    }
}
