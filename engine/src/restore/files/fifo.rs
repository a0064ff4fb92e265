//! Named pipes (FIFOs): each end is reopened by the path of its REG entry
//! (regf_id) with the dumped flags. Opening a FIFO read-only or write-only
//! blocks until the other side is open, so a helper opened O_RDWR first
//! holds both sides while the end is opened; the one that makes the helper
//! (the first end of the FIFO made, by the task or by the engine) refills
//! the FIFO with its data (fifo-data.img) and gives it its size. The data
//! stays in the FIFO once the helper is closed, as long as the restored
//! ends hold it open.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{open_at_least, ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Fifo;

impl FdKind for Fifo {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Fifo
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.fifo, "FIFO")?;
        match f.fifo.as_ref().and_then(|p| p.regf_id) {
            Some(_) => Ok(()),
            None => Err("FIFO without the regf_id of its path".into()),
        }
    }

    fn source(
        &self,
        imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        Ok(Arc::new(End::of(imgs, pid, &format!("fd {}", fd.fd), f)?))
    }

    fn object(&self, f: &pb::FileEntry) -> Option<u64> {
        f.fifo.as_ref().map(|p| p.pipe_id as u64)
    }

    fn open_in_engine(
        &self,
        imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        let end = End::of(imgs, pid, &format!("file {}", f.id), f)?;
        let what = || format!("FIFO {}", end.path.to_string_lossy());
        if let std::collections::btree_map::Entry::Vacant(slot) = pairs.entry(end.key()) {
            let h = end
                .helper(0)
                .map_err(|e| Error::sys(pid, format!("{}: refilling it", what()), e))?;
            // SAFETY: a fresh fd we own.
            let h = unsafe { OwnedFd::from_raw_fd(h) };
            let h2 = h
                .try_clone()
                .map_err(|e| Error::io(&end.name, format!("pid {pid}: {}", what()), e))?;
            slot.insert((h, h2));
        }
        let fd = end
            .open_end(0)
            .map_err(|e| Error::sys(pid, format!("{}: open", what()), e))?;
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The engine's fds are close-on-exec, whatever the task's are
        // (set again when the fd is put into the task).
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::sys(pid, format!("{}: fcntl", what()), e))?;
        Ok(fd)
    }
}

/// The open ends of an unlinked FIFO made again at `path` (its ghost,
/// not yet unlinked), by file id: every FIFO entry whose path entry is one
/// of `regs`. The engine holds them, close-on-exec, for the tasks; a
/// helper holds both sides while they are opened and refills the FIFO.
pub fn open_ghost_ends(
    imgs: &Images,
    pid: Pid,
    path: &std::path::Path,
    regs: &[u32],
) -> Result<Vec<(u32, OwnedFd)>> {
    let path = path.to_string_lossy();
    let mut helper: Option<OwnedFd> = None;
    let mut out = Vec::new();
    for f in imgs.files.values() {
        let Some(regf) = f.fifo.as_ref().and_then(|p| p.regf_id) else {
            continue;
        };
        if !regs.contains(&regf) {
            continue;
        }
        let reg = imgs.reg(regf);
        let what = format!("file {} (unlinked FIFO {})", f.id, reg.name);
        let end = End::at(imgs, pid, &what, f, reg, &path)?;
        if helper.is_none() {
            let h = end
                .helper(0)
                .map_err(|e| Error::sys(pid, format!("{what}: refilling it"), e))?;
            // SAFETY: a fresh fd we own.
            helper = Some(unsafe { OwnedFd::from_raw_fd(h) });
        }
        let fd = end
            .open_end(0)
            .map_err(|e| Error::sys(pid, format!("{what}: open"), e))?;
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::sys(pid, format!("{what}: fcntl"), e))?;
        out.push((f.id, fd));
    }
    Ok(out)
}

/// One end of a FIFO, as it is to be opened; all ends of one FIFO share
/// `pipe_id`.
#[derive(Debug)]
struct End {
    pipe_id: u32,
    name: String,
    path: CString,
    flags: i32,
    size: u32,
    data: Vec<u8>,
}

