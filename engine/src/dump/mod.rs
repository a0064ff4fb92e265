//! `ckpt dump`: freeze a task, write everything the kernel knows about it
//! into a CRIU-format image directory, then kill it or let it go on.
//!
//! The dump goes through the stages of `kind.rs`; each kind of kernel
//! object beyond a process's core, files and memory takes part through
//! the one interface there ([`kind::Dumper`]) and one line in [`KINDS`].
//!
//! Safety rule: whatever fails, the target ends up running exactly as
//! before. Every seized thread is detached by `Seized`'s Drop, every
//! scratch mapping is removed by `ScratchSession`'s Drop, and the image
//! directory only appears (by rename) once it is complete and synced.

pub mod cgroups;
pub mod core;
pub mod files;
pub mod freeze;
pub mod ghost;
pub mod ipc;
pub mod kind;
pub mod memfd;
pub mod memory;
pub mod mntns;
pub mod netns;
pub mod ns;
pub mod pages;
pub mod reads;
pub mod seccomp;
pub mod signals;
pub mod timers;
pub mod uffd_wp;
pub mod userns;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Pid, Result};
use crate::fault;
use crate::images::task::TASK_DEAD;
use crate::images::vma::{cow_eligible, VMA_AREA_MEMFD};
use crate::images::{chain, pb};
use crate::imgdir::ImageDir;
use crate::kernel::restart;
use crate::pool::Pool;
use crate::proc::{self, maps, pagemap::PagemapReader, stat, status};
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::find_syscall_insn;
use crate::ptrace::scratch::ScratchSession;
use crate::ptrace::StopKind;

use files::FileTable;
use kind::{DumpEnv, Dumper, FinishCx, Kind, ProcCx};
use memory::{classify, VmaKind};

/// Every kind of kernel object the dump knows beyond a process's core,
/// files and memory, in the order each takes its part of a step.
pub static KINDS: &[Kind] = &[
    timers::KIND,
    signals::KIND,
    seccomp::KIND,
    cgroups::KIND,
    ipc::KIND,
];

#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub pid: Pid,
    pub dir: PathBuf,
    pub leave_running: bool,
    /// The largest unlinked file whose contents are copied (CRIU's
    /// --ghost-limit).
    pub ghost_limit: u64,
    /// Freeze the tree through this freezer cgroup first.
    pub freeze_cgroup: Option<String>,
    /// SysV IPC objects to dump whoever used them, "shm:ID" etc.
    pub ipc_ids: Vec<String>,
    /// `--shell-job`: the tree's terminal may be outside it.
    pub shell_job: bool,
    /// A UNIX socket whose peer is outside the tree is dumped, to be
    /// connected again to the peer's name at restore (CRIU's
    /// --ext-unix-sk).
    pub ext_unix_sk: bool,
    /// `--file-locks`: dump the file locks the tree holds.
    pub file_locks: bool,
    /// Established TCP connections are dumped, through repair mode and
    /// under the network lock (CRIU's --tcp-established).
    pub tcp_established: bool,
    /// `--external`: the objects reaching outside the tree that are
    /// dumped as they are inside (a veth whose other end is outside, a
    /// bind mount from outside a pivot_root'ed root).
    pub external: Vec<crate::external::External>,
    /// Images CRIU restores as well: every process's pages stored in
    /// full, none recorded as shared with the parent (ckpt's restore
    /// shares them again by comparing with the parent's, as CRIU does).
    pub criu_compatible: bool,
    /// How long freezing the tree may take (CRIU's --timeout); None: as
    /// long as it takes.
    pub timeout: Option<std::time::Duration>,
    /// `pre-dump`: only the memory (pagemaps, pages, mm, the tree), with
    /// write tracking started; the tree always goes on running.
    pub pre_dump: bool,
    /// CRIU's --prev-images-dir (relative to the image directory unless
    /// absolute): pages not written since that pre-dump are recorded as
    /// in it rather than stored again.
    pub prev_images_dir: Option<PathBuf>,
    /// CRIU's --track-mem: leave write tracking on after this dump, so
    /// that it can be the parent of the next one (always on for a
    /// pre-dump).
    pub track_mem: bool,
    /// Send the pages to the page server at this address and port
    /// (pageserver.rs) instead of writing them into `dir`.
    pub page_server: Option<(String, u16)>,
}

impl DumpOptions {
    /// The options of a plain dump of `pid` into `dir`.
    pub fn new(pid: Pid, dir: PathBuf) -> Self {
        DumpOptions {
            pid,
            dir,
            leave_running: false,
            ghost_limit: 1 << 20,
            freeze_cgroup: None,
            ipc_ids: Vec::new(),
            shell_job: false,
            ext_unix_sk: false,
            file_locks: false,
            tcp_established: false,
            external: Vec::new(),
            criu_compatible: false,
            timeout: None,
            pre_dump: false,
            prev_images_dir: None,
            track_mem: false,
            page_server: None,
        }
    }

    fn tracks(&self) -> bool {
        self.pre_dump || self.track_mem
    }
}

/// What was dumped, for the summary line.
#[derive(Debug, Default)]
pub struct DumpStats {
    pub tasks: usize,
    pub vmas: usize,
    pub pages: u64,
    pub shmem_pages: u64,
}

pub fn dump(opts: &DumpOptions) -> Result<DumpStats> {
    dump_inner(opts).map_err(|e| e.for_pid(opts.pid, "dump"))
}

