//! `/proc/PID/timers`: the POSIX timers (timer_create) of a process, four
//! lines each:
//!
//! ```text
//! ID: 2
//! signal: 10/00000000deadbeef
//! notify: signal/tid.5348
//! ClockID: 7
//! ```
//!
//! `signal` is the signal number and sigev_value (as a pointer, hex);
//! `notify` is the sigev_notify kind (`signal`, `none`, `thread`) and
//! whether the target is a thread (`tid`, SIGEV_THREAD_ID) or the process
//! (`pid`), with its id in the reader's pid namespace. The timer's current
//! value and overrun are not here: ask the task (timer_gettime,
//! timer_getoverrun).

use super::{dec, hex64, read_parsed, ParseError, Pid, ProcError};

/// sigev_notify without the SIGEV_THREAD_ID bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NotifyKind {
    #[default]
    Signal,
    None,
    Thread,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i32,
    pub signo: i32,
    /// sigev_value (sival_ptr / sival_int).
    pub sival_ptr: u64,
    pub notify: NotifyKind,
    /// SIGEV_THREAD_ID: the signal goes to the thread `notify_pid`.
    pub thread_id: bool,
    /// The target pid (or tid with `thread_id`).
    pub notify_pid: Pid,
    pub clock_id: i32,
}

impl PosixTimer {
    /// The sigevent's sigev_notify value (SIGEV_SIGNAL, SIGEV_NONE,
    /// SIGEV_THREAD, with SIGEV_THREAD_ID or'ed in).
    pub fn sigev_notify(&self) -> i32 {
        let base = match self.notify {
            NotifyKind::Signal => libc::SIGEV_SIGNAL,
            NotifyKind::None => libc::SIGEV_NONE,
            NotifyKind::Thread => libc::SIGEV_THREAD,
        };
        if self.thread_id {
            base | libc::SIGEV_THREAD_ID
        } else {
            base
        }
    }
}

/// Parse the text of `/proc/PID/timers`; the timers come back sorted by id.
pub fn parse(text: &str) -> Result<Vec<PosixTimer>, ParseError> {
    let mut out: Vec<PosixTimer> = Vec::new();
    // Which of signal/notify/ClockID the current timer has had.
    let mut have = [true; 3];
    let check = |have: &[bool; 3], line: usize| -> Result<(), ParseError> {
        match have.iter().position(|h| !h) {
            Some(k) => Err(ParseError::new(
                "timers",
                line,
                format!(
                    "timer before this line has no {} line",
                    ["signal", "notify", "ClockID"][k]
                ),
            )),
            None => Ok(()),
        }
    };
    for (i, line) in text.lines().enumerate() {
        let err = |r: String| ParseError::new("timers", i + 1, r);
        if line.is_empty() {
            continue;
        }
        let (key, v) = line
            .split_once(": ")
            .ok_or_else(|| err(format!("expected \"Key: value\", got {line:?}")))?;
        if key == "ID" {
            check(&have, i + 1)?;
            have = [false; 3];
            out.push(PosixTimer {
                id: dec(v, "timer id").map_err(err)?,
                ..PosixTimer::default()
            });
            continue;
        }
        let t = out
            .last_mut()
            .ok_or_else(|| err(format!("{key} before the first ID line")))?;
        let r: Result<(), String> = (|| {
            match key {
                "signal" => {
                    let (sig, ptr) = v
                        .split_once('/')
                        .ok_or_else(|| format!("signal: expected N/PTR, got {v:?}"))?;
                    t.signo = dec(sig, "signal")?;
                    t.sival_ptr = hex64(ptr.trim_start_matches("0x"), "sigev_value")?;
                    have[0] = true;
                }
                "notify" => {
                    let bad = || format!("notify: expected KIND/pid.N or KIND/tid.N, got {v:?}");
                    let (kind, target) = v.split_once('/').ok_or_else(bad)?;
                    t.notify = match kind {
                        "signal" => NotifyKind::Signal,
                        "none" => NotifyKind::None,
                        "thread" => NotifyKind::Thread,
                        _ => return Err(bad()),
                    };
                    let (who, id) = target.split_once('.').ok_or_else(bad)?;
                    t.thread_id = match who {
                        "tid" => true,
                        "pid" => false,
                        _ => return Err(bad()),
                    };
                    t.notify_pid = dec(id, "notify pid")?;
                    have[1] = true;
                }
                "ClockID" => {
                    t.clock_id = dec(v, "ClockID")?;
                    have[2] = true;
                }
                _ => {} // future additions
            }
            Ok(())
        })();
        r.map_err(err)?;
    }
    check(&have, 0)?;
    out.sort_by_key(|t| t.id);
    Ok(out)
}

