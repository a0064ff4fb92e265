//! The tree's own namespaces (utsns-N.img, ipcns-var-N.img, pidns-N.img,
//! timens-N.img, mountpoints-N.img, netns-N.img with netdev-N.img and
//! the ifaddr, route, route6, rule and nftables images, userns-N.img) for
//! `ckpt show`: what each holds and which tasks are in it. Tasks in no
//! namespace image of a kind are in the host's.

use serde_json::{json, Value};

use crate::images::pb;
use crate::images::set::ImageSet;

/// The pids of the tasks whose ids put them in namespace `id` of `kind`.
fn members(set: &ImageSet, kind: &str, id: u32) -> Vec<u32> {
    set.tasks
        .iter()
        .filter(|t| {
            t.ids.as_ref().ok().is_some_and(|ids| {
                let theirs = match kind {
                    "uts" => ids.uts_ns_id,
                    "ipc" => ids.ipc_ns_id,
                    "pid" => ids.pid_ns_id,
                    "mnt" => ids.mnt_ns_id,
                    "net" => ids.net_ns_id,
                    "user" => ids.user_ns_id,
                    _ => ids.time_ns_id,
                };
                theirs == Some(id)
            })
        })
        .map(|t| t.tree.pid)
        .collect()
}

fn tasks_text(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "no task".to_string();
    }
    let p: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("tasks {}", p.join(", "))
}

fn ipc_vars(v: &pb::IpcVarEntry) -> String {
    let sem: Vec<String> = v.sem_ctls.iter().map(u32::to_string).collect();
    format!(
        "sem {}  msgmax {}  msgmnb {}  msgmni {}  shmmax {}  shmall {}  shmmni {}  shm_rmid_forced {}  mqueue {}/{}/{}",
        sem.join(" "),
        v.msg_ctlmax,
        v.msg_ctlmnb,
        v.msg_ctlmni,
        v.shm_ctlmax,
        v.shm_ctlall,
        v.shm_ctlmni,
        v.shm_rmid_forced,
        v.mq_queues_max,
        v.mq_msg_max,
        v.mq_msgsize_max
    )
}

