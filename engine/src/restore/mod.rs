//! `ckpt restore`: bring an image directory back to life.
//!
//! Everything is validated first (`load`), before any process exists.
//! Then each task is cloned with its old PID; the child sets up what it
//! can itself (`child`) and stops; the engine rebuilds its memory and the
//! rest through remote syscalls (`memory`, `creds`), sets the registers
//! and lets it go. If anything fails after the clone, the new task is
//! killed: a restore never leaves a half-restored tree running.

pub mod cgroups; // cgroup membership and properties (issue 6)
pub mod child;
pub mod cow; // private memory shared with the parent (issue 5)
pub mod creds;
pub mod engine_files; // memfd objects and unlinked files (issue 5)
pub mod ghost; // unlinked files (issue 5)
pub mod ipc; // SysV IPC objects (issue 5)
pub mod load;
pub mod memfd; // memfd objects (issue 5)
pub mod memory;
pub mod seccomp;
pub mod sessions;
pub mod signals; // pending signals (issue 3)
pub mod timers; // itimers and POSIX timers (issue 3)

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::images::task::TASK_STOPPED;
use crate::images::vma::{VMA_FILE_PRIVATE, VMA_FILE_SHARED};
use crate::kernel::restart::restart_regs;
use crate::proc::maps::{self, SpecialVma};
use crate::ptrace::mem::TaskMem;
use crate::ptrace::regs::regs_from_pb;
use crate::ptrace::remote::{find_syscall_insn, Remote};
use crate::ptrace::Seized;
use crate::sys::{self, KernelSigaction};

use child::{ChildPlan, FdPlan, FdSource, HelperPlan};
use load::{Images, TaskImages};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    /// Detach from the restored tree and exit (CRIU's -d).
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    // >>> issue 6
    /// `--manage-cgroups`.
    pub manage_cgroups: cgroups::Mode,
    /// `--cgroup-root`.
    pub cgroup_roots: Vec<crate::cgroupfs::CgroupRoot>,
    // <<< issue 6
}

/// Restore the tree; returns the exit code for the engine: 0 when
/// detached, else the restored root's own exit status.
pub fn restore(opts: &RestoreOptions) -> Result<i32> {
    let imgs = load::load(&opts.dir)?;
    debug!("images loaded and verified");
    let root_pid = imgs.tasks[0].pid;
    // >>> issue 6 hook: the cgroups, resolved before any process exists
    let cg = cgroups::plan(
        imgs.cgroups.as_ref(),
        &cgroups::task_sets(&imgs),
        opts.manage_cgroups,
        &opts.cgroup_roots,
    )?;
    // <<< issue 6 hook
    restore_tree(&imgs, &cg).map_err(|e| e.for_pid(root_pid, "restore"))?;
    debug!("{}", crate::ptrace::remote::STATS);
    let pid = root_pid;
    if let Some(pf) = &opts.pidfile {
        std::fs::write(pf, pid.to_string())
            .map_err(|e| Error::io(pf, format!("pid {pid}: writing the pidfile"), e))?;
    }
    info!(
        "pid {pid}: restored ({} tasks)",
        imgs.tasks.len() + imgs.zombies.len()
    );
    if opts.detach {
        return Ok(0);
    }
    loop {
        match waitpid(NixPid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(pid, "waiting for the restored task", e)),
        }
    }
}

/// Every PID and TID the image needs must be free before anything starts.
fn check_all_free(imgs: &Images) -> Result<()> {
    for t in &imgs.tasks {
        check_pid_free(t.pid)?;
        for (tid, _) in &t.threads {
            check_pid_free(*tid)?;
        }
    }
    for z in &imgs.zombies {
        check_pid_free(z.pid)?;
    }
    Ok(())
}

/// Kills every task of a half-made tree on every error path.
struct NewTree {
    pids: Vec<Pid>,
    armed: bool,
}

