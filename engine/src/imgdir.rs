//! Writing an image directory atomically.
//!
//! Images are written into a temporary directory on the same filesystem;
//! `commit` syncs them all (syncfs), writes the manifest (fsynced) and
//! puts them in place, so a dump that fails or crashes part way never
//! leaves a directory under the requested name that looks complete. The
//! temporary directory is removed on drop. Two ways, by what `-D DIR` is:
//!
//! - **DIR does not exist**: the temporary is a sibling (`.DIR.ckpt-tmp-PID`)
//!   renamed to DIR as a whole, then the parent is fsynced.
//! - **DIR exists** (empty, or holding other files: CRIU users keep the
//!   dump's log there, `-o dump.log` being relative to it): the temporary
//!   is inside DIR (`.images.ckpt-tmp-PID`); each image file is renamed
//!   into DIR (never over a file), the manifest after them, DIR fsynced,
//!   and inventory.img last of all. Neither ckpt nor CRIU reads a
//!   directory without inventory.img as images, so until that last rename
//!   DIR holds no image set; after it, the whole set. A failure part way
//!   removes the files it moved in. DIR keeps its inode, mode and owner
//!   (a shell whose working directory it is stays in it).
//!
//! A DIR that holds images already (an image file, or a manifest) is
//! refused: the new images would mix with the old ones, or destroy them.

use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Error, Result};
use crate::images::{self, ImageKind, ImageWriter, Magic, Manifest};
use crate::pageserver;

/// pages-N.img: raw page contents. The file and its checksum are separate
/// halves so the dump can write on one thread and hash on another (the
/// thread that has the bytes hot in its cache after reading them).
pub struct PagesWriter {
    pub out: PagesFile,
    pub hash: images::manifest::PagesHasher,
}

/// The file half of a [`PagesWriter`].
pub struct PagesFile {
    path: PathBuf,
    to: PagesTo,
    size: u64,
}

/// Where a pages image goes: a file of the image directory, or a page
/// server (`dump --page-server`), where it has a number.
enum PagesTo {
    File(std::fs::File),
    Server(SharedClient, u32),
}

/// The page-server connection of a dump, used by the writer thread of
/// each process's pages and by the main thread.
type SharedClient = std::sync::Arc<std::sync::Mutex<pageserver::Client>>;

fn lock(c: &SharedClient) -> std::sync::MutexGuard<'_, pageserver::Client> {
    // A writer thread that panicked holding it leaves a connection that is
    // no worse than one whose send failed.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl PagesFile {
    /// Append `data` (the caller hashes it).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        match &mut self.to {
            PagesTo::File(f) => f
                .write_all_at(data, self.size)
                .map_err(|e| Error::io(&self.path, "writing pages", e))?,
            PagesTo::Server(c, n) => lock(c).data(*n, &file_name(&self.path), data)?,
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// A handle for writing at places claimed with [`PagesFile::claim`],
    /// from other threads than the one that claims; None when the pages
    /// go to a page server, whose stream takes them in order only
    /// ([`PagesFile::write`]).
    pub fn positioned(&self) -> Result<Option<PagesAt>> {
        match &self.to {
            PagesTo::File(f) => Ok(Some(PagesAt {
                file: f
                    .try_clone()
                    .map_err(|e| Error::io(&self.path, "opening pages image again", e))?,
                path: self.path.clone(),
            })),
            PagesTo::Server(..) => Ok(None),
        }
    }

    /// Append `n` bytes that the caller writes through [`PagesAt`] (and
    /// hashes): where they go.
    pub fn claim(&mut self, n: u64) -> u64 {
        let at = self.size;
        self.size += n;
        at
    }

    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A pages image file written at places claimed in its [`PagesFile`].
pub struct PagesAt {
    file: std::fs::File,
    path: PathBuf,
}

