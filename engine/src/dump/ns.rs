//! Which namespaces a tree lives in, and the images of those it owns
//! (`utsns-N.img`, `timens-N.img`, `pidns-N.img`; the IPC namespace's are
//! dump/ipc.rs's).
//!
//! A restore rebuilds a namespace only one way: its root creates it, and
//! every task of the tree inherits it. So a tree is dumped when, for every
//! kind of namespace, all its tasks share the root's, and the root's is
//! either the engine's (the host's: the restore puts the tree in its own)
//! or one the restore can make anew. Mount and network namespaces can be
//! made anew only in the shape the zdtm `ns` flavour gives them (a
//! private copy of the host's mounts with a /proc of its own: mntns.rs;
//! only an untouched loopback device: netns.rs), which those modules
//! check. Anything else — a task that went into a namespace of its own
//! below the root, a mount or network namespace of another shape — is
//! refused here, naming the task and the namespace, rather than restored
//! somewhere else.
//!
//! UTS namespaces below the root's (a task that unshared CLONE_NEWUTS,
//! alone or with a user namespace: a sandbox's) are the second exception
//! (`nested_uts`): each is kept in its own `utsns-N.img`, N as in the ids
//! of the tasks in it, and the restore makes it in the user namespace of
//! its first task in tree order, which must own it, and puts every task
//! of it there (restore/nested_ns.rs). A task cannot go back into the
//! root's from one below it (its parent's), since the restore puts a task
//! into a namespace that is not its parent's only below the root's.
//!
//! A user namespace of the tree's own (userns.rs) is one a level below the
//! engine's, and every other namespace the tree owns must be owned by it:
//! the restore makes them all from inside it. User namespaces below the
//! root's are userns.rs's `collect`'s to check.
//!
//! A tree whose root is the init of a pid namespace of its own is dumped
//! with the pids its tasks have in that namespace (CRIU's virtual pids):
//! those are what the tree sees and what the restore gives back, while the
//! pids seen from outside need not be kept.
//!
//! Pid namespaces nested below the root's (a task that unshared or cloned
//! one for its children) are the exception to the rule above: a task in
//! one has a pid at every level from the root's namespace down (NSpid),
//! all kept (pstree.img `ns_pid`, `ns_pgid`, `ns_sid`), and the restore
//! makes each namespace by cloning its init (restore/pidns.rs).
//! `pid_levels` says which nestings can be rebuilt.

use std::collections::BTreeMap;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::proc::{self, status};

use super::freeze::FrozenProc;
use super::reads::TreeReads;

/// Namespace kinds a tree may have its own of, because the restore makes
/// them anew.
const OWN_OK: [&str; 8] = ["uts", "ipc", "pid", "cgroup", "time", "mnt", "net", "user"];

/// What the restore cannot make yet, and why.
fn not_yet(_kind: &str) -> &'static str {
    "this kind of namespace is not supported yet"
}

/// The namespaces of a frozen tree, checked.
pub struct TreeNs {
    /// The root's namespaces (kind -> inode), `*_for_children` left out.
    root: BTreeMap<String, u64>,
    /// The engine's.
    engine: BTreeMap<String, u64>,
    /// Host pid -> pid in the root's pid namespace, for every task and
    /// thread of the tree; empty when the tree is in the engine's pid
    /// namespace.
    vpids: BTreeMap<Pid, Pid>,
    /// Host pid -> pids from the root's pid namespace down to its own,
    /// for every task and thread in a pid namespace below the root's.
    levels: BTreeMap<Pid, Vec<Pid>>,
    /// NSpid's index of the root's pid namespace.
    top: usize,
    /// The pid namespaces below the root's (inodes), each with its init
    /// in the tree.
    nested_pid: Vec<u64>,
    /// mountpoints-N.img of a mount namespace of the tree's own.
    mounts: Option<super::mntns::MountNs>,
    /// netdev-N.img of a network namespace of the tree's own.
    net: Option<super::netns::NetNs>,
    /// The user namespaces of the tree but the engine's.
    users: super::userns::TreeUserns,
    /// UTS namespaces below the root's: inode -> the first task in it, in
    /// tree order.
    nested_uts: BTreeMap<u64, Pid>,
}

fn links(pid: Pid) -> Result<BTreeMap<String, u64>> {
    Ok(proc::ns::ns_ids(pid)?.into_iter().collect())
}

