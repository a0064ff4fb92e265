//! Stopping every thread of a process so that nothing changes under the
//! dump, and letting them all go (or killing them) afterwards.
//!
//! Threads can be created and can exit while we are seizing; the loop
//! seizes until a pass over /proc/PID/task finds no thread it has not
//! seized. A stopped thread cannot create threads, so the loop ends once
//! every live thread is held.

use std::collections::BTreeMap;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;

use crate::error::{Error, Pid, Result};
use crate::proc::{self, stat};
use crate::ptrace::{Deadline, Seized};

/// Upper bound on seize passes; each pass can only find threads created
/// by threads that were still running during the previous one.
const MAX_PASSES: usize = 64;

/// One process being frozen: the threads held, and those seized and
/// interrupted whose stop has not been collected yet.
///
/// Every thread is seized and interrupted before the engine waits for
/// any stop, in this process and in the others being frozen with it
/// (`freeze_tree_with`): a thread asleep (a futex wait) takes some time
/// to be woken into its stop, and waiting for each in turn added those
/// times up (t64: 65 of them).
struct Freezing {
    pid: Pid,
    held: BTreeMap<Pid, Seized>,
    /// Seized and interrupted, the stop to come.
    pending: Vec<Pid>,
    deadline: Deadline,
}

impl Freezing {
    /// Check the leader and start seizing it (or take it from `pre`).
    fn start(pid: Pid, pre: &mut BTreeMap<Pid, Seized>, deadline: Deadline) -> Result<Freezing> {
        let leader = stat::read(pid)?;
        if leader.state == 'Z' {
            let tids = proc::tids(pid).unwrap_or_default();
            return Err(Error::unsupported(
                pid,
                format!("main thread (threads {tids:?})"),
                "the main thread has exited (pthread_exit from main); processes with a zombie leader cannot be dumped",
            ));
        }
        let mut f = Freezing {
            pid,
            held: BTreeMap::new(),
            pending: Vec::new(),
            deadline,
        };
        f.take_or_seize(pre, pid)?;
        Ok(f)
    }

    /// Take a thread out of `pre` (seized already through its freezer
    /// cgroup) or start seizing it.
    fn take_or_seize(&mut self, pre: &mut BTreeMap<Pid, Seized>, tid: Pid) -> Result<()> {
        match pre.remove(&tid) {
            Some(s) => {
                self.held.insert(tid, s);
            }
            None => {
                Seized::seize_nowait(tid)?;
                self.pending.push(tid);
            }
        }
        Ok(())
    }

