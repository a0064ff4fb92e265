//! Pending signals of a restored process, queued again in dump order.
//!
//! Each siginfo is copied into the scratch page and queued by the task
//! itself through a remote syscall: `rt_sigqueueinfo(tgid)` from the
//! leader for the process-wide queue, `rt_tgsigqueueinfo(tgid, tid)` from
//! each thread for its private queue. The kernel refuses forged siginfos
//! (si_code >= 0, i.e. "sent by kill() or the kernel", and SI_TKILL) from
//! anyone but the receiving task itself, which is why every queue is
//! filled from inside its own thread. Every signal is blocked in the
//! restored task at that point (`Remote::new`), so nothing is delivered
//! before the final mask is set; one `rt_sigqueueinfo` per siginfo keeps
//! several instances of one real-time signal several, in their order.
//!
//! Called after the threads exist and before credentials are dropped (a
//! queued signal is charged to the receiver's user at queueing time, so
//! here to root, against the restored task's RLIMIT_SIGPENDING).
//!
//! A pending signal of a POSIX timer (SI_TIMER) is not forged: the timer
//! is made to expire so that the signal is the timer's own again (one per
//! timer; on delivery the kernel re-arms the timer and counts the missed
//! periods into si_overrun, as it would have). Only the signal of a
//! CPU-time clock timer, which cannot expire while the task is stopped,
//! is queued as a copy (an ordinary queued signal: the timer may then
//! queue a second one instead of counting an overrun).
//!
//! A stopped task is put into its group stop at the release
//! (`Restorer::release_task`), after the last remote call in it (the
//! credentials' release), since a remote call would take it out of it;
//! every signal is blocked for the moment, so that no pending signal is
//! delivered ([`enter_group_stop`]).

use std::collections::BTreeSet;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::ptrace::siginfo::{Siginfo, SI_TIMER};
use crate::ptrace::Seized;

use super::child::ChildPlan;
use super::load::{Images, TaskImages};
use super::stage::{EngineFds, Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::sys::KernelSigaction;

/// Signal handlers (set by the new task itself), pending signals and
/// timers, and the group stop of a task dumped stopped.
pub const KIND: Kind = Kind {
    name: "signals and timers",
    validate,
    new: |_: &Images, _: &RestoreOptions| Ok(Box::new(Signals)),
};

/// Every core image's pending signals and timers can be queued and armed.
fn validate(imgs: &Images) -> Result<()> {
    for t in &imgs.tasks {
        let cores =
            std::iter::once((t.pid, &t.core)).chain(t.threads.iter().map(|(tid, c)| (*tid, c)));
        for (tid, core) in cores {
            check_core(core).map_err(|why| imgs.bad(&format!("core-{tid}.img"), why))?;
        }
    }
    Ok(())
}

struct Signals;

impl Restorer for Signals {
    fn plan(
        &self,
        _imgs: &Images,
        t: &TaskImages,
        _fds: &EngineFds,
        plan: &mut ChildPlan,
    ) -> Result<()> {
        plan.sigactions = t
            .tc()
            .sigactions
            .iter()
            .enumerate()
            .filter_map(|(i, sa)| {
                // Entries are for signals 1..=64 without SIGKILL and SIGSTOP.
                let sig = sa_signal(i);
                (sa.sigaction != 0 || sa.flags != 0 || sa.mask != 0).then_some((
                    sig,
                    KernelSigaction {
                        handler: sa.sigaction,
                        flags: sa.flags,
                        restorer: sa.restorer,
                        mask: sa.mask,
                    },
                ))
            })
            .collect();
        Ok(())
    }

    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        match stage {
            // Queued again in order, then the timers; before credentials.
            TaskStage::Signals => restore(
                &mut cx.task,
                &mut cx.threads,
                cx.ip,
                &cx.mem,
                cx.scratch,
                cx.t,
            ),
            _ => Ok(()),
        }
    }

    fn release_task(&self, cx: &mut TaskCx<'_>) -> Result<()> {
        if cx.t.tc().task_state != crate::images::task::TASK_STOPPED {
            return Ok(());
        }
        // The final masks are set: block everything again while the task
        // takes its stop, so that it dequeues SIGSTOP and nothing else.
        let masks = std::iter::once(&cx.task)
            .chain(cx.threads.iter())
            .map(|th| {
                let m = th.sigmask()?;
                th.set_sigmask(crate::ptrace::ALL_SIGNALS_BLOCKED)?;
                Ok(m)
            })
            .collect::<Result<Vec<u64>>>()?;
        enter_group_stop(&mut cx.task, &mut cx.threads)?;
        for (th, m) in std::iter::once(&cx.task)
            .chain(cx.threads.iter())
            .zip(masks)
        {
            th.set_sigmask(m)?;
        }
        Ok(())
    }
}

