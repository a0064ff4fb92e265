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

/// Bytes copied out of the task per process_vm_readv batch: small enough
/// to stay in the copying core's L2 cache until that core writes them.
const BATCH: usize = 512 << 10;
const IOV_BATCH: usize = 512;
/// Threads that copy one process's pages, each batch by one of them from
/// the task to the image file (see [`dump_pages_cow`]).
const COPIERS: usize = 2;
/// Pages of pagemap read at a time: short, since the walk that reads it
/// holds the other copier up.
const WINDOW_PAGES: u64 = 1 << 13;
/// Ranges of more pages than this are scanned for their present pages
/// before their pagemap words are read ([`Walker::spans`]).
const SCAN_FROM: u64 = 512;

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

/// Copy the wanted pages of every job into the sinks.
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
///
/// What a dump of much memory costs here is the writing of the image's
/// pages: the kernel allocates each page of the file and the copy into
/// it is the first write to that memory (on this VM, a fault in the host
/// too). The copy out of the task into a small buffer is cheap beside it,
/// and a buffer that stays in one core's cache makes the second copy read
/// from that cache. So [`COPIERS`] threads each take the next batch of
/// the walk through pagemap, read it with process_vm_readv into their
/// own buffer, find its zero pages, and then, in the batches' order, add
/// it to the pagemap and the checksums and claim its place in the pages
/// file; the write into that place (pwrite) needs no order, so one
/// thread writes while the other reads and checks. (The kernel holds the
/// file's lock for each write, so the writes themselves do not overlap.)
/// Measured against copying straight into a shared mapping of the file
/// and against vmsplice by the task: docs/benchmarks.md, branch
/// `onecopy`.
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
    let mut at = Vec::with_capacity(sinks.len());
    for s in sinks.iter() {
        at.push(s.pages.out.positioned()?);
    }
    let walker = std::sync::Mutex::new(Walker {
        pid,
        pagemap,
        zero_pfn,
        jobs,
        cow,
        parent,
        job: 0,
        addr: jobs.first().map_or(0, |j| j.entry.start),
        began: false,
        words: Vec::new(),
        ready: std::collections::VecDeque::new(),
        seq: 0,
        in_parent: Vec::new(),
    });
    let turn = Turn {
        state: std::sync::Mutex::new(InTurn {
            next: 0,
            failed: false,
            sinks: sinks
                .iter_mut()
                .map(|s| (&mut s.pages.out, &mut s.pages.hash, &mut s.pm))
                .collect(),
        }),
        moved: std::sync::Condvar::new(),
    };
    let copier = Copier {
        pid,
        mem,
        walker: &walker,
        turn: &turn,
        at: &at,
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..COPIERS).map(|_| scope.spawn(|| copier.run())).collect();
        let mut result = copier.run();
        for t in others {
            let r = t.join().unwrap_or_else(|_| {
                Err(Error::task(
                    pid,
                    "dumping pages",
                    "a copier thread panicked",
                ))
            });
            // The first failure is the cause; the others only stopped.
            result = result.and(r);
        }
        result
    })?;
    let in_parent = walker
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .in_parent;
    Ok(in_parent
        .into_iter()
        .map(|(a, n)| crate::images::chain::in_parent_entry(a, n))
        .collect())
}

/// Pages of one mapping to copy in one process_vm_readv: (address, pages)
/// pieces, the `seq`th batch of the walk.
struct Batch {
    seq: u64,
    sink: usize,
    base: u64,
    /// process_vm_readv may read it (else /proc/PID/mem does).
    readable: bool,
    /// The first batch of its mapping: pagemap entries do not run on from
    /// the mapping before.
    seal: bool,
    pieces: Vec<(u64, u64)>,
}

