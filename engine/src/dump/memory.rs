//! Dumping a task's address space: the VMA list for mm-PID.img and the
//! contents of every page that cannot be recovered from elsewhere.
//!
//! Which pages are stored, per kind of mapping:
//! - private anonymous (heap, stack, anon mmap): present or swapped pages;
//! - private file-backed: only pages that were written (COW'd to anonymous
//!   memory: present without the "file" bit, or swapped) — the rest is the
//!   file's content and comes back by mapping the file again;
//! - shared anonymous: the shmem object's pages, once per object, into its
//!   own pagemap-shmem-ID.img;
//! - the vDSO: all of it (for CRIU, which reads it; ckpt's restore
//!   keeps the new kernel's);
//! - shared file-backed, vvar: none.
//!
//! Pages that map the kernel's zero page are skipped without reading them;
//! pages whose content is all zero are skipped after reading. Both come back
//! as zero-fill, which CRIU's format allows (a hole in the pagemap).

use nix::sys::uio::RemoteIoVec;

use crate::error::{Error, Pid, Result};
use crate::images::pagemap::{entry_present, PAGE, PE_COW_PARENT, PE_PARENT, PE_PRESENT};
use crate::images::pb;
use crate::images::vma::{
    cow_pair, VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_HEAP, VMA_AREA_REGULAR, VMA_AREA_STACK,
    VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};

use crate::imgdir::PagesWriter;
use crate::proc::maps::{SpecialVma, Vma};
use crate::proc::pagemap::{PageFlags, PagemapReader};
use crate::ptrace::mem::{read_vm, TaskMem};

/// madvise() advice that shows in smaps VmFlags and that restore re-applies;
/// VmaEntry.madv holds `1 << advice`.
pub const MADV_FLAGS: &[(&str, u32)] = &[
    ("sr", libc::MADV_SEQUENTIAL as u32),
    ("rr", libc::MADV_RANDOM as u32),
    ("dc", libc::MADV_DONTFORK as u32),
    ("mg", libc::MADV_MERGEABLE as u32),
    ("hg", libc::MADV_HUGEPAGE as u32),
    ("nh", libc::MADV_NOHUGEPAGE as u32),
    ("dd", libc::MADV_DONTDUMP as u32),
    ("wf", 18), // MADV_WIPEONFORK
];

/// What a mapping is, for deciding how to dump and restore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    AnonPrivate,
    FilePrivate,
    AnonShared,
    FileShared,
    Vdso,
    Vvar,
    Vsyscall,
}

