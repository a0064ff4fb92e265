//! Netlink sockets: their addresses (port id and groups), the groups they
//! are members of, and binding one again.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;

fn name_of(fd: BorrowedFd<'_>, peer: bool) -> nix::Result<(u32, u32)> {
    // SAFETY: plain data, zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_nl).cast();
    // SAFETY: the kernel writes at most `len` bytes at `p`.
    Errno::result(unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    })?;
    Ok((a.nl_pid, a.nl_groups))
}

/// (port id, the first 32 groups) of the socket.
pub fn local(fd: BorrowedFd<'_>) -> nix::Result<(u32, u32)> {
    name_of(fd, false)
}

/// (port id, group) it is connected to; zeros when it is not.
pub fn peer(fd: BorrowedFd<'_>) -> nix::Result<(u32, u32)> {
    name_of(fd, true)
}

/// Every group it is a member of, as a bitmap of 32-bit words.
pub fn memberships(fd: BorrowedFd<'_>) -> nix::Result<Vec<u32>> {
    let mut words = vec![0u32; 8];
    loop {
        let mut len = (words.len() * 4) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `words` and
        // says in `len` how many it needs.
        Errno::result(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_LIST_MEMBERSHIPS,
                words.as_mut_ptr().cast(),
                &mut len,
            )
        })?;
        let need = (len as usize).div_ceil(4);
        if need <= words.len() {
            words.truncate(need);
            while words.last() == Some(&0) {
                words.pop();
            }
            return Ok(words);
        }
        words.resize(need, 0);
    }
}

/// Binds to `portid` with the first 32 groups of `groups`; then joins the
/// others one by one.
pub fn bind(fd: BorrowedFd<'_>, portid: u32, groups: &[u32]) -> nix::Result<()> {
    // SAFETY: plain data, zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_pid = portid;
    a.nl_groups = groups.first().copied().unwrap_or(0);
    // SAFETY: the kernel reads one sockaddr_nl from `a`.
    Errno::result(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    for (w, bits) in groups.iter().enumerate().skip(1) {
        for b in 0..32 {
            if bits & (1 << b) != 0 {
                let group = (w * 32 + b + 1) as i32;
                crate::sys::unix_sock::setsockopt_int(
                    fd,
                    SOL_NETLINK,
                    NETLINK_ADD_MEMBERSHIP,
                    group,
                )?;
            }
        }
    }
    Ok(())
}

/// Connects to (port id, group).
pub fn connect(fd: BorrowedFd<'_>, portid: u32, group: u32) -> nix::Result<()> {
    // SAFETY: plain data, zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_pid = portid;
    a.nl_groups = group;
    // SAFETY: the kernel reads one sockaddr_nl from `a`.
    Errno::result(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Takes the next message off the receive queue, whole, with its sender's
/// (port id, group); None when the queue is empty. Netlink cannot peek
/// past the first message, so reading the queue means taking it.
pub fn take(fd: BorrowedFd<'_>) -> nix::Result<Option<(Vec<u8>, u32, u32)>> {
    // SAFETY: a zero-length buffer; MSG_TRUNC makes the kernel say the
    // message's full length without writing any of it.
    let len = match Errno::result(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    }) {
        Err(Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
        Ok(n) => n as usize,
    };
    let mut buf = vec![0u8; len];
    // SAFETY: plain data, zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut alen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and at most
    // `alen` bytes into `a`.
    let got = Errno::result(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_DONTWAIT,
            (&mut a as *mut libc::sockaddr_nl).cast(),
            &mut alen,
        )
    })? as usize;
    buf.truncate(got);
    Ok(Some((buf, a.nl_pid, a.nl_groups)))
}

/// Queues `msg` on the socket bound to `portid` (the sender's own port id
/// when it sends to itself), without waiting for room.
pub fn send_to(fd: BorrowedFd<'_>, portid: u32, msg: &[u8]) -> nix::Result<()> {
    // SAFETY: plain data, zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_pid = portid;
    // SAFETY: the kernel reads `msg.len()` bytes of `msg` and one
    // sockaddr_nl from `a`.
    let n = Errno::result(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_DONTWAIT,
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })? as usize;
    if n != msg.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// A sockaddr_nl as bytes, as sk-queues.img keeps a message's sender.
pub fn addr_bytes(portid: u32, group: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&portid.to_ne_bytes());
    out.extend_from_slice(&group.to_ne_bytes());
    out
}