impl PagesAt {
    pub fn write_at(&self, data: &[u8], at: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(data, at)
            .map_err(|e| Error::io(&self.path, format!("writing pages at {at:#x}"), e))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl PagesWriter {
    /// Append and hash `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hash.update(data);
        self.out.write(data)
    }
}

pub struct ImageDir {
    final_path: PathBuf,
    tmp: PathBuf,
    /// The temporary is inside the existing `final_path` (see the module
    /// doc), not a sibling of it.
    inside: bool,
    /// Behind a lock: the dump writes the pages of several processes at
    /// once, from its pages threads (`dump/pages.rs`).
    manifest: std::sync::Mutex<Manifest>,
    committed: bool,
    /// Where the pages go instead of files here (`dump --page-server`).
    page_server: Option<SharedClient>,
    /// An exclusive flock on the temporary directory for as long as the
    /// dump runs: how a later run tells a live dump's temporary from one
    /// a killed dump left behind ([`remove_stale`]).
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The temporary directory of a dump into `dir`, made by process `pid`.
fn tmp_name(name: &str, pid: u32) -> String {
    format!(".{name}.ckpt-tmp-{pid}")
}

/// The pid in a temporary directory's name, if `name` is one.
fn tmp_pid(name: &str) -> Option<u32> {
    let (head, pid) = name.rsplit_once(".ckpt-tmp-")?;
    (head.starts_with('.') && head.len() > 1).then_some(())?;
    pid.parse().ok()
}

/// Removes the temporaries in `parent` of dumps that died without
/// cleaning up (a SIGKILLed dump cannot): those no live dump holds locked.
/// Each removal is reported, since it frees the memory of a process that
/// was being dumped.
fn remove_stale(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(tmp_pid) else {
            continue;
        };
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(lock) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            continue; // a dump in progress
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => info!(
                "{}: removed the temporary image directory of a dump (pid {pid}) that did not finish",
                path.display()
            ),
            Err(e) => warn!(
                "{}: the temporary image directory of a dump (pid {pid}) that did not finish: removing it: {e}",
                path.display()
            ),
        }
        drop(lock);
    }
}

