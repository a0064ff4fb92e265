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
//! page) and the image entries are here as pure functions; the restore
//! (restore/timers.rs) uses the encoders.

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::timers as proc_timers;
use crate::ptrace::scratch::ScratchSession;

pub const ITIMER_REAL: u64 = 0;
pub const ITIMER_VIRTUAL: u64 = 1;
pub const ITIMER_PROF: u64 = 2;

/// `struct itimerval` (interval, then value; seconds and microseconds).
pub const ITIMERVAL_SIZE: usize = 32;
/// `struct itimerspec` (interval, then value; seconds and nanoseconds).
pub const ITIMERSPEC_SIZE: usize = 32;

fn words(b: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
}

fn bytes(w: [u64; 4]) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, v) in w.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
    }
    b
}

/// getitimer's answer -> image.
pub fn itimer_from_bytes(b: &[u8; ITIMERVAL_SIZE]) -> pb::ItimerEntry {
    let [isec, iusec, vsec, vusec] = words(b);
    pb::ItimerEntry {
        isec,
        iusec,
        vsec,
        vusec,
    }
}

/// image -> setitimer's argument.
pub fn itimer_to_bytes(e: &pb::ItimerEntry) -> [u8; ITIMERVAL_SIZE] {
    bytes([e.isec, e.iusec, e.vsec, e.vusec])
}

/// An interval timer that is neither armed nor has an interval.
pub fn itimer_is_zero(e: &pb::ItimerEntry) -> bool {
    e.isec == 0 && e.iusec == 0 && e.vsec == 0 && e.vusec == 0
}

/// Whether the values are ones setitimer accepts.
pub fn itimer_check(e: &pb::ItimerEntry) -> std::result::Result<(), String> {
    const MAX_SEC: u64 = i64::MAX as u64;
    if e.iusec >= 1_000_000 || e.vusec >= 1_000_000 || e.isec > MAX_SEC || e.vsec > MAX_SEC {
        return Err(format!(
            "interval {}.{:06} s, value {}.{:06} s is not a valid time",
            e.isec, e.iusec, e.vsec, e.vusec
        ));
    }
    Ok(())
}

/// (isec, insec, vsec, vnsec) of a timer_gettime answer.
pub fn itimerspec_from_bytes(b: &[u8; ITIMERSPEC_SIZE]) -> (u64, u64, u64, u64) {
    let [isec, insec, vsec, vnsec] = words(b);
    (isec, insec, vsec, vnsec)
}

/// timer_settime's argument: the interval and the time left, relative.
pub fn itimerspec_to_bytes(isec: u64, insec: u64, vsec: u64, vnsec: u64) -> [u8; ITIMERSPEC_SIZE] {
    bytes([isec, insec, vsec, vnsec])
}

pub fn posix_timer_check(t: &pb::PosixTimerEntry) -> std::result::Result<(), String> {
    const MAX_SEC: u64 = i64::MAX as u64;
    if t.insec >= 1_000_000_000 || t.vnsec >= 1_000_000_000 || t.isec > MAX_SEC || t.vsec > MAX_SEC
    {
        return Err(format!(
            "timer {}: interval {}.{:09} s, value {}.{:09} s is not a valid time",
            t.it_id, t.isec, t.insec, t.vsec, t.vnsec
        ));
    }
    if t.it_id > i32::MAX as u32 {
        return Err(format!("timer id {} is out of range", t.it_id));
    }
    let notify = t.it_sigev_notify as i32;
    let base = notify & !libc::SIGEV_THREAD_ID;
    if ![libc::SIGEV_SIGNAL, libc::SIGEV_NONE, libc::SIGEV_THREAD].contains(&base) {
        return Err(format!(
            "timer {}: sigev_notify {notify} is unknown",
            t.it_id
        ));
    }
    if base != libc::SIGEV_NONE && !(1..=64).contains(&t.si_signo) {
        return Err(format!(
            "timer {}: signal {} is out of range 1..64",
            t.it_id, t.si_signo
        ));
    }
    if notify & libc::SIGEV_THREAD_ID != 0 && t.notify_thread_id.unwrap_or(0) <= 0 {
        return Err(format!(
            "timer {}: SIGEV_THREAD_ID without a thread id",
            t.it_id
        ));
    }
    Ok(())
}

