//! Freezing tasks with ptrace and making them run system calls for us.
//!
//! `Seized` is one thread held in a ptrace stop, with the registers it had
//! when we stopped it; `Remote` is the one remote-syscall primitive that the
//! dump (sigactions, brk, prctl values, timers) and the restore (mmap,
//! mremap, credentials) both use.

pub mod mem;
pub mod regs;
pub mod remote;
pub mod rseq;
pub mod scratch;
pub mod siginfo;

use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;

use crate::error::{Error, Pid, Result, SysContext};
use crate::sys::ptrace as raw;

pub use raw::Regs;

/// `PTRACE_O_SUSPEND_SECCOMP`: remote syscalls must not be filtered by the
/// task's own seccomp policy. Needs CAP_SYS_ADMIN, which the engine has.
const O_SUSPEND_SECCOMP: i32 = 1 << 21;
const PTRACE_EVENT_STOP: i32 = 128;

/// How a thread was found when we stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Running or sleeping: we interrupted it.
    Running,
    /// It was in a job-control stop (SIGSTOP/SIGTSTP...) already.
    GroupStop,
}

/// A thread held in a ptrace stop by the engine.
#[derive(Debug)]
pub struct Seized {
    pub tid: Pid,
    pub regs: Regs,
    pub kind: StopKind,
    detached: bool,
}

fn npid(p: Pid) -> NixPid {
    NixPid::from_raw(p)
}

/// When freezing gives up (the dump's --timeout): a task in
/// uninterruptible sleep takes no stop until it wakes, which may be never.
/// None waits as long as it takes.
pub type Deadline = Option<Instant>;

