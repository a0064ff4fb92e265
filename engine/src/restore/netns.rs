//! A network namespace of the tree's own (see dump/netns.rs for what a
//! dump holds): the engine's thread unshares a new one before any object
//! exists, so the sockets the engine makes for the tree land in it (and
//! can bind the tree's addresses), and makes it as the images have it:
//! the namespace's sysctls (`all`, then `default`, unix, core); the veth
//! pairs with their indexes, names, MTUs and MACs; each device's MTU and
//! MAC and sysctls, then its flags (up); the addresses (an address past
//! duplicate detection at dump time comes back with IFA_F_NODAD, usable
//! at once); the routes; the rules (the new namespace's default rules
//! not in the image removed); the nftables ruleset. The tasks inherit the
//! namespace from the root.
//!
//! Everything is checked by [`validate`] before any process exists: the
//! device kinds, both ends of every veth, the raw images' format, and
//! that each address and route names a device of the image.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::kernel::netconf;
use crate::sys::rtnetlink::{self as rtnl, Link};

/// A network namespace as its images have it, checked.
#[derive(Debug, Clone, Default)]
pub struct NetImages {
    pub entry: pb::NetnsEntry,
    pub devices: Vec<pb::NetDeviceEntry>,
    /// RTM_NEWADDR messages, whole.
    pub addrs: Vec<Vec<u8>>,
    /// RTM_NEWROUTE messages, IPv4 then IPv6.
    pub routes: Vec<Vec<u8>>,
    /// RTM_NEWRULE messages.
    pub rules: Vec<Vec<u8>>,
    pub nftables: Option<String>,
    /// The namespace's id in the images.
    pub id: u32,
    /// Where the external veths' other ends go (`externals`).
    pub outside: Vec<Outside>,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Image(crate::images::ImageError::invalid(path, why))
}

/// Checks the devices of netdev-N.img (`path`) against what the restore
/// makes: `lo`, and veth pairs with both ends in the image.
fn validate_devices(path: &Path, devices: &[pb::NetDeviceEntry]) -> Result<()> {
    let by_index: BTreeMap<u32, &pb::NetDeviceEntry> =
        devices.iter().map(|d| (d.ifindex, d)).collect();
    if by_index.len() != devices.len() {
        return Err(bad(path, "two devices with the same index"));
    }
    for d in devices {
        let ty = pb::NdType::try_from(d.r#type).ok();
        match ty {
            Some(pb::NdType::Loopback) if d.name == "lo" => {}
            Some(pb::NdType::Veth) => {
                if d.peer_ifindex.is_none() && d.peer_nsid.is_none() {
                    // Its other end was outside the tree (CRIU's external
                    // veth): made where --external says (`externals`).
                    check_device(path, d)?;
                    continue;
                }
                let peer = d.peer_ifindex.and_then(|p| by_index.get(&p));
                match peer {
                    Some(p)
                        if p.r#type == pb::NdType::Veth as i32
                            && p.peer_ifindex == Some(d.ifindex)
                            && p.ifindex != d.ifindex => {}
                    _ => {
                        return Err(bad(
                            path,
                            format!(
                                "veth {:?} (index {}): its other end (index {:?}) is not a veth of this image naming it back",
                                d.name, d.ifindex, d.peer_ifindex
                            ),
                        ))
                    }
                }
                if d.peer_nsid.is_some() {
                    return Err(bad(
                        path,
                        format!("veth {:?}: an other end in another namespace is not supported", d.name),
                    ));
                }
            }
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "device {:?} (type {}): only the loopback device lo and veth pairs are supported",
                        d.name, d.r#type
                    ),
                ))
            }
        }
        check_device(path, d)?;
    }
    if !devices.iter().any(|d| d.name == "lo") {
        return Err(bad(path, "no loopback device"));
    }
    Ok(())
}

/// The checks of every device: its name and index, no master.
fn check_device(path: &Path, d: &pb::NetDeviceEntry) -> Result<()> {
    if d.name.is_empty() || d.name.len() >= libc::IFNAMSIZ || d.name.contains('/') {
        return Err(bad(
            path,
            format!("device name {:?} is not a valid one", d.name),
        ));
    }
    if d.ifindex == 0 || d.master.is_some() {
        return Err(bad(
            path,
            format!("device {:?}: index 0 or a master device", d.name),
        ));
    }
    Ok(())
}

/// Whether `d` is a veth whose other end was outside the tree.
pub fn is_external(d: &pb::NetDeviceEntry) -> bool {
    d.r#type == pb::NdType::Veth as i32 && d.peer_ifindex.is_none() && d.peer_nsid.is_none()
}

