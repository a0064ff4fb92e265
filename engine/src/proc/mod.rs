//! Parsers for the files of `/proc/PID/`.
//!
//! Every parser lives in its own module and has two halves:
//!
//! * a pure `parse(text)` function that turns the text of one file into typed
//!   values and reports a [`ParseError`] (file, line, reason) on input it
//!   does not understand. These are unit-tested with fixed strings and
//!   property tests.
//! * a `read(pid)` function that reads `/proc/<pid>/<file>` and calls the
//!   parser, reporting a [`ProcError`] that names the pid and the path.
//!
//! Text files are read as UTF-8 with lossy conversion: a path with bytes that
//! are not UTF-8 (in maps or mountinfo, say) comes back with U+FFFD in it.
//! Where the exact bytes of a path matter, read the link instead
//! (`/proc/PID/map_files/*`, `/proc/PID/fd/*`: see [`fdinfo::read_fd_link`]),
//! which keeps them as an `OsString`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub mod auxv;
pub mod boot_id;
pub mod cgroup;
pub mod fdinfo;
pub mod limits;
pub mod maps;
pub mod mountinfo;
pub mod ns;
pub mod pagemap;
pub mod stat;
pub mod status;
pub mod sysvipc;
pub mod timers;

pub type Pid = i32;

/// A file of /proc did not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The file: `/proc/4242/maps` when it came through a `read` function,
    /// just the file's name (`maps`) when a pure parser was called directly.
    pub path: PathBuf,
    /// 1-based line number; 0 when the problem is with the file as a whole
    /// (a missing field, say).
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.reason)
        } else {
            write!(
                f,
                "{} line {}: {}",
                self.path.display(),
                self.line,
                self.reason
            )
        }
    }
}

impl ParseError {
    pub fn new(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        ParseError {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }

    /// The same error, naming another file (used by the `read` functions to
    /// replace the bare file name with the full /proc path).
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = path.into();
        self
    }
}

/// Reading or parsing a file of /proc failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("pid {pid}: cannot read {}: {source}", path.display())]
    Io {
        pid: Pid,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid}: {source}")]
    Parse {
        pid: Pid,
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

impl ProcError {
    pub fn io(pid: Pid, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ProcError::Io {
            pid,
            path: path.into(),
            source,
        }
    }

    pub fn parse(pid: Pid, source: ParseError) -> Self {
        ProcError::Parse {
            pid,
            path: source.path.clone(),
            source,
        }
    }

    pub fn pid(&self) -> Pid {
        match self {
            ProcError::Io { pid, .. } | ProcError::Parse { pid, .. } => *pid,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ProcError::Io { path, .. } | ProcError::Parse { path, .. } => path,
        }
    }

    /// True when the error says the task (or the fd, or the thread) no longer
    /// exists: ENOENT or ESRCH while reading. Racing with exiting tasks and
    /// closing fds is normal while a tree is being seized.
    pub fn is_gone(&self) -> bool {
        match self {
            ProcError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ESRCH)
            ),
            ProcError::Parse { .. } => false,
        }
    }

    /// True when /proc refused access (EACCES or EPERM): on this machine
    /// that happens for a task holding a capability outside the reader's
    /// set (CAP_SYS_RESOURCE), which fails the ptrace access check.
    pub fn is_denied(&self) -> bool {
        match self {
            ProcError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EPERM)
                )
            }
            ProcError::Parse { .. } => false,
        }
    }
}