/// `/proc/<pid>/timers`.
pub fn read(pid: Pid) -> Result<Vec<PosixTimer>, ProcError> {
    read_parsed(pid, "timers", parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEXT: &str = "\
ID: 2
signal: 10/00000000deadbeef
notify: signal/tid.5348
ClockID: 7
ID: 1
signal: 10/00000000deadbeef
notify: none/pid.5348
ClockID: 0
ID: 0
signal: 14/0000000000000000
notify: thread/pid.5349
ClockID: 1
";

    #[test]
    fn fixed() {
        let t = parse(TEXT).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[2],
            PosixTimer {
                id: 2,
                signo: 10,
                sival_ptr: 0xdeadbeef,
                notify: NotifyKind::Signal,
                thread_id: true,
                notify_pid: 5348,
                clock_id: 7
            }
        );
        assert_eq!(t[2].sigev_notify(), libc::SIGEV_THREAD_ID);
        assert_eq!(t[1].notify, NotifyKind::None);
        assert_eq!(t[1].sigev_notify(), libc::SIGEV_NONE);
        assert_eq!(
            (t[0].signo, t[0].notify, t[0].notify_pid),
            (14, NotifyKind::Thread, 5349)
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors() {
        let e = parse("ID: 1\nsignal: 10/0\nClockID: 1\nID: 2\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("notify"), "{e}");
        let e = parse("ID: 1\nsignal: 10/0\nnotify: signal/pid.1\n").unwrap_err();
        assert!(e.reason.contains("ClockID"), "{e}");
        assert!(parse("signal: 10/0\n").is_err());
        assert!(parse("ID: 1\nsignal: 10/0\nnotify: loud/pid.1\nClockID: 0\n").is_err());
        assert!(parse("ID: 1\nsignal: 10/0\nnotify: signal/xid.1\nClockID: 0\n").is_err());
        assert!(parse("ID: 1\nsignal: 10\nnotify: signal/pid.1\nClockID: 0\n").is_err());
    }

    #[test]
    fn self_timers() {
        let me = std::process::id() as Pid;
        // SAFETY: plain libc timer calls with valid pointers.
        let mut timer: libc::timer_t = std::ptr::null_mut();
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_NONE;
        sev.sigev_signo = libc::SIGUSR2;
        sev.sigev_value = libc::sigval {
            sival_ptr: 0x1234 as *mut libc::c_void,
        };
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) };
        assert_eq!(r, 0);
        let ts = read(me).unwrap();
        unsafe { libc::timer_delete(timer) };
        let t = ts
            .iter()
            .find(|t| t.sival_ptr == 0x1234 && t.clock_id == libc::CLOCK_MONOTONIC)
            .unwrap_or_else(|| panic!("{ts:?}"));
        assert_eq!(t.notify, NotifyKind::None);
        assert_eq!(t.signo, libc::SIGUSR2);
        assert_eq!(t.notify_pid, me);
        assert!(!t.thread_id);
    }

    proptest! {
        #[test]
        fn roundtrip(timers in proptest::collection::btree_map(
            0i32..i32::MAX,
            (1i32..65, any::<u64>(), 0usize..3, any::<bool>(), 1i32..32768, 0i32..12),
            0..8,
        )) {
            let kinds = ["signal", "none", "thread"];
            let mut text = String::new();
            // The kernel lists newest first.
            for (id, (sig, ptr, k, tid, pid, clock)) in timers.iter().rev() {
                text += &format!(
                    "ID: {id}\nsignal: {sig}/{ptr:016x}\nnotify: {}/{}.{pid}\nClockID: {clock}\n",
                    kinds[*k], if *tid { "tid" } else { "pid" }
                );
            }
            let t = parse(&text).unwrap();
            prop_assert_eq!(t.len(), timers.len());
            for (t, (id, (sig, ptr, k, tid, pid, clock))) in t.iter().zip(timers.iter()) {
                prop_assert_eq!(t.id, *id);
                prop_assert_eq!((t.signo, t.sival_ptr, t.thread_id, t.notify_pid, t.clock_id), (*sig, *ptr, *tid, *pid, *clock));
                prop_assert_eq!(t.notify, [NotifyKind::Signal, NotifyKind::None, NotifyKind::Thread][*k]);
            }
        }
    }
}