    /// Wait for the stops of the threads seized since the last call;
    /// the first error once every stop is in.
    fn collect(&mut self) -> Result<()> {
        let mut first_err = None;
        for tid in std::mem::take(&mut self.pending) {
            match Seized::wait_seized(tid, self.deadline) {
                Ok(s) => {
                    self.held.insert(tid, s);
                }
                // A thread that exited before its stop.
                Err(_) if tid != self.pid && !self.lists(tid) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Start seizing the threads /proc lists that are not held yet
    /// (every thread held being stopped); whether there were any.
    fn seize_new(&mut self, pre: &mut BTreeMap<Pid, Seized>) -> Result<bool> {
        let pid = self.pid;
        let mut new = false;
        for tid in proc::tids(pid)? {
            if self.held.contains_key(&tid) {
                continue;
            }
            match self.take_or_seize(pre, tid) {
                Ok(()) => new = true,
                // Exited between the listing and the seize.
                Err(_) if !self.lists(tid) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(new)
    }

    /// Whether the process still has thread `tid`.
    fn lists(&self, tid: Pid) -> bool {
        std::path::Path::new(&format!("/proc/{}/task/{tid}", self.pid)).exists()
    }

    fn endless(&self) -> Error {
        Error::task(
            self.pid,
            "freeze",
            format!(
                "threads keep appearing after {MAX_PASSES} passes; could not freeze the process"
            ),
        )
    }

    /// The threads, held and stopped, the leader first, then by TID.
    fn finish(mut self) -> Result<Vec<Seized>> {
        let pid = self.pid;
        let mut held = std::mem::take(&mut self.held);
        for t in held.values_mut() {
            undo_interrupt_eintr(pid, t)?;
        }
        let leader = held.remove(&pid).expect("leader is held");
        let mut out = vec![leader];
        out.extend(held.into_values());
        Ok(out)
    }
}

impl Drop for Freezing {
    /// A thread seized but not stopped yet cannot be detached: its stop
    /// is waited for first, then it is let go with the held ones (their
    /// Drop).
    fn drop(&mut self) {
        let _ = self.collect();
    }
}

/// System calls that Linux fails with EINTR when the thread is merely
/// stopped and resumed (signal(7): "interfaces that fail with EINTR after a
/// stop signal"), instead of restarting them as it does for most calls.
const EINTR_ON_STOP: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_io_getevents,
    333, // io_pgetevents
];

/// Our PTRACE_INTERRUPT is a stop, and for the calls above the kernel
/// answers a stop with EINTR. When no signal is there to be delivered, that
/// EINTR is ours alone: turn it back into "call it again", in the live
/// registers (so --leave-running and a failed dump don't leak it either) and
/// so in the dumped ones.
fn undo_interrupt_eintr(pid: Pid, t: &mut Seized) -> Result<()> {
    let r = t.regs;
    let nr = r.orig_rax as i64;
    if r.rax as i64 != -(libc::EINTR as i64) || !EINTR_ON_STOP.contains(&nr) {
        return Ok(());
    }
    let st = crate::proc::status::read_task(pid, t.tid)?;
    if (st.sig_pnd | st.shd_pnd) & !st.sig_blk != 0 {
        return Ok(()); // a real signal interrupted it: the EINTR is right
    }
    let mut n = r;
    n.rax = r.orig_rax;
    n.rip -= 2;
    n.orig_rax = u64::MAX;
    t.set_regs(&n)
}

/// SIGKILL the process; its threads are to be reaped ([`reap`]).
fn kill_frozen(threads: Vec<Seized>) -> Result<Vec<Pid>> {
    let Some(pid) = threads.first().map(|t| t.tid) else {
        return Ok(Vec::new());
    };
    kill(NixPid::from_raw(pid), Signal::SIGKILL)
        .map_err(|e| Error::sys(pid, "kill after dump", e))?;
    let tids: Vec<Pid> = threads.iter().map(|t| t.tid).collect();
    for t in threads {
        t.forget();
    }
    Ok(tids)
}

/// Consume the notifications of the deaths of a killed process's threads
/// (`tids`, the leader first), so its parent (not us) sees it exit.
fn reap(tids: &[Pid]) -> Result<()> {
    // Non-leaders first: the leader's exit is reported only after them.
    for &tid in tids.iter().skip(1).chain(tids.first()) {
        loop {
            match waitpid(NixPid::from_raw(tid), Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(..))
                | Ok(WaitStatus::Signaled(..))
                | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys(tid, "waiting for the dumped thread to die", e)),
            }
        }
    }
    Ok(())
}

/// Let every thread go on where it was.
pub fn thaw(threads: Vec<Seized>) -> Result<()> {
    let mut first_err = None;
    for t in threads.into_iter().rev() {
        if let Err(e) = t.detach() {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// One process of a frozen tree.
pub struct FrozenProc {
    pub pid: Pid,
    /// 0 for the root of the dump.
    pub ppid: Pid,
    /// Every thread, the leader first; empty for a zombie.
    pub threads: Vec<Seized>,
    /// A zombie's wait status (what its parent's waitpid will return).
    pub zombie: Option<u32>,
}

/// Freeze the tree rooted at `root`, parents before children: a frozen
/// process cannot fork, so once it is held its list of children is final.
pub fn freeze_tree(root: Pid) -> Result<Vec<FrozenProc>> {
    freeze_tree_with(root, &mut BTreeMap::new(), None)
}

/// [`freeze_tree`], taking threads already seized (through the freezer
/// cgroup) from `pre`; what is left in `pre` afterwards is not
/// part of the tree.
/// Threads that do not stop before `deadline` fail it (--timeout).
pub fn freeze_tree_with(
    root: Pid,
    pre: &mut BTreeMap<Pid, Seized>,
    deadline: Deadline,
) -> Result<Vec<FrozenProc>> {
    let mut out: Vec<FrozenProc> = Vec::new();
    // The engine's own processes: seizing the launcher that waits for us
    // would hang both.
    let own = [
        Some(std::process::id() as Pid),
        crate::dump::worker::launcher(),
    ];
    // A level of the tree at a time (the children of the processes
    // frozen so far), every thread of it seized before the first stop is
    // waited for; `out` is in the order of a walk of the tree breadth
    // first, as a level's children are taken in order.
    let mut level = vec![(root, 0)];
    while !level.is_empty() {
        match freeze_level(&level, root, &own, pre, deadline) {
            Ok(frozen) => out.extend(frozen),
            Err(e) => {
                // Leave everything as it was: detach what we hold.
                let _ = thaw_tree(out);
                return Err(e);
            }
        }
        let mut next = Vec::new();
        for p in out.iter().rev().take(level.len()).rev() {
            for t in &p.threads {
                next.extend(
                    proc::children(p.pid, t.tid)?
                        .into_iter()
                        .map(|c| (c, p.pid)),
                );
            }
        }
        level = next;
    }
    Ok(out)
}

/// A process of a level: a zombie's wait status, or a live process
/// being frozen.
enum Entry {
    Zombie(u32),
    Live(Freezing),
}

/// Freeze the processes `level` lists (pid, parent), in its order; on
/// failure, what this level held is let go.
fn freeze_level(
    level: &[(Pid, Pid)],
    root: Pid,
    own: &[Option<Pid>],
    pre: &mut BTreeMap<Pid, Seized>,
    deadline: Deadline,
) -> Result<Vec<FrozenProc>> {
    let mut procs: Vec<(Pid, Pid, Entry)> = Vec::new();
    for &(pid, ppid) in level {
        if own.contains(&Some(pid)) {
            return Err(Error::task(
                pid,
                "dump",
                "this is ckpt's own process: a tree that contains the dumping ckpt \
                 (for example the shell it runs from) cannot be dumped",
            ));
        }
        let st = stat::read(pid)?;
        if st.state == 'Z' && pid != root {
            procs.push((pid, ppid, Entry::Zombie(st.exit_code as u32)));
            continue;
        }
        // A task frozen by its cgroup would never stop (dump/cgroups.rs).
        crate::fault::abandoned(pid)?;
        crate::dump::cgroups::check_not_frozen(pid)?;
        let f = Freezing::start(pid, pre, deadline)?;
        procs.push((pid, ppid, Entry::Live(f)));
    }
    let mut done = vec![false; procs.len()];
    for _ in 0..MAX_PASSES {
        for (_, _, f) in procs.iter_mut() {
            if let Entry::Live(f) = f {
                f.collect()?;
            }
        }
        let mut new = false;
        for ((_, _, f), done) in procs.iter_mut().zip(done.iter_mut()) {
            if let (Entry::Live(f), false) = (f, *done) {
                *done = !f.seize_new(pre)?;
                new |= !*done;
            }
        }
        if !new {
            let mut out = Vec::with_capacity(procs.len());
            for (pid, ppid, f) in procs {
                out.push(match f {
                    Entry::Zombie(status) => FrozenProc {
                        pid,
                        ppid,
                        threads: Vec::new(),
                        zombie: Some(status),
                    },
                    Entry::Live(f) => FrozenProc {
                        pid,
                        ppid,
                        threads: f.finish()?,
                        zombie: None,
                    },
                });
            }
            return Ok(out);
        }
    }
    let stuck = procs
        .iter()
        .zip(&done)
        .find_map(|((_, _, f), done)| match f {
            Entry::Live(f) if !done => Some(f.endless()),
            _ => None,
        });
    Err(stuck.expect("a process still finding threads"))
}

/// Kill every process of the tree (children first) and consume the
/// notifications of their threads' deaths. Every process is sent its
/// SIGKILL before the first death is waited for, so that they tear down
/// their memory side by side (on every CPU) rather than one after the
/// other.
pub fn kill_tree(tree: Vec<FrozenProc>) -> Result<()> {
    let mut first_err = None;
    let mut dying = Vec::with_capacity(tree.len());
    for p in tree.into_iter().rev() {
        if p.zombie.is_none() {
            match kill_frozen(p.threads) {
                Ok(tids) => dying.push(tids),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    for tids in &dying {
        if let Err(e) = reap(tids) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Let every process of the tree go on (children first).
pub fn thaw_tree(tree: Vec<FrozenProc>) -> Result<()> {
    let mut first_err = None;
    for p in tree.into_iter().rev() {
        if let Err(e) = thaw(p.threads) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}
