//! Timers of a process: the three interval timers (getitimer) and the
//! POSIX timers (timer_create), into `TaskTimersEntry` of the leader's core.
//!
//! The list of POSIX timers, with their clock, signal, sigev_value and
//! notification target, comes from `/proc/PID/timers`; what only the task
//! can ask (the time left, the interval, the overrun count of the last
//! delivered expiry) is asked from inside it through the scratch session:
//! getitimer, timer_gettime, timer_getoverrun. All three are read-only
//! for the timers' state.
//!
//! The conversions between the kernel's structs (as bytes in the scratch
//! page) and the image entries are pure functions in kernel/timers.rs,
//! shared with the restore (restore/timers.rs), which uses the encoders.

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::kernel::clock::clock_now_ns;
use crate::kernel::timers::{
    itimer_from_bytes, itimer_is_zero, itimerspec_from_bytes, posix_timer_check, ITIMERSPEC_SIZE,
    ITIMERVAL_SIZE, ITIMER_PROF, ITIMER_REAL, ITIMER_VIRTUAL,
};
use crate::proc::boot_id::boot_id;
use crate::proc::timers as proc_timers;
use crate::ptrace::scratch::ScratchSession;

/// The image entry of one POSIX timer from /proc and the task's answers.
pub fn posix_entry(
    p: &proc_timers::PosixTimer,
    spec: &[u8; ITIMERSPEC_SIZE],
    overrun: i32,
) -> pb::PosixTimerEntry {
    let (isec, insec, vsec, vnsec) = itimerspec_from_bytes(spec);
    pb::PosixTimerEntry {
        it_id: p.id as u32,
        clock_id: p.clock_id as u32,
        si_signo: p.signo as u32,
        it_sigev_notify: p.sigev_notify() as u32,
        sival_ptr: p.sival_ptr,
        overrun: overrun.max(0) as u32,
        isec,
        insec,
        vsec,
        vnsec,
        notify_thread_id: p.thread_id.then_some(p.notify_pid),
        ckpt_clock_now: clock_now_ns(p.clock_id),
        ckpt_boot_id: boot_id(),
    }
}

/// Interval timers and POSIX timers of process `pid`, asked through the
/// leader's scratch session.
pub fn dump_timers(pid: Pid, s: &mut ScratchSession<'_>) -> Result<pb::TaskTimersEntry> {
    let mut it = Vec::with_capacity(3);
    for (which, name) in [
        (ITIMER_REAL, "ITIMER_REAL"),
        (ITIMER_VIRTUAL, "ITIMER_VIRTUAL"),
        (ITIMER_PROF, "ITIMER_PROF"),
    ] {
        s.call(
            libc::SYS_getitimer,
            &[which, s.addr],
            &format!("getitimer({name})"),
        )?;
        let mut b = [0u8; ITIMERVAL_SIZE];
        s.read(0, &mut b)?;
        let e = itimer_from_bytes(&b);
        if !itimer_is_zero(&e) {
            debug!(
                "pid {pid}: {name}: value {}.{:06} s, interval {}.{:06} s",
                e.vsec, e.vusec, e.isec, e.iusec
            );
        }
        it.push(e);
    }
    let mut posix = Vec::new();
    for p in proc_timers::read(pid)? {
        s.call(
            libc::SYS_timer_gettime,
            &[p.id as u64, s.addr],
            &format!("timer_gettime(timer {})", p.id),
        )?;
        let mut b = [0u8; ITIMERSPEC_SIZE];
        s.read(0, &mut b)?;
        let overrun = s.call(
            libc::SYS_timer_getoverrun,
            &[p.id as u64],
            &format!("timer_getoverrun(timer {})", p.id),
        )? as i32;
        let e = posix_entry(&p, &b, overrun);
        if let Err(why) = posix_timer_check(&e) {
            return Err(Error::unsupported(
                pid,
                format!("POSIX timer {}", p.id),
                why,
            ));
        }
        debug!(
            "pid {pid}: POSIX timer {} clock {} signal {} notify {:#x}: value {}.{:09} s, interval {}.{:09} s, overrun {}",
            e.it_id, p.clock_id, e.si_signo, e.it_sigev_notify, e.vsec, e.vnsec, e.isec, e.insec, e.overrun
        );
        posix.push(e);
    }
    let mut it = it.into_iter();
    Ok(pb::TaskTimersEntry {
        real: it.next().expect("three itimers"),
        virt: it.next().expect("three itimers"),
        prof: it.next().expect("three itimers"),
        posix,
    })
}

/// itimers and POSIX timers, asked in the task (timer_gettime,
/// getitimer, timer_getoverrun).
pub const KIND: super::kind::Kind = super::kind::Kind {
    name: "timers",
    new: |_| Ok(Box::new(Timers)),
};

struct Timers;

impl super::kind::Dumper for Timers {
    fn in_task(
        &mut self,
        pid: Pid,
        s: &mut ScratchSession<'_>,
        tc: &mut pb::TaskCoreEntry,
    ) -> Result<()> {
        tc.timers = Some(dump_timers(pid, s)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::timers::{itimerspec_to_bytes, posix_timer_check, sigevent_bytes};

    #[test]
    fn entries() {
        let p = proc_timers::PosixTimer {
            id: 4,
            signo: libc::SIGRTMIN(),
            sival_ptr: 0xfeed,
            notify: proc_timers::NotifyKind::Signal,
            thread_id: true,
            notify_pid: 321,
            clock_id: libc::CLOCK_BOOTTIME,
        };
        let spec = itimerspec_to_bytes(1, 0, 0, 5);
        let e = posix_entry(&p, &spec, 3);
        assert_eq!(e.it_id, 4);
        assert_eq!(
            e.it_sigev_notify as i32,
            libc::SIGEV_SIGNAL | libc::SIGEV_THREAD_ID
        );
        assert_eq!(e.notify_thread_id, Some(321));
        assert_eq!(
            (e.isec, e.insec, e.vsec, e.vnsec, e.overrun),
            (1, 0, 0, 5, 3)
        );
        assert!(posix_timer_check(&e).is_ok());
        let sev = sigevent_bytes(&e);
        // SAFETY: the kernel sigevent is 64 bytes; libc's sigevent matches.
        let l: libc::sigevent = unsafe { std::mem::transmute(sev) };
        assert_eq!(l.sigev_signo, libc::SIGRTMIN());
        assert_eq!(l.sigev_notify, libc::SIGEV_SIGNAL | libc::SIGEV_THREAD_ID);
        assert_eq!(l.sigev_value.sival_ptr as u64, 0xfeed);
        assert_eq!(l.sigev_notify_thread_id, 321);
        let none = posix_entry(
            &proc_timers::PosixTimer {
                notify: proc_timers::NotifyKind::None,
                signo: 0,
                thread_id: false,
                ..p
            },
            &spec,
            -1,
        );
        assert_eq!(none.notify_thread_id, None);
        assert_eq!(none.overrun, 0);
        assert!(posix_timer_check(&none).is_ok());
        let bad = pb::PosixTimerEntry {
            vnsec: 1_000_000_000,
            ..e.clone()
        };
        assert!(posix_timer_check(&bad).is_err());
        let bad = pb::PosixTimerEntry {
            notify_thread_id: None,
            ..e.clone()
        };
        assert!(posix_timer_check(&bad).is_err());
        let bad = pb::PosixTimerEntry { si_signo: 99, ..e };
        assert!(posix_timer_check(&bad).is_err());
    }
}
