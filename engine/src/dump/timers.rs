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

/// The three interval timers, each answer in a slot of `SLOT` bytes.
const ITIMERS: [(u64, &str); 3] = [
    (ITIMER_REAL, "ITIMER_REAL"),
    (ITIMER_VIRTUAL, "ITIMER_VIRTUAL"),
    (ITIMER_PROF, "ITIMER_PROF"),
];
const SLOT: usize = 32;
const _: () = assert!(ITIMERVAL_SIZE <= SLOT && ITIMERSPEC_SIZE <= SLOT);
/// POSIX timers asked in one batch: each answer takes a slot of the
/// batch's data page.
const POSIX_PER_BATCH: usize = 120;
const _: () = assert!(POSIX_PER_BATCH * SLOT <= 4096);

/// The getitimer calls, answers at `at`: asked in the process-wide batch
/// (`Dumper::task_calls`; one by one they were three round trips of two
/// ptrace stops each, for every process).
fn itimer_calls(at: u64) -> Vec<crate::ptrace::remote::Call> {
    ITIMERS
        .iter()
        .enumerate()
        .map(|(i, (which, _))| {
            (
                libc::SYS_getitimer,
                [*which, at + (i * SLOT) as u64, 0, 0, 0, 0],
            )
        })
        .collect()
}

/// The interval timers from the getitimer calls' results and answers.
fn itimers_from(pid: Pid, results: &[i64], data: &[u8]) -> Result<Vec<pb::ItimerEntry>> {
    let mut it = Vec::with_capacity(ITIMERS.len());
    for (i, (_, name)) in ITIMERS.iter().enumerate() {
        let r = results.get(i).copied().unwrap_or(-(libc::EINVAL as i64));
        if (-4095..0).contains(&r) || data.len() < (i + 1) * SLOT {
            return Err(Error::sys(
                pid,
                format!("getitimer({name}) (in the task)"),
                nix::errno::Errno::from_raw(-r as i32),
            ));
        }
        let b: &[u8; ITIMERVAL_SIZE] = data[i * SLOT..][..ITIMERVAL_SIZE]
            .try_into()
            .expect("a slot");
        let e = itimer_from_bytes(b);
        if !itimer_is_zero(&e) {
            debug!(
                "pid {pid}: {name}: value {}.{:06} s, interval {}.{:06} s",
                e.vsec, e.vusec, e.isec, e.iusec
            );
        }
        it.push(e);
    }
    Ok(it)
}

/// The POSIX timers of process `pid` (from /proc/PID/timers), asked
/// through the leader's scratch session, a batch of them at a time
/// (none for a process without any, the usual case).
pub fn dump_posix_timers(pid: Pid, s: &mut ScratchSession<'_>) -> Result<Vec<pb::PosixTimerEntry>> {
    let timers = proc_timers::read(pid)?;
    let mut posix = Vec::with_capacity(timers.len());
    for chunk in timers.chunks(POSIX_PER_BATCH) {
        let data = s.batch_data()?;
        let mut calls = Vec::with_capacity(2 * chunk.len());
        for (k, p) in chunk.iter().enumerate() {
            let id = p.id as u64;
            let at = data + (k * SLOT) as u64;
            calls.push((libc::SYS_timer_gettime, [id, at, 0, 0, 0, 0]));
            calls.push((libc::SYS_timer_getoverrun, [id, 0, 0, 0, 0, 0]));
        }
        let results = s.batch(&calls)?;
        let mut b = vec![0u8; chunk.len() * SLOT];
        s.mem.read(data, &mut b)?;
        for (k, p) in chunk.iter().enumerate() {
            for (r, what) in [
                (results[2 * k], "timer_gettime"),
                (results[2 * k + 1], "timer_getoverrun"),
            ] {
                if (-4095..0).contains(&r) {
                    return Err(Error::sys(
                        pid,
                        format!("{what}(timer {}) (in the task)", p.id),
                        nix::errno::Errno::from_raw(-r as i32),
                    ));
                }
            }
            let spec: &[u8; ITIMERSPEC_SIZE] =
                b[k * SLOT..][..ITIMERSPEC_SIZE].try_into().expect("a slot");
            let e = posix_entry(p, spec, results[2 * k + 1] as i32);
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
    }
    Ok(posix)
}

/// itimers and POSIX timers, asked in the task (getitimer in the
/// process-wide batch; timer_gettime, timer_getoverrun after it).
pub const KIND: super::kind::Kind = super::kind::Kind {
    name: "timers",
    new: |_| Ok(Box::new(Timers)),
};

struct Timers;

impl super::kind::Dumper for Timers {
    fn task_calls(
        &mut self,
        _pid: Pid,
        at: u64,
        _room: usize,
    ) -> Result<(Vec<crate::ptrace::remote::Call>, usize)> {
        Ok((itimer_calls(at), ITIMERS.len() * SLOT))
    }

    fn task_answers(
        &mut self,
        pid: Pid,
        results: &[i64],
        data: &[u8],
        tc: &mut pb::TaskCoreEntry,
    ) -> Result<()> {
        let mut it = itimers_from(pid, results, data)?.into_iter();
        tc.timers = Some(pb::TaskTimersEntry {
            real: it.next().expect("three itimers"),
            virt: it.next().expect("three itimers"),
            prof: it.next().expect("three itimers"),
            posix: Vec::new(),
        });
        Ok(())
    }

    fn in_task(
        &mut self,
        pid: Pid,
        s: &mut ScratchSession<'_>,
        tc: &mut pb::TaskCoreEntry,
    ) -> Result<()> {
        let posix = dump_posix_timers(pid, s)?;
        let t = tc.timers.as_mut().ok_or_else(|| {
            Error::task(
                pid,
                "timers",
                "internal: the interval timers were not asked",
            )
        })?;
        t.posix = posix;
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
