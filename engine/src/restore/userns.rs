//! The tree's own user namespace, made before every other namespace of the
//! tree, which it must own as the dumped one did.
//!
//! # Who does what
//!
//! A process writes a namespace's maps from outside it, and a namespace is
//! owned by the user namespace of the process that creates it. The engine
//! must stay outside (it needs the host's powers to the end: ptrace,
//! /proc, cgroups, mounts), and a process with threads cannot enter a user
//! namespace at all. So:
//!
//! 1. `make`: a holder process, forked from the engine, unshares a user
//!    namespace; the engine writes its setgroups, uid_map and gid_map; the
//!    holder, now with every capability in it, unshares the tree's UTS,
//!    IPC, network, mount and time namespaces, which the namespace thus
//!    owns. The engine keeps fds of them all and lets the holder go.
//! 2. restore/ns.rs has the engine's thread enter the UTS, IPC, network
//!    and mount namespaces (setns into a namespace the tree's user
//!    namespace owns needs only the engine's host powers) and set them up
//!    as for a tree without a user namespace: names, sysctls, devices,
//!    SysV objects.
//! 3. `clone_root`: a launcher process, forked from the engine, enters the
//!    time namespace and, when the root is the init of a new pid
//!    namespace, the user namespace, then clones the root with
//!    CLONE_PARENT (the root is the engine's child, as without a user
//!    namespace) and CLONE_NEWPID, so the pid namespace is owned by the
//!    user namespace too. In the engine's pid namespace the launcher
//!    clones the root with the engine's powers (set_tid there needs them)
//!    and the root enters the user namespace itself before anything else
//!    (and the launcher after it).
//! 4. The launcher stays, in the user namespace, as the source of the
//!    files the tasks share that the engine makes once the tree exists
//!    (restore/files: pidfd_getfd from the engine; the others each task
//!    inherits in its clone, from the launcher's table),
//!    until the restore is over (`done`): a task in the namespace may not
//!    take fds from the engine, which is outside, but may from a process
//!    in it with no more powers than its own. The tasks' pidfd of "the
//!    engine" (restore/pidns.rs `engine_pidfd`) names the launcher. Its
//!    fd table is the engine's as it was at its fork: an fd the engine
//!    makes later for the tasks goes to it over a socket, to the same
//!    place (`to_launcher`).
//!
//! Credentials in the images are as the tree sees them (dump/userns.rs):
//! restore/creds.rs sets them inside the namespace, where they mean the
//! same; with setgroups denied the supplementary groups cannot be set and
//! are left as inherited.
//!
//! # Namespaces below the tree's
//!
//! A user namespace below the root's (`Nested`, at any depth; below the
//! engine's for a tree in the engine's own) is made by `make_nested`,
//! parents first, before any task exists: a holder forked from the engine
//! enters the parent (taking an id mapped there, as the kernel wants of a
//! namespace's creator) and unshares it; a writer forked from the engine
//! enters the parent too and writes the maps, which only a process in the
//! parent with CAP_SETUID there may write, and which the kernel reads
//! relative to the parent, as the image holds them. The engine keeps an
//! fd of each. Every task is still born in the root's user namespace,
//! where its parent forks it with its pids (clone3 set_tid needs power
//! over the pid namespace, which is the root's user namespace's), takes
//! its files there, and then enters its own (`ChildPlan::user_ns`,
//! restore/child.rs) before its credentials are set inside it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

use nix::sched::CloneFlags;

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// The most extents a map may have (the kernel's limit).
const MAX_EXTENTS: usize = 340;

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(crate::images::ImageError::invalid(path, reason))
}

