//! userfaultfd ioctls for lazy restore (restore/lazy.rs), made from the
//! engine on a userfaultfd another task created: every ioctl acts on the
//! mm the userfaultfd was created for, whoever calls it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

const UFFD_API: u64 = 0xaa;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: u64 = 0xc018_aa3f;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
/// `_IOWR(0xAA, 0x03, struct uffdio_copy)`.
const UFFDIO_COPY: u64 = 0xc028_aa03;
/// `_IOWR(0xAA, 0x04, struct uffdio_zeropage)`.
const UFFDIO_ZEROPAGE: u64 = 0xc020_aa04;
/// `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: u64 = 0x8010_aa02;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// Features of a lazy restore's userfaultfd: the tree may fork (the child
/// gets its own userfaultfd), move (mremap), drop (MADV_DONTNEED) or unmap
/// memory that is not filled yet, and the engine must know to fill the
/// right addresses. EVENT_FORK needs CAP_SYS_PTRACE of whoever makes
/// this call.
pub const FEATURES: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);

/// `_IO(0xAA, 0x00)` on /dev/userfaultfd (Linux 6.1): a new userfaultfd
/// of the caller's mm, like userfaultfd(2) with the same flags, allowed
/// to whoever holds the device open (its mode is the check, made at the
/// open) rather than to CAP_SYS_PTRACE in the initial user namespace.
pub const USERFAULTFD_IOC_NEW: u64 = 0xaa00;

pub const EVENT_PAGEFAULT: u8 = 0x12;
pub const EVENT_FORK: u8 = 0x13;
pub const EVENT_REMAP: u8 = 0x14;
pub const EVENT_REMOVE: u8 = 0x15;
pub const EVENT_UNMAP: u8 = 0x16;

fn ioctl<T>(fd: BorrowedFd<'_>, req: u64, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: every caller passes the struct `req` encodes (its size is
    // part of the request number), a live exclusive borrow the kernel
    // reads and writes within its size.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    Errno::result(r).map(|_| ())
}

/// A userfaultfd of the caller's own mm through `dev`, an fd of
/// /dev/userfaultfd (USERFAULTFD_IOC_NEW; for `ckpt check`'s probe).
pub fn create_from_dev(dev: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: the request takes its argument by value (the flags), no
    // memory is passed; the returned fd is fresh and ours.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            USERFAULTFD_IOC_NEW as _,
            flags as libc::c_ulong,
        )
    };
    // SAFETY: a new fd the kernel just gave us, owned by no one else.
    Errno::result(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `userfaultfd(2)` of the caller's own mm (for `ckpt check`'s probe).
pub fn create(flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integer argument; the returned fd is fresh and ours.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    // SAFETY: a new fd the kernel just gave us, owned by no one else.
    Errno::result(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The API handshake with `features`.
pub fn api(fd: BorrowedFd<'_>, features: u64) -> Result<(), Errno> {
    let mut a = [UFFD_API, features, 0u64];
    ioctl(fd, UFFDIO_API, &mut a)
}

/// Register `[start, start+len)` for missing-page faults.
pub fn register_missing(fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = [start, len, UFFDIO_REGISTER_MODE_MISSING, 0u64];
    ioctl(fd, UFFDIO_REGISTER, &mut a)
}

/// UFFDIO_COPY of `src` to `dst` (page-aligned, whole pages): the bytes
/// copied, and the error that stopped the copy short if it did.
pub fn copy(fd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> (u64, Option<Errno>) {
    let mut a: [i64; 5] = [dst as i64, src.as_ptr() as i64, src.len() as i64, 0, 0];
    let r = ioctl(fd, UFFDIO_COPY, &mut a);
    (a[4].max(0) as u64, r.err())
}

/// UFFDIO_ZEROPAGE of `[start, start+len)`: as [`copy`].
pub fn zeropage(fd: BorrowedFd<'_>, start: u64, len: u64) -> (u64, Option<Errno>) {
    let mut a: [i64; 4] = [start as i64, len as i64, 0, 0];
    let r = ioctl(fd, UFFDIO_ZEROPAGE, &mut a);
    (a[3].max(0) as u64, r.err())
}

/// Wake the threads waiting on a fault in `[start, start+len)`.
pub fn wake(fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = [start, len];
    ioctl(fd, UFFDIO_WAKE, &mut a)
}

/// One `struct uffd_msg`: the event and its three argument words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub event: u8,
    pub arg: [u64; 3],
}

/// The messages waiting on `fd` (non-blocking: none is an empty list).
/// A fork message's new userfaultfd is taken by [`fork_fd`].
pub fn read_msgs(fd: BorrowedFd<'_>, out: &mut Vec<Msg>) -> Result<(), Errno> {
    let mut buf = [0u8; 32 * 64];
    loop {
        let n = match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        for m in buf[..n].chunks_exact(32) {
            let w = |i: usize| u64::from_ne_bytes(m[8 + i * 8..16 + i * 8].try_into().unwrap());
            out.push(Msg {
                event: m[0],
                arg: [w(0), w(1), w(2)],
            });
        }
        if n < buf.len() {
            return Ok(());
        }
    }
}

/// The userfaultfd of the new mm a fork message announces, which the read
/// installed in the caller's fd table.
pub fn fork_fd(m: &Msg) -> OwnedFd {
    // SAFETY: the kernel installed this fd for the reader of the message
    // (userfaultfd_fork_complete → resolve_userfault_fork); no one else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(m.arg[0] as u32 as i32) }
}

/// `pidfd_send_signal(2)` with no siginfo.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: integer arguments and a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    Errno::result(r).map(|_| ())
}