impl Drop for NewTree {
    fn drop(&mut self) {
        if self.armed {
            for &pid in self.pids.iter().rev() {
                let _ = kill(NixPid::from_raw(pid), Signal::SIGKILL);
            }
            // Reap what is ours: the root (our child) and every thread we
            // still trace (a traced zombie thread would otherwise keep its
            // leader's exit from ever being reported). The engine has no
            // other children, so waiting for any is safe; bounded in time.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
            while std::time::Instant::now() < deadline {
                match waitpid(None, Some(flags)) {
                    Err(nix::errno::Errno::ECHILD) => break,
                    Ok(WaitStatus::StillAlive) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => {}
                }
            }
            // The others were reparented when their parent died; they are
            // not ours to reap, but none may still be running when the
            // engine reports the failure.
            for &pid in &self.pids {
                while std::time::Instant::now() < deadline
                    && crate::proc::stat::read(pid).is_ok_and(|s| s.state != 'Z' && s.state != 'X')
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        }
    }
}

fn restore_tree(imgs: &Images, cg: &cgroups::CgroupPlan) -> Result<()> {
    check_all_free(imgs)?;
    // >>> issue 5: SysV IPC objects, checked and created before any task
    // (removed again on failure by the guard's Drop; restore/ipc.rs)
    let ipc = ipc::prepare(imgs)?;
    // <<< issue 5
    // >>> issue 5: memfd objects and unlinked files, made by the engine and
    // handed to the tasks like shared files (restore/engine_files.rs)
    let mut engine_files = engine_files::EngineFiles::create(imgs)?;
    let mut shared = shared_files(imgs)?;
    shared.append(&mut engine_files.descriptions);
    // <<< issue 5
    // Plans for every live task, then nested: children inside parents.
    let mut plans = Vec::with_capacity(imgs.tasks.len());
    let mut pipes = Vec::with_capacity(imgs.tasks.len());
    for t in &imgs.tasks {
        let (mut plan, file_fds, exe_fd) = child_plan(imgs, t, &shared)?;
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys(t.pid, "pipe", e))?;
        plan.err_pipe = wr.as_raw_fd();
        plan.zombies = imgs
            .zombies
            .iter()
            .filter(|z| z.ppid == t.pid)
            .map(|z| {
                Ok(child::ZombiePlan {
                    pid: z.pid,
                    status: z.status,
                    comm: cstr(z.pid, "comm", &z.comm)?,
                    ids: z.creds.as_ref().map(|c| {
                        (
                            [c.uid, c.euid, c.suid],
                            [c.gid, c.egid, c.sgid],
                            c.groups.clone(),
                        )
                    }),
                })
            })
            .collect::<Result<_>>()?;
        plans.push((plan, file_fds, exe_fd));
        pipes.push((rd, wr));
    }
    let sessions = plan_sessions(imgs)?;
    // Dropped after `guard`: cgroups made here go once the tasks are dead.
    let made_cgroups = cg.prepare()?; // issue 6 hook
    let mut guard = NewTree {
        pids: imgs
            .tasks
            .iter()
            .map(|t| t.pid)
            .chain(imgs.zombies.iter().map(|z| z.pid))
            .collect(),
        armed: true,
    };
    // >>> issue 5: which task holds which shared memory before it forks.
    // The engine's layout is looked at again right before the clone: a
    // region that collides with a mapping made meanwhile is planned again
    // without it (its pages are then written, as before).
    let mut busy = cow::engine_mappings()?;
    let mut tries = 0;
    let root_plan = loop {
        let cows = cow::plan(imgs, &busy)?;
        for ((plan, _, _), c) in plans.iter_mut().zip(cows.iter()) {
            plan.cow = c.clone();
        }
        let root_plan = nest(imgs, &plans, &sessions, 0);
        let now = cow::engine_mappings()?;
        if !cow::collides(&cows, &now) {
            break root_plan;
        }
        tries += 1;
        busy.extend(now);
        if tries >= 3 {
            // Give up sharing rather than risk it: everything is busy.
            busy = vec![(0, u64::MAX)];
        }
    };
    // <<< issue 5
    let root = imgs.tasks[0].pid;
    let got = sys::clone3_with_pid(root, 0, libc::SIGCHLD as u64).map_err(|e| match e {
        nix::errno::Errno::EEXIST => Error::task(root, "restore", format!("PID {root} is taken")),
        e => Error::sys(root, "clone3 with set_tid", e),
    })?;
    if got == 0 {
        child::run(&root_plan);
    }
    // Each task closes its pipe when it has set itself up (or writes why it
    // could not); ours are the read ends.
    let readers: Vec<_> = pipes.into_iter().map(|(rd, _wr)| rd).collect();
    for (t, rd) in imgs.tasks.iter().zip(readers) {
        let mut msg = String::new();
        let _ = std::fs::File::from(rd).read_to_string(&mut msg);
        if !msg.is_empty() {
            return Err(Error::task(
                t.pid,
                "restore",
                format!("the new task failed to set itself up: {msg}"),
            ));
        }
    }
    debug!("{} tasks created", guard.pids.len());
    // >>> issue 6 hook: into their cgroups before they run any code of
    // their own or get their threads
    for t in &imgs.tasks {
        cg.move_task(t.pid, t.tc().cg_set)?;
    }
    // <<< issue 6 hook
    let mut held = Vec::new();
    let mut shmem = memory::ShmemRegistry::default();
    for (t, (plan, file_fds, exe_fd)) in imgs.tasks.iter().zip(&plans) {
        held.push(take_over(
            imgs, t, plan, file_fds, *exe_fd, &mut shmem, &ipc,
        )?);
        // >>> issue 6 hook: a thread dumped in a cgroup of its own
        for (tid, core) in &t.threads {
            let id = core.thread_core.as_ref().and_then(|c| c.cg_set);
            if id.is_some() && id != t.tc().cg_set {
                cg.move_thread(*tid, id, t.tc().cg_set)?;
            }
        }
        // <<< issue 6 hook
    }
    ipc.finish()?; // issue 5: segments removed at dump time are removed again
    engine_files.seal_late(root)?; // issue 5: seals that wait for the mappings
    drop(shared);
    // Let them all go, children first.
    // (A task dumped stopped is in its group stop already: take_over,
    // issue 3 hook; detaching leaves it stopped.)
    for (task, threads) in held.into_iter().rev() {
        for th in threads {
            th.detach()?;
        }
        task.detach()?;
    }
    guard.armed = false;
    // >>> issue 6 hook
    made_cgroups.keep();
    if let Err(e) = cg.finish() {
        warn!("{e}");
    }
    // <<< issue 6 hook
    Ok(())
}

