//! Files the engine makes itself and hands to the tasks: memfd objects
//! (`memfd`), unlinked files (`ghost`) and pidfds of reaped tasks
//! (`files/pidfd.rs`). None can be opened by a path, so a task cannot
//! open them for itself.
//!
//! The engine makes each object once, then one open file description per
//! file id of files.img (each fd's description, and one per mapping), by
//! opening the object again with the dumped flags (a memfd through
//! /proc/self/fd; a ghost file by its path, before it is unlinked, so that
//! flags such as O_NOFOLLOW apply as they did) and moving it to the
//! dumped offset. Fds reach the tasks as shared files do
//! (`FdSource::Inject`, pidfd_getfd); mappings are made from a helper fd
//! the task opens from /proc/ENGINE/fd/N. Every fd and mapping of an
//! object, in every task, is thus that one object again.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
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
    validate: super::stage::no_checks,
    new: |_, _| Ok(Box::new(Made::default())),
};

#[derive(Default)]
struct Made {
    late_seals: Vec<memfd::Made>,
    root: i32,
}

impl Restorer for Made {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let (descriptions, late_seals) = make(imgs)?;
        for (id, fd) in descriptions {
            fds.pathless.insert(id);
            fds.descriptions.insert(id, fd);
        }
        self.late_seals = late_seals;
        self.root = imgs.tasks[0].pid;
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
            for id in users {
                let reg = imgs.reg(id);
                let what = format!("file {id} (unlinked file {})", reg.name);
                let d = reopen(pid, linked.path(), reg.flags, reg.pos, &what)?;
                descriptions.insert(id, d);
            }
            linked.unlink(pid)?;
        }
        for (id, f) in &imgs.files {
            if let Some(m) = &f.memfd {
                let made = &memfds[&m.inode_id];
                let path = PathBuf::from(format!("/proc/self/fd/{}", made.fd.as_raw_fd()));
                let what = format!("file {id} (memfd {:?})", made.name);
                descriptions.insert(*id, reopen(pid, &path, m.flags, m.pos, &what)?);
            }
        }
        // pidfds of tasks reaped before the dump.
        descriptions.extend(super::files::dead_pidfds(imgs)?);
        let late = memfds.into_values().filter(|m| m.late_seals != 0);
        Ok((descriptions, late.collect()))
    }
}

/// A new open file description of the file at `path` (a ghost's name, or
/// /proc/self/fd/N of a memfd) with open(2) `flags`, at `pos`.
fn reopen(pid: i32, path: &Path, flags: u32, pos: u64, what: &str) -> Result<OwnedFd> {
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
