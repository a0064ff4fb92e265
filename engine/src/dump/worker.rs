//! The dump runs in a worker process, a child of the `ckpt` the user
//! started.
//!
//! While the engine holds a task it may be in the middle of a remote
//! system call: the task's registers point into its vDSO and a scratch
//! page is mapped in it. Should the tracer die then, the kernel lets the
//! task go as it is, and it dies of SIGTRAP or runs on with a foreign
//! mapping. So the process people and scripts kill (SIGKILL included) is
//! not the tracer: it only waits for the worker. The worker learns of its
//! death through PR_SET_PDEATHSIG, gives up at its next safe point
//! (`fault.rs`), puts every task back as it was, removes its temporary
//! directory and exits.

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getppid, ForkResult};

use crate::sys;

extern "C" fn on_launcher_gone(_sig: i32) {
    crate::fault::abandon();
}

/// Runs `work` in a worker process and returns its exit code; in the
/// worker, never returns. Must be called before the engine starts threads.
pub fn run(work: impl FnOnce() -> i32) -> i32 {
    let launcher = nix::unistd::getpid();
    match sys::fork_single_threaded() {
        // Without a worker the dump runs here, unprotected, rather than
        // not at all.
        Err(_) => work(),
        Ok(ForkResult::Child) => {
            sys::set_flag_handler(
                &[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP],
                on_launcher_gone,
            );
            let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as u64, 0, 0, 0);
            if getppid() != launcher {
                crate::fault::abandon();
            }
            std::process::exit(work())
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            }
        },
    }
}

/// The launcher of this worker, if the engine runs as one: a dump must not
/// take it (it would be seizing the process that waits for it).
pub fn launcher() -> Option<crate::error::Pid> {
    let me = nix::unistd::getpid();
    let parent = getppid();
    let exe = |p: nix::unistd::Pid| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    (exe(parent).is_some() && exe(parent) == exe(me)).then_some(parent.as_raw())
}