/// The plan of task `i` with its children's plans inside it: forked by
/// itself (early or not) or by one of its helpers.
fn nest(
    imgs: &Images,
    plans: &[(ChildPlan, BTreeMap<u32, RawFd>, Option<RawFd>)],
    sessions: &sessions::Plan,
    i: usize,
) -> ChildPlan {
    use sessions::Creator;
    let mut p = plans[i].0.clone();
    let pid = imgs.tasks[i].pid;
    p.helpers = sessions
        .helpers
        .iter()
        .filter(|h| h.parent == pid)
        .map(|h| HelperPlan {
            pid: h.pid,
            setsid: h.setsid,
            children: Vec::new(),
        })
        .collect();
    for (j, t) in imgs.tasks.iter().enumerate() {
        if t.pstree.ppid as i32 != pid || t.pid == pid {
            continue;
        }
        let mut c = nest(imgs, plans, sessions, j);
        match sessions.creator[&t.pid] {
            Creator::Parent => p.children.push(c),
            Creator::ParentEarly => {
                c.early = true;
                p.children.push(c);
            }
            Creator::Helper(h) => p
                .helpers
                .iter_mut()
                .find(|x| x.pid == h)
                .expect("the helper belongs to the parent")
                .children
                .push(c),
        }
    }
    p
}

/// Who creates each task (restore/sessions.rs), and the helpers' PIDs must
/// be free like every other.
fn plan_sessions(imgs: &Images) -> Result<sessions::Plan> {
    let layout: Vec<sessions::Layout> = imgs
        .tasks
        .iter()
        .map(|t| sessions::Layout {
            pid: t.pid,
            ppid: t.pstree.ppid as i32,
            sid: t.pstree.sid as i32,
            pgid: t.pstree.pgid as i32,
        })
        .collect();
    let taken = imgs
        .tasks
        .iter()
        .map(|t| t.pid)
        .chain(imgs.zombies.iter().map(|z| z.pid))
        .collect();
    let plan = sessions::plan(&layout, &taken).map_err(|(pid, why)| {
        let t = layout
            .iter()
            .find(|t| t.pid == pid)
            .expect("a task of the image");
        Error::unsupported(
            pid,
            format!("session {}, process group {}", t.sid, t.pgid),
            format!("this layout cannot be restored: {why}"),
        )
    })?;
    for h in &plan.helpers {
        check_pid_free(h.pid).map_err(|e| {
            Error::task(
                h.pid,
                "restore",
                format!(
                    "the {} whose leader is gone needs a helper with its PID: {e}",
                    if h.setsid { "session" } else { "process group" }
                ),
            )
        })?;
    }
    Ok(plan)
}

