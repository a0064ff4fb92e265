//! memfd objects: validating memfd.img and making each object again.
//!
//! The engine creates every object once (memfd_create with its name),
//! gives it its size, contents, owner and mode, and then its seals. The
//! tasks never create one: each of their fds and mappings is an open file
//! description the engine makes from the object (`engine_files`), so
//! every fd and mapping in every task refers to the same object again.
//!
//! Seals and mappings: a write seal (F_SEAL_WRITE) forbids new writable
//! shared mappings and cannot be added while one exists, and a read-only
//! shared mapping made from a writable fd counts as one (VM_MAYWRITE)
//! unless the seal is already there when it is mapped. So F_SEAL_WRITE is
//! added before any task maps the object: the dumped mappings cannot
//! include a writable shared one, since the seal was there. F_SEAL_FUTURE_WRITE
//! is different: it can be added while writable shared mappings exist
//! (they keep working) and forbids new ones, so it (and F_SEAL_SEAL, which
//! must come last) waits until every task has mapped the object.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};

use super::load::Images;
use crate::error::{Error, Result};
use crate::images::pagemap::PAGE;
use crate::images::set::{ImageSet, PageSet};
use crate::images::{pb, ImageError};

/// The longest name memfd_create accepts (NAME_MAX minus "memfd:").
const MAX_NAME: usize = 249;
const KNOWN_SEALS: u32 = 0x3f; // SEAL, SHRINK, GROW, WRITE, FUTURE_WRITE, EXEC
const F_SEAL_SEAL: u32 = 0x1;
const F_SEAL_FUTURE_WRITE: u32 = 0x10;

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(ImageError::invalid(path, reason))
}

