//! Timers of a restored process: POSIX timers recreated with their old IDs
//! and armed with the time they had left, then the interval timers.
//!
//! Everything runs inside the leader as remote syscalls, after the threads
//! exist (a SIGEV_THREAD_ID timer names one) and after the pending signals
//! are queued again (so a timer that fires at once queues behind them),
//! while every signal is still blocked in the task.
//!
//! Timer IDs: with `prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)` (Linux 6.15+),
//! timer_create reads the wanted ID from the `timer_t *` it normally only
//! writes the new ID to, and fails if that ID is taken. Without it, the
//! IDs are reached the old way (CRIU's): the kernel hands out increasing
//! IDs, so timers are created in ID order and the ones in the gaps are
//! deleted again.
//!
//! Times are relative: a timer gets the time it had left at dump time, so
//! the time between dump and restore does not count (as for CRIU).
//!
//! What cannot be restored: the overrun count of the last delivered expiry
//! (timer_getoverrun) starts at 0 again; the kernel has no way to set it.
//! The count is in the image, and a pending SI_TIMER signal keeps its
//! si_overrun (it is queued again with its siginfo).

use crate::dump::timers::{
    itimer_check, itimer_is_zero, itimer_to_bytes, itimerspec_to_bytes, posix_timer_check,
    sigevent_bytes, ITIMER_PROF, ITIMER_REAL, ITIMER_VIRTUAL,
};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::ptrace::Seized;

use super::load::TaskImages;

pub const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
pub const PR_TIMER_CREATE_RESTORE_IDS_OFF: u64 = 0;
pub const PR_TIMER_CREATE_RESTORE_IDS_ON: u64 = 1;

/// How many unwanted timers the old way may create for one wanted ID.
const LINEAR_LIMIT: u32 = 1 << 16;

