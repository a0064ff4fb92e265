//! rtnetlink (NETLINK_ROUTE) on the calling thread's network namespace:
//! the links, addresses, routes and rules a network namespace of the
//! tree's own holds, read as the kernel gives them, and made again.
//! Messages are kept whole (header first) as iproute2's `ip ... save`
//! keeps them, so a restore replays what the dump read.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::netlink::{self, u16_at, u32_at, Msg, NLMSG_HDRLEN};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;

/// The fixed part of each message kind: ifinfomsg, ifaddrmsg, rtmsg,
/// fib_rule_hdr.
pub const IFINFOMSG_LEN: usize = 16;
pub const IFADDRMSG_LEN: usize = 8;
pub const RTMSG_LEN: usize = 12;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_TARGET_NETNSID: u16 = 46;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
pub const IFA_F_NODAD: u32 = 0x02;
pub const IFA_F_TENTATIVE: u32 = 0x40;
pub const RTPROT_KERNEL: u8 = 2;
pub const RT_TABLE_LOCAL: u8 = 255;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const FRA_SRC: u16 = 2;
const FRA_DST: u16 = 1;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const RTM_F_CLONED: u32 = 0x200;

/// The IFF_* flags a restore sets on a link (the others are the kernel's
/// to keep: RUNNING, LOWER_UP, ...).
pub const SETTABLE_FLAGS: u32 =
    (libc::IFF_UP | libc::IFF_NOARP | libc::IFF_PROMISC | libc::IFF_ALLMULTI | libc::IFF_MULTICAST)
        as u32;

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
pub fn socket() -> nix::Result<OwnedFd> {
    netlink::socket(libc::NETLINK_ROUTE)
}

/// Every message of an RTM_GET* dump of `family` (AF_UNSPEC: all), whole.
pub fn dump(fd: &OwnedFd, ty: u16, family: u8) -> nix::Result<Vec<Vec<u8>>> {
    let fixed_len = match ty {
        RTM_GETLINK => IFINFOMSG_LEN,
        RTM_GETADDR => IFADDRMSG_LEN,
        _ => RTMSG_LEN,
    };
    let mut fixed = vec![0u8; fixed_len];
    fixed[0] = family;
    let req = Msg::new(ty, libc::NLM_F_DUMP as u16, 1, &fixed).done();
    netlink::dump(fd, &req)
}

/// Sends `m` as a request with NLM_F_ACK and `flags`, type `ty`.
pub fn replay(fd: &OwnedFd, whole: &[u8], ty: u16, flags: u16) -> nix::Result<()> {
    let req = Msg::from_whole(whole, ty, libc::NLM_F_ACK as u16 | flags, 2).done();
    netlink::ack(fd, &req)
}

/// A link as RTM_NEWLINK describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// ARPHRD_*.
    pub hw_type: u16,
    pub flags: u32,
    pub name: String,
    pub mtu: u32,
    pub address: Option<Vec<u8>>,
    /// IFLA_INFO_KIND: "veth", "bridge", ... (None for lo and the like).
    pub kind: Option<String>,
    /// IFLA_LINK: a veth's peer's index.
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer is in another namespace.
    pub link_netnsid: Option<i32>,
    pub master: Option<u32>,
}

fn cstr(v: &[u8]) -> String {
    let v = v.split(|&c| c == 0).next().unwrap_or(v);
    String::from_utf8_lossy(v).into_owned()
}

