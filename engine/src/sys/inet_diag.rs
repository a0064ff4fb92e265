//! sock_diag for TCP: finding the connections of a port that are closed
//! but kept in TIME-WAIT, and dropping them (SOCK_DESTROY), so that a
//! restored listening socket can have its port again.

use nix::errno::Errno;
use std::net::IpAddr;

use super::netlink::{self, NLMSG_HDRLEN};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const TCP_TIME_WAIT: u32 = 6;
/// inet_diag_sockid: sport, dport, src[4], dst[4], if, cookie[2].
const SOCKID_LEN: usize = 48;

fn request(ty: u16, flags: u16, family: u8, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + 8 + SOCKID_LEN) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2
    b.push(family);
    b.push(libc::IPPROTO_TCP as u8);
    b.push(0);
    b.push(0);
    b.extend_from_slice(&(1u32 << TCP_TIME_WAIT).to_ne_bytes());
    b.extend_from_slice(id);
    b
}

/// The sockids of TIME-WAIT connections whose local end is `ip` (any
/// address if unspecified) and `port`, from a dump's replies.
fn matching(
    msgs: &[u8],
    ip: &IpAddr,
    port: u16,
    out: &mut Vec<[u8; SOCKID_LEN]>,
) -> nix::Result<bool> {
    netlink::walk(msgs, |body| {
        if body.len() < 4 + SOCKID_LEN {
            return;
        }
        let id: [u8; SOCKID_LEN] = body[4..4 + SOCKID_LEN].try_into().expect("length");
        let sport = u16::from_be_bytes([id[0], id[1]]);
        let src_ok = match ip {
            IpAddr::V4(a) if !a.is_unspecified() => id[4..8] == a.octets(),
            IpAddr::V6(a) if !a.is_unspecified() => id[4..20] == a.octets(),
            _ => true,
        };
        if sport == port && src_ok {
            out.push(id);
        }
    })
}

/// Drops the TIME-WAIT connections of local address `ip`:`port`; returns
/// how many there were.
pub fn destroy_time_wait(ip: IpAddr, port: u16) -> nix::Result<usize> {
    let nl = netlink::socket(libc::NETLINK_SOCK_DIAG)?;
    let family = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    netlink::send(
        &nl,
        &request(SOCK_DIAG_BY_FAMILY, flags, family, &[0; SOCKID_LEN]),
    )?;
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = netlink::recv(&nl, &mut buf)?;
        if n == 0 || matching(&buf[..n], &ip, port, &mut ids)? {
            break;
        }
    }
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    for id in &ids {
        netlink::send(&nl, &request(SOCK_DESTROY, flags, family, id))?;
        let n = netlink::recv(&nl, &mut buf)?;
        // The ack (an NLMSG_ERROR of code 0) or the error; a connection
        // gone meanwhile (ENOENT) is as good.
        match netlink::walk(&buf[..n], |_| {}) {
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(sport: u16, src: [u8; 4]) -> Vec<u8> {
        let mut b = Vec::new();
        let len = (NLMSG_HDRLEN + 72) as u32;
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&[libc::AF_INET as u8, 6, 0, 0]);
        let mut id = [0u8; SOCKID_LEN];
        id[0..2].copy_from_slice(&sport.to_be_bytes());
        id[4..8].copy_from_slice(&src);
        b.extend_from_slice(&id);
        b.extend_from_slice(&[0; 20]);
        b
    }

    #[test]
    fn time_wait_of_one_port() {
        let mut m = reply(80, [127, 0, 0, 1]);
        m.extend(reply(81, [127, 0, 0, 1]));
        m.extend(reply(80, [10, 0, 0, 1]));
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        m.extend(done);
        let mut ids = Vec::new();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(matching(&m, &lo, 80, &mut ids), Ok(true));
        assert_eq!(ids.len(), 1);
        ids.clear();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(matching(&m, &any, 80, &mut ids), Ok(true));
        assert_eq!(ids.len(), 2);
        assert_eq!(matching(&m[..10], &any, 80, &mut ids), Ok(false));
    }
}
