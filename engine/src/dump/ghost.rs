//! Unlinked files still open or mapped (nlink 0, "/path (deleted)"):
//! CRIU's ghost files. Their contents exist nowhere but in the open inode,
//! so they are copied into ghost-file-ID.img (a ghost_file_entry, then
//! the data as chunks: ghost_chunk_entry {len, off} and the bytes, holes
//! left out, found with SEEK_DATA/SEEK_HOLE), and every fd or mapping of them becomes an ordinary REG
//! file entry under the old path plus a remap-fpath.img entry that points
//! it at the ghost. One ghost per inode, however many fds, mappings and
//! processes reach it. The restore recreates the file, opens what it needs
//! and unlinks it again. An unlinked FIFO is a ghost too, with no
//! contents (as CRIU writes it: the entry alone, of FIFO mode).
//!
//! Copying is bounded (`--ghost-limit`, CRIU's option, 1 MiB by default):
//! an unlinked file is usually a small lock or scratch file, and a big one
//! would silently bloat every image.
//!
//! The contents are read when the images are written, once every task is
//! dumped and every check passed (the tree is still frozen): reading opens
//! the file, which inotify watches of it may see (dump/files/inotify.rs
//! refuses those that would), and a dump refused later must not have
//! opened it.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use super::files::reach::Reach;
use super::files::FileTable;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;

/// CRIU's default ghost limit.
pub const DEFAULT_GHOST_LIMIT: u64 = 1 << 20;

struct Ghost {
    id: u32,
    entry: pb::GhostFileEntry,
    /// Where the contents are read from (/proc/PID/fd/N or map_files),
    /// with the pid and what it is for messages, and the link ("PATH
    /// (deleted)"); none for a FIFO.
    source: Option<Source>,
}

struct Source {
    pid: Pid,
    what: String,
    proc_path: String,
    link: String,
}

/// The ghost files of one dump, by (device, inode).
pub struct GhostTable {
    /// The largest file copied (bytes).
    pub limit: u64,
    by_inode: BTreeMap<(u64, u64), usize>,
    ghosts: Vec<Ghost>,
    remaps: Vec<pb::RemapFilePathEntry>,
    /// The entry of the mappings of a ghost with given open flags (ghost
    /// id, flags): mappings share one, as for memfd objects.
    mapping_ids: BTreeMap<(u32, u32), u32>,
}

impl Default for GhostTable {
    fn default() -> Self {
        GhostTable {
            limit: DEFAULT_GHOST_LIMIT,
            by_inode: BTreeMap::new(),
            ghosts: Vec::new(),
            remaps: Vec::new(),
            mapping_ids: BTreeMap::new(),
        }
    }
}

/// Whether the fd or mapping behind `meta` is an unlinked regular file.
pub fn is_ghost(meta: &Metadata) -> bool {
    meta.nlink() == 0 && meta.file_type().is_file()
}

impl FileTable {
    /// A REG entry (the path it had, its flags and offset) for one open
    /// file description of the unlinked file `proc_path` reaches, remapped
    /// to that file's ghost: an fd (at offset `pos`) or mappings (`None`).
    #[allow(clippy::too_many_arguments)]
    pub fn add_ghost(
        &mut self,
        pid: Pid,
        what: &str,
        proc_path: &str,
        link: &[u8],
        meta: &Metadata,
        flags: u32,
        pos: Option<u64>,
    ) -> Result<u32> {
        let name = link.strip_suffix(b" (deleted)").unwrap_or(link);
        let ghost_id = self.ghost.ghost(pid, what, proc_path, link, meta)?;
        if pos.is_none() {
            if let Some(&id) = self.ghost.mapping_ids.get(&(ghost_id, flags)) {
                return Ok(id);
            }
        }
        let id = self.add_reg(name, flags, pos.unwrap_or(0), Some(meta), Reach::ByName);
        if pos.is_none() {
            self.ghost.mapping_ids.insert((ghost_id, flags), id);
        }
        self.ghost.remaps.push(pb::RemapFilePathEntry {
            orig_id: id,
            remap_id: ghost_id,
            remap_type: Some(pb::RemapType::Ghost as i32),
        });
        Ok(id)
    }
}

