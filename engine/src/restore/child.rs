//! What a freshly cloned task does for itself before it hands itself over.
//!
//! The engine clones each task with its old PID (`clone3` + `set_tid`); the
//! child is a copy of the engine and runs this code, which sets up what is
//! easiest from inside — session, files, cwd, root, umask, rlimits, name,
//! signal handlers — and then stops under `PTRACE_TRACEME`. The engine
//! takes over from there (memory, credentials, registers) with remote
//! syscalls. Nothing here allocates after the fork except error messages.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use nix::errno::Errno;

use crate::sys::{self, KernelSigaction};

/// How a task makes one of its files for itself, in the cloned child
/// (each kind of file has one: `restore/files/`). It runs in a forked copy
/// of the engine: no allocation but for error messages.
pub trait OpenFd: std::fmt::Debug + Send + Sync {
    /// Makes the file; returns some fd number holding it.
    fn open(&self, cx: &mut ChildFds) -> nix::Result<RawFd>;
    /// What it is, for an error message.
    fn describe(&self) -> String;
    /// Made after every other fd of the task (an epoll set: the files it
    /// watches must exist).
    fn after_others(&self) -> bool {
        false
    }
}

/// What the fds a child makes share while it makes them.
pub struct ChildFds {
    /// The error fd: every fd the task uses is below it.
    pub efd: RawFd,
    /// Objects made for two fds at once (the two ends of a pipe), by
    /// (fd type, object id), kept above `efd` until every fd is made.
    pub pairs: Vec<((i32, u64), RawFd, RawFd)>,
}

/// What an fd is made from.
#[derive(Debug, Clone)]
pub enum FdSource {
    /// Made by the task itself.
    Open(std::sync::Arc<dyn OpenFd>),
    /// An open file shared with other processes of the tree, or one only
    /// the engine can make, that the engine made before the tree: the
    /// task inherited the engine's fd `engine_fd` in its clone (its
    /// parent forks it before filling its own table) and puts that same
    /// open file description at its fd itself, with no remote call.
    Inherit { engine_fd: RawFd },
    /// Such a file that the engine makes only once the tree exists (over
    /// a place-holder the task inherited: `EngineFds::late`): the engine
    /// puts it into the task in the Files stage (pidfd_getfd); the child
    /// leaves the slot empty.
    Inject { engine_fd: RawFd },
}

/// One file descriptor to create in the new task.
#[derive(Debug, Clone)]
pub struct FdPlan {
    pub fd: RawFd,
    pub source: FdSource,
    pub cloexec: bool,
    /// A lower fd with the same open file description (dup'ed): this fd
    /// is a dup of it rather than a new open, so offset and flags stay
    /// shared.
    pub share_with: Option<RawFd>,
}

