//! Incremental image chains (CRIU's pre-dump and `--prev-images-dir`).
//!
//! A pre-dump writes the memory of a running tree (pagemaps, pages, mm)
//! and starts tracking writes; a later dump of the same tree stores only
//! the pages written since and marks the others "in the parent" (CRIU's
//! `PE_PARENT` flag, without ckpt's copy-on-write bit). The directory of
//! that dump has a `parent` symbolic link to the pre-dump (CRIU's link,
//! relative as given), and a pre-dump may itself have a parent: the chain
//! ends at a directory without one. Dump, restore and show all read the
//! chain, so its format is here, once.
//!
//! A pre-dump also records, in [`TRACK_FILE`], where it left the write
//! tracking in each process (the userfaultfd it parked there, see
//! dump/uffd_wp.rs), for the next dump to find and close it; and, in
//! [`RESTART_FILE`], the system calls its freeze interrupted that the
//! kernel goes on with through `restart_syscall`, whose number the next
//! dump could not see otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::pagemap::{entry_present, PAGE, PE_COW_PARENT, PE_PARENT, PE_PRESENT};
use super::set::{pages_file_id, read_pagemap, PageSet};
use super::{pb, ImageError, Magic, Manifest, ManifestProblem};

/// The link from an incremental image directory to its parent.
pub const PARENT_LINK: &str = "parent";
/// A pre-dump's record of the write tracking it left in each process
/// (text, one line per process; listed in the manifest like the images).
pub const TRACK_FILE: &str = "uffd-wp-track.txt";
/// A pre-dump's record of the interrupted calls its threads go on with
/// through `restart_syscall` (text, one line per thread; in the manifest).
pub const RESTART_FILE: &str = "restart-calls.txt";
/// inventory.pre_dump_mode of a pre-dump: CRIU's PRE_DUMP_READ (pages
/// copied with process_vm_readv, as ckpt does).
pub const PRE_DUMP_READ: u32 = 2;

/// Whether a pagemap entry's pages are in the parent image.
pub fn in_parent(e: &pb::PagemapEntry) -> bool {
    match e.flags {
        Some(f) => f & PE_PARENT != 0 && f & (PE_COW_PARENT | PE_PRESENT) == 0,
        None => e.in_parent == Some(true),
    }
}

/// An entry for `nr_pages` pages at `vaddr` held by the parent image.
pub fn in_parent_entry(vaddr: u64, nr_pages: u32) -> pb::PagemapEntry {
    pb::PagemapEntry {
        nr_pages64: None,
        vaddr,
        nr_pages,
        in_parent: None,
        flags: Some(PE_PARENT),
    }
}

/// The parent of image directory `dir`, if it has one: the target of its
/// `parent` link, relative to `dir` unless absolute.
pub fn parent_of(dir: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(dir.join(PARENT_LINK)).ok()?;
    Some(if target.is_absolute() {
        target
    } else {
        dir.join(target)
    })
}

/// Page ranges `[start, end)` a pagemap holds (stored here or in its own
/// parent), merged and sorted.
pub fn held_ranges(entries: &[pb::PagemapEntry]) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| entry_present(e) || in_parent(e))
        .map(|e| (e.vaddr, e.vaddr + e.nr_pages as u64 * PAGE))
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Where a pre-dump left the write tracking of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The pid on the host (the tracking is of a live process).
    pub pid: i32,
    /// The pid in the images (pagemap-VPID.img).
    pub vpid: i32,
    /// The fd number the userfaultfd is parked at in the process.
    pub fd: i32,
    /// The process's start time (/proc/PID/stat field 22), so a pid
    /// reused by another process is not taken for it.
    pub start_time: u64,
}

/// The text of [`TRACK_FILE`].
pub fn track_text(t: &[Tracked]) -> String {
    let mut s = String::from("# pid vpid uffd-fd start-time\n");
    for t in t {
        s.push_str(&format!("{} {} {} {}\n", t.pid, t.vpid, t.fd, t.start_time));
    }
    s
}

/// The records of a text file of a layer: a line each, of `fields`
/// fields split on whitespace (`#` comments and blank lines skipped),
/// which `make` turns into a record or refuses; `path` for errors.
fn parse_lines<T>(
    text: &str,
    path: &Path,
    fields: usize,
    make: impl Fn(&[&str]) -> Option<T>,
) -> Result<Vec<T>, ImageError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match (f.len() == fields).then(|| make(&f)).flatten() {
            Some(t) => out.push(t),
            None => {
                return Err(ImageError::invalid(
                    path,
                    format!("line {}: {line:?}", i + 1),
                ))
            }
        }
    }
    Ok(out)
}

