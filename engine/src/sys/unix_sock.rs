//! UNIX domain sockets as the kernel describes them: sock_diag (the one
//! place that tells a socket's peer inode and shutdown state), socket
//! options, and reading a receive queue without taking anything from it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use super::netlink::{self, u16_at, u32_at, NLMSG_HDRLEN};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
const UNIX_DIAG_MSG_LEN: usize = 16;

/// Whether `name` is one the kernel gave (autobind: an abstract name of
/// five hex digits, given on a bind with no name, or when a socket with
/// SO_PASSCRED sends). A restore has the kernel give one again, which is
/// another name: nobody could know it in advance anyway.
pub fn autobound(name: &[u8]) -> bool {
    name.len() == 6 && name[0] == 0 && name[1..].iter().all(|c| c.is_ascii_hexdigit())
}

/// One UNIX socket, as sock_diag reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixDiag {
    pub ino: u32,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET.
    pub r#type: u8,
    /// TCP_ESTABLISHED (1), TCP_CLOSE (7), TCP_LISTEN (10).
    pub state: u8,
    /// The peer's inode; None for no peer.
    pub peer: Option<u32>,
    /// The bound address (abstract ones start with a zero byte); None
    /// when unbound.
    pub name: Option<Vec<u8>>,
    /// Bytes queued for reception (stream, seqpacket: all of them;
    /// datagram: the first message only), and the send queue's length.
    pub rqlen: Option<(u32, u32)>,
    /// The inodes of the clients whose connections wait to be accepted (a
    /// listening socket), in the order accept() takes them.
    pub icons: Vec<u32>,
    /// The inode and device of the file a path-bound socket made.
    pub vfs: Option<(u32, u32)>,
    /// The socket's own shutdown bits (1 = receive, 2 = send).
    pub shutdown: u8,
}

/// The request for the one socket with inode `ino`.
pub fn unix_diag_request(ino: u32, seq: u32) -> Vec<u8> {
    request(libc::NLM_F_REQUEST as u16, u32::MAX, ino, seq)
}

/// `states`: a bit mask of the socket states asked for; `ino` is ignored
/// by a dump (NLM_F_DUMP).
fn request(flags: u16, states: u32, ino: u32, seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + 24) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // unix_diag_req
    b.push(libc::AF_UNIX as u8);
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&states.to_ne_bytes());
    b.extend_from_slice(&ino.to_ne_bytes());
    let show =
        UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    b.extend_from_slice(&show.to_ne_bytes());
    // No cookie: look the socket up by inode alone.
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b
}

/// The socket in a sock_diag reply: Ok(None) when the kernel has no UNIX
/// socket of that inode (ENOENT); Err(errno) for any other error; Err(EIO)
/// for a reply that does not parse.
pub fn parse_unix_reply(b: &[u8]) -> Result<Option<UnixDiag>, Errno> {
    let bad = Err(Errno::EIO);
    let Some(len) = u32_at(b, 0).map(|l| l as usize) else {
        return bad;
    };
    let Some(ty) = u16_at(b, 4) else { return bad };
    if len < NLMSG_HDRLEN || len > b.len() {
        return bad;
    }
    let b = &b[..len];
    if ty == libc::NLMSG_ERROR as u16 {
        let code = u32_at(b, NLMSG_HDRLEN)
            .map(|c| c as i32)
            .ok_or(Errno::EIO)?;
        return match -code {
            0 => bad,
            libc::ENOENT => Ok(None),
            e => Err(Errno::from_raw(e)),
        };
    }
    if ty != SOCK_DIAG_BY_FAMILY {
        return bad;
    }
    parse_unix_msg(&b[NLMSG_HDRLEN..]).map(Some)
}