/// Everything the child does for itself.
#[derive(Debug, Clone, Default)]
pub struct ChildPlan {
    /// Its pid, session and group in the root's pid namespace (how the
    /// engine names it).
    pub pid: i32,
    pub sid: i32,
    pub pgid: i32,
    /// Its pids from the root's pid namespace down to its own (`[pid]`
    /// in the root's: restore/pidns.rs).
    pub ns_pid: Vec<i32>,
    /// Its group as its own pid namespace sees it (0: the leader is
    /// outside it).
    pub local_pgid: i32,
    /// Below the root's pid namespace: the inherited pidfd of the engine
    /// it keeps at this number (restore/pidns.rs `engine_pidfd`).
    pub engine_pidfd: Option<RawFd>,
    pub fds: Vec<FdPlan>,
    /// Files the engine needs open in the task while it rebuilds memory
    /// (mapped files, the exe); they land at `helper_fd_base + index`.
    pub helper_files: Vec<HelperFile>,
    pub helper_fd_base: RawFd,
    /// Where the helper fd of each mapped file lands, by file id (for the
    /// engine's memory rebuild; the child opens `helper_files` only).
    pub mapped_fds: std::collections::BTreeMap<u32, RawFd>,
    /// Where the helper fd of each shared anonymous object the engine
    /// made lands, by shmid (`EngineFds::shmem`).
    pub shmem_fds: std::collections::BTreeMap<u64, RawFd>,
    /// Where the executable's helper fd lands.
    pub exe_fd: Option<RawFd>,
    /// Cloned with CLONE_FILES into the fd table of the task that forks
    /// it (CLONE_FILES without CLONE_THREAD), which owns the table: this
    /// task makes, moves and closes no fd in it; its `helper_files` are
    /// opened by the owner (`table_helpers`), at `helper_fd_base`.
    pub shares_files: bool,
    /// For the owner of a shared table: the helper files of the tasks
    /// sharing it, opened right above its error fd, one run after the
    /// other (restore/files/mod.rs computes the same places).
    pub table_helpers: Vec<HelperFile>,
    pub cwd: Option<CString>,
    pub root: Option<CString>,
    pub umask: u32,
    /// (resource, cur, max)
    pub rlimits: Vec<(u32, u64, u64)>,
    pub comm: CString,
    pub personality: Option<u64>,
    /// The audit login uid (u32::MAX: unset), if the image has one.
    pub loginuid: Option<u32>,
    /// (signal, action) for every signal that is not SIG_DFL.
    pub sigactions: Vec<(i32, KernelSigaction)>,
    /// The engine's fd number of this task's error pipe (inherited down the
    /// tree; every task has its own).
    pub err_pipe: RawFd,
    /// Children this task forks itself, so they are its children.
    pub children: Vec<ChildPlan>,
    /// Its siblings that share its fd table (it owns the table): it forks
    /// them with CLONE_FILES and CLONE_PARENT, so they are its parent's
    /// children in its table.
    pub siblings: Vec<ChildPlan>,
    /// Forked by its parent before the parent's own setsid, to stay in the
    /// session the parent was born in (restore/sessions.rs).
    pub early: bool,
    /// Helpers that recreate a session or group whose leader is gone and
    /// fork some of this task's children (restore/sessions.rs).
    pub helpers: Vec<HelperPlan>,
    /// Zombie children: their pid, wait status, name and credentials.
    pub zombies: Vec<ZombiePlan>,
    /// Private memory shared with the children (restore/cow.rs).
    pub cow: super::cow::CowPlan,
    /// Its controlling terminal and foreground group (restore/tty.rs).
    pub tty: TtyPlan,
    /// When its user namespace is below the root's: the engine's fd of it
    /// and the number the task keeps it at (above every fd it uses) until
    /// the engine has it enter it, once its files are in
    /// (restore/userns.rs `place_fds`).
    pub user_ns: Option<(RawFd, RawFd)>,
    /// When its UTS namespace is below the root's: the engine's fd of it,
    /// which it enters first thing (restore/utsns.rs).
    pub uts_ns: Option<RawFd>,
}

/// A file the engine needs open in the task while it rebuilds memory.
#[derive(Debug, Clone)]
pub struct HelperFile {
    /// Opened with `flags`; for a file only the engine's description
    /// reaches, `/proc/self/fd/N` of that description.
    pub path: CString,
    pub flags: i32,
    /// The engine's fd of a file no path reaches (a memfd, an unlinked
    /// file): the task inherits it in its clone and reopens it through
    /// its own /proc/self before the engine's fds go. A path through the
    /// engine's /proc/PID would not do: a tree with a pid namespace of its
    /// own mounts a /proc where the engine has no pid.
    pub engine_fd: Option<RawFd>,
}

impl HelperFile {
    /// The task's reopening of the engine's fd `n`, which it inherits.
    pub fn inherited(n: RawFd, flags: i32) -> Self {
        HelperFile {
            path: CString::new(format!("/proc/self/fd/{n}")).expect("no NUL"),
            flags,
            engine_fd: Some(n),
        }
    }
}

/// What a task does for its session's terminal, with the engine's fd of
/// the terminal (inherited in the clone, closed with the engine's others).
#[derive(Debug, Clone, Default)]
pub struct TtyPlan {
    /// A session leader: makes this its controlling terminal after setsid.
    pub ctty: Option<RawFd>,
    /// Makes this group (its own, by then) the foreground one.
    pub fg: Option<(RawFd, i32)>,
}

/// A helper process with a dead leader's PID (restore/sessions.rs).
#[derive(Debug, Clone)]
pub struct HelperPlan {
    pub pid: i32,
    /// setsid() (a session and its group) or only setpgid(0, 0).
    pub setsid: bool,
    /// Forked with CLONE_PARENT: children of the helper's parent.
    pub children: Vec<ChildPlan>,
}

