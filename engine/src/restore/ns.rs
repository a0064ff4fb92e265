//! The tree's own namespaces (see dump/ns.rs for which a dump holds): a
//! UTS namespace with its host and domain names, an IPC namespace with
//! its sysctls (the objects in it are restore/ipc.rs's), a time namespace
//! with its clock offsets, a pid namespace whose init is the tree's root,
//! a mount namespace (restore/mntns.rs) and a network namespace
//! (restore/netns.rs) in the shape the zdtm `ns` flavour gives them, and a
//! user namespace (restore/userns.rs) that owns all of them.
//!
//! # How they are made
//!
//! Before any object or task exists, the engine's thread leaves its own
//! namespaces for new ones (unshare of UTS and IPC namespaces changes only
//! the calling thread; of a pid namespace, only where its next children
//! go) and sets them up: names, sysctls. So the SysV objects the next kind
//! makes land in the tree's IPC namespace, with their ids (`*_next_id` is
//! the namespace's own), and the root, cloned next, is born into every new
//! namespace; every other task inherits them before it runs a line of its
//! own. A new pid namespace is made by the root's clone itself
//! (CLONE_NEWPID), since the namespace's first process is its init.
//!
//! # A new pid namespace
//!
//! The images hold the pids the tasks had inside it, which only mean
//! something there: the root's children are forked with them from inside
//! (clone3's set_tid in the innermost namespace), but the engine's every
//! later step (ptrace, /proc/PID, cgroup.procs, pidfds) names tasks by pid
//! in its own namespace. So once the root exists, the engine forks a
//! driver into the new namespace, with a pid no task of the image needs;
//! the driver mounts a /proc of that namespace in a mount namespace of its
//! own and does the rest of the restore there, where the image's pids are
//! the real ones. The engine waits for it, and kills the namespace's init
//! (which kills the namespace) if it fails: the driver, being inside,
//! cannot kill the init.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::load::{Images, TaskImages};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::images::set::ImageSet;

/// The namespaces of the image's root that the restore makes anew.
#[derive(Debug, Clone, Default)]
pub struct NsImages {
    pub uts: Option<pb::UtsnsEntry>,
    pub ipc: Option<pb::IpcVarEntry>,
    /// The root is the init of a new pid namespace.
    pub pid: bool,
    /// A new time namespace with these offsets.
    pub time: Option<pb::TimensEntry>,
    /// A new mount namespace (its mounts as the dump found them).
    pub mnt: Option<Vec<pb::MntEntry>>,
    /// A new network namespace made as these images have it.
    pub net: Option<super::netns::NetImages>,
    /// A new user namespace with these maps, made first.
    pub user: Option<pb::UsernsEntry>,
    /// That one and those below it (restore/userns.rs).
    pub users: super::userns::UserImages,
    /// UTS namespaces below the root's (restore/utsns.rs).
    pub nested_uts: Vec<super::utsns::NestedUts>,
}

