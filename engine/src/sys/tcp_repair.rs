//! TCP repair mode (TCP_REPAIR and its companions): the kernel's way to
//! read a live connection's sequence numbers, queues and negotiated
//! options, and to make a socket that resumes one without a handshake.
//! A socket in repair mode sends nothing and, when closed, vanishes without
//! a FIN or a RST.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::sys::unix_sock::{getsockopt_int, setsockopt_int};

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// Which queue TCP_QUEUE_SEQ, a peek or a send refers to in repair mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    None = 0,
    Recv = 1,
    Send = 2,
}

/// Option codes of TCP_REPAIR_OPTIONS (the TCPOPT_* of the header).
pub const TCPOPT_MAXSEG: u32 = 2;
pub const TCPOPT_WINDOW: u32 = 3;
pub const TCPOPT_SACK_PERM: u32 = 4;
pub const TCPOPT_TIMESTAMP: u32 = 8;

/// TCPI_OPT_* bits of tcp_info's options.
pub const TCPI_OPT_TIMESTAMPS: u32 = 1;
pub const TCPI_OPT_SACK: u32 = 2;
pub const TCPI_OPT_WSCALE: u32 = 4;

/// Repair mode on (`true`) or off. Off sends a window probe, so the peer
/// learns the window at once.
pub fn set_repair(fd: BorrowedFd<'_>, on: bool) -> nix::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, on as i32)
}

pub fn set_queue(fd: BorrowedFd<'_>, q: Queue) -> nix::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, q as i32)
}

/// The sequence number after the selected queue's last byte.
pub fn queue_seq(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    getsockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ).map(|v| v as u32)
}

/// Where the selected queue starts (before a connect in repair mode).
pub fn set_queue_seq(fd: BorrowedFd<'_>, seq: u32) -> nix::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, seq as i32)
}

pub fn timestamp(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    getsockopt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP).map(|v| v as u32)
}

pub fn set_timestamp(fd: BorrowedFd<'_>, ts: u32) -> nix::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, ts as i32)
}

/// The options negotiated at the handshake, as (code, value) pairs.
pub fn set_options(fd: BorrowedFd<'_>, opts: &[(u32, u32)]) -> nix::Result<()> {
    let raw: Vec<u32> = opts.iter().flat_map(|&(c, v)| [c, v]).collect();
    // SAFETY: `raw` is an array of struct tcp_repair_opt {u32, u32},
    // `size_of_val` bytes long, only read by the kernel.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR_OPTIONS,
            raw.as_ptr().cast(),
            std::mem::size_of_val(raw.as_slice()) as libc::socklen_t,
        )
    })
    .map(drop)
}

/// struct tcp_repair_window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Window {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

pub fn window(fd: BorrowedFd<'_>) -> nix::Result<Window> {
    let mut w = Window::default();
    let mut len = std::mem::size_of::<Window>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `w`, plain data.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR_WINDOW,
            (&mut w as *mut Window).cast(),
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<Window>() {
        return Err(Errno::EIO);
    }
    Ok(w)
}

pub fn set_window(fd: BorrowedFd<'_>, w: &Window) -> nix::Result<()> {
    // SAFETY: `w` is a struct tcp_repair_window the kernel only reads.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR_WINDOW,
            (w as *const Window).cast(),
            std::mem::size_of::<Window>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn ioctl_int(fd: BorrowedFd<'_>, req: libc::c_ulong) -> nix::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int at the pointer.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v) })?;
    Ok(v as u32)
}

/// Bytes in the receive queue.
pub fn inq_len(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    ioctl_int(fd, libc::FIONREAD as libc::c_ulong)
}

/// Bytes in the send queue, sent or not.
pub fn outq_len(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    ioctl_int(fd, libc::TIOCOUTQ as libc::c_ulong)
}

/// Bytes of the send queue never sent.
pub fn unsent_len(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    ioctl_int(fd, SIOCOUTQNSD)
}

/// The first `len` bytes of the selected queue, left in it.
pub fn peek_queue(fd: BorrowedFd<'_>, len: usize) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    // SAFETY: the kernel writes at most `len` bytes into `buf`.
    let n = Errno::result(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    })? as usize;
    if n != len {
        return Err(Errno::EIO);
    }
    Ok(buf)
}

/// Send `m` once; how much the kernel took.
pub fn send_some(fd: BorrowedFd<'_>, m: &[u8]) -> nix::Result<usize> {
    // SAFETY: the kernel reads at most `m.len()` bytes of `m`.
    Errno::result(unsafe {
        libc::send(
            fd.as_raw_fd(),
            m.as_ptr().cast(),
            m.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
    .map(|n| n as usize)
}

/// TCP_MAXSEG: in repair mode, the MSS clamp the handshake agreed.
pub fn mss(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG).map(|v| v as u32)
}
