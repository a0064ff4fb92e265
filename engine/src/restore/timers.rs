//! Timers of a restored process: POSIX timers recreated with their old IDs,
//! given back the overrun count of their last expiry and armed with the
//! time they have left, then the interval timers.
//!
//! Everything runs as remote syscalls inside the task (restore/signals.rs
//! drives the order), after the threads exist (a SIGEV_THREAD_ID timer
//! names one), while every signal is still blocked in the task: timers
//! are created first, then the pending signals are queued again (a timer
//! whose own signal was pending is made to expire at that point in the
//! queue), then the other timers are armed.
//!
//! Timer IDs: with `prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)` (Linux 6.15+),
//! timer_create reads the wanted ID from the `timer_t *` it normally only
//! writes the new ID to, and fails if that ID is taken. Without it, the
//! IDs are reached the old way (CRIU's): the kernel hands out increasing
//! IDs, so timers are created in ID order and the ones in the gaps are
//! deleted again.
//!
//! Time: the kernel does not tell whether a POSIX timer was set with
//! TIMER_ABSTIME, so the dump also records the timer's clock and the boot
//! (ckpt extension fields), and the time between dump and restore counts
//! as it did for the clock whenever the two readings are comparable (the
//! wall clocks always, MONOTONIC and BOOTTIME on the same boot): an
//! absolute deadline stays where it was, a relative one as well (the
//! process saw its clocks move on too). Otherwise (another boot, a
//! CPU-time clock, an image without the fields) a timer gets the time it
//! had left, as CRIU does. The interval timers (setitimer) are relative by
//! nature and get the time they had left.
//!
//! The overrun count of the last delivered expiry (timer_getoverrun),
//! which timer_settime resets, is given back with the kernel's own
//! accounting (see [`restore_overrun`]). What is not exact: a timer whose
//! own signal was pending counts the periods it misses from the restore
//! on (those before the dump are not readable); with a restored overrun
//! count that signal comes first in its queue.

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::kernel::clock::{clock_now_ns, elapsed_since, ns, sec_nsec};
use crate::kernel::timers::{
    itimer_check, itimer_is_zero, itimer_to_bytes, itimerspec_to_bytes, posix_timer_check,
    posix_value_after, sigevent_bytes, ITIMER_PROF, ITIMER_REAL, ITIMER_VIRTUAL,
};
use crate::proc::boot_id::boot_id;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;

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

