//! `/proc/PID/fdinfo/N`, `/proc/PID/fd/` and the fd links.
//!
//! Every fdinfo starts with `pos`, `flags` (octal), `mnt_id` and `ino`; the
//! lines after those depend on the kind of file and are kept as
//! (key, value) pairs in [`FdInfo::extra`], with decoders for the common
//! kinds (eventfd, timerfd, signalfd, epoll, inotify).

use std::ffi::OsString;

use super::{dec, hex64, oct32, proc_path, read_parsed, ParseError, Pid, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    /// open(2) flags (O_*), including O_CLOEXEC when the fd has it.
    pub flags: u32,
    pub mnt_id: u64,
    pub ino: u64,
    /// Every other line, in order, as (key, value): the key is the text
    /// before the first ':' (`eventfd-count`, `settime flags`, `lock`,
    /// `sigmask`, `tfd`), the value the rest with surrounding blanks
    /// trimmed. The `inotify wd:1 ino:...` and `fanotify ...` lines are
    /// keyed by their first word, the value being the rest of the line.
    pub extra: Vec<(String, String)>,
}

/// The state of a timerfd (from `clockid`, `ticks`, `settime flags`,
/// `it_value`, `it_interval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerfdInfo {
    pub clockid: i32,
    pub ticks: u64,
    pub settime_flags: u32,
    /// (seconds, nanoseconds) left until the next expiry.
    pub it_value: (u64, u64),
    pub it_interval: (u64, u64),
}

/// One `tfd:` line of an epoll fd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpollTfd {
    pub tfd: i32,
    pub events: u32,
    pub data: u64,
    pub pos: u64,
    pub ino: u64,
    pub sdev: u32,
}

/// One `inotify` line: a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub ino: u64,
    pub sdev: u32,
    pub mask: u32,
    pub ignored_mask: u32,
    pub fhandle_type: i32,
    pub f_handle: Vec<u8>,
}

/// fanotify: the group (`fanotify flags:.. event-flags:..`) and its marks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanotifyInfo {
    /// fanotify_init's flags and event_f_flags.
    pub flags: u32,
    pub event_flags: u32,
    pub marks: Vec<FanotifyMark>,
}

/// What a fanotify mark is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanotifyTarget {
    Inode {
        ino: u64,
        fhandle_type: i32,
        f_handle: Vec<u8>,
    },
    Mount {
        mnt_id: u32,
    },
    /// A whole filesystem (FAN_MARK_FILESYSTEM), by its device only.
    Filesystem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanotifyMark {
    pub target: FanotifyTarget,
    pub sdev: u32,
    pub mflags: u32,
    pub mask: u32,
    pub ignored_mask: u32,
}

/// Split `k1:v1 k2:v2 ...` (all numbers hex) into pairs.
fn kv_words(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split_ascii_whitespace().filter_map(|w| w.split_once(':'))
}

/// Parse "(sec, nsec)".
fn timespec(s: &str) -> Result<(u64, u64), String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad time {s:?}"))?;
    let (a, b) = inner
        .split_once(',')
        .ok_or_else(|| format!("bad time {s:?}"))?;
    Ok((dec(a.trim(), "seconds")?, dec(b.trim(), "nanoseconds")?))
}

impl FdInfo {
    /// The first extra value with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All extra values with this key (`tfd`, `inotify`, `lock` repeat).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.extra
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// eventfd: the counter (`eventfd-count`, printed in hex).
    pub fn eventfd_count(&self) -> Option<Result<u64, String>> {
        self.get("eventfd-count").map(|v| hex64(v, "eventfd-count"))
    }

    /// eventfd: EFD_SEMAPHORE.
    pub fn eventfd_semaphore(&self) -> Option<bool> {
        self.get("eventfd-semaphore").map(|v| v == "1")
    }

    /// signalfd: the mask (`sigmask`, hex; bit N-1 is signal N).
    pub fn signalfd_sigmask(&self) -> Option<Result<u64, String>> {
        self.get("sigmask").map(|v| hex64(v, "sigmask"))
    }