fn dump_inner(opts: &DumpOptions) -> Result<DumpStats> {
    let pid = opts.pid;
    let st = stat::read(pid)?;
    if st.state == 'Z' || st.state == 'X' {
        return Err(Error::task(pid, "dump", "the task is a zombie or dead"));
    }
    // The parent first: a dump that cannot use it touches nothing.
    let parent = match &opts.prev_images_dir {
        Some(prev) => Some(open_parent(pid, st.start_time, &opts.dir, prev)?),
        None => None,
    };
    let mut dir = ImageDir::create(&opts.dir)?;
    // Before the tree is touched: a server that cannot be reached stops
    // nothing.
    if let Some((address, port)) = &opts.page_server {
        let c = crate::pageserver::Client::connect(address, *port)?;
        crate::info!("sending the pages to the page server at {}", c.peer());
        dir.send_pages_to(c);
    }
    let mut files = FileTable::default();
    if let Some(l) = &parent {
        files.parked = l.tracked.iter().map(|t| t.fd).collect();
    }
    files.ghost.limit = opts.ghost_limit;
    files.tty.shell_job = opts.shell_job;
    files.unix.ext_unix_sk = opts.ext_unix_sk;
    files.locks.enabled = opts.file_locks;
    files.inet.tcp_established = opts.tcp_established;
    // Freeze: through the freezer cgroup first, if asked; its threads
    // outside the tree go on once the tree's are seized.
    let deadline = opts.timeout.map(|t| std::time::Instant::now() + t);
    let (mut pre, freezer) = match &opts.freeze_cgroup {
        Some(spec) => {
            let (held, fz) = cgroups::seize_cgroup(spec, deadline)?;
            (held, Some(fz))
        }
        None => (BTreeMap::new(), None),
    };
    let mut tree = freeze::freeze_tree_with(pid, &mut pre, deadline)?;
    drop(pre);
    debug!("pid {pid}: tree frozen, {} processes", tree.len());
    fault::check(pid, "dump-frozen")?;
    let mut reads = reads::TreeReads::read(&tree)?;
    debug!("pid {pid}: /proc read");
    let treens = ns::TreeNs::check(&tree, &reads, &opts.external)?;
    files.vpids = treens.vpids().clone();
    files.root = pid;
    let _in_netns = match treens.owns("net") {
        true => Some(netns::enter(pid)?),
        false => None,
    };
    if opts.tcp_established {
        // Named after the root's pid as the images have it, which the
        // restore knows.
        files.inet.lock = Some(crate::kernel::netlock::NetLock::new(
            treens.vpid(pid, pid, "root")?,
        ));
    }
    let env = DumpEnv {
        opts,
        freezer: freezer.as_ref(),
    };
    let mut kinds = Vec::with_capacity(KINDS.len());
    for k in KINDS.iter().filter(|_| !opts.pre_dump) {
        kinds.push((k.new)(&env).map_err(|e| e.context(k.name))?);
    }
    debug!("pid {pid}: namespaces and kinds set up");
    let mut ctx = DumpCtx {
        kinds,
        dir: &dir,
        files,
        ns: NsIds::default(),
        treens,
        next_pages_id: 1,
        next_files_id: 1,
        fd_tables: BTreeMap::new(),
        pstree: Vec::new(),
        root_ids: None,
        shmem_done: Default::default(),
        stats: DumpStats::default(),
        cow_vmas: Default::default(),
        cow_pages: 0,
        cow_parents: tree
            .iter()
            .filter(|c| {
                c.zombie.is_none()
                    && !opts.criu_compatible
                    && !opts.pre_dump
                    && opts.prev_images_dir.is_none()
            })
            .map(|c| c.ppid)
            .collect(),
        opts,
        parent,
        arm: Vec::new(),
        tracked: Vec::new(),
        restarts: Vec::new(),
    };
    // The pages go over one connection to a page server, one file after
    // the other.
    let threads = match opts.page_server {
        Some(_) => 0,
        None => crate::pool::threads_for(tree.len()),
    };
    let copied = std::thread::scope(|scope| {
        let mut pool = Pool::new(scope, "pages", threads, |job: pages::Job| job.run(&dir))?;
        for p in tree.iter_mut() {
            if p.zombie.is_some() {
                if !opts.pre_dump {
                    if let Err(e) = dump_zombie(p, &mut ctx) {
                        return Err(pool.fail(e));
                    }
                }
                continue;
            }
            let job = reads.take(p.pid).and_then(|r| match opts.pre_dump {
                true => pre_dump_process(p, r, &mut ctx),
                false => dump_process(p, r, &mut ctx),
            });
            let submitted = job.and_then(|j| pool.submit(j));
            if let Err(e) = submitted {
                return Err(pool.fail(e));
            }
            if pool.failed() {
                break;
            }
        }
        pool.finish()
    })?;
    for d in copied {
        ctx.stats.pages += d.pages;
        ctx.stats.shmem_pages += d.shmem_pages;
        ctx.cow_pages += d.cow_pages;
    }
    let pids = tree.iter().map(|p| p.pid).collect();
    if opts.pre_dump {
        ctx.finish_pre_dump()?;
    } else {
        ctx.finish(pid, pids)?;
    }
    fault::check(pid, "dump-objects")?;
    // Write tracking, last: nothing above can fail with it armed.
    if opts.tracks() {
        ctx.arm_tracking(&mut tree)?;
    }
    let old_parked: Vec<chain::Tracked> = ctx
        .parent
        .as_ref()
        .map(|l| l.tracked.clone())
        .unwrap_or_default();
    let armed = std::mem::take(&mut ctx.tracked);
    let stats = std::mem::take(&mut ctx.stats);
    // Its connections, in repair mode until the end.
    let mut conns = std::mem::take(&mut ctx.files.inet);
    // Messages taken off netlink queues, put back unless the tree dies.
    let mut netlink = std::mem::take(&mut ctx.files.netlink);
    drop(ctx);
    debug!(
        "pid {pid}: images written; {}",
        crate::ptrace::remote::STATS
    );
    let committed = fault::check(pid, "dump-commit").and_then(|()| dir.commit());
    if let Err(e) = committed {
        // The tree as it was: tracking made by this dump goes again.
        uffd_wp::disarm(&mut tree, &armed, &old_parked);
        return Err(e);
    }
    debug!("pid {pid}: image directory committed");
    if !opts.tracks() && opts.leave_running {
        // The parent's tracking is done with: close it.
        uffd_wp::close_parked(&mut tree, &old_parked);
    }
    if opts.pre_dump {
        info!("pid {pid}: pre-dump done, the tree goes on with its writes tracked");
        freeze::thaw_tree(tree)?;
    } else if opts.leave_running {
        info!("pid {pid}: dump done, leaving it running");
        conns
            .resume()
            .map_err(|e| Error::task(pid, "TCP connections", e))?;
        netlink.put_back()?;
        freeze::thaw_tree(tree)?;
    } else {
        info!("pid {pid}: dump done, killing it");
        // Its connections vanish with it, still in repair mode and locked.
        conns.hand_over();
        netlink.hand_over();
        freeze::kill_tree(tree)?;
    }
    drop(conns);
    drop(netlink);
    Ok(stats)
}

