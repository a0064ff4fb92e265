//! Private memory shared with the parent across fork.
//!
//! A dump records pages a child never wrote after fork as PE_COW_PARENT
//! entries (dump/memory.rs): same page as the parent's at that address.
//! They come back shared the way they were made: the parent's engine copy
//! creates and fills the region *before* it forks its children
//! (restore/child.rs calls [`prepare`] first thing), so the children
//! inherit it copy-on-write. Per task, in tree order:
//!
//! - `keep`: regions its parent holds that it has at the identical range
//!   and in which it has COW entries: inherited as they are; it writes
//!   its own stored pages into them and zaps the pages it did not have;
//! - `premap`: its plain private anonymous regions in which a child has
//!   COW entries (and it has none itself, or keeps the region): mapped
//!   fresh and filled with its stored pages before it forks;
//! - `drop`: what its parent holds that it does not keep, unmapped first.
//!
//! At take-over the engine leaves held regions (keep + premap) in place:
//! `reset_address_space` does not unmap them, `map_and_fill` neither maps
//! nor writes them (a write through /proc/PID/mem would break the sharing)
//! but sets their final protection and advice.
//!
//! Fallback: whatever cannot be held (a region that collides with the
//! engine's own mappings, which every engine copy inherits; a chain broken
//! anywhere) is restored as before, by writing: a COW page outside a held
//! region is written at take-over from the nearest ancestor that stored
//! the page ([`write_unshared`]); one no ancestor stored is zero.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;

use super::load::{Images, TaskImages};
use crate::error::{Error, Result};
use crate::images::pagemap::{entry_cow, entry_present, PAGE};
use crate::images::vma::cow_eligible;
use crate::ptrace::mem::TaskMem;

/// What one task does with shared memory before it forks, and what the
/// engine leaves alone at take-over. Plain data: [`prepare`] runs in a
/// forked engine copy, where nothing may allocate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CowPlan {
    /// Regions inherited from the parent that this task does not keep.
    pub drop: Vec<(u64, u64)>,
    /// Regions mapped fresh (read-write, private, anonymous).
    pub premap: Vec<(u64, u64)>,
    /// Premapped and kept regions: their content is final after
    /// [`prepare`] (the take-over leaves it alone).
    pub held: Vec<(u64, u64)>,
    /// This task's pages file, if `fill` is not empty.
    pub pages: Option<CString>,
    /// This task's stored pages in held regions: (address, offset in the
    /// pages file, bytes).
    pub fill: Vec<(u64, u64, u64)>,
    /// Ranges of kept regions this task had no page in: zapped
    /// (MADV_DONTNEED), so they read as zeros.
    pub zero: Vec<(u64, u64)>,
}

impl CowPlan {
    /// Whether the mapping `start..end` is held (its content is final).
    pub fn holds(&self, start: u64, end: u64) -> bool {
        self.held.iter().any(|&(s, e)| s == start && e == end)
    }
    /// Whether `addr` lies in a held region.
    pub fn holds_addr(&self, addr: u64) -> bool {
        self.held.iter().any(|&(s, e)| s <= addr && addr < e)
    }
}

fn overlaps(a: (u64, u64), busy: &[(u64, u64)]) -> bool {
    busy.iter().any(|&(s, e)| s < a.1 && a.0 < e)
}

/// Pages file offset of each entry (only present entries have data).
fn offsets(t: &TaskImages) -> Vec<u64> {
    let mut off = 0u64;
    t.pages
        .entries
        .iter()
        .map(|e| {
            let here = off;
            if entry_present(e) {
                off += e.nr_pages as u64 * PAGE;
            }
            here
        })
        .collect()
}

/// Whether `t` has pages shared with its parent inside `start..end`:
/// COW entries, or stored pages found equal to the parent's (`same`).
fn has_cow_in(t: &TaskImages, same: &[(u64, u64)], (start, end): (u64, u64)) -> bool {
    t.pages
        .entries
        .iter()
        .any(|e| entry_cow(e) && start <= e.vaddr && e.vaddr < end)
        || overlaps((start, end), same)
}

