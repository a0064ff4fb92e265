//! Cgroups at restore time.
//!
//! `check` validates `cgroup.img` with the other images (load.rs), before
//! anything exists. `plan` resolves it against this machine's hierarchies
//! and the options (`--manage-cgroups`, `--cgroup-root`), still before
//! any process exists, so a restore that cannot put its tasks back into
//! their cgroups fails without creating one. `prepare` creates the missing
//! cgroups (parents first) with their properties; the engine then moves
//! every new task into its cgroups right after the tree is created and
//! before any task runs its own code again or gets its threads (threads
//! inherit; a thread dumped in another cgroup is moved after it is
//! created, still before it runs). A failed restore removes the cgroups it
//! created.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cgroupfs::{self, CgroupRoot, Hierarchy};
use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// CRIU's `--manage-cgroups` modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Do nothing with cgroups at all: not even membership.
    Ignore,
    /// Membership only; every cgroup must exist already.
    None,
    /// Membership, and the properties of every cgroup, which must exist.
    Props,
    /// Create missing cgroups with their properties, leave existing ones
    /// alone (the default).
    #[default]
    Soft,
    /// Create missing cgroups, and restore the properties of all.
    Full,
    /// The tree's cgroups must not exist; create them all.
    Strict,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Ignore => "ignore",
            Mode::None => "none",
            Mode::Props => "props",
            Mode::Soft => "soft",
            Mode::Full => "full",
            Mode::Strict => "strict",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        Ok(match s {
            "ignore" => Mode::Ignore,
            "none" => Mode::None,
            "props" => Mode::Props,
            "soft" => Mode::Soft,
            "full" => Mode::Full,
            "strict" => Mode::Strict,
            _ => {
                return Err(format!(
                    "unknown cgroup mode {s:?} (ignore, none, props, soft, full, strict)"
                ))
            }
        })
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(crate::images::ImageError::invalid(path, reason))
}

/// Validate `cgroup.img` (at `path`): set ids, member names and paths,
/// directory names, property names.
pub fn check(cg: &pb::CgroupEntry, path: &Path) -> Result<()> {
    let mut ids = std::collections::BTreeSet::new();
    for s in &cg.sets {
        if s.id == 0 || !ids.insert(s.id) {
            return Err(bad(
                path,
                format!("cgroup set id {} is zero or repeated", s.id),
            ));
        }
        for m in &s.ctls {
            // The empty name is cgroup v2's.
            if m.name.contains(['\0', '/']) {
                return Err(bad(
                    path,
                    format!("set {}: bad controller name {:?}", s.id, m.name),
                ));
            }
            cgroupfs::check_path(&m.path)
                .map_err(|why| bad(path, format!("set {}, {}: {why}", s.id, m.name)))?;
            if m.cgns_prefix.is_some_and(|p| p as usize > m.path.len()) {
                return Err(bad(
                    path,
                    format!(
                        "set {}, {}: cgroup namespace prefix longer than the path",
                        s.id, m.name
                    ),
                ));
            }
        }
    }
    fn dirs(d: &[pb::CgroupDirEntry], path: &Path, ctl: &str, depth: usize) -> Result<()> {
        if depth > 64 {
            return Err(bad(
                path,
                format!("{ctl}: cgroup directories nested too deep"),
            ));
        }
        for e in d {
            cgroupfs::check_dir_name(&e.dir_name)
                .map_err(|why| bad(path, format!("{ctl}: {why}")))?;
            for p in &e.properties {
                if !cgroupfs::is_known_property(&p.name) {
                    return Err(bad(
                        path,
                        format!("{ctl}: {}: unknown property {:?}", e.dir_name, p.name),
                    ));
                }
                if p.value.contains('\0') {
                    return Err(bad(
                        path,
                        format!("{ctl}: {}: {} has a NUL in its value", e.dir_name, p.name),
                    ));
                }
                if p.name == "devices.list" {
                    cgroupfs::parse_devices_list(&p.value)
                        .map_err(|why| bad(path, format!("{ctl}: {}: {why}", e.dir_name)))?;
                }
            }
            dirs(&e.children, path, ctl, depth + 1)?;
        }
        Ok(())
    }
    for c in &cg.controllers {
        if c.cnames.is_empty() {
            return Err(bad(path, "a controller entry without names"));
        }
        dirs(&c.dirs, path, &c.cnames.join(","), 0)?;
    }
    Ok(())
}

/// CRIU leaves out of cgroup.img the set that is its own cgroups (the
/// inventory's `root_cg_set`) and writes no `cg_set` for a process in it,
/// yet still names that set in each of its threads' cores. Such a process
/// stays where the restore makes it, so its threads stay with it: the
/// set is forgotten where cgroup.img does not have it.
pub fn forget_dumpers_set(
    cg: Option<&pb::CgroupEntry>,
    dumpers: Option<u32>,
    tasks: &mut [super::load::TaskImages],
) {
    let Some(dumpers) = dumpers else { return };
    if cg.is_some_and(|cg| cg.sets.iter().any(|s| s.id == dumpers)) {
        return;
    }
    let forget = |id: &mut Option<u32>, own: Option<u32>| {
        if *id == Some(dumpers) {
            *id = own;
        }
    };
    for t in tasks {
        let Some(tc) = t.core.tc.as_mut() else {
            continue;
        };
        forget(&mut tc.cg_set, None);
        let own = tc.cg_set;
        if let Some(th) = t.core.thread_core.as_mut() {
            forget(&mut th.cg_set, own);
        }
        for (_, c) in &mut t.threads {
            if let Some(th) = c.thread_core.as_mut() {
                forget(&mut th.cg_set, own);
            }
        }
    }
}