/// Signal number of the i-th SaEntry (1..=64, skipping 9 and 19).
pub fn sa_signal(i: usize) -> i32 {
    let mut sig = 0;
    let mut n = 0;
    loop {
        sig += 1;
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        if n == i {
            return sig;
        }
        n += 1;
    }
}

/// Check one queue of an image (called by load.rs before anything runs).
pub fn check_queue(q: Option<&pb::SignalQueueEntry>) -> std::result::Result<(), String> {
    let Some(q) = q else { return Ok(()) };
    for (i, s) in q.signals.iter().enumerate() {
        let si = Siginfo::from_bytes(&s.siginfo).ok_or_else(|| {
            format!(
                "pending signal {i}: siginfo is {} bytes, expected 128",
                s.siginfo.len()
            )
        })?;
        si.check().map_err(|e| format!("pending signal {i}: {e}"))?;
    }
    Ok(())
}

/// Check the pending signals and timers of one core image.
pub fn check_core(core: &pb::CoreEntry) -> std::result::Result<(), String> {
    if let Some(tc) = &core.tc {
        check_queue(tc.signals_s.as_ref()).map_err(|e| format!("shared queue: {e}"))?;
        super::timers::check(tc.timers.as_ref())?;
    }
    if let Some(th) = &core.thread_core {
        check_queue(th.signals_p.as_ref()).map_err(|e| format!("private queue: {e}"))?;
    }
    Ok(())
}

fn siginfos(q: Option<&pb::SignalQueueEntry>) -> Vec<Siginfo> {
    q.map(|q| {
        q.signals
            .iter()
            .filter_map(|s| Siginfo::from_bytes(&s.siginfo))
            .collect()
    })
    .unwrap_or_default()
}

/// Queue one siginfo from inside thread `tid` (of process `pid`): into
/// the thread's own queue, or with `shared` the process-wide one (then
/// `tid == pid`).
fn queue_one(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pid: Pid,
    tid: Pid,
    s: &Siginfo,
    shared: bool,
) -> Result<()> {
    mem.write(scratch, &s.0)?;
    let (nr, args, what) = if shared {
        (
            libc::SYS_rt_sigqueueinfo,
            vec![pid as u64, s.signo() as u64, scratch],
            "rt_sigqueueinfo",
        )
    } else {
        (
            libc::SYS_rt_tgsigqueueinfo,
            vec![pid as u64, tid as u64, s.signo() as u64, scratch],
            "rt_tgsigqueueinfo",
        )
    };
    r.call(nr, &args, &format!("{what} of pending {}", s.describe()))
        .map_err(|e| match e {
            Error::Sys {
                errno: nix::errno::Errno::EAGAIN,
                ..
            } => Error::task(
                tid,
                format!("pending {}", s.describe()),
                "the kernel refused to queue it (EAGAIN: RLIMIT_SIGPENDING reached)",
            ),
            e => e,
        })?;
    Ok(())
}

/// The POSIX timer whose own signal `s` is, if the restore can make the
/// timer queue it again: an SI_TIMER siginfo of a dumped timer, with its
/// signal, aimed at this queue (the process, or the thread of a
/// SIGEV_THREAD_ID timer), of a clock that runs while the task is stopped.
fn own_timer<'a>(
    timers: &'a [pb::PosixTimerEntry],
    s: &Siginfo,
    tid: Pid,
    shared: bool,
) -> Option<&'a pb::PosixTimerEntry> {
    if s.code() != SI_TIMER {
        return None;
    }
    timers.iter().find(|pt| {
        pt.it_id as i32 == s.timer_id()
            && pt.si_signo as i32 == s.signo()
            && super::timers::fires_while_stopped(pt)
            && target(pt) == (if shared { None } else { Some(tid) })
    })
}

/// The thread a timer's signals go to (SIGEV_THREAD_ID), None for the
/// process.
fn target(pt: &pb::PosixTimerEntry) -> Option<Pid> {
    (pt.it_sigev_notify as i32 & libc::SIGEV_THREAD_ID != 0)
        .then(|| pt.notify_thread_id.unwrap_or(0))
}

/// What became of the timers while the queues are filled.
#[derive(Default)]
struct TimerState {
    /// Timers in their final state (not to be armed again).
    fired: BTreeSet<u32>,
    /// Timers whose own signal is pending again already (its entry in the
    /// queue is skipped once).
    pending: BTreeSet<u32>,
}