/// `start..end` without the ranges of `cut` (sorted, disjoint).
fn minus(start: u64, end: u64, cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in cut {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// Images that store every process's pages in full (CRIU's, or ckpt's
/// with `--criu-compatible`) say nothing of what a child still shared
/// with its parent. As CRIU's restore does, such sharing is found again
/// by content: per task, the ranges of its stored pages, in a mapping the
/// parent has alike, equal to the parent's stored page at the same
/// address. Images with COW entries say it themselves: nothing is
/// compared there (an empty list per task).
fn same_as_parent(imgs: &Images) -> Result<Vec<Vec<(u64, u64)>>> {
    let mut out = vec![Vec::new(); imgs.tasks.len()];
    if imgs
        .tasks
        .iter()
        .any(|t| t.pages.entries.iter().any(entry_cow))
    {
        return Ok(out);
    }
    let index: BTreeMap<i32, usize> = imgs
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.pid, i))
        .collect();
    // Stored runs of a task, sorted: (start, end, offset in its pages file).
    let runs = |t: &TaskImages| -> Vec<(u64, u64, u64)> {
        let mut v: Vec<_> = t
            .pages
            .entries
            .iter()
            .zip(offsets(t))
            .filter(|(e, _)| entry_present(e))
            .map(|(e, off)| (e.vaddr, e.vaddr + e.nr_pages as u64 * PAGE, off))
            .collect();
        v.sort_unstable();
        v
    };
    let open = |t: &TaskImages| {
        let name = t.pages.pages_file();
        std::fs::File::open(imgs.path(&name)).map_err(|e| imgs.bad(&name, e))
    };
    for (i, t) in imgs.tasks.iter().enumerate() {
        let Some(&pi) = index.get(&(t.pstree.ppid as i32)) else {
            continue;
        };
        let p = &imgs.tasks[pi];
        let mut parent_vmas: Vec<_> = p.mm.vmas.clone();
        parent_vmas.sort_by_key(|v| v.start);
        let mut vmas: Vec<(u64, u64)> =
            t.mm.vmas
                .iter()
                .filter(|v| crate::images::vma::cow_pair(v, &parent_vmas).is_some())
                .map(|v| (v.start, v.end))
                .collect();
        vmas.sort_unstable();
        if vmas.is_empty() {
            continue;
        }
        let (mine, theirs) = (runs(t), runs(p));
        let (mut fm, mut fp) = (None, None);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut same: Vec<(u64, u64)> = Vec::new();
        // Sorted and disjoint: only the ones overlapping `s..e`.
        fn over<T: Copy>(v: &[T], s: u64, e: u64, r: fn(T) -> (u64, u64)) -> &[T] {
            let from = v.partition_point(|&x| r(x).1 <= s);
            let to = v.partition_point(|&x| r(x).0 < e);
            &v[from..to.max(from)]
        }
        for &(ms, me, moff) in &mine {
            for &(vs, ve) in over(&vmas, ms, me, |x| x) {
                for &(ps, pe, poff) in over(&theirs, ms, me, |x: (u64, u64, u64)| (x.0, x.1)) {
                    let (s, e) = (vs.max(ms).max(ps), ve.min(me).min(pe));
                    if s >= e {
                        continue;
                    }
                    let fm = match &mut fm {
                        Some(f) => f,
                        None => fm.insert(open(t)?),
                    };
                    let fp = match &mut fp {
                        Some(f) => f,
                        None => fp.insert(open(p)?),
                    };
                    const CHUNK: u64 = 1 << 20;
                    let mut at = s;
                    while at < e {
                        let n = (e - at).min(CHUNK) as usize;
                        a.resize(n, 0);
                        b.resize(n, 0);
                        fm.read_exact_at(&mut a, moff + (at - ms))
                            .map_err(|err| imgs.bad(&t.pages.pages_file(), err))?;
                        fp.read_exact_at(&mut b, poff + (at - ps))
                            .map_err(|err| imgs.bad(&p.pages.pages_file(), err))?;
                        for (k, (x, y)) in a
                            .chunks(PAGE as usize)
                            .zip(b.chunks(PAGE as usize))
                            .enumerate()
                        {
                            if x != y {
                                continue;
                            }
                            let pg = at + k as u64 * PAGE;
                            match same.last_mut() {
                                Some(last) if last.1 == pg => last.1 = pg + PAGE,
                                _ => same.push((pg, pg + PAGE)),
                            }
                        }
                        at += n as u64;
                    }
                }
            }
        }
        same.sort_unstable();
        out[i] = same;
    }
    Ok(out)
}

