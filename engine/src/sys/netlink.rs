//! Netlink requests to the kernel (sock_diag, nfnetlink, rtnetlink): the
//! socket, one send, one receive, the walk over the messages of a reply,
//! and the building of a request (header, attributes, nests), which every
//! netlink user of the engine needs the same way.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// The length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;

/// A netlink socket of `protocol` (NETLINK_SOCK_DIAG, NETLINK_NETFILTER).
pub fn socket(protocol: i32) -> nix::Result<OwnedFd> {
    // SAFETY: socket takes integers; the fd it returns is fresh and ours.
    let fd = Errno::result(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request to the kernel, whole.
pub fn send(fd: &OwnedFd, b: &[u8]) -> nix::Result<()> {
    // SAFETY: send reads `b.len()` bytes of `b`; no address: the kernel.
    let n = Errno::result(unsafe { libc::send(fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) })?;
    if n as usize != b.len() {
        return Err(Errno::EIO);
    }
    Ok(())
}

/// Receives one datagram of replies into `buf`.
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
    Errno::result(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
        .map(|n| n as usize)
}

/// A native-endian u32 at `at`, if `b` holds one there.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A native-endian u16 at `at`, if `b` holds one there.
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The attributes (type without its nested/byte-order bits, value) in
/// `a`, the tail of a message after its fixed part; EIO for one whose
/// length runs past the end.
pub fn attrs(mut a: &[u8]) -> nix::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while a.len() >= 4 {
        let len = u16_at(a, 0).ok_or(Errno::EIO)? as usize;
        let ty = u16_at(a, 2).ok_or(Errno::EIO)? & 0x3fff;
        if len < 4 || len > a.len() {
            return Err(Errno::EIO);
        }
        out.push((ty, &a[4..len]));
        a = &a[((len + 3) & !3).min(a.len())..];
    }
    Ok(out)
}

/// Calls `each` with the body (after the header) of every message in
/// `msgs`, one datagram of replies. Ok(true) once the reply is complete:
/// NLMSG_DONE, or an NLMSG_ERROR of code 0 (an acknowledgement); another
/// NLMSG_ERROR is its errno; a malformed message is EIO.
pub fn walk(msgs: &[u8], mut each: impl FnMut(&[u8])) -> nix::Result<bool> {
    walk_whole(msgs, |m| each(&m[NLMSG_HDRLEN..]))
}

/// As [`walk`], with every message whole (its header first): what a
/// dump keeps as the kernel gave it.
pub fn walk_whole(msgs: &[u8], mut each: impl FnMut(&[u8])) -> nix::Result<bool> {
    let mut m = msgs;
    while m.len() >= NLMSG_HDRLEN {
        let len = u32_at(m, 0).ok_or(Errno::EIO)? as usize;
        let ty = u16::from_ne_bytes([m[4], m[5]]);
        if len < NLMSG_HDRLEN || len > m.len() {
            return Err(Errno::EIO);
        }
        match ty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                return match u32_at(m, NLMSG_HDRLEN).ok_or(Errno::EIO)? as i32 {
                    0 => Ok(true),
                    code => Err(Errno::from_raw(-code)),
                };
            }
            _ => each(&m[..len]),
        }
        m = &m[((len + 3) & !3).min(m.len())..];
    }
    Ok(false)
}

/// The type of the whole message `m` (0 for one too short).
pub fn msg_type(m: &[u8]) -> u16 {
    u16_at(m, 4).unwrap_or(0)
}

/// A request being built: its header (length patched by [`Msg::done`]),
/// a fixed part, then attributes.
pub struct Msg {
    b: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A message of type `ty` with NLM_F_REQUEST and `flags`, sequence
    /// `seq`, its fixed part `fixed`.
    pub fn new(ty: u16, flags: u16, seq: u32, fixed: &[u8]) -> Msg {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        let mut m = Msg { b, nests: vec![] };
        m.raw(fixed);
        m
    }

    /// A copy of the whole message `whole` (as a dump gave it) turned into
    /// a request of type `ty` with `flags`, sequence `seq`.
    pub fn from_whole(whole: &[u8], ty: u16, flags: u16, seq: u32) -> Msg {
        let mut m = Msg::new(ty, flags, seq, &[]);
        m.raw(whole.get(NLMSG_HDRLEN..).unwrap_or(&[]));
        m
    }

