//! Checking an image directory before anything is created.
//!
//! The directory is read by the one loader `show` uses too
//! ([`ImageSet::read`]): the manifest (every file present, sizes and
//! checksums match), the framing and decoding of every image, and the
//! cross-references every reader needs (every fd names a file entry,
//! every file-backed mapping names a file, every pagemap entry lies inside
//! a private mapping, every pages file has exactly the pages its pagemaps
//! list). A restore refuses a directory with any problem the loader found,
//! then checks what it needs beyond that (registers, the tree's shape,
//! pages shared with the parent, each kind's own objects) and builds the
//! [`Images`] the stages work from. A problem is reported with the file
//! and what is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::images::pagemap::PAGE;
pub use crate::images::set::PageSet;
use crate::images::set::{Absent, ImageSet, ManifestStatus, Part};
use crate::images::task::TASK_DEAD;
use crate::images::vma::{VMA_FILE_PRIVATE, VMA_FILE_SHARED};
use crate::images::{pb, ImageError, ManifestError, MANIFEST_NAME};

#[derive(Debug, Clone)]
pub struct TaskImages {
    pub pid: i32,
    pub pstree: pb::PstreeEntry,
    pub core: pb::CoreEntry,
    pub mm: pb::MmEntry,
    pub pages: PageSet,
    pub fdinfo: Vec<pb::FdinfoEntry>,
    pub fs: pb::FsEntry,
    pub ids: pb::TaskKobjIdsEntry,
    /// The task whose fd table this one shares (CLONE_FILES without
    /// CLONE_THREAD): the top of its chain of parents with the same
    /// files id, which restores the fds and forks this task into the
    /// table. A sharer's `fdinfo` is empty: the fds are the owner's.
    pub fd_table_owner: Option<i32>,
    /// The other threads: (tid, core with thread_info and thread_core).
    pub threads: Vec<(i32, pb::CoreEntry)>,
    /// Where the pages its pagemap has in the parent image are (files in
    /// [`Images::parent_files`]).
    pub parent_runs: Vec<crate::images::chain::ParentRun>,
}

impl TaskImages {
    pub fn tc(&self) -> &pb::TaskCoreEntry {
        self.core.tc.as_ref().expect("validated")
    }
    pub fn thread(&self) -> &pb::ThreadCoreEntry {
        self.core.thread_core.as_ref().expect("validated")
    }
    pub fn info(&self) -> &pb::ThreadInfoX86 {
        self.core.thread_info.as_ref().expect("validated")
    }
}