/// One unix_diag_msg with its attributes (a reply's body).
fn parse_unix_msg(m: &[u8]) -> Result<UnixDiag, Errno> {
    if m.len() < UNIX_DIAG_MSG_LEN {
        return Err(Errno::EIO);
    }
    let mut d = UnixDiag {
        r#type: m[1],
        state: m[2],
        ino: u32_at(m, 4).ok_or(Errno::EIO)?,
        ..Default::default()
    };
    for (atype, v) in netlink::attrs(&m[UNIX_DIAG_MSG_LEN..])? {
        match atype {
            UNIX_DIAG_NAME => d.name = Some(v.to_vec()),
            UNIX_DIAG_PEER => d.peer = u32_at(v, 0).filter(|&p| p != 0),
            UNIX_DIAG_ICONS => {
                d.icons = v
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
                    .collect()
            }
            UNIX_DIAG_VFS => {
                d.vfs = Some((
                    u32_at(v, 0).ok_or(Errno::EIO)?,
                    u32_at(v, 4).ok_or(Errno::EIO)?,
                ))
            }
            UNIX_DIAG_RQLEN => {
                d.rqlen = Some((
                    u32_at(v, 0).ok_or(Errno::EIO)?,
                    u32_at(v, 4).ok_or(Errno::EIO)?,
                ))
            }
            UNIX_DIAG_SHUTDOWN => d.shutdown = v.first().copied().unwrap_or(0),
            _ => {}
        }
    }
    Ok(d)
}

/// The UNIX socket with inode `ino` in the engine's network namespace,
/// or None if there is none.
pub fn unix_diag(ino: u32) -> nix::Result<Option<UnixDiag>> {
    let nl = netlink::socket(libc::NETLINK_SOCK_DIAG)?;
    netlink::send(&nl, &unix_diag_request(ino, 1))?;
    let mut buf = vec![0u8; 16 << 10];
    let n = netlink::recv(&nl, &mut buf)?;
    parse_unix_reply(&buf[..n])
}

/// Every listening UNIX socket of the engine's network namespace, with
/// the connections waiting in its backlog.
pub fn unix_listeners() -> nix::Result<Vec<UnixDiag>> {
    let nl = netlink::socket(libc::NETLINK_SOCK_DIAG)?;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    netlink::send(&nl, &request(flags, 1 << 10, 0, 1))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = netlink::recv(&nl, &mut buf)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        let mut bad = Ok(());
        let done = netlink::walk(&buf[..n], |m| match parse_unix_msg(m) {
            Ok(d) => out.push(d),
            Err(e) => bad = Err(e),
        })?;
        bad?;
        if done {
            return Ok(out);
        }
    }
}

/// An int socket option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32) -> nix::Result<i32> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32, v: i32) -> nix::Result<()> {
    // SAFETY: the kernel reads one int from `v`.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// SO_SNDTIMEO / SO_RCVTIMEO as (seconds, microseconds).
pub fn getsockopt_timeval(fd: BorrowedFd<'_>, opt: i32) -> nix::Result<(u64, u64)> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `tv`.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    })?;
    Ok((tv.tv_sec as u64, tv.tv_usec as u64))
}

/// What came with one peeked message besides its bytes.
#[derive(Debug, Default)]
pub struct Ancillary {
    /// SCM_RIGHTS: copies of the files in flight, installed in the engine
    /// by the peek (close-on-exec); they close when dropped.
    pub rights: Vec<OwnedFd>,
    /// SCM_CREDENTIALS: (pid, uid, gid) of the sender.
    pub creds: Option<(i32, u32, u32)>,
    /// Any other control message (SCM_SECURITY...): its type.
    pub other: Vec<i32>,
    /// The control buffer was too small for all of it.
    pub truncated: bool,
}

