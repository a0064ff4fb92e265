//! Network device ioctls (SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFMTU,
//! SIOCGIFINDEX) on a socket of the calling thread's network namespace:
//! the few link settings a network namespace of the tree's own has so far
//! (its loopback device, up or down).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// An `ifreq` naming `name` (truncated to IFNAMSIZ - 1 bytes).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req
}

fn ioctl(sock: BorrowedFd<'_>, req: libc::Ioctl, ifr: &mut libc::ifreq) -> nix::Result<()> {
    // SAFETY: every request used here reads or writes one `ifreq`, which
    // `ifr` is, for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    Errno::result(r).map(drop)
}

/// The IFF_* flags of device `name`.
pub fn flags(sock: BorrowedFd<'_>, name: &str) -> nix::Result<u32> {
    let mut r = ifreq(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { r.ifr_ifru.ifru_flags } as u16 as u32)
}

/// Sets the IFF_* flags of device `name`.
pub fn set_flags(sock: BorrowedFd<'_>, name: &str, flags: u32) -> nix::Result<()> {
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_flags = flags as u16 as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut r)
}

/// The MTU of device `name`.
pub fn mtu(sock: BorrowedFd<'_>, name: &str) -> nix::Result<u32> {
    let mut r = ifreq(name);
    ioctl(sock, libc::SIOCGIFMTU, &mut r)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { r.ifr_ifru.ifru_mtu } as u32)
}

/// The interface index of device `name`.
pub fn index(sock: BorrowedFd<'_>, name: &str) -> nix::Result<u32> {
    let mut r = ifreq(name);
    ioctl(sock, libc::SIOCGIFINDEX, &mut r)?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    Ok(unsafe { r.ifr_ifru.ifru_ifindex } as u32)
}

/// The IPv4 address of device `name` (SIOCGIFADDR), None without one.
pub fn ipv4_addr(sock: BorrowedFd<'_>, name: &str) -> nix::Result<Option<[u8; 4]>> {
    let mut r = ifreq(name);
    match ioctl(sock, libc::SIOCGIFADDR, &mut r) {
        Err(Errno::EADDRNOTAVAIL) => return Ok(None),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    // SAFETY: SIOCGIFADDR filled the addr member with a sockaddr_in.
    let sa = unsafe { r.ifr_ifru.ifru_addr };
    let data = sa.sa_data;
    Ok(Some([
        data[2] as u8,
        data[3] as u8,
        data[4] as u8,
        data[5] as u8,
    ]))
}

/// A datagram socket of the calling thread's network namespace, for the
/// ioctls above.
pub fn inet_dgram() -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    Errno::result(fd)?;
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
