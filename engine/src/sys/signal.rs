//! Signals of the calling process, as a forked restore child handles them
//! (restore/child.rs): its mask, the SIGCHLDs that are the restore's, and
//! dying by a signal. Nothing here allocates.

/// Blocks every signal (until the engine sets the dumped mask).
pub fn block_all() {
    // SAFETY: sigprocmask with a full set of ours.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
}

/// Takes every pending SIGCHLD (blocked) off the queue, without waiting.
pub fn drain_sigchld() {
    // SAFETY: sigtimedwait with a zero timeout only dequeues.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) > 0 {}
    }
}

/// Ends the process the way wait status `status` says: killed by its
/// signal (default action, unblocked), or exited with its code.
pub fn die_like(status: i32) -> ! {
    // SAFETY: async-signal-safe calls in a process about to die.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}