#[derive(Debug)]
pub struct Images {
    pub dir: PathBuf,
    pub inventory: pb::InventoryEntry,
    pub tasks: Vec<TaskImages>,
    pub files: BTreeMap<u32, pb::FileEntry>,
    /// Shared memory objects (anonymous shared memory, memfd objects) by
    /// shmid.
    pub shmem: BTreeMap<u64, PageSet>,
    /// pipes-data.img: pipe id -> (pipe size, buffered bytes).
    pub pipe_data: BTreeMap<u32, (u32, Vec<u8>)>,
    /// fifo-data.img, likewise.
    pub fifo_data: BTreeMap<u32, (u32, Vec<u8>)>,
    /// sk-queues.img: socket file id -> the messages queued for it.
    pub sk_queues: BTreeMap<u32, Vec<Vec<u8>>>,
    /// tty-info.img, by id.
    pub tty_info: BTreeMap<u32, pb::TtyInfoEntry>,
    /// tty-data.img: tty id -> what a read on it returns next.
    pub tty_data: BTreeMap<u32, Vec<u8>>,
    /// sk-queues.img: the source address of each datagram, for INET
    /// sockets (same order).
    pub sk_queue_addrs: BTreeMap<u32, Vec<Option<Vec<u8>>>>,
    /// sk-queues.img: the files in flight and credentials of each message
    /// (same order).
    pub sk_queue_scm: BTreeMap<u32, Vec<crate::images::set::Ancillary>>,
    /// tcp-stream-INO.img of every TCP connection, by socket inode.
    pub tcp_streams: BTreeMap<u32, crate::images::set::TcpStream>,
    pub zombies: Vec<Zombie>,
    /// memfd objects, by inode id.
    pub memfds: BTreeMap<u32, pb::MemfdInodeEntry>,
    /// Unlinked files.
    pub ghosts: super::ghost::Ghosts,
    /// seccomp.img's filters (empty without one).
    pub seccomp: Vec<pb::SeccompFilter>,
    /// cgroup.img, if the images have one.
    pub cgroups: Option<pb::CgroupEntry>,
    /// cpuinfo.img's CPU, if the images have one.
    pub cpu: Option<pb::CpuinfoX86Entry>,
    /// SysV IPC objects of the tree's IPC namespace.
    pub ipc: super::ipc::IpcImages,
    /// The root's namespaces the restore makes anew.
    pub ns: super::ns::NsImages,
    /// filelocks.img.
    pub file_locks: Vec<pb::FileLockEntry>,
    /// The pages files of parent images that hold pages of the tasks
    /// (incremental dumps).
    pub parent_files: Vec<PathBuf>,
    /// Where the pages files are read from when not in `dir`: the staging
    /// directory of a restore whose pages are on a page server
    /// (restore/remote.rs).
    pub pages_dir: Option<PathBuf>,
    /// A lazy restore from local images: the pages files whose blocks
    /// only the lazy-pages daemon reads, by name, with which of them are
    /// checked ([`load_lazy`]). Whoever reads a pages file checks the
    /// blocks it reads through here first.
    pub deferred: BTreeMap<String, std::sync::Mutex<crate::images::manifest::DeferredBlocks>>,
    /// The pages files the manifest check hashed in mappings of them, by
    /// name, each taken by its first reader ([`Images::take_mapped`]).
    pub mapped: std::sync::Arc<std::sync::Mutex<crate::images::manifest::Mapped>>,
}

impl Images {
    /// The mapping of pages file `name` the manifest check made and
    /// populated, if it made one and nobody took it yet: the memory of a
    /// task goes in from it without the file being mapped again.
    pub fn take_mapped(&self, name: &str) -> Option<crate::sys::Mmap> {
        self.mapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    /// Whether the tasks forked from now on inherit the mappings of the
    /// pages files the check made ([`crate::sys::Mmap::inherit`]): not
    /// the tree's tasks, which never read them; the processes the engine
    /// forks to work for it (a pid namespace's driver) do.
    pub fn pages_inherited(&self, yes: bool) {
        for m in self
            .mapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            m.inherit(yes);
        }
    }

    /// Checks the blocks of pages file `name` (mapped whole as `file`)
    /// that `off..off + len` touches, where a lazy restore left them
    /// unchecked.
    pub fn check_deferred(&self, name: &str, file: &[u8], off: u64, len: u64) -> Result<()> {
        let Some(d) = self.deferred.get(name) else {
            return Ok(());
        };
        let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
        d.check(file, off, len).map_err(|p| {
            Error::Image(
                ManifestError {
                    dir: self.dir.clone(),
                    problems: vec![p],
                }
                .into(),
            )
        })
    }
}

/// A task that had exited but was not yet reaped by its parent.
#[derive(Debug, Clone)]
pub struct Zombie {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The wait status its parent will collect.
    pub status: u32,
    pub comm: String,
    pub creds: Option<pb::CredsEntry>,
    /// Its pids from the root's pid namespace down (restore/pidns.rs).
    pub ns_pid: Vec<i32>,
}

impl Images {
    pub fn file(&self, id: u32) -> &pb::FileEntry {
        &self.files[&id]
    }
    pub fn reg(&self, id: u32) -> &pb::RegFileEntry {
        self.files[&id].reg.as_ref().expect("validated")
    }
    pub fn path(&self, name: &str) -> PathBuf {
        match &self.pages_dir {
            Some(d) if crate::images::set::pages_file_id(name).is_some() => d.join(name),
            _ => self.dir.join(name),
        }
    }
    /// An image of the directory found wrong, naming the file.
    pub fn bad(&self, name: &str, reason: impl std::fmt::Display) -> Error {
        bad(&self.dir.join(name), reason)
    }
}