/// The text section: (indent, line) pairs; empty without namespace images.
pub fn text(set: &ImageSet) -> Vec<(usize, String)> {
    let ns = &set.namespaces;
    if ns.is_empty() {
        return Vec::new();
    }
    let mut out = vec![(0, "Namespaces of the tree's own".to_string())];
    for (&id, part) in &ns.uts {
        let what = match part {
            Ok(u) => format!("hostname {:?}  domainname {:?}", u.nodename, u.domainname),
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "uts ns {id}: {what}  ({})",
                tasks_text(&members(set, "uts", id))
            ),
        ));
    }
    for (&id, part) in &ns.ipc {
        let what = match part {
            Ok(v) => ipc_vars(v),
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "ipc ns {id}: {what}  ({})",
                tasks_text(&members(set, "ipc", id))
            ),
        ));
    }
    for (&id, part) in &ns.user {
        out.push((
            2,
            format!("user ns {id}:  ({})", tasks_text(&members(set, "user", id))),
        ));
        match part {
            Ok(u) => {
                let parent = match u.ckpt_parent_id {
                    Some(p) => format!("user ns {p}"),
                    None => "the dumping engine's".into(),
                };
                out.push((4, format!("parent {parent} (lower ids are its)")));
                for (name, map) in [("uid_map", &u.uid_map), ("gid_map", &u.gid_map)] {
                    out.push((4, format!("{name} (inside  outside  count)")));
                    for e in map {
                        out.push((6, format!("{} {} {}", e.first, e.lower_first, e.count)));
                    }
                }
                let sg = match u.ckpt_setgroups_deny {
                    Some(true) => "deny",
                    _ => "allow",
                };
                out.push((4, format!("setgroups {sg}")));
            }
            Err(e) => out.push((4, e.to_string())),
        }
    }
    for (&id, part) in &ns.pid {
        let what = match part {
            Ok(p) => match &p.ext_key {
                Some(k) => format!("external, key {k:?}"),
                None => {
                    "made by the restore, its init the tree's root (pids as seen inside)".into()
                }
            },
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "pid ns {id}: {what}  ({})",
                tasks_text(&members(set, "pid", id))
            ),
        ));
    }
    for (&id, part) in &ns.time {
        let what = match part {
            Ok(t) => format!(
                "monotonic offset {}.{:09} s  boottime offset {}.{:09} s",
                t.monotonic.tv_sec as i64,
                t.monotonic.tv_nsec,
                t.boottime.tv_sec as i64,
                t.boottime.tv_nsec
            ),
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "time ns {id}: {what}  ({})",
                tasks_text(&members(set, "time", id))
            ),
        ));
    }
    for (&id, part) in &ns.mnt {
        match part {
            Ok(mounts) => {
                out.push((
                    2,
                    format!(
                        "mnt ns {id}: {} mounts, as a tree  ({})",
                        mounts.len(),
                        tasks_text(&members(set, "mnt", id))
                    ),
                ));
                for (depth, m) in mount_tree(mounts) {
                    out.push((4 + 2 * depth, mount_line(m)));
                }
            }
            Err(e) => out.push((2, format!("mnt ns {id}: {e}"))),
        }
    }
    for (&id, part) in &ns.net {
        let what = match part {
            Ok(n) => match &n.ext_key {
                Some(k) => format!("external, key {k:?}"),
                None => "made by the restore".to_string(),
            },
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "net ns {id}: {what}  ({})",
                tasks_text(&members(set, "net", id))
            ),
        ));
        match ns.netdev.get(&id) {
            Some(Ok(devs)) => {
                for d in devs {
                    out.push((4, device_line(d)));
                }
                for (what, lines) in net_config(ns, id, devs) {
                    match lines {
                        Ok(lines) => {
                            out.push((4, format!("{what}: {}", lines.len())));
                            out.extend(lines.into_iter().map(|l| (6, l)));
                        }
                        Err(e) => out.push((4, format!("{what}: {e}"))),
                    }
                }
            }
            Some(Err(e)) => out.push((4, e.to_string())),
            None => out.push((4, format!("no netdev-{id}.img"))),
        }
    }
    out
}

/// The name of an fstype code (`fsname` for one CRIU has no code for).
fn fstype_name(m: &pb::MntEntry) -> String {
    match pb::Fstype::try_from(m.fstype as i32) {
        Ok(pb::Fstype::Unsupported) | Err(_) => m
            .fsname
            .clone()
            .unwrap_or_else(|| format!("fstype {}", m.fstype)),
        Ok(f) => f.as_str_name().to_lowercase(),
    }
}

/// The MS_* flags of a mount, as mount(8) names them.
fn ms_flags(flags: u32) -> String {
    let names = [
        (libc::MS_RDONLY, "ro"),
        (libc::MS_NOSUID, "nosuid"),
        (libc::MS_NODEV, "nodev"),
        (libc::MS_NOEXEC, "noexec"),
        (libc::MS_NOATIME, "noatime"),
        (libc::MS_NODIRATIME, "nodiratime"),
        (libc::MS_RELATIME, "relatime"),
        (libc::MS_STRICTATIME, "strictatime"),
    ];
    let mut out: Vec<&str> = vec![if flags & libc::MS_RDONLY as u32 != 0 {
        "ro"
    } else {
        "rw"
    }];
    out.extend(
        names
            .iter()
            .skip(1)
            .filter(|(f, _)| flags & *f as u32 != 0)
            .map(|(_, n)| *n),
    );
    out.join(",")
}

