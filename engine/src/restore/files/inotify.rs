//! inotify: a new instance with every watch again on its path, each under
//! its dumped watch number (INOTIFY_IOC_SETNEXTWD), with its mask.
//!
//! A watch on an unlinked file (its path "PATH (deleted)", as the dump
//! writes it) is on the ghost file of the same device and inode, as CRIU
//! finds it (lookup_ghost_remap). Its instance is made by the engine
//! (`engine_files`), after every ghost is made again and unlinked: the
//! watch is added through an O_PATH fd the engine opened on the ghost
//! before unlinking it (/proc/self/fd/N, followed to the inode), so it
//! sees none of the ghost's making (dump/files/inotify.rs lists what it
//! could see, and what the dump refuses for that).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

/// How the dump names the watched file of a watch on an unlinked file.
const UNLINKED: &str = " (deleted)";

/// The ghost file (by id) that the watch `w` on an unlinked file is on;
/// None for a watch by path.
fn ghost_of(
    ghosts: &crate::restore::ghost::Ghosts,
    w: &pb::InotifyWdEntry,
) -> std::result::Result<Option<u32>, String> {
    let path = w.f_handle.path.as_deref().unwrap_or("");
    if !path.ends_with(UNLINKED) {
        return Ok(None);
    }
    let dev = crate::sys::fsnotify::user_dev(w.s_dev) as u32;
    ghosts
        .files
        .iter()
        .find(|(_, (e, _))| {
            e.mode & libc::S_IFMT == libc::S_IFREG && e.dev == Some(dev) && e.ino == Some(w.i_ino)
        })
        .map(|(id, _)| Some(*id))
        .ok_or_else(|| {
            format!(
                "inotify watch {} is on unlinked file {path} (inode {} on dev {:#x}), \
                 but no regular ghost file of the images is that inode",
                w.wd, w.i_ino, dev
            )
        })
}

/// The inotify files with a watch on an unlinked file, with the ghosts
/// of those watches, by file id; an error names a watch whose ghost is
/// missing.
fn on_ghosts(imgs: &Images) -> Result<BTreeMap<u32, Vec<u32>>> {
    let holders = super::holders(imgs);
    let mut out = BTreeMap::new();
    for (id, f) in &imgs.files {
        let Some(e) = &f.ify else { continue };
        let pid = holders.get(id).map_or(imgs.tasks[0].pid, |h| h.0);
        let mut ghosts = Vec::new();
        for w in &e.wd {
            match ghost_of(&imgs.ghosts, w) {
                Ok(Some(g)) => ghosts.push(g),
                Ok(None) => {}
                Err(why) => return Err(Error::unsupported(pid, format!("inotify file {id}"), why)),
            }
        }
        if !ghosts.is_empty() {
            out.insert(*id, ghosts);
        }
    }
    Ok(out)
}

/// Before anything exists: every watch on an unlinked file has its ghost.
pub fn validate_ghost_watches(imgs: &Images) -> Result<()> {
    on_ghosts(imgs).map(drop)
}

/// The ghosts some inotify watch is on: the engine keeps an O_PATH fd of
/// each, opened before it unlinks them, for [`make_on_ghosts`].
pub fn watched_ghosts(imgs: &Images) -> Result<std::collections::BTreeSet<u32>> {
    Ok(on_ghosts(imgs)?.into_values().flatten().collect())
}

/// The inotify instances with a watch on an unlinked file, made by the
/// engine once every ghost is made and unlinked, by file id; `opened`
/// holds an O_PATH fd of each watched ghost, by ghost id.
pub fn make_on_ghosts(
    imgs: &Images,
    opened: &BTreeMap<u32, OwnedFd>,
) -> Result<BTreeMap<u32, OwnedFd>> {
    let holders = super::holders(imgs);
    let mut out = BTreeMap::new();
    for id in on_ghosts(imgs)?.into_keys() {
        let f = imgs.file(id);
        let e = f.ify.as_ref().expect("on_ghosts found it");
        let pid = holders.get(&id).map_or(imgs.tasks[0].pid, |h| h.0);
        let mut watches = Vec::with_capacity(e.wd.len());
        for w in &e.wd {
            let (path, follow) = match ghost_of(&imgs.ghosts, w).expect("validated") {
                Some(g) => {
                    let fd = opened.get(&g).expect("watched_ghosts opened it");
                    (format!("/proc/self/fd/{}", fd.as_raw_fd()), true)
                }
                None => (w.f_handle.path.clone().expect("validated"), false),
            };
            watches.push(Watch {
                wd: w.wd as i32,
                path: crate::restore::cstr(pid, "inotify watch", &path)?,
                mask: w.mask,
                follow,
            });
        }
        let made = Watches {
            flags: e.flags as i32 & libc::O_NONBLOCK,
            watches,
        };
        let fd = super::open_here(pid, &made)?;
        // Nothing of the restore so far is an event for it (module doc);
        // were something queued, the process would read what never
        // happened to its files.
        let queued = crate::sys::fsnotify::queued_bytes(std::os::fd::AsFd::as_fd(&fd))
            .map_err(|err| Error::sys(pid, format!("{}: FIONREAD", made.describe()), err))?;
        if queued != 0 {
            return Err(Error::unsupported(
                pid,
                made.describe(),
                format!("{queued} bytes of events were generated by its restore"),
            ));
        }
        out.insert(id, fd);
    }
    Ok(out)
}

/// Events of a file that the kernel reports to a watch of its directory
/// too, under the file's name, even once it is unlinked (unless the watch
/// has IN_EXCL_UNLINK).
const CHILD_EVENTS: u32 = libc::IN_ACCESS
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CLOSE_NOWRITE
    | libc::IN_OPEN;