/// `/proc/<pid>/<name>`. `name` may be a relative path (`task/12/stat`).
pub fn proc_path(pid: Pid, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// Read `/proc/<pid>/<name>` as bytes.
pub fn read_file_bytes(pid: Pid, name: &str) -> Result<Vec<u8>, ProcError> {
    let path = proc_path(pid, name);
    std::fs::read(&path).map_err(|e| ProcError::io(pid, path, e))
}

/// Read `/proc/<pid>/<name>` as text (bytes that are not UTF-8 are replaced
/// by U+FFFD).
pub fn read_file(pid: Pid, name: &str) -> Result<String, ProcError> {
    let bytes = read_file_bytes(pid, name)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Read `/proc/<pid>/<name>` and parse it; parse errors are given the full
/// path of the file.
pub(crate) fn read_parsed<T>(
    pid: Pid,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, ProcError> {
    let text = read_file(pid, name)?;
    parse(&text).map_err(|e| ProcError::parse(pid, e.with_path(proc_path(pid, name))))
}

/// Names of a /proc directory that are numbers, sorted.
fn numeric_entries(pid: Pid, name: &str) -> Result<Vec<i32>, ProcError> {
    let path = proc_path(pid, name);
    let dir = std::fs::read_dir(&path).map_err(|e| ProcError::io(pid, &path, e))?;
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| ProcError::io(pid, &path, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The thread ids of a process (`/proc/<pid>/task`), sorted.
pub fn tids(pid: Pid) -> Result<Vec<Pid>, ProcError> {
    numeric_entries(pid, "task")
}

/// The children of one thread (`/proc/<pid>/task/<tid>/children`), in the
/// order the kernel lists them. A process's children are the union over
/// its threads.
pub fn children(pid: Pid, tid: Pid) -> Result<Vec<Pid>, ProcError> {
    let name = format!("task/{tid}/children");
    read_parsed(pid, &name, parse_children)
}

/// Parse a `children` file: pids separated by spaces.
pub fn parse_children(text: &str) -> Result<Vec<Pid>, ParseError> {
    text.split_ascii_whitespace()
        .map(|w| {
            w.parse::<Pid>()
                .map_err(|_| ParseError::new("children", 1, format!("bad pid {w:?}")))
        })
        .collect()
}

// ---- small helpers shared by the parsers ----

/// Parse an unsigned decimal number, naming the field on failure.
pub(crate) fn dec<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse::<T>()
        .map_err(|_| format!("bad {what} {s:?} (expected a decimal number)"))
}

/// Parse a hexadecimal number (no `0x` prefix).
pub(crate) fn hex64(s: &str, what: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|_| format!("bad {what} {s:?} (expected hexadecimal)"))
}

/// Parse an octal number (`0100002`).
pub(crate) fn oct32(s: &str, what: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|_| format!("bad {what} {s:?} (expected octal)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_display() {
        let e = ParseError::new("maps", 3, "bad address").with_path("/proc/4242/maps");
        assert_eq!(e.to_string(), "/proc/4242/maps line 3: bad address");
        let p = ProcError::parse(4242, e);
        assert_eq!(
            p.to_string(),
            "pid 4242: /proc/4242/maps line 3: bad address"
        );
        assert_eq!(p.path(), Path::new("/proc/4242/maps"));
        assert_eq!(p.pid(), 4242);
        let e = ParseError::new("status", 0, "missing Pid");
        assert_eq!(e.to_string(), "status: missing Pid");
    }

    #[test]
    fn io_error_names_pid_and_path() {
        // pid_max is 32768 here: this pid cannot exist.
        let e = read_file(4_000_000, "maps").unwrap_err();
        assert!(e.is_gone());
        assert_eq!(e.pid(), 4_000_000);
        let msg = e.to_string();
        assert!(
            msg.starts_with("pid 4000000: cannot read /proc/4000000/maps: "),
            "{msg}"
        );
    }

    #[test]
    fn children_parse() {
        assert_eq!(parse_children("").unwrap(), Vec::<Pid>::new());
        assert_eq!(parse_children("12 7 300 ").unwrap(), vec![12, 7, 300]);
        assert!(parse_children("12 x").is_err());
    }

    #[test]
    fn self_tids_and_children() {
        let me = std::process::id() as Pid;
        let t = tids(me).unwrap();
        assert!(t.contains(&me));
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let cpid = child.id() as Pid;
        let mut all = Vec::new();
        for tid in tids(me).unwrap() {
            all.extend(children(me, tid).unwrap());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(all.contains(&cpid), "{all:?} lacks {cpid}");
    }

    /// Every parser accepts the files of every process on this machine
    /// (kernel threads, zombies, other users' tasks). Tasks and fds that
    /// vanish while being read, and files we may not read, are skipped.
    #[test]
    fn every_live_process_parses() {
        // A zombie has no mm, files or namespaces left: reading those
        // fails (EINVAL for mountinfo, ENOENT for ns links).
        fn ok_for<T>(zombie: bool, r: Result<T, ProcError>) -> Option<T> {
            match r {
                Ok(v) => Some(v),
                Err(e) if e.is_gone() || e.is_denied() => None,
                Err(ProcError::Io { .. }) if zombie => None,
                Err(e) => panic!("{e}"),
            }
        }
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap() {
            if let Some(pid) = e
                .unwrap()
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Pid>().ok())
            {
                pids.push(pid);
            }
        }
        assert!(pids.len() > 10);
        let mut checked = 0;
        for pid in pids {
            let Some(st) = ok_for(false, stat::read(pid)) else {
                continue;
            };
            let zombie = st.state == 'Z';
            macro_rules! ok {
                ($e:expr) => {
                    ok_for(zombie, $e)
                };
            }
            assert_eq!(st.pid, pid);
            ok!(status::read(pid));
            ok!(maps::read_maps(pid));
            ok!(maps::read_smaps(pid));
            ok!(limits::read(pid));
            ok!(mountinfo::read(pid));
            ok!(cgroup::read(pid));
            ok!(timers::read(pid));
            ok!(auxv::read(pid));
            ok!(ns::ns_ids(pid));
            for tid in ok!(tids(pid)).unwrap_or_default() {
                ok!(children(pid, tid));
                ok!(stat::read_task(pid, tid));
                ok!(status::read_task(pid, tid));
            }
            for fd in ok!(fdinfo::list_fds(pid)).unwrap_or_default() {
                if let Some(info) = ok!(fdinfo::read_fdinfo(pid, fd)) {
                    info.epoll_targets().unwrap();
                    info.inotify_watches().unwrap();
                    if let Some(t) = info.timerfd() {
                        t.unwrap();
                    }
                }
                ok!(fdinfo::read_fd_link(pid, fd));
            }
            checked += 1;
        }
        assert!(checked > 10);
    }
}
