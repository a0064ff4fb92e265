//! Pending signals: the process-wide (shared) queue goes into
//! `TaskCoreEntry.signals_s`, each thread's private queue into its
//! `ThreadCoreEntry.signals_p`, as raw 128-byte kernel `siginfo_t`s in
//! queue order, like CRIU stores them.
//!
//! The queues are read with `PTRACE_PEEKSIGINFO`, which copies siginfos
//! without dequeuing them, so a dump with `--leave-running` leaves the
//! queues exactly as they were. It works on any ptrace-stopped thread and
//! does not depend on the blocked mask, so the engine's own blocking of
//! signals during its remote calls does not change what is read.
//!
//! [`Siginfo`] and the peek itself are in ptrace/siginfo.rs, which the
//! restore uses too.

use crate::error::{Pid, Result};
use crate::images::pb;
use crate::ptrace::siginfo::{peek_queue, Siginfo};

/// The image form of a queue.
pub fn queue_entry(q: &[Siginfo]) -> pb::SignalQueueEntry {
    pb::SignalQueueEntry {
        signals: q
            .iter()
            .map(|s| pb::SiginfoEntry {
                siginfo: s.0.to_vec(),
            })
            .collect(),
    }
}

/// Read a queue and log what is in it.
pub fn dump_queue(tid: Pid, shared: bool) -> Result<pb::SignalQueueEntry> {
    let q = peek_queue(tid, shared)?;
    for s in &q {
        debug!(
            "tid {tid}: pending ({}) {}",
            if shared { "shared" } else { "private" },
            s.describe()
        );
    }
    Ok(queue_entry(&q))
}

/// Pending signals: the process-wide queue and each thread's own, read
/// after the remote calls so that a signal that arrived meanwhile is in.
pub const KIND: super::kind::Kind = super::kind::Kind {
    name: "pending signals",
    new: |_| Ok(Box::new(Signals)),
};

struct Signals;

impl super::kind::Dumper for Signals {
    fn task(&mut self, p: &mut super::kind::ProcCx<'_>) -> Result<()> {
        p.task_core.signals_s = Some(dump_queue(p.pid, true)?);
        for (tid, _, tc) in p.threads.iter_mut() {
            tc.signals_p = Some(dump_queue(*tid, false)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptrace::siginfo::SI_TKILL;

    #[test]
    fn queue_bytes() {
        let s = Siginfo::user(64, SI_TKILL, 1, 2, 0);
        let e = queue_entry(&[s, s]);
        assert_eq!(e.signals.len(), 2);
        assert_eq!(Siginfo::from_bytes(&e.signals[1].siginfo), Some(s));
    }
}