/// Check a timerfd entry: `None` if it can be armed as it is.
pub fn check_timerfd(t: &pb::TimerfdEntry) -> Option<String> {
    (t.vnsec >= 1_000_000_000
        || t.insec >= 1_000_000_000
        || t.vsec > i64::MAX as u64 / 2
        || t.isec > i64::MAX as u64 / 2)
        .then(|| {
            format!(
                "timerfd value {}.{:09} s, interval {}.{:09} s is not a valid time",
                t.vsec, t.vnsec, t.isec, t.insec
            )
        })
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

/// Whether a timer of this clock fires on its own while the task is
/// stopped (the CPU-time clocks only advance when it runs).
pub fn fires_while_stopped(t: &pb::PosixTimerEntry) -> bool {
    let c = t.clock_id as i32;
    c >= 0 && c != libc::CLOCK_PROCESS_CPUTIME_ID && c != libc::CLOCK_THREAD_CPUTIME_ID
}

/// Recreate every POSIX timer of `t` with its old ID, disarmed.
pub fn create(r: &mut Remote<'_>, mem: &TaskMem, scratch: u64, t: &TaskImages) -> Result<()> {
    let Some(tt) = t.tc().timers.as_ref() else {
        return Ok(());
    };
    if tt.posix.is_empty() {
        return Ok(());
    }
    let mut timers: Vec<&pb::PosixTimerEntry> = tt.posix.iter().collect();
    timers.sort_by_key(|t| t.it_id);
    create_posix(r, mem, scratch, t.pid, &timers)?;
    debug!("pid {}: {} POSIX timers created", t.pid, timers.len());
    Ok(())
}

/// Make timer `pt` expire at once, so that its own signal becomes pending
/// (it had one pending at dump time). On delivery the kernel re-arms it
/// with its interval and counts the periods missed since, as it would
/// have for the original signal.
pub fn fire_now(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pt: &pb::PosixTimerEntry,
) -> Result<()> {
    mem.write(
        scratch + TIME_AT,
        &itimerspec_to_bytes(pt.isec, pt.insec, 0, 1),
    )?;
    r.call(
        libc::SYS_timer_settime,
        &[pt.it_id as u64, 0, scratch + TIME_AT, 0],
        &format!("timer_settime of POSIX timer {} (to expire now)", pt.it_id),
    )?;
    Ok(())
}

/// Scratch layout of the overrun trick: the signal set, the timeout and
/// the siginfo of rt_sigtimedwait.
const SET_AT: u64 = 192;
const TIMEOUT_AT: u64 = 200;
const INFO_AT: u64 = 256;
/// Least time between arming and the next expiry in the overrun trick
/// (it must come after our rt_sigtimedwait).
const MIN_AHEAD_NS: u64 = 2_000_000;
/// Tries of the overrun trick before the count is left as it came out.
const OVERRUN_ATTEMPTS: u32 = 4;
/// How far ahead the expiry that makes a pending signal is put.
const PENDING_AHEAD_NS: u64 = 5_000_000;

/// The time `pt` has left now: what it had at dump time, less the time
/// since when its clock's readings can be compared (see `arm`).
pub fn time_left_now(pt: &pb::PosixTimerEntry, boot: Option<&str>) -> u64 {
    let clock = pt.clock_id as i32;
    let elapsed = elapsed_since(
        clock,
        pt.ckpt_clock_now,
        pt.ckpt_boot_id.as_deref(),
        clock_now_ns(clock),
        boot,
    )
    .unwrap_or(0);
    posix_value_after(ns(pt.vsec, pt.vnsec), elapsed)
}

/// Whether the overrun count of `pt`'s last expiry can be given back with
/// [`restore_overrun`]: a periodic timer of a clock that runs while the
/// task is stopped, that delivers signals.
pub fn overrun_restorable(pt: &pb::PosixTimerEntry) -> bool {
    pt.overrun > 0
        && ns(pt.isec, pt.insec) > 0
        && fires_while_stopped(pt)
        && pt.it_sigev_notify as i32 != libc::SIGEV_NONE
        && clock_now_ns(pt.clock_id as i32).is_some()
}

/// Give periodic timer `pt` back the overrun count N of its last delivered
/// expiry (what timer_getoverrun() says), which timer_settime() resets.
///
/// The kernel sets that count when the timer's signal is delivered: it is
/// the number of periods the timer is moved forward past "now", less one.
/// So the timer is armed with an absolute first expiry N+1 periods (less
/// a bit) in the past, its signal (queued at once) is taken by the thread
/// it is for with rt_sigtimedwait, and the kernel re-arms it N+1 periods
/// later, with it_overrun_last = N: the next expiry is `ahead` from now,
/// the time the timer had left (or, when its own signal was pending at
/// dump time, shortly, so that the expiry makes that signal pending again,
/// which this waits for).
///
/// `r` is the thread that takes the signal (the leader's `lr` if None);
/// `(peek_tid, shared)` the queue it arrives in. Must run before any
/// other signal with the same number is queued. Returns false (nothing
/// done) if the clock is too young for the trick.
#[allow(clippy::too_many_arguments)]
pub fn restore_overrun(
    lr: &mut Remote<'_>,
    r: Option<&mut Remote<'_>>,
    mem: &TaskMem,
    scratch: u64,
    pt: &pb::PosixTimerEntry,
    (peek_tid, shared): (Pid, bool),
    pending: bool,
    boot: Option<&str>,
) -> Result<bool> {
    let iv = ns(pt.isec, pt.insec);
    let n = pt.overrun as u64;
    let mut r = r;
    // The count comes out one too high when the task takes the signal a
    // whole period late (a loaded machine): then the trick is done again.
    for attempt in 1..=OVERRUN_ATTEMPTS {
        let ahead = if pending {
            PENDING_AHEAD_NS.min(iv)
        } else {
            time_left_now(pt, boot).clamp(MIN_AHEAD_NS.min(iv), iv)
        };
        let Some(now) = clock_now_ns(pt.clock_id as i32) else {
            return Ok(false);
        };
        let back = (n as u128 + 1) * iv as u128;
        let Some(t0) = (now as u128 + ahead as u128).checked_sub(back) else {
            return Ok(false);
        };
        let t0 = t0 as u64;
        mem.write(
            scratch + TIME_AT,
            &itimerspec_to_bytes(pt.isec, pt.insec, t0 / 1_000_000_000, t0 % 1_000_000_000),
        )?;
        lr.call(
            libc::SYS_timer_settime,
            &[
                pt.it_id as u64,
                libc::TIMER_ABSTIME as u64,
                scratch + TIME_AT,
                0,
            ],
            &format!("timer_settime of POSIX timer {} (overrun)", pt.it_id),
        )?;
        wait_queued(peek_tid, shared, pt.it_id)?;
        let (got, si, now_n) = match r.as_deref_mut() {
            Some(r) => take_signal(r, mem, scratch, pt)?,
            None => take_signal(lr, mem, scratch, pt)?,
        };
        if got != pt.si_signo as u64
            || si.code() != crate::ptrace::siginfo::SI_TIMER
            || si.timer_id() != pt.it_id as i32
        {
            return Err(Error::task(
                peek_tid,
                format!("POSIX timer {}", pt.it_id),
                format!("expected its signal back, took {}", si.describe()),
            ));
        }
        if now_n == n {
            break;
        }
        debug!(
            "POSIX timer {}: overrun count {now_n} instead of {n} (the task was slow to take the signal; attempt {attempt} of {OVERRUN_ATTEMPTS})",
            pt.it_id
        );
        if attempt < OVERRUN_ATTEMPTS {
            // Start over from a disarmed timer and an empty queue (only this
            // timer's signal can have that number yet, see above).
            mem.write(scratch + TIME_AT, &itimerspec_to_bytes(0, 0, 0, 0))?;
            lr.call(
                libc::SYS_timer_settime,
                &[pt.it_id as u64, 0, scratch + TIME_AT, 0],
                &format!("timer_settime of POSIX timer {} (disarm)", pt.it_id),
            )?;
            loop {
                let taken = match r.as_deref_mut() {
                    Some(r) => drain_one(r, mem, scratch, pt)?,
                    None => drain_one(lr, mem, scratch, pt)?,
                };
                if !taken {
                    break;
                }
            }
        }
    }
    if pending {
        wait_queued(peek_tid, shared, pt.it_id)?;
    }
    Ok(true)
}

/// Takes one queued signal of `pt`'s number, if there is one.
fn drain_one(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pt: &pb::PosixTimerEntry,
) -> Result<bool> {
    mem.write(scratch + SET_AT, &(1u64 << (pt.si_signo - 1)).to_ne_bytes())?;
    mem.write(scratch + TIMEOUT_AT, &[0u8; 16])?;
    let got = r.raw(
        libc::SYS_rt_sigtimedwait,
        &[scratch + SET_AT, scratch + INFO_AT, scratch + TIMEOUT_AT, 8],
    )?;
    Ok(got > 0)
}

/// rt_sigtimedwait for `pt`'s signal in the thread of `r`, then
/// timer_getoverrun: (signal, its siginfo, overrun count).
fn take_signal(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pt: &pb::PosixTimerEntry,
) -> Result<(u64, crate::ptrace::siginfo::Siginfo, u64)> {
    mem.write(scratch + SET_AT, &(1u64 << (pt.si_signo - 1)).to_ne_bytes())?;
    mem.write(scratch + TIMEOUT_AT, &[0u8; 16])?;
    let got = r.call(
        libc::SYS_rt_sigtimedwait,
        &[scratch + SET_AT, scratch + INFO_AT, scratch + TIMEOUT_AT, 8],
        &format!("rt_sigtimedwait for the signal of POSIX timer {}", pt.it_id),
    )?;
    let mut si = [0u8; crate::ptrace::siginfo::SIGINFO_SIZE];
    mem.read(scratch + INFO_AT, &mut si)?;
    let n = r.call(
        libc::SYS_timer_getoverrun,
        &[pt.it_id as u64],
        "timer_getoverrun",
    )?;
    Ok((got, crate::ptrace::siginfo::Siginfo(si), n))
}

/// Wait until a queue of `tid` holds the signal of POSIX timer `timer`.
///
/// A timer queues at most one signal at a time (later expiries only count
/// overruns), so its presence is what to wait for: a count taken before
/// arming can already include the signal on a loaded machine, and then
/// no second one ever comes.
pub fn wait_queued(tid: Pid, shared: bool, timer: u32) -> Result<()> {
    use crate::ptrace::siginfo::{peek_queue, SI_TIMER};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if peek_queue(tid, shared)?
            .iter()
            .any(|si| si.code() == SI_TIMER && si.timer_id() == timer as i32)
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::task(
                tid,
                format!("POSIX timer {timer}"),
                "armed to expire at once, its signal did not arrive within 2 s",
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Arm the POSIX timers with the time they had left (except those in
/// `fired`, already set up with their pending signal or overrun count),
/// then the interval timers.
pub fn arm(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
    fired: &std::collections::BTreeSet<u32>,
) -> Result<()> {
    let pid = t.pid;
    let Some(tt) = t.tc().timers.as_ref() else {
        return Ok(());
    };
    let boot = boot_id();
    for t in &tt.posix {
        if fired.contains(&t.it_id) || (t.isec, t.insec, t.vsec, t.vnsec) == (0, 0, 0, 0) {
            continue;
        }
        if t.overrun != 0 {
            debug!(
                "pid {pid}: POSIX timer {}: the overrun count {} of its last expiry cannot be restored (timer_getoverrun() says 0 until the next one)",
                t.it_id, t.overrun
            );
        }
        // The time since the dump counts when the clock's readings can be
        // compared (so an absolute deadline stays where it was); a
        // deadline that passed meanwhile expires at once.
        let (vsec, vnsec) = sec_nsec(time_left_now(t, boot.as_deref()));
        // A zero value with an interval leaves the timer disarmed but
        // remembers the interval, exactly as it was.
        mem.write(
            scratch + TIME_AT,
            &itimerspec_to_bytes(t.isec, t.insec, vsec, vnsec),
        )?;
        r.call(
            libc::SYS_timer_settime,
            &[t.it_id as u64, 0, scratch + TIME_AT, 0],
            &format!("timer_settime of POSIX timer {}", t.it_id),
        )?;
    }
    for (which, name, e) in [
        (ITIMER_REAL, "ITIMER_REAL", &tt.real),
        (ITIMER_VIRTUAL, "ITIMER_VIRTUAL", &tt.virt),
        (ITIMER_PROF, "ITIMER_PROF", &tt.prof),
    ] {
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
    Ok(())
}
