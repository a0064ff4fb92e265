//! Writing an image directory atomically.
//!
//! Images are written into a temporary sibling directory (same
//! filesystem); `commit` syncs them all (syncfs), writes the manifest
//! (fsynced), fsyncs the directory and renames it into place, then fsyncs
//! the parent. A dump that fails or crashes part way never leaves a
//! directory under the requested name that looks complete; the temporary
//! one is removed on drop.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use xxhash_rust::xxh3::Xxh3Default;

use crate::error::{Error, Result};
use crate::images::{self, ImageKind, ImageWriter, Magic, Manifest};

/// pages-N.img: raw page contents. The file and its checksum are separate
/// halves so the dump can write on one thread and hash on another (the
/// thread that has the bytes hot in its cache after reading them).
pub struct PagesWriter {
    pub out: PagesFile,
    pub hash: Xxh3Default,
}

/// The file half of a [`PagesWriter`].
pub struct PagesFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
}

impl PagesFile {
    /// Append `data` (the caller hashes it).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file
            .write_all(data)
            .map_err(|e| Error::io(&self.path, "writing pages", e))?;
        self.size += data.len() as u64;
        Ok(())
    }
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
    manifest: RefCell<Manifest>,
    committed: bool,
}

impl ImageDir {
    /// Prepare to write `dir`, which must not exist or be empty.
    pub fn create(dir: &Path) -> Result<ImageDir> {
        if dir.exists() {
            let mut it = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, "reading the image directory", e))?;
            if it.next().is_some() {
                return Err(Error::Usage(format!(
                    "{}: the image directory is not empty; give a new or empty directory",
                    dir.display()
                )));
            }
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dir
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a directory name", dir.display())))?;
        let tmp = parent.join(format!(
            ".{}.ckpt-tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)
            .map_err(|e| Error::io(&tmp, "creating the temporary image directory", e))?;
        Ok(ImageDir {
            final_path: dir.to_path_buf(),
            tmp,
            manifest: RefCell::new(Manifest::new()),
            committed: false,
        })
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
        self.manifest.borrow_mut().add_digest(name, d);
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
            w.write_entry(e)?;
        }
        let d = w.finish_unsynced()?;
        self.manifest.borrow_mut().add_digest(name, d);
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
        self.manifest.borrow_mut().add_digest(name, d);
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
        self.manifest.borrow_mut().add_digest(name, d);
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
        self.manifest.borrow_mut().add_digest(name, d);
        Ok(())
    }

    pub fn pages_writer(&self, id: u32) -> Result<PagesWriter> {
        let path = self.path(&format!("pages-{id}.img"));
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, "creating pages image", e))?;
        Ok(PagesWriter {
            out: PagesFile {
                path,
                file,
                size: 0,
            },
            hash: Xxh3Default::new(),
        })
    }

    pub fn finish_pages(&self, w: PagesWriter) -> Result<()> {
        let PagesWriter { out, hash } = w;
        let name = out
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.manifest.borrow_mut().add_digest(
            name,
            images::FileDigest {
                size: out.size,
                xxh3: hash.digest128(),
            },
        );
        Ok(())
    }

    /// Manifest, sync, rename into place. One syncfs makes every image
    /// durable (a dump of hundreds of processes writes thousands of files;
    /// an fsync each costs seconds on a disk).
    pub fn commit(mut self) -> Result<()> {
        images::framing::sync_fs(&self.tmp)?;
        self.manifest.borrow().write(&self.tmp)?;
        images::framing::sync_dir(&self.tmp)?;
        if self.final_path.exists() {
            // An empty directory the user made for us: rename replaces it.
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

impl Drop for ImageDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