impl ImageDir {
    /// Prepare to write `dir`, which must not exist or must hold no
    /// images (other files, such as the dump's log, may be there).
    pub fn create(dir: &Path) -> Result<ImageDir> {
        let inside = dir.exists();
        let dir = if inside {
            // `-D .` or `-D ..` has no name to make a sibling of; and the
            // renames below want one spelling of the directory.
            dir.canonicalize()
                .map_err(|e| Error::io(dir, "resolving the image directory", e))?
        } else {
            dir.to_path_buf()
        };
        if inside {
            let old = images_in(&dir)?;
            if !old.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: the directory holds images already ({}{}): a dump would mix \
                     its images with them; remove them or give another directory",
                    dir.display(),
                    old.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                    if old.len() > 3 { ", ..." } else { "" }
                )));
            }
        }
        let dir = dir.as_path();
        let parent = match dir.parent() {
            _ if inside => dir.to_path_buf(),
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = if inside {
            std::ffi::OsStr::new("images")
        } else {
            dir.file_name()
                .ok_or_else(|| Error::Usage(format!("{}: not a directory name", dir.display())))?
        };
        remove_stale(&parent);
        let tmp = parent.join(tmp_name(&name.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        // Private whatever the umask: images hold process memory and
        // secrets (0700 asked for, and set again past the umask).
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .and_then(|()| {
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| Error::io(&tmp, "creating the temporary image directory", e))?;
        }
        let lock = std::fs::File::open(&tmp)
            .map_err(|e| Error::io(&tmp, "opening the temporary image directory", e))
            .and_then(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
                    |(_, e)| {
                        Error::io(
                            &tmp,
                            "locking the temporary image directory",
                            std::io::Error::from(e),
                        )
                    },
                )
            });
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        Ok(ImageDir {
            final_path: dir.to_path_buf(),
            tmp,
            inside,
            manifest: std::sync::Mutex::new(Manifest::new()),
            committed: false,
            page_server: None,
            _lock: lock,
        })
    }

    fn manifest(&self) -> std::sync::MutexGuard<'_, Manifest> {
        // A thread that panicked holding it added a whole entry or none.
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    fn magic_of(name: &str) -> Result<Magic> {
        ImageKind::of_file_name(name)
            .map(|(k, _)| k.magic)
            .ok_or_else(|| Error::Usage(format!("internal: no image kind for file name {name}")))
    }

    /// Write an image whose entries are all of one message type.
    pub fn write_image<M: prost::Message>(&self, name: &str, entries: &[M]) -> Result<()> {
        let mut w = ImageWriter::create(self.path(name), Self::magic_of(name)?)?;
        for e in entries {
            w.write_entry(e)?;
        }
        let d = w.finish_unsynced()?;
        self.manifest().add_digest(name, d);
        Ok(())
    }

    /// Write a file of ckpt's own that is no CRIU image (text), listed in
    /// the manifest like the images.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, "writing", e))?;
        self.manifest()
            .add_digest(name, images::FileDigest::of_bytes(bytes));
        Ok(())
    }

    /// Write a pagemap image: its head, then the entries.
    pub fn write_pagemap(
        &self,
        name: &str,
        pages_id: u32,
        entries: &[images::pb::PagemapEntry],
    ) -> Result<()> {
        let mut w = ImageWriter::create(self.path(name), Self::magic_of(name)?)?;
        w.write_entry(&images::pb::PagemapHead { pages_id })?;
        for e in entries {
            w.write_entry(&images::pagemap::with_both_counts(e))?;
        }
        let d = w.finish_unsynced()?;
        self.manifest().add_digest(name, d);
        Ok(())
    }

    /// Write an image whose entries are each followed by raw bytes
    /// (pipes-data.img: the data buffered in each pipe).
    pub fn write_with_payloads<M: prost::Message>(
        &self,
        name: &str,
        entries: &[(M, &[u8])],
    ) -> Result<()> {
        let mut w = ImageWriter::create(self.path(name), Self::magic_of(name)?)?;
        for (e, raw) in entries {
            w.write_entry(e)?;
            w.write_raw(raw)?;
        }
        let d = w.finish_unsynced()?;
        self.manifest().add_digest(name, d);
        Ok(())
    }

    /// Write an image that starts with `head` and goes on with entries each
    /// followed by raw bytes (ghost-file-ID.img with chunks: the
    /// ghost_file_entry, then ghost_chunk_entry + contents pairs).
    pub fn write_head_with_payloads<H: prost::Message, M: prost::Message>(
        &self,
        name: &str,
        head: &H,
        entries: &[(M, &[u8])],
    ) -> Result<()> {
        let mut w = ImageWriter::create(self.path(name), Self::magic_of(name)?)?;
        w.write_entry(head)?;
        for (e, raw) in entries {
            w.write_entry(e)?;
            w.write_raw(raw)?;
        }
        let d = w.finish_unsynced()?;
        self.manifest().add_digest(name, d);
        Ok(())
    }

    /// Write an image entry by entry through `f`, for layouts that mix
    /// message types and raw bytes (ipcns-msg: a queue entry, then each
    /// message's entry and bytes).
    pub fn write_stream(
        &self,
        name: &str,
        f: impl FnOnce(&mut ImageWriter) -> Result<()>,
    ) -> Result<()> {
        let mut w = ImageWriter::create(self.path(name), Self::magic_of(name)?)?;
        f(&mut w)?;
        let d = w.finish_unsynced()?;
        self.manifest().add_digest(name, d);
        Ok(())
    }

    /// Send the pages images to this page server instead of writing them
    /// here; the manifest still lists them (see pageserver.rs).
    pub fn send_pages_to(&mut self, c: pageserver::Client) {
        self.page_server = Some(std::sync::Arc::new(std::sync::Mutex::new(c)));
    }

    pub fn pages_writer(&self, id: u32) -> Result<PagesWriter> {
        let name = format!("pages-{id}.img");
        let path = self.path(&name);
        let to = match &self.page_server {
            Some(c) => PagesTo::Server(c.clone(), lock(c).open(&name)?),
            None => PagesTo::File(
                std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| Error::io(&path, "creating pages image", e))?,
            ),
        };
        Ok(PagesWriter {
            out: PagesFile { path, to, size: 0 },
            hash: Default::default(),
        })
    }

    pub fn finish_pages(&self, w: PagesWriter) -> Result<()> {
        let PagesWriter { out, hash } = w;
        let name = file_name(&out.path);
        let (xxh3, blocks) = hash.finish();
        let digest = images::FileDigest {
            size: out.size,
            xxh3,
        };
        if let PagesTo::Server(c, n) = &out.to {
            lock(c).close(*n, &name, digest.size, digest.xxh3)?;
        }
        let mut m = self.manifest();
        m.add_digest(name.clone(), digest);
        m.add_blocks(&name, blocks);
        Ok(())
    }

    /// Manifest, sync, rename into place. One syncfs makes every image
    /// durable (a dump of hundreds of processes writes thousands of files;
    /// an fsync each costs seconds on a disk).
    pub fn commit(mut self) -> Result<()> {
        // The pages first: a directory here that looks complete must not
        // stand for pages the server did not keep.
        if let Some(c) = &self.page_server {
            lock(c).finish()?;
        }
        images::framing::sync_fs(&self.tmp)?;
        self.manifest().write(&self.tmp)?;
        images::framing::sync_dir(&self.tmp)?;
        if self.inside {
            return self.move_in();
        }
        if let Ok(made) = std::fs::metadata(&self.final_path) {
            // An empty directory the user made for us: rename replaces it,
            // and the images take its mode and owner, as the user chose.
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let keep = std::fs::Permissions::from_mode(made.mode() & 0o7777);
            std::fs::set_permissions(&self.tmp, keep)
                .and_then(|()| {
                    std::os::unix::fs::chown(&self.tmp, Some(made.uid()), Some(made.gid()))
                })
                .map_err(|e| {
                    Error::io(
                        &self.tmp,
                        "giving the images the directory's mode and owner",
                        e,
                    )
                })?;
            std::fs::remove_dir(&self.final_path).map_err(|e| {
                Error::io(&self.final_path, "replacing the empty image directory", e)
            })?;
        }
        std::fs::rename(&self.tmp, &self.final_path)
            .map_err(|e| Error::io(&self.final_path, "renaming the finished image directory", e))?;
        self.committed = true;
        if let Some(parent) = self.final_path.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            images::framing::sync_dir(parent)?;
        }
        Ok(())
    }
}

