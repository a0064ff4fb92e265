//! The user namespaces of the tree: their uid and gid maps and setgroups
//! switch, into `userns-N.img` (CRIU's `userns_entry`, with ckpt's
//! `ckpt_setgroups_deny` and `ckpt_parent_id`), one per namespace.
//!
//! The root's own (`check`) is made first at restore and every other
//! namespace of the tree from inside it, so it must be one a level below
//! the engine's, and every namespace the tree owns must be owned by it
//! (one made by the host before the user namespace could not be made
//! again that way).
//!
//! Namespaces below the root's (`collect`: a task that unshared
//! CLONE_NEWUSER, at any depth, several siblings) are made by the restore
//! parent first, each from a process in its parent, and each task enters
//! its own once its children are forked (restore/userns.rs). So a task in
//! one must be in the root's namespaces of every other kind but UTS (a
//! namespace it owns would be made by the restore in the root's user
//! namespace; UTS namespaces are made in their owner: dump/ns.rs),
//! single-threaded (threads are cloned with their tids in a pid namespace
//! the task has no power in), and every namespace between it and the
//! root's must hold a task of the tree (its maps are read through one).
//!
//! A map is stored relative to the namespace's parent, as the kernel
//! takes it when written from there. /proc/PID/uid_map shows it relative
//! to the reader's namespace instead (the engine's): a map of a namespace
//! two levels down is translated through its parent's (`relative_to`).
//!
//! Credentials are kept as the task's own namespace sees them, as CRIU's
//! parasite reads them inside the task: the engine reads them from
//! /proc/PID/status, which shows them as the reader's user namespace
//! does, and maps them back through the namespace's maps (`to_inside`).
//! Capabilities are relative to the task's own user namespace already.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::sys::NsGet;

/// The id the kernel shows for an id with no mapping (overflowuid).
const OVERFLOW_ID: u32 = 65534;

/// Checks the root's user namespace (module doc) and reads it. `engine`
/// holds the engine's namespaces, `owned` the kinds the tree owns besides
/// its user namespace.
pub fn check(root: Pid, engine: &BTreeMap<String, u64>, owned: &[&str]) -> Result<()> {
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
    Ok(())
}

/// The maps and setgroups of `pid`'s user namespace as the engine sees
/// them (lower ids in the engine's namespace).
fn read(pid: Pid, what: &str) -> Result<pb::UsernsEntry> {
    let read = |name: &str| -> Result<String> {
        let path = format!("/proc/{pid}/{name}");
        std::fs::read_to_string(&path)
            .map_err(|e| Error::io(&path, format!("pid {pid}: its {what}"), e))
    };
    let uid_map = parse_map(pid, "uid_map", &read("uid_map")?)?;
    let gid_map = parse_map(pid, "gid_map", &read("gid_map")?)?;
    let deny = match read("setgroups")?.trim() {
        "deny" => true,
        "allow" => false,
        other => {
            return Err(Error::task(
                pid,
                format!("/proc/{pid}/setgroups"),
                format!("unknown value {other:?}"),
            ))
        }
    };
    Ok(pb::UsernsEntry {
        uid_map,
        gid_map,
        ckpt_setgroups_deny: deny.then_some(true),
        ckpt_parent_id: None,
    })
}

/// One user namespace of the tree.
struct UserNs {
    ino: u64,
    /// Its parent's inode; `None`: the engine's.
    parent: Option<u64>,
    /// Its maps as the engine sees them (lower ids in the engine's).
    seen: pb::UsernsEntry,
    /// Its maps relative to its parent, as the image holds them.
    entry: pb::UsernsEntry,
}

/// Every user namespace of a tree but the engine's, parents first.
#[derive(Default)]
pub struct TreeUserns {
    list: Vec<UserNs>,
    /// Task -> its user namespace's inode.
    of_task: BTreeMap<Pid, u64>,
    /// The root's.
    root: u64,
}

/// One task's user namespace and what else `collect` checks of it.
pub struct TaskUser {
    pub pid: Pid,
    pub ino: u64,
    /// Its namespaces of the other kinds, `*_for_children` included.
    pub others: BTreeMap<String, u64>,
    pub threads: usize,
}

