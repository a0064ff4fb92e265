//! The vocabulary of inet_sk_entry: addresses as CRIU stores them (the
//! address bytes in network order, taken four at a time as native words),
//! and the kernel's TCP state numbers, which UDP sockets use too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::pb;

pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_FIN_WAIT1: u32 = 4;
pub const TCP_FIN_WAIT2: u32 = 5;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_LISTEN: u32 = 10;

/// The state's name, as ss(8) prints it.
pub fn state_name(state: u32) -> String {
    let n = match state {
        1 => "ESTABLISHED",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        s => return format!("state {s}"),
    };
    n.to_string()
}

/// `ip` as inet_sk_entry's address words.
pub fn addr_words(ip: &IpAddr) -> Vec<u32> {
    let b: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    b.chunks(4)
        .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// The address of `family` in `words`; None if they do not make one.
pub fn ip_of(family: u32, words: &[u32]) -> Option<IpAddr> {
    let b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match (family as i32, b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        // CRIU leaves the address out of an unbound socket's entry.
        (libc::AF_INET, 0) => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        (libc::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        (libc::AF_INET6, 0) => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        _ => None,
    }
}

/// The socket's own address and, if it has one, its peer's.
pub fn addrs(i: &pb::InetSkEntry) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let port = |p: u32| u16::try_from(p).ok();
    let local = SocketAddr::new(ip_of(i.family, &i.src_addr)?, port(i.src_port)?);
    let peer = ip_of(i.family, &i.dst_addr)?;
    let dport = port(i.dst_port)?;
    let peer = (dport != 0 || !peer.is_unspecified()).then(|| SocketAddr::new(peer, dport));
    Some((local, peer))
}

/// "TCP", "UDP", with "v6" for INET6 as /proc/net names them.
pub fn proto_name(i: &pb::InetSkEntry) -> String {
    let p = match i.proto as i32 {
        libc::IPPROTO_TCP => "TCP".to_string(),
        libc::IPPROTO_UDP => "UDP".to_string(),
        p => format!("protocol {p}"),
    };
    match i.family as i32 {
        libc::AF_INET => format!("{p} over IPv4"),
        libc::AF_INET6 => format!("{p} over IPv6"),
        f => format!("{p} of family {f}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for ip in ["127.0.0.1", "::1", "fe80::1:2", "0.0.0.0"] {
            let ip: IpAddr = ip.parse().unwrap();
            let fam = if ip.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            assert_eq!(ip_of(fam as u32, &addr_words(&ip)), Some(ip));
        }
        assert_eq!(ip_of(libc::AF_INET as u32, &[1, 2]), None);
        // Network byte order in memory: 127.0.0.1 is 0x0100007f on x86.
        assert_eq!(addr_words(&"127.0.0.1".parse().unwrap()), [0x0100_007f]);
    }
}
