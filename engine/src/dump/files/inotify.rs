//! inotify instances: every watch (its inode, found again from the file
//! handle fdinfo shows, by path; its mask, IN_ONESHOT and IN_EXCL_UNLINK
//! included) under its own watch number, which the process may have kept.
//!
//! Events already queued are not part of the image (CRIU does not keep
//! them either): an instance with a non-empty queue is refused rather than
//! restored without them.
//!
//! A watch on a regular file since unlinked (still open or mapped by a
//! process of the tree) is kept as CRIU keeps it: the file's contents are
//! in its ghost file (dump/ghost.rs, made for the fds and mappings that
//! hold it), which the restore finds by device and inode, and the watch's
//! path is the link of the opened handle, "PATH (deleted)", so that no
//! restore ever takes it for a path. The restore adds the watch to the
//! ghost once it is made again and unlinked (restore/engine_files.rs).
//! What the watch would see of that, and is refused for
//! ([`GHOST_EVENTS`]):
//! - the dump reads the ghost's contents: IN_OPEN, IN_ACCESS and
//!   IN_CLOSE_NOWRITE, on the watch on the file itself and on a watch of
//!   its directory without IN_EXCL_UNLINK (the kernel reports events of
//!   an unlinked file to the directory it was in, unless asked not to);
//! - the restore opens a mapped ghost again in its task to map it, and
//!   closes it after: IN_OPEN and IN_CLOSE_NOWRITE or IN_CLOSE_WRITE.
//!
//! Nothing else of the restore reaches these watches: the ghost is
//! created, filled, given its owner, mode and times, opened for every
//! description and unlinked before any watch exists (no IN_CREATE,
//! IN_MODIFY, IN_ATTRIB, IN_DELETE), the watch is added through an O_PATH
//! fd (whose close the kernel reports to no one), and the descriptions
//! the tasks take are the engine's (pidfd_getfd opens nothing; the
//! engine's copy is not the last reference when it is closed). A watch on
//! an unlinked file no process of the tree holds is refused too: the
//! restored file would be gone as soon as the engine let go of it, and the
//! watch with it (IN_DELETE_SELF, IN_IGNORED).

use std::os::fd::AsFd;

use super::fsnotify::Target;
use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// Events the handling of a ghost file generates on watches of it (and of
/// its directory without IN_EXCL_UNLINK), at dump and at restore.
pub const GHOST_EVENTS: u32 =
    libc::IN_OPEN | libc::IN_ACCESS | libc::IN_CLOSE_NOWRITE | libc::IN_CLOSE_WRITE;

/// A watch dumped, checked against the whole tree's ghost files once
/// every task is dumped.
#[derive(Debug, Clone)]
pub struct SeenWatch {
    pub pid: Pid,
    pub fd: i32,
    pub wd: i32,
    /// The watched inode: userspace dev_t and inode number.
    pub dev: u64,
    pub ino: u64,
    pub mask: u32,
    /// The link of the unlinked file it watches, "PATH (deleted)".
    pub unlinked: Option<String>,
}

impl SeenWatch {
    fn what(&self) -> String {
        format!(
            "fd {} (anon_inode:inotify): watch {} (inode {} on dev {:#x})",
            self.fd, self.wd, self.ino, self.dev
        )
    }
}

/// The names of the events of `mask`, for a message.
fn events(mask: u32) -> String {
    crate::show::names::inotify_mask(mask)
}

pub struct Inotify;

impl FdDumper for Inotify {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("inotify")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let what = format!("fd {} (anon_inode:inotify)", fd.fd);
        let watches = fd
            .info
            .inotify_watches()
            .map_err(|e| Error::task(fd.pid, &what, format!("fdinfo: {e}")))?;
        let copy = crate::sys::take_fd(fd.pid, fd.fd)
            .map_err(|e| Error::sys(fd.pid, format!("{what}: pidfd_getfd"), e))?;
        let queued = crate::sys::fsnotify::queued_bytes(copy.as_fd())
            .map_err(|e| Error::sys(fd.pid, format!("{what}: FIONREAD"), e))?;
        if queued > 0 {
            return Err(Error::unsupported(
                fd.pid,
                what,
                format!("{queued} bytes of inotify events are queued and not read yet; queued events cannot be checkpointed"),
            ));
        }
        let mut wd = Vec::with_capacity(watches.len());
        for w in &watches {
            let watch = format!(
                "{what}: watch {} (inode {} on dev {:#x})",
                w.wd, w.ino, w.sdev
            );
            let known = libc::IN_ALL_EVENTS | libc::IN_ONESHOT | libc::IN_EXCL_UNLINK;
            if w.mask & !known != 0 {
                return Err(Error::unsupported(
                    fd.pid,
                    watch,
                    format!("watch flags {:#x} cannot be restored", w.mask & !known),
                ));
            }
            let target = super::fsnotify::handle_target(
                fd.pid,
                &watch,
                w.sdev,
                w.ino,
                w.fhandle_type,
                &w.f_handle,
            )?;
            let (path, unlinked) = match target {
                Target::Path(p) => (p, None),
                Target::Unlinked(p) => {
                    if w.mask & GHOST_EVENTS != 0 {
                        return Err(Error::unsupported(
                            fd.pid,
                            format!("{watch} on unlinked file {p}"),
                            format!(
                                "its mask has {}: copying the file into the images and \
                                 restoring it would generate those events on this watch",
                                events(w.mask & GHOST_EVENTS)
                            ),
                        ));
                    }
                    (p.clone(), Some(p))
                }
            };
            table.watches.push(SeenWatch {
                pid: fd.pid,
                fd: fd.fd,
                wd: w.wd,
                dev: crate::sys::fsnotify::user_dev(w.sdev),
                ino: w.ino,
                mask: w.mask,
                unlinked,
            });
            wd.push(pb::InotifyWdEntry {
                id: 0,
                i_ino: w.ino,
                mask: w.mask,
                ignored_mask: w.ignored_mask,
                s_dev: w.sdev,
                wd: w.wd as u32,
                f_handle: super::fsnotify::fh_entry(w.fhandle_type, &w.f_handle, path),
            });
        }
        wd.sort_by_key(|w| w.wd);
        let id = table.next_id();
        wd.iter_mut().for_each(|w| w.id = id);
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Inotify as i32,
            id,
            ify: Some(pb::InotifyFileEntry {
                id,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                wd,
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Inotify, id))
    }

    /// Every unlinked file watched is held by the tree (so it is a ghost
    /// of the images), and no watch sees the dump read a ghost through the
    /// directory it was in.
    fn finish(&self, table: &FileTable, _dir: &crate::imgdir::ImageDir) -> Result<()> {
        for w in &table.watches {
            if let Some(link) = &w.unlinked {
                if !table.ghost.holds(w.dev, w.ino) {
                    return Err(Error::unsupported(
                        w.pid,
                        format!("{} on unlinked file {link}", w.what()),
                        "no process of the tree has the file open or mapped: restored, it would \
                         be freed at once and the watch would end with it",
                    ));
                }
            }
            if w.mask & GHOST_EVENTS == 0 || w.mask & libc::IN_EXCL_UNLINK != 0 {
                continue;
            }
            if let Some(ghost) = table.ghost.in_directory(w.dev, w.ino) {
                return Err(Error::unsupported(
                    w.pid,
                    w.what(),
                    format!(
                        "it watches the directory of unlinked file {ghost} for {} without \
                         IN_EXCL_UNLINK: copying that file into the images would generate those \
                         events on it",
                        events(w.mask & GHOST_EVENTS)
                    ),
                ));
            }
        }
        Ok(())
    }
}