/// The images' CPU against this one (kernel/cpu.rs), with the checks
/// of `--cpu-cap`, before anything is created.
pub fn check_cpu(imgs: &Images, cap: crate::kernel::cpu::CpuCap) -> Result<()> {
    use crate::kernel::cpu;
    let Some(img) = &imgs.cpu else {
        crate::debug!("no cpuinfo.img: the CPU is not checked");
        return Ok(());
    };
    let here = cpu::this();
    let m = cpu::missing(img, &here, cap);
    if m.is_empty() {
        return Ok(());
    }
    let name = |e: &pb::CpuinfoX86Entry| e.model_id.clone().unwrap_or_else(|| "unnamed".into());
    Err(imgs.bad(
        "cpuinfo.img",
        format!(
            "the images were dumped on a CPU ({}) with {m}, which this CPU ({}) lacks: \
             the restored program would fault where it uses them (--cpu-cap none restores anyway)",
            name(img),
            name(&here)
        ),
    ))
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(ImageError::invalid(path, reason))
}

/// Tasks with one files id share one fd table. ckpt rebuilds a table
/// shared by a task and its descendants along a chain of parents that
/// all share it (the sharer is cloned with CLONE_FILES by its parent),
/// and by siblings of the top one (cloned by it with CLONE_PARENT too):
/// the top of the chain owns it and restores its fds; the others get no
/// fds of their own. Any other layout is refused here, before any process
/// exists, naming the tasks.
fn fd_tables(dir: &Path, tasks: &mut [TaskImages]) -> Result<()> {
    let files_id: BTreeMap<i32, u32> = tasks.iter().map(|t| (t.pid, t.ids.files_id)).collect();
    let mut owners: BTreeMap<u32, i32> = BTreeMap::new();
    // Parents come before their children (the loader checked the tree,
    // the dump writes it top-down); a chain is walked up anyway.
    let ppid_of: BTreeMap<i32, u32> = tasks.iter().map(|t| (t.pid, t.pstree.ppid)).collect();
    let mut siblings: BTreeMap<i32, i32> = BTreeMap::new();
    for t in tasks.iter() {
        let ppid = t.pstree.ppid as i32;
        if files_id.get(&ppid) == Some(&t.ids.files_id) {
            continue;
        }
        if let Some(&other) = owners.get(&t.ids.files_id) {
            // The owner's sibling: cloned by it with CLONE_PARENT.
            if ppid_of.get(&other) == Some(&t.pstree.ppid) {
                siblings.insert(t.pid, other);
                continue;
            }
            return Err(bad(
                &dir.join(format!("ids-{}.img", t.pid)),
                format!(
                    "pid {} shares the fd table (files id {}) of pid {other}, but its parent \
                     {ppid} does not, nor is pid {other} its sibling: only a table shared along \
                     a chain of parents and children, and with the siblings of the top one, \
                     can be restored",
                    t.pid, t.ids.files_id
                ),
            ));
        }
        owners.insert(t.ids.files_id, t.pid);
    }
    for t in tasks.iter_mut() {
        if let Some(&owner) = siblings.get(&t.pid) {
            t.fd_table_owner = Some(owner);
            t.fdinfo.clear();
            continue;
        }
        // Every sharer's chain of parents ends at an owner, unless the
        // parents loop (a damaged pstree.img the tree check let through).
        let Some(&owner) = owners.get(&t.ids.files_id) else {
            return Err(bad(
                &dir.join(format!("ids-{}.img", t.pid)),
                format!(
                    "pid {} shares the fd table (files id {}) of its parent {}, but no task up \
                     that chain of parents has it of its own (do the parents loop?)",
                    t.pid, t.ids.files_id, t.pstree.ppid
                ),
            ));
        };
        if owner != t.pid {
            t.fd_table_owner = Some(owner);
            t.fdinfo.clear();
        }
    }
    Ok(())
}

/// What an image the loader could not read says to a restore.
pub fn require<'a, T>(dir: &Path, name: &str, part: &'a Part<T>) -> Result<&'a T> {
    match part {
        Ok(v) => Ok(v),
        Err(Absent::Missing(_)) => Err(bad(&dir.join(name), "missing")),
        Err(Absent::Bad(why)) => Err(bad(dir, why)),
    }
}

