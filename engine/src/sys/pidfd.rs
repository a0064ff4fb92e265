//! pidfds of processes that are gone: what pidfs kept of how they died
//! (PIDFD_GET_INFO), and the stand-in process the restore makes so that a
//! new pidfd refers to a process that has died that way and was reaped.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `struct pidfd_info` as of Linux 6.13 (its first version, 64 bytes):
/// the kernel fills what the mask asks for and it knows.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)`: the size is part of
/// the number, and the kernel answers any size it knows.
const PIDFD_GET_INFO: u64 =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u64) << 16) | (0xFF << 8) | 11;

/// The wait(2) status the reaped process of `pidfd` died with, if the
/// kernel kept it (Linux 6.15 and later); None where it did not, or the
/// ioctl is unknown.
pub fn exit_status(pidfd: BorrowedFd<'_>) -> Option<i32> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most the size encoded in the request,
    // which is that of `info`, a live exclusive borrow.
    let r = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

/// Whether a process can die with the wait(2) status `status`: an exit
/// code or a fatal signal.
pub fn reproducible(status: i32) -> bool {
    libc::WIFEXITED(status) || libc::WIFSIGNALED(status)
}

/// A child of the engine that waits until `go` (the read end of a pipe
/// whose write end the caller holds) is readable, then dies
/// with `status` (exit code or signal); returns its pid. The caller opens
/// its pidfds, writes a byte (the child holds a copy of the write end, so
/// closing it is no signal) and reaps it.
///
/// Killed with the engine: it has PR_SET_PDEATHSIG SIGKILL.
pub fn fork_stand_in(status: i32, go: BorrowedFd<'_>) -> nix::Result<i32> {
    let go = go.as_raw_fd();
    // SAFETY: the child runs only async-signal-safe system calls (the
    // engine may have threads) and never returns from this function.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        return Errno::result(pid);
    }
    // SAFETY (the child, whole block): raw system calls on integers and a
    // stack buffer, then _exit; nothing of the engine's state is touched.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        let mut b = 0u8;
        while libc::read(go, (&mut b as *mut u8).cast(), 1) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            // No core file: the process this stands for dumped one or not.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
            libc::_exit(1);
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
}

/// [`open`], at fd `min` or the lowest free above it.
pub fn open_at_least(pid: i32, min: i32) -> nix::Result<OwnedFd> {
    let fd = open(pid, 0)?;
    let high = super::fd::dup_at_least(fd.as_raw_fd(), min)?;
    // SAFETY: a fresh fd F_DUPFD just gave us, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// `pidfd_open(2)` of `pid`, owned.
pub fn open(pid: i32, flags: u32) -> nix::Result<OwnedFd> {
    let fd = super::pidfd_open(pid, flags)?;
    // SAFETY: a fresh fd the kernel just gave us, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
