//! `ckpt.manifest`: ckpt's own file in an image directory (CRIU ignores
//! it), listing every image file with its size and xxh3-128 checksum, so
//! that a restore can refuse a damaged or incomplete directory before it
//! touches the system.
//!
//! Format (text, one record a line, sorted by name):
//!
//! ```text
//! ckpt-manifest 1
//! <xxh3-128 as 32 hex digits> <size in bytes> <file name>
//! ```
//!
//! Version 2 adds, after the file records, a `blocks` record for each
//! file bigger than one [`BLOCK`] (the pages files): the xxh3-64 of each
//! block, in order, the last one short if the file ends inside it.
//!
//! ```text
//! ckpt-manifest 2
//! <xxh3-128> <size> <file name>
//! blocks <block size> <xxh3-64 as 16 hex digits>,... <file name>
//! ```
//!
//! Why blocks: a whole-file checksum can only be checked by one thread
//! reading the whole file, which for a GiB of pages is most of a
//! restore's time before any task exists, and all of a lazy restore's
//! (whose point is that the tree runs before its memory is read). With
//! blocks, a restore checks a big file on every CPU, and a lazy restore
//! checks up front only what it writes itself; each block the lazy-pages
//! daemon serves is checked before its first byte reaches a task
//! ([`DeferredBlocks`]). Version 1 manifests (no blocks) are still read.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3Default;

use super::framing::{sync_dir, FileDigest};
use super::{ImageError, Result};

/// File name of the manifest inside an image directory.
pub const MANIFEST_NAME: &str = "ckpt.manifest";
const HEADER: &str = "ckpt-manifest 1";
const HEADER_V2: &str = "ckpt-manifest 2";
/// Bytes one block checksum of a big file covers.
pub const BLOCK: u64 = 1 << 20;
/// Blocks one verification job takes (so a big file is shared among
/// the threads).
const BLOCKS_PER_JOB: u64 = 4;
/// Read size when hashing files for verification.
const HASH_BUF: usize = 4 << 20;

/// The expected size and checksum of every image file of a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    files: BTreeMap<String, FileDigest>,
    /// xxh3-64 of each [`BLOCK`] of the files bigger than one block.
    blocks: BTreeMap<String, Vec<u64>>,
}

/// One way a directory differs from its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestProblem {
    /// The manifest itself is missing, unreadable or malformed.
    NoManifest { reason: String },
    /// A listed file does not exist.
    Missing { name: String },
    /// A listed file has another size.
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    /// A listed file has the right size but other content.
    ChecksumMismatch {
        name: String,
        expected: u128,
        actual: u128,
    },
    /// An `.img` file in the directory that the manifest does not list.
    Unlisted { name: String },
    /// A listed file exists but cannot be read.
    Unreadable { name: String, reason: String },
    /// A block of a listed file has other content than its checksum says.
    BlockMismatch { name: String, block: u64 },
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestProblem::NoManifest { reason } => write!(f, "{MANIFEST_NAME}: {reason}"),
            ManifestProblem::Missing { name } => {
                write!(f, "{name}: listed in {MANIFEST_NAME} but missing")
            }
            ManifestProblem::SizeMismatch {
                name,
                expected,
                actual,
            } => write!(
                f,
                "{name}: size is {actual} bytes, {MANIFEST_NAME} says {expected}"
            ),
            ManifestProblem::ChecksumMismatch {
                name,
                expected,
                actual,
            } => write!(
                f,
                "{name}: checksum mismatch (content is {actual:032x}, {MANIFEST_NAME} says {expected:032x}): the file is damaged"
            ),
            ManifestProblem::Unlisted { name } => {
                write!(f, "{name}: image file not listed in {MANIFEST_NAME}")
            }
            ManifestProblem::Unreadable { name, reason } => {
                write!(f, "{name}: cannot read: {reason}")
            }
            ManifestProblem::BlockMismatch { name, block } => write!(
                f,
                "{name}: bytes {}-{} (block {block}) differ from their checksum in {MANIFEST_NAME}: the file is damaged",
                block * BLOCK,
                (block + 1) * BLOCK - 1
            ),
        }
    }
}

impl ManifestProblem {
    /// The file the problem is about (the manifest for `NoManifest`).
    pub fn name(&self) -> &str {
        match self {
            ManifestProblem::NoManifest { .. } => MANIFEST_NAME,
            ManifestProblem::Missing { name }
            | ManifestProblem::SizeMismatch { name, .. }
            | ManifestProblem::ChecksumMismatch { name, .. }
            | ManifestProblem::Unlisted { name }
            | ManifestProblem::Unreadable { name, .. }
            | ManifestProblem::BlockMismatch { name, .. } => name,
        }
    }
}