/// Parses a whole RTM_NEWLINK message; EIO for a malformed one.
pub fn parse_link(m: &[u8]) -> nix::Result<Link> {
    let eio = nix::errno::Errno::EIO;
    let b = m.get(NLMSG_HDRLEN..).ok_or(eio)?;
    let mut l = Link {
        hw_type: u16_at(b, 2).ok_or(eio)?,
        index: u32_at(b, 4).ok_or(eio)?,
        flags: u32_at(b, 8).ok_or(eio)?,
        ..Link::default()
    };
    for (ty, v) in netlink::attrs(b.get(IFINFOMSG_LEN..).ok_or(eio)?)? {
        match ty {
            IFLA_IFNAME => l.name = cstr(v),
            IFLA_MTU => l.mtu = u32_at(v, 0).ok_or(eio)?,
            IFLA_ADDRESS => l.address = Some(v.to_vec()),
            IFLA_LINK => l.link = u32_at(v, 0),
            IFLA_LINK_NETNSID => l.link_netnsid = u32_at(v, 0).map(|x| x as i32),
            IFLA_MASTER => l.master = u32_at(v, 0),
            IFLA_LINKINFO => {
                for (t, k) in netlink::attrs(v)? {
                    if t == IFLA_INFO_KIND {
                        l.kind = Some(cstr(k));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(l)
}

/// An ifinfomsg for the link of index `index`, with `flags` changed
/// under `change`.
fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut f = [0u8; IFINFOMSG_LEN];
    f[4..8].copy_from_slice(&index.to_ne_bytes());
    f[8..12].copy_from_slice(&flags.to_ne_bytes());
    f[12..16].copy_from_slice(&change.to_ne_bytes());
    f
}

/// The attributes of a link's name, MTU and address.
fn link_attrs(m: &mut Msg, l: &Link) {
    m.attr(IFLA_IFNAME, &[l.name.as_bytes(), &[0]].concat());
    if l.mtu != 0 {
        m.attr(IFLA_MTU, &l.mtu.to_ne_bytes());
    }
    if let Some(a) = &l.address {
        m.attr(IFLA_ADDRESS, a);
    }
}

/// Creates the veth pair `a` - `b` with their indexes, names, MTUs and
/// addresses (both down).
pub fn create_veth(fd: &OwnedFd, a: &Link, b: &Link) -> nix::Result<()> {
    let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let mut m = Msg::new(RTM_NEWLINK, flags, 3, &ifinfo(a.index, 0, 0));
    link_attrs(&mut m, a);
    m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth\0");
    m.begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
    m.fixed(&ifinfo(b.index, 0, 0));
    link_attrs(&mut m, b);
    netlink::ack(fd, &m.done())
}

/// Creates the veth pair `inner` (here, with its index, name, MTU and
/// address) - `outer` (named, in the network namespace `outer_ns`, with
/// an index the kernel picks there), both down.
pub fn create_veth_out(
    fd: &OwnedFd,
    inner: &Link,
    outer: &str,
    outer_ns: BorrowedFd,
) -> nix::Result<()> {
    let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let mut m = Msg::new(RTM_NEWLINK, flags, 3, &ifinfo(inner.index, 0, 0));
    link_attrs(&mut m, inner);
    m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth\0");
    m.begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
    m.fixed(&ifinfo(0, 0, 0));
    m.attr(IFLA_IFNAME, &[outer.as_bytes(), &[0]].concat());
    m.attr(IFLA_NET_NS_FD, &outer_ns.as_raw_fd().to_ne_bytes());
    netlink::ack(fd, &m.done())
}

/// The link named `name` of the socket's namespace, if there is one.
pub fn link_by_name(fd: &OwnedFd, name: &str) -> nix::Result<Option<Link>> {
    let mut m = Msg::new(RTM_GETLINK, libc::NLM_F_ACK as u16, 5, &ifinfo(0, 0, 0));
    m.attr(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
    match netlink::dump(fd, &m.done()) {
        Ok(msgs) => msgs
            .iter()
            .find(|m| netlink::msg_type(m) == RTM_NEWLINK)
            .map(|m| parse_link(m))
            .transpose(),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The link of index `index` in the namespace the socket's knows as
/// `nsid` (a veth's IFLA_LINK_NETNSID): where its other end is.
pub fn link_in(fd: &OwnedFd, nsid: i32, index: u32) -> nix::Result<Link> {
    let mut m = Msg::new(RTM_GETLINK, libc::NLM_F_ACK as u16, 6, &ifinfo(index, 0, 0));
    m.attr(IFLA_TARGET_NETNSID, &nsid.to_ne_bytes());
    let msgs = netlink::dump(fd, &m.done())?;
    let m = msgs
        .iter()
        .find(|m| netlink::msg_type(m) == RTM_NEWLINK)
        .ok_or(nix::errno::Errno::ENODEV)?;
    parse_link(m)
}

/// Makes the link `index` a port of the bridge (or other master) `master`.
pub fn set_master(fd: &OwnedFd, index: u32, master: u32) -> nix::Result<()> {
    let mut m = Msg::new(RTM_NEWLINK, libc::NLM_F_ACK as u16, 7, &ifinfo(index, 0, 0));
    m.attr(IFLA_MASTER, &master.to_ne_bytes());
    netlink::ack(fd, &m.done())
}

/// Sets the MTU and address of the existing link `l.index` (the ones it
/// has) and its settable flags.
pub fn set_link(fd: &OwnedFd, l: &Link) -> nix::Result<()> {
    let mut m = Msg::new(
        RTM_NEWLINK,
        libc::NLM_F_ACK as u16,
        4,
        &ifinfo(l.index, l.flags & SETTABLE_FLAGS, SETTABLE_FLAGS),
    );
    if l.mtu != 0 {
        m.attr(IFLA_MTU, &l.mtu.to_ne_bytes());
    }
    if let Some(a) = &l.address {
        m.attr(IFLA_ADDRESS, a);
    }
    netlink::ack(fd, &m.done())
}

/// An address as RTM_NEWADDR gives it: family, prefix, flags (IFA_FLAGS
/// when there, else ifa_flags), scope and link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub family: u8,
    pub prefix: u8,
    pub flags: u32,
    pub scope: u8,
    pub index: u32,
    /// IFA_LOCAL, else IFA_ADDRESS.
    pub addr: Option<IpAddr>,
}

/// An address attribute of `family`'s length.
fn ip(family: u8, v: &[u8]) -> Option<IpAddr> {
    match family as i32 {
        libc::AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(v.get(..4)?).ok()?)),
        libc::AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(v.get(..16)?).ok()?)),
        _ => None,
    }
}

pub fn parse_addr(m: &[u8]) -> nix::Result<Addr> {
    let eio = nix::errno::Errno::EIO;
    let b = m.get(NLMSG_HDRLEN..).ok_or(eio)?;
    let mut a = Addr {
        family: *b.first().ok_or(eio)?,
        prefix: *b.get(1).ok_or(eio)?,
        flags: *b.get(2).ok_or(eio)? as u32,
        scope: *b.get(3).ok_or(eio)?,
        index: u32_at(b, 4).ok_or(eio)?,
        addr: None,
    };
    for (ty, v) in netlink::attrs(b.get(IFADDRMSG_LEN..).ok_or(eio)?)? {
        match ty {
            IFA_FLAGS => a.flags = u32_at(v, 0).ok_or(eio)?,
            IFA_LOCAL => a.addr = ip(a.family, v),
            IFA_ADDRESS if a.addr.is_none() => a.addr = ip(a.family, v),
            _ => {}
        }
    }
    Ok(a)
}

/// The whole RTM_NEWADDR message `m` with IFA_F_NODAD added: an address
/// past its duplicate detection at dump time is usable at once after the
/// restore (a socket bound to it would otherwise fail while it is
/// tentative).
pub fn with_nodad(m: &[u8]) -> nix::Result<Vec<u8>> {
    let eio = nix::errno::Errno::EIO;
    let mut out = m.to_vec();
    let flags_at = NLMSG_HDRLEN + 2;
    *out.get_mut(flags_at).ok_or(eio)? |= IFA_F_NODAD as u8;
    let mut at = NLMSG_HDRLEN + IFADDRMSG_LEN;
    while at + 4 <= out.len() {
        let len = u16_at(&out, at).ok_or(eio)? as usize;
        if len < 4 {
            return Err(eio);
        }
        if u16_at(&out, at + 2) == Some(IFA_FLAGS) && len >= 8 {
            let f = u32_at(&out, at + 4).ok_or(eio)? | IFA_F_NODAD;
            out[at + 4..at + 8].copy_from_slice(&f.to_ne_bytes());
        }
        at += (len + 3) & !3;
    }
    Ok(out)
}

/// A route as RTM_NEWROUTE gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub family: u8,
    pub dst_len: u8,
    pub protocol: u8,
    pub route_type: u8,
    /// RTA_TABLE when there, else rtm_table.
    pub table: u32,
    pub flags: u32,
    pub dst: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

pub fn parse_route(m: &[u8]) -> nix::Result<Route> {
    let eio = nix::errno::Errno::EIO;
    let b = m.get(NLMSG_HDRLEN..).ok_or(eio)?;
    let mut r = Route {
        family: *b.first().ok_or(eio)?,
        dst_len: *b.get(1).ok_or(eio)?,
        table: *b.get(4).ok_or(eio)? as u32,
        protocol: *b.get(5).ok_or(eio)?,
        route_type: *b.get(7).ok_or(eio)?,
        flags: u32_at(b, 8).ok_or(eio)?,
        dst: None,
        gateway: None,
        oif: None,
    };
    for (ty, v) in netlink::attrs(b.get(RTMSG_LEN..).ok_or(eio)?)? {
        match ty {
            RTA_TABLE => r.table = u32_at(v, 0).ok_or(eio)?,
            RTA_DST => r.dst = ip(r.family, v),
            RTA_GATEWAY => r.gateway = ip(r.family, v),
            RTA_OIF => r.oif = u32_at(v, 0),
            _ => {}
        }
    }
    Ok(r)
}

impl Route {
    /// A route the kernel makes by itself (for an address, in the local
    /// table, or a cached clone): the restore gets it with the address.
    pub fn is_kernels(&self) -> bool {
        self.protocol == RTPROT_KERNEL
            || self.table == RT_TABLE_LOCAL as u32
            || self.flags & RTM_F_CLONED != 0
    }
}

/// The RTM_NEWROUTE messages of `family` the tree made (not the kernel's
/// own, see [`Route::is_kernels`]), whole.
pub fn own_routes(fd: &OwnedFd, family: u8) -> nix::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for m in dump(fd, RTM_GETROUTE, family)? {
        if netlink::msg_type(&m) == RTM_NEWROUTE && !parse_route(&m)?.is_kernels() {
            out.push(m);
        }
    }
    Ok(out)
}

/// A rule as RTM_NEWRULE gives it (fib_rule_hdr and the attributes
/// `ckpt show` prints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub family: u8,
    pub src: Option<(IpAddr, u8)>,
    pub dst: Option<(IpAddr, u8)>,
    pub priority: u32,
    pub table: u32,
}