/// The other end of an external veth, as `--external
/// veth[IFNAME]:OUTNAME[@BRIDGE]` places it: in the network namespace the
/// engine ran in when the restore started (the namespace's file and an
/// rtnetlink socket of it, opened then).
#[derive(Debug, Clone)]
pub struct Outside {
    /// The inner end's index in the image.
    pub inner: u32,
    pub outer: String,
    /// The bridge's index, and name.
    pub bridge: Option<(u32, String)>,
    pub ns: std::sync::Arc<OwnedFd>,
    pub nl: std::sync::Arc<OwnedFd>,
}

/// Matches the external veths of `net` (`dir`'s network namespace `id`)
/// with the restore's `--external` declarations and checks, in the
/// engine's network namespace, that each OUTNAME is free and each BRIDGE
/// is a bridge: all before any process exists. Every external veth needs
/// a declaration, and every declaration a veth.
pub fn externals(
    dir: &Path,
    net: Option<&mut NetImages>,
    external: &[crate::external::External],
) -> Result<()> {
    let declared: Vec<_> = crate::external::veths(external).collect();
    let Some(net) = net else {
        return match declared.first() {
            Some((inner, _, _)) => Err(Error::Usage(format!(
                "--external veth[{inner}]: the images in {} have no network namespace of \
                 the tree's own, so no veth to make",
                dir.display()
            ))),
            None => Ok(()),
        };
    };
    let path = dir.join(format!("netdev-{}.img", net.id));
    let usage = |s: String| Error::Usage(s);
    for (inner, _, _) in &declared {
        if !net
            .devices
            .iter()
            .any(|d| d.name == *inner && is_external(d))
        {
            return Err(usage(format!(
                "--external veth[{inner}]: {} has no veth {inner} whose other end was \
                 outside the tree",
                path.display()
            )));
        }
    }
    let ext: Vec<&pb::NetDeviceEntry> = net.devices.iter().filter(|d| is_external(d)).collect();
    if ext.is_empty() {
        return Ok(());
    }
    let here = "/proc/thread-self/ns/net";
    let ns = std::fs::File::open(here)
        .map_err(|e| Error::io(here, "the engine's network namespace", e))?;
    let ns = std::sync::Arc::new(OwnedFd::from(ns));
    let nl = std::sync::Arc::new(
        rtnl::socket()
            .map_err(|e| Error::sys(0, "rtnetlink socket in the engine's network namespace", e))?,
    );
    let mut outs: Vec<Outside> = Vec::new();
    for d in ext {
        let name = &d.name;
        let was = d
            .ckpt_peer_name
            .as_deref()
            .map(|p| format!(" ({p} there)"))
            .unwrap_or_default();
        let Some((_, outer, bridge)) = declared.iter().find(|(i, _, _)| *i == name) else {
            return Err(usage(format!(
                "{}: the other end of veth {name} was outside the tree{was}; say where it \
                 goes with --external veth[{name}]:OUTNAME[@BRIDGE]",
                path.display()
            )));
        };
        let Some(outer) = outer else {
            return Err(usage(format!(
                "--external veth[{name}]: name the other end to make in this network \
                 namespace, --external veth[{name}]:OUTNAME[@BRIDGE]"
            )));
        };
        let ask = |n: &str| {
            rtnl::link_by_name(&nl, n).map_err(|e| {
                Error::sys(
                    0,
                    format!("--external veth[{name}]: looking for device {n} here"),
                    e,
                )
            })
        };
        if outs.iter().any(|o| o.outer == *outer) {
            return Err(usage(format!(
                "--external veth[{name}]:{outer}: {outer} is named for another veth too"
            )));
        }
        if let Some(l) = ask(outer)? {
            return Err(usage(format!(
                "--external veth[{name}]:{outer}: a device {outer} (index {}) exists \
                 already in this network namespace; pick a free name or remove it",
                l.index
            )));
        }
        let bridge = match bridge {
            None => None,
            Some(b) => match ask(b)? {
                Some(l) if l.kind.as_deref() == Some("bridge") => Some((l.index, b.to_string())),
                Some(l) => {
                    return Err(usage(format!(
                        "--external veth[{name}]:{outer}@{b}: device {b} is no bridge \
                         (kind {})",
                        l.kind.as_deref().unwrap_or("none")
                    )))
                }
                None => {
                    return Err(usage(format!(
                        "--external veth[{name}]:{outer}@{b}: there is no bridge {b} in \
                         this network namespace"
                    )))
                }
            },
        };
        outs.push(Outside {
            inner: d.ifindex,
            outer: outer.to_string(),
            bridge,
            ns: ns.clone(),
            nl: nl.clone(),
        });
    }
    net.outside = outs;
    Ok(())
}

