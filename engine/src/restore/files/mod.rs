//! Open files, cwd and root of every task.
//!
//! A file used by one task only is made by the task itself right after
//! its clone (`child.rs`), from what its kind says ([`FdKind::source`]).
//! A file several tasks share (inherited across fork: a shared offset, a
//! pipe between parent and child) is made once by the engine
//! ([`FdKind::open_in_engine`]) before the tree, and every task takes it
//! over from the copy of the engine's fd table it inherits in its clone
//! (`FdSource::Inherit`), so they share it again, with no remote call;
//! so are the files only the engine can make (memfds, unlinked files:
//! `engine_files.rs`). The few the engine makes only once the tree exists
//! (`EngineFds::late`) it puts into the task with pidfd_getfd in the
//! Files stage (`FdSource::Inject`).
//!
//! Each kind of file is one module here with an [`FdKind`], registered in
//! [`FD_KINDS`]; nothing else names the kinds.

mod epoll;
mod eventfd;
mod fanotify;
mod fifo;
mod fown;
pub mod inet;
mod inet_fin;
mod inotify;
pub mod netlink;
pub mod packet;
mod pidfd;
mod pipe;
mod reg;
mod signalfd;
pub mod timerfd;
mod tty;
mod unix;

/// The UNIX sockets the engine makes before the files (bound, listening,
/// connected by name).
pub const UNIX_SOCKETS: Kind = unix::KIND;

