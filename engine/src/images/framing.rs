//! Reading and writing CRIU-framed image files.
//!
//! An image file is its header (see [`Head`]: the common/service head magic
//! and the image magic, only the magic for inventory.img, nothing for raw
//! files), then entries, each a u32 little-endian length followed by that
//! many bytes of protobuf message, until end of file.
//!
//! Some images carry raw bytes right after an entry, their length given by a
//! field of the entry (pipe/fifo data, SysV shm/sem/msg contents, ghost file
//! contents, socket queues; see [`Payload`](super::Payload)). Write those with
//! [`ImageWriter::write_raw`] after the entry and read them back with
//! [`ImageReader::read_raw`] / [`ImageReader::skip_raw`]; the framing layer
//! does not interpret them.
//!
//! Every byte written goes through an xxh3-128 hasher, so [`ImageWriter::finish`]
//! returns the size and checksum the manifest needs without reading the file
//! again. [`HashingWriter`] gives the same to any other writer.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3Default;

use super::magic::{Head, Magic, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use super::{ImageError, Result};

/// Largest entry accepted (and written): a length prefix above this is taken
/// for corruption rather than an allocation request.
pub const MAX_ENTRY_SIZE: u32 = 64 << 20;

/// Permissions of image files: they hold process memory and credentials.
const IMAGE_MODE: u32 = 0o600;

/// Buffer size of image readers and writers.
const BUF_SIZE: usize = 256 << 10;

/// Size and xxh3-128 checksum of a file's whole content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileDigest {
    pub size: u64,
    pub xxh3: u128,
}

impl FileDigest {
    /// The checksum as 32 lowercase hex digits (the manifest's spelling).
    pub fn hex(&self) -> String {
        format!("{:032x}", self.xxh3)
    }

    /// The digest of an in-memory byte string.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        FileDigest {
            size: bytes.len() as u64,
            xxh3: xxhash_rust::xxh3::xxh3_128(bytes),
        }
    }
}