/// Why unlinked file `orig`, made again under another name (`orig` is
/// taken), would not be what it was: a watch of its directory without
/// IN_EXCL_UNLINK would report its events under the other name. None
/// if no watch of `files` would.
pub fn renamed_ghost_seen(files: &BTreeMap<u32, pb::FileEntry>, orig: &str) -> Option<String> {
    let dir = std::path::Path::new(orig).parent()?;
    files.iter().find_map(|(id, f)| {
        f.ify.as_ref()?.wd.iter().find_map(|w| {
            let on = std::path::Path::new(w.f_handle.path.as_deref()?);
            (on == dir && w.mask & CHILD_EVENTS != 0 && w.mask & libc::IN_EXCL_UNLINK == 0).then(
                || {
                    format!(
                        "inotify watch {} (file {id}) of {} has no IN_EXCL_UNLINK: \
                         it would see the file's events under the other name",
                        w.wd,
                        dir.display()
                    )
                },
            )
        })
    })
}

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
                    Ok(Watch {
                        wd: w.wd as i32,
                        path: crate::restore::cstr(pid, "inotify watch", path)?,
                        mask: w.mask,
                        follow: false,
                    })
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
    /// By watch number.
    watches: Vec<Watch>,
}

#[derive(Debug)]
struct Watch {
    wd: i32,
    path: CString,
    mask: u32,
    /// Whether `path` is followed: /proc/self/fd/N of a ghost, which is
    /// the watched inode only once followed. Any other path is the
    /// watched inode itself (found from its handle at dump time): a
    /// symlink is watched as such.
    follow: bool,
}

impl OpenFd for Watches {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        use crate::sys::fsnotify;
        let fd = fsnotify::inotify_init(self.flags)?;
        for w in &self.watches {
            let mask = if w.follow {
                w.mask
            } else {
                w.mask | libc::IN_DONT_FOLLOW
            };
            if let Err(e) = fsnotify::inotify_add_watch_as(fd, w.wd, &w.path, mask) {
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
            .map(|w| {
                format!(
                    "{}: {} mask {}",
                    w.wd,
                    w.path.to_string_lossy(),
                    crate::show::names::inotify_mask(w.mask)
                )
            })
            .collect();
        format!("inotify instance watching [{}]", w.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::ghost::Ghosts;

    fn watch(path: &str, s_dev: u32, ino: u64) -> pb::InotifyWdEntry {
        pb::InotifyWdEntry {
            id: 1,
            i_ino: ino,
            mask: libc::IN_MODIFY,
            ignored_mask: 0,
            s_dev,
            wd: 2,
            f_handle: pb::FhEntry {
                path: Some(path.into()),
                ..Default::default()
            },
        }
    }

    fn ghosts(mode: u32, dev: u32, ino: u64) -> Ghosts {
        let mut g = Ghosts::default();
        let e = pb::GhostFileEntry {
            mode,
            dev: Some(dev),
            ino: Some(ino),
            ..Default::default()
        };
        g.files.insert(5, (e, Vec::new()));
        g
    }

    #[test]
    fn a_ghost_under_another_name_is_refused_if_its_directory_is_watched() {
        let ify = |path: &str, mask: u32| pb::FileEntry {
            r#type: pb::FdTypes::Inotify as i32,
            id: 9,
            ify: Some(pb::InotifyFileEntry {
                id: 9,
                wd: vec![pb::InotifyWdEntry {
                    mask,
                    ..watch(path, 0x2d, 1)
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let seen = |path, mask| renamed_ghost_seen(&BTreeMap::from([(9, ify(path, mask))]), "/d/f");
        let e = seen("/d", libc::IN_MODIFY).unwrap();
        assert!(e.contains("watch 2 (file 9) of /d"), "{e}");
        assert_eq!(seen("/d", libc::IN_MODIFY | libc::IN_EXCL_UNLINK), None);
        assert_eq!(seen("/d", libc::IN_CREATE | libc::IN_DELETE), None);
        assert_eq!(seen("/e", libc::IN_MODIFY), None);
    }

    #[test]
    fn a_watch_on_an_unlinked_file_is_on_the_ghost_of_its_inode() {
        // Kernel dev 0:0x2d (fdinfo's sdev) is userspace dev 0x2d.
        let g = ghosts(libc::S_IFREG | 0o644, 0x2d, 77);
        assert_eq!(
            ghost_of(&g, &watch("/d/f (deleted)", 0x2d, 77)),
            Ok(Some(5))
        );
        // A watch by path is on no ghost, even of its inode.
        assert_eq!(ghost_of(&g, &watch("/d/f", 0x2d, 77)), Ok(None));
        // Major 8 minor 1: 0x800001 in the kernel, 0x801 for stat.
        let g = ghosts(libc::S_IFREG | 0o644, 0x801, 77);
        assert_eq!(
            ghost_of(&g, &watch("/d/f (deleted)", 0x80_0001, 77)),
            Ok(Some(5))
        );
        // Another inode, another device, or a FIFO's ghost: refused,
        // naming the watch, never taken for the path it had.
        for (g, w) in [
            (&g, watch("/d/f (deleted)", 0x80_0001, 78)),
            (&g, watch("/d/f (deleted)", 0x2d, 77)),
            (
                &ghosts(libc::S_IFIFO | 0o644, 0x801, 77),
                watch("/d/f (deleted)", 0x80_0001, 77),
            ),
        ] {
            let e = ghost_of(g, &w).unwrap_err();
            assert!(
                e.contains("watch 2") && e.contains("no regular ghost"),
                "{e}"
            );
        }
    }
}
