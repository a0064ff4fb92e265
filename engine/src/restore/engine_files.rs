//! Files the engine makes itself and hands to the tasks: memfd objects
//! (`memfd`), unlinked files (`ghost`), inotify instances watching
//! unlinked files (`files/inotify.rs`) and pidfds of reaped tasks
//! (`files/pidfd.rs`). None can be opened by a path, so a task cannot
//! open them for itself.
//!
//! The engine makes each object once, then one open file description per
//! file id of files.img (each fd's description, and one per mapping), by
//! opening the object again with the dumped flags (a memfd through
//! /proc/self/fd; a ghost file by its path, before it is unlinked, so that
//! flags such as O_NOFOLLOW apply as they did) and moving it to the
//! dumped offset. Fds reach the tasks as shared files do
//! (`FdSource::Inherit`; the pidfds of reaped tasks made once the tree
//! exists, `FdSource::Inject`, pidfd_getfd); mappings are made from a helper fd
//! the task reopens from its inherited copy of the engine's fd
//! (/proc/self/fd/N, restore/child.rs). Every fd and mapping of an
//! object, in every task, is thus that one object again.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::load::Images;
use super::stage::{EngineFds, Kind, Restorer};
use super::{ghost, memfd};
use crate::error::{Error, Result};

/// Made before any task exists; the descriptions join the engine's fds
/// for the tasks ([`EngineFds`]), reached through no path.
pub const KIND: Kind = Kind {
    name: "memfd objects and unlinked files",
    validate: super::files::validate_ghost_watches,
    new: |_, _| Ok(Box::new(Made::default())),
};

#[derive(Default)]
struct Made {
    late_seals: Vec<memfd::Made>,
    root: i32,
    /// The engine's fds held for the pidfds of reaped tasks, by file id,
    /// until the driver makes them (`tree_created`).
    dead_places: BTreeMap<u32, std::os::fd::RawFd>,
}