    /// timerfd state, None if this is not a timerfd.
    pub fn timerfd(&self) -> Option<Result<TimerfdInfo, String>> {
        let clockid = self.get("clockid")?;
        Some((|| {
            let field = |k: &str| self.get(k).ok_or_else(|| format!("timerfd without {k}"));
            Ok(TimerfdInfo {
                clockid: dec(clockid, "clockid")?,
                ticks: dec(field("ticks")?, "ticks")?,
                settime_flags: oct32(field("settime flags")?, "settime flags")?,
                it_value: timespec(field("it_value")?)?,
                it_interval: timespec(field("it_interval")?)?,
            })
        })())
    }

    /// epoll: the registered targets, one per `tfd:` line.
    pub fn epoll_targets(&self) -> Result<Vec<EpollTfd>, String> {
        self.get_all("tfd")
            .map(|v| {
                // "       3 events:       19 data:                7  pos:0 ino:40e sdev:10"
                let mut words = v.split_ascii_whitespace();
                let tfd = dec(words.next().unwrap_or(""), "tfd")?;
                let mut t = EpollTfd {
                    tfd,
                    ..EpollTfd::default()
                };
                let rest: Vec<&str> = words.collect();
                let mut i = 0;
                while i < rest.len() {
                    // "events:" and "data:" are followed by a separate word;
                    // "pos:0", "ino:40e", "sdev:10" are not.
                    let (k, mut v) = rest[i]
                        .split_once(':')
                        .ok_or_else(|| format!("bad tfd line {v:?}"))?;
                    if v.is_empty() {
                        i += 1;
                        v = rest.get(i).copied().unwrap_or("");
                    }
                    match k {
                        "events" => t.events = hex64(v, k)? as u32,
                        "data" => t.data = hex64(v, k)?,
                        "pos" => t.pos = dec(v, k)?,
                        "ino" => t.ino = hex64(v, k)?,
                        "sdev" => t.sdev = hex64(v, k)? as u32,
                        _ => {}
                    }
                    i += 1;
                }
                Ok(t)
            })
            .collect()
    }

    /// inotify: the watches, one per `inotify` line.
    pub fn inotify_watches(&self) -> Result<Vec<InotifyWatch>, String> {
        self.get_all("inotify")
            .map(|v| {
                let mut w = InotifyWatch::default();
                for (k, x) in kv_words(v) {
                    match k {
                        "wd" => w.wd = hex64(x, k)? as i32,
                        "ino" => w.ino = hex64(x, k)?,
                        "sdev" => w.sdev = hex64(x, k)? as u32,
                        "mask" => w.mask = hex64(x, k)? as u32,
                        "ignored_mask" => w.ignored_mask = hex64(x, k)? as u32,
                        "fhandle-type" => w.fhandle_type = hex64(x, k)? as i32,
                        "f_handle" => {
                            if x.len() % 2 != 0 || !x.is_ascii() {
                                return Err(format!("bad f_handle {x:?}"));
                            }
                            w.f_handle = (0..x.len())
                                .step_by(2)
                                .map(|i| {
                                    u8::from_str_radix(&x[i..i + 2], 16)
                                        .map_err(|_| format!("bad f_handle {x:?}"))
                                })
                                .collect::<Result<_, _>>()?;
                        }
                        _ => {}
                    }
                }
                Ok(w)
            })
            .collect()
    }
}

