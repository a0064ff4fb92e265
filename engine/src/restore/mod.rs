//! `ckpt restore`: bring an image directory back to life.
//!
//! The restore goes through the stages of `stage.rs`: every image is read
//! and checked first (`load`), before any process exists; the objects the
//! engine makes itself come next; then each task is cloned with its old
//! PID and sets up what it can itself (`child`) and stops; the engine takes
//! each over and rebuilds the rest through remote syscalls, stage by
//! stage, several tasks at once on a few tracer threads (`workers`), and
//! lets the whole tree go at once. Each kind of kernel object
//! takes part through the one interface of `stage.rs` ([`stage::Restorer`])
//! and one line in [`KINDS`]; this driver names none of them. If anything
//! fails after the clone, every new task is killed: a restore never leaves
//! a half-restored tree running. If the engine itself is killed, each new
//! task dies with its parent until the release (`child::tie_to_parent`).

pub mod cgroups;
pub mod child;
pub mod cow;
pub mod creds;
pub mod engine_files;
pub mod file_lock;
pub mod files;
pub mod ghost;
pub mod ipc;
pub mod lazy;
pub mod load;
pub mod memfd;
pub mod memory;
pub mod mntns;
pub mod netns;
pub mod ns;
pub mod pidns;
pub mod seccomp;
pub mod sessions;
pub mod signals;
pub mod stage;
pub mod task;
pub mod threads;
pub mod timers;
pub mod trust;
pub mod tty;
pub mod userns;
pub mod utsns;
pub mod vdso;
pub mod workers;

use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;

use crate::error::{Error, Pid, Result};
use crate::fault;
use crate::proc::maps::{self, SpecialVma};
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::{find_syscall_insn, Remote};
use crate::ptrace::Seized;

use child::{ChildPlan, HelperPlan};
use load::{Images, TaskImages};
use stage::{EngineFds, Kind, Restorer, TaskCx, TaskStage};

/// Every kind of kernel object the restore knows, in the order it goes
/// through each stage (where two kinds take part in one stage, the earlier
/// one's part comes first: the threads exist before cgroups move them,
/// registers are set before the attributes set from outside, the last
/// remote call of the release (credentials) before a stopped task enters
/// its group stop).
pub static KINDS: &[Kind] = &[
    ns::KIND,
    memory::KIND,
    ipc::KIND,
    engine_files::KIND,
    tty::KIND,
    files::UNIX_SOCKETS,
    files::inet::KIND,
    files::netlink::KIND,
    files::packet::KIND,
    files::KIND,
    file_lock::KIND,
    threads::KIND,
    task::KIND,
    seccomp::KIND,
    creds::KIND,
    signals::KIND,
    cgroups::KIND,
];

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    /// Detach from the restored tree and exit (CRIU's -d).
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    /// `--manage-cgroups`.
    pub manage_cgroups: cgroups::Mode,
    /// `--cgroup-root`.
    pub cgroup_roots: Vec<crate::cgroupfs::CgroupRoot>,
    /// `--trust-images`: restore what the images ask for even when an
    /// unprivileged user could have written them (`trust.rs`).
    pub trust_images: bool,
    /// `--shell-job`: a terminal the tree had outside it is the one the
    /// restore runs on (its stdin).
    pub shell_job: bool,
    /// `--file-locks`: take the images' file locks again.
    pub file_locks: bool,
    /// `--tcp-established`: images with established TCP connections are
    /// restored (refused without it).
    pub tcp_established: bool,
    /// `--root DIR`: the root file system of a pivot_root'ed tree.
    pub root: Option<PathBuf>,
    /// `--external`: where the objects that reached outside the tree go
    /// (a veth's other end, restore/netns.rs; an external bind mount's
    /// source, restore/mntns.rs).
    pub external: Vec<crate::external::External>,
    /// `--lazy-pages`: private anonymous memory is filled on demand and in
    /// the background after the tree runs (restore/lazy.rs).
    pub lazy_pages: bool,
    /// `--page-server` (with `--lazy-pages`): the pages files are on this
    /// page server (`ckpt page-server --lazy-pages`), not in `dir`.
    pub page_server: Option<lazy::PageServer>,
    /// `--cpu-cap`: what of the images' CPU this one must have.
    pub cpu_cap: crate::kernel::cpu::CpuCap,
}

