//! AF_PACKET sockets as the kernel describes them: packet_diag (the one
//! place that lists a socket's memberships and rings), the address it is
//! bound to, and the calls that make one again.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use super::netlink::{self, u16_at, u32_at, NLMSG_HDRLEN};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const PACKET_DIAG_MSG_LEN: usize = 16;

const PACKET_SHOW_INFO: u32 = 0x01;
const PACKET_SHOW_MCLIST: u32 = 0x02;
const PACKET_SHOW_RING_CFG: u32 = 0x04;
const PACKET_SHOW_FANOUT: u32 = 0x08;
const PACKET_SHOW_FILTER: u32 = 0x20;

const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;
const PACKET_DIAG_FANOUT: u16 = 4;
const PACKET_DIAG_FILTER: u16 = 7;

/// pdi_flags bits.
pub const PDI_AUXDATA: u32 = 0x2;
pub const PDI_ORIGDEV: u32 = 0x4;
pub const PDI_VNETHDR: u32 = 0x8;
pub const PDI_LOSS: u32 = 0x10;

/// struct packet_diag_mclist: index, count, type, alen, then 32 bytes.
const MCLIST_LEN: usize = 44;

/// One packet socket, as packet_diag reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketDiag {
    pub ino: u32,
    pub r#type: u8,
    /// The protocol it receives, host byte order.
    pub num: u16,
    /// struct packet_diag_info: ifindex, version, reserve, copy_thresh,
    /// tstamp, flags.
    pub ifindex: u32,
    pub version: u32,
    pub reserve: u32,
    pub copy_thresh: u32,
    pub tstamp: u32,
    pub flags: u32,
    /// (ifindex, count, type, address) of each membership.
    pub mclist: Vec<(u32, u32, u16, Vec<u8>)>,
    /// The raw tpacket_req3-like ring configurations, when set.
    pub rx_ring: Option<[u32; 7]>,
    pub tx_ring: Option<[u32; 7]>,
    /// PACKET_FANOUT's value (id | type << 16 | flags << 24).
    pub fanout: Option<u32>,
    /// A socket filter (SO_ATTACH_FILTER) is attached.
    pub filter: bool,
}

/// The dump request for every packet socket (packet_diag answers dumps
/// only).
pub fn request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + 20) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // packet_diag_req
    b.push(libc::AF_PACKET as u8);
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    let show = PACKET_SHOW_INFO
        | PACKET_SHOW_MCLIST
        | PACKET_SHOW_RING_CFG
        | PACKET_SHOW_FANOUT
        | PACKET_SHOW_FILTER;
    b.extend_from_slice(&show.to_ne_bytes());
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b
}

fn ring(v: &[u8]) -> Option<[u32; 7]> {
    let mut r = [0u32; 7];
    for (i, x) in r.iter_mut().enumerate() {
        *x = u32_at(v, i * 4)?;
    }
    Some(r)
}

/// One packet_diag_msg with its attributes (a reply's body).
pub fn parse_msg(m: &[u8]) -> Result<PacketDiag, Errno> {
    if m.len() < PACKET_DIAG_MSG_LEN {
        return Err(Errno::EIO);
    }
    let mut d = PacketDiag {
        r#type: m[1],
        num: u16_at(m, 2).ok_or(Errno::EIO)?,
        ino: u32_at(m, 4).ok_or(Errno::EIO)?,
        ..Default::default()
    };
    for (atype, v) in netlink::attrs(&m[PACKET_DIAG_MSG_LEN..])? {
        match atype {
            PACKET_DIAG_INFO => {
                let f = |i: usize| u32_at(v, i * 4).ok_or(Errno::EIO);
                d.ifindex = f(0)?;
                d.version = f(1)?;
                d.reserve = f(2)?;
                d.copy_thresh = f(3)?;
                d.tstamp = f(4)?;
                d.flags = f(5)?;
            }
            PACKET_DIAG_MCLIST => {
                for c in v.chunks_exact(MCLIST_LEN) {
                    let alen = (u16_at(c, 10).unwrap_or(0) as usize).min(32);
                    d.mclist.push((
                        u32_at(c, 0).ok_or(Errno::EIO)?,
                        u32_at(c, 4).ok_or(Errno::EIO)?,
                        u16_at(c, 8).ok_or(Errno::EIO)?,
                        c[12..12 + alen].to_vec(),
                    ));
                }
            }
            PACKET_DIAG_RX_RING => d.rx_ring = Some(ring(v).ok_or(Errno::EIO)?),
            PACKET_DIAG_TX_RING => d.tx_ring = Some(ring(v).ok_or(Errno::EIO)?),
            PACKET_DIAG_FANOUT => d.fanout = Some(u32_at(v, 0).ok_or(Errno::EIO)?),
            PACKET_DIAG_FILTER => d.filter = !v.is_empty(),
            _ => {}
        }
    }
    Ok(d)
}

