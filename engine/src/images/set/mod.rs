//! The one loader of image directories: `show` and `restore` both read
//! through [`ImageSet::read`].
//!
//! Nothing here stops at the first problem: every image that can be read
//! is read, every one that cannot is kept as an [`Absent`] with the
//! reason, and the cross-references between images (fds to files, pages
//! to mappings, pagemaps to pages files) are checked and reported in
//! [`ImageSet::problems`], each naming its file. `show` prints what is
//! there and names the rest; `restore` refuses a directory with any
//! problem, and checks what it needs beyond that, before it creates
//! anything.

mod ns;
mod sysvipc;

pub use ns::Namespaces;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::images::{
    self, pb, ImageError, ImageKind, ImageReader, Magic, Manifest, ManifestProblem, MANIFEST_NAME,
};

pub use sysvipc::{MsgQueue, SemSet, ShmSegment, SysvIpc};

use crate::images::manifest::Mapped;
use crate::images::pagemap::{PAGE, PE_COW_PARENT, PE_PRESENT};
use crate::images::vma::{
    VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
    VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};

/// The most data a pipe or a SysV queue of an image may plausibly hold
/// (far above any kernel default); more is a damaged length.
pub const MAX_QUEUED_BYTES: u64 = 64 << 20;

/// Why an image is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Absent {
    /// The file does not exist.
    Missing(String),
    /// The file exists but cannot be read or decoded; the message names it.
    Bad(String),
}

impl fmt::Display for Absent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Absent::Missing(name) => write!(f, "{name}: missing"),
            Absent::Bad(msg) => f.write_str(msg),
        }
    }
}

/// One image, read or not.
pub type Part<T> = Result<T, Absent>;

/// What the manifest check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestStatus {
    /// Every listed file is there with its size and checksum, and no
    /// unlisted image is.
    Ok {
        files: usize,
        bytes: u64,
    },
    /// There is no ckpt.manifest (images written by another engine).
    Absent,
    Problems(Vec<ManifestProblem>),
}

/// A pagemap image: its head and entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageSet {
    pub pages_id: u32,
    pub entries: Vec<pb::PagemapEntry>,
}

/// N of a pages file's name, `pages-N.img` ([`PageSet::pages_file`]):
/// the files a dump may send to a page server, and the only names a
/// page server writes.
pub fn pages_file_id(name: &str) -> Option<u32> {
    let n = name.strip_prefix("pages-")?.strip_suffix(".img")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
    n.parse().ok()
}

impl PageSet {
    /// The pages file its entries' pages are in.
    pub fn pages_file(&self) -> String {
        format!("pages-{}.img", self.pages_id)
    }

    /// Pages recorded as the parent's own (still shared copy-on-write
    /// since the fork), between `start` and `end`; none are stored here.
    pub fn cow_pages_in(&self, start: u64, end: u64) -> u64 {
        self.entries
            .iter()
            .filter(|e| crate::images::pagemap::entry_cow(e))
            .map(|e| {
                let (s, t) = (e.vaddr, e.vaddr + e.nr_pages as u64 * PAGE);
                (t.min(end)).saturating_sub(s.max(start)) / PAGE
            })
            .sum()
    }