/// Cgroup namespaces made inside the tree. The restore rebuilds one the
/// way it was made: its first task (its *leader*, the one whose parent is
/// in another) unshares it standing in the cgroups that were its roots,
/// and the leader's descendants in it join it. So each namespace other
/// than the root's must have one leader, every task in it descends from
/// that leader, and none is the engine's (a task that went back to the
/// host's namespace, with setns, could not be put back there: the restore
/// makes namespaces, it does not reach outside the tree). Cgroup
/// namespaces are not nested in one another (each is a view rooted at a
/// cgroup), so a namespace made inside another needs nothing more.
fn cgroup_leaders(
    tree: &[FrozenProc],
    reads: &TreeReads,
    engine: &BTreeMap<String, u64>,
) -> Result<()> {
    let mut ns_of: BTreeMap<Pid, u64> = BTreeMap::new();
    let mut leaders: BTreeMap<u64, Pid> = BTreeMap::new();
    for p in tree.iter().filter(|p| p.zombie.is_none()) {
        let Some(&ino) = reads.of(p.pid)?.ns.get("cgroup") else {
            continue;
        };
        ns_of.insert(p.pid, ino);
        if p.pid == tree[0].pid || ns_of.get(&p.ppid) == Some(&ino) {
            leaders.entry(ino).or_insert(p.pid);
            continue;
        }
        let refuse = |why: String| {
            Error::unsupported(p.pid, format!("cgroup namespace cgroup:[{ino}]"), why)
        };
        if engine.get("cgroup") == Some(&ino) {
            return Err(refuse(
                "it went back into the engine's (the host's) cgroup namespace from its parent's; \
                 the restore can only make cgroup namespaces anew"
                    .into(),
            ));
        }
        if let Some(first) = leaders.insert(ino, p.pid) {
            return Err(refuse(format!(
                "pid {first} is in it too without being its ancestor in that namespace \
                 (a task joined it with setns); only a namespace made by one task and \
                 inherited by its descendants can be rebuilt"
            )));
        }
    }
    Ok(())
}