/// One queue, in order: plain siginfos are queued by the thread itself
/// (`r`); the own signal of a POSIX timer is made by the timer, armed to
/// expire at once from the leader (`lr`, or `r` when this is the leader).
#[allow(clippy::too_many_arguments)]
fn restore_queue(
    mut r: Option<&mut Remote<'_>>,
    lr: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pid: Pid,
    tid: Pid,
    q: &[Siginfo],
    shared: bool,
    timers: &[pb::PosixTimerEntry],
    st: &mut TimerState,
) -> Result<()> {
    let which = if shared { "shared" } else { "private" };
    for s in q {
        if let Some(pt) = own_timer(timers, s, tid, shared) {
            if st.pending.remove(&pt.it_id) {
                debug!(
                    "tid {tid}: ({which}) timer {} has its own {} pending already",
                    pt.it_id,
                    s.describe()
                );
                continue;
            }
            if st.fired.insert(pt.it_id) {
                super::timers::fire_now(lr, mem, scratch, pt)?;
                super::timers::wait_queued(tid, shared, pt.it_id)?;
                debug!(
                    "tid {tid}: ({which}) timer {} queued its own {}",
                    pt.it_id,
                    s.describe()
                );
                continue;
            }
            // A second SI_TIMER of one timer cannot be its own: a copy.
        }
        match r.as_deref_mut() {
            Some(r) => queue_one(r, mem, scratch, pid, tid, s, shared)?,
            None => queue_one(lr, mem, scratch, pid, tid, s, shared)?,
        }
        debug!("tid {tid}: queued ({which}) {}", s.describe());
    }
    Ok(())
}

/// The queue of thread `tid` (`shared`: the process's) in the image.
fn queue_of(t: &TaskImages, tid: Pid, shared: bool) -> Vec<Siginfo> {
    if shared {
        return siginfos(t.tc().signals_s.as_ref());
    }
    if tid == t.pid {
        return siginfos(t.thread().signals_p.as_ref());
    }
    t.threads
        .iter()
        .find(|(x, _)| *x == tid)
        .map(|(_, c)| siginfos(c.thread_core.as_ref().and_then(|c| c.signals_p.as_ref())))
        .unwrap_or_default()
}

/// Periodic timers get the overrun count of their last delivered expiry
/// back (restore/timers.rs `restore_overrun`), before any queue is filled
/// (the trick takes the timer's signal with rt_sigtimedwait).
#[allow(clippy::too_many_arguments)]
fn restore_overruns(
    lr: &mut Remote<'_>,
    threads: &mut [Seized],
    syscall_ip: u64,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
    timers: &[pb::PosixTimerEntry],
    st: &mut TimerState,
) -> Result<()> {
    let pid = t.pid;
    let boot = crate::proc::boot_id::boot_id();
    for pt in timers
        .iter()
        .filter(|pt| super::timers::overrun_restorable(pt))
    {
        let to = target(pt);
        let (tid, shared) = (to.unwrap_or(pid), to.is_none());
        let pending = queue_of(t, tid, shared)
            .iter()
            .any(|s| own_timer(timers, s, tid, shared).is_some_and(|o| o.it_id == pt.it_id));
        let done = if tid == pid {
            super::timers::restore_overrun(
                lr,
                None,
                mem,
                scratch,
                pt,
                (tid, shared),
                pending,
                boot.as_deref(),
            )?
        } else {
            let Some(th) = threads.iter_mut().find(|th| th.tid == tid) else {
                continue;
            };
            let mut r = Remote::new(th, syscall_ip)?;
            let done = super::timers::restore_overrun(
                lr,
                Some(&mut r),
                mem,
                scratch,
                pt,
                (tid, shared),
                pending,
                boot.as_deref(),
            )?;
            r.abandon();
            done
        };
        if done {
            debug!(
                "pid {pid}: POSIX timer {}: overrun count {} restored{}",
                pt.it_id,
                pt.overrun,
                if pending { ", its signal pending" } else { "" }
            );
            st.fired.insert(pt.it_id);
            if pending {
                st.pending.insert(pt.it_id);
            }
        }
    }
    Ok(())
}

