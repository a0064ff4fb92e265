//! memfd objects (memfd_create(2)): files.img MEMFD entries, memfd.img and
//! the contents in pagemap-shmem-SHMID.img, CRIU's layout.
//!
//! A memfd is a file on the kernel's internal shmem mount, so it has no
//! path to open it by again. Every fd (an open file description) and every
//! mapping of it becomes one MEMFD file entry (flags, offset) that points
//! at one inode entry (name, size, owner, mode, seals); the inode is keyed
//! by its inode number, so an object reached through several fds, mappings
//! and processes is stored once and restored as one object. Its contents
//! are read through a copy of the file opened now (the task is frozen, so
//! they cannot change before `write_images` reads them), skipping holes.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use super::files::FileTable;
use super::memory::{self, PageSink, PagemapBuilder};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;

/// One memfd object seen in the tree.
struct Inode {
    entry: pb::MemfdInodeEntry,
    /// Read-only copy of the file, for its contents.
    file: File,
    pid: Pid,
    path: String,
}

/// The memfd objects of one dump, by inode number.
#[derive(Default)]
pub struct MemfdTable {
    by_ino: BTreeMap<u64, usize>,
    inodes: Vec<Inode>,
    /// Inode id of every MEMFD entry, by file id.
    file_ids: BTreeMap<u32, u32>,
    /// Objects some fd or mapping can write to (by inode id).
    writable: std::collections::BTreeSet<u32>,
    /// Tasks whose executable is a memfd: (pid, file id).
    exes: Vec<(Pid, u32)>,
    /// The entry of the mappings of an object with given open flags
    /// (inode id, flags): mappings share one (each task opens its own
    /// description from it at restore), so the engine needs one fd per
    /// object and flags, not one per mapping.
    mapping_ids: BTreeMap<(u32, u32), u32>,
}

impl MemfdTable {
    pub fn is_memfd_file(&self, id: u32) -> bool {
        self.file_ids.contains_key(&id)
    }

    /// File `id` is the executable of `pid`.
    pub fn set_exe(&mut self, pid: Pid, id: u32) {
        self.exes.push((pid, id));
    }

    /// The kernel makes a file a task's executable (PR_SET_MM_MAP) only
    /// while nothing has it open for writing; exec itself does not ask.
    /// Such a tree cannot be restored: say so now, not at restore.
    fn check_exes(&self) -> Result<()> {
        for &(pid, id) in &self.exes {
            let inode = self.file_ids[&id];
            if self.writable.contains(&inode) {
                // Inode ids are 1 + the index (see `inode`).
                let name = &self.inodes[inode as usize - 1].entry.name;
                return Err(Error::unsupported(
                    pid,
                    format!("exe /memfd:{name}"),
                    "the executable memfd is also open for writing (an fd or a writable shared mapping); \
                     the kernel refuses such a file as a restored task's executable",
                ));
            }
        }
        Ok(())
    }
}

/// The NAME of a `/memfd:NAME (deleted)` link, which is how /proc shows
/// every memfd (its dentry is never linked anywhere).
pub fn memfd_name(link: &[u8]) -> Option<&[u8]> {
    link.strip_prefix(b"/memfd:")?.strip_suffix(b" (deleted)")
}

/// st_dev of the kernel's internal shmem mount, which holds every
/// (non-hugetlb) memfd: learned from a memfd of our own. A file that only
/// looks like a memfd by name (a deleted `/memfd:x` on a real filesystem)
/// has another device.
fn shmem_dev() -> Option<u64> {
    static DEV: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *DEV.get_or_init(|| {
        let fd = nix::sys::memfd::memfd_create(
            c"ckpt-probe",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .ok()?;
        File::from(fd).metadata().ok().map(|m| m.dev())
    })
}

/// Whether `link`/`meta` (an fd or a mapping, reached through
/// `proc_path`) is a memfd. A hugetlbfs memfd (MFD_HUGETLB) has the name
/// but not the shmem device: it is refused. A real file that was named
/// `/memfd:...` and deleted is not a memfd.
pub fn is_memfd(
    pid: Pid,
    what: &str,
    proc_path: &str,
    link: &[u8],
    meta: &Metadata,
) -> Result<bool> {
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    if memfd_name(link).is_none() {
        return Ok(false);
    }
    if shmem_dev() == Some(meta.dev()) {
        return Ok(true);
    }
    let fs = nix::sys::statfs::statfs(proc_path)
        .map_err(|e| Error::sys(pid, format!("{what}: statfs {proc_path}"), e))?;
    if fs.filesystem_type().0 as i64 == HUGETLBFS_MAGIC {
        return Err(Error::unsupported(
            pid,
            format!("{what} ({})", String::from_utf8_lossy(link)),
            "memfd objects on hugetlbfs (MFD_HUGETLB) are not supported yet",
        ));
    }
    Ok(false)
}

impl FileTable {
    /// A MEMFD file entry for one open file description of the memfd that
    /// `proc_path` reaches: an fd (at offset `pos`) or mappings (`None`).
    #[allow(clippy::too_many_arguments)]
    pub fn add_memfd(
        &mut self,
        pid: Pid,
        what: &str,
        proc_path: &str,
        link: &[u8],
        meta: &Metadata,
        flags: u32,
        pos: Option<u64>,
    ) -> Result<u32> {
        let inode_id = self.memfd.inode(pid, what, proc_path, link, meta)?;
        if pos.is_none() {
            if let Some(&id) = self.memfd.mapping_ids.get(&(inode_id, flags)) {
                return Ok(id);
            }
        }
        let id = self.next_id();
        self.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Memfd as i32,
            id,
            memfd: Some(pb::MemfdFileEntry {
                id,
                flags,
                pos: pos.unwrap_or(0),
                fown: pb::FownEntry::default(),
                inode_id,
            }),
            ..Default::default()
        });
        self.memfd.file_ids.insert(id, inode_id);
        if flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
            self.memfd.writable.insert(inode_id);
        }
        if pos.is_none() {
            self.memfd.mapping_ids.insert((inode_id, flags), id);
        }
        Ok(id)
    }
}