impl ImageDir {
    /// The commit of a temporary inside the existing directory: every
    /// file renamed in, the manifest after the images, inventory.img last
    /// (see the module doc). A failure removes what it moved in.
    fn move_in(mut self) -> Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(&self.tmp)
            .and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .map_err(|e| Error::io(&self.tmp, "listing the temporary image directory", e))?;
        // Images first, then the manifest, then inventory.img.
        names.sort_by_key(|n| (n == INVENTORY, n == images::MANIFEST_NAME, n.clone()));
        let mut moved: Vec<&str> = Vec::new();
        let r = (|| -> Result<()> {
            for name in &names {
                if name == INVENTORY {
                    images::framing::sync_dir(&self.final_path)?;
                }
                let to = self.final_path.join(name);
                nix::fcntl::renameat2(
                    None,
                    &self.tmp.join(name),
                    None,
                    &to,
                    nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                )
                .map_err(|e| {
                    Error::io(&to, "moving the image into place", std::io::Error::from(e))
                })?;
                moved.push(name);
            }
            Ok(images::framing::sync_dir(&self.final_path)?)
        })();
        if let Err(e) = r {
            for name in moved {
                let _ = std::fs::remove_file(self.final_path.join(name));
            }
            return Err(e);
        }
        self.committed = true;
        let _ = std::fs::remove_dir(&self.tmp);
        Ok(())
    }
}

/// The file whose presence makes a directory an image set, for ckpt and
/// CRIU alike: moved in last.
const INVENTORY: &str = "inventory.img";

/// The names in `dir` that are images (or ckpt's manifest): what a dump
/// must not write among.
fn images_in(dir: &Path) -> Result<Vec<String>> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "reading the image directory", e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n == images::MANIFEST_NAME
                || n.ends_with(".img")
                || ImageKind::of_file_name(n).is_some()
        })
        .collect();
    found.sort();
    Ok(found)
}