/// One plan per task of `imgs.tasks` (same order). `engine` is the engine
/// process's own mappings, which every engine copy starts with: a region
/// that overlaps one is never held (its pages are written instead).
pub fn plan(imgs: &Images, engine: &[(u64, u64)]) -> Result<Vec<CowPlan>> {
    let index: BTreeMap<i32, usize> = imgs
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.pid, i))
        .collect();
    // Parents before children, whatever the order of pstree.img.
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(&p) = index.get(&(imgs.tasks[i].pstree.ppid as i32)) {
            d += 1;
            i = p;
            if d > imgs.tasks.len() {
                break;
            }
        }
        d
    };
    let mut order: Vec<usize> = (0..imgs.tasks.len()).collect();
    order.sort_by_key(|&i| depth(i));
    let mut children: BTreeMap<i32, Vec<&TaskImages>> = BTreeMap::new();
    for c in &imgs.tasks {
        if c.pstree.ppid as i32 != c.pid {
            children.entry(c.pstree.ppid as i32).or_default().push(c);
        }
    }
    let same = same_as_parent(imgs)?;
    let mut plans = vec![CowPlan::default(); imgs.tasks.len()];
    for &i in &order {
        let t = &imgs.tasks[i];
        let parent_held: Vec<(u64, u64)> = index
            .get(&(t.pstree.ppid as i32))
            .map(|&p| plans[p].held.clone())
            .unwrap_or_default();
        let children = children.get(&t.pid).map_or(&[][..], |v| &v[..]);
        let mut keep = Vec::new();
        let mut premap = Vec::new();
        for v in t.mm.vmas.iter().filter(|v| cow_eligible(v)) {
            let r = (v.start, v.end);
            if overlaps(r, engine) {
                continue;
            }
            let mine = has_cow_in(t, &same[i], r);
            if mine && parent_held.contains(&r) {
                keep.push(r);
            } else if !mine
                && children
                    .iter()
                    .any(|c| has_cow_in(c, &same[index[&c.pid]], r))
            {
                premap.push(r);
            }
        }
        let drop: Vec<(u64, u64)> = parent_held
            .iter()
            .filter(|r| !keep.contains(r))
            .copied()
            .collect();
        let mut held: Vec<(u64, u64)> = keep.iter().chain(&premap).copied().collect();
        held.sort_unstable();
        let offs = offsets(t);
        let mut fill = Vec::new();
        let mut zero = Vec::new();
        for &(s, e) in &held {
            let kept = keep.contains(&(s, e));
            // Gaps between this task's own entries in a kept region: the
            // parent's pages there were not this task's.
            let mut at = s;
            for (en, &off) in t.pages.entries.iter().zip(&offs) {
                let (es, ee) = (en.vaddr, en.vaddr + en.nr_pages as u64 * PAGE);
                if ee <= s || es >= e {
                    continue;
                }
                if entry_present(en) {
                    // Pages equal to the parent's stay the parent's.
                    let own = if kept { &same[i][..] } else { &[][..] };
                    // An entry may span two mappings (CRIU's do).
                    for (fs, fe) in minus(es.max(s), ee.min(e), own) {
                        fill.push((fs, off + (fs - es), fe - fs));
                    }
                }
                if kept && es > at {
                    zero.push((at, es));
                }
                at = at.max(ee);
            }
            if kept && at < e {
                zero.push((at, e));
            }
        }
        let pages = if fill.is_empty() {
            None
        } else {
            let path = imgs.path(&t.pages.pages_file());
            Some(
                CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
                    Error::task(t.pid, "pages file", "its path contains a NUL byte")
                })?,
            )
        };
        plans[i] = CowPlan {
            drop,
            premap,
            held,
            pages,
            fill,
            zero,
        };
    }
    Ok(plans)
}

