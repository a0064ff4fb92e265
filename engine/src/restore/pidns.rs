//! Pid namespaces nested below the root's (dump/ns.rs records them): each
//! is made by its init's clone (CLONE_NEWPID, with set_tid naming the
//! init's pid at every level from the root's namespace down, 1 in its
//! own), and every other task in it is forked there by its parent with
//! its pids at every level (restore/child.rs). The engine (or the driver
//! in the root's pid namespace) names every task by its pid in the root's
//! namespace, the images' `pid`; only the tasks themselves, while they
//! fork and join groups, use the pids their own namespace sees.
//!
//! Everything the clones rely on is checked here, before any process
//! exists: a task is in its parent's pid namespace (same levels, same
//! `pid_ns_id`) or is the init of a new one a level below (its last pid
//! 1, a `pid_ns_id` of its own with a `pidns-N.img`); no two tasks share
//! a pid at any level of a namespace; no thread or zombie init below the
//! root's namespace (not supported yet).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::load::{TaskImages, Zombie};
use crate::error::{Error, Result};
use crate::images::set::ImageSet;
use crate::images::{pb, ImageError};

/// A task's pids from the root's pid namespace down to its own (`[pid]`
/// in the root's).
pub fn levels(p: &pb::PstreeEntry) -> Vec<i32> {
    match p.ns_pid.is_empty() {
        true => vec![p.pid as i32],
        false => p.ns_pid.iter().map(|&v| v as i32).collect(),
    }
}

/// The id of its own pid namespace at its own level, from an NSpgid- or
/// NSsid-like list (`ns_pgid`, `ns_sid`): the last one, or `first` (the
/// root-level one) in the root's namespace.
pub fn local(levels: &[u32], first: u32) -> i32 {
    levels.last().copied().unwrap_or(first) as i32
}

struct Node {
    pid: i32,
    levels: Vec<i32>,
    /// None for a zombie (no ids image).
    ns_id: Option<u32>,
    threads: usize,
}

/// Checks the tree's pid namespace levels (module doc); returns the ids
/// of the namespaces below the root's.
pub fn check(
    dir: &Path,
    set: &ImageSet,
    tasks: &[TaskImages],
    zombies: &[Zombie],
) -> Result<BTreeSet<u32>> {
    let tree = dir.join("pstree.img");
    let bad = |why: String| Error::Image(ImageError::invalid(&tree, why));
    let mut children: BTreeMap<i32, Vec<Node>> = BTreeMap::new();
    for t in &tasks[1..] {
        children
            .entry(t.pstree.ppid as i32)
            .or_default()
            .push(Node {
                pid: t.pid,
                levels: levels(&t.pstree),
                ns_id: t.ids.pid_ns_id,
                threads: t.pstree.threads.len().max(t.pstree.tids.len()),
            });
    }
    for z in zombies {
        children.entry(z.ppid).or_default().push(Node {
            pid: z.pid,
            levels: z.ns_pid.clone(),
            ns_id: None,
            threads: 1,
        });
    }
    let root = &tasks[0];
    if !root.pstree.ns_pid.is_empty() {
        return Err(bad(format!(
            "the root (pid {}) has pid namespace levels {:?}: it is in the root's namespace",
            root.pid, root.pstree.ns_pid
        )));
    }
    let mut nested = BTreeSet::new();
    let mut taken: BTreeSet<(i32, i32)> = BTreeSet::new();
    // (task, the inits of the namespaces it is in below the root's, the
    // pid_ns_id of its own)
    let mut todo = vec![(root.pid, vec![root.pid], vec![root.pid], root.ids.pid_ns_id)];
    while let Some((pid, plevels, inits, ns_id)) = todo.pop() {
        for c in children.get(&pid).map_or(&[][..], |v| &v[..]) {
            let (n, d) = (c.levels.len(), plevels.len());
            let same = n == d;
            let init = n == d + 1 && c.levels.last() == Some(&1);
            let mut c_inits = inits.clone();
            let mut c_ns = ns_id;
            if init {
                let Some(id) = c.ns_id else {
                    return Err(bad(format!(
                        "pid {}: a zombie init of a pid namespace (levels {:?}) is not supported",
                        c.pid, c.levels
                    )));
                };
                if id == ns_id.unwrap_or(0) || !nested.insert(id) {
                    return Err(bad(format!(
                        "pid {}: the init of a pid namespace (levels {:?}) has pid_ns_id {id}, \
                         which another namespace has",
                        c.pid, c.levels
                    )));
                }
                let name = format!("pidns-{id}.img");
                let Some(part) = set.namespaces.pid.get(&id) else {
                    return Err(bad(format!(
                        "pid {}: the init of pid namespace {id}, which has no {name}",
                        c.pid
                    )));
                };
                if let Some(key) = &super::load::require(dir, &name, part)?.ext_key {
                    return Err(Error::Image(ImageError::invalid(
                        dir.join(&name),
                        format!("external pid namespace {key:?} is not supported"),
                    )));
                }
                c_inits.push(c.pid);
                c_ns = Some(id);
            } else if !same || c.ns_id.is_some_and(|id| Some(id) != ns_id) {
                return Err(bad(format!(
                    "pid {}: its pid namespace (levels {:?}, pid_ns_id {:?}) is neither its \
                     parent {pid}'s (levels {plevels:?}, pid_ns_id {ns_id:?}) nor a new one \
                     a level below whose init it is",
                    c.pid, c.levels, c.ns_id
                )));
            }
            if n > 1 && c.threads > 1 {
                return Err(bad(format!(
                    "pid {}: {} threads in a pid namespace below the root's (levels {:?}): \
                     not supported yet",
                    c.pid, c.threads, c.levels
                )));
            }
            let at_levels = c_inits.iter().zip(&c.levels).enumerate().skip(1);
            for (k, (&init, &v)) in at_levels {
                if !taken.insert((init, v)) {
                    return Err(bad(format!(
                        "pid {}: its pid {v} at level {k} (the namespace of init {init}) is \
                         another task's too",
                        c.pid
                    )));
                }
            }
            todo.push((c.pid, c.levels.clone(), c_inits, c_ns));
        }
    }
    Ok(nested)
}