/// State shared by the tasks of one dump: the images that hold all of
/// them (files.img, pstree.img, inventory.img) and the id counters.
struct DumpCtx<'a> {
    dir: &'a ImageDir,
    files: FileTable,
    ns: NsIds,
    /// The tree's namespaces and its pids in its own pid namespace.
    treens: ns::TreeNs,
    next_pages_id: u32,
    next_files_id: u32,
    /// The files id of every process dumped so far: a process sharing
    /// its parent's fd table has the parent's (CRIU's files_id).
    fd_tables: BTreeMap<Pid, u32>,
    pstree: Vec<pb::PstreeEntry>,
    root_ids: Option<pb::TaskKobjIdsEntry>,
    /// Shared memory objects already dumped (by shmid).
    shmem_done: std::collections::BTreeSet<u64>,
    stats: DumpStats,
    kinds: Vec<Box<dyn Dumper>>,
    // Pages still shared with the parent are not stored again:
    /// The mappings of every dumped process with children in the tree, for
    /// finding the pages its children still share with it.
    cow_vmas: BTreeMap<Pid, Vec<pb::VmaEntry>>,
    /// Processes with live children in the tree.
    cow_parents: std::collections::BTreeSet<Pid>,
    /// Pages written as shared with the parent (PE_COW_PARENT), which
    /// only ckpt restores: the image version says so.
    cow_pages: u64,
    opts: &'a DumpOptions,
    /// The parent image of an incremental dump.
    parent: Option<chain::Layer>,
    /// Processes whose writes are to be tracked after this dump.
    arm: Vec<ArmJob>,
    /// Where the tracking of each process is, once armed.
    tracked: Vec<chain::Tracked>,
    /// Calls a pre-dump's freeze interrupted that go on through
    /// `restart_syscall` (kernel/restart.rs).
    restarts: Vec<chain::RestartCall>,
}

/// One process to start tracking in, once its images are written.
struct ArmJob {
    pid: Pid,
    vpid: Pid,
    syscall_ip: u64,
    /// The private writable mappings.
    ranges: Vec<(u64, u64)>,
    /// The uffd a previous pre-dump parked in it, still there.
    existing: Option<i32>,
    start_time: u64,
}

impl DumpCtx<'_> {
    fn pages_id(&mut self) -> u32 {
        let id = self.next_pages_id;
        self.next_pages_id += 1;
        id
    }

    /// Objects: each kind's images, then the tree-wide ones.
    fn finish(&mut self, root: Pid, pids: std::collections::BTreeSet<Pid>) -> Result<()> {
        let dir = self.dir;
        let cx = FinishCx {
            dir,
            root,
            pids,
            root_ids: self.root_ids,
            vpids: self.treens.vpids(),
        };
        for k in self.kinds.iter_mut() {
            k.finish(&cx)?;
        }
        files::fown::check_owners(&self.files, &self.pstree)?;
        files::pidfd::check_targets(&self.files, &self.pstree)?;
        if let Some(ids) = &self.root_ids {
            self.treens.write_images(dir, root, ids)?;
        }
        let ns = &mut self.ns;
        self.treens
            .write_nested_pidns(dir, |ino| ns.get("pid", ino))?;
        self.treens.write_userns(dir, |ino| ns.get("user", ino))?;
        self.treens
            .write_nested_uts(dir, |ino| ns.get("uts", ino))?;
        files::finish(&mut self.files, dir)?;
        dir.write_image("files.img", &self.files.entries)?;
        self.stats.shmem_pages +=
            memfd::write_images(dir, &self.files.memfd, &mut self.next_pages_id)?;
        ghost::write_images(dir, &self.files.ghost)?;
        dir.write_image("pstree.img", &self.pstree)?;
        // CRIU's meaning: the ids of the process that dumped, which a
        // restore compares the root's with to know what the root gets of
        // its own (a namespace that differs; never its memory or files).
        let links = proc::ns::ns_ids(std::process::id() as Pid)?;
        let dumper = task_ids(links, self.next_files_id, &mut self.ns);
        let mut inv = pb::InventoryEntry {
            img_version: if self.cow_pages > 0 {
                crate::images::magic::IMAGES_CKPT_COW
            } else {
                crate::images::magic::IMAGES_V1_1
            },
            fdinfo_per_id: Some(true),
            root_ids: Some(dumper),
            ns_per_id: Some(true),
            lsmtype: Some(pb::Lsmtype::NoLsm as i32),
            ..Default::default()
        };
        for k in &self.kinds {
            k.inventory(&mut inv);
        }
        dir.write_image("inventory.img", &[inv])?;
        // What the tree's code may have chosen its instructions by: a
        // restore on a CPU without them refuses (kernel/cpu.rs).
        let cpu = pb::CpuinfoEntry {
            x86_entry: vec![crate::kernel::cpu::this()],
        };
        dir.write_image("cpuinfo.img", &[cpu])?;
        self.link_parent()
    }
}