/// Classify one /proc/PID/smaps entry into a CRIU VmaEntry (without the
/// file id, which the caller fills in) and its kind.
pub fn classify(v: &Vma) -> (pb::VmaEntry, VmaKind) {
    let mut prot = 0u32;
    if v.read {
        prot |= libc::PROT_READ as u32;
    }
    if v.write {
        prot |= libc::PROT_WRITE as u32;
    }
    if v.exec {
        prot |= libc::PROT_EXEC as u32;
    }
    let has = |f: &str| v.vm_flags.iter().any(|x| x == f);
    let mut flags = if v.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    } as u32;
    if has("gd") {
        flags |= libc::MAP_GROWSDOWN as u32;
    }
    if has("nr") {
        flags |= libc::MAP_NORESERVE as u32;
    }
    if has("lo") {
        flags |= libc::MAP_LOCKED as u32;
    }
    let mut madv = 0u64;
    for &(name, advice) in MADV_FLAGS {
        if has(name) {
            madv |= 1 << advice;
        }
    }
    let mut status = VMA_AREA_REGULAR;
    let special = v.is_special();
    // The kernel's own mappings are private anonymous memory to CRIU,
    // which maps them as such (and then moves the real ones in place).
    let kernels = libc::MAP_ANONYMOUS as u32;
    let kind = match special {
        Some(SpecialVma::Vsyscall) => {
            status = VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE;
            flags |= kernels;
            VmaKind::Vsyscall
        }
        Some(SpecialVma::Vdso) => {
            status |= VMA_AREA_VDSO | VMA_ANON_PRIVATE;
            flags |= kernels;
            VmaKind::Vdso
        }
        Some(SpecialVma::Vvar) | Some(SpecialVma::VvarVclock) => {
            status |= VMA_AREA_VVAR | VMA_ANON_PRIVATE;
            flags |= kernels;
            VmaKind::Vvar
        }
        _ => {
            if matches!(special, Some(SpecialVma::Heap)) {
                status |= VMA_AREA_HEAP;
            }
            if matches!(special, Some(SpecialVma::Stack)) {
                status |= VMA_AREA_STACK;
            }
            let anon = v.inode == 0;
            match (anon, v.shared) {
                (true, false) => {
                    flags |= libc::MAP_ANONYMOUS as u32;
                    status |= VMA_ANON_PRIVATE;
                    VmaKind::AnonPrivate
                }
                (true, true) => {
                    flags |= libc::MAP_ANONYMOUS as u32;
                    status |= VMA_ANON_SHARED;
                    VmaKind::AnonShared
                }
                (false, false) => {
                    status |= VMA_FILE_PRIVATE;
                    VmaKind::FilePrivate
                }
                (false, true) => {
                    // MAP_SHARED|MAP_ANONYMOUS memory is a shmem file
                    // named "/dev/zero (deleted)"; it is anonymous for us.
                    if v.name == "/dev/zero (deleted)" || v.name == "/dev/zero" {
                        flags |= libc::MAP_ANONYMOUS as u32;
                        status |= VMA_ANON_SHARED;
                        VmaKind::AnonShared
                    } else {
                        status |= VMA_FILE_SHARED;
                        VmaKind::FileShared
                    }
                }
            }
        }
    };
    let e = pb::VmaEntry {
        start: v.start,
        end: v.end,
        pgoff: v.offset,
        shmid: if kind == VmaKind::AnonShared {
            v.inode
        } else {
            0
        },
        prot,
        flags,
        status,
        fd: -1,
        madv: if madv != 0 { Some(madv) } else { None },
        fdflags: None,
    };
    (e, kind)
}

/// The PFN of the kernel's shared zero page, learned once per run by
/// read-faulting a page of our own; `None` when PFNs are hidden.
pub fn zero_pfn() -> Option<u64> {
    static PFN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *PFN.get_or_init(find_zero_pfn)
}

fn find_zero_pfn() -> Option<u64> {
    let len = PAGE as usize;
    // SAFETY: a fresh private anonymous mapping, read once, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        std::ptr::read_volatile(p as *const u8);
        let rd = PagemapReader::open(std::process::id() as i32).ok()?;
        let mut out = Vec::new();
        let r = rd.read_range(p as u64, p as u64 + PAGE, &mut out);
        libc::munmap(p, len);
        r.ok()?;
        let f = PageFlags(*out.first()?);
        f.pfn().filter(|&p| f.present() && p != 0)
    }
}

/// Accumulates pagemap entries, merging adjacent runs.
#[derive(Default)]
pub struct PagemapBuilder {
    pub entries: Vec<pb::PagemapEntry>,
    sealed: bool,
}

impl PagemapBuilder {
    /// Entries never span two VMAs: call this at the start of each one.
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    pub fn push(&mut self, vaddr: u64, nr_pages: u32) {
        let sealed = std::mem::take(&mut self.sealed);
        if let Some(last) = self.entries.last_mut().filter(|_| !sealed) {
            if last.vaddr + last.nr_pages as u64 * PAGE == vaddr
                && (last.nr_pages as u64 + nr_pages as u64) < u32::MAX as u64
            {
                last.nr_pages += nr_pages;
                return;
            }
        }
        self.entries.push(pb::PagemapEntry {
            nr_pages64: None,
            vaddr,
            nr_pages,
            in_parent: None,
            flags: Some(PE_PRESENT),
        });
    }

    /// Pages in the pages file (COW entries have none there).
    pub fn total_pages(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| entry_present(e))
            .map(|e| e.nr_pages as u64)
            .sum()
    }
}