/// Restore the tree; returns the exit code for the engine: 0 when
/// detached, else the restored root's own exit status.
pub fn restore(opts: &RestoreOptions) -> Result<i32> {
    // Validate.
    let (mut imgs, remote) = match &opts.page_server {
        None if opts.lazy_pages => (load::load_lazy(&opts.dir)?, None),
        None => (load::load(&opts.dir)?, None),
        Some(ps) => {
            // The server's pages checked against the manifest here first;
            // its connection stays open until the daemon has its own.
            let manifest = crate::images::Manifest::read(&opts.dir)?;
            let mut server =
                crate::pageserver::RemotePages::connect(&ps.address, ps.port, &manifest)?;
            let mut imgs = load::load_elsewhere(&opts.dir, &server.files())?;
            let staging = lazy::stage(&mut imgs, &mut server)?;
            (imgs, Some((server, staging)))
        }
    };
    netns::externals(&opts.dir, imgs.ns.net.as_mut(), &opts.external)?;
    load::check_cpu(&imgs, opts.cpu_cap)?;
    trust::check(&imgs, opts.trust_images)?;
    for k in KINDS {
        (k.validate)(&imgs).map_err(|e| e.context(k.name))?;
    }
    debug!("images loaded and verified");
    let root_pid = imgs.tasks[0].pid;
    fault::check(root_pid, "restore-validated")?;
    // The root's pid here: another than the image's in a new pid
    // namespace.
    let r = restore_tree(&imgs, opts);
    // The daemon has its own connection: the staged pages are written.
    drop(remote);
    // The user namespace's launcher, done serving files (restore/userns.rs).
    userns::done();
    utsns::done();
    let pid = r.map_err(|e| e.for_pid(root_pid, "restore"))?;
    // A tree that pivot_root'ed: its namespace without the old root.
    mntns::detach_old_root(root_pid)?;
    debug!("{}", crate::ptrace::remote::STATS);
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

/// Everything from the objects the engine makes to the release of the
/// tree. The kinds are dropped last, once every task made here is dead if
/// the restore failed: what they made goes after the tasks that used it.
/// Returns the root's pid in the engine's pid namespace.
fn restore_tree(imgs: &Images, opts: &RestoreOptions) -> Result<Pid> {
    let mut kinds: Vec<Box<dyn Restorer>> = Vec::with_capacity(KINDS.len());
    for k in KINDS {
        kinds.push((k.new)(imgs, opts).map_err(|e| e.context(k.name))?);
    }
    check_all_free(imgs)?;

    // Objects.
    let mut fds = EngineFds::default();
    for k in kinds.iter_mut() {
        k.create(imgs, &mut fds)?;
    }
    fault::check(imgs.tasks[0].pid, "restore-objects")?;

    // Plan: what each task does for itself, then who forks whom.
    let mut plans = Vec::with_capacity(imgs.tasks.len());
    let mut pipes = Vec::with_capacity(imgs.tasks.len());
    for t in &imgs.tasks {
        let mut plan = tree_plan(imgs, t)?;
        for k in kinds.iter() {
            k.plan(imgs, t, &fds, &mut plan)?;
        }
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys(t.pid, "pipe", e))?;
        plan.err_pipe = wr.as_raw_fd();
        plans.push(plan);
        pipes.push((rd, wr));
    }
    let sessions = plan_sessions(imgs)?;
    let mut guard = NewTree {
        pids: imgs
            .tasks
            .iter()
            .map(|t| t.pid)
            .chain(imgs.zombies.iter().map(|z| z.pid))
            .collect(),
        armed: true,
    };
    let mut root_plan = loop {
        for k in kinds.iter_mut() {
            k.plan_tree(imgs, &mut plans)?;
        }
        let root_plan = nest(imgs, &plans, &sessions, 0);
        let mut holds = true;
        for k in kinds.iter_mut() {
            holds &= k.plan_holds()?;
        }
        if holds {
            break root_plan;
        }
    };
    let engine_pidfd = pidns::engine_pidfd(&mut plans, &mut root_plan, imgs.ns.user.is_some())?;
    userns::place_fds(
        &mut plans,
        &mut root_plan,
        engine_pidfd.as_ref().map(|f| f.as_raw_fd()),
    );

    // Tree.
    let root = imgs.tasks[0].pid;
    // A parent outside the task's pid namespace is pid 0 to it.
    let engine = if imgs.ns.pid {
        0
    } else {
        std::process::id() as Pid
    };
    let err_pipes: Vec<i32> = plans.iter().map(|p| p.err_pipe).collect();
    let pidfd_at = engine_pidfd.as_ref().map(|f| f.as_raw_fd());
    // Every task is a forked copy of the engine and starts by unmapping
    // all of it: the less of the engine it holds, the less its fork
    // copies and its address space reset unmaps. The pages mappings are
    // the engine's alone; the memory the loader freed goes back.
    imgs.pages_inherited(false);
    crate::sys::process::trim_heap();
    let got = ns::clone_root(imgs, pidfd_at, &err_pipes);
    if got == Ok(0) {
        child::run(&root_plan, engine);
    }
    imgs.pages_inherited(true);
    let got = got.map_err(|e| match e {
        nix::errno::Errno::EEXIST => Error::task(root, "restore", format!("PID {root} is taken")),
        e => Error::sys(root, "clone3 with set_tid", e),
    })?;
    // In a new pid namespace the rest runs in a driver inside it
    // (restore/ns.rs).
    let helper_pids: Vec<Pid> = sessions.helpers.iter().map(|h| h.pid).collect();
    match ns::fork_driver(imgs, got, &helper_pids)? {
        ns::Driver::Here => {}
        ns::Driver::Outside { pid, report } => {
            // The image's pids mean nothing here: the driver's guard and
            // the init's death clean up.
            guard.armed = false;
            // The tasks' error pipes are the driver's to read: without our
            // copies of their write ends.
            drop(pipes);
            // What the kinds made is the driver's to keep or undo: the
            // engine's copies of their state must not undo it.
            std::mem::forget(std::mem::take(&mut kinds));
            ns::wait_driver(root, got, pid, report)?;
            return Ok(got);
        }
        ns::Driver::Inside { report } => {
            let r = take_over_tree(imgs, &plans, pipes, &mut kinds, fds, &mut guard);
            let code = ns::report(report, &r);
            if r.is_err() {
                drop(guard);
            }
            drop(kinds);
            // No destructor of the engine's state runs: the engine's copy
            // is the one that owns it.
            std::process::exit(code);
        }
    }
    take_over_tree(imgs, &plans, pipes, &mut kinds, fds, &mut guard)?;
    Ok(got)
}