/// An image directory does not match its manifest; lists every difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub dir: PathBuf,
    pub problems: Vec<ManifestProblem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: image directory does not match {MANIFEST_NAME}: ",
            self.dir.display()
        )?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        let pages_away = self.problems.iter().any(|p| {
            matches!(p, ManifestProblem::Missing { name }
                if super::set::pages_file_id(name).is_some())
        });
        if pages_away {
            f.write_str(
                " (a dump with --page-server leaves its pages files with the page \
                 server: copy them into this directory)",
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// So that `Manifest::verify(dir)?` works in functions returning the
/// engine's error type.
impl From<ManifestError> for crate::error::Error {
    fn from(e: ManifestError) -> Self {
        crate::error::Error::Image(ImageError::Manifest(e))
    }
}

/// Size and xxh3-128 of a file. Big files (pages) are hashed straight
/// from a mapping of the page cache, small ones read in big blocks.
pub fn hash_file(path: &Path) -> Result<FileDigest> {
    let mut f = File::open(path).map_err(|e| ImageError::io(path, "open", e))?;
    let len = f
        .metadata()
        .map_err(|e| ImageError::io(path, "stat", e))?
        .len();
    if len >= MMAP_HASH_MIN {
        let m = crate::sys::Mmap::map(&f).map_err(|e| ImageError::io(path, "mmap", e))?;
        return Ok(FileDigest::of_bytes(m.as_slice()));
    }
    hash_read(&mut f, len, &mut Vec::new()).map_err(|e| ImageError::io(path, "read", e))
}

/// Hash what `f` holds (`len` bytes expected) by reading it through
/// `buf`, which grows to what the biggest file needs and is kept for the
/// next: a fresh zeroed 4 MiB buffer per file cost more than hashing the
/// file (a restore of 65 threads spent most of its verification in
/// memset).
fn hash_read(f: &mut File, len: u64, buf: &mut Vec<u8>) -> io::Result<FileDigest> {
    // One byte more than the file, so its end shows in one read.
    let want = (len.saturating_add(1)).clamp(4096, HASH_BUF as u64) as usize;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    hash_reader(f, buf)
}

/// One piece of a manifest check: a whole file, or some blocks of one,
/// read from the file or hashed in a mapping of it.
enum HashJob<'a> {
    Whole(&'a str, FileDigest),
    Blocks(&'a str, &'a [u64], std::ops::Range<u64>),
    Mapped(
        &'a str,
        &'a [u64],
        &'a crate::sys::Mmap,
        std::ops::Range<u64>,
    ),
}

/// The files with block checksums that a check hashed in a mapping of
/// each, by name, the mappings populated: a restore writes a task's pages
/// from the mapping the check made (`restore::load::Images::take_mapped`)
/// instead of reading the file again, and the check itself copies nothing
/// (reading a block into a buffer to hash it cost several times the hash).
pub type Mapped = BTreeMap<String, crate::sys::Mmap>;

impl HashJob<'_> {
    /// The problem found, if any; `buf` is kept for the next job.
    fn run(&self, dir: &Path, buf: &mut Vec<u8>) -> Option<ManifestProblem> {
        let unreadable = |name: &str, e: io::Error| ManifestProblem::Unreadable {
            name: name.to_string(),
            reason: e.to_string(),
        };
        match *self {
            HashJob::Whole(name, want) => {
                let got =
                    File::open(dir.join(name)).and_then(|mut f| hash_read(&mut f, want.size, buf));
                match got {
                    Err(e) => Some(unreadable(name, e)),
                    Ok(d) if d.size != want.size => Some(ManifestProblem::SizeMismatch {
                        name: name.to_string(),
                        expected: want.size,
                        actual: d.size,
                    }),
                    Ok(d) if d.xxh3 != want.xxh3 => Some(ManifestProblem::ChecksumMismatch {
                        name: name.to_string(),
                        expected: want.xxh3,
                        actual: d.xxh3,
                    }),
                    Ok(_) => None,
                }
            }
            HashJob::Blocks(name, want, ref range) => {
                use std::os::unix::fs::FileExt;
                let f = match File::open(dir.join(name)) {
                    Ok(f) => f,
                    Err(e) => return Some(unreadable(name, e)),
                };
                buf.resize(BLOCK as usize, 0);
                for b in range.clone() {
                    let mut n = 0usize;
                    // The file's size was checked: a short read is a file
                    // that shrank since, or a hole past the end.
                    loop {
                        match f.read_at(&mut buf[n..], b * BLOCK + n as u64) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Some(unreadable(name, e)),
                        }
                        if n == buf.len() {
                            break;
                        }
                    }
                    if xxhash_rust::xxh3::xxh3_64(&buf[..n]) != want[b as usize] {
                        return Some(ManifestProblem::BlockMismatch {
                            name: name.to_string(),
                            block: b,
                        });
                    }
                }
                None
            }
            HashJob::Mapped(name, want, map, ref range) => {
                let data = map.as_slice();
                let from = (range.start * BLOCK) as usize;
                let to = ((range.end * BLOCK) as usize).min(data.len());
                // Faulted in here, on this job's thread, in one call.
                map.populate(from, to.saturating_sub(from));
                for b in range.clone() {
                    let s = (b * BLOCK) as usize;
                    let e = (s + BLOCK as usize).min(data.len());
                    // The size was checked: a file that shrank since.
                    let Some(block) = data.get(s..e) else {
                        return Some(ManifestProblem::Unreadable {
                            name: name.to_string(),
                            reason: format!("block {b} is beyond the end of the file"),
                        });
                    };
                    if xxhash_rust::xxh3::xxh3_64(block) != want[b as usize] {
                        return Some(ManifestProblem::BlockMismatch {
                            name: name.to_string(),
                            block: b,
                        });
                    }
                }
                None
            }
        }
    }
}

