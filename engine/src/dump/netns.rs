//! A network namespace of the tree's own: its links (loopback, veth
//! pairs with both ends inside, and veths whose other end is in another
//! namespace when declared with `--external veth[IFNAME]`), their flags,
//! MTU, MAC and sysctls; its addresses, routes and rules; the namespace's
//! sysctls; its nftables ruleset. What it holds beyond that (another kind
//! of device, an undeclared veth whose other end is outside, a bridge
//! port, legacy iptables tables) is refused, naming the task, the
//! namespace and the object: it would not come back.
//!
//! Of an external veth only the end inside is kept (as CRIU keeps it: a
//! VETH entry without peer_ifindex), with the name the other end had
//! (ckpt_peer_name, for `ckpt show` and the messages): the other end and
//! its namespace belong to whoever made them, and the restore makes that
//! end again where `--external veth[IFNAME]:OUTNAME[@BRIDGE]` says.
//!
//! Images, as CRIU has them (N the namespace's id in the tasks' ids):
//! `netns-N.img` (the sysctls of `all`, `default`, unix and core),
//! `netdev-N.img` (one entry per device, with its own sysctls),
//! `ifaddr-N.img`, `route-N.img`, `route6-N.img`, `rule-N.img`
//! (rtnetlink messages as the kernel gave them, in iproute2's `ip ...
//! save` format; only the routes the kernel does not make by itself for
//! an address) and `nftables-N.img` (`nft list ruleset`, when there is
//! one). restore/netns.rs makes them again in that order.

use crate::error::{Error, Pid, Result};
use crate::external::External;
use crate::images::pb;
use crate::kernel::netconf;
use crate::sys::rtnetlink::{self as rtnl, Link};

/// What the dump keeps of the namespace.
pub struct NetNs {
    pub entry: pb::NetnsEntry,
    pub devices: Vec<pb::NetDeviceEntry>,
    /// ifaddr-N.img, route-N.img, route6-N.img, rule-N.img.
    pub ifaddr: Vec<u8>,
    pub route: Vec<u8>,
    pub route6: Vec<u8>,
    pub rule: Vec<u8>,
    /// nftables-N.img, for a namespace with a ruleset.
    pub nftables: Option<String>,
}

fn refuse(pid: Pid, ino: u64, why: impl Into<String>) -> Error {
    Error::unsupported(
        pid,
        format!("net namespace net:[{ino}]"),
        format!(
            "{}; only loopback, veth pairs with both ends in the namespace and veths \
             declared with --external veth[IFNAME] are supported",
            why.into()
        ),
    )
}