/// The walk through the jobs' pagemap, in address order, cut into
/// batches.
struct Walker<'a> {
    pid: Pid,
    pagemap: &'a PagemapReader,
    zero_pfn: Option<u64>,
    jobs: &'a [VmaJob<'a>],
    /// Pages shared with the parent, not stored.
    cow: &'a CowMarks,
    /// Pages that may be in the parent image.
    parent: &'a ParentMarks,
    /// The job and the address the walk is at.
    job: usize,
    addr: u64,
    /// A batch of the job was handed out (its first one seals).
    began: bool,
    words: Vec<u64>,
    /// Batches of the last window, not handed out yet.
    ready: std::collections::VecDeque<Batch>,
    seq: u64,
    /// Runs of pages recorded as in the parent image (address, pages).
    in_parent: Vec<(u64, u32)>,
}

impl Walker<'_> {
    /// The next batch, or None at the end of the walk.
    fn next(&mut self) -> Result<Option<Batch>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            let Some(job) = self.jobs.get(self.job) else {
                return Ok(None);
            };
            if self.addr >= job.entry.end {
                self.job += 1;
                self.began = false;
                if let Some(j) = self.jobs.get(self.job) {
                    self.addr = j.entry.start;
                }
                continue;
            }
            self.window(job)?;
        }
    }

    /// Read the pagemap of the next window of `job` and cut its wanted
    /// pages into batches.
    fn window(&mut self, job: &VmaJob<'_>) -> Result<()> {
        let vma = job.entry;
        let addr = self.addr;
        let end = (addr + WINDOW_PAGES * PAGE).min(vma.end);
        self.addr = end;
        // Pages still shared with the parent are not stored.
        let marks = self
            .cow
            .get(&vma.start)
            .filter(|m| m.len() as u64 == (vma.end - vma.start) / PAGE);
        let parent = self
            .parent
            .get(&vma.start)
            .filter(|m| m.len() as u64 == (vma.end - vma.start) / PAGE && job.sink == 0);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut shared = false;
        for (from, to) in self.spans(job.kind, addr, end)? {
            self.pagemap
                .read_range(from, to, &mut self.words)
                .map_err(|e| {
                    Error::task(
                        self.pid,
                        format!("pagemap of {from:#x}-{to:#x}"),
                        e.to_string(),
                    )
                })?;
            for (i, &w) in self.words.iter().enumerate() {
                let a = from + i as u64 * PAGE;
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
            // left to share). /proc/PID/mem does not pin: it reads windows
            // that have a page mapped by another process too.
            shared |= self.words.iter().any(|&w| {
                let f = PageFlags(w);
                f.present() && !f.exclusive() && !f.file_or_shared_anon()
            });
        }
        let cap_pages = BATCH as u64 / PAGE;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        for (mut s, mut n) in runs {
            while n > 0 {
                let take = n.min(cap_pages);
                pieces.push((s, take));
                s += take * PAGE;
                n -= take;
            }
        }
        let mut i = 0;
        while i < pieces.len() {
            let mut used = 0u64;
            let from = i;
            while i < pieces.len() && i - from < IOV_BATCH && used + pieces[i].1 <= cap_pages {
                used += pieces[i].1;
                i += 1;
            }
            self.ready.push_back(Batch {
                seq: self.seq,
                sink: job.sink,
                base: job.base,
                readable: job.readable && !shared,
                seal: !std::mem::replace(&mut self.began, true),
                pieces: pieces[from..i].to_vec(),
            });
            self.seq += 1;
        }
        Ok(())
    }

    /// The parts of `[addr, end)` whose pagemap words the walk needs: for
    /// a mapping whose wanted pages are all present or swapped (private
    /// anonymous or file), only the ranges PAGEMAP_SCAN finds so, where
    /// the rest of the range holds none. A thread's 8 MiB stack has a few
    /// pages in it: t1000's dump read 16 MiB of pagemap words (2 million
    /// pages) for 2,113 pages. The scan sees pages as pagemap does (a
    /// present page table entry is present, any swap entry is swapped; a
    /// VM_PFNMAP mapping holds neither in both), and the words are then
    /// read as before. A range of at most [`SCAN_FROM`] pages is read
    /// whole: its words are one page, and the scan a call of its own. Without
    /// PAGEMAP_SCAN (before Linux 6.7): all of it.
    fn spans(&self, kind: VmaKind, addr: u64, end: u64) -> Result<Vec<(u64, u64)>> {
        use crate::sys::pagemap_scan as ps;
        let scans = matches!(kind, VmaKind::AnonPrivate | VmaKind::FilePrivate);
        if !scans || end - addr <= SCAN_FROM * PAGE {
            return Ok(vec![(addr, end)]);
        }
        let what = ps::Scan {
            flags: 0,
            category_mask: 0,
            anyof_mask: ps::PAGE_IS_PRESENT | ps::PAGE_IS_SWAPPED,
            return_mask: ps::PAGE_IS_PRESENT | ps::PAGE_IS_SWAPPED,
        };
        let mut regions = Vec::new();
        match ps::scan(
            std::os::fd::AsFd::as_fd(self.pagemap),
            addr,
            end,
            what,
            &mut regions,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL) => {
                return Ok(vec![(addr, end)])
            }
            Err(e) => {
                return Err(Error::sys(
                    self.pid,
                    format!("present pages of {addr:#x}-{end:#x} (PAGEMAP_SCAN)"),
                    e,
                ))
            }
        }
        // Adjacent regions (present, then swapped) are read as one.
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(regions.len());
        for r in regions {
            let (from, to) = (r.start.max(addr), r.end.min(end));
            if from >= to {
                continue;
            }
            match out.last_mut() {
                Some((_, e)) if *e == from => *e = to,
                _ => out.push((from, to)),
            }
        }
        Ok(out)
    }
}