/// Validate `cgroup.img` as the loader read it (if the images have one)
/// and check that every task's and thread's cgroup set is in it.
pub fn load(
    dir: &Path,
    part: Option<&crate::images::set::Part<pb::CgroupEntry>>,
    tasks: &[super::load::TaskImages],
) -> Result<Option<pb::CgroupEntry>> {
    let path = dir.join("cgroup.img");
    let cg = match part {
        Some(p) => {
            let cg = super::load::require(dir, "cgroup.img", p)?.clone();
            check(&cg, &path)?;
            Some(cg)
        }
        None => None,
    };
    for t in tasks {
        let leader = (t.pid, t.tc().cg_set);
        let threads = t
            .threads
            .iter()
            .map(|(tid, c)| (*tid, c.thread_core.as_ref().and_then(|tc| tc.cg_set)));
        for (tid, id) in std::iter::once(leader).chain(threads) {
            let Some(id) = id else { continue };
            if !cg
                .as_ref()
                .is_some_and(|cg| cg.sets.iter().any(|s| s.id == id))
            {
                return Err(bad(
                    &dir.join(format!("core-{tid}.img")),
                    format!("cgroup set {id} is not in cgroup.img"),
                ));
            }
        }
    }
    Ok(cg)
}

/// (pid or tid, cgroup set) of every task and thread of the image.
pub fn task_sets(imgs: &super::load::Images) -> Vec<(Pid, u32)> {
    let mut out = Vec::new();
    for t in &imgs.tasks {
        out.extend(t.tc().cg_set.map(|id| (t.pid, id)));
        for (tid, c) in &t.threads {
            out.extend(
                c.thread_core
                    .as_ref()
                    .and_then(|tc| tc.cg_set)
                    .map(|id| (*tid, id)),
            );
        }
    }
    out
}

/// One cgroup directory the restore creates or configures.
#[derive(Debug, Clone)]
struct DirPlan {
    /// On this machine, after `--cgroup-root`.
    dir: PathBuf,
    v2: bool,
    perms: Option<pb::CgroupPerms>,
    props: Vec<pb::CgroupPropEntry>,
    /// Whether it is at or below the tree's own cgroup (strict mode).
    in_tree: bool,
}

/// The cgroup part of a restore, resolved against this machine.
#[derive(Debug, Default)]
pub struct CgroupPlan {
    mode: Mode,
    /// set id -> (dir, v2) of each membership.
    sets: BTreeMap<u32, Vec<(PathBuf, bool)>>,
    /// Parents first.
    dirs: Vec<DirPlan>,
    /// set id -> (dir, v2) of the root of the cgroup namespace its tasks
    /// were in, in each hierarchy (empty: the host's cgroup namespace).
    cgns_roots: BTreeMap<u32, Vec<(PathBuf, bool)>>,
    /// cgroup2 cgroups the restore makes that were not dumped (the new
    /// root of a `--cgroup-root` and its missing parents) -> controllers
    /// to enable in their cgroup.subtree_control, so that the dumped
    /// cgroups below them get the files of their properties. Parents
    /// first (paths sort so).
    enable: BTreeMap<PathBuf, BTreeSet<String>>,
    /// This machine's hierarchies, to tell which cgroups a task is in.
    hierarchies: Vec<Hierarchy>,
}

/// The cgroup2 controller a property belongs to (`hugetlb.2MB.max`:
/// hugetlb), None for the core `cgroup.*` files.
fn v2_controller(prop: &str) -> Option<&str> {
    match prop.split_once('.') {
        Some(("cgroup", _)) | None => None,
        Some((c, _)) => Some(c),
    }
}

/// Whether the restore writes the properties of `d` in this mode.
fn sets_props(mode: Mode, exists: bool) -> bool {
    match mode {
        Mode::Props | Mode::Full => true,
        Mode::Soft | Mode::Strict => !exists,
        Mode::Ignore | Mode::None => false,
    }
}

/// For every cgroup2 cgroup whose properties the restore writes, the
/// controllers those properties need (each file exists only when its
/// controller is enabled in the parent's cgroup.subtree_control, and a
/// cgroup's own subtree_control can only name controllers so enabled):
/// walk up its parents until one provides them. A dumped parent whose
/// properties are written provides them itself (its subtree_control is
/// among them); an existing cgroup the restore does not write must
/// already enable them (else refused: the restore changes no cgroup it
/// was not asked to); a parent that does not exist and was not dumped is
/// made by the restore, which enables them there. `subtree_control`
/// reads the file of an existing cgroup (None: the cgroup does not
/// exist); `pid_below` names a task restored at or below a cgroup, for
/// the message. Returns what to enable where.
fn enablement(
    dirs: &[DirPlan],
    mode: Mode,
    subtree_control: impl Fn(&Path) -> Option<String>,
    pid_below: impl Fn(&Path) -> Pid,
) -> Result<BTreeMap<PathBuf, BTreeSet<String>>> {
    let mut enable: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for d in dirs.iter().filter(|d| d.v2) {
        if !sets_props(mode, subtree_control(&d.dir).is_some()) {
            continue;
        }
        let mut need: BTreeSet<&str> = d
            .props
            .iter()
            .filter_map(|p| v2_controller(&p.name))
            .collect();
        need.extend(
            d.props
                .iter()
                .filter(|p| p.name == "cgroup.subtree_control")
                .flat_map(|p| p.value.split_whitespace()),
        );
        if need.is_empty() {
            continue;
        }
        let mut up = d.dir.parent();
        while let Some(p) = up {
            let existing = subtree_control(p);
            if dirs.iter().any(|x| x.dir == p) && sets_props(mode, existing.is_some()) {
                break;
            }
            if let Some(have) = existing {
                let have: BTreeSet<&str> = have.split_whitespace().collect();
                let missing: Vec<&str> = need.difference(&have).copied().collect();
                if !missing.is_empty() {
                    return Err(Error::unsupported(
                        pid_below(&d.dir),
                        format!("cgroup {}", p.display()),
                        format!(
                            "restoring the properties of {} needs controller(s) {} enabled in the cgroup.subtree_control of this existing cgroup, which the restore does not change",
                            d.dir.display(),
                            missing.join(" ")
                        ),
                    ));
                }
                break;
            }
            enable
                .entry(p.to_path_buf())
                .or_default()
                .extend(need.iter().map(|c| c.to_string()));
            up = p.parent();
        }
    }
    Ok(enable)
}