/// A writer that hashes (xxh3-128) and counts every byte passed through it.
/// Use it for image files written outside [`ImageWriter`] (for example
/// pages-*.img written by the memory dumper) to get their [`FileDigest`].
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Xxh3Default,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Xxh3Default::new(),
            len: 0,
        }
    }

    /// Size and checksum of everything written so far.
    pub fn digest(&self) -> FileDigest {
        FileDigest {
            size: self.len,
            xxh3: self.hasher.digest128(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer (unflushed data stays in it).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one image file: header, then entries (and raw payloads).
///
/// Nothing is durable until [`finish`](Self::finish), which flushes and
/// fsyncs. Dropping a writer without `finish` leaves a partial file.
pub struct ImageWriter {
    path: PathBuf,
    magic: Magic,
    out: HashingWriter<BufWriter<File>>,
    scratch: Vec<u8>,
}

impl ImageWriter {
    /// Creates (or truncates) `path` and writes the header of `magic`.
    pub fn create(path: impl Into<PathBuf>, magic: Magic) -> Result<Self> {
        let path = path.into();
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(IMAGE_MODE)
            .open(&path)
            .map_err(|e| ImageError::io(&path, "create image", e))?;
        let mut w = ImageWriter {
            out: HashingWriter::new(BufWriter::with_capacity(BUF_SIZE, file)),
            path,
            magic,
            scratch: Vec::new(),
        };
        let header = magic.header_bytes();
        w.write_raw(&header)?;
        Ok(w)
    }

    /// Appends one entry: u32 LE length, then the encoded message.
    pub fn write_entry<M: prost::Message>(&mut self, msg: &M) -> Result<()> {
        let len = msg.encoded_len();
        if len > MAX_ENTRY_SIZE as usize {
            return Err(ImageError::Oversize {
                path: self.path.clone(),
                offset: self.offset(),
                len: len as u64,
                max: MAX_ENTRY_SIZE as u64,
            });
        }
        self.scratch.clear();
        self.scratch.reserve(4 + len);
        self.scratch.extend_from_slice(&(len as u32).to_le_bytes());
        msg.encode(&mut self.scratch)
            .expect("a Vec with reserved capacity always has room");
        let out = &mut self.out;
        out.write_all(&self.scratch)
            .map_err(|e| ImageError::io(&self.path, "write image entry", e))
    }

    /// Appends raw bytes (a payload that follows an entry, or the content
    /// of a raw image such as pages-*.img).
    pub fn write_raw(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| ImageError::io(&self.path, "write image", e))
    }

    /// Bytes written so far, header included.
    pub fn offset(&self) -> u64 {
        self.out.len()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn magic(&self) -> Magic {
        self.magic
    }

    /// Flushes, fsyncs and closes the file; returns its size and checksum.
    /// (The directory entry is the caller's to fsync, once all files are
    /// written: see [`sync_dir`].)
    pub fn finish(self) -> Result<FileDigest> {
        self.finish_inner(true)
    }

    /// Like [`finish`](Self::finish) without the fsync, for a writer of many
    /// files that makes them durable all at once ([`sync_fs`]) instead of
    /// one fsync per file.
    pub fn finish_unsynced(self) -> Result<FileDigest> {
        self.finish_inner(false)
    }

    fn finish_inner(self, sync: bool) -> Result<FileDigest> {
        let digest = self.out.digest();
        let path = self.path;
        let buffered = self.out.into_inner();
        let file = buffered
            .into_inner()
            .map_err(|e| ImageError::io(&path, "write image", e.into_error()))?;
        if sync {
            file.sync_all()
                .map_err(|e| ImageError::io(&path, "fsync image", e))?;
        }
        Ok(digest)
    }
}

/// Raw writes, for `io::copy` and friends. Bytes go to the file (and the
/// checksum) exactly as given.
impl Write for ImageWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// syncfs(2) on the filesystem holding `dir`: everything written there
/// (every image of a dump) reaches the disk in one call.
pub fn sync_fs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(|e| ImageError::io(dir, "open directory", e))?;
    // SAFETY: syncfs on an fd we own.
    if unsafe { libc::syncfs(d.as_raw_fd()) } < 0 {
        return Err(ImageError::io(dir, "syncfs", io::Error::last_os_error()));
    }
    Ok(())
}

/// fsyncs a directory, so that the files created or renamed in it persist.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io(dir, "fsync directory", e))
}

/// Reads one image file: checks the header, then yields entries.
pub struct ImageReader<R: Read = BufReader<File>> {
    path: PathBuf,
    inp: R,
    offset: u64,
    magic: Magic,
    max_entry: u32,
    buf: Vec<u8>,
}

impl ImageReader {
    /// Opens `path` and checks that its header is that of `expected`.
    pub fn open(path: impl Into<PathBuf>, expected: Magic) -> Result<Self> {
        let path = path.into();
        let file = File::open(&path).map_err(|e| ImageError::io(&path, "open image", e))?;
        ImageReader::from_reader(BufReader::with_capacity(BUF_SIZE, file), path, expected)
    }
}

/// The last component of a Rust type name, for messages ("CoreEntry").
fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

fn describe_magic(value: u32) -> String {
    match Magic::from_value(value) {
        Some(m) if value != 0 => m.to_string(),
        _ if value == IMG_COMMON_MAGIC => format!("IMG_COMMON (0x{value:08x})"),
        _ if value == IMG_SERVICE_MAGIC => format!("IMG_SERVICE (0x{value:08x})"),
        _ => format!("0x{value:08x} (not a CRIU magic)"),
    }
}

impl<R: Read> ImageReader<R> {
    /// Reads and checks the header of `expected` from `inp`; `path` names
    /// the file in errors.
    pub fn from_reader(inp: R, path: impl Into<PathBuf>, expected: Magic) -> Result<Self> {
        let mut r = ImageReader {
            path: path.into(),
            inp,
            offset: 0,
            magic: expected,
            max_entry: MAX_ENTRY_SIZE,
            buf: Vec::new(),
        };
        r.check_header()?;
        Ok(r)
    }

    fn check_header(&mut self) -> Result<()> {
        let expected = self.magic;
        let head = match expected.head() {
            Head::Raw => return Ok(()),
            Head::MagicOnly => None,
            Head::Common => Some(IMG_COMMON_MAGIC),
            Head::Service => Some(IMG_SERVICE_MAGIC),
        };
        if let Some(head) = head {
            let at = self.offset;
            let found = self.read_header_u32(expected)?;
            if found != head {
                return Err(self.bad_magic(
                    at,
                    format!(
                        "expected head magic {} for a {} image, found {}",
                        describe_magic(head),
                        expected.name(),
                        describe_magic(found)
                    ),
                ));
            }
        }
        let at = self.offset;
        let found = self.read_header_u32(expected)?;
        if found != expected.value() {
            let hint =
                if head.is_none() && (found == IMG_COMMON_MAGIC || found == IMG_SERVICE_MAGIC) {
                    " (an inventory image has no head magic)"
                } else {
                    ""
                };
            return Err(self.bad_magic(
                at,
                format!(
                    "expected magic {expected}, found {}{hint}",
                    describe_magic(found)
                ),
            ));
        }
        Ok(())
    }

    fn bad_magic(&self, offset: u64, reason: String) -> ImageError {
        ImageError::BadMagic {
            path: self.path.clone(),
            offset,
            reason,
        }
    }

    fn read_header_u32(&mut self, expected: Magic) -> Result<u32> {
        let mut b = [0u8; 4];
        let at = self.offset;
        let n = self.fill(&mut b)?;
        if n < 4 {
            return Err(self.truncated(
                at,
                format!(
                    "{} image header needs {} bytes, the file has {}",
                    expected.name(),
                    expected.head().len(),
                    at + n as u64
                ),
            ));
        }
        Ok(u32::from_le_bytes(b))
    }

    fn truncated(&self, offset: u64, reason: String) -> ImageError {
        ImageError::Truncated {
            path: self.path.clone(),
            offset,
            reason,
        }
    }

    /// Reads until `buf` is full or end of file; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.inp.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ImageError::io(&self.path, "read image", e));
                }
            }
        }
        self.offset += done as u64;
        Ok(done)
    }

    /// The next entry, decoded as `M`; `None` at a clean end of file (end
    /// of file exactly where a length prefix would start).
    pub fn read_entry<M: prost::Message + Default>(&mut self) -> Result<Option<M>> {
        let at = self.offset;
        let mut len_bytes = [0u8; 4];
        let n = self.fill(&mut len_bytes)?;
        if n == 0 {
            return Ok(None);
        }
        if n < 4 {
            return Err(self.truncated(
                at,
                format!("{n} byte(s) where a 4-byte entry length was expected"),
            ));
        }
        let len = u32::from_le_bytes(len_bytes);
        if len > self.max_entry {
            return Err(ImageError::Oversize {
                path: self.path.clone(),
                offset: at,
                len: len as u64,
                max: self.max_entry as u64,
            });
        }
        let body_at = self.offset;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(len as usize, 0);
        let got = self.fill(&mut buf);
        let result = match got {
            Err(e) => Err(e),
            Ok(got) if got < len as usize => Err(self.truncated(
                body_at,
                format!("entry of {len} bytes (length prefix at byte {at}) has only {got} byte(s)"),
            )),
            Ok(_) => M::decode(&buf[..])
                .map(Some)
                .map_err(|source| ImageError::Decode {
                    path: self.path.clone(),
                    offset: at,
                    message: short_type_name::<M>(),
                    len: len as u64,
                    source,
                }),
        };
        self.buf = buf;
        result
    }

    /// Iterates over the remaining entries, all decoded as `M`.
    pub fn entries<M: prost::Message + Default>(&mut self) -> Entries<'_, R, M> {
        Entries {
            reader: self,
            done: false,
            _m: PhantomData,
        }
    }

    /// Reads exactly `buf.len()` raw bytes (a payload after an entry).
    pub fn read_raw(&mut self, buf: &mut [u8]) -> Result<()> {
        let at = self.offset;
        let got = self.fill(buf)?;
        if got < buf.len() {
            return Err(self.truncated(
                at,
                format!("expected {} bytes of raw data, found {got}", buf.len()),
            ));
        }
        Ok(())
    }

    /// Skips exactly `n` raw bytes.
    pub fn skip_raw(&mut self, n: u64) -> Result<()> {
        let at = self.offset;
        let copied = io::copy(&mut (&mut self.inp).take(n), &mut io::sink())
            .map_err(|e| ImageError::io(&self.path, "read image", e))?;
        self.offset += copied;
        if copied < n {
            return Err(self.truncated(
                at,
                format!("expected {n} bytes of raw data, found {copied}"),
            ));
        }
        Ok(())
    }

    /// Bytes consumed so far, header included.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn magic(&self) -> Magic {
        self.magic
    }

    /// Changes the entry size limit (default [`MAX_ENTRY_SIZE`]).
    pub fn set_max_entry_size(&mut self, max: u32) {
        self.max_entry = max;
    }

    pub fn into_inner(self) -> R {
        self.inp
    }
}

