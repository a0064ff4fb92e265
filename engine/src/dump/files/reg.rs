//! Files opened by path: regular files, directories and devices, by name
//! with their offset, since the restore reopens them by that name. A memfd
//! or an unlinked regular file has no name to reopen, so its contents are
//! dumped instead (dump/memfd.rs, dump/ghost.rs). What cannot be reopened
//! as it was (a deleted file still linked elsewhere, a socket bound in the
//! filesystem) is refused. FIFOs are claimed before this (fifo.rs).
//! The name is resolved in the namespace whose mount the file is on
//! (reach.rs).

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::reach::Reach;
use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;

pub struct Reg;

impl FdDumper for Reg {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        matches!(link, FdLink::Path)
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let (pid, link, flags, info) = (fd.pid, fd.link, fd.flags, fd.info);
        let proc_path = fd.proc_path();
        let meta = std::fs::metadata(&proc_path)
            .map_err(|e| Error::io(&proc_path, format!("pid {pid}: fd {}: stat", fd.fd), e))?;
        let what = format!("fd {}", fd.fd);
        if crate::dump::memfd::is_memfd(pid, &what, &proc_path, link, &meta)? {
            let id = table.add_memfd(pid, &what, &proc_path, link, &meta, flags, Some(info.pos))?;
            return Ok((pb::FdTypes::Memfd, id));
        }
        if crate::dump::ghost::is_ghost(&meta) {
            let id = table.add_ghost(pid, &what, &proc_path, link, &meta, flags, Some(info.pos))?;
            return Ok((pb::FdTypes::Reg, id));
        }
        if meta.nlink() == 0 || link.ends_with(b" (deleted)") {
            return Err(fd.unsupported(
                "unlinked files other than regular files, and deleted files still linked elsewhere,",
            ));
        }
        if meta.file_type().is_socket() {
            return Err(fd.unsupported("sockets"));
        }
        let reach = table.mounts.reach(pid, info.mnt_id, link, &meta)?;
        if reach == Reach::Nowhere {
            return Err(Error::unsupported(
                pid,
                format!("fd {} ({})", fd.fd, String::from_utf8_lossy(link)),
                format!(
                    "its mount (id {}) is in neither the tree's mount namespace nor the \
                     engine's (unmounted since the file was opened, as a container's old root \
                     is after pivot_root, or of another namespace), and that name finds \
                     another file or none in the tree's root and on the host: no path reaches \
                     the file again at restore",
                    info.mnt_id
                ),
            ));
        }
        Ok((
            pb::FdTypes::Reg,
            table.add_reg(link, flags, info.pos, Some(&meta), reach),
        ))
    }
}
