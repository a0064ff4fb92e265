//! Reading an image directory for `show`.
//!
//! Nothing here stops at the first problem: every image that can be read
//! is read, every one that cannot is kept as an [`Absent`] with the
//! reason, and the cross-references between images (fds to files, pages
//! to mappings, pagemaps to pages files) are checked and reported, so
//! that a damaged directory still shows everything that is left of it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::images::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use crate::images::{
    self, pb, Head, ImageError, ImageKind, Magic, Manifest, ManifestProblem, Payload, IMAGE_KINDS,
    MANIFEST_NAME, MAX_ENTRY_SIZE,
};

use crate::images::pagemap::{entry_cow, entry_present, PAGE};
use crate::images::task::TASK_DEAD;
use crate::images::vma::{
    VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
    VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};

use super::names;

/// Why an image is not there to show.
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

impl PageSet {
    /// Pages stored in the pages file (entries flagged as in a parent
    /// image or lazy are not).
    pub fn stored_pages(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| entry_present(e))
            .map(|e| e.nr_pages as u64)
            .sum()
    }

    /// Stored pages between `start` and `end` (addresses for a private
    /// pagemap, object offsets for a shmem one).
    pub fn pages_in(&self, start: u64, end: u64) -> u64 {
        self.entries
            .iter()
            .filter(|e| entry_present(e))
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

// >>> issue 5: pages shared with the parent (PE_COW_PARENT)
impl PageSet {
    /// Pages recorded as the parent's own (still shared copy-on-write
    /// since the fork), between `start` and `end`; none are stored here.
    pub fn cow_pages_in(&self, start: u64, end: u64) -> u64 {
        self.entries
            .iter()
            .filter(|e| entry_cow(e))
            .map(|e| {
                let (s, t) = (e.vaddr, e.vaddr + e.nr_pages as u64 * PAGE);
                (t.min(end)).saturating_sub(s.max(start)) / PAGE
            })
            .sum()
    }
}
// <<< issue 5

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
                .is_ok_and(|c| c.tc.as_ref().is_some_and(|tc| tc.task_state == TASK_DEAD))
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

/// A file of the directory, as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirFile {
    pub name: String,
    pub size: u64,
    /// The image kind its name says (CRIU's CR_FD_* key), if any.
    pub kind: Option<&'static str>,
    /// The magic its header holds ("CORE"; "RAW" for raw images).
    pub magic: Option<String>,
    /// Protobuf entries in it (None for raw images).
    pub entries: Option<u64>,
    /// What is wrong with the file itself (unreadable header, truncated
    /// entry, ...), found by the generic scan.
    pub error: Option<String>,
    /// What the manifest check says about it.
    pub damaged: Option<String>,
}

/// Everything `show` knows about an image directory.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// How to name the directory in the output.
    pub dir: String,
    pub manifest: ManifestStatus,
    pub inventory: Part<pb::InventoryEntry>,
    pub pstree: Part<Vec<pb::PstreeEntry>>,
    pub files_img: Part<BTreeMap<u32, pb::FileEntry>>,
    /// Tasks in pid order.
    pub tasks: Vec<Task>,
    /// pagemap-shmem-<shmid>.img of every shared anonymous mapping; a
    /// missing one means no stored pages.
    pub shmem: BTreeMap<u64, Part<PageSet>>,
    /// Bytes buffered in pipes and fifos (pipes-data.img, fifo-data.img),
    /// by pipe id (inode): (bytes, pipe size if known).
    pub pipe_data: BTreeMap<u32, (u64, Option<u32>)>,
    // >>> issue 5: memfd objects (memfd.img, by inode id) and ghost files
    // (remap-fpath.img: file id -> ghost id)
    pub memfds: BTreeMap<u64, pb::MemfdInodeEntry>,
    pub ghosts: BTreeMap<u32, u32>,
    // <<< issue 5
    /// cgroup.img (issue 6); None when the directory has none.
    pub cgroups: Option<Part<pb::CgroupEntry>>,
    /// Every file of the directory but the manifest, in natural order.
    pub files: Vec<DirFile>,
    /// Every problem found, each naming its file.
    pub problems: Vec<String>,
    /// SysV IPC objects (issue 5).
    pub sysvipc: super::ipc::SysvIpc,
}