fn mount_line(m: &pb::MntEntry) -> String {
    let mut line = format!(
        "{} {} {} ({}) [{}]",
        m.mnt_id,
        m.mountpoint,
        fstype_name(m),
        m.source,
        ms_flags(m.flags)
    );
    if m.root != "/" {
        line.push_str(&format!(" root {}", m.root));
    }
    if !m.options.is_empty() {
        line.push_str(&format!(" sb {}", m.options));
    }
    line.push_str(&format!(" {}", propagation(m)));
    if m.ext_key.is_some() {
        line.push_str(&format!(
            " external {:?}",
            m.ext_key.as_deref().unwrap_or("")
        ));
    } else if m.ext_mount == Some(true) {
        line.push_str(" (the host's, copied at restore)");
    }
    line
}

/// A mount's propagation as mountinfo spells it (`private` for none).
fn propagation(m: &pb::MntEntry) -> String {
    let mut out = Vec::new();
    if let Some(p) = m.shared_id {
        out.push(format!("shared:{p}"));
    }
    if let Some(p) = m.master_id {
        out.push(format!("master:{p}"));
    }
    if m.flags & libc::MS_UNBINDABLE as u32 != 0 {
        out.push("unbindable".into());
    }
    if out.is_empty() {
        out.push("private".into());
    }
    out.join(" ")
}

/// The mounts in depth-first order under their parents (a mount whose
/// parent is not in the image is a top), each with its depth; each
/// mount's children in the order they were made.
fn mount_tree(mounts: &[pb::MntEntry]) -> Vec<(usize, &pb::MntEntry)> {
    let ids: std::collections::BTreeSet<u32> = mounts.iter().map(|m| m.mnt_id).collect();
    let mut out = Vec::with_capacity(mounts.len());
    let mut seen = std::collections::BTreeSet::new();
    fn walk<'a>(
        all: &'a [pb::MntEntry],
        m: &'a pb::MntEntry,
        depth: usize,
        seen: &mut std::collections::BTreeSet<u32>,
        out: &mut Vec<(usize, &'a pb::MntEntry)>,
    ) {
        if !seen.insert(m.mnt_id) {
            return;
        }
        out.push((depth, m));
        for c in all
            .iter()
            .filter(|c| c.parent_mnt_id == m.mnt_id && c.mnt_id != m.mnt_id)
        {
            walk(all, c, depth + 1, seen, out);
        }
    }
    for m in mounts {
        if !ids.contains(&m.parent_mnt_id) || m.parent_mnt_id == m.mnt_id {
            walk(mounts, m, 0, &mut seen, &mut out);
        }
    }
    // A cycle of parents has no top: shown flat at the end.
    for m in mounts {
        if !seen.contains(&m.mnt_id) {
            seen.insert(m.mnt_id);
            out.push((0, m));
        }
    }
    out
}

fn iff_flags(flags: u32) -> String {
    let names = [
        (libc::IFF_UP, "UP"),
        (libc::IFF_BROADCAST, "BROADCAST"),
        (libc::IFF_LOOPBACK, "LOOPBACK"),
        (libc::IFF_POINTOPOINT, "POINTOPOINT"),
        (libc::IFF_RUNNING, "RUNNING"),
        (libc::IFF_NOARP, "NOARP"),
        (libc::IFF_PROMISC, "PROMISC"),
        (libc::IFF_MULTICAST, "MULTICAST"),
    ];
    let known: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags & *f as u32 != 0)
        .map(|(_, n)| *n)
        .collect();
    let rest = flags & !names.iter().fold(0, |a, (f, _)| a | *f as u32);
    match (known.is_empty(), rest) {
        (true, 0) => "none".to_string(),
        (false, 0) => known.join(","),
        (_, r) => {
            let mut k = known;
            let r = format!("{r:#x}");
            k.push(&r);
            k.join(",")
        }
    }
}