    /// Pages stored in the pages file (entries flagged as in a parent
    /// image or lazy are not).
    pub fn stored_pages(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| stored(e))
            .map(|e| e.nr_pages as u64)
            .sum()
    }

    /// Stored pages between `start` and `end` (addresses for a private
    /// pagemap, object offsets for a shmem one).
    pub fn pages_in(&self, start: u64, end: u64) -> u64 {
        self.entries
            .iter()
            .filter(|e| stored(e))
            .map(|e| {
                let (s, t) = (e.vaddr, e.vaddr + e.nr_pages as u64 * PAGE);
                let (s, t) = (s.max(start), t.min(end));
                if t > s {
                    (t - s) / PAGE
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Whether an entry's pages are in the pages file.
fn stored(e: &pb::PagemapEntry) -> bool {
    crate::images::pagemap::entry_present(e)
}

/// One thread: its core image.
#[derive(Clone, Debug)]
pub struct Thread {
    pub tid: u32,
    pub core: Part<pb::CoreEntry>,
}

/// One process and the images that describe it.
#[derive(Clone, Debug)]
pub struct Task {
    pub tree: pb::PstreeEntry,
    /// False when pstree.img could not be read and the task was found by
    /// its core image instead.
    pub in_pstree: bool,
    /// The leader first, then the other threads in tid order.
    pub threads: Vec<Thread>,
    pub ids: Part<pb::TaskKobjIdsEntry>,
    pub mm: Part<pb::MmEntry>,
    pub pagemap: Part<PageSet>,
    pub fs: Part<pb::FsEntry>,
    /// fdinfo-<files_id>.img, when the files id is known.
    pub fdinfo_name: Option<String>,
    pub fdinfo: Part<Vec<pb::FdinfoEntry>>,
}

impl Task {
    /// A zombie has a core image only: its exit status for its parent.
    pub fn is_zombie(&self) -> bool {
        self.threads.first().is_some_and(|th| {
            th.core
                .as_ref()
                .is_ok_and(|c| c.tc.as_ref().is_some_and(|tc| tc.task_state == 2))
        })
    }
}

impl Task {
    pub fn pid(&self) -> u32 {
        self.tree.pid
    }

    /// The leader's core image.
    pub fn core(&self) -> Option<&pb::CoreEntry> {
        self.threads.first().and_then(|t| t.core.as_ref().ok())
    }

    pub fn tc(&self) -> Option<&pb::TaskCoreEntry> {
        self.core().and_then(|c| c.tc.as_ref())
    }

    /// The command name: the task core's, or the thread core's.
    pub fn comm(&self) -> Option<&str> {
        self.tc().map(|t| t.comm.as_str()).or_else(|| {
            self.core()
                .and_then(|c| c.thread_core.as_ref())
                .and_then(|t| t.comm.as_deref())
        })
    }
}

/// Bytes buffered in a pipe or fifo (pipes-data.img, fifo-data.img).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipeData {
    pub bytes: Vec<u8>,
    /// The pipe's size, if the image says.
    pub size: Option<u32>,
}

/// A TCP connection's state and queues (tcp-stream-INO.img).
#[derive(Clone, Debug)]
pub struct TcpStream {
    pub entry: pb::TcpStreamEntry,
    /// The receive queue, read next by the task.
    pub inq: Vec<u8>,
    /// The send queue: sent and not acknowledged, then never sent.
    pub outq: Vec<u8>,
}

/// An unlinked file's data, by offset (holes are not there).
pub type Chunks = Vec<(u64, Vec<u8>)>;

/// What came with one queued message besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ancillary {
    /// SCM_RIGHTS: the files in flight, by file id.
    pub rights: Vec<u32>,
    /// SCM_CREDENTIALS: (pid, uid, gid) of the sender.
    pub creds: Option<(i32, u32, u32)>,
}

/// Everything an image directory holds, read as far as it reads.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// How to name the directory in messages.
    pub dir: String,
    /// The pages files the manifest check hashed in mappings of them,
    /// kept for their first reader ([`Mapped`]).
    pub mapped: std::sync::Arc<std::sync::Mutex<Mapped>>,
    pub manifest: ManifestStatus,
    pub inventory: Part<pb::InventoryEntry>,
    pub pstree: Part<Vec<pb::PstreeEntry>>,
    pub files_img: Part<BTreeMap<u32, pb::FileEntry>>,
    /// Tasks in the order of pstree.img (the root first).
    pub tasks: Vec<Task>,
    /// pagemap-shmem-<shmid>.img of every shared anonymous mapping and
    /// every memfd object; a missing one means no stored pages.
    pub shmem: BTreeMap<u64, Part<PageSet>>,
    /// Data buffered in pipes (pipes-data.img), by pipe id (inode).
    pub pipe_data: BTreeMap<u32, PipeData>,
    /// Data buffered in FIFOs (fifo-data.img), by pipe id: apart from the
    /// pipes', since a FIFO's inode (of its filesystem) may have the number
    /// of a pipe's (of pipefs).
    pub fifo_data: BTreeMap<u32, PipeData>,
    /// sk-queues.img: what is queued for reception on each socket, by
    /// the socket's file id, message by message, in order.
    pub sk_queues: BTreeMap<u32, Vec<Vec<u8>>>,
    /// tty-info.img, by id; empty without one.
    pub tty_info: BTreeMap<u32, pb::TtyInfoEntry>,
    /// tty-data.img: what a read on each tty (by tty-info id) returns next.
    pub tty_data: BTreeMap<u32, Vec<u8>>,
    /// The source address (a sockaddr) of each datagram of sk_queues, in
    /// the same order, for INET sockets.
    pub sk_queue_addrs: BTreeMap<u32, Vec<Option<Vec<u8>>>>,
    /// What came with each message of sk_queues besides its bytes, in the
    /// same order.
    pub sk_queue_scm: BTreeMap<u32, Vec<Ancillary>>,
    /// memfd.img, by inode id; empty without one.
    pub memfds: BTreeMap<u32, pb::MemfdInodeEntry>,
    /// remap-fpath.img: file id -> ghost id.
    pub ghosts: BTreeMap<u32, u32>,
    /// ghost-file-<id>.img of every ghost id remap-fpath.img names.
    pub ghost_files: BTreeMap<u32, Part<(pb::GhostFileEntry, Chunks)>>,
    /// tcp-stream-INO.img of every TCP socket of files.img that has a
    /// connection, by socket inode.
    pub tcp_streams: BTreeMap<u32, Part<TcpStream>>,
    /// cgroup.img; None when the directory has none.
    pub cgroups: Option<Part<pb::CgroupEntry>>,
    /// cpuinfo.img; None when the directory has none (CRIU writes one
    /// only with --cpu-cap).
    pub cpuinfo: Option<Part<pb::CpuinfoEntry>>,
    /// seccomp.img; None when the directory has none.
    pub seccomp: Option<Part<pb::SeccompEntry>>,
    /// filelocks.img (empty without one).
    pub file_locks: Vec<pb::FileLockEntry>,
    /// SysV IPC objects (ipcns-{shm,sem,msg}-N.img).
    pub sysvipc: SysvIpc,
    /// The tree's own namespaces (utsns-N.img, ipcns-var-N.img, ...).
    pub namespaces: Namespaces,
    /// Every file of the directory but the manifest, in natural order
    /// (`show` adds what a scan of each file finds).
    pub files: Vec<DirFile>,
    /// Every problem found, each naming its file.
    pub problems: Vec<String>,
}

impl ImageSet {
    /// The file entry with this id, if files.img has it.
    pub fn file(&self, id: u32) -> Option<&pb::FileEntry> {
        self.files_img.as_ref().ok().and_then(|m| m.get(&id))
    }

    /// Manifest remark for a file, if it is damaged.
    pub fn damaged(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.damaged.as_deref())
    }

    /// Size of a file of the directory.
    pub fn file_size(&self, name: &str) -> Option<u64> {
        self.files.iter().find(|f| f.name == name).map(|f| f.size)
    }
}

/// A file of the directory, as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirFile {
    pub name: String,
    pub size: u64,
    /// The image kind its name says (CRIU's CR_FD_* key), if any.
    pub kind: Option<&'static str>,
    /// The magic its header holds ("CORE"; "RAW" for raw images), once
    /// scanned.
    pub magic: Option<String>,
    /// Protobuf entries in it (None for raw images, or not scanned).
    pub entries: Option<u64>,
    /// What is wrong with the file itself (unreadable header, truncated
    /// entry, ...), found by a scan.
    pub error: Option<String>,
    /// What the manifest check says about it.
    pub damaged: Option<String>,
}

