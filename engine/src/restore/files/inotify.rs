//! inotify: a new instance with every watch again on its path, each under
//! its dumped watch number (INOTIFY_IOC_SETNEXTWD), with its mask.

use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use super::{EnginePairs, FdKind};
use crate::error::{Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

/// What the mask of a watch may hold: events and the flags the kernel
/// keeps with the watch (IN_ONESHOT, IN_EXCL_UNLINK).
const WATCH_MASK: u32 = libc::IN_ALL_EVENTS | libc::IN_ONESHOT | libc::IN_EXCL_UNLINK;

pub struct Inotify;

impl FdKind for Inotify {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Inotify
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.ify, "INOTIFY")?;
        let e = f.ify.as_ref().expect("checked");
        let mut last = 0;
        for w in &e.wd {
            if w.wd as i32 <= last {
                return Err(format!(
                    "inotify watch numbers must be positive and ascending, {} after {last}",
                    w.wd
                ));
            }
            last = w.wd as i32;
            match &w.f_handle.path {
                Some(p) if p.starts_with('/') && !p.contains('\0') => {}
                _ => return Err(format!("inotify watch {} has no absolute path", w.wd)),
            }
            if w.mask & !WATCH_MASK != 0 || w.mask & libc::IN_ALL_EVENTS == 0 {
                return Err(format!("inotify watch {} has mask {:#x}", w.wd, w.mask));
            }
        }
        if e.flags & !(libc::O_NONBLOCK as u32 | libc::O_RDONLY as u32) != 0 {
            return Err(format!("inotify flags {:#o}", e.flags));
        }
        Ok(())
    }

    fn source(
        &self,
        _imgs: &Images,
        pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let e = f.ify.as_ref().expect("validated");
        let watches =
            e.wd.iter()
                .map(|w| {
                    let path = w.f_handle.path.as_deref().expect("validated");
                    Ok((
                        w.wd as i32,
                        crate::restore::cstr(pid, "inotify watch", path)?,
                        w.mask,
                    ))
                })
                .collect::<Result<_>>()?;
        Ok(Arc::new(Watches {
            flags: e.flags as i32 & libc::O_NONBLOCK,
            watches,
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
struct Watches {
    flags: i32,
    /// (watch number, path, mask), by watch number.
    watches: Vec<(i32, CString, u32)>,
}

impl OpenFd for Watches {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        use crate::sys::fsnotify;
        let fd = fsnotify::inotify_init(self.flags)?;
        for (wd, path, mask) in &self.watches {
            // The path is the watched inode itself (found from its handle
            // at dump time): a symlink is watched as such.
            if let Err(e) =
                fsnotify::inotify_add_watch_as(fd, *wd, path, *mask | libc::IN_DONT_FOLLOW)
            {
                let _ = nix::unistd::close(fd);
                return Err(e);
            }
        }
        Ok(fd)
    }

    fn describe(&self) -> String {
        let w: Vec<String> = self
            .watches
            .iter()
            .map(|(wd, p, m)| format!("{wd}: {} mask {m:#x}", p.to_string_lossy()))
            .collect();
        format!("inotify instance watching [{}]", w.join(", "))
    }
}