/// Tasks below the root's pid namespace cannot name the engine by pid
/// (the pidfd_open in each task before it takes its shared files:
/// restore/files): they take a pidfd of the engine instead, made here
/// before the root's clone at a number above every fd any task uses,
/// inherited down the tree and kept by each of them (`engine_pidfd`)
/// until the files are in. The fd is the engine's to close.
///
/// `every`: every task takes it (a tree in a user namespace of its own,
/// whose files come from restore/userns.rs's launcher, which puts a pidfd
/// of its own at the same number).
pub fn engine_pidfd(
    plans: &mut [super::child::ChildPlan],
    root: &mut super::child::ChildPlan,
    every: bool,
) -> Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    if !every && plans.iter().all(|p| p.ns_pid.len() < 2) {
        return Ok(None);
    }
    let above = above_every_fd(plans);
    let me = std::process::id() as i32;
    let high = crate::sys::pidfd::open_at_least(me, above).map_err(|e| {
        Error::sys(
            root.pid,
            format!("pidfd_open of the engine at fd {above} or above"),
            e,
        )
    })?;
    let n = high.as_raw_fd();
    // A task in another's fd table (`shares_files`) touches no fd in it:
    // the table's owner takes its files and closes the pidfd, once.
    for p in plans
        .iter_mut()
        .filter(|p| (every || p.ns_pid.len() > 1) && !p.shares_files)
    {
        p.engine_pidfd = Some(n);
    }
    set_in(root, n, every);
    Ok(Some(high))
}

/// A number above every fd any task of `plans` uses, for an fd the tasks
/// inherit and keep while theirs are made (this engine pidfd, and the
/// user namespace fds of restore/userns.rs `place_fds`).
pub fn above_every_fd(plans: &[super::child::ChildPlan]) -> i32 {
    plans
        .iter()
        .map(|p| p.err_fd() + 2 + 2 * (p.table_helpers.len() + p.helper_files.len()) as i32)
        .max()
        .unwrap_or(0)
        + 16
}

fn set_in(p: &mut super::child::ChildPlan, fd: i32, every: bool) {
    if (every || p.ns_pid.len() > 1) && !p.shares_files {
        p.engine_pidfd = Some(fd);
    }
    for c in p
        .children
        .iter_mut()
        .chain(p.helpers.iter_mut().flat_map(|h| h.children.iter_mut()))
    {
        set_in(c, fd, every);
    }
}