/// Checks the images of network namespace `id` in `dir` and returns them.
/// `raw` holds the raw images by prefix (absent ones are empty).
pub fn validate(
    dir: &Path,
    id: u32,
    entry: &pb::NetnsEntry,
    devices: &[pb::NetDeviceEntry],
    raw: &BTreeMap<&str, Vec<u8>>,
) -> Result<NetImages> {
    validate_devices(&dir.join(format!("netdev-{id}.img")), devices)?;
    let indexes: Vec<u32> = devices.iter().map(|d| d.ifindex).collect();
    let load = |prefix: &str, magic: u32, ty: u16| -> Result<Vec<Vec<u8>>> {
        let path = dir.join(format!("{prefix}-{id}.img"));
        let b = raw.get(prefix).map(Vec::as_slice).unwrap_or(&[]);
        rtnl::load(b, magic, ty).map_err(|why| bad(&path, why))
    };
    let addrs = load("ifaddr", rtnl::IFADDR_MAGIC, rtnl::RTM_NEWADDR)?;
    for m in &addrs {
        let a = rtnl::parse_addr(m).map_err(|e| {
            bad(
                &dir.join(format!("ifaddr-{id}.img")),
                format!("a malformed address ({e})"),
            )
        })?;
        if !indexes.contains(&a.index) {
            return Err(bad(
                &dir.join(format!("ifaddr-{id}.img")),
                format!(
                    "an address on device index {}, which netdev-{id}.img does not have",
                    a.index
                ),
            ));
        }
    }
    let mut routes = load("route", rtnl::ROUTE_MAGIC, rtnl::RTM_NEWROUTE)?;
    routes.extend(load("route6", rtnl::ROUTE_MAGIC, rtnl::RTM_NEWROUTE)?);
    for m in &routes {
        let r = rtnl::parse_route(m).map_err(|e| {
            bad(
                &dir.join(format!("route-{id}.img")),
                format!("a malformed route ({e})"),
            )
        })?;
        let six = if r.family as i32 == libc::AF_INET6 {
            "6"
        } else {
            ""
        };
        let path = dir.join(format!("route{six}-{id}.img"));
        if let Some(o) = r.oif.filter(|o| !indexes.contains(o)) {
            return Err(bad(
                &path,
                format!("a route out of device index {o}, which netdev-{id}.img does not have"),
            ));
        }
    }
    let rules = load("rule", rtnl::ROUTE_MAGIC, rtnl::RTM_NEWRULE)?;
    let nftables = match raw.get("nftables") {
        Some(b) if !b.is_empty() => Some(String::from_utf8(b.clone()).map_err(|_| {
            bad(
                &dir.join(format!("nftables-{id}.img")),
                "not text (nft's ruleset)",
            )
        })?),
        _ => None,
    };
    Ok(NetImages {
        entry: entry.clone(),
        devices: devices.to_vec(),
        addrs,
        routes,
        rules,
        nftables,
        id,
        outside: Vec::new(),
    })
}

/// The link of image entry `d`.
fn link_of(d: &pb::NetDeviceEntry) -> Link {
    Link {
        index: d.ifindex,
        flags: d.flags,
        name: d.name.clone(),
        mtu: d.mtu,
        address: d.address.clone(),
        ..Link::default()
    }
}

fn sysctls(root: Pid, what: &str, r: std::result::Result<(), String>) -> Result<()> {
    r.map_err(|e| Error::task(root, format!("network namespace: {what}"), e))
}

/// Writes a group of conf sysctls (`(dir, names)` of netconf).
fn conf(root: Pid, (dir, names): (String, &[&str]), values: &[pb::SysctlEntry]) -> Result<()> {
    sysctls(root, "sysctls", netconf::write(&dir, names, values))
}

/// In the engine's thread: the new namespace, made as `net` has it
/// (module doc).
pub fn enter(root: Pid, net: &NetImages, before_links: &dyn Fn() -> Result<()>) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys(root, "unshare of a new network namespace", e))?;
    set_up(root, net, before_links)
}