/// A zombie: only its exit status, which its parent has not collected.
fn dump_zombie(p: &freeze::FrozenProc, ctx: &mut DumpCtx<'_>) -> Result<()> {
    let st = stat::read(p.pid)?;
    // Its credentials still show (the parent's waitid reports si_uid).
    let status = status::read(p.pid).ok();
    let creds = status.as_ref().map(|s| {
        let mut c = core::creds_from_status(s, 0);
        ctx.treens.creds_inside(p.pid, &mut c);
        c
    });
    let vpid = ctx.treens.vpid(p.pid, p.pid, "pid")?;
    ctx.dir.write_image(
        &format!("core-{vpid}.img"),
        &[pb::CoreEntry {
            mtype: pb::core_entry::March::X8664 as i32,
            tc: Some(pb::TaskCoreEntry {
                task_state: TASK_DEAD,
                exit_code: p.zombie.unwrap_or(0),
                comm: st.comm.clone(),
                ..Default::default()
            }),
            thread_core: creds.map(|c| pb::ThreadCoreEntry {
                creds: Some(c),
                ..Default::default()
            }),
            ..Default::default()
        }],
    )?;
    let entry = ctx
        .treens
        .pstree_entry(p.pid, p.ppid, &st, status.as_ref(), vec![vpid as u32])?;
    ctx.pstree.push(entry);
    ctx.stats.tasks += 1;
    Ok(())
}

/// Namespace ids: small numbers standing for namespace inodes, shared by
/// all tasks of a dump (CRIU's ns_per_id).
#[derive(Default)]
struct NsIds(BTreeMap<(String, u64), u32>);

impl NsIds {
    fn get(&mut self, kind: &str, ino: u64) -> u32 {
        let n = self.0.len() as u32 + 1;
        *self.0.entry((kind.to_string(), ino)).or_insert(n)
    }
}

/// The ids of `pid`, whose namespace links are `links` (kind -> inode,
/// as `proc::ns::ns_ids` reads them).
fn task_ids(
    links: impl IntoIterator<Item = (String, u64)>,
    id: u32,
    ns: &mut NsIds,
) -> pb::TaskKobjIdsEntry {
    let mut ids = pb::TaskKobjIdsEntry {
        vm_id: id,
        files_id: id,
        fs_id: id,
        sighand_id: id,
        ..Default::default()
    };
    for (kind, ino) in links {
        let id = Some(ns.get(&kind, ino));
        match kind.as_str() {
            "pid" => ids.pid_ns_id = id,
            "net" => ids.net_ns_id = id,
            "ipc" => ids.ipc_ns_id = id,
            "uts" => ids.uts_ns_id = id,
            "mnt" => ids.mnt_ns_id = id,
            "user" => ids.user_ns_id = id,
            "cgroup" => ids.cgroup_ns_id = id,
            "time" => ids.time_ns_id = id,
            _ => {}
        }
    }
    ids
}

/// What a thread looked like when it was stopped, before the engine's
/// remote calls touched its signal mask.
/// What a task in a pid namespace nested below the root's may not hold
/// yet: the restore hands these pids to the task as the root's namespace
/// sees them, where the task would need its own namespace's (an owner
/// of an open file, the thread a POSIX timer signals, a controlling
/// terminal's groups).
fn refuse_nested_pids(
    pid: Pid,
    core: &pb::TaskCoreEntry,
    files: &files::FileTable,
    fds: &[pb::FdinfoEntry],
) -> Result<()> {
    let no = |what: String, why: &str| {
        Err(Error::unsupported(
            pid,
            what,
            format!("{why}, in a task of a pid namespace nested below the tree root's: not supported yet"),
        ))
    };
    if let Some(o) = files.owners.iter().find(|o| o.pid == pid && o.owner != 0) {
        return no(
            format!("fd {} ({})", o.fd, o.link),
            "an owner set with F_SETOWN",
        );
    }
    let timers = core.timers.as_ref().map_or(&[][..], |t| &t.posix[..]);
    if let Some(t) = timers.iter().find(|t| t.notify_thread_id.is_some()) {
        return no(
            format!("POSIX timer {}", t.it_id),
            "a timer that signals one thread (SIGEV_THREAD_ID)",
        );
    }
    // The restore's driver inside the tree's own pid namespace makes a
    // reaped task's pidfd after the root's clone, which a task below
    // cannot inherit.
    let reaped = |id: u32| {
        files
            .entries
            .iter()
            .any(|e| e.id == id && e.pidfd.as_ref().is_some_and(|p| p.nspid == -1))
    };
    if let Some(f) = fds.iter().find(|f| !files.vpids.is_empty() && reaped(f.id)) {
        return no(
            format!("fd {} (pidfd of a reaped task)", f.fd),
            "a pidfd of a reaped task, in a tree with a pid namespace of its own",
        );
    }
    if crate::proc::stat::read(pid)?.tty_nr != 0 {
        return no("its controlling terminal".into(), "a controlling terminal");
    }
    Ok(())
}