impl TreeNs {
    /// Checks every live task of `tree` (the root first, `reads` what
    /// /proc says of each) against the rules of the module doc.
    pub fn check(
        tree: &[FrozenProc],
        reads: &TreeReads,
        external: &[crate::external::External],
    ) -> Result<TreeNs> {
        let engine = links(std::process::id() as Pid)?;
        let root_pid = tree[0].pid;
        let all = reads.of(root_pid)?.ns.clone();
        let root: BTreeMap<String, u64> = all
            .iter()
            .filter(|(k, _)| !k.ends_with("_for_children"))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (kind, &ino) in &root {
            if engine.get(kind) != Some(&ino) && !OWN_OK.contains(&kind.as_str()) {
                return Err(Error::unsupported(
                    root_pid,
                    format!("{kind} namespace {kind}:[{ino}]"),
                    not_yet(kind),
                ));
            }
        }
        let mut users = Vec::new();
        for p in tree.iter().filter(|p| p.zombie.is_none()) {
            let mine = reads.of(p.pid)?.ns.clone();
            users.push(super::userns::TaskUser {
                pid: p.pid,
                ino: mine.get("user").copied().unwrap_or(0),
                others: mine.clone(),
                threads: p.threads.len(),
            });
            for (kind, &ino) in &mine {
                let base = kind.strip_suffix("_for_children").unwrap_or(kind);
                let want = root.get(base).copied();
                // User namespaces below the root's: userns::collect.
                if want == Some(ino) || base == "user" {
                    continue;
                }
                // Pid namespaces below the root's: pid_levels checks them;
                // cgroup namespaces made below the root: cgroup_leaders;
                // UTS namespaces: nested_uts.
                if base == "pid" || (p.pid != root_pid && (base == "cgroup" || base == "uts")) {
                    continue;
                }
                let why = if kind.ends_with("_for_children") {
                    format!(
                        "it made a new {base} namespace for its children ({kind}:[{ino}]); \
                         namespaces created inside the tree are not supported yet"
                    )
                } else if p.pid == root_pid {
                    not_yet(kind).to_string()
                } else {
                    format!(
                        "it is in {base}:[{ino}], not in the root's {base}:[{}]; \
                         namespaces created inside the tree are not supported yet",
                        want.unwrap_or(0)
                    )
                };
                return Err(Error::unsupported(
                    p.pid,
                    format!("{base} namespace {base}:[{ino}]"),
                    why,
                ));
            }
        }
        cgroup_leaders(tree, reads, &engine)?;
        let nested_uts = nested_uts(tree, reads, &root)?;
        let own_pid = root.get("pid") != engine.get("pid");
        let pids = pid_levels(tree, reads, &root, own_pid)?;
        let vpids = match own_pid {
            true => pids.levels.iter().map(|(&h, l)| (h, l[0])).collect(),
            false => BTreeMap::new(),
        };
        let own = |k: &str| root.get(k) != engine.get(k);
        let mounts = match own("mnt") {
            true => Some(super::mntns::check(root_pid, root["mnt"], external)?),
            false => None,
        };
        let net = match own("net") {
            true => Some(super::netns::check(root_pid, root["net"], external)?),
            false => match crate::external::veths(external).next() {
                Some((inner, _, _)) => {
                    return Err(Error::Usage(format!(
                        "--external veth[{inner}]: pid {root_pid} has no network namespace \
                         of its own (it is in the engine's, net:[{}]), so none of its devices \
                         is dumped",
                        root["net"]
                    )))
                }
                None => None,
            },
        };
        if own("user") {
            let theirs: Vec<&str> = root
                .keys()
                .filter(|k| *k != "user" && own(k))
                .map(|k| k.as_str())
                .collect();
            super::userns::check(root_pid, &engine, &theirs)?;
            // Without a pid namespace of its own, the tree's tasks and
            // threads must be made with their pids in the host's,
            // which only the host's user namespace may ask for
            // (clone3 set_tid needs CAP_SYS_ADMIN there), and a task
            // inside cannot.
            if !own("pid") {
                let more = tree
                    .iter()
                    .find(|p| p.pid != root_pid || p.threads.len() > 1);
                if let Some(p) = more {
                    return Err(Error::unsupported(
                        p.pid,
                        format!("user namespace user:[{}]", root["user"]),
                        format!(
                            "the tree's user namespace comes without a pid namespace of its own \
                                 and the tree has {} (pid {}{}): tasks inside cannot be made with \
                                 their pids in the host's pid namespace; only a single-threaded \
                                 root is supported so",
                            if p.pid != root_pid {
                                "another process"
                            } else {
                                "threads"
                            },
                            p.pid,
                            if p.pid != root_pid { "" } else { "'s threads" }
                        ),
                    ));
                }
            }
        }
        let users = super::userns::collect(&users, engine.get("user").copied().unwrap_or(0))?;
        Ok(TreeNs {
            root,
            engine,
            vpids,
            top: pids.top,
            levels: pids.levels,
            nested_pid: pids.nested,
            mounts,
            net,
            users,
            nested_uts,
        })
    }

    /// Credentials of `pid` as it sees them (CRIU's: read inside the
    /// task), from the engine's view (/proc/PID/status), through the uid
    /// and gid maps of its user namespace.
    pub fn creds_inside(&self, pid: Pid, c: &mut pb::CredsEntry) {
        self.users.creds_inside(pid, c);
    }

    /// Host pid -> pid in the tree's own pid namespace (empty: the tree is
    /// in the engine's).
    pub fn vpids(&self) -> &BTreeMap<Pid, Pid> {
        &self.vpids
    }

    /// The pids of host pid `pid` from the root's pid namespace down to
    /// its own, when that is below the root's (`None` in the root's).
    pub fn levels(&self, pid: Pid) -> Option<&[Pid]> {
        self.levels
            .get(&pid)
            .filter(|l| l.len() > 1)
            .map(|l| &l[..])
    }