/// The calling thread's (new) network namespace, made as `net` has it:
/// by `enter`, or after joining one a user namespace's holder made
/// (restore/userns.rs). `before_links` runs in it before any link is
/// made (the network lock of the images' connections).
pub fn set_up(root: Pid, net: &NetImages, before_links: &dyn Fn() -> Result<()>) -> Result<()> {
    let nl = rtnl::socket()
        .map_err(|e| Error::sys(root, "rtnetlink socket in its new network namespace", e))?;
    let e = &net.entry;
    conf(root, netconf::ipv4("all"), &e.all_conf4)?;
    conf(root, netconf::ipv4("default"), &e.def_conf4)?;
    conf(root, netconf::ipv6("all"), &e.all_conf6)?;
    conf(root, netconf::ipv6("default"), &e.def_conf6)?;
    for (g, values) in [
        (netconf::UNIX, &e.unix_conf),
        (netconf::CORE, &e.ckpt_core_conf),
    ] {
        sysctls(root, "sysctls", netconf::write(g.dir, g.names, values))?;
    }
    before_links()?;
    links(root, &nl, &net.devices, &net.outside)?;
    for m in &net.addrs {
        add_addr(root, &nl, m)?;
    }
    for m in &net.routes {
        match rtnl::replay(&nl, m, rtnl::RTM_NEWROUTE, create()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::sys(
                    root,
                    format!("network namespace: a route ({:?})", rtnl::parse_route(m)),
                    e,
                ))
            }
        }
    }
    rules(root, &nl, &net.rules)?;
    if let Some(text) = &net.nftables {
        crate::sys::nftables::apply(text)
            .map_err(|e| Error::task(root, "network namespace: its nftables ruleset", e))?;
    }
    debug!(
        "network namespace: {} device(s), {} address(es), {} route(s), {} rule(s){}",
        net.devices.len(),
        net.addrs.len(),
        net.routes.len(),
        net.rules.len(),
        if net.nftables.is_some() {
            ", nftables"
        } else {
            ""
        }
    );
    Ok(())
}

