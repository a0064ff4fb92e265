//! pidfds (pidfd_open, CLONE_PIDFD): the pid they refer to, from fdinfo's
//! `NSpid`, which must be a process of the tree; the restore opens a pidfd
//! of the same pid again.
//!
//! A pidfd of a task already reaped (fdinfo says pid -1) refers to no
//! process of the tree: as CRIU does, it is dumped with how the task died
//! (PIDFD_GET_INFO's exit status, where the kernel kept it), and the
//! restore makes a stand-in process die that way.
//!
//! Refused: a pidfd of a thread (PIDFD_THREAD), or a live one shared
//! between processes (the task it refers to may not exist yet when the
//! engine would make the shared one).

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;

pub struct Pidfd;

/// A pidfd seen at dump time, to be checked against the whole tree.
pub struct SeenPidfd {
    pub pid: Pid,
    pub fd: i32,
    pub target: i32,
}

impl FdDumper for Pidfd {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("[pidfd]")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        // NSpid lists the target's pid from the engine's namespace down to
        // its own; the images keep it as the tree's root sees it (a target
        // in a nested namespace included). -1: reaped.
        let nspid = fd
            .info
            .get("NSpid")
            .or(fd.info.get("Pid"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i32>().ok())
            .map(|host| if host > 0 { table.vpid(host) } else { host });
        let Some(nspid) = nspid else {
            return Err(fd.field::<()>("pidfd", "NSpid", None).unwrap_err());
        };
        if fd.flags & libc::O_EXCL as u32 != 0 {
            return Err(fd.unsupported("pidfds of threads (PIDFD_THREAD)"));
        }
        let attr = if nspid == -1 {
            let copy = crate::sys::take_fd(fd.pid, fd.fd).map_err(|e| {
                Error::sys(fd.pid, format!("fd {} (pidfd of a reaped task)", fd.fd), e)
            })?;
            let exit_code = crate::sys::pidfd::exit_status(std::os::fd::AsFd::as_fd(&copy));
            if let Some(st) = exit_code.filter(|&s| !crate::sys::pidfd::reproducible(s)) {
                return Err(Error::unsupported(
                    fd.pid,
                    format!("fd {} (pidfd of a reaped task)", fd.fd),
                    format!("its task died with status {st:#x}, neither an exit nor a signal"),
                ));
            }
            Some(pb::PidfsAttrEntry {
                exit_code,
                ino: None,
                dump_pid: None,
            })
        } else if nspid <= 0 {
            return Err(fd.unsupported(&format!("pidfds of pid {nspid}")));
        } else {
            None
        };
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Pidfd as i32,
            id,
            pidfd: Some(pb::PidfdEntry {
                id,
                ino: fd.info.ino,
                flags: fd.flags,
                nspid,
                fown: pb::FownEntry::default(),
                attr,
            }),
            ..Default::default()
        });
        // A reaped task's pidfd is made by the engine, for any number of
        // processes, and refers to no task of the tree.
        if nspid > 0 {
            table.pidfds.push(SeenPidfd {
                pid: fd.pid,
                fd: fd.fd,
                target: nspid,
            });
        }
        Ok((pb::FdTypes::Pidfd, id))
    }

    /// A pidfd in several processes is refused.
    fn finish(&self, table: &FileTable, _dir: &ImageDir) -> Result<()> {
        for p in &table.pidfds {
            let id = table
                .seen
                .iter()
                .find(|s| s.0 == p.pid && s.1 == p.fd)
                .map(|s| s.2);
            if let Some(other) = table.seen.iter().find(|s| Some(s.2) == id && s.0 != p.pid) {
                return Err(Error::unsupported(
                    p.pid,
                    format!("fd {} (pidfd of pid {})", p.fd, p.target),
                    format!(
                        "a pidfd shared with another process (pid {}, fd {}) is not supported yet",
                        other.0, other.1
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Every pidfd refers to a process of the tree.
pub fn check_targets(table: &FileTable, pstree: &[pb::PstreeEntry]) -> Result<()> {
    for p in &table.pidfds {
        if !pstree.iter().any(|t| t.pid as i32 == p.target) {
            return Err(Error::unsupported(
                p.pid,
                format!("fd {} (pidfd of pid {})", p.fd, p.target),
                "a pidfd of a process outside the dumped tree cannot be restored",
            ));
        }
    }
    Ok(())
}
