//! The owner of every open file (F_SETOWN_EX) and the signal it is sent
//! (F_SETSIG), for every kind of fd at once: the engine asks its own copy
//! of the fd (the owner belongs to the open file description). O_ASYNC is
//! among the open flags each kind keeps already.
//!
//! An owner must be a thread, process or group of the tree: any other
//! would not exist, or be another program, after a restore.

use std::os::fd::AsRawFd;

use super::{FdCx, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::fown::{self, OWNER_PGRP, OWNER_PID, OWNER_TID};
use crate::images::pb;

/// An owner seen at dump time, to be checked against the whole tree.
pub struct SeenOwner {
    pub pid: Pid,
    pub fd: i32,
    pub link: String,
    pub r#type: u32,
    pub owner: i32,
}

/// Puts the owner of `fd` (file `id`, just added) into its entry.
pub(super) fn record(fd: &FdCx<'_>, id: u32, table: &mut FileTable) -> Result<()> {
    let copy = crate::sys::take_fd(fd.pid, fd.fd)
        .map_err(|e| Error::sys(fd.pid, format!("fd {}: a copy to read its owner", fd.fd), e))?;
    let o = crate::sys::fown::get(copy.as_raw_fd())
        .map_err(|e| Error::sys(fd.pid, format!("fd {}: its owner (F_GETOWN_EX)", fd.fd), e))?;
    if o.pid == 0 && o.sig == 0 {
        return Ok(());
    }
    // F_GETOWN_EX answers in the engine's pid namespace; the images keep
    // the pid the tree sees.
    let owner = table.vpid(o.pid);
    let entry = pb::FownEntry {
        uid: o.uids[0],
        euid: o.uids[1],
        signum: o.sig as u32,
        pid_type: o.r#type as u32,
        pid: owner as u32,
    };
    let at = table
        .entries
        .iter()
        .position(|e| e.id == id)
        .expect("the entry just added");
    // A FIFO keeps it in its REG entry.
    let at = match &table.entries[at].fifo {
        Some(f) => table
            .entries
            .iter()
            .position(|e| Some(e.id) == f.regf_id)
            .unwrap_or(at),
        None => at,
    };
    let Some(slot) = fown::fown_mut(&mut table.entries[at]) else {
        return Err(
            fd.unsupported("owners and signals (F_SETOWN, F_SETSIG) of descriptors of this kind")
        );
    };
    *slot = entry;
    if o.pid != 0 {
        table.owners.push(SeenOwner {
            pid: fd.pid,
            fd: fd.fd,
            link: String::from_utf8_lossy(fd.link).into_owned(),
            r#type: o.r#type as u32,
            owner,
        });
    }
    Ok(())
}

/// Every owner is a thread, process or group of the tree.
pub fn check_owners(table: &FileTable, pstree: &[pb::PstreeEntry]) -> Result<()> {
    for o in &table.owners {
        let p = o.owner as u32;
        let (found, what) = match o.r#type {
            OWNER_TID => (
                pstree.iter().any(|t| t.threads.contains(&p) || t.pid == p),
                "thread",
            ),
            OWNER_PID => (pstree.iter().any(|t| t.pid == p), "process"),
            OWNER_PGRP => (pstree.iter().any(|t| t.pgid == p), "process group"),
            _ => (false, "owner of an unknown type"),
        };
        if !found {
            return Err(Error::unsupported(
                o.pid,
                format!("fd {} ({})", o.fd, o.link),
                format!(
                    "its owner (F_SETOWN) is {what} {}, which is not in the dumped tree",
                    o.owner
                ),
            ));
        }
    }
    Ok(())
}