fn check_pid_free(pid: Pid) -> Result<()> {
    // A zombie holds its PID until its parent reaps it; a just-dumped tree
    // is often in that state for a moment, so give the parent a little time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let Ok(st) = crate::proc::stat::read(pid) else {
            return Ok(());
        };
        // PF_EXITING: killed by the dump, still tearing down its memory.
        let dying = st.state == 'Z' || st.flags & 0x4 != 0;
        if !dying || std::time::Instant::now() > deadline {
            let what = if st.state == 'Z' {
                format!(
                    "a zombie ({}) that its parent {} has not reaped",
                    st.comm, st.ppid
                )
            } else {
                format!("a running process ({})", st.comm)
            };
            return Err(Error::task(
                pid,
                "restore",
                format!("PID {pid} is taken by {what}; nothing was restored"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn cstr(pid: Pid, what: &str, s: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| Error::task(pid, what.to_string(), format!("path {s:?} contains NUL")))
}

/// Build the plan the cloned child carries out for itself.
fn child_plan(
    imgs: &Images,
    t: &TaskImages,
    shared: &BTreeMap<u32, OwnedFd>,
) -> Result<(ChildPlan, BTreeMap<u32, RawFd>, Option<RawFd>)> {
    let pid = t.pid;
    let tc = t.tc();
    let mut fds: Vec<FdPlan> = Vec::new();
    let mut fdinfo = t.fdinfo.clone();
    fdinfo.sort_by_key(|f| f.fd);
    for f in &fdinfo {
        let (source, share_with) = match shared.get(&f.id) {
            Some(engine_fd) => (
                FdSource::Inject {
                    engine_fd: engine_fd.as_raw_fd(),
                },
                None,
            ),
            None => (
                fd_source(imgs, pid, f)?,
                fdinfo
                    .iter()
                    .find(|o| o.id == f.id && o.fd < f.fd)
                    .map(|o| o.fd as RawFd),
            ),
        };
        fds.push(FdPlan {
            fd: f.fd as RawFd,
            source,
            cloexec: f.flags & libc::FD_CLOEXEC as u32 != 0,
            share_with,
        });
    }
    let max_fd = fds.iter().map(|f| f.fd).max().unwrap_or(2);
    let helper_fd_base = (max_fd + 1).max(3);
    // Files the engine needs while rebuilding memory: mapped files and exe.
    let mut helper_files = Vec::new();
    let mut file_fds = BTreeMap::new();
    for v in &t.mm.vmas {
        if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0
            && !file_fds.contains_key(&(v.shmid as u32))
        {
            let flags = v.fdflags.unwrap_or(libc::O_RDONLY as u32) as i32;
            // issue 5: a memfd or unlinked file is opened from the engine's fd
            let path = match engine_files::helper_path(imgs, shared, v.shmid as u32) {
                Some(p) => p,
                None => cstr(pid, "mapping", &imgs.reg(v.shmid as u32).name)?,
            };
            file_fds.insert(v.shmid as u32, helper_fd_base + helper_files.len() as RawFd);
            helper_files.push((path, flags));
        }
    }
    let exe_fd = helper_fd_base + helper_files.len() as RawFd;
    // issue 5: a deleted executable or a memfd is opened from the engine's fd
    let exe_path = match engine_files::helper_path(imgs, shared, t.mm.exe_file_id) {
        Some(p) => p,
        None => cstr(pid, "exe", &imgs.reg(t.mm.exe_file_id).name)?,
    };
    helper_files.push((exe_path, libc::O_RDONLY));
    let sigactions = tc
        .sigactions
        .iter()
        .enumerate()
        .filter_map(|(i, sa)| {
            // Entries are for signals 1..=64 without SIGKILL and SIGSTOP.
            let sig = sa_signal(i);
            (sa.sigaction != 0 || sa.flags != 0 || sa.mask != 0).then_some((
                sig,
                KernelSigaction {
                    handler: sa.sigaction,
                    flags: sa.flags,
                    restorer: sa.restorer,
                    mask: sa.mask,
                },
            ))
        })
        .collect();
    let rlimits = tc
        .rlimits
        .as_ref()
        .map(|r| {
            r.rlimits
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u32, l.cur, l.max))
                .collect()
        })
        .unwrap_or_default();
    let plan = ChildPlan {
        pid,
        sid: t.pstree.sid as i32,
        pgid: t.pstree.pgid as i32,
        fds,
        helper_files,
        helper_fd_base,
        cwd: Some(cstr(pid, "cwd", &imgs.reg(t.fs.cwd_id).name)?),
        root: Some(cstr(pid, "root", &imgs.reg(t.fs.root_id).name)?),
        umask: t.fs.umask.unwrap_or(0o022),
        rlimits,
        comm: cstr(pid, "comm", &tc.comm)?,
        personality: Some(tc.personality as u64),
        loginuid: tc.loginuid,
        sigactions,
        err_pipe: -1,
        children: Vec::new(),
        early: false,
        helpers: Vec::new(),
        zombies: Vec::new(),
        cow: Default::default(),
    };
    Ok((plan, file_fds, Some(exe_fd)))
}

/// Open files used by more than one task (inherited across fork: shared
/// offset, shared pipe): the engine creates each once and every task takes
/// it with pidfd_getfd, so they share it again. Keyed by file id.
fn shared_files(imgs: &Images) -> Result<BTreeMap<u32, OwnedFd>> {
    use std::collections::BTreeSet;
    let mut users: BTreeMap<u32, BTreeSet<i32>> = BTreeMap::new();
    for t in &imgs.tasks {
        for f in &t.fdinfo {
            users.entry(f.id).or_default().insert(t.pid);
        }
    }
    // A pipe is shared if its ends, together, are in more than one task.
    let mut pipe_users: BTreeMap<u32, BTreeSet<i32>> = BTreeMap::new();
    for (id, tasks) in &users {
        if let Some(p) = &imgs.file(*id).pipe {
            pipe_users.entry(p.pipe_id).or_default().extend(tasks);
        }
    }
    let mut out = BTreeMap::new();
    let mut pipes: BTreeMap<u32, (OwnedFd, OwnedFd)> = BTreeMap::new();
    for (id, tasks) in &users {
        if engine_files::is_engine_made(imgs, *id) {
            continue; // issue 5: restore/engine_files.rs makes these
        }
        let file = imgs.file(*id);
        let pid = *tasks.first().expect("one user at least");
        let is_shared = match &file.pipe {
            Some(p) => pipe_users[&p.pipe_id].len() > 1,
            None => tasks.len() > 1,
        };
        if !is_shared {
            continue;
        }
        let what = || format!("file id {id} (shared by pids {tasks:?})");
        let fd: OwnedFd = if let Some(reg) = &file.reg {
            let flags = reg.flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
            let f = nix::fcntl::open(
                reg.name.as_str(),
                nix::fcntl::OFlag::from_bits_retain(flags | libc::O_CLOEXEC | libc::O_NOCTTY),
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| Error::sys(pid, format!("{}: open {}", what(), reg.name), e))?;
            // SAFETY: `f` is a fresh fd we own.
            let f = unsafe { OwnedFd::from_raw_fd(f) };
            nix::unistd::lseek(f.as_raw_fd(), reg.pos as i64, nix::unistd::Whence::SeekSet)
                .map_err(|e| Error::sys(pid, format!("{}: seek", what()), e))?;
            f
        } else if let Some(p) = &file.pipe {
            if let std::collections::btree_map::Entry::Vacant(slot) = pipes.entry(p.pipe_id) {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| Error::sys(pid, format!("{}: pipe", what()), e))?;
                if let Some((size, data)) = imgs.pipe_data.get(&p.pipe_id) {
                    if *size != 0 {
                        let _ = nix::fcntl::fcntl(
                            w.as_raw_fd(),
                            nix::fcntl::FcntlArg::F_SETPIPE_SZ(*size as i32),
                        );
                    }
                    nix::unistd::write(&w, data).map_err(|e| {
                        Error::sys(pid, format!("{}: refilling the pipe", what()), e)
                    })?;
                }
                slot.insert((r, w));
            }
            let (r, w) = &pipes[&p.pipe_id];
            let end = if p.flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
                w
            } else {
                r
            };
            let fd = end.try_clone().map_err(|e| Error::io("pipe", what(), e))?;
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(
                    p.flags as i32 & libc::O_NONBLOCK,
                )),
            )
            .map_err(|e| Error::sys(pid, format!("{}: flags", what()), e))?;
            fd
        } else if let Some(e) = &file.efd {
            let fd = nix::sys::eventfd::EventFd::from_value_and_flags(
                0,
                nix::sys::eventfd::EfdFlags::from_bits_retain(
                    (e.flags as i32 & (libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE))
                        | libc::EFD_CLOEXEC,
                ),
            )
            .map_err(|err| Error::sys(pid, format!("{}: eventfd", what()), err))?;
            if e.counter != 0 {
                fd.write(e.counter)
                    .map_err(|err| Error::sys(pid, format!("{}: eventfd counter", what()), err))?;
            }
            OwnedFd::from(fd)
        } else if let Some(src) = child::signalfd_timerfd_source(file) {
            // issue 3 hook: a shared signalfd or timerfd (restore/child.rs)
            let fd = child::make_signalfd_timerfd(&src)
                .map_err(|e| Error::sys(pid, format!("{}: {src:?}", what()), e))?;
            // SAFETY: a fresh fd we own (created with O_CLOEXEC).
            unsafe { OwnedFd::from_raw_fd(fd) }
        } else {
            return Err(Error::unsupported(
                pid,
                what(),
                "this kind of file cannot be shared between restored processes yet",
            ));
        };
        out.insert(*id, fd);
    }
    Ok(out)
}

