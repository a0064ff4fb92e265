//! inotify instances: every watch (its inode, found again from the file
//! handle fdinfo shows, by path; its mask, IN_ONESHOT and IN_EXCL_UNLINK
//! included) under its own watch number, which the process may have kept.
//!
//! Events already queued are not part of the image (CRIU does not keep
//! them either): an instance with a non-empty queue is refused rather than
//! restored without them.

use std::os::fd::AsFd;

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;

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
            let path = super::fsnotify::handle_path(
                fd.pid,
                &watch,
                w.sdev,
                w.ino,
                w.fhandle_type,
                &w.f_handle,
            )?;
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
}
