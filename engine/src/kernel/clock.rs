//! Clock readings and their comparison across a dump and a restore,
//! which may be in another boot: dump records a reading with each timer,
//! restore reads the clock again to know how much time passed.

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

pub fn ns(sec: u64, nsec: u64) -> u64 {
    sec.saturating_mul(NSEC).saturating_add(nsec)
}

pub fn sec_nsec(ns: u64) -> (u64, u64) {
    (ns / NSEC, ns % NSEC)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn timespec_conversion() {
        assert_eq!(ns(2, 5), 2_000_000_005);
        assert_eq!(sec_nsec(2_000_000_005), (2, 5));
    }
}