/// A task (or thread) restored into a cgroup2 cgroup that `at` accepts.
fn pid_in(
    sets: &BTreeMap<u32, Vec<(PathBuf, bool)>>,
    task_sets: &[(Pid, u32)],
    at: impl Fn(&Path) -> bool,
) -> Option<Pid> {
    task_sets
        .iter()
        .find(|(_, id)| {
            sets.get(id)
                .is_some_and(|v| v.iter().any(|(d, v2)| *v2 && at(d)))
        })
        .map(|t| t.0)
}

/// cgroup2's no-internal-processes rule: a cgroup other than the
/// hierarchy's root that has controllers enabled for its children cannot
/// hold processes. A cgroup the restore makes and enables controllers in
/// (see [`enablement`]) that is also where a task goes is such a plan:
/// refused before any process exists. It happens when the tree sat in the
/// root (whose children had controllers the root enabled) and
/// `--cgroup-root` moves it into an ordinary cgroup.
fn check_no_internal_processes(
    enable: &BTreeMap<PathBuf, BTreeSet<String>>,
    sets: &BTreeMap<u32, Vec<(PathBuf, bool)>>,
    task_sets: &[(Pid, u32)],
) -> Result<()> {
    for (dir, ctls) in enable {
        let Some(pid) = pid_in(sets, task_sets, |d| d == dir) else {
            continue;
        };
        return Err(Error::unsupported(
            pid,
            format!("cgroup {}", dir.display()),
            format!(
                "the task would be restored into it, and the cgroups dumped below it need controller(s) {} enabled in its cgroup.subtree_control; cgroup2 allows no processes in a cgroup with controllers enabled for its children unless it is the hierarchy's root (the task was in the root of its cgroups when dumped; restore without --cgroup-root for cgroup2, or with a root that is the hierarchy's)",
                ctls.iter().cloned().collect::<Vec<_>>().join(" ")
            ),
        ));
    }
    Ok(())
}

/// Flatten the nested dir entries into (path, entry) pairs, parents first.
fn flatten<'a>(
    parent: &str,
    d: &'a [pb::CgroupDirEntry],
    out: &mut Vec<(String, &'a pb::CgroupDirEntry)>,
) {
    for e in d {
        let p = format!(
            "{}/{}",
            parent.trim_end_matches('/'),
            e.dir_name.trim_matches('/')
        );
        out.push((p.clone(), e));
        flatten(&p, &e.children, out);
    }
}

/// Cgroup membership and properties: resolved against this machine before
/// anything exists, cgroups made before the tree, every task put into its
/// cgroups right after its clone (before it runs code of its own or has
/// threads), each thread dumped in a cgroup of its own moved there.
pub const KIND: super::stage::Kind = super::stage::Kind {
    name: "cgroups",
    validate: |imgs| cgns_roles(imgs).map(|_| ()),
    new: |imgs, opts| {
        let plan = plan(
            imgs.cgroups.as_ref(),
            &task_sets(imgs),
            opts.manage_cgroups,
            &opts.cgroup_roots,
        )?;
        Ok(Box::new(Cgroups {
            plan,
            cgns: cgns_roles(imgs)?,
            made: None,
        }))
    },
};

/// A task's part in making its cgroup namespace again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgnsRole {
    /// The first task in a namespace of the tree's own: it makes it.
    Leader,
    /// Joins the namespace its leader (this pid, an ancestor) made.
    Member(Pid),
}

/// Each task's role for the cgroup namespaces of the tree's own: those
/// whose id (ids-PID.img) is not the dumper's (inventory.img root_ids).
/// The first task of each in tree order (parents first) is its leader;
/// the others must descend from it (dump/ns.rs made sure), or the images
/// are refused here, before anything is created.
fn cgns_roles(imgs: &super::load::Images) -> Result<BTreeMap<Pid, CgnsRole>> {
    let host = imgs
        .inventory
        .root_ids
        .as_ref()
        .and_then(|r| r.cgroup_ns_id);
    let mut leaders: BTreeMap<u32, Pid> = BTreeMap::new();
    let mut roles = BTreeMap::new();
    let parent: BTreeMap<Pid, Pid> = imgs
        .tasks
        .iter()
        .map(|t| (t.pid, t.pstree.ppid as Pid))
        .collect();
    for t in &imgs.tasks {
        let Some(id) = t.ids.cgroup_ns_id.filter(|&id| Some(id) != host) else {
            continue;
        };
        let Some(&leader) = leaders.get(&id) else {
            leaders.insert(id, t.pid);
            roles.insert(t.pid, CgnsRole::Leader);
            continue;
        };
        let mut up = parent.get(&t.pid).copied();
        while let Some(p) = up.filter(|&p| p != leader) {
            up = parent.get(&p).copied();
        }
        if up != Some(leader) {
            return Err(imgs.bad(
                &format!("ids-{}.img", t.pid),
                format!(
                    "pid {}: in cgroup namespace {id}, made by pid {leader}, which is not its ancestor",
                    t.pid
                ),
            ));
        }
        roles.insert(t.pid, CgnsRole::Member(leader));
    }
    Ok(roles)
}

