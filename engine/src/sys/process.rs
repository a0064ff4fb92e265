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

/// The capabilities a file system filler needs to give files any owner,
/// mode and kind: CAP_CHOWN (0), CAP_DAC_OVERRIDE (1),
/// CAP_DAC_READ_SEARCH (2), CAP_FOWNER (3), CAP_FSETID (4) and
/// CAP_MKNOD (27) (linux/capability.h).
const FILLER_CAPS: u32 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 27;

/// Makes `cmd` run as `uid`:`gid` (no supplementary groups) with the
/// capabilities of [`FILLER_CAPS`] kept across its exec as ambient ones.
///
/// A file system that belongs to a user namespace takes no file from a
/// creator whose fsuid or fsgid it does not map (EOVERFLOW), and exec
/// resets the fsuid to the euid, so a filler such as tar(1) must run as an
/// id mapped there; the capabilities, which root loses when it changes its
/// uid, let it still give each file its recorded owner and mode.
pub fn run_as_with_file_caps(cmd: &mut std::process::Command, uid: u32, gid: u32) {
    use std::os::unix::process::CommandExt;
    let step = |r: libc::c_long| match r {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    };
    let closure = move || -> std::io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            Data {
                effective: FILLER_CAPS,
                permitted: FILLER_CAPS,
                inheritable: FILLER_CAPS,
            },
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        // SAFETY: raw system calls on integers and on `header` and `data`,
        // which live through the calls; nothing allocates (pre_exec).
        unsafe {
            step(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) as _)?;
            step(libc::setgroups(0, std::ptr::null()) as _)?;
            step(libc::setresgid(gid, gid, gid) as _)?;
            step(libc::setresuid(uid, uid, uid) as _)?;
            step(libc::syscall(libc::SYS_capset, &header, data.as_ptr()))?;
            for cap in 0..32 {
                if FILLER_CAPS & (1 << cap) != 0 {
                    step(libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    ) as _)?;
                }
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls, allocating nothing.
    unsafe { cmd.pre_exec(closure) };
}

/// Gives the memory malloc holds free back to the kernel (`malloc_trim`:
/// the top of the heap, and the free pages inside it): what the loader
/// freed (the image set it read, once the restore's copy of it is made)
/// would otherwise stay resident, and every task of a restore, a forked
/// copy of the engine, would copy its page tables at its fork and unmap
/// them again at its address space reset.
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases memory malloc itself holds free;
    // no live allocation moves or changes.
    unsafe { libc::malloc_trim(0) };
}