/// One peek at the receive queue from the socket's peek offset: (bytes
/// copied into `buf`, the message's full length past the offset with
/// `trunc` (datagrams), the recvmsg flags, the ancillary data). EAGAIN
/// when nothing more is queued. The files in flight a peek installs in
/// the engine are given back as owned fds, to be named and closed.
pub fn peek_ancillary(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    trunc: bool,
) -> nix::Result<(usize, usize, i32, Ancillary)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for SCM_MAX_FD (253) fds and the credentials.
    let mut cbuf = vec![0u64; 512];
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len() * 8;
    // SAFETY: the kernel writes at most `buf.len()` bytes through the one
    // iovec and at most `msg_controllen` bytes of control messages into
    // `cbuf`, which has them.
    let n = Errno::result(unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_PEEK
                | libc::MSG_DONTWAIT
                | libc::MSG_CMSG_CLOEXEC
                | if trunc { libc::MSG_TRUNC } else { 0 },
        )
    })?;
    let mut anc = Ancillary {
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        ..Default::default()
    };
    // SAFETY: the CMSG_* walk stays within `msg_controllen` bytes of the
    // buffer the kernel filled; each payload is read unaligned, and every
    // fd of an SCM_RIGHTS message is fresh in the engine, owned here.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let len = (*c).cmsg_len as usize - (data as usize - c as usize);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..len / 4 {
                        let f = std::ptr::read_unaligned(data.cast::<i32>().add(i));
                        anc.rights.push(OwnedFd::from_raw_fd(f));
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                    if len >= std::mem::size_of::<libc::ucred>() =>
                {
                    let u = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    anc.creds = Some((u.pid, u.uid, u.gid));
                }
                (_, t) => anc.other.push(t),
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(((n as usize).min(buf.len()), n as usize, msg.msg_flags, anc))
}

/// A sockaddr_un holding `name` exactly as sock_diag gave it (a path,
/// with or without its terminating zero, or an abstract name starting
/// with a zero byte), and its length: binding with it gives the socket
/// that same name back.
fn sockaddr(name: &[u8]) -> nix::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() > a.sun_path.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    Ok((a, len as libc::socklen_t))
}

/// A connected pair of UNIX sockets of `type`, close-on-exec.
pub fn socketpair(r#type: i32) -> nix::Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0i32; 2];
    // SAFETY: the kernel writes two fds into `sv`; they are fresh and ours.
    unsafe {
        Errno::result(libc::socketpair(
            libc::AF_UNIX,
            r#type | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        ))?;
        Ok((OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])))
    }
}

/// A new UNIX socket of `type`, close-on-exec.
pub fn socket(r#type: i32) -> nix::Result<OwnedFd> {
    // SAFETY: socket takes integers; the fd is fresh and ours.
    Ok(unsafe {
        OwnedFd::from_raw_fd(Errno::result(libc::socket(
            libc::AF_UNIX,
            r#type | libc::SOCK_CLOEXEC,
            0,
        ))?)
    })
}

/// Bind to `name` (see [`sockaddr`]); an empty name asks the kernel for
/// an abstract one (autobind).
pub fn bind(fd: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let (a, len) = sockaddr(name)?;
    // SAFETY: the kernel reads `len` bytes of `a`, which has them.
    Errno::result(unsafe {
        libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len)
    })
    .map(drop)
}

pub fn connect(fd: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let (a, len) = sockaddr(name)?;
    // SAFETY: the kernel reads `len` bytes of `a`, which has them.
    Errno::result(unsafe {
        libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len)
    })
    .map(drop)
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> nix::Result<()> {
    // SAFETY: integers only.
    Errno::result(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// The next connection of a listening socket, close-on-exec, without
/// waiting.
pub fn accept(fd: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    // SAFETY: no address is asked for; the fd is fresh and ours.
    Ok(unsafe {
        OwnedFd::from_raw_fd(Errno::result(libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        ))?)
    })
}

/// Send `m` whole without waiting, to `to` if given (a datagram to a
/// bound socket), else to the peer.
pub fn send(fd: BorrowedFd<'_>, m: &[u8], to: Option<&[u8]>) -> nix::Result<()> {
    let addr = to.map(sockaddr).transpose()?;
    let (ptr, len) = match &addr {
        Some((a, l)) => ((a as *const libc::sockaddr_un).cast(), *l),
        None => (std::ptr::null(), 0),
    };
    let mut off = 0;
    loop {
        // SAFETY: the kernel reads `m.len() - off` bytes from `m[off..]`
        // and `len` bytes of the address, which are there.
        let n = Errno::result(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                m[off..].as_ptr().cast(),
                m.len() - off,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                ptr,
                len,
            )
        })? as usize;
        off += n;
        if off >= m.len() {
            return Ok(());
        }
        if n == 0 {
            return Err(Errno::EMSGSIZE);
        }
    }
}