/// Everything of one process but its pages, on the tracer thread; the
/// job that copies them is returned.
fn dump_process(
    p: &mut freeze::FrozenProc,
    r: reads::ProcReads,
    ctx: &mut DumpCtx<'_>,
) -> Result<pages::Job> {
    let threads = &mut p.threads[..];
    let pid = threads[0].tid;
    let (stat, status, vmas) = (r.stat, r.status, r.smaps);
    let mem = TaskMem::open(pid)?;
    let syscall_ip = syscall_ip(&vmas, &mem)?;
    debug!("pid {pid}: remote syscalls at {syscall_ip:#x}");

    let stopped = threads[0].kind == StopKind::GroupStop;
    let mut snaps = Vec::with_capacity(threads.len());
    let known = ctx.parent.as_ref().map_or(&[][..], |l| &l.restarts[..]);
    for (t, (t_stat, t_status)) in threads.iter().zip(r.threads) {
        snaps.push(core::ThreadSnap {
            tid: t.tid,
            regs: restart::with_known_call(t.regs, t.tid, known),
            xstate: t.xstate()?,
            blk: t.sigmask()?,
            stat: t_stat,
            status: t_status,
        });
    }

    // Everything asked from inside the task: the process-wide part and the
    // leader's thread part through the leader, each other thread's part
    // through that thread, all sharing one scratch page.
    let (task_core, thread_parts, brk, dumpable) = {
        let (leader, rest) = threads.split_first_mut().expect("the leader is there");
        let mut s = ScratchSession::open(leader, syscall_ip, &mem)?;
        let (mut tc, calls, leader_part) =
            core::dump_task_core(pid, stopped, &snaps[0], &stat, &mut s, &mut ctx.kinds)?;
        for k in ctx.kinds.iter_mut() {
            k.in_task(pid, &mut s, &mut tc)?;
        }
        fault::check(pid, "dump-remote")?;
        let mut parts = vec![leader_part];
        let (brk, dumpable) = (calls.brk, calls.dumpable);
        parts.extend(core::dump_threads(rest, &snaps[1..], syscall_ip, &mut s)?);
        s.close()?;
        (tc, parts, brk, dumpable)
    };

    // State read from outside, after the remote calls.
    let mut task_core = task_core;
    let mut thread_parts = thread_parts;
    {
        let mut p = ProcCx {
            pid,
            task_core: &mut task_core,
            threads: snaps
                .iter()
                .zip(thread_parts.iter_mut())
                .map(|(snap, (_, tc))| (snap.tid, &snap.status, tc))
                .collect(),
        };
        for k in ctx.kinds.iter_mut() {
            k.task(&mut p)?;
        }
    }
    debug!("pid {pid}: task state read");
    fault::check(pid, "dump-state")?;
    let files = &mut ctx.files;
    // A table shared with the parent is the parent's: its fds are dumped
    // once, with it.
    let table_of = files::fd_table(pid, p.ppid, files)?;
    let fdinfos = match table_of {
        None => files::dump_fds(pid, files)?,
        Some(_) => Vec::new(),
    };
    fault::check(pid, "dump-files")?;
    // Epoll sets are rebuilt inside their task from its fd numbers: one
    // shared with another process cannot be rebuilt there.
    for e in &fdinfos {
        let shared = files.seen.iter().any(|s| s.0 != pid && s.2 == e.id);
        if shared && e.r#type == pb::FdTypes::Eventpoll as i32 {
            return Err(Error::unsupported(
                pid,
                format!("fd {} (epoll)", e.fd),
                "epoll sets shared between processes are not supported yet",
            ));
        }
    }
    if ctx.treens.levels(pid).is_some() {
        refuse_nested_pids(pid, &task_core, files, &fdinfos)?;
    }
    let fs = files::dump_fs(pid, status.umask.unwrap_or(0o022), files)?;
    let exe_file_id = files::dump_exe(pid, files)?;
    debug!("pid {pid}: files dumped");

    // Memory: classify every mapping, then copy the pages.
    let mut vma_entries = Vec::new();
    let mut kinds = Vec::new();
    for v in &vmas {
        let (mut e, kind) = classify(v);
        let mut claimed = false;
        for k in ctx.kinds.iter_mut() {
            if k.vma(pid, v, &mut e)? {
                claimed = true;
                break;
            }
        }
        if claimed {
            vma_entries.push(e);
            kinds.push((kind, v.read));
            continue;
        }
        if matches!(kind, VmaKind::FilePrivate | VmaKind::FileShared) {
            let fdflags = if kind == VmaKind::FileShared && v.has_flag("mw") {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            } as u32;
            e.shmid = files::dump_mapped_file(pid, v.start, v.end, fdflags, files)? as u64;
            e.fdflags = Some(fdflags);
            if files.memfd.is_memfd_file(e.shmid as u32) {
                e.status |= VMA_AREA_MEMFD; // as CRIU marks them
            }
        }
        vma_entries.push(e);
        kinds.push((kind, v.read));
    }
    let vpid = ctx.treens.vpid(pid, pid, "pid")?;
    let mut job = pages_job(
        pid,
        p.ppid,
        vpid,
        &vma_entries,
        kinds,
        mem,
        syscall_ip,
        stat.start_time,
        ctx,
    )?;
    // Shared anonymous memory: each object once per dump, whoever maps it.
    for (e, &(kind, _)) in vma_entries.iter().zip(&job.kinds) {
        if kind != VmaKind::AnonShared || ctx.shmem_done.contains(&e.shmid) {
            continue;
        }
        ctx.shmem_done.insert(e.shmid);
        let id = ctx.pages_id();
        job.shmem.push((e.shmid, e.start, e.end, id));
    }
    ctx.stats.vmas += vma_entries.len();
    let auxv = r.auxv;
    let mm = pb::MmEntry {
        mm_start_code: stat.start_code,
        mm_end_code: stat.end_code,
        mm_start_data: stat.start_data,
        mm_end_data: stat.end_data,
        mm_start_stack: stat.start_stack,
        mm_start_brk: stat.start_brk,
        mm_brk: brk,
        mm_arg_start: stat.arg_start,
        mm_arg_end: stat.arg_end,
        mm_env_start: stat.env_start,
        mm_env_end: stat.env_end,
        exe_file_id,
        // Without the AT_NULL pair, as CRIU writes it (it takes at most
        // 44 words on x86): the kernel ends the vector it is given itself.
        mm_saved_auxv: auxv.iter().flat_map(|&(k, v)| [k, v]).collect(),
        vmas: vma_entries,
        dumpable: Some(dumpable as i32),
        aios: vec![],
        thp_disabled: None,
    };

    let id = ctx.next_files_id;
    ctx.next_files_id += 1;
    let mut ids = task_ids(r.ns, id, &mut ctx.ns);
    if let Some(owner) = table_of {
        ids.files_id = ctx.fd_tables[&owner];
        debug!(
            "pid {pid}: shares the fd table of pid {owner} (files id {})",
            ids.files_id
        );
    }
    ctx.fd_tables.insert(pid, ids.files_id);
    if ctx.root_ids.is_none() {
        ctx.root_ids = Some(ids);
    }
    let v = |of: Pid, what: &str| ctx.treens.vpid(pid, of, what);
    let tids: Vec<u32> = snaps
        .iter()
        .map(|t| v(t.tid, "thread").map(|t| t as u32))
        .collect::<Result<_>>()?;
    // A POSIX timer's thread as the tree sees it (/proc/PID/timers gives
    // the engine's view).
    if let Some(t) = task_core.timers.as_mut() {
        for p in &mut t.posix {
            if let Some(tid) = p.notify_thread_id {
                p.notify_thread_id = Some(v(tid, "POSIX timer's thread")?);
            }
        }
    }
    let mut task_core = Some(task_core);
    for (snap, (info, mut thread_core)) in snaps.iter().zip(thread_parts) {
        let leader = snap.tid == pid;
        if let Some(c) = thread_core.creds.as_mut() {
            ctx.treens.creds_inside(pid, c);
        }
        let core = pb::CoreEntry {
            mtype: pb::core_entry::March::X8664 as i32,
            thread_info: Some(info),
            tc: if leader { task_core.take() } else { None },
            ids: leader.then_some(ids),
            thread_core: Some(thread_core),
        };
        let vtid = v(snap.tid, "thread")?;
        ctx.dir.write_image(&format!("core-{vtid}.img"), &[core])?;
    }
    ctx.dir.write_image(&format!("mm-{vpid}.img"), &[mm])?;
    ctx.dir.write_image(&format!("ids-{vpid}.img"), &[ids])?;
    ctx.dir.write_image(&format!("fs-{vpid}.img"), &[fs])?;
    if table_of.is_none() {
        ctx.dir
            .write_image(&format!("fdinfo-{}.img", ids.files_id), &fdinfos)?;
    }
    let entry = ctx
        .treens
        .pstree_entry(pid, p.ppid, &stat, Some(&status), tids)?;
    ctx.pstree.push(entry);
    ctx.stats.tasks += 1;
    Ok(job)
}

