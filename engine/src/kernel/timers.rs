//! The kernel's timer structs (itimerval, itimerspec, sigevent) as bytes
//! for the scratch page, checks of image values against what the timer
//! syscalls accept, and how a timer's state moves on while the process is
//! not running. Dump decodes the kernel's answers with these, restore
//! encodes the arguments that set the timers again.

use crate::images::pb;

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
    }
}
