//! A mount namespace of the tree's own, in the shape the `ns` flavour
//! gives it (zdtm/lib/ns.c): a private copy of the host's mounts, made
//! when the namespace was, with a new proc instance mounted on /proc
//! right after. The restore (restore/mntns.rs) makes the same: a private
//! copy of the host's mounts as they are then, and a /proc of the tree's
//! pid namespace.
//!
//! The kernel lists a namespace's mounts in the order they were made
//! (by their unique mount ids), so the namespace's own /proc is the last
//! mount of a tree that made none of its own, and the mounts before it
//! are the copies. The dump checks, and refuses otherwise naming the
//! task, the namespace and the first difference:
//! - the last mount is a proc on /proc that is not the host's;
//! - no mount propagates (shared or slave): ns.c makes them all private,
//!   and the restore makes them so;
//! - a copy whose mount point the host still has matches the host's
//!   mount there (fs type, source, root, options): a tree that remounted
//!   one would not get it back. A copy the host no longer has (unmounted
//!   there since the namespace was made) is left out by the restore,
//!   whose copy is of the host as it is then; nor is a mount the host
//!   made since a difference. Mounts the tree made itself, bind mounts
//!   or moved ones belong to full mount namespace support (the next step,
//!   which extends this module and mountpoints-N.img).
//!
//! The image is CRIU's: `mountpoints-N.img`, one `mnt_entry` per mount,
//! N the namespace's id in the tasks' ids.

use std::path::Path;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::mountinfo::{self, MountInfo};

fn refuse(pid: Pid, ino: u64, why: impl Into<String>) -> Error {
    Error::unsupported(
        pid,
        format!("mnt namespace mnt:[{ino}]"),
        format!(
            "{}; only a private copy of the host's mounts with a /proc of its own is supported yet",
            why.into()
        ),
    )
}

fn describe(m: &MountInfo) -> String {
    format!(
        "{} ({} {} root {} options {})",
        m.mount_point.display(),
        m.fstype,
        m.source,
        m.root.display(),
        m.options
    )
}

/// CRIU's fstype numbers (proto/mnt.proto), 0 (UNSUPPORTED) with the name
/// in `fsname` for the others.
fn fstype_code(name: &str) -> u32 {
    match name {
        "proc" => 1,
        "sysfs" => 2,
        "devtmpfs" => 3,
        "binfmt_misc" => 4,
        "tmpfs" => 5,
        "devpts" => 6,
        "pstore" => 8,
        "securityfs" => 9,
        "fusectl" => 10,
        "debugfs" => 11,
        "cgroup" => 12,
        "mqueue" => 14,
        "overlay" => 17,
        "autofs" => 18,
        "tracefs" => 19,
        "cgroup2" => 23,
        _ => 0,
    }
}

/// MS_* flags of the per-mount options.
fn ms_flags(options: &str) -> u32 {
    let mut f = 0u64;
    for o in options.split(',') {
        f |= match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "strictatime" => libc::MS_STRICTATIME,
            _ => 0,
        };
    }
    f as u32
}

fn entry(m: &MountInfo) -> pb::MntEntry {
    let code = fstype_code(&m.fstype);
    pb::MntEntry {
        fstype: code,
        mnt_id: m.mnt_id as u32,
        // The kernel's internal dev_t, as CRIU stores it.
        root_dev: (m.major << 20) | m.minor,
        parent_mnt_id: m.parent_id as u32,
        flags: ms_flags(&m.options),
        root: m.root.to_string_lossy().into_owned(),
        mountpoint: m.mount_point.to_string_lossy().into_owned(),
        source: m.source.clone(),
        options: m.super_options.clone(),
        shared_id: None,
        master_id: None,
        with_plugin: None,
        ext_mount: None,
        fsname: (code == 0).then(|| m.fstype.clone()),
        internal_sharing: None,
        deleted: None,
        sb_flags: Some(if m.super_options.split(',').any(|o| o == "ro") {
            libc::MS_RDONLY as u32
        } else {
            0
        }),
        ext_key: None,
    }
}

/// Checks the mount namespace `ino` of `pid` (the tree's root) against
/// the engine's (the host's) and returns its mountpoints-N.img entries.
pub fn check(pid: Pid, ino: u64) -> Result<Vec<pb::MntEntry>> {
    let tree = mountinfo::read(pid)?;
    let host = mountinfo::read(std::process::id() as Pid)?;
    let proc_dir = Path::new("/proc");
    let Some(last) = tree.last() else {
        return Err(refuse(pid, ino, "it has no mounts"));
    };
    if last.fstype != "proc" || last.mount_point != proc_dir {
        let why = match tree
            .iter()
            .rposition(|m| m.fstype == "proc" && m.mount_point == proc_dir)
        {
            Some(i) => format!(
                "{} was mounted in it after its /proc; mounts of the tree's own are not supported yet",
                describe(&tree[i + 1])
            ),
            None => format!(
                "its last mount is {}, not a /proc of its own",
                describe(last)
            ),
        };
        return Err(refuse(pid, ino, why));
    }
    if host
        .iter()
        .any(|h| h.fstype == "proc" && (h.major, h.minor) == (last.major, last.minor))
    {
        return Err(refuse(
            pid,
            ino,
            "its /proc is the host's proc, not a new instance",
        ));
    }
    for m in &tree {
        if let Some(p) = m.shared().or(m.master()) {
            return Err(refuse(
                pid,
                ino,
                format!(
                    "{} propagates (peer group {p}); the flavour's mounts are private",
                    describe(m)
                ),
            ));
        }
    }
    // Copies against the host's mounts at the same point (the k-th mount
    // on a point against the host's k-th there).
    let copies = &tree[..tree.len() - 1];
    for (i, m) in copies.iter().enumerate() {
        let k = copies[..i]
            .iter()
            .filter(|o| o.mount_point == m.mount_point)
            .count();
        let Some(h) = host
            .iter()
            .filter(|h| h.mount_point == m.mount_point)
            .nth(k)
        else {
            debug!(
                "pid {pid}: mnt:[{ino}]: {} is no longer on the host",
                describe(m)
            );
            continue;
        };
        let same = h.fstype == m.fstype
            && h.source == m.source
            && h.root == m.root
            && h.options == m.options;
        if !same {
            return Err(refuse(
                pid,
                ino,
                format!(
                    "its mount {} differs from the host's {}",
                    describe(m),
                    describe(h)
                ),
            ));
        }
    }
    debug!(
        "pid {pid}: mnt:[{ino}] is a private copy of the host's mounts with its own /proc ({} mounts)",
        tree.len()
    );
    Ok(tree.iter().map(entry).collect())
}
