//! timerfd: a new one on the same clock, with the time it had left (the
//! time since the dump counted where the clock allows) and its unread
//! expirations (TFD_IOC_SET_TICKS).

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Timerfd;

impl FdKind for Timerfd {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Timerfd
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        match &f.tfd {
            Some(t) => match crate::restore::timers::check_timerfd(t) {
                Some(why) => Err(why),
                None => Ok(()),
            },
            None => Err("TIMERFD without timerfd entry".into()),
        }
    }

    fn source(
        &self,
        _imgs: &Images,
        _pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        Ok(Arc::new(plan_of(f)))
    }

    fn open_in_engine(
        &self,
        _imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        _pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        super::open_here(pid, &plan_of(f))
    }
}

fn plan_of(f: &pb::FileEntry) -> TimerfdPlan {
    let t = f.tfd.as_ref().expect("validated");
    let boot = crate::proc::boot_id::boot_id();
    let same_line = crate::kernel::clock::comparable(
        t.clockid as i32,
        t.ckpt_boot_id.as_deref(),
        boot.as_deref(),
    );
    TimerfdPlan {
        dumped_now: t.ckpt_clock_now.filter(|_| same_line),
        clockid: t.clockid as i32,
        flags: t.flags as i32,
        settime_flags: t.settime_flags as i32,
        value: (t.vsec, t.vnsec),
        interval: (t.isec, t.insec),
        ticks: t.ticks,
    }
}

impl OpenFd for TimerfdPlan {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        make_timerfd(self)
    }

    fn describe(&self) -> String {
        "timerfd".into()
    }
}

/// A timerfd as dumped from its fdinfo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerfdPlan {
    pub clockid: i32,
    /// O_NONBLOCK of the open file (TFD_NONBLOCK).
    pub flags: i32,
    /// TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET of the last settime.
    pub settime_flags: i32,
    /// Time left until the next expiry, (seconds, nanoseconds).
    pub value: (u64, u64),
    pub interval: (u64, u64),
    /// Expirations not read yet.
    pub ticks: u64,
    /// The clock's reading at dump time, if it can be compared with now
    /// (same boot, or a wall clock): the time since counts, as it did
    /// for the clock.
    pub dumped_now: Option<u64>,
}

const TFD_TIMER_ABSTIME: i32 = 1;
/// `_IOW('T', 0, u64)`: set the unread expiration count (CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
const NSEC: u64 = 1_000_000_000;

/// `value` as timerfd_settime wants it: relative, or with
/// TFD_TIMER_ABSTIME the time left added to the clock's now.
pub fn timerfd_value(settime_flags: i32, value: (u64, u64), now: (u64, u64)) -> (u64, u64) {
    if settime_flags & TFD_TIMER_ABSTIME == 0 || value == (0, 0) {
        return value;
    }
    let ns = value.1 + now.1;
    (value.0 + now.0 + ns / NSEC, ns % NSEC)
}

fn make_timerfd(t: &TimerfdPlan) -> nix::Result<RawFd> {
    use crate::kernel::clock::{clock_now_ns, ns, sec_nsec};
    use crate::kernel::timers::timerfd_after;
    // SAFETY (whole function): timerfd calls on the fd we create, with
    // structs of the sizes the kernel expects.
    let fd = Errno::result(unsafe { libc::timerfd_create(t.clockid, t.flags & libc::O_NONBLOCK) })?;
    let close_on_err = |e: Errno| {
        unsafe { libc::close(fd) };
        e
    };
    // The time since the dump counts (when it can be known), one read of
    // the clock for that and for an absolute deadline.
    let now = clock_now_ns(t.clockid);
    let elapsed = match (t.dumped_now, now) {
        (Some(then), Some(now)) => now as i128 - then as i128,
        _ => 0,
    };
    let (value, ticks) = timerfd_after(
        ns(t.value.0, t.value.1),
        ns(t.interval.0, t.interval.1),
        t.ticks,
        elapsed,
    );
    if value != 0 || t.interval != (0, 0) {
        if t.settime_flags & TFD_TIMER_ABSTIME != 0 && value != 0 && now.is_none() {
            return Err(close_on_err(Errno::EINVAL));
        }
        let (vs, vn) = timerfd_value(t.settime_flags, sec_nsec(value), sec_nsec(now.unwrap_or(0)));
        let its = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: t.interval.0 as i64,
                tv_nsec: t.interval.1 as i64,
            },
            it_value: libc::timespec {
                tv_sec: vs as i64,
                tv_nsec: vn as i64,
            },
        };
        Errno::result(unsafe {
            libc::timerfd_settime(fd, t.settime_flags, &its, std::ptr::null_mut())
        })
        .map_err(close_on_err)?;
    }
    if ticks != 0 {
        Errno::result(unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &ticks as *const u64) })
            .map_err(close_on_err)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timerfd_values() {
        assert_eq!(timerfd_value(0, (5, 7), (100, 999_999_999)), (5, 7));
        assert_eq!(
            timerfd_value(TFD_TIMER_ABSTIME, (5, 7), (100, 999_999_999)),
            (106, 6)
        );
        // Disarmed stays disarmed.
        assert_eq!(timerfd_value(TFD_TIMER_ABSTIME, (0, 0), (100, 5)), (0, 0));
    }

    #[test]
    fn timerfd_roundtrip() {
        let plan = TimerfdPlan {
            clockid: libc::CLOCK_MONOTONIC,
            flags: libc::O_NONBLOCK,
            settime_flags: TFD_TIMER_ABSTIME,
            value: (100, 0),
            interval: (2, 500),
            ticks: 3,
            dumped_now: None,
        };
        let fd = make_timerfd(&plan).unwrap();
        let me = std::process::id() as i32;
        let info = crate::proc::fdinfo::read_fdinfo(me, fd).unwrap();
        let tf = info.timerfd().unwrap().unwrap();
        assert_eq!(tf.clockid, libc::CLOCK_MONOTONIC);
        assert_eq!(tf.ticks, 3);
        assert_eq!(tf.settime_flags, TFD_TIMER_ABSTIME as u32);
        assert_eq!(tf.it_interval, (2, 500));
        assert!(tf.it_value.0 >= 98 && tf.it_value.0 <= 100, "{tf:?}");
        unsafe { libc::close(fd) };
        // Dumped 15 s ago (same boot): a 10 s one-shot expired meanwhile.
        let now = crate::kernel::clock::clock_now_ns(libc::CLOCK_MONOTONIC).unwrap();
        let fd = make_timerfd(&TimerfdPlan {
            dumped_now: Some(now.saturating_sub(15_000_000_000)),
            value: (10, 0),
            interval: (0, 0),
            ..plan
        })
        .unwrap();
        let tf = crate::proc::fdinfo::read_fdinfo(me, fd)
            .unwrap()
            .timerfd()
            .unwrap()
            .unwrap();
        assert_eq!((tf.ticks, tf.it_value), (4, (0, 0)), "{tf:?}");
        unsafe { libc::close(fd) };
        let fd = make_timerfd(&plan).unwrap();
        assert_ne!(info.flags & libc::O_NONBLOCK as u32, 0);
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into buf.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(u64::from_ne_bytes(buf), 3);
        unsafe { libc::close(fd) };

        let sfd = super::super::signalfd::make_signalfd(1 << 11 | 1 << 33, 0).unwrap();
        let info = crate::proc::fdinfo::read_fdinfo(me, sfd).unwrap();
        assert_eq!(info.signalfd_sigmask(), Some(Ok(1 << 11 | 1 << 33)));
        unsafe { libc::close(sfd) };
    }
}