/// Put the shared files into the task (pidfd_getfd from the engine), in
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
        return Ok(());
    }
    todo.sort();
    let me = std::process::id() as u64;
    let pidfd = r.call(libc::SYS_pidfd_open, &[me, 0], "pidfd_open of the engine")?;
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
        if got != fd as u64 {
            r.call(
                libc::SYS_dup2,
                &[got, fd as u64],
                &format!("dup2 to fd {fd}"),
            )?;
            r.call(libc::SYS_close, &[got], "close")?;
        }
        // Both ways: pidfd_getfd sets FD_CLOEXEC, and when it lands on
        // `fd` itself no dup2 clears it.
        let fd_flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
        r.call(
            libc::SYS_fcntl,
            &[fd as u64, libc::F_SETFD as u64, fd_flags as u64],
            "fcntl(F_SETFD)",
        )?;
    }
    r.call(
        libc::SYS_close,
        &[pidfd_high],
        "close of the engine's pidfd",
    )?;
    Ok(())
}

/// How to recreate the file behind one fd.
fn fd_source(imgs: &Images, pid: Pid, f: &pb::FdinfoEntry) -> Result<FdSource> {
    let file = imgs.file(f.id);
    if let Some(reg) = &file.reg {
        if let Some(size) = reg.size {
            let now = std::fs::metadata(&reg.name).map(|m| m.len()).ok();
            if now != Some(size) {
                return Err(Error::task(
                    pid,
                    format!("fd {} ({})", f.fd, reg.name),
                    match now {
                        Some(n) => format!("the file was {size} bytes at dump time and is {n} now"),
                        None => "the file is gone".to_string(),
                    },
                ));
            }
        }
        return Ok(FdSource::Open {
            path: cstr(pid, "fd", &reg.name)?,
            flags: reg.flags as i32,
            pos: reg.pos,
        });
    }
    if let Some(p) = &file.pipe {
        let (size, data) = imgs.pipe_data.get(&p.pipe_id).cloned().unwrap_or_default();
        return Ok(FdSource::Pipe {
            pipe_id: p.pipe_id,
            flags: p.flags as i32,
            size,
            data,
        });
    }
    if let Some(e) = &file.efd {
        return Ok(FdSource::Eventfd {
            counter: e.counter,
            flags: e.flags as i32,
        });
    }
    if let Some(e) = &file.epfd {
        return Ok(FdSource::Epoll {
            flags: e.flags as i32,
            targets: e
                .tfd
                .iter()
                .map(|t| (t.tfd as RawFd, t.events, t.data))
                .collect(),
        });
    }
    // >>> issue 3 hook: signalfd and timerfd (restore/child.rs)
    if let Some(src) = child::signalfd_timerfd_source(file) {
        return Ok(src);
    }
    // <<< issue 3 hook
    Err(Error::unsupported(
        pid,
        format!("fd {} (file id {})", f.fd, f.id),
        "this kind of file cannot be restored yet",
    ))
}

