//! The case table: one row per conformance case (what CRIU keeps in
//! `NAME.desc` files).
//!
//! Every case yields one trial per variant (see [`Variant`]). A row says
//! which program to run, with which case-specific options, as whom, in which
//! flavours, with which extra engine options, and whether it is expected to
//! fail (always with a reason).

use std::time::Duration;

/// The program of a case. C programs are compiled by build.rs from
/// `zdtm/cases/NAME.c` into `$ZDTM_BIN_DIR/NAME`; Rust programs are cargo
/// binaries, named by their path.
#[derive(Debug, Clone, Copy)]
pub enum Program {
    C(&'static str),
    Rust(&'static str),
}

/// Namespace flavours a case may run in. Every row runs in all three
/// unless it lists its own (with the reason a flavour is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Host namespaces.
    H,
    /// New pid, mount, net, ipc and uts namespaces (`ZDTM_NEWNS=1`).
    Ns,
    /// As `Ns`, plus a new user namespace that owns the others
    /// (`ZDTM_USERNS=1`).
    Uns,
}

impl Flavor {
    /// Between the case name and the variant suffix in the trial name.
    pub fn suffix(self) -> &'static str {
        match self {
            Flavor::H => "",
            Flavor::Ns => "/ns",
            Flavor::Uns => "/uns",
        }
    }

    /// Used in work directory names.
    pub fn label(self) -> &'static str {
        match self {
            Flavor::H => "h",
            Flavor::Ns => "ns",
            Flavor::Uns => "uns",
        }
    }

    /// The variants run in this flavour. A --leave-running dump of a
    /// tree in its own namespaces checks nothing the `h` trial does not,
    /// and the tripled suite must stay within its time budget: `ns` runs
    /// `once` and `iter3`; `uns` runs `once` and what goes another way
    /// in a user namespace: the lazy restore (the tasks make their
    /// userfaultfds otherwise there, restore/memory.rs `register_lazy`),
    /// and the memory cases' pre-dump and page-server dumps and lazy
    /// restore from a page server (whose connections are made outside
    /// the tree's network namespace).
    pub fn variants(self) -> &'static [Variant] {
        match self {
            Flavor::H => &Variant::ALL,
            Flavor::Ns => &[Variant::Once, Variant::Iter3],
            Flavor::Uns => &[
                Variant::Once,
                Variant::PreDump,
                Variant::PageServer,
                Variant::Lazy,
                Variant::LazyRemote,
            ],
        }
    }
}

/// What a trial does between "ready" and SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Dump, restore, verify.
    Once,
    /// Three dump/restore cycles in a row, then verify.
    Iter3,
    /// Dump with --leave-running; the original goes on and is verified.
    LeaveRunning,
    /// Pre-dump, let the tree run (and write) ~100 ms, dump with
    /// --prev-images-dir, restore, verify. Only for cases with
    /// `pre_dump` (memory-heavy ones), to keep the suite's cost down.
    PreDump,
    /// Dump with the pages sent to a page server (`ckpt page-server` on
    /// loopback), its pages put with the other images, restore, verify.
    /// For the same cases as [`Variant::PreDump`].
    PageServer,
    /// Two dump/restore cycles, each restore with the dumped vDSO
    /// remapped as on another kernel (`CKPT_VDSO=proxy`: a copy of the
    /// dumped vDSO whose functions jump into this kernel's, placed
    /// elsewhere), then verify. For the cases with `vdso`.
    VdsoProxy,
    /// Restore with `--lazy-pages`: the tree runs while the lazy-pages
    /// daemon still fills its private anonymous memory. For every case of
    /// the host and `uns` flavours but those with a [`Case::no_lazy`]
    /// reason.
    Lazy,
    /// Restore with `--lazy-pages --page-server`: the dump's pages files
    /// are moved out of its directory to a `ckpt page-server
    /// --lazy-pages` on loopback, which the restore and its lazy-pages
    /// daemon fetch them from. For the cases of [`Variant::PreDump`] that
    /// the lazy variant runs.
    LazyRemote,
}

impl Variant {
    pub const ALL: [Variant; 8] = [
        Variant::Once,
        Variant::Iter3,
        Variant::LeaveRunning,
        Variant::PreDump,
        Variant::PageServer,
        Variant::VdsoProxy,
        Variant::Lazy,
        Variant::LazyRemote,
    ];

    /// Appended to the case name to form the trial name.
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Once => "",
            Variant::Iter3 => "/iter3",
            Variant::LeaveRunning => "/leave-running",
            Variant::PreDump => "/pre-dump",
            Variant::PageServer => "/page-server",
            Variant::VdsoProxy => "/vdso-proxy",
            Variant::Lazy => "/lazy",
            Variant::LazyRemote => "/lazy-remote",
        }
    }

    /// Used in work directory names.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Once => "once",
            Variant::Iter3 => "iter3",
            Variant::LeaveRunning => "leave-running",
            Variant::PreDump => "pre-dump",
            Variant::PageServer => "page-server",
            Variant::VdsoProxy => "vdso-proxy",
            Variant::Lazy => "lazy",
            Variant::LazyRemote => "lazy-remote",
        }
    }

    /// Number of dumps.
    pub fn cycles(self) -> usize {
        match self {
            Variant::Iter3 => 3,
            Variant::VdsoProxy => 2,
            _ => 1,
        }
    }
}

/// An expected failure. The reason is mandatory and printed with the result;
/// a marked trial that passes fails ("XPASS"), so stale marks get removed.
#[derive(Debug, Clone, Copy)]
pub struct Xfail {
    pub reason: &'static str,
    /// Variants the mark applies to; empty means all.
    pub variants: &'static [Variant],
}

impl Xfail {
    pub fn applies_to(&self, v: Variant) -> bool {
        self.variants.is_empty() || self.variants.contains(&v)
    }
}

/// A kernel-feature gate: `Err(reason)` reports the case ignored.
pub type FeatureGate = fn() -> Result<(), String>;