/// Iterator over the entries of an image; see [`ImageReader::entries`].
/// Stops after the first error.
pub struct Entries<'a, R: Read, M> {
    reader: &'a mut ImageReader<R>,
    done: bool,
    _m: PhantomData<fn() -> M>,
}

impl<R: Read, M: prost::Message + Default> Iterator for Entries<'_, R, M> {
    type Item = Result<M>;

    fn next(&mut self) -> Option<Result<M>> {
        if self.done {
            return None;
        }
        let r = self.reader.read_entry::<M>().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// Writes an image of `magic` holding `entries`, fsyncs it, and returns its
/// size and checksum.
pub fn write_image<M: prost::Message>(
    path: impl Into<PathBuf>,
    magic: Magic,
    entries: &[M],
) -> Result<FileDigest> {
    let mut w = ImageWriter::create(path, magic)?;
    for e in entries {
        w.write_entry(e)?;
    }
    w.finish()
}

/// Reads every entry of an image of `magic`.
pub fn read_all<M: prost::Message + Default>(
    path: impl Into<PathBuf>,
    magic: Magic,
) -> Result<Vec<M>> {
    let mut r = ImageReader::open(path, magic)?;
    r.entries().collect()
}

/// Reads an image that must hold exactly one entry (inventory, core, mm,
/// ids, fs, ...).
pub fn read_one<M: prost::Message + Default>(path: impl Into<PathBuf>, magic: Magic) -> Result<M> {
    let mut r = ImageReader::open(path, magic)?;
    let Some(first) = r.read_entry::<M>()? else {
        return Err(ImageError::invalid(
            r.path(),
            format!("no {} entry in the image", short_type_name::<M>()),
        ));
    };
    let at = r.offset();
    if r.read_entry::<M>()?.is_some() {
        return Err(ImageError::invalid(
            r.path(),
            format!(
                "more than one {} entry (the second starts at byte {at})",
                short_type_name::<M>()
            ),
        ));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pb;
    use proptest::prelude::*;
    use prost::Message as _;
    use std::io::Cursor;

    fn encode_file(magic: Magic, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut v = magic.header_bytes();
        for e in entries {
            v.extend_from_slice(&(e.len() as u32).to_le_bytes());
            v.extend_from_slice(e);
        }
        v
    }

    fn write_and_read<M>(magic: Magic, entries: &[M]) -> Vec<M>
    where
        M: prost::Message + Default + PartialEq + std::fmt::Debug,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img");
        let digest = write_image(&path, magic, entries).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(digest, FileDigest::of_bytes(&bytes));
        assert_eq!(
            &bytes[..magic.head().len() as usize],
            &magic.header_bytes()[..]
        );
        read_all::<M>(&path, magic).unwrap()
    }

    fn any_magic() -> impl Strategy<Value = Magic> {
        prop::sample::select(Magic::ALL.to_vec())
    }

    fn regs() -> impl Strategy<Value = pb::UserX86RegsEntry> {
        (prop::array::uniform27(any::<u64>()), any::<bool>()).prop_map(|(r, compat)| {
            pb::UserX86RegsEntry {
                r15: r[0],
                r14: r[1],
                r13: r[2],
                r12: r[3],
                bp: r[4],
                bx: r[5],
                r11: r[6],
                r10: r[7],
                r9: r[8],
                r8: r[9],
                ax: r[10],
                cx: r[11],
                dx: r[12],
                si: r[13],
                di: r[14],
                orig_ax: r[15],
                ip: r[16],
                cs: r[17],
                flags: r[18],
                sp: r[19],
                ss: r[20],
                fs_base: r[21],
                gs_base: r[22],
                ds: r[23],
                es: r[24],
                fs: r[25],
                gs: r[26],
                mode: Some(if compat {
                    pb::UserX86RegsMode::Compat
                } else {
                    pb::UserX86RegsMode::Native
                } as i32),
            }
        })
    }

    fn fpregs() -> impl Strategy<Value = pb::UserX86FpregsEntry> {
        (
            any::<[u32; 4]>(),
            any::<(u64, u64, u32, u32)>(),
            prop::collection::vec(any::<u32>(), 32),
            prop::collection::vec(any::<u32>(), 64),
            any::<u64>(),
            prop::collection::vec(any::<u32>(), 64),
            prop::option::of(prop::collection::vec(any::<u8>(), 512..3000)),
        )
            .prop_map(|(c, (rip, rdp, mxcsr, mask), st, xmm, bv, ymmh, raw)| {
                pb::UserX86FpregsEntry {
                    cwd: c[0],
                    swd: c[1],
                    twd: c[2],
                    fop: c[3],
                    rip,
                    rdp,
                    mxcsr,
                    mxcsr_mask: mask,
                    st_space: st,
                    xmm_space: xmm,
                    padding: vec![],
                    xsave: Some(pb::UserX86XsaveEntry {
                        xstate_bv: bv,
                        ymmh_space: ymmh,
                        pkru: vec![0x5555_5554],
                        ..Default::default()
                    }),
                    ckpt_xsave_raw: raw,
                }
            })
    }

    fn core_entry() -> impl Strategy<Value = pb::CoreEntry> {
        (
            regs(),
            fpregs(),
            any::<u64>(),
            "[a-z0-9]{0,15}",
            any::<(u64, u32, i32, u64)>(),
            prop::collection::vec((any::<u64>(), any::<u64>()), 0..16),
        )
            .prop_map(
                |(gpregs, fpregs, tid_addr, comm, (sig, pers, nice, blk), rl)| pb::CoreEntry {
                    mtype: pb::core_entry::March::X8664 as i32,
                    thread_info: Some(pb::ThreadInfoX86 {
                        clear_tid_addr: tid_addr,
                        gpregs,
                        fpregs,
                        tls: vec![pb::UserDescT {
                            entry_number: 12,
                            ..Default::default()
                        }],
                    }),
                    tc: Some(pb::TaskCoreEntry {
                        task_state: 1,
                        personality: pers,
                        blk_sigset: sig,
                        comm: comm.clone(),
                        rlimits: Some(pb::TaskRlimitsEntry {
                            rlimits: rl
                                .into_iter()
                                .map(|(cur, max)| pb::RlimitEntry { cur, max })
                                .collect(),
                        }),
                        sigactions: vec![pb::SaEntry {
                            sigaction: 0x401000,
                            flags: 0x0400_0000,
                            restorer: 0x402000,
                            mask: sig,
                            compat_sigaction: Some(false),
                        }],
                        ..Default::default()
                    }),
                    ids: Some(pb::TaskKobjIdsEntry {
                        vm_id: 1,
                        files_id: 2,
                        fs_id: 3,
                        sighand_id: 4,
                        ..Default::default()
                    }),
                    thread_core: Some(pb::ThreadCoreEntry {
                        futex_rla: tid_addr,
                        futex_rla_len: 24,
                        sched_nice: Some(nice),
                        blk_sigset: Some(blk),
                        comm: Some(comm),
                        creds: Some(pb::CredsEntry {
                            cap_eff: vec![u32::MAX, 0x1ff],
                            groups: vec![0, 1000],
                            ..Default::default()
                        }),
                        signals_p: Some(pb::SignalQueueEntry {
                            signals: vec![pb::SiginfoEntry {
                                siginfo: vec![7; 128],
                            }],
                        }),
                        ..Default::default()
                    }),
                },
            )
    }

    fn mm_entry() -> impl Strategy<Value = pb::MmEntry> {
        (
            prop::array::uniform11(any::<u64>()),
            prop::collection::vec(any::<u64>(), 0..40),
            prop::collection::vec(
                (
                    any::<u64>(),
                    1u64..1 << 20,
                    any::<u32>(),
                    any::<u32>(),
                    any::<u64>(),
                ),
                0..64,
            ),
        )
            .prop_map(|(a, auxv, vmas)| pb::MmEntry {
                mm_start_code: a[0],
                mm_end_code: a[1],
                mm_start_data: a[2],
                mm_end_data: a[3],
                mm_start_stack: a[4],
                mm_start_brk: a[5],
                mm_brk: a[6],
                mm_arg_start: a[7],
                mm_arg_end: a[8],
                mm_env_start: a[9],
                mm_env_end: a[10],
                exe_file_id: 5,
                mm_saved_auxv: auxv,
                vmas: vmas
                    .into_iter()
                    .map(|(start, pages, prot, flags, madv)| pb::VmaEntry {
                        start,
                        end: start.wrapping_add(pages * 4096),
                        pgoff: 0,
                        shmid: 0,
                        prot,
                        flags,
                        status: 0x1,
                        fd: -1,
                        madv: Some(madv),
                        fdflags: None,
                    })
                    .collect(),
                dumpable: Some(1),
                aios: vec![],
                thp_disabled: Some(false),
            })
    }

    fn pagemap_entry() -> impl Strategy<Value = pb::PagemapEntry> {
        (any::<u64>(), any::<u32>(), prop::option::of(0u32..8)).prop_map(|(vaddr, nr, flags)| {
            pb::PagemapEntry {
                nr_pages64: None,
                vaddr,
                nr_pages: nr,
                in_parent: None,
                flags,
            }
        })
    }

    fn fdinfo_entry() -> impl Strategy<Value = pb::FdinfoEntry> {
        (any::<u32>(), any::<u32>(), 0i32..=20, any::<u32>()).prop_map(|(id, flags, t, fd)| {
            pb::FdinfoEntry {
                id,
                flags,
                r#type: t,
                fd,
                xattr_security_selinux: None,
            }
        })
    }

    fn inventory_entry() -> impl Strategy<Value = pb::InventoryEntry> {
        (any::<u64>(), any::<u32>()).prop_map(|(uptime, cg)| pb::InventoryEntry {
            img_version: crate::images::IMAGES_V1_1,
            fdinfo_per_id: Some(true),
            root_ids: Some(pb::TaskKobjIdsEntry {
                vm_id: 1,
                files_id: 1,
                fs_id: 1,
                sighand_id: 1,
                pid_ns_id: Some(9),
                ..Default::default()
            }),
            ns_per_id: Some(true),
            root_cg_set: Some(cg),
            lsmtype: Some(pb::Lsmtype::NoLsm as i32),
            dump_uptime: Some(uptime),
            ..Default::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn raw_payloads_round_trip(
            magic in any_magic(),
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..20),
        ) {
            let msgs: Vec<pb::SiginfoEntry> =
                payloads.iter().map(|p| pb::SiginfoEntry { siginfo: p.clone() }).collect();
            prop_assert_eq!(write_and_read(magic, &msgs), msgs);

            // The same through an in-memory reader, interleaving raw bytes
            // after each entry as pipe data does.
            let mut bytes = magic.header_bytes();
            for p in &payloads {
                let m = pb::PipeDataEntry { pipe_id: 1, bytes: p.len() as u32, size: None };
                bytes.extend_from_slice(&(prost::Message::encoded_len(&m) as u32).to_le_bytes());
                bytes.extend_from_slice(&prost::Message::encode_to_vec(&m));
                bytes.extend_from_slice(p);
            }
            let mut r = ImageReader::from_reader(Cursor::new(bytes), "mem.img", magic).unwrap();
            for p in &payloads {
                let e: pb::PipeDataEntry = r.read_entry().unwrap().unwrap();
                let mut data = vec![0; e.bytes as usize];
                r.read_raw(&mut data).unwrap();
                prop_assert_eq!(&data, p);
            }
            prop_assert!(r.read_entry::<pb::PipeDataEntry>().unwrap().is_none());
        }

        #[test]
        fn core_entries_round_trip(entries in prop::collection::vec(core_entry(), 1..4)) {
            prop_assert_eq!(write_and_read(Magic::Core, &entries), entries);
        }

        #[test]
        fn mm_entries_round_trip(entry in mm_entry()) {
            prop_assert_eq!(write_and_read(Magic::Mm, std::slice::from_ref(&entry)), vec![entry]);
        }

        #[test]
        fn pagemap_round_trip(head in any::<u32>(), entries in prop::collection::vec(pagemap_entry(), 0..50)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pagemap-1.img");
            let mut w = ImageWriter::create(&path, Magic::Pagemap).unwrap();
            w.write_entry(&pb::PagemapHead { pages_id: head }).unwrap();
            for e in &entries {
                w.write_entry(e).unwrap();
            }
            w.finish().unwrap();
            let mut r = ImageReader::open(&path, Magic::Pagemap).unwrap();
            prop_assert_eq!(r.read_entry::<pb::PagemapHead>().unwrap().unwrap().pages_id, head);
            let back: Vec<pb::PagemapEntry> = r.entries().collect::<Result<_>>().unwrap();
            prop_assert_eq!(back, entries);
        }

        #[test]
        fn fdinfo_round_trip(entries in prop::collection::vec(fdinfo_entry(), 0..100)) {
            prop_assert_eq!(write_and_read(Magic::Fdinfo, &entries), entries);
        }

        #[test]
        fn inventory_round_trip(entry in inventory_entry()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("inventory.img");
            write_image(&path, Magic::Inventory, &[entry]).unwrap();
            prop_assert_eq!(read_one::<pb::InventoryEntry>(&path, Magic::Inventory).unwrap(), entry);
        }

        /// Cutting a valid file anywhere gives either the entries before the
        /// cut (cut on an entry boundary) or a Truncated error; never a panic
        /// or a silently short read.
        #[test]
        fn truncation_is_detected(
            magic in any_magic().prop_filter("has a header", |m| m.head() != Head::Raw),
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
            cut_frac in 0.0f64..1.0,
        ) {
            let msgs: Vec<Vec<u8>> = payloads
                .iter()
                .map(|p| prost::Message::encode_to_vec(&pb::SiginfoEntry { siginfo: p.clone() }))
                .collect();
            let bytes = encode_file(magic, &msgs);
            let cut = (bytes.len() as f64 * cut_frac) as usize;
            let mut boundaries = vec![magic.head().len() as usize];
            for m in &msgs {
                let last = *boundaries.last().unwrap();
                boundaries.push(last + 4 + m.len());
            }
            let res: Result<Vec<pb::SiginfoEntry>> =
                ImageReader::from_reader(Cursor::new(&bytes[..cut]), "cut.img", magic)
                    .and_then(|mut r| r.entries().collect());
            match res {
                Ok(v) => {
                    let i = boundaries.iter().position(|&b| b == cut);
                    prop_assert_eq!(Some(v.len()), i, "cut at {} read {} entries", cut, v.len());
                }
                Err(ImageError::Truncated { path, offset, .. }) => {
                    prop_assert_eq!(path, PathBuf::from("cut.img"));
                    prop_assert!(offset <= cut as u64);
                    prop_assert!(!boundaries.contains(&cut) || cut < magic.head().len() as usize);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    fn read_bytes<M: prost::Message + Default>(bytes: Vec<u8>, magic: Magic) -> Result<Vec<M>> {
        let mut r = ImageReader::from_reader(Cursor::new(bytes), "/images/t.img", magic)?;
        r.entries().collect()
    }

    #[test]
    fn empty_and_short_headers() {
        let e = read_bytes::<pb::CoreEntry>(vec![], Magic::Core).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { offset: 0, .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("/images/t.img: at byte 0: file is truncated"),
            "{e}"
        );

        let e = read_bytes::<pb::CoreEntry>(vec![0x19, 0x43, 0x56], Magic::Core).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { offset: 0, .. }), "{e}");

        let e = read_bytes::<pb::CoreEntry>(IMG_COMMON_MAGIC.to_le_bytes().to_vec(), Magic::Core)
            .unwrap_err();
        assert!(matches!(e, ImageError::Truncated { offset: 4, .. }), "{e}");

        // A header alone is a valid, empty image.
        assert!(
            read_bytes::<pb::CoreEntry>(Magic::Core.header_bytes(), Magic::Core)
                .unwrap()
                .is_empty()
        );
        // Raw images have no header to check.
        assert!(read_bytes::<pb::CoreEntry>(vec![], Magic::Raw)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wrong_magics() {
        // An mm image opened as core.
        let e = read_bytes::<pb::CoreEntry>(Magic::Mm.header_bytes(), Magic::Core).unwrap_err();
        let ImageError::BadMagic { offset, reason, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*offset, 4);
        assert!(
            reason.contains("expected magic CORE (0x55053847), found MM (0x57492820)"),
            "{e}"
        );

        // Bad head magic.
        let mut bytes = Magic::Core.header_bytes();
        bytes[0] ^= 1;
        let e = read_bytes::<pb::CoreEntry>(bytes, Magic::Core).unwrap_err();
        assert!(matches!(e, ImageError::BadMagic { offset: 0, .. }), "{e}");
        assert!(e.to_string().contains("head magic IMG_COMMON"), "{e}");

        // A stats file needs the service head.
        let mut bytes = IMG_COMMON_MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&Magic::Stats.value().to_le_bytes());
        let e = read_bytes::<pb::CoreEntry>(bytes, Magic::Stats).unwrap_err();
        assert!(e.to_string().contains("IMG_SERVICE"), "{e}");

        // An inventory written with a common head magic.
        let e = read_bytes::<pb::InventoryEntry>(Magic::Core.header_bytes(), Magic::Inventory)
            .unwrap_err();
        assert!(
            e.to_string().contains("inventory image has no head magic"),
            "{e}"
        );
    }

    #[test]
    fn truncated_entries() {
        let mut bytes = Magic::Fdinfo.header_bytes();
        bytes.extend_from_slice(&[5, 0]);
        let e = read_bytes::<pb::FdinfoEntry>(bytes, Magic::Fdinfo).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { offset: 8, .. }), "{e}");
        assert!(e.to_string().contains("4-byte entry length"), "{e}");

        let mut bytes = Magic::Fdinfo.header_bytes();
        bytes.extend_from_slice(&10u32.to_le_bytes());
        bytes.extend_from_slice(&[8, 1, 16]);
        let e = read_bytes::<pb::FdinfoEntry>(bytes, Magic::Fdinfo).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { offset: 12, .. }), "{e}");
        assert!(
            e.to_string()
                .contains("entry of 10 bytes (length prefix at byte 8) has only 3"),
            "{e}"
        );
    }

    #[test]
    fn oversize_length() {
        let mut bytes = Magic::Fdinfo.header_bytes();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read_bytes::<pb::FdinfoEntry>(bytes, Magic::Fdinfo).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::Oversize {
                    offset: 8,
                    len: 0xffff_ffff,
                    ..
                }
            ),
            "{e}"
        );

        let mut r = ImageReader::from_reader(
            Cursor::new(encode_file(Magic::Fdinfo, &[vec![0; 100]])),
            "x",
            Magic::Fdinfo,
        )
        .unwrap();
        r.set_max_entry_size(99);
        assert!(matches!(
            r.read_entry::<pb::FdinfoEntry>(),
            Err(ImageError::Oversize {
                len: 100,
                max: 99,
                ..
            })
        ));
    }

    #[test]
    fn decode_failure_names_file_offset_and_type() {
        let good = prost::Message::encode_to_vec(&pb::FdinfoEntry::default());
        // 0xff.. is an unterminated varint key.
        let bytes = encode_file(Magic::Fdinfo, &[good, vec![0xff; 11]]);
        let e = read_bytes::<pb::FdinfoEntry>(bytes, Magic::Fdinfo).unwrap_err();
        let ImageError::Decode {
            path,
            offset,
            message,
            len,
            ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(path, Path::new("/images/t.img"));
        assert_eq!(*message, "FdinfoEntry");
        assert_eq!(*len, 11);
        // header 8 + first entry (4 + 8 bytes of required fields) = 20.
        assert_eq!(
            *offset,
            8 + 4 + pb::FdinfoEntry::default().encoded_len() as u64
        );
        assert!(
            e.to_string()
                .contains("cannot decode FdinfoEntry (11 bytes)"),
            "{e}"
        );
    }

    #[test]
    fn raw_reads_and_skips() {
        let mut bytes = Magic::PipesData.header_bytes();
        bytes.extend_from_slice(b"0123456789");
        let mut r =
            ImageReader::from_reader(Cursor::new(bytes), "p.img", Magic::PipesData).unwrap();
        r.skip_raw(4).unwrap();
        let mut b = [0u8; 3];
        r.read_raw(&mut b).unwrap();
        assert_eq!(&b, b"456");
        assert_eq!(r.offset(), 15);
        let e = r.skip_raw(10).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { offset: 15, .. }), "{e}");
    }

    #[test]
    fn read_one_wants_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs-1.img");
        write_image::<pb::FsEntry>(&path, Magic::Fs, &[]).unwrap();
        let e = read_one::<pb::FsEntry>(&path, Magic::Fs).unwrap_err();
        assert!(e.to_string().contains("no FsEntry entry"), "{e}");
        write_image(
            &path,
            Magic::Fs,
            &[pb::FsEntry::default(), pb::FsEntry::default()],
        )
        .unwrap();
        let e = read_one::<pb::FsEntry>(&path, Magic::Fs).unwrap_err();
        assert!(e.to_string().contains("more than one FsEntry"), "{e}");
        assert_eq!(e.path(), path);
    }

    #[test]
    fn open_missing_file_names_it() {
        let e = ImageReader::open("/nonexistent/core-1.img", Magic::Core)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/core-1.img: open image:"),
            "{e}"
        );
    }

    #[test]
    fn writer_digest_matches_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages-1.img");
        let mut w = ImageWriter::create(&path, Magic::Raw).unwrap();
        let page = vec![0xa5u8; 4096];
        for _ in 0..100 {
            w.write_raw(&page).unwrap();
        }
        io::copy(&mut &page[..100], &mut w).unwrap();
        assert_eq!(w.offset(), 409_700);
        let d = w.finish().unwrap();
        assert_eq!(d, crate::images::hash_file(&path).unwrap());
        assert_eq!(d.size, 409_700);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// The ckpt extension field survives a round trip and is skipped by a
    /// reader that does not know it (as CRIU's and crit's are).
    #[test]
    fn ckpt_extension_is_an_unknown_field_to_criu() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct CriuFpregs {
            #[prost(uint32, required, tag = "1")]
            cwd: u32,
            #[prost(uint32, required, tag = "7")]
            mxcsr: u32,
        }
        let ours = pb::UserX86FpregsEntry {
            cwd: 0x37f,
            mxcsr: 0x1f80,
            ckpt_xsave_raw: Some(vec![1; 1088]),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&ours);
        let theirs = <CriuFpregs as prost::Message>::decode(&bytes[..]).unwrap();
        assert_eq!((theirs.cwd, theirs.mxcsr), (0x37f, 0x1f80));
        assert_eq!(
            <pb::UserX86FpregsEntry as prost::Message>::decode(&bytes[..]).unwrap(),
            ours
        );
    }
}
