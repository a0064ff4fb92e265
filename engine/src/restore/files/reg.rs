//! Regular files, directories and devices, opened by path with the dumped
//! open(2) flags and moved to the dumped offset.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{open_at_least, ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Reg;

impl FdKind for Reg {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Reg
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.reg, "REG")
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
        if let Some(size) = reg.size {
            let now = std::fs::metadata(crate::restore::mntns::in_tree(&reg.name))
                .map(|m| m.len())
                .ok();
            if now != Some(size) {
                return Err(Error::task(
                    pid,
                    format!("fd {} ({})", fd.fd, reg.name),
                    match now {
                        Some(n) => format!("the file was {size} bytes at dump time and is {n} now"),
                        None => "the file is gone".to_string(),
                    },
                ));
            }
        }
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
        let flags = reg.flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
        let fd = nix::fcntl::open(
            &crate::restore::mntns::in_tree(&reg.name),
            nix::fcntl::OFlag::from_bits_retain(flags | libc::O_CLOEXEC | libc::O_NOCTTY),
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys(pid, format!("open {}", reg.name), e))?;
        // SAFETY: `fd` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::unistd::lseek(fd.as_raw_fd(), reg.pos as i64, nix::unistd::Whence::SeekSet)
            .map_err(|e| Error::sys(pid, "seek", e))?;
        Ok(fd)
    }
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