impl NsImages {
    fn flags(&self) -> CloneFlags {
        let mut f = CloneFlags::empty();
        f.set(CloneFlags::CLONE_NEWUTS, self.uts.is_some());
        f.set(CloneFlags::CLONE_NEWIPC, self.ipc.is_some());
        // Where the engine's children go: the root and every helper.
        f.set(
            CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
            self.time.is_some(),
        );
        f
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(crate::images::ImageError::invalid(path, reason))
}

/// Picks the root's namespace images and checks that every task is in
/// the root's namespaces of those kinds, and that no image is left over.
///
/// Pid namespaces below the root's are restore/pidns.rs's (`nested_pid`,
/// their ids): the tasks in them are not in the root's.
pub fn from_set(
    dir: &Path,
    set: &ImageSet,
    tasks: &[TaskImages],
    nested_pid: &std::collections::BTreeSet<u32>,
) -> Result<NsImages> {
    let ns = &set.namespaces;
    let root = &tasks[0];
    let ids = &root.ids;
    let part = |kind: &str, id: Option<u32>| -> Result<Option<u32>> {
        for t in tasks {
            let theirs = match kind {
                "ipc" => t.ids.ipc_ns_id,
                "time" => t.ids.time_ns_id,
                "mnt" => t.ids.mnt_ns_id,
                "net" => t.ids.net_ns_id,
                _ => t.ids.pid_ns_id,
            };
            // Tasks in nested pid namespaces: restore/pidns.rs.
            let nested = kind == "pid" && !t.pstree.ns_pid.is_empty();
            if theirs != id && !nested {
                return Err(bad(
                    &dir.join(format!("ids-{}.img", t.pid)),
                    format!(
                        "pid {}: {kind} namespace {theirs:?} differs from the root's ({id:?}); \
                         namespaces made inside the tree are not supported",
                        t.pid
                    ),
                ));
            }
        }
        Ok(id)
    };
    let mut out = NsImages::default();
    let check_left = |kind: &str, file: &str, keys: Vec<u32>, own: Option<u32>| -> Result<()> {
        match keys.into_iter().find(|k| Some(*k) != own) {
            Some(k) => Err(bad(
                &dir.join(format!("{file}-{k}.img")),
                format!("no task is in {kind} namespace {k}"),
            )),
            None => Ok(()),
        }
    };
    // Tasks in UTS namespaces below the root's: restore/utsns.rs.
    if let Some(id) = ids.uts_ns_id.filter(|id| ns.uts.contains_key(id)) {
        let name = format!("utsns-{id}.img");
        out.uts = Some(super::load::require(dir, &name, &ns.uts[&id])?.clone());
    }
    out.nested_uts = super::utsns::from_set(dir, &ns.uts, tasks, ids.uts_ns_id)?;
    check_left(
        "UTS",
        "utsns",
        ns.uts
            .keys()
            .copied()
            .filter(|k| !out.nested_uts.iter().any(|n| n.id == *k))
            .collect(),
        ids.uts_ns_id,
    )?;
    if let Some(id) = ids.ipc_ns_id.filter(|id| ns.ipc.contains_key(id)) {
        part("ipc", Some(id))?;
        let name = format!("ipcns-var-{id}.img");
        let v = super::load::require(dir, &name, &ns.ipc[&id])?.clone();
        if v.sem_ctls.len() != 4 {
            return Err(bad(
                &dir.join(&name),
                format!("sem_ctls has {} numbers, not 4", v.sem_ctls.len()),
            ));
        }
        out.ipc = Some(v);
    }
    check_left(
        "IPC",
        "ipcns-var",
        ns.ipc.keys().copied().collect(),
        ids.ipc_ns_id,
    )?;
    if let Some(id) = ids.pid_ns_id.filter(|id| ns.pid.contains_key(id)) {
        part("pid", Some(id))?;
        let name = format!("pidns-{id}.img");
        let e = super::load::require(dir, &name, &ns.pid[&id])?;
        if let Some(key) = &e.ext_key {
            return Err(bad(
                &dir.join(&name),
                format!("external pid namespace {key:?} is not supported"),
            ));
        }
        if root.pid != 1 {
            return Err(bad(
                &dir.join("pstree.img"),
                format!(
                    "the root is pid {}, not 1, the init of its pid namespace (pidns-{id}.img)",
                    root.pid
                ),
            ));
        }
        out.pid = true;
    }
    check_left(
        "pid",
        "pidns",
        ns.pid
            .keys()
            .copied()
            .filter(|k| !nested_pid.contains(k))
            .collect(),
        ids.pid_ns_id,
    )?;
    if let Some(id) = ids.time_ns_id.filter(|id| ns.time.contains_key(id)) {
        part("time", Some(id))?;
        let name = format!("timens-{id}.img");
        out.time = Some(*super::load::require(dir, &name, &ns.time[&id])?);
    }
    if let Some(id) = ids.mnt_ns_id.filter(|id| ns.mnt.contains_key(id)) {
        part("mnt", Some(id))?;
        let name = format!("mountpoints-{id}.img");
        let m = super::load::require(dir, &name, &ns.mnt[&id])?.clone();
        super::mntns::validate(&dir.join(&name), dir, &m)?;
        out.mnt = Some(m);
    }
    check_left(
        "mount",
        "mountpoints",
        ns.mnt.keys().copied().collect(),
        ids.mnt_ns_id,
    )?;
    if let Some(id) = ids.net_ns_id.filter(|id| ns.net.contains_key(id)) {
        part("net", Some(id))?;
        let name = format!("netns-{id}.img");
        let e = super::load::require(dir, &name, &ns.net[&id])?;
        if let Some(key) = &e.ext_key {
            return Err(bad(
                &dir.join(&name),
                format!("external network namespace {key:?} is not supported"),
            ));
        }
        let name = format!("netdev-{id}.img");
        let Some(devs) = ns.netdev.get(&id) else {
            return Err(bad(&dir.join(&name), "missing: the namespace's devices"));
        };
        let devs = super::load::require(dir, &name, devs)?;
        let mut raw = std::collections::BTreeMap::new();
        for (prefix, part) in ns.netraw.get(&id).into_iter().flatten() {
            let name = format!("{prefix}-{id}.img");
            raw.insert(*prefix, super::load::require(dir, &name, part)?.clone());
        }
        out.net = Some(super::netns::validate(dir, id, e, devs, &raw)?);
    }
    check_left(
        "network",
        "netns",
        ns.net.keys().copied().collect(),
        ids.net_ns_id,
    )?;
    check_left(
        "network",
        "netdev",
        ns.netdev.keys().copied().collect(),
        ids.net_ns_id,
    )?;
    for (k, files) in &ns.netraw {
        if let Some(prefix) = files.keys().next() {
            check_left("network", prefix, vec![*k], ids.net_ns_id)?;
        }
    }
    out.users = super::userns::from_set(dir, &ns.user, tasks)?;
    out.user = out.users.top.as_ref().map(|(_, u)| u.clone());
    // timens-0.img is no namespace: CRIU writes its clocks at dump time
    // there for every tree (namespace ids start at 1).
    check_left(
        "time",
        "timens",
        ns.time.keys().copied().filter(|&k| k != 0).collect(),
        ids.time_ns_id,
    )?;
    Ok(out)
}

/// Namespaces: the engine's thread enters the tree's new ones before any
/// other kind makes anything.
pub const KIND: super::stage::Kind = super::stage::Kind {
    name: "namespaces",
    validate: super::stage::no_checks,
    new: |imgs, opts| Ok(Box::new(Namespaces::new(imgs, opts)?)),
};

struct Namespaces {
    /// `--root` and `--external mnt[...]` (restore/mntns.rs).
    outside: super::mntns::Outside,
}

impl Namespaces {
    fn new(imgs: &Images, opts: &super::RestoreOptions) -> Result<Namespaces> {
        let outside = super::mntns::Outside::new(opts.root.clone(), &opts.external)?;
        match &imgs.ns.mnt {
            Some(m) => super::mntns::check_outside(imgs.tasks[0].pid, &imgs.path(""), m, &outside)?,
            None if outside.root.is_some() || !outside.external.is_empty() => {
                return Err(Error::Usage(
                    "--root and --external mnt[...] apply to a tree with a mount namespace of its own; this one has none".into(),
                ))
            }
            None => {}
        }
        Ok(Namespaces { outside })
    }
}

impl super::stage::Restorer for Namespaces {
    /// Files on the host's mounts are opened first, while the engine is
    /// still in the host's mount namespace.
    fn create(&mut self, imgs: &Images, fds: &mut super::stage::EngineFds) -> Result<()> {
        super::files::open_on_host(imgs, fds)?;
        enter(imgs, &self.outside)
    }
}

/// unshare and set up, in the engine's thread (module doc); then the
/// tree's own mounts, last, so that its sysfs and mqueue mounts are of
/// the new network and IPC namespaces, and before any task is planned
/// or made (their files may be on them). With a pid namespace of the
/// tree's, its /proc comes after them (the driver's): dump/mntns.rs
/// takes that order too.
fn enter(imgs: &Images, outside: &super::mntns::Outside) -> Result<()> {
    unshare_all(imgs)?;
    let ns = &imgs.ns;
    super::utsns::make(imgs.tasks[0].pid, &ns.nested_uts, &ns.users)?;
    match &imgs.ns.mnt {
        Some(m) => super::mntns::make(
            imgs.tasks[0].pid,
            &imgs.path(""),
            m,
            outside,
            imgs.ns.pid,
            imgs.ns.user.as_ref(),
        ),
        None => Ok(()),
    }
}

fn unshare_all(imgs: &Images) -> Result<()> {
    let ns = &imgs.ns;
    let root = imgs.tasks[0].pid;
    if let Some(u) = &ns.user {
        return enter_user(imgs, u);
    }
    // Below the engine's: made from it, before it leaves its namespaces.
    super::userns::make_nested(root, &ns.users)?;
    if let Some(net) = &ns.net {
        super::netns::enter(root, net, &|| super::files::inet::lock_before_links(imgs))?;
    }
    if ns.mnt.is_some() {
        super::mntns::unshare_mounts(root, MsFlags::MS_PRIVATE, "the tree's mount namespace")?;
    }
    let flags = ns.flags();
    if !flags.is_empty() {
        nix::sched::unshare(flags)
            .map_err(|e| Error::sys(root, format!("unshare of new namespaces ({flags:?})"), e))?;
    }
    set_up(imgs)
}

/// `enter` with a user namespace of the tree's own: its holder makes the
/// other namespaces in it, the engine's thread joins them
/// (restore/userns.rs).
fn enter_user(imgs: &Images, u: &pb::UsernsEntry) -> Result<()> {
    let ns = &imgs.ns;
    let root = imgs.tasks[0].pid;
    let mut flags = ns.flags();
    flags.set(CloneFlags::CLONE_NEWNET, ns.net.is_some());
    flags.set(CloneFlags::CLONE_NEWNS, ns.mnt.is_some());
    let entered = super::userns::make(
        root,
        u,
        flags,
        ns.time.as_ref().map(offsets_text).as_deref(),
    )?;
    super::userns::make_nested(root, &ns.users)?;
    for (flag, fd) in entered {
        if flag == CloneFlags::CLONE_NEWNS {
            // A mount namespace is entered by a thread with its own
            // root and cwd.
            nix::sched::unshare(CloneFlags::CLONE_FS)
                .map_err(|e| Error::sys(root, "unshare of the engine thread's fs", e))?;
        }
        nix::sched::setns(&fd, flag)
            .map_err(|e| Error::sys(root, format!("setns into its new namespace ({flag:?})"), e))?;
    }
    if let Some(net) = &ns.net {
        super::netns::set_up(root, net, &|| super::files::inet::lock_before_links(imgs))?;
    }
    if ns.mnt.is_some() {
        super::mntns::set_propagation(root, MsFlags::MS_PRIVATE, "the tree's mount namespace")?;
    }
    set_up(imgs)
}

/// /proc/PID/timens_offsets' text for a time namespace's offsets.
fn offsets_text(t: &pb::TimensEntry) -> String {
    format!(
        "monotonic {} {}\nboottime {} {}\n",
        t.monotonic.tv_sec as i64,
        t.monotonic.tv_nsec,
        t.boottime.tv_sec as i64,
        t.boottime.tv_nsec
    )
}

/// What `enter` sets up in the namespaces the engine's thread is now in.
fn set_up(imgs: &Images) -> Result<()> {
    let ns = &imgs.ns;
    let root = imgs.tasks[0].pid;
    if ns.mnt.is_some() && !ns.pid {
        // No driver in a pid namespace to do it (fork_driver).
        super::mntns::mount_proc().map_err(|e| Error::sys(root, "mount of its /proc", e))?;
    }
    if let Some(u) = &ns.uts {
        set_names(root, u)?;
    }
    if let Some(v) = &ns.ipc {
        set_ipc_vars(root, v)?;
    }
    if let Some(t) = ns.time.as_ref().filter(|_| ns.user.is_none()) {
        // Settable only until a task is in the namespace: now. (With a
        // user namespace, restore/userns.rs wrote them.)
        let path = "/proc/self/timens_offsets";
        let text = offsets_text(t);
        std::fs::write(path, &text).map_err(|e| {
            Error::io(
                path,
                format!("pid {root}: time namespace offsets {text:?}"),
                e,
            )
        })?;
    }
    Ok(())
}

/// The host and domain names of the calling thread's UTS namespace.
pub fn set_names(root: Pid, u: &pb::UtsnsEntry) -> Result<()> {
    nix::unistd::sethostname(&u.nodename)
        .map_err(|e| Error::sys(root, format!("sethostname {:?}", u.nodename), e))?;
    set_domainname(&u.domainname)
        .map_err(|e| Error::sys(root, format!("setdomainname {:?}", u.domainname), e))?;
    debug!("UTS namespace: {} ({})", u.nodename, u.domainname);
    Ok(())
}

/// The kernel's domain name of the calling thread's UTS namespace.
fn set_domainname(name: &str) -> nix::Result<()> {
    let path = "/proc/sys/kernel/domainname";
    // The sysctl answers for the writer's UTS namespace.
    std::fs::write(path, name).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

/// The IPC sysctls of the calling thread's (new) IPC namespace.
fn set_ipc_vars(root: Pid, v: &pb::IpcVarEntry) -> Result<()> {
    let s = &v.sem_ctls;
    let mut vars: Vec<(&str, String)> = vec![
        ("kernel/sem", format!("{} {} {} {}", s[0], s[1], s[2], s[3])),
        ("kernel/msgmax", v.msg_ctlmax.to_string()),
        ("kernel/msgmnb", v.msg_ctlmnb.to_string()),
        ("kernel/msgmni", v.msg_ctlmni.to_string()),
        ("kernel/shmmax", v.shm_ctlmax.to_string()),
        ("kernel/shmall", v.shm_ctlall.to_string()),
        ("kernel/shmmni", v.shm_ctlmni.to_string()),
        ("kernel/shm_rmid_forced", v.shm_rmid_forced.to_string()),
        ("fs/mqueue/queues_max", v.mq_queues_max.to_string()),
        ("fs/mqueue/msg_max", v.mq_msg_max.to_string()),
        ("fs/mqueue/msgsize_max", v.mq_msgsize_max.to_string()),
    ];
    if let Some(d) = v.mq_msg_default {
        vars.push(("fs/mqueue/msg_default", d.to_string()));
    }
    if let Some(d) = v.mq_msgsize_default {
        vars.push(("fs/mqueue/msgsize_default", d.to_string()));
    }
    for (name, value) in vars {
        let path = format!("/proc/sys/{name}");
        let same = std::fs::read_to_string(&path)
            .is_ok_and(|cur| cur.split_whitespace().eq(value.split_whitespace()));
        if same {
            continue;
        }
        std::fs::write(&path, &value).map_err(|e| {
            Error::io(
                &path,
                format!("pid {root}: IPC namespace sysctl {name} = {value}"),
                e,
            )
        })?;
    }
    Ok(())
}

/// Where the rest of the restore runs once the root exists.
pub enum Driver {
    /// Here: the tree is in the engine's pid namespace.
    Here,
    /// In the forked driver, inside the new pid namespace; `report` is
    /// where it says how the restore ended.
    Inside { report: OwnedFd },
    /// In the engine, which waits for the driver (`pid`) and reads its
    /// report.
    Outside { pid: Pid, report: OwnedFd },
}

/// The highest pid below pid_max that no task, thread, zombie or helper
/// of the image needs: the driver's, while it lives.
fn driver_pid(imgs: &Images, helpers: &[Pid]) -> Pid {
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<Pid>().ok())
        .unwrap_or(32768);
    let taken = |p: Pid| {
        helpers.contains(&p)
            || imgs.zombies.iter().any(|z| z.pid == p)
            || imgs
                .tasks
                .iter()
                .any(|t| t.pid == p || t.threads.iter().any(|(tid, _)| *tid == p))
    };
    (2..max).rev().find(|&p| !taken(p)).unwrap_or(max - 1)
}

/// The root's clone flags: a new pid namespace is made by the root's
/// clone itself, since any earlier child of the engine (a helper making a
/// SysV object) would be the namespace's init.
fn root_clone_flags(imgs: &Images) -> u64 {
    if imgs.ns.pid {
        libc::CLONE_NEWPID as u64
    } else {
        0
    }
}

/// The root's clone (`clone3_with_pid`'s answers): through
/// restore/userns.rs's launcher when the tree has a user namespace, which
/// puts a pidfd of its own at `engine_pidfd` for the tasks and closes its
/// copies of their `err_pipes`.
pub fn clone_root(imgs: &Images, engine_pidfd: Option<i32>, err_pipes: &[i32]) -> nix::Result<i32> {
    let root = imgs.tasks[0].pid;
    match imgs.ns.user {
        Some(_) => super::userns::clone_root(root, root_clone_flags(imgs), engine_pidfd, err_pipes),
        None => crate::sys::clone3_with_pid(root, root_clone_flags(imgs), libc::SIGCHLD as u64),
    }
}

/// Once the root is cloned (`root_host`, as the engine sees it): with a
/// new pid namespace, forks the driver into it (module doc).
pub fn fork_driver(imgs: &Images, root_host: Pid, helpers: &[Pid]) -> Result<Driver> {
    if !imgs.ns.pid {
        return Ok(Driver::Here);
    }
    let root = imgs.tasks[0].pid;
    let path = format!("/proc/{root_host}/ns/pid");
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {root}: its new pid namespace"), e))?;
    // Only where the engine's next children go changes.
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWPID)
        .map_err(|e| Error::sys(root, "setns into its new pid namespace", e))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys(root, "pipe for the driver's report", e))?;
    let pid = driver_pid(imgs, helpers);
    let got = crate::sys::clone3_with_pid(pid, 0, libc::SIGCHLD as u64).map_err(|e| {
        Error::sys(
            root,
            format!("fork of the driver (pid {pid}) into the pid namespace"),
            e,
        )
    })?;
    if got != 0 {
        drop(wr);
        return Ok(Driver::Outside {
            pid: got,
            report: rd,
        });
    }
    drop(rd);
    // The driver: dies with the engine, sees the namespace's pids.
    // Its parent is outside: pid 0 here.
    super::child::tie_to_parent(0);
    // The tree's mount namespace is the driver's too: its /proc is the
    // tree's. Without one, the driver's own.
    let r = if imgs.ns.mnt.is_some() {
        super::mntns::mount_proc()
            .map_err(|e| Error::sys(root, "the driver: mount of the tree's /proc", e))
    } else {
        super::mntns::unshare_mounts(root, MsFlags::MS_SLAVE, "the driver").and_then(|()| {
            super::mntns::mount_proc()
                .map_err(|e| Error::sys(root, "the driver: mount of its own /proc", e))
        })
    };
    if let Err(e) = r {
        report_and_exit(wr, Err(e));
    }
    Ok(Driver::Inside { report: wr })
}