/// Which pages of a range to store, given their pagemap words.
fn wanted(kind: VmaKind, word: u64, zero_pfn: Option<u64>) -> bool {
    let f = PageFlags(word);
    match kind {
        VmaKind::AnonPrivate => {
            (f.present() && (f.pfn().is_none() || f.pfn() != zero_pfn)) || f.swapped()
        }
        VmaKind::FilePrivate => (f.present() && !f.file_or_shared_anon()) || f.swapped(),
        // All of it, as CRIU stores it: an engine that restores the image
        // on another kernel reads the dumped vDSO to know its symbols.
        VmaKind::Vdso => true,
        _ => false,
    }
}

/// Bytes copied out of the task per process_vm_readv batch.
const BATCH: usize = 2 << 20;
const IOV_BATCH: usize = 512;
/// Buffers in flight between the reader and the writer thread.
const BUFFERS: usize = 3;

thread_local! {
    /// The copy buffers of this thread's last [`dump_pages_cow`], for its
    /// next: the pages threads copy one process after the other, and
    /// `BUFFERS` fresh buffers a process were zeroed (6 MiB of memset, the
    /// largest item of a p32 dump's profile) and faulted in each time.
    /// Whatever a buffer held before is written over before it is used
    /// (read_vm, else /proc/PID/mem, else the dump fails).
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `BUFFERS` copy buffers: this thread's spare ones, new ones for the rest.
fn take_buffers() -> Vec<Vec<u8>> {
    let mut bufs = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    bufs.truncate(BUFFERS);
    while bufs.len() < BUFFERS {
        bufs.push(vec![0u8; BATCH]);
    }
    bufs
}

/// Keep the buffers back from a copy for this thread's next one.
fn keep_buffers(bufs: impl Iterator<Item = Vec<u8>>) {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        s.extend(bufs.filter(|b| b.len() == BATCH));
        s.truncate(BUFFERS);
    });
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, mid, post) = as_u128(page);
    pre.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

fn as_u128(b: &[u8]) -> (&[u8], &[u128], &[u8]) {
    // SAFETY: u128 has no invalid bit patterns; align_to handles alignment.
    unsafe { b.align_to::<u128>() }
}

/// One mapping to dump: its entry, kind, whether process_vm_readv can read
/// it, and where its pages go.
pub struct VmaJob<'a> {
    pub entry: &'a pb::VmaEntry,
    pub kind: VmaKind,
    pub readable: bool,
    /// Index into the sinks given to [`dump_pages`].
    pub sink: usize,
    /// Subtracted from addresses in the pagemap (see [`PageSink`]).
    pub base: u64,
}

/// A pagemap under construction and the pages file it describes. Private
/// memory is indexed by address (base 0); a shmem object by offset in the
/// object (base = VMA start - its offset).
pub struct PageSink {
    pub pages: PagesWriter,
    pub pm: PagemapBuilder,
}

/// A buffer full of pages read from the task, and the byte ranges of it
/// that go to `sink` (the non-zero pages).
struct Chunk {
    sink: usize,
    buf: Vec<u8>,
    runs: Vec<(usize, usize)>,
}

