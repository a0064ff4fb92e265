//! Cgroups at dump time: every task's membership in every
//! mounted hierarchy (v1 controllers, named v1 hierarchies, cgroup2) as
//! CRIU's cgroup sets, and the properties of every cgroup directory those
//! tasks are in and of its ancestors below the hierarchy root, into
//! `cgroup.img`. Also `--freeze-cgroup`: freezing a tree through its
//! freezer cgroup, so that a tree that keeps forking can still be seized.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroupfs::{self, Hierarchy};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::proc::cgroup::{self, CgroupLine};
use crate::ptrace::Seized;

/// The cgroup state of one dump, collected task by task.
pub struct CgroupDump {
    hs: Vec<Hierarchy>,
    /// Distinct membership sets: (hierarchy, path, cgroup namespace
    /// prefix); the id of a set is its index + 1.
    sets: Vec<Vec<(String, String, Option<u32>)>>,
    /// Per hierarchy name: every cgroup path to save (ancestors included).
    dirs: BTreeMap<String, BTreeSet<String>>,
    /// Freezer files whose value at dump time is not the one to restore
    /// (the engine froze them itself): path -> original value.
    freezer_orig: BTreeMap<PathBuf, String>,
    /// The set of the first task asked about: the root of the dump.
    root_set: Option<u32>,
    /// The engine's own cgroup namespace (its /proc link), read once.
    own_cgns: Option<PathBuf>,
    /// The set id of every (cgroup file, cgroup namespace) seen so far:
    /// a process's threads nearly always show their leader's, and
    /// t1000's 1001 threads had it parsed and matched against every
    /// hierarchy, and three namespace links read, one thread at a time.
    known: std::collections::HashMap<(String, Option<PathBuf>), u32>,
}

impl CgroupDump {
    pub fn new() -> Result<CgroupDump> {
        Ok(CgroupDump {
            hs: cgroupfs::hierarchies()?,
            sets: Vec::new(),
            dirs: BTreeMap::new(),
            freezer_orig: BTreeMap::new(),
            root_set: None,
            own_cgns: cgns_link(std::process::id() as Pid),
            known: Default::default(),
        })
    }

    /// Remember that `file` held `value` before the engine froze it.
    pub fn set_freezer_orig(&mut self, file: PathBuf, value: String) {
        self.freezer_orig.insert(file, value);
    }

    /// The cgroup set of thread `tid` of process `pid` (the leader for
    /// `tid == pid`): the id to put into its core image.
    pub fn task_set(&mut self, pid: Pid, tid: Pid) -> Result<u32> {
        let name = if tid == pid {
            "cgroup".to_string()
        } else {
            format!("task/{tid}/cgroup")
        };
        let text = crate::proc::read_file(pid, &name)?;
        // The same memberships seen from the same namespace: the same set.
        let key = (text, cgns_link(tid));
        if let Some(&id) = self.known.get(&key) {
            return Ok(id);
        }
        let lines = cgroup::parse(&key.0)
            .map_err(|e| Error::task(pid, format!("/proc/{pid}/{name}"), e.to_string()))?;
        let mut set = self.members(pid, &lines)?;
        if key.1.is_some() && key.1 != self.own_cgns {
            add_cgns_prefixes(pid, tid, &mut set)?;
        }
        for (h, path, _) in &set {
            let dirs = self.dirs.entry(h.clone()).or_default();
            let mut p = path.as_str();
            while p != "/" && !p.is_empty() {
                dirs.insert(p.to_string());
                p = match p.rfind('/') {
                    Some(0) => "/",
                    Some(i) => &p[..i],
                    None => "/",
                };
            }
        }
        let id = match self.sets.iter().position(|s| *s == set) {
            Some(i) => i + 1,
            None => {
                self.sets.push(set);
                self.sets.len()
            }
        };
        self.root_set.get_or_insert(id as u32);
        self.known.insert(key, id as u32);
        Ok(id as u32)
    }

    /// The root task's set (inventory.img's root_cg_set).
    pub fn root_set(&self) -> Option<u32> {
        self.root_set
    }

