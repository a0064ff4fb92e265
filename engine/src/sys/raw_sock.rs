//! Raw IP sockets that carry a whole packet, IP header included
//! (IPPROTO_RAW): how a restore hands the kernel a TCP segment that seems
//! to come from a connection's peer. Each packet carries a firewall mark,
//! so that the network lock lets it through.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

use super::inet_sock::{socket, to_raw};
use super::unix_sock::setsockopt_int;

/// Sends `packet` (its IP header first, of the version of `to`) to `to`
/// from a fresh raw socket marked `mark`.
pub fn send_ip_packet(packet: &[u8], to: IpAddr, mark: u32) -> nix::Result<()> {
    let family = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, mark as i32)?;
    let (ss, len) = to_raw(&SocketAddr::new(to, 0));
    // SAFETY: the kernel reads `packet.len()` bytes of `packet` and `len`
    // bytes of `ss`, an initialised sockaddr of that length.
    let n = Errno::result(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })? as usize;
    if n != packet.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}
