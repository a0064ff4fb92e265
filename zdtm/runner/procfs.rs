//! The little of /proc the runner reads.
//!
//! The runner judges the engine, so it deliberately does not share the
//! engine's /proc code: a bug there must not be able to hide itself here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// The fields of /proc/PID/stat the runner needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub session: i32,
}

impl Stat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Parses one stat line; the command name may contain spaces and ')'.
fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let _pgrp: i32 = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        session,
    })
}

/// /proc/PID/stat, or None when the process does not exist (any more).
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// /proc/PID/task/TID/stat: one thread.
pub fn task_stat(pid: i32, tid: i32) -> Option<Stat> {
    parse_stat(
        tid,
        &fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?,
    )
}

fn numeric_entries(dir: &Path) -> Vec<i32> {
    let mut v: Vec<i32> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort_unstable();
    v
}

/// Every process visible in /proc.
pub fn all_processes() -> Vec<Stat> {
    numeric_entries(Path::new("/proc"))
        .into_iter()
        .filter_map(stat)
        .collect()
}

/// The processes of a case whose root is `sid`: every member of its session
/// (zombies included) and every descendant of the root, by PID.
pub fn members(sid: i32) -> Vec<Stat> {
    let all = all_processes();
    let mut set: BTreeSet<i32> = all
        .iter()
        .filter(|s| s.session == sid || s.pid == sid)
        .map(|s| s.pid)
        .collect();
    // Descendants that left the session (setsid in a child) still belong to
    // the case; follow parent links until nothing new turns up.
    loop {
        let before = set.len();
        for s in &all {
            if set.contains(&s.ppid) {
                set.insert(s.pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    all.into_iter().filter(|s| set.contains(&s.pid)).collect()
}

/// Thread IDs of a process.
pub fn threads(pid: i32) -> Vec<i32> {
    numeric_entries(Path::new(&format!("/proc/{pid}/task")))
}

/// The value of one "Key:\tvalue" line of /proc/PID/status, whitespace
/// normalised.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
    })
}

/// Reaps the zombies of a case (session `sid`, or a PID in `known`) whose
/// parent is this process.
///
/// Trials run in parallel threads, so the runner never calls waitpid(-1):
/// that could take the exit status of another trial's launcher or engine,
/// which std::process waits for by PID. Only processes of this trial's case
/// are reaped here, and std::process spawns none of those.
pub fn reap_zombies(sid: i32, known: &BTreeSet<i32>) {
    let me = std::process::id() as i32;
    for s in all_processes() {
        if s.ppid == me && s.is_zombie() && (s.session == sid || known.contains(&s.pid)) {
            let _ = waitpid(Pid::from_raw(s.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Where /proc/PID/exe points, if it can be read.
pub fn exe(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// What the runner compares across a dump/restore: every process of the
/// session, its threads and its credentials.
pub type Tree = BTreeMap<i32, TaskInfo>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its pid and thread ids in the runner's namespace (not compared).
    pub host: i32,
    pub host_threads: Vec<i32>,
    /// Its thread ids as the tree sees them.
    pub threads: Vec<i32>,
    pub uid: String,
    pub gid: String,
    pub groups: String,
}

/// The pid of `tid` (a thread of `pid`) in its own, innermost pid
/// namespace (the last of NSpid): what the tree itself sees, and what a
/// restore keeps, whether or not the tree has a pid namespace of its own.
pub fn inner_pid(pid: i32, tid: i32) -> i32 {
    let path = if pid == tid {
        format!("/proc/{pid}/status")
    } else {
        format!("/proc/{pid}/task/{tid}/status")
    };
    fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_ascii_whitespace().last()?.parse().ok())
        })
        .unwrap_or(tid)
}

/// How many pid namespaces deep `pid` is (entries of NSpid; 0 if gone).
pub fn pid_ns_depth(pid: i32) -> usize {
    status_field(pid, "NSpid").map_or(0, |v| v.split(' ').count())
}

/// The case's processes by the pids they see (see [`inner_pid`]).
pub fn snapshot(sid: i32) -> Tree {
    members(sid)
        .into_iter()
        .map(|s| {
            let f = |k| status_field(s.pid, k).unwrap_or_default();
            // In the order of the ids the tree sees: host tids wrap at
            // pid_max, so the host's order of the same threads differs
            // from one incarnation of the tree to the next.
            let mut pairs: Vec<(i32, i32)> = threads(s.pid)
                .into_iter()
                .map(|t| (inner_pid(s.pid, t), t))
                .collect();
            pairs.sort_unstable();
            let (threads, host_threads) = pairs.into_iter().unzip();
            (
                inner_pid(s.pid, s.pid),
                TaskInfo {
                    host: s.pid,
                    threads,
                    host_threads,
                    uid: f("Uid"),
                    gid: f("Gid"),
                    groups: f("Groups"),
                },
            )
        })
        .collect()
}

/// Human-readable differences between two snapshots (empty when equal).
pub fn diff_trees(before: &Tree, after: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (pid, b) in before {
        match after.get(pid) {
            None => out.push(format!("pid {pid} is missing")),
            Some(a) => {
                if a.threads != b.threads {
                    let gone: Vec<_> = b
                        .threads
                        .iter()
                        .filter(|t| !a.threads.contains(t))
                        .collect();
                    let new: Vec<_> = a
                        .threads
                        .iter()
                        .filter(|t| !b.threads.contains(t))
                        .collect();
                    out.push(format!(
                        "pid {pid}: {} threads before, {} now; missing {gone:?}, new {new:?}",
                        b.threads.len(),
                        a.threads.len()
                    ));
                }
                for (what, x, y) in [
                    ("Uid", &b.uid, &a.uid),
                    ("Gid", &b.gid, &a.gid),
                    ("Groups", &b.groups, &a.groups),
                ] {
                    if x != y {
                        out.push(format!("pid {pid}: {what} was '{x}', now '{y}'"));
                    }
                }
            }
        }
    }
    for pid in after.keys().filter(|p| !before.contains_key(p)) {
        out.push(format!("pid {pid} is new"));
    }
    out
}

/// Mount points at or below `dir` (from this process's mount namespace).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &*dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

// SysV IPC objects of a case.

/// The kinds of SysV IPC objects, as named in /proc/sysvipc/.
pub const SYSVIPC_KINDS: [&str; 3] = ["shm", "sem", "msg"];

/// Every object of `/proc/sysvipc/KIND` as (key, id); the first two
/// columns of every row.
pub fn sysvipc_objects(kind: &str) -> Vec<(i32, i32)> {
    let text = fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// glibc's ftok(path, proj): the keys cases derive from their work
/// directory (proj 1..=8), so the runner finds what a case left behind.
pub fn ftok(path: &Path, proj: u8) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(((m.ino() & 0xffff) | ((m.dev() & 0xff) << 16) | ((proj as u64) << 24)) as u32 as i32)
}

/// SysV objects whose key is one of the work directory's ftok keys:
/// (kind, key, id).
pub fn sysvipc_of_dir(dir: &Path) -> Vec<(&'static str, i32, i32)> {
    let keys: BTreeSet<i32> = (1..=8).filter_map(|p| ftok(dir, p)).collect();
    let mut out = Vec::new();
    for kind in SYSVIPC_KINDS {
        for (key, id) in sysvipc_objects(kind) {
            if keys.contains(&key) {
                out.push((kind, key, id));
            }
        }
    }
    out
}

/// IPC_RMID of one object.
pub fn sysvipc_remove(kind: &str, id: i32) -> Result<(), String> {
    // SAFETY: IPC_RMID takes no buffer.
    let r = unsafe {
        match kind {
            "shm" => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            "sem" => libc::semctl(id, 0, libc::IPC_RMID),
            "msg" => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            _ => return Err(format!("unknown SysV IPC kind {kind:?}")),
        }
    };
    if r < 0 {
        return Err(format!(
            "IPC_RMID of {kind} {id}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The maps zdtm/lib/ns.c gives the `uns` flavour's user namespace, as
/// /proc/PID/uid_map and gid_map show them (numbers only).
pub const UNS_UID_MAP: [[u64; 3]; 2] = [[0, 0, 65536], [65536, 200000, 65536]];
pub const UNS_GID_MAP: [[u64; 3]; 2] = [[0, 0, 65536], [65536, 300000, 65536]];
/// Its maps with every id shifted (cases::UNS_SHIFT, ns.c's
/// USERNS_SHIFTED_*), unless the case asks for the ones above.
pub const UNS_SHIFTED_UID_MAP: [[u64; 3]; 1] = [[0, crate::cases::UNS_SHIFT.0 as u64, 65536]];
pub const UNS_SHIFTED_GID_MAP: [[u64; 3]; 1] = [[0, crate::cases::UNS_SHIFT.1 as u64, 65536]];

/// What is wrong with `pid`'s user namespace for the `uns` flavour: it
/// must be one of its own (not the runner's), with the flavour's maps
/// (`shifted`: every id shifted), and own the pid, mount,
/// network, IPC and UTS namespaces of `pid`.
pub fn userns_problems(pid: i32, shifted: bool) -> Vec<String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let ino = |p: &str| fs::metadata(p).map(|m| m.ino()).ok();
    let user = format!("/proc/{pid}/ns/user");
    let Some(mine) = ino(&user) else {
        return vec![format!("cannot stat {user}")];
    };
    if Some(mine) == ino("/proc/self/ns/user") {
        out.push(format!("pid {pid} is in the runner's user namespace"));
    }
    let maps = |name: &str| -> Vec<[u64; 3]> {
        fs::read_to_string(format!("/proc/{pid}/{name}"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let n: Vec<u64> = l
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                [0, 1, 2].map(|i| n.get(i).copied().unwrap_or(u64::MAX))
            })
            .collect()
    };
    let want: [(&str, &[[u64; 3]]); 2] = match shifted {
        true => [
            ("uid_map", &UNS_SHIFTED_UID_MAP),
            ("gid_map", &UNS_SHIFTED_GID_MAP),
        ],
        false => [("uid_map", &UNS_UID_MAP), ("gid_map", &UNS_GID_MAP)],
    };
    for (name, want) in want {
        let got = maps(name);
        if got != want {
            out.push(format!("pid {pid}: {name} is {got:?}, not {want:?}"));
        }
    }
    for kind in ["pid", "mnt", "net", "ipc", "uts"] {
        let path = format!("/proc/{pid}/ns/{kind}");
        let Ok(f) = fs::File::open(&path) else {
            out.push(format!("cannot open {path}"));
            continue;
        };
        // SAFETY: NS_GET_USERNS takes no argument and returns a new fd,
        // closed below.
        let fd = unsafe { libc::ioctl(f.as_raw_fd(), 0xb701 as _) };
        if fd < 0 {
            out.push(format!(
                "NS_GET_USERNS of {path}: {}",
                std::io::Error::last_os_error()
            ));
            continue;
        }
        let owner = ino(&format!("/proc/self/fd/{fd}"));
        // SAFETY: `fd` is ours, from the ioctl above.
        unsafe { libc::close(fd) };
        if owner != Some(mine) {
            out.push(format!(
                "pid {pid}: its {kind} namespace is owned by user:[{}], not by its user:[{mine}]",
                owner.unwrap_or(0)
            ));
        }
    }
    out
}