/// Signal number of the i-th SaEntry (1..=64, skipping 9 and 19).
pub fn sa_signal(i: usize) -> i32 {
    let mut sig = 0;
    let mut n = 0;
    loop {
        sig += 1;
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        if n == i {
            return sig;
        }
        n += 1;
    }
}

/// Take over one task that set itself up and waits in pause(): rebuild
/// its memory, threads and credentials and set every thread's final state.
/// The task stays seized; the caller lets the whole tree go at once.
fn take_over(
    imgs: &Images,
    t: &TaskImages,
    plan: &ChildPlan,
    file_fds: &BTreeMap<u32, RawFd>,
    exe_fd: Option<RawFd>,
    shmem: &mut memory::ShmemRegistry,
    ipc: &ipc::IpcRestore,
) -> Result<(Seized, Vec<Seized>)> {
    let pid = t.pid;
    let mut task = Seized::seize_with(pid, nix::sys::ptrace::Options::PTRACE_O_TRACECLONE)?;
    let mem = TaskMem::open(pid)?;
    let cur = maps::read_maps(pid)?;
    let vdso: Vec<(u64, u64)> = cur
        .iter()
        .filter(|v| matches!(v.is_special(), Some(SpecialVma::Vdso)))
        .map(|v| (v.start, v.end))
        .collect();
    let ip = find_syscall_insn(&mem, &vdso)?;
    // The leader rebuilds the address space and creates the other threads
    // (while it still has the privileges clone3 with set_tid needs).
    let mut threads: Vec<Seized> = Vec::new();
    let (ip, scratch) = {
        let mut r = Remote::new(&mut task, ip)?;
        unregister_rseq(&mut r, pid)?;
        let ip = memory::reset_address_space(&mut r, t, ip, &plan.cow)?;
        debug!("pid {pid}: address space reset");
        let scratch = map_scratch(&mut r, &mem, t)?;
        memory::map_and_fill(&mut r, imgs, t, file_fds, shmem, &mem, scratch, &plan.cow)?;
        debug!("pid {pid}: memory restored");
        ipc.in_task(&mut r, t, &mem, scratch)?; // issue 5: semaphore pids, last sender
        inject_shared_files(&mut r, plan)?;
        restore_mm(&mut r, &mem, scratch, t, exe_fd)?;
        for (tid, _) in &t.threads {
            threads.push(clone_thread(&mut r, &mem, scratch, *tid)?);
        }
        restore_thread(&mut r, &mem, scratch, t.info(), t.thread())?;
        r.abandon();
        (ip, scratch)
    };
    if !t.threads.is_empty() {
        debug!("pid {pid}: {} threads created", t.threads.len());
    }
    for (th, (_, core)) in threads.iter_mut().zip(&t.threads) {
        let mut r = Remote::new(th, ip)?;
        let info = core.thread_info.as_ref().expect("validated");
        let tcore = core.thread_core.as_ref().expect("validated");
        restore_thread(&mut r, &mem, scratch, info, tcore)?;
        r.abandon();
    }
    // >>> issue 3 hook: pending signals queued again in order, then the
    // timers (restore/signals.rs, restore/timers.rs); before credentials.
    signals::restore(&mut task, &mut threads, ip, &mem, scratch, t)?;
    // <<< issue 3 hook
    // Seccomp, while the task still has the privileges to install filters.
    {
        let mut r = Remote::new(&mut task, ip)?;
        set_nofile(&mut r, &mem, scratch, t)?;
        seccomp::install(&mut r, pid, &mem, t.thread(), &imgs.seccomp)?;
        r.abandon();
    }
    for (th, (tid, core)) in threads.iter_mut().zip(&t.threads) {
        let mut r = Remote::new(th, ip)?;
        let tcore = core.thread_core.as_ref().expect("validated");
        seccomp::install(&mut r, *tid, &mem, tcore, &imgs.seccomp)?;
        r.abandon();
    }
    // Credentials last, thread by thread (they are per-thread in the
    // kernel), and what a credential change resets after them.
    {
        let mut r = Remote::new(&mut task, ip)?;
        if let Some(c) = &t.thread().creds {
            creds::restore_creds(&mut r, &mem, scratch, c)?;
        }
        r.abandon();
    }
    for (th, (_, core)) in threads.iter_mut().zip(&t.threads) {
        let mut r = Remote::new(th, ip)?;
        let tcore = core.thread_core.as_ref().expect("validated");
        if let Some(c) = &tcore.creds {
            creds::restore_creds(&mut r, &mem, scratch, c)?;
        }
        set_pdeath(&mut r, tcore)?;
        r.abandon();
    }
    {
        let mut r = Remote::new(&mut task, ip)?;
        set_pdeath(&mut r, t.thread())?;
        after_creds(&mut r, t)?;
        r.call(
            libc::SYS_munmap,
            &[scratch, SCRATCH_LEN],
            "munmap of the scratch area",
        )?;
        // The helper fds are one run above every fd of the task's own.
        let helpers = file_fds.values().chain(exe_fd.iter());
        if let (Some(lo), Some(hi)) = (helpers.clone().min(), helpers.max()) {
            r.call(
                libc::SYS_close_range,
                &[*lo as u64, *hi as u64, 0],
                "close_range of the helper fds",
            )?;
        }
        r.abandon();
    }
    // >>> issue 3 hook: a stopped task stops now, before any pending signal
    // can be delivered (restore/signals.rs)
    if t.tc().task_state == TASK_STOPPED {
        signals::enter_group_stop(&mut task, &mut threads)?;
    }
    // <<< issue 3 hook
    // Final state of every thread: mask, FPU, registers.
    for (th, (_, core)) in threads.iter_mut().zip(&t.threads) {
        let info = core.thread_info.as_ref().expect("validated");
        let tcore = core.thread_core.as_ref().expect("validated");
        set_final_state(th, info, tcore.blk_sigset.unwrap_or(0))?;
    }
    let blk = t.thread().blk_sigset.unwrap_or(t.tc().blk_sigset);
    set_final_state(&mut task, t.info(), blk)?;
    sched_and_oom(pid, t.thread(), t.tc().oom_score_adj)?;
    for (tid, core) in &t.threads {
        sched_and_oom(*tid, core.thread_core.as_ref().expect("validated"), None)?;
    }
    debug!("pid {pid}: ready");
    Ok((task, threads))
}