/// `/proc/PID/net/FILE`: answers for `pid`'s network namespace.
fn net_file(pid: Pid, file: &str) -> Result<String> {
    let path = format!("/proc/{pid}/net/{file}");
    std::fs::read_to_string(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its network namespace"), e))
}

/// The image entry of `l`, one of the namespace's `links`; Err says why
/// it cannot be kept. `outside`: for a veth whose other end is in another
/// namespace, that end as its namespace has it (when it could be read);
/// `declared`: the veths of `--external veth[IFNAME]`.
fn device(
    l: &Link,
    links: &[Link],
    outside: Option<&Link>,
    declared: &[&str],
) -> std::result::Result<pb::NetDeviceEntry, String> {
    let name = &l.name;
    if let Some(m) = l.master {
        return Err(format!(
            "its network device {name} is enslaved to device {m} (bridges and bonds are not supported yet)"
        ));
    }
    let mut peer_name = None;
    let (ty, peer) = match l.kind.as_deref() {
        None if l.hw_type == libc::ARPHRD_LOOPBACK => (pb::NdType::Loopback, None),
        Some("veth") => {
            if let Some(nsid) = l.link_netnsid {
                let other = match outside {
                    Some(o) => format!("{} (index {})", o.name, o.index),
                    None => format!("index {}", l.link.unwrap_or(0)),
                };
                if !declared.contains(&name.as_str()) {
                    return Err(format!(
                        "the other end of its veth device {name}, {other}, is in another network \
                         namespace (nsid {nsid}); declare it with --external veth[{name}] to dump \
                         {name} (the restore then makes the other end again where \
                         --external veth[{name}]:OUTNAME[@BRIDGE] says)"
                    ));
                }
                peer_name = outside.map(|o| o.name.clone());
                (pb::NdType::Veth, None)
            } else {
                let peer = l
                    .link
                    .filter(|p| links.iter().any(|o| o.index == *p && o.index != l.index))
                    .ok_or_else(|| {
                        format!("its veth device {name} has no other end in the namespace")
                    })?;
                (pb::NdType::Veth, Some(peer))
            }
        }
        kind => {
            return Err(format!(
                "it has the network device {name} of kind {} (type {})",
                kind.unwrap_or("?"),
                l.hw_type
            ))
        }
    };
    Ok(pb::NetDeviceEntry {
        r#type: ty as i32,
        ifindex: l.index,
        mtu: l.mtu,
        flags: l.flags,
        name: name.clone(),
        address: l.address.clone(),
        conf4: {
            let (dir, names) = netconf::ipv4(name);
            netconf::read(&dir, names)
        },
        conf6: {
            let (dir, names) = netconf::ipv6(name);
            netconf::read(&dir, names)
        },
        peer_ifindex: peer,
        peer_nsid: None,
        master: None,
        ckpt_peer_name: peer_name,
    })
}

/// Everything read from inside the namespace: the images but the
/// ruleset's text, or why a device is refused.
fn read_inside(declared: &[&str]) -> nix::Result<std::result::Result<NetNs, String>> {
    let nl = rtnl::socket()?;
    let mut links = Vec::new();
    for m in rtnl::dump(&nl, rtnl::RTM_GETLINK, libc::AF_UNSPEC as u8)? {
        if crate::sys::netlink::msg_type(&m) == rtnl::RTM_NEWLINK {
            links.push(rtnl::parse_link(&m)?);
        }
    }
    for d in declared {
        if !links
            .iter()
            .any(|l| l.name == *d && l.kind.as_deref() == Some("veth") && l.link_netnsid.is_some())
        {
            return Ok(Err(format!(
                "--external veth[{d}]: it has no veth device {d} whose other end is in \
                 another network namespace"
            )));
        }
    }
    let mut devices = Vec::new();
    for l in &links {
        // The other end of an external veth, read where it is (the
        // namespace the kernel knows as the veth's link netnsid).
        let outside = match (l.link_netnsid, l.link) {
            (Some(nsid), Some(index)) => rtnl::link_in(&nl, nsid, index).ok(),
            _ => None,
        };
        match device(l, &links, outside.as_ref(), declared) {
            Ok(d) => devices.push(d),
            Err(why) => return Ok(Err(why)),
        }
    }
    let addrs: Vec<Vec<u8>> = rtnl::dump(&nl, rtnl::RTM_GETADDR, libc::AF_UNSPEC as u8)?
        .into_iter()
        .filter(|m| crate::sys::netlink::msg_type(m) == rtnl::RTM_NEWADDR)
        .collect();
    let rules = rtnl::rules(&nl)?;
    let conf = |(dir, names): (String, &[&str])| netconf::read(&dir, names);
    let group = |g: netconf::Group| netconf::read(g.dir, g.names);
    Ok(Ok(NetNs {
        entry: pb::NetnsEntry {
            def_conf4: conf(netconf::ipv4("default")),
            all_conf4: conf(netconf::ipv4("all")),
            def_conf6: conf(netconf::ipv6("default")),
            all_conf6: conf(netconf::ipv6("all")),
            unix_conf: group(netconf::UNIX),
            ckpt_core_conf: group(netconf::CORE),
            ..Default::default()
        },
        devices,
        ifaddr: rtnl::save(rtnl::IFADDR_MAGIC, &addrs),
        route: rtnl::save(
            rtnl::ROUTE_MAGIC,
            &rtnl::own_routes(&nl, libc::AF_INET as u8)?,
        ),
        route6: rtnl::save(
            rtnl::ROUTE_MAGIC,
            &rtnl::no_v6(rtnl::own_routes(&nl, libc::AF_INET6 as u8))?,
        ),
        rule: rtnl::save(rtnl::ROUTE_MAGIC, &rules),
        nftables: None,
    }))
}

/// Checks the network namespace `ino` of `pid` (the tree's root) and
/// returns what the images keep of it; `external`: the dump's
/// `--external` declarations.
pub fn check(pid: Pid, ino: u64, external: &[External]) -> Result<NetNs> {
    let declared: Vec<&str> = crate::external::veths(external)
        .map(|(inner, _, _)| inner)
        .collect();
    // Legacy firewall tables, once made in the namespace: not kept (CRIU
    // runs iptables-save; the nftables ruleset below is what is kept).
    for f in ["ip_tables_names", "ip6_tables_names"] {
        if let Some(t) = net_file(pid, f)
            .ok()
            .and_then(|t| t.lines().next().map(String::from))
        {
            return Err(refuse(
                pid,
                ino,
                format!("it has the legacy {f} table {t:?} (only nftables rulesets are kept)"),
            ));
        }
    }
    let mut net = in_netns(
        pid,
        "its links, addresses, routes and rules (rtnetlink)",
        || read_inside(&declared),
    )?
    .map_err(|why| refuse(pid, ino, why))?;
    let (_, tables) = in_netns(
        pid,
        "its nftables ruleset (nfnetlink)",
        crate::sys::nftables::ruleset,
    )?;
    if let Some(t) = tables.first() {
        let text = in_netns(pid, "its nftables ruleset (nft)", || {
            Ok(crate::sys::nftables::list_ruleset())
        })?
        .map_err(|e| {
            refuse(
                pid,
                ino,
                format!(
                    "its nftables ruleset (table {} {} and {} more) cannot be read: {e}",
                    t.family,
                    t.table,
                    tables.len() - 1
                ),
            )
        })?;
        net.nftables = Some(text);
    }
    debug!(
        "pid {pid}: net:[{ino}]: {} device(s) ({}), {} table(s)",
        net.devices.len(),
        net.devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        tables.len()
    );
    Ok(net)
}

/// Runs `f` in a short-lived thread that joins `pid`'s network namespace
/// (setns of a network namespace changes only the calling thread; what
/// `f` opens, sockets and /proc/sys/net, answers for that namespace).
fn in_netns<T: Send>(pid: Pid, what: &str, f: impl FnOnce() -> nix::Result<T> + Send) -> Result<T> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its network namespace"), e))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys(pid, "setns into its network namespace", e))?;
            f().map_err(|e| Error::sys(pid, what, e))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::task(
                pid,
                "network namespace",
                "the helper thread panicked",
            ))
        })
    })
}

/// The engine's thread in the tree's network namespace for the rest of
/// the dump: the sockets it makes to ask the kernel about the tree's
/// (sock_diag answers for the asker's namespace) and the network lock's
/// nft (a child inherits the thread's namespace) must be there. Back to
/// the engine's own when dropped.
pub struct Entered {
    back: std::fs::File,
}

pub fn enter(pid: Pid) -> Result<Entered> {
    let open = |path: &str| {
        std::fs::File::open(path)
            .map_err(|e| Error::io(path, format!("pid {pid}: a network namespace"), e))
    };
    let back = open("/proc/thread-self/ns/net")?;
    let ns = open(&format!("/proc/{pid}/ns/net"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys(pid, "setns into its network namespace", e))?;
    Ok(Entered { back })
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = nix::sched::setns(&self.back, nix::sched::CloneFlags::CLONE_NEWNET);
    }
}