/// Room for the control messages of one message: SCM_MAX_FD (253) fds
/// and the credentials, in 8-byte words.
const CMSG_WORDS: usize = 160;

/// Sends `m` whole (a stream: in as many pieces as it takes) with the
/// files `rights` in flight (SCM_RIGHTS) and the credentials `creds`
/// (pid, uid, gid: SCM_CREDENTIALS), both with the first piece, to `to`
/// if given. Allocates nothing, so a freshly cloned child can run it.
pub fn send_scm(
    fd: RawFd,
    m: &[u8],
    rights: &[RawFd],
    creds: Option<(i32, u32, u32)>,
    to: Option<&[u8]>,
) -> nix::Result<()> {
    if rights.len() > 253 {
        return Err(Errno::ETOOMANYREFS);
    }
    let addr = match to {
        Some(t) => Some(sockaddr(t)?),
        None => None,
    };
    let mut cbuf = [0u64; CMSG_WORDS];
    let mut clen = 0usize;
    // SAFETY: an all-zero msghdr is valid; the CMSG_* walk writes the
    // headers and payloads within `cbuf`, which has room for 253 fds and
    // one ucred (checked above), and sendmsg reads the iovec, the address
    // and `clen` bytes of `cbuf`, all of which live to its return.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        if !rights.is_empty() {
            let n = std::mem::size_of_val(rights) as u32;
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(n) as _;
            std::ptr::copy_nonoverlapping(
                rights.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                n as usize,
            );
            clen += libc::CMSG_SPACE(n) as usize;
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if let Some((pid, uid, gid)) = creds {
            let n = std::mem::size_of::<libc::ucred>() as u32;
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_CREDENTIALS;
            (*c).cmsg_len = libc::CMSG_LEN(n) as _;
            let u = libc::ucred { pid, uid, gid };
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>(), u);
            clen += libc::CMSG_SPACE(n) as usize;
        }
        let mut off = 0usize;
        loop {
            let mut iov = libc::iovec {
                iov_base: m[off..].as_ptr() as *mut libc::c_void,
                iov_len: m.len() - off,
            };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if let Some((a, l)) = &addr {
                msg.msg_name = (a as *const libc::sockaddr_un) as *mut libc::c_void;
                msg.msg_namelen = *l;
            }
            msg.msg_controllen = if off == 0 { clen } else { 0 };
            if msg.msg_controllen == 0 {
                msg.msg_control = std::ptr::null_mut();
            }
            let n = Errno::result(libc::sendmsg(
                fd,
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            ))? as usize;
            off += n;
            if off >= m.len() {
                return Ok(());
            }
            if n == 0 {
                return Err(Errno::EMSGSIZE);
            }
        }
    }
}