/// Read `dir` with the one loader and check everything a restore needs.
pub fn load(dir: &Path) -> Result<Images> {
    load_elsewhere(dir, &BTreeMap::new())
}

/// [`load`] for a lazy restore from local images: the blocks of the pages
/// files that only the lazy-pages daemon reads are checked by it, each
/// before its first byte reaches a task (`Images::deferred`); every other
/// byte of every image is checked here, as [`load`] does. Images without
/// block checksums are checked whole.
pub fn load_lazy(dir: &Path) -> Result<Images> {
    let set = ImageSet::read_deferring_pages(dir)?;
    let mut imgs = checked(dir, set)?;
    if dir.join(MANIFEST_NAME).exists() {
        super::lazy::defer_blocks(&mut imgs)?;
    }
    Ok(imgs)
}

/// [`load`], with the pages files `elsewhere` (name and size) on a page
/// server that vouched for them ([`ImageSet::read_elsewhere`]).
pub fn load_elsewhere(dir: &Path, elsewhere: &BTreeMap<String, u64>) -> Result<Images> {
    checked(dir, ImageSet::read_elsewhere(dir, elsewhere)?)
}

/// The loader's verdict on `set` (manifest, structure), then the checks
/// a restore adds.
fn checked(dir: &Path, set: ImageSet) -> Result<Images> {
    match &set.manifest {
        ManifestStatus::Ok { .. } => {}
        // Images of another engine (CRIU writes none): nothing vouches
        // for their bytes, but every check below still applies.
        ManifestStatus::Absent => crate::warn!(
            "{}: no {MANIFEST_NAME} (images written by another engine?): checked by structure only, not against checksums",
            dir.display()
        ),
        ManifestStatus::Problems(ps) => {
            return Err(Error::Image(
                ManifestError {
                    dir: dir.to_path_buf(),
                    problems: ps.clone(),
                }
                .into(),
            ))
        }
    }
    if let Some(first) = set.problems.first() {
        let more = set.problems.len() - 1;
        return Err(bad(
            dir,
            if more == 0 {
                first.clone()
            } else {
                format!("{first} (and {more} more problems: `ckpt show` lists them)")
            },
        ));
    }
    from_set(dir, set)
}