/// The packet socket of inode `ino` in the engine's network namespace.
pub fn packet_diag(ino: u32) -> nix::Result<Option<PacketDiag>> {
    let nl = netlink::socket(libc::NETLINK_SOCK_DIAG)?;
    netlink::send(&nl, &request(1))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut found = None;
    loop {
        let n = netlink::recv(&nl, &mut buf)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        let mut bad = Ok(());
        let done = netlink::walk(&buf[..n], |m| match parse_msg(m) {
            Ok(d) if d.ino == ino => found = Some(d),
            Ok(_) => {}
            Err(e) => bad = Err(e),
        })?;
        bad?;
        if done {
            return Ok(found);
        }
    }
}

/// Bind to `protocol` (host byte order) on interface `ifindex` (0: all).
pub fn bind(fd: BorrowedFd<'_>, protocol: u16, ifindex: u32) -> nix::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = protocol.to_be();
    a.sll_ifindex = ifindex as i32;
    // SAFETY: the kernel reads the sockaddr_ll, whose size we pass.
    Errno::result(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// PACKET_ADD_MEMBERSHIP of `type` on `ifindex`, with a link-level
/// address for the memberships that have one (at most 8 bytes).
pub fn add_membership(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    r#type: u16,
    addr: &[u8],
) -> nix::Result<()> {
    // SAFETY: an all-zero packet_mreq is valid.
    let mut m: libc::packet_mreq = unsafe { std::mem::zeroed() };
    if addr.len() > m.mr_address.len() {
        return Err(Errno::EINVAL);
    }
    m.mr_ifindex = ifindex as i32;
    m.mr_type = r#type;
    m.mr_alen = addr.len() as u16;
    m.mr_address[..addr.len()].copy_from_slice(addr);
    // SAFETY: the kernel reads the packet_mreq, whose size we pass.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&m as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_bound_socket_with_a_membership_and_fanout() {
        let mut body = vec![libc::AF_PACKET as u8, libc::SOCK_RAW as u8];
        body.extend_from_slice(&3u16.to_ne_bytes());
        body.extend_from_slice(&77u32.to_ne_bytes());
        body.extend_from_slice(&[0xff; 8]);
        let info: Vec<u8> = [1u32, 1, 0, 0, 0, PDI_AUXDATA | PDI_ORIGDEV]
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect();
        body.extend(attr(PACKET_DIAG_INFO, &info));
        let mut mc = Vec::new();
        mc.extend_from_slice(&1u32.to_ne_bytes());
        mc.extend_from_slice(&1u32.to_ne_bytes());
        mc.extend_from_slice(&1u16.to_ne_bytes());
        mc.extend_from_slice(&0u16.to_ne_bytes());
        mc.extend_from_slice(&[0; 32]);
        body.extend(attr(PACKET_DIAG_MCLIST, &mc));
        body.extend(attr(PACKET_DIAG_FANOUT, &0x0003_0007u32.to_ne_bytes()));
        let d = parse_msg(&body).unwrap();
        assert_eq!((d.ino, d.num, d.ifindex, d.version), (77, 3, 1, 1));
        assert_eq!(d.flags, PDI_AUXDATA | PDI_ORIGDEV);
        assert_eq!(d.mclist, vec![(1, 1, 1, vec![])]);
        assert_eq!(d.fanout, Some(0x0003_0007));
        assert_eq!((d.rx_ring, d.filter), (None, false));
        assert_eq!(parse_msg(&body[..4]), Err(Errno::EIO));
    }

    #[test]
    fn the_request_asks_for_a_dump() {
        let r = request(5);
        assert_eq!(r.len(), 36);
        assert_eq!(r[16], libc::AF_PACKET as u8);
    }
}