    /// (hierarchy name, path, no prefix yet) for every mounted hierarchy
    /// of the lines.
    fn members(
        &self,
        pid: Pid,
        lines: &[CgroupLine],
    ) -> Result<Vec<(String, String, Option<u32>)>> {
        let mut out = Vec::new();
        for l in lines {
            let Some(h) = self.hs.iter().find(|h| h.matches(l)) else {
                if l.path != "/" {
                    warn!(
                        "pid {pid}: cgroup {}:{} is in a hierarchy that is not mounted; its membership is not saved",
                        l.controllers.join(","),
                        l.path
                    );
                }
                continue;
            };
            if l.path.ends_with(" (deleted)") {
                return Err(Error::unsupported(
                    pid,
                    format!("cgroup {}:{}", h.name(), l.path),
                    "the task is in a deleted cgroup",
                ));
            }
            cgroupfs::check_path(&l.path)
                .map_err(|why| Error::unsupported(pid, format!("cgroup {}", h.name()), why))?;
            out.push((h.name(), l.path.clone(), None));
        }
        out.sort();
        Ok(out)
    }

    /// Write `cgroup.img`.
    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        let sets = self
            .sets
            .iter()
            .enumerate()
            .map(|(i, s)| pb::CgSetEntry {
                id: i as u32 + 1,
                ctls: s
                    .iter()
                    .map(|(name, path, prefix)| pb::CgMemberEntry {
                        name: name.clone(),
                        path: path.clone(),
                        cgns_prefix: *prefix,
                    })
                    .collect(),
            })
            .collect();
        let mut names: BTreeSet<&String> = BTreeSet::new();
        for s in &self.sets {
            names.extend(s.iter().map(|(n, _, _)| n));
        }
        let mut controllers = Vec::new();
        for name in names {
            let h = cgroupfs::find(&self.hs, name).expect("a hierarchy of a set is mounted");
            let paths: Vec<&String> = self
                .dirs
                .get(name)
                .map(|d| d.iter().collect())
                .unwrap_or_default();
            controllers.push(pb::CgControllerEntry {
                cnames: if h.v2 {
                    vec![cgroupfs::V2_NAME.to_string()]
                } else {
                    h.controllers.clone()
                },
                dirs: self.dir_entries(h, "/", &paths)?,
                is_threaded: None,
            });
        }
        dir.write_image("cgroup.img", &[pb::CgroupEntry { sets, controllers }])
    }

    /// The dir entries directly below `parent` among `paths`, with their
    /// children nested.
    fn dir_entries(
        &self,
        h: &Hierarchy,
        parent: &str,
        paths: &[&String],
    ) -> Result<Vec<pb::CgroupDirEntry>> {
        let prefix = if parent == "/" {
            "/".to_string()
        } else {
            format!("{parent}/")
        };
        let mut out = Vec::new();
        for p in paths {
            let Some(rest) = p.strip_prefix(&prefix) else {
                continue;
            };
            if rest.is_empty() || rest.contains('/') {
                continue;
            }
            let d = h.dir(p);
            let meta = std::fs::metadata(&d)
                .map_err(|e| Error::io(&d, "stat of a cgroup directory", e))?;
            out.push(pb::CgroupDirEntry {
                dir_name: rest.to_string(),
                children: self.dir_entries(h, p, paths)?,
                properties: self.properties(h, &d)?,
                dir_perms: Some(pb::CgroupPerms {
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                }),
            });
        }
        Ok(out)
    }

    fn properties(&self, h: &Hierarchy, d: &Path) -> Result<Vec<pb::CgroupPropEntry>> {
        let mut names = cgroupfs::property_names(h, d);
        names.push(
            if h.v2 {
                "cgroup.freeze"
            } else {
                "freezer.state"
            }
            .to_string(),
        );
        let mut out = Vec::new();
        for name in names {
            let file = d.join(&name);
            let value = match std::fs::read_to_string(&file) {
                Ok(v) => v.trim_end_matches('\n').to_string(),
                // Not this controller, not enabled here, or write-only.
                Err(_) => continue,
            };
            let value = self.freezer_orig.get(&file).cloned().unwrap_or(value);
            // Only "threaded" is a choice; the other types follow from it.
            if name == "cgroup.type" && value != "threaded" {
                continue;
            }
            out.push(pb::CgroupPropEntry {
                name,
                value,
                perms: None,
            });
        }
        Ok(out)
    }
}