/// Receives one message into `buf` (blocking) with the files in flight
/// it carries (SCM_RIGHTS, close-on-exec) written to `rights`: (bytes,
/// fds). Fds beyond `rights.len()` the kernel closes (MSG_CTRUNC, given
/// as EMSGSIZE once the received ones are closed). Allocates nothing, so
/// a forked child of the engine can run it; the caller owns each fd.
pub fn recv_scm(fd: RawFd, buf: &mut [u8], rights: &mut [RawFd]) -> nix::Result<(usize, usize)> {
    let mut cbuf = [0u64; CMSG_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: the kernel writes at most `buf.len()` bytes through the one
    // iovec and at most `msg_controllen` bytes into `cbuf`, both alive
    // until it returns.
    let n = Errno::result(unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut got = 0usize;
    let mut lost = msg.msg_flags & libc::MSG_CTRUNC != 0;
    // SAFETY: the CMSG_* walk stays within the `msg_controllen` bytes of
    // `cbuf` the kernel filled; each fd is read unaligned, and every one
    // is fresh in this process: kept in `rights` or closed here.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let len = (*c).cmsg_len as usize - (data as usize - c as usize);
            if ((*c).cmsg_level, (*c).cmsg_type) == (libc::SOL_SOCKET, libc::SCM_RIGHTS) {
                for i in 0..len / 4 {
                    let f = std::ptr::read_unaligned(data.cast::<i32>().add(i));
                    match rights.get_mut(got) {
                        Some(slot) => {
                            *slot = f;
                            got += 1;
                        }
                        None => {
                            super::fd::close(f);
                            lost = true;
                        }
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if lost {
        for &f in &rights[..got] {
            super::fd::close(f);
        }
        return Err(Errno::EMSGSIZE);
    }
    Ok((n as usize, got))
}

/// The senders' pids of the messages queued on `sock` that start at the
/// byte offsets `offsets`, as a task of the pid namespace `pidns` sees
/// them (0: a sender that namespace does not see).
///
/// A receiver is told its sender's pid in its own pid namespace, and the
/// engine's peek answered in the engine's: a sender that has exited has no
/// /proc entry left to translate its pid by. So a grandchild of the engine
/// born into `pidns` peeks again, one byte at each offset (set with
/// SO_PEEK_OFF, which the caller puts back).
pub fn peek_pids_in(
    sock: BorrowedFd<'_>,
    pidns: BorrowedFd<'_>,
    offsets: &[i32],
) -> nix::Result<Vec<i32>> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Everything the children touch exists before the fork: the engine
    // may have threads, so they only make system calls.
    let mut cbuf = [0u64; CMSG_WORDS];
    let mut byte = [0u8; 1];
    // SAFETY: the child and its child only make system calls on memory
    // allocated before the fork (no allocation, no lock), then _exit.
    let child = Errno::result(unsafe { libc::fork() })?;
    if child == 0 {
        // SAFETY: as above; setns changes only where this child's
        // children are born.
        unsafe {
            if libc::setns(pidns.as_raw_fd(), libc::CLONE_NEWPID) != 0 {
                libc::_exit(Errno::last() as i32);
            }
            let gc = libc::fork();
            if gc < 0 {
                libc::_exit(Errno::last() as i32);
            }
            if gc == 0 {
                for &off in offsets {
                    let pid = peek_pid_at(sock.as_raw_fd(), off, &mut byte, &mut cbuf);
                    if pid < 0 {
                        libc::_exit(-pid);
                    }
                    let w = libc::write(wr.as_raw_fd(), (&pid as *const i32).cast(), 4);
                    if w != 4 {
                        libc::_exit(libc::EIO);
                    }
                }
                libc::_exit(0);
            }
            let mut status = 0;
            if libc::waitpid(gc, &mut status, 0) != gc || !libc::WIFEXITED(status) {
                libc::_exit(libc::ECHILD);
            }
            libc::_exit(libc::WEXITSTATUS(status));
        }
    }
    drop(wr);
    let mut got = Vec::with_capacity(offsets.len() * 4);
    let read = std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut got);
    let mut status = 0;
    // SAFETY: waits for the one child forked above.
    Errno::result(unsafe { libc::waitpid(child, &mut status, 0) })?;
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => {}
        (true, e) => return Err(Errno::from_raw(e)),
        _ => return Err(Errno::ECHILD),
    }
    read.map_err(|_| Errno::EIO)?;
    if got.len() != offsets.len() * 4 {
        return Err(Errno::EIO);
    }
    Ok(got
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// One byte peeked at offset `off` of `fd`'s queue: its sender's pid, 0
/// without credentials, or -errno. System calls only (see peek_pids_in).
///
/// # Safety
/// `byte` and `cbuf` are the caller's, alive for the call.
unsafe fn peek_pid_at(
    fd: RawFd,
    off: i32,
    byte: &mut [u8; 1],
    cbuf: &mut [u64; CMSG_WORDS],
) -> i32 {
    let off_len = std::mem::size_of::<i32>() as libc::socklen_t;
    if libc::setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PEEK_OFF,
        (&off as *const i32).cast(),
        off_len,
    ) != 0
    {
        return -(Errno::last() as i32);
    }
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(cbuf);
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    if libc::recvmsg(fd, &mut msg, flags) < 0 {
        return -(Errno::last() as i32);
    }
    let mut c = libc::CMSG_FIRSTHDR(&msg);
    while !c.is_null() {
        if ((*c).cmsg_level, (*c).cmsg_type) == (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) {
            return std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>()).pid;
        }
        c = libc::CMSG_NXTHDR(&msg, c);
    }
    0
}

/// [`send_scm`] with the credentials of `creds` (pid, uid, gid) as the
/// kernel lets them be sent: it takes another pid only if that pid
/// exists. So the message is sent by a short-lived child of the engine
/// made with that very pid (clone3 with set_tid), which exits at once:
/// the message keeps the pid, the pid is free again for the task the
/// restore makes with it, and a receiver reads that number. A pid in
/// use already (a process outside the tree) is sent as it is.
pub fn send_scm_as(
    fd: RawFd,
    m: &[u8],
    rights: &[RawFd],
    creds: (i32, u32, u32),
    to: Option<&[u8]>,
) -> nix::Result<()> {
    match super::clone3_with_pid(creds.0, 0, libc::SIGCHLD as u64) {
        Ok(0) => {
            let code = match send_scm(fd, m, rights, Some(creds), to) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            // SAFETY: the child of a fork leaves at once, running nothing
            // of the engine's (no atexit handlers, no buffers flushed).
            unsafe { libc::_exit(code) }
        }
        Ok(child) => {
            let mut status = 0;
            // SAFETY: waits for the one child made above.
            Errno::result(unsafe { libc::waitpid(child, &mut status, 0) })?;
            match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
                (true, 0) => Ok(()),
                (true, e) => Err(Errno::from_raw(e)),
                _ => Err(Errno::ECHILD),
            }
        }
        Err(Errno::EEXIST) => send_scm(fd, m, rights, Some(creds), to),
        Err(e) => Err(e),
    }
}

pub fn shutdown(fd: BorrowedFd<'_>, bits: i32) -> nix::Result<()> {
    let how = match bits & 3 {
        1 => libc::SHUT_RD,
        2 => libc::SHUT_WR,
        3 => libc::SHUT_RDWR,
        _ => return Ok(()),
    };
    // SAFETY: integers only.
    Errno::result(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
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

    fn ino(fd: RawFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    }

    #[test]
    fn files_in_flight_are_received_in_order_or_refused_whole() {
        let (a, b) = socketpair(libc::SOCK_SEQPACKET).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let sent = [r.as_raw_fd(), w.as_raw_fd(), r.as_raw_fd()];
        send_scm(a.as_raw_fd(), b"places", &sent, None, None).unwrap();
        let mut buf = [0u8; 16];
        let mut got = [-1; 4];
        let (n, k) = recv_scm(b.as_raw_fd(), &mut buf, &mut got).unwrap();
        assert_eq!((&buf[..n], k), (&b"places"[..], 3));
        for (s, g) in sent.iter().zip(&got) {
            assert_ne!(s, g, "a new fd");
            assert_eq!(ino(*s), ino(*g));
            super::super::fd::close(*g);
        }
        // More fds than room: none is left open in the receiver, so the
        // pipe hangs up once its write end here is closed.
        send_scm(a.as_raw_fd(), b"x", &sent, None, None).unwrap();
        let mut two = [-1; 2];
        let e = recv_scm(b.as_raw_fd(), &mut buf, &mut two).unwrap_err();
        assert_eq!(e, Errno::EMSGSIZE);
        drop(w);
        use std::os::fd::AsFd;
        let mut p = [nix::poll::PollFd::new(
            r.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut p, 2000u16).unwrap();
        let hup = p[0].revents().unwrap_or(nix::poll::PollFlags::empty());
        assert!(hup.contains(nix::poll::PollFlags::POLLHUP), "{hup:?}");
    }

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn reply(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn a_connected_socket_with_its_attributes() {
        let mut body = vec![libc::AF_UNIX as u8, libc::SOCK_SEQPACKET as u8, 1, 0];
        body.extend_from_slice(&1234u32.to_ne_bytes());
        body.extend_from_slice(&[0xff; 8]);
        body.extend(attr(UNIX_DIAG_PEER, &1235u32.to_ne_bytes()));
        let mut rq = 70u32.to_ne_bytes().to_vec();
        rq.extend_from_slice(&0u32.to_ne_bytes());
        body.extend(attr(UNIX_DIAG_RQLEN, &rq));
        body.extend(attr(UNIX_DIAG_SHUTDOWN, &[2]));
        let d = parse_unix_reply(&reply(SOCK_DIAG_BY_FAMILY, &body))
            .unwrap()
            .unwrap();
        assert_eq!(
            d,
            UnixDiag {
                ino: 1234,
                r#type: libc::SOCK_SEQPACKET as u8,
                state: 1,
                peer: Some(1235),
                name: None,
                rqlen: Some((70, 0)),
                icons: vec![],
                vfs: None,
                shutdown: 2,
            }
        );
    }

    #[test]
    fn a_bound_listening_socket() {
        let mut body = vec![libc::AF_UNIX as u8, libc::SOCK_STREAM as u8, 10, 0];
        body.extend_from_slice(&9u32.to_ne_bytes());
        body.extend_from_slice(&[0xff; 8]);
        body.extend(attr(UNIX_DIAG_NAME, b"/tmp/s"));
        let mut ic = 5u32.to_ne_bytes().to_vec();
        ic.extend_from_slice(&6u32.to_ne_bytes());
        body.extend(attr(UNIX_DIAG_ICONS, &ic));
        let d = parse_unix_reply(&reply(SOCK_DIAG_BY_FAMILY, &body))
            .unwrap()
            .unwrap();
        assert_eq!(d.name.as_deref(), Some(&b"/tmp/s"[..]));
        assert_eq!((d.state, d.icons, d.peer), (10, vec![5, 6], None));
    }

    #[test]
    fn errors_and_garbage() {
        let err = |e: i32| reply(libc::NLMSG_ERROR as u16, &(-e).to_ne_bytes());
        assert_eq!(parse_unix_reply(&err(libc::ENOENT)), Ok(None));
        assert_eq!(parse_unix_reply(&err(libc::EPERM)), Err(Errno::EPERM));
        assert_eq!(parse_unix_reply(&[1, 2, 3]), Err(Errno::EIO));
        let mut short = reply(SOCK_DIAG_BY_FAMILY, &[0; 8]);
        assert_eq!(parse_unix_reply(&short), Err(Errno::EIO));
        short[0] = 200;
        assert_eq!(parse_unix_reply(&short), Err(Errno::EIO));
        // An attribute longer than the message.
        let mut body = vec![1, 1, 1, 0, 1, 0, 0, 0];
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&[40, 0, 2, 0]);
        assert_eq!(
            parse_unix_reply(&reply(SOCK_DIAG_BY_FAMILY, &body)),
            Err(Errno::EIO)
        );
    }

    #[test]
    fn the_request_asks_for_one_inode() {
        let r = unix_diag_request(77, 3);
        assert_eq!(r.len(), 40);
        assert_eq!(u32_at(&r, 0), Some(40));
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(r[16], libc::AF_UNIX as u8);
        assert_eq!(u32_at(&r, 24), Some(77));
    }
}
