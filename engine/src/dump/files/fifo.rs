//! Named pipes (FIFOs), as CRIU writes them: a FIFO entry per open file
//! description, with the pipe's inode as pipe_id and a REG entry of its
//! own (regf_id) for the path, open flags and mode, since the restore
//! reopens the FIFO by that path. Its buffered data is read once per FIFO
//! (two fds of one FIFO share it) without taking it from the task, as a
//! pipe's is, and goes to fifo-data.img.
//!
//! A FIFO whose path is gone (unlinked, still open) is a ghost, as
//! CRIU has it: its REG entry is remapped (remap-fpath.img) to a ghost
//! file of FIFO mode, which holds no contents (the data goes to
//! fifo-data.img as any FIFO's); the restore makes the FIFO again, opens
//! its ends and unlinks it. One still linked under another name is
//! refused: which name it has now is not known.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::reach::Reach;
use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;

pub struct Fifo;

/// Buffered data of every FIFO, by inode: (pipe size, bytes).
pub type FifoData = BTreeMap<u64, (u32, Vec<u8>)>;

impl FdDumper for Fifo {
    /// A FIFO's link is a path like a regular file's: only the stat of the
    /// fd tells them apart.
    fn claims(&self, _link: &FdLink<'_>) -> bool {
        false
    }

    fn claims_fd(&self, fd: &FdCx<'_>) -> bool {
        matches!(fd.kind, FdLink::Path)
            && std::fs::metadata(fd.proc_path()).is_ok_and(|m| m.file_type().is_fifo())
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let proc_path = fd.proc_path();
        let meta = std::fs::metadata(&proc_path)
            .map_err(|e| Error::io(&proc_path, format!("pid {}: fd {}: stat", fd.pid, fd.fd), e))?;
        let ino = meta.ino();
        let regf_id = if meta.nlink() == 0 {
            let what = format!("fd {}", fd.fd);
            table.add_ghost(fd.pid, &what, &proc_path, fd.link, &meta, fd.flags, Some(0))?
        } else if fd.link.ends_with(b" (deleted)") {
            return Err(fd.unsupported(
                "named pipes (FIFOs) whose path was removed but that are linked under another name",
            ));
        } else {
            table.add_reg(fd.link, fd.flags, 0, Some(&meta), Reach::ByName)
        };
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Fifo as i32,
            id,
            fifo: Some(pb::FifoEntry {
                id,
                pipe_id: ino as u32,
                regf_id: Some(regf_id),
                wait_writer: None,
            }),
            ..Default::default()
        });
        if let std::collections::btree_map::Entry::Vacant(e) = table.fifo_data.entry(ino) {
            e.insert(super::pipe::peek_pipe(fd)?);
        }
        Ok((pb::FdTypes::Fifo, id))
    }

    fn finish(&self, table: &FileTable, dir: &ImageDir) -> Result<()> {
        super::pipe::write_data(dir, "fifo-data.img", &table.fifo_data)
    }
}