/// The cgroup namespace of task `tid` (its /proc link), None if it
/// cannot be read.
fn cgns_link(tid: Pid) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{tid}/ns/cgroup")).ok()
}

/// A task in a cgroup namespace of its own (not the engine's) sees its
/// cgroup paths relative to the namespace's root. CRIU's `cgns_prefix` is
/// the length of that root's path within the full path: read the task's
/// cgroup file once more from inside its cgroup namespace (a short-lived
/// thread of the engine joins it; the namespace is per thread) and
/// compare.
fn add_cgns_prefixes(pid: Pid, tid: Pid, set: &mut [(String, String, Option<u32>)]) -> Result<()> {
    let file = if tid == pid {
        format!("/proc/{pid}/cgroup")
    } else {
        format!("/proc/{pid}/task/{tid}/cgroup")
    };
    let nsfile = format!("/proc/{tid}/ns/cgroup");
    let inner: std::result::Result<String, String> = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&nsfile).map_err(|e| format!("{nsfile}: {e}"))?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| format!("setns into {nsfile}: {e}"))?;
            std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))
        })
        .join()
        .unwrap_or_else(|_| Err("the helper thread panicked".into()))
    });
    let inner = inner.map_err(|why| Error::task(tid, "cgroup namespace", why))?;
    let lines = cgroup::parse(&inner).map_err(|e| {
        Error::task(
            tid,
            format!("{file} (inside its cgroup namespace)"),
            e.to_string(),
        )
    })?;
    for (name, path, prefix) in set.iter_mut() {
        let seen = lines.iter().find(|l| {
            if name == cgroupfs::V2_NAME {
                l.is_v2()
            } else {
                let mut c = l.controllers.clone();
                c.sort();
                c.join(",") == *name
            }
        });
        if let Some(l) = seen {
            *prefix = cgns_prefix(path, &l.path);
        }
    }
    Ok(())
}

/// The length of the cgroup namespace root within `full`, given the path
/// the task itself sees (`seen`); None when they do not fit together. A
/// namespace rooted at the hierarchy's root is 0, not None: the restore
/// tells a task in a namespace of its own by the prefix being there.
pub fn cgns_prefix(full: &str, seen: &str) -> Option<u32> {
    if seen == "/" {
        return Some(if full == "/" { 0 } else { full.len() as u32 });
    }
    if seen == full {
        return Some(0);
    }
    full.strip_suffix(seen)
        .filter(|root| root.is_empty() || !root.ends_with('/'))
        .map(|root| root.len() as u32)
        .filter(|&n| n > 0)
}

/// How long a freezer may take to report the cgroup frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// The freezer file behind `--freeze-cgroup PATH`: PATH is a cgroup
/// directory (`/sys/fs/cgroup/freezer/x`) or a path inside the freezer
/// hierarchy (`/x`, looked up in the v1 freezer, else in cgroup2).
pub fn freezer_of(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if let Some(f) = p.is_dir().then(|| cgroupfs::freezer_file(p)).flatten() {
        if p.starts_with("/sys") || p.join("cgroup.procs").exists() {
            return Ok(f);
        }
    }
    cgroupfs::check_path(spec).map_err(|why| Error::Usage(format!("--freeze-cgroup: {why}")))?;
    let hs = cgroupfs::hierarchies()?;
    let h = hs
        .iter()
        .find(|h| h.has("freezer"))
        .or_else(|| hs.iter().find(|h| h.v2))
        .ok_or_else(|| Error::Usage("--freeze-cgroup: no freezer hierarchy is mounted".into()))?;
    cgroupfs::freezer_file(&h.dir(spec)).ok_or_else(|| {
        Error::Usage(format!(
            "--freeze-cgroup {spec}: {} has no freezer.state or cgroup.freeze",
            h.dir(spec).display()
        ))
    })
}

/// A freezer cgroup the engine froze; dropping it puts the original
/// state back (thawed, normally), on every path.
pub struct Freezer {
    pub file: PathBuf,
    pub orig: String,
    frozen: bool,
}

