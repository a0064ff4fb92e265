//! UTS namespaces below the root's (dump/ns.rs `nested_uts`): a task that
//! unshared CLONE_NEWUTS, alone or with a user namespace, as sandboxes do.
//!
//! Each is made before any task exists (`make`) by a holder forked from
//! the engine, which enters the user namespace of the namespace's first
//! task in tree order (the one that owns it, as the dump checked: the
//! root's, or one below it made by restore/userns.rs, or the engine's)
//! and unshares it. The engine keeps an fd of it, lets the holder go, and
//! sets the names from a thread that joins it (the engine's powers reach
//! any namespace). Every task of it enters it with that fd as soon as it
//! is forked (restore/child.rs), before it forks its own children, which
//! thus inherit it as they did; a task still in the root's user
//! namespace then, so the setns needs no power in the one it joins.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

use nix::sched::CloneFlags;

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// A UTS namespace below the root's, as the images have it.
#[derive(Debug, Clone)]
pub struct NestedUts {
    /// Its id (utsns-ID.img, the tasks' uts_ns_id).
    pub id: u32,
    pub entry: pb::UtsnsEntry,
    /// The user namespace it is made in (its first task's); `None`: the
    /// engine's.
    pub user: Option<u32>,
}

/// The fds of the namespaces `make` made, by id; kept until `done`.
static MADE: Mutex<BTreeMap<u32, OwnedFd>> = Mutex::new(BTreeMap::new());

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Image(crate::images::ImageError::invalid(path, why))
}

/// Picks the UTS namespaces below the root's (`root_id`) out of the
/// utsns-N.img files (`images`), before any process exists: each task
/// whose namespace is not the root's names one of them; none is back in
/// the root's below one (dump/ns.rs); every image has a task.
pub fn from_set(
    dir: &Path,
    images: &BTreeMap<u32, crate::images::set::Part<pb::UtsnsEntry>>,
    tasks: &[super::load::TaskImages],
    root_id: Option<u32>,
) -> Result<Vec<NestedUts>> {
    let mut out: Vec<NestedUts> = Vec::new();
    let uts_of = |pid: u32| {
        tasks
            .iter()
            .find(|t| t.pid as u32 == pid)
            .and_then(|t| t.ids.uts_ns_id)
    };
    for t in tasks {
        let Some(id) = t.ids.uts_ns_id.filter(|&id| Some(id) != root_id) else {
            let up = uts_of(t.pstree.ppid);
            if t.pstree.ppid != 0 && up.is_some() && up != root_id {
                return Err(bad(
                    &dir.join(format!("ids-{}.img", t.pid)),
                    format!(
                        "pid {}: it is in the root's UTS namespace, its parent (pid {}) in \
                         UTS namespace {up:?} below it: a task goes back into the root's \
                         only with setns, which the restore does not redo",
                        t.pid, t.pstree.ppid
                    ),
                ));
            }
            continue;
        };
        if out.iter().any(|n| n.id == id) {
            continue;
        }
        let name = format!("utsns-{id}.img");
        let Some(part) = images.get(&id) else {
            return Err(bad(
                &dir.join(&name),
                format!(
                    "missing: pid {} is in UTS namespace {id}, below the root's",
                    t.pid
                ),
            ));
        };
        let entry = super::load::require(dir, &name, part)?.clone();
        out.push(NestedUts {
            id,
            entry,
            user: t.ids.user_ns_id,
        });
    }
    Ok(out)
}

/// The engine's fd of UTS namespace `id` when `make` made it (a task of
/// it enters it with this fd, restore/child.rs).
pub fn fd_of(id: Option<u32>) -> Option<RawFd> {
    let made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    id.and_then(|id| made.get(&id)).map(|f| f.as_raw_fd())
}

