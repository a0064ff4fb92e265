//! Pipes: each end is a file entry of its own, both with the pipe's inode
//! as pipe_id so the restore makes them one pipe again. The data buffered
//! in the pipe is read once per pipe, without taking it from the task
//! (tee into a pipe of ours), and goes to pipes-data.img with the pipe's
//! size. An empty pipe has an entry too when its size is not the default
//! one: a size set with F_SETPIPE_SZ is state the program relies on.

use std::os::unix::fs::OpenOptionsExt;

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;

pub struct Pipe;

/// The size of a new pipe (16 pages).
const DEFAULT_PIPE_SIZE: u32 = 16 * 4096;

/// pipes-data.img or fifo-data.img entries of `data` (by inode: size,
/// bytes): every pipe with data or with a size of its own.
pub(super) fn write_data(
    dir: &ImageDir,
    name: &str,
    data: &std::collections::BTreeMap<u64, (u32, Vec<u8>)>,
) -> Result<()> {
    let entries: Vec<(pb::PipeDataEntry, &[u8])> = data
        .iter()
        .filter(|(_, (size, bytes))| !bytes.is_empty() || *size != DEFAULT_PIPE_SIZE)
        .map(|(&ino, (size, bytes))| {
            (
                pb::PipeDataEntry {
                    pipe_id: ino as u32,
                    bytes: bytes.len() as u32,
                    size: Some(*size),
                },
                bytes.as_slice(),
            )
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    dir.write_with_payloads(name, &entries)
}

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

    fn finish(&self, table: &FileTable, dir: &ImageDir) -> Result<()> {
        write_data(dir, "pipes-data.img", &table.pipe_data)
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
        // As large as the task's pipe, or tee would copy only part of a
        // full one.
        if libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, size) < 0 {
            return Err(Error::sys(
                pid,
                format!(
                    "{}: a pipe of its size ({size} bytes) to copy its data",
                    what()
                ),
                last(),
            ));
        }
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