impl ChildPlan {
    /// Its pids from the root's pid namespace down.
    fn pids(&self) -> &[i32] {
        match self.ns_pid.is_empty() {
            true => std::slice::from_ref(&self.pid),
            false => &self.ns_pid,
        }
    }

    /// Its pid in its own pid namespace.
    pub fn local_pid(&self) -> i32 {
        self.pids()[self.level()]
    }

    /// Its pid namespace's level below the root's (0: the root's).
    fn level(&self) -> usize {
        self.ns_pid.len().saturating_sub(1)
    }

    /// The pid of a child with pids `levels` (from the root's namespace
    /// down) as this task sees it.
    fn pid_of_child(&self, levels: &[i32]) -> i32 {
        levels[self.level().min(levels.len() - 1)]
    }

    /// `c`'s clone flags: CLONE_NEWPID for the init of a pid namespace
    /// below this task's.
    fn pidns_flag(&self, c: &ChildPlan) -> u64 {
        match c.level() > self.level() {
            true => libc::CLONE_NEWPID as u64,
            false => 0,
        }
    }

    /// This task's pid as its child `c` sees it: 0 from a pid namespace
    /// below its own (the parent of an init is outside).
    fn pid_for(&self, c: &ChildPlan) -> i32 {
        match c.level() > self.level() {
            true => 0,
            false => self.local_pid(),
        }
    }

    /// The fd the error pipe is moved to: above every fd the task uses.
    pub fn err_fd(&self) -> RawFd {
        self.helper_fd_base + self.helper_files.len() as RawFd
    }
}

fn fail(err_fd: RawFd, what: &str, e: Errno) -> ! {
    let msg = format!("{what}: {e}");
    let _ = sys::fd::write(err_fd, msg.as_bytes());
    sys::process::exit_now(1)
}

fn check<T>(err_fd: RawFd, r: nix::Result<T>, what: impl FnOnce() -> String) -> T {
    match r {
        Ok(v) => v,
        Err(e) => fail(err_fd, &what(), e),
    }
}

pub fn open_at_least(path: &CString, flags: i32, min_fd: RawFd) -> nix::Result<RawFd> {
    let flags = flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC);
    let fd = sys::fd::open(path, flags)?;
    if fd >= min_fd {
        return Ok(fd);
    }
    let moved = sys::fd::dup_at_least(fd, min_fd);
    sys::fd::close(fd);
    moved
}

/// Move `fd` to `want` (dup2 + close) unless it is there already.
fn place(efd: RawFd, pid: i32, fd: RawFd, want: RawFd) -> RawFd {
    if fd == want {
        return fd;
    }
    let r = sys::fd::dup2(fd, want);
    sys::fd::close(fd);
    check(efd, r, || format!("pid {pid}: fd {want}: dup2"))
}

/// Ties the calling task's life to `parent`, the task that cloned it: a
/// task of a restore in progress must not outlive the engine, whatever
/// kills it (SIGKILL included), and a half-made task ignores every other
/// signal. The engine is the root's parent, each task the parent of those
/// it forks, so the engine's death takes the whole tree down, one
/// generation after the other. The engine sets the dumped parent-death
/// signal when it lets the tree go. If the parent died before the prctl,
/// nothing would ever send the signal: give up at once.
pub fn tie_to_parent(parent: i32) {
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64, 0, 0, 0);
    if nix::unistd::getppid().as_raw() != parent {
        // The parent is gone; so is the restore.
        sys::process::exit_now(1);
    }
}

/// Runs in the cloned child; never returns. `err_pipe` is the write end of
/// a pipe to the engine: an error message is written there before exiting,
/// and the pipe is closed (EOF) on success, right before the child stops.
/// `parent` is the PID of the task that cloned it (the engine for the
/// root).
pub fn run(plan: &ChildPlan, parent: i32) -> ! {
    run_with(plan, parent, plan.err_pipe)
}