/// A `syscall` instruction in the task (its vDSO first) for remote calls.
fn syscall_ip(vmas: &[maps::Vma], mem: &TaskMem) -> Result<u64> {
    let mut ranges: Vec<(u64, u64)> = vmas
        .iter()
        .filter(|v| matches!(v.is_special(), Some(maps::SpecialVma::Vdso)))
        .map(|v| (v.start, v.end))
        .collect();
    ranges.extend(
        vmas.iter()
            .filter(|v| v.exec && v.read && v.is_special().is_none())
            .map(|v| (v.start, v.end)),
    );
    find_syscall_insn(mem, &ranges)
}

/// The parent image of an incremental dump (`prev` relative to `dir`
/// unless absolute): a pre-dump of this very tree, whose root is `root`
/// started at `start_time`.
/// Where `--prev-images-dir prev` is: relative to the images directory
/// `dir`, which need not exist yet (`-D img --prev-images-dir ../pre`,
/// CRIU's usual spelling): its own `..` is then taken away by hand, as
/// the kernel cannot resolve it.
fn parent_path(dir: &std::path::Path, prev: &std::path::Path) -> PathBuf {
    use std::path::Component;
    if prev.is_absolute() {
        return prev.to_path_buf();
    }
    let mut parts = prev.components();
    if !dir.exists() && parts.next() == Some(Component::ParentDir) {
        let up = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        return up.join(parts.as_path());
    }
    dir.join(prev)
}

fn open_parent(
    root: Pid,
    start_time: u64,
    dir: &std::path::Path,
    prev: &std::path::Path,
) -> Result<chain::Layer> {
    let path = parent_path(dir, prev);
    let what = format!("parent images {}", prev.display());
    let layer = chain::Layer::open_for_dump(&path)
        .map_err(|e| Error::task(root, what.clone(), e.to_string()))?;
    let root_rec = layer
        .root_vpid()
        .and_then(|v| layer.tracked.iter().find(|t| t.vpid == v).copied());
    match root_rec {
        Some(t) if t.pid == root && t.start_time == start_time => Ok(layer),
        Some(t) => Err(Error::task(
            root,
            what,
            format!(
                "they are of another tree (its root was pid {} started at tick {}; this root started at tick {start_time})",
                t.pid, t.start_time
            ),
        )),
        None => Err(Error::task(
            root,
            what,
            format!(
                "{} records no write tracking of the tree's root",
                chain::TRACK_FILE
            ),
        )),
    }
}