/// Parse [`TRACK_FILE`] (`path` for errors).
pub fn parse_track(text: &str, path: &Path) -> Result<Vec<Tracked>, ImageError> {
    parse_lines(text, path, 4, |f| {
        Some(Tracked {
            pid: f[0].parse().ok()?,
            vpid: f[1].parse().ok()?,
            fd: f[2].parse().ok()?,
            start_time: f[3].parse().ok()?,
        })
    })
}

/// A system call a pre-dump's freeze interrupted with
/// ERESTART_RESTARTBLOCK. The kernel resumes such a call through
/// `restart_syscall`, after which the thread's registers no longer name
/// it; a later dump that finds the thread still there, at the same
/// instruction with the same arguments, takes the call from here
/// (kernel/restart.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartCall {
    /// The thread on the host (the record is of a live tree).
    pub tid: i32,
    /// The interrupted call's number.
    pub nr: i64,
    /// Where the thread resumes: just after its `syscall` instruction.
    pub rip: u64,
    /// The call's six argument registers (rdi, rsi, rdx, r10, r8, r9).
    pub args: [u64; 6],
}

/// The text of [`RESTART_FILE`].
pub fn restart_text(calls: &[RestartCall]) -> String {
    let mut s = String::from("# tid nr rip rdi rsi rdx r10 r8 r9 (hex)\n");
    for c in calls {
        s.push_str(&format!("{} {} {:x}", c.tid, c.nr, c.rip));
        for a in c.args {
            s.push_str(&format!(" {a:x}"));
        }
        s.push('\n');
    }
    s
}

/// Parse [`RESTART_FILE`] (`path` for errors).
pub fn parse_restart(text: &str, path: &Path) -> Result<Vec<RestartCall>, ImageError> {
    parse_lines(text, path, 9, |f| {
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let mut args = [0u64; 6];
        for (a, s) in args.iter_mut().zip(&f[3..]) {
            *a = hex(s)?;
        }
        Some(RestartCall {
            tid: f[0].parse().ok()?,
            nr: f[1].parse().ok()?,
            rip: hex(f[2])?,
            args,
        })
    })
}

/// A text file of a layer, or nothing if the layer has none.
fn read_optional(path: &Path) -> Result<Option<String>, ImageError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::Io {
            path: path.to_path_buf(),
            op: "reading",
            source: e,
        }),
    }
}

/// One pre-dump directory of a chain, checked against its manifest.
pub struct Layer {
    pub dir: PathBuf,
    pub pstree: Vec<pb::PstreeEntry>,
    pub tracked: Vec<Tracked>,
    pub restarts: Vec<RestartCall>,
    /// The files of the layer as its manifest lists them (checked).
    manifest: Manifest,
    pagemaps: BTreeMap<i32, Option<(PageSet, u64)>>,
}

impl Layer {
    /// Open the pre-dump at `dir`: it must exist, match its manifest
    /// (every file's checksum), and be a pre-dump.
    pub fn open(dir: &Path) -> Result<Layer, ImageError> {
        Layer::open_with(dir, false)
    }

    /// Open the pre-dump at `dir` as the parent of a dump, which needs its
    /// pagemaps but not its pages: the pages files may be missing (a
    /// pre-dump that sent them to a page server); every file that is
    /// there must still match the manifest.
    pub fn open_for_dump(dir: &Path) -> Result<Layer, ImageError> {
        Layer::open_with(dir, true)
    }

    fn open_with(dir: &Path, pages_away: bool) -> Result<Layer, ImageError> {
        let md = std::fs::metadata(dir).map_err(|e| ImageError::Io {
            path: dir.to_path_buf(),
            op: "the parent image directory",
            source: e,
        })?;
        if !md.is_dir() {
            return Err(ImageError::invalid(
                dir,
                "the parent images are not a directory",
            ));
        }
        let manifest = Manifest::read(dir)?;
        if let Err(mut e) = manifest.check(dir) {
            if pages_away {
                e.problems.retain(
                    |p| !matches!(p, ManifestProblem::Missing { name } if pages_file_id(name).is_some()),
                );
            }
            if !e.problems.is_empty() {
                return Err(ImageError::invalid(dir, e));
            }
        }
        let inv: pb::InventoryEntry = super::read_one(dir.join("inventory.img"), Magic::Inventory)?;
        if inv.pre_dump_mode.is_none() {
            return Err(ImageError::invalid(
                dir.join("inventory.img"),
                "not a pre-dump (no pre-dump mode): only a pre-dump can be a parent",
            ));
        }
        let pstree: Vec<pb::PstreeEntry> = super::read_all(dir.join("pstree.img"), Magic::Pstree)?;
        let track_path = dir.join(TRACK_FILE);
        let tracked = match read_optional(&track_path)? {
            Some(t) => parse_track(&t, &track_path)?,
            None => Vec::new(),
        };
        let restart_path = dir.join(RESTART_FILE);
        let restarts = match read_optional(&restart_path)? {
            Some(t) => parse_restart(&t, &restart_path)?,
            None => Vec::new(),
        };
        Ok(Layer {
            dir: dir.to_path_buf(),
            pstree,
            tracked,
            restarts,
            manifest,
            pagemaps: BTreeMap::new(),
        })
    }