/// [`run`], reporting errors to `early` (a task sharing its parent's fd
/// table reports to its parent through a pipe of the parent's: see
/// [`fork_sharer`]).
fn run_with(plan: &ChildPlan, parent: i32, early: RawFd) -> ! {
    tie_to_parent(parent);
    // Block everything until the engine sets the final mask: a signal now
    // would run a handler in an address space that does not exist yet.
    sys::signal::block_all();
    // Room for every fd the task had (up to the hard limit, which needs no
    // privilege), until the engine sets the dumped limit at the end.
    sys::process::raise_nofile();
    let pid = plan.pid;
    let zero = nix::unistd::Pid::from_raw(0);
    let npid = nix::unistd::Pid::from_raw;

    // Its UTS namespace below the root's, before it forks a child.
    if let Some(fd) = plan.uts_ns {
        // The engine's fd, inherited: open until the task fills its own
        // table (restore/utsns.rs keeps it).
        check(early, sys::fd::setns(fd, libc::CLONE_NEWUTS), || {
            format!("pid {pid}: setns into its UTS namespace (the engine's fd {fd})")
        });
    }

    // A tree that pivot_root'ed: its /proc, before any task enters its root.
    check(early, super::mntns::mount_tree_proc(), || {
        format!("pid {pid}: mount of the tree's /proc in its root")
    });
    // Memory shared with the children exists before any of
    // them (early ones, helpers' and zombies included) is forked.
    if let Err((what, e)) = super::cow::prepare(&plan.cow) {
        fail(early, &format!("pid {pid}: {what}"), e);
    }
    // Children that stay in the session this task was born in, before it
    // leaves it.
    for c in plan.children.iter().filter(|c| c.early) {
        fork_child(plan, c, 0, early);
    }
    // Session and process group, so the children forked below inherit them.
    if plan.sid == pid {
        check(early, nix::unistd::setsid().map(|_| ()), || {
            format!("pid {pid}: setsid")
        });
    } else if plan.pgid == pid {
        check(early, nix::unistd::setpgid(zero, zero), || {
            format!("pid {pid}: setpgid")
        });
    } else if nix::unistd::getpgrp() != npid(plan.local_pgid) {
        check(early, join_group(plan.local_pgid), || {
            format!(
                "pid {pid}: join process group {} ({} in its pid namespace)",
                plan.pgid, plan.local_pgid
            )
        });
    }
    // The session's terminal, before any child in the session exists.
    if let Some(fd) = plan.tty.ctty {
        check(early, sys::tty::set_ctty(fd, false), || {
            format!("pid {pid}: TIOCSCTTY (its controlling terminal)")
        });
    }
    if let Some((fd, pgrp)) = plan.tty.fg {
        check(early, sys::tty::set_foreground(fd, pgrp), || {
            format!("pid {pid}: TIOCSPGRP {pgrp} (the terminal's foreground group)")
        });
    }
    for h in &plan.helpers {
        let r = sys::clone3_with_pid(h.pid, 0, libc::SIGCHLD as u64);
        if check(early, r, || format!("pid {pid}: fork of helper {}", h.pid)) == 0 {
            tie_to_parent(pid);
            let r = if h.setsid {
                nix::unistd::setsid().map(|_| ())
            } else {
                nix::unistd::setpgid(zero, zero)
            };
            check(early, r, || {
                format!("helper {} (for pid {pid}): setsid/setpgid", h.pid)
            });
            for c in &h.children {
                fork_child(plan, c, libc::CLONE_PARENT as u64, early);
            }
            // The helper's work is done.
            sys::process::exit_now(0);
        }
        // Its children exist once it has exited; reap it (it is no task
        // of the image).
        let st = nix::sys::wait::waitpid(npid(h.pid), None);
        match st {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => {}
            // It wrote why into the error pipe.
            Ok(nix::sys::wait::WaitStatus::Exited(_, 1)) => sys::process::exit_now(1),
            _ => fail(
                early,
                &format!("pid {pid}: helper {} failed", h.pid),
                Errno::ECHILD,
            ),
        }
    }

    // Children, forked by their own parent with their old PIDs. A child
    // that leads a group gets it from here too, so the group exists before
    // a later sibling asks to join it.
    for c in plan.children.iter().filter(|c| !c.early) {
        fork_child(plan, c, 0, early);
    }
    for s in &plan.siblings {
        fork_sharer(plan, s, early, Some(parent));
    }
    for z in &plan.zombies {
        let (zpid, status) = (z.pid, z.status);
        let r = sys::clone3_with_pids(&z.ns_pid, 0, libc::SIGCHLD as u64);
        if check(early, r, || format!("pid {pid}: fork of zombie {zpid}")) == 0 {
            let _ = sys::prctl(libc::PR_SET_NAME, z.comm.as_ptr() as u64, 0, 0, 0);
            if let Some((uids, gids, groups)) = &z.ids {
                // The parent's waitid reports the dead child's uid.
                sys::process::set_ids(uids, gids, groups);
            }
            become_zombie(status);
        }
        // Wait until it is dead, without reaping it: its exit status is
        // for the restored program's own waitpid.
        let r = sys::process::exited_unreaped(plan.pid_of_child(&z.ns_pid), true);
        check(early, r, || format!("pid {pid}: waiting for zombie {zpid}"));
    }
    // The SIGCHLDs of those deaths are ours, not the program's.
    sys::signal::drain_sigchld();

    // A tree that pivot_root'ed: its files are named from its root.
    check(early, super::mntns::enter_tree_root(), || {
        format!("pid {pid}: entering the tree's root")
    });
    // Its user namespace's fd, where the engine looks for it.
    let user_ns = plan.user_ns.map(|(fd, at)| {
        if plan.shares_files {
            fail(
                early,
                &format!(
                    "pid {pid}: a task in a user namespace below the root's sharing its \
                     parent's fd table is not supported"
                ),
                Errno::EOPNOTSUPP,
            );
        }
        check(early, sys::fd::dup2(fd, at), || {
            format!("pid {pid}: dup2 of its user namespace's fd {fd} to {at}")
        })
    });
    // The fds: a task sharing its parent's table leaves it alone (the
    // owner fills it once every sharer is set up).
    let efd = if plan.shares_files {
        early
    } else {
        make_fds(plan, early, user_ns)
    };

    if let Some(cwd) = &plan.cwd {
        check(efd, nix::unistd::chdir(cwd.as_c_str()), || {
            format!("pid {}: chdir {:?}", plan.pid, cwd)
        });
    }
    if let Some(root) = &plan.root {
        if root.as_bytes() != b"/" {
            check(efd, nix::unistd::chroot(root.as_c_str()), || {
                format!("pid {}: chroot {:?}", plan.pid, root)
            });
        }
    }
    sys::process::set_umask(plan.umask);
    if let Some(p) = plan.personality {
        sys::process::set_personality(p);
    }
    let _ = sys::prctl(libc::PR_SET_NAME, plan.comm.as_ptr() as u64, 0, 0, 0);
    for &(res, cur, max) in &plan.rlimits {
        if res == libc::RLIMIT_NOFILE {
            // Set by the engine at the very end (restore/mod.rs): a task
            // may hold fds above its own limit, and the engine still has
            // fds to put in and take out.
            continue;
        }
        let r = sys::process::set_rlimit(res, cur, max);
        check(efd, r, || {
            format!(
                "pid {}: rlimit {} = {}/{} (raising a hard limit needs CAP_SYS_RESOURCE)",
                plan.pid,
                crate::restore::child::rlimit_name(res),
                cur,
                max
            )
        });
    }

    if let Some(uid) = plan.loginuid {
        check(efd, set_loginuid(uid), || {
            format!(
                "pid {}: loginuid {uid} (needs CAP_AUDIT_CONTROL and a mutable loginuid)",
                plan.pid
            )
        });
    }

    // Every signal's action, the default ones too: this task is a copy of
    // the engine, whose own actions (SIGPIPE ignored, handlers for SIGSEGV
    // and SIGBUS at addresses that will not be mapped) it must not keep.
    let default = KernelSigaction::default();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let act = plan
            .sigactions
            .iter()
            .find(|(s, _)| *s == sig)
            .map_or(&default, |(_, a)| a);
        check(efd, sys::rt_sigaction(sig, Some(act)), || {
            format!("pid {}: sigaction for signal {}", plan.pid, sig)
        });
    }

    // Closing our end of the error pipe signals success (EOF).
    sys::fd::close(efd);
    // Wait for the engine to seize us. Every signal is blocked, so pause()
    // only ends when the engine replaces our registers.
    sys::process::pause_forever()
}