pub use fifo::open_ghost_ends as fifo_ghost_ends;
pub use inotify::{
    make_on_ghosts as inotify_on_ghosts, renamed_ghost_seen, validate_ghost_watches, watched_ghosts,
};
pub use pidfd::make_dead as dead_pidfds;
pub use reg::open_on_host;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::child::{ChildPlan, FdPlan, FdSource, HelperFile, OpenFd};
use super::load::{Images, TaskImages};
use super::stage::{EngineFds, Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::images::vma::{VMA_ANON_SHARED, VMA_FILE_PRIVATE, VMA_FILE_SHARED};
use crate::ptrace::remote::Remote;

/// Every kind of file the restore knows, by its files.img type.
pub static FD_KINDS: &[&dyn FdKind] = &[
    &reg::Reg,
    &pipe::Pipe,
    &fifo::Fifo,
    &eventfd::Eventfd,
    &epoll::Epoll,
    &signalfd::Signalfd,
    &timerfd::Timerfd,
    &unix::Unix,
    &tty::Tty,
    &inet::Inet,
    &netlink::Netlink,
    &packet::Packet,
    &pidfd::Pidfd,
    &inotify::Inotify,
    &fanotify::Fanotify,
    &super::memfd::MemfdFile,
];

/// The kind that restores files of `type` (files.img), if there is one.
pub fn kind_of(r#type: i32) -> Option<&'static dyn FdKind> {
    FD_KINDS
        .iter()
        .copied()
        .find(|k| k.fd_type() as i32 == r#type)
}

/// Objects made for two files at once by the engine (the two ends of one
/// pipe), by (fd type, object id).
pub type EnginePairs = BTreeMap<(i32, u64), (OwnedFd, OwnedFd)>;

/// One kind of file descriptor, on the restore side.
pub trait FdKind: Sync {
    /// The files.img type it restores.
    fn fd_type(&self) -> pb::FdTypes;

    /// Why the file entry cannot be restored by this kind, if so (its
    /// part of the entry is missing or unusable).
    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String>;

    /// How a task makes the file for itself. `fd` is the descriptor that
    /// refers to it.
    fn source(
        &self,
        imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>>;

    /// The object several files of this kind are parts of (a pipe, of its
    /// ends): such files are shared between tasks as one, if their tasks,
    /// together, are more than one.
    fn object(&self, _f: &pb::FileEntry) -> Option<u64> {
        None
    }

    /// One open file description of the file, made by the engine, for a
    /// file several tasks share.
    fn open_in_engine(
        &self,
        _imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        _pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        Err(Error::unsupported(
            pid,
            pb::FdTypes::try_from(f.r#type).map_or("?".into(), |t| format!("{t:?}")),
            "this kind of file cannot be shared between restored processes yet",
        ))
    }
}

/// For [`FdKind::open_in_engine`] of a file that needs nothing from the
/// other fds of a task: the task's own way of making it, run in the
/// engine, close-on-exec like every fd the engine holds for the tasks.
pub fn open_here(pid: Pid, src: &dyn OpenFd) -> Result<OwnedFd> {
    let mut cx = super::child::ChildFds {
        efd: -1,
        pairs: Vec::new(),
    };
    let fd = src
        .open(&mut cx)
        .map_err(|e| Error::sys(pid, src.describe(), e))?;
    // SAFETY: a fresh fd the engine owns from here on.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| Error::sys(pid, format!("{}: FD_CLOEXEC", src.describe()), e))?;
    Ok(fd)
}

/// For [`FdKind::check`]: a file entry of type `name` must carry its part.
/// For each file id, a task that holds it and that task's filesystem uid
/// and gid as the host sees them: the engine makes sockets before any
/// task exists, as the task that will hold them would have (its fsuid
/// owns them: SO_REUSEPORT groups, SO_PEERCRED, sock_diag's uid). The
/// image has a task's creds as its user namespace sees them.
pub fn holders(imgs: &Images) -> BTreeMap<u32, (Pid, u32, u32)> {
    let mut holder = BTreeMap::new();
    for t in &imgs.tasks {
        let ids = t.thread().creds.as_ref().map_or((0, 0), |c| {
            imgs.ns
                .users
                .to_host(t.ids.user_ns_id, c.fsuid, c.fsgid)
                .unwrap_or((c.fsuid, c.fsgid))
        });
        for f in &t.fdinfo {
            holder.entry(f.id).or_insert((t.pid, ids.0, ids.1));
        }
    }
    holder
}

pub fn need_part<T>(part: &Option<T>, name: &str) -> std::result::Result<(), String> {
    match part {
        Some(_) => Ok(()),
        None => Err(format!("{name} without its {} entry", name.to_lowercase())),
    }
}

/// Every fd of the image refers to a file entry of its own type that a
/// kind can restore, and each entry is usable.
fn validate(imgs: &Images) -> Result<()> {
    for f in imgs.files.values() {
        if let Some(k) = kind_of(f.r#type) {
            k.check(f)
                .map_err(|why| imgs.bad("files.img", format!("file {}: {why}", f.id)))?;
            fown::check(imgs, f)
                .map_err(|why| imgs.bad("files.img", format!("file {}: {why}", f.id)))?;
        }
    }
    for t in &imgs.tasks {
        let fd_name = format!("fdinfo-{}.img", t.ids.files_id);
        for fd in &t.fdinfo {
            let ok = imgs.files.get(&fd.id).is_some_and(|f| {
                f.r#type == fd.r#type && kind_of(f.r#type).is_some_and(|k| k.check(f).is_ok())
            });
            if !ok {
                return Err(imgs.bad(
                    &fd_name,
                    format!(
                        "fd {} refers to file id {} of type {}, which files.img does not have (or this engine cannot restore)",
                        fd.fd,
                        fd.id,
                        pb::FdTypes::try_from(fd.r#type).map_or("?".into(), |t| format!("{t:?}"))
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub const KIND: Kind = Kind {
    name: "files",
    validate,
    new: |_: &Images, _: &RestoreOptions| Ok(Box::new(Files)),
};

struct Files;

impl Restorer for Files {
    /// The files several tasks share, once each.
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        shared_files(imgs, fds)
    }

    fn plan(
        &self,
        imgs: &Images,
        t: &TaskImages,
        fds: &EngineFds,
        plan: &mut ChildPlan,
    ) -> Result<()> {
        plan_files(imgs, t, fds, plan)
    }

    /// Owners of open files, once every thread they may name exists.
    fn finish(&mut self, imgs: &Images) -> Result<()> {
        fown::restore_all(imgs)
    }

    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        if stage != TaskStage::Files {
            return Ok(());
        }
        let (plan, imgs, t) = (cx.plan, cx.imgs, cx.t);
        cx.in_leader(|r, mem, scratch| {
            inject_shared_files(r, plan)?;
            epoll::watch_injected(r, mem, scratch, imgs, t, plan)?;
            fown::set_async(r, imgs, t)
        })
    }
}

/// The task's fds, the files the engine needs open in it while it
/// rebuilds memory (mapped files and the executable, above every fd of
/// its own), its cwd, root and umask.
fn plan_files(
    imgs: &Images,
    t: &TaskImages,
    engine: &EngineFds,
    plan: &mut ChildPlan,
) -> Result<()> {
    let pid = t.pid;
    let mut fdinfo = t.fdinfo.clone();
    fdinfo.sort_by_key(|f| f.fd);
    for f in &fdinfo {
        let (source, share_with) = match engine.descriptions.get(&f.id) {
            Some(engine_fd) if engine.late.contains(&f.id) => (
                FdSource::Inject {
                    engine_fd: engine_fd.as_raw_fd(),
                },
                None,
            ),
            Some(engine_fd) => (
                FdSource::Inherit {
                    engine_fd: engine_fd.as_raw_fd(),
                },
                None,
            ),
            None => {
                let file = imgs.file(f.id);
                let kind = kind_of(file.r#type).expect("validated");
                (
                    FdSource::Open(kind.source(imgs, pid, f, file)?),
                    fdinfo
                        .iter()
                        .find(|o| o.id == f.id && o.fd < f.fd)
                        .map(|o| o.fd as RawFd),
                )
            }
        };
        plan.fds.push(FdPlan {
            fd: f.fd as RawFd,
            source,
            cloexec: f.flags & libc::FD_CLOEXEC as u32 != 0,
            share_with,
        });
    }
    // The helper fds go above every fd of the table, which a task sharing
    // its parent's table has none of its own in: the owner's, then its own
    // error fd, then each sharer's in turn, all opened by the owner (a
    // sharer makes no fd: the table is the owner's to fill), each closed
    // by the engine in its own task once it served.
    let owner_pid = t.fd_table_owner.unwrap_or(pid);
    let owner = imgs
        .tasks
        .iter()
        .find(|o| o.pid == owner_pid)
        .expect("validated");
    let max_fd = owner
        .fdinfo
        .iter()
        .map(|f| f.fd as RawFd)
        .max()
        .unwrap_or(2);
    let sharers = || {
        imgs.tasks
            .iter()
            .filter(move |s| s.fd_table_owner == Some(owner_pid))
    };
    let base = (max_fd + 1).max(3);
    let (files, mapped, objects) = helper_files(imgs, t, engine)?;
    plan.shares_files = t.fd_table_owner.is_some();
    plan.helper_fd_base = if plan.shares_files {
        let mut at = base + helper_files(imgs, owner, engine)?.0.len() as RawFd + 1;
        for s in sharers().take_while(|s| s.pid != pid) {
            at += helper_files(imgs, s, engine)?.0.len() as RawFd;
        }
        at
    } else {
        for s in sharers() {
            plan.table_helpers.extend(helper_files(imgs, s, engine)?.0);
        }
        base
    };
    let n = mapped.len();
    for (i, id) in mapped.into_iter().enumerate() {
        plan.mapped_fds.insert(id, plan.helper_fd_base + i as RawFd);
    }
    for (i, shmid) in objects.into_iter().enumerate() {
        plan.shmem_fds
            .insert(shmid, plan.helper_fd_base + (n + i) as RawFd);
    }
    plan.exe_fd = Some(plan.helper_fd_base + files.len() as RawFd - 1);
    plan.helper_files = files;
    plan.cwd = Some(super::cstr(pid, "cwd", &imgs.reg(t.fs.cwd_id).name)?);
    plan.root = Some(super::cstr(pid, "root", &imgs.reg(t.fs.root_id).name)?);
    plan.umask = t.fs.umask.unwrap_or(0o022);
    Ok(())
}

/// The files the engine needs open in task `t` while it rebuilds its
/// memory: each mapped file once, then each shared anonymous object the
/// engine made, then the executable (last); and the file ids of the mapped
/// ones and the shmids of the objects, in that order.
fn helper_files(
    imgs: &Images,
    t: &TaskImages,
    engine: &EngineFds,
) -> Result<(Vec<HelperFile>, Vec<u32>, Vec<u64>)> {
    let pid = t.pid;
    // A deleted file or a memfd is reopened from the engine's fd.
    let helper = |id: u32, what: &str, flags: i32| -> Result<HelperFile> {
        Ok(match engine.map_fd(id) {
            Some(n) => HelperFile::inherited(n, flags),
            None => HelperFile {
                path: super::cstr(pid, what, &imgs.reg(id).name)?,
                flags,
                engine_fd: None,
            },
        })
    };
    let mut files = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    for v in &t.mm.vmas {
        let id = v.shmid as u32;
        if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 && !ids.contains(&id) {
            let flags = v.fdflags.unwrap_or(libc::O_RDONLY as u32) as i32;
            ids.push(id);
            files.push(helper(id, "mapping", flags)?);
        }
    }
    let mut objects: Vec<u64> = Vec::new();
    for v in &t.mm.vmas {
        if let Some(fd) = engine
            .shmem
            .get(&v.shmid)
            .filter(|_| v.status & VMA_ANON_SHARED != 0)
        {
            if !objects.contains(&v.shmid) {
                objects.push(v.shmid);
                files.push(HelperFile::inherited(fd.as_raw_fd(), libc::O_RDWR));
            }
        }
    }
    files.push(helper(t.mm.exe_file_id, "exe", libc::O_RDONLY)?);
    Ok((files, ids, objects))
}

/// Open files used by more than one task: the engine makes each once.
/// Keyed by file id; files the engine holds already are left alone.
fn shared_files(imgs: &Images, engine: &mut EngineFds) -> Result<()> {
    let mut users: BTreeMap<u32, BTreeSet<i32>> = BTreeMap::new();
    for t in &imgs.tasks {
        for f in &t.fdinfo {
            users.entry(f.id).or_default().insert(t.pid);
        }
    }
    // Parts of one object (the ends of a pipe) are shared if, together,
    // they are in more than one task.
    let mut object_users: BTreeMap<(i32, u64), BTreeSet<i32>> = BTreeMap::new();
    for (id, tasks) in &users {
        let f = imgs.file(*id);
        if let Some(o) = kind_of(f.r#type).and_then(|k| k.object(f)) {
            object_users.entry((f.r#type, o)).or_default().extend(tasks);
        }
    }
    let mut pairs = EnginePairs::new();
    for (id, tasks) in &users {
        if engine.descriptions.contains_key(id) {
            continue;
        }
        let file = imgs.file(*id);
        let kind = kind_of(file.r#type).expect("validated");
        let pid = *tasks.first().expect("one user at least");
        let is_shared = match kind.object(file) {
            Some(o) => object_users[&(file.r#type, o)].len() > 1,
            None => tasks.len() > 1,
        };
        if !is_shared {
            continue;
        }
        let fd = kind
            .open_in_engine(imgs, pid, file, &mut pairs)
            .map_err(|e| e.context(format!("file id {id} (shared by pids {tasks:?})")))?;
        engine.descriptions.insert(*id, fd);
    }
    Ok(())
}

/// Put the shared files the engine made once the tree existed
/// (`FdSource::Inject`) into the task (pidfd_getfd from the engine), in
/// ascending fd order so no placement clobbers a slot still to fill.
fn inject_shared_files(r: &mut Remote<'_>, plan: &ChildPlan) -> Result<()> {
    let mut todo: Vec<(RawFd, RawFd, bool)> = plan
        .fds
        .iter()
        .filter_map(|f| match f.source {
            FdSource::Inject { engine_fd } => Some((f.fd, engine_fd, f.cloexec)),
            _ => None,
        })
        .collect();
    if todo.is_empty() {
        if let Some(fd) = plan.engine_pidfd {
            r.call(libc::SYS_close, &[fd as u64], "close of the engine's pidfd")?;
        }
        return Ok(());
    }
    todo.sort();
    let pidfd = match plan.engine_pidfd {
        // Below the root's pid namespace: the engine has no pid there.
        Some(fd) => fd as u64,
        None => {
            let me = std::process::id() as u64;
            r.call(libc::SYS_pidfd_open, &[me, 0], "pidfd_open of the engine")?
        }
    };
    // Out of the way of every fd the task will have.
    let high = (plan.err_fd() + 1) as u64;
    let pidfd_high = r.call(
        libc::SYS_fcntl,
        &[pidfd, libc::F_DUPFD_CLOEXEC as u64, high],
        "moving the engine's pidfd",
    )?;
    r.call(libc::SYS_close, &[pidfd], "close")?;
    for (fd, engine_fd, cloexec) in todo {
        let got = r.call(
            libc::SYS_pidfd_getfd,
            &[pidfd_high, engine_fd as u64, 0],
            &format!("pidfd_getfd of shared file for fd {fd}"),
        )?;
        let moved = got != fd as u64;
        if moved {
            r.call(
                libc::SYS_dup2,
                &[got, fd as u64],
                &format!("dup2 to fd {fd}"),
            )?;
            r.call(libc::SYS_close, &[got], "close")?;
        }
        // pidfd_getfd sets FD_CLOEXEC and dup2 clears it: a call only
        // where that is not what the fd had (each costs two ptrace stops).
        if cloexec == moved {
            let fd_flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
            r.call(
                libc::SYS_fcntl,
                &[fd as u64, libc::F_SETFD as u64, fd_flags as u64],
                "fcntl(F_SETFD)",
            )?;
        }
    }
    r.call(
        libc::SYS_close,
        &[pidfd_high],
        "close of the engine's pidfd",
    )?;
    Ok(())
}

/// `flags` of an fd as fcntl(F_SETFL) takes them: O_NONBLOCK only, the
/// other status flags are the object's.
fn nonblock(flags: u32) -> i32 {
    flags as i32 & libc::O_NONBLOCK
}