impl FdInfo {
    /// fanotify: the group and its marks, one per `fanotify` line after
    /// the first.
    pub fn fanotify(&self) -> Option<Result<FanotifyInfo, String>> {
        let mut lines = self.get_all("fanotify");
        let head = lines.next()?;
        Some((|| {
            let mut info = FanotifyInfo::default();
            for (k, x) in kv_words(head) {
                match k {
                    "flags" => info.flags = hex64(x, k)? as u32,
                    "event-flags" => info.event_flags = hex64(x, k)? as u32,
                    _ => {}
                }
            }
            for line in lines {
                let (mut ino, mut mnt_id, mut ftype, mut handle) = (None, None, 0, Vec::new());
                let (mut sdev, mut mflags, mut mask, mut ignored_mask) = (0, 0, 0, 0);
                for (k, x) in kv_words(line) {
                    match k {
                        "ino" => ino = Some(hex64(x, k)?),
                        "mnt_id" => mnt_id = Some(hex64(x, k)? as u32),
                        "sdev" => sdev = hex64(x, k)? as u32,
                        "mflags" => mflags = hex64(x, k)? as u32,
                        "mask" => mask = hex64(x, k)? as u32,
                        "ignored_mask" => ignored_mask = hex64(x, k)? as u32,
                        "fhandle-type" => ftype = hex64(x, k)? as i32,
                        "f_handle" => handle = hex_bytes(x)?,
                        _ => {}
                    }
                }
                let target = match (ino, mnt_id) {
                    (Some(ino), _) => FanotifyTarget::Inode {
                        ino,
                        fhandle_type: ftype,
                        f_handle: handle,
                    },
                    (None, Some(mnt_id)) => FanotifyTarget::Mount { mnt_id },
                    (None, None) => FanotifyTarget::Filesystem,
                };
                info.marks.push(FanotifyMark {
                    target,
                    sdev,
                    mflags,
                    mask,
                    ignored_mask,
                });
            }
            Ok(info)
        })())
    }
}

fn hex_bytes(x: &str) -> Result<Vec<u8>, String> {
    if x.len() % 2 != 0 || !x.is_ascii() {
        return Err(format!("bad f_handle {x:?}"));
    }
    (0..x.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&x[i..i + 2], 16).map_err(|_| format!("bad f_handle {x:?}")))
        .collect()
}

/// Parse the text of `/proc/PID/fdinfo/N`.
pub fn parse(text: &str) -> Result<FdInfo, ParseError> {
    let mut info = FdInfo::default();
    let mut seen = [false; 3]; // pos, flags, mnt_id
    for (i, line) in text.lines().enumerate() {
        let err = |r: String| ParseError::new("fdinfo", i + 1, r);
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| err(format!("expected \"key: value\", got {line:?}")))?;
        let v = value.trim();
        match key {
            "pos" => {
                info.pos = dec(v, key).map_err(err)?;
                seen[0] = true;
            }
            "flags" => {
                info.flags = oct32(v, key).map_err(err)?;
                seen[1] = true;
            }
            "mnt_id" => {
                info.mnt_id = dec(v, key).map_err(err)?;
                seen[2] = true;
            }
            "ino" => info.ino = dec(v, key).map_err(err)?,
            _ => {
                let first_word = line.split([' ', '\t']).next().unwrap_or("");
                if !first_word.contains(':') && matches!(first_word, "inotify" | "fanotify") {
                    let rest = line[first_word.len()..].trim();
                    info.extra.push((first_word.to_string(), rest.to_string()));
                } else {
                    info.extra.push((key.to_string(), v.to_string()));
                }
            }
        }
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        return Err(ParseError::new(
            "fdinfo",
            0,
            format!("no {} line", ["pos", "flags", "mnt_id"][k]),
        ));
    }
    Ok(info)
}

/// `/proc/<pid>/fdinfo/<fd>`.
pub fn read_fdinfo(pid: Pid, fd: i32) -> Result<FdInfo, ProcError> {
    read_parsed(pid, &format!("fdinfo/{fd}"), parse)
}

/// The open fds of a process (`/proc/<pid>/fd`), sorted.
pub fn list_fds(pid: Pid) -> Result<Vec<i32>, ProcError> {
    super::numeric_entries(pid, "fd")
}