    /// The root's pid in the images.
    pub fn root_vpid(&self) -> Option<i32> {
        self.pstree.first().map(|p| p.pid as i32)
    }

    /// The pagemap of process `vpid` and the size of its pages file, or
    /// None if this pre-dump has no such process.
    pub fn pagemap(&mut self, vpid: i32) -> Result<Option<&(PageSet, u64)>, ImageError> {
        if !self.pagemaps.contains_key(&vpid) {
            let known = self.pstree.iter().any(|p| p.pid as i32 == vpid);
            let got = if known {
                let set = read_pagemap(&self.dir.join(format!("pagemap-{vpid}.img")))?;
                let name = set.pages_file();
                let pages = self.dir.join(&name);
                // The manifest's size: the file may be at a page server.
                let size = match (self.manifest.get(&name), std::fs::metadata(&pages)) {
                    (Some(d), _) => d.size,
                    (None, Ok(m)) => m.len(),
                    (None, Err(_)) if set.stored_pages() == 0 => 0,
                    (None, Err(e)) => {
                        return Err(ImageError::Io {
                            path: pages,
                            op: "the pages file",
                            source: e,
                        })
                    }
                };
                Some((set, size))
            } else {
                None
            };
            self.pagemaps.insert(vpid, got);
        }
        Ok(self.pagemaps[&vpid].as_ref())
    }

    /// The VMAs of process `vpid` in this pre-dump (empty if none).
    pub fn vmas(&self, vpid: i32) -> Result<Vec<pb::VmaEntry>, ImageError> {
        if !self.pstree.iter().any(|p| p.pid as i32 == vpid) {
            return Ok(Vec::new());
        }
        let mm: pb::MmEntry = super::read_one(self.dir.join(format!("mm-{vpid}.img")), Magic::Mm)?;
        Ok(mm.vmas)
    }
}

/// Pages of a task found in a parent image: `len` bytes at `offset` of
/// pages file `file` (an index into [`Chain::files`]) go to `vaddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentRun {
    pub file: usize,
    pub offset: u64,
    pub vaddr: u64,
    pub len: u64,
}

/// The parents of an image directory, nearest first, each opened (and
/// checked against its manifest) once.
pub struct Chain {
    pub top: PathBuf,
    pub layers: Vec<Layer>,
    /// Pages files the runs refer to.
    pub files: Vec<PathBuf>,
}

/// Longest chain followed (a link loop ends here).
const MAX_DEPTH: usize = 64;

impl Chain {
    /// Every parent of `top`, following the `parent` links.
    pub fn open(top: &Path) -> Result<Chain, ImageError> {
        let mut layers = Vec::new();
        let mut at = top.to_path_buf();
        while let Some(p) = parent_of(&at) {
            if layers.len() >= MAX_DEPTH {
                return Err(ImageError::invalid(
                    at.join(PARENT_LINK),
                    format!("more than {MAX_DEPTH} parent images (a loop of links?)"),
                ));
            }
            let l = Layer::open(&p).map_err(|e| {
                ImageError::invalid(
                    at.join(PARENT_LINK),
                    format!("parent image {}: {e}", p.display()),
                )
            })?;
            layers.push(l);
            at = p;
        }
        Ok(Chain {
            top: top.to_path_buf(),
            layers,
            files: Vec::new(),
        })
    }

    /// Where the pages of `entries` (process `vpid`'s pagemap in the top
    /// directory) that are in the parent are; an error names the range
    /// the chain does not hold and the pagemap that lacks it.
    pub fn resolve(
        &mut self,
        vpid: i32,
        entries: &[pb::PagemapEntry],
    ) -> Result<Vec<ParentRun>, ImageError> {
        let mut out = Vec::new();
        for e in entries.iter().filter(|e| in_parent(e)) {
            let end = e.vaddr + e.nr_pages as u64 * PAGE;
            let from = self.top.join(format!("pagemap-{vpid}.img"));
            self.resolve_in(0, vpid, e.vaddr, end, &from, &mut out)?;
        }
        Ok(out)
    }