impl Restorer for Made {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let (descriptions, late_seals) = make(imgs)?;
        super::memory::make_objects(imgs, fds)?;
        if imgs.ns.pid {
            for id in dead_pidfd_ids(imgs) {
                if let Some(fd) = descriptions.get(&id) {
                    self.dead_places.insert(id, fd.as_raw_fd());
                    fds.late.insert(id);
                }
            }
        }
        for (id, fd) in descriptions {
            fds.pathless.insert(id);
            fds.descriptions.insert(id, fd);
        }
        self.late_seals = late_seals;
        self.root = imgs.tasks[0].pid;
        Ok(())
    }

    /// In a pid namespace of the tree's own, the pidfds of reaped tasks
    /// are made now, by the driver inside it (restore/ns.rs), over the
    /// places `create` held: a pidfd's process must be in the pid
    /// namespace of the task using it or one below (the kernel's
    /// access_pidfd_pidns), or pidfd_send_signal gives EINVAL, not ESRCH;
    /// and before the root's clone that namespace does not exist. In a
    /// user namespace of the tree's own the tasks take them from the
    /// launcher (restore/userns.rs), whose copy of the engine's fds
    /// predates them: they go to their places there too.
    fn tree_created(&mut self, imgs: &Images) -> Result<()> {
        if !imgs.ns.pid {
            return Ok(());
        }
        let made = super::files::dead_pidfds(imgs)?;
        let mut placed = Vec::with_capacity(made.len());
        for (id, fd) in &made {
            let Some(&place) = self.dead_places.get(id) else {
                continue;
            };
            nix::unistd::dup2(fd.as_raw_fd(), place).map_err(|e| {
                Error::sys(
                    self.root,
                    format!(
                        "file {id}: dup2 of the pidfd of a reaped task to its place, fd {place}"
                    ),
                    e,
                )
            })?;
            placed.push((*id, place, fd.as_fd()));
        }
        let fds: Vec<_> = placed.iter().map(|&(_, at, fd)| (at, fd)).collect();
        super::userns::to_launcher(&fds).map_err(|e| {
            let ids: Vec<u32> = placed.iter().map(|p| p.0).collect();
            Error::sys(
                self.root,
                format!(
                    "files {ids:?}: the pidfds of reaped tasks, to their places in the user \
                     namespace's launcher"
                ),
                e,
            )
        })?;
        Ok(())
    }

    /// Seals that had to wait until every mapping exists.
    fn finish(&mut self, _: &Images) -> Result<()> {
        for m in &self.late_seals {
            memfd::add_seals(&m.fd, m.late_seals).map_err(|e| {
                Error::sys(
                    self.root,
                    format!("memfd {:?}: F_ADD_SEALS {:#x}", m.name, m.late_seals),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// Every object once, then one open file description per file id of
/// files.img that refers to one; and the memfd objects with seals to add
/// once every task has mapped them.
fn make(imgs: &Images) -> Result<(BTreeMap<u32, OwnedFd>, Vec<memfd::Made>)> {
    {
        let pid = imgs.tasks[0].pid;
        let mut memfds = BTreeMap::new();
        for (id, e) in &imgs.memfds {
            memfds.insert(*id, memfd::create(imgs, e)?);
        }
        let mut descriptions = BTreeMap::new();
        let watched = super::files::watched_ghosts(imgs)?;
        // O_PATH fds of the ghosts inotify watches are on, by ghost id.
        let mut for_watches = BTreeMap::new();
        // One ghost at a time, unlinked once its descriptions are open, so
        // that two unlinked files of one path both get that path again.
        for (gid, (e, chunks)) in &imgs.ghosts.files {
            let users: Vec<u32> = imgs
                .ghosts
                .remap
                .iter()
                .filter(|(_, g)| *g == gid)
                .map(|(f, _)| *f)
                .collect();
            let orig = &imgs.reg(users[0]).name; // validated: one remap at least
            if e.mode & libc::S_IFMT == libc::S_IFIFO {
                let linked = ghost::create_fifo(pid, *gid, orig, e)?;
                let ends = super::files::fifo_ghost_ends(imgs, pid, linked.path(), &users)?;
                descriptions.extend(ends);
                linked.unlink(pid)?;
                continue;
            }
            let (_fd, linked) = ghost::create(pid, *gid, orig, e, chunks)?;
            if linked.path() != Path::new(orig) {
                if let Some(why) = super::files::renamed_ghost_seen(&imgs.files, orig) {
                    return Err(Error::unsupported(
                        pid,
                        format!("unlinked file {orig} (ghost {gid})"),
                        format!(
                            "its path is taken, so it is made again as {}, and {why}",
                            linked.path().display()
                        ),
                    ));
                }
            }
            for id in users {
                let reg = imgs.reg(id);
                let what = format!("file {id} (unlinked file {})", reg.name);
                let d = reopen(pid, linked.path(), reg.flags, reg.pos, &what)?;
                descriptions.insert(id, d);
            }
            if watched.contains(gid) {
                let at = linked.path();
                let o: OwnedFd = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(at)
                    .map_err(|e| {
                        Error::io(
                            at,
                            format!("pid {pid}: ghost {gid}: O_PATH open for inotify watches"),
                            e,
                        )
                    })?
                    .into();
                for_watches.insert(*gid, o);
            }
            linked.unlink(pid)?;
        }
        // inotify instances watching ghosts: every ghost is made and
        // unlinked by now, so their watches see none of it.
        descriptions.extend(super::files::inotify_on_ghosts(imgs, &for_watches)?);
        for (id, f) in &imgs.files {
            if let Some(m) = &f.memfd {
                let made = &memfds[&m.inode_id];
                let path = PathBuf::from(format!("/proc/self/fd/{}", made.fd.as_raw_fd()));
                let what = format!("file {id} (memfd {:?})", made.name);
                descriptions.insert(*id, reopen(pid, &path, m.flags, m.pos, &what)?);
            }
        }
        // pidfds of tasks reaped before the dump; in a pid namespace of
        // the tree's own, places held for them (`Made::tree_created`).
        if imgs.ns.pid {
            for id in dead_pidfd_ids(imgs) {
                let hold = std::fs::File::open("/dev/null").map_err(|e| {
                    Error::io(
                        "/dev/null",
                        format!("pid {pid}: file {id}: the place of a pidfd of a reaped task"),
                        e,
                    )
                })?;
                descriptions.insert(id, hold.into());
            }
        } else {
            descriptions.extend(super::files::dead_pidfds(imgs)?);
        }
        let late = memfds.into_values().filter(|m| m.late_seals != 0);
        Ok((descriptions, late.collect()))
    }
}

/// The file ids of pidfds of tasks reaped before the dump.
fn dead_pidfd_ids(imgs: &Images) -> Vec<u32> {
    imgs.files
        .iter()
        .filter(|(_, f)| f.pidfd.as_ref().is_some_and(|p| p.nspid == -1))
        .map(|(id, _)| *id)
        .collect()
}

/// A new open file description of the file at `path` (a ghost's name, or
/// /proc/self/fd/N of a memfd) with open(2) `flags`, at `pos`.
pub(super) fn reopen(pid: i32, path: &Path, flags: u32, pos: u64, what: &str) -> Result<OwnedFd> {
    // O_TMPFILE (with its O_DIRECTORY) made the file; it cannot open one.
    let flags = flags as i32
        & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC | libc::O_TMPFILE);
    let acc = flags & libc::O_ACCMODE;
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(acc != libc::O_WRONLY)
        .write(acc != libc::O_RDONLY)
        .custom_flags(flags | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            Error::io(
                path,
                format!("pid {pid}: {what}: opening it again with flags {flags:#o}"),
                e,
            )
        })?
        .into();
    if pos != 0 {
        nix::unistd::lseek(fd.as_raw_fd(), pos as i64, nix::unistd::Whence::SeekSet)
            .map_err(|e| Error::sys(pid, format!("{what}: seek to {pos}"), e))?;
    }
    Ok(fd)
}
