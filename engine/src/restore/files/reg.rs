//! Regular files, directories and devices, opened by path with the dumped
//! open(2) flags and moved to the dumped offset.

use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{open_at_least, ChildFds, OpenFd};
use crate::restore::load::Images;
use crate::restore::stage::EngineFds;

pub struct Reg;

impl FdKind for Reg {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Reg
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.reg, "REG")?;
        let reg = f.reg.as_ref().expect("checked");
        if reg.ckpt_host_mount == Some(true) && !reg.name.starts_with('/') {
            return Err(format!(
                "a file on a host mount must have an absolute path, not {:?}",
                reg.name
            ));
        }
        Ok(())
    }

    /// The file must still be the size it was (a file that shrank or grew
    /// is not the file the task had open).
    fn source(
        &self,
        _imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let reg = f.reg.as_ref().expect("validated");
        same_size(pid, fd.fd, reg, &crate::restore::mntns::in_tree(&reg.name))?;
        Ok(Arc::new(Open {
            path: crate::restore::cstr(pid, "fd", &reg.name)?,
            flags: reg.flags as i32,
            pos: reg.pos,
        }))
    }

    fn open_in_engine(
        &self,
        _imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        _pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        let reg = f.reg.as_ref().expect("validated");
        let at = crate::restore::mntns::in_tree(&reg.name);
        let what = format!("file {} ({})", f.id, reg.name);
        crate::restore::engine_files::reopen(pid, &at, reg.flags, reg.pos, &what)
    }
}

/// The file must still be the size it was (a file that shrank or grew is
/// not the file the task had open); `at` is where the engine finds it.
fn same_size(pid: Pid, fd: u32, reg: &pb::RegFileEntry, at: &Path) -> Result<()> {
    let Some(size) = reg.size else {
        return Ok(());
    };
    let now = std::fs::metadata(at).map(|m| m.len()).ok();
    if now == Some(size) {
        return Ok(());
    }
    Err(Error::task(
        pid,
        format!("fd {fd} ({})", reg.name),
        match now {
            Some(n) => format!("the file was {size} bytes at dump time and is {n} now"),
            None => "the file is gone".to_string(),
        },
    ))
}

/// The files on mounts of the host's mount namespace, not the tree's
/// (dump/files/reach.rs), opened by the engine now, before it makes the
/// tree's namespaces: from then on the engine sees the tree's copies of
/// those mounts, not the mounts the files were on. Every task takes its
/// fd from the engine (`FdSource::Inherit`), as a shared file.
pub fn open_on_host(imgs: &Images, fds: &mut EngineFds) -> Result<()> {
    for t in &imgs.tasks {
        for fd in &t.fdinfo {
            let f = imgs.file(fd.id);
            let Some(reg) = f.reg.as_ref().filter(|r| r.ckpt_host_mount == Some(true)) else {
                continue;
            };
            if f.r#type != pb::FdTypes::Reg as i32 || fds.descriptions.contains_key(&fd.id) {
                continue;
            }
            let at = Path::new(&reg.name);
            same_size(t.pid, fd.fd, reg, at)?;
            let what = format!("fd {} ({}, on a host mount)", fd.fd, reg.name);
            let opened =
                crate::restore::engine_files::reopen(t.pid, at, reg.flags, reg.pos, &what)?;
            fds.descriptions.insert(fd.id, opened);
        }
    }
    Ok(())
}

/// A path opened with the dumped open(2) flags (access mode, O_APPEND,
/// O_NONBLOCK, ...) and moved to the dumped offset.
#[derive(Debug)]
struct Open {
    path: CString,
    flags: i32,
    pos: u64,
}

impl OpenFd for Open {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        let fd = open_at_least(&self.path, self.flags, 0)?;
        if self.pos != 0 {
            // SAFETY: lseek on the fd we just opened.
            Errno::result(unsafe { libc::lseek(fd, self.pos as i64, libc::SEEK_SET) })?;
        }
        Ok(fd)
    }

    fn describe(&self) -> String {
        format!("open {:?}", self.path)
    }
}
