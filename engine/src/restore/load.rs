//! Reading and validating an image directory before anything is created.
//!
//! Every check a restore depends on happens here: the manifest (every file
//! present, sizes and checksums match), the framing and decoding of every
//! image, and the cross-references (every fd names a file entry, every
//! file-backed mapping names a file, every pagemap entry lies inside a
//! mapping that can hold it, every pages file has exactly the pages its
//! pagemap lists). A problem is reported with the file and what is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::images::pagemap::{entry_cow, entry_present, PAGE, PE_PRESENT};
use crate::images::task::TASK_DEAD;
use crate::images::vma::{
    cow_pair, VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
    VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};
use crate::images::{self, pb, ImageError, Magic, Manifest};

/// A pagemap image and the pages file it refers to.
#[derive(Debug, Default, Clone)]
pub struct PageSet {
    pub pages_id: u32,
    pub entries: Vec<pb::PagemapEntry>,
}

impl PageSet {
    /// Pages in the pages file: PE_COW_PARENT entries (issue 5) have none.
    pub fn total_pages(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| entry_present(e))
            .map(|e| e.nr_pages as u64)
            .sum()
    }
    pub fn pages_file(&self) -> String {
        format!("pages-{}.img", self.pages_id)
    }
}

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
    /// The other threads: (tid, core with thread_info and thread_core).
    pub threads: Vec<(i32, pb::CoreEntry)>,
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
    pub shmem: BTreeMap<u64, PageSet>,
    /// pipes-data.img: pipe id -> (pipe size, buffered bytes).
    pub pipe_data: BTreeMap<u32, (u32, Vec<u8>)>,
    pub zombies: Vec<Zombie>,
    // >>> issue 5: memfd objects (by inode id) and unlinked files
    pub memfds: BTreeMap<u32, pb::MemfdInodeEntry>,
    pub ghosts: super::ghost::Ghosts,
    // <<< issue 5
    /// seccomp.img's filters (empty without one).
    pub seccomp: Vec<pb::SeccompFilter>,
    /// cgroup.img, if the images have one (issue 6).
    pub cgroups: Option<pb::CgroupEntry>,
    /// SysV IPC objects (issue 5, restore/ipc.rs).
    pub ipc: super::ipc::IpcImages,
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
}

