//! INET and INET6 sockets: addresses in and out of the kernel's sockaddr
//! form, the few calls a dump and a restore make on them (names, TCP
//! state, a peek at a datagram with its source), and making one again.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `addr` as the kernel takes it.
pub fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and
            // suitably aligned for it.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The address in the first `len` bytes of a sockaddr, if it is an INET
/// or INET6 one.
pub fn from_bytes(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?) as i32;
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET if b.len() >= 8 => {
            let ip: [u8; 4] = b[4..8].try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 if b.len() >= 28 => {
            let flow = u32::from_be_bytes(b[4..8].try_into().ok()?);
            let ip: [u8; 16] = b[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes(b[24..28].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// `addr` as the bytes of its sockaddr.
pub fn to_bytes(addr: &SocketAddr) -> Vec<u8> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` is `len` (at most its size) initialised bytes.
    unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    }
    .to_vec()
}

fn name_of(fd: BorrowedFd<'_>, peer: bool) -> nix::Result<Option<SocketAddr>> {
    // SAFETY: plain data, zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: the kernel writes at most `len` bytes at `p`.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    match Errno::result(r) {
        Err(Errno::ENOTCONN) => Ok(None),
        Err(e) => Err(e),
        Ok(_) => {
            let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: the kernel filled `n` bytes of `ss`.
            let b = unsafe {
                std::slice::from_raw_parts((&ss as *const libc::sockaddr_storage).cast::<u8>(), n)
            };
            from_bytes(b).map(Some).ok_or(Errno::EAFNOSUPPORT)
        }
    }
}

/// The socket's own address.
pub fn local_addr(fd: BorrowedFd<'_>) -> nix::Result<SocketAddr> {
    name_of(fd, false)?.ok_or(Errno::ENOTCONN)
}

/// The address it is connected to, None if none.
pub fn peer_addr(fd: BorrowedFd<'_>) -> nix::Result<Option<SocketAddr>> {
    name_of(fd, true)
}

/// What TCP_INFO tells about a TCP socket that the dump needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// The kernel's TCP state (TCP_ESTABLISHED = 1 ... TCP_LISTEN = 10).
    pub state: u8,
    /// Listening: connections waiting to be accepted.
    pub unaccepted: u32,
    /// Listening: the backlog listen() was given (capped by somaxconn).
    pub backlog: u32,
    /// TCPI_OPT_* bits agreed at the handshake.
    pub options: u8,
    /// Window scales: ours for sending, and for receiving.
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
}

pub fn tcp_info(fd: BorrowedFd<'_>) -> nix::Result<TcpInfo> {
    // struct tcp_info: state at 0, tcpi_unacked at 24, tcpi_sacked at 28
    // (a listening socket's accept queue and its backlog).
    let mut b = [0u8; 104];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `b`.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    if (len as usize) < 32 {
        return Err(Errno::EIO);
    }
    let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    Ok(TcpInfo {
        state: b[0],
        unaccepted: u32_at(24),
        backlog: u32_at(28),
        options: b[5],
        snd_wscale: b[6] & 0xf,
        rcv_wscale: b[6] >> 4,
    })
}

/// One datagram at the head of the receive queue (after the socket's peek
/// offset), left there: (bytes copied, its full length, its source).
pub fn peek_datagram(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, usize, Option<SocketAddr>)> {
    // SAFETY: plain data, zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_name = (&mut ss as *mut libc::sockaddr_storage).cast();
    mh.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    // SAFETY: the kernel writes at most iov_len bytes into `buf` and at
    // most msg_namelen into `ss`; nothing else is pointed to.
    let full = Errno::result(unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut mh,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    })? as usize;
    let n = (mh.msg_namelen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: the kernel filled `n` bytes of `ss`.
    let name = unsafe {
        std::slice::from_raw_parts((&ss as *const libc::sockaddr_storage).cast::<u8>(), n)
    };
    Ok((full.min(buf.len()), full, from_bytes(name)))
}

/// A new socket, close-on-exec.
pub fn socket(family: i32, r#type: i32, proto: i32) -> nix::Result<OwnedFd> {
    // SAFETY: socket takes integers; the fd is fresh and ours.
    let fd = Errno::result(unsafe { libc::socket(family, r#type | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new socket owned by `uid`/`gid` (its inode's owner, which
/// SO_REUSEPORT groups and sock_diag go by), made with the calling
/// thread's filesystem ids set to them for the one call.
pub fn socket_owned(
    uid: u32,
    gid: u32,
    family: i32,
    r#type: i32,
    proto: i32,
) -> nix::Result<OwnedFd> {
    // SAFETY: setfsuid/setfsgid take integers and return the previous
    // ids; they change only the calling thread's.
    let (old_uid, old_gid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, uid),
            libc::syscall(libc::SYS_setfsgid, gid),
        )
    };
    let r = socket(family, r#type, proto);
    // SAFETY: as above, back to what they were.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, old_gid);
        libc::syscall(libc::SYS_setfsuid, old_uid);
    }
    r
}

pub fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> nix::Result<()> {
    let (ss, len) = to_raw(addr);
    // SAFETY: the kernel reads `len` bytes of `ss`.
    Errno::result(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
    .map(drop)
}

pub fn connect(fd: BorrowedFd<'_>, addr: &SocketAddr) -> nix::Result<()> {
    let (ss, len) = to_raw(addr);
    // SAFETY: the kernel reads `len` bytes of `ss`.
    Errno::result(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
    .map(drop)
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> nix::Result<()> {
    // SAFETY: integers only.
    Errno::result(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// Sends one datagram to `to`, whole.
pub fn send_to(fd: BorrowedFd<'_>, m: &[u8], to: &SocketAddr) -> nix::Result<()> {
    let (ss, len) = to_raw(to);
    // SAFETY: the kernel reads `m.len()` bytes of `m` and `len` of `ss`.
    let n = Errno::result(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            m.as_ptr().cast(),
            m.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })?;
    if n as usize != m.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// SO_SNDTIMEO / SO_RCVTIMEO.
pub fn setsockopt_timeval(fd: BorrowedFd<'_>, opt: i32, sec: u64, usec: u64) -> nix::Result<()> {
    let tv = libc::timeval {
        tv_sec: sec as libc::time_t,
        tv_usec: usec as libc::suseconds_t,
    };
    // SAFETY: the kernel reads one timeval from `tv`.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for a in [
            "127.0.0.1:80",
            "0.0.0.0:0",
            "[::1]:65535",
            "[fe80::1%3]:7",
            "[::ffff:10.0.0.1]:9",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(from_bytes(&to_bytes(&a)), Some(a), "{a}");
        }
        assert_eq!(from_bytes(&[1, 0, 0, 0]), None);
        assert_eq!(from_bytes(&[]), None);
    }
}
