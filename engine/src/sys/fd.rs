//! File descriptors by number: what a forked restore child does to its
//! own fd table before it has any owned handle (restore/child.rs), where
//! nothing may allocate and every fd is a plain integer the child owns.
//! Wrong numbers can close or overwrite the wrong fd, never memory.

use std::ffi::CStr;
use std::os::fd::RawFd;

use nix::errno::Errno;

/// `open(2)` of `path` with `flags` (O_NOCTTY added): a new fd.
pub fn open(path: &CStr, flags: i32) -> nix::Result<RawFd> {
    // SAFETY: `path` is NUL-terminated; the fd returned is new.
    Errno::result(unsafe { libc::open(path.as_ptr(), flags | libc::O_NOCTTY) })
}

/// `fcntl(F_DUPFD)`: a copy of `fd` at `min` or the lowest free above.
pub fn dup_at_least(fd: RawFd, min: RawFd) -> nix::Result<RawFd> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_DUPFD, min) })
}

/// `dup2(2)`: `fd` again at `want`, closing what was there.
pub fn dup2(fd: RawFd, want: RawFd) -> nix::Result<RawFd> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe { libc::dup2(fd, want) })
}

/// `close(2)`, for an fd the caller owns and forgets; its error (only
/// EBADF or EINTR, after which the fd is gone anyway) is of no use.
pub fn close(fd: RawFd) {
    // SAFETY: integer argument only.
    unsafe { libc::close(fd) };
}

/// `setns(2)` into the namespace `fd` refers to (`nstype` a CLONE_NEW*
/// flag, or 0 for any).
pub fn setns(fd: RawFd, nstype: i32) -> nix::Result<()> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe { libc::setns(fd, nstype) }).map(drop)
}

/// Sets FD_CLOEXEC on `fd`.
pub fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// `sendfile(2)`: up to `len` bytes of file `file` from offset `off` out
/// on `out` (a socket: the kernel passes the file's pages to it, with no
/// copy into a buffer of ours); the bytes sent.
pub fn sendfile(out: RawFd, file: RawFd, off: u64, len: usize) -> nix::Result<usize> {
    let mut at = off as libc::off_t;
    // SAFETY: integer arguments and a pointer to our own off_t, which the
    // kernel advances.
    Errno::result(unsafe { libc::sendfile(out, file, &mut at, len) }).map(|n| n as usize)
}

/// `pipe(2)`: (read end, write end), both owned by the caller.
pub fn pipe() -> nix::Result<(RawFd, RawFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: pipe() fills the two-int array we pass.
    Errno::result(unsafe { libc::pipe(p.as_mut_ptr()) })?;
    Ok((p[0], p[1]))
}

/// Whether `fd` becomes readable (or hung up) within `ms` milliseconds.
pub fn poll_in(fd: RawFd, ms: i32) -> nix::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd of ours.
    Errno::result(unsafe { libc::poll(&mut pfd, 1, ms) }).map(|n| n > 0)
}

/// `read(2)` into `buf`: the bytes read, 0 at end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    Errno::result(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n as usize)
}

/// `write(2)` of `buf`: the bytes written.
pub fn write(fd: RawFd, buf: &[u8]) -> nix::Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
    Errno::result(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }).map(|n| n as usize)
}

/// `pwrite(2)` of `buf` at offset `off`.
pub fn pwrite(fd: RawFd, buf: &[u8], off: i64) -> nix::Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
    Errno::result(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) })
        .map(|n| n as usize)
}

/// Ownership of an fd the kernel just installed for the caller (one
/// received with SCM_RIGHTS), which nothing else owns.
pub fn own(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller passes an fd freshly installed for it and owned
    // by nothing else, so exactly one OwnedFd closes it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
