//! A network namespace of the tree's own, in the shape the `ns` flavour
//! gives it (zdtm/lib/ns.c): a new namespace with only its loopback
//! device, up, holding the addresses and routes the kernel gives it
//! (127.0.0.1/8 and ::1) and nothing else. The dump checks that shape and
//! refuses anything else, naming the task, the namespace and the first
//! difference: a namespace with more devices, addresses, routes or
//! firewall tables (iptables, or any nftables table or rule) needs the
//! full network namespace support that is not written yet, and must not
//! come back as a bare one.
//!
//! Images, as CRIU has them: `netns-N.img` (the namespace; no sysctls
//! yet) and `netdev-N.img` (its devices: only `lo` so far, with its flags
//! and MTU), N the namespace's id in the tasks' ids. Addresses and routes
//! are the kernel's defaults, so no ifaddr/route image is written; the
//! restore (restore/netns.rs) checks the devices and brings `lo` up.

use std::os::fd::AsFd;

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// What the dump keeps of the namespace.
pub struct NetNs {
    pub devices: Vec<pb::NetDeviceEntry>,
}

fn refuse(pid: Pid, ino: u64, why: impl Into<String>) -> Error {
    Error::unsupported(
        pid,
        format!("net namespace net:[{ino}]"),
        format!(
            "{}; only a new network namespace with nothing but its loopback device is supported yet",
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

/// Checks the network namespace `ino` of `pid` (the tree's root) and
/// returns what the images keep of it.
pub fn check(pid: Pid, ino: u64) -> Result<NetNs> {
    // Devices: /proc/PID/net/dev, two header lines, then "name: stats".
    let dev = net_file(pid, "dev")?;
    let names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect();
    if let Some(other) = names.iter().find(|n| *n != "lo") {
        return Err(refuse(
            pid,
            ino,
            format!("it has the network device {other:?}"),
        ));
    }
    if names.is_empty() {
        return Err(refuse(pid, ino, "it has no loopback device"));
    }
    // IPv4 routes of the main table: none (lo's are in the local table).
    if let Some(l) = net_file(pid, "route")?.lines().nth(1) {
        return Err(refuse(
            pid,
            ino,
            format!("it has the IPv4 route {:?}", l.trim()),
        ));
    }
    // IPv6: only ::1 on lo, and only routes through lo.
    if let Ok(text) = net_file(pid, "if_inet6") {
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() != Some(&"00000000000000000000000000000001") || w.last() != Some(&"lo") {
                return Err(refuse(
                    pid,
                    ino,
                    format!("it has the IPv6 address {:?}", l.trim()),
                ));
            }
        }
    }
    if let Ok(text) = net_file(pid, "ipv6_route") {
        if let Some(l) = text
            .lines()
            .find(|l| l.split_whitespace().last() != Some("lo"))
        {
            return Err(refuse(
                pid,
                ino,
                format!("it has the IPv6 route {:?}", l.trim()),
            ));
        }
    }
    // Legacy firewall tables, once made in the namespace.
    for f in ["ip_tables_names", "ip6_tables_names"] {
        if let Some(t) = net_file(pid, f)
            .ok()
            .and_then(|t| t.lines().next().map(String::from))
        {
            return Err(refuse(pid, ino, format!("it has the {f} table {t:?}")));
        }
    }
    // nftables: any rule, or else any table, even empty (its chains and
    // sets would not come back either).
    let (rules, tables) = in_netns(pid, "its nftables ruleset (nfnetlink)", |_| {
        crate::sys::nftables::ruleset()
    })?;
    if let Some(r) = rules.first() {
        return Err(refuse(
            pid,
            ino,
            format!(
                "its nftables ruleset is not empty: {} rule(s), the first in table {} {} (chain {})",
                rules.len(),
                r.family,
                r.table,
                r.chain.as_deref().unwrap_or("?")
            ),
        ));
    }
    if let Some(t) = tables.first() {
        return Err(refuse(
            pid,
            ino,
            format!(
                "its nftables ruleset is not empty: it has the table {} {}",
                t.family, t.table
            ),
        ));
    }
    let lo = in_netns(pid, "its loopback device (ioctl)", |sock| {
        let name = "lo";
        let flags = crate::sys::netdev::flags(sock, name)?;
        let mtu = crate::sys::netdev::mtu(sock, name)?;
        let ifindex = crate::sys::netdev::index(sock, name)?;
        let v4 = crate::sys::netdev::ipv4_addr(sock, name)?;
        Ok((flags, mtu, ifindex, v4))
    })?;
    let (flags, mtu, ifindex, v4) = lo;
    let up = flags & libc::IFF_UP as u32 != 0;
    let want_v4 = if up { Some([127, 0, 0, 1]) } else { None };
    if v4 != want_v4 {
        return Err(refuse(
            pid,
            ino,
            format!("its loopback device has the IPv4 address {v4:?}, not {want_v4:?}"),
        ));
    }
    debug!(
        "pid {pid}: net:[{ino}] has only lo ({}, mtu {mtu})",
        if up { "up" } else { "down" }
    );
    Ok(NetNs {
        devices: vec![pb::NetDeviceEntry {
            r#type: pb::NdType::Loopback as i32,
            ifindex,
            mtu,
            flags,
            name: "lo".into(),
            address: None,
        }],
    })
}

/// Runs `f` with a datagram socket of `pid`'s network namespace, in a
/// short-lived thread that joins it (setns of a network namespace changes
/// only the calling thread).
fn in_netns<T: Send>(
    pid: Pid,
    what: &str,
    f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> nix::Result<T> + Send,
) -> Result<T> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its network namespace"), e))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys(pid, "setns into its network namespace", e))?;
            let sock = crate::sys::netdev::inet_dgram()
                .map_err(|e| Error::sys(pid, "socket in its network namespace", e))?;
            f(sock.as_fd()).map_err(|e| Error::sys(pid, what, e))
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
