//! Unlinked files (CRIU's ghost files): validating remap-fpath.img and
//! ghost-file-ID.img, and making each file again.
//!
//! The engine creates the file on the filesystem it was on (at its old
//! path when nothing is there, else beside it under a temporary name),
//! writes its contents, gives it its owner, mode and times, opens every
//! description the tasks need from it (`engine_files`) and unlinks it, all
//! before any task exists: nothing of it stays in the directory, even if
//! the restore fails later. /proc/PID/fd/N reads "PATH (deleted)" again.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::images::set::{Chunks, ImageSet};
use crate::images::{pb, ImageError};

/// The ghost files of an image directory.
#[derive(Debug, Default)]
pub struct Ghosts {
    /// By ghost id: the entry and the contents.
    pub files: BTreeMap<u32, (pb::GhostFileEntry, Chunks)>,
    /// File id (a REG entry) -> ghost id.
    pub remap: BTreeMap<u32, u32>,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(ImageError::invalid(path, reason))
}

/// remap-fpath.img and the ghost files it names, as the loader read them,
/// checked against files.img.
pub fn from_set(
    dir: &Path,
    set: &ImageSet,
    files: &BTreeMap<u32, pb::FileEntry>,
) -> Result<Ghosts> {
    let path = dir.join("remap-fpath.img");
    let mut out = Ghosts::default();
    for (&orig, &gid) in &set.ghosts {
        if files.get(&orig).and_then(|f| f.reg.as_ref()).is_none() {
            return Err(bad(
                &path,
                format!("file {orig} is remapped, but files.img has no regular file with that id"),
            ));
        }
        out.remap.insert(orig, gid);
        if let std::collections::btree_map::Entry::Vacant(e) = out.files.entry(gid) {
            let name = format!("ghost-file-{gid:x}.img");
            match set.ghost_files.get(&gid) {
                Some(part) => e.insert(super::load::require(dir, &name, part)?.clone()),
                None => return Err(bad(&dir.join(name), "missing")),
            };
        }
    }
    // A FIFO's ghost stands for the path of FIFO ends only, and only a
    // FIFO's ghost does: either way round the end could not be opened.
    let fifo_path = |id: u32| {
        files
            .values()
            .any(|f| f.fifo.as_ref().and_then(|p| p.regf_id) == Some(id))
    };
    for (orig, gid) in &out.remap {
        let is_fifo = out.files[gid].0.mode & libc::S_IFMT == libc::S_IFIFO;
        if is_fifo != fifo_path(*orig) {
            return Err(bad(
                &path,
                format!(
                    "file {orig} is remapped to ghost {gid}, {}",
                    if is_fifo {
                        "a FIFO, but it is not the path of a FIFO's ends"
                    } else {
                        "a regular file, but it is the path of a FIFO's ends"
                    }
                ),
            ));
        }
    }
    Ok(out)
}

/// A ghost file made again and still linked: its path, until `unlink`
/// (or drop, on an error path) removes it.
pub struct Linked(Option<PathBuf>);