    /// From an NSpgid or NSsid line (ids from the engine's namespace
    /// down): the ids from the root's namespace down; `None` when the
    /// line does not reach it.
    pub fn from_root_level<'a>(&self, ids: &'a [i32]) -> Option<&'a [i32]> {
        ids.get(self.top..).filter(|l| !l.is_empty())
    }

    /// The pid namespaces below the root's (inodes).
    pub fn nested_pid_ns(&self) -> &[u64] {
        &self.nested_pid
    }

    /// Whether the tree has a namespace of this kind of its own.
    pub fn owns(&self, kind: &str) -> bool {
        self.root.get(kind) != self.engine.get(kind)
    }

    /// The pid of host pid `pid` in the tree's pid namespace. `what`
    /// names the field for the error of a pid outside it.
    pub fn vpid(&self, of: Pid, pid: Pid, what: &str) -> Result<Pid> {
        if self.vpids.is_empty() || pid == 0 {
            return Ok(pid);
        }
        self.inside(pid).ok_or_else(|| {
            Error::unsupported(
                of,
                format!("{what} {pid}"),
                "it lies outside the tree's pid namespace",
            )
        })
    }

    /// The pid of host pid `pid` in the tree's own pid namespace, None
    /// when it has none there (it lies outside). A task of the namespace
    /// outside the tree cannot be: the init's children are all in the
    /// tree; a group or session may have a leader gone from the tree.
    fn inside(&self, pid: Pid) -> Option<Pid> {
        self.vpids.get(&pid).copied().or_else(|| {
            status::read(pid)
                .ok()
                .and_then(|s| s.ns_pid.get(self.top).copied())
        })
    }

    /// The pstree.img entry of host pid `pid` (`ppid` its parent), with
    /// its ids at every level below the root's pid namespace when it is
    /// in a nested one. The group and session come from NSpgid and NSsid
    /// when the status can be read (known even when their leader is
    /// gone), from /proc/PID/stat otherwise (a zombie's status may be
    /// gone).
    pub fn pstree_entry(
        &self,
        pid: Pid,
        ppid: Pid,
        stat: &crate::proc::stat::Stat,
        st: Option<&status::Status>,
        threads: Vec<u32>,
    ) -> Result<pb::PstreeEntry> {
        let v = |of: Pid, what: &str| self.vpid(pid, of, what);
        let ids = |line: fn(&status::Status) -> &Vec<i32>| -> Vec<u32> {
            st.and_then(|s| self.from_root_level(line(s)))
                .map(|l| l.iter().map(|&x| x as u32).collect())
                .unwrap_or_default()
        };
        let (pgids, sids) = (ids(|s| &s.ns_pgid), ids(|s| &s.ns_sid));
        // A group or session led from outside the tree's own pid
        // namespace (an init started by `unshare --pid --fork` stays in
        // unshare's) reads 0 inside it, as getpgrp() and getsid() there
        // say, and is kept so: the restore leaves such tasks in the
        // engine's, which reads 0 inside too.
        let group = |of: Pid| -> u32 {
            match self.vpids.is_empty() {
                true => of as u32,
                false => self.inside(of).unwrap_or(0) as u32,
            }
        };
        let pgid = match pgids.first() {
            Some(&g) if g > 0 => g,
            _ => group(stat.pgrp),
        };
        let sid = match sids.first() {
            Some(&g) if g > 0 => g,
            _ => group(stat.session),
        };
        let mut e = pb::PstreeEntry {
            pid: v(pid, "pid")? as u32,
            ppid: v(ppid, "parent")? as u32,
            pgid,
            sid,
            threads,
            ..Default::default()
        };
        if let Some(l) = self.levels(pid) {
            e.ns_pid = l.iter().map(|&x| x as u32).collect();
            let want = l.len();
            if pgids.len() != want || sids.len() != want {
                return Err(Error::task(
                    pid,
                    "its pid namespace levels",
                    format!(
                        "NSpid {l:?} but NSpgid {pgids:?} and NSsid {sids:?} from the root's \
                         namespace down"
                    ),
                ));
            }
            e.ns_pgid = pgids;
            e.ns_sid = sids;
        }
        Ok(e)
    }

    /// utsns-N.img, timens-N.img, mountpoints-N.img, netns-N.img with
    /// netdev-N.img, ifaddr-N.img, route-N.img, route6-N.img, rule-N.img
    /// and nftables-N.img, and pidns-N.img of the namespaces the tree owns, N as
    /// in the root's ids (userns-N.img: `write_userns`).
    pub fn write_images(
        &self,
        dir: &ImageDir,
        root: Pid,
        ids: &pb::TaskKobjIdsEntry,
    ) -> Result<()> {
        if self.owns("uts") {
            let uts = uts_of(root)?;
            let id = ids.uts_ns_id.unwrap_or(0);
            dir.write_image(&format!("utsns-{id}.img"), &[uts])?;
        }
        if self.owns("time") {
            let id = ids.time_ns_id.unwrap_or(0);
            dir.write_image(&format!("timens-{id}.img"), &[time_offsets(root)?])?;
        }
        if let Some(mounts) = &self.mounts {
            let id = ids.mnt_ns_id.unwrap_or(0);
            mounts.write(dir, id)?;
        }
        if let Some(net) = &self.net {
            let id = ids.net_ns_id.unwrap_or(0);
            dir.write_image(&format!("netns-{id}.img"), std::slice::from_ref(&net.entry))?;
            dir.write_image(&format!("netdev-{id}.img"), &net.devices)?;
            dir.write_file(&format!("ifaddr-{id}.img"), &net.ifaddr)?;
            dir.write_file(&format!("route-{id}.img"), &net.route)?;
            dir.write_file(&format!("route6-{id}.img"), &net.route6)?;
            dir.write_file(&format!("rule-{id}.img"), &net.rule)?;
            if let Some(text) = &net.nftables {
                dir.write_file(&format!("nftables-{id}.img"), text.as_bytes())?;
            }
        }
        if self.owns("pid") {
            let id = ids.pid_ns_id.unwrap_or(0);
            dir.write_image(
                &format!("pidns-{id}.img"),
                &[pb::PidnsEntry { ext_key: None }],
            )?;
        }
        Ok(())
    }

    /// userns-N.img of every user namespace of the tree, N as in the ids
    /// of the tasks in it (`id_of` maps an inode to it).
    pub fn write_userns(&self, dir: &ImageDir, id_of: impl FnMut(u64) -> u32) -> Result<()> {
        self.users.write_images(dir, id_of)
    }

    /// utsns-N.img of every UTS namespace below the root's, N as in the
    /// ids of the tasks in it (`id_of` maps an inode to it).
    pub fn write_nested_uts(
        &self,
        dir: &ImageDir,
        mut id_of: impl FnMut(u64) -> u32,
    ) -> Result<()> {
        for (&ino, &first) in &self.nested_uts {
            let id = id_of(ino);
            dir.write_image(&format!("utsns-{id}.img"), &[uts_of(first)?])?;
        }
        Ok(())
    }

    /// pidns-N.img of every pid namespace below the root's, N as in the
    /// ids of the tasks in it (`id_of` maps an inode to it).
    pub fn write_nested_pidns(
        &self,
        dir: &ImageDir,
        mut id_of: impl FnMut(u64) -> u32,
    ) -> Result<()> {
        for &ino in &self.nested_pid {
            let id = id_of(ino);
            dir.write_image(
                &format!("pidns-{id}.img"),
                &[pb::PidnsEntry { ext_key: None }],
            )?;
        }
        Ok(())
    }
}