/// Runs `jobs` on a few threads: image directories are a few big pages
/// files (in blocks, shared among the threads) and many small ones.
/// Returns one problem a file at most (its first damaged block).
fn run_jobs(dir: &Path, jobs: &[HashJob<'_>]) -> Vec<ManifestProblem> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut hashed: Vec<ManifestProblem> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut found = Vec::new();
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else {
                            break;
                        };
                        if let Some(p) = job.run(dir, &mut buf) {
                            found.push(p);
                        }
                    }
                    found
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hash worker panicked"))
            .collect()
    });
    hashed.sort_by(|a, b| a.name().cmp(b.name()).then(block_of(a).cmp(&block_of(b))));
    hashed.dedup_by(|b, a| a.name() == b.name());
    hashed
}

/// The jobs that check `blocks` (indices, ascending) of a file, in
/// `map` if it is mapped.
fn block_jobs<'a>(
    name: &'a str,
    want: &'a [u64],
    blocks: &[u64],
    map: Option<&'a crate::sys::Mmap>,
) -> Vec<HashJob<'a>> {
    let mut jobs = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let first = blocks[i];
        let mut end = first + 1;
        i += 1;
        while i < blocks.len() && blocks[i] == end && end - first < BLOCKS_PER_JOB {
            end += 1;
            i += 1;
        }
        jobs.push(match map {
            Some(m) => HashJob::Mapped(name, want, m, first..end),
            None => HashJob::Blocks(name, want, first..end),
        });
    }
    jobs
}

fn block_of(p: &ManifestProblem) -> u64 {
    match p {
        ManifestProblem::BlockMismatch { block, .. } => *block,
        _ => 0,
    }
}

/// Hashes a pages file as it is written: as a whole (xxh3-128, the
/// manifest's file record) and block by block (xxh3-64 of each
/// [`BLOCK`], its `blocks` record).
pub struct PagesHasher {
    whole: Xxh3Default,
    block: Xxh3Default,
    fill: u64,
    blocks: Vec<u64>,
}

impl Default for PagesHasher {
    fn default() -> Self {
        PagesHasher {
            whole: Xxh3Default::new(),
            block: Xxh3Default::new(),
            fill: 0,
            blocks: Vec::new(),
        }
    }
}

impl PagesHasher {
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        while !data.is_empty() {
            let n = ((BLOCK - self.fill) as usize).min(data.len());
            self.block.update(&data[..n]);
            self.fill += n as u64;
            data = &data[n..];
            if self.fill == BLOCK {
                self.blocks.push(self.block.digest());
                self.block.reset();
                self.fill = 0;
            }
        }
    }

    /// The whole checksum of what was written so far.
    pub fn digest128(&self) -> u128 {
        self.whole.digest128()
    }

    /// The whole checksum and the block checksums (the last block may be
    /// short).
    pub fn finish(mut self) -> (u128, Vec<u64>) {
        if self.fill > 0 {
            self.blocks.push(self.block.digest());
        }
        (self.whole.digest128(), self.blocks)
    }
}

/// The blocks of a file whose check a lazy restore left for when they
/// are first read ([`Manifest::check_deferring`]): each is checked once,
/// before any byte of it is used.
#[derive(Clone, Debug)]
pub struct DeferredBlocks {
    name: String,
    want: Vec<u64>,
    checked: Vec<bool>,
}

impl DeferredBlocks {
    pub fn new(name: &str, want: &[u64]) -> Self {
        DeferredBlocks {
            name: name.to_string(),
            want: want.to_vec(),
            checked: vec![false; want.len()],
        }
    }

    /// The blocks not wholly inside one of `keep` (byte ranges of the
    /// file, merged): those a reader other than the lazy-pages daemon may
    /// read, which the restore checks before any task exists.
    pub fn not_within(&self, keep: &[(u64, u64)]) -> Vec<u64> {
        (0..self.want.len() as u64)
            .filter(|&b| {
                let (s, e) = (b * BLOCK, (b + 1) * BLOCK);
                !keep.iter().any(|&(a, z)| a <= s && e <= z)
            })
            .collect()
    }

    /// Records blocks as checked (by the restore, before any task
    /// existed).
    pub fn mark_checked(&mut self, blocks: &[u64]) {
        for &b in blocks {
            if let Some(c) = self.checked.get_mut(b as usize) {
                *c = true;
            }
        }
    }

    /// How many blocks are still unchecked.
    pub fn unchecked(&self) -> u64 {
        self.checked.iter().filter(|&&c| !c).count() as u64
    }

    /// Checks every block of `off..off + len` not checked yet against
    /// `file` (the whole file's bytes, a mapping of it).
    pub fn check(&mut self, file: &[u8], off: u64, len: u64) -> Result<(), ManifestProblem> {
        if len == 0 || self.want.is_empty() {
            return Ok(());
        }
        let last = ((off + len - 1) / BLOCK).min(self.want.len() as u64 - 1);
        for b in off / BLOCK..=last {
            self.check_block(file, b)?;
        }
        Ok(())
    }

