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

/// Namespace flavours a case may run in. Only `H` is run for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Host namespaces.
    H,
    /// New pid, mount, net, ipc and uts namespaces (`ZDTM_NEWNS=1`).
    Ns,
    /// As `Ns`, plus a new user namespace.
    Uns,
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
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Once, Variant::Iter3, Variant::LeaveRunning];

    /// Appended to the case name to form the trial name.
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Once => "",
            Variant::Iter3 => "/iter3",
            Variant::LeaveRunning => "/leave-running",
        }
    }

    /// Used in work directory names.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Once => "once",
            Variant::Iter3 => "iter3",
            Variant::LeaveRunning => "leave-running",
        }
    }

    /// Number of dumps.
    pub fn cycles(self) -> usize {
        match self {
            Variant::Iter3 => 3,
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
}

impl Case {
    /// The defaults of a row: unprivileged, automatic, every flavour.
    pub const DEFAULT: Case = Case {
        name: "",
        program: Program::C(""),
        args: &[],
        suid: false,
        crfail: false,
        excl: false,
        noauto: false,
        flavors: &[Flavor::H, Flavor::Ns, Flavor::Uns],
        dump_opts: &[],
        restore_opts: &[],
        feature: None,
        between: None,
        timeout: Duration::from_secs(30),
        xfail: None,
    };
}

/// Credentials of unprivileged cases (the values CRIU's zdtm.py uses for
/// the uid and gid).
pub const TEST_UID: u32 = 18943;
pub const TEST_GID: u32 = 58467;
pub const TEST_GROUPS: &[u32] = &[58467, 58468];

pub static CASES: &[Case] = &[
    Case {
        name: "env",
        program: Program::C("env"),
        ..Case::DEFAULT
    },
    Case {
        name: "maps",
        program: Program::C("maps"),
        ..Case::DEFAULT
    },
    Case {
        name: "mem",
        program: Program::C("mem"),
        ..Case::DEFAULT
    },
    Case {
        name: "sleep",
        program: Program::C("sleep"),
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
        ..Case::DEFAULT
    },
    // >>> issues 3 (signals and timers) and 4 (threads)
    Case {
        name: "sigaction_all",
        program: Program::C("sigaction_all"),
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
        ..Case::DEFAULT
    },
    Case {
        name: "thread_leader_exit",
        program: Program::C("thread_leader_exit"),
        xfail: Some(Xfail {
            reason: "runner: a zombie thread-group leader counts as a dead process (start, check_tree); engine: refuses zombie leaders (issue 4)",
            variants: &[],
        }),
        ..Case::DEFAULT
    },
    // <<< issues 3 and 4
    // >>> issue 5: process trees and task attributes
    Case {
        name: "tree_basic",
        program: Program::C("tree_basic"),
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
        ..Case::DEFAULT
    },
    Case {
        name: "cow_shared_child",
        program: Program::C("cow_shared_child"),
        ..Case::DEFAULT
    },
    Case {
        name: "pipe_shared_child",
        program: Program::C("pipe_shared_child"),
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
        ..Case::DEFAULT
    },
    // <<< issue 5
];