fn device_type(d: &pb::NetDeviceEntry) -> String {
    pb::NdType::try_from(d.r#type)
        .map(|t| t.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type {}", d.r#type))
}

fn device_line(d: &pb::NetDeviceEntry) -> String {
    let mut line = format!(
        "link {} {}: {}  mtu {}  <{}>",
        d.ifindex,
        d.name,
        device_type(d),
        d.mtu,
        iff_flags(d.flags)
    );
    if let Some(a) = d.address.as_ref().filter(|a| !a.is_empty()) {
        let hex: Vec<String> = a.iter().map(|b| format!("{b:02x}")).collect();
        line.push_str(&format!("  address {}", hex.join(":")));
    }
    if let Some(p) = d.peer_ifindex {
        line.push_str(&format!("  peer {p}"));
    }
    if crate::restore::netns::is_external(d) {
        line.push_str(&format!(
            "  external, other end {} outside",
            d.ckpt_peer_name.as_deref().unwrap_or("(name unknown)")
        ));
    }
    line
}

/// The addresses, routes, rules and nftables tables of network
/// namespace `id` (devices `devs`), each as `ip`'s or nft's words, or
/// the problem with its image. Absent images hold none.
fn net_config(
    ns: &crate::images::set::Namespaces,
    id: u32,
    devs: &[pb::NetDeviceEntry],
) -> Vec<(&'static str, Result<Vec<String>, String>)> {
    use crate::sys::rtnetlink as rtnl;
    let dev = |i: u32| {
        devs.iter()
            .find(|d| d.ifindex == i)
            .map_or(format!("index {i}"), |d| d.name.clone())
    };
    let raw = |prefix: &str| -> Result<Vec<u8>, String> {
        match ns.netraw.get(&id).and_then(|m| m.get(prefix)) {
            None => Ok(vec![]),
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err(e)) => Err(e.to_string()),
        }
    };
    let msgs = |prefix: &str, magic: u32, ty: u16| -> Result<Vec<Vec<u8>>, String> {
        rtnl::load(&raw(prefix)?, magic, ty).map_err(|e| format!("{prefix}-{id}.img: {e}"))
    };
    let each = |ms: Vec<Vec<u8>>,
                f: &dyn Fn(&[u8]) -> nix::Result<String>|
     -> Result<Vec<String>, String> {
        ms.iter()
            .map(|m| f(m).map_err(|e| format!("a malformed message ({e})")))
            .collect()
    };
    let addrs = msgs("ifaddr", rtnl::IFADDR_MAGIC, rtnl::RTM_NEWADDR).and_then(|ms| {
        each(ms, &|m| {
            let a = rtnl::parse_addr(m)?;
            let addr = a.addr.map_or("?".to_string(), |x| x.to_string());
            let nodad = if a.flags & rtnl::IFA_F_NODAD != 0 {
                " nodad"
            } else {
                ""
            };
            Ok(format!(
                "{addr}/{} dev {} scope {}{nodad}",
                a.prefix,
                dev(a.index),
                a.scope
            ))
        })
    });
    let routes = msgs("route", rtnl::ROUTE_MAGIC, rtnl::RTM_NEWROUTE).and_then(|mut v4| {
        v4.extend(msgs("route6", rtnl::ROUTE_MAGIC, rtnl::RTM_NEWROUTE)?);
        each(v4, &|m| {
            let r = rtnl::parse_route(m)?;
            let mut l = match r.dst {
                Some(d) => format!("{d}/{}", r.dst_len),
                None => "default".to_string(),
            };
            if let Some(g) = r.gateway {
                l.push_str(&format!(" via {g}"));
            }
            if let Some(o) = r.oif {
                l.push_str(&format!(" dev {}", dev(o)));
            }
            l.push_str(&format!(" table {} proto {}", r.table, r.protocol));
            Ok(l)
        })
    });
    let rules = msgs("rule", rtnl::ROUTE_MAGIC, rtnl::RTM_NEWRULE).and_then(|ms| {
        each(ms, &|m| {
            let r = rtnl::parse_rule(m)?;
            let side = |s: Option<(std::net::IpAddr, u8)>| {
                s.map_or("all".to_string(), |(a, l)| format!("{a}/{l}"))
            };
            let v = if r.family as i32 == libc::AF_INET6 {
                "v6 "
            } else {
                ""
            };
            let to = r
                .dst
                .map_or(String::new(), |d| format!(" to {}", side(Some(d))));
            Ok(format!(
                "{v}{}: from {}{to} lookup {}",
                r.priority,
                side(r.src),
                r.table
            ))
        })
    });
    let nft = raw("nftables").and_then(|b| {
        let text = String::from_utf8(b).map_err(|_| format!("nftables-{id}.img: not text"))?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("table "))
            .map(|l| l.trim_end_matches(" {").to_string())
            .collect())
    });
    vec![
        ("addresses", addrs),
        ("routes", routes),
        ("rules", rules),
        ("nftables", nft),
    ]
}