impl Drop for ImageDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pb;

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn image_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        let dir = ImageDir::create(&img).unwrap();
        assert_eq!(mode(&dir.tmp), 0o700);
        dir.write_image("pstree.img", &[pb::PstreeEntry::default()])
            .unwrap();
        dir.commit().unwrap();
        assert_eq!(mode(&img), 0o700);
        assert_eq!(mode(&img.join("pstree.img")), 0o600);
        assert_eq!(mode(&img.join(crate::images::MANIFEST_NAME)), 0o600);

        // A directory the user made keeps its mode.
        let mine = d.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o750)).unwrap();
        let dir = ImageDir::create(&mine).unwrap();
        dir.write_image("pstree.img", &[pb::PstreeEntry::default()])
            .unwrap();
        dir.commit().unwrap();
        assert_eq!(mode(&mine), 0o750);
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn images_join_other_files_and_never_old_images() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(img.join("dump.log"), "the log").unwrap();
        let dir = ImageDir::create(&img).unwrap();
        assert!(dir.tmp.starts_with(&img), "the temporary is inside");
        dir.write_image("pstree.img", &[pb::PstreeEntry::default()])
            .unwrap();
        dir.write_image("inventory.img", &[pb::InventoryEntry::default()])
            .unwrap();
        // Nothing is there before the commit.
        assert_eq!(
            names(&img).iter().filter(|n| !n.starts_with('.')).count(),
            1
        );
        dir.commit().unwrap();
        assert_eq!(
            names(&img),
            ["ckpt.manifest", "dump.log", "inventory.img", "pstree.img"]
        );
        assert_eq!(
            std::fs::read_to_string(img.join("dump.log")).unwrap(),
            "the log"
        );
        assert_eq!(mode(&img), 0o750);
        assert_eq!(mode(&img.join("pstree.img")), 0o600);
        Manifest::verify(&img).unwrap();

        // Now it holds images: refused, naming them, and left alone.
        let e = ImageDir::create(&img).err().expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("holds images already") && msg.contains("inventory.img"),
            "{msg}"
        );
        assert_eq!(
            names(&img),
            ["ckpt.manifest", "dump.log", "inventory.img", "pstree.img"]
        );
        // A manifest alone is enough to refuse.
        let m = d.path().join("m");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join(crate::images::MANIFEST_NAME), "").unwrap();
        assert!(ImageDir::create(&m).is_err());
    }

    #[test]
    fn a_failed_dump_leaves_the_directory_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        std::fs::write(img.join("dump.log"), "x").unwrap();
        let dir = ImageDir::create(&img).unwrap();
        dir.write_image("pstree.img", &[pb::PstreeEntry::default()])
            .unwrap();
        drop(dir);
        assert_eq!(names(&img), ["dump.log"]);
        // A move that cannot finish (a file in the way) takes back what
        // it moved.
        let dir = ImageDir::create(&img).unwrap();
        dir.write_image("pstree.img", &[pb::PstreeEntry::default()])
            .unwrap();
        dir.write_image("inventory.img", &[pb::InventoryEntry::default()])
            .unwrap();
        std::fs::write(img.join("pstree.img"), "in the way").unwrap();
        assert!(dir.commit().is_err());
        assert_eq!(names(&img), ["dump.log", "pstree.img"]);
        assert_eq!(
            std::fs::read_to_string(img.join("pstree.img")).unwrap(),
            "in the way"
        );
    }

    #[test]
    fn temporary_names() {
        assert_eq!(tmp_pid(&tmp_name("img", 42)), Some(42));
        assert_eq!(tmp_pid(".a.b.ckpt-tmp-7"), Some(7));
        assert_eq!(tmp_pid("img.ckpt-tmp-7"), None);
        assert_eq!(tmp_pid(".ckpt-tmp-7"), None);
        assert_eq!(tmp_pid(".img.ckpt-tmp-x"), None);
    }

    #[test]
    fn stale_temporaries_go_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        // A dump in progress, what a SIGKILLed dump leaves (a temporary
        // with pages in it), and a file that only looks like one.
        let live = ImageDir::create(&d.path().join("busy")).unwrap();
        let stale = d.path().join(tmp_name("old", 999_999));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("pages-1.img"), [7u8; 4096]).unwrap();
        let not_dir = d.path().join(tmp_name("file", 5));
        std::fs::write(&not_dir, "x").unwrap();
        assert!(stale.exists());

        let _next = ImageDir::create(&d.path().join("new")).unwrap();
        assert!(!stale.exists(), "the stale temporary is still there");
        assert!(live.tmp.exists(), "a live dump's temporary was removed");
        assert!(not_dir.exists());
    }
}