/// The job that copies a process's private memory, through page tables,
/// into its pages file and pagemap (`pages.rs`); pages still shared with
/// the parent process, and (in an incremental dump) pages not written
/// since the parent image, are not stored again. Its ids, what it may
/// share and its write tracking are settled here, in the tree's order.
#[allow(clippy::too_many_arguments)]
fn pages_job(
    pid: Pid,
    ppid: Pid,
    vpid: Pid,
    vma_entries: &[pb::VmaEntry],
    kinds: Vec<(VmaKind, bool)>,
    mem: TaskMem,
    syscall_ip: u64,
    start_time: u64,
    ctx: &mut DumpCtx<'_>,
) -> Result<pages::Job> {
    let private_id = ctx.pages_id();
    let pagemap = PagemapReader::open(pid)?;
    let cow_parent = ctx.cow_vmas.get(&ppid).cloned();
    if ctx.cow_parents.contains(&pid) {
        let eligible = vma_entries.iter().filter(|v| cow_eligible(v));
        ctx.cow_vmas.insert(pid, eligible.cloned().collect());
    }
    let (marks, existing) = parent_marks(pid, vpid, start_time, vma_entries, &pagemap, ctx)?;
    if ctx.opts.tracks() {
        ctx.arm.push(ArmJob {
            pid,
            vpid,
            syscall_ip,
            ranges: vma_entries
                .iter()
                .filter(|v| uffd_wp::trackable(v))
                .map(|v| (v.start, v.end))
                .collect(),
            existing,
            start_time,
        });
    }
    Ok(pages::Job {
        pid,
        ppid,
        vpid,
        private_id,
        vmas: vma_entries.to_vec(),
        kinds,
        mem,
        pagemap,
        cow_parent,
        marks,
        incremental: ctx.parent.is_some(),
        shmem: Vec::new(),
    })
}

/// The pages of `pid` an incremental dump may leave in the parent image
/// (see [`memory::ParentMarks`]), and the uffd the parent parked in it if
/// it is still there. Nothing for a process the parent does not track
/// (forked since, or its pid reused): it is dumped whole.
fn parent_marks(
    pid: Pid,
    vpid: Pid,
    start_time: u64,
    vmas: &[pb::VmaEntry],
    pagemap: &PagemapReader,
    ctx: &mut DumpCtx<'_>,
) -> Result<(memory::ParentMarks, Option<i32>)> {
    let mut marks = memory::ParentMarks::new();
    let Some(parent) = ctx.parent.as_mut() else {
        return Ok((marks, None));
    };
    let rec = parent
        .tracked
        .iter()
        .find(|t| t.pid == pid && t.vpid == vpid && t.start_time == start_time)
        .copied();
    let Some(rec) = rec else {
        debug!("pid {pid}: not tracked by the parent image: dumped whole");
        return Ok((marks, None));
    };
    if !uffd_wp::is_uffd(pid, rec.fd) {
        warn!(
            "pid {pid}: fd {} is no longer the write-tracking userfaultfd (closed by the task, or an exec?): dumped whole",
            rec.fd
        );
        return Ok((marks, None));
    }
    let perr = |e: crate::images::ImageError| Error::task(pid, "parent images", e.to_string());
    let pvmas = parent.vmas(vpid).map_err(perr)?;
    let held = match parent.pagemap(vpid).map_err(perr)? {
        Some((set, _)) => chain::held_ranges(&set.entries),
        None => return Ok((marks, Some(rec.fd))),
    };
    use crate::images::vma::{VMA_ANON_PRIVATE, VMA_FILE_PRIVATE};
    let backing = |v: &pb::VmaEntry| v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE);
    for v in vmas.iter().filter(|v| uffd_wp::trackable(v)) {
        let same = pvmas.iter().any(|p| {
            p.start == v.start
                && p.end == v.end
                && p.pgoff == v.pgoff
                && p.flags == v.flags
                && backing(p) == backing(v)
        });
        if !same {
            continue;
        }
        let Some(written) = uffd_wp::written(pid, pagemap, v.start, v.end)? else {
            continue;
        };
        let page = crate::images::pagemap::PAGE;
        let n = ((v.end - v.start) / page) as usize;
        let mut m = vec![false; n];
        let mut set = |s: u64, e: u64, to: bool| {
            let (s, e) = (s.max(v.start), e.min(v.end));
            if s < e {
                let a = ((s - v.start) / page) as usize;
                let b = ((e - v.start) / page) as usize;
                m[a..b].iter_mut().for_each(|x| *x = to);
            }
        };
        for &(s, e) in &held {
            set(s, e, true);
        }
        for &(s, e) in &written {
            set(s, e, false);
        }
        if m.iter().any(|&x| x) {
            marks.insert(v.start, m);
        }
    }
    Ok((marks, Some(rec.fd)))
}