/// Runs after a dump, once the dumped tree is gone, before the restore
/// (CRIU's zdtm keeps such steps in `.hook` files): it changes the world
/// the restore finds, for example removes a cgroup or an IPC object the
/// restore must then recreate. Gets the work directory and the cycle
/// number (1-based); `Err` fails the trial.
pub type BetweenHook = fn(&std::path::Path, usize) -> Result<(), String>;

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub program: Program,
    /// Case-specific program options; `{dir}` becomes the work directory.
    pub args: &'static [&'static str],
    /// Runs as root. Without it the program drops to the test credentials
    /// (ZDTM_UID/ZDTM_GID/ZDTM_GROUPS) before doing anything else.
    pub suid: bool,
    /// Dump or restore is expected to fail (and the case to survive a failed
    /// dump).
    pub crfail: bool,
    /// For a crfail case: words the engine's error must contain, so that
    /// a failure for another reason does not count as the expected one.
    pub crfail_reason: Option<&'static str>,
    /// Must run alone.
    pub excl: bool,
    /// Not run by default (`--ignored` / `--include-ignored` runs it).
    pub noauto: bool,
    pub flavors: &'static [Flavor],
    pub dump_opts: &'static [&'static str],
    pub restore_opts: &'static [&'static str],
    pub feature: Option<FeatureGate>,
    /// Between dump and restore (not in the leave-running variant).
    pub between: Option<BetweenHook>,
    /// Limit for each step: start, each engine command, stop.
    pub timeout: Duration,
    pub xfail: Option<Xfail>,
    /// The tree forks and reaps short-lived children all the time:
    /// the runner's tree checks compare only the processes that exist both
    /// before and after (the root among them).
    pub forks: bool,
    /// Also run the `pre-dump` variant (incremental dump after a
    /// pre-dump): memory-heavy cases, trees, threads, shared memory.
    pub pre_dump: bool,
    /// Also run the `vdso-proxy` variant: cases whose programs call the
    /// vDSO (clock_gettime, gettimeofday) after a restore, in one task,
    /// threads and a tree.
    pub vdso: bool,
    /// Why the `lazy` variant does not apply to this case (None: it runs).
    pub no_lazy: Option<&'static str>,
    /// Why its `uns` trials map the ids below 65536 to themselves
    /// (`ZDTM_USERNS=1`) instead of shifting every id as the flavour does
    /// (None: shifted; see [`UNS_SHIFT`]).
    pub uns_identity: Option<&'static str>,
}

impl Case {
    /// The defaults of a row: unprivileged, automatic, the `h`, `ns`
    /// and `uns` flavours.
    pub const DEFAULT: Case = Case {
        name: "",
        program: Program::C(""),
        args: &[],
        suid: false,
        crfail: false,
        crfail_reason: None,
        excl: false,
        noauto: false,
        flavors: &[Flavor::H, Flavor::Ns, Flavor::Uns],
        dump_opts: &[],
        restore_opts: &[],
        feature: None,
        between: None,
        timeout: Duration::from_secs(30),
        xfail: None,
        forks: false,
        pre_dump: false,
        vdso: false,
        no_lazy: None,
        uns_identity: None,
    };
}

/// Credentials of unprivileged cases (the values CRIU's zdtm.py uses for
/// the uid and gid).
pub const TEST_UID: u32 = 18943;
pub const TEST_GID: u32 = 58467;
pub const TEST_GROUPS: &[u32] = &[58467, 58468];
/// The `uns` flavour shifts every id by these (uid, gid) (zdtm/lib/ns.c's
/// USERNS_SHIFTED_*, `ZDTM_USERNS=2`), as CRIU's zdtm and an unprivileged
/// container do: the host's root, whose ids the engine has, is not mapped
/// in the tree's user namespace. The trial's work directory is given to
/// the program's ids as the host sees them.
pub const UNS_SHIFT: (u32, u32) = (100000, 200000);