/// What the batches do in their order: the pagemaps, the checksums and
/// the places in the pages files.
struct Turn<'a> {
    state: std::sync::Mutex<InTurn<'a>>,
    moved: std::sync::Condvar,
}

type SinkParts<'a> = (
    &'a mut crate::imgdir::PagesFile,
    &'a mut crate::images::manifest::PagesHasher,
    &'a mut PagemapBuilder,
);

struct InTurn<'a> {
    /// The batch whose turn it is.
    next: u64,
    /// A copier failed: the others stop.
    failed: bool,
    sinks: Vec<SinkParts<'a>>,
}

/// One copier thread's view of the shared state.
struct Copier<'a, 'w> {
    pid: Pid,
    mem: &'a TaskMem,
    walker: &'a std::sync::Mutex<Walker<'w>>,
    turn: &'a Turn<'a>,
    /// Each sink's file for writes at claimed offsets; None for a page
    /// server, written in the batches' order.
    at: &'a [Option<crate::imgdir::PagesAt>],
}

/// Copy buffers kept from one copy for the next: the pages threads copy
/// one process after the other, and fresh buffers were zeroed and faulted
/// in each time (memset was the largest item of a p32 dump's profile).
/// Whatever a buffer held before is written over before it is used
/// (read_vm, else /proc/PID/mem, else the dump fails).
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// At most this many buffers are kept.
const SPARE_MAX: usize = 8;

/// A copy buffer of `BATCH` bytes from [`SPARE`], back there when dropped.
struct CopyBuf(Vec<u8>);

impl CopyBuf {
    fn take() -> Self {
        let kept = SPARE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        CopyBuf(kept.unwrap_or_else(|| vec![0u8; BATCH]))
    }
}

impl Drop for CopyBuf {
    fn drop(&mut self) {
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_MAX && self.0.len() == BATCH {
            spare.push(std::mem::take(&mut self.0));
        }
    }
}

impl Copier<'_, '_> {
    fn run(&self) -> Result<()> {
        let r = self.copy_all();
        if r.is_err() {
            let mut t = self.turn.state.lock().unwrap_or_else(|e| e.into_inner());
            t.failed = true;
            self.turn.moved.notify_all();
        }
        r
    }