impl ImageSet {
    /// The file entry with this id, if files.img has it.
    pub fn file(&self, id: u32) -> Option<&pb::FileEntry> {
        self.files_img.as_ref().ok().and_then(|m| m.get(&id))
    }

    /// The path of a regular file entry, or a description of another
    /// kind of file; None if files.img does not have the id.
    pub fn file_path(&self, id: u32) -> Option<String> {
        self.file(id).map(|f| self.describe(f).path)
    }

    /// A file entry described, with what other images add to it (the
    /// data buffered in a pipe).
    pub fn describe(&self, f: &pb::FileEntry) -> FileView {
        let mut v = describe_file(f);
        let pipe_id = f
            .pipe
            .as_ref()
            .map(|p| p.pipe_id)
            .or(f.fifo.as_ref().map(|p| p.pipe_id));
        if let Some(id) = pipe_id {
            match self.pipe_data.get(&id) {
                Some(&(bytes, size)) => {
                    v.extra
                        .push(("buffered".into(), names::count(bytes, "byte")));
                    if let Some(size) = size {
                        v.extra
                            .push(("pipe size".into(), names::human(size as u64)));
                    }
                }
                None => v.extra.push(("buffered".into(), "nothing".into())),
            }
        }
        // >>> issue 5: a memfd's name and object; an unlinked file's ghost
        if let Some(i) = f
            .memfd
            .as_ref()
            .and_then(|m| self.memfds.get(&(m.inode_id as u64)))
        {
            v.path = format!("/memfd:{}", i.name);
            v.extra.push((
                "memfd inode".into(),
                format!("{}, {}", i.inode_id, names::human(i.size)),
            ));
            v.extra.push((
                "seals".into(),
                names::flags(i.seals as u64, MEMFD_SEALS, "none"),
            ));
        }
        if let Some(g) = self.ghosts.get(&f.id) {
            v.extra.push((
                "unlinked".into(),
                format!("contents in ghost-file-{g:x}.img"),
            ));
        }
        // <<< issue 5
        v
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

    /// Stored pages of one mapping of `task`.
    pub fn vma_pages(&self, task: &Task, v: &pb::VmaEntry) -> u64 {
        if v.status & VMA_ANON_SHARED != 0 {
            match self.shmem.get(&v.shmid) {
                Some(Ok(set)) => set.pages_in(v.pgoff, v.pgoff + (v.end - v.start)),
                _ => 0,
            }
        } else {
            match &task.pagemap {
                Ok(set) => set.pages_in(v.start, v.end),
                Err(_) => 0,
            }
        }
    }
}

// issue 5: F_SEAL_* names.
const MEMFD_SEALS: names::Flags = &[
    (0x1, "F_SEAL_SEAL"),
    (0x2, "F_SEAL_SHRINK"),
    (0x4, "F_SEAL_GROW"),
    (0x8, "F_SEAL_WRITE"),
    (0x10, "F_SEAL_FUTURE_WRITE"),
    (0x20, "F_SEAL_EXEC"),
];

/// A file entry of files.img, described for people.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileView {
    /// "REG", "PIPE", ... (fd_types).
    pub kind: String,
    /// The path of a regular file; "pipe:[ID]" and the like otherwise.
    pub path: String,
    pub flags: Option<u32>,
    pub pos: Option<u64>,
    /// Other facts worth a look (size, mode, counter, ...), as key/value.
    pub extra: Vec<(String, String)>,
}

pub fn fd_type_name(t: i32) -> String {
    pb::FdTypes::try_from(t)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type {t}"))
}

