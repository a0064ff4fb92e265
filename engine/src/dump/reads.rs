//! What /proc tells of each frozen process, read once, on the pool
//! threads, before the tracer thread takes the first task.
//!
//! The tree is frozen before anything is read, so what these files say
//! (a process's namespaces, its stat and status and each thread's, its
//! mappings, its auxiliary vector) stays what it is until the tree is let
//! go: reading them ahead, all processes at once, gives what reading
//! them as each process's turn came gave. The namespace checks
//! (`ns::TreeNs::check`) and every process's dump take them from here,
//! where they read each file up to three times one process after the
//! other on the tracer thread before. The reads need no tracer, so they
//! run on `crate::pool`'s threads, beside each other; the results come
//! back in the tree's order, and of several failures the error is the
//! first process's.

use std::collections::BTreeMap;

use crate::error::{Pid, Result};
use crate::pool::Pool;
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

/// The reads of one job: a process's own files, or a share of its
/// threads' (a process of many threads is read by several threads).
enum Job {
    Proc(Pid),
    Threads(Pid, Vec<Pid>),
}

enum Got {
    Proc(Pid, Box<ProcReads>),
    Threads(Pid, Vec<(stat::Stat, status::Status)>),
}

/// Threads read per job: t64's 65 threads make 5 jobs.
const THREADS_PER_JOB: usize = 16;

impl TreeReads {
    /// Read every live process of `tree` (zombies have none of this to
    /// read; theirs are read where they are dumped).
    pub fn read(tree: &[FrozenProc]) -> Result<TreeReads> {
        let mut jobs = Vec::new();
        for p in tree.iter().filter(|p| p.zombie.is_none()) {
            jobs.push(Job::Proc(p.pid));
            let tids: Vec<Pid> = p.threads.iter().map(|t| t.tid).collect();
            for chunk in tids.chunks(THREADS_PER_JOB) {
                jobs.push(Job::Threads(p.pid, chunk.to_vec()));
            }
        }
        let threads = crate::pool::threads_for(jobs.len());
        let got = std::thread::scope(|scope| {
            let mut pool = Pool::new(scope, "reads", threads, run)?;
            for j in jobs {
                pool.submit(j)?;
            }
            pool.finish()
        })?;
        let mut out = BTreeMap::new();
        let mut threads: BTreeMap<Pid, Vec<_>> = BTreeMap::new();
        for g in got {
            match g {
                Got::Proc(pid, r) => {
                    out.insert(pid, *r);
                }
                Got::Threads(pid, t) => threads.entry(pid).or_default().extend(t),
            }
        }
        for (pid, t) in threads {
            if let Some(r) = out.get_mut(&pid) {
                r.threads = t;
            }
        }
        Ok(TreeReads(out))
    }

    /// The reads of live process `pid` of the tree.
    pub fn of(&self, pid: Pid) -> Result<&ProcReads> {
        self.0.get(&pid).ok_or_else(|| {
            crate::error::Error::task(pid, "/proc reads", "internal: not read with its tree")
        })
    }

    /// A process's own reads, handed over to its dump.
    pub fn take(&mut self, pid: Pid) -> Result<ProcReads> {
        self.0.remove(&pid).ok_or_else(|| {
            crate::error::Error::task(pid, "/proc reads", "internal: not read with its tree")
        })
    }
}

fn run(job: Job) -> Result<Got> {
    Ok(match job {
        Job::Proc(pid) => Got::Proc(
            pid,
            Box::new(ProcReads {
                ns: proc::ns::ns_ids(pid)?.into_iter().collect(),
                stat: stat::read(pid)?,
                status: status::read(pid)?,
                smaps: maps::read_smaps(pid)?,
                auxv: auxv::read(pid)?,
                threads: Vec::new(),
            }),
        ),
        Job::Threads(pid, tids) => Got::Threads(
            pid,
            tids.iter()
                .map(|&t| Ok((stat::read_task(pid, t)?, status::read_task(pid, t)?)))
                .collect::<Result<_>>()?,
        ),
    })
}