/// The engine's own mappings, as every engine copy inherits them. The
/// heap is counted with room to grow: the engine still allocates between
/// this look and the clone of the root.
pub fn engine_mappings() -> Result<Vec<(u64, u64)>> {
    const HEAP_ROOM: u64 = 1 << 30;
    // Debug knob: restore as if nothing could be held (every shared page
    // copied into every process).
    if std::env::var_os("CKPT_NO_COW").is_some() {
        return Ok(vec![(0, u64::MAX)]);
    }
    let me = std::process::id() as i32;
    let maps = crate::proc::maps::read_maps(me)?;
    Ok(maps
        .iter()
        .map(|v| {
            let heap = matches!(v.is_special(), Some(crate::proc::maps::SpecialVma::Heap));
            (v.start, if heap { v.end + HEAP_ROOM } else { v.end })
        })
        .collect())
}

/// Whether any region some task will map fresh collides with `busy`.
pub fn collides(plans: &[CowPlan], busy: &[(u64, u64)]) -> bool {
    plans
        .iter()
        .flat_map(|p| p.premap.iter())
        .any(|&r| overlaps(r, busy))
}

/// Runs in the engine copy of a task, before it forks anything: drop what
/// the parent held and this task does not keep, map the premapped regions,
/// write this task's own pages into held regions, zap what it did not
/// have. Only async-signal-safe calls, no allocation. On error: what
/// failed and the errno.
pub fn prepare(p: &CowPlan) -> std::result::Result<(), (&'static str, Errno)> {
    // SAFETY (whole function): the ranges are page-aligned mappings of
    // the dumped task that the planner checked against the engine's own
    // mappings (and MAP_FIXED_NOREPLACE refuses to replace anything);
    // pread writes into memory we just mapped read-write, with the
    // lengths given; the fd is ours and closed on every path.
    unsafe {
        for &(s, e) in &p.drop {
            if libc::munmap(s as *mut libc::c_void, (e - s) as usize) != 0 {
                return Err((
                    "munmap of a region inherited from the parent",
                    Errno::last(),
                ));
            }
        }
        for &(s, e) in &p.premap {
            let got = libc::mmap(
                s as *mut libc::c_void,
                (e - s) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            if got == libc::MAP_FAILED {
                return Err(("mmap of memory shared with the children", Errno::last()));
            }
            if got as u64 != s {
                libc::munmap(got, (e - s) as usize);
                return Err(("mmap of memory shared with the children", Errno::EEXIST));
            }
        }
        if let Some(path) = &p.pages {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(("open of the pages file", Errno::last()));
            }
            for &(addr, off, len) in &p.fill {
                let mut done = 0u64;
                while done < len {
                    let n = libc::pread(
                        fd,
                        (addr + done) as *mut libc::c_void,
                        (len - done) as usize,
                        (off + done) as libc::off_t,
                    );
                    if n < 0 && Errno::last() == Errno::EINTR {
                        continue;
                    }
                    if n <= 0 {
                        let e = if n == 0 { Errno::EIO } else { Errno::last() };
                        libc::close(fd);
                        return Err(("read of the pages file", e));
                    }
                    done += n as u64;
                }
            }
            libc::close(fd);
        }
        for &(s, e) in &p.zero {
            if libc::madvise(
                s as *mut libc::c_void,
                (e - s) as usize,
                libc::MADV_DONTNEED,
            ) != 0
            {
                return Err((
                    "madvise(MADV_DONTNEED) of pages the task did not have",
                    Errno::last(),
                ));
            }
        }
    }
    Ok(())
}

