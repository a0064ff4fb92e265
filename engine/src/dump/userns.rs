//! A user namespace of the tree's own: its uid and gid maps and its
//! setgroups switch, into `userns-N.img` (CRIU's `userns_entry`, with
//! ckpt's `ckpt_setgroups_deny`).
//!
//! The restore makes it first and every other namespace of the tree from
//! inside it, so it must be one a level below the engine's (nested user
//! namespaces are refused), and every namespace the tree owns must be
//! owned by it (one made by the host before the user namespace could not
//! be made again that way).
//!
//! Credentials are kept as the tree sees them, as CRIU's parasite reads
//! them inside the task: the engine reads them from /proc/PID/status,
//! which shows them as the reader's user namespace does, and maps them
//! back through the namespace's maps (`to_inside`). Capabilities are
//! relative to the task's own user namespace already.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::sys::NsGet;

/// The id the kernel shows for an id with no mapping (overflowuid).
const OVERFLOW_ID: u32 = 65534;

/// Checks the root's user namespace (module doc) and reads it. `engine`
/// holds the engine's namespaces, `owned` the kinds the tree owns besides
/// its user namespace.
pub fn check(root: Pid, engine: &BTreeMap<String, u64>, owned: &[&str]) -> Result<pb::UsernsEntry> {
    let ns_file = |kind: &str| -> Result<std::fs::File> {
        let path = format!("/proc/{root}/ns/{kind}");
        std::fs::File::open(&path)
            .map_err(|e| Error::io(&path, format!("pid {root}: its {kind} namespace"), e))
    };
    let ino_of = |f: &std::fs::File, what: &str| -> Result<u64> {
        f.metadata()
            .map(|m| m.ino())
            .map_err(|e| Error::io(what, format!("pid {root}: fstat of {what}"), e))
    };
    let user = ns_file("user")?;
    let mine = ino_of(&user, "its user namespace")?;
    let what = format!("user namespace user:[{mine}]");
    let parent = crate::sys::ns_get(user.as_fd(), NsGet::Parent)
        .map_err(|e| Error::sys(root, format!("NS_GET_PARENT of its {what}"), e))?;
    let parent = ino_of(&std::fs::File::from(parent), "the parent user namespace")?;
    if Some(&parent) != engine.get("user") {
        return Err(Error::unsupported(
            root,
            what,
            format!(
                "its parent is user:[{parent}], not the engine's user:[{}]: nested user \
                 namespaces are not supported yet",
                engine.get("user").copied().unwrap_or(0)
            ),
        ));
    }
    for kind in owned {
        let f = ns_file(kind)?;
        let owner = crate::sys::ns_get(f.as_fd(), NsGet::Owner)
            .map_err(|e| Error::sys(root, format!("NS_GET_USERNS of its {kind} namespace"), e))?;
        let owner = ino_of(&std::fs::File::from(owner), "the owner of a namespace")?;
        if owner != mine {
            return Err(Error::unsupported(
                root,
                format!("{kind} namespace of {what}"),
                format!(
                    "it is owned by user:[{owner}], not by the tree's user:[{mine}]; the restore \
                     makes every namespace of the tree inside the tree's user namespace"
                ),
            ));
        }
    }
    let read = |name: &str| -> Result<String> {
        let path = format!("/proc/{root}/{name}");
        std::fs::read_to_string(&path)
            .map_err(|e| Error::io(&path, format!("pid {root}: its {what}"), e))
    };
    let uid_map = parse_map(root, "uid_map", &read("uid_map")?)?;
    let gid_map = parse_map(root, "gid_map", &read("gid_map")?)?;
    let deny = match read("setgroups")?.trim() {
        "deny" => true,
        "allow" => false,
        other => {
            return Err(Error::task(
                root,
                format!("/proc/{root}/setgroups"),
                format!("unknown value {other:?}"),
            ))
        }
    };
    Ok(pb::UsernsEntry {
        uid_map,
        gid_map,
        ckpt_setgroups_deny: deny.then_some(true),
    })
}

/// The lines "FIRST LOWER_FIRST COUNT" of a uid_map or gid_map.
fn parse_map(root: Pid, name: &str, text: &str) -> Result<Vec<pb::UidGidExtent>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let n: Vec<u32> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            match n[..] {
                [first, lower_first, count] => Ok(pb::UidGidExtent {
                    first,
                    lower_first,
                    count,
                }),
                _ => Err(Error::task(
                    root,
                    format!("/proc/{root}/{name}"),
                    format!("cannot parse {line:?}"),
                )),
            }
        })
        .collect()
}

/// The id inside the namespace of `id` outside it (the overflow id when
/// unmapped, as the kernel shows it).
pub fn inside(map: &[pb::UidGidExtent], id: u32) -> u32 {
    map.iter()
        .find(|e| id >= e.lower_first && id - e.lower_first < e.count)
        .map_or(OVERFLOW_ID, |e| e.first + (id - e.lower_first))
}

/// Credentials read from outside, as seen inside user namespace `u`.
pub fn to_inside(u: &pb::UsernsEntry, c: &mut pb::CredsEntry) {
    for id in [&mut c.uid, &mut c.euid, &mut c.suid, &mut c.fsuid] {
        *id = inside(&u.uid_map, *id);
    }
    for id in [&mut c.gid, &mut c.egid, &mut c.sgid, &mut c.fsgid] {
        *id = inside(&u.gid_map, *id);
    }
    for g in c.groups.iter_mut() {
        *g = inside(&u.gid_map, *g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(first: u32, lower_first: u32, count: u32) -> pb::UidGidExtent {
        pb::UidGidExtent {
            first,
            lower_first,
            count,
        }
    }

    #[test]
    fn ids_map_back_through_the_extents() {
        let map = vec![ext(0, 100000, 1000), ext(1000, 300000, 500)];
        assert_eq!(inside(&map, 100000), 0);
        assert_eq!(inside(&map, 100999), 999);
        assert_eq!(inside(&map, 101000), OVERFLOW_ID);
        assert_eq!(inside(&map, 300001), 1001);
        assert_eq!(inside(&map, 0), OVERFLOW_ID);
    }

    #[test]
    fn maps_parse_and_bad_lines_name_the_file() {
        let m = parse_map(7, "uid_map", "         0     100000       1000\n").unwrap();
        assert_eq!(m, vec![ext(0, 100000, 1000)]);
        let e = parse_map(7, "gid_map", "0 1\n").unwrap_err().to_string();
        assert!(e.contains("/proc/7/gid_map"), "{e}");
    }
}