/// From the tree made to the tree let go (the stages *Tree*, after the
/// clone, to *Release*).
fn take_over_tree(
    imgs: &Images,
    plans: &[ChildPlan],
    pipes: Vec<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    kinds: &mut [Box<dyn Restorer>],
    fds: EngineFds,
    guard: &mut NewTree,
) -> Result<()> {
    let root = imgs.tasks[0].pid;
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
    for k in kinds.iter_mut() {
        k.tree_created(imgs)?;
    }
    fault::check(root, "restore-tree")?;

    // Tasks. Each stays held with its context, an open /proc/PID/mem
    // included, until the release: room for a tree of thousands.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let depths: Vec<usize> = imgs.tasks.iter().map(|t| depth(imgs, t)).collect();
    workers::run(imgs, plans, kinds, fds, &depths)?;
    guard.armed = false;
    for k in kinds.iter_mut() {
        k.released();
    }
    Ok(())
}

/// The part of a task's plan that is the tree's: its PID, session and
/// group, and the zombie children it makes. The kinds add the rest.
fn tree_plan(imgs: &Images, t: &TaskImages) -> Result<ChildPlan> {
    let zombies = imgs
        .zombies
        .iter()
        .filter(|z| z.ppid == t.pid)
        .map(|z| {
            Ok(child::ZombiePlan {
                pid: z.pid,
                ns_pid: z.ns_pid.clone(),
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
    Ok(ChildPlan {
        pid: t.pid,
        sid: t.pstree.sid as i32,
        pgid: t.pstree.pgid as i32,
        ns_pid: pidns::levels(&t.pstree),
        local_pgid: pidns::local(&t.pstree.ns_pgid, t.pstree.pgid),
        umask: 0o022,
        err_pipe: -1,
        user_ns: userns::fd_of(t.ids.user_ns_id).map(|fd| (fd, -1)),
        uts_ns: utsns::fd_of(t.ids.uts_ns_id),
        zombies,
        ..Default::default()
    })
}

/// How far below the root task `t` is (the root: 0).
fn depth(imgs: &Images, t: &TaskImages) -> usize {
    let mut d = 0;
    let mut ppid = t.pstree.ppid as Pid;
    while let Some(p) = imgs.tasks.iter().find(|p| p.pid == ppid) {
        d += 1;
        ppid = p.pstree.ppid as Pid;
        if d > imgs.tasks.len() {
            break;
        }
    }
    d
}

/// Take over task `i`, which set itself up and waits in pause(). It stays
/// seized, with its context kept for the stages and the release, on the
/// thread that seized it (`workers.rs`).
pub(super) fn take_over<'a>(imgs: &'a Images, i: usize, plan: &'a ChildPlan) -> Result<TaskCx<'a>> {
    let t = &imgs.tasks[i];
    let pid = t.pid;
    let task = Seized::seize_with(pid, nix::sys::ptrace::Options::PTRACE_O_TRACECLONE)?;
    let mem = TaskMem::open(pid)?;
    let cur = maps::read_maps(pid)?;
    let vdso: Vec<(u64, u64)> = cur
        .iter()
        .filter(|v| matches!(v.is_special(), Some(SpecialVma::Vdso)))
        .map(|v| (v.start, v.end))
        .collect();
    let ip = find_syscall_insn(&mem, &vdso)?;
    debug!("pid {pid}: seized");
    Ok(TaskCx {
        imgs,
        t,
        plan,
        task,
        threads: Vec::new(),
        mem,
        ip,
        scratch: 0,
    })
}

/// One task stage in one task: the driver's part, then every kind's.
pub(super) fn run_stage(
    stage: TaskStage,
    cx: &mut TaskCx<'_>,
    kinds: &[Box<dyn Restorer>],
) -> Result<()> {
    let pid = cx.pid();
    match stage {
        TaskStage::AddressSpace => cx.scratch = map_scratch(cx)?,
        // The files the engine opened in the task to map them and to
        // set its executable go once they served, before any POSIX
        // lock is taken (a close of any fd of the inode drops them).
        TaskStage::Threads => close_helper_fds(cx)?,
        TaskStage::Final => remove_scratch(cx)?,
        _ => {}
    }
    for k in kinds {
        k.in_task(stage, cx)?;
    }
    debug!("pid {pid}: stage {stage:?} done");
    fault::check(pid, &fault::task_stage_point(&format!("{stage:?}")))?;
    if stage == TaskStage::Final {
        debug!("pid {pid}: ready");
    }
    Ok(())
}

/// The engine's area in a task being restored, in a hole of the restored
/// layout: one page for syscall arguments, then a batch area (one page of
/// code, two of table, one of data; `Remote::batch`); a task with threads
/// has more after it ([`scratch_len`]).
pub const SCRATCH_LEN: u64 = 5 * 4096;

/// The whole scratch area of task `t`: [`SCRATCH_LEN`], then, for a task
/// with threads, room for a batch of new threads (restore/threads.rs).
pub fn scratch_len(t: &TaskImages) -> u64 {
    match t.threads.len() {
        0 => SCRATCH_LEN,
        n => {
            SCRATCH_LEN + (n.min(threads::WAVE) as u64 * threads::THREAD_SLOT).div_ceil(4096) * 4096
        }
    }
}

fn map_scratch(cx: &mut TaskCx<'_>) -> Result<u64> {
    let t = cx.t;
    // Clear of the restored layout and of what the task holds now (this
    // kernel's vDSO group, where it stays beside a remapped dumped vDSO).
    let mut busy: Vec<(u64, u64)> = t.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    busy.extend(maps::read_maps(t.pid)?.iter().map(|v| (v.start, v.end)));
    let len = scratch_len(t);
    let at = memory::find_hole(&busy, len)
        .ok_or_else(|| Error::task(t.pid, "scratch page", "no room in the address space"))?;
    cx.in_leader(|r, mem, _| {
        let at = r.mmap_anon(
            at,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            "the scratch area",
        )?;
        r.install_batch_code(mem, at + 4096)?;
        Ok(at)
    })
}

/// The helper fds, one run above every fd of the task's own.
fn close_helper_fds(cx: &mut TaskCx<'_>) -> Result<()> {
    let Some((lo, hi)) = stage::helper_fd_range(cx.plan) else {
        return Ok(());
    };
    cx.in_leader(|r, _, _| {
        r.call(
            libc::SYS_close_range,
            &[lo as u64, hi as u64, 0],
            "close_range of the helper fds",
        )?;
        Ok(())
    })
}

/// The scratch area goes.
fn remove_scratch(cx: &mut TaskCx<'_>) -> Result<()> {
    let (scratch, len) = (cx.scratch, scratch_len(cx.t));
    cx.in_leader(|r, _, _| {
        r.call(
            libc::SYS_munmap,
            &[scratch, len],
            "munmap of the scratch area",
        )?;
        Ok(())
    })?;
    cx.scratch = 0;
    Ok(())
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

/// Every PID and TID the image needs must be free before anything starts
/// (in a new pid namespace, every one is).
fn check_all_free(imgs: &Images) -> Result<()> {
    if imgs.ns.pid {
        return Ok(());
    }
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

/// The plan of task `i` with its children's plans inside it: forked by
/// itself (early or not) or by one of its helpers.
fn nest(imgs: &Images, plans: &[ChildPlan], sessions: &sessions::Plan, i: usize) -> ChildPlan {
    use sessions::Creator;
    let mut p = plans[i].clone();
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
        if t.pid == pid {
            continue;
        }
        if is_sibling_sharer(imgs, t) {
            // Forked by the owner of its fd table, its sibling.
            if t.fd_table_owner == Some(pid) {
                p.siblings.push(nest(imgs, plans, sessions, j));
            }
            continue;
        }
        if t.pstree.ppid as i32 != pid {
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

/// Whether `t` shares the fd table of a sibling (its owner), not its
/// parent's.
fn is_sibling_sharer(imgs: &Images, t: &TaskImages) -> bool {
    t.fd_table_owner.is_some_and(|o| o != t.pstree.ppid as i32)
        && imgs
            .tasks
            .iter()
            .find(|o| Some(o.pid) == t.fd_table_owner)
            .is_some_and(|o| o.pstree.ppid == t.pstree.ppid)
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
    // A task sharing its parent's fd table is cloned into it by the
    // parent itself: a helper forking it (CLONE_PARENT) has a table of
    // its own. One sharing its sibling's is cloned by that sibling, after
    // its parent's setsid: both must be plain children of their parent.
    for t in imgs.tasks.iter().filter(|t| is_sibling_sharer(imgs, t)) {
        let owner = t.fd_table_owner.expect("a sharer");
        let owner_sid = imgs
            .tasks
            .iter()
            .find(|o| o.pid == owner)
            .map_or(0, |o| o.pstree.sid);
        let nested = |pid: Pid| {
            imgs.tasks
                .iter()
                .any(|o| o.pid == pid && !o.pstree.ns_pid.is_empty())
        };
        if nested(t.pid) || nested(owner) {
            return Err(Error::unsupported(
                t.pid,
                format!("its fd table, shared with its sibling {owner}"),
                "a table shared by siblings in a nested pid namespace: not supported yet",
            ));
        }
        // Born in its sibling's session, it can stay there or start one.
        if t.pstree.sid != owner_sid && t.pstree.sid as Pid != t.pid {
            return Err(Error::unsupported(
                t.pid,
                format!("its fd table, shared with its sibling {owner}"),
                format!(
                    "a task sharing its sibling's fd table is forked by that sibling, in its session {owner_sid}, and cannot join its own session {}",
                    t.pstree.sid
                ),
            ));
        }
        for who in [t.pid, owner] {
            if !matches!(plan.creator.get(&who), Some(sessions::Creator::Parent)) {
                return Err(Error::unsupported(
                    t.pid,
                    format!("its fd table, shared with its sibling {owner}"),
                    format!(
                        "a task sharing its sibling's fd table is forked by that sibling, but the session {} or process group {} of pid {who} needs it made another way (by a helper, or before its parent's setsid)",
                        t.pstree.sid, t.pstree.pgid
                    ),
                ));
            }
        }
    }
    for t in &imgs.tasks {
        if let (Some(owner), Some(sessions::Creator::Helper(h))) =
            (t.fd_table_owner, plan.creator.get(&t.pid))
        {
            return Err(Error::unsupported(
                t.pid,
                format!("its fd table, shared with pid {owner}"),
                format!(
                    "a task sharing its parent's fd table must be forked by its parent, but \
                     its session {} or process group {} needs a helper ({h}) to create it",
                    t.pstree.sid, t.pstree.pgid
                ),
            ));
        }
    }
    // A helper is forked with one pid level: none below the root's pid
    // namespace yet, nor forking a task there.
    for t in &imgs.tasks {
        let helper = match plan.creator.get(&t.pid) {
            Some(sessions::Creator::Helper(h)) => Some(*h),
            _ => plan
                .helpers
                .iter()
                .find(|h| h.parent == t.pid)
                .map(|h| h.pid),
        };
        if let (Some(h), false) = (helper, t.pstree.ns_pid.is_empty()) {
            return Err(Error::unsupported(
                t.pid,
                format!("session {}, process group {}", t.pstree.sid, t.pstree.pgid),
                format!(
                    "it is in a pid namespace below the root's (pids {:?}) and its session or \
                     group needs a helper ({h}), which is not supported there yet",
                    t.pstree.ns_pid
                ),
            ));
        }
    }
    for h in plan.helpers.iter().filter(|_| !imgs.ns.pid) {
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

pub(crate) fn cstr(pid: Pid, what: &str, s: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| Error::task(pid, what.to_string(), format!("path {s:?} contains NUL")))
}