/// The kernel's `struct sigevent` for timer_create (64 bytes): sigev_value,
/// sigev_signo, sigev_notify, then the thread id for SIGEV_THREAD_ID.
pub fn sigevent_bytes(t: &pb::PosixTimerEntry) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&t.sival_ptr.to_ne_bytes());
    b[8..12].copy_from_slice(&t.si_signo.to_ne_bytes());
    b[12..16].copy_from_slice(&t.it_sigev_notify.to_ne_bytes());
    b[16..20].copy_from_slice(&t.notify_thread_id.unwrap_or(0).to_ne_bytes());
    b
}

const NSEC: u64 = 1_000_000_000;

/// The clock to read "now" of a timer's clock with: the alarm clocks are
/// their base clocks (reading them needs an RTC, which a VM may lack);
/// `None` for the CPU-time clocks, which only advance while the task runs.
pub fn readable_clock(clock: i32) -> Option<i32> {
    match clock {
        libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_ALARM => Some(libc::CLOCK_REALTIME),
        libc::CLOCK_MONOTONIC => Some(libc::CLOCK_MONOTONIC),
        libc::CLOCK_BOOTTIME | libc::CLOCK_BOOTTIME_ALARM => Some(libc::CLOCK_BOOTTIME),
        libc::CLOCK_TAI => Some(libc::CLOCK_TAI),
        _ => None,
    }
}