/// Pending signals and timers of the restored process `t`, from inside it.
///
/// 1. The POSIX timers are created with their IDs, disarmed; periodic
///    ones get the overrun count of their last expiry back.
/// 2. Every queue is filled again in dump order: each thread's private
///    queue from that thread, then the leader's private and the shared
///    queue from the leader. A pending signal of a POSIX timer is not
///    forged: the timer is made to expire at once, so the signal is its
///    own again (one per timer, re-armed on delivery with the periods
///    missed counted in si_overrun, as before the dump). Timers of the
///    CPU-time clocks would not expire while the task is stopped; their
///    signal is queued as a copy.
/// 3. The other timers are armed with the time they had left, then the
///    interval timers (restore/timers.rs).
///
/// `threads` are the non-leader threads, in the order of `t.threads`.
pub fn restore(
    task: &mut Seized,
    threads: &mut [Seized],
    syscall_ip: u64,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
) -> Result<()> {
    let pid = t.pid;
    let timers: &[pb::PosixTimerEntry] = t.tc().timers.as_ref().map_or(&[], |tt| &tt.posix);
    let mut st = TimerState::default();
    let mut lr = Remote::new(task, syscall_ip)?;
    super::timers::create(&mut lr, mem, scratch, t)?;
    restore_overruns(
        &mut lr, threads, syscall_ip, mem, scratch, t, timers, &mut st,
    )?;
    for (th, (tid, core)) in threads.iter_mut().zip(&t.threads) {
        let q = siginfos(core.thread_core.as_ref().and_then(|c| c.signals_p.as_ref()));
        if q.is_empty() {
            continue;
        }
        let mut r = Remote::new(th, syscall_ip)?;
        restore_queue(
            Some(&mut r),
            &mut lr,
            mem,
            scratch,
            pid,
            *tid,
            &q,
            false,
            timers,
            &mut st,
        )?;
        r.abandon();
    }
    let private = siginfos(t.thread().signals_p.as_ref());
    let shared = siginfos(t.tc().signals_s.as_ref());
    restore_queue(
        None, &mut lr, mem, scratch, pid, pid, &private, false, timers, &mut st,
    )?;
    restore_queue(
        None, &mut lr, mem, scratch, pid, pid, &shared, true, timers, &mut st,
    )?;
    super::timers::arm(&mut lr, mem, scratch, t, &st.fired)?;
    lr.abandon();
    Ok(())
}

/// Put a restored process that was dumped stopped (TASK_STOPPED) into its
/// group stop now, while every signal is still blocked in it, before its
/// final mask and registers are set.
///
/// Sending SIGSTOP at the very end instead (and detaching) would let the
/// kernel deliver pending unblocked signals first: it dequeues by signal
/// number, so a pending SIGUSR1 would have its handler frame set up (and
/// leave the queue) before SIGSTOP stops the task. Here SIGSTOP is the only
/// signal that can be dequeued: the leader takes it (signal-delivery-stop),
/// gets it back from us and starts the group stop; every other thread
/// joins it. A tracer that detaches from a task in group stop leaves it
/// stopped, and on SIGCONT it first finishes the stop, then handles its
/// pending signals in the order the kernel always uses.
///
/// The parent is told about the stop (SIGCHLD with CLD_STOPPED unless it
/// set SA_NOCLDSTOP, and a report for waitpid(WUNTRACED)), as it was when
/// the task first stopped; the stop signal reported is SIGSTOP.
pub fn enter_group_stop(task: &mut Seized, threads: &mut [Seized]) -> Result<()> {
    use nix::sys::ptrace;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    const PTRACE_EVENT_STOP: i32 = 128;
    let pid = task.tid;
    nix::sys::signal::kill(task.npid(), Signal::SIGSTOP)
        .map_err(|e| Error::sys(pid, "SIGSTOP to enter the group stop", e))?;
    for th in std::iter::once(&*task).chain(threads.iter()) {
        let tid = th.tid;
        ptrace::cont(th.npid(), None)
            .map_err(|e| Error::sys(tid, "PTRACE_CONT into the group stop", e))?;
        loop {
            let st = waitpid(th.npid(), Some(WaitPidFlag::__WALL))
                .map_err(|e| Error::sys(tid, "waiting for the group stop", e))?;
            match st {
                // The leader dequeues SIGSTOP: let it act on it.
                WaitStatus::Stopped(_, Signal::SIGSTOP) => {
                    ptrace::cont(th.npid(), Some(Signal::SIGSTOP))
                        .map_err(|e| Error::sys(tid, "PTRACE_CONT with SIGSTOP", e))?;
                }
                WaitStatus::PtraceEvent(_, _, PTRACE_EVENT_STOP) => break,
                other => {
                    return Err(Error::task(
                        tid,
                        "group stop",
                        format!("unexpected wait status {other:?} while stopping the task"),
                    ))
                }
            }
        }
    }
    debug!("pid {pid}: in group stop");
    Ok(())
}