    fn copy_all(&self) -> Result<()> {
        let mut spare = CopyBuf::take();
        let buf = &mut spare.0;
        // Non-zero pages of the batch: byte ranges of the buffer and the
        // pagemap entries (address less base, pages) they make.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut entries: Vec<(u64, u32)> = Vec::new();
        loop {
            let batch = {
                let mut w = self.walker.lock().unwrap_or_else(|e| e.into_inner());
                match w.next()? {
                    Some(b) => b,
                    None => return Ok(()),
                }
            };
            crate::fault::abandoned(self.pid)?;
            let bytes = self.read(&batch, buf)?;
            runs.clear();
            entries.clear();
            let mut off = 0usize;
            for &(s, n) in &batch.pieces {
                let mut run: Option<(u64, usize)> = None;
                for p in 0..n {
                    let zero = is_zero(&buf[off..off + PAGE as usize]);
                    match (zero, run) {
                        (false, None) => run = Some((s + p * PAGE, off)),
                        (true, Some((ra, roff))) => {
                            entries.push((ra - batch.base, ((off - roff) as u64 / PAGE) as u32));
                            runs.push((roff, off));
                            run = None;
                        }
                        _ => {}
                    }
                    off += PAGE as usize;
                }
                if let Some((ra, roff)) = run {
                    entries.push((ra - batch.base, ((off - roff) as u64 / PAGE) as u32));
                    runs.push((roff, off));
                }
            }
            debug_assert_eq!(off, bytes);
            let stored: usize = runs.iter().map(|&(a, b)| b - a).sum();
            let place = {
                let mut t = self.turn.state.lock().unwrap_or_else(|e| e.into_inner());
                while t.next != batch.seq && !t.failed {
                    t = self.turn.moved.wait(t).unwrap_or_else(|e| e.into_inner());
                }
                if t.failed {
                    return Ok(());
                }
                let (file, hash, pm) = &mut t.sinks[batch.sink];
                if batch.seal {
                    pm.seal();
                }
                for &(a, n) in &entries {
                    pm.push(a, n);
                }
                // Hashed here, while the bytes are hot in this core's
                // cache, and in the file's order.
                for &(a, b) in &runs {
                    hash.update(&buf[a..b]);
                }
                let place = match &self.at[batch.sink] {
                    Some(_) => Some(file.claim(stored as u64)),
                    None => {
                        for &(a, b) in &runs {
                            file.write(&buf[a..b])?;
                        }
                        None
                    }
                };
                t.next += 1;
                self.turn.moved.notify_all();
                place
            };
            if let (Some(mut pos), Some(at)) = (place, &self.at[batch.sink]) {
                for &(a, b) in &runs {
                    at.write_at(&buf[a..b], pos)?;
                    pos += (b - a) as u64;
                }
            }
        }
    }