/// The user namespaces of the live tasks (`tasks`, the root first), checked
/// against the rules of the module doc; `engine` is the engine's.
pub fn collect(tasks: &[TaskUser], engine: u64) -> Result<TreeUserns> {
    let root = &tasks[0];
    let mut out = TreeUserns {
        root: root.ino,
        ..Default::default()
    };
    let mut parents: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    let mut first: Vec<(u64, Pid)> = Vec::new();
    for t in tasks {
        out.of_task.insert(t.pid, t.ino);
        if t.ino == engine || parents.contains_key(&t.ino) {
            if t.ino == engine && root.ino != engine {
                return Err(Error::unsupported(
                    t.pid,
                    format!("user namespace user:[{engine}]"),
                    format!(
                        "it is in the engine's user namespace, above the tree's user:[{}]",
                        root.ino
                    ),
                ));
            }
            continue;
        }
        let what = format!("user namespace user:[{}]", t.ino);
        let path = format!("/proc/{}/ns/user", t.pid);
        let f = std::fs::File::open(&path)
            .map_err(|e| Error::io(&path, format!("pid {}: its {what}", t.pid), e))?;
        let parent = crate::sys::ns_get(f.as_fd(), NsGet::Parent)
            .map_err(|e| Error::sys(t.pid, format!("NS_GET_PARENT of its {what}"), e))?;
        let parent = std::fs::File::from(parent)
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| Error::io(&path, format!("pid {}: its parent namespace", t.pid), e))?;
        parents.insert(t.ino, (parent != engine).then_some(parent));
        first.push((t.ino, t.pid));
    }
    for t in tasks.iter().filter(|t| t.ino != root.ino) {
        let what = format!("user namespace user:[{}]", t.ino);
        let refuse = |why: String| Error::unsupported(t.pid, what.clone(), why);
        let up = parents[&t.ino];
        match up {
            Some(p) if parents.contains_key(&p) => {}
            _ if up.is_none() && root.ino == engine => {}
            _ => {
                return Err(refuse(format!(
                    "its parent user:[{}] has no task of the tree in it, so its maps cannot \
                     be read (a namespace made and left, or joined from outside the tree)",
                    up.unwrap_or(engine)
                )))
            }
        }
        if t.threads > 1 {
            return Err(refuse(format!(
                "it has {} threads: threads are cloned with their tids in the root's pid \
                 namespace, where a task in a user namespace below the root's has no power; \
                 not supported yet",
                t.threads
            )));
        }
        for (kind, &ino) in &t.others {
            let base = kind.strip_suffix("_for_children").unwrap_or(kind);
            // UTS namespaces below the root's: dump/ns.rs `nested_uts`.
            if base != "user" && base != "uts" && root.others.get(base) != Some(&ino) {
                return Err(refuse(format!(
                    "its {kind} namespace {base}:[{ino}] is not the root's: the restore makes a \
                     namespace inside the tree in the root's user namespace, so one owned by a \
                     user namespace below it is not supported yet"
                )));
            }
        }
    }
    // Parents first: by depth below the engine's.
    let depth = |mut ino: u64| {
        let mut d = 0;
        while let Some(Some(p)) = parents.get(&ino) {
            ino = *p;
            d += 1;
        }
        d
    };
    first.sort_by_key(|&(ino, _)| depth(ino));
    for (ino, pid) in first {
        let what = format!("user namespace user:[{ino}]");
        let seen = read(pid, &what)?;
        let parent = parents[&ino];
        let mut entry = seen.clone();
        if let Some(p) = parent {
            let up = &out
                .list
                .iter()
                .find(|u| u.ino == p)
                .expect("parents first")
                .seen;
            for (name, map, pmap) in [
                ("uid_map", &mut entry.uid_map, &up.uid_map),
                ("gid_map", &mut entry.gid_map, &up.gid_map),
            ] {
                *map = relative_to(map, pmap).ok_or_else(|| {
                    Error::task(
                        pid,
                        format!("/proc/{pid}/{name}"),
                        format!("its {what} maps ids its parent user:[{p}] does not"),
                    )
                })?;
            }
        }
        out.list.push(UserNs {
            ino,
            parent,
            seen,
            entry,
        });
    }
    Ok(out)
}