/// The driver's end: its verdict through the pipe, then exit.
pub fn report_and_exit(to: OwnedFd, r: Result<()>) -> ! {
    let code = report(to, &r);
    // No destructor of the engine's state runs: the engine's copy is the
    // one that owns it.
    std::process::exit(code)
}

/// The driver's verdict through the pipe; its exit code. Written before
/// a failed restore kills the tree: the init's death kills the driver too,
/// and the engine would be left guessing.
pub fn report(report: OwnedFd, r: &Result<()>) -> i32 {
    let mut f = std::fs::File::from(report);
    match r {
        Ok(()) => 0,
        Err(e) => {
            let _ = f.write_all(e.to_string().as_bytes());
            1
        }
    }
}

/// The engine's side: waits for the driver; on failure kills the
/// namespace (its init, `root_host`, is the engine's child) and returns
/// the driver's error.
pub fn wait_driver(root: Pid, root_host: Pid, pid: Pid, report: OwnedFd) -> Result<()> {
    let mut msg = String::new();
    let _ = std::fs::File::from(report).read_to_string(&mut msg);
    let st = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(Errno::EINTR) => continue,
            r => break r,
        }
    };
    let ok = matches!(st, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) && msg.is_empty();
    if ok {
        return Ok(());
    }
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
    let init = nix::unistd::Pid::from_raw(root_host);
    // A driver killed without a word is most often the namespace's end:
    // its init (the tree's root) exited, and the kernel killed everything
    // else in it. Its status is then the news, not the driver's SIGKILL.
    // The init finishes exiting only once the driver is reaped (above):
    // give it a moment.
    let silent = msg.is_empty();
    let mut init_ended = None;
    for _ in 0..if silent { 200 } else { 1 } {
        init_ended = match nix::sys::wait::waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                Some(format!("exited with code {code} (its own log may say why)"))
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(format!("was killed by {sig}")),
            Ok(WaitStatus::StillAlive) => None,
            _ => break,
        };
        if init_ended.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if init_ended.is_none() {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(init, None);
    }
    if msg.is_empty() {
        msg = match init_ended {
            Some(how) => format!(
                "the tree's root (pid {root}, host pid {root_host}, the namespace's init) {how} \
                 before the restore was done, which ended the namespace and the driver in it \
                 (host pid {pid}, {st:?})"
            ),
            None => format!("the driver in the new pid namespace ended with {st:?}"),
        };
    }
    Err(Error::task(root, "restore in its pid namespace", msg))
}