struct Cgroups {
    plan: CgroupPlan,
    cgns: BTreeMap<Pid, CgnsRole>,
    /// Removed again by its Drop unless the tree was released.
    made: Option<Created>,
}

impl super::stage::Restorer for Cgroups {
    fn create(&mut self, _: &super::load::Images, _: &mut super::stage::EngineFds) -> Result<()> {
        self.made = Some(self.plan.prepare()?);
        Ok(())
    }

    fn tree_created(&mut self, imgs: &super::load::Images) -> Result<()> {
        for t in &imgs.tasks {
            self.plan.move_task(t.pid, t.tc().cg_set)?;
        }
        Ok(())
    }

    fn in_task(
        &self,
        stage: super::stage::TaskStage,
        cx: &mut super::stage::TaskCx<'_>,
    ) -> Result<()> {
        if matches!(
            stage,
            super::stage::TaskStage::Objects | super::stage::TaskStage::Mm
        ) {
            return self.enter_cgns(stage, cx);
        }
        if stage != super::stage::TaskStage::Threads {
            return Ok(());
        }
        let t = cx.t;
        for (tid, core) in &t.threads {
            let id = core.thread_core.as_ref().and_then(|c| c.cg_set);
            if id.is_some() && id != t.tc().cg_set {
                self.plan.move_thread(*tid, id, t.tc().cg_set)?;
            }
        }
        Ok(())
    }

    fn released(&mut self) {
        if let Some(made) = self.made.take() {
            made.keep();
        }
        if let Err(e) = self.plan.finish() {
            warn!("{e}");
        }
    }
}

impl Cgroups {
    /// A cgroup namespace of the tree's own (`cgns_roles`): its leader
    /// makes a new one while it stands in the cgroups that were the
    /// namespace's root, so that it is rooted there, and goes back to its
    /// own cgroups; the leader's descendants in it join it (through a
    /// pidfd of the leader). The leaders in the `Objects` stage, the others
    /// in `Mm`, once every leader is in its namespace (tasks go through a
    /// stage side by side); both before the Threads stage, so the threads
    /// are born in it.
    fn enter_cgns(
        &self,
        stage: super::stage::TaskStage,
        cx: &mut super::stage::TaskCx<'_>,
    ) -> Result<()> {
        use super::stage::TaskStage;
        let pid = cx.pid();
        let leader = match (self.cgns.get(&pid), stage) {
            (Some(CgnsRole::Member(leader)), TaskStage::Mm) => *leader,
            (Some(CgnsRole::Leader), TaskStage::Objects) => pid,
            _ => return Ok(()),
        };
        let set = |p: Pid| {
            cx.imgs
                .tasks
                .iter()
                .find(|t| t.pid == p)
                .and_then(|t| t.tc().cg_set)
        };
        let Some(roots) = set(leader).and_then(|id| self.plan.cgns_roots.get(&id)) else {
            return Ok(());
        };
        if pid != leader {
            return cx.in_leader(|r, _, _| {
                let fd = r.call(
                    libc::SYS_pidfd_open,
                    &[leader as u64, 0],
                    &format!("pidfd_open of pid {leader} to join its cgroup namespace"),
                )?;
                let res = r.call(
                    libc::SYS_setns,
                    &[fd, libc::CLONE_NEWCGROUP as u64],
                    &format!("setns into the cgroup namespace of pid {leader}"),
                );
                r.call(libc::SYS_close, &[fd], "close of the pidfd")?;
                res.map(|_| ())
            });
        }
        if self.plan.mode != Mode::Ignore {
            for (dir, _) in roots {
                let file = dir.join("cgroup.procs");
                std::fs::write(&file, pid.to_string()).map_err(|e| {
                    Error::task(
                        pid,
                        format!("cgroup namespace root {}", dir.display()),
                        format!(
                            "moving the task there to unshare the namespace: writing to {}: {e}",
                            file.display()
                        ),
                    )
                })?;
            }
        }
        cx.in_leader(|r, _, _| {
            r.call(
                libc::SYS_unshare,
                &[libc::CLONE_NEWCGROUP as u64],
                "unshare of a new cgroup namespace",
            )
            .map(|_| ())
        })?;
        debug!("pid {pid}: cgroup namespace rooted at {roots:?}");
        self.plan.move_task(pid, set(pid))
    }
}