/// The UTS namespaces below the root's (module doc), each with its first
/// task in tree order, checked: that task's user namespace owns it (the
/// restore makes it there), and no task is back in the root's below one.
fn nested_uts(
    tree: &[FrozenProc],
    reads: &TreeReads,
    root: &BTreeMap<String, u64>,
) -> Result<BTreeMap<u64, Pid>> {
    let Some(&top) = root.get("uts") else {
        return Ok(BTreeMap::new());
    };
    let mut of: BTreeMap<Pid, u64> = BTreeMap::new();
    let mut first: BTreeMap<u64, Pid> = BTreeMap::new();
    for p in tree.iter().filter(|p| p.zombie.is_none()) {
        let ns = &reads.of(p.pid)?.ns;
        let (Some(&ino), Some(&user)) = (ns.get("uts"), ns.get("user")) else {
            continue;
        };
        of.insert(p.pid, ino);
        let what = || format!("uts namespace uts:[{ino}]");
        if ino == top {
            if of.get(&p.ppid).is_some_and(|&up| up != top) {
                return Err(Error::unsupported(
                    p.pid,
                    what(),
                    format!(
                        "it is the root's, but its parent's is uts:[{}] below it: the restore \
                         puts a task into a UTS namespace other than its parent's only below \
                         the root's",
                        of[&p.ppid]
                    ),
                ));
            }
            continue;
        }
        if first.contains_key(&ino) {
            continue;
        }
        let path = format!("/proc/{}/ns/uts", p.pid);
        let f = std::fs::File::open(&path)
            .map_err(|e| Error::io(&path, format!("pid {}: its {}", p.pid, what()), e))?;
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let owner = crate::sys::ns_get(f.as_fd(), crate::sys::NsGet::Owner)
            .map_err(|e| Error::sys(p.pid, format!("NS_GET_USERNS of its {}", what()), e))?;
        let owner = std::fs::File::from(owner)
            .metadata()
            .map_err(|e| {
                Error::io(
                    &path,
                    format!("pid {}: the owner of its {}", p.pid, what()),
                    e,
                )
            })?
            .ino();
        if owner != user {
            return Err(Error::unsupported(
                p.pid,
                what(),
                format!(
                    "it is owned by user:[{owner}], not by user:[{user}], the user namespace of \
                     its first task (pid {}), in which the restore makes it",
                    p.pid
                ),
            ));
        }
        first.insert(ino, p.pid);
    }
    Ok(first)
}