impl End {
    /// The end `f` is, with its path checked to be a FIFO still.
    fn of(imgs: &Images, pid: Pid, what: &str, f: &pb::FileEntry) -> Result<End> {
        let p = f.fifo.as_ref().expect("validated");
        let regf = p.regf_id.expect("validated");
        let reg = imgs
            .files
            .get(&regf)
            .and_then(|r| r.reg.as_ref())
            .ok_or_else(|| {
                imgs.bad(
                    "files.img",
                    format!(
                        "FIFO file {}: its path entry {regf} is no REG entry of files.img",
                        f.id
                    ),
                )
            })?;
        let name = &reg.name;
        match std::fs::metadata(crate::restore::mntns::in_tree(name)) {
            Ok(m) if m.file_type().is_fifo() => {}
            Ok(_) => {
                return Err(Error::task(
                    pid,
                    format!("{what} ({name})"),
                    "the path was a named pipe (FIFO) at dump time and is something else now",
                ))
            }
            Err(e) => {
                return Err(Error::task(
                    pid,
                    format!("{what} ({name})"),
                    format!("the named pipe (FIFO) it had open is gone ({e})"),
                ))
            }
        }
        End::at(imgs, pid, what, f, reg, name)
    }

    /// The end `f` is, to be opened at `path` (its REG entry `reg`).
    fn at(
        imgs: &Images,
        pid: Pid,
        what: &str,
        f: &pb::FileEntry,
        reg: &pb::RegFileEntry,
        path: &str,
    ) -> Result<End> {
        let p = f.fifo.as_ref().expect("validated");
        let (size, data) = imgs.fifo_data.get(&p.pipe_id).cloned().unwrap_or_default();
        Ok(End {
            pipe_id: p.pipe_id,
            name: path.to_owned(),
            path: crate::restore::cstr(pid, what, path)?,
            flags: reg.flags as i32,
            size,
            data,
        })
    }

    fn key(&self) -> (i32, u64) {
        (pb::FdTypes::Fifo as i32, self.pipe_id as u64)
    }

    /// Opens the FIFO O_RDWR at `min_fd` or above (which never blocks, and
    /// lets either end be opened without blocking while it is open), gives
    /// it its size and writes its data into it.
    fn helper(&self, min_fd: RawFd) -> nix::Result<RawFd> {
        let h = open_at_least(&self.path, libc::O_RDWR | libc::O_NONBLOCK, min_fd)?;
        // SAFETY (whole function): fcntl and write on the fd we just
        // opened, from a buffer of the length we pass.
        if self.size != 0 {
            if let Err(e) =
                Errno::result(unsafe { libc::fcntl(h, libc::F_SETPIPE_SZ, self.size as i32) })
            {
                unsafe { libc::close(h) };
                return Err(e);
            }
        }
        let mut off = 0;
        while off < self.data.len() {
            let n = Errno::result(unsafe {
                libc::write(h, self.data[off..].as_ptr().cast(), self.data.len() - off)
            });
            match n {
                Ok(n) => off += n as usize,
                Err(e) => {
                    unsafe { libc::close(h) };
                    return Err(e);
                }
            }
        }
        Ok(h)
    }

    /// Opens the end with the dumped flags, O_NONBLOCK as dumped (opened
    /// non-blocking, while the helper holds the FIFO).
    fn open_end(&self, min_fd: RawFd) -> nix::Result<RawFd> {
        let fd = open_at_least(&self.path, self.flags | libc::O_NONBLOCK, min_fd)?;
        if self.flags & libc::O_NONBLOCK == 0 {
            // SAFETY: fcntl on the fd we just opened.
            let r = Errno::result(unsafe { libc::fcntl(fd, libc::F_GETFL) }).and_then(|fl| {
                Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) })
            });
            if let Err(e) = r {
                unsafe { libc::close(fd) };
                return Err(e);
            }
        }
        Ok(fd)
    }
}

impl OpenFd for End {
    fn open(&self, cx: &mut ChildFds) -> nix::Result<RawFd> {
        let key = self.key();
        if !cx.pairs.iter().any(|p| p.0 == key) {
            // Kept above every fd the task uses, and closed with the other
            // helpers once every fd is made.
            let h = self.helper(cx.efd + 1)?;
            cx.pairs.push((key, h, h));
        }
        self.open_end(0)
    }

    fn describe(&self) -> String {
        format!("FIFO {:?}", self.path)
    }
}