/// Copy the wanted pages of every job into the sinks.
///
/// Two threads share the work so that the two copies a dump needs (task
/// memory into our buffer, buffer into the page cache of the image file)
/// overlap: this thread walks pagemap, reads with process_vm_readv and
/// finds zero pages; a writer thread writes and checksums.
pub fn dump_pages(
    pid: Pid,
    mem: &TaskMem,
    pagemap: &PagemapReader,
    zero_pfn: Option<u64>,
    jobs: &[VmaJob<'_>],
    sinks: &mut [PageSink],
) -> Result<()> {
    dump_pages_cow(
        pid,
        mem,
        pagemap,
        zero_pfn,
        jobs,
        sinks,
        &CowMarks::new(),
        &ParentMarks::new(),
    )
    .map(drop)
}

/// Pages of each mapping (by its start, one flag per page) that an
/// incremental dump may record as in the parent image: not written since
/// the parent's dump, and held by it. Only those the dump would store
/// are recorded so (a page now gone or back to the file's is a hole).
pub type ParentMarks = std::collections::BTreeMap<u64, Vec<bool>>;

/// [`dump_pages`], leaving out the pages `cow` marks as shared with the
/// parent (the caller adds their entries, [`cow_entries`]) and those
/// `parent` marks as in the parent image (returned as in-parent entries
/// of sink 0, in address order).
#[allow(clippy::too_many_arguments)]
pub fn dump_pages_cow(
    pid: Pid,
    mem: &TaskMem,
    pagemap: &PagemapReader,
    zero_pfn: Option<u64>,
    jobs: &[VmaJob<'_>],
    sinks: &mut [PageSink],
    cow: &CowMarks,
    parent: &ParentMarks,
) -> Result<Vec<pb::PagemapEntry>> {
    let (to_writer, from_reader) = std::sync::mpsc::sync_channel::<Chunk>(BUFFERS);
    let (to_reader, free_bufs) = std::sync::mpsc::channel::<Vec<u8>>();
    for buf in take_buffers() {
        to_reader.send(buf).expect("receiver is alive");
    }
    let mut files = Vec::new();
    let mut hashers = Vec::new();
    let mut builders = Vec::new();
    for s in sinks.iter_mut() {
        files.push(&mut s.pages.out);
        hashers.push(&mut s.pages.hash);
        builders.push(&mut s.pm);
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<()> {
            for chunk in from_reader {
                let out = &mut files[chunk.sink];
                for &(a, b) in &chunk.runs {
                    out.write(&chunk.buf[a..b])?;
                }
                // The reader may be gone already (it failed); that's fine.
                let _ = to_reader.send(chunk.buf);
            }
            Ok(())
        });
        let mut reader = Reader {
            pid,
            mem,
            zero_pfn,
            words: Vec::new(),
            free: &free_bufs,
            out: to_writer,
            cow,
            parent,
            in_parent: Vec::new(),
            pin_ok: true,
        };
        let read_result = jobs.iter().try_for_each(|job| {
            let sink = job.sink;
            reader.dump_vma(pagemap, job, builders[sink], hashers[sink])
        });
        let in_parent = std::mem::take(&mut reader.in_parent);
        drop(reader);
        let write_result = writer.join().unwrap_or_else(|_| {
            Err(Error::task(
                pid,
                "dumping pages",
                "the writer thread panicked",
            ))
        });
        // The writer is done: every buffer it had is back.
        keep_buffers(free_bufs.try_iter());
        // A write error (ENOSPC...) is the real cause when both failed.
        write_result.and(read_result)?;
        Ok(in_parent
            .into_iter()
            .map(|(a, n)| crate::images::chain::in_parent_entry(a, n))
            .collect())
    })
}

struct Reader<'a> {
    pid: Pid,
    mem: &'a TaskMem,
    zero_pfn: Option<u64>,
    words: Vec<u64>,
    free: &'a std::sync::mpsc::Receiver<Vec<u8>>,
    out: std::sync::mpsc::SyncSender<Chunk>,
    /// Pages shared with the parent, not stored.
    cow: &'a CowMarks,
    /// Pages that may be in the parent image.
    parent: &'a ParentMarks,
    /// Runs of pages recorded as in the parent image (address, pages).
    in_parent: Vec<(u64, u32)>,
    /// The chunk being copied has no page another process maps too, so
    /// process_vm_readv may read it.
    pin_ok: bool,
}

