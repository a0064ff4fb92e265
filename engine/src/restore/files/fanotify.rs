//! fanotify: a new group with the dumped init flags and every mark again,
//! on its inode's path or its mount's mount point, with its mask and its
//! ignored mask.

use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

const FAN_NONBLOCK: u32 = 0x2;
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_DONT_FOLLOW: u32 = 0x4;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;
const FAN_MARK_EVICTABLE: u32 = 0x200;

pub struct Fanotify;

impl FdKind for Fanotify {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Fanotify
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.ffy, "FANOTIFY")?;
        for (i, m) in f.ffy.as_ref().expect("checked").mark.iter().enumerate() {
            if m.mflags & !(FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_EVICTABLE) != 0 {
                return Err(format!("fanotify mark {i}: mark flags {:#x}", m.mflags));
            }
            match (pb::MarkType::try_from(m.r#type), &m.ie, &m.me) {
                (Ok(pb::MarkType::Inode), Some(ie), _) => match &ie.f_handle.path {
                    Some(p) if p.starts_with('/') && !p.contains('\0') => {}
                    _ => return Err(format!("fanotify mark {i} has no absolute path")),
                },
                (Ok(pb::MarkType::Mount), _, Some(_)) => {}
                _ => return Err(format!("fanotify mark {i}: unknown type or no target")),
            }
        }
        Ok(())
    }

    fn source(
        &self,
        imgs: &Images,
        pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let e = f.ffy.as_ref().expect("validated");
        let mut marks = Vec::with_capacity(e.mark.len());
        let mut mounts = None;
        for m in &e.mark {
            let (path, kind) = match (&m.ie, &m.me) {
                (Some(ie), _) => (
                    ie.f_handle.path.clone().expect("validated"),
                    FAN_MARK_DONT_FOLLOW,
                ),
                (None, Some(me)) if imgs.ns.mnt.is_some() => {
                    // The tree's own mount namespace, made again: the
                    // mount is where the dump found it, under a new id.
                    let mp = imgs
                        .ns
                        .mnt
                        .iter()
                        .flatten()
                        .find(|x| x.mnt_id == me.mnt_id)
                        .ok_or_else(|| {
                            Error::task(
                                pid,
                                format!("fanotify mark on mount {}", me.mnt_id),
                                "no such mount in the tree's mount namespace (mountpoints-N.img)",
                            )
                        })?;
                    (mp.mountpoint.clone(), FAN_MARK_MOUNT)
                }
                (None, Some(me)) => {
                    if mounts.is_none() {
                        mounts = Some(crate::proc::mountinfo::read(std::process::id() as i32)?);
                    }
                    let mp = mounts
                        .as_ref()
                        .expect("read")
                        .iter()
                        .find(|x| x.mnt_id == me.mnt_id as u64)
                        .ok_or_else(|| {
                            Error::task(
                                pid,
                                format!("fanotify mark on mount {}", me.mnt_id),
                                "no such mount here",
                            )
                        })?;
                    (mp.mount_point.display().to_string(), FAN_MARK_MOUNT)
                }
                _ => unreachable!("validated"),
            };
            marks.push(Mark {
                path: crate::restore::cstr(pid, "fanotify mark", &path)?,
                kind,
                mflags: m.mflags,
                mask: m.mask,
                ignored_mask: m.ignored_mask,
            });
        }
        let nonblock = if e.flags as i32 & libc::O_NONBLOCK != 0 {
            FAN_NONBLOCK
        } else {
            0
        };
        Ok(Arc::new(Group {
            flags: (e.faflags & !FAN_NONBLOCK) | nonblock,
            event_flags: e.evflags,
            marks,
        }))
    }

    fn open_in_engine(
        &self,
        imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        _pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        let fd = pb::FdinfoEntry::default();
        super::open_here(pid, &*self.source(imgs, pid, &fd, f)?)
    }
}

#[derive(Debug)]
struct Mark {
    path: CString,
    /// FAN_MARK_MOUNT or FAN_MARK_DONT_FOLLOW (an inode).
    kind: u32,
    mflags: u32,
    mask: u32,
    ignored_mask: u32,
}

#[derive(Debug)]
struct Group {
    flags: u32,
    event_flags: u32,
    marks: Vec<Mark>,
}

impl OpenFd for Group {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        use crate::sys::fsnotify;
        let fd = fsnotify::fanotify_init(self.flags, self.event_flags)?;
        // fdinfo lists the newest mark first, and so does the image: the
        // oldest is made first so that the order holds.
        for m in self.marks.iter().rev() {
            let base = FAN_MARK_ADD | m.kind | (m.mflags & FAN_MARK_EVICTABLE);
            let mut r = Ok(());
            if m.mask != 0 {
                r = fsnotify::fanotify_mark(fd, base, m.mask as u64, &m.path);
            }
            if r.is_ok() && m.ignored_mask != 0 {
                r = fsnotify::fanotify_mark(
                    fd,
                    base | FAN_MARK_IGNORED_MASK | (m.mflags & FAN_MARK_IGNORED_SURV_MODIFY),
                    m.ignored_mask as u64,
                    &m.path,
                );
            }
            if let Err(e) = r {
                let _ = nix::unistd::close(fd);
                return Err(e);
            }
        }
        Ok(fd)
    }

    fn describe(&self) -> String {
        let m: Vec<String> = self
            .marks
            .iter()
            .map(|m| {
                format!(
                    "{}{} mask {:#x} ignored {:#x}",
                    if m.kind == FAN_MARK_MOUNT {
                        "mount "
                    } else {
                        ""
                    },
                    m.path.to_string_lossy(),
                    m.mask,
                    m.ignored_mask
                )
            })
            .collect();
        format!("fanotify group marking [{}]", m.join(", "))
    }
}