pub fn parse_rule(m: &[u8]) -> nix::Result<Rule> {
    let eio = nix::errno::Errno::EIO;
    let b = m.get(NLMSG_HDRLEN..).ok_or(eio)?;
    let (family, dst_len, src_len) = (
        *b.first().ok_or(eio)?,
        *b.get(1).ok_or(eio)?,
        *b.get(2).ok_or(eio)?,
    );
    let mut r = Rule {
        family,
        src: None,
        dst: None,
        priority: 0,
        table: *b.get(4).ok_or(eio)? as u32,
    };
    for (ty, v) in netlink::attrs(b.get(RTMSG_LEN..).ok_or(eio)?)? {
        match ty {
            FRA_SRC => r.src = ip(family, v).map(|a| (a, src_len)),
            FRA_DST => r.dst = ip(family, v).map(|a| (a, dst_len)),
            FRA_PRIORITY => r.priority = u32_at(v, 0).ok_or(eio)?,
            FRA_TABLE => r.table = u32_at(v, 0).ok_or(eio)?,
            _ => {}
        }
    }
    Ok(r)
}

/// EAFNOSUPPORT of an IPv6 request (a kernel without IPv6, or booted
/// with ipv6.disable=1) is no IPv6 object.
pub fn no_v6(r: nix::Result<Vec<Vec<u8>>>) -> nix::Result<Vec<Vec<u8>>> {
    match r {
        Err(nix::errno::Errno::EAFNOSUPPORT) => Ok(vec![]),
        r => r,
    }
}