/// Checks the maps of userns-N.img (`path`) as the kernel would, so a bad
/// image is refused before any process exists.
pub fn validate(path: &Path, u: &pb::UsernsEntry) -> Result<()> {
    for (name, map) in [("uid_map", &u.uid_map), ("gid_map", &u.gid_map)] {
        if map.is_empty() || map.len() > MAX_EXTENTS {
            return Err(bad(
                path,
                format!(
                    "{name} has {} extents (1 to {MAX_EXTENTS} allowed)",
                    map.len()
                ),
            ));
        }
        let end = |a: u32, n: u32| a.checked_add(n);
        for (i, e) in map.iter().enumerate() {
            if e.count == 0
                || end(e.first, e.count).is_none()
                || end(e.lower_first, e.count).is_none()
            {
                return Err(bad(
                    path,
                    format!("{name} extent {i} ({e:?}) is empty or overflows"),
                ));
            }
            let overlap = |a: u32, b: u32, n: u32, m: u32| a < b + m && b < a + n;
            for (j, f) in map.iter().enumerate().take(i) {
                if overlap(e.first, f.first, e.count, f.count)
                    || overlap(e.lower_first, f.lower_first, e.count, f.count)
                {
                    return Err(bad(
                        path,
                        format!("{name} extents {j} and {i} overlap ({f:?}, {e:?})"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A user namespace below the tree's, as its image has it.
#[derive(Debug, Clone)]
pub struct Nested {
    /// Its id (userns-ID.img, the tasks' user_ns_id).
    pub id: u32,
    /// Its parent's id; `None`: the engine's.
    pub parent: Option<u32>,
    pub entry: pb::UsernsEntry,
}

/// The user namespaces of the images: the root's own (made by `make`)
/// and those below it, parents first (`make_nested`).
#[derive(Debug, Clone, Default)]
pub struct UserImages {
    pub top: Option<(u32, pb::UsernsEntry)>,
    pub nested: Vec<Nested>,
}

impl UserImages {
    /// Whether the user namespace `id` denies setgroups.
    pub fn setgroups_denied(&self, id: Option<u32>) -> bool {
        let deny = |u: &pb::UsernsEntry| u.ckpt_setgroups_deny == Some(true);
        match self.top.as_ref().filter(|(t, _)| Some(*t) == id) {
            Some((_, u)) => deny(u),
            None => self
                .nested
                .iter()
                .find(|n| Some(n.id) == id)
                .is_some_and(|n| deny(&n.entry)),
        }
    }

    /// The host's ids of `uid`:`gid` as user namespace `id` sees them (a
    /// task's creds are saved so), through its parents up to the engine's;
    /// unchanged for a task in the engine's namespace (`id` not one of the
    /// images'). None when a namespace on the way does not map them.
    pub fn to_host(&self, id: Option<u32>, uid: u32, gid: u32) -> Option<(u32, u32)> {
        use crate::dump::userns::mapped_outside;
        let (mut uid, mut gid, mut cur) = (uid, gid, id);
        while let Some(e) = cur.and_then(|i| self.entry(i)) {
            uid = mapped_outside(&e.uid_map, uid)?;
            gid = mapped_outside(&e.gid_map, gid)?;
            cur = match &self.top {
                Some((t, _)) if Some(*t) == cur => None,
                _ => self
                    .nested
                    .iter()
                    .find(|n| Some(n.id) == cur)
                    .and_then(|n| n.parent),
            };
        }
        Some((uid, gid))
    }

    fn entry(&self, id: u32) -> Option<&pb::UsernsEntry> {
        match &self.top {
            Some((t, u)) if *t == id => Some(u),
            _ => self.nested.iter().find(|n| n.id == id).map(|n| &n.entry),
        }
    }
}

/// Reads and checks every userns-N.img (`images`) against the tasks'
/// ids, before any process exists: each map as the kernel would
/// (`validate`) and inside its parent's; a parent chain within the images
/// up to the root's namespace; setgroups denied below a namespace that
/// denies it; every task in the root's namespace or one of the images,
/// and a task in every image.
pub fn from_set(
    dir: &Path,
    images: &BTreeMap<u32, crate::images::set::Part<pb::UsernsEntry>>,
    tasks: &[super::load::TaskImages],
) -> Result<UserImages> {
    let path = |id: u32| dir.join(format!("userns-{id}.img"));
    let mut all = BTreeMap::new();
    for (&id, part) in images {
        let u = super::load::require(dir, &format!("userns-{id}.img"), part)?.clone();
        validate(&path(id), &u)?;
        all.insert(id, u);
    }
    let root = tasks[0].ids.user_ns_id;
    let top = root.and_then(|r| all.get(&r).map(|u| (r, u.clone())));
    if let Some((r, u)) = &top {
        if let Some(p) = u.ckpt_parent_id {
            return Err(bad(
                &path(*r),
                format!(
                    "the root's user namespace has a parent in the images (user namespace {p}): \
                     a tree whose user namespace is two levels below the engine's is not \
                     supported yet"
                ),
            ));
        }
    }
    let depth = |id: u32| -> Result<usize> {
        let mut at = id;
        for d in 0..=all.len() {
            if Some(at) == root || all[&at].ckpt_parent_id.is_none() {
                return Ok(d);
            }
            at = all[&at].ckpt_parent_id.unwrap_or(0);
        }
        Err(bad(&path(id), "its parents make a loop"))
    };
    let mut nested = Vec::new();
    for (&id, u) in all.iter().filter(|(&id, _)| Some(id) != root) {
        match u.ckpt_parent_id {
            None if top.is_some() => {
                return Err(bad(
                    &path(id),
                    "its parent is the engine's user namespace, beside the tree's own: only \
                     namespaces below the tree's are supported",
                ))
            }
            None => {}
            Some(p) => {
                let Some(pu) = all.get(&p) else {
                    return Err(bad(
                        &path(id),
                        format!("its parent user namespace {p} has no userns-{p}.img"),
                    ));
                };
                for (name, map, pmap) in [
                    ("uid_map", &u.uid_map, &pu.uid_map),
                    ("gid_map", &u.gid_map, &pu.gid_map),
                ] {
                    if let Some(e) = map.iter().find(|e| !fits(e, pmap)) {
                        return Err(bad(
                            &path(id),
                            format!(
                                "{name} extent {e:?} maps ids its parent (userns-{p}.img) \
                                 does not have"
                            ),
                        ));
                    }
                }
                if pu.ckpt_setgroups_deny == Some(true) && u.ckpt_setgroups_deny != Some(true) {
                    return Err(bad(
                        &path(id),
                        format!(
                            "setgroups is allowed but its parent (userns-{p}.img) denies it, \
                             which its children inherit"
                        ),
                    ));
                }
            }
        }
        if !tasks.iter().any(|t| t.ids.user_ns_id == Some(id)) {
            return Err(bad(&path(id), format!("no task is in user namespace {id}")));
        }
        nested.push((
            depth(id)?,
            Nested {
                id,
                parent: u.ckpt_parent_id,
                entry: u.clone(),
            },
        ));
    }
    for t in tasks {
        let id = t.ids.user_ns_id;
        if id == root {
            continue;
        }
        let ids = dir.join(format!("ids-{}.img", t.pid));
        if !id.is_some_and(|id| all.contains_key(&id)) {
            return Err(bad(
                &ids,
                format!(
                    "pid {}: user namespace {id:?} is neither the root's ({root:?}) nor one \
                     of the images' (userns-N.img)",
                    t.pid
                ),
            ));
        }
        if t.pstree.threads.len() > 1 {
            return Err(bad(
                &ids,
                format!(
                    "pid {}: {} threads in a user namespace below the root's: not supported \
                     (threads are cloned with their tids where it has no power)",
                    t.pid,
                    t.pstree.threads.len()
                ),
            ));
        }
    }
    nested.sort_by_key(|(d, _)| *d);
    Ok(UserImages {
        top,
        nested: nested.into_iter().map(|(_, n)| n).collect(),
    })
}

/// Whether the ids `e` maps to in its parent (`lower_first` on) are all
/// mapped there (`parent`'s `first` on).
fn fits(e: &pb::UidGidExtent, parent: &[pb::UidGidExtent]) -> bool {
    let mut x = e.lower_first as u64;
    let end = x + e.count as u64;
    while x < end {
        let Some(p) = parent
            .iter()
            .find(|p| x >= p.first as u64 && x < p.first as u64 + p.count as u64)
        else {
            return false;
        };
        x = p.first as u64 + p.count as u64;
    }
    true
}

/// Fds of the user namespaces `make_nested` made, by image id, until
/// `done`.
static NESTED: Mutex<BTreeMap<u32, OwnedFd>> = Mutex::new(BTreeMap::new());

/// The engine's fd of user namespace `id` when `make_nested` made it (a
/// task in it enters it: restore/child.rs).
pub fn fd_of(id: Option<u32>) -> Option<RawFd> {
    let nested = NESTED.lock().unwrap_or_else(|p| p.into_inner());
    id.and_then(|id| nested.get(&id)).map(|f| f.as_raw_fd())
}

/// A copy of the engine's fd of user namespace `id`: the root's made by
/// `make` or one below it made by `make_nested` (None: neither, the
/// engine's own).
pub fn dup_fd(id: u32, top: Option<u32>) -> Option<std::io::Result<OwnedFd>> {
    match top == Some(id) {
        true => with_tree_user(|fd| fd.try_clone_to_owned()),
        false => NESTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|f| f.try_clone()),
    }
}

/// The user namespaces below the tree's (module doc), parents first;
/// `users.top`'s was made by `make`.
pub fn make_nested(root: Pid, users: &UserImages) -> Result<()> {
    for n in &users.nested {
        let parent = match n.parent {
            None => None,
            Some(p) => {
                let fd = match users.top.as_ref().filter(|(t, _)| *t == p) {
                    Some(_) => MADE
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .map(|m| m.user.try_clone()),
                    None => NESTED
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&p)
                        .map(|f| f.try_clone()),
                };
                let fd = fd
                    .ok_or_else(|| {
                        Error::task(root, format!("user namespace {}", n.id), "parent not made")
                    })?
                    .map_err(|e| Error::io("dup", format!("pid {root}: user namespace {p}"), e))?;
                let pu = users.entry(p).expect("from_set checked the parent");
                Some((fd, first_mapped(&pu.uid_map), first_mapped(&pu.gid_map)))
            }
        };
        let fd = make_one(
            root,
            n,
            parent.as_ref().map(|(f, u, g)| (f.as_fd(), *u, *g)),
        )?;
        NESTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n.id, fd);
    }
    Ok(())
}

/// Where each task entering a user namespace below the root's keeps its
/// fd (`ChildPlan::user_ns`): above every fd any task uses, and the
/// engine's pidfd (restore/pidns.rs, which reckons the same way).
pub fn place_fds(
    plans: &mut [super::child::ChildPlan],
    root: &mut super::child::ChildPlan,
    engine_pidfd: Option<RawFd>,
) {
    let above = super::pidns::above_every_fd(plans);
    let at = above.max(engine_pidfd.map_or(0, |n| n + 1));
    fn set_in(p: &mut super::child::ChildPlan, at: RawFd) {
        if let Some(u) = p.user_ns.as_mut() {
            u.1 = at;
        }
        for c in p
            .children
            .iter_mut()
            .chain(p.siblings.iter_mut())
            .chain(p.helpers.iter_mut().flat_map(|h| h.children.iter_mut()))
        {
            set_in(c, at);
        }
    }
    for p in plans.iter_mut() {
        set_in(p, at);
    }
    set_in(root, at);
}

/// The Creds stage, before the credentials: a task whose user namespace
/// is below the root's enters it (remote setns of the fd it kept) and
/// closes the fd. Returns whether it did.
pub fn enter_own(cx: &mut super::stage::TaskCx<'_>) -> Result<bool> {
    let Some((_, at)) = cx.plan.user_ns else {
        return Ok(false);
    };
    cx.in_leader(|r, _, _| {
        r.call(
            libc::SYS_setns,
            &[at as u64, libc::CLONE_NEWUSER as u64],
            &format!("setns into its user namespace (fd {at})"),
        )?;
        r.call(
            libc::SYS_close,
            &[at as u64],
            "close of its user namespace's fd",
        )
    })?;
    Ok(true)
}

/// 0 when `map` maps it, else its first id.
fn first_mapped(map: &[pb::UidGidExtent]) -> u32 {
    match map.iter().any(|e| e.first == 0) {
        true => 0,
        false => map.first().map_or(0, |e| e.first),
    }
}

/// One namespace of `make_nested`: `parent` is the parent's fd with a uid
/// and gid mapped there (`None`: the engine's).
fn make_one(root: Pid, n: &Nested, parent: Option<(BorrowedFd<'_>, u32, u32)>) -> Result<OwnedFd> {
    let what = format!("user namespace {} (userns-{}.img)", n.id, n.id);
    with_holder(
        root,
        &what,
        || {
            enter_parent(parent, true).is_ok()
                && nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok()
        },
        |holder, up_rd| write_maps(root, &what, holder, n, parent, up_rd),
    )
}

/// A holder of a namespace the engine makes before any task exists: a
/// process forked from the engine runs `set_up` (in the child, so only
/// system calls, nothing that allocates), answers `1` on the pipe it
/// returns (`u` when `set_up` failed, and exits) and stays, paused,
/// while the engine's `then` works with its pid and that pipe's read end
/// (writes its maps, opens its namespaces through its /proc); then it is
/// killed and reaped, whatever `then` gave.
pub fn with_holder<R>(
    root: Pid,
    what: &str,
    set_up: impl FnOnce() -> bool,
    then: impl FnOnce(Pid, OwnedFd) -> Result<R>,
) -> Result<R> {
    let err = |step: &str, e| Error::sys(root, format!("{what}: {step}"), e);
    let (up_rd, up_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let holder = crate::sys::fork_restore_child().map_err(|e| err("fork of its holder", e))?;
    if holder == 0 {
        drop(up_rd);
        crate::restore::child::tie_to_parent(nix::unistd::getppid().as_raw());
        let ok = set_up();
        let _ = nix::unistd::write(&up_wr, if ok { b"1" } else { b"u" });
        if !ok {
            crate::sys::process::exit_now(1);
        }
        loop {
            nix::unistd::pause();
        }
    }
    drop(up_wr);
    let r = then(holder, up_rd);
    let hpid = nix::unistd::Pid::from_raw(holder);
    let _ = nix::sys::signal::kill(hpid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(hpid, None);
    r
}

/// A process made for `make_one` goes into `parent`, and the holder
/// (`creator`) takes ids mapped there.
fn enter_parent(parent: Option<(BorrowedFd<'_>, u32, u32)>, creator: bool) -> nix::Result<()> {
    let Some((fd, uid, gid)) = parent else {
        return Ok(());
    };
    nix::sched::setns(fd, CloneFlags::CLONE_NEWUSER)?;
    if creator {
        let g = nix::unistd::Gid::from_raw(gid);
        let u = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresgid(g, g, g)?;
        nix::unistd::setresuid(u, u, u)?;
    }
    Ok(())
}

/// The engine's side of `make_one`: once the holder has unshared, a writer
/// in the parent writes its maps; then the namespace's fd.
fn write_maps(
    root: Pid,
    what: &str,
    holder: Pid,
    n: &Nested,
    parent: Option<(BorrowedFd<'_>, u32, u32)>,
    up: OwnedFd,
) -> Result<OwnedFd> {
    let mut b = [0u8; 1];
    if !matches!(std::fs::File::from(up).read(&mut b), Ok(1)) || b[0] != b'1' {
        return Err(Error::task(
            root,
            what,
            format!("its holder process (pid {holder}) could not enter its parent and unshare"),
        ));
    }
    let u = &n.entry;
    let deny = u.ckpt_setgroups_deny == Some(true);
    let files: Vec<(std::ffi::CString, String)> = [
        (
            "setgroups",
            if deny {
                "deny\n".to_string()
            } else {
                "allow\n".to_string()
            },
        ),
        ("uid_map", map_text(&u.uid_map)),
        ("gid_map", map_text(&u.gid_map)),
    ]
    .into_iter()
    .map(|(name, text)| {
        let path = std::ffi::CString::new(format!("/proc/{holder}/{name}")).expect("no NUL");
        (path, text)
    })
    .collect();
    let err = |step: &str, e| Error::sys(root, format!("{what}: {step}"), e);
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let writer = crate::sys::fork_restore_child().map_err(|e| err("fork of its writer", e))?;
    if writer == 0 {
        drop(rd);
        crate::restore::child::tie_to_parent(nix::unistd::getppid().as_raw());
        let mut failed = (0u8, 0i32);
        if let Err(e) = enter_parent(parent, false) {
            failed = (1, e as i32);
        }
        for (i, (path, text)) in files.iter().enumerate() {
            if failed.0 != 0 {
                break;
            }
            let r = crate::sys::fd::open(path, libc::O_WRONLY).and_then(|fd| {
                let w = crate::sys::fd::write(fd, text.as_bytes());
                crate::sys::fd::close(fd);
                w
            });
            if let Err(e) = r {
                failed = (2 + i as u8, e as i32);
            }
        }
        let mut msg = [0u8; 5];
        msg[0] = failed.0;
        msg[1..].copy_from_slice(&failed.1.to_le_bytes());
        let _ = nix::unistd::write(&wr, &msg);
        crate::sys::process::exit_now(i32::from(failed.0 != 0));
    }
    drop(wr);
    let mut msg = [0u8; 5];
    let got = std::fs::File::from(rd).read_exact(&mut msg);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(writer), None);
    if got.is_err() {
        return Err(Error::task(
            root,
            what,
            format!("its map writer (pid {writer}) died"),
        ));
    }
    let errno = nix::errno::Errno::from_raw(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]));
    match msg[0] {
        0 => {}
        1 => {
            return Err(err(
                "the map writer's setns into the parent user namespace",
                errno,
            ))
        }
        i => {
            let (path, text) = &files[(i - 2) as usize];
            return Err(Error::io(
                path.to_string_lossy().into_owned(),
                format!("pid {root}: {what}: writing {text:?} from its parent user namespace"),
                std::io::Error::from_raw_os_error(errno as i32),
            ));
        }
    }
    let path = format!("/proc/{holder}/ns/user");
    let fd = std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(&path, format!("pid {root}: its new {what}"), e))?;
    debug!(
        "{what}: parent {:?}, uid_map {:?}, gid_map {:?}, setgroups {}",
        n.parent,
        map_text(&u.uid_map),
        map_text(&u.gid_map),
        if deny { "deny" } else { "allow" }
    );
    Ok(fd)
}

/// The kernel's text of a map.
fn map_text(map: &[pb::UidGidExtent]) -> String {
    map.iter()
        .map(|e| format!("{} {} {}\n", e.first, e.lower_first, e.count))
        .collect()
}

/// The namespaces `make` made, held by fds until the root's clone.
struct Made {
    user: OwnedFd,
    /// The time namespace for the root, with its offsets written.
    time: Option<OwnedFd>,
}

/// What `make` leaves for `clone_root`: a restore makes one tree.
static MADE: Mutex<Option<Made>> = Mutex::new(None);

/// Runs `f` with the tree's user namespace made by `make` (None when
/// there is none, or once the root is cloned).
pub fn with_tree_user<R>(f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
    let made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    made.as_ref().map(|m| f(m.user.as_fd()))
}

/// The launcher, alive until `done`.
struct Launcher {
    pid: Pid,
    /// Where the tasks hold a pidfd of it (`launcher_pidfd`).
    pidfd_at: Option<RawFd>,
    /// The engine's end of the launcher's channel (`to_launcher`); a
    /// driver forked from the engine has its copy.
    chan: OwnedFd,
}

static LAUNCHER: Mutex<Option<Launcher>> = Mutex::new(None);

/// The restore is over (or failed): the launcher goes.
pub fn done() {
    let l = LAUNCHER.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(Launcher { pid, .. }) = l {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    NESTED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The other namespaces the holder made, to be entered by the engine's
/// thread: (flag, fd).
pub type Entered = Vec<(CloneFlags, OwnedFd)>;

/// Step 1 of the module doc: a new user namespace with `u`'s maps, and in
/// it new namespaces of the kinds in `flags` (CLONE_NEWTIME among them:
/// its offsets, `time_offsets`, are written before any task is in it).
/// Returns fds of the namespaces of `flags` but time, for the engine's
/// thread to enter.
pub fn make(
    root: Pid,
    u: &pb::UsernsEntry,
    flags: CloneFlags,
    time_offsets: Option<&str>,
) -> Result<Entered> {
    let err = |what: &str, e| Error::sys(root, format!("user namespace: {what}"), e);
    let (up_rd, up_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let (go_rd, go_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let holder = crate::sys::fork_restore_child().map_err(|e| err("fork of the holder", e))?;
    if holder == 0 {
        drop(up_rd);
        drop(go_wr);
        holder_main(up_wr, go_rd, flags);
    }
    drop(up_wr);
    drop(go_rd);
    let r = set_up(root, holder, u, flags, time_offsets, up_rd, go_wr);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(holder), None);
    r
}

/// The holder (a forked copy of the engine): raw system calls only, then
/// it waits to be killed.
fn holder_main(up: OwnedFd, go: OwnedFd, flags: CloneFlags) -> ! {
    crate::restore::child::tie_to_parent(nix::unistd::getppid().as_raw());
    let say = |b: u8| {
        let _ = nix::unistd::write(&up, &[b]);
    };
    if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_err() {
        say(b'u');
        crate::sys::process::exit_now(1);
    }
    say(b'1');
    let mut b = [0u8; 1];
    if !matches!(nix::unistd::read(go.as_raw_fd(), &mut b), Ok(1)) {
        crate::sys::process::exit_now(1);
    }
    if nix::sched::unshare(flags).is_err() {
        say(b'n');
        crate::sys::process::exit_now(1);
    }
    say(b'2');
    loop {
        nix::unistd::pause();
    }
}

/// The engine's side of `make`.
fn set_up(
    root: Pid,
    holder: Pid,
    u: &pb::UsernsEntry,
    flags: CloneFlags,
    time_offsets: Option<&str>,
    up: OwnedFd,
    go: OwnedFd,
) -> Result<Entered> {
    let mut up = std::fs::File::from(up);
    let mut step = |want: u8, what: &str| -> Result<()> {
        let mut b = [0u8; 1];
        match up.read(&mut b) {
            Ok(1) if b[0] == want => Ok(()),
            _ => Err(Error::task(
                root,
                "user namespace",
                format!("the holder process (pid {holder}) could not {what} (reply {b:?})"),
            )),
        }
    };
    step(b'1', "unshare a user namespace")?;
    let write = |name: &str, text: &str| -> Result<()> {
        let path = format!("/proc/{holder}/{name}");
        std::fs::write(&path, text).map_err(|e| {
            Error::io(
                &path,
                format!("pid {root}: its user namespace's {name} {text:?}"),
                e,
            )
        })
    };
    // setgroups first: gid_map cannot be written with "allow" by an
    // unprivileged writer, and "deny" is settable only before gid_map.
    let deny = u.ckpt_setgroups_deny == Some(true);
    write("setgroups", if deny { "deny" } else { "allow" })?;
    write("uid_map", &map_text(&u.uid_map))?;
    write("gid_map", &map_text(&u.gid_map))?;
    std::fs::File::from(go)
        .write_all(b"g")
        .map_err(|e| Error::io("pipe", format!("pid {root}: the holder's go"), e))?;
    step(b'2', &format!("unshare its other namespaces ({flags:?})"))?;
    let open = |name: &str| -> Result<OwnedFd> {
        let path = format!("/proc/{holder}/ns/{name}");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(&path, format!("pid {root}: its new {name} namespace"), e))
    };
    let time = match flags.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
        true => {
            if let Some(text) = time_offsets {
                let path = format!("/proc/{holder}/timens_offsets");
                std::fs::write(&path, text).map_err(|e| {
                    Error::io(
                        &path,
                        format!("pid {root}: time namespace offsets {text:?}"),
                        e,
                    )
                })?;
            }
            Some(open("time_for_children")?)
        }
        false => None,
    };
    let mut out = Vec::new();
    for (flag, name) in [
        (CloneFlags::CLONE_NEWNET, "net"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWNS, "mnt"),
    ] {
        if flags.contains(flag) {
            out.push((flag, open(name)?));
        }
    }
    let user = open("user")?;
    *MADE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Made { user, time });
    debug!(
        "user namespace: uid_map {:?}, gid_map {:?}, setgroups {}",
        map_text(&u.uid_map),
        map_text(&u.gid_map),
        if deny { "deny" } else { "allow" }
    );
    Ok(out)
}

/// Steps 3 and 4 of the module doc: clones the root (pid `root`, `flags`
/// with CLONE_NEWPID or not) through a launcher, which puts a pidfd of
/// itself at `pidfd_at` first. Its copies of the tasks' `err_pipes` it
/// closes after the clone: their end is how the engine knows a task is
/// set up. Like `clone3_with_pid`: `Ok(0)` in the root, its pid in the
/// engine.
pub fn clone_root(
    root: Pid,
    flags: u64,
    pidfd_at: Option<i32>,
    err_pipes: &[i32],
) -> nix::Result<i32> {
    use nix::errno::Errno;
    let made = MADE.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(made) = made else {
        return Err(Errno::ENOENT);
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (chan, theirs) = crate::sys::unix_sock::socketpair(libc::SOCK_SEQPACKET)?;
    let launcher = crate::sys::fork_restore_child()?;
    if launcher == 0 {
        drop(rd);
        drop(chan);
        let r = launch(&made, root, flags, pidfd_at);
        let v: i32 = match r {
            Ok(0) => return Ok(0),
            Ok(pid) => pid,
            Err(e) => -(e as i32),
        };
        let _ = nix::unistd::write(&wr, &v.to_le_bytes());
        drop(wr);
        if v < 0 {
            crate::sys::process::exit_now(1);
        }
        for &fd in err_pipes {
            crate::sys::fd::close(fd);
        }
        // The tasks' source of shared files, until `done` kills it.
        serve(theirs);
    }
    drop(wr);
    drop(theirs);
    *LAUNCHER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Launcher {
        pid: launcher,
        pidfd_at,
        chan,
    });
    let mut b = [0u8; 4];
    let got = std::fs::File::from(rd).read_exact(&mut b);
    if got.is_err() {
        done();
        return Err(Errno::ECHILD);
    }
    match i32::from_le_bytes(b) {
        v if v > 0 => Ok(v),
        v => {
            done();
            Err(Errno::from_raw(-v))
        }
    }
}

/// Where every task's fd table holds a pidfd of the launcher until the
/// task's Files stage (restore/pidns.rs `engine_pidfd`; a task sharing
/// another's table sees the owner's), for the tasks to take an fd the
/// engine made for them from it; `None` without a launcher.
pub fn launcher_pidfd() -> Option<RawFd> {
    let l = LAUNCHER.lock().unwrap_or_else(|p| p.into_inner());
    l.as_ref().and_then(|l| l.pidfd_at)
}

/// The most fds `to_launcher` sends in one message (the kernel's
/// SCM_MAX_FD).
const CHUNK: usize = 253;

/// Puts each fd of `fds` (place, fd: the engine's fd at that place, made
/// after the launcher was forked) at its place in the launcher's fd table
/// too, before any task takes it from there; nothing without a launcher.
/// The launcher's copy of the engine's fd table is the one the tasks take
/// their shared files from (step 4), and it was copied at its fork: an fd
/// that can only be made once the tree exists (restore/engine_files.rs,
/// the pidfds of reaped tasks, made inside the tree's pid namespace) would
/// otherwise stay, for the tasks, the place-holder it replaced.
pub fn to_launcher(fds: &[(RawFd, BorrowedFd<'_>)]) -> nix::Result<()> {
    let l = LAUNCHER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(l) = l.as_ref().filter(|_| !fds.is_empty()) else {
        return Ok(());
    };
    for part in fds.chunks(CHUNK) {
        let mut places = [0u8; 4 * CHUNK];
        let mut rights = [0 as RawFd; CHUNK];
        for (i, (place, fd)) in part.iter().enumerate() {
            places[4 * i..4 * i + 4].copy_from_slice(&place.to_le_bytes());
            rights[i] = fd.as_raw_fd();
        }
        let n = part.len();
        let chan = l.chan.as_raw_fd();
        crate::sys::unix_sock::send_scm(chan, &places[..4 * n], &rights[..n], None, None)?;
        let mut reply = [0u8; 4];
        let got = loop {
            match crate::sys::fd::read(chan, &mut reply) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r?,
            }
        };
        if got != 4 {
            // The launcher is gone.
            return Err(nix::errno::Errno::EPIPE);
        }
        match i32::from_le_bytes(reply) {
            0 => {}
            e => return Err(nix::errno::Errno::from_raw(e)),
        }
    }
    debug!(
        "user namespace: {} fds put in the launcher's table",
        fds.len()
    );
    Ok(())
}

/// The launcher's loop once the root is cloned: each message on `chan`
/// (`to_launcher`) is fds and the places they go to, dup2'd there; the
/// reply is 0 or the first errno. Raw system calls only, no allocation
/// (a forked copy of the engine); it ends when `done` kills it.
fn serve(chan: OwnedFd) -> ! {
    let chan = chan.as_raw_fd();
    loop {
        let mut places = [0u8; 4 * CHUNK];
        let mut rights = [-1 as RawFd; CHUNK];
        let (n, k) = match crate::sys::unix_sock::recv_scm(chan, &mut places, &mut rights) {
            Ok((0, _)) => loop {
                // The engine (and its driver) closed theirs: nothing more
                // comes.
                nix::unistd::pause();
            },
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                let _ = crate::sys::fd::write(chan, &(e as i32).to_le_bytes());
                continue;
            }
        };
        let mut err = 0i32;
        if n != 4 * k {
            err = libc::EINVAL;
        }
        for (i, &fd) in rights[..k].iter().enumerate() {
            let place = i32::from_le_bytes([
                places[4 * i],
                places[4 * i + 1],
                places[4 * i + 2],
                places[4 * i + 3],
            ]);
            if err == 0 {
                if let Err(e) = crate::sys::fd::dup2(fd, place) {
                    err = e as i32;
                }
            }
            crate::sys::fd::close(fd);
        }
        let _ = crate::sys::fd::write(chan, &err.to_le_bytes());
    }
}

/// The launcher: its namespaces, then the root's clone. Returns 0 in
/// the root.
fn launch(made: &Made, root: Pid, flags: u64, pidfd_at: Option<i32>) -> nix::Result<i32> {
    crate::restore::child::tie_to_parent(nix::unistd::getppid().as_raw());
    if let Some(n) = pidfd_at {
        let me = crate::sys::pidfd::open(nix::unistd::getpid().as_raw(), 0)?;
        crate::sys::fd::dup2(me.as_raw_fd(), n)?;
    }
    if let Some(t) = &made.time {
        nix::sched::setns(t, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))?;
    }
    let own_pid = flags & libc::CLONE_NEWPID as u64 != 0;
    if own_pid {
        nix::sched::setns(&made.user, CloneFlags::CLONE_NEWUSER)?;
    }
    // CLONE_PARENT takes the launcher's exit signal (SIGCHLD): clone3
    // wants none of its own with it.
    let got = crate::sys::clone3_with_pid(root, flags | libc::CLONE_PARENT as u64, 0)?;
    if !own_pid {
        // The root, and the launcher (step 4), into the namespace.
        if nix::sched::setns(&made.user, CloneFlags::CLONE_NEWUSER).is_err() && got == 0 {
            crate::sys::process::exit_now(1);
        }
    }
    if got != 0 {
        // The tasks take their shared files from the launcher with
        // pidfd_getfd, a ptrace access check: from inside the user
        // namespace it passes only for a dumpable process (the launcher's
        // memory was made outside, where no capability of theirs counts),
        // which the launcher was not (found by hand: EPERM).
        nix::sys::prctl::set_dumpable(true)?;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(first: u32, lower_first: u32, count: u32) -> pb::UidGidExtent {
        pb::UidGidExtent {
            first,
            lower_first,
            count,
        }
    }

    #[test]
    fn a_tasks_ids_are_taken_to_the_host_through_each_parent() {
        let entry = |uid: Vec<pb::UidGidExtent>, gid: Vec<pb::UidGidExtent>| pb::UsernsEntry {
            uid_map: uid,
            gid_map: gid,
            ..Default::default()
        };
        let users = UserImages {
            top: Some((
                7,
                entry(vec![ext(0, 100000, 65536)], vec![ext(0, 200000, 65536)]),
            )),
            nested: vec![Nested {
                id: 9,
                parent: Some(7),
                entry: entry(vec![ext(0, 1000, 10)], vec![ext(0, 2000, 10)]),
            }],
        };
        // The engine's namespace (no image): unchanged.
        assert_eq!(users.to_host(None, 5, 6), Some((5, 6)));
        assert_eq!(users.to_host(Some(7), 18943, 5), Some((118943, 200005)));
        assert_eq!(users.to_host(Some(9), 3, 4), Some((101003, 202004)));
        // Not mapped on the way.
        assert_eq!(users.to_host(Some(9), 10, 0), None);
        assert_eq!(users.to_host(Some(7), 65536, 0), None);
    }

    #[test]
    fn maps_are_checked_before_any_process() {
        let p = Path::new("userns-5.img");
        let good = pb::UsernsEntry {
            uid_map: vec![ext(0, 100000, 1000), ext(1000, 300000, 10)],
            gid_map: vec![ext(0, 100000, 65536)],
            ckpt_setgroups_deny: None,
            ckpt_parent_id: None,
        };
        validate(p, &good).unwrap();
        let mut overlap = good.clone();
        overlap.uid_map[1].lower_first = 100500;
        let e = validate(p, &overlap).unwrap_err().to_string();
        assert!(e.contains("userns-5.img") && e.contains("overlap"), "{e}");
        let mut empty = good.clone();
        empty.gid_map.clear();
        let e = validate(p, &empty).unwrap_err().to_string();
        assert!(e.contains("gid_map has 0 extents"), "{e}");
        let mut wrap = good;
        wrap.uid_map[0].lower_first = u32::MAX;
        assert!(validate(p, &wrap).is_err());
    }

    fn task(pid: i32, user: u32) -> super::super::load::TaskImages {
        super::super::load::TaskImages::for_tests(
            pid,
            0,
            pb::TaskKobjIdsEntry {
                user_ns_id: Some(user),
                ..Default::default()
            },
        )
    }

    /// The images of userns_nested in the uns flavour: the root's (1), A's
    /// (2, below it) and G1's (3, below A's); `tweak` breaks one.
    fn nested_set(tweak: impl FnOnce(&mut BTreeMap<u32, pb::UsernsEntry>)) -> Result<UserImages> {
        let ns = |map: Vec<pb::UidGidExtent>, parent: Option<u32>| pb::UsernsEntry {
            uid_map: map.clone(),
            gid_map: map,
            ckpt_setgroups_deny: parent.map(|_| true),
            ckpt_parent_id: parent,
        };
        let mut m = BTreeMap::new();
        m.insert(3, ns(vec![ext(0, 0, 5)], Some(2)));
        m.insert(2, ns(vec![ext(0, 1000, 10)], Some(1)));
        m.insert(1, ns(vec![ext(0, 0, 65536)], None));
        tweak(&mut m);
        let images = m.into_iter().map(|(k, v)| (k, Ok(v))).collect();
        let tasks = [task(1, 1), task(2, 2), task(3, 3), task(4, 2)];
        from_set(Path::new("/img"), &images, &tasks)
    }

    #[test]
    fn nested_namespaces_are_checked_and_ordered_parents_first() {
        let u = nested_set(|_| {}).unwrap();
        assert_eq!(u.top.as_ref().map(|t| t.0), Some(1));
        let order: Vec<u32> = u.nested.iter().map(|n| n.id).collect();
        assert_eq!(order, vec![2, 3]);
        assert!(u.setgroups_denied(Some(3)) && !u.setgroups_denied(Some(1)));
        let e = nested_set(|m| m.get_mut(&3).unwrap().uid_map = vec![ext(0, 8, 5)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("userns-3.img") && e.contains("does not have"),
            "{e}"
        );
        let e = nested_set(|m| m.get_mut(&3).unwrap().ckpt_setgroups_deny = None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("userns-3.img") && e.contains("setgroups"), "{e}");
        let e = nested_set(|m| m.get_mut(&2).unwrap().ckpt_parent_id = Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("loop") || e.contains("does not have"), "{e}");
        let e = nested_set(|m| {
            m.remove(&2);
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("userns-3.img") && e.contains("no userns-2.img"),
            "{e}"
        );
    }

    #[test]
    fn a_nested_map_must_fit_in_its_parents() {
        let parent = vec![ext(0, 100000, 10), ext(20, 300000, 10)];
        assert!(fits(&ext(0, 0, 10), &parent));
        assert!(fits(&ext(5, 25, 5), &parent));
        assert!(!fits(&ext(0, 5, 10), &parent));
        assert!(!fits(&ext(0, 30, 1), &parent));
    }
}