pub fn describe_file(f: &pb::FileEntry) -> FileView {
    use super::names;
    let mut v = FileView {
        kind: fd_type_name(f.r#type),
        path: format!("{} file {}", fd_type_name(f.r#type), f.id),
        ..Default::default()
    };
    if let Some(r) = &f.reg {
        v.path = r.name.clone();
        v.flags = Some(r.flags);
        v.pos = Some(r.pos);
        if let Some(m) = r.mode {
            v.extra
                .push(("file type".into(), names::file_type(m).to_string()));
            v.extra.push(("mode".into(), format!("{:04o}", m & 0o7777)));
        }
        if let Some(s) = r.size {
            v.extra.push(("size".into(), names::human(s)));
        }
        if let Some(m) = r.mnt_id {
            v.extra.push(("mnt_id".into(), m.to_string()));
        }
    } else if let Some(p) = &f.pipe {
        v.path = format!("pipe:[{}]", p.pipe_id);
        v.flags = Some(p.flags);
    } else if let Some(p) = &f.fifo {
        v.path = format!("fifo:[{}]", p.pipe_id);
    } else if let Some(e) = &f.efd {
        v.path = "anon_inode:[eventfd]".into();
        v.flags = Some(e.flags);
        v.extra.push(("counter".into(), e.counter.to_string()));
    } else if let Some(e) = &f.epfd {
        v.path = "anon_inode:[eventpoll]".into();
        v.flags = Some(e.flags);
        let watched: Vec<String> = e
            .tfd
            .iter()
            .map(|t| {
                format!(
                    "fd {} {} data {:#x}",
                    t.tfd,
                    names::flags(t.events as u64, names::EPOLL_EVENTS, "no events"),
                    t.data
                )
            })
            .collect();
        v.extra.push((
            "watches".into(),
            if watched.is_empty() {
                "nothing".into()
            } else {
                watched.join("; ")
            },
        ));
    } else if let Some(s) = &f.sgfd {
        v.path = "anon_inode:[signalfd]".into();
        v.flags = Some(s.flags);
        v.extra.push(("mask".into(), names::sigset(s.sigmask)));
    } else if let Some(t) = &f.tfd {
        v.path = "anon_inode:[timerfd]".into();
        v.flags = Some(t.flags);
        v.extra.push(("clock".into(), names::clock(t.clockid)));
        v.extra.push(("ticks".into(), t.ticks.to_string()));
    } else if let Some(m) = &f.memfd {
        v.path = format!("memfd (inode {})", m.inode_id);
        v.flags = Some(m.flags);
        v.pos = Some(m.pos);
    } else if let Some(t) = &f.tty {
        v.path = format!("tty (tty-info id {})", t.tty_info_id);
        v.flags = Some(t.flags);
    } else if let Some(n) = &f.nsf {
        v.path = format!("namespace file (ns id {})", n.ns_id);
        v.flags = Some(n.flags);
    } else if f.ext.is_some() {
        v.path = "external file".into();
    }
    v
}

// ------------------------------------------------------------------ loading

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

struct Loader<'a> {
    dir: &'a Path,
    prefix: String,
}

impl Loader<'_> {
    /// An image error as text, with the directory taken out of paths.
    fn msg(&self, e: &ImageError) -> String {
        e.to_string().replace(&self.prefix, "")
    }

    fn absent(&self, name: &str, e: ImageError) -> Absent {
        match &e {
            ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Absent::Missing(name.to_string())
            }
            _ => Absent::Bad(self.msg(&e)),
        }
    }

    fn one<M: prost::Message + Default>(&self, name: &str, magic: Magic) -> Part<M> {
        images::read_one(self.dir.join(name), magic).map_err(|e| self.absent(name, e))
    }

    fn all<M: prost::Message + Default>(&self, name: &str, magic: Magic) -> Part<Vec<M>> {
        images::read_all(self.dir.join(name), magic).map_err(|e| self.absent(name, e))
    }

    fn pagemap(&self, name: &str) -> Part<PageSet> {
        let read = || -> images::Result<PageSet> {
            let mut r = images::ImageReader::open(self.dir.join(name), Magic::Pagemap)?;
            let head: pb::PagemapHead = r
                .read_entry()?
                .ok_or_else(|| ImageError::invalid(self.dir.join(name), "no pagemap_head entry"))?;
            let entries = r
                .entries()
                .collect::<images::Result<Vec<pb::PagemapEntry>>>()?;
            Ok(PageSet {
                pages_id: head.pages_id,
                entries,
            })
        };
        read().map_err(|e| self.absent(name, e))
    }
}