impl Reader<'_> {
    fn dump_vma(
        &mut self,
        pagemap: &PagemapReader,
        job: &VmaJob<'_>,
        pm: &mut PagemapBuilder,
        hash: &mut crate::images::manifest::PagesHasher,
    ) -> Result<()> {
        const CHUNK_PAGES: u64 = 1 << 16;
        pm.seal();
        let vma = job.entry;
        // Pages still shared with the parent are not stored.
        let marks = self
            .cow
            .get(&vma.start)
            .filter(|m| m.len() as u64 == (vma.end - vma.start) / PAGE);
        let parent = self
            .parent
            .get(&vma.start)
            .filter(|m| m.len() as u64 == (vma.end - vma.start) / PAGE && job.sink == 0);
        let mut addr = vma.start;
        while addr < vma.end {
            let end = (addr + CHUNK_PAGES * PAGE).min(vma.end);
            pagemap
                .read_range(addr, end, &mut self.words)
                .map_err(|e| {
                    Error::task(
                        self.pid,
                        format!("pagemap of {addr:#x}-{end:#x}"),
                        e.to_string(),
                    )
                })?;
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for (i, &w) in self.words.iter().enumerate() {
                let a = addr + i as u64 * PAGE;
                let i = ((a - vma.start) / PAGE) as usize;
                let cow = marks.is_some_and(|m| m[i]);
                if !cow && parent.is_some_and(|m| m[i]) && wanted(job.kind, w, self.zero_pfn) {
                    match self.in_parent.last_mut() {
                        Some((s, n)) if *s + *n as u64 * PAGE == a && *n < u32::MAX && i > 0 => {
                            *n += 1
                        }
                        _ => self.in_parent.push((a, 1)),
                    }
                    continue;
                }
                if !cow && wanted(job.kind, w, self.zero_pfn) {
                    match runs.last_mut() {
                        Some((s, n)) if *s + *n * PAGE == a => *n += 1,
                        _ => runs.push((a, 1)),
                    }
                }
            }
            // process_vm_readv pins the pages it reads, and
            // pinning a copy-on-write shared anonymous page unshares it
            // (Linux 5.19+): the dump would give the task private copies of
            // what it shares with its parent or children (and them nothing
            // left to share). /proc/PID/mem does not pin: it reads chunks
            // that have a page mapped by another process too.
            let shared = self.words.iter().any(|&w| {
                let f = PageFlags(w);
                f.present() && !f.exclusive() && !f.file_or_shared_anon()
            });
            self.pin_ok = !shared;
            self.copy_runs(&runs, job, pm, hash)?;
            addr = end;
        }
        Ok(())
    }

    fn copy_runs(
        &mut self,
        runs: &[(u64, u64)],
        job: &VmaJob<'_>,
        pm: &mut PagemapBuilder,
        hash: &mut crate::images::manifest::PagesHasher,
    ) -> Result<()> {
        let cap_pages = BATCH as u64 / PAGE;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        for &(mut s, mut n) in runs {
            while n > 0 {
                let take = n.min(cap_pages);
                pieces.push((s, take));
                s += take * PAGE;
                n -= take;
            }
        }
        let mut i = 0;
        while i < pieces.len() {
            crate::fault::abandoned(self.pid)?;
            let mut buf = self
                .free
                .recv()
                .map_err(|_| Error::task(self.pid, "dumping pages", "the image writer stopped"))?;
            let mut used = 0u64;
            let mut iov = Vec::new();
            let first = i;
            while i < pieces.len() && iov.len() < IOV_BATCH && used + pieces[i].1 <= cap_pages {
                iov.push(RemoteIoVec {
                    base: pieces[i].0 as usize,
                    len: (pieces[i].1 * PAGE) as usize,
                });
                used += pieces[i].1;
                i += 1;
            }
            let bytes = (used * PAGE) as usize;
            let got = if job.readable && self.pin_ok {
                read_vm(self.pid, &mut buf[..bytes], &iov).unwrap_or(0)
            } else {
                0
            };
            if got < bytes {
                // Not readable through process_vm_readv (PROT_NONE, or a
                // page it cannot pin): /proc/PID/mem reaches it.
                let mut off = 0usize;
                for v in &iov {
                    if off + v.len > got {
                        let skip = got.saturating_sub(off);
                        let a = v.base as u64 + skip as u64;
                        self.mem.read(a, &mut buf[off + skip..off + v.len])?;
                    }
                    off += v.len;
                }
            }
            // Non-zero pages, as runs of the buffer.
            let mut out_runs = Vec::new();
            let mut off = 0usize;
            for &(s, n) in &pieces[first..i] {
                let mut run: Option<(u64, usize)> = None;
                for p in 0..n {
                    let zero = is_zero(&buf[off..off + PAGE as usize]);
                    match (zero, run) {
                        (false, None) => run = Some((s + p * PAGE, off)),
                        (true, Some((ra, roff))) => {
                            pm.push(ra - job.base, ((off - roff) as u64 / PAGE) as u32);
                            out_runs.push((roff, off));
                            run = None;
                        }
                        _ => {}
                    }
                    off += PAGE as usize;
                }
                if let Some((ra, roff)) = run {
                    pm.push(ra - job.base, ((off - roff) as u64 / PAGE) as u32);
                    out_runs.push((roff, off));
                }
            }
            // Hash here, while the bytes are hot in this core's cache; the
            // writer only copies them into the page cache.
            for &(a, b) in &out_runs {
                hash.update(&buf[a..b]);
            }
            self.out
                .send(Chunk {
                    sink: job.sink,
                    buf,
                    runs: out_runs,
                })
                .map_err(|_| Error::task(self.pid, "dumping pages", "the image writer stopped"))?;
        }
        Ok(())
    }
}

