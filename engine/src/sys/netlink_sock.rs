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

/// Whether anything is queued for reception (peeked, left there).
pub fn has_queued(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    let mut b = [0u8; 1];
    // SAFETY: the kernel writes at most one byte into `b`.
    match Errno::result(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    }) {
        Err(Errno::EAGAIN) => Ok(false),
        Err(e) => Err(e),
        Ok(_) => Ok(true),
    }
}