    /// Read the batch's pages into `buf`; their bytes.
    fn read(&self, batch: &Batch, buf: &mut [u8]) -> Result<usize> {
        let iov: Vec<RemoteIoVec> = batch
            .pieces
            .iter()
            .map(|&(s, n)| RemoteIoVec {
                base: s as usize,
                len: (n * PAGE) as usize,
            })
            .collect();
        let bytes: usize = iov.iter().map(|v| v.len).sum();
        let got = if batch.readable {
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
        Ok(bytes)
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

#[cfg(test)]
mod walk_tests {
    use super::*;

    /// The pages the walk hands out for `entry` (a mapping of this
    /// process), as runs of (address, pages).
    fn walked(entry: &pb::VmaEntry, kind: VmaKind) -> Vec<(u64, u64)> {
        let pid = std::process::id() as Pid;
        let jobs = [VmaJob {
            entry,
            kind,
            readable: true,
            sink: 0,
            base: 0,
        }];
        let pagemap = PagemapReader::open(pid).unwrap();
        let (cow, parent) = (CowMarks::new(), ParentMarks::new());
        let mut w = Walker {
            pid,
            pagemap: &pagemap,
            zero_pfn: zero_pfn(),
            jobs: &jobs,
            cow: &cow,
            parent: &parent,
            job: 0,
            addr: entry.start,
            began: false,
            words: Vec::new(),
            ready: Default::default(),
            seq: 0,
            in_parent: Vec::new(),
        };
        let mut out: Vec<(u64, u64)> = Vec::new();
        while let Some(b) = w.next().unwrap() {
            for (a, n) in b.pieces {
                match out.last_mut() {
                    Some((s, m)) if *s + *m * PAGE == a => *m += n,
                    _ => out.push((a, n)),
                }
            }
        }
        out
    }

    /// A sparse mapping across two pagemap windows: the walk (which reads
    /// pagemap words only where PAGEMAP_SCAN finds pages) hands out
    /// exactly the pages written, not the one that maps the zero page nor
    /// the holes; a dense one in one piece.
    #[test]
    fn walk_finds_the_written_pages_only() {
        let pages = WINDOW_PAGES + WINDOW_PAGES / 2;
        let len = (pages * PAGE) as usize;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the mapping above.
        unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
        let start = p as u64;
        let w = WINDOW_PAGES;
        let mut written: Vec<u64> = [0, 1, 2, 500, w - 1, w, w + 1, pages - 1]
            .into_iter()
            .chain(w + 808..w + 1108)
            .collect();
        written.sort();
        for &i in &written {
            // SAFETY: within the mapping.
            unsafe { *((start + i * PAGE) as *mut u8) = 1 };
        }
        // A read maps the zero page: nothing to store.
        // SAFETY: within the mapping.
        unsafe { std::ptr::read_volatile((start + 600 * PAGE) as *const u8) };
        let entry = pb::VmaEntry {
            start,
            end: start + pages * PAGE,
            ..Default::default()
        };
        let got = walked(&entry, VmaKind::AnonPrivate);
        let mut want: Vec<(u64, u64)> = Vec::new();
        for &i in &written {
            let a = start + i * PAGE;
            match want.last_mut() {
                Some((s, n)) if *s + *n * PAGE == a => *n += 1,
                _ => want.push((a, 1)),
            }
        }
        if zero_pfn().is_none() {
            want.push((start + 600 * PAGE, 1));
            want.sort();
        }
        assert_eq!(got, want);
        // Only where pages are did the walk read pagemap words.
        let pagemap = PagemapReader::open(std::process::id() as Pid).unwrap();
        if crate::sys::pagemap_scan_known(std::os::fd::AsFd::as_fd(&pagemap)) {
            let (cow, parent) = (CowMarks::new(), ParentMarks::new());
            let jobs: [VmaJob<'_>; 0] = [];
            let walker = Walker {
                pid: std::process::id() as Pid,
                pagemap: &pagemap,
                zero_pfn: None,
                jobs: &jobs,
                cow: &cow,
                parent: &parent,
                job: 0,
                addr: 0,
                began: false,
                words: Vec::new(),
                ready: Default::default(),
                seq: 0,
                in_parent: Vec::new(),
            };
            let spans = walker
                .spans(VmaKind::AnonPrivate, start, start + pages * PAGE)
                .unwrap();
            let read: u64 = spans.iter().map(|&(a, b)| (b - a) / PAGE).sum();
            assert_eq!(read, written.len() as u64 + 1, "{spans:x?}");
            // A small range is read whole.
            let small = walker
                .spans(VmaKind::AnonPrivate, start, start + SCAN_FROM * PAGE)
                .unwrap();
            assert_eq!(small, vec![(start, start + SCAN_FROM * PAGE)]);
            // The vDSO's pages are all stored, present or not.
            let all = walker
                .spans(VmaKind::Vdso, start, start + pages * PAGE)
                .unwrap();
            assert_eq!(all, vec![(start, start + pages * PAGE)]);
        }
        // Dense: every page, in one run.
        for i in 0..pages {
            // SAFETY: within the mapping.
            unsafe { *((start + i * PAGE) as *mut u8) = 2 };
        }
        assert_eq!(walked(&entry, VmaKind::AnonPrivate), vec![(start, pages)]);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, len) };
    }
}
