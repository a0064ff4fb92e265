//! The vocabulary of inet_sk_entry: addresses as CRIU stores them (the
//! address bytes in network order, taken four at a time as native words),
//! and the kernel's TCP state numbers, which UDP sockets use too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::pb;

pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_FIN_WAIT1: u32 = 4;
pub const TCP_FIN_WAIT2: u32 = 5;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_CLOSE_WAIT: u32 = 8;
pub const TCP_LAST_ACK: u32 = 9;
pub const TCP_LISTEN: u32 = 10;
pub const TCP_CLOSING: u32 = 11;

/// Where a connection in `state` is in closing: whether its own FIN was
/// sent (or queued), whether the peer acknowledged it, and whether the
/// peer's FIN arrived. Each FIN takes a sequence number; tcp-stream
/// images count it as CRIU does (see `data_seqs`), and a restore makes
/// the FINs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fins {
    pub sent: bool,
    pub acked: bool,
    pub received: bool,
}

pub fn fins(state: u32) -> Fins {
    let sent = matches!(
        state,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_LAST_ACK | TCP_CLOSING
    );
    Fins {
        sent,
        acked: state == TCP_FIN_WAIT2,
        received: matches!(state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING),
    }
}

/// A tcp-stream entry of a connection in `state` with the sequence
/// numbers of its data alone, as a connection rebuilt in repair mode
/// (ESTABLISHED, before its FINs are made again) has them.
///
/// The image follows CRIU's convention (soccr's dump and restore): the
/// queues' sequence numbers are the kernel's, FINs counted (`inq_seq`
/// after the peer's FIN once it came, `outq_seq` after its own once
/// queued), while the lengths count data only (the FIN is taken out of
/// `outq_len` and `unsq_len` while it is in them), and the window is as
/// the kernel had it. So each FIN is one sequence number to take off
/// here; and a receive window last announced at the peer's FIN starts one
/// earlier, one wider, as the rebuilt socket has not taken the FIN yet
/// when its window is set.
pub fn data_seqs(state: u32, e: &pb::TcpStreamEntry) -> pb::TcpStreamEntry {
    let f = fins(state);
    let mut out = *e;
    if f.sent {
        out.outq_seq = e.outq_seq.wrapping_sub(1);
    }
    if f.received {
        out.inq_seq = e.inq_seq.wrapping_sub(1);
        if e.rcv_wup == Some(e.inq_seq) {
            out.rcv_wup = Some(out.inq_seq);
            out.rcv_wnd = e.rcv_wnd.map(|w| w.wrapping_add(1));
        }
    }
    out
}

/// The states of a connection that a dump takes and a restore makes:
/// established, and either side or both closed, until a FIN is sent and
/// acknowledged both ways.
pub fn is_synchronized(state: u32) -> bool {
    matches!(
        state,
        TCP_ESTABLISHED
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    )
}

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
    fn fins_of_the_closing_states() {
        let f = |sent, acked, received| Fins {
            sent,
            acked,
            received,
        };
        assert_eq!(fins(TCP_ESTABLISHED), f(false, false, false));
        assert_eq!(fins(TCP_FIN_WAIT1), f(true, false, false));
        assert_eq!(fins(TCP_FIN_WAIT2), f(true, true, false));
        assert_eq!(fins(TCP_CLOSE_WAIT), f(false, false, true));
        assert_eq!(fins(TCP_LAST_ACK), f(true, false, true));
        assert_eq!(fins(TCP_CLOSING), f(true, false, true));
        for st in [2, 3, 6, TCP_CLOSE, TCP_LISTEN] {
            assert!(!is_synchronized(st), "{}", state_name(st));
        }
        for st in [1, 4, 5, 8, 9, 11] {
            assert!(is_synchronized(st), "{}", state_name(st));
        }
    }

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
