//! Through which mount namespace a file opened by path is reached again.
//!
//! The restore reopens such a file by its name, so the name must be
//! resolved where the file was: the fd's mount (fdinfo `mnt_id`; mount
//! ids are unique across namespaces) is looked up
//! - in the task's own mount namespace (as /proc/PID/mountinfo lists it):
//!   the task reopens the name in its restored namespace;
//! - else in the engine's (a tree with a namespace of its own holding an
//!   fd the host opened before the tree unshared, such as the stdio a
//!   container runtime passes in): the restore opens the name as the host
//!   sees it before it makes the tree's namespaces, and hands the fd in;
//! - else the mount was unmounted since the file was opened (a
//!   container's old root after pivot_root and a lazy umount) or is of
//!   another namespace, and the name the kernel gives is relative to that
//!   mount. The same inode by that name in the task's root (a directory
//!   of the old root bound into the new one) is reopened there, or else
//!   the same inode by that name on the host; if neither, no namespace the
//!   restore can reach has the file by that name, and the dump refuses
//!   it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use crate::error::{Pid, Result};

/// Where a file's mount is, seen from the task holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The task reopens the name in its own root: it shares the engine's
    /// mount namespace, or the name finds the same inode there.
    ByName,
    /// A mount of the task's own namespace (its id, for the image).
    Tree(u64),
    /// A mount of the engine's namespace, not of the task's.
    Host,
    /// A mount of neither.
    Nowhere,
}

/// The mount ids of each namespace seen so far, read once per dump.
#[derive(Default)]
pub struct Mounts {
    /// The engine's namespace: its inode and mount ids.
    host: Option<(u64, BTreeSet<u64>)>,
    /// Mount ids of the tasks' namespaces, by namespace inode.
    by_ns: BTreeMap<u64, BTreeSet<u64>>,
}

impl Mounts {
    /// Where `mnt_id`, the mount of one of `pid`'s files, is; `name` is
    /// the file's link and `meta` its fstat, to find it by name on a
    /// mount of neither namespace (module doc).
    pub fn reach(
        &mut self,
        pid: Pid,
        mnt_id: u64,
        name: &[u8],
        meta: &std::fs::Metadata,
    ) -> Result<Reach> {
        if self.host.is_none() {
            let me = std::process::id() as Pid;
            let ns = crate::proc::ns::ns_id(me, "mnt")?;
            self.host = Some((ns, ids(me)?));
        }
        let (host_ns, host_ids) = self.host.as_ref().expect("read above");
        let ns = crate::proc::ns::ns_id(pid, "mnt")?;
        if ns == *host_ns {
            return Ok(Reach::ByName);
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.by_ns.entry(ns) {
            e.insert(ids(pid)?);
        }
        let same = |at: &std::path::Path| {
            std::fs::metadata(at).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        };
        let name = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
        let in_root = format!("/proc/{pid}/root");
        Ok(if self.by_ns[&ns].contains(&mnt_id) {
            Reach::Tree(mnt_id)
        } else if host_ids.contains(&mnt_id) {
            Reach::Host
        } else if !name.is_absolute() {
            Reach::Nowhere
        } else if same(&std::path::Path::new(&in_root).join(name.strip_prefix("/").unwrap_or(name)))
        {
            Reach::ByName
        } else if same(name) {
            Reach::Host
        } else {
            Reach::Nowhere
        })
    }
}

/// The mount ids `pid`'s mountinfo lists.
fn ids(pid: Pid) -> Result<BTreeSet<u64>> {
    let mounts = crate::proc::mountinfo::read(pid)?;
    Ok(mounts.iter().map(|m| m.mnt_id).collect())
}