    /// Appends `v`, padded to 4 bytes.
    fn raw(&mut self, v: &[u8]) {
        self.b.extend_from_slice(v);
        while self.b.len() % 4 != 0 {
            self.b.push(0);
        }
    }

    /// The bytes after the header so far (the fixed part, then attributes).
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.b[NLMSG_HDRLEN..]
    }

    /// Appends the attribute `ty` = `v`.
    pub fn attr(&mut self, ty: u16, v: &[u8]) -> &mut Msg {
        self.b
            .extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        self.b.extend_from_slice(&ty.to_ne_bytes());
        self.raw(v);
        self
    }

    /// Opens the nested attribute `ty`; [`Msg::end`] closes it.
    pub fn begin(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.b.len());
        self.b.extend_from_slice(&0u16.to_ne_bytes());
        self.b.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    /// Appends raw bytes inside an open nest (a fixed part in a nest,
    /// such as veth's peer ifinfomsg).
    pub fn fixed(&mut self, v: &[u8]) -> &mut Msg {
        self.raw(v);
        self
    }

    /// Closes the innermost open nest.
    pub fn end(&mut self) -> &mut Msg {
        if let Some(at) = self.nests.pop() {
            let len = (self.b.len() - at) as u16;
            self.b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The message, its length set.
    pub fn done(mut self) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end();
        }
        let len = self.b.len() as u32;
        self.b[0..4].copy_from_slice(&len.to_ne_bytes());
        self.b
    }
}

/// Sends `req` (a dump request) and returns every message of the reply,
/// whole, in order.
pub fn dump(fd: &OwnedFd, req: &[u8]) -> nix::Result<Vec<Vec<u8>>> {
    send(fd, req)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = recv(fd, &mut buf)?;
        if n == 0 || walk_whole(&buf[..n], |m| out.push(m.to_vec()))? {
            return Ok(out);
        }
    }
}

/// Sends `req` (with NLM_F_ACK) and waits for the kernel's answer: Ok
/// for its acknowledgement, its errno otherwise.
pub fn ack(fd: &OwnedFd, req: &[u8]) -> nix::Result<()> {
    send(fd, req)?;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = recv(fd, &mut buf)?;
        if n == 0 || walk(&buf[..n], |_| {})? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut b = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(body);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn bodies_then_done_ack_error_and_bad_length() {
        let mut m = msg(20, b"abc");
        m.extend(msg(20, b"defgh"));
        let mut seen = Vec::new();
        assert_eq!(walk(&m, |b| seen.push(b.to_vec())), Ok(false));
        assert_eq!(seen, [b"abc".to_vec(), b"defgh".to_vec()]);
        m.extend(msg(libc::NLMSG_DONE as u16, &[0; 4]));
        m.extend(msg(20, b"after"));
        seen.clear();
        assert_eq!(walk(&m, |b| seen.push(b.to_vec())), Ok(true));
        assert_eq!(seen.len(), 2, "nothing after NLMSG_DONE");
        let ack = msg(libc::NLMSG_ERROR as u16, &0i32.to_ne_bytes());
        assert_eq!(walk(&ack, |_| {}), Ok(true));
        let err = msg(libc::NLMSG_ERROR as u16, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(walk(&err, |_| {}), Err(Errno::ENOENT));
        let mut bad = msg(20, b"abcd");
        bad[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert_eq!(walk(&bad, |_| {}), Err(Errno::EIO));
    }

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut b = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(v);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn attributes_padded_nested_bit_cleared_and_bad_length() {
        let mut a = attr(1, b"abcde");
        a.extend(attr(0x8000 | 2, &7u32.to_ne_bytes()));
        a.extend(attr(3, b""));
        let got = attrs(&a).unwrap();
        assert_eq!(
            got,
            [
                (1, &b"abcde"[..]),
                (2, &7u32.to_ne_bytes()[..]),
                (3, &b""[..])
            ]
        );
        let mut bad = attr(1, b"ab");
        bad[0..2].copy_from_slice(&40u16.to_ne_bytes());
        assert_eq!(attrs(&bad), Err(Errno::EIO));
    }

    proptest::proptest! {
        #[test]
        fn walk_and_attrs_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = walk(&b, |m| { let _ = attrs(m); });
            let _ = attrs(&b);
        }
    }
}
