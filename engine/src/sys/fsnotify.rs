//! inotify and file handles: the calls libc has but nix does not wrap in
//! the form the dump and the restore need (a watch with a chosen number,
//! the inode behind a handle from fdinfo).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// `_IOW('I', 0, __s32)`: the number the next watch of an inotify
/// instance gets (CONFIG_CHECKPOINT_RESTORE).
const INOTIFY_IOC_SETNEXTWD: libc::c_ulong = 0x4004_4900;

/// The userspace dev_t (as stat gives it) of a kernel dev_t (as fdinfo
/// prints an inode's `sdev`: 12 bits of major, 20 of minor).
pub fn user_dev(sdev: u32) -> u64 {
    libc::makedev(sdev >> 20, sdev & 0xf_ffff)
}

/// Bytes queued for reading on `fd` (FIONREAD).
pub fn queued_bytes(fd: BorrowedFd<'_>) -> nix::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n)
}

/// The file a handle (from fdinfo's `f_handle`) names, opened O_PATH,
/// looked up on the filesystem `mount` is on.
pub fn open_by_handle(mount: BorrowedFd<'_>, r#type: i32, handle: &[u8]) -> nix::Result<OwnedFd> {
    #[repr(C)]
    struct FileHandle {
        bytes: u32,
        r#type: i32,
        f_handle: [u8; 128],
    }
    if handle.len() > 128 {
        return Err(Errno::EINVAL);
    }
    let mut fh = FileHandle {
        bytes: handle.len() as u32,
        r#type,
        f_handle: [0; 128],
    };
    fh.f_handle[..handle.len()].copy_from_slice(handle);
    // SAFETY: `fh` is a struct file_handle with room for MAX_HANDLE_SZ
    // bytes; the returned fd is fresh and ours.
    let fd = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut fh as *mut FileHandle,
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `inotify_init1(2)`; the fd is the caller's (a restored task's own fd).
pub fn inotify_init(flags: i32) -> nix::Result<RawFd> {
    // SAFETY: integer argument only.
    Errno::result(unsafe { libc::inotify_init1(flags) })
}

/// Adds a watch on `path` to the inotify instance `fd` under the number
/// `wd`, which a process may have kept (in a table, a log) and so must
/// get back. Fails with EEXIST if the instance watches the inode already
/// under another number.
pub fn inotify_add_watch_as(fd: RawFd, wd: i32, path: &CStr, mask: u32) -> nix::Result<()> {
    // SAFETY: the ioctl takes its argument by value; add_watch reads the
    // NUL-terminated `path`.
    Errno::result(unsafe { libc::ioctl(fd, INOTIFY_IOC_SETNEXTWD, wd as libc::c_ulong) })?;
    let got = Errno::result(unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) })?;
    if got != wd {
        return Err(Errno::EEXIST);
    }
    Ok(())
}

/// `fanotify_init(2)`; the fd is the caller's (a restored task's own fd).
pub fn fanotify_init(flags: u32, event_f_flags: u32) -> nix::Result<RawFd> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe { libc::fanotify_init(flags, event_f_flags) })
}

/// `fanotify_mark(2)` on `path` (absolute).
pub fn fanotify_mark(fd: RawFd, flags: u32, mask: u64, path: &CStr) -> nix::Result<()> {
    // SAFETY: reads the NUL-terminated `path`.
    Errno::result(unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, path.as_ptr()) })
        .map(drop)
}