/// Dump a shmem object (MAP_SHARED|MAP_ANONYMOUS memory) through its file,
/// /proc/PID/map_files/START-END, rather than through page tables: a page
/// that only another process touched is in the object but not in this
/// process's pagemap. SEEK_DATA/SEEK_HOLE skip what was never written; all
/// zero pages are skipped too. The pagemap is indexed by offset in the
/// object. Returns the object's size.
pub fn dump_shmem_object(pid: Pid, start: u64, end: u64, sink: &mut PageSink) -> Result<u64> {
    let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    let f = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: opening shared memory"), e))?;
    dump_shmem_file(pid, &path, &f, sink)
}

/// The contents of shmem file `f` (opened from `path`, named in errors),
/// as [`dump_shmem_object`] stores them; also used for memfd objects.
pub fn dump_shmem_file(
    pid: Pid,
    path: &str,
    f: &std::fs::File,
    sink: &mut PageSink,
) -> Result<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let size = f
        .metadata()
        .map_err(|e| Error::io(path, format!("pid {pid}: stat of shared memory"), e))?
        .len();
    let seek = |off: u64, whence: i32| -> Option<u64> {
        // SAFETY: lseek on a file we own.
        let r = unsafe { libc::lseek(f.as_raw_fd(), off as i64, whence) };
        (r >= 0).then_some(r as u64)
    };
    let mut buf = vec![0u8; BATCH];
    let mut off = 0u64;
    sink.pm.seal();
    while off < size {
        let Some(data) = seek(off, libc::SEEK_DATA) else {
            break; // ENXIO: no data after `off`
        };
        let hole = seek(data, libc::SEEK_HOLE).unwrap_or(size).min(size);
        let mut at = data & !(PAGE - 1);
        while at < hole {
            let n = ((hole - at) as usize).min(BATCH).div_ceil(PAGE as usize) * PAGE as usize;
            let n = n.min((size - at) as usize);
            f.read_exact_at(&mut buf[..n], at).map_err(|e| {
                Error::io(
                    path,
                    format!("pid {pid}: reading shared memory at {at:#x}"),
                    e,
                )
            })?;
            let mut p = 0usize;
            while p < n {
                let len = (PAGE as usize).min(n - p);
                if !is_zero(&buf[p..p + len]) {
                    let mut page = [0u8; PAGE as usize];
                    page[..len].copy_from_slice(&buf[p..p + len]);
                    sink.pages.write(&page)?;
                    sink.pm.push(at + p as u64, 1);
                }
                p += len;
            }
            at += n as u64;
        }
        off = hole.max(at);
    }
    Ok(size)
}

// COW sharing with the parent -----------------------------------------------
//
// A child that never wrote to private memory it inherited across fork
// still shares those pages with its parent. Such pages are found by their
// PFN (the same physical page at the same address in the parent, and not
// mapped exclusively) and recorded as PE_COW_PARENT entries instead of
// being stored again; restore shares them again by forking (restore/cow.rs).
// Only the parent is compared: a grandchild shares with its parent, which
// shares with its own, so chains work. Both tasks are frozen for the whole
// dump, so the parent's pages still hold what was stored for it.

/// Pages of a task shared with its parent: by VMA start, one flag per page.
pub type CowMarks = std::collections::BTreeMap<u64, Vec<bool>>;

