//! A bare TCP segment with its IP header, built byte by byte: what a
//! restore injects through a raw socket to make the kernel take a
//! connection's received FIN (or the ACK of its own) again, as if the peer
//! had sent it. TCP_REPAIR has no way to put a FIN in a receive queue, so
//! the connection's own state machine must see one arrive. Pure code: the
//! sending is `sys::raw_sock`.

use std::net::{IpAddr, SocketAddr};

pub const FIN: u8 = 0x01;
pub const ACK: u8 = 0x10;

/// What the segment says, from the peer's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The peer: the segment's source.
    pub from: SocketAddr,
    /// The restored socket: its destination.
    pub to: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The window field, as the peer scales it.
    pub window: u16,
}

/// `ip` as the packet carries it: a v4-mapped INET6 address is IPv4.
pub fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        ip => ip,
    }
}

/// The Internet checksum (RFC 1071) of `parts` taken as one run of
/// bytes: the ones' complement of the ones' complement sum of its 16-bit
/// big-endian words, an odd last byte padded with a zero. Each part but
/// the last must have an even length.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for p in parts {
        let mut words = p.chunks_exact(2);
        for w in &mut words {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        if let [last] = words.remainder() {
            sum += (*last as u32) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    !(sum as u16)
}

/// The TCP header of `s` (20 bytes, no options), its checksum over
/// `pseudo` (the pseudo-header of its IP version) filled in.
fn tcp_header(s: &Segment, pseudo: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&s.from.port().to_be_bytes());
    t.extend_from_slice(&s.to.port().to_be_bytes());
    t.extend_from_slice(&s.seq.to_be_bytes());
    t.extend_from_slice(&s.ack.to_be_bytes());
    t.push(5 << 4); // data offset: five words, no options
    t.push(s.flags);
    t.extend_from_slice(&s.window.to_be_bytes());
    t.extend_from_slice(&[0, 0]); // checksum, below
    t.extend_from_slice(&[0, 0]); // urgent pointer
    let c = checksum(&[pseudo, &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// The whole packet, IP header first; None if the two addresses are not
/// of one IP version.
pub fn packet(s: &Segment) -> Option<Vec<u8>> {
    const TCP_LEN: u16 = 20;
    match (plain(s.from.ip()), plain(s.to.ip())) {
        (IpAddr::V4(f), IpAddr::V4(t)) => {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&f.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
            pseudo.extend_from_slice(&TCP_LEN.to_be_bytes());
            let mut ip = Vec::with_capacity(40);
            ip.push(0x45); // version 4, five-word header
            ip.push(0); // TOS
            ip.extend_from_slice(&(20 + TCP_LEN).to_be_bytes());
            ip.extend_from_slice(&[0, 0]); // id: the kernel picks one
            ip.extend_from_slice(&[0x40, 0]); // don't fragment
            ip.push(64); // TTL
            ip.push(libc::IPPROTO_TCP as u8);
            ip.extend_from_slice(&[0, 0]); // header checksum, below
            ip.extend_from_slice(&f.octets());
            ip.extend_from_slice(&t.octets());
            let c = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend(tcp_header(s, &pseudo));
            Some(ip)
        }
        (IpAddr::V6(f), IpAddr::V6(t)) => {
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&f.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&(TCP_LEN as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, libc::IPPROTO_TCP as u8]);
            let mut ip = Vec::with_capacity(60);
            ip.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no class or flow
            ip.extend_from_slice(&TCP_LEN.to_be_bytes());
            ip.push(libc::IPPROTO_TCP as u8);
            ip.push(64); // hop limit
            ip.extend_from_slice(&f.octets());
            ip.extend_from_slice(&t.octets());
            ip.extend(tcp_header(s, &pseudo));
            Some(ip)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&b]), !0xddf2);
        // Split in parts, and an odd tail padded with zero.
        assert_eq!(checksum(&[&b[..4], &b[4..]]), !0xddf2);
        assert_eq!(checksum(&[&[0x12, 0x34, 0x56]]), !0x6834);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn known_ipv4_header() {
        // The classic example: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&h]), 0xb861);
    }

    fn seg(from: &str, to: &str) -> Segment {
        Segment {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            seq: 0x0102_0304,
            ack: 0xa0b0_c0d0,
            flags: FIN | ACK,
            window: 512,
        }
    }

    #[test]
    fn ipv4_packet_checks_out() {
        let p = packet(&seg("127.0.0.2:4000", "127.0.0.1:80")).unwrap();
        assert_eq!(p.len(), 40);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 40);
        assert_eq!(p[9], 6);
        assert_eq!(&p[12..16], &[127, 0, 0, 2]);
        assert_eq!(&p[16..20], &[127, 0, 0, 1]);
        // A header with its checksum in sums to zero.
        assert_eq!(checksum(&[&p[..20]]), 0);
        let t = &p[20..];
        assert_eq!(u16::from_be_bytes([t[0], t[1]]), 4000);
        assert_eq!(u16::from_be_bytes([t[2], t[3]]), 80);
        assert_eq!(&t[4..8], &[1, 2, 3, 4]);
        assert_eq!(&t[8..12], &[0xa0, 0xb0, 0xc0, 0xd0]);
        assert_eq!(t[12], 0x50);
        assert_eq!(t[13], 0x11);
        assert_eq!(u16::from_be_bytes([t[14], t[15]]), 512);
        let pseudo = [127, 0, 0, 2, 127, 0, 0, 1, 0, 6, 0, 20];
        assert_eq!(checksum(&[&pseudo, t]), 0);
        // Any change shows.
        let mut bad = t.to_vec();
        bad[7] ^= 1;
        assert_ne!(checksum(&[&pseudo, &bad]), 0);
    }

    #[test]
    fn ipv6_and_mapped_packets() {
        let p = packet(&seg("[::1]:4000", "[::1]:80")).unwrap();
        assert_eq!(p.len(), 60);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 20);
        assert_eq!(p[6], 6);
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        assert_eq!(checksum(&[&pseudo, &p[40..]]), 0);
        // A v4-mapped INET6 connection runs over IPv4.
        let m = packet(&seg("[::ffff:127.0.0.2]:4000", "[::ffff:127.0.0.1]:80")).unwrap();
        assert_eq!(m, packet(&seg("127.0.0.2:4000", "127.0.0.1:80")).unwrap());
        assert!(packet(&seg("127.0.0.1:1", "[::1]:2")).is_none());
    }
}