/// Reads everything in `dir` that `show` shows. Fails only when the
/// directory itself cannot be listed; every other problem is recorded in
/// the result.
pub fn load(dir: &Path) -> crate::Result<ImageSet> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| crate::Error::io(dir, "listing the image directory", e))?;
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
    names.sort_by(|a, b| natural_cmp(&a.0, &b.0));

    let ld = Loader {
        dir,
        prefix: format!("{}/", dir.display()),
    };
    let mut problems = Vec::new();

    // The manifest first: its verdict marks the files below.
    let manifest = if !dir.join(MANIFEST_NAME).exists() {
        ManifestStatus::Absent
    } else {
        match Manifest::verify(dir) {
            Ok(()) => {
                let m = Manifest::read(dir).unwrap_or_default();
                ManifestStatus::Ok {
                    files: m.len(),
                    bytes: m.iter().map(|(_, d)| d.size).sum(),
                }
            }
            Err(e) => ManifestStatus::Problems(e.problems),
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
        .map(|(name, size)| {
            let kind = ImageKind::of_file_name(name).map(|(k, _)| k);
            let mut scan = scan(&dir.join(name), kind);
            if !name.ends_with(".img") && scan.magic.is_none() {
                scan.error = None;
            }
            DirFile {
                name: name.clone(),
                size: *size,
                kind: kind.map(|k| k.key),
                magic: scan.magic,
                entries: scan.entries,
                error: scan.error,
                damaged: damaged.get(name).cloned(),
            }
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
    for part in [
        inventory.as_ref().err(),
        pstree.as_ref().err(),
        files_img.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        problems.push(part.to_string());
    }

    // The tasks: from the tree, or, without a readable tree, from the
    // core images that hold a task core.
    let mut tree: Vec<(pb::PstreeEntry, bool)> = match &pstree {
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
    tree.sort_by_key(|(p, _)| p.pid);
    let mut seen = BTreeSet::new();
    let mut tasks = Vec::new();
    for (p, in_pstree) in tree {
        let pid = p.pid;
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
                problems.push(e.to_string());
            }
        }
        let zombie = task.is_zombie();
        for e in [
            task.ids.as_ref().err(),
            task.mm.as_ref().err(),
            task.pagemap.as_ref().err(),
            task.fs.as_ref().err(),
            task.fdinfo.as_ref().err(),
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

    let mut pipe_data = BTreeMap::new();
    for (name, magic) in [
        ("pipes-data.img", Magic::PipesData),
        ("fifo-data.img", Magic::FifoData),
    ] {
        let read = || -> images::Result<Vec<(u32, u64, Option<u32>)>> {
            let mut r = images::ImageReader::open(dir.join(name), magic)?;
            let mut out = Vec::new();
            while let Some(e) = r.read_entry::<pb::PipeDataEntry>()? {
                r.skip_raw(e.bytes as u64)?;
                out.push((e.pipe_id, e.bytes as u64, e.size));
            }
            Ok(out)
        };
        match read().map_err(|e| ld.absent(name, e)) {
            Ok(list) => {
                for (id, bytes, size) in list {
                    pipe_data.insert(id, (bytes, size));
                }
            }
            Err(Absent::Missing(_)) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }

    let mut shmem = BTreeMap::new();
    for t in &tasks {
        let Ok(mm) = &t.mm else { continue };
        for v in &mm.vmas {
            if v.status & VMA_ANON_SHARED != 0 && !shmem.contains_key(&v.shmid) {
                let name = format!("pagemap-shmem-{}.img", v.shmid);
                let set = match ld.pagemap(&name) {
                    Err(Absent::Missing(_)) => Ok(PageSet::default()),
                    other => other,
                };
                if let Err(e) = &set {
                    problems.push(e.to_string());
                }
                shmem.insert(v.shmid, set);
            }
        }
    }

    // >>> issue 5: memfd objects and ghost files (a bad image is reported by
    // the generic scan)
    let memfds = ld
        .all::<pb::MemfdInodeEntry>("memfd.img", Magic::MemfdInode)
        .map(|l| l.into_iter().map(|e| (e.inode_id, e)).collect())
        .unwrap_or_default();
    let ghosts = ld
        .all::<pb::RemapFilePathEntry>("remap-fpath.img", Magic::RemapFpath)
        .map(|l| l.into_iter().map(|r| (r.orig_id, r.remap_id)).collect())
        .unwrap_or_default();
    // <<< issue 5
    // >>> issue 6: cgroup.img, and every task's set in it
    let cgroups = match ld.one::<pb::CgroupEntry>("cgroup.img", Magic::Cgroup) {
        Err(Absent::Missing(_)) => None,
        other => Some(other),
    };
    if let Some(Err(e)) = &cgroups {
        problems.push(e.to_string());
    }
    for t in &tasks {
        for th in &t.threads {
            let Ok(core) = &th.core else { continue };
            let ids = [
                core.tc.as_ref().and_then(|tc| tc.cg_set),
                core.thread_core.as_ref().and_then(|tc| tc.cg_set),
            ];
            for id in ids.into_iter().flatten() {
                let known = match &cgroups {
                    Some(Ok(cg)) => cg.sets.iter().any(|s| s.id == id),
                    Some(Err(_)) => true, // reported already
                    None => false,
                };
                let p = format!("core-{}.img: cgroup set {id} is not in cgroup.img", th.tid);
                if !known && !problems.contains(&p) {
                    problems.push(p);
                }
            }
        }
    }
    // <<< issue 6
    // >>> issue 5: SysV IPC objects
    let ipc_names: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let sysvipc = super::ipc::load(dir, &ipc_names, &mut problems);
    // <<< issue 5
    let mut set = ImageSet {
        cgroups,
        sysvipc,
        dir: dir.display().to_string(),
        manifest,
        inventory,
        pstree,
        files_img,
        tasks,
        shmem,
        pipe_data,
        memfds,
        ghosts,
        files,
        problems,
    };
    let found = cross_check(&set);
    set.problems.extend(found);
    let found = super::ipc::cross_check(&set); // issue 5
    set.problems.extend(found);
    // Files that are not images (logs CRIU writes next to its images, notes
    // people leave) are listed, not held against the directory.
    // A file that does not decode is already named by its section; the
    // generic scan adds the files no section reads.
    let manifest_problems: Vec<String> = match &set.manifest {
        ManifestStatus::Problems(ps) => ps.iter().map(|p| p.to_string()).collect(),
        _ => Vec::new(),
    };
    for f in set.files.iter().filter(|f| f.name.ends_with(".img")) {
        if let Some(e) = &f.error {
            let prefix = format!("{}: ", f.name);
            let named = set
                .problems
                .iter()
                .any(|q| q.starts_with(&prefix) && !manifest_problems.contains(q));
            if !named {
                set.problems.push(format!("{prefix}{e}"));
            }
        }
    }
    // "X: missing" says nothing the manifest check has not said.
    let listed_missing: Vec<String> = manifest_problems
        .iter()
        .filter_map(|p| p.strip_suffix(&format!(": listed in {MANIFEST_NAME} but missing")))
        .map(|n| format!("{n}: missing"))
        .collect();
    set.problems.retain(|p| !listed_missing.contains(p));
    Ok(set)
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
                for e in &pm.entries {
                    let end = e.vaddr + e.nr_pages as u64 * PAGE;
                    let ok = mm.vmas.iter().any(|v| {
                        v.start <= e.vaddr
                            && end <= v.end
                            && v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE) != 0
                            && v.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL) == 0
                    });
                    if !ok {
                        out.push(format!(
                            "{pm_name}: pages {:#x}-{end:#x} do not lie inside one private mapping of {mm_name}",
                            e.vaddr
                        ));
                    }
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

// ------------------------------------------------------------------ generic scan

struct Scan {
    magic: Option<String>,
    entries: Option<u64>,
    error: Option<String>,
}

/// The varint fields of an encoded protobuf message, by field number.
fn varint_fields(mut b: &[u8]) -> BTreeMap<u32, u64> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let skip = match wire {
            0 => match varint(&mut b) {
                Some(v) => {
                    out.insert(tag, v);
                    0
                }
                None => break,
            },
            1 => 8,
            2 => match varint(&mut b) {
                Some(n) => n as usize,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        b = &b[skip..];
    }
    out
}

/// Field numbers of the length fields that say how many raw bytes follow
/// an entry (see [`Payload::RawAfterEntry`]).
fn length_field(message: &str, field: &str) -> Option<u32> {
    Some(match (message, field) {
        ("pipe_data_entry", "bytes") => 2,
        ("sk_packet_entry", "length") => 2,
        ("ipc_shm_entry", "size") => 2,
        ("ipc_sem_entry", "nsems") => 2,
        ("tcp_stream_entry", "inq_len") => 1,
        ("tcp_stream_entry", "outq_len") => 3,
        ("bpfmap_data_entry", "keys_bytes") => 2,
        ("bpfmap_data_entry", "values_bytes") => 3,
        _ => return None,
    })
}

/// Raw bytes after an entry of `message`, from a "a+b" / "n*2" field
/// expression.
fn raw_len(message: &str, expr: &str, fields: &BTreeMap<u32, u64>) -> Option<u64> {
    if message == "ipc_shm_entry" && fields.get(&3) == Some(&1) {
        return Some(0); // in_pagemaps: the contents are elsewhere
    }
    let mut total = 0u64;
    for term in expr.split('+') {
        let (name, mul) = match term.split_once('*') {
            Some((n, m)) => (n, m.parse::<u64>().ok()?),
            None => (term, 1),
        };
        let tag = length_field(message, name)?;
        total += fields.get(&tag).copied().unwrap_or(0) * mul;
    }
    Some(total)
}

fn round_up(n: u64, align: u32) -> u64 {
    let a = align.max(1) as u64;
    n.div_ceil(a) * a
}

/// Reads a file's header and counts its entries without knowing their
/// types, following the payload rules of the magic table.
fn scan(path: &Path, kind: Option<&'static ImageKind>) -> Scan {
    let mut s = Scan {
        magic: None,
        entries: None,
        error: None,
    };
    if kind.is_some_and(|k| k.magic.head() == Head::Raw) {
        s.magic = Some(Magic::Raw.name().to_string());
        return s;
    }
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            s.error = Some(format!("cannot open: {e}"));
            return s;
        }
    };
    let mut r = BufReader::new(f);
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                s.error = Some(format!("cannot read: {e}"));
                return s;
            }
        }
    }
    let w0 = (got >= 4).then(|| u32::from_le_bytes(head[0..4].try_into().unwrap()));
    let w1 = (got >= 8).then(|| u32::from_le_bytes(head[4..8].try_into().unwrap()));
    let (value, hdr_len) = match (w0, w1) {
        (Some(a), Some(b)) if a == IMG_COMMON_MAGIC || a == IMG_SERVICE_MAGIC => (b, 8u64),
        (Some(a), _) if Magic::from_value(a).is_some_and(|m| m.head() == Head::MagicOnly) => (a, 4),
        _ => {
            s.error = Some(match (kind, w0) {
                (_, None) => format!("{got} bytes: too short for an image header"),
                (None, Some(a)) => format!("not a CRIU image (starts with {a:#010x})"),
                (Some(k), Some(a)) => format!(
                    "bad header: starts with {a:#010x}, expected the header of a {} image",
                    k.magic.name()
                ),
            });
            return s;
        }
    };
    let magic = Magic::from_value(value);
    s.magic = Some(match magic {
        Some(m) => m.name().to_string(),
        None => format!("unknown magic {value:#010x}"),
    });
    if let (Some(k), Some(m)) = (kind, magic) {
        if k.magic != m {
            s.error = Some(format!(
                "the header says {}, but the file name says {}",
                m.name(),
                k.magic.name()
            ));
        }
    }
    // The payload rules of the kind the name says, or of the first kind
    // with this magic.
    let kind = kind.or_else(|| IMAGE_KINDS.iter().find(|k| Some(k.magic) == magic));
    let Some(kind) = kind else {
        return s;
    };
    // The 8 bytes read may hold the start of the first entry.
    if let Err(e) = r.seek(SeekFrom::Start(hdr_len)) {
        s.error = Some(format!("cannot read: {e}"));
        return s;
    }
    let message = kind.message.unwrap_or("");
    let mut offset = hdr_len;
    let mut count = 0u64;
    let mut buf = Vec::new();
    let mut read_entry =
        |r: &mut BufReader<File>, offset: &mut u64| -> Result<Option<Vec<u8>>, String> {
            let mut len = [0u8; 4];
            let mut n = 0;
            while n < 4 {
                match r.read(&mut len[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(format!("at byte {offset}: {e}")),
                }
            }
            if n == 0 {
                return Ok(None);
            }
            if n < 4 {
                return Err(format!("at byte {offset}: truncated entry length"));
            }
            let len = u32::from_le_bytes(len);
            if len > MAX_ENTRY_SIZE {
                return Err(format!(
                    "at byte {offset}: entry length {len} exceeds the limit (corrupted?)"
                ));
            }
            buf.resize(len as usize, 0);
            r.read_exact(&mut buf)
                .map_err(|_| format!("at byte {offset}: entry of {len} bytes is truncated"))?;
            *offset += 4 + len as u64;
            Ok(Some(buf.clone()))
        };
    let skip = |r: &mut BufReader<File>, offset: &mut u64, n: u64| -> Result<(), String> {
        let copied = std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())
            .map_err(|e| format!("at byte {offset}: {e}"))?;
        if copied < n {
            return Err(format!(
                "at byte {offset}: {n} bytes of raw data expected, {copied} found"
            ));
        }
        *offset += n;
        Ok(())
    };
    let result = (|| -> Result<(), String> {
        while let Some(msg) = read_entry(&mut r, &mut offset)? {
            count += 1;
            let fields = varint_fields(&msg);
            match kind.payload {
                Payload::Entries | Payload::HeadThenEntries { .. } | Payload::RawFile => {}
                Payload::RawAfterEntry { field, align } => {
                    let n = raw_len(message, field, &fields).unwrap_or(0);
                    skip(&mut r, &mut offset, round_up(n, align))?;
                }
                Payload::IpcMsgQueue => {
                    let qnum = fields.get(&3).copied().unwrap_or(0);
                    for _ in 0..qnum {
                        let Some(m) = read_entry(&mut r, &mut offset)? else {
                            return Err(format!("at byte {offset}: message queue ends early"));
                        };
                        count += 1;
                        let msize = varint_fields(&m).get(&2).copied().unwrap_or(0);
                        skip(&mut r, &mut offset, round_up(msize, 8))?;
                    }
                }
                Payload::GhostFile => {
                    if fields.get(&9) == Some(&1) {
                        while let Some(c) = read_entry(&mut r, &mut offset)? {
                            count += 1;
                            let len = varint_fields(&c).get(&1).copied().unwrap_or(0);
                            skip(&mut r, &mut offset, len)?;
                        }
                    }
                    // Otherwise the contents run to the end of the file.
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    s.entries = Some(count);
    if let Err(e) = result {
        s.error.get_or_insert(e);
    }
    s
}
