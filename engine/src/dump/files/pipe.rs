//! Pipes: each end is a file entry of its own, both with the pipe's inode
//! as pipe_id so the restore makes them one pipe again. The data buffered
//! in the pipe is read once per pipe, without taking it from the task
//! (tee into a pipe of ours), and goes to pipes-data.img with the pipe's
//! size.

use std::os::unix::fs::OpenOptionsExt;

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;

pub struct Pipe;

impl FdDumper for Pipe {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        matches!(link, FdLink::Pipe(_))
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let FdLink::Pipe(ino) = fd.kind else {
            unreachable!("claimed pipes only")
        };
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Pipe as i32,
            id,
            pipe: Some(pb::PipeEntry {
                id,
                pipe_id: ino as u32,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
            }),
            ..Default::default()
        });
        if let std::collections::btree_map::Entry::Vacant(e) = table.pipe_data.entry(ino) {
            e.insert(peek_pipe(fd)?);
        }
        Ok((pb::FdTypes::Pipe, id))
    }
}

/// (pipe size, buffered bytes) of the pipe or FIFO behind `fd`: a second
/// reader opened through /proc, and tee(2) into a pipe of ours, which
/// copies the data without taking it from the task's pipe.
pub(super) fn peek_pipe(fd: &FdCx<'_>) -> Result<(u32, Vec<u8>)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (pid, path) = (fd.pid, fd.proc_path());
    let what = || format!("fd {} ({})", fd.fd, String::from_utf8_lossy(fd.link));
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| {
            Error::io(
                &path,
                format!("pid {pid}: {}: opening a second reader", what()),
                e,
            )
        })?;
    let last = nix::errno::Errno::last;
    // SAFETY: fcntl, pipe2, tee and read on fds we own, into a buffer of
    // the length we pass.
    unsafe {
        let size = libc::fcntl(src.as_raw_fd(), libc::F_GETPIPE_SZ);
        let mut p = [0i32; 2];
        if size < 0 || libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) < 0 {
            return Err(Error::sys(pid, what(), last()));
        }
        let (rd, wr) = (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]));
        libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        let n = libc::tee(
            src.as_raw_fd(),
            wr.as_raw_fd(),
            size as usize,
            libc::SPLICE_F_NONBLOCK,
        );
        if n < 0 && last() != nix::errno::Errno::EAGAIN {
            return Err(Error::sys(
                pid,
                format!("{}: tee of its data", what()),
                last(),
            ));
        }
        let mut data = vec![0u8; n.max(0) as usize];
        let mut got = 0usize;
        while got < data.len() {
            let r = libc::read(
                rd.as_raw_fd(),
                data[got..].as_mut_ptr().cast(),
                data.len() - got,
            );
            if r <= 0 {
                return Err(Error::sys(
                    pid,
                    format!("{}: reading its data", what()),
                    last(),
                ));
            }
            got += r as usize;
        }
        Ok((size as u32, data))
    }
}