/// `clock` now, in nanoseconds (see [`readable_clock`]).
pub fn clock_now_ns(clock: i32) -> Option<u64> {
    let c = readable_clock(clock)?;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    (unsafe { libc::clock_gettime(c, &mut ts) } == 0)
        .then(|| ts.tv_sec as u64 * NSEC + ts.tv_nsec as u64)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// How much of `clock` passed since `dumped_now` (a reading at dump time
/// in boot `dumped_boot`), if the two readings can be compared: the
/// wall clocks always, MONOTONIC and BOOTTIME only within one boot.
/// Negative if a wall clock was set back.
pub fn elapsed_since(
    clock: i32,
    dumped_now: Option<u64>,
    dumped_boot: Option<&str>,
    now: Option<u64>,
    boot: Option<&str>,
) -> Option<i128> {
    let (then, now) = (dumped_now?, now?);
    comparable(clock, dumped_boot, boot).then(|| now as i128 - then as i128)
}

/// Whether readings of `clock` in boot `dumped_boot` and in boot `boot`
/// measure the same time line.
pub fn comparable(clock: i32, dumped_boot: Option<&str>, boot: Option<&str>) -> bool {
    match readable_clock(clock) {
        Some(libc::CLOCK_REALTIME | libc::CLOCK_TAI) => true,
        Some(_) => dumped_boot.is_some() && dumped_boot == boot,
        None => false,
    }
}

/// A POSIX timer's value after `elapsed` ns: what is left (at least 1 ns,
/// "expire at once", if the deadline passed meanwhile); 0 stays disarmed.
pub fn posix_value_after(value_ns: u64, elapsed: i128) -> u64 {
    if value_ns == 0 {
        return 0;
    }
    let left = value_ns as i128 - elapsed;
    left.clamp(1, u64::MAX as i128) as u64
}

/// A timerfd after `elapsed` ns: (time left, 0 = disarmed; unread
/// expirations). Expirations that fell into the elapsed time are counted
/// into the ticks, and a periodic timer keeps its phase.
pub fn timerfd_after(value_ns: u64, interval_ns: u64, ticks: u64, elapsed: i128) -> (u64, u64) {
    if value_ns == 0 {
        return (0, ticks);
    }
    let left = value_ns as i128 - elapsed;
    if left > 0 {
        return ((left as u128).min(u64::MAX as u128) as u64, ticks);
    }
    let late = (-left) as u128;
    if interval_ns == 0 {
        return (0, ticks.saturating_add(1));
    }
    let iv = interval_ns as u128;
    let missed = (late / iv).min(u64::MAX as u128) as u64;
    let next = (iv - late % iv) as u64;
    (next, ticks.saturating_add(1).saturating_add(missed))
}

pub fn ns(sec: u64, nsec: u64) -> u64 {
    sec.saturating_mul(NSEC).saturating_add(nsec)
}

pub fn sec_nsec(ns: u64) -> (u64, u64) {
    (ns / NSEC, ns % NSEC)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itimer_roundtrip() {
        // The same bytes libc's struct itimerval has.
        let v = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 1,
                tv_usec: 500_000,
            },
            it_value: libc::timeval {
                tv_sec: 7,
                tv_usec: 3,
            },
        };
        // SAFETY: itimerval is 32 bytes of plain integers.
        let b: [u8; 32] = unsafe { std::mem::transmute(v) };
        let e = itimer_from_bytes(&b);
        assert_eq!((e.isec, e.iusec, e.vsec, e.vusec), (1, 500_000, 7, 3));
        assert_eq!(itimer_to_bytes(&e), b);
        assert!(!itimer_is_zero(&e));
        assert!(itimer_check(&e).is_ok());
        assert!(itimer_is_zero(&itimer_from_bytes(&[0; 32])));
        let bad = pb::ItimerEntry {
            iusec: 1_000_000,
            ..e
        };
        assert!(itimer_check(&bad).is_err());
    }

    #[test]
    fn itimerspec_roundtrip() {
        let v = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 3_000_000,
            },
            it_value: libc::timespec {
                tv_sec: 2,
                tv_nsec: 999_999_999,
            },
        };
        // SAFETY: itimerspec is 32 bytes of plain integers.
        let b: [u8; 32] = unsafe { std::mem::transmute(v) };
        let t = itimerspec_from_bytes(&b);
        assert_eq!(t, (0, 3_000_000, 2, 999_999_999));
        assert_eq!(itimerspec_to_bytes(t.0, t.1, t.2, t.3), b);
    }

    #[test]
    fn clocks_and_elapsed() {
        assert_eq!(
            readable_clock(libc::CLOCK_REALTIME_ALARM),
            Some(libc::CLOCK_REALTIME)
        );
        assert_eq!(
            readable_clock(libc::CLOCK_BOOTTIME_ALARM),
            Some(libc::CLOCK_BOOTTIME)
        );
        assert_eq!(readable_clock(libc::CLOCK_PROCESS_CPUTIME_ID), None);
        assert_eq!(readable_clock(-6), None);
        let a = clock_now_ns(libc::CLOCK_MONOTONIC).unwrap();
        let b = clock_now_ns(libc::CLOCK_MONOTONIC).unwrap();
        assert!(b >= a);
        assert!(clock_now_ns(libc::CLOCK_BOOTTIME_ALARM).is_some());
        let id = boot_id().unwrap();
        assert_eq!(id.len(), 36, "{id:?}");
        let (me, other) = (Some("x"), Some("y"));
        let m = libc::CLOCK_MONOTONIC;
        assert_eq!(elapsed_since(m, Some(10), me, Some(25), me), Some(15));
        assert_eq!(elapsed_since(m, Some(10), me, Some(25), other), None);
        assert_eq!(elapsed_since(m, Some(10), None, Some(25), None), None);
        assert_eq!(elapsed_since(m, None, me, Some(25), me), None);
        // Wall clocks compare across boots, and may go back.
        let r = libc::CLOCK_REALTIME;
        assert_eq!(elapsed_since(r, Some(10), me, Some(25), other), Some(15));
        assert_eq!(elapsed_since(r, Some(30), None, Some(25), None), Some(-5));
        assert_eq!(
            elapsed_since(libc::CLOCK_PROCESS_CPUTIME_ID, Some(1), me, Some(2), me),
            None
        );
    }

    #[test]
    fn values_after() {
        assert_eq!(posix_value_after(0, 5), 0);
        assert_eq!(posix_value_after(100, 30), 70);
        assert_eq!(posix_value_after(100, 100), 1);
        assert_eq!(posix_value_after(100, 1000), 1);
        assert_eq!(posix_value_after(100, -50), 150);
        // timerfd: still to come
        assert_eq!(timerfd_after(100, 0, 2, 30), (70, 2));
        // disarmed stays so
        assert_eq!(timerfd_after(0, 10, 2, 30), (0, 2));
        // one-shot expired meanwhile
        assert_eq!(timerfd_after(100, 0, 0, 100), (0, 1));
        // periodic: 100 left, every 40, 250 elapsed: expiries at 100, 140,
        // 180, 220; the next at 260, 10 from now
        assert_eq!(timerfd_after(100, 40, 1, 250), (10, 5));
        // exactly on an expiry: counted, the next a full interval away
        assert_eq!(timerfd_after(100, 40, 0, 140), (40, 2));
        assert_eq!(ns(2, 5), 2_000_000_005);
        assert_eq!(sec_nsec(2_000_000_005), (2, 5));
    }

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