fn from_set(dir: &Path, set: ImageSet) -> Result<Images> {
    let inventory = *require(dir, "inventory.img", &set.inventory)?;
    use crate::images::magic::{IMAGES_CKPT_COW, IMAGES_V1_1};
    if inventory.img_version != IMAGES_V1_1 && inventory.img_version != IMAGES_CKPT_COW {
        return Err(bad(
            &dir.join("inventory.img"),
            format!(
                "image version {} is not supported (expected {IMAGES_V1_1}, or {IMAGES_CKPT_COW:#x} with pages shared with the parent)",
                inventory.img_version
            ),
        ));
    }
    let pstree = require(dir, "pstree.img", &set.pstree)?;
    if pstree.is_empty() {
        return Err(bad(&dir.join("pstree.img"), "no tasks in the tree"));
    }
    let files = require(dir, "files.img", &set.files_img)?.clone();
    let seccomp = match &set.seccomp {
        Some(p) => require(dir, "seccomp.img", p)?.seccomp_filters.clone(),
        None => Vec::new(),
    };
    let mut shmem = BTreeMap::new();
    for (shmid, part) in &set.shmem {
        let name = format!("pagemap-shmem-{shmid}.img");
        shmem.insert(*shmid, require(dir, &name, part)?.clone());
    }
    let memfds = super::memfd::check(dir, &set, &files)?;
    let ghosts = super::ghost::from_set(dir, &set, &files)?;
    let mut tasks = Vec::new();
    let mut zombies = Vec::new();
    for (p, t) in pstree.iter().zip(&set.tasks) {
        let pid = p.pid as i32;
        let core_name = format!("core-{pid}.img");
        let core = require(dir, &core_name, &t.threads[0].core)?.clone();
        let core_path = dir.join(&core_name);
        if core.mtype != pb::core_entry::March::X8664 as i32 {
            return Err(bad(&core_path, "not an x86_64 image"));
        }
        if let Some(tc) = core.tc.as_ref().filter(|tc| tc.task_state == TASK_DEAD) {
            zombies.push(Zombie {
                pid,
                ppid: p.ppid as i32,
                pgid: p.pgid as i32,
                sid: p.sid as i32,
                status: tc.exit_code,
                comm: tc.comm.clone(),
                creds: core.thread_core.as_ref().and_then(|t| t.creds.clone()),
                ns_pid: super::pidns::levels(p),
            });
            continue;
        }
        check_registers(&core_path, &core)?;
        if core.tc.is_none() {
            return Err(bad(&core_path, "missing task or thread core"));
        }
        if p.threads.first() != Some(&p.pid) {
            return Err(bad(
                &dir.join("pstree.img"),
                format!(
                    "pid {pid}: thread list {:?} does not start with the leader",
                    p.threads
                ),
            ));
        }
        let mut threads = Vec::new();
        for &tid in &p.threads[1..] {
            let name = format!("core-{tid}.img");
            let th = t.threads.iter().find(|th| th.tid == tid);
            let c = match th {
                Some(th) => require(dir, &name, &th.core)?.clone(),
                None => return Err(bad(&dir.join(name), "missing")),
            };
            check_registers(&dir.join(&name), &c)?;
            threads.push((tid as i32, c));
        }
        let mm_name = format!("mm-{pid}.img");
        let mm = require(dir, &mm_name, &t.mm)?.clone();
        let ids = *require(dir, &format!("ids-{pid}.img"), &t.ids)?;
        let fs = *require(dir, &format!("fs-{pid}.img"), &t.fs)?;
        let fd_name = format!("fdinfo-{}.img", ids.files_id);
        let fdinfo = require(dir, &fd_name, &t.fdinfo)?.clone();
        let pm_name = format!("pagemap-{pid}.img");
        let mut pages = require(dir, &pm_name, &t.pagemap)?.clone();
        pages.entries = crate::images::pagemap::split_at_mappings(&pages.entries, &mm.vmas);

        let need_file = |id: u32, what: String, img: &str| -> Result<()> {
            match files.get(&id) {
                Some(f) if f.reg.is_some() => Ok(()),
                _ => Err(bad(
                    &dir.join(img),
                    format!("{what} refers to file id {id}, which files.img does not have"),
                )),
            }
        };
        let is_memfd = |id: u32| files.get(&id).is_some_and(|f| f.memfd.is_some());
        need_file(fs.cwd_id, "cwd".into(), &format!("fs-{pid}.img"))?;
        need_file(fs.root_id, "root".into(), &format!("fs-{pid}.img"))?;
        // The executable may be a memfd (fexecve).
        if !is_memfd(mm.exe_file_id) {
            need_file(mm.exe_file_id, "exe".into(), &mm_name)?;
        }
        for v in &mm.vmas {
            if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 && !is_memfd(v.shmid as u32) {
                need_file(
                    v.shmid as u32,
                    format!("mapping {:#x}-{:#x}", v.start, v.end),
                    &mm_name,
                )?;
            }
        }
        // The loader checked where the pages lie; a restore also needs
        // each entry's pages here, in the parent process, or in a parent
        // image (resolved below), not lazy.
        for e in &pages.entries {
            if !crate::images::pagemap::entry_present(e)
                && !crate::images::pagemap::entry_cow(e)
                && !crate::images::chain::in_parent(e)
            {
                return Err(bad(
                    &dir.join(&pm_name),
                    format!(
                        "pages at {:#x} ({} pages) are neither stored here, nor shared with the parent, nor in a parent image (flags {:?}): lazy images cannot be restored yet",
                        e.vaddr, e.nr_pages, e.flags
                    ),
                ));
            }
        }
        tasks.push(TaskImages {
            pid,
            pstree: p.clone(),
            core,
            mm,
            pages,
            fdinfo,
            fs,
            ids,
            fd_table_owner: None,
            threads,
            parent_runs: Vec::new(),
        });
    }
    // The tree: one root (ppid 0) first, every other task's parent a live
    // task of the image.
    let tree_path = dir.join("pstree.img");
    if tasks.first().is_none_or(|t| t.pstree.ppid != 0) {
        return Err(bad(&tree_path, "the first task must be the root (ppid 0)"));
    }
    let live: std::collections::BTreeSet<i32> = tasks.iter().map(|t| t.pid).collect();
    for (pid, ppid) in tasks[1..]
        .iter()
        .map(|t| (t.pid, t.pstree.ppid as i32))
        .chain(zombies.iter().map(|z| (z.pid, z.ppid)))
    {
        if !live.contains(&ppid) {
            return Err(bad(
                &tree_path,
                format!("pid {pid}: parent {ppid} is not a live task of the image"),
            ));
        }
    }
    fd_tables(dir, &mut tasks)?;
    check_cow_entries(dir, &tasks)?;
    let parent_files = resolve_parents(dir, &mut tasks)?;
    let data = |m: &BTreeMap<u32, crate::images::set::PipeData>| {
        m.iter()
            .map(|(id, d)| (*id, (d.size.unwrap_or(0), d.bytes.clone())))
            .collect()
    };
    let (pipe_data, fifo_data) = (data(&set.pipe_data), data(&set.fifo_data));
    super::cgroups::forget_dumpers_set(
        set.cgroups.as_ref().and_then(|p| p.as_ref().ok()),
        inventory.root_cg_set,
        &mut tasks,
    );
    let cgroups = super::cgroups::load(dir, set.cgroups.as_ref(), &tasks)?;
    let cpu = match &set.cpuinfo {
        Some(part) => Some(
            require(dir, "cpuinfo.img", part)?
                .x86_entry
                .first()
                .cloned()
                .ok_or_else(|| {
                    bad(
                        &dir.join("cpuinfo.img"),
                        "no x86 entry: images of a CPU of another architecture",
                    )
                })?,
        ),
        None => None,
    };
    let ipc = super::ipc::from_set(dir, &set.sysvipc, &tasks)?;
    let nested_pid = super::pidns::check(dir, &set, &tasks, &zombies)?;
    let ns = super::ns::from_set(dir, &set, &tasks, &nested_pid)?;
    Ok(Images {
        dir: dir.to_path_buf(),
        inventory,
        tasks,
        files,
        shmem,
        pipe_data,
        fifo_data,
        sk_queues: set.sk_queues.clone(),
        tty_info: set.tty_info.clone(),
        tty_data: set.tty_data.clone(),
        sk_queue_addrs: set.sk_queue_addrs.clone(),
        sk_queue_scm: set.sk_queue_scm.clone(),
        tcp_streams: set
            .tcp_streams
            .iter()
            .filter_map(|(k, v)| Some((*k, v.as_ref().ok()?.clone())))
            .collect(),
        zombies,
        memfds,
        ghosts,
        seccomp,
        cgroups,
        cpu,
        ipc,
        ns,
        file_locks: set.file_locks.clone(),
        parent_files,
        pages_dir: None,
        deferred: BTreeMap::new(),
        mapped: set.mapped.clone(),
    })
}