impl GhostTable {
    fn ghost(
        &mut self,
        pid: Pid,
        what: &str,
        proc_path: &str,
        link: &[u8],
        meta: &Metadata,
    ) -> Result<u32> {
        if let Some(&i) = self.by_inode.get(&(meta.dev(), meta.ino())) {
            return Ok(self.ghosts[i].id);
        }
        let tv = |s: i64, ns: i64| pb::Timeval {
            tv_sec: s as u64,
            tv_usec: (ns / 1000) as u64,
        };
        let mut entry = pb::GhostFileEntry {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
            dev: Some(meta.dev() as u32),
            ino: Some(meta.ino()),
            rdev: None,
            atim: Some(tv(meta.atime(), meta.atime_nsec())),
            mtim: Some(tv(meta.mtime(), meta.mtime_nsec())),
            chunks: None,
            size: None,
            symlnk_target: None,
        };
        let id = self.ghosts.len() as u32 + 1;
        if meta.file_type().is_fifo() {
            // Nothing to copy: its data is the FIFO's (fifo-data.img), and
            // opening it here could block or steal a reader's place.
            self.ghosts.push(Ghost {
                id,
                entry,
                source: None,
            });
            self.by_inode
                .insert((meta.dev(), meta.ino()), self.ghosts.len() - 1);
            debug!(
                "pid {pid}: {what} is unlinked FIFO {}: ghost {id}",
                String::from_utf8_lossy(link)
            );
            return Ok(id);
        }
        if meta.size() > self.limit {
            return Err(Error::unsupported(
                pid,
                format!("{what} ({})", String::from_utf8_lossy(link)),
                format!(
                    "the file was unlinked and its {} bytes would have to be copied into the images, \
                     more than the ghost limit of {} bytes; raise it with --ghost-limit",
                    meta.size(),
                    self.limit
                ),
            ));
        }
        entry.chunks = Some(true);
        entry.size = Some(meta.size());
        self.ghosts.push(Ghost {
            id,
            entry,
            source: Some(Source {
                pid,
                what: what.to_string(),
                proc_path: proc_path.to_string(),
                link: String::from_utf8_lossy(link).into_owned(),
            }),
        });
        self.by_inode
            .insert((meta.dev(), meta.ino()), self.ghosts.len() - 1);
        debug!(
            "pid {pid}: {what} is unlinked file {}, {} bytes: ghost {id}",
            String::from_utf8_lossy(link),
            meta.size()
        );
        Ok(id)
    }
}

impl GhostTable {
    /// Whether the inode `ino` of device `dev` (userspace dev_t) is a
    /// ghost: open or mapped by a process of the tree.
    pub fn holds(&self, dev: u64, ino: u64) -> bool {
        self.by_inode.contains_key(&(dev, ino))
    }

    /// The link ("PATH (deleted)") of an unlinked regular file whose
    /// directory is the inode `ino` of device `dev`, if there is one: the
    /// directory the link names, looked up from the root of the process
    /// that holds the file.
    pub fn in_directory(&self, dev: u64, ino: u64) -> Option<&str> {
        self.ghosts.iter().find_map(|g| {
            let src = g.source.as_ref()?;
            let path = src.link.strip_suffix(" (deleted)").unwrap_or(&src.link);
            let parent = std::path::Path::new(path).parent()?;
            let at = format!("/proc/{}/root{}", src.pid, parent.display());
            let st = std::fs::metadata(at).ok()?;
            (st.dev() == dev && st.ino() == ino).then_some(src.link.as_str())
        })
    }
}

/// The contents of a ghost, read now.
fn read_source(src: &Source, size: u64) -> Result<Vec<(u64, Vec<u8>)>> {
    let ctx = || format!("pid {}: {} ({})", src.pid, src.what, src.link);
    // O_NOATIME: reading it must not change the live file (EPERM
    // without CAP_FOWNER over it: then as well as we can).
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&src.proc_path)
    };
    let f = open(libc::O_NOATIME)
        .or_else(|_| open(0))
        .map_err(|e| Error::io(&src.proc_path, format!("{}: opening it", ctx()), e))?;
    read_chunks(&f, size).map_err(|e| {
        Error::io(
            &src.proc_path,
            format!("{}: reading its contents", ctx()),
            e,
        )
    })
}

/// The data of the first `size` bytes of `f`, by offset, holes left out
/// (the whole of it where the filesystem cannot tell holes).
fn read_chunks(f: &std::fs::File, size: u64) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < size {
        let data = match lseek(fd, off as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole after `off`
            Err(_) if off == 0 => 0,                // no SEEK_DATA here
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = lseek(fd, data as i64, Whence::SeekHole).map_or(size, |h| h as u64);
        let end = hole.clamp(data + 1, size);
        let mut buf = vec![0u8; (end - data) as usize];
        f.read_exact_at(&mut buf, data)?;
        out.push((data, buf));
        off = end;
    }
    Ok(out)
}

/// ghost-file-ID.img for every ghost and remap-fpath.img.
pub fn write_images(dir: &ImageDir, table: &GhostTable) -> Result<()> {
    if table.ghosts.is_empty() {
        return Ok(());
    }
    for g in &table.ghosts {
        let data = match &g.source {
            Some(src) => read_source(src, g.entry.size.unwrap_or(0))?,
            None => Vec::new(),
        };
        let chunks: Vec<(pb::GhostChunkEntry, &[u8])> = data
            .iter()
            .map(|(off, data)| {
                (
                    pb::GhostChunkEntry {
                        len: data.len() as u64,
                        off: *off,
                    },
                    data.as_slice(),
                )
            })
            .collect();
        dir.write_head_with_payloads(&format!("ghost-file-{:x}.img", g.id), &g.entry, &chunks)?;
    }
    dir.write_image("remap-fpath.img", &table.remaps)
}