pub static CASES: &[Case] = &[
    Case {
        name: "env",
        program: Program::C("env"),
        ..Case::DEFAULT
    },
    Case {
        name: "maps",
        program: Program::C("maps"),
        pre_dump: true,
        ..Case::DEFAULT
    },
    Case {
        name: "mem",
        program: Program::C("mem"),
        pre_dump: true,
        vdso: true,
        ..Case::DEFAULT
    },
    Case {
        name: "mem_dirty",
        program: Program::C("mem_dirty"),
        pre_dump: true,
        ..Case::DEFAULT
    },
    Case {
        name: "sleep",
        program: Program::C("sleep"),
        vdso: true,
        ..Case::DEFAULT
    },
    Case {
        name: "file",
        program: Program::C("file"),
        ..Case::DEFAULT
    },
    Case {
        name: "cwd",
        program: Program::C("cwd"),
        ..Case::DEFAULT
    },
    Case {
        name: "uid",
        program: Program::C("uid"),
        ..Case::DEFAULT
    },
    Case {
        name: "rust_mem",
        program: Program::Rust(env!("CARGO_BIN_EXE_zdtm-rust-mem")),
        pre_dump: true,
        ..Case::DEFAULT
    },
    // Signals, timers and threads.
    Case {
        name: "sigaction_all",
        program: Program::C("sigaction_all"),
        ..Case::DEFAULT
    },
    Case {
        name: "sigaction_default",
        program: Program::C("sigaction_default"),
        ..Case::DEFAULT
    },
    Case {
        name: "sigpending",
        program: Program::C("sigpending"),
        ..Case::DEFAULT
    },
    Case {
        name: "sigaltstack",
        program: Program::C("sigaltstack"),
        ..Case::DEFAULT
    },
    Case {
        name: "signalfd",
        program: Program::C("signalfd"),
        ..Case::DEFAULT
    },
    Case {
        name: "stopped",
        program: Program::C("stopped"),
        ..Case::DEFAULT
    },
    Case {
        name: "itimers",
        program: Program::C("itimers"),
        timeout: Duration::from_secs(60),
        ..Case::DEFAULT
    },
    Case {
        name: "posix_timers",
        program: Program::C("posix_timers"),
        timeout: Duration::from_secs(60),
        ..Case::DEFAULT
    },
    Case {
        name: "timerfd",
        program: Program::C("timerfd"),
        suid: true,
        timeout: Duration::from_secs(60),
        ..Case::DEFAULT
    },
    Case {
        name: "threads_basic",
        program: Program::C("threads_basic"),
        pre_dump: true,
        vdso: true,
        ..Case::DEFAULT
    },
    Case {
        name: "epoll_tree",
        program: Program::C("epoll_tree"),
        ..Case::DEFAULT
    },
    Case {
        name: "epoll_shared_pipe",
        program: Program::C("epoll_shared_pipe"),
        ..Case::DEFAULT
    },
    Case {
        name: "epoll_closed_target",
        program: Program::C("epoll_closed_target"),
        ..Case::DEFAULT
    },
    Case {
        name: "epoll_refused_elsewhere",
        program: Program::C("epoll_closed_target"),
        args: &["--kind=elsewhere"],
        crfail: true,
        crfail_reason: Some("open at no other fd of the process"),
        ..Case::DEFAULT
    },
    Case {
        name: "threads_fds",
        program: Program::C("threads_fds"),
        ..Case::DEFAULT
    },
    Case {
        name: "threads_signals",
        program: Program::C("threads_signals"),
        ..Case::DEFAULT
    },
    Case {
        name: "threads_1000",
        program: Program::C("threads_1000"),
        excl: true,
        timeout: Duration::from_secs(120),
        ..Case::DEFAULT
    },
    Case {
        name: "threads_rust",
        program: Program::Rust(env!("CARGO_BIN_EXE_zdtm-threads-rust")),
        pre_dump: true,
        ..Case::DEFAULT
    },
    Case {
        name: "thread_leader_exit",
        program: Program::C("thread_leader_exit"),
        xfail: Some(Xfail {
            reason: "runner: a zombie thread-group leader counts as a dead process (start, check_tree); engine: refuses zombie leaders",
            variants: &[],
        }),
        ..Case::DEFAULT
    },
    // Process trees and task attributes.
    Case {
        name: "tree_basic",
        program: Program::C("tree_basic"),
        pre_dump: true,
        vdso: true,
        ..Case::DEFAULT
    },
    Case {
        name: "zombie",
        program: Program::C("zombie"),
        ..Case::DEFAULT
    },
    Case {
        name: "pgid_sid",
        program: Program::C("pgid_sid"),
        ..Case::DEFAULT
    },
    Case {
        name: "tree_32",
        program: Program::C("tree_many"),
        args: &["--procs=32"],
        ..Case::DEFAULT
    },
    Case {
        name: "tree_300",
        program: Program::C("tree_many"),
        args: &["--procs=300"],
        excl: true,
        timeout: Duration::from_secs(120),
        ..Case::DEFAULT
    },
    Case {
        name: "rlimits_nice",
        program: Program::C("rlimits_nice"),
        ..Case::DEFAULT
    },
    Case {
        name: "shm_shared_child",
        program: Program::C("shm_shared_child"),
        pre_dump: true,
        ..Case::DEFAULT
    },
    Case {
        name: "cow_shared_child",
        program: Program::C("cow_shared_child"),
        pre_dump: true,
        xfail: Some(Xfail {
            reason: "an incremental dump records no copy-on-write sharing with the parent process, and a lazy restore from a page server holds none (its lazy runs are fixed when the pages are fetched, before the tree is planned): each process's pages are restored intact but unshared",
            variants: &[Variant::PreDump, Variant::LazyRemote],
        }),
        ..Case::DEFAULT
    },
    // Images as CRIU writes them (every process's pages stored): the
    // restore must find the sharing again by content.
    Case {
        name: "cow_shared_child_criu_compatible",
        program: Program::C("cow_shared_child"),
        dump_opts: &["--criu-compatible"],
        ..Case::DEFAULT
    },
    Case {
        name: "pipe_shared_child",
        program: Program::C("pipe_shared_child"),
        ..Case::DEFAULT
    },
    Case {
        name: "pipe_full",
        program: Program::C("pipe_full"),
        ..Case::DEFAULT
    },
    Case {
        name: "pipe_full_child",
        program: Program::C("pipe_full"),
        args: &["--kind=child"],
        ..Case::DEFAULT
    },
    // An fd table shared by a parent and its child (CLONE_FILES without
    // CLONE_THREAD), the child having a child of its own with its own
    // table.
    Case {
        name: "fdt_shared",
        program: Program::C("fdt_shared"),
        ..Case::DEFAULT
    },
    // Two siblings share a table their parent does not have: the owner
    // clones the other with CLONE_FILES and CLONE_PARENT.
    Case {
        name: "fdt_shared_siblings",
        program: Program::C("fdt_shared"),
        args: &["--layout=siblings"],
        ..Case::DEFAULT
    },
    Case {
        name: "pidfd",
        program: Program::C("pidfd"),
        ..Case::DEFAULT
    },
    Case {
        name: "pidfd_reaped",
        program: Program::C("pidfd"),
        args: &["--reaped"],
        ..Case::DEFAULT
    },
    Case {
        name: "inotify",
        program: Program::C("inotify"),
        ..Case::DEFAULT
    },
    Case {
        name: "inotify_refused_queued",
        program: Program::C("inotify"),
        args: &["--queued"],
        crfail: true,
        crfail_reason: Some("inotify events are queued"),
        ..Case::DEFAULT
    },
    // A watch on a file since unlinked, kept open: a ghost file.
    Case {
        name: "inotify_unlinked",
        program: Program::C("inotify_unlinked"),
        ..Case::DEFAULT
    },
    // The same file held by a shared mapping only.
    Case {
        name: "inotify_unlinked_mapped",
        program: Program::C("inotify_unlinked"),
        args: &["--mapped"],
        ..Case::DEFAULT
    },
    // The instance shared with a child (made once, by the engine).
    Case {
        name: "inotify_unlinked_shared",
        program: Program::C("inotify_unlinked"),
        args: &["--shared"],
        ..Case::DEFAULT
    },
    Case {
        name: "inotify_unlinked_refused_open",
        program: Program::C("inotify_unlinked"),
        args: &["--refuse=open"],
        crfail: true,
        // Copying the file into the images opens it: the watch would see it.
        crfail_reason: Some("its mask has IN_OPEN"),
        ..Case::DEFAULT
    },
    Case {
        name: "inotify_unlinked_refused_dir",
        program: Program::C("inotify_unlinked"),
        args: &["--refuse=dir"],
        crfail: true,
        // The directory's watch (no IN_EXCL_UNLINK) would see the copy.
        crfail_reason: Some("without IN_EXCL_UNLINK"),
        ..Case::DEFAULT
    },
    Case {
        name: "fanotify",
        program: Program::C("fanotify"),
        suid: true,
        // uns: fanotify_init needs CAP_SYS_ADMIN in the initial user namespace
        flavors: &[Flavor::H, Flavor::Ns],
        ..Case::DEFAULT
    },
    Case {
        name: "fanotify_refused_fsmark",
        program: Program::C("fanotify"),
        args: &["--fsmark"],
        suid: true,
        crfail: true,
        crfail_reason: Some("a mark on a whole filesystem"),
        // uns: fanotify_init needs CAP_SYS_ADMIN in the initial user namespace
        flavors: &[Flavor::H, Flavor::Ns],
        ..Case::DEFAULT
    },
    Case {
        name: "file_locks_held",
        program: Program::C("file_locks_held"),
        dump_opts: &["--file-locks"],
        restore_opts: &["--file-locks"],
        ..Case::DEFAULT
    },
    Case {
        name: "file_locks_refused_flock",
        program: Program::C("file_locks"),
        args: &["--kind=flock"],
        crfail: true,
        crfail_reason: Some("file locks are not supported yet without --file-locks"),
        ..Case::DEFAULT
    },
    Case {
        name: "file_locks_refused_posix",
        program: Program::C("file_locks"),
        args: &["--kind=posix"],
        crfail: true,
        crfail_reason: Some("file locks are not supported yet without --file-locks"),
        ..Case::DEFAULT
    },
    Case {
        name: "file_locks_refused_ofd",
        program: Program::C("file_locks"),
        args: &["--kind=ofd"],
        crfail: true,
        crfail_reason: Some("file locks are not supported yet without --file-locks"),
        ..Case::DEFAULT
    },
    // Owners and signals of open files (F_SETOWN_EX, F_SETSIG, O_ASYNC).
    Case {
        name: "fown",
        program: Program::C("fown"),
        ..Case::DEFAULT
    },
    Case {
        name: "fown_refused_outside",
        program: Program::C("fown"),
        args: &["--outside"],
        crfail: true,
        crfail_reason: Some("process 1, which is not in the dumped tree"),
        // ns: its owner outside the tree lives outside the namespace too, where the tree's F_GETOWN sees pid 0 (no owner)
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    // Named pipes (FIFOs): data in flight, flags, paths.
    Case {
        name: "fifo",
        program: Program::C("fifo"),
        ..Case::DEFAULT
    },
    Case {
        name: "fifo_shared_child",
        program: Program::C("fifo"),
        args: &["--kind=child"],
        ..Case::DEFAULT
    },
    Case {
        name: "fifo_unlinked",
        program: Program::C("fifo"),
        args: &["--kind=unlinked"],
        ..Case::DEFAULT
    },
    // UNIX socket pairs: queued data, shutdown, options, across fork.
    Case {
        name: "unix_socketpair",
        program: Program::C("unix_socketpair"),
        ..Case::DEFAULT
    },
    Case {
        name: "unix_socketpair_child",
        program: Program::C("unix_socketpair_child"),
        ..Case::DEFAULT
    },
    // A pty pair in the tree: number, termios, window, packet mode, lock,
    // data queued both ways, the master shared with a child.
    Case {
        name: "pty_pair",
        program: Program::C("pty_pair"),
        // Alone: it checks that its pts number comes back, which the
        // restore gives only while it is free, and a pty case running
        // beside it can take the number between the dump and the restore.
        excl: true,
        ..Case::DEFAULT
    },
    // A session leader's controlling pty, a foreground and a background
    // group, /dev/tty opens.
    Case {
        name: "pty_ctty",
        program: Program::C("pty_ctty"),
        ..Case::DEFAULT
    },
    // Terminals the dump refuses, naming them; the tree goes on.
    Case {
        name: "tty_refused_external",
        program: Program::C("tty_refused"),
        args: &["--kind=external"],
        crfail: true,
        crfail_reason: Some("outside the tree"),
        // ns: the terminal it is refused for is set up outside the pid namespace; the ns init holds none
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "tty_refused_console",
        program: Program::C("tty_refused"),
        args: &["--kind=console"],
        suid: true,
        crfail: true,
        // the namespace's shifted root cannot open the host's device, and the case skips
        uns_identity: Some("the host's device is closed to a shifted root"),
        crfail_reason: Some("system console"),
        ..Case::DEFAULT
    },
    Case {
        name: "tty_refused_vt",
        program: Program::C("tty_refused"),
        args: &["--kind=vt"],
        suid: true,
        crfail: true,
        // the namespace's shifted root cannot open the host's device, and the case skips
        uns_identity: Some("the host's device is closed to a shifted root"),
        crfail_reason: Some("virtual consoles"),
        ..Case::DEFAULT
    },
    Case {
        name: "tty_refused_serial",
        program: Program::C("tty_refused"),
        args: &["--kind=serial"],
        suid: true,
        crfail: true,
        // the namespace's shifted root cannot open the host's device, and the case skips
        uns_identity: Some("the host's device is closed to a shifted root"),
        crfail_reason: Some("serial terminals"),
        ..Case::DEFAULT
    },
    // A pty of a devpts instance mounted nowhere (the root mounted it and unmounted it lazily): in
    // h the tree has no mount namespace to mount it again in, in ns and uns it is not among the
    // namespace's mounts.
    Case {
        name: "tty_refused_devpts_gone",
        program: Program::C("tty_refused"),
        args: &["--kind=devpts_gone"],
        suid: true,
        crfail: true,
        crfail_reason: Some("of the devpts instance"),
        ..Case::DEFAULT
    },
    // A devpts instance of the tree's whose ptmx node it chmod'ed: the restore mounts it again with its
    // ptmxmode option only.
    Case {
        name: "tty_refused_ptmx_chmod",
        program: Program::C("tty_refused"),
        args: &["--kind=ptmx_chmod"],
        suid: true,
        crfail: true,
        crfail_reason: Some("a chmod of it is not restored"),
        // ns, uns: the instance must be in a mount namespace of the tree's own to be restored at all
        flavors: &[Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    // Bound UNIX sockets (paths, removed paths, abstract names, autobind);
    // listeners with accepted and waiting connections, datagram clients.
    Case {
        name: "unix_bound",
        program: Program::C("unix_bound"),
        ..Case::DEFAULT
    },
    // Files in flight (SCM_RIGHTS) in UNIX socket queues: pipes, regular
    // files (one shared with the process), a socket with its own queue,
    // several fds in one message, on a stream and a datagram pair and to
    // a named datagram socket.
    Case {
        name: "unix_scm_rights",
        program: Program::C("unix_scm_rights"),
        ..Case::DEFAULT
    },
    // Senders' credentials (SCM_CREDENTIALS) of queued messages: this
    // process, a child of other uid and gid, a sender that exited; on a
    // datagram and a stream pair and a named socket. Root: the child
    // changes its uid.
    Case {
        name: "unix_scm_creds",
        program: Program::C("unix_scm_creds"),
        suid: true,
        ..Case::DEFAULT
    },
    Case {
        name: "unix_listen",
        program: Program::C("unix_listen"),
        ..Case::DEFAULT
    },
    Case {
        name: "unix_options",
        program: Program::C("unix_options"),
        ..Case::DEFAULT
    },
    Case {
        name: "unix_passcred",
        program: Program::C("unix_passcred"),
        ..Case::DEFAULT
    },
    Case {
        name: "unix_ext",
        program: Program::C("unix_ext"),
        dump_opts: &["--ext-unix-sk"],
        restore_opts: &["--ext-unix-sk"],
        ..Case::DEFAULT
    },
    // One UNIX socket of each kind (unix_sockets.c), checkpointed.
    Case {
        name: "unix_sockets_bound",
        program: Program::C("unix_sockets"),
        args: &["--kind=bound"],
        ..Case::DEFAULT
    },
    Case {
        name: "unix_sockets_listen",
        program: Program::C("unix_sockets"),
        args: &["--kind=listen"],
        ..Case::DEFAULT
    },
    Case {
        name: "unix_sockets_unconnected",
        program: Program::C("unix_sockets"),
        args: &["--kind=unconnected"],
        ..Case::DEFAULT
    },
    Case {
        name: "unix_sockets_rights",
        program: Program::C("unix_sockets"),
        args: &["--kind=rights"],
        ..Case::DEFAULT
    },
    Case {
        name: "unix_sockets_creds",
        program: Program::C("unix_sockets"),
        args: &["--kind=creds"],
        ..Case::DEFAULT
    },
    // Sockets the dump refuses, naming them; the tree goes on.
    Case {
        name: "unix_refused_pending_data",
        program: Program::C("unix_sockets"),
        args: &["--kind=pending_data"],
        crfail: true,
        crfail_reason: Some("has not accepted yet"),
        ..Case::DEFAULT
    },
    Case {
        name: "unix_refused_pending_closed",
        program: Program::C("unix_sockets"),
        args: &["--kind=pending_closed"],
        crfail: true,
        crfail_reason: Some("whose client closed its end"),
        ..Case::DEFAULT
    },
    Case {
        name: "unix_refused_outside",
        program: Program::C("unix_sockets"),
        args: &["--kind=outside"],
        crfail: true,
        crfail_reason: Some("is outside the dumped tree"),
        // ns: its peer outside the tree is outside the namespace's mount and network view too
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    // INET sockets.
    Case {
        name: "inet_tcp4",
        program: Program::C("inet_tcp"),
        args: &["--family=4"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp6",
        program: Program::C("inet_tcp"),
        args: &["--family=6"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp4_timewait",
        program: Program::C("inet_tcp"),
        args: &["--family=4", "--timewait"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp6_timewait",
        program: Program::C("inet_tcp"),
        args: &["--family=6", "--timewait"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_udp4",
        program: Program::C("inet_udp"),
        args: &["--family=4"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_udp6",
        program: Program::C("inet_udp"),
        args: &["--family=6"],
        ..Case::DEFAULT
    },
    Case {
        name: "netlink",
        program: Program::C("netlink"),
        ..Case::DEFAULT
    },
    // Packet sockets: binding, options, memberships, fanout; rings refused.
    Case {
        name: "packet_sock",
        program: Program::C("packet_sock"),
        args: &["--kind=plain"],
        suid: true,
        ..Case::DEFAULT
    },
    Case {
        name: "packet_refused_ring",
        program: Program::C("packet_sock"),
        args: &["--kind=ring"],
        suid: true,
        crfail: true,
        crfail_reason: Some("mapped ring (PACKET_RX_RING)"),
        ..Case::DEFAULT
    },
    // Established TCP connections (--tcp-established): between two
    // processes of the tree, and to a peer outside it, with full queues
    // and bytes never sent both ways.
    Case {
        name: "inet_tcp_conn4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=pair"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=pair"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_ext4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=ext"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        between: Some(let_peer_probe),
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_ext6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=ext"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        between: Some(let_peer_probe),
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_half4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=half"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_half6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=half"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_exthalf4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=exthalf"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        between: Some(let_peer_probe),
        // ns: its peer lives outside the tree, and the peer's end is dumped in CLOSE-WAIT; ext peers need the host's network namespace
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_exthalf6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=exthalf"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        between: Some(let_peer_probe),
        // ns: its peer lives outside the tree, and the peer's end is dumped in CLOSE-WAIT; ext peers need the host's network namespace
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_closewait4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=closewait"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_closewait6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=closewait"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_extclosewait4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=extclosewait"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        between: Some(let_peer_probe),
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_conn_extclosewait6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=extclosewait"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        between: Some(let_peer_probe),
        ..Case::DEFAULT
    },
    // The program drops C's packets with an nft table of its own (root),
    // kept in the net namespace the tree runs in.
    Case {
        name: "inet_tcp_conn_lastack4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=lastack"],
        suid: true,
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    // The program drops C's packets with an nft table of its own (root),
    // kept in the net namespace the tree runs in.
    Case {
        name: "inet_tcp_conn_lastack6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=lastack"],
        suid: true,
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    // As lastack: the program's own nft tables hold the FINs back.
    Case {
        name: "inet_tcp_conn_closing4",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=4", "--mode=closing"],
        suid: true,
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    // As lastack: the program's own nft tables hold the FINs back.
    Case {
        name: "inet_tcp_conn_closing6",
        program: Program::C("inet_tcp_conn"),
        args: &["--family=6", "--mode=closing"],
        suid: true,
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        ..Case::DEFAULT
    },
    // Connections waiting in a listening socket's accept queue: the
    // kernel has no way to put a connection back into an accept queue
    // with its sequence numbers (and accepting them at dump could not be
    // undone for a dump that fails or leaves the tree running).
    Case {
        name: "inet_tcp_backlog4",
        program: Program::C("inet_tcp_backlog"),
        args: &["--family=4"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        crfail: true,
        crfail_reason: Some("with 3 connections not accepted yet"),
        ..Case::DEFAULT
    },
    Case {
        name: "inet_tcp_backlog6",
        program: Program::C("inet_tcp_backlog"),
        args: &["--family=6"],
        dump_opts: &["--tcp-established"],
        restore_opts: &["--tcp-established"],
        crfail: true,
        crfail_reason: Some("TCP socket listening on [::1]:"),
        ..Case::DEFAULT
    },
    Case {
        name: "inet_refused_established4",
        program: Program::C("inet_refused"),
        args: &["--family=4"],
        crfail: true,
        crfail_reason: Some("TCP connection 127.0.0.1:"),
        ..Case::DEFAULT
    },
    Case {
        name: "inet_refused_established6",
        program: Program::C("inet_refused"),
        args: &["--family=6"],
        crfail: true,
        crfail_reason: Some("established TCP connections are dumped only with --tcp-established"),
        ..Case::DEFAULT
    },
    // memfd, POSIX shm, unlinked files, shared file mappings.
    Case {
        name: "memfd",
        program: Program::C("memfd"),
        ..Case::DEFAULT
    },
    Case {
        name: "file_shared_child",
        program: Program::C("shared_file_child"),
        args: &["--kind=file"],
        ..Case::DEFAULT
    },
    Case {
        name: "posix_shm_child",
        program: Program::C("shared_file_child"),
        pre_dump: true,
        args: &["--kind=shm"],
        ..Case::DEFAULT
    },
    Case {
        name: "posix_shm_unlinked",
        program: Program::C("shared_file_child"),
        args: &["--kind=shm", "--unlink_it=1"],
        ..Case::DEFAULT
    },
    Case {
        name: "unlinked_file",
        program: Program::C("shared_file_child"),
        args: &["--kind=file", "--unlink_it=1"],
        ..Case::DEFAULT
    },
    Case {
        // 16 KiB unlinked: over the limit, the dump must refuse it and
        // leave the tree running as it was.
        name: "unlinked_file_over_ghost_limit",
        program: Program::C("shared_file_child"),
        args: &["--kind=file", "--unlink_it=1"],
        dump_opts: &["--ghost-limit=8K"],
        crfail: true,
        crfail_reason: Some("ghost limit"),
        ..Case::DEFAULT
    },
    Case {
        name: "exe_unlinked",
        program: Program::C("exe_unlinked"),
        args: &["--how=unlink"],
        ..Case::DEFAULT
    },
    Case {
        name: "exe_memfd",
        program: Program::C("exe_unlinked"),
        args: &["--how=memfd"],
        ..Case::DEFAULT
    },
    Case {
        name: "sid_orphans",
        program: Program::C("sid_orphans"),
        ..Case::DEFAULT
    },
    Case {
        name: "seccomp",
        program: Program::C("seccomp"),
        ..Case::DEFAULT
    },
    Case {
        name: "loginuid",
        program: Program::C("loginuid"),
        suid: true,
        // uns: setting a loginuid needs CAP_AUDIT_CONTROL in the initial user namespace (a write
        // from a user namespace fails here: unshare --user --map-root-user); the case's child
        // exits when its write fails, and the root's write to it after the restore dies of
        // SIGPIPE: a limit of the case, not of the restore
        flavors: &[Flavor::H, Flavor::Ns],
        ..Case::DEFAULT
    },
    // SysV IPC: the *_recreate rows remove the objects between
    // dump and restore, so the restore must create them again with their
    // ids, keys and contents.
    Case {
        name: "sysv_shm",
        program: Program::C("sysv_shm"),
        pre_dump: true,
        ..Case::DEFAULT
    },
    Case {
        name: "sysv_shm_recreate",
        program: Program::C("sysv_shm"),
        between: Some(remove_sysvipc),
        // ns: its between-hook removes the objects from the runner's IPC namespace; the case's are in its own
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "sysv_sem_msg",
        program: Program::C("sysv_sem_msg"),
        ..Case::DEFAULT
    },
    Case {
        name: "sysv_sem_msg_recreate",
        program: Program::C("sysv_sem_msg"),
        between: Some(remove_sysvipc),
        // ns: its between-hook removes the objects from the runner's IPC namespace; the case's are in its own
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    // Namespaces of the tree's own.
    Case {
        name: "uts_ipc_ns",
        program: Program::C("uts_ipc_ns"),
        suid: true,
        // ns: the flavour's init is the tree's root, so the UTS and IPC namespaces the case makes are
        // made inside the tree, which the dump refuses (a namespace below the root's)
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "userns_maps",
        program: Program::C("userns_maps"),
        args: &["--filename=userns_maps.file"],
        suid: true,
        // ns, uns: the flavour's init is the tree's root and unshares the user namespace itself,
        // after the flavour made the others, so that namespace (the tree's own) owns none of them,
        // which the dump refuses (userns_nested covers user namespaces below the root's)
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "uts_nested",
        program: Program::C("uts_nested"),
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    Case {
        name: "userns_nested",
        program: Program::C("userns_nested"),
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    Case {
        name: "timens",
        program: Program::C("timens"),
        suid: true,
        // ns: the flavour's init is the tree's root, so the time namespace the case makes for its children
        // is made inside the tree, which the dump refuses (time_for_children below the root's)
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "pidns_init",
        program: Program::C("pidns_init"),
        suid: true,
        // ns: its launcher makes the pid namespace itself, as the flavour's launcher does too: a second
        // unshare(CLONE_NEWPID) before a fork gives EINVAL; the case is a whole pid namespace in h already
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "mnt_tmpfs",
        program: Program::C("mnt_tmpfs"),
        suid: true,
        // ns, uns: the case mounts in a mount namespace of the tree's own, which the flavour gives
        // it (in h its mounts would be the host's)
        flavors: &[Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    Case {
        // mnt_tmpfs in a user namespace that maps the engine's ids (0:0), which fill the tmpfs
        // themselves then (restore/mntns.rs filler_ids); mnt_tmpfs/uns has them unmapped
        name: "mnt_tmpfs_rootmapped",
        program: Program::C("mnt_tmpfs"),
        suid: true,
        flavors: &[Flavor::Uns],
        uns_identity: Some("what it checks is the namespace that maps the host's root"),
        ..Case::DEFAULT
    },
    Case {
        name: "mnt_bind",
        program: Program::C("mnt_bind"),
        suid: true,
        // ns, uns: the case mounts in a mount namespace of the tree's own, which the flavour gives
        // it (in h its mounts would be the host's)
        flavors: &[Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    Case {
        name: "mnt_propagation",
        program: Program::C("mnt_propagation"),
        suid: true,
        // ns, uns: the case mounts in a mount namespace of the tree's own, which the flavour gives
        // it (in h its mounts would be the host's)
        flavors: &[Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    Case {
        name: "mnt_pivot_root",
        program: Program::C("mnt_pivot_root"),
        suid: true,
        // ns, uns: the case pivot_roots its mount namespace, which the flavour gives it (in h it would
        // be the host's)
        flavors: &[Flavor::Ns, Flavor::Uns],
        // Its work directory (the program, the log) and /usr (the libraries) are bound in from the
        // host at the same paths.
        dump_opts: &["--external=mnt[{dir}]:work", "--external=mnt[/usr]:usr"],
        restore_opts: &["--external=mnt[work]:{dir}", "--external=mnt[usr]:/usr"],
        ..Case::DEFAULT
    },
    Case {
        name: "mnt_pivot_root_undeclared",
        program: Program::C("mnt_pivot_root"),
        suid: true,
        // ns, uns, as mnt_pivot_root
        flavors: &[Flavor::Ns, Flavor::Uns],
        dump_opts: &["--external=mnt[/usr]:usr"],
        crfail: true,
        crfail_reason: Some("declare it with --external mnt["),
        ..Case::DEFAULT
    },
    // A devpts instance of the tree's own (as containers mount it) with two ptys opened through it:
    // their indices there, nodes' modes, termios, queued data and the mount's options.
    Case {
        name: "devpts_newinstance",
        program: Program::C("devpts_newinstance"),
        suid: true,
        // ns, uns: the case mounts on /dev/pts in a mount namespace of the tree's own, which the
        // flavour gives it (in h it would cover the host's /dev/pts)
        flavors: &[Flavor::Ns, Flavor::Uns],
        ..Case::DEFAULT
    },
    Case {
        name: "ns_refused_ramfs",
        program: Program::C("ns_refused"),
        args: &["--kind=ramfs"],
        suid: true,
        // ns only: the case mounts in a mount namespace of the tree's own, which the flavour gives it
        // (in h its mount would be the host's)
        flavors: &[Flavor::Ns],
        crfail: true,
        crfail_reason: Some("a ramfs file system is not one the restore can make again"),
        ..Case::DEFAULT
    },
    Case {
        name: "ns_refused_userns_thread",
        program: Program::C("ns_refused"),
        args: &["--kind=userns_thread"],
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns],
        crfail: true,
        crfail_reason: Some("threads are cloned with their tids in the root's pid namespace"),
        ..Case::DEFAULT
    },
    Case {
        name: "ns_refused_cgroup_back",
        program: Program::C("ns_refused"),
        args: &["--kind=cgroup_back"],
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns],
        crfail: true,
        crfail_reason: Some("it went back into the engine's (the host's) cgroup namespace"),
        ..Case::DEFAULT
    },
    Case {
        name: "pidns_nested",
        program: Program::C("pidns_nested"),
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns],
        ..Case::DEFAULT
    },
    Case {
        name: "ns_refused_nestedpid_thread",
        program: Program::C("ns_refused"),
        args: &["--kind=nestedpid_thread"],
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns],
        crfail: true,
        crfail_reason: Some("threads of nested pid namespaces are not supported yet"),
        ..Case::DEFAULT
    },
    // A network namespace the root makes in the `h` flavour (in `ns` the
    // flavour's init is the root, so the case's namespace would be below
    // the root's and refused as made inside the tree): a route, an
    // nftables ruleset, an empty table; each checked after the restore.
    Case {
        name: "netns_route",
        program: Program::C("ns_refused"),
        args: &["--kind=net"],
        suid: true,
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "netns_nft",
        program: Program::C("ns_refused"),
        args: &["--kind=nft"],
        suid: true,
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "netns_nft_table",
        program: Program::C("ns_refused"),
        args: &["--kind=nft_table"],
        suid: true,
        flavors: &[Flavor::H],
        ..Case::DEFAULT
    },
    Case {
        name: "ns_refused_bridge",
        program: Program::C("ns_refused"),
        args: &["--kind=bridge"],
        suid: true,
        // ns: as netns_route
        flavors: &[Flavor::H],
        crfail: true,
        crfail_reason: Some("it has the network device zb0 of kind bridge"),
        ..Case::DEFAULT
    },
    Case {
        name: "ns_refused_veth_out",
        program: Program::C("ns_refused"),
        args: &["--kind=veth_out"],
        suid: true,
        // ns: as netns_route
        flavors: &[Flavor::H],
        crfail: true,
        crfail_reason: Some("declare it with --external veth[zo0]"),
        ..Case::DEFAULT
    },
    // The network namespace the `ns` flavour gives the tree, configured
    // by the case (ns only: in `h` the case would change the host's).
    Case {
        name: "net_veth_addr",
        program: Program::C("net_veth_addr"),
        suid: true,
        flavors: &[Flavor::Ns],
        ..Case::DEFAULT
    },
    Case {
        name: "net_veth_nft",
        program: Program::C("net_veth_addr"),
        args: &["--nft=1"],
        suid: true,
        flavors: &[Flavor::Ns],
        ..Case::DEFAULT
    },
    // Established TCP between the addresses of a veth pair (NET_TCP_VETH).
    Case {
        name: "net_tcp_veth4",
        args: &["--family=4", "--mode=pair", "--veth=1"],
        ..NET_TCP_VETH
    },
    Case {
        name: "net_tcp_veth6",
        args: &["--family=6", "--mode=pair", "--veth=1"],
        ..NET_TCP_VETH
    },
    Case {
        name: "ns_refused_time",
        program: Program::C("ns_refused"),
        args: &["--kind=time"],
        suid: true,
        flavors: &[Flavor::H, Flavor::Ns],
        crfail: true,
        crfail_reason: Some("time namespace"),
        ..Case::DEFAULT
    },
    // Cgroups (programs: zdtm/cases/cgroup_*.c; hooks below).
    Case {
        name: "cgroup_pids",
        program: Program::C("cgroup_limits"),
        args: &["--v1=pids"],
        feature: Some(has_v1_pids),
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_v2",
        program: Program::C("cgroup_limits"),
        args: &["--v2"],
        feature: Some(has_v2),
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_deleted",
        program: Program::C("cgroup_limits"),
        args: &["--v1=pids", "--v2"],
        feature: Some(has_v1_pids_and_v2),
        between: Some(remove_case_cgroups),
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_v1_props",
        program: Program::C("cgroup_limits"),
        args: &["--v1=pids,memory,cpu,cpuset,devices"],
        feature: Some(has_v1_all),
        between: Some(remove_case_cgroups),
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_threads",
        program: Program::C("cgroup_threads"),
        feature: Some(has_v2),
        between: Some(remove_case_cgroups),
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_tree",
        program: Program::C("cgroup_tree"),
        feature: Some(has_v2),
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_ns",
        program: Program::C("cgroup_ns"),
        feature: Some(has_v2),
        between: Some(remove_case_cgroups),
        // ns: the flavour's init is the tree's root and stays in the host's cgroup namespace; the
        // namespace the case makes is then one made inside the tree, by a task below the root.
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_root",
        program: Program::C("cgroup_tree"),
        // The new root below a cgroup that does not exist: the restore makes it, and must enable
        // there the controllers of the properties of the tree's cgroup (hugetlb, enabled in the
        // host's root, so the tree's cgroup has hugetlb.*.max).
        args: &["--newroot=/zdtm.{uniq}.new/root"],
        restore_opts: &[
            "--cgroup-root=pids:/zdtm.{uniq}.new/root",
            "--cgroup-root=cgroup2:/zdtm.{uniq}.new/root",
        ],
        feature: Some(has_v1_pids_and_v2),
        between: Some(mark_restored),
        // ns: impossible, and refused by the restore before any process: the flavour's init (the
        // tree's root) is in the hierarchy's root cgroup, which --cgroup-root maps to the new root,
        // and the case's cgroup below it has hugetlb.*.max (enabled in the host's root), so the new
        // root would need hugetlb in its cgroup.subtree_control and hold the init: cgroup2's
        // no-internal-processes rule forbids that outside the hierarchy's root.
        flavors: &[Flavor::H],
        ..CGROUP_CASE
    },
    Case {
        name: "cgroup_freeze",
        program: Program::C("cgroup_freeze"),
        // Its cgroup is cg_name()'s.
        dump_opts: &["--freeze-cgroup=/zdtm.{uniq}"],
        feature: Some(has_freezer),
        forks: true,
        ..CGROUP_CASE
    },
];

/// Established TCP between the addresses of a veth pair the tree made
/// (ns only: in `h` the case would change the host's network).
const NET_TCP_VETH: Case = Case {
    program: Program::C("inet_tcp_conn"),
    suid: true,
    flavors: &[Flavor::Ns],
    dump_opts: &["--tcp-established"],
    restore_opts: &["--tcp-established"],
    ..Case::DEFAULT
};

/// Cgroup cases create cgroups (root only) and must not see each other's.
/// The tree's cgroups are the host's in the ns flavour too (no cgroup
/// namespace of the flavour's own).
const CGROUP_CASE: Case = Case {
    suid: true,
    excl: true,
    flavors: &[Flavor::H, Flavor::Ns],
    ..Case::DEFAULT
};

fn has_cgroup_fs(v1_ctl: Option<&str>) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().any(|l| {
        let post = l.split_once(" - ").map_or("", |p| p.1);
        let mut w = post.split(' ');
        let (fstype, super_opts) = (w.next().unwrap_or(""), w.nth(1).unwrap_or(""));
        match v1_ctl {
            Some(c) => fstype == "cgroup" && super_opts.split(',').any(|o| o == c),
            None => fstype == "cgroup2",
        }
    })
}

fn has_v1_pids() -> Result<(), String> {
    has_cgroup_fs(Some("pids"))
        .then_some(())
        .ok_or_else(|| "no cgroup v1 pids hierarchy is mounted".into())
}

fn has_v2() -> Result<(), String> {
    has_cgroup_fs(None)
        .then_some(())
        .ok_or_else(|| "no cgroup2 hierarchy is mounted".into())
}

fn has_freezer() -> Result<(), String> {
    (has_cgroup_fs(Some("freezer")) || has_cgroup_fs(None))
        .then_some(())
        .ok_or_else(|| "no freezer hierarchy (v1 freezer or cgroup2) is mounted".into())
}

fn has_v1_all() -> Result<(), String> {
    for c in ["pids", "memory", "cpu", "cpuset", "devices"] {
        if !has_cgroup_fs(Some(c)) {
            return Err(format!("no cgroup v1 {c} hierarchy is mounted"));
        }
    }
    Ok(())
}

fn has_v1_pids_and_v2() -> Result<(), String> {
    has_v1_pids().and_then(|_| has_v2())
}

/// Between dump and restore: remove the now empty cgroups the case
/// created (`zdtm.<uniq>` and what is inside, see cgroups.rs), so the
/// restore must recreate them with their properties. Moves nothing: a
/// cgroup that still holds a task cannot be removed, and that fails the
/// trial.
pub(crate) fn remove_case_cgroups(dir: &std::path::Path, _cycle: usize) -> Result<(), String> {
    let uniq = dir.file_name().unwrap_or_default().to_string_lossy();
    let mine: Vec<_> = crate::cgroups::zdtm_dirs()
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| crate::cgroups::is_owned_name(&n.to_string_lossy(), &uniq))
        })
        .collect();
    if mine.is_empty() {
        return Err(format!("no zdtm.{uniq} cgroup to remove"));
    }
    // Every cgroup below them, at any depth; children before parents.
    let mut all: Vec<std::path::PathBuf> = Vec::new();
    let mut todo = mine.clone();
    while let Some(d) = todo.pop() {
        todo.extend(
            std::fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
        all.push(d);
    }
    all.sort();
    all.dedup();
    for d in all.iter().rev() {
        std::fs::remove_dir(d).map_err(|e| format!("rmdir {}: {e}", d.display()))?;
    }
    Ok(())
}
/// Between dump and restore: tell the program (through a file in its
/// working directory) that it is being restored, not left running, so it
/// expects the new cgroup root.
/// Time for the peer outside the tree to probe the closed window of the
/// dumped end (the probe timer starts at 200 ms): without the network
/// lock the probe meets no socket, and the reset ends the connection.
fn let_peer_probe(_dir: &std::path::Path, _cycle: usize) -> Result<(), String> {
    std::thread::sleep(Duration::from_millis(1500));
    Ok(())
}

fn mark_restored(dir: &std::path::Path, _cycle: usize) -> Result<(), String> {
    let f = dir.join("cgroup_root.restored");
    std::fs::write(&f, "").map_err(|e| format!("{}: {e}", f.display()))
}

/// Between-hook: remove the SysV objects the case listed in `sysvipc.ids`
/// (lines "shm ID", "sem ID", "msg ID"); each must exist and go.
fn remove_sysvipc(dir: &std::path::Path, _cycle: usize) -> Result<(), String> {
    let path = dir.join("sysvipc.ids");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, id) = line
            .split_once(' ')
            .and_then(|(k, i)| Some((k, i.trim().parse::<i32>().ok()?)))
            .ok_or_else(|| format!("{}: bad line {line:?}", path.display()))?;
        super::procfs::sysvipc_remove(kind, id)?;
    }
    Ok(())
}