impl Images {
    pub fn file(&self, id: u32) -> &pb::FileEntry {
        &self.files[&id]
    }
    pub fn reg(&self, id: u32) -> &pb::RegFileEntry {
        self.files[&id].reg.as_ref().expect("validated")
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(ImageError::invalid(path, reason))
}

fn read_all<M: prost::Message + Default>(dir: &Path, name: &str, magic: Magic) -> Result<Vec<M>> {
    Ok(images::read_all::<M>(&dir.join(name), magic)?)
}

fn read_one<M: prost::Message + Default>(dir: &Path, name: &str, magic: Magic) -> Result<M> {
    let mut v = read_all::<M>(dir, name, magic)?;
    match v.len() {
        1 => Ok(v.remove(0)),
        n => Err(bad(
            &dir.join(name),
            format!("expected exactly one entry, found {n}"),
        )),
    }
}

fn read_pagemap(dir: &Path, name: &str) -> Result<PageSet> {
    let path = dir.join(name);
    let mut r = images::ImageReader::open(&path, Magic::Pagemap)?;
    let head: pb::PagemapHead = r
        .read_entry()?
        .ok_or_else(|| bad(&path, "missing pagemap_head entry"))?;
    let mut entries = Vec::new();
    while let Some(e) = r.read_entry::<pb::PagemapEntry>()? {
        entries.push(e);
    }
    Ok(PageSet {
        pages_id: head.pages_id,
        entries,
    })
}

/// pipes-data.img, if there is one: each entry is followed by its bytes.
fn read_pipe_data(dir: &Path) -> Result<BTreeMap<u32, (u32, Vec<u8>)>> {
    let path = dir.join("pipes-data.img");
    let mut out = BTreeMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let mut r = images::ImageReader::open(&path, Magic::PipesData)?;
    while let Some(e) = r.read_entry::<pb::PipeDataEntry>()? {
        if e.bytes > 64 << 20 {
            return Err(bad(
                &path,
                format!(
                    "pipe {}: {} bytes of data is implausible",
                    e.pipe_id, e.bytes
                ),
            ));
        }
        let mut data = vec![0u8; e.bytes as usize];
        r.read_raw(&mut data)?;
        out.insert(e.pipe_id, (e.size.unwrap_or(0), data));
    }
    Ok(out)
}

/// Load and validate everything in `dir`.
pub fn load(dir: &Path) -> Result<Images> {
    Manifest::verify_dir(dir).map_err(|e| Error::Image(e.into()))?;
    let inventory: pb::InventoryEntry = read_one(dir, "inventory.img", Magic::Inventory)?;
    if inventory.img_version != 2 {
        return Err(bad(
            &dir.join("inventory.img"),
            format!(
                "image version {} is not supported (expected 2)",
                inventory.img_version
            ),
        ));
    }
    let pstree: Vec<pb::PstreeEntry> = read_all(dir, "pstree.img", Magic::Pstree)?;
    if pstree.is_empty() {
        return Err(bad(&dir.join("pstree.img"), "no tasks in the tree"));
    }
    let files_list: Vec<pb::FileEntry> = read_all(dir, "files.img", Magic::Files)?;
    let mut files = BTreeMap::new();
    for f in files_list {
        if f.r#type == pb::FdTypes::Reg as i32 && f.reg.is_none() {
            return Err(bad(
                &dir.join("files.img"),
                format!("file {} is REG without reg entry", f.id),
            ));
        }
        // >>> issue 3 hook: timerfd times are valid
        if let Some(why) = f.tfd.as_ref().and_then(super::timers::check_timerfd) {
            return Err(bad(&dir.join("files.img"), format!("file {}: {why}", f.id)));
        }
        // <<< issue 3 hook
        if files.insert(f.id, f).is_some() {
            return Err(bad(&dir.join("files.img"), "duplicate file id"));
        }
    }
    let seccomp: Vec<pb::SeccompFilter> = if dir.join("seccomp.img").exists() {
        let e: pb::SeccompEntry = read_one(dir, "seccomp.img", Magic::Seccomp)?;
        e.seccomp_filters
    } else {
        Vec::new()
    };
    let check_seccomp = |path: &Path, c: &pb::CoreEntry| -> Result<()> {
        match c
            .thread_core
            .as_ref()
            .and_then(|t| super::seccomp::check(t, &seccomp))
        {
            Some(why) => Err(bad(path, why)),
            None => Ok(()),
        }
    };
    let mut tasks = Vec::new();
    let mut shmem = BTreeMap::new();
    let mut zombies = Vec::new();
    // >>> issue 5: memfd objects and unlinked files (restore/memfd.rs, restore/ghost.rs)
    let memfds = super::memfd::load(dir, &files, &mut shmem, read_pagemap)?;
    let ghosts = super::ghost::load(dir, &files)?;
    // <<< issue 5
    for p in pstree {
        let pid = p.pid as i32;
        let core_name = format!("core-{pid}.img");
        let core: pb::CoreEntry = read_one(dir, &core_name, Magic::Core)?;
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
            });
            continue;
        }
        let Some(info) = &core.thread_info else {
            return Err(bad(&core_path, "no thread_info (registers)"));
        };
        if info
            .fpregs
            .ckpt_xsave_raw
            .as_ref()
            .is_none_or(|x| x.len() < 576)
        {
            return Err(bad(
                &core_path,
                "no raw xsave area (ckpt_xsave_raw); images from other engines are not restorable yet",
            ));
        }
        if core.tc.is_none() || core.thread_core.is_none() {
            return Err(bad(&core_path, "missing task or thread core"));
        }
        // >>> issue 3 hook: pending signals and timers can be queued/armed
        super::signals::check_core(&core).map_err(|why| bad(&core_path, why))?;
        // <<< issue 3 hook
        check_seccomp(&core_path, &core)?;
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
            let path = dir.join(&name);
            let c: pb::CoreEntry = read_one(dir, &name, Magic::Core)?;
            match &c.thread_info {
                Some(i)
                    if i.fpregs
                        .ckpt_xsave_raw
                        .as_ref()
                        .is_some_and(|x| x.len() >= 576) => {}
                _ => return Err(bad(&path, "no registers or no raw xsave area")),
            }
            if c.thread_core.is_none() {
                return Err(bad(&path, "missing thread core"));
            }
            super::signals::check_core(&c).map_err(|why| bad(&path, why))?; // issue 3 hook
            check_seccomp(&path, &c)?;
            threads.push((tid as i32, c));
        }
        let mm_name = format!("mm-{pid}.img");
        let mm: pb::MmEntry = read_one(dir, &mm_name, Magic::Mm)?;
        let ids: pb::TaskKobjIdsEntry = read_one(dir, &format!("ids-{pid}.img"), Magic::Ids)?;
        let fs: pb::FsEntry = read_one(dir, &format!("fs-{pid}.img"), Magic::Fs)?;
        let fd_name = format!("fdinfo-{}.img", ids.files_id);
        let fdinfo: Vec<pb::FdinfoEntry> = read_all(dir, &fd_name, Magic::Fdinfo)?;
        let pages = read_pagemap(dir, &format!("pagemap-{pid}.img"))?;

        let need_file = |id: u32, what: String, img: &str| -> Result<()> {
            match files.get(&id) {
                Some(f) if f.reg.is_some() => Ok(()),
                _ => Err(bad(
                    &dir.join(img),
                    format!("{what} refers to file id {id}, which files.img does not have"),
                )),
            }
        };
        for fd in &fdinfo {
            let f = files.get(&fd.id);
            let ok = f.is_some_and(|f| {
                f.r#type == fd.r#type
                    && match pb::FdTypes::try_from(f.r#type) {
                        Ok(pb::FdTypes::Reg) => f.reg.is_some(),
                        Ok(pb::FdTypes::Pipe) => f.pipe.is_some(),
                        Ok(pb::FdTypes::Eventfd) => f.efd.is_some(),
                        Ok(pb::FdTypes::Eventpoll) => f.epfd.is_some(),
                        Ok(pb::FdTypes::Signalfd) => f.sgfd.is_some(),
                        Ok(pb::FdTypes::Timerfd) => f.tfd.is_some(),
                        Ok(pb::FdTypes::Memfd) => f.memfd.is_some(), // issue 5
                        _ => false,
                    }
            });
            if !ok {
                return Err(bad(
                    &dir.join(&fd_name),
                    format!(
                        "fd {} refers to file id {} of type {}, which files.img does not have (or this engine cannot restore)",
                        fd.fd,
                        fd.id,
                        pb::FdTypes::try_from(fd.r#type).map_or("?".into(), |t| format!("{t:?}"))
                    ),
                ));
            }
        }
        need_file(fs.cwd_id, "cwd".into(), &format!("fs-{pid}.img"))?;
        need_file(fs.root_id, "root".into(), &format!("fs-{pid}.img"))?;
        // issue 5: the executable may be a memfd (fexecve)
        if files.get(&mm.exe_file_id).is_none_or(|f| f.memfd.is_none()) {
            need_file(mm.exe_file_id, "exe".into(), &mm_name)?;
        }
        let mut prev_end = 0;
        for v in &mm.vmas {
            if v.start >= v.end || v.start % PAGE != 0 || v.end % PAGE != 0 || v.start < prev_end {
                return Err(bad(
                    &dir.join(&mm_name),
                    format!(
                        "mapping {:#x}-{:#x} is malformed or overlaps the previous one",
                        v.start, v.end
                    ),
                ));
            }
            prev_end = v.end;
            let memfd = files
                .get(&(v.shmid as u32))
                .is_some_and(|f| f.memfd.is_some()); // issue 5
            if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 && !memfd {
                need_file(
                    v.shmid as u32,
                    format!("mapping {:#x}-{:#x}", v.start, v.end),
                    &mm_name,
                )?;
            }
            if v.status & VMA_ANON_SHARED != 0 && !shmem.contains_key(&v.shmid) {
                let name = format!("pagemap-shmem-{}.img", v.shmid);
                let set = if dir.join(&name).exists() {
                    read_pagemap(dir, &name)?
                } else {
                    PageSet::default()
                };
                shmem.insert(v.shmid, set);
            }
        }
        // Every private page must land in a private mapping.
        let pm_path = dir.join(format!("pagemap-{pid}.img"));
        for e in &pages.entries {
            let end = e.vaddr + e.nr_pages as u64 * PAGE;
            let ok = mm.vmas.iter().any(|v| {
                v.start <= e.vaddr
                    && end <= v.end
                    && v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE) != 0
                    && v.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL) == 0
            });
            // >>> issue 5: an entry has its pages in the file, or is shared
            // with the parent (checked against the parent below)
            let cow = entry_cow(e);
            let both = cow && e.flags.unwrap_or(0) & PE_PRESENT != 0;
            let ok = ok && !both && (entry_present(e) || cow);
            // <<< issue 5
            if !ok || e.vaddr % PAGE != 0 || e.nr_pages == 0 {
                return Err(bad(
                    &pm_path,
                    format!("pages {:#x}-{end:#x} do not lie inside one private mapping of mm-{pid}.img", e.vaddr),
                ));
            }
        }
        tasks.push(TaskImages {
            pid,
            pstree: p,
            core,
            mm,
            pages,
            fdinfo,
            fs,
            ids,
            threads,
        });
    }
    // Pages files hold exactly the pages their pagemaps list.
    let sets = tasks.iter().map(|t| &t.pages).chain(shmem.values());
    for set in sets {
        if set.entries.is_empty() && set.pages_id == 0 {
            continue;
        }
        let p = dir.join(set.pages_file());
        let len = std::fs::metadata(&p)
            .map_err(|e| Error::Image(ImageError::io(&p, "stat", e)))?
            .len();
        if len != set.total_pages() * PAGE {
            return Err(bad(
                &p,
                format!(
                    "holds {len} bytes but its pagemap lists {} pages ({} bytes)",
                    set.total_pages(),
                    set.total_pages() * PAGE
                ),
            ));
        }
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
    // >>> issue 5
    check_cow_entries(dir, &tasks)?;
    // <<< issue 5
    let pipe_data = read_pipe_data(dir)?;
    let cgroups = super::cgroups::load(dir, &tasks)?; // issue 6 hook
    let ipc = super::ipc::load(dir, &tasks)?; // issue 5: SysV IPC
    Ok(Images {
        cgroups,
        dir: dir.to_path_buf(),
        inventory,
        tasks,
        files,
        shmem,
        pipe_data,
        zombies,
        memfds,
        ghosts,
        seccomp,
        ipc,
    })
}

// >>> issue 5: COW sharing with the parent -----------------------------------

/// Pages marked as shared with the parent (PE_COW_PARENT) must lie in one
/// plain private anonymous mapping whose identical range the parent has:
/// their content is the parent's at the same address.
fn check_cow_entries(dir: &Path, tasks: &[TaskImages]) -> Result<()> {
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
// <<< issue 5 -------------------------------------------------------------------