/// Incremental images: find every page a task's pagemap leaves in the
/// parent image, through the chain of `parent` links, each parent checked
/// against its manifest, before anything is created.
fn resolve_parents(dir: &Path, tasks: &mut [TaskImages]) -> Result<Vec<PathBuf>> {
    use crate::images::chain::{in_parent, Chain};
    if !tasks.iter().any(|t| t.pages.entries.iter().any(in_parent)) {
        return Ok(Vec::new());
    }
    let mut chain = Chain::open(dir)?;
    let root = tasks.first().map(|t| t.pid);
    if let Some(l) = chain.layers.first() {
        if l.root_vpid() != root {
            return Err(bad(
                &dir.join(crate::images::chain::PARENT_LINK),
                format!(
                    "the parent image {} is of another tree (root pid {:?}, here {:?})",
                    l.dir.display(),
                    l.root_vpid(),
                    root
                ),
            ));
        }
    }
    for t in tasks.iter_mut() {
        t.parent_runs = chain.resolve(t.pid, &t.pages.entries)?;
    }
    Ok(chain.files)
}

/// A live thread's core image has its registers (the FPU state raw, as
/// ckpt writes it, or in CRIU's fields only) and its thread core.
fn check_registers(path: &Path, c: &pb::CoreEntry) -> Result<()> {
    match &c.thread_info {
        Some(i)
            if i.fpregs
                .ckpt_xsave_raw
                .as_ref()
                .is_some_and(|x| x.len() < 576) =>
        {
            return Err(bad(
                path,
                "the raw xsave area (ckpt_xsave_raw) is shorter than an xsave header",
            ))
        }
        Some(_) => {}
        None => return Err(bad(path, "no thread_info (registers)")),
    }
    if c.thread_core.is_none() {
        return Err(bad(path, "missing thread core"));
    }
    Ok(())
}

