//! epoll: the watched targets, from fdinfo, by fd number with their events
//! and data. The restore re-adds each target by that fd number, so every
//! target must be open at it once all fds of the task are known.
//!
//! fdinfo gives the fd number a target was added under, which the task
//! may have closed since (the set keeps watching the file as long as it
//! is open anywhere) or even reused for another file. kcmp
//! (KCMP_EPOLL_TFD) says which fd of the task is the watched file: the
//! target is written under that fd, as CRIU does, so the restore watches
//! the same file with the same events and data. A target open at no fd
//! of the task (only elsewhere in the tree, or held by the set alone) is
//! refused, naming the set and the fd number.

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
        let fds = crate::proc::fdinfo::list_fds(fd.pid)?;
        let mut resolved = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            // Several targets may share a number (one closed, one open):
            // the kernel tells them apart by their rank among those.
            let toff = targets[..i].iter().filter(|o| o.tfd == t.tfd).count() as u32;
            let is = |cand: i32| {
                crate::sys::kcmp_epoll_tfd(fd.pid, cand, fd.pid, fd.fd, t.tfd, toff) == Ok(0)
            };
            let at = if fds.contains(&(t.tfd)) && is(t.tfd) {
                t.tfd
            } else {
                fds.iter().copied().find(|&c| is(c)).ok_or_else(|| {
                    Error::unsupported(
                        fd.pid,
                        format!("fd {} (epoll), target fd {}", fd.fd, t.tfd),
                        "the set watches a file that was closed at that fd and is open at no other fd of the process (held only by the set, or by another process)",
                    )
                })?
            };
            if at != t.tfd {
                debug!(
                    "pid {}: fd {} (epoll): target fd {} was closed; the file is fd {at}",
                    fd.pid, fd.fd, t.tfd
                );
            }
            if resolved.contains(&at) {
                return Err(Error::unsupported(
                    fd.pid,
                    format!("fd {} (epoll), target fd {}", fd.fd, t.tfd),
                    format!("the set watches the file of fd {at} twice, once under a number since closed; one fd cannot carry both"),
                ));
            }
            resolved.push(at);
        }
        let id = table.next_id();
        let tfd = targets
            .iter()
            .zip(resolved)
            .map(|(t, at)| pb::EventpollTfdEntry {
                id,
                tfd: at as u32,
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