/// Every rule, IPv4 then IPv6, whole.
pub fn rules(fd: &OwnedFd) -> nix::Result<Vec<Vec<u8>>> {
    let mut out = dump(fd, RTM_GETRULE, libc::AF_INET as u8)?;
    out.extend(no_v6(dump(fd, RTM_GETRULE, libc::AF_INET6 as u8))?);
    out.retain(|m| netlink::msg_type(m) == RTM_NEWRULE);
    Ok(out)
}

/// The body (after the header) of a whole message: what two rules are
/// compared by.
pub fn body(m: &[u8]) -> &[u8] {
    m.get(NLMSG_HDRLEN..).unwrap_or(&[])
}

/// The magic number iproute2's `ip addr save` writes first (CRIU's
/// ifaddr-N.img is that output).
pub const IFADDR_MAGIC: u32 = 0x4736_1222;
/// The magic of `ip route save` and `ip rule save` (route-N.img,
/// route6-N.img, rule-N.img).
pub const ROUTE_MAGIC: u32 = 0x4531_1224;

/// iproute2's save format: `magic`, then the messages whole, as the
/// kernel gave them.
pub fn save(magic: u32, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = magic.to_ne_bytes().to_vec();
    for m in msgs {
        out.extend_from_slice(m);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

/// The messages of a saved file, each of type `want`; Err says what is
/// wrong with it. An empty file holds none.
pub fn load(b: &[u8], magic: u32, want: u16) -> Result<Vec<Vec<u8>>, String> {
    if b.is_empty() {
        return Ok(vec![]);
    }
    if u32_at(b, 0) != Some(magic) {
        return Err(format!(
            "it does not start with iproute2's magic {magic:#x} (it has {:#x?})",
            u32_at(b, 0)
        ));
    }
    let mut out = Vec::new();
    let done = netlink::walk_whole(&b[4..], |m| out.push(m.to_vec()))
        .map_err(|e| format!("a malformed netlink message ({e})"))?;
    if done {
        return Err("a netlink end-of-dump or error message in it".into());
    }
    let total: usize = out.iter().map(|m| (m.len() + 3) & !3).sum();
    if total != b.len() - 4 {
        return Err("trailing bytes after its last message".into());
    }
    if let Some(m) = out.iter().find(|m| netlink::msg_type(m) != want) {
        return Err(format!(
            "a message of type {} where only type {want} belongs",
            netlink::msg_type(m)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_request_nests_and_link_parse() {
        let a = Link {
            index: 7,
            name: "va".into(),
            mtu: 1400,
            address: Some(vec![2, 0, 0, 0, 0, 1]),
            ..Link::default()
        };
        let mut m = Msg::new(RTM_NEWLINK, 0, 1, &ifinfo(a.index, 1, 0));
        link_attrs(&mut m, &a);
        m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth\0");
        let m = m.done();
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        let l = parse_link(&m).unwrap();
        assert_eq!(
            (l.index, l.name.as_str(), l.mtu, l.kind.as_deref()),
            (7, "va", 1400, Some("veth"))
        );
        assert_eq!(l.address, a.address);
        assert_eq!(parse_link(&m[..20]), Err(nix::errno::Errno::EIO));
    }

    #[test]
    fn nodad_sets_both_flag_places() {
        let mut fixed = [0u8; IFADDRMSG_LEN];
        fixed[0] = libc::AF_INET6 as u8;
        fixed[1] = 64;
        let mut m = Msg::new(RTM_NEWADDR, 0, 1, &fixed);
        m.attr(IFA_FLAGS, &0x80u32.to_ne_bytes());
        let m = with_nodad(&m.done()).unwrap();
        let a = parse_addr(&m).unwrap();
        assert_eq!(a.flags, 0x80 | IFA_F_NODAD);
        assert_eq!(m[NLMSG_HDRLEN + 2] as u32 & IFA_F_NODAD, IFA_F_NODAD);
    }

    #[test]
    fn save_load_round_trip_and_bad_files() {
        let m = Msg::new(RTM_NEWADDR, 0, 1, &[0u8; IFADDRMSG_LEN]).done();
        let f = save(IFADDR_MAGIC, &[m.clone(), m.clone()]);
        assert_eq!(load(&f, IFADDR_MAGIC, RTM_NEWADDR), Ok(vec![m.clone(), m]));
        assert!(load(&f, ROUTE_MAGIC, RTM_NEWADDR)
            .unwrap_err()
            .contains("magic"));
        assert!(load(&f, IFADDR_MAGIC, RTM_NEWROUTE)
            .unwrap_err()
            .contains("type"));
        assert!(load(&f[..f.len() - 4], IFADDR_MAGIC, RTM_NEWADDR).is_err());
        assert_eq!(load(&[], IFADDR_MAGIC, RTM_NEWADDR), Ok(vec![]));
    }

    #[test]
    fn kernel_routes_told_apart() {
        let mut fixed = [0u8; RTMSG_LEN];
        fixed[4] = 254;
        fixed[5] = 4; // RTPROT_STATIC
        let mut m = Msg::new(RTM_NEWROUTE, 0, 1, &fixed);
        m.attr(RTA_TABLE, &100u32.to_ne_bytes());
        let r = parse_route(&m.done()).unwrap();
        assert_eq!(r.table, 100);
        assert!(!r.is_kernels());
        fixed[5] = RTPROT_KERNEL;
        let r = parse_route(&Msg::new(RTM_NEWROUTE, 0, 1, &fixed).done()).unwrap();
        assert!(r.is_kernels());
    }
}