    fn resolve_in(
        &mut self,
        k: usize,
        vpid: i32,
        start: u64,
        end: u64,
        from: &Path,
        out: &mut Vec<ParentRun>,
    ) -> Result<(), ImageError> {
        let Some(layer) = self.layers.get_mut(k) else {
            return Err(ImageError::invalid(
                from,
                format!(
                    "pages {start:#x}-{end:#x} are in the parent image, but there is none (no `{PARENT_LINK}` link)"
                ),
            ));
        };
        let dir = layer.dir.clone();
        let pm_path = dir.join(format!("pagemap-{vpid}.img"));
        let Some((set, size)) = layer.pagemap(vpid)?.cloned() else {
            return Err(ImageError::invalid(
                dir.join("pstree.img"),
                format!("pid {vpid} is not in this parent image, which should hold its pages {start:#x}-{end:#x}"),
            ));
        };
        // File offsets of the stored entries, in file order.
        let mut offsets = Vec::with_capacity(set.entries.len());
        let mut off = 0u64;
        for e in &set.entries {
            offsets.push(off);
            if entry_present(e) {
                off += e.nr_pages as u64 * PAGE;
            }
        }
        let mut order: Vec<usize> = (0..set.entries.len()).collect();
        order.sort_by_key(|&i| set.entries[i].vaddr);
        let pages_path = dir.join(set.pages_file());
        let mut at = start;
        while at < end {
            let i = order.partition_point(|&i| set.entries[i].vaddr <= at);
            let hit = i
                .checked_sub(1)
                .map(|j| order[j])
                .filter(|&j| at < set.entries[j].vaddr + set.entries[j].nr_pages as u64 * PAGE);
            let Some(j) = hit else {
                return Err(ImageError::invalid(
                    &pm_path,
                    format!(
                        "pages {at:#x}-{end:#x} of pid {vpid} are not there (the dump marked them as in the parent)"
                    ),
                ));
            };
            let e = &set.entries[j];
            let seg_end = end.min(e.vaddr + e.nr_pages as u64 * PAGE);
            if entry_present(e) {
                let offset = offsets[j] + (at - e.vaddr);
                if offset + (seg_end - at) > size {
                    return Err(ImageError::invalid(
                        &pages_path,
                        format!(
                            "pages {at:#x}-{seg_end:#x} of pid {vpid} lie beyond the end of the file ({size} bytes)"
                        ),
                    ));
                }
                let file = match self.files.iter().position(|f| *f == pages_path) {
                    Some(f) => f,
                    None => {
                        self.files.push(pages_path.clone());
                        self.files.len() - 1
                    }
                };
                out.push(ParentRun {
                    file,
                    offset,
                    vaddr: at,
                    len: seg_end - at,
                });
            } else if in_parent(e) {
                self.resolve_in(k + 1, vpid, at, seg_end, &pm_path, out)?;
            } else {
                return Err(ImageError::invalid(
                    &pm_path,
                    format!(
                        "pages {at:#x}-{seg_end:#x} of pid {vpid}: flags {:?} in a parent image (neither stored nor in its own parent)",
                        e.flags
                    ),
                ));
            }
            at = seg_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(vaddr: u64, n: u32, flags: u32) -> pb::PagemapEntry {
        pb::PagemapEntry {
            nr_pages64: None,
            vaddr,
            nr_pages: n,
            in_parent: None,
            flags: Some(flags),
        }
    }

    #[test]
    fn flags() {
        assert!(in_parent(&in_parent_entry(0x1000, 1)));
        assert!(!entry_present(&in_parent_entry(0x1000, 1)));
        assert!(!in_parent(&e(0, 1, PE_PARENT | PE_COW_PARENT)));
        assert!(!in_parent(&e(0, 1, PE_PRESENT)));
    }

    #[test]
    fn held() {
        let got = held_ranges(&[
            e(0x3000, 1, PE_PARENT),
            e(0x1000, 2, PE_PRESENT),
            e(0x8000, 1, PE_PARENT | PE_COW_PARENT),
        ]);
        assert_eq!(got, vec![(0x1000, 0x4000)]);
    }

    #[test]
    fn track_round_trip() {
        let t = vec![Tracked {
            pid: 10,
            vpid: 1,
            fd: 1000,
            start_time: 77,
        }];
        let p = Path::new("x");
        assert_eq!(parse_track(&track_text(&t), p).unwrap(), t);
        assert!(parse_track("1 2 3", p).is_err());
    }

    #[test]
    fn restart_round_trip() {
        let c = vec![RestartCall {
            tid: 31,
            nr: 35,
            rip: 0x7f00_0000_1002,
            args: [1, u64::MAX, 0, 4, 5, 0xdead],
        }];
        let p = Path::new("x");
        assert_eq!(parse_restart(&restart_text(&c), p).unwrap(), c);
        assert!(parse_restart("31 35 zz 0 0 0 0 0 0", p).is_err());
        assert!(parse_restart("31 35 10", p).is_err());
    }
}