impl MemfdTable {
    fn inode(
        &mut self,
        pid: Pid,
        what: &str,
        proc_path: &str,
        link: &[u8],
        meta: &Metadata,
    ) -> Result<u32> {
        if let Some(&i) = self.by_ino.get(&meta.ino()) {
            return Ok(self.inodes[i].entry.inode_id as u32);
        }
        let name = memfd_name(link).expect("checked by is_memfd");
        let ctx = || {
            format!(
                "pid {pid}: {what} (memfd {})",
                String::from_utf8_lossy(name)
            )
        };
        let file = File::open(proc_path).map_err(|e| Error::io(proc_path, ctx(), e))?;
        let seals = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS)
            .map_err(|e| Error::sys(pid, format!("{}: F_GET_SEALS", ctx()), e))?;
        let inode_id = self.inodes.len() as u64 + 1;
        self.inodes.push(Inode {
            entry: pb::MemfdInodeEntry {
                name: String::from_utf8_lossy(name).into_owned(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.size(),
                shmid: meta.ino() as u32,
                seals: seals as u32,
                inode_id,
                hugetlb_flag: None,
                mode: Some(meta.mode() & 0o7777),
            },
            file,
            pid,
            path: proc_path.to_string(),
        });
        self.by_ino.insert(meta.ino(), self.inodes.len() - 1);
        debug!(
            "pid {pid}: {what} is memfd {:?}, inode {}, {} bytes, seals {seals:#x}",
            String::from_utf8_lossy(name),
            meta.ino(),
            meta.size()
        );
        Ok(inode_id as u32)
    }
}

/// memfd.img and the contents of every object (pagemap-shmem-SHMID.img and
/// a pages file each, indexed by offset in the object, holes left out).
/// Returns the pages stored.
pub fn write_images(dir: &ImageDir, table: &MemfdTable, next_pages_id: &mut u32) -> Result<u64> {
    if table.inodes.is_empty() {
        return Ok(0);
    }
    table.check_exes()?;
    let mut pages = 0;
    for inode in &table.inodes {
        let id = *next_pages_id;
        *next_pages_id += 1;
        let mut sink = PageSink {
            pages: dir.pages_writer(id)?,
            pm: PagemapBuilder::default(),
        };
        memory::dump_shmem_file(inode.pid, &inode.path, &inode.file, &mut sink)?;
        pages += sink.pm.total_pages();
        dir.finish_pages(sink.pages)?;
        dir.write_pagemap(
            &format!("pagemap-shmem-{}.img", inode.entry.shmid),
            id,
            &sink.pm.entries,
        )?;
    }
    let entries: Vec<pb::MemfdInodeEntry> = table.inodes.iter().map(|i| i.entry.clone()).collect();
    dir.write_image("memfd.img", &entries)?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(memfd_name(b"/memfd:abc (deleted)"), Some(&b"abc"[..]));
        assert_eq!(memfd_name(b"/memfd: (deleted)"), Some(&b""[..]));
        assert_eq!(memfd_name(b"/memfd:abc"), None);
        assert_eq!(memfd_name(b"/tmp/memfd:abc (deleted)"), None);
    }

    #[test]
    fn our_own_memfd_is_one() {
        let fd = nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .unwrap();
        let f = File::from(fd);
        let meta = f.metadata().unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(link.as_os_str().as_bytes(), b"/memfd:x (deleted)");
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        assert!(is_memfd(1, "fd", &path, link.as_os_str().as_bytes(), &meta).unwrap());
    }
}