/// Resolve the image's cgroups against this machine. `cg` is the content
/// of cgroup.img (None if the images have none); `task_sets` the cg_set
/// of every task and thread, with the pid for messages.
pub fn plan(
    cg: Option<&pb::CgroupEntry>,
    task_sets: &[(Pid, u32)],
    mode: Mode,
    roots: &[CgroupRoot],
) -> Result<CgroupPlan> {
    let mut plan = CgroupPlan {
        mode,
        ..Default::default()
    };
    let Some(cg) = cg.filter(|_| mode != Mode::Ignore) else {
        return Ok(plan);
    };
    let hs = cgroupfs::hierarchies()?;
    let hier = |name: &str, pid: Pid| -> Result<&Hierarchy> {
        cgroupfs::find(&hs, name).ok_or_else(|| {
            Error::unsupported(
                pid,
                format!("cgroup hierarchy {name}"),
                "it is not mounted on this machine; mount it or restore with --manage-cgroups=ignore",
            )
        })
    };
    for r in roots {
        if let Some(c) = &r.controller {
            if !hs
                .iter()
                .any(|h| h.has(c) || h.name() == *c || (h.v2 && c == "cgroup2"))
            {
                return Err(Error::Usage(format!(
                    "--cgroup-root {c}:{}: no mounted hierarchy has controller {c}",
                    r.path
                )));
            }
        }
    }
    // The tree's own cgroup in each hierarchy: what --cgroup-root replaces.
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &cg.sets {
        for m in &s.ctls {
            by_name.entry(&m.name).or_default().push(&m.path);
        }
    }
    let base: BTreeMap<&str, String> = by_name
        .iter()
        .map(|(n, ps)| (*n, cgroupfs::common_ancestor(ps.iter().copied())))
        .collect();
    let map = |name: &str, path: &str| -> String {
        let b = base.get(name).map_or("/", |b| b.as_str());
        cgroupfs::map_path(path, b, cgroupfs::root_for(roots, name))
    };
    let under = |path: &str, b: &str| {
        b == "/" || path == b || path.starts_with(&format!("{}/", b.trim_end_matches('/')))
    };
    let mut missing_warned = std::collections::BTreeSet::new();
    for s in &cg.sets {
        let mut v = Vec::new();
        let mut ns_roots = Vec::new();
        for m in &s.ctls {
            let pid = task_sets.iter().find(|t| t.1 == s.id).map_or(0, |t| t.0);
            // Only the root of a hierarchy this machine does not mount
            // (an image of a hybrid machine on a pure cgroup2 one): the
            // membership means nothing here.
            let only_roots = by_name
                .get(m.name.as_str())
                .is_some_and(|ps| ps.iter().all(|p| *p == "/"));
            if only_roots && cgroupfs::find(&hs, &m.name).is_none() {
                if missing_warned.insert(m.name.clone()) {
                    warn!(
                        "cgroup hierarchy {} is not mounted here; the tree was in its root only, so it is skipped",
                        m.name
                    );
                }
                continue;
            }
            let h = hier(&m.name, pid)?;
            v.push((h.dir(&map(&m.name, &m.path)), h.v2));
            if let Some(p) = m.cgns_prefix {
                // check() made sure the prefix fits in the path.
                let root = match &m.path[..p as usize] {
                    "" => "/",
                    r => r,
                };
                ns_roots.push((h.dir(&map(&m.name, root)), h.v2));
            }
        }
        plan.sets.insert(s.id, v);
        if !ns_roots.is_empty() {
            plan.cgns_roots.insert(s.id, ns_roots);
        }
    }
    for &(pid, id) in task_sets {
        if !plan.sets.contains_key(&id) {
            return Err(Error::Image(crate::images::ImageError::invalid(
                "cgroup.img",
                format!("pid {pid}: cgroup set {id} is not in cgroup.img"),
            )));
        }
    }
    for c in &cg.controllers {
        let name = c.cnames.join(",");
        let Ok(h) = hier(&name, 0) else {
            // Dirs of a hierarchy no task is in below its root: nothing
            // to do there.
            if by_name
                .get(name.as_str())
                .is_some_and(|ps| ps.iter().any(|p| *p != "/"))
            {
                hier(&name, 0)?;
            }
            continue;
        };
        let b = base
            .get(name.as_str())
            .map_or("/".to_string(), |b| b.clone());
        let remapped = cgroupfs::root_for(roots, &name).is_some();
        let mut flat = Vec::new();
        flatten("/", &c.dirs, &mut flat);
        for (path, e) in flat {
            let in_tree = under(&path, &b);
            // Ancestors of the tree's cgroup do not move with it.
            if remapped && !in_tree {
                continue;
            }
            plan.dirs.push(DirPlan {
                dir: h.dir(&map(&name, &path)),
                v2: h.v2,
                perms: e.dir_perms,
                props: e.properties.clone(),
                in_tree,
            });
        }
    }
    plan.enable = enablement(
        &plan.dirs,
        mode,
        |d| {
            d.is_dir()
                .then(|| cgroupfs::read_prop(&d.join("cgroup.subtree_control")).unwrap_or_default())
        },
        |below| pid_in(&plan.sets, task_sets, |d| d.starts_with(below)).unwrap_or(0),
    )?;
    check_no_internal_processes(&plan.enable, &plan.sets, task_sets)?;
    // What the mode requires of the machine, checked before any process.
    for d in &plan.dirs {
        let exists = d.dir.is_dir();
        match mode {
            Mode::None | Mode::Props if !exists => {
                return Err(Error::io(
                    &d.dir,
                    format!("--manage-cgroups={mode}: the cgroup must exist"),
                    std::io::ErrorKind::NotFound.into(),
                ))
            }
            Mode::Strict if exists && d.in_tree => {
                return Err(Error::io(
                    &d.dir,
                    "--manage-cgroups=strict: the cgroup must not exist",
                    std::io::ErrorKind::AlreadyExists.into(),
                ))
            }
            _ => {}
        }
    }
    if matches!(mode, Mode::None | Mode::Props) {
        for (dir, _) in plan.sets.values().flatten() {
            if !dir.is_dir() {
                return Err(Error::io(
                    dir,
                    format!("--manage-cgroups={mode}: the cgroup must exist"),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
        }
    }
    plan.hierarchies = hs;
    Ok(plan)
}

/// Cgroups the restore created; removed again (children first) when the
/// restore fails, unless kept. Also the frozen cgroups it thawed to put
/// tasks into them (a frozen task never reaches the engine's ptrace stop):
/// frozen again when it is dropped, whatever happened.
pub struct Created {
    dirs: Vec<PathBuf>,
    keep: bool,
    thawed: Vec<(PathBuf, bool)>,
}

impl Created {
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for (file, v2) in &self.thawed {
            let _ = std::fs::write(file, if *v2 { "1" } else { "FROZEN" });
        }
        if self.keep {
            return;
        }
        for d in self.dirs.iter().rev() {
            // The killed tasks may take a moment to leave it.
            for _ in 0..200 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

fn write(file: &Path, value: &str) -> Result<()> {
    std::fs::write(file, value)
        .map_err(|e| Error::io(file, format!("writing {value:?} to a cgroup file"), e))
}

/// Write one property back unless it already has the value.
fn set_prop(dir: &Path, p: &pb::CgroupPropEntry) -> Result<()> {
    let file = dir.join(&p.name);
    if p.name == "freezer.state" || p.name == "cgroup.freeze" {
        return Ok(()); // after the tasks are back (CgroupPlan::finish)
    }
    let cur = cgroupfs::read_prop(&file).map_err(|_| {
        Error::io(
            &file,
            format!(
                "restoring {}={:?}: the file is missing (controller not enabled in the parent's cgroup.subtree_control?)",
                p.name, p.value
            ),
            std::io::ErrorKind::NotFound.into(),
        )
    })?;
    if cur.trim() == p.value.trim() {
        return Ok(());
    }
    match p.name.as_str() {
        "cgroup.subtree_control" => {
            let want: Vec<&str> = p.value.split_whitespace().collect();
            let have: Vec<&str> = cur.split_whitespace().collect();
            let mut ops: Vec<String> = want
                .iter()
                .filter(|c| !have.contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            ops.extend(
                have.iter()
                    .filter(|c| !want.contains(c))
                    .map(|c| format!("-{c}")),
            );
            write(&file, &ops.join(" "))
        }
        "devices.list" => {
            let rules = cgroupfs::parse_devices_list(&p.value)
                .map_err(|why| Error::io(&file, why, std::io::ErrorKind::InvalidData.into()))?;
            write(&dir.join("devices.deny"), "a")?;
            for r in rules {
                write(&dir.join("devices.allow"), &r.to_string())?;
            }
            Ok(())
        }
        "cpuset.cpus" | "cpuset.mems" if p.value.trim().is_empty() => Ok(()),
        _ => write(&file, &p.value),
    }
}

impl CgroupPlan {
    /// Create the missing cgroups (parents first) and restore properties
    /// as the mode says. Runs before any process is created.
    pub fn prepare(&self) -> Result<Created> {
        let mut made = Created {
            dirs: Vec::new(),
            keep: false,
            thawed: Vec::new(),
        };
        if self.mode == Mode::Ignore {
            return Ok(made);
        }
        if self.mode != Mode::None {
            self.create(&mut made)?;
        }
        for (dir, v2) in self.sets.values().flatten() {
            thaw_for_restore(dir, *v2, &mut made)?;
        }
        Ok(made)
    }

    fn create(&self, made: &mut Created) -> Result<()> {
        let all_dirs = self
            .dirs
            .iter()
            .map(|d| d.dir.clone())
            .chain(self.sets.values().flatten().map(|(d, _)| d.clone()))
            .collect::<Vec<_>>();
        for (dir, ctls) in &self.enable {
            mkdir_p(dir, made)?;
            let ops: Vec<String> = ctls.iter().map(|c| format!("+{c}")).collect();
            write(&dir.join("cgroup.subtree_control"), &ops.join(" "))?;
            debug!(
                "cgroup {}: made, {} enabled for the cgroups below",
                dir.display(),
                ops.join(" ")
            );
        }
        for d in &self.dirs {
            let mut created = false;
            if !d.dir.is_dir() {
                mkdir_p(&d.dir, made)?;
                created = true;
                if let Some(p) = &d.perms {
                    let _ = std::fs::set_permissions(
                        &d.dir,
                        std::fs::Permissions::from_mode(p.mode & 0o7777),
                    );
                    let _ = std::os::unix::fs::chown(&d.dir, Some(p.uid), Some(p.gid));
                }
            }
            let props = sets_props(self.mode, !created);
            if props {
                for p in &d.props {
                    set_prop(&d.dir, p)?;
                }
            }
            debug!(
                "cgroup {}: {}{}",
                d.dir.display(),
                if created { "created" } else { "exists" },
                if props { ", properties restored" } else { "" }
            );
        }
        // Membership targets not among the dumped dirs (a --cgroup-root
        // that does not exist yet, say).
        for d in all_dirs {
            if !d.is_dir() {
                mkdir_p(&d, made)?;
            }
        }
        Ok(())
    }

    /// Move a new task into the cgroups of set `id` (all its threads: it
    /// has one at this point).
    pub fn move_task(&self, pid: Pid, id: Option<u32>) -> Result<()> {
        // A new task is in the cgroups it was forked in (the engine's,
        // most often the ones it is restored into): writing a cgroup.procs
        // file costs a synchronize_rcu (~10 ms) even when the task stays
        // where it is, so only the cgroups it is not in are written.
        let here = self.dirs_of(pid);
        self.move_to(pid, id, &here, "cgroup.procs", "cgroup.procs")
    }

    /// Move one thread, created in its leader's cgroups (set `leader`),
    /// into those of set `id` where they differ (v1 hierarchies are per
    /// thread; in cgroup2 only threaded cgroups are).
    pub fn move_thread(&self, tid: Pid, id: Option<u32>, leader: Option<u32>) -> Result<()> {
        let here: Vec<PathBuf> = leader
            .and_then(|f| self.sets.get(&f))
            .map(|a| a.iter().map(|(d, _)| d.clone()).collect())
            .unwrap_or_default();
        self.move_to(tid, id, &here, "tasks", "cgroup.threads")
    }

    /// The directories of the cgroups task `pid` is in now, in the
    /// hierarchies this machine mounts (none when /proc says nothing
    /// usable: then every membership is written).
    fn dirs_of(&self, pid: Pid) -> Vec<PathBuf> {
        let Ok(lines) = crate::proc::cgroup::read(pid) else {
            return Vec::new();
        };
        lines
            .iter()
            .filter_map(|l| {
                let h = self.hierarchies.iter().find(|h| h.matches(l))?;
                let inside = l.path.strip_prefix(h.root.trim_end_matches('/'))?;
                (inside.is_empty() || inside.starts_with('/')).then(|| h.dir(&l.path))
            })
            .collect()
    }

    /// Write `pid` into the cgroups of set `id`, but for those in `here`
    /// (where it is already).
    fn move_to(
        &self,
        pid: Pid,
        id: Option<u32>,
        here: &[PathBuf],
        v1: &str,
        v2: &str,
    ) -> Result<()> {
        let Some(id) = id.filter(|_| self.mode != Mode::Ignore) else {
            return Ok(());
        };
        let Some(set) = self.sets.get(&id) else {
            return Ok(()); // images without cgroup.img: validated in plan()
        };
        for (dir, is_v2) in set {
            if here.contains(dir) {
                continue;
            }
            let file = dir.join(if *is_v2 { v2 } else { v1 });
            std::fs::write(&file, pid.to_string()).map_err(|e| {
                Error::task(
                    pid,
                    format!("moving into cgroup {}", dir.display()),
                    format!("writing to {}: {e}", file.display()),
                )
            })?;
        }
        Ok(())
    }

    /// Once every task is back: freeze the cgroups that were frozen.
    pub fn finish(&self) -> Result<()> {
        if matches!(self.mode, Mode::Ignore | Mode::None) {
            return Ok(());
        }
        for d in &self.dirs {
            for p in &d.props {
                let frozen = cgroupfs::is_frozen_value(&p.value);
                if (p.name == "freezer.state" || p.name == "cgroup.freeze") && frozen {
                    let v = if d.v2 { "1" } else { "FROZEN" };
                    write(&d.dir.join(&p.name), v)?;
                }
            }
        }
        Ok(())
    }
}

/// A membership cgroup that is frozen now: thaw it for the restore (and
/// have `made` freeze it again). One frozen by an ancestor cannot be
/// thawed from here: refused, before any process exists.
fn thaw_for_restore(dir: &Path, v2: bool, made: &mut Created) -> Result<()> {
    let (file, is_frozen): (PathBuf, fn(&Path) -> bool) = if v2 {
        (dir.join("cgroup.freeze"), |d| {
            cgroupfs::read_prop(&d.join("cgroup.events"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "frozen 1"))
        })
    } else {
        (dir.join("freezer.state"), |d| {
            cgroupfs::read_prop(&d.join("freezer.state"))
                .is_ok_and(|v| cgroupfs::is_frozen_value(&v))
        })
    };
    if !file.exists() || !is_frozen(dir) || made.thawed.iter().any(|(f, _)| *f == file) {
        return Ok(());
    }
    // Frozen itself, not (only) through an ancestor.
    let own = if v2 {
        cgroupfs::read_prop(&file).is_ok_and(|v| v.trim() == "1")
    } else {
        match cgroupfs::read_prop(&dir.join("freezer.self_freezing")) {
            Ok(v) => v.trim() == "1",
            Err(_) => true,
        }
    };
    if own {
        write(&file, if v2 { "0" } else { "THAWED" })?;
        made.thawed.push((file.clone(), v2));
        debug!("cgroup {}: frozen, thawed for the restore", dir.display());
    }
    for _ in 0..200 {
        if !is_frozen(dir) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(Error::io(
        dir,
        "the cgroup is frozen (by an ancestor cgroup); a task restored into it could not be set up",
        std::io::ErrorKind::WouldBlock.into(),
    ))
}

fn mkdir_p(dir: &Path, made: &mut Created) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() {
        missing.push(d.to_path_buf());
        d = match d.parent() {
            Some(p) => p,
            None => break,
        };
    }
    for m in missing.into_iter().rev() {
        match std::fs::create_dir(&m) {
            Ok(()) => made.dirs.push(m),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&m, "creating a cgroup", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!("soft".parse::<Mode>().unwrap(), Mode::Soft);
        assert_eq!("ignore".parse::<Mode>().unwrap(), Mode::Ignore);
        assert!("bogus".parse::<Mode>().is_err());
        assert_eq!(Mode::default(), Mode::Soft);
        for m in [
            Mode::Ignore,
            Mode::None,
            Mode::Props,
            Mode::Soft,
            Mode::Full,
            Mode::Strict,
        ] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
    }

    fn entry(path: &str, props: &[(&str, &str)]) -> pb::CgroupEntry {
        pb::CgroupEntry {
            sets: vec![pb::CgSetEntry {
                id: 1,
                ctls: vec![pb::CgMemberEntry {
                    name: "pids".into(),
                    path: path.into(),
                    cgns_prefix: None,
                }],
            }],
            controllers: vec![pb::CgControllerEntry {
                cnames: vec!["pids".into()],
                dirs: vec![pb::CgroupDirEntry {
                    dir_name: "a".into(),
                    children: vec![],
                    properties: props
                        .iter()
                        .map(|(n, v)| pb::CgroupPropEntry {
                            name: n.to_string(),
                            value: v.to_string(),
                            perms: None,
                        })
                        .collect(),
                    dir_perms: None,
                }],
                is_threaded: None,
            }],
        }
    }

    #[test]
    fn validation() {
        let p = Path::new("cgroup.img");
        assert!(check(&entry("/a", &[("pids.max", "5")]), p).is_ok());
        let e = check(&entry("/a/../b", &[]), p).unwrap_err().to_string();
        assert!(e.contains("cgroup.img") && e.contains(".."), "{e}");
        let e = check(&entry("/a", &[("release_agent", "/x")]), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown property"), "{e}");
        assert!(check(&entry("/a", &[("devices.list", "q 1:2 r")]), p).is_err());
        let mut bad_dir = entry("/a", &[]);
        bad_dir.controllers[0].dirs[0].dir_name = "..".into();
        assert!(check(&bad_dir, p).is_err());
        let mut dup = entry("/a", &[]);
        dup.sets.push(dup.sets[0].clone());
        assert!(check(&dup, p).is_err());
    }

    fn v2_dir(dir: &str, props: &[(&str, &str)]) -> DirPlan {
        DirPlan {
            dir: PathBuf::from(dir),
            v2: true,
            perms: None,
            props: props
                .iter()
                .map(|(n, v)| pb::CgroupPropEntry {
                    name: n.to_string(),
                    value: v.to_string(),
                    perms: None,
                })
                .collect(),
            in_tree: true,
        }
    }

    /// A machine where only /cg (subtree_control "hugetlb pids") and
    /// /cg/old (none) exist.
    fn machine(d: &Path) -> Option<String> {
        match d.to_str()? {
            "/cg" => Some("hugetlb pids".into()),
            "/cg/old" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn enabling_in_made_parents() {
        // --cgroup-root moved the tree to /cg/new/root: /cg/new is made by
        // the restore and must enable what the dumped cgroups need.
        let dirs = [
            v2_dir(
                "/cg/new/root",
                &[
                    ("hugetlb.2MB.max", "max"),
                    ("cgroup.subtree_control", "pids"),
                ],
            ),
            v2_dir("/cg/new/root/leaf", &[("pids.max", "41")]),
        ];
        let en = enablement(&dirs, Mode::Soft, machine, |_| 0).unwrap();
        let got: Vec<(&str, Vec<&str>)> = en
            .iter()
            .map(|(d, c)| (d.to_str().unwrap(), c.iter().map(|s| s.as_str()).collect()))
            .collect();
        assert_eq!(got, [("/cg/new", vec!["hugetlb", "pids"])]);
        // Nothing to enable where the properties are not written.
        assert!(enablement(&dirs, Mode::None, machine, |_| 0)
            .unwrap()
            .is_empty());
        // Only core properties: nothing needed.
        let core = [v2_dir("/cg/new/x", &[("cgroup.max.depth", "2")])];
        assert!(enablement(&core, Mode::Soft, machine, |_| 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn existing_parent_without_the_controller() {
        let dirs = [v2_dir("/cg/old/x", &[("memory.max", "1")])];
        let e = enablement(&dirs, Mode::Soft, machine, |_| 9)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pid 9") && e.contains("/cg/old") && e.contains("memory"),
            "{e}"
        );
    }

    #[test]
    fn no_internal_processes() {
        let dirs = [v2_dir("/cg/new/child", &[("hugetlb.2MB.max", "max")])];
        let en = enablement(&dirs, Mode::Soft, machine, |_| 0).unwrap();
        let mut sets = BTreeMap::new();
        sets.insert(1, vec![(PathBuf::from("/cg/new"), true)]);
        sets.insert(2, vec![(PathBuf::from("/cg/new/child"), true)]);
        let e = check_no_internal_processes(&en, &sets, &[(7, 2), (5, 1)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pid 5") && e.contains("/cg/new") && e.contains("hugetlb"),
            "{e}"
        );
        sets.remove(&1);
        assert!(check_no_internal_processes(&en, &sets, &[(7, 2)]).is_ok());
    }

    #[test]
    fn flattening() {
        let mut e = entry("/a", &[]);
        e.controllers[0].dirs[0].children.push(pb::CgroupDirEntry {
            dir_name: "b".into(),
            ..Default::default()
        });
        let mut out = Vec::new();
        flatten("/", &e.controllers[0].dirs, &mut out);
        let paths: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/a", "/a/b"]);
    }
}