/// A pre-dump of one process: its mappings and private memory, and its
/// place in the tree; nothing else (the tree goes on running, and the
/// dump that follows writes the rest).
fn pre_dump_process(
    p: &mut freeze::FrozenProc,
    r: reads::ProcReads,
    ctx: &mut DumpCtx<'_>,
) -> Result<pages::Job> {
    let pid = p.threads[0].tid;
    let (stat, status, vmas) = (r.stat, r.status, r.smaps);
    let mem = TaskMem::open(pid)?;
    let syscall_ip = syscall_ip(&vmas, &mem)?;
    let (vma_entries, kinds): (Vec<_>, Vec<_>) = vmas
        .iter()
        .map(|v| {
            let (e, kind) = classify(v);
            (e, (kind, v.read))
        })
        .unzip();
    let vpid = ctx.treens.vpid(pid, pid, "pid")?;
    let job = pages_job(
        pid,
        p.ppid,
        vpid,
        &vma_entries,
        kinds,
        mem,
        syscall_ip,
        stat.start_time,
        ctx,
    )?;
    ctx.stats.vmas += vma_entries.len();
    ctx.dir.write_image(
        &format!("mm-{vpid}.img"),
        &[pb::MmEntry {
            vmas: vma_entries,
            ..Default::default()
        }],
    )?;
    let known = ctx.parent.as_ref().map_or(&[][..], |l| &l.restarts[..]);
    let calls: Vec<_> = p
        .threads
        .iter()
        .filter_map(|t| restart::record(t.tid, &t.regs, known))
        .collect();
    ctx.restarts.extend(calls);
    let v = |of: Pid, what: &str| ctx.treens.vpid(pid, of, what);
    let tids: Vec<u32> = p
        .threads
        .iter()
        .map(|t| v(t.tid, "thread").map(|t| t as u32))
        .collect::<Result<_>>()?;
    let entry = ctx
        .treens
        .pstree_entry(pid, p.ppid, &stat, Some(&status), tids)?;
    ctx.pstree.push(entry);
    ctx.stats.tasks += 1;
    Ok(job)
}

impl DumpCtx<'_> {
    /// The tree-wide images of a pre-dump.
    fn finish_pre_dump(&mut self) -> Result<()> {
        self.dir.write_image("pstree.img", &self.pstree)?;
        let inv = pb::InventoryEntry {
            img_version: crate::images::magic::IMAGES_V1_1,
            fdinfo_per_id: Some(true),
            ns_per_id: Some(true),
            lsmtype: Some(pb::Lsmtype::NoLsm as i32),
            pre_dump_mode: Some(chain::PRE_DUMP_READ),
            ..Default::default()
        };
        self.dir.write_image("inventory.img", &[inv])?;
        if !self.restarts.is_empty() {
            let text = chain::restart_text(&self.restarts);
            self.dir.write_file(chain::RESTART_FILE, text.as_bytes())?;
        }
        self.link_parent()
    }

    /// CRIU's `parent` link, as given, for a dump with a parent image.
    fn link_parent(&self) -> Result<()> {
        let Some(prev) = &self.opts.prev_images_dir else {
            return Ok(());
        };
        let link = self.dir.path(chain::PARENT_LINK);
        std::os::unix::fs::symlink(prev, &link)
            .map_err(|e| Error::io(&link, "linking to the parent images", e))
    }

    /// Start tracking writes in every process dumped (`arm`), write
    /// protecting what was just copied; the record goes into the images.
    /// On failure, the tracking made here is undone.
    fn arm_tracking(&mut self, tree: &mut [freeze::FrozenProc]) -> Result<()> {
        let jobs = std::mem::take(&mut self.arm);
        for job in &jobs {
            let r = arm_one(job, tree);
            match r {
                Ok(fd) => self.tracked.push(chain::Tracked {
                    pid: job.pid,
                    vpid: job.vpid,
                    fd,
                    start_time: job.start_time,
                }),
                Err(e) => {
                    let old: Vec<_> = self
                        .parent
                        .as_ref()
                        .map(|l| l.tracked.clone())
                        .unwrap_or_default();
                    uffd_wp::disarm(tree, &self.tracked, &old);
                    return Err(e);
                }
            }
        }
        let text = chain::track_text(&self.tracked);
        self.dir.write_file(chain::TRACK_FILE, text.as_bytes())
    }
}

fn arm_one(job: &ArmJob, tree: &mut [freeze::FrozenProc]) -> Result<i32> {
    let pid = job.pid;
    let p = tree
        .iter_mut()
        .find(|p| p.pid == pid)
        .ok_or_else(|| Error::task(pid, "write tracking", "not in the frozen tree"))?;
    let leader = p
        .threads
        .first_mut()
        .ok_or_else(|| Error::task(pid, "write tracking", "no thread"))?;
    let mem = TaskMem::open(pid)?;
    let mut s = ScratchSession::open(leader, job.syscall_ip, &mem)?;
    let (fd, made) = uffd_wp::arm(pid, &mut s, job.existing, &job.ranges)?;
    let closed = s.close();
    let protected = closed.and_then(|()| {
        let pagemap = PagemapReader::open(pid)?;
        uffd_wp::write_protect(pid, &pagemap, &job.ranges)
    });
    if let Err(e) = protected {
        // Made now, or reused and maybe protected again: either way it
        // no longer tells what was written since the parent.
        debug!("pid {pid}: write tracking failed (fd {fd}, new: {made})");
        uffd_wp::close_in(p, fd);
        return Err(e);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::parent_path;
    use std::path::Path;

    #[test]
    fn parent_images_relative_to_a_directory_not_made_yet() {
        let t = tempfile::tempdir().unwrap();
        let new = t.path().join("img");
        assert_eq!(parent_path(&new, Path::new("../pre")), t.path().join("pre"));
        assert_eq!(
            parent_path(Path::new("img"), Path::new("../pre")),
            Path::new("./pre")
        );
        assert_eq!(
            parent_path(&new, Path::new("/abs/pre")),
            Path::new("/abs/pre")
        );
        std::fs::create_dir(&new).unwrap();
        assert_eq!(parent_path(&new, Path::new("../pre")), new.join("../pre"));
        assert_eq!(parent_path(&new, Path::new("pre")), new.join("pre"));
    }
}