/// Fills the task's own fd table: every fd of its plan, then the helper
/// files above them, then those of the tasks sharing it; the engine's fds
/// go. Returns the error fd, which the error pipe `early` moved to.
fn make_fds(plan: &ChildPlan, early: RawFd, user_ns: Option<RawFd>) -> RawFd {
    let efd = plan.err_fd();
    // Helper files only an engine fd reaches are reopened while this
    // task still holds its inherited copy of that fd, above every fd the
    // task will use, and moved into place at the end.
    let helpers: Vec<&HelperFile> = plan
        .helper_files
        .iter()
        .chain(&plan.table_helpers)
        .collect();
    let above = efd + 1 + plan.table_helpers.len() as RawFd;
    let early_opened: Vec<Option<RawFd>> = helpers
        .iter()
        .map(|h| {
            h.engine_fd.map(|n| {
                check(early, open_at_least(&h.path, h.flags, above), || {
                    format!(
                        "pid {}: reopen of the engine's fd {n} ({:?}) for memory restore",
                        plan.pid, h.path
                    )
                })
            })
        })
        .collect();
    // The engine's descriptions the task takes over (`FdSource::Inherit`)
    // go above every fd the task will use too, one copy per engine fd,
    // while the close below clears the engine's fd numbers.
    let mut inherited: Vec<(RawFd, RawFd)> = Vec::new();
    for f in &plan.fds {
        let FdSource::Inherit { engine_fd } = f.source else {
            continue;
        };
        if inherited.iter().any(|&(e, _)| e == engine_fd) {
            continue;
        }
        let copy = check(early, sys::fd::dup_at_least(engine_fd, above), || {
            format!(
                "pid {}: fd {}: the engine's fd {engine_fd} (a shared file), inherited",
                plan.pid, f.fd
            )
        });
        inherited.push((engine_fd, copy));
    }
    let keep: Vec<RawFd> = early_opened
        .iter()
        .flatten()
        .copied()
        .chain(inherited.iter().map(|&(_, copy)| copy))
        .chain(plan.engine_pidfd)
        .chain(user_ns)
        .collect();
    if sys::fd::dup2(early, efd).is_err() {
        sys::process::exit_now(2);
    }
    let _ = sys::fd::set_cloexec(efd);
    let _ = sys::close_range(0, efd as u32 - 1);
    close_above(efd, &keep);

    // Files, in ascending fd order: the lowest free fd is never above the
    // one we fill next, so dup2 + close lands each where it belongs. Epoll
    // sets come last, when the files they watch exist.
    let mut cx = ChildFds {
        efd,
        pairs: Vec::new(),
    };
    for pass in 0..2 {
        for f in &plan.fds {
            let src = match &f.source {
                FdSource::Open(src) => src,
                FdSource::Inherit { engine_fd } if pass == 0 => {
                    let copy = inherited
                        .iter()
                        .find(|&&(e, _)| e == *engine_fd)
                        .map(|&(_, c)| c)
                        .expect("copied above");
                    let fd = check(efd, sys::fd::dup2(copy, f.fd), || {
                        format!(
                            "pid {}: fd {}: dup2 of the engine's fd {engine_fd} (a shared file)",
                            plan.pid, f.fd
                        )
                    });
                    if f.cloexec {
                        let _ = sys::fd::set_cloexec(fd);
                    }
                    continue;
                }
                _ => continue,
            };
            if (pass == 0) == src.after_others() {
                continue;
            }
            let fd = match f.share_with {
                Some(src) => {
                    let r = sys::fd::dup2(src, f.fd);
                    check(efd, r, || {
                        format!("pid {}: fd {}: dup2 of fd {src}", plan.pid, f.fd)
                    })
                }
                None => {
                    let fd = check(efd, src.open(&mut cx), || {
                        format!("pid {}: fd {}: creating {}", plan.pid, f.fd, src.describe())
                    });
                    place(efd, plan.pid, fd, f.fd)
                }
            };
            if f.cloexec {
                let _ = sys::fd::set_cloexec(fd);
            }
        }
    }
    // Pipe ends that no fd of this task holds (kept while the other end
    // was created) go away with everything else above the error fd, and
    // so do the copies of the engine's fds, each in place now.
    for &(_, copy) in &inherited {
        sys::fd::close(copy);
    }
    close_above(efd, &keep);
    // The helper files, then those of the tasks sharing this table
    // above the error fd.
    let n_own = plan.helper_files.len();
    for (i, (h, opened)) in helpers.iter().zip(&early_opened).enumerate() {
        let want = if i < n_own {
            plan.helper_fd_base + i as RawFd
        } else {
            efd + 1 + (i - n_own) as RawFd
        };
        let fd = match opened {
            Some(fd) => {
                let r = sys::fd::dup2(*fd, want);
                sys::fd::close(*fd);
                r
            }
            None => open_at_least(&h.path, h.flags, want),
        };
        let fd = check(efd, fd, || {
            let whose = if i < n_own {
                ""
            } else {
                " of a task sharing its fd table"
            };
            format!(
                "pid {}: open {:?} for the memory restore{whose}",
                plan.pid, h.path
            )
        });
        if fd != want {
            fail(efd, "helper fd landed at the wrong number", Errno::EBADFD);
        }
    }
    efd
}