/// The tree's pids at every pid namespace level from the root's down.
struct PidLevels {
    /// NSpid's index of the root's namespace (NSpid starts at the
    /// engine's /proc's).
    top: usize,
    /// Host pid -> pids from the root's namespace down to its own, for
    /// every task and thread.
    levels: BTreeMap<Pid, Vec<Pid>>,
    /// Pid namespaces below the root's (inodes), in tree order.
    nested: Vec<u64>,
}

/// The pids of every task at each level from the root's pid namespace
/// down (NSpid), checked for what the restore can rebuild: the root is
/// in the engine's pid namespace or the init of one a level below it;
/// every other task is in its parent's pid namespace or is the init of a
/// new one a level below its parent's (made by its parent's clone or
/// unshare); a task whose `pid_for_children` is not its own pid
/// namespace has its init among its children. Threads below the root's
/// namespace are refused for now (the restore makes them with one
/// level).
fn pid_levels(
    tree: &[FrozenProc],
    reads: &TreeReads,
    root: &BTreeMap<String, u64>,
    own: bool,
) -> Result<PidLevels> {
    let root_pid = tree[0].pid;
    let root_ns = root["pid"];
    let pid_ns = |p: &FrozenProc| -> Result<Option<(u64, u64)>> {
        if p.zombie.is_some() {
            return Ok(None);
        }
        let l = &reads.of(p.pid)?.ns;
        Ok(l.get("pid")
            .copied()
            .zip(l.get("pid_for_children").copied()))
    };
    let st = reads.of(root_pid)?.status.clone();
    let top = st.ns_pid.len().saturating_sub(1);
    if own && top != 1 {
        return Err(Error::unsupported(
            root_pid,
            format!("pid namespace pid:[{root_ns}]"),
            format!(
                "its pids {:?} put the root {top} pid namespace levels below the engine's; only a root in the engine's pid namespace or one a level below it is supported",
                st.ns_pid
            ),
        ));
    }
    if own && st.ns_pid.get(top) != Some(&1) {
        return Err(Error::unsupported(
            root_pid,
            format!("pid namespace pid:[{root_ns}]"),
            format!(
                "the root is pid {} there, not the namespace's init: \
                 only a whole pid namespace can be dumped",
                st.ns_pid.get(top).copied().unwrap_or(0)
            ),
        ));
    }
    let mut out = PidLevels {
        top,
        levels: BTreeMap::new(),
        nested: Vec::new(),
    };
    let mut ns_of: BTreeMap<Pid, (u64, u64)> = BTreeMap::new();
    for p in tree {
        // A zombie's status is read here (it has no reads).
        let st = match p.zombie {
            None => reads.of(p.pid)?.status.clone(),
            Some(_) => status::read(p.pid)?,
        };
        let l: Vec<Pid> = st.ns_pid.get(top..).unwrap_or_default().to_vec();
        let ns = pid_ns(p)?;
        let ino = ns.map_or(0, |n| n.0);
        let what = format!("pid namespace pid:[{ino}]");
        if l.is_empty() {
            return Err(Error::unsupported(
                p.pid,
                what,
                format!(
                    "its pids {:?} do not reach the root's pid namespace",
                    st.ns_pid
                ),
            ));
        }
        if p.pid != root_pid {
            let parent = out.levels.get(&p.ppid).map_or(&[][..], |v| &v[..]);
            let same = l.len() == parent.len()
                && match (ns, ns_of.get(&p.ppid)) {
                    (Some(a), Some(b)) => a.0 == b.0,
                    _ => true,
                };
            let init = l.len() == parent.len() + 1 && l.last() == Some(&1);
            if init && p.zombie.is_some() {
                return Err(Error::unsupported(
                    p.pid,
                    what,
                    "it is the dead init of a pid namespace made inside the tree (a zombie): \
                     not supported",
                ));
            }
            if init {
                out.nested.push(ino);
            } else if !same {
                return Err(Error::unsupported(
                    p.pid,
                    what,
                    format!(
                        "its pids {l:?} (from the root's pid namespace down) do not follow its \
                         parent {}'s {parent:?}: a task is in its parent's pid namespace or is \
                         the init of one a level below it (a task forked after setns into \
                         another pid namespace is not supported)",
                        p.ppid
                    ),
                ));
            }
        }
        if l.len() > 1 && p.threads.len() > 1 {
            return Err(Error::unsupported(
                p.pid,
                what,
                format!(
                    "it has {} threads in a pid namespace below the root's (pids {l:?}): \
                     threads of nested pid namespaces are not supported yet",
                    p.threads.len()
                ),
            ));
        }
        let thread_reads = match p.zombie {
            None => &reads.of(p.pid)?.threads[..],
            Some(_) => &[],
        };
        for (t, (_, t_status)) in p.threads.iter().zip(thread_reads) {
            if t.tid == p.pid {
                continue;
            }
            let tl = match own {
                true => t_status.ns_pid.get(top..).unwrap_or_default().to_vec(),
                false => vec![t.tid],
            };
            out.levels.insert(t.tid, tl);
        }
        out.levels.insert(p.pid, l);
        if let Some(n) = ns {
            ns_of.insert(p.pid, n);
        }
    }
    for p in tree {
        let Some(&(mine, children)) = ns_of.get(&p.pid) else {
            continue;
        };
        let has_init = tree
            .iter()
            .any(|c| c.ppid == p.pid && ns_of.get(&c.pid).map(|n| n.0) == Some(children));
        if children != mine && !has_init {
            return Err(Error::unsupported(
                p.pid,
                format!("pid namespace pid_for_children:[{children}]"),
                format!(
                    "it made a new pid namespace for its children inside its own pid:[{mine}], \
                     and no child of it is that namespace's init (yet): not supported"
                ),
            ));
        }
    }
    Ok(out)
}