    /// Checks block `b` (once).
    pub fn check_block(&mut self, file: &[u8], b: u64) -> Result<(), ManifestProblem> {
        let i = b as usize;
        if self.checked.get(i).copied().unwrap_or(true) {
            return Ok(());
        }
        let s = (b * BLOCK) as usize;
        let e = (s + BLOCK as usize).min(file.len());
        let data = file.get(s..e).ok_or_else(|| ManifestProblem::Unreadable {
            name: self.name.clone(),
            reason: format!(
                "block {b} is beyond the end of the file ({} bytes)",
                file.len()
            ),
        })?;
        if xxhash_rust::xxh3::xxh3_64(data) != self.want[i] {
            return Err(ManifestProblem::BlockMismatch {
                name: self.name.clone(),
                block: b,
            });
        }
        self.checked[i] = true;
        Ok(())
    }
}

/// Files at least this big are hashed through mmap rather than read().
const MMAP_HASH_MIN: u64 = 4 << 20;

fn hash_reader(r: &mut impl Read, buf: &mut [u8]) -> io::Result<FileDigest> {
    let mut hasher = Xxh3Default::new();
    let mut size = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        xxh3: hasher.digest128(),
    })
}

/// `<block size> <hex>,<hex>,... <name>` (after "blocks ").
fn parse_blocks(rest: &str) -> std::result::Result<(&str, Vec<u64>), String> {
    let mut parts = rest.splitn(3, ' ');
    let (Some(size), Some(list), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "expected 'blocks <size> <hash>,... <name>', found \"blocks {rest}\""
        ));
    };
    if size != BLOCK.to_string() {
        return Err(format!("block size {size:?} (this ckpt reads {BLOCK})"));
    }
    if !valid_name(name) {
        return Err(format!("bad file name {name:?}"));
    }
    let blocks = list
        .split(',')
        .map(|h| {
            (h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(h, 16).expect("checked hex"))
                .ok_or_else(|| format!("{name}: bad block checksum {h:?} (want 16 hex digits)"))
        })
        .collect::<std::result::Result<Vec<u64>, String>>()?;
    Ok((name, blocks))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != MANIFEST_NAME
        && !name.contains(['/', '\n', '\r', '\0'])
}

impl Manifest {
    pub fn new() -> Self {
        Manifest::default()
    }

    /// Records (or replaces) a file's size and checksum.
    ///
    /// # Panics
    /// If `name` is not a plain file name (contains '/' or a newline, or is
    /// the manifest's own name): a programming error.
    pub fn add(&mut self, name: impl Into<String>, size: u64, xxh3: u128) {
        let name = name.into();
        assert!(valid_name(&name), "bad image file name {name:?}");
        self.files.insert(name, FileDigest { size, xxh3 });
    }

    /// Records a file with the digest an [`ImageWriter`](super::ImageWriter)
    /// or [`HashingWriter`](super::HashingWriter) returned.
    pub fn add_digest(&mut self, name: impl Into<String>, digest: FileDigest) {
        self.add(name, digest.size, digest.xxh3);
    }

    /// Hashes `dir/name` as it is now and records it.
    pub fn add_file(&mut self, dir: &Path, name: &str) -> Result<FileDigest> {
        let d = hash_file(&dir.join(name))?;
        self.add_digest(name, d);
        Ok(d)
    }

    /// Records the block checksums of a listed file ([`PagesHasher`]);
    /// none for a file of one block or less (its whole checksum is as
    /// cheap to check).
    ///
    /// # Panics
    /// If the file is not listed, or the count is not the file's number
    /// of blocks: a programming error.
    pub fn add_blocks(&mut self, name: &str, blocks: Vec<u64>) {
        let size = self.files.get(name).expect("blocks of a listed file").size;
        assert_eq!(
            blocks.len() as u64,
            size.div_ceil(BLOCK),
            "{name}: block count"
        );
        if size > BLOCK {
            self.blocks.insert(name.to_string(), blocks);
        }
    }

    /// The block checksums of `name`, if the manifest has them.
    pub fn blocks(&self, name: &str) -> Option<&[u64]> {
        self.blocks.get(name).map(Vec::as_slice)
    }

    pub fn get(&self, name: &str) -> Option<FileDigest> {
        self.files.get(name).copied()
    }

