//! Pipes: both ends of one pipe are made together, by the task that holds
//! them or by the engine when the ends are in several tasks; the first to
//! make the pipe refills it with the data it held (pipes-data.img) and
//! gives it its size.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Pipe;

impl FdKind for Pipe {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Pipe
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.pipe, "PIPE")
    }

    fn source(
        &self,
        imgs: &Images,
        _pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let p = f.pipe.as_ref().expect("validated");
        let (size, data) = imgs.pipe_data.get(&p.pipe_id).cloned().unwrap_or_default();
        Ok(Arc::new(End {
            pipe_id: p.pipe_id,
            flags: p.flags as i32,
            size,
            data,
        }))
    }

    fn object(&self, f: &pb::FileEntry) -> Option<u64> {
        f.pipe.as_ref().map(|p| p.pipe_id as u64)
    }

    fn open_in_engine(
        &self,
        imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        let p = f.pipe.as_ref().expect("validated");
        let key = (pb::FdTypes::Pipe as i32, p.pipe_id as u64);
        if let std::collections::btree_map::Entry::Vacant(slot) = pairs.entry(key) {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::sys(pid, "pipe", e))?;
            if let Some((size, data)) = imgs.pipe_data.get(&p.pipe_id) {
                if *size != 0 {
                    nix::fcntl::fcntl(
                        w.as_raw_fd(),
                        nix::fcntl::FcntlArg::F_SETPIPE_SZ(*size as i32),
                    )
                    .map_err(|e| Error::sys(pid, format!("pipe {}: size {size}", p.pipe_id), e))?;
                }
                nix::unistd::write(&w, data)
                    .map_err(|e| Error::sys(pid, "refilling the pipe", e))?;
            }
            slot.insert((r, w));
        }
        let (r, w) = &pairs[&key];
        let end = if p.flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
            w
        } else {
            r
        };
        let fd = end
            .try_clone()
            .map_err(|e| Error::io("pipe", format!("pid {pid}: pipe {}", p.pipe_id), e))?;
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(super::nonblock(
                p.flags,
            ))),
        )
        .map_err(|e| Error::sys(pid, "flags", e))?;
        Ok(fd)
    }
}

/// One end of a pipe; both ends in one task share `pipe_id`.
#[derive(Debug)]
struct End {
    pipe_id: u32,
    flags: i32,
    size: u32,
    data: Vec<u8>,
}

impl OpenFd for End {
    fn open(&self, cx: &mut ChildFds) -> nix::Result<RawFd> {
        let key = (pb::FdTypes::Pipe as i32, self.pipe_id as u64);
        // SAFETY (whole function): plain syscalls on fds we create and
        // own, with buffers of the lengths we pass.
        let (r, w) = match cx.pairs.iter().find(|p| p.0 == key) {
            Some(&(_, r, w)) => (r, w),
            None => {
                let mut p = [0i32; 2];
                Errno::result(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
                // Keep both ends above every fd the task uses.
                let r =
                    Errno::result(unsafe { libc::fcntl(p[0], libc::F_DUPFD_CLOEXEC, cx.efd + 1) })?;
                let w =
                    Errno::result(unsafe { libc::fcntl(p[1], libc::F_DUPFD_CLOEXEC, cx.efd + 1) })?;
                unsafe {
                    libc::close(p[0]);
                    libc::close(p[1]);
                }
                if self.size != 0 {
                    Errno::result(unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, self.size as i32) })?;
                }
                let data = &self.data;
                let mut off = 0;
                while off < data.len() {
                    let n = Errno::result(unsafe {
                        libc::write(w, data[off..].as_ptr().cast(), data.len() - off)
                    })?;
                    off += n as usize;
                }
                cx.pairs.push((key, r, w));
                (r, w)
            }
        };
        let end = if self.flags & libc::O_ACCMODE == libc::O_WRONLY {
            w
        } else {
            r
        };
        let fd = Errno::result(unsafe { libc::fcntl(end, libc::F_DUPFD, 0) })?;
        Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFL, self.flags & libc::O_NONBLOCK) })?;
        Ok(fd)
    }

    fn describe(&self) -> String {
        format!("pipe {}", self.pipe_id)
    }
}