/// Orders "core-2.img" before "core-10.img".
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (tx, ty) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

pub(crate) struct Loader<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) prefix: String,
}

impl Loader<'_> {
    /// An image error as text, with the directory taken out of paths.
    pub(crate) fn msg(&self, e: &ImageError) -> String {
        e.to_string().replace(&self.prefix, "")
    }

    pub(crate) fn absent(&self, name: &str, e: ImageError) -> Absent {
        match &e {
            ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Absent::Missing(name.to_string())
            }
            _ => Absent::Bad(self.msg(&e)),
        }
    }

    pub(crate) fn one<M: prost::Message + Default>(&self, name: &str, magic: Magic) -> Part<M> {
        images::read_one(self.dir.join(name), magic).map_err(|e| self.absent(name, e))
    }

    pub(crate) fn all<M: prost::Message + Default>(
        &self,
        name: &str,
        magic: Magic,
    ) -> Part<Vec<M>> {
        images::read_all(self.dir.join(name), magic).map_err(|e| self.absent(name, e))
    }

    /// A raw image (no magic of CRIU's, no entries) whole.
    pub(crate) fn raw(&self, name: &str) -> Part<Vec<u8>> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(|e| self.absent(name, ImageError::io(&path, "reading", e)))
    }

    pub(crate) fn pagemap(&self, name: &str) -> Part<PageSet> {
        read_pagemap(&self.dir.join(name)).map_err(|e| self.absent(name, e))
    }
}

/// Read one pagemap image: its head and entries (each with one page count).
pub fn read_pagemap(path: &Path) -> images::Result<PageSet> {
    let mut r = images::ImageReader::open(path, Magic::Pagemap)?;
    let head: pb::PagemapHead = r
        .read_entry()?
        .ok_or_else(|| ImageError::invalid(path, "no pagemap_head entry"))?;
    let entries = r
        .entries()
        .map(|e| {
            e.and_then(|e| {
                images::pagemap::one_count(e).map_err(|why| ImageError::invalid(path, why))
            })
        })
        .collect::<images::Result<Vec<pb::PagemapEntry>>>()?;
    Ok(PageSet {
        pages_id: head.pages_id,
        entries,
    })
}

/// The kernel's PID_MAX_LIMIT on 64-bit: no pid is larger.
const PID_MAX_LIMIT: u32 = 4 << 20;

/// A pstree entry whose ids cannot be pids (a damaged or edited image
/// would otherwise surface as a file name such as `core--1.img`).
fn pstree_entry_problem(p: &pb::PstreeEntry) -> Option<String> {
    let valid = |v: u32| (1..=PID_MAX_LIMIT).contains(&v);
    if !valid(p.pid) {
        return Some(format!(
            "pid {} is not a pid (1..={PID_MAX_LIMIT})",
            p.pid as i32
        ));
    }
    // The root's parent is 0 (outside the tree).
    if p.ppid != 0 && !valid(p.ppid) {
        return Some(format!("parent {} is not a pid", p.ppid as i32));
    }
    // Session and group 0 are real: tasks the kernel starts (usermode
    // helpers) inherit them.
    for (what, v) in [("process group", p.pgid), ("session", p.sid)] {
        if v != 0 && !valid(v) {
            return Some(format!("{what} {} is not a pid", v as i32));
        }
    }
    if let Some(&t) = p.threads.iter().find(|&&t| !valid(t)) {
        return Some(format!("thread {} is not a pid", t as i32));
    }
    ns_levels_problem(p)
}

/// The levels of a task in a pid namespace below the root's: one pid,
/// group and session at each, the first the same as `pid`, `pgid`,
/// `sid`; 33 at most (the kernel nests 32 pid namespaces).
fn ns_levels_problem(p: &pb::PstreeEntry) -> Option<String> {
    let n = p.ns_pid.len();
    if n == 0 {
        return match p.ns_pgid.is_empty() && p.ns_sid.is_empty() && p.tids.is_empty() {
            true => None,
            false => Some("ns_pgid, ns_sid or tids without ns_pid".into()),
        };
    }
    if !(2..=33).contains(&n) {
        return Some(format!(
            "ns_pid {:?}: a task below the root's pid namespace has 2 to 33 levels",
            p.ns_pid
        ));
    }
    if p.ns_pid[0] != p.pid || p.ns_pid.iter().any(|&v| !(1..=PID_MAX_LIMIT).contains(&v)) {
        return Some(format!(
            "ns_pid {:?} does not start with its pid {} or holds a non-pid",
            p.ns_pid, p.pid
        ));
    }
    for (what, levels, first) in [
        ("ns_pgid", &p.ns_pgid, p.pgid),
        ("ns_sid", &p.ns_sid, p.sid),
    ] {
        if levels.len() != n || levels[0] != first {
            return Some(format!(
                "{what} {levels:?} does not match ns_pid {:?} (one id a level, the first {first})",
                p.ns_pid
            ));
        }
    }
    None
}

impl ImageSet {
    /// Reads everything in `dir`. Fails only when the directory itself
    /// cannot be listed; every other problem is recorded in the result.
    pub fn read(dir: &Path) -> crate::Result<ImageSet> {
        read(dir, &BTreeMap::new(), false)
    }

    /// As [`read`](Self::read), leaving the content of the pages files
    /// that have block checksums unchecked (their sizes are checked): a
    /// lazy restore checks their blocks as it reads them
    /// ([`crate::images::manifest::DeferredBlocks`]).
    pub fn read_deferring_pages(dir: &Path) -> crate::Result<ImageSet> {
        read(dir, &BTreeMap::new(), true)
    }

    /// As [`read`](Self::read), with the pages files `elsewhere` (name and
    /// size) held by a page server that vouched for them against this
    /// directory's manifest (`restore --lazy-pages --page-server`): one
    /// absent here is not missing.
    pub fn read_elsewhere(
        dir: &Path,
        elsewhere: &BTreeMap<String, u64>,
    ) -> crate::Result<ImageSet> {
        read(dir, elsewhere, false)
    }
}