/// Closes every fd above `fd` but those in `keep`.
fn close_above(fd: RawFd, keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = fd as u32 + 1;
    for k in keep.into_iter().map(|k| k as u32) {
        if k > from {
            let _ = sys::close_range(from, k - 1);
        }
        from = from.max(k + 1);
    }
    let _ = sys::close_range(from, u32::MAX);
}

/// Forks (clone3 with `flags`) the task of `c`, which runs its plan. With
/// CLONE_PARENT (from a helper) its parent is the helper's, `plan`'s task,
/// as without. `early` is where the forking task reports errors.
fn fork_child(plan: &ChildPlan, c: &ChildPlan, flags: u64, early: RawFd) {
    let pid = plan.pid;
    let npid = nix::unistd::Pid::from_raw;
    if c.shares_files {
        return fork_sharer(plan, c, early, None);
    }
    // clone3 wants no exit signal with CLONE_PARENT: the child gets the
    // caller's (SIGCHLD), for its real parent.
    let sig = if flags & libc::CLONE_PARENT as u64 != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    };
    let r = sys::clone3_with_pids(c.pids(), flags | plan.pidns_flag(c), sig);
    let local = npid(plan.pid_of_child(c.pids()));
    match check(early, r, || format!("pid {pid}: fork of child {}", c.pid)) {
        0 => run(c, plan.pid_for(c)),
        _ if c.pgid == c.pid && c.sid != c.pid && flags & libc::CLONE_PARENT as u64 == 0 => {
            check(early, nix::unistd::setpgid(local, local), || {
                format!("pid {pid}: setpgid of child {}", c.pid)
            });
        }
        _ => {}
    }
}