fn set_final_state(th: &mut Seized, info: &pb::ThreadInfoX86, blk: u64) -> Result<()> {
    th.set_sigmask(blk)?;
    if let Some(x) = &info.fpregs.ckpt_xsave_raw {
        th.set_xstate(x)?;
    }
    th.set_regs(&restart_regs(regs_from_pb(&info.gpregs)))
}

/// Create thread `tid` from inside the leader (clone3 with set_tid). The
/// new thread is auto-attached (PTRACE_O_TRACECLONE) and stays stopped
/// before it runs a single instruction; its registers are set later.
fn clone_thread(r: &mut Remote<'_>, mem: &TaskMem, scratch: u64, tid: Pid) -> Result<Seized> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let args_at = scratch + 1024;
    let tid_at = args_at + 128;
    let mut args = [0u64; 11];
    args[0] = flags;
    args[8] = tid_at; // set_tid
    args[9] = 1; // set_tid_size
    let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write(args_at, &bytes)?;
    mem.write(tid_at, &(tid as u32).to_le_bytes())?;
    let got = r.call(
        libc::SYS_clone3,
        &[args_at, bytes.len() as u64],
        &format!("clone3 of thread {tid}"),
    )?;
    if got != tid as u64 {
        return Err(Error::task(
            tid,
            "thread",
            format!("clone3 created thread {got} instead"),
        ));
    }
    Seized::adopt_stopped(tid)
}

const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// The child inherited the engine's rseq registration; the kernel would
/// keep writing to that (soon foreign) address. Unregister it first.
fn unregister_rseq(r: &mut Remote<'_>, pid: Pid) -> Result<()> {
    if let Some(c) = crate::ptrace::rseq::rseq_config(pid) {
        r.call(
            libc::SYS_rseq,
            &[
                c.rseq_abi_pointer,
                c.rseq_abi_size as u64,
                RSEQ_FLAG_UNREGISTER,
                c.signature as u64,
            ],
            "rseq unregister of the engine's registration",
        )?;
    }
    Ok(())
}

/// The engine's area in a task being restored, in a hole of the restored
/// layout: one page for syscall arguments, then a batch area (one page of
/// code, two of table, one of data; `Remote::batch`).
pub const SCRATCH_LEN: u64 = 5 * 4096;

fn map_scratch(r: &mut Remote<'_>, mem: &TaskMem, t: &TaskImages) -> Result<u64> {
    let busy: Vec<(u64, u64)> = t.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    let at = memory::find_hole(&busy, SCRATCH_LEN)
        .ok_or_else(|| Error::task(t.pid, "scratch page", "no room in the address space"))?;
    let at = r.mmap_anon(
        at,
        SCRATCH_LEN,
        libc::PROT_READ | libc::PROT_WRITE,
        "the scratch area",
    )?;
    r.install_batch_code(mem, at + 4096)?;
    Ok(at)
}

/// Runs `calls` in the task in one go through the scratch area's batch
/// code; raw results in order.
pub fn batch(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    calls: &[crate::ptrace::remote::Call],
) -> Result<Vec<i64>> {
    let capacity = 2 * 4096 / crate::ptrace::remote::BATCH_ENTRY;
    r.batch(mem, scratch + 4096, scratch + 2 * 4096, capacity, calls)
}

/// mm fields (code/data/brk/stack/arg/env ranges, auxv, exe) in one
/// PR_SET_MM_MAP, which needs no CAP_SYS_RESOURCE.
fn restore_mm(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
    exe_fd: Option<RawFd>,
) -> Result<()> {
    let mm = &t.mm;
    let auxv: Vec<u8> = mm
        .mm_saved_auxv
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let auxv_at = scratch + 256;
    let mut b = Vec::with_capacity(104);
    for v in [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        mm.mm_brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        auxv_at,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    b.extend_from_slice(&(exe_fd.map_or(u32::MAX, |f| f as u32)).to_le_bytes());
    mem.write(scratch, &b)?;
    mem.write(auxv_at, &auxv)?;
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    r.call(
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, scratch, b.len() as u64, 0],
        "prctl(PR_SET_MM_MAP)",
    )?;
    Ok(())
}