fn read(
    dir: &Path,
    elsewhere: &BTreeMap<String, u64>,
    defer_pages: bool,
) -> crate::Result<ImageSet> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => "the image directory does not exist",
            std::io::ErrorKind::NotADirectory => "not a directory (give the image directory)",
            _ => "listing the image directory",
        };
        crate::Error::io(dir, what, e)
    })?;
    let mut names: Vec<(String, u64)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| crate::Error::io(dir, "listing the image directory", e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let md = entry.metadata().ok();
        if md.as_ref().is_some_and(|m| m.is_dir()) || name == MANIFEST_NAME {
            continue;
        }
        names.push((name, md.map_or(0, |m| m.len())));
    }
    for (name, &size) in elsewhere {
        if pages_file_id(name).is_some() && !names.iter().any(|(n, _)| n == name) {
            names.push((name.clone(), size));
        }
    }
    names.sort_by(|a, b| natural_cmp(&a.0, &b.0));

    let ld = Loader {
        dir,
        prefix: format!("{}/", dir.display()),
    };
    let mut problems = Vec::new();

    // The manifest first: its verdict marks the files below.
    let mut mapped = Mapped::new();
    let manifest = if !dir.join(MANIFEST_NAME).exists() {
        ManifestStatus::Absent
    } else {
        let mut found =
            match Manifest::verify_mapping(dir, |n| defer_pages && pages_file_id(n).is_some()) {
                Ok(m) => {
                    mapped = m;
                    Vec::new()
                }
                Err(e) => e.problems,
            };
        found.retain(
            |p| !matches!(p, ManifestProblem::Missing { name } if elsewhere.contains_key(name)),
        );
        if found.is_empty() {
            let m = Manifest::read(dir).unwrap_or_default();
            ManifestStatus::Ok {
                files: m.len(),
                bytes: m.iter().map(|(_, d)| d.size).sum(),
            }
        } else {
            ManifestStatus::Problems(found)
        }
    };
    let mut damaged: BTreeMap<String, String> = BTreeMap::new();
    if let ManifestStatus::Problems(ps) = &manifest {
        for p in ps {
            problems.push(p.to_string());
            let text = p.to_string();
            let short = text
                .strip_prefix(&format!("{}: ", p.name()))
                .unwrap_or(&text)
                .to_string();
            damaged.entry(p.name().to_string()).or_insert(short);
        }
    }

    let files: Vec<DirFile> = names
        .iter()
        .map(|(name, size)| DirFile {
            name: name.clone(),
            size: *size,
            kind: ImageKind::of_file_name(name).map(|(k, _)| k.key),
            magic: None,
            entries: None,
            error: None,
            damaged: damaged.get(name).cloned(),
        })
        .collect();

    let inventory = ld.one::<pb::InventoryEntry>("inventory.img", Magic::Inventory);
    let pstree = ld.all::<pb::PstreeEntry>("pstree.img", Magic::Pstree);
    let files_img = ld
        .all::<pb::FileEntry>("files.img", Magic::Files)
        .map(|list| {
            let mut m = BTreeMap::new();
            for f in list {
                let id = f.id;
                if m.insert(id, f).is_some() {
                    problems.push(format!("files.img: file id {id} appears twice"));
                }
            }
            m
        });
    // A pre-dump (images/chain.rs) holds memory and the tree only: the
    // images of the rest are not missing there.
    let pre_dump = inventory.as_ref().is_ok_and(|i| i.pre_dump_mode.is_some());
    let expected = |e: &Absent| !(pre_dump && matches!(e, Absent::Missing(_)));
    for part in [
        inventory.as_ref().err(),
        pstree.as_ref().err(),
        files_img.as_ref().err().filter(|e| expected(e)),
    ]
    .into_iter()
    .flatten()
    {
        problems.push(part.to_string());
    }

    // The tasks: from the tree, or, without a readable tree, from the
    // core images that hold a task core.
    let tree: Vec<(pb::PstreeEntry, bool)> = match &pstree {
        Ok(list) => list.iter().map(|p| (p.clone(), true)).collect(),
        Err(_) => names
            .iter()
            .filter_map(|(n, _)| {
                let pid: u32 = n
                    .strip_prefix("core-")?
                    .strip_suffix(".img")?
                    .parse()
                    .ok()?;
                let core: pb::CoreEntry = images::read_one(dir.join(n), Magic::Core).ok()?;
                core.tc.as_ref()?;
                Some((
                    pb::PstreeEntry {
                        pid,
                        threads: vec![pid],
                        ..Default::default()
                    },
                    false,
                ))
            })
            .collect(),
    };
    let mut seen = BTreeSet::new();
    let mut tasks = Vec::new();
    for (p, in_pstree) in tree {
        let pid = p.pid;
        if let Some(why) = pstree_entry_problem(&p) {
            problems.push(format!("pstree.img: task {pid}: {why}"));
            continue;
        }
        if !seen.insert(pid) {
            problems.push(format!("pstree.img: pid {pid} appears twice"));
            continue;
        }
        let mut tids: Vec<u32> = p.threads.iter().copied().filter(|&t| t != pid).collect();
        tids.sort_unstable();
        tids.dedup();
        tids.insert(0, pid);
        let threads: Vec<Thread> = tids
            .into_iter()
            .map(|tid| Thread {
                tid,
                core: ld.one(&format!("core-{tid}.img"), Magic::Core),
            })
            .collect();
        let core_ids = threads[0].core.as_ref().ok().and_then(|c| c.ids);
        let ids_name = format!("ids-{pid}.img");
        let ids = match ld.one::<pb::TaskKobjIdsEntry>(&ids_name, Magic::Ids) {
            // CRIU keeps the ids in the core image only.
            Err(Absent::Missing(n)) => core_ids.ok_or(Absent::Missing(n)),
            other => other,
        };
        let fdinfo_name = ids
            .as_ref()
            .ok()
            .map(|i| format!("fdinfo-{}.img", i.files_id));
        let fdinfo = match &fdinfo_name {
            Some(n) => ld.all(n, Magic::Fdinfo),
            None if pre_dump => Err(Absent::Missing(format!("fdinfo of pid {pid}"))),
            None => Err(Absent::Bad(format!(
                "pid {pid}: the files id is unknown ({ids_name} cannot be read), so are its fds"
            ))),
        };
        let task = Task {
            tree: p,
            in_pstree,
            threads,
            mm: ld.one(&format!("mm-{pid}.img"), Magic::Mm),
            pagemap: ld.pagemap(&format!("pagemap-{pid}.img")),
            fs: ld.one(&format!("fs-{pid}.img"), Magic::Fs),
            ids,
            fdinfo_name,
            fdinfo,
        };
        for t in &task.threads {
            if let Err(e) = &t.core {
                if expected(e) {
                    problems.push(e.to_string());
                }
            }
        }
        let zombie = task.is_zombie();
        for e in [
            task.ids.as_ref().err().filter(|e| expected(e)),
            task.mm.as_ref().err(),
            task.pagemap.as_ref().err(),
            task.fs.as_ref().err().filter(|e| expected(e)),
            task.fdinfo.as_ref().err().filter(|e| expected(e)),
        ]
        .into_iter()
        .flatten()
        .filter(|_| !zombie)
        {
            if !problems.contains(&e.to_string()) {
                problems.push(e.to_string());
            }
        }
        tasks.push(task);
    }

    let (mut pipe_data, mut fifo_data) = (BTreeMap::new(), BTreeMap::new());
    for (name, magic, into) in [
        ("pipes-data.img", Magic::PipesData, &mut pipe_data),
        ("fifo-data.img", Magic::FifoData, &mut fifo_data),
    ] {
        let read = || -> images::Result<Vec<(u32, PipeData)>> {
            let path = dir.join(name);
            let mut r = ImageReader::open(&path, magic)?;
            let mut out = Vec::new();
            while let Some(e) = r.read_entry::<pb::PipeDataEntry>()? {
                if e.bytes as u64 > MAX_QUEUED_BYTES {
                    return Err(ImageError::invalid(
                        &path,
                        format!(
                            "pipe {}: {} bytes of data is implausible",
                            e.pipe_id, e.bytes
                        ),
                    ));
                }
                if e.size.is_some_and(|s| e.bytes > s) {
                    return Err(ImageError::invalid(
                        &path,
                        format!(
                            "pipe {}: {} bytes of data do not fit its size of {}",
                            e.pipe_id,
                            e.bytes,
                            e.size.unwrap_or_default()
                        ),
                    ));
                }
                let mut bytes = vec![0u8; e.bytes as usize];
                r.read_raw(&mut bytes)?;
                let size = e.size;
                out.push((e.pipe_id, PipeData { bytes, size }));
            }
            Ok(out)
        };
        match read().map_err(|e| ld.absent(name, e)) {
            Ok(list) => into.extend(list),
            Err(Absent::Missing(_)) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }

    let mut sk_queues: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut sk_queue_addrs: BTreeMap<u32, Vec<Option<Vec<u8>>>> = BTreeMap::new();
    let mut sk_queue_scm: BTreeMap<u32, Vec<Ancillary>> = BTreeMap::new();
    // (socket file id, bytes, source address, ancillary data)
    type Queued = (u32, Vec<u8>, Option<Vec<u8>>, Ancillary);
    let read = || -> images::Result<Vec<Queued>> {
        let path = dir.join("sk-queues.img");
        let mut r = ImageReader::open(&path, Magic::SkQueues)?;
        let mut out = Vec::new();
        let mut total = 0u64;
        while let Some(e) = r.read_entry::<pb::SkPacketEntry>()? {
            total += e.length as u64;
            if total > MAX_QUEUED_BYTES {
                return Err(ImageError::invalid(
                    &path,
                    format!(
                        "socket file {}: {total} bytes queued is implausible",
                        e.id_for
                    ),
                ));
            }
            let mut anc = Ancillary {
                rights: Vec::new(),
                creds: e.ucred.map(|u| (u.pid as i32, u.uid, u.gid)),
            };
            if anc.creds.is_some_and(|c| c.0 <= 0) {
                return Err(ImageError::invalid(
                    &path,
                    format!(
                        "socket file {}: a queued message from sender pid {}",
                        e.id_for,
                        e.ucred.map_or(0, |u| u.pid)
                    ),
                ));
            }
            for scm in &e.scm {
                if scm.r#type != libc::SCM_RIGHTS as u32 || !anc.rights.is_empty() {
                    return Err(ImageError::invalid(
                        &path,
                        format!(
                            "socket file {}: a queued message carries ancillary data of type {}{}, which cannot be restored",
                            e.id_for,
                            scm.r#type,
                            if scm.r#type == libc::SCM_RIGHTS as u32 { " twice" } else { "" }
                        ),
                    ));
                }
                if scm.rights.is_empty() || scm.rights.len() > 253 {
                    return Err(ImageError::invalid(
                        &path,
                        format!(
                            "socket file {}: a queued message with {} files in flight (1 to 253)",
                            e.id_for,
                            scm.rights.len()
                        ),
                    ));
                }
                anc.rights = scm.rights.clone();
            }
            let mut bytes = vec![0u8; e.length as usize];
            r.read_raw(&mut bytes)?;
            out.push((e.id_for, bytes, e.addr, anc));
        }
        Ok(out)
    };
    match read().map_err(|e| ld.absent("sk-queues.img", e)) {
        Ok(list) => {
            for (id, m, addr, anc) in list {
                sk_queues.entry(id).or_default().push(m);
                sk_queue_addrs.entry(id).or_default().push(addr);
                sk_queue_scm.entry(id).or_default().push(anc);
            }
        }
        Err(Absent::Missing(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }

    let mut tty_info = BTreeMap::new();
    match ld.all::<pb::TtyInfoEntry>("tty-info.img", Magic::TtyInfo) {
        Ok(list) => {
            for e in list {
                let id = e.id;
                if tty_info.insert(id, e).is_some() {
                    problems.push(format!("tty-info.img: tty id {id} is used twice"));
                }
            }
        }
        Err(Absent::Missing(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }
    let mut tty_data: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    match ld.all::<pb::TtyDataEntry>("tty-data.img", Magic::TtyData) {
        Ok(list) => {
            for e in list {
                tty_data.entry(e.tty_id).or_default().extend(e.data);
            }
        }
        Err(Absent::Missing(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }

    let mut shmem = BTreeMap::new();
    let mut shmem_part = |shmid: u64, problems: &mut Vec<String>| {
        if let std::collections::btree_map::Entry::Vacant(slot) = shmem.entry(shmid) {
            let set = match ld.pagemap(&format!("pagemap-shmem-{shmid}.img")) {
                Err(Absent::Missing(_)) => Ok(PageSet::default()),
                other => other,
            };
            if let Err(e) = &set {
                problems.push(e.to_string());
            }
            slot.insert(set);
        }
    };
    for t in &tasks {
        let Ok(mm) = &t.mm else { continue };
        for v in mm.vmas.iter().filter(|v| v.status & VMA_ANON_SHARED != 0) {
            shmem_part(v.shmid, &mut problems);
        }
    }

    // memfd objects: their contents are shmem pagemaps too.
    let mut memfds = BTreeMap::new();
    match ld.all::<pb::MemfdInodeEntry>("memfd.img", Magic::MemfdInode) {
        Ok(list) => {
            for e in list {
                shmem_part(e.shmid as u64, &mut problems);
                match u32::try_from(e.inode_id) {
                    Ok(id) if !memfds.contains_key(&id) => {
                        memfds.insert(id, e);
                    }
                    _ => problems.push(format!(
                        "memfd.img: inode id {} is out of range or used twice",
                        e.inode_id
                    )),
                }
            }
        }
        Err(Absent::Missing(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }
    // Unlinked files: which file is which ghost, and the ghosts' contents.
    let mut ghosts = BTreeMap::new();
    let mut ghost_files = BTreeMap::new();
    match ld.all::<pb::RemapFilePathEntry>("remap-fpath.img", Magic::RemapFpath) {
        Ok(list) => {
            for r in list {
                if r.remap_type != Some(pb::RemapType::Ghost as i32) {
                    problems.push(format!(
                        "remap-fpath.img: file {}: remap type {:?} cannot be restored yet (only ghost files)",
                        r.orig_id, r.remap_type
                    ));
                    continue;
                }
                if ghosts.insert(r.orig_id, r.remap_id).is_some() {
                    problems.push(format!(
                        "remap-fpath.img: file {} is remapped twice",
                        r.orig_id
                    ));
                }
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    ghost_files.entry(r.remap_id)
                {
                    let name = format!("ghost-file-{:x}.img", r.remap_id);
                    let part = read_ghost(&dir.join(&name)).map_err(|e| ld.absent(&name, e));
                    if let Err(e) = &part {
                        problems.push(e.to_string());
                    }
                    slot.insert(part);
                }
            }
        }
        Err(Absent::Missing(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }
    let mut tcp_streams = BTreeMap::new();
    if let Ok(files) = &files_img {
        for f in files.values() {
            let Some(i) = &f.isk else { continue };
            if i.proto as i32 != libc::IPPROTO_TCP
                || matches!(
                    i.state,
                    crate::images::inet::TCP_CLOSE | crate::images::inet::TCP_LISTEN
                )
            {
                continue;
            }
            let name = format!("tcp-stream-{:x}.img", i.ino);
            let part = read_tcp_stream(&dir.join(&name)).map_err(|e| ld.absent(&name, e));
            if let Err(e) = &part {
                problems.push(e.to_string());
            }
            tcp_streams.insert(i.ino, part);
        }
    }
    let cgroups = match ld.one::<pb::CgroupEntry>("cgroup.img", Magic::Cgroup) {
        Err(Absent::Missing(_)) => None,
        other => Some(other),
    };
    if let Some(Err(e)) = &cgroups {
        problems.push(e.to_string());
    }
    let cpuinfo = match ld.one::<pb::CpuinfoEntry>("cpuinfo.img", Magic::Cpuinfo) {
        Err(Absent::Missing(_)) => None,
        other => Some(other),
    };
    if let Some(Err(e)) = &cpuinfo {
        problems.push(e.to_string());
    }
    let seccomp = match ld.one::<pb::SeccompEntry>("seccomp.img", Magic::Seccomp) {
        Err(Absent::Missing(_)) => None,
        other => Some(other),
    };
    if let Some(Err(e)) = &seccomp {
        problems.push(e.to_string());
    }
    let file_locks = match ld.all::<pb::FileLockEntry>("filelocks.img", Magic::FileLocks) {
        Ok(l) => l,
        Err(Absent::Missing(_)) => Vec::new(),
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    let ipc_names: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let sysvipc = sysvipc::read(&ld, &ipc_names, &mut problems);
    let namespaces = ns::read(&ld, &ipc_names, &mut problems);
    let mut set = ImageSet {
        dir: dir.display().to_string(),
        manifest,
        inventory,
        pstree,
        files_img,
        tasks,
        shmem,
        pipe_data,
        fifo_data,
        sk_queues,
        tty_info,
        tty_data,
        sk_queue_addrs,
        sk_queue_scm,
        memfds,
        ghosts,
        ghost_files,
        tcp_streams,
        cgroups,
        cpuinfo,
        seccomp,
        file_locks,
        sysvipc,
        namespaces,
        files,
        problems,
        mapped: std::sync::Arc::new(std::sync::Mutex::new(mapped)),
    };
    let found = cross_check(&set);
    set.problems.extend(found);
    let found = sysvipc::cross_check(&set);
    set.problems.extend(found);
    Ok(set)
}

/// ghost-file-ID.img: the entry and the file's data, checked against the
/// size the entry gives (contents whole to the end of the image, or in
/// chunks that neither overlap nor run past the file).
fn read_tcp_stream(path: &Path) -> images::Result<TcpStream> {
    let bad = |why: String| ImageError::invalid(path, why);
    let mut r = ImageReader::open(path, Magic::TcpStream)?;
    let e: pb::TcpStreamEntry = r
        .read_entry()?
        .ok_or_else(|| bad("no tcp_stream_entry".into()))?;
    if e.inq_len as u64 + e.outq_len as u64 > MAX_QUEUED_BYTES {
        return Err(bad(format!(
            "{} + {} bytes queued is implausible",
            e.inq_len, e.outq_len
        )));
    }
    if e.unsq_len.unwrap_or(0) > e.outq_len {
        return Err(bad(format!(
            "{} bytes never sent of a send queue of {}",
            e.unsq_len.unwrap_or(0),
            e.outq_len
        )));
    }
    let mut inq = vec![0u8; e.inq_len as usize];
    r.read_raw(&mut inq)?;
    let mut outq = vec![0u8; e.outq_len as usize];
    r.read_raw(&mut outq)?;
    if r.read_entry::<pb::TcpStreamEntry>()?.is_some() {
        return Err(bad("more than one tcp_stream_entry".into()));
    }
    Ok(TcpStream {
        entry: e,
        inq,
        outq,
    })
}

fn read_ghost(path: &Path) -> images::Result<(pb::GhostFileEntry, Chunks)> {
    let bad = |why: String| ImageError::invalid(path, why);
    let len = std::fs::metadata(path)
        .map_err(|e| ImageError::io(path, "stat", e))?
        .len();
    let mut r = ImageReader::open(path, Magic::GhostFile)?;
    let e: pb::GhostFileEntry = r
        .read_entry()?
        .ok_or_else(|| bad("no ghost_file_entry".into()))?;
    if e.symlnk_target.is_some() {
        return Err(bad("ghost symlinks cannot be restored yet".into()));
    }
    if e.mode & libc::S_IFMT == libc::S_IFIFO {
        // A FIFO's ghost is the entry alone: its data is in fifo-data.img.
        if e.chunks == Some(true) || e.size.is_some_and(|s| s != 0) || r.offset() != len {
            return Err(bad("a FIFO's ghost with contents".into()));
        }
        return Ok((e, Vec::new()));
    }
    if e.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(bad(format!(
            "mode {:#o} is neither a regular file nor a FIFO",
            e.mode
        )));
    }
    let size = e.size.ok_or_else(|| bad("no size".into()))?;
    if e.chunks != Some(true) {
        // The contents, whole, to the end of the file.
        let rest = len - r.offset();
        if rest != size {
            return Err(bad(format!(
                "the file was {size} bytes but the image holds {rest} bytes of it"
            )));
        }
        let mut data = vec![0u8; size as usize];
        r.read_raw(&mut data)?;
        return Ok((e, vec![(0, data)]));
    }
    let mut chunks = Vec::new();
    let mut end = 0u64;
    while let Some(c) = r.read_entry::<pb::GhostChunkEntry>()? {
        let past = c.off.checked_add(c.len).filter(|&p| p <= size);
        let Some(past) = past.filter(|_| c.off >= end && c.len <= len - r.offset()) else {
            return Err(bad(format!(
                "chunk of {} bytes at offset {} overlaps another, lies outside the file's {size} bytes or runs past the image",
                c.len, c.off
            )));
        };
        let mut data = vec![0u8; c.len as usize];
        r.read_raw(&mut data)?;
        chunks.push((c.off, data));
        end = past;
    }
    Ok((e, chunks))
}

/// References between images that do not hold.
fn cross_check(set: &ImageSet) -> Vec<String> {
    let mut out = Vec::new();
    let have_files = set.files_img.is_ok();
    let need = |id: u32, what: String, img: &str, out: &mut Vec<String>| {
        if have_files && set.file(id).is_none() {
            out.push(format!(
                "{img}: {what} refers to file id {id}, which files.img does not have"
            ));
        }
    };
    for t in &set.tasks {
        let pid = t.pid();
        if let (Ok(fds), Some(name)) = (&t.fdinfo, &t.fdinfo_name) {
            for fd in fds {
                need(fd.id, format!("fd {}", fd.fd), name, &mut out);
            }
        }
        if let Ok(fs) = &t.fs {
            let n = format!("fs-{pid}.img");
            need(fs.cwd_id, "cwd".into(), &n, &mut out);
            need(fs.root_id, "root".into(), &n, &mut out);
        }
        let mm_name = format!("mm-{pid}.img");
        if let Ok(mm) = &t.mm {
            if mm.exe_file_id != 0 {
                need(mm.exe_file_id, "exe".into(), &mm_name, &mut out);
            }
            let mut prev_end = 0;
            for v in &mm.vmas {
                let what = format!("mapping {:#x}-{:#x}", v.start, v.end);
                if v.start >= v.end || v.start % PAGE != 0 || v.end % PAGE != 0 {
                    out.push(format!("{mm_name}: {what} is malformed"));
                } else if v.start < prev_end {
                    out.push(format!("{mm_name}: {what} overlaps the mapping before it"));
                }
                prev_end = prev_end.max(v.end);
                if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
                    need(v.shmid as u32, what, &mm_name, &mut out);
                }
            }
            if let Ok(pm) = &t.pagemap {
                let pm_name = format!("pagemap-{pid}.img");
                for e in &crate::images::pagemap::split_at_mappings(&pm.entries, &mm.vmas) {
                    let what = format!("{pm_name}: pages at {:#x} ({} pages)", e.vaddr, e.nr_pages);
                    let Some(end) = (e.nr_pages as u64)
                        .checked_mul(PAGE)
                        .and_then(|n| e.vaddr.checked_add(n))
                        .filter(|_| e.nr_pages != 0 && e.vaddr % PAGE == 0)
                    else {
                        out.push(format!("{what}: not a page-aligned, non-empty range"));
                        continue;
                    };
                    let ok = mm.vmas.iter().any(|v| {
                        v.start <= e.vaddr
                            && end <= v.end
                            && (v.status & VMA_AREA_VDSO != 0
                                || (v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE) != 0
                                    && v.status & (VMA_AREA_VVAR | VMA_AREA_VSYSCALL) == 0))
                    });
                    if !ok {
                        out.push(format!(
                            "{pm_name}: pages {:#x}-{end:#x} do not lie inside one private mapping of {mm_name}",
                            e.vaddr
                        ));
                    }
                    let flags = e.flags.unwrap_or(0);
                    if flags & PE_PRESENT != 0 && flags & PE_COW_PARENT != 0 {
                        out.push(format!(
                            "{what}: marked both stored here and shared with the parent"
                        ));
                    }
                }
            }
        }
    }
    // Files in flight are in files.img; only UNIX sockets carry them.
    for (id, q) in &set.sk_queue_scm {
        for a in q {
            for r in &a.rights {
                need(
                    *r,
                    format!("a file in flight to file id {id}"),
                    "sk-queues.img",
                    &mut out,
                );
            }
            if (!a.rights.is_empty() || a.creds.is_some())
                && set.file(*id).is_some_and(|f| f.usk.is_none())
            {
                out.push(format!(
                    "sk-queues.img: ancillary data queued for file id {id}, which is not a UNIX socket"
                ));
            }
        }
    }
    // Queued data belongs to a socket of files.img.
    for id in set.sk_queues.keys() {
        match set.file(*id) {
            Some(f) if f.usk.is_some() => {}
            Some(f) if f.isk.as_ref().is_some_and(|i| i.r#type == libc::SOCK_DGRAM as u32) => {}
            // Put back by sending them to itself, which needs a port id.
            Some(f) if f.nlsk.as_ref().is_some_and(|n| n.portid != 0) => {}
            Some(f) if f.nlsk.is_some() => out.push(format!(
                "sk-queues.img: messages queued for the netlink socket of file id {id}, which has no port id"
            )),
            Some(_) => out.push(format!(
                "sk-queues.img: data queued for file id {id}, which is not a UNIX socket, an INET datagram socket or a netlink socket"
            )),
            None => need(*id, "queued data".into(), "sk-queues.img", &mut out),
        }
    }
    // Terminals: every tty file names a tty of tty-info.img, and queued
    // data belongs to one.
    if let Ok(files) = &set.files_img {
        for f in files.values() {
            if let Some(t) = &f.tty {
                if !set.tty_info.contains_key(&t.tty_info_id) {
                    out.push(format!(
                        "files.img: tty file {} names tty {}, which tty-info.img does not have",
                        f.id, t.tty_info_id
                    ));
                }
            }
        }
    }
    for id in set.tty_data.keys() {
        if !set.tty_info.contains_key(id) {
            out.push(format!(
                "tty-data.img: data queued for tty {id}, which tty-info.img does not have"
            ));
        }
    }
    // Every task's and thread's cgroup set is in cgroup.img.
    for t in &set.tasks {
        for th in &t.threads {
            let Ok(core) = &th.core else { continue };
            let ids = [
                core.tc.as_ref().and_then(|tc| tc.cg_set),
                core.thread_core.as_ref().and_then(|tc| tc.cg_set),
            ];
            for id in ids.into_iter().flatten() {
                // CRIU leaves out the set that is its own cgroups (the
                // inventory's root_cg_set): such tasks stay where born.
                let dumpers = set.inventory.as_ref().ok().and_then(|i| i.root_cg_set);
                let known = match &set.cgroups {
                    Some(Ok(cg)) => cg.sets.iter().any(|s| s.id == id) || dumpers == Some(id),
                    Some(Err(_)) => true, // reported already
                    // CRIU writes none when every task's cgroups are its
                    // own: the tasks stay where the restore makes them.
                    None => true,
                };
                let p = format!("core-{}.img: cgroup set {id} is not in cgroup.img", th.tid);
                if !known && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    // Every pages file holds exactly the pages its pagemaps list.
    let mut by_pages: BTreeMap<u32, (u64, Vec<String>)> = BTreeMap::new();
    for t in &set.tasks {
        if let Ok(pm) = &t.pagemap {
            let e = by_pages.entry(pm.pages_id).or_default();
            e.0 += pm.stored_pages();
            e.1.push(format!("pagemap-{}.img", t.pid()));
        }
    }
    for (shmid, pm) in &set.shmem {
        if let Ok(pm) = pm {
            if pm.pages_id != 0 || !pm.entries.is_empty() {
                let e = by_pages.entry(pm.pages_id).or_default();
                e.0 += pm.stored_pages();
                e.1.push(format!("pagemap-shmem-{shmid}.img"));
            }
        }
    }
    for (id, (pages, users)) in by_pages {
        let name = format!("pages-{id}.img");
        match set.file_size(&name) {
            None if pages > 0 => out.push(format!(
                "{name}: missing, but {} say it holds {pages} page(s)",
                users.join(", ")
            )),
            Some(size) if size != pages * PAGE => out.push(format!(
                "{name}: holds {size} bytes, but {} say it holds {pages} page(s) ({} bytes)",
                users.join(", "),
                pages * PAGE
            )),
            _ => {}
        }
    }
    out
}
