//! The calling process itself, as a forked restore child sets it up
//! (restore/child.rs): its end, its limits, its umask and personality,
//! its credentials, and waiting for a child without reaping it. Nothing
//! here allocates.

use nix::errno::Errno;

/// `_exit(2)`: ends the process at once, running nothing of the engine's
/// (no atexit handlers, no buffered output of the parent's copy).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Waits forever for a signal (every one blocked: until the engine,
/// which traces the process, moves it on).
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

/// `umask(2)`.
pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// `personality(2)`; the old one is of no use.
pub fn set_personality(p: u64) {
    // SAFETY: integer argument only.
    unsafe { libc::personality(p as libc::c_ulong) };
}

/// `setrlimit(2)` of resource `res`.
pub fn set_rlimit(res: u32, cur: u64, max: u64) -> nix::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: `lim` is a valid rlimit struct.
    Errno::result(unsafe { libc::setrlimit(res as _, &lim) }).map(drop)
}

/// The soft limit of RLIMIT_NOFILE raised to the hard one (no privilege
/// needed).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// setgroups, setresgid, setresuid, in that order (the uid last, while
/// the others still may be set); errors are left to what follows to show.
pub fn set_ids(uids: &[u32; 3], gids: &[u32; 3], groups: &[u32]) {
    // SAFETY: `groups` is valid for its length; integer syscalls.
    unsafe {
        libc::setgroups(groups.len(), groups.as_ptr());
        libc::setresgid(gids[0], gids[1], gids[2]);
        libc::setresuid(uids[0], uids[1], uids[2]);
    }
}

/// Whether child `pid` has exited, without reaping it (WNOWAIT): waits
/// for it unless `hang` is false.
pub fn exited_unreaped(pid: i32, hang: bool) -> nix::Result<bool> {
    let flags = libc::WEXITED | libc::WNOWAIT | if hang { 0 } else { libc::WNOHANG };
    // SAFETY: waitid into a zeroed siginfo of ours.
    let si = unsafe {
        let mut si: libc::siginfo_t = std::mem::zeroed();
        Errno::result(libc::waitid(libc::P_PID, pid as u32, &mut si, flags))?;
        si
    };
    // SAFETY: waitid filled in a SIGCHLD siginfo (or left it zeroed).
    Ok(unsafe { si.si_pid() } == pid)
}
