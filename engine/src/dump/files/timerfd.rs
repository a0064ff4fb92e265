//! timerfd: clock, flags, expiry and interval, and the ticks not yet read,
//! from fdinfo, with the clock's time at the dump so the restore can tell
//! how much of the timer ran out meanwhile. The timer is asked for its
//! time first (see [`refresh_timerfd`]), so fdinfo is up to date.

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::fdinfo;

pub struct Timerfd;

impl FdDumper for Timerfd {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("[timerfd]")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        // An expired periodic timerfd is only moved on (its ticks counted, the
        // timer re-armed) when it is read or asked: fdinfo would show it
        // disarmed. Ask it (timerfd_gettime on a copy of the fd, which is what
        // the task's own timerfd_gettime would do), then read fdinfo again.
        // A periodic timer whose time is up reads as 0 left, like a
        // disarmed one, until the kernel has handled the expiry and the
        // timer is asked again: between timerfd_gettime and the fdinfo
        // read, or before the expiry is handled at all (a 10 ms timer on a
        // loaded machine). Ask again, giving the kernel a moment when
        // timerfd_gettime saw 0 too; a timer that is really disarmed (with
        // an interval set, which timerfd_settime allows) reads 0 every
        // time and is taken as disarmed after 20 tries.
        let mut tries = 0;
        let t = loop {
            let armed = refresh_timerfd(fd.pid, fd.fd)?;
            let info = &fdinfo::read_fdinfo(fd.pid, fd.fd)?;
            let t = fd.field("timerfd", "clockid", info.timerfd())?;
            let up = t.it_value == (0, 0) && t.it_interval != (0, 0);
            tries += 1;
            if !up || tries >= 20 {
                break t;
            }
            if !armed {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Timerfd as i32,
            id,
            tfd: Some(pb::TimerfdEntry {
                id,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                clockid: t.clockid as u32,
                ticks: t.ticks,
                settime_flags: t.settime_flags,
                vsec: t.it_value.0,
                vnsec: t.it_value.1,
                isec: t.it_interval.0,
                insec: t.it_interval.1,
                ckpt_clock_now: crate::kernel::clock::clock_now_ns(t.clockid),
                ckpt_boot_id: crate::proc::boot_id::boot_id(),
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Timerfd, id))
    }
}

/// timerfd_gettime on fd `fd` of `pid` (through pidfd_getfd); whether the
/// timer is armed.
fn refresh_timerfd(pid: Pid, fd: i32) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let what = || format!("fd {fd} (timerfd)");
    let copy = crate::sys::take_fd(pid, fd)
        .map_err(|e| Error::sys(pid, format!("{}: pidfd_getfd", what()), e))?;
    // SAFETY: timerfd_gettime writes one itimerspec into `its`.
    let mut its: libc::itimerspec = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::timerfd_gettime(copy.as_raw_fd(), &mut its) };
    if r < 0 {
        return Err(Error::sys(
            pid,
            format!("{}: timerfd_gettime", what()),
            nix::errno::Errno::last(),
        ));
    }
    Ok(its.it_value.tv_sec != 0 || its.it_value.tv_nsec != 0)
}