impl Linked {
    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("not unlinked yet")
    }

    /// Remove the name; the open fds keep the file.
    pub fn unlink(mut self, pid: i32) -> Result<()> {
        let p = self.0.take().expect("not unlinked yet");
        std::fs::remove_file(&p)
            .map_err(|e| Error::io(&p, format!("pid {pid}: unlinking a restored ghost file"), e))
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Make the FIFO of ghost `id` again, named after `orig` (the path it
/// had, or beside it when that is taken), with its owner, mode and times;
/// its ends are opened by that name before it is unlinked.
pub fn create_fifo(pid: i32, id: u32, orig: &str, e: &pb::GhostFileEntry) -> Result<Linked> {
    use nix::sys::stat::{Mode, UtimensatFlags};
    let what = || format!("unlinked FIFO {orig} (ghost {id})");
    let make = |p: &Path| nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600));
    let first = PathBuf::from(orig);
    let at = match make(&first) {
        Ok(()) => first,
        Err(nix::errno::Errno::EEXIST) => {
            let alt = PathBuf::from(format!("{orig}.cr.{id:x}.ghost"));
            make(&alt).map_err(|err| {
                Error::io(
                    &alt,
                    format!("pid {pid}: {}: creating it", what()),
                    err.into(),
                )
            })?;
            alt
        }
        Err(err) => {
            return Err(Error::io(
                &first,
                format!("pid {pid}: {}: creating it again", what()),
                err.into(),
            ))
        }
    };
    let link = Linked(Some(at.clone()));
    let sys = |op: &str, err| Error::sys(pid, format!("{}: {op}", what()), err);
    nix::unistd::fchownat(
        None,
        &at,
        Some(e.uid.into()),
        Some(e.gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|err| sys("chown", err))?;
    nix::sys::stat::fchmodat(
        None,
        &at,
        Mode::from_bits_truncate(e.mode & 0o7777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|err| sys("chmod", err))?;
    let ts = |t: &Option<pb::Timeval>| match t {
        Some(t) => nix::sys::time::TimeSpec::new(t.tv_sec as i64, (t.tv_usec * 1000) as i64),
        None => nix::sys::time::TimeSpec::UTIME_OMIT,
    };
    nix::sys::stat::utimensat(
        None,
        &at,
        &ts(&e.atim),
        &ts(&e.mtim),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|err| sys("utimensat", err))?;
    debug!("pid {pid}: {} made again at {}", what(), at.display());
    Ok(link)
}

/// Make ghost `id` again, named after `orig` (the path it had); returns
/// the engine's read-write fd of it and its name, to be unlinked once the
/// descriptions are opened (by path, so flags like O_NOFOLLOW apply as
/// they did).
pub fn create(
    pid: i32,
    id: u32,
    orig: &str,
    e: &pb::GhostFileEntry,
    chunks: &Chunks,
) -> Result<(OwnedFd, Linked)> {
    let what = || format!("unlinked file {orig} (ghost {id})");
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(p)
    };
    let first = PathBuf::from(orig);
    let (f, at) = match open(&first) {
        Ok(f) => (f, first),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let alt = PathBuf::from(format!("{orig}.cr.{id:x}.ghost"));
            (
                open(&alt).map_err(|err| {
                    Error::io(&alt, format!("pid {pid}: {}: creating it", what()), err)
                })?,
                alt,
            )
        }
        Err(err) => {
            return Err(Error::io(
                &first,
                format!("pid {pid}: {}: creating it again", what()),
                err,
            ))
        }
    };
    let link = Linked(Some(at.clone()));
    let io = |op: &str, err| Error::io(&at, format!("pid {pid}: {}: {op}", what()), err);
    for (off, data) in chunks {
        f.write_all_at(data, *off)
            .map_err(|err| io("writing", err))?;
    }
    f.set_len(e.size.unwrap_or(0))
        .map_err(|err| io("setting its size", err))?;
    let sys = |op: &str, err| Error::sys(pid, format!("{}: {op}", what()), err);
    nix::unistd::fchown(f.as_raw_fd(), Some(e.uid.into()), Some(e.gid.into()))
        .map_err(|err| sys("fchown", err))?;
    nix::sys::stat::fchmod(
        f.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(e.mode & 0o7777),
    )
    .map_err(|err| sys("fchmod", err))?;
    let ts = |t: &Option<pb::Timeval>| match t {
        Some(t) => nix::sys::time::TimeSpec::new(t.tv_sec as i64, (t.tv_usec * 1000) as i64),
        None => nix::sys::time::TimeSpec::UTIME_OMIT,
    };
    nix::sys::stat::futimens(f.as_raw_fd(), &ts(&e.atim), &ts(&e.mtim))
        .map_err(|err| sys("futimens", err))?;
    debug!("pid {pid}: {} made again at {}", what(), at.display());
    Ok((f.into(), link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Magic;

    fn load(dir: &Path, files: &BTreeMap<u32, pb::FileEntry>) -> Result<Ghosts> {
        from_set(dir, &ImageSet::read(dir)?, files)
    }
    use crate::images::{framing, ImageWriter};

    fn reg_file(id: u32) -> pb::FileEntry {
        pb::FileEntry {
            r#type: pb::FdTypes::Reg as i32,
            id,
            reg: Some(pb::RegFileEntry {
                id,
                name: "/tmp/x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn write_ghost(dir: &Path, id: u32, size: u64, data: &[u8]) {
        let mut w =
            ImageWriter::create(dir.join(format!("ghost-file-{id:x}.img")), Magic::GhostFile)
                .unwrap();
        w.write_entry(&pb::GhostFileEntry {
            mode: libc::S_IFREG | 0o600,
            size: Some(size),
            ..Default::default()
        })
        .unwrap();
        w.write_raw(data).unwrap();
        w.finish().unwrap();
    }

    fn write_remap(dir: &Path, orig_id: u32, remap_id: u32) {
        framing::write_image(
            dir.join("remap-fpath.img"),
            Magic::RemapFpath,
            &[pb::RemapFilePathEntry {
                orig_id,
                remap_id,
                remap_type: Some(pb::RemapType::Ghost as i32),
            }],
        )
        .unwrap();
    }

    fn ghost_entry() -> pb::GhostFileEntry {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        pb::GhostFileEntry {
            uid,
            gid,
            mode: libc::S_IFREG | 0o640,
            size: Some(5),
            ..Default::default()
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn made_at_its_old_path_or_beside_it_and_never_left_behind() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let orig = dir.path().join("f");
        let orig = orig.to_str().unwrap();
        let hello = vec![(0, b"hello".to_vec())];
        let (fd, linked) = create(1, 1, orig, &ghost_entry(), &hello).unwrap();
        assert_eq!(linked.path(), Path::new(orig));
        linked.unlink(1).unwrap();
        assert!(names_in(dir.path()).is_empty());
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");

        // Something else is at the old path now: it is left alone.
        std::fs::write(orig, "other").unwrap();
        let (_fd, linked) = create(1, 2, orig, &ghost_entry(), &hello).unwrap();
        assert_eq!(linked.path(), Path::new(&format!("{orig}.cr.2.ghost")));
        drop(linked); // an error path: the name goes away
        assert_eq!(names_in(dir.path()), ["f"]);
        assert_eq!(std::fs::read_to_string(orig).unwrap(), "other");

        // No room at all: an error, and nothing is touched.
        std::fs::write(format!("{orig}.cr.3.ghost"), "x").unwrap();
        assert!(create(1, 3, orig, &ghost_entry(), &hello).is_err());
        assert_eq!(names_in(dir.path()), ["f", "f.cr.3.ghost"]);
    }

    #[test]
    fn loads_a_good_ghost() {
        let dir = tempfile::tempdir().unwrap();
        write_ghost(dir.path(), 1, 5, b"hello");
        write_remap(dir.path(), 7, 1);
        let files = BTreeMap::from([(7, reg_file(7))]);
        let g = load(dir.path(), &files).unwrap();
        assert_eq!(g.remap[&7], 1);
        assert_eq!(g.files[&1].1, [(0, b"hello".to_vec())]);
    }

    fn write_chunked(dir: &Path, size: u64, chunks: &[(u64, &[u8])]) {
        let mut w = ImageWriter::create(dir.join("ghost-file-1.img"), Magic::GhostFile).unwrap();
        w.write_entry(&pb::GhostFileEntry {
            mode: libc::S_IFREG | 0o600,
            size: Some(size),
            chunks: Some(true),
            ..Default::default()
        })
        .unwrap();
        for (off, data) in chunks {
            w.write_entry(&pb::GhostChunkEntry {
                len: data.len() as u64,
                off: *off,
            })
            .unwrap();
            w.write_raw(data).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn chunks_are_loaded_and_checked() {
        let files = BTreeMap::from([(7, reg_file(7))]);
        let dir = tempfile::tempdir().unwrap();
        write_remap(dir.path(), 7, 1);
        write_chunked(dir.path(), 100, &[(0, b"ab"), (50, b"cd")]);
        let g = load(dir.path(), &files).unwrap();
        assert_eq!(g.files[&1].1, [(0, b"ab".to_vec()), (50, b"cd".to_vec())]);
        for bad in [
            &[(0, &b"ab"[..]), (1, b"cd")][..],
            &[(99, b"cd")],
            &[(50, b"cd"), (0, b"ab")],
        ] {
            write_chunked(dir.path(), 100, bad);
            assert!(load(dir.path(), &files).is_err(), "{bad:?}");
        }
    }

    fn write_fifo_ghost(dir: &Path, data: &[u8]) {
        let mut w = ImageWriter::create(dir.join("ghost-file-1.img"), Magic::GhostFile).unwrap();
        w.write_entry(&pb::GhostFileEntry {
            mode: libc::S_IFIFO | 0o600,
            ..Default::default()
        })
        .unwrap();
        w.write_raw(data).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn a_fifo_ghost_stands_for_the_path_of_fifo_ends_only() {
        let fifo = pb::FileEntry {
            r#type: pb::FdTypes::Fifo as i32,
            id: 8,
            fifo: Some(pb::FifoEntry {
                id: 8,
                pipe_id: 99,
                regf_id: Some(7),
                wait_writer: None,
            }),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        write_remap(dir.path(), 7, 1);
        write_fifo_ghost(dir.path(), b"");
        let files = BTreeMap::from([(7, reg_file(7)), (8, fifo)]);
        let g = load(dir.path(), &files).unwrap();
        assert!(g.files[&1].1.is_empty());
        // Without the FIFO entry the remapped file would be opened as a
        // regular one.
        let alone = BTreeMap::from([(7, reg_file(7))]);
        let e = load(dir.path(), &alone).unwrap_err().to_string();
        assert!(e.contains("not the path of a FIFO"), "{e}");
        // A FIFO's ghost has no contents.
        write_fifo_ghost(dir.path(), b"data");
        assert!(load(dir.path(), &files).is_err());
        // And a regular file's ghost is not a FIFO's path.
        write_ghost(dir.path(), 1, 5, b"hello");
        let e = load(dir.path(), &files).unwrap_err().to_string();
        assert!(e.contains("is the path of a FIFO"), "{e}");
    }

    #[test]
    fn refuses_contents_of_the_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        write_ghost(dir.path(), 1, 6, b"hello");
        write_remap(dir.path(), 7, 1);
        let files = BTreeMap::from([(7, reg_file(7))]);
        let e = load(dir.path(), &files).unwrap_err().to_string();
        assert!(e.contains("6 bytes") && e.contains("holds 5"), "{e}");
    }

    #[test]
    fn refuses_a_remap_of_a_missing_file_or_ghost() {
        let dir = tempfile::tempdir().unwrap();
        write_remap(dir.path(), 7, 1);
        let e = load(dir.path(), &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("no regular file"), "{e}");
        let files = BTreeMap::from([(7, reg_file(7))]);
        assert!(
            load(dir.path(), &files).is_err(),
            "ghost-file-1.img is missing"
        );
    }
}
