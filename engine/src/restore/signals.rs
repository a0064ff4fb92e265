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
//! Limits (documented, not fixable from user space): a re-queued SI_TIMER
//! signal is an ordinary queued signal, no longer the timer's own one, so
//! the timer may queue another signal for a later expiry instead of
//! counting an overrun into the pending one.

use crate::dump::signals::Siginfo;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::ptrace::Seized;

use super::load::TaskImages;

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

fn siginfos(q: Option<&pb::SignalQueueEntry>) -> Vec<Siginfo> {
    q.map(|q| {
        q.signals
            .iter()
            .filter_map(|s| Siginfo::from_bytes(&s.siginfo))
            .collect()
    })
    .unwrap_or_default()
}

/// Queue `q` from inside thread `tid` (of process `pid`): the thread's
/// own queue, or with `shared` the process-wide one (then `tid == pid`).
fn queue_all(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    pid: Pid,
    tid: Pid,
    q: &[Siginfo],
    shared: bool,
) -> Result<()> {
    for s in q {
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
                Error::Sys { errno, .. } if errno == nix::errno::Errno::EAGAIN => Error::task(
                    tid,
                    format!("pending {}", s.describe()),
                    "the kernel refused to queue it (EAGAIN: RLIMIT_SIGPENDING reached)",
                ),
                e => e,
            })?;
        debug!(
            "tid {tid}: queued ({}) {}",
            if shared { "shared" } else { "private" },
            s.describe()
        );
    }
    Ok(())
}

/// Queue every pending signal of the process again: each thread's private
/// queue from that thread, then the leader's private and the shared queue
/// from the leader. `threads` are the non-leader threads, in the order of
/// `t.threads`.
pub fn restore(
    task: &mut Seized,
    threads: &mut [Seized],
    syscall_ip: u64,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
) -> Result<()> {
    let pid = t.pid;
    for (th, (tid, core)) in threads.iter_mut().zip(&t.threads) {
        let q = siginfos(core.thread_core.as_ref().and_then(|c| c.signals_p.as_ref()));
        if q.is_empty() {
            continue;
        }
        let mut r = Remote::new(th, syscall_ip)?;
        queue_all(&mut r, mem, scratch, pid, *tid, &q, false)?;
        r.abandon();
    }
    let private = siginfos(t.thread().signals_p.as_ref());
    let shared = siginfos(t.tc().signals_s.as_ref());
    if private.is_empty() && shared.is_empty() {
        return Ok(());
    }
    let mut r = Remote::new(task, syscall_ip)?;
    queue_all(&mut r, mem, scratch, pid, pid, &private, false)?;
    queue_all(&mut r, mem, scratch, pid, pid, &shared, true)?;
    r.abandon();
    Ok(())
}