/// Makes every namespace of `nested` (module doc); after restore/userns.rs
/// made the user namespaces, before any task exists. `users` are the
/// images' user namespaces, to tell the root's from those below it.
pub fn make(root: Pid, nested: &[NestedUts], users: &super::userns::UserImages) -> Result<()> {
    for n in nested {
        let what = format!("UTS namespace {} (utsns-{}.img)", n.id, n.id);
        let top = users.top.as_ref().map(|(t, _)| *t);
        let user = n
            .user
            .and_then(|u| super::userns::dup_fd(u, top))
            .transpose()
            .map_err(|e| Error::io("dup", format!("pid {root}: {what}: its user namespace"), e))?;
        let fd = make_one(root, &what, user.as_ref().map(|f| f.as_fd()))?;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                nix::sched::setns(&fd, CloneFlags::CLONE_NEWUTS)
                    .map_err(|e| Error::sys(root, format!("{what}: setns to set its names"), e))?;
                super::ns::set_names(root, &n.entry)
            })
            .join()
            .unwrap_or_else(|_| Err(Error::task(root, &what, "the helper thread panicked")))
        })?;
        MADE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n.id, fd);
    }
    Ok(())
}

/// One namespace of `make`: a holder enters `user` (if any) and unshares
/// a UTS namespace, which the engine opens through its /proc.
fn make_one(root: Pid, what: &str, user: Option<BorrowedFd<'_>>) -> Result<OwnedFd> {
    super::userns::with_holder(
        root,
        what,
        || {
            user.is_none_or(|u| nix::sched::setns(u, CloneFlags::CLONE_NEWUSER).is_ok())
                && nix::sched::unshare(CloneFlags::CLONE_NEWUTS).is_ok()
        },
        |holder, up_rd| {
            let mut c = [0u8; 1];
            match nix::unistd::read(up_rd.as_raw_fd(), &mut c) {
                Ok(1) if c[0] == b'1' => {
                    let path = format!("/proc/{holder}/ns/uts");
                    std::fs::File::open(&path)
                        .map(OwnedFd::from)
                        .map_err(|e| Error::io(&path, format!("pid {root}: {what}"), e))
                }
                Ok(_) => Err(Error::task(
                    root,
                    what,
                    "its holder could not enter its user namespace or unshare it",
                )),
                Err(e) => Err(Error::sys(
                    root,
                    format!("{what}: reading from its holder"),
                    e,
                )),
            }
        },
    )
}

/// The restore is over (or failed): the fds go.
pub fn done() {
    MADE.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task `pid` (parent `ppid`) in UTS namespace `uts` and user
    /// namespace `user`.
    fn task(pid: i32, ppid: u32, uts: u32, user: u32) -> super::super::load::TaskImages {
        super::super::load::TaskImages::for_tests(
            pid,
            ppid,
            pb::TaskKobjIdsEntry {
                uts_ns_id: Some(uts),
                user_ns_id: Some(user),
                ..Default::default()
            },
        )
    }

    fn names(host: &str) -> pb::UtsnsEntry {
        pb::UtsnsEntry {
            nodename: host.into(),
            domainname: "(none)".into(),
        }
    }

    #[test]
    fn each_namespace_below_the_roots_is_made_in_its_first_tasks_user_namespace() {
        // uts_nested: T (uts 1, user 5), A (uts 2) and A1, B (uts 3, user 6).
        let mut images = BTreeMap::new();
        for (id, host) in [(1, "t"), (2, "a"), (3, "b")] {
            images.insert(id, Ok(names(host)));
        }
        let tasks = [
            task(1, 0, 1, 5),
            task(2, 1, 2, 5),
            task(3, 2, 2, 5),
            task(4, 1, 3, 6),
        ];
        let n = from_set(Path::new("/img"), &images, &tasks, Some(1)).unwrap();
        let got: Vec<(u32, &str, Option<u32>)> = n
            .iter()
            .map(|n| (n.id, n.entry.nodename.as_str(), n.user))
            .collect();
        assert_eq!(got, vec![(2, "a", Some(5)), (3, "b", Some(6))]);
    }

    #[test]
    fn a_missing_image_or_a_task_back_in_the_roots_is_refused_before_any_process() {
        let mut images = BTreeMap::new();
        images.insert(1, Ok(names("t")));
        let tasks = [task(1, 0, 1, 5), task(2, 1, 2, 5)];
        let e = from_set(Path::new("/img"), &images, &tasks, Some(1)).unwrap_err();
        assert!(e.to_string().contains("utsns-2.img"), "{e}");
        images.insert(2, Ok(names("a")));
        let back = [task(1, 0, 1, 5), task(2, 1, 2, 5), task(3, 2, 1, 5)];
        let e = from_set(Path::new("/img"), &images, &back, Some(1)).unwrap_err();
        assert!(
            e.to_string().contains("pid 3") && e.to_string().contains("back"),
            "{e}"
        );
    }
}