/// Forks the task of `c` into this task's fd table (CLONE_FILES) and
/// waits until it has set itself up: until then the table holds what the
/// sharer still needs (the engine's fds: its children's error pipes, its
/// terminal), which the owner's own fd work closes. The sharer reports
/// to a pipe made here, whose write end it closes when done; as both
/// ends are in the one table, that close is the end of file. A sharer
/// that died without a word is noticed by polling its pidfd. A sibling
/// (`parent`: the parent both have) is forked with CLONE_PARENT too.
fn fork_sharer(plan: &ChildPlan, c: &ChildPlan, early: RawFd, parent: Option<i32>) {
    let pid = plan.pid;
    let npid = nix::unistd::Pid::from_raw;
    let who = if parent.is_some() { "sibling" } else { "child" };
    let r = sys::fd::pipe();
    let (rd, wr) = check(early, r, || {
        format!("pid {pid}: pipe for {who} {} (sharing its fd table)", c.pid)
    });
    let (flags, sig) = match parent {
        // clone3 wants no exit signal with CLONE_PARENT (see fork_child);
        // a sibling is in this task's pid namespace (restore/mod.rs).
        Some(_) => ((libc::CLONE_FILES | libc::CLONE_PARENT) as u64, 0),
        None => (
            libc::CLONE_FILES as u64 | plan.pidns_flag(c),
            libc::SIGCHLD as u64,
        ),
    };
    let r = sys::clone3_with_pids(c.pids(), flags, sig);
    if check(early, r, || {
        format!("pid {pid}: fork of {who} {} with CLONE_FILES", c.pid)
    }) == 0
    {
        run_with(c, parent.unwrap_or_else(|| plan.pid_for(c)), wr);
    }
    let local = npid(plan.pid_of_child(c.pids()));
    let r = sys::pidfd_open(local.as_raw(), 0);
    let pidfd = check(early, r, || format!("pid {pid}: pidfd of {who} {}", c.pid));
    // Only a parent may set a child's group; a sibling sets its own.
    if parent.is_none() && c.pgid == c.pid && c.sid != c.pid {
        check(early, nix::unistd::setpgid(local, local), || {
            format!("pid {pid}: setpgid of child {}", c.pid)
        });
    }
    let mut buf = [0u8; 512];
    loop {
        if sys::fd::poll_in(rd, 50).unwrap_or(false) {
            match sys::fd::read(rd, &mut buf) {
                Ok(0) => break,
                Ok(got) => {
                    // Its reason, as it wrote it, is ours to report.
                    let _ = sys::fd::write(early, &buf[..got]);
                    sys::process::exit_now(1)
                }
                Err(_) => {}
            }
            continue;
        }
        // A pidfd polls readable once its process has exited.
        if sys::fd::poll_in(pidfd, 0).unwrap_or(false) {
            fail(
                early,
                &format!(
                    "pid {pid}: {who} {} (sharing its fd table) died while setting itself up",
                    c.pid
                ),
                Errno::ECHILD,
            );
        }
    }
    // Our end; the sharer closed the other.
    sys::fd::close(rd);
    sys::fd::close(pidfd);
}