/// Pages marked as shared with the parent (PE_COW_PARENT) must lie in one
/// plain private anonymous mapping whose identical range the parent has:
/// their content is the parent's at the same address.
fn check_cow_entries(dir: &Path, tasks: &[TaskImages]) -> Result<()> {
    use crate::images::pagemap::entry_cow;
    use crate::images::vma::cow_pair;
    for t in tasks {
        let pm_path = dir.join(format!("pagemap-{}.img", t.pid));
        let parent = tasks.iter().find(|p| p.pid == t.pstree.ppid as i32);
        for e in t.pages.entries.iter().filter(|e| entry_cow(e)) {
            let end = e.vaddr + e.nr_pages as u64 * PAGE;
            let vma =
                t.mm.vmas
                    .iter()
                    .find(|v| v.start <= e.vaddr && end <= v.end);
            let why = match (vma, parent) {
                (_, None) => Some("the task has no parent in the image"),
                (None, _) => Some("they lie in no mapping"),
                (Some(v), Some(p)) if cow_pair(v, &p.mm.vmas).is_none() => Some(
                    "their mapping is not private anonymous memory that the parent has at the same range with the same protection and flags",
                ),
                _ => None,
            };
            if let Some(why) = why {
                return Err(bad(
                    &pm_path,
                    format!(
                        "pages {:#x}-{end:#x} are marked shared with the parent (PE_COW_PARENT), but {why}",
                        e.vaddr
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
impl TaskImages {
    /// A task `pid` (parent `ppid`) with `ids` and nothing else, for the
    /// unit tests of what is checked across tasks.
    pub fn for_tests(pid: i32, ppid: u32, ids: pb::TaskKobjIdsEntry) -> TaskImages {
        TaskImages {
            pid,
            pstree: pb::PstreeEntry {
                pid: pid as u32,
                ppid,
                ..Default::default()
            },
            core: Default::default(),
            mm: Default::default(),
            pages: PageSet::default(),
            fdinfo: Vec::new(),
            fs: Default::default(),
            ids,
            fd_table_owner: None,
            threads: Vec::new(),
            parent_runs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: i32, ppid: u32, files_id: u32) -> TaskImages {
        let mut t = TaskImages::for_tests(
            pid,
            ppid,
            pb::TaskKobjIdsEntry {
                files_id,
                ..Default::default()
            },
        );
        t.fdinfo = vec![Default::default()];
        t
    }

    #[test]
    fn fd_table_shared_down_a_chain() {
        let mut t = vec![task(1, 0, 5), task(2, 1, 5), task(3, 2, 7)];
        fd_tables(Path::new("img"), &mut t).unwrap();
        assert_eq!(t[0].fd_table_owner, None);
        assert_eq!(t[1].fd_table_owner, Some(1));
        assert!(t[1].fdinfo.is_empty(), "a sharer's fds are the owner's");
        assert_eq!(t[2].fd_table_owner, None);
    }

    #[test]
    fn fd_table_of_parents_in_a_loop_is_an_error_not_a_panic() {
        // Damaged pstree: 1 and 2 are each other's parent, one table.
        let mut t = vec![task(1, 2, 5), task(2, 1, 5)];
        let e = fd_tables(Path::new("img"), &mut t).unwrap_err().to_string();
        assert!(e.contains("ids-1.img") && e.contains("loop"), "{e}");
    }
}