/// Per-thread kernel state that needs a call from inside the thread.
fn restore_thread(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    info: &pb::ThreadInfoX86,
    th: &pb::ThreadCoreEntry,
) -> Result<()> {
    if let Some(comm) = &th.comm {
        let mut name = comm.as_bytes().to_vec();
        name.truncate(15);
        name.push(0);
        mem.write(scratch + 2048, &name)?;
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, scratch + 2048],
            "prctl(PR_SET_NAME)",
        )?;
    }
    r.call(
        libc::SYS_set_tid_address,
        &[info.clear_tid_addr],
        "set_tid_address",
    )?;
    if th.futex_rla != 0 {
        r.call(
            libc::SYS_set_robust_list,
            &[th.futex_rla, th.futex_rla_len as u64],
            "set_robust_list",
        )?;
    }
    if let Some(sas) = &th.sas {
        // issue 3: a disabled stack is set too: the leader inherited the
        // engine's own alternate stack (Rust's guard-page handler), which
        // is unmapped now; SA_ONSTACK handlers would crash on it.
        {
            let mut b = Vec::with_capacity(24);
            b.extend_from_slice(&sas.ss_sp.to_le_bytes());
            b.extend_from_slice(&(sas.ss_flags & !(libc::SS_ONSTACK as u32)).to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&sas.ss_size.to_le_bytes());
            mem.write(scratch, &b)?;
            r.call(libc::SYS_sigaltstack, &[scratch, 0], "sigaltstack")?;
        }
    }
    if let Some(rs) = &th.rseq_entry {
        r.call(
            libc::SYS_rseq,
            &[
                rs.rseq_abi_pointer,
                rs.rseq_abi_size as u64,
                0,
                rs.signature as u64,
            ],
            "rseq registration",
        )?;
    }
    Ok(())
}

/// RLIMIT_NOFILE, last of the fd work (restore/child.rs leaves it open).
fn set_nofile(r: &mut Remote<'_>, mem: &TaskMem, scratch: u64, t: &TaskImages) -> Result<()> {
    let Some(l) = t
        .tc()
        .rlimits
        .as_ref()
        .and_then(|r| r.rlimits.get(libc::RLIMIT_NOFILE as usize))
    else {
        return Ok(());
    };
    let mut b = l.cur.to_le_bytes().to_vec();
    b.extend_from_slice(&l.max.to_le_bytes());
    mem.write(scratch, &b)?;
    r.call(
        libc::SYS_prlimit64,
        &[0, libc::RLIMIT_NOFILE as u64, scratch, 0],
        &format!(
            "prlimit64(RLIMIT_NOFILE, {}/{}) (raising the hard limit needs CAP_SYS_RESOURCE)",
            l.cur, l.max
        ),
    )?;
    Ok(())
}

/// The parent-death signal is per thread and reset by a credential change.
fn set_pdeath(r: &mut Remote<'_>, th: &pb::ThreadCoreEntry) -> Result<()> {
    if let Some(sig) = th.pdeath_sig.filter(|&s| s != 0) {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, sig as u64],
            "prctl(PR_SET_PDEATHSIG)",
        )?;
    }
    Ok(())
}

/// Process-wide settings that a credential change would reset.
fn after_creds(r: &mut Remote<'_>, t: &TaskImages) -> Result<()> {
    if t.tc().child_subreaper == Some(true) {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_CHILD_SUBREAPER as u64, 1],
            "prctl(PR_SET_CHILD_SUBREAPER)",
        )?;
    }
    if let Some(d) = t.mm.dumpable {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, d as u64],
            "prctl(PR_SET_DUMPABLE)",
        )?;
    }
    Ok(())
}

/// Attributes the engine sets from outside.
fn sched_and_oom(pid: Pid, th: &pb::ThreadCoreEntry, oom_score_adj: Option<i32>) -> Result<()> {
    if let (Some(policy), Some(prio)) = (th.sched_policy, th.sched_prio) {
        let p = libc::sched_param {
            sched_priority: prio as i32,
        };
        // SAFETY: plain syscall with a valid sched_param.
        let r = unsafe { libc::sched_setscheduler(pid, policy as i32, &p) };
        if r < 0 {
            return Err(Error::sys(
                pid,
                format!("sched_setscheduler(policy {policy}, prio {prio})"),
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(mask) = th.ckpt_cpu_affinity.as_ref().filter(|m| !m.is_empty()) {
        // SAFETY: the kernel reads mask.len() bytes.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setaffinity, pid, mask.len(), mask.as_ptr()) };
        if r < 0 {
            return Err(Error::sys(
                pid,
                "sched_setaffinity (CPU affinity)",
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(nice) = th.sched_nice {
        // SAFETY: plain syscall.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as u32, nice) };
        if r < 0 {
            return Err(Error::sys(
                pid,
                format!("setpriority(nice {nice})"),
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(adj) = oom_score_adj {
        let p = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&p, adj.to_string())
            .map_err(|e| Error::io(&p, format!("pid {pid}: oom_score_adj {adj}"), e))?;
    }
    Ok(())
}
