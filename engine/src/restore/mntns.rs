//! A mount namespace of the tree's own (see dump/mntns.rs for the shape
//! a dump holds): the engine's thread unshares a new one before any
//! object or task exists, so it is a copy of the host's mounts as they
//! are now, and makes every mount private, as zdtm/lib/ns.c does; the
//! tree's /proc, an instance of its pid namespace, is mounted on /proc
//! by the first process inside that namespace (the driver,
//! restore/ns.rs), or by the engine itself when the tree has no pid
//! namespace of its own.
//!
//! Full mount namespaces (mounts of the tree's own, bind mounts) extend
//! this module: `mountpoints-N.img` already lists every mount, in the
//! order they were made.

use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// Checks mountpoints-N.img against what the restore makes: the
/// namespace's last mount is its own /proc.
pub fn validate(path: &Path, mounts: &[pb::MntEntry]) -> Result<()> {
    let bad = |why: String| Error::Image(crate::images::ImageError::invalid(path, why));
    match mounts.last() {
        Some(m) if m.fstype == 1 && m.mountpoint == "/proc" => Ok(()),
        Some(m) => Err(bad(format!(
            "the last mount is {} (fstype {}), not a /proc of the namespace's own; \
             mounts of the tree's own are not supported yet",
            m.mountpoint, m.fstype
        ))),
        None => Err(bad("no mounts".into())),
    }
}

/// A new mount namespace for the calling thread, every mount in it made
/// `propagation` (MS_REC): MS_PRIVATE for the tree's own namespace, which
/// must not see the host's later mounts; MS_SLAVE for the driver's private
/// /proc, which only needs to keep its own mount from reaching the host.
/// The engine calls it single-threaded (unshare of a mount namespace needs
/// a file system context of its own); `who` names the caller in errors.
pub fn unshare_mounts(root: Pid, propagation: MsFlags, who: &str) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys(root, format!("{who}: unshare of a new mount namespace"), e))?;
    set_propagation(root, propagation, who)
}

/// `propagation` for every mount of the calling thread's mount namespace.
pub fn set_propagation(root: Pid, propagation: MsFlags, who: &str) -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | propagation,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            root,
            format!("{who}: setting the propagation of its new mount namespace"),
            e,
        )
    })
}

/// A new proc instance of the caller's pid namespace on /proc.
pub fn mount_proc() -> nix::Result<()> {
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}