/// The next wait status of `tid`, waiting no later than `deadline`. With
/// a deadline the wait polls (a blocking waitpid cannot be bounded without
/// a signal), briefly at first: a stop normally comes within microseconds.
fn wait_until(tid: Pid, deadline: Deadline) -> Result<WaitStatus> {
    let Some(end) = deadline else {
        return waitpid(npid(tid), Some(WaitPidFlag::__WALL))
            .ctx(tid, || "waiting for the ptrace stop".into());
    };
    let mut pause = Duration::from_micros(20);
    loop {
        let st = waitpid(npid(tid), Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG))
            .ctx(tid, || "waiting for the ptrace stop".into())?;
        if st != WaitStatus::StillAlive {
            return Ok(st);
        }
        if Instant::now() >= end {
            let state = crate::proc::stat::read(tid)
                .map(|s| format!("state {}", s.state))
                .unwrap_or_else(|_| "state unknown".into());
            return Err(Error::task(
                tid,
                "freeze",
                format!(
                    "the thread did not stop before the freeze timeout (--timeout) ran out \
                     ({state}; a task in uninterruptible sleep, D, stops only once it wakes)"
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Wait until `tid` is in a ptrace stop; signals that arrive first are
/// delivered (the task handles them) and we wait again, as CRIU does, so
/// that freezing never swallows a signal.
fn wait_event_stop(tid: Pid, deadline: Deadline) -> Result<StopKind> {
    for _ in 0..256 {
        let st = wait_until(tid, deadline)?;
        match st {
            WaitStatus::PtraceEvent(_, sig, ev) if ev == PTRACE_EVENT_STOP => {
                let kind = match sig {
                    Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU => {
                        StopKind::GroupStop
                    }
                    _ => StopKind::Running,
                };
                return Ok(kind);
            }
            WaitStatus::Stopped(_, sig) => {
                ptrace::cont(npid(tid), sig)
                    .ctx(tid, || format!("re-delivering {sig:?} while freezing"))?;
            }
            WaitStatus::PtraceEvent(_, _, _) | WaitStatus::PtraceSyscall(_) => {
                ptrace::cont(npid(tid), None).ctx(tid, || "continuing past an event".into())?;
            }
            WaitStatus::Exited(_, code) => {
                return Err(Error::task(
                    tid,
                    "freeze",
                    format!("task exited with status {code} while being frozen"),
                ))
            }
            WaitStatus::Signaled(_, sig, _) => {
                return Err(Error::task(
                    tid,
                    "freeze",
                    format!("task was killed by {sig:?} while being frozen"),
                ))
            }
            other => {
                return Err(Error::task(
                    tid,
                    "freeze",
                    format!("unexpected wait status {other:?}"),
                ))
            }
        }
    }
    Err(Error::task(
        tid,
        "freeze",
        "task keeps receiving signals; could not stop it",
    ))
}

/// `PF_KTHREAD` in /proc/PID/stat's flags.
const PF_KTHREAD: u32 = 0x0020_0000;

/// Why the kernel would not let us trace `tid`, in the user's terms: a bare
/// "PTRACE_SEIZE: EPERM" does not tell a kernel thread from pid 1, from
/// ckpt's own process inside the tree, or from a task another ckpt (or a
/// debugger) is already tracing.
fn seize_refused(tid: Pid, errno: nix::errno::Errno) -> Error {
    use crate::proc::{stat, status};
    let what = "PTRACE_SEIZE";
    if errno != nix::errno::Errno::EPERM {
        return Error::sys(tid, what, errno);
    }
    let me = std::process::id() as Pid;
    let st = status::read_task(tid, tid).ok();
    let tgid = st.as_ref().map_or(tid, |s| s.tgid);
    let reason = if tgid == me {
        "this is ckpt's own process: a tree that contains the dumping ckpt \
         (for example the shell it runs from) cannot be dumped"
            .to_string()
    } else if stat::read_task(tgid, tid).is_ok_and(|s| s.flags & PF_KTHREAD != 0) {
        "this is a kernel thread; only user processes can be dumped".to_string()
    } else if tgid == 1 {
        "this is the init process (pid 1) of ckpt's pid namespace, which the \
         kernel does not let anyone trace; dump a tree below it"
            .to_string()
    } else if let Some(tracer) = st.map(|s| s.tracer_pid).filter(|&t| t != 0) {
        let comm = stat::read(tracer).map(|s| s.comm).unwrap_or_default();
        let ours = std::fs::read_link(format!("/proc/{tracer}/exe")).ok()
            == std::fs::read_link("/proc/self/exe").ok();
        if ours {
            format!(
                "another ckpt (pid {tracer}) is dumping or restoring this tree; \
                 wait for it to finish"
            )
        } else {
            format!(
                "already traced by pid {tracer} ({comm}), a debugger or tracer; detach it first"
            )
        }
    } else {
        "the kernel refused to trace it (EPERM): check kernel.yama.ptrace_scope \
         and the security modules' policy"
            .to_string()
    };
    Error::task(tid, what, reason)
}

impl Seized {
    /// PTRACE_SEIZE + PTRACE_INTERRUPT one thread and wait for the stop.
    pub fn seize(tid: Pid) -> Result<Seized> {
        Self::seize_with(tid, ptrace::Options::empty())
    }

    /// Like `seize`, with extra ptrace options (the restore traces clones
    /// to catch the threads it creates).
    pub fn seize_with(tid: Pid, extra: ptrace::Options) -> Result<Seized> {
        Self::seize_until(tid, extra, None)
    }

    /// Like `seize_with`, giving up at `deadline` if the thread does not
    /// stop by then (the dump's --timeout).
    pub fn seize_until(tid: Pid, extra: ptrace::Options, deadline: Deadline) -> Result<Seized> {
        let opts = ptrace::Options::from_bits_retain(O_SUSPEND_SECCOMP) | extra;
        if let Err(e) = ptrace::seize(npid(tid), opts) {
            if e == nix::errno::Errno::EINVAL {
                ptrace::seize(npid(tid), extra).ctx(tid, || "PTRACE_SEIZE".into())?;
            } else {
                return Err(seize_refused(tid, e));
            }
        }
        let mut s = Seized {
            tid,
            regs: unsafe_zero_regs(),
            kind: StopKind::Running,
            detached: false,
        };
        ptrace::interrupt(npid(tid)).ctx(tid, || "PTRACE_INTERRUPT".into())?;
        s.kind = wait_event_stop(tid, deadline)?;
        s.regs = raw::get_regs(npid(tid)).ctx(tid, || "reading registers".into())?;
        Ok(s)
    }

    /// Sets the tracing options to `extra` (with PTRACE_O_SUSPEND_SECCOMP
    /// where the kernel takes it, as at the seize).
    pub fn set_options(&self, extra: ptrace::Options) -> Result<()> {
        let opts = ptrace::Options::from_bits_retain(O_SUSPEND_SECCOMP) | extra;
        match ptrace::setoptions(self.npid(), opts) {
            Err(nix::errno::Errno::EINVAL) => ptrace::setoptions(self.npid(), extra),
            r => r,
        }
        .ctx(self.tid, || "PTRACE_SETOPTIONS".into())
    }

    /// PTRACE_SEIZE + PTRACE_INTERRUPT without waiting: a task frozen by
    /// its freezer cgroup takes the stop only once the cgroup is thawed.
    /// Finish with [`Seized::wait_seized`].
    pub fn seize_nowait(tid: Pid) -> Result<()> {
        let opts = ptrace::Options::from_bits_retain(O_SUSPEND_SECCOMP);
        if let Err(e) = ptrace::seize(npid(tid), opts) {
            if e == nix::errno::Errno::EINVAL {
                ptrace::seize(npid(tid), ptrace::Options::empty())
                    .ctx(tid, || "PTRACE_SEIZE".into())?;
            } else {
                return Err(seize_refused(tid, e));
            }
        }
        ptrace::interrupt(npid(tid)).ctx(tid, || "PTRACE_INTERRUPT".into())
    }

    /// The second half of [`Seized::seize_nowait`]: wait for the stop.
    pub fn wait_seized(tid: Pid, deadline: Deadline) -> Result<Seized> {
        let kind = wait_event_stop(tid, deadline)?;
        let regs = raw::get_regs(npid(tid)).ctx(tid, || "reading registers".into())?;
        Ok(Seized {
            tid,
            regs,
            kind,
            detached: false,
        })
    }

    pub fn npid(&self) -> NixPid {
        npid(self.tid)
    }

    pub fn xstate(&self) -> Result<Vec<u8>> {
        raw::get_xstate(self.npid()).ctx(self.tid, || "reading the xsave area".into())
    }

    pub fn sigmask(&self) -> Result<u64> {
        raw::get_sigmask(self.npid()).ctx(self.tid, || "reading the blocked signal mask".into())
    }

    pub fn set_sigmask(&self, mask: u64) -> Result<()> {
        raw::set_sigmask(self.npid(), mask)
            .ctx(self.tid, || "setting the blocked signal mask".into())
    }

    pub fn set_regs(&mut self, regs: &Regs) -> Result<()> {
        raw::set_regs(self.npid(), regs).ctx(self.tid, || "setting registers".into())?;
        self.regs = *regs;
        Ok(())
    }

    pub fn set_xstate(&self, xstate: &[u8]) -> Result<()> {
        raw::set_xstate(self.npid(), xstate).ctx(self.tid, || "setting the xsave area".into())
    }

    /// Let the thread go on exactly where it was.
    pub fn detach(mut self) -> Result<()> {
        self.detached = true;
        ptrace::detach(self.npid(), None).ctx(self.tid, || "PTRACE_DETACH".into())
    }

    /// Forget the thread without touching it (it was killed, or died).
    pub fn forget(mut self) {
        self.detached = true;
    }
}

impl Drop for Seized {
    /// A seized thread is never left stopped by accident: an error path that
    /// drops it resumes it.
    fn drop(&mut self) {
        if !self.detached {
            let _ = ptrace::detach(self.npid(), None);
        }
    }
}

fn unsafe_zero_regs() -> Regs {
    // SAFETY: user_regs_struct is plain integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// All signals but SIGKILL and SIGSTOP (which cannot be blocked anyway).
pub const ALL_SIGNALS_BLOCKED: u64 = !((1u64 << (9 - 1)) | (1u64 << (19 - 1)));