/// Where the content of page `addr` of task `pid` is, for a COW page:
/// the first ancestor that stored it (its pages file and the offset), or
/// None (no ancestor had it: zero).
fn resolve(
    imgs: &Images,
    index: &BTreeMap<i32, (usize, Vec<u64>)>,
    pid: i32,
    addr: u64,
) -> Option<(usize, u64)> {
    let mut cur = index.get(&pid)?.0;
    for _ in 0..=imgs.tasks.len() {
        let ppid = imgs.tasks[cur].pstree.ppid as i32;
        let (p, offs) = index.get(&ppid)?;
        let entries = &imgs.tasks[*p].pages.entries;
        let i = entries
            .partition_point(|e| e.vaddr <= addr)
            .checked_sub(1)?;
        let e = &entries[i];
        if addr >= e.vaddr + e.nr_pages as u64 * PAGE {
            return None;
        }
        if entry_present(e) {
            return Some((*p, offs[i] + (addr - e.vaddr)));
        }
        if !entry_cow(e) {
            return None;
        }
        cur = *p;
    }
    None
}

/// The fallback: write the COW pages of `t` that lie outside its held
/// regions from the ancestors' pages files (the mapping is fresh, so a
/// page no ancestor stored stays zero).
pub fn write_unshared(imgs: &Images, t: &TaskImages, plan: &CowPlan, mem: &TaskMem) -> Result<()> {
    let todo: Vec<&crate::images::pb::PagemapEntry> = t
        .pages
        .entries
        .iter()
        .filter(|e| entry_cow(e) && !plan.holds_addr(e.vaddr))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let index: BTreeMap<i32, (usize, Vec<u64>)> = imgs
        .tasks
        .iter()
        .enumerate()
        .map(|(i, x)| (x.pid, (i, offsets(x))))
        .collect();
    let mut files: BTreeMap<usize, std::fs::File> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut written = 0u64;
    // Runs of pages that are consecutive both in the task and in one
    // ancestor's pages file: one read and one write each.
    let mut run: Option<(usize, u64, u64, u64)> = None; // owner, file offset, address, pages
    let mut flush = |run: (usize, u64, u64, u64)| -> Result<()> {
        let (owner, off, addr, n) = run;
        let path = imgs.path(&imgs.tasks[owner].pages.pages_file());
        let f = match files.entry(owner) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(
                std::fs::File::open(&path).map_err(|err| Error::io(&path, "opening pages", err))?,
            ),
        };
        buf.resize((n * PAGE) as usize, 0);
        f.read_exact_at(&mut buf, off).map_err(|err| {
            Error::io(
                &path,
                format!("pid {}: reading an ancestor's pages for {addr:#x}", t.pid),
                err,
            )
        })?;
        mem.write(addr, &buf)?;
        written += n;
        Ok(())
    };
    const MAX_RUN: u64 = 1024;
    for e in todo {
        for n in 0..e.nr_pages as u64 {
            let addr = e.vaddr + n * PAGE;
            let found = resolve(imgs, &index, t.pid, addr);
            match (found, &mut run) {
                (Some((o, off)), Some((ro, roff, ra, rn)))
                    if o == *ro
                        && off == *roff + *rn * PAGE
                        && addr == *ra + *rn * PAGE
                        && *rn < MAX_RUN =>
                {
                    *rn += 1
                }
                _ => {
                    if let Some(r) = run.take() {
                        flush(r)?;
                    }
                    run = found.map(|(o, off)| (o, off, addr, 1));
                }
            }
        }
    }
    if let Some(r) = run.take() {
        flush(r)?;
    }
    debug!(
        "pid {}: {written} pages shared with the parent written as copies (not shareable here)",
        t.pid
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pagemap::{PE_COW_PARENT, PE_PRESENT};
    use crate::images::pb;
    use crate::images::vma::{VMA_ANON_PRIVATE, VMA_AREA_REGULAR};
    use crate::restore::load::PageSet;

    fn task(pid: i32, ppid: i32, vmas: &[(u64, u64)], pages: &[(u64, u32, u32)]) -> TaskImages {
        TaskImages {
            pid,
            pstree: pb::PstreeEntry {
                pid: pid as u32,
                ppid: ppid as u32,
                ..Default::default()
            },
            core: Default::default(),
            mm: pb::MmEntry {
                vmas: vmas
                    .iter()
                    .map(|&(start, end)| pb::VmaEntry {
                        start,
                        end,
                        prot: 3,
                        flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
                        status: VMA_AREA_REGULAR | VMA_ANON_PRIVATE,
                        fd: -1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            pages: PageSet {
                pages_id: pid as u32,
                entries: pages
                    .iter()
                    .map(|&(vaddr, nr_pages, f)| pb::PagemapEntry {
                        nr_pages64: None,
                        vaddr,
                        nr_pages,
                        in_parent: None,
                        flags: Some(f),
                    })
                    .collect(),
            },
            fdinfo: vec![],
            fs: Default::default(),
            ids: Default::default(),
            fd_table_owner: None,
            threads: vec![],
            parent_runs: vec![],
        }
    }

    fn images(tasks: Vec<TaskImages>) -> Images {
        Images {
            dir: "/img".into(),
            inventory: Default::default(),
            tasks,
            files: Default::default(),
            shmem: Default::default(),
            pipe_data: Default::default(),
            fifo_data: Default::default(),
            sk_queues: Default::default(),
            tty_info: Default::default(),
            tty_data: Default::default(),
            sk_queue_addrs: Default::default(),
            sk_queue_scm: Default::default(),
            tcp_streams: Default::default(),
            zombies: vec![],
            seccomp: vec![],
            memfds: Default::default(),
            ghosts: Default::default(),
            cgroups: None,
            cpu: None,
            ipc: Default::default(),
            ns: Default::default(),
            file_locks: vec![],
            parent_files: vec![],
            pages_dir: None,
            deferred: Default::default(),
            mapped: Default::default(),
        }
    }

    const R: (u64, u64) = (0x10000, 0x20000);

    #[test]
    fn chain_and_fallback() {
        // root stores 4 pages, child shares 2 and wrote 1, grandchild
        // shares 1 with the child.
        let imgs = images(vec![
            task(1, 0, &[R], &[(0x10000, 4, PE_PRESENT)]),
            task(
                2,
                1,
                &[R],
                &[(0x10000, 2, PE_COW_PARENT), (0x12000, 1, PE_PRESENT)],
            ),
            task(3, 2, &[R], &[(0x10000, 1, PE_COW_PARENT)]),
        ]);
        let p = plan(&imgs, &[]).unwrap();
        assert_eq!(p[0].premap, vec![R]);
        assert_eq!(p[0].fill, vec![(0x10000, 0, 4 * PAGE)]);
        assert_eq!(p[1].held, vec![R]);
        assert!(p[1].premap.is_empty() && p[1].drop.is_empty());
        assert_eq!(p[1].fill, vec![(0x12000, 0, PAGE)]);
        assert_eq!(p[1].zero, vec![(0x13000, 0x20000)]);
        assert_eq!(p[2].held, vec![R]);
        assert_eq!(p[2].zero, vec![(0x11000, 0x20000)]);
        // Colliding with the engine: nothing held; COW pages resolve.
        let p = plan(&imgs, &[(0x1f000, 0x30000)]).unwrap();
        assert!(p.iter().all(|p| p.held.is_empty() && p.premap.is_empty()));
        let index: BTreeMap<i32, (usize, Vec<u64>)> = imgs
            .tasks
            .iter()
            .enumerate()
            .map(|(i, x)| (x.pid, (i, offsets(x))))
            .collect();
        assert_eq!(resolve(&imgs, &index, 3, 0x10000), Some((0, 0)));
        assert_eq!(resolve(&imgs, &index, 2, 0x11000), Some((0, PAGE)));
        assert_eq!(resolve(&imgs, &index, 3, 0x14000), None);
    }

    #[test]
    fn sibling_without_cow_drops() {
        let imgs = images(vec![
            task(1, 0, &[R], &[(0x10000, 1, PE_PRESENT)]),
            task(2, 1, &[R], &[(0x10000, 1, PE_COW_PARENT)]),
            task(3, 1, &[R], &[(0x10000, 1, PE_PRESENT)]),
        ]);
        let p = plan(&imgs, &[]).unwrap();
        assert_eq!(p[2].drop, vec![R]);
        assert!(p[2].held.is_empty());
    }
}
