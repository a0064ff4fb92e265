//! fanotify groups: their init flags and every mark, on an inode (found
//! again from its file handle, by path, like an inotify watch) or on a
//! mount (by mount id, in the tree's mount namespace, which is the
//! engine's). Marks on a whole filesystem have no place in CRIU's image
//! and are refused, as are queued events (they are not kept).

use std::os::fd::AsFd;

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;
use crate::proc::fdinfo::FanotifyTarget;

/// Mark flags a mark may have and the restore can give it again:
/// FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE.
pub const MARK_FLAGS: u32 = 0x40 | 0x200;

pub struct Fanotify;

impl FdDumper for Fanotify {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("[fanotify]")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let what = format!("fd {} (anon_inode:[fanotify])", fd.fd);
        let info = fd.field("fanotify", "fanotify flags", fd.info.fanotify())?;
        let copy = crate::sys::take_fd(fd.pid, fd.fd)
            .map_err(|e| Error::sys(fd.pid, format!("{what}: pidfd_getfd"), e))?;
        let queued = crate::sys::fsnotify::queued_bytes(copy.as_fd())
            .map_err(|e| Error::sys(fd.pid, format!("{what}: FIONREAD"), e))?;
        if queued > 0 {
            return Err(Error::unsupported(
                fd.pid,
                what,
                format!("{queued} bytes of fanotify events are queued and not read yet; queued events cannot be checkpointed"),
            ));
        }
        let mounts = crate::proc::mountinfo::read(fd.pid)?;
        let id = table.next_id();
        let mut marks = Vec::with_capacity(info.marks.len());
        for (i, m) in info.marks.iter().enumerate() {
            let mark = format!("{what}: mark {i}");
            if m.mflags & !MARK_FLAGS != 0 {
                return Err(Error::unsupported(
                    fd.pid,
                    mark,
                    format!("mark flags {:#x} cannot be restored", m.mflags),
                ));
            }
            let (r#type, ie, me) = match &m.target {
                FanotifyTarget::Inode {
                    ino,
                    fhandle_type,
                    f_handle,
                } => {
                    let mark = format!("{mark} (inode {ino} on dev {:#x})", m.sdev);
                    let path = super::fsnotify::handle_path(
                        fd.pid,
                        &mark,
                        m.sdev,
                        *ino,
                        *fhandle_type,
                        f_handle,
                    )?;
                    (
                        pb::MarkType::Inode,
                        Some(pb::FanotifyInodeMarkEntry {
                            i_ino: *ino,
                            f_handle: super::fsnotify::fh_entry(*fhandle_type, f_handle, path),
                        }),
                        None,
                    )
                }
                FanotifyTarget::Mount { mnt_id } => {
                    if !mounts.iter().any(|x| x.mnt_id == *mnt_id as u64) {
                        return Err(Error::unsupported(
                            fd.pid,
                            mark,
                            format!("mount {mnt_id} is not in the task's mount namespace"),
                        ));
                    }
                    (
                        pb::MarkType::Mount,
                        None,
                        Some(pb::FanotifyMountMarkEntry { mnt_id: *mnt_id }),
                    )
                }
                FanotifyTarget::Filesystem => {
                    return Err(Error::unsupported(
                        fd.pid,
                        mark,
                        format!(
                            "a mark on a whole filesystem (dev {:#x}) cannot be checkpointed",
                            m.sdev
                        ),
                    ))
                }
            };
            marks.push(pb::FanotifyMarkEntry {
                id,
                r#type: r#type as i32,
                mflags: m.mflags,
                mask: m.mask,
                ignored_mask: m.ignored_mask,
                s_dev: m.sdev,
                ie,
                me,
            });
        }
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Fanotify as i32,
            id,
            ffy: Some(pb::FanotifyFileEntry {
                id,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                faflags: info.flags,
                evflags: info.event_flags,
                mark: marks,
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Fanotify, id))
    }
}