/// setpgid(0, pgid) into a group led elsewhere in the tree: the tasks are
/// created concurrently, so the group may not exist yet; wait for it,
/// within bounds.
fn join_group(pgid: i32) -> nix::Result<()> {
    let zero = nix::unistd::Pid::from_raw(0);
    let mut tries = 0;
    loop {
        match nix::unistd::setpgid(zero, nix::unistd::Pid::from_raw(pgid)) {
            Err(Errno::EPERM | Errno::ESRCH) if tries < 5000 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// /proc/self/loginuid can only be written by the task itself. Unchanged
/// values are not written, which needs no privilege at all.
fn set_loginuid(uid: u32) -> nix::Result<()> {
    const PATH: &[u8] = b"/proc/self/loginuid\0";
    // Formatted by hand: this runs in a forked child of the engine, where
    // only async-signal-safe work is allowed (no allocation).
    let mut text = [0u8; 10];
    let mut at = text.len();
    let mut v = uid;
    loop {
        at -= 1;
        text[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let want = &text[at..];
    let path = CStr::from_bytes_with_nul(PATH).expect("NUL-terminated");
    let fd = sys::fd::open(path, libc::O_RDWR | libc::O_CLOEXEC)?;
    let mut cur = [0u8; 16];
    let r = match sys::fd::read(fd, &mut cur) {
        Ok(n) if cur[..n].trim_ascii_end() == want => Ok(()),
        // At offset 0: the kernel refuses a write anywhere else.
        _ => sys::fd::pwrite(fd, want, 0).map(drop),
    };
    sys::fd::close(fd);
    r
}

/// A zombie child to recreate.
#[derive(Debug, Clone)]
pub struct ZombiePlan {
    pub pid: i32,
    /// Its pids from the root's pid namespace down to its own.
    pub ns_pid: Vec<i32>,
    /// The wait status its parent will collect.
    pub status: u32,
    pub comm: CString,
    /// (real, effective, saved uid), (gids), supplementary groups.
    pub ids: Option<([u32; 3], [u32; 3], Vec<u32>)>,
}

/// End the way the dumped zombie ended: exit code or signal.
fn become_zombie(status: u32) -> ! {
    sys::signal::die_like(status as i32)
}

pub fn rlimit_name(res: u32) -> &'static str {
    const NAMES: [&str; 16] = [
        "CPU",
        "FSIZE",
        "DATA",
        "STACK",
        "CORE",
        "RSS",
        "NPROC",
        "NOFILE",
        "MEMLOCK",
        "AS",
        "LOCKS",
        "SIGPENDING",
        "MSGQUEUE",
        "NICE",
        "RTPRIO",
        "RTTIME",
    ];
    NAMES.get(res as usize).copied().unwrap_or("?")
}