    /// Every listed file, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FileDigest)> {
        self.files.iter().map(|(n, d)| (n.as_str(), *d))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The manifest's text.
    pub fn to_text(&self) -> String {
        let blocks: usize = self.blocks.values().map(|b| b.len() * 17 + 32).sum();
        let mut s = String::with_capacity(HEADER.len() + 1 + self.files.len() * 64 + blocks);
        s.push_str(if self.blocks.is_empty() {
            HEADER
        } else {
            HEADER_V2
        });
        s.push('\n');
        for (name, d) in &self.files {
            s.push_str(&format!("{:032x} {} {}\n", d.xxh3, d.size, name));
        }
        for (name, b) in &self.blocks {
            s.push_str(&format!("blocks {BLOCK} "));
            for (i, h) in b.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&format!("{h:016x}"));
            }
            s.push(' ');
            s.push_str(name);
            s.push('\n');
        }
        s
    }

    /// Parses a manifest's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let bad = |line: usize, reason: String| ImageError::BadManifest {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let v2 = match lines.next() {
            Some((_, HEADER)) => false,
            Some((_, HEADER_V2)) => true,
            Some((_, l)) if l.starts_with("ckpt-manifest ") => {
                return Err(bad(1, format!("unsupported manifest version {l:?}")));
            }
            _ => return Err(bad(1, format!("not a ckpt manifest (no {HEADER:?} line)"))),
        };
        let mut m = Manifest::new();
        for (no, line) in lines {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("blocks ") {
                if !v2 {
                    return Err(bad(no, "a blocks record in a version 1 manifest".into()));
                }
                let (name, blocks) = parse_blocks(rest).map_err(|why| bad(no, why))?;
                let Some(d) = m.files.get(name) else {
                    return Err(bad(
                        no,
                        format!("blocks of {name}, which is not listed above"),
                    ));
                };
                if blocks.len() as u64 != d.size.div_ceil(BLOCK) {
                    return Err(bad(
                        no,
                        format!(
                            "{name}: {} block checksums for {} bytes (want {})",
                            blocks.len(),
                            d.size,
                            d.size.div_ceil(BLOCK)
                        ),
                    ));
                }
                if m.blocks.insert(name.to_string(), blocks).is_some() {
                    return Err(bad(no, format!("blocks of {name} are listed twice")));
                }
                continue;
            }
            if !m.blocks.is_empty() {
                return Err(bad(no, "a file record after the blocks records".into()));
            }
            let mut parts = line.splitn(3, ' ');
            let (Some(hash), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(
                    no,
                    format!("expected '<hash> <size> <name>', found {line:?}"),
                ));
            };
            if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    no,
                    format!("bad checksum {hash:?} (want 32 hex digits)"),
                ));
            }
            let xxh3 = u128::from_str_radix(hash, 16).expect("checked hex");
            let size: u64 = size
                .parse()
                .map_err(|_| bad(no, format!("bad size {size:?}")))?;
            if !valid_name(name) {
                return Err(bad(no, format!("bad file name {name:?}")));
            }
            if m.files
                .insert(name.to_string(), FileDigest { size, xxh3 })
                .is_some()
            {
                return Err(bad(no, format!("{name} is listed twice")));
            }
        }
        Ok(m)
    }

    /// Writes `dir/ckpt.manifest` (through a temporary file and a rename,
    /// fsyncing file and directory).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_NAME);
        let tmp = dir.join(format!("{MANIFEST_NAME}.tmp"));
        // Private like the images it vouches for, whatever the umask.
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| ImageError::io(&tmp, "create", e))?
        };
        f.write_all(self.to_text().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ImageError::io(&tmp, "write", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| ImageError::io(&path, "rename into place", e))?;
        sync_dir(dir)
    }

    /// Reads `dir/ckpt.manifest`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| ImageError::io(&path, "read", e))?;
        Manifest::parse(&text, &path)
    }

    /// Reads `dir/ckpt.manifest` and checks the directory against it (see
    /// [`check`](Self::check)). This is what restore calls before trusting
    /// any image of `dir`.
    pub fn verify(dir: &Path) -> Result<(), ManifestError> {
        Manifest::verify_deferring(dir, |_| false)
    }

    /// [`verify`](Self::verify), with [`check_deferring`](Self::check_deferring).
    pub fn verify_deferring(dir: &Path, defer: impl Fn(&str) -> bool) -> Result<(), ManifestError> {
        Manifest::verify_mapping(dir, defer).map(|_| ())
    }

    /// [`verify_deferring`](Self::verify_deferring), keeping the mappings
    /// the check hashed files in ([`Mapped`]).
    pub fn verify_mapping(
        dir: &Path,
        defer: impl Fn(&str) -> bool,
    ) -> Result<Mapped, ManifestError> {
        match Manifest::read(dir) {
            Ok(m) => m.check_mapping(dir, defer),
            Err(e) => Err(ManifestError {
                dir: dir.to_path_buf(),
                problems: vec![ManifestProblem::NoManifest {
                    reason: match e {
                        ImageError::Io { source, .. } => source.to_string(),
                        ImageError::BadManifest { line, reason, .. } => {
                            format!("line {line}: {reason}")
                        }
                        other => other.to_string(),
                    },
                }],
            }),
        }
    }

    /// Checks `dir` against this manifest: every listed file exists with
    /// the listed size and checksum, and no unlisted `.img` file is there.
    /// Reports every problem found, not only the first.
    pub fn check(&self, dir: &Path) -> Result<(), ManifestError> {
        self.check_deferring(dir, |_| false)
    }

    /// Checks some blocks of files with block checksums (names and block
    /// indices, ascending), on a few threads.
    pub fn check_blocks(
        &self,
        dir: &Path,
        picks: &[(String, Vec<u64>)],
    ) -> Result<(), ManifestError> {
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        for (name, blocks) in picks {
            match self.blocks.get(name) {
                Some(want) => jobs.extend(block_jobs(name, want, blocks, None)),
                None if blocks.is_empty() => {}
                None => problems.push(ManifestProblem::Unreadable {
                    name: name.clone(),
                    reason: format!("{MANIFEST_NAME} has no block checksums for it"),
                }),
            }
        }
        problems.extend(run_jobs(dir, &jobs));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError {
                dir: dir.to_path_buf(),
                problems,
            })
        }
    }

    /// [`check`](Self::check), leaving the content of each file with
    /// block checksums that `defer` names unread (its size is checked):
    /// the caller checks its blocks as it reads them ([`DeferredBlocks`]).
    pub fn check_deferring(
        &self,
        dir: &Path,
        defer: impl Fn(&str) -> bool,
    ) -> Result<(), ManifestError> {
        self.check_mapping(dir, defer).map(|_| ())
    }

    /// [`check_deferring`](Self::check_deferring), which hashes the files
    /// with block checksums in mappings of them: returned, populated, when
    /// every file is as listed.
    pub fn check_mapping(
        &self,
        dir: &Path,
        defer: impl Fn(&str) -> bool,
    ) -> Result<Mapped, ManifestError> {
        let mut problems = Vec::new();

        match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut unlisted: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".img") && !self.files.contains_key(n))
                    .collect();
                unlisted.sort();
                problems.extend(
                    unlisted
                        .into_iter()
                        .map(|name| ManifestProblem::Unlisted { name }),
                );
            }
            Err(e) => problems.push(ManifestProblem::NoManifest {
                reason: format!("cannot list {}: {e}", dir.display()),
            }),
        }

        // Cheap checks first; hash only files of the right size.
        let mut whole = Vec::new();
        let mut blocked: Vec<(&str, &[u64])> = Vec::new();
        for (name, want) in &self.files {
            match std::fs::metadata(dir.join(name)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    problems.push(ManifestProblem::Missing { name: name.clone() })
                }
                Err(e) => problems.push(ManifestProblem::Unreadable {
                    name: name.clone(),
                    reason: e.to_string(),
                }),
                Ok(md) if md.len() != want.size => problems.push(ManifestProblem::SizeMismatch {
                    name: name.clone(),
                    expected: want.size,
                    actual: md.len(),
                }),
                Ok(_) => match self.blocks.get(name) {
                    Some(_) if defer(name) => {}
                    Some(b) => blocked.push((name, b)),
                    None => whole.push(HashJob::Whole(name, *want)),
                },
            }
        }
        // Mapped without populating: each job faults in its own blocks. A
        // file that cannot be mapped is read instead.
        let mut mapped = Mapped::new();
        for &(name, _) in &blocked {
            if let Ok(m) = File::open(dir.join(name)).and_then(|f| crate::sys::Mmap::map_sparse(&f))
            {
                mapped.insert(name.to_string(), m);
            }
        }
        let mut jobs = whole;
        for (name, b) in blocked {
            let all: Vec<u64> = (0..b.len() as u64).collect();
            jobs.extend(block_jobs(name, b, &all, mapped.get(name)));
        }

        let hashed = run_jobs(dir, &jobs);
        drop(jobs);
        problems.extend(hashed);

        if problems.is_empty() {
            Ok(mapped)
        } else {
            problems.sort_by(|a, b| a.name().cmp(b.name()));
            Err(ManifestError {
                dir: dir.to_path_buf(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{pb, write_image, ImageWriter, Magic};

    /// An image directory with a few real files and their manifest.
    fn sample_dir() -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut m = Manifest::new();
        let inv = pb::InventoryEntry {
            img_version: 2,
            ..Default::default()
        };
        m.add_digest(
            "inventory.img",
            write_image(d.join("inventory.img"), Magic::Inventory, &[inv]).unwrap(),
        );
        let fds: Vec<pb::FdinfoEntry> = (0..3)
            .map(|fd| pb::FdinfoEntry {
                id: fd + 10,
                fd,
                r#type: pb::FdTypes::Reg as i32,
                ..Default::default()
            })
            .collect();
        m.add_digest(
            "fdinfo-2.img",
            write_image(d.join("fdinfo-2.img"), Magic::Fdinfo, &fds).unwrap(),
        );
        let mut w = ImageWriter::create(d.join("pages-1.img"), Magic::Raw).unwrap();
        for i in 0..64u8 {
            w.write_raw(&[i; 4096]).unwrap();
        }
        m.add_digest("pages-1.img", w.finish().unwrap());
        m.write(d).unwrap();
        (dir, m)
    }

    fn problems(dir: &Path) -> Vec<ManifestProblem> {
        Manifest::verify(dir).unwrap_err().problems
    }

    #[test]
    fn written_manifest_verifies_and_reads_back() {
        let (dir, m) = sample_dir();
        Manifest::verify(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);

        let text = std::fs::read_to_string(dir.path().join(MANIFEST_NAME)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ckpt-manifest 1");
        let names: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap())
            .collect();
        assert_eq!(names, ["fdinfo-2.img", "inventory.img", "pages-1.img"]);
        let pages = m.get("pages-1.img").unwrap();
        assert_eq!(lines[3], format!("{} 262144 pages-1.img", pages.hex()));
        assert_eq!(pages, hash_file(&dir.path().join("pages-1.img")).unwrap());
        assert!(!dir.path().join("ckpt.manifest.tmp").exists());
    }

    #[test]
    fn flipped_byte_is_a_checksum_mismatch() {
        let (dir, m) = sample_dir();
        let path = dir.path().join("pages-1.img");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100_000] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();

        let err = Manifest::verify(dir.path()).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let ManifestProblem::ChecksumMismatch {
            name,
            expected,
            actual,
        } = &err.problems[0]
        else {
            panic!("{err}")
        };
        assert_eq!(name, "pages-1.img");
        assert_eq!(*expected, m.get("pages-1.img").unwrap().xxh3);
        assert_ne!(actual, expected);
        let msg = err.to_string();
        assert!(msg.contains("pages-1.img: checksum mismatch"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn missing_resized_and_unlisted_files() {
        let (dir, _) = sample_dir();
        let d = dir.path();
        std::fs::remove_file(d.join("fdinfo-2.img")).unwrap();
        let mut f = File::options()
            .append(true)
            .open(d.join("inventory.img"))
            .unwrap();
        f.write_all(b"x").unwrap();
        std::fs::write(d.join("core-7.img"), b"stray").unwrap();
        std::fs::write(d.join("notes.txt"), b"not an image: ignored").unwrap();

        let p = problems(d);
        assert_eq!(
            p,
            vec![
                ManifestProblem::Unlisted {
                    name: "core-7.img".into()
                },
                ManifestProblem::Missing {
                    name: "fdinfo-2.img".into()
                },
                ManifestProblem::SizeMismatch {
                    name: "inventory.img".into(),
                    expected: 10,
                    actual: 11
                },
            ]
        );
        let msg = Manifest::verify(d).unwrap_err().to_string();
        assert!(msg.contains("core-7.img: image file not listed"), "{msg}");
        assert!(
            msg.contains("fdinfo-2.img: listed in ckpt.manifest but missing"),
            "{msg}"
        );
        assert!(
            msg.contains("inventory.img: size is 11 bytes, ckpt.manifest says 10"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_malformed_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let p = problems(dir.path());
        assert!(
            matches!(&p[..], [ManifestProblem::NoManifest { .. }]),
            "{p:?}"
        );

        let bad = |text: &str| Manifest::parse(text, Path::new("/d/ckpt.manifest")).unwrap_err();
        let e = bad("hello\n");
        assert!(matches!(e, ImageError::BadManifest { line: 1, .. }), "{e}");
        let e = bad("ckpt-manifest 3\n");
        assert!(
            e.to_string().contains("unsupported manifest version"),
            "{e}"
        );
        let h = "0123456789abcdef0123456789abcdef";
        let e = bad(&format!("ckpt-manifest 1\n{h} 12\n"));
        assert!(matches!(e, ImageError::BadManifest { line: 2, .. }), "{e}");
        let e = bad(&format!("ckpt-manifest 1\n{h} 1 a.img\nxyz 1 b.img\n"));
        assert!(
            e.to_string()
                .contains("/d/ckpt.manifest: line 3: bad checksum"),
            "{e}"
        );
        let e = bad(&format!("ckpt-manifest 1\n{h} -1 a.img\n"));
        assert!(e.to_string().contains("bad size"), "{e}");
        let e = bad(&format!("ckpt-manifest 1\n{h} 1 ../a.img\n"));
        assert!(e.to_string().contains("bad file name"), "{e}");
        let e = bad(&format!("ckpt-manifest 1\n{h} 1 a.img\n{h} 2 a.img\n"));
        assert!(e.to_string().contains("listed twice"), "{e}");

        // Names with spaces are fine: the name is the rest of the line.
        let m = Manifest::parse(
            &format!("ckpt-manifest 1\n{h} 5 odd name.img\n"),
            Path::new("m"),
        )
        .unwrap();
        assert_eq!(m.get("odd name.img").unwrap().size, 5);
        assert_eq!(Manifest::parse(&m.to_text(), Path::new("m")).unwrap(), m);
    }

    #[test]
    fn add_file_hashes_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pages-2.img"), vec![3u8; 10_000]).unwrap();
        let mut m = Manifest::new();
        let d = m.add_file(dir.path(), "pages-2.img").unwrap();
        assert_eq!(d, FileDigest::of_bytes(&[3u8; 10_000]));
        m.write(dir.path()).unwrap();
        m.check(dir.path()).unwrap();
    }

    /// A directory with one big pages file written through a
    /// [`PagesHasher`] (3.5 blocks), its manifest with block checksums.
    fn blocks_dir() -> (tempfile::TempDir, Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(BLOCK * 7 / 2)).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = PagesHasher::default();
        for piece in data.chunks(300_000) {
            h.update(piece);
        }
        std::fs::write(dir.path().join("pages-1.img"), &data).unwrap();
        let (xxh3, blocks) = h.finish();
        let mut m = Manifest::new();
        m.add("pages-1.img", data.len() as u64, xxh3);
        m.add_blocks("pages-1.img", blocks);
        m.write(dir.path()).unwrap();
        (dir, m, data)
    }

    #[test]
    fn block_checksums_round_trip_and_verify() {
        let (dir, m, data) = blocks_dir();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_NAME)).unwrap();
        assert!(text.starts_with("ckpt-manifest 2\n"), "{text}");
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        assert_eq!(m.blocks("pages-1.img").unwrap().len(), 4);
        assert_eq!(m.get("pages-1.img").unwrap(), FileDigest::of_bytes(&data));
        Manifest::verify(dir.path()).unwrap();
        // One block or less: no blocks record, and a version 1 manifest.
        let mut small = Manifest::new();
        small.add("pages-2.img", 100, 1);
        small.add_blocks("pages-2.img", vec![7]);
        assert!(small.blocks("pages-2.img").is_none());
        assert!(small.to_text().starts_with("ckpt-manifest 1\n"));
    }

    #[test]
    fn damaged_block_is_named_and_deferring_skips_it() {
        let (dir, m, mut data) = blocks_dir();
        data[(2 * BLOCK + 5) as usize] ^= 1;
        std::fs::write(dir.path().join("pages-1.img"), &data).unwrap();
        let ps = problems(dir.path());
        assert_eq!(
            ps,
            vec![ManifestProblem::BlockMismatch {
                name: "pages-1.img".into(),
                block: 2
            }]
        );
        assert!(ps[0]
            .to_string()
            .contains("bytes 2097152-3145727 (block 2)"));
        // Left for later, the content is not read; the size still is.
        m.check_deferring(dir.path(), |n| n == "pages-1.img")
            .unwrap();
        let err = m
            .check_blocks(dir.path(), &[("pages-1.img".into(), vec![0, 1, 2])])
            .unwrap_err();
        assert_eq!(err.problems, ps);
        m.check_blocks(dir.path(), &[("pages-1.img".into(), vec![0, 1, 3])])
            .unwrap();
        data.push(0);
        std::fs::write(dir.path().join("pages-1.img"), &data).unwrap();
        let e = m.check_deferring(dir.path(), |_| true).unwrap_err();
        assert!(matches!(
            e.problems[0],
            ManifestProblem::SizeMismatch { .. }
        ));
    }

    #[test]
    fn deferred_blocks_check_once_what_is_read() {
        let (_dir, m, mut data) = blocks_dir();
        let mut d = DeferredBlocks::new("pages-1.img", m.blocks("pages-1.img").unwrap());
        // Blocks 1 and 2 lie wholly inside the kept range; 0 and 3 do not.
        assert_eq!(
            d.not_within(&[(BLOCK - 4096, 3 * BLOCK + 4096)]),
            vec![0, 3]
        );
        d.mark_checked(&[0, 3]);
        assert_eq!(d.unchecked(), 2);
        data[(BLOCK + 1) as usize] ^= 0xff;
        // Block 0 is marked checked: not read again.
        d.check(&data, 0, 4096).unwrap();
        assert_eq!(
            d.check(&data, BLOCK - 4096, 8192).unwrap_err(),
            ManifestProblem::BlockMismatch {
                name: "pages-1.img".into(),
                block: 1
            }
        );
        d.check(&data, 2 * BLOCK, 4096).unwrap();
        assert_eq!(d.unchecked(), 1);
        // Past the end of a short file: an error, not a panic.
        assert!(d.check(&data[..BLOCK as usize], BLOCK, 1).is_err());
    }

    #[test]
    fn malformed_blocks_records_are_refused() {
        let good = "ckpt-manifest 2\n00000000000000000000000000000001 3000000 pages-1.img\n";
        let p = Path::new("m");
        let ok = format!(
            "{good}blocks 1048576 0000000000000001,0000000000000002,0000000000000003 pages-1.img\n"
        );
        Manifest::parse(&ok, p).unwrap();
        for bad in [
            format!("{good}blocks 1048576 0000000000000001,0000000000000002 pages-1.img\n"),
            format!("{good}blocks 4096 0000000000000001,0000000000000002,0000000000000003 pages-1.img\n"),
            format!("{good}blocks 1048576 01,0000000000000002,0000000000000003 pages-1.img\n"),
            format!("{good}blocks 1048576 0000000000000001,0000000000000002,0000000000000003 pages-2.img\n"),
            format!("{ok}blocks 1048576 0000000000000001,0000000000000002,0000000000000003 pages-1.img\n"),
            format!("{ok}00000000000000000000000000000001 3 x.img\n"),
            format!("{good}blocks 1048576\n"),
            ok.replace("manifest 2", "manifest 1"),
        ] {
            assert!(Manifest::parse(&bad, p).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// However the writes are cut, the hasher's block checksums are
        /// those of the bytes' blocks, and its whole checksum the file's.
        #[test]
        fn pages_hasher_matches_one_shot(len in 0usize..(3 * BLOCK as usize), cuts in proptest::collection::vec(1usize..700_000, 1..8)) {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            let mut h = PagesHasher::default();
            let (mut at, mut k) = (0, 0);
            while at < len {
                let n = cuts[k % cuts.len()].min(len - at);
                h.update(&data[at..at + n]);
                at += n;
                k += 1;
            }
            let (whole, blocks) = h.finish();
            proptest::prop_assert_eq!(whole, xxhash_rust::xxh3::xxh3_128(&data));
            let want: Vec<u64> = data.chunks(BLOCK as usize).map(xxhash_rust::xxh3::xxh3_64).collect();
            proptest::prop_assert_eq!(blocks, want);
        }
    }
}