/// Check the timers of an image (called by load.rs before anything runs).
pub fn check(tt: Option<&pb::TaskTimersEntry>) -> std::result::Result<(), String> {
    let Some(tt) = tt else { return Ok(()) };
    for (name, it) in [("real", &tt.real), ("virt", &tt.virt), ("prof", &tt.prof)] {
        itimer_check(it).map_err(|e| format!("itimer {name}: {e}"))?;
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in &tt.posix {
        posix_timer_check(t)?;
        if !ids.insert(t.it_id) {
            return Err(format!("POSIX timer id {} appears twice", t.it_id));
        }
    }
    Ok(())
}

/// Scratch layout: the timer id at 0, the sigevent at 64, times at 128.
const ID_AT: u64 = 0;
const SIGEVENT_AT: u64 = 64;
const TIME_AT: u64 = 128;

fn create_one(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    t: &pb::PosixTimerEntry,
    want_id: Option<i32>,
) -> Result<std::result::Result<i32, nix::errno::Errno>> {
    mem.write(scratch + SIGEVENT_AT, &sigevent_bytes(t))?;
    mem.write(scratch + ID_AT, &want_id.unwrap_or(0).to_ne_bytes())?;
    let ret = r.raw(
        libc::SYS_timer_create,
        &[
            t.clock_id as i32 as i64 as u64,
            scratch + SIGEVENT_AT,
            scratch + ID_AT,
        ],
    )?;
    if ret < 0 {
        return Ok(Err(nix::errno::Errno::from_raw(-ret as i32)));
    }
    let mut b = [0u8; 4];
    mem.read(scratch + ID_AT, &mut b)?;
    Ok(Ok(i32::from_ne_bytes(b)))
}

fn create_failed(pid: Pid, t: &pb::PosixTimerEntry, e: nix::errno::Errno) -> Error {
    Error::sys(
        pid,
        format!(
            "timer_create of POSIX timer {} (clock {}, signal {}, notify {:#x}) in the task",
            t.it_id, t.clock_id as i32, t.si_signo, t.it_sigev_notify
        ),
        e,
    )
}

/// Create every timer with its old ID; `timers` sorted by ID.
fn create_posix(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pid: Pid,
    timers: &[&pb::PosixTimerEntry],
) -> Result<()> {
    let explicit = r.raw(
        libc::SYS_prctl,
        &[
            PR_TIMER_CREATE_RESTORE_IDS,
            PR_TIMER_CREATE_RESTORE_IDS_ON,
            0,
            0,
            0,
        ],
    )? == 0;
    if explicit {
        let mut result = Ok(());
        for t in timers {
            match create_one(r, mem, scratch, t, Some(t.it_id as i32))? {
                Ok(got) if got == t.it_id as i32 => {}
                Ok(got) => {
                    result = Err(Error::task(
                        pid,
                        format!("POSIX timer {}", t.it_id),
                        format!("timer_create with an explicit ID made timer {got}"),
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(create_failed(pid, t, e));
                    break;
                }
            }
        }
        r.call(
            libc::SYS_prctl,
            &[
                PR_TIMER_CREATE_RESTORE_IDS,
                PR_TIMER_CREATE_RESTORE_IDS_OFF,
                0,
                0,
                0,
            ],
            "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)",
        )?;
        return result;
    }
    debug!("pid {pid}: no PR_TIMER_CREATE_RESTORE_IDS; creating POSIX timers in ID order");
    for t in timers {
        let want = t.it_id as i32;
        let mut tries = 0;
        loop {
            let got =
                create_one(r, mem, scratch, t, None)?.map_err(|e| create_failed(pid, t, e))?;
            if got == want {
                break;
            }
            if got > want || tries == LINEAR_LIMIT {
                return Err(Error::task(
                    pid,
                    format!("POSIX timer {want}"),
                    format!(
                        "the kernel hands out timer IDs in an order that cannot reach it (got {got}); \
                         this kernel lacks PR_TIMER_CREATE_RESTORE_IDS"
                    ),
                ));
            }
            r.call(
                libc::SYS_timer_delete,
                &[got as u64],
                "timer_delete of a filler timer",
            )?;
            tries += 1;
        }
    }
    Ok(())
}

/// Recreate and arm the POSIX timers and the interval timers of `t` from
/// inside its leader.
pub fn restore(
    task: &mut Seized,
    syscall_ip: u64,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
) -> Result<()> {
    let pid = t.pid;
    let Some(tt) = t.tc().timers.as_ref() else {
        return Ok(());
    };
    let itimers = [
        (ITIMER_REAL, "ITIMER_REAL", &tt.real),
        (ITIMER_VIRTUAL, "ITIMER_VIRTUAL", &tt.virt),
        (ITIMER_PROF, "ITIMER_PROF", &tt.prof),
    ];
    if tt.posix.is_empty() && itimers.iter().all(|(_, _, e)| itimer_is_zero(e)) {
        return Ok(());
    }
    let mut timers: Vec<&pb::PosixTimerEntry> = tt.posix.iter().collect();
    timers.sort_by_key(|t| t.it_id);
    let mut r = Remote::new(task, syscall_ip)?;
    if !timers.is_empty() {
        create_posix(&mut r, mem, scratch, pid, &timers)?;
    }
    for t in &timers {
        if t.overrun != 0 {
            debug!(
                "pid {pid}: POSIX timer {}: the overrun count {} of its last expiry cannot be restored (timer_getoverrun() says 0 until the next one)",
                t.it_id, t.overrun
            );
        }
        if (t.isec, t.insec, t.vsec, t.vnsec) == (0, 0, 0, 0) {
            continue;
        }
        // A zero value with an interval leaves the timer disarmed but
        // remembers the interval, exactly as it was.
        mem.write(
            scratch + TIME_AT,
            &itimerspec_to_bytes(t.isec, t.insec, t.vsec, t.vnsec),
        )?;
        r.call(
            libc::SYS_timer_settime,
            &[t.it_id as u64, 0, scratch + TIME_AT, 0],
            &format!("timer_settime of POSIX timer {}", t.it_id),
        )?;
    }
    for (which, name, e) in itimers {
        if itimer_is_zero(e) {
            continue;
        }
        mem.write(scratch + TIME_AT, &itimer_to_bytes(e))?;
        r.call(
            libc::SYS_setitimer,
            &[which, scratch + TIME_AT, 0],
            &format!("setitimer({name})"),
        )?;
    }
    if !timers.is_empty() {
        debug!("pid {pid}: {} POSIX timers restored", timers.len());
    }
    r.abandon();
    Ok(())
}