/// memfd.img as the loader read it, checked against files.img; each
/// object's contents (pagemap-shmem-SHMID.img) must lie inside its size.
pub fn check(
    dir: &Path,
    set: &ImageSet,
    files: &BTreeMap<u32, pb::FileEntry>,
) -> Result<BTreeMap<u32, pb::MemfdInodeEntry>> {
    let path = dir.join("memfd.img");
    let mut out = BTreeMap::new();
    for (&id, e) in &set.memfds {
        let what = format!("memfd inode {} ({:?})", e.inode_id, e.name);
        if e.name.len() > MAX_NAME || e.name.contains('\0') {
            return Err(bad(&path, format!("{what}: not a valid memfd name")));
        }
        if e.seals & !KNOWN_SEALS != 0 {
            return Err(bad(&path, format!("{what}: unknown seals {:#x}", e.seals)));
        }
        if e.hugetlb_flag.unwrap_or(0) != 0 {
            return Err(bad(
                &path,
                format!("{what}: hugetlb memfd objects cannot be restored yet"),
            ));
        }
        let shmid = e.shmid as u64;
        let name = format!("pagemap-shmem-{shmid}.img");
        let pages = match set.shmem.get(&shmid) {
            Some(part) => super::load::require(dir, &name, part)?.clone(),
            None => PageSet::default(),
        };
        if set
            .memfds
            .values()
            .filter(|o| o.shmid as u64 == shmid)
            .count()
            > 1
        {
            return Err(bad(&path, format!("{what}: shmid {shmid} is used twice")));
        }
        let limit = e.size.div_ceil(PAGE) * PAGE;
        for p in &pages.entries {
            let end = p.vaddr.checked_add(p.nr_pages as u64 * PAGE);
            if p.vaddr % PAGE != 0 || p.nr_pages == 0 || end.is_none_or(|end| end > limit) {
                return Err(bad(
                    &dir.join(&name),
                    format!(
                        "{what}: pages at offset {:#x} ({} pages) lie outside its {} bytes",
                        p.vaddr, p.nr_pages, e.size
                    ),
                ));
            }
        }
        out.insert(id, e.clone());
    }
    for f in files.values() {
        if let Some(m) = &f.memfd {
            if !out.contains_key(&m.inode_id) {
                return Err(bad(
                    &path,
                    format!(
                        "file {} is a memfd of inode {}, which memfd.img does not have",
                        f.id, m.inode_id
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// An object made again: the engine's fd of it, and the seals still to add
/// once every task has mapped it.
pub struct Made {
    pub fd: OwnedFd,
    pub late_seals: u32,
    pub name: String,
}

/// Make memfd inode `e` again: name, size, contents, owner, mode and the
/// seals that may come before the mappings.
pub fn create(imgs: &Images, e: &pb::MemfdInodeEntry) -> Result<Made> {
    let pid = imgs.tasks[0].pid;
    let what = || format!("memfd {:?} (inode {})", e.name, e.inode_id);
    let sys = |op: &str, err| Error::sys(pid, format!("{}: {op}", what()), err);
    let name = CString::new(e.name.as_str()).map_err(|_| sys("name", nix::errno::Errno::EINVAL))?;
    use nix::sys::memfd::MemFdCreateFlag as F;
    // MFD_EXEC: executable like a memfd of old, whatever vm.memfd_noexec
    // says; the dumped mode and seals (F_SEAL_EXEC) follow. Kernels before
    // 6.3 do not know the flag.
    const MFD_EXEC: F = F::from_bits_retain(0x10);
    let base = F::MFD_CLOEXEC | F::MFD_ALLOW_SEALING;
    let fd = nix::sys::memfd::memfd_create(&name, base | MFD_EXEC)
        .or_else(|_| nix::sys::memfd::memfd_create(&name, base))
        .map_err(|err| sys("memfd_create", err))?;
    let f = File::from(fd);
    f.set_len(e.size)
        .map_err(|err| Error::io("memfd", format!("pid {pid}: {}: ftruncate", what()), err))?;
    if let Some(set) = imgs.shmem.get(&(e.shmid as u64)) {
        fill(imgs, set, &f, e.size, &what())?;
    }
    nix::unistd::fchown(f.as_raw_fd(), Some(e.uid.into()), Some(e.gid.into()))
        .map_err(|err| sys("fchown", err))?;
    if let Some(mode) = e.mode {
        nix::sys::stat::fchmod(
            f.as_raw_fd(),
            nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
        )
        .map_err(|err| sys("fchmod", err))?;
    }
    let late = if e.seals & F_SEAL_FUTURE_WRITE != 0 {
        e.seals & (F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
    } else {
        0
    };
    add_seals(&f, e.seals & !late).map_err(|err| sys("F_ADD_SEALS", err))?;
    Ok(Made {
        fd: f.into(),
        late_seals: late,
        name: e.name.clone(),
    })
}

/// F_ADD_SEALS, a no-op for none.
pub fn add_seals(f: &impl AsRawFd, seals: u32) -> nix::Result<()> {
    if seals != 0 {
        fcntl(
            f.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals as i32)),
        )?;
    }
    Ok(())
}

/// Write the object's pages at their offsets, the last one cut at `size`
/// (pages are whole, the object need not be).
fn fill(imgs: &Images, set: &PageSet, f: &File, size: u64, what: &str) -> Result<()> {
    if set.entries.is_empty() {
        return Ok(());
    }
    let path = imgs.path(&set.pages_file());
    let src = File::open(&path)
        .and_then(|p| crate::sys::Mmap::map(&p))
        .map_err(|e| Error::io(&path, format!("{what}: reading its pages"), e))?;
    let data = src.as_slice();
    let mut off = 0usize;
    for e in &set.entries {
        let n = e.nr_pages as usize * PAGE as usize;
        let keep = n.min(size.saturating_sub(e.vaddr) as usize);
        f.write_all_at(&data[off..off + keep], e.vaddr)
            .map_err(|err| {
                Error::io(&path, format!("{what}: writing offset {:#x}", e.vaddr), err)
            })?;
        off += n;
    }
    Ok(())
}

/// A memfd's fds: checked here, made by the engine (`engine_files.rs`),
/// never by a task itself.
pub struct MemfdFile;

impl super::files::FdKind for MemfdFile {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Memfd
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::files::need_part(&f.memfd, "MEMFD")
    }

    fn source(
        &self,
        _imgs: &Images,
        pid: i32,
        fd: &pb::FdinfoEntry,
        _f: &pb::FileEntry,
    ) -> Result<std::sync::Arc<dyn super::child::OpenFd>> {
        Err(Error::task(
            pid,
            format!("fd {} (memfd)", fd.fd),
            "a memfd is made by the engine, and the engine has none for it",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Magic;

    /// Loads memfd.img as the restore does: through the one loader.
    fn load(
        dir: &Path,
        files: &BTreeMap<u32, pb::FileEntry>,
    ) -> Result<(BTreeMap<u32, pb::MemfdInodeEntry>, ImageSet)> {
        let set = ImageSet::read(dir)?;
        Ok((check(dir, &set, files)?, set))
    }
    use crate::images::framing;

    fn inode(size: u64) -> pb::MemfdInodeEntry {
        pb::MemfdInodeEntry {
            name: "m".into(),
            size,
            shmid: 42,
            inode_id: 1,
            ..Default::default()
        }
    }

    fn setup(dir: &Path, e: pb::MemfdInodeEntry, pages: &[(u64, u32)]) {
        framing::write_image(dir.join("memfd.img"), Magic::MemfdInode, &[e]).unwrap();
        let mut w =
            crate::images::ImageWriter::create(dir.join("pagemap-shmem-42.img"), Magic::Pagemap)
                .unwrap();
        w.write_entry(&pb::PagemapHead { pages_id: 3 }).unwrap();
        for &(vaddr, nr_pages) in pages {
            w.write_entry(&pb::PagemapEntry {
                nr_pages64: None,
                vaddr,
                nr_pages,
                ..Default::default()
            })
            .unwrap();
        }
        w.finish().unwrap();
    }

    fn memfd_file(inode_id: u32) -> BTreeMap<u32, pb::FileEntry> {
        BTreeMap::from([(
            5,
            pb::FileEntry {
                r#type: pb::FdTypes::Memfd as i32,
                id: 5,
                memfd: Some(pb::MemfdFileEntry {
                    id: 5,
                    inode_id,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )])
    }

    #[test]
    fn loads_contents_into_shmem() {
        let dir = tempfile::tempdir().unwrap();
        // 2 pages and a bit: the third page is partly inside.
        setup(dir.path(), inode(2 * PAGE + 10), &[(0, 1), (2 * PAGE, 1)]);
        let (m, set) = load(dir.path(), &memfd_file(1)).unwrap();
        assert_eq!(m[&1].name, "m");
        assert_eq!(set.shmem[&42].as_ref().unwrap().stored_pages(), 2);
    }

    #[test]
    fn refuses_pages_past_the_size() {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), inode(PAGE), &[(PAGE, 1)]);
        let e = load(dir.path(), &memfd_file(1)).unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn refuses_a_file_of_an_unknown_inode() {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), inode(PAGE), &[]);
        let e = load(dir.path(), &memfd_file(9)).unwrap_err().to_string();
        assert!(e.contains("inode 9"), "{e}");
    }
}