impl Freezer {
    fn v2(&self) -> bool {
        self.file.ends_with("cgroup.freeze")
    }

    fn write(&self, frozen: bool) -> Result<()> {
        let v = match (self.v2(), frozen) {
            (true, true) => "1",
            (true, false) => "0",
            (false, true) => "FROZEN",
            (false, false) => "THAWED",
        };
        std::fs::write(&self.file, v)
            .map_err(|e| Error::io(&self.file, format!("writing {v} to the freezer"), e))
    }

    /// Whether the kernel reports the cgroup completely frozen.
    fn is_frozen(&self) -> Result<bool> {
        if self.v2() {
            let events = self.file.with_file_name("cgroup.events");
            let text = cgroupfs::read_prop(&events)?;
            Ok(text.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            Ok(cgroupfs::read_prop(&self.file)?.trim() == "FROZEN")
        }
    }

    /// Freezes and waits until the kernel says frozen, until `deadline`
    /// (--timeout), or FREEZE_TIMEOUT without one.
    fn freeze(file: PathBuf, deadline: crate::ptrace::Deadline) -> Result<Freezer> {
        let orig = cgroupfs::read_prop(&file)?;
        let mut f = Freezer {
            file,
            orig,
            frozen: false,
        };
        f.write(true)?;
        f.frozen = true;
        let end = deadline.unwrap_or_else(|| Instant::now() + FREEZE_TIMEOUT);
        while !f.is_frozen()? {
            if Instant::now() > end {
                return Err(Error::io(
                    &f.file,
                    "freezing",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the cgroup is not frozen before the freeze timeout (--timeout) ran out",
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(f)
    }

    /// Back to the state it had before the dump.
    fn restore_orig(&mut self) -> Result<()> {
        let want = cgroupfs::is_frozen_value(&self.orig);
        if self.frozen != want {
            self.write(want)?;
            self.frozen = want;
        }
        Ok(())
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        if let Err(e) = self.restore_orig() {
            warn!("{e}");
        }
    }
}

/// Every task (thread) id in the cgroup of `freezer` file and in the
/// cgroups below it (the freezer freezes them all).
fn cgroup_tids(freezer: &Path) -> Result<Vec<Pid>> {
    let dir = freezer.parent().expect("a file in a cgroup dir");
    let mut out = tids_in(dir)?;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tids_in(&e.path()).unwrap_or_default());
                stack.push(e.path());
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The task (thread) ids directly in cgroup `dir`.
fn tids_in(dir: &Path) -> Result<Vec<Pid>> {
    // v1: `tasks` lists every thread; v2: processes, then their threads.
    let v1 = dir.join("tasks");
    let read = |p: &Path| -> Result<Vec<Pid>> {
        Ok(cgroupfs::read_prop(p)?
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect())
    };
    if v1.exists() {
        return read(&v1);
    }
    let mut out = Vec::new();
    for pid in read(&dir.join("cgroup.procs"))? {
        out.extend(crate::proc::tids(pid).unwrap_or_default());
    }
    // Threads of processes in other (threaded) cgroups.
    if let Ok(t) = read(&dir.join("cgroup.threads")) {
        out.extend(t);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `--freeze-cgroup`: freeze the cgroup, seize and interrupt every thread
/// in it while it cannot run (so nothing forks behind our back), thaw it,
/// and collect the ptrace stops. Returns the seized threads by tid and the
/// freezer guard (already back to its original state unless that was
/// frozen, in which case the guard refreezes it when dropped).
pub fn seize_cgroup(
    spec: &str,
    deadline: crate::ptrace::Deadline,
) -> Result<(BTreeMap<Pid, Seized>, Freezer)> {
    let file = freezer_of(spec)?;
    let mut fz = Freezer::freeze(file, deadline)?;
    debug!("freezer {} frozen (was {:?})", fz.file.display(), fz.orig);
    let tids = cgroup_tids(&fz.file)?;
    let mut pending = Vec::new();
    let mut first_err = None;
    for tid in tids {
        match Seized::seize_nowait(tid) {
            Ok(()) => pending.push(tid),
            // Exited (or exiting: a zombie cannot be seized) meanwhile.
            Err(_) if crate::proc::stat::read(tid).is_ok_and(|s| s.state == 'Z') => {}
            Err(_) if !Path::new(&format!("/proc/{tid}")).exists() => {}
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    // Thaw now: the interrupts take effect as the tasks run again.
    if fz.frozen {
        fz.write(false)?;
        fz.frozen = false;
    }
    let mut held = BTreeMap::new();
    for tid in pending {
        match Seized::wait_seized(tid, deadline) {
            Ok(s) => {
                held.insert(tid, s);
            }
            // It exited before it reached the stop: nothing to hold.
            Err(_) if crate::proc::stat::read(tid).is_err_and(|e| e.is_gone()) => {}
            Err(_) if crate::proc::stat::read(tid).is_ok_and(|s| s.state == 'Z') => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        // Dropping `held` detaches every thread; the guard restores the
        // freezer.
        return Err(e);
    }
    debug!("{} threads seized through the freezer", held.len());
    Ok((held, fz))
}

/// A task in a frozen cgroup never reaches a ptrace stop: seizing it
/// would hang the dump. Refuse instead, naming the cgroup (the frozen
/// state of v1 freezer.state and of cgroup2's cgroup.events covers frozen
/// ancestors too). A tree frozen on purpose is dumped with
/// `--freeze-cgroup`, which thaws it while it seizes.
pub fn check_not_frozen(pid: Pid) -> Result<()> {
    static HS: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    let hs = HS.get_or_init(|| cgroupfs::hierarchies().unwrap_or_default());
    let Ok(lines) = cgroup::read(pid) else {
        return Ok(()); // gone: the seize reports it
    };
    for l in &lines {
        let Some(h) = hs.iter().find(|h| h.matches(l)) else {
            continue;
        };
        let dir = h.dir(&l.path);
        let frozen = if h.v2 {
            cgroupfs::read_prop(&dir.join("cgroup.events"))
                .map(|t| t.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false)
        } else if h.has("freezer") {
            cgroupfs::read_prop(&dir.join("freezer.state"))
                .map(|v| cgroupfs::is_frozen_value(&v))
                .unwrap_or(false)
        } else {
            false
        };
        if frozen {
            return Err(Error::unsupported(
                pid,
                format!("cgroup {}:{}", h.name(), l.path),
                format!(
                    "the task is frozen by its freezer cgroup and cannot be seized; thaw it, or dump with --freeze-cgroup {}",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The cgroup set of every task and thread, and cgroup.img with the
/// directories of the tree's cgroups and their properties.
pub const KIND: super::kind::Kind = super::kind::Kind {
    name: "cgroups",
    new: |env| {
        let mut cg = CgroupDump::new()?;
        if let Some(fz) = env.freezer {
            // The engine froze it: the value to restore is the one before.
            cg.set_freezer_orig(fz.file.clone(), fz.orig.clone());
        }
        Ok(Box::new(cg))
    },
};

impl super::kind::Dumper for CgroupDump {
    fn task(&mut self, p: &mut super::kind::ProcCx<'_>) -> Result<()> {
        p.task_core.cg_set = Some(self.task_set(p.pid, p.pid)?);
        for (tid, _, tc) in p.threads.iter_mut() {
            tc.cg_set = Some(self.task_set(p.pid, *tid)?);
        }
        Ok(())
    }

    fn finish(&mut self, cx: &super::kind::FinishCx<'_>) -> Result<()> {
        self.write(cx.dir)
    }

    fn inventory(&self, inv: &mut pb::InventoryEntry) {
        inv.root_cg_set = self.root_set();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cgns_prefix() {
        use super::cgns_prefix as p;
        assert_eq!(p("/a/b/c", "/c"), Some(4));
        assert_eq!(p("/a/b", "/"), Some(4));
        assert_eq!(p("/", "/"), Some(0));
        assert_eq!(p("/a/b", "/a/b"), Some(0)); // rooted at the hierarchy's root
        assert_eq!(p("/a/bc", "/c"), None);
        assert_eq!(p("/x", "/y"), None);
    }
}
