//! epoll: the watched targets, from fdinfo, by fd number with their events
//! and data. The restore re-adds each target by that fd number, so every
//! target must still be open at it once all fds of the task are known.

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;

pub struct Epoll;

impl FdDumper for Epoll {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("[eventpoll]")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let targets = fd.info.epoll_targets().map_err(|e| {
            Error::task(
                fd.pid,
                format!("fd {} (epoll)", fd.fd),
                format!("fdinfo: {e}"),
            )
        })?;
        let id = table.next_id();
        let tfd = targets
            .iter()
            .map(|t| pb::EventpollTfdEntry {
                id,
                tfd: t.tfd as u32,
                events: t.events,
                data: t.data,
                dev: Some(t.sdev),
                inode: Some(t.ino),
                pos: Some(t.pos),
            })
            .collect();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Eventpoll as i32,
            id,
            epfd: Some(pb::EventpollFileEntry {
                id,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                tfd,
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Eventpoll, id))
    }

    fn check_task(&self, pid: Pid, table: &FileTable, fds: &[pb::FdinfoEntry]) -> Result<()> {
        // This task's own epoll sets: those of tasks dumped before are
        // checked against their own fds.
        let own = table
            .entries
            .iter()
            .filter(|e| fds.iter().any(|fd| fd.id == e.id))
            .filter_map(|e| e.epfd.as_ref());
        for f in own {
            for t in &f.tfd {
                if !fds.iter().any(|e| e.fd == t.tfd) {
                    return Err(Error::unsupported(
                        pid,
                        format!("epoll target fd {}", t.tfd),
                        "the epoll set watches a file that is no longer open at that fd",
                    ));
                }
            }
        }
        Ok(())
    }
}
