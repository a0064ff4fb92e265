//! Images of one engine restored by the other: zdtm cases dumped by ckpt
//! and restored by CRIU, and dumped by CRIU and restored by ckpt, each
//! case then checking itself as it does under one engine.
//!
//! The reference CRIU is `ZDTM_CRIU`, else the 4.2 build beside the
//! repository (`../shared/reference/criu-4.2/criu`); without a CRIU that
//! runs (`criu check`), every trial says it is skipped and why. Cases run
//! as root: CRIU cannot dump another uid's task where root lacks
//! CAP_SYS_RESOURCE, as on the machines this suite runs on.
//!
//! `cargo test --test cross [-- NAME]`.

#[allow(dead_code)]
#[path = "cases.rs"]
mod cases;
#[path = "cgroups.rs"]
mod cgroups;
#[path = "known.rs"]
mod known;
#[allow(dead_code)]
#[path = "procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "trial.rs"]
mod trial;

use std::path::PathBuf;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Trial};

use cases::{Case, Flavor, Variant};

/// What each direction is tried on: memory, threads, a tree with pages
/// shared copy-on-write, pipes with data, eventfd and timerfd, POSIX
/// timers, itimers, handlers and pending signals.
const CROSS_CASES: &[&str] = &[
    "mem",
    "threads_basic",
    "threads_fds",
    "tree_basic",
    "cow_shared_child",
    "pipe_shared_child",
    "timerfd",
    "posix_timers",
    "itimers",
    "sigaction_all",
    "sigpending",
];

/// Trials known to fail, with why, from the first runs (the issue on
/// CRIU compatibility lists them): each still runs, a failure shows as
/// ignored with the reason, and a pass fails the trial so that the entry
/// is removed.
const KNOWN: &[(&str, &str)] = &[
    (
        "criu-to-ckpt/threads_basic",
        "CRIU's dump records a thread interrupted in a timed wait (nanosleep, poll, a futex \
         with a timeout) as returning EINTR, without the time left: CRIU's own restore of \
         those images fails the same way",
    ),
    (
        "criu-to-ckpt/threads_fds",
        "CRIU's dump records a thread interrupted in epoll_wait or poll as returning EINTR: \
         CRIU's own restore of those images fails the same way",
    ),
    (
        "ckpt-to-criu/timerfd",
        "CRIU 4.2 knows no CLOCK_BOOTTIME_ALARM timerfd",
    ),
    (
        "criu-to-ckpt/timerfd",
        "CRIU 4.2 cannot dump a CLOCK_BOOTTIME_ALARM timerfd",
    ),
    (
        "ckpt-to-criu/posix_timers",
        "CRIU's posix_timer_entry has no field for TIMER_ABSTIME (the timer comes back \
         relative, off by the downtime) and CRIU cannot give back an overrun count: \
         CRIU's own restore of its images fails the same way",
    ),
    (
        "criu-to-ckpt/posix_timers",
        "CRIU's posix_timer_entry has no field for TIMER_ABSTIME: the timer stored \
         relative comes back off by the downtime (passes only when that is short)",
    ),
    (
        "ckpt-to-criu/sigaction_all",
        "ckpt writes SIGTRAP's SIG_IGN in sigactions[4]; CRIU's restore leaves SIGTRAP \
         at SIG_DFL (CRIU's own images of it fail the same way)",
    ),
    (
        "criu-to-ckpt/sigaction_all",
        "CRIU dumps SIGTRAP's disposition as SIG_DFL (sigactions[4] sigaction 0)",
    ),
    (
        "ckpt-to-criu/sigpending",
        "ckpt writes the pending SIGTRAP; CRIU's restore drops it (every other signal, \
         its order and siginfo come back)",
    ),
    (
        "criu-to-ckpt/sigpending",
        "CRIU refuses to dump a thread with a pending SIGTRAP",
    ),
];

/// Known failures that depend on timing (how long the dump and restore
/// take): a pass is no reason to remove them.
const UNSTABLE: &[&str] = &["criu-to-ckpt/posix_timers"];

/// CRIU mounts its cgroup yard under the images directory and, when a
/// restore fails, can leave it mounted; later suites would see those
/// cgroup mounts as hierarchies of the machine.
fn unmount_yards() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(".criu.cgyard"))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn criu() -> Result<PathBuf, String> {
    let path = std::env::var_os("ZDTM_CRIU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/criu-4.2/criu")
        });
    let out = std::process::Command::new(&path)
        .arg("check")
        .output()
        .map_err(|e| format!("no CRIU to compare with ({}: {e})", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} check failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(path)
}

fn main() {
    let args = Arguments::from_args();
    let criu = known::setup(&args, criu);
    let ckpt = PathBuf::from(env!("CARGO_BIN_EXE_ckpt"));
    let base = trial::Config::from_env();
    let mut trials = Vec::new();
    for name in CROSS_CASES {
        let case = known::case("cross", name);
        for (dir, dumper_is_ckpt) in [("ckpt-to-criu", true), ("criu-to-ckpt", false)] {
            // Root, so that CRIU may dump it; ckpt writes what CRIU reads.
            let case: &'static Case = Box::leak(Box::new(Case {
                suid: true,
                dump_opts: if dumper_is_ckpt {
                    let opts = case.dump_opts.iter().copied();
                    Box::leak(opts.chain(["--criu-compatible"]).collect())
                } else {
                    case.dump_opts
                },
                ..*case
            }));
            let cfg = criu.clone().map(|criu| {
                let (dump, restore) = if dumper_is_ckpt {
                    (ckpt.clone(), criu)
                } else {
                    (criu, ckpt.clone())
                };
                Arc::new(trial::Config {
                    engine: dump,
                    restore_engine: Some(restore),
                    engine_opts: vec![],
                    bin_dir: base.bin_dir.clone(),
                    base: base.base.clone(),
                    keep: base.keep,
                })
            });
            let name = format!("{dir}/{}", case.name);
            trials.push(Trial::ignorable_test(name.clone(), move || {
                let cfg = match &cfg {
                    Err(why) => return Ok(Completion::ignored_with(why.clone())),
                    Ok(cfg) => cfg,
                };
                let r = trial::run(case, Flavor::H, Variant::Once, cfg);
                unmount_yards();
                known::judge(r, KNOWN, &name, UNSTABLE.contains(&name.as_str()))
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