/// readlink of `/proc/<pid>/fd/<fd>`: a path (raw bytes, possibly ending in
/// " (deleted)") or `pipe:[123]`, `socket:[456]`, `anon_inode:[eventfd]` ...
pub fn read_fd_link(pid: Pid, fd: i32) -> Result<OsString, ProcError> {
    let path = proc_path(pid, &format!("fd/{fd}"));
    std::fs::read_link(&path)
        .map(|p| p.into_os_string())
        .map_err(|e| ProcError::io(pid, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn regular() {
        let f = parse("pos:\t291\nflags:\t0100001\nmnt_id:\t27\nino:\t10010785\n").unwrap();
        assert_eq!(
            f,
            FdInfo {
                pos: 291,
                flags: 0o100001, // O_LARGEFILE (0 in libc on x86_64) | O_WRONLY
                mnt_id: 27,
                ino: 10010785,
                extra: vec![]
            }
        );
    }

    #[test]
    fn kinds() {
        let ev = parse("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\neventfd-count:                5\neventfd-id: 1\neventfd-semaphore: 0\n").unwrap();
        assert_eq!(ev.eventfd_count(), Some(Ok(5)));
        assert_eq!(ev.eventfd_semaphore(), Some(false));
        assert_eq!(ev.get("eventfd-id"), Some("1"));
        assert!(ev.timerfd().is_none());

        let big =
            parse("pos:\t0\nflags:\t02\nmnt_id:\t17\neventfd-count: fffffffffffffffe\n").unwrap();
        assert_eq!(big.eventfd_count(), Some(Ok(u64::MAX - 1)));
        assert_eq!(big.ino, 0);

        let tf = parse("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nclockid: 1\nticks: 3\nsettime flags: 01\nit_value: (99, 985889507)\nit_interval: (1, 0)\n").unwrap();
        assert_eq!(
            tf.timerfd(),
            Some(Ok(TimerfdInfo {
                clockid: 1,
                ticks: 3,
                settime_flags: 1,
                it_value: (99, 985889507),
                it_interval: (1, 0)
            }))
        );

        let sf =
            parse("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000000000800\n")
                .unwrap();
        assert_eq!(sf.signalfd_sigmask(), Some(Ok(1 << 11)));

        let ep = parse("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\ntfd:        3 events:       19 data:                7  pos:0 ino:40e sdev:10\ntfd:       12 events: 80000001 data: ffffffffffffffff  pos:55 ino:1 sdev:fe00000\n").unwrap();
        assert_eq!(
            ep.epoll_targets().unwrap(),
            [
                EpollTfd {
                    tfd: 3,
                    events: 0x19,
                    data: 7,
                    pos: 0,
                    ino: 0x40e,
                    sdev: 0x10
                },
                EpollTfd {
                    tfd: 12,
                    events: 0x80000001,
                    data: u64::MAX,
                    pos: 55,
                    ino: 1,
                    sdev: 0xfe00000
                },
            ]
        );

        let ino = parse("pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1038\ninotify wd:1 ino:3c4a7 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n").unwrap();
        assert_eq!(ino.extra[0].0, "inotify");
        assert_eq!(
            ino.inotify_watches().unwrap(),
            [InotifyWatch {
                wd: 1,
                ino: 0x3c4a7,
                sdev: 0xfe00000,
                mask: 0x100,
                ignored_mask: 0,
                fhandle_type: 1,
                f_handle: vec![0xa7, 0xc4, 0x03, 0, 0, 0, 0, 0],
            }]
        );

        let fa = parse("pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\nfanotify flags:3 event-flags:8000\nfanotify sdev:fe00000 mflags:0 mask:1 ignored_mask:0\nfanotify ino:98e433 sdev:fe00000 mflags:40 mask:0 ignored_mask:20 fhandle-bytes:8 fhandle-type:1 f_handle:33e49800b66e13d4\nfanotify mnt_id:1b mflags:0 mask:20 ignored_mask:0\n").unwrap();
        let fa = fa.fanotify().unwrap().unwrap();
        assert_eq!((fa.flags, fa.event_flags, fa.marks.len()), (3, 0x8000, 3));
        assert_eq!(fa.marks[0].target, FanotifyTarget::Filesystem);
        assert_eq!(
            fa.marks[1],
            FanotifyMark {
                target: FanotifyTarget::Inode {
                    ino: 0x98e433,
                    fhandle_type: 1,
                    f_handle: vec![0x33, 0xe4, 0x98, 0, 0xb6, 0x6e, 0x13, 0xd4]
                },
                sdev: 0xfe00000,
                mflags: 0x40,
                mask: 0,
                ignored_mask: 0x20
            }
        );
        assert_eq!(fa.marks[2].target, FanotifyTarget::Mount { mnt_id: 0x1b });

        let lk = parse("pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t5\nlock:\t1: POSIX  ADVISORY  WRITE 5348 fe:00:123 0 EOF\n").unwrap();
        assert_eq!(
            lk.get("lock"),
            Some("1: POSIX  ADVISORY  WRITE 5348 fe:00:123 0 EOF")
        );
    }

    #[test]
    fn errors() {
        assert!(parse("pos:\t0\nflags:\t09\nmnt_id:\t1\n").is_err());
        let e = parse("pos:\t0\nmnt_id:\t1\n").unwrap_err();
        assert!(e.reason.contains("flags"), "{e}");
        let e = parse("pos:\t0\nflags:\t0\nmnt_id:\t1\nnonsense\n").unwrap_err();
        assert_eq!(e.line, 4);
    }

    #[test]
    fn self_fds() {
        let me = std::process::id() as Pid;
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd();
        nix::unistd::write(&file, b"hello").unwrap();
        // SAFETY: eventfd returns a new fd that we own.
        let efd = unsafe {
            use std::os::fd::FromRawFd;
            let fd = libc::eventfd(7, libc::EFD_CLOEXEC);
            assert!(fd >= 0);
            std::os::fd::OwnedFd::from_raw_fd(fd)
        };
        let fds = list_fds(me).unwrap();
        assert!(fds.contains(&fd) && fds.contains(&efd.as_raw_fd()));
        assert!(fds.windows(2).all(|w| w[0] < w[1]));
        let info = read_fdinfo(me, fd).unwrap();
        assert_eq!(info.pos, 5);
        assert_eq!(info.flags as i32 & libc::O_ACCMODE, libc::O_RDWR);
        assert!(info.mnt_id > 0 && info.ino > 0);
        let st = nix::sys::stat::fstat(fd).unwrap();
        assert_eq!(info.ino, st.st_ino);
        let link = read_fd_link(me, fd).unwrap();
        assert!(link.to_string_lossy().ends_with(" (deleted)"), "{link:?}");
        let e = read_fdinfo(me, efd.as_raw_fd()).unwrap();
        assert_eq!(e.eventfd_count(), Some(Ok(7)));
        assert_ne!(e.flags & libc::O_CLOEXEC as u32, 0);
        assert_eq!(
            read_fd_link(me, efd.as_raw_fd()).unwrap(),
            "anon_inode:[eventfd]"
        );
        let err = read_fdinfo(me, 1_000_000).unwrap_err();
        assert!(err.is_gone());
    }

    proptest! {
        #[test]
        fn header_roundtrip(pos: u64, flags: u32, mnt_id: u64, ino: u64) {
            let t = format!("pos:\t{pos}\nflags:\t0{flags:o}\nmnt_id:\t{mnt_id}\nino:\t{ino}\n");
            let f = parse(&t).unwrap();
            prop_assert_eq!((f.pos, f.flags, f.mnt_id, f.ino), (pos, flags, mnt_id, ino));
        }

        #[test]
        fn never_panics(text in "[ -~\n\t]{0,200}") {
            if let Ok(f) = parse(&text) {
                let _ = f.epoll_targets();
                let _ = f.inotify_watches();
                let _ = f.timerfd();
            }
        }
    }
}
