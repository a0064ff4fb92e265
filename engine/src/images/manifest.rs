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
/// Read size when hashing files for verification.
const HASH_BUF: usize = 4 << 20;

/// The expected size and checksum of every image file of a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    files: BTreeMap<String, FileDigest>,
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
            | ManifestProblem::Unreadable { name, .. } => name,
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
        let mut s = String::with_capacity(HEADER.len() + 1 + self.files.len() * 64);
        s.push_str(HEADER);
        s.push('\n');
        for (name, d) in &self.files {
            s.push_str(&format!("{:032x} {} {}\n", d.xxh3, d.size, name));
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
        match lines.next() {
            Some((_, HEADER)) => {}
            Some((_, l)) if l.starts_with("ckpt-manifest ") => {
                return Err(bad(1, format!("unsupported manifest version {l:?}")));
            }
            _ => return Err(bad(1, format!("not a ckpt manifest (no {HEADER:?} line)"))),
        }
        let mut m = Manifest::new();
        for (no, line) in lines {
            if line.is_empty() {
                continue;
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
        match Manifest::read(dir) {
            Ok(m) => m.check(dir),
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

    /// Same as [`verify`](Self::verify).
    pub fn verify_dir(dir: &Path) -> Result<(), ManifestError> {
        Manifest::verify(dir)
    }

    /// Checks `dir` against this manifest: every listed file exists with
    /// the listed size and checksum, and no unlisted `.img` file is there.
    /// Reports every problem found, not only the first.
    pub fn check(&self, dir: &Path) -> Result<(), ManifestError> {
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
        let mut to_hash = Vec::new();
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
                Ok(_) => to_hash.push((name.as_str(), *want)),
            }
        }

        // Hash in parallel: image directories are a few big pages files
        // and many small ones.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(to_hash.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let hashed: Vec<ManifestProblem> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut found = Vec::new();
                        let mut buf = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&(name, want)) = to_hash.get(i) else {
                                break;
                            };
                            let path = dir.join(name);
                            let got = File::open(&path)
                                .and_then(|mut f| hash_read(&mut f, want.size, &mut buf));
                            match got {
                                Err(e) => found.push(ManifestProblem::Unreadable {
                                    name: name.to_string(),
                                    reason: e.to_string(),
                                }),
                                Ok(d) if d.size != want.size => {
                                    found.push(ManifestProblem::SizeMismatch {
                                        name: name.to_string(),
                                        expected: want.size,
                                        actual: d.size,
                                    })
                                }
                                Ok(d) if d.xxh3 != want.xxh3 => {
                                    found.push(ManifestProblem::ChecksumMismatch {
                                        name: name.to_string(),
                                        expected: want.xxh3,
                                        actual: d.xxh3,
                                    })
                                }
                                Ok(_) => {}
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
        problems.extend(hashed);

        if problems.is_empty() {
            Ok(())
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
        let e = bad("ckpt-manifest 2\n");
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
}