/// A map whose lower ids are in the engine's namespace (`map`), made
/// relative to its parent namespace, whose own map, also seen from the
/// engine, is `parent`. An extent crossing the parent's extents is split.
/// `None` when an id is not mapped in the parent.
fn relative_to(
    map: &[pb::UidGidExtent],
    parent: &[pb::UidGidExtent],
) -> Option<Vec<pb::UidGidExtent>> {
    let mut out = Vec::new();
    for e in map {
        let mut done = 0;
        while done < e.count {
            let x = e.lower_first + done;
            let p = parent
                .iter()
                .find(|p| x >= p.lower_first && x - p.lower_first < p.count)?;
            let n = (e.count - done).min(p.count - (x - p.lower_first));
            out.push(pb::UidGidExtent {
                first: e.first + done,
                lower_first: p.first + (x - p.lower_first),
                count: n,
            });
            done += n;
        }
    }
    Some(out)
}

impl TreeUserns {
    /// Credentials of `pid` read from outside, as its own user namespace
    /// sees them (a zombie's, whose namespace cannot be read: as the
    /// root's, where the restore makes it).
    pub fn creds_inside(&self, pid: Pid, c: &mut pb::CredsEntry) {
        let ino = self.of_task.get(&pid).copied().unwrap_or(self.root);
        if let Some(u) = self.list.iter().find(|u| u.ino == ino) {
            to_inside(&u.seen, c);
        }
    }

    /// userns-N.img of each, N as in the ids of its tasks (`id_of` maps an
    /// inode to it).
    pub fn write_images(&self, dir: &ImageDir, mut id_of: impl FnMut(u64) -> u32) -> Result<()> {
        for u in &self.list {
            let entry = pb::UsernsEntry {
                ckpt_parent_id: u.parent.map(&mut id_of),
                ..u.entry.clone()
            };
            dir.write_image(&format!("userns-{}.img", id_of(u.ino)), &[entry])?;
        }
        Ok(())
    }
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
    mapped_inside(map, id).unwrap_or(OVERFLOW_ID)
}

/// The id inside the namespace of `id` outside it, None when unmapped.
pub fn mapped_inside(map: &[pb::UidGidExtent], id: u32) -> Option<u32> {
    map.iter()
        .find(|e| id >= e.lower_first && id - e.lower_first < e.count)
        .map(|e| e.first + (id - e.lower_first))
}

/// The id outside the namespace (in its parent) of `id` inside it, None
/// when unmapped.
pub fn mapped_outside(map: &[pb::UidGidExtent], id: u32) -> Option<u32> {
    map.iter()
        .find(|e| id >= e.first && id - e.first < e.count)
        .map(|e| e.lower_first + (id - e.first))
}

/// Credentials read from outside, as seen inside user namespace `u`.
fn to_inside(u: &pb::UsernsEntry, c: &mut pb::CredsEntry) {
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
    fn maps_two_levels_down_are_made_relative_to_the_parent() {
        // The parent maps 0..1000 to 100000.. and 1000..1500 to 300000..;
        // the child maps 0..10 to the parent's 995..1005, which the engine
        // sees as 100995..101000 and 300000..300005.
        let parent = vec![ext(0, 100000, 1000), ext(1000, 300000, 500)];
        let child = vec![ext(0, 100995, 5), ext(5, 300000, 5)];
        assert_eq!(
            relative_to(&child, &parent).unwrap(),
            vec![ext(0, 995, 5), ext(5, 1000, 5)]
        );
        // One extent crossing two of the parent's is split.
        let parent = vec![ext(0, 100000, 10), ext(20, 100010, 10)];
        let child = vec![ext(0, 100005, 10)];
        assert_eq!(
            relative_to(&child, &parent).unwrap(),
            vec![ext(0, 5, 5), ext(5, 20, 5)]
        );
        assert_eq!(relative_to(&[ext(0, 5, 1)], &parent), None);
    }

    #[test]
    fn maps_parse_and_bad_lines_name_the_file() {
        let m = parse_map(7, "uid_map", "         0     100000       1000\n").unwrap();
        assert_eq!(m, vec![ext(0, 100000, 1000)]);
        let e = parse_map(7, "gid_map", "0 1\n").unwrap_err().to_string();
        assert!(e.contains("/proc/7/gid_map"), "{e}");
    }
}