/// The clock offsets of `pid`'s time namespace (/proc/PID/timens_offsets:
/// "monotonic SECS NSECS", "boottime SECS NSECS"). Negative seconds are
/// stored as their two's complement, as CRIU does.
fn time_offsets(pid: Pid) -> Result<pb::TimensEntry> {
    let path = format!("/proc/{pid}/timens_offsets");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its time namespace's offsets"), e))?;
    let mut out = pb::TimensEntry::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let parsed = match w[..] {
            [clock, s, ns] => s
                .parse::<i64>()
                .ok()
                .zip(ns.parse::<u64>().ok())
                .map(|v| (clock, v)),
            _ => None,
        };
        let Some((clock, (secs, nsecs))) = parsed else {
            return Err(Error::task(pid, path, format!("cannot parse {line:?}")));
        };
        let ts = pb::Timespec {
            tv_sec: secs as u64,
            tv_nsec: nsecs,
        };
        match clock {
            "monotonic" => out.monotonic = ts,
            "boottime" => out.boottime = ts,
            _ => {}
        }
    }
    Ok(out)
}

/// Host name and domain name of `pid`'s UTS namespace: uname(2) answers
/// for the caller's, so a short-lived thread joins it (setns of a UTS
/// namespace changes only the calling thread).
fn uts_of(pid: Pid) -> Result<pb::UtsnsEntry> {
    let path = format!("/proc/{pid}/ns/uts");
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its UTS namespace"), e))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<pb::UtsnsEntry> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUTS)
                .map_err(|e| Error::sys(pid, "setns into its UTS namespace", e))?;
            let u = nix::sys::utsname::uname()
                .map_err(|e| Error::sys(pid, "uname in its UTS namespace", e))?;
            Ok(pb::UtsnsEntry {
                nodename: u.nodename().to_string_lossy().into_owned(),
                domainname: u.domainname().to_string_lossy().into_owned(),
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::task(
                pid,
                "UTS namespace",
                "the helper thread panicked",
            ))
        })
    })
}