/// The JSON section.
pub fn json(set: &ImageSet) -> Value {
    let ns = &set.namespaces;
    let ok = |r: Result<Value, String>| r.unwrap_or_else(|e| json!({ "problem": e }));
    let uts: Vec<Value> = ns
        .uts
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "uts", id),
                "value": ok(p.as_ref().map(|u| json!({"nodename": u.nodename, "domainname": u.domainname})).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let ipc: Vec<Value> = ns
        .ipc
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "ipc", id),
                "value": ok(p.as_ref().map(|v| json!({
                    "sem": v.sem_ctls, "msgmax": v.msg_ctlmax, "msgmnb": v.msg_ctlmnb,
                    "msgmni": v.msg_ctlmni, "shmmax": v.shm_ctlmax, "shmall": v.shm_ctlall,
                    "shmmni": v.shm_ctlmni, "shm_rmid_forced": v.shm_rmid_forced,
                    "mq_queues_max": v.mq_queues_max, "mq_msg_max": v.mq_msg_max,
                    "mq_msgsize_max": v.mq_msgsize_max,
                })).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let pid: Vec<Value> = ns
        .pid
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "pid", id),
                "value": ok(p.as_ref().map(|p| json!({"ext_key": p.ext_key})).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let mnt: Vec<Value> = ns
        .mnt
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "mnt", id),
                "value": ok(p.as_ref().map(|ms| Value::Array(mount_tree(ms).into_iter().map(|(depth, m)| json!({
                    "depth": depth, "mnt_id": m.mnt_id, "parent_mnt_id": m.parent_mnt_id,
                    "mountpoint": m.mountpoint, "fstype": fstype_name(m), "source": m.source,
                    "root": m.root, "flags": ms_flags(m.flags), "options": m.options,
                    "shared_id": m.shared_id, "master_id": m.master_id, "ext_key": m.ext_key,
                    "propagation": propagation(m), "host_copy": m.ext_mount == Some(true),
                })).collect())).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let net: Vec<Value> = ns
        .net
        .iter()
        .map(|(&id, p)| {
            let devices = match ns.netdev.get(&id) {
                Some(Ok(ds)) => Value::Array(
                    ds.iter()
                        .map(|d| {
                            json!({
                                "ifindex": d.ifindex, "name": d.name, "type": device_type(d),
                                "mtu": d.mtu, "flags": iff_flags(d.flags),
                                "address": d.address.as_ref().map(|a| a.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")),
                                "peer_ifindex": d.peer_ifindex,
                                "external": crate::restore::netns::is_external(d),
                                "peer_name": d.ckpt_peer_name,
                            })
                        })
                        .collect(),
                ),
                Some(Err(e)) => json!({ "problem": e.to_string() }),
                None => json!({ "problem": format!("no netdev-{id}.img") }),
            };
            json!({
                "id": id,
                "tasks": members(set, "net", id),
                "value": ok(p.as_ref().map(|n| {
                    let mut v = json!({"ext_key": n.ext_key, "devices": devices});
                    if let Some(Ok(ds)) = ns.netdev.get(&id) {
                        for (what, lines) in net_config(ns, id, ds) {
                            v[what] = lines.map_or_else(|e| json!({ "problem": e }), |l| json!(l));
                        }
                    }
                    v
                }).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let extents = |m: &[pb::UidGidExtent]| -> Vec<Value> {
        m.iter()
            .map(|e| json!({"first": e.first, "lower_first": e.lower_first, "count": e.count}))
            .collect()
    };
    let user: Vec<Value> = ns
        .user
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "user", id),
                "value": ok(p.as_ref().map(|u| json!({
                    "parent": u.ckpt_parent_id,
                    "uid_map": extents(&u.uid_map),
                    "gid_map": extents(&u.gid_map),
                    "setgroups_deny": u.ckpt_setgroups_deny == Some(true),
                })).map_err(|e| e.to_string())),
            })
        })
        .collect();
    json!({ "uts": uts, "ipc": ipc, "pid": pid, "mnt": mnt, "net": net, "user": user })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{ImageWriter, Magic};

    #[test]
    fn shows_each_namespace() {
        let d = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(d.path().join("utsns-3.img"), Magic::Utsns).unwrap();
        w.write_entry(&pb::UtsnsEntry {
            nodename: "box".into(),
            domainname: "dom".into(),
        })
        .unwrap();
        w.finish().unwrap();
        let mut w = ImageWriter::create(d.path().join("pidns-4.img"), Magic::Pidns).unwrap();
        w.write_entry(&pb::PidnsEntry { ext_key: None }).unwrap();
        w.finish().unwrap();
        let set = ImageSet::read(d.path()).unwrap();
        let bad: Vec<&String> = set.problems.iter().filter(|p| p.contains("ns-")).collect();
        assert!(bad.is_empty(), "{bad:?}");
        let all: Vec<String> = text(&set).into_iter().map(|(_, l)| l).collect();
        let all = all.join("\n");
        assert!(
            all.contains("uts ns 3: hostname \"box\"  domainname \"dom\""),
            "{all}"
        );
        assert!(all.contains("pid ns 4: made by the restore"), "{all}");
        let j = json(&set);
        assert_eq!(j["uts"][0]["value"]["nodename"], "box");
    }

    /// A user namespace as the userns_maps case leaves it.
    #[test]
    fn shows_a_user_namespace_and_its_maps() {
        let d = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(d.path().join("userns-9.img"), Magic::Userns).unwrap();
        let ext = |first, lower_first, count| pb::UidGidExtent {
            first,
            lower_first,
            count,
        };
        w.write_entry(&pb::UsernsEntry {
            uid_map: vec![ext(0, 0, 1), ext(1, 200000, 5000)],
            gid_map: vec![ext(0, 0, 1), ext(1, 300000, 5000)],
            ckpt_setgroups_deny: Some(true),
            ckpt_parent_id: None,
        })
        .unwrap();
        w.finish().unwrap();
        // One below it, as the userns_nested case leaves it.
        let mut w = ImageWriter::create(d.path().join("userns-12.img"), Magic::Userns).unwrap();
        w.write_entry(&pb::UsernsEntry {
            uid_map: vec![ext(0, 1000, 10)],
            gid_map: vec![ext(0, 1000, 10)],
            ckpt_setgroups_deny: Some(true),
            ckpt_parent_id: Some(9),
        })
        .unwrap();
        w.finish().unwrap();
        let set = ImageSet::read(d.path()).unwrap();
        let lines: Vec<String> = text(&set)
            .into_iter()
            .map(|(i, l)| format!("{}{l}", " ".repeat(i)))
            .collect();
        insta::assert_snapshot!("userns_text", lines.join("\n"));
        insta::assert_json_snapshot!("userns_json", json(&set)["user"]);
    }

    fn mnt(id: u32, parent: u32, point: &str, fstype: i32, source: &str) -> pb::MntEntry {
        pb::MntEntry {
            fstype: fstype as u32,
            mnt_id: id,
            root_dev: 0,
            parent_mnt_id: parent,
            flags: (libc::MS_NOSUID | libc::MS_RELATIME) as u32,
            root: "/".into(),
            mountpoint: point.into(),
            source: source.into(),
            options: "rw".into(),
            sb_flags: Some(0),
            ..Default::default()
        }
    }

    /// A mount namespace as the `ns` flavour leaves it (out of order in
    /// the image, one filesystem without a code) and its network
    /// namespace with `lo`.
    fn mnt_and_net() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(d.path().join("mountpoints-5.img"), Magic::Mnts).unwrap();
        let mut ext4 = mnt(20, 1, "/", 0, "/dev/vda1");
        ext4.fsname = Some("ext4".into());
        ext4.flags = libc::MS_RELATIME as u32;
        let mut bind = mnt(24, 20, "/srv", 0, "/dev/vda1");
        bind.fsname = Some("ext4".into());
        bind.root = "/var/srv".into();
        bind.flags |= libc::MS_RDONLY as u32;
        bind.ext_mount = Some(true);
        // The tree's own: a shared tmpfs, its peer, a read-only slave and
        // an unbindable tmpfs.
        let mut shared = mnt(40, 20, "/mnt/a", pb::Fstype::Tmpfs as i32, "scratch");
        shared.root_dev = 0x2a;
        shared.options = "rw,size=4096k,mode=755".into();
        shared.shared_id = Some(3);
        let mut peer = shared.clone();
        (peer.mnt_id, peer.mountpoint) = (41, "/mnt/b".into());
        let mut slave = shared.clone();
        (slave.mnt_id, slave.mountpoint, slave.root) = (42, "/mnt/s".into(), "/sub".into());
        (slave.shared_id, slave.master_id) = (None, Some(3));
        slave.flags |= (libc::MS_RDONLY | libc::MS_NOEXEC) as u32;
        let mut unbindable = mnt(43, 20, "/mnt/u", pb::Fstype::Tmpfs as i32, "tmpfs");
        unbindable.flags |= libc::MS_UNBINDABLE as u32;
        for m in [
            ext4,
            mnt(21, 20, "/dev", pb::Fstype::Devtmpfs as i32, "udev"),
            mnt(22, 21, "/dev/pts", pb::Fstype::Devpts as i32, "devpts"),
            mnt(23, 20, "/sys", pb::Fstype::Sysfs as i32, "sysfs"),
            bind,
            mnt(30, 20, "/proc", pb::Fstype::Proc as i32, "proc"),
            shared.clone(),
            peer,
            slave,
            unbindable,
        ] {
            w.write_entry(&m).unwrap();
        }
        w.finish().unwrap();
        let mut w = ImageWriter::create(d.path().join("netns-6.img"), Magic::Netns).unwrap();
        w.write_entry(&pb::NetnsEntry::default()).unwrap();
        w.finish().unwrap();
        let mut w = ImageWriter::create(d.path().join("netdev-6.img"), Magic::Netdev).unwrap();
        w.write_entry(&pb::NetDeviceEntry {
            r#type: pb::NdType::Loopback as i32,
            ifindex: 1,
            mtu: 65536,
            flags: (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as u32,
            name: "lo".into(),
            address: Some(vec![0; 6]),
            ..Default::default()
        })
        .unwrap();
        w.write_entry(&pb::NetDeviceEntry {
            r#type: pb::NdType::Veth as i32,
            ifindex: 2,
            mtu: 1400,
            flags: (libc::IFF_UP | libc::IFF_BROADCAST) as u32,
            name: "zv0".into(),
            address: Some(vec![2, 0x11, 0x22, 0x33, 0x44, 0x55]),
            peer_ifindex: Some(3),
            ..Default::default()
        })
        .unwrap();
        // A veth whose other end was outside (--external veth[eth0]).
        w.write_entry(&pb::NetDeviceEntry {
            r#type: pb::NdType::Veth as i32,
            ifindex: 4,
            mtu: 1500,
            flags: (libc::IFF_UP | libc::IFF_BROADCAST) as u32,
            name: "eth0".into(),
            address: Some(vec![2, 0x11, 0x22, 0x33, 0x44, 0x66]),
            ckpt_peer_name: Some("vA".into()),
            ..Default::default()
        })
        .unwrap();
        w.finish().unwrap();
        net_raw(d.path());
        d
    }

    /// ifaddr/route/rule/nftables images of namespace 6: an address and a
    /// route on zv0, a rule, a table.
    fn net_raw(dir: &std::path::Path) {
        use crate::sys::netlink::Msg;
        use crate::sys::rtnetlink as rtnl;
        let mut ifa = Msg::new(rtnl::RTM_NEWADDR, 0, 1, &[2, 24, 0x80, 0, 2, 0, 0, 0]);
        ifa.attr(2, &[10, 77, 0, 1]);
        let mut rt = Msg::new(
            rtnl::RTM_NEWROUTE,
            0,
            1,
            &[2, 16, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0],
        );
        rt.attr(1, &[10, 78, 0, 0])
            .attr(5, &[10, 77, 0, 2])
            .attr(4, &2u32.to_ne_bytes());
        let mut ru = Msg::new(
            rtnl::RTM_NEWRULE,
            0,
            1,
            &[2, 0, 24, 0, 100, 0, 0, 0, 1, 0, 0, 0],
        );
        ru.attr(2, &[10, 77, 0, 0]).attr(6, &1000u32.to_ne_bytes());
        for (name, b) in [
            (
                "ifaddr-6.img",
                rtnl::save(rtnl::IFADDR_MAGIC, &[ifa.done()]),
            ),
            ("route-6.img", rtnl::save(rtnl::ROUTE_MAGIC, &[rt.done()])),
            ("rule-6.img", rtnl::save(rtnl::ROUTE_MAGIC, &[ru.done()])),
            ("nftables-6.img", b"table inet zdtm_nt {\n}\n".to_vec()),
        ] {
            std::fs::write(dir.join(name), b).unwrap();
        }
    }

    #[test]
    fn mount_tree_and_network_text() {
        let d = mnt_and_net();
        let set = ImageSet::read(d.path()).unwrap();
        let bad: Vec<&String> = set
            .problems
            .iter()
            .filter(|p| p.contains("ns-") || p.contains("mountpoints") || p.contains("netdev"))
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        let lines: Vec<String> = text(&set)
            .into_iter()
            .map(|(i, l)| format!("{}{l}", " ".repeat(i)))
            .collect();
        insta::assert_snapshot!("mnt_net_text", lines.join("\n"));
    }

    #[test]
    fn mount_tree_and_network_json() {
        let d = mnt_and_net();
        let set = ImageSet::read(d.path()).unwrap();
        let j = json(&set);
        insta::assert_json_snapshot!("mnt_net_json", json!({"mnt": j["mnt"], "net": j["net"]}));
    }

    #[test]
    fn a_mount_whose_parent_is_missing_is_a_top() {
        let ms = [
            mnt(3, 2, "/a/b", 5, "x"),
            mnt(2, 9, "/a", 5, "x"),
            mnt(4, 4, "/c", 5, "x"),
        ];
        let t: Vec<(usize, u32)> = mount_tree(&ms)
            .into_iter()
            .map(|(d, m)| (d, m.mnt_id))
            .collect();
        assert_eq!(t, vec![(0, 2), (1, 3), (0, 4)]);
    }
}
