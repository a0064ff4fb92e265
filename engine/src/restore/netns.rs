//! A network namespace of the tree's own (see dump/netns.rs for the
//! shape a dump holds): the engine's thread unshares a new one before
//! any object exists, so the sockets the engine makes for the tree land
//! in it, and sets its loopback device's flags (up, as the dump found
//! it). The tasks inherit it from the root.
//!
//! Full network namespaces (more devices, addresses, routes) extend this
//! module: netdev-N.img already lists every device.

use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// Checks netdev-N.img against what the restore makes: only a loopback
/// device named `lo`.
pub fn validate(path: &Path, devices: &[pb::NetDeviceEntry]) -> Result<()> {
    let bad = |why: String| Error::Image(crate::images::ImageError::invalid(path, why));
    for d in devices {
        if d.r#type != pb::NdType::Loopback as i32 || d.name != "lo" {
            return Err(bad(format!(
                "device {:?} (type {}): only the loopback device is supported yet",
                d.name, d.r#type
            )));
        }
    }
    if devices.is_empty() {
        return Err(bad("no loopback device".into()));
    }
    Ok(())
}

/// In the engine's thread: the new namespace, its loopback device as
/// the image has it.
pub fn enter(root: Pid, devices: &[pb::NetDeviceEntry]) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys(root, "unshare of a new network namespace", e))?;
    set_up(root, devices)
}

/// The devices of the calling thread's (new) network namespace, as
/// `devices` has them.
pub fn set_up(root: Pid, devices: &[pb::NetDeviceEntry]) -> Result<()> {
    let sock = crate::sys::netdev::inet_dgram()
        .map_err(|e| Error::sys(root, "socket in its new network namespace", e))?;
    for d in devices {
        let up = libc::IFF_UP as u32;
        if d.flags & up == 0 {
            continue;
        }
        let now = crate::sys::netdev::flags(sock.as_fd(), &d.name)
            .map_err(|e| Error::sys(root, format!("flags of its network device {}", d.name), e))?;
        crate::sys::netdev::set_flags(sock.as_fd(), &d.name, now | up).map_err(|e| {
            Error::sys(
                root,
                format!("bringing its network device {} up", d.name),
                e,
            )
        })?;
        debug!("network namespace: {} up", d.name);
    }
    Ok(())
}