fn create() -> u16 {
    (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16
}

/// The devices: each veth pair made once (from its end of lower index),
/// then every device's MTU, MAC, sysctls, and last its flags.
fn links(
    root: Pid,
    nl: &OwnedFd,
    devices: &[pb::NetDeviceEntry],
    outside: &[Outside],
) -> Result<()> {
    for o in outside {
        let d = devices
            .iter()
            .find(|d| d.ifindex == o.inner)
            .expect("matched");
        rtnl::create_veth_out(nl, &link_of(d), &o.outer, o.ns.as_fd()).map_err(|e| {
            Error::sys(
                root,
                format!(
                    "network namespace: veth {} (index {}) with its other end {} outside",
                    d.name, d.ifindex, o.outer
                ),
                e,
            )
        })?;
    }
    for d in devices {
        let Some(p) = d.peer_ifindex.filter(|&p| p > d.ifindex) else {
            continue;
        };
        let peer = devices.iter().find(|x| x.ifindex == p).expect("validated");
        rtnl::create_veth(nl, &link_of(d), &link_of(peer)).map_err(|e| {
            Error::sys(
                root,
                format!(
                    "network namespace: veth pair {} (index {}) - {} (index {p})",
                    d.name, d.ifindex, peer.name
                ),
                e,
            )
        })?;
    }
    for d in devices {
        // Down first: the MAC of a running device cannot change. lo's
        // (all zeroes) cannot be set at all.
        let lo = d.r#type == pb::NdType::Loopback as i32;
        let down = Link {
            flags: 0,
            address: d.address.clone().filter(|_| !lo),
            ..link_of(d)
        };
        let what = format!("network namespace: device {} (index {})", d.name, d.ifindex);
        rtnl::set_link(nl, &down)
            .map_err(|e| Error::sys(root, format!("{what}: MTU {}, address", d.mtu), e))?;
        conf(root, netconf::ipv4(&d.name), &d.conf4)?;
        conf(root, netconf::ipv6(&d.name), &d.conf6)?;
        rtnl::set_link(
            nl,
            &Link {
                address: None,
                ..link_of(d)
            },
        )
        .map_err(|e| Error::sys(root, format!("{what}: flags {:#x}", d.flags), e))?;
        debug!(
            "network namespace: {} (index {}, flags {:#x}, mtu {})",
            d.name, d.ifindex, d.flags, d.mtu
        );
    }
    for o in outside {
        outer_up(root, o)?;
    }
    Ok(())
}

/// The other end of an external veth, outside: a port of its bridge, if
/// any, and up.
fn outer_up(root: Pid, o: &Outside) -> Result<()> {
    let what = format!(
        "network namespace: the other end {} of a veth, outside",
        o.outer
    );
    let l = rtnl::link_by_name(&o.nl, &o.outer)
        .map_err(|e| Error::sys(root, what.clone(), e))?
        .ok_or_else(|| Error::task(root, what.clone(), "it is gone"))?;
    if let Some((b, name)) = &o.bridge {
        rtnl::set_master(&o.nl, l.index, *b)
            .map_err(|e| Error::sys(root, format!("{what}: joining bridge {name}"), e))?;
    }
    rtnl::set_link(
        &o.nl,
        &Link {
            index: l.index,
            // The kernel's flags for a new veth (MULTICAST), and up.
            flags: l.flags | libc::IFF_UP as u32,
            ..Link::default()
        },
    )
    .map_err(|e| Error::sys(root, format!("{what}: up"), e))?;
    debug!(
        "network namespace: {} (index {}) outside{}, up",
        o.outer,
        l.index,
        o.bridge
            .as_ref()
            .map(|(_, b)| format!(", port of {b}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// One address; one the kernel made already (lo's, a link-local one) is
/// there.
fn add_addr(root: Pid, nl: &OwnedFd, m: &[u8]) -> Result<()> {
    let a =
        rtnl::parse_addr(m).map_err(|e| Error::sys(root, "network namespace: an address", e))?;
    let msg = match a.flags & rtnl::IFA_F_TENTATIVE {
        0 => {
            rtnl::with_nodad(m).map_err(|e| Error::sys(root, "network namespace: an address", e))?
        }
        _ => m.to_vec(),
    };
    match rtnl::replay(nl, &msg, rtnl::RTM_NEWADDR, create()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::sys(
            root,
            format!("network namespace: address {a:?}"),
            e,
        )),
    }
}

/// The rules: the new namespace's own (its defaults) not in the image
/// are deleted, the image's not there are added.
fn rules(root: Pid, nl: &OwnedFd, want: &[Vec<u8>]) -> Result<()> {
    if want.is_empty() {
        // An image without rules (rule-N.img empty or absent): the
        // kernel's defaults stand.
        return Ok(());
    }
    let err = |what: &str, e| Error::sys(root, format!("network namespace: {what} a rule"), e);
    let have = rtnl::rules(nl).map_err(|e| err("listing", e))?;
    let same = |a: &[u8], b: &[u8]| rtnl::body(a) == rtnl::body(b);
    for m in have.iter().filter(|h| !want.iter().any(|w| same(w, h))) {
        rtnl::replay(nl, m, rtnl::RTM_DELRULE, 0).map_err(|e| err("deleting", e))?;
    }
    for m in want.iter().filter(|w| !have.iter().any(|h| same(w, h))) {
        rtnl::replay(nl, m, rtnl::RTM_NEWRULE, create()).map_err(|e| err("adding", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::External;

    fn dev(ty: pb::NdType, index: u32, name: &str, peer: Option<u32>) -> pb::NetDeviceEntry {
        pb::NetDeviceEntry {
            r#type: ty as i32,
            ifindex: index,
            mtu: 1500,
            name: name.into(),
            peer_ifindex: peer,
            ..Default::default()
        }
    }

    fn images() -> NetImages {
        NetImages {
            devices: vec![
                dev(pb::NdType::Loopback, 1, "lo", None),
                dev(pb::NdType::Veth, 2, "a", Some(3)),
                dev(pb::NdType::Veth, 3, "b", Some(2)),
                pb::NetDeviceEntry {
                    ckpt_peer_name: Some("vA".into()),
                    ..dev(pb::NdType::Veth, 4, "eth0", None)
                },
            ],
            id: 7,
            ..Default::default()
        }
    }

    #[test]
    fn external_veth_is_a_veth_without_peer() {
        let net = images();
        let p = Path::new("netdev-7.img");
        validate_devices(p, &net.devices).unwrap();
        let ext: Vec<bool> = net.devices.iter().map(is_external).collect();
        assert_eq!(ext, [false, false, false, true]);
        // A peer index naming no device is still refused.
        let mut bad = net.devices.clone();
        bad[3].peer_ifindex = Some(9);
        assert!(validate_devices(p, &bad).is_err());
    }

    #[test]
    fn externals_need_their_declaration_and_no_more() {
        let dir = Path::new("/nonexistent-images");
        let veth = |s: &str| s.parse::<External>().unwrap();
        let err = |ext: &[External]| {
            let mut net = images();
            externals(dir, Some(&mut net), ext).unwrap_err().to_string()
        };
        let e = err(&[]);
        assert!(
            e.contains("veth eth0") && e.contains("vA") && e.contains("--external veth[eth0]:"),
            "{e}"
        );
        let e = err(&[veth("veth[a]:x")]);
        assert!(e.contains("no veth a whose other end"), "{e}");
        let e = err(&[veth("veth[eth0]")]);
        assert!(e.contains("name the other end"), "{e}");
        let e = externals(dir, None, &[veth("veth[eth0]:x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no network namespace"), "{e}");
        assert!(externals(dir, None, &[]).is_ok());
    }
}
