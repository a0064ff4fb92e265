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

/// Every thread of `pid`, seized; the leader first, then by TID.
pub fn freeze_threads(pid: Pid) -> Result<Vec<Seized>> {
    freeze_threads_with(pid, &mut BTreeMap::new(), None)
}

/// Take a thread out of `pre` (seized already through its freezer cgroup)
/// or seize it now.
fn take_or_seize(pre: &mut BTreeMap<Pid, Seized>, tid: Pid, deadline: Deadline) -> Result<Seized> {
    match pre.remove(&tid) {
        Some(s) => Ok(s),
        None => Seized::seize_until(tid, nix::sys::ptrace::Options::empty(), deadline),
    }
}

fn freeze_threads_with(
    pid: Pid,
    pre: &mut BTreeMap<Pid, Seized>,
    deadline: Deadline,
) -> Result<Vec<Seized>> {
    let leader = stat::read(pid)?;
    if leader.state == 'Z' {
        let tids = proc::tids(pid).unwrap_or_default();
        return Err(Error::unsupported(
            pid,
            format!("main thread (threads {tids:?})"),
            "the main thread has exited (pthread_exit from main); processes with a zombie leader cannot be dumped",
        ));
    }
    let mut held: BTreeMap<Pid, Seized> = BTreeMap::new();
    held.insert(pid, take_or_seize(pre, pid, deadline)?);
    for _ in 0..MAX_PASSES {
        let mut new = false;
        for tid in proc::tids(pid)? {
            if held.contains_key(&tid) {
                continue;
            }
            match take_or_seize(pre, tid, deadline) {
                Ok(s) => {
                    held.insert(tid, s);
                    new = true;
                }
                // Exited between the listing and the seize.
                Err(_) if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() => {}
                Err(e) => return Err(e),
            }
        }
        if !new {
            for t in held.values_mut() {
                undo_interrupt_eintr(pid, t)?;
            }
            let leader = held.remove(&pid).expect("leader is held");
            let mut out = vec![leader];
            out.extend(held.into_values());
            return Ok(out);
        }
    }
    Err(Error::task(
        pid,
        "freeze",
        format!("threads keep appearing after {MAX_PASSES} passes; could not freeze the process"),
    ))
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

/// SIGKILL the process and consume the ptrace notifications of every
/// thread's death, so its parent (not us) sees it exit.
pub fn kill_frozen(threads: Vec<Seized>) -> Result<()> {
    let Some(pid) = threads.first().map(|t| t.tid) else {
        return Ok(());
    };
    kill(NixPid::from_raw(pid), Signal::SIGKILL)
        .map_err(|e| Error::sys(pid, "kill after dump", e))?;
    let tids: Vec<Pid> = threads.iter().map(|t| t.tid).collect();
    for t in threads {
        t.forget();
    }
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
    let mut queue = std::collections::VecDeque::from([(root, 0)]);
    // The engine's own processes: seizing the launcher that waits for us
    // would hang both.
    let own = [
        Some(std::process::id() as Pid),
        crate::dump::worker::launcher(),
    ];
    while let Some((pid, ppid)) = queue.pop_front() {
        if own.contains(&Some(pid)) {
            let _ = thaw_tree(out);
            return Err(Error::task(
                pid,
                "dump",
                "this is ckpt's own process: a tree that contains the dumping ckpt \
                 (for example the shell it runs from) cannot be dumped",
            ));
        }
        let st = stat::read(pid)?;
        if st.state == 'Z' && pid != root {
            out.push(FrozenProc {
                pid,
                ppid,
                threads: Vec::new(),
                zombie: Some(st.exit_code as u32),
            });
            continue;
        }
        // A task frozen by its cgroup would never stop (dump/cgroups.rs).
        let threads = match crate::fault::abandoned(pid)
            .and_then(|()| crate::dump::cgroups::check_not_frozen(pid))
            .and_then(|()| freeze_threads_with(pid, pre, deadline))
        {
            Ok(t) => t,
            Err(e) => {
                // Leave everything as it was: detach what we hold.
                let _ = thaw_tree(out);
                return Err(e);
            }
        };
        let mut children = Vec::new();
        for t in &threads {
            children.extend(proc::children(pid, t.tid)?);
        }
        out.push(FrozenProc {
            pid,
            ppid,
            threads,
            zombie: None,
        });
        queue.extend(children.into_iter().map(|c| (c, pid)));
    }
    Ok(out)
}

/// Kill every process of the tree (children first) and consume the
/// notifications of their threads' deaths.
pub fn kill_tree(tree: Vec<FrozenProc>) -> Result<()> {
    let mut first_err = None;
    for p in tree.into_iter().rev() {
        if p.zombie.is_none() {
            if let Err(e) = kill_frozen(p.threads) {
                first_err.get_or_insert(e);
            }
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