/// The pages of `pid`'s eligible mappings that are the very pages of its
/// parent `ppid` at the same address. Anything unreadable (PFNs hidden,
/// the parent gone) just means no sharing: the pages are stored as usual.
pub fn find_cow_pages(
    pid: Pid,
    ppid: Pid,
    vmas: &[pb::VmaEntry],
    parent_vmas: &[pb::VmaEntry],
    zero_pfn: Option<u64>,
) -> CowMarks {
    const CHUNK_PAGES: u64 = 1 << 16;
    let mut marks = CowMarks::new();
    let (Ok(mine), Ok(theirs)) = (PagemapReader::open(pid), PagemapReader::open(ppid)) else {
        return marks;
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    'vma: for v in vmas.iter().filter(|v| cow_pair(v, parent_vmas).is_some()) {
        let mut m = Vec::with_capacity(((v.end - v.start) / PAGE) as usize);
        let mut at = v.start;
        while at < v.end {
            let end = (at + CHUNK_PAGES * PAGE).min(v.end);
            // The parent first: a page it has exclusively now cannot be
            // the child's (and a PFN freed and reused in between would
            // have to move into the child's table within microseconds).
            if theirs.read_range(at, end, &mut b).is_err()
                || mine.read_range(at, end, &mut a).is_err()
            {
                continue 'vma;
            }
            m.extend(a.iter().zip(&b).map(|(&x, &y)| {
                let (x, y) = (PageFlags(x), PageFlags(y));
                x.present()
                    && y.present()
                    && !x.exclusive()
                    && !y.exclusive()
                    && x.pfn().is_some_and(|p| p != 0)
                    && x.pfn() == y.pfn()
                    && x.pfn() != zero_pfn
            }));
            at = end;
        }
        if m.iter().any(|&c| c) {
            marks.insert(v.start, m);
        }
    }
    marks
}

/// PE_COW_PARENT entries for `marks`: runs of marked pages, never across
/// two mappings.
pub fn cow_entries(marks: &CowMarks) -> Vec<pb::PagemapEntry> {
    let mut out: Vec<pb::PagemapEntry> = Vec::new();
    for (&start, m) in marks {
        let mut run: Option<(u64, u32)> = None;
        for (i, &c) in m.iter().chain([&false]).enumerate() {
            match (c, &mut run) {
                (true, Some((_, n))) if *n < u32::MAX => *n += 1,
                (true, _) => {
                    if let Some((a, n)) = run.take() {
                        out.push(cow_entry(a, n));
                    }
                    run = Some((start + i as u64 * PAGE, 1));
                }
                (false, _) => {
                    if let Some((a, n)) = run.take() {
                        out.push(cow_entry(a, n));
                    }
                }
            }
        }
    }
    out
}

fn cow_entry(vaddr: u64, nr_pages: u32) -> pb::PagemapEntry {
    pb::PagemapEntry {
        nr_pages64: None,
        vaddr,
        nr_pages,
        in_parent: None,
        flags: Some(PE_COW_PARENT | PE_PARENT),
    }
}

/// Add `cow` entries to the stored ones, in address order (they never
/// overlap: a marked page is not stored).
pub fn merge_cow_entries(entries: &mut Vec<pb::PagemapEntry>, cow: Vec<pb::PagemapEntry>) {
    if cow.is_empty() {
        return;
    }
    entries.extend(cow);
    entries.sort_by_key(|e| e.vaddr);
}

#[cfg(test)]
mod cow_tests {
    use super::*;
    use crate::images::pagemap::entry_cow;

    #[test]
    fn cow_runs() {
        let mut marks = CowMarks::new();
        marks.insert(0x1000, vec![true, true, false, true]);
        marks.insert(0x5000, vec![true]);
        let e = cow_entries(&marks);
        let got: Vec<(u64, u32)> = e.iter().map(|e| (e.vaddr, e.nr_pages)).collect();
        assert_eq!(got, vec![(0x1000, 2), (0x4000, 1), (0x5000, 1)]);
        assert!(e.iter().all(|e| entry_cow(e) && !entry_present(e)));
    }
}
