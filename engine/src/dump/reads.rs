//! What /proc tells of each frozen process, read once, before the tracer
//! thread takes the first task.
//!
//! The tree is frozen before anything is read, so what these files say
//! (a process's namespaces, its stat and status and each thread's, its
//! mappings, its auxiliary vector) stays what it is until the tree is let
//! go: reading them ahead gives what reading them as each process's turn
//! came gave. The namespace checks (`ns::TreeNs::check`: the links,
//! statuses and pid levels of every process) and every process's dump
//! take them from here; before, each process's namespace links were read
//! four times (95 us each for a p32 process) and its status twice.
//!
//! They are read on the calling thread. On the pool threads (measured on
//! p32, 2026-12-07) the dump took more system time than it saved: the
//! pages threads that came after them reused their malloc arenas and
//! released their 6 MiB copy buffers with madvise(MADV_DONTNEED) once a
//! process, each then faulted in again.

use std::collections::BTreeMap;

use crate::error::{Error, Pid, Result};
use crate::proc::{self, auxv, maps, stat, status};

use super::freeze::FrozenProc;

/// One live process's /proc files.
pub struct ProcReads {
    /// Its namespace links (kind -> inode), `*_for_children` included
    /// (`proc::ns::ns_ids`).
    pub ns: BTreeMap<String, u64>,
    pub stat: stat::Stat,
    pub status: status::Status,
    /// Its mappings with their smaps fields.
    pub smaps: Vec<maps::Vma>,
    pub auxv: Vec<(u64, u64)>,
    /// Each thread's stat and status, in the order of
    /// `FrozenProc::threads` (the leader first).
    pub threads: Vec<(stat::Stat, status::Status)>,
}

/// The reads of every live process of a frozen tree, by pid.
#[derive(Default)]
pub struct TreeReads(BTreeMap<Pid, ProcReads>);

impl TreeReads {
    /// Read every live process of `tree`, in its order (zombies have
    /// none of this to read; theirs are read where they are dumped).
    pub fn read(tree: &[FrozenProc]) -> Result<TreeReads> {
        let mut out = BTreeMap::new();
        for p in tree.iter().filter(|p| p.zombie.is_none()) {
            let pid = p.pid;
            let threads = p
                .threads
                .iter()
                .map(|t| Ok((stat::read_task(pid, t.tid)?, status::read_task(pid, t.tid)?)))
                .collect::<Result<_>>()?;
            let r = ProcReads {
                ns: proc::ns::ns_ids(pid)?.into_iter().collect(),
                stat: stat::read(pid)?,
                status: status::read(pid)?,
                smaps: maps::read_smaps(pid)?,
                auxv: auxv::read(pid)?,
                threads,
            };
            out.insert(pid, r);
        }
        Ok(TreeReads(out))
    }

    /// The reads of live process `pid` of the tree.
    pub fn of(&self, pid: Pid) -> Result<&ProcReads> {
        self.0.get(&pid).ok_or_else(|| not_read(pid))
    }

    /// A process's own reads, handed over to its dump.
    pub fn take(&mut self, pid: Pid) -> Result<ProcReads> {
        self.0.remove(&pid).ok_or_else(|| not_read(pid))
    }
}

fn not_read(pid: Pid) -> Error {
    Error::task(pid, "/proc reads", "internal: not read with its tree")
}
