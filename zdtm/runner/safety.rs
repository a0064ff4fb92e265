//! Tests of the engine's safety rules (`cargo test --test safety`).
//!
//! The rules, from the design:
//!
//! - A dump that fails for any reason (a full filesystem under DIR
//!   included) leaves the target running as before (not stopped, not
//!   traced, no extra mapping) and leaves no directory that looks like a
//!   complete image.
//! - Restore validates all images (checksums, versions, cross-references)
//!   before creating any process; a damaged image gets a non-zero exit and a
//!   message naming the file and the problem, and nothing is created.
//! - A PID that is taken at restore time is reported with the PID and the
//!   process holding it; nothing is half-restored.
//! - Every error names the pid, the object and the reason.
//! - Whatever kills the engine during a restore, SIGKILL included, no
//!   half-restored task outlives it, and the PIDs are free again.
//!
//! Each rule is one or more named trials that drive the real engine (the
//! `ckpt` binary of this package, or `ZDTM_ENGINE`) against real zdtm
//! programs, started exactly as the zdtm runner starts them: the runner's
//! own code (trial.rs) does the work directory, the launch protocol, the
//! engine commands, the tree checks, the verdict and the cleanup. Trials
//! need root and are reported ignored without it.
//!
//! A passing trial leaves nothing behind; a failing one keeps its work
//! directory (under ZDTM_WORKDIR, default /tmp/ckpt-zdtm) for the logs, as
//! the runner does. Processes are always killed and mounts always
//! unmounted.

#[allow(dead_code)]
#[path = "cases.rs"]
mod cases;
#[path = "cgroups.rs"]
mod cgroups;
#[allow(dead_code)]
#[path = "procfs.rs"]
mod procfs;
#[path = "safety_cgroups.rs"]
mod safety_cgroups;
#[path = "safety_faults.rs"]
mod safety_faults;
#[path = "safety_fuzz.rs"]
mod safety_fuzz;
#[path = "safety_messages.rs"]
mod safety_messages;
#[path = "safety_pageserver.rs"]
mod safety_pageserver;
#[path = "safety_trust.rs"]
mod safety_trust;
#[allow(dead_code)]
#[path = "trial.rs"]
mod trial;

use std::collections::BTreeSet;
use std::ffi::{CString, OsString};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use ckpt::images::{self, pb, ImageReader, ImageWriter, Magic, Manifest, MANIFEST_NAME};

use cases::{Case, Program, Variant, CASES};
use procfs::Tree;
use trial::{Config, Run, SETTLE};

const PAGE: u64 = 4096;

/// What a trial body reports when it did not fail.
enum Outcome {
    Passed,
    /// The machine cannot run the trial (say, mounting is not allowed).
    Ignored(String),
}

type Body = fn(&mut Run) -> Result<Outcome, String>;

struct Spec {
    name: &'static str,
    /// The case whose program is started (or, for trials without a zdtm
    /// program, only copied into the work directory).
    case: fn() -> Case,
    variant: Variant,
    body: Body,
}

fn main() {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if root && !args.list {
        // As in the zdtm runner: orphans of the cases (the daemonized
        // program once its launcher exits, the restored program once the
        // engine exits) become our children, so they can be reaped.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("safety: PR_SET_CHILD_SUBREAPER failed: {e}");
        }
    }
    let specs: Vec<Spec> = vec![
        Spec {
            name: "dump/prev-images-missing",
            case: mem_case,
            variant: Variant::Once,
            body: dump_prev_missing,
        },
        Spec {
            name: "dump/prev-images-other-tree",
            case: mem_case,
            variant: Variant::Once,
            body: dump_prev_other_tree,
        },
        Spec {
            name: "restore/prev-images-missing",
            case: mem_case,
            variant: Variant::Once,
            body: restore_prev_missing,
        },
        Spec {
            name: "dump/page-server",
            case: mem_case,
            variant: Variant::Once,
            body: safety_pageserver::dump_page_server,
        },
        Spec {
            name: "pre-dump/page-server",
            case: mem_case,
            variant: Variant::Once,
            body: safety_pageserver::pre_dump_page_server,
        },
        Spec {
            name: "dump/page-server-fails",
            case: mem_case,
            variant: Variant::Once,
            body: safety_pageserver::dump_page_server_fails,
        },
        Spec {
            name: "restore/lazy-page-server-dies",
            case: mem_case,
            variant: Variant::Once,
            body: safety_pageserver::restore_lazy_page_server_dies,
        },
        Spec {
            name: "restore/lazy-damaged-block",
            case: mem_case,
            variant: Variant::Once,
            body: safety_pageserver::restore_lazy_damaged_block,
        },
        Spec {
            name: "dump/enospc",
            case: mem_case,
            variant: Variant::Once,
            body: dump_enospc,
        },
        Spec {
            name: "dump/socket-fd",
            case: plain_sleep_case,
            variant: Variant::Once,
            body: dump_socket_fd,
        },
        Spec {
            name: "dump/no-such-pid",
            case: plain_sleep_case,
            variant: Variant::Once,
            body: dump_no_such_pid,
        },
        Spec {
            name: "dump/non-empty-dir",
            case: zdtm_sleep_case,
            variant: Variant::Once,
            body: dump_non_empty_dir,
        },
        Spec {
            name: "dump/timeout",
            case: vfork_wait_case,
            variant: Variant::Once,
            body: dump_timeout,
        },
        Spec {
            name: "dump/errors-name-the-pid",
            case: zdtm_sleep_case,
            variant: Variant::Once,
            body: dump_errors_name_the_pid,
        },
        Spec {
            name: "restore/flipped-page-byte",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, flip_page_byte),
        },
        Spec {
            name: "restore/truncated-core",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, truncate_core),
        },
        Spec {
            name: "restore/truncated-core-resealed",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, truncate_core_resealed),
        },
        Spec {
            name: "restore/missing-mm",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, delete_mm),
        },
        Spec {
            name: "restore/no-manifest",
            case: mem_case,
            variant: Variant::Once,
            body: restore_no_manifest,
        },
        Spec {
            name: "restore/bad-image-version",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, bump_image_version),
        },
        Spec {
            name: "restore/cpu-lacks-features",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, cpu_of_the_future),
        },
        Spec {
            name: "restore/pagemap-outside-mappings",
            case: mem_case,
            variant: Variant::Once,
            body: |r| restore_damaged(r, pagemap_outside_mappings),
        },
        Spec {
            name: "restore/pid-taken",
            case: mem_case,
            variant: Variant::LeaveRunning,
            body: restore_pid_taken,
        },
        Spec {
            name: "restore/child-pid-taken",
            case: || case_named("tree_basic"),
            variant: Variant::Once,
            body: restore_child_pid_taken,
        },
        Spec {
            name: "restore/ghost-path-taken-dir-watched",
            case: || case_named("inotify_unlinked"),
            variant: Variant::Once,
            body: restore_ghost_path_taken_dir_watched,
        },
        Spec {
            name: "restore/engine-killed",
            case: || case_named("tree_32"),
            variant: Variant::Once,
            body: restore_engine_killed,
        },
        Spec {
            name: "restore/engine-killed-sessions",
            case: || case_named("sid_orphans"),
            variant: Variant::Once,
            body: restore_engine_killed,
        },
        Spec {
            name: "restore/no-extra-fds",
            case: || case_named("tree_32"),
            variant: Variant::Once,
            body: restore_no_extra_fds,
        },
        // Cgroups (safety_cgroups.rs).
        Spec {
            name: "restore/cgroup-bad-path",
            case: || case_named("cgroup_pids"),
            variant: Variant::Once,
            body: safety_cgroups::restore_bad_path,
        },
        Spec {
            name: "restore/cgroup-move-fails",
            case: || case_named("cgroup_v1_props"),
            variant: Variant::Once,
            body: safety_cgroups::restore_move_fails,
        },
        Spec {
            name: "restore/cgroup-root-internal-processes",
            case: || case_named("cgroup_tree"),
            variant: Variant::Once,
            body: safety_cgroups::restore_root_internal_processes,
        },
        Spec {
            name: "dump/freeze-cgroup-enospc",
            case: || case_named("cgroup_freeze"),
            variant: Variant::Once,
            body: safety_cgroups::dump_freeze_enospc,
        },
        Spec {
            name: "dump/frozen-cgroup",
            case: || case_named("cgroup_freeze"),
            variant: Variant::Once,
            body: safety_cgroups::dump_frozen,
        },
        // SysV IPC.
        Spec {
            name: "restore/sysvipc-id-or-key-taken",
            case: || case_named("sysv_sem_msg"),
            variant: Variant::Once,
            body: restore_sysvipc_taken,
        },
        Spec {
            name: "restore/truncated-ipcns-shm-resealed",
            case: || case_named("sysv_shm"),
            variant: Variant::Once,
            body: |r| restore_damaged(r, truncate_ipcns_shm_resealed),
        },
        // Files reopened by path.
        Spec {
            name: "restore/fifo-path-replaced",
            case: || case_named("fifo"),
            variant: Variant::Once,
            body: restore_fifo_replaced,
        },
        Spec {
            name: "dump/fault-points",
            case: || case_named("sid_orphans"),
            variant: Variant::Once,
            body: safety_faults::dump_fault_points,
        },
        Spec {
            name: "restore/fault-points",
            case: || case_named("sid_orphans"),
            variant: Variant::Once,
            body: safety_faults::restore_fault_points,
        },
        // The same with established TCP connections: a failed dump takes
        // them out of repair mode and lifts the network lock (the peer
        // outside the tree keeps its connection); a failed restore leaves
        // the lock for the next one, which resumes them unharmed.
        Spec {
            name: "dump/fault-points-tcp",
            case: || case_named("inet_tcp_conn_ext4"),
            variant: Variant::Once,
            body: safety_faults::dump_fault_points,
        },
        Spec {
            name: "restore/fault-points-tcp",
            // Both ends in the tree: the checks after each failure take
            // any process of the program for a leftover of the restore.
            case: || case_named("inet_tcp_conn4"),
            variant: Variant::Once,
            body: safety_faults::restore_fault_points,
        },
        Spec {
            name: "kill/1gib",
            case: safety_faults::mem_1gib_case,
            variant: Variant::Once,
            body: safety_faults::killed_1gib,
        },
        Spec {
            name: "restore/untrusted-images",
            case: zdtm_sleep_case,
            variant: Variant::Once,
            body: safety_trust::restore_untrusted,
        },
        Spec {
            name: "restore/fuzz-loader",
            case: || case_named("pipe_shared_child"),
            variant: Variant::Once,
            body: safety_fuzz::fuzz_loader,
        },
        Spec {
            name: "dump/refusals-say-why",
            case: mem_case,
            variant: Variant::Once,
            body: safety_messages::dump_refusals_say_why,
        },
        Spec {
            name: "restore/mmap-names-the-file",
            case: mem_case,
            variant: Variant::Once,
            body: safety_messages::restore_mmap_names_the_file,
        },
        Spec {
            name: "restore/sysvipc-created-then-failed",
            case: || case_named("sysv_shm"),
            variant: Variant::Once,
            body: restore_sysvipc_rollback,
        },
    ];
    let cfg = std::sync::Arc::new(Config::from_env());
    let trials = specs
        .into_iter()
        .map(|s| {
            let cfg = std::sync::Arc::clone(&cfg);
            Trial::ignorable_test(s.name, move || {
                if !root {
                    return Ok(Completion::ignored_with("needs root"));
                }
                run_trial(&s, &cfg)
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run_trial(spec: &Spec, cfg: &Config) -> Result<Completion, Failed> {
    let case = (spec.case)();
    let mut run = Run::new(&case, spec.variant, cfg);
    run.label = Some(format!("safety-{}", spec.name.replace('/', "-")));
    let result = run.prepare().and_then(|()| (spec.body)(&mut run));
    run.cleanup();
    match result {
        Ok(Outcome::Passed) => {
            run.finish(true);
            Ok(Completion::Completed)
        }
        Ok(Outcome::Ignored(reason)) => {
            run.finish(true);
            Ok(Completion::ignored_with(reason))
        }
        Err(msg) => {
            run.finish(false);
            Err(run.report(&msg).into())
        }
    }
}

fn case_named(name: &str) -> Case {
    *CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name} in zdtm/runner/cases.rs"))
}

/// `mem`: 48 MiB of random anonymous memory, checked after restore.
fn mem_case() -> Case {
    case_named("mem")
}

/// The zdtm `sleep` program.
fn zdtm_sleep_case() -> Case {
    case_named("sleep")
}

/// `vfork_wait`: a parent held in vfork() (state D), no row of the table.
fn vfork_wait_case() -> Case {
    Case {
        name: "vfork_wait",
        program: Program::C("vfork_wait"),
        ..Case::DEFAULT
    }
}

/// coreutils sleep, copied into the work directory; the trial starts it
/// itself (it is no zdtm program).
fn plain_sleep_case() -> Case {
    Case {
        name: "sleep",
        program: Program::Rust("/bin/sleep"),
        suid: true,
        ..Case::DEFAULT
    }
}

// ---------------------------------------------------------------------------
// Engine commands

fn dump_args(run: &Run, pid: i32, img: &Path, what: &str, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "dump".into(),
        "-t".into(),
        pid.to_string().into(),
        "-D".into(),
        img.into(),
        "-o".into(),
        run.path(&format!("{what}.log")).into(),
        "-v4".into(),
    ];
    v.extend(extra.iter().map(Into::into));
    v
}

fn restore_args(run: &Run, img: &Path, what: &str) -> Vec<OsString> {
    vec![
        "restore".into(),
        "-D".into(),
        img.into(),
        "-d".into(),
        "--pidfile".into(),
        run.path(&format!("{what}.pid")).into(),
        "-o".into(),
        run.path(&format!("{what}.log")).into(),
        "-v4".into(),
    ]
}

/// Runs an engine command that must fail with an exit code (not a crash);
/// returns what it printed (stdout and stderr; the -o log is separate).
fn expect_failure(
    run: &mut Run,
    what: &str,
    img: &Path,
    args: Vec<OsString>,
) -> Result<String, String> {
    let st = run.engine(what, img, args)?;
    let console = console(run, what);
    run.note(format!("{what} printed: {}", console.trim()));
    match st.code() {
        Some(0) => Err(format!(
            "{what} exited 0, but it must fail; it printed: {}",
            console.trim()
        )),
        Some(_) => Ok(console),
        None => Err(format!(
            "{what} crashed ({st}) instead of failing with an error; it printed: {}",
            console.trim()
        )),
    }
}

fn console(run: &Run, what: &str) -> String {
    fs::read(run.path(&format!("{what}.console")))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Checks that `text` says each of `groups`: every group is a list of
/// alternatives of which at least one must appear (ASCII case-insensitive).
fn expect_mentions(what: &str, text: &str, groups: &[&[&str]]) -> Result<(), String> {
    let lower = text.to_ascii_lowercase();
    let missing: Vec<String> = groups
        .iter()
        .filter(|alts| !alts.iter().any(|a| lower.contains(&a.to_ascii_lowercase())))
        .map(|alts| {
            alts.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the message of {what} does not mention {}; it printed: {}",
            missing.join(", "),
            text.trim()
        ))
    }
}

/// `text` contains `n` as a whole number (not as part of a longer one).
fn mentions_number(text: &str, n: i32) -> bool {
    let n = n.to_string();
    let b = text.as_bytes();
    text.match_indices(&n).any(|(i, _)| {
        let before = i == 0 || !b[i - 1].is_ascii_digit();
        let j = i + n.len();
        let after = j == b.len() || !b[j].is_ascii_digit();
        before && after
    })
}

fn expect_pid(what: &str, text: &str, pid: i32) -> Result<(), String> {
    if mentions_number(text, pid) {
        Ok(())
    } else {
        Err(format!(
            "the message of {what} does not name pid {pid}; it printed: {}",
            text.trim()
        ))
    }
}

// ---------------------------------------------------------------------------
// The target

/// What must be unchanged in a target after a failed (or --leave-running)
/// dump.
struct Target {
    pid: i32,
    tree: Tree,
    stopped: BTreeSet<(i32, i32)>,
    maps: String,
    starttime: u64,
}

fn starttime(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; fields after the command name start with field 3 (state).
    text[text.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

fn maps(pid: i32) -> Result<String, String> {
    fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("/proc/{pid}/maps: {e}"))
}

/// The syscall a task is blocked in, from /proc/PID/syscall.
fn blocked_in(pid: i32) -> Option<i64> {
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Waits until the target sits in the wait it keeps until SIGTERM (a zdtm
/// program unmaps its launcher page only after the launcher has gone, and
/// a freshly exec'd program is still being loaded), so that its mappings
/// can be compared.
fn settle(pid: i32) -> Result<(), String> {
    const WAITS: [i64; 6] = [
        libc::SYS_futex,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_pause,
        libc::SYS_rt_sigsuspend,
        libc::SYS_wait4,
    ];
    trial::poll(Duration::from_secs(10), || {
        let nr = blocked_in(pid)?;
        let st = procfs::stat(pid)?;
        (st.state == 'S' && WAITS.contains(&nr)).then_some(())
    })
    .ok_or_else(|| {
        format!(
            "pid {pid} did not settle in a wait within 10s (syscall {:?})",
            blocked_in(pid)
        )
    })
}

fn capture(run: &mut Run, pid: i32) -> Result<Target, String> {
    settle(pid)?;
    let tree = run.snapshot(pid);
    Ok(Target {
        pid,
        stopped: trial::stopped_threads(&tree),
        tree,
        maps: maps(pid)?,
        starttime: starttime(pid).ok_or_else(|| format!("pid {pid}: cannot read its stat"))?,
    })
}

/// The target must be the same process, running (not stopped), not
/// traced, with the same tree and exactly the mappings it had.
fn check_unharmed(run: &mut Run, t: &Target, when: &str) -> Result<(), String> {
    let pid = t.pid;
    run.check_tree(&t.tree, &t.stopped, when)?;
    if starttime(pid) != Some(t.starttime) {
        return Err(format!(
            "{when}: pid {pid} is another process than the target (start time changed)"
        ));
    }
    let st = procfs::stat(pid).ok_or_else(|| format!("{when}: pid {pid} is gone"))?;
    if st.is_stopped() || st.is_zombie() {
        return Err(format!("{when}: pid {pid} is in state {}", st.state));
    }
    for tid in procfs::threads(pid) {
        let tracer = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim().to_string()))
            })
            .unwrap_or_default();
        if tracer != "0" {
            return Err(format!(
                "{when}: pid {pid} thread {tid} is still traced (TracerPid {tracer})"
            ));
        }
    }
    let now = maps(pid)?;
    if now != t.maps {
        let old: BTreeSet<&str> = t.maps.lines().collect();
        let new: BTreeSet<&str> = now.lines().collect();
        let mut d = String::new();
        for l in new.difference(&old) {
            d.push_str(&format!("\n  + {l}"));
        }
        for l in old.difference(&new) {
            d.push_str(&format!("\n  - {l}"));
        }
        return Err(format!(
            "{when}: the mappings of pid {pid} changed (a scratch mapping left behind?):{d}"
        ));
    }
    run.note(format!(
        "{when}: pid {pid} unharmed (running, not traced, same mappings)"
    ));
    Ok(())
}

/// Processes running a program of the work directory, other than `except`
/// (a restore that failed must not have created any).
fn strays(run: &Run, except: &[i32]) -> Vec<i32> {
    procfs::all_processes()
        .into_iter()
        .filter(|s| !except.contains(&s.pid))
        .filter(|s| procfs::exe(s.pid).is_some_and(|e| e.starts_with(&run.dir)))
        .map(|s| s.pid)
        .collect()
}

// ---------------------------------------------------------------------------
// Directories

/// Every path below `dir` (not `dir` itself), sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The image directory a failed dump was given must be absent or empty, and
/// nothing image-like may be anywhere under `area` (the directory the
/// engine writes its temporary directory into) except below `allowed`.
fn expect_no_image(img: &Path, area: &Path, allowed: &[&Path]) -> Result<(), String> {
    let allowed = |p: &Path| allowed.iter().any(|a| p.starts_with(a));
    let mut problems = Vec::new();
    if img.exists() {
        let inside = walk(img);
        if !inside.is_empty() {
            problems.push(format!(
                "{} is not empty: {}",
                img.display(),
                show_paths(&inside)
            ));
        }
    }
    let image_like: Vec<PathBuf> = walk(area)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !allowed(p) && (name == MANIFEST_NAME || name.ends_with(".img"))
        })
        .collect();
    if !image_like.is_empty() {
        problems.push(format!(
            "image files are left under {}: {}",
            area.display(),
            show_paths(&image_like)
        ));
    }
    // The engine's temporary directory (a sibling of the image directory).
    let hidden: Vec<PathBuf> = fs::read_dir(area)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    !allowed(p)
                        && p.file_name()
                            .is_some_and(|n| n.as_bytes().starts_with(b"."))
                })
                .collect()
        })
        .unwrap_or_default();
    if !hidden.is_empty() {
        problems.push(format!(
            "temporary entries are left in {}: {}",
            area.display(),
            show_paths(&hidden)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn show_paths(v: &[PathBuf]) -> String {
    const MAX: usize = 20;
    let mut s = v
        .iter()
        .take(MAX)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > MAX {
        s.push_str(&format!(" and {} more", v.len() - MAX));
    }
    s
}

/// A tmpfs mounted for one trial; unmounted on drop whatever happens.
struct Tmpfs {
    at: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    fn mount(at: &Path, opts: &str) -> std::io::Result<Tmpfs> {
        let c = |s: &[u8]| CString::new(s).expect("no NUL");
        let target = c(at.as_os_str().as_bytes());
        let fstype = c(b"tmpfs");
        let data = c(opts.as_bytes());
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tmpfs {
            at: at.to_path_buf(),
            mounted: true,
        })
    }

    fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let target = CString::new(self.at.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: a valid NUL-terminated path.
        let r = unsafe { libc::umount2(target.as_ptr(), 0) };
        if r == 0 {
            self.mounted = false;
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // Busy (a leaked process of the engine?): detach it anyway, so the
        // machine is left clean, but report it.
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        self.mounted = false;
        Err(format!(
            "umount {}: {e} (detached it lazily)",
            self.at.display()
        ))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

// ---------------------------------------------------------------------------
// Dump trials

/// Dump 48 MiB into an 8 MiB tmpfs: the dump must fail with ENOSPC naming
/// the file, the target must go on as before, and the tmpfs must hold no
/// image (nor the engine's temporary directory).
fn dump_enospc(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    let mnt = run.path("small");
    fs::create_dir(&mnt).map_err(|e| format!("create {}: {e}", mnt.display()))?;
    let mut fs8 = match Tmpfs::mount(&mnt, "size=8m,mode=0755") {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Ok(Outcome::Ignored(format!("cannot mount a tmpfs here: {e}")))
        }
        Err(e) => return Err(format!("mount tmpfs on {}: {e}", mnt.display())),
    };
    run.note(format!("mounted a tmpfs of 8 MiB on {}", mnt.display()));
    let img = mnt.join("img");
    let checks = (|| {
        let args = dump_args(run, pid, &img, "dump-enospc", &[]);
        let out = expect_failure(run, "dump-enospc", &img, args)?;
        let line = out
            .lines()
            .find(|l| l.contains("No space left"))
            .ok_or_else(|| {
                format!(
                    "the dump failed, but its message does not say \"No space left\": {}",
                    out.trim()
                )
            })?;
        if !line.contains(".img") && !line.contains(&*mnt.to_string_lossy()) {
            return Err(format!(
                "the ENOSPC message does not name the file it was writing: {line}"
            ));
        }
        check_unharmed(run, &before, "after the failed dump")?;
        expect_no_image(&img, &mnt, &[])?;
        let rest: Vec<PathBuf> = walk(&mnt).into_iter().filter(|p| p != &img).collect();
        if !rest.is_empty() {
            return Err(format!(
                "the failed dump left files on the tmpfs: {}",
                show_paths(&rest)
            ));
        }
        Ok(())
    })();
    let unmounted = fs8.unmount();
    checks?;
    unmounted?;
    run.note("tmpfs unmounted");
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// The arguments of a pre-dump of `pid` into `img`.
fn pre_dump_args(run: &Run, pid: i32, img: &Path, what: &str) -> Vec<OsString> {
    let mut v = dump_args(run, pid, img, what, &[]);
    v[0] = "pre-dump".into();
    v
}

/// Whether `pid` has a userfaultfd open (the pre-dump's write tracking).
fn has_uffd(pid: i32) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.filter_map(|e| e.ok()).any(|e| {
            fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[userfaultfd]")
        })
    })
}

/// A dump whose parent image does not exist is refused, naming it; the
/// tree runs on as before.
fn dump_prev_missing(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    let img = run.path("img-1");
    let what = "dump-prev-missing";
    let args = dump_args(
        run,
        pid,
        &img,
        what,
        &["--prev-images-dir", "../img-pre-none"],
    );
    let out = expect_failure(run, what, &img, args)?;
    let p = pid.to_string();
    expect_mentions(what, &out, &[&["img-pre-none"], &[&p], &["parent"]])?;
    check_unharmed(run, &before, "after the refused dump")?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// A dump whose parent image is a pre-dump of another tree is refused;
/// both trees run on, the other one still tracked.
fn dump_prev_other_tree(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let child = Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn sleep: {e}"))?;
    let other = child.id() as i32;
    let _guard = ChildGuard(Some(child));
    let pre = run.path("img-pre-other");
    let args = pre_dump_args(run, other, &pre, "pre-dump-other");
    let st = run.engine("pre-dump-other", &pre, args)?;
    if !st.success() {
        return Err(format!(
            "the pre-dump of pid {other} failed ({st}): {}",
            console(run, "pre-dump-other").trim()
        ));
    }
    if !has_uffd(other) {
        return Err(format!(
            "after its pre-dump, pid {other} has no write-tracking userfaultfd"
        ));
    }
    let before = capture(run, pid)?;
    let img = run.path("img-1");
    let what = "dump-prev-other";
    let args = dump_args(
        run,
        pid,
        &img,
        what,
        &["--prev-images-dir", "../img-pre-other"],
    );
    let out = expect_failure(run, what, &img, args)?;
    let p = pid.to_string();
    expect_mentions(what, &out, &[&["another tree"], &[&p], &["img-pre-other"]])?;
    check_unharmed(run, &before, "after the refused dump")?;
    if procfs::stat(other).is_none_or(|s| s.is_stopped() || s.is_zombie()) || !has_uffd(other) {
        return Err(format!(
            "after the refused dump, the other tree (pid {other}) is not running and tracked as before"
        ));
    }
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// A restore whose parent image has gone is refused before anything is
/// created, naming the parent; with the parent back, it restores.
fn restore_prev_missing(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let pre = run.path("img-pre-1");
    let args = pre_dump_args(run, pid, &pre, "pre-dump-1");
    let st = run.engine("pre-dump-1", &pre, args)?;
    if !st.success() {
        return Err(format!(
            "the pre-dump failed ({st}): {}",
            console(run, "pre-dump-1").trim()
        ));
    }
    let img = run.path("img-1");
    let args = dump_args(
        run,
        pid,
        &img,
        "dump-1",
        &["--prev-images-dir", "../img-pre-1"],
    );
    let st = run.engine("dump-1", &img, args)?;
    if !st.success() {
        return Err(format!(
            "the dump failed ({st}): {}",
            console(run, "dump-1").trim()
        ));
    }
    run.wait_tree_gone(Duration::from_secs(30))?;
    let away = run.path("img-pre-away");
    fs::rename(&pre, &away).map_err(|e| format!("rename {}: {e}", pre.display()))?;
    let what = "restore-missing";
    let args: Vec<OsString> = vec![
        "restore".into(),
        "-D".into(),
        img.clone().into(),
        "-d".into(),
        "-o".into(),
        run.path(&format!("{what}.log")).into(),
        "-v4".into(),
    ];
    let out = expect_failure(run, what, &img, args)?;
    expect_mentions(what, &out, &[&["img-pre-1"], &["parent"]])?;
    if procfs::stat(pid).is_some() {
        return Err(format!("the refused restore left pid {pid} behind"));
    }
    fs::rename(&away, &pre).map_err(|e| format!("rename {}: {e}", away.display()))?;
    let st = run.engine_restore(1)?;
    if !st.success() {
        return Err(format!(
            "the restore with its parent back failed ({st}): {}",
            console(run, "restore-1").trim()
        ));
    }
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// Kills a directly spawned child (and waits for it) on every path.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Dump of a process whose fd 0 is a socket (not supported yet): the error
/// must name the pid, the fd and the kind of file, and the process must go
/// on untouched.
fn dump_socket_fd(run: &mut Run) -> Result<Outcome, String> {
    // The other end stays open (in this process) until the trial ends.
    let (rd, _wr) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let rd = std::os::fd::OwnedFd::from(rd);
    let exe = run.path("sleep");
    let mut cmd = Command::new(&exe);
    cmd.arg("1000")
        .current_dir(&run.dir)
        .stdin(Stdio::from(rd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C");
    // SAFETY: setsid is async-signal-safe. A session of its own, like a
    // zdtm program after its launcher.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    trial::no_inherited_fds(&mut cmd);
    let child = trial::spawn_retrying(&mut cmd)
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id() as i32;
    let mut guard = ChildGuard(Some(child));
    run.pid = Some(pid);
    run.known.insert(pid);
    run.note(format!(
        "started {} 1000 with a socket on fd 0, pid {pid}",
        exe.display()
    ));
    // Exec'd, the dynamic loader done, blocked in its sleep: only then do
    // its mappings stop changing.
    trial::poll(Duration::from_secs(5), || {
        let nr = blocked_in(pid)?;
        (procfs::exe(pid).as_deref() == Some(exe.as_path())
            && (nr == libc::SYS_nanosleep || nr == libc::SYS_clock_nanosleep))
            .then_some(())
    })
    .ok_or_else(|| format!("pid {pid} did not get to sleep in {}", exe.display()))?;
    let fd0 = fs::read_link(format!("/proc/{pid}/fd/0")).map_err(|e| e.to_string())?;
    if !fd0.to_string_lossy().starts_with("socket:") {
        return Err(format!(
            "test setup: fd 0 of pid {pid} is {}",
            fd0.display()
        ));
    }
    let before = capture(run, pid)?;

    let img = run.path("img-socket");
    let args = dump_args(run, pid, &img, "dump-socket", &[]);
    let out = expect_failure(run, "dump-socket", &img, args)?;
    expect_pid("dump-socket", &out, pid)?;
    expect_mentions("dump-socket", &out, &[&["fd 0"], &["socket"]])?;
    check_unharmed(run, &before, "after the failed dump")?;
    expect_no_image(&img, &run.dir, &[])?;

    // The process must still work: SIGTERM ends it as it would have.
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("kill({pid}): {e}"))?;
    let mut child = guard.0.take().expect("spawned");
    let st = trial::wait_child(&mut child, Duration::from_secs(10))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("pid {pid} did not exit within 10s of SIGTERM"))?;
    if st.signal() != Some(libc::SIGTERM) {
        return Err(format!(
            "pid {pid} ended with {st}, expected death by SIGTERM"
        ));
    }
    run.note(format!("pid {pid} ended by SIGTERM"));
    run.pid = None;
    Ok(Outcome::Passed)
}

/// Dump of a PID that does not exist: the error must name it, and no image
/// may appear.
fn dump_no_such_pid(run: &mut Run) -> Result<Outcome, String> {
    let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let pid = (300..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .ok_or("no free PID")?;
    run.note(format!("pid {pid} does not exist"));
    let img = run.path("img-nopid");
    let args = dump_args(run, pid, &img, "dump-nopid", &[]);
    let out = expect_failure(run, "dump-nopid", &img, args)?;
    expect_pid("dump-nopid", &out, pid)?;
    expect_no_image(&img, &run.dir, &[])?;
    Ok(Outcome::Passed)
}

/// Path, mode, size, mtime (s, ns) and content of one entry.
type EntryState = (PathBuf, u32, u64, i64, i64, Vec<u8>);

/// Everything about a directory's entries, to show that nothing in it
/// changed.
fn dir_state(dir: &Path) -> Result<Vec<EntryState>, String> {
    let mut v = Vec::new();
    for p in std::iter::once(dir.to_path_buf()).chain(walk(dir)) {
        let m = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let content = if m.is_file() {
            fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?
        } else {
            Vec::new()
        };
        v.push((p, m.mode(), m.size(), m.mtime(), m.mtime_nsec(), content));
    }
    Ok(v)
}

/// Dump into a directory that already holds other files (CRIU users keep
/// the dump's log there): accepted, the images appear beside the files,
/// which stay as they were. Into one that holds images already: refused,
/// the directory untouched, the target untouched.
fn dump_non_empty_dir(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;

    // Other files: a log-like file, and a subdirectory whose contents only
    // look like images.
    let img = run.path("img-others");
    fs::create_dir(&img).map_err(|e| format!("create {}: {e}", img.display()))?;
    fs::write(img.join("precious.txt"), b"not an image\n").map_err(|e| e.to_string())?;
    fs::create_dir(img.join("sub")).map_err(|e| e.to_string())?;
    fs::write(img.join("sub/inventory.img"), b"not an image either\n")
        .map_err(|e| e.to_string())?;
    // The files, not the directory itself (whose mtime the images change).
    let others: Vec<EntryState> = dir_state(&img)?
        .into_iter()
        .filter(|e| e.0 != img)
        .collect();
    let args = dump_args(run, pid, &img, "others-dump", &["--leave-running"]);
    let st = run.engine("others-dump", &img, args)?;
    if !st.success() {
        return Err(format!(
            "a dump into a directory holding other files failed ({st}): {}",
            console(run, "others-dump")
        ));
    }
    Manifest::verify(&img).map_err(|e| format!("the images beside other files: {e}"))?;
    let now = dir_state(&img)?;
    let kept: Vec<_> = now.iter().filter(|e| others.contains(e)).collect();
    if kept.len() != others.len() {
        return Err(format!(
            "the dump changed the other files of {}: now {}",
            img.display(),
            show_paths(&walk(&img))
        ));
    }
    check_unharmed(run, &before, "after the dump beside other files")?;

    // Images already there (what a dump before left).
    let img = run.path("img-full");
    fs::create_dir(&img).map_err(|e| format!("create {}: {e}", img.display()))?;
    fs::write(img.join("precious.txt"), b"not an image\n").map_err(|e| e.to_string())?;
    fs::write(img.join("inventory.img"), b"an old image\n").map_err(|e| e.to_string())?;
    let state = dir_state(&img)?;

    let args = dump_args(run, pid, &img, "dump-nonempty", &[]);
    // Not named dump-*: the runner's engine() would create the directory.
    let out = expect_failure(run, "nonempty-dump", &img, args)?;
    expect_mentions(
        "the dump",
        &out,
        &[
            &[&*img.to_string_lossy()],
            &["inventory.img"],
            &["holds images already"],
        ],
    )?;
    if dir_state(&img)? != state {
        return Err(format!(
            "the refused dump changed {}: now {}",
            img.display(),
            show_paths(&walk(&img))
        ));
    }
    expect_no_image(
        &run.path("no-such-dir"),
        &run.dir,
        &[&img, &run.path("img-others")],
    )?;
    check_unharmed(run, &before, "after the refused dump")?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// `--timeout` bounds the freeze: a parent held in vfork() takes no
/// ptrace stop, so the dump must give up once the timeout has passed, not
/// hang, naming the thread, its state and the option; the tree runs on as
/// it was (still in its vfork, nothing stopped or traced).
fn dump_timeout(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    trial::poll(Duration::from_secs(5), || {
        procfs::stat(pid).filter(|s| s.state == 'D').map(|_| ())
    })
    .ok_or_else(|| format!("pid {pid} did not get to wait in vfork() (state D)"))?;
    // Not `capture`: it waits for a task sleeping in S.
    let tree = run.snapshot(pid);
    let before = Target {
        pid,
        stopped: trial::stopped_threads(&tree),
        tree,
        maps: maps(pid)?,
        starttime: starttime(pid).ok_or_else(|| format!("pid {pid}: cannot read its stat"))?,
    };
    let img = run.path("img-timeout");
    let args = dump_args(run, pid, &img, "timeout-dump", &["--timeout", "1"]);
    let t0 = std::time::Instant::now();
    let out = expect_failure(run, "timeout-dump", &img, args)?;
    let took = t0.elapsed();
    if took < Duration::from_secs(1) || took > Duration::from_secs(8) {
        return Err(format!(
            "the dump with --timeout 1 gave up after {took:?}: {}",
            out.trim()
        ));
    }
    expect_pid("the dump that timed out", &out, pid)?;
    expect_mentions(
        "the dump that timed out",
        &out,
        &[&["--timeout"], &["state d"]],
    )?;
    check_unharmed(run, &before, "after the dump that timed out")?;
    expect_no_image(&img, &run.dir, &[])?;
    if procfs::stat(pid).map(|s| s.state) != Some('D') {
        return Err(format!(
            "pid {pid} left its vfork() wait after the failed dump"
        ));
    }
    // The program never gets past its vfork(); the cleanup kills the tree.
    Ok(Outcome::Passed)
}

/// "Every error names the pid, the object and the reason": the dump
/// failures of a live target that the other trials provoke for their own
/// rules (a full filesystem, a non-empty directory) must name the target's
/// pid too. All problems are collected, so one run shows every message.
fn dump_errors_name_the_pid(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    let mut problems = Vec::new();

    // A full filesystem: a 16 KiB tmpfs holds no image of any program.
    let mnt = run.path("tiny");
    fs::create_dir(&mnt).map_err(|e| format!("create {}: {e}", mnt.display()))?;
    let mut tiny = match Tmpfs::mount(&mnt, "size=16k,mode=0755") {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Ok(Outcome::Ignored(format!("cannot mount a tmpfs here: {e}")))
        }
        Err(e) => return Err(format!("mount tmpfs on {}: {e}", mnt.display())),
    };
    run.note(format!("mounted a tmpfs of 16 KiB on {}", mnt.display()));
    let img = mnt.join("img");
    let args = dump_args(run, pid, &img, "dump-full", &[]);
    let full = expect_failure(run, "dump-full", &img, args);
    let unmounted = tiny.unmount();
    let full = full?;
    unmounted?;
    if let Err(e) = expect_pid("the dump into a full filesystem", &full, pid) {
        problems.push(e);
    }

    // An image directory that holds images already.
    let img = run.path("img-full");
    fs::create_dir(&img).map_err(|e| format!("create {}: {e}", img.display()))?;
    fs::write(img.join("inventory.img"), b"an old image\n").map_err(|e| e.to_string())?;
    let args = dump_args(run, pid, &img, "nonempty-dump", &[]);
    let out = expect_failure(run, "nonempty-dump", &img, args)?;
    if let Err(e) = expect_pid("the dump into a directory holding images", &out, pid) {
        problems.push(e);
    }

    check_unharmed(run, &before, "after the failed dumps")?;
    run.stop_and_verify()?;
    if problems.is_empty() {
        Ok(Outcome::Passed)
    } else {
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------------------
// Restore trials

/// Copies a flat image directory.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    for e in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        if !e.file_type().map_err(|e| e.to_string())?.is_file() {
            return Err(format!("{}: not a regular file", e.path().display()));
        }
        fs::copy(e.path(), to.join(e.file_name()))
            .map_err(|err| format!("copy {}: {err}", e.path().display()))?;
    }
    Ok(())
}

/// A corruption: changes the copy `dir` of the image of `pid` and returns
/// what the restore's message must mention (groups of alternatives) and a
/// description for the trace.
type Corrupt = fn(dir: &Path, pid: i32) -> Result<(String, Vec<Vec<String>>), String>;

fn flip_page_byte(dir: &Path, _pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let p = dir.join("pages-1.img");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err("pages-1.img is empty".into());
    }
    let at = len / 2 + 123;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at))
        .and_then(|_| f.read_exact(&mut b))
        .and_then(|_| f.seek(SeekFrom::Start(at)))
        .and_then(|_| f.write_all(&[b[0] ^ 0x5a]))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok((
        format!("flipped bits of byte {at} of pages-1.img ({len} bytes)"),
        vec![vec!["pages-1.img".into()], vec!["checksum".into()]],
    ))
}

fn truncate_core(dir: &Path, pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let name = format!("core-{pid}.img");
    let p = dir.join(&name);
    let len = fs::metadata(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(len / 2))
        .map_err(|e| format!("truncate {}: {e}", p.display()))?;
    Ok((
        format!("truncated {name} from {len} to {} bytes", len / 2),
        vec![vec![name], vec!["size".into(), "truncated".into()]],
    ))
}

/// core-PID.img cut in the middle of its entry, with the manifest updated:
/// the framing check (not the manifest) must catch it.
fn truncate_core_resealed(dir: &Path, pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let name = format!("core-{pid}.img");
    let p = dir.join(&name);
    let len = fs::metadata(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    if len < 64 {
        return Err(format!("test setup: {name} has only {len} bytes"));
    }
    let cut = len - 17;
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(cut))
        .map_err(|e| format!("truncate {}: {e}", p.display()))?;
    let d = images::hash_file(&p).map_err(|e| e.to_string())?;
    reseal(dir, &name, d)?;
    Ok((
        format!("truncated {name} from {len} to {cut} bytes (manifest updated)"),
        vec![vec![name], vec!["truncated".into()]],
    ))
}

fn delete_mm(dir: &Path, pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let name = format!("mm-{pid}.img");
    fs::remove_file(dir.join(&name)).map_err(|e| format!("remove {name}: {e}"))?;
    Ok((
        format!("removed {name}"),
        vec![vec![name], vec!["missing".into(), "no such file".into()]],
    ))
}

/// Images without ckpt.manifest, as every other engine writes them: the
/// restore warns that it checks them by structure alone, and restores.
fn restore_no_manifest(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    fs::remove_file(img.join(MANIFEST_NAME)).map_err(|e| format!("remove {MANIFEST_NAME}: {e}"))?;
    run.note(format!("removed {MANIFEST_NAME}"));
    let out = restore_and_verify(
        run,
        "restore without a manifest",
        Some((&tree, &stopped, "after restoring images without a manifest")),
    )?;
    let log = fs::read_to_string(run.path("restore-1.log")).unwrap_or_default();
    if !log.contains(MANIFEST_NAME) {
        return Err(format!(
            "the restore did not warn that {MANIFEST_NAME} is missing: {}",
            log.trim()
        ));
    }
    Ok(out)
}

/// Records a rewritten file in the manifest, so that only the engine's
/// content checks (not the checksum) can catch the change.
fn reseal(dir: &Path, name: &str, d: images::FileDigest) -> Result<(), String> {
    let mut m = Manifest::read(dir).map_err(|e| e.to_string())?;
    m.add_digest(name, d);
    m.write(dir).map_err(|e| e.to_string())?;
    Manifest::verify(dir).map_err(|e| format!("test setup: the resealed manifest: {e}"))
}

/// inventory.img says image version 3: refused as unsupported.
fn bump_image_version(dir: &Path, _pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let p = dir.join("inventory.img");
    let mut inv: pb::InventoryEntry =
        images::read_one(&p, Magic::Inventory).map_err(|e| e.to_string())?;
    let old = inv.img_version;
    inv.img_version = old + 1;
    let d = images::write_image(&p, Magic::Inventory, &[inv]).map_err(|e| e.to_string())?;
    reseal(dir, "inventory.img", d)?;
    Ok((
        format!(
            "inventory.img: img_version {old} -> {} (manifest updated)",
            old + 1
        ),
        vec![vec!["inventory.img".into()], vec!["version".into()]],
    ))
}

/// cpuinfo.img claims an xsave component and an instruction set this CPU
/// lacks (the highest XCR0 bit it has not, and a bit of CPUID.7.0:EBX it
/// has clear): refused before any process exists, naming both.
fn cpu_of_the_future(dir: &Path, _pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let p = dir.join("cpuinfo.img");
    let mut cpu: pb::CpuinfoEntry =
        images::read_one(&p, Magic::Cpuinfo).map_err(|e| e.to_string())?;
    let x = cpu
        .x86_entry
        .first_mut()
        .ok_or("cpuinfo.img without an x86 entry")?;
    let xcr0 = x
        .xfeatures_mask
        .ok_or("cpuinfo.img without xfeatures_mask")?;
    let component = (2..63)
        .rev()
        .find(|b| xcr0 & (1 << b) == 0)
        .ok_or("XCR0 is full")?;
    x.xfeatures_mask = Some(xcr0 | 1 << component);
    // Instruction sets of one vendor's CPUs only: Xeon Phi's (CPUID.7.0:
    // EBX, word 9) and AMD's (CPUID.80000001:ECX, word 6); every CPU
    // lacks one of them.
    let (word, bit, name) = [
        (9, 26, "avx512pf"),
        (9, 27, "avx512er"),
        (6, 11, "xop"),
        (6, 16, "fma4"),
    ]
    .into_iter()
    .find(|&(w, b, _)| x.capability[w] & (1 << b) == 0)
    .ok_or("this CPU has every instruction set the test would claim")?;
    x.capability[word] |= 1 << bit;
    let d = images::write_image(&p, Magic::Cpuinfo, &[cpu]).map_err(|e| e.to_string())?;
    reseal(dir, "cpuinfo.img", d)?;
    Ok((
        format!("cpuinfo.img: xsave component {component} and {name} added (manifest updated)"),
        vec![
            vec!["cpuinfo.img".into()],
            vec![name.into()],
            vec![format!("{:#x}", 1u64 << component)],
            vec!["--cpu-cap".into()],
        ],
    ))
}

/// The first pagemap entry moved below every mapping (same number of
/// pages, so the pages file still matches), manifest updated: only the
/// cross-reference check between pagemap and mm can catch it.
fn pagemap_outside_mappings(dir: &Path, pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let name = format!("pagemap-{pid}.img");
    let p = dir.join(&name);
    let mut r = ImageReader::open(&p, Magic::Pagemap).map_err(|e| e.to_string())?;
    let head: pb::PagemapHead = r
        .read_entry()
        .map_err(|e| e.to_string())?
        .ok_or("pagemap without head")?;
    let mut entries = Vec::new();
    while let Some(e) = r
        .read_entry::<pb::PagemapEntry>()
        .map_err(|e| e.to_string())?
    {
        entries.push(e);
    }
    drop(r);
    let mm: pb::MmEntry = images::read_one(dir.join(format!("mm-{pid}.img")), Magic::Mm)
        .map_err(|e| e.to_string())?;
    let first = entries.first_mut().ok_or("the pagemap has no entries")?;
    let len = first.nr_pages as u64 * PAGE;
    let lowest = mm.vmas.iter().map(|v| v.start).min().unwrap_or(u64::MAX);
    let bogus = 0x10000u64;
    if bogus + len > lowest {
        return Err(format!(
            "test setup: no room below the first mapping ({lowest:#x}) for {} pages",
            first.nr_pages
        ));
    }
    let was = first.vaddr;
    first.vaddr = bogus;
    let mut w = ImageWriter::create(&p, Magic::Pagemap).map_err(|e| e.to_string())?;
    w.write_entry(&head).map_err(|e| e.to_string())?;
    for e in &entries {
        w.write_entry(e).map_err(|e| e.to_string())?;
    }
    let d = w.finish().map_err(|e| e.to_string())?;
    reseal(dir, &name, d)?;
    Ok((
        format!(
            "{name}: first entry moved from {was:#x} to {bogus:#x} ({} pages), outside every \
             mapping; manifest updated",
            len / PAGE
        ),
        vec![vec![name], vec![format!("{bogus:x}")]],
    ))
}

/// The PID must be free after a failed restore (nothing was created, or
/// whatever was created is gone), and no process of the case may run.
fn expect_nothing_restored(run: &mut Run, pid: i32, what: &str) -> Result<(), String> {
    let known = run.known.clone();
    let free = trial::poll(SETTLE, || {
        procfs::reap_zombies(pid, &known);
        procfs::stat(pid).is_none().then_some(())
    });
    if free.is_none() {
        let s = procfs::stat(pid);
        return Err(format!(
            "after the failed {what}, pid {pid} exists: {} (exe {:?})",
            s.map(|s| trial::describe(&[s])).unwrap_or_default(),
            procfs::exe(pid)
        ));
    }
    let left = strays(run, &[]);
    if !left.is_empty() {
        return Err(format!(
            "after the failed {what}, processes of the case run: {left:?}"
        ));
    }
    let pf = run.path(&format!("{what}.pid"));
    if pf.exists() {
        return Err(format!(
            "the failed {what} wrote its --pidfile {}",
            pf.display()
        ));
    }
    run.note(format!(
        "after the failed {what}: pid {pid} is free, nothing runs"
    ));
    Ok(())
}

/// Dump 1 of the started case; the tree must be gone after it (the
/// engine kills what it dumped).
fn dump_1(run: &mut Run) -> Result<(), String> {
    let st = run.engine_dump(1)?;
    if !st.success() {
        return Err(format!("dump 1 failed ({st})"));
    }
    run.wait_tree_gone(Duration::from_secs(30))
        .map_err(|left| format!("dump 1 exited 0, but the tree is still there: {left}"))
}

/// Dump (the target dies), restore a damaged copy (must fail, name the file
/// and the problem, create nothing), then restore the intact image (must
/// work, and the program must pass).
fn restore_damaged(run: &mut Run, corrupt: Corrupt) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    run.note("dump 1: tree gone");

    let img = run.path("img-1");
    let bad = run.path("img-bad");
    copy_dir(&img, &bad)?;
    let (desc, groups) = corrupt(&bad, pid)?;
    run.note(format!("damaged copy img-bad: {desc}"));
    let args = restore_args(run, &bad, "restore-bad");
    let out = expect_failure(run, "restore-bad", &bad, args)?;
    let groups: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    let groups: Vec<&[&str]> = groups.iter().map(Vec::as_slice).collect();
    expect_mentions("restore-bad", &out, &groups)?;
    expect_nothing_restored(run, pid, "restore-bad")?;

    restore_and_verify(
        run,
        "restore of the intact image",
        Some((&tree, &stopped, "after restoring the intact image")),
    )
}

/// dump --leave-running, then restore while the original still holds the
/// PID: refused with the PID and the holder's name; the original goes on.
fn restore_pid_taken(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    let st = run.engine_dump(1)?;
    if !st.success() {
        return Err(format!("dump 1 --leave-running failed ({st})"));
    }
    check_unharmed(run, &before, "after dump --leave-running")?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(|e| format!("/proc/{pid}/comm: {e}"))?
        .trim()
        .to_string();

    let img = run.path("img-1");
    let args = restore_args(run, &img, "restore-taken");
    let out = expect_failure(run, "restore-taken", &img, args)?;
    expect_pid("restore-taken", &out, pid)?;
    expect_mentions("restore-taken", &out, &[&[&comm]])?;
    let left = strays(run, &[pid]);
    if !left.is_empty() {
        return Err(format!(
            "after the refused restore, other processes run the program: {left:?}"
        ));
    }
    let pf = run.path("restore-taken.pid");
    if pf.exists() {
        return Err(format!(
            "the refused restore wrote its --pidfile {}",
            pf.display()
        ));
    }
    check_unharmed(run, &before, "after the refused restore")?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// Starts `sleep 60` with PID `want` (through ns_last_pid; retried, since
/// other processes may take it first).
fn spawn_with_pid(want: i32) -> Result<std::process::Child, String> {
    for _ in 0..50 {
        fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string())
            .map_err(|e| format!("ns_last_pid: {e}"))?;
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .map_err(|e| format!("spawning sleep: {e}"))?;
        if child.id() as i32 == want {
            return Ok(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    Err(format!("could not start a process with PID {want}"))
}

/// Dump a tree (it dies), start an unrelated process on one child's PID,
/// restore: refused naming that PID and its holder, nothing of the tree
/// runs; once the PID is free again the restore works.
fn restore_child_pid_taken(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    let child = *tree
        .keys()
        .filter(|&&p| p != pid)
        .max()
        .ok_or("the tree has no child process")?;
    dump_1(run)?;
    let mut holder = spawn_with_pid(child)?;
    run.note(format!("pid {child} (a child of the tree) taken by sleep"));
    let img = run.path("img-1");
    let args = restore_args(run, &img, "restore-taken");
    let out = expect_failure(run, "restore-taken", &img, args);
    let checked = out.and_then(|out| {
        expect_pid("restore-taken", &out, child)?;
        expect_mentions("restore-taken", &out, &[&["sleep"]])?;
        expect_nothing_restored(run, pid, "restore-taken")
    });
    let _ = holder.kill();
    let _ = holder.wait();
    checked?;

    restore_and_verify(
        run,
        "restore with the PID free again",
        Some((&tree, &stopped, "after restoring with the PID free")),
    )
}

/// The unlinked file of inotify_unlinked has its path taken before the
/// restore: made again beside it, it would show in its directory's watch
/// (no IN_EXCL_UNLINK) under the other name. The restore refuses, naming
/// the pid, the file and the watch, before any process exists, and
/// leaves the directory as it found it; with the path free it works.
/// A restore of `img` that must fail, for a reason other than its root's
/// PID being taken: the other trials, running alongside, make processes
/// fast enough for the PIDs to wrap, so another one may hold `pid` for a
/// moment; the restore is then run again once it is free (the engine's
/// refusal of a taken PID has trials of its own).
fn restore_expecting_failure(
    run: &mut Run,
    img: &Path,
    what: &str,
    pid: i32,
) -> Result<String, String> {
    let taken = format!("PID {pid} is taken by a running process");
    let mut tries = 0;
    loop {
        let t0 = std::time::Instant::now();
        while procfs::stat(pid).is_some() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let args = restore_args(run, img, what);
        let out = expect_failure(run, what, img, args)?;
        tries += 1;
        if !out.contains(&taken) || tries == 3 {
            return Ok(out);
        }
        run.note(format!(
            "{what}: pid {pid} was held by another process; again"
        ));
    }
}

fn restore_ghost_path_taken_dir_watched(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    let dir = run.path("inotify_unlinked.dir");
    let taken = dir.join("f");
    std::fs::write(&taken, "other").map_err(|e| format!("{}: {e}", taken.display()))?;
    run.note(format!("{} taken", taken.display()));
    let img = run.path("img-1");
    let out = restore_expecting_failure(run, &img, "restore-taken", pid);
    let checked = out.and_then(|out| {
        expect_pid("restore-taken", &out, pid)?;
        expect_mentions(
            "restore-taken",
            &out,
            &[&["f.cr.1.ghost"], &["IN_EXCL_UNLINK"], &["watch 1"]],
        )?;
        expect_nothing_restored(run, pid, "restore-taken")?;
        let names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        if names != ["f"] || std::fs::read(&taken).ok().as_deref() != Some(b"other".as_slice()) {
            return Err(format!(
                "the failed restore left {names:?} in {}, not f as it was",
                dir.display()
            ));
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&taken);
    checked?;
    restore_and_verify(
        run,
        "restore with the path free again",
        Some((&tree, &stopped, "after restoring with the path free")),
    )
}

// ---------------------------------------------------------------------------
// The engine killed during a restore

/// A moment of a restore to SIGKILL the engine at: its name, and whether
/// the restore got there, from the engine's log so far, the root's PID
/// and the number of tasks.
type KillPoint = (&'static str, fn(&str, i32, usize) -> bool);

const KILL_POINTS: &[KillPoint] = &[
    ("as soon as the root exists", |_, root, _| {
        procfs::stat(root).is_some()
    }),
    ("once every task has set itself up", |log, _, _| {
        log.contains(" tasks created")
    }),
    // The take-over goes stage by stage for every task at once (tasks
    // side by side on tracer threads, restore/workers.rs): a task is
    // `ready` only when all are, right before the release, from which on
    // a tree left by a dead engine is whole and runs (by design). So the
    // points are the first task through its memory, and half the tasks
    // through their files, both with every task still held.
    ("once the first task is taken over", |log, _, _| {
        log.contains(": stage Memory done")
    }),
    ("half-way through the take-over", |log, _, n| {
        log.matches(": stage Files done").count() >= n / 2
    }),
];

/// Dump a tree (it dies); restore it again and again, SIGKILLing the
/// engine at each of `KILL_POINTS`: each time, within a few seconds, no
/// process of the tree and no copy of the engine may be left. Then the
/// restore works and the program passes.
fn restore_engine_killed(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    let caps_before = capabilities(&tree);
    let ids = image_pids(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    for (i, (when, reached)) in KILL_POINTS.iter().enumerate() {
        // A small tree may be restored before the engine can be caught at
        // a late point: then the restored tree goes and it is tried again.
        for attempt in 0.. {
            let what = format!("restore-killed-{i}-{attempt}");
            let args = restore_args(run, &img, &what);
            let (mut engine, _) = run.spawn_engine(&what, args)?;
            let log = run.path(&format!("{what}.log"));
            let end = std::time::Instant::now() + Duration::from_secs(60);
            let got_there = loop {
                if matches!(engine.try_wait(), Ok(Some(_))) || std::time::Instant::now() > end {
                    break false;
                }
                let text = fs::read_to_string(&log).unwrap_or_default();
                if reached(&text, pid, tree.len()) {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let _ = engine.kill();
            let st = engine
                .wait()
                .map_err(|e| format!("{what}: waiting for the engine: {e}"))?;
            if got_there && st.signal() == Some(libc::SIGKILL) {
                run.note(format!("{what}: engine SIGKILLed {when}"));
                expect_nothing_left(run, pid, &ids, &format!("the engine was SIGKILLed {when}"))?;
                break;
            }
            if !st.success() || attempt == 4 {
                return Err(format!(
                    "{what}: the engine ended ({st}) before it could be killed {when}: {}",
                    console(run, &what).trim()
                ));
            }
            run.note(format!("{what}: restored before it could be killed {when}"));
            for &p in tree.keys() {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            expect_nothing_left(run, pid, &ids, "after killing the restored tree")?;
            let _ = fs::remove_file(run.path(&format!("{what}.pid")));
        }
    }
    let st = run.engine_restore(1)?;
    if !st.success() {
        return Err(format!(
            "the restore after the killed ones failed ({st}): {}",
            console(run, "restore-1").trim()
        ));
    }
    // What the restore holds on to until the release (CAP_KILL) is gone.
    let caps_after = capabilities(&tree);
    if caps_after != caps_before {
        return Err(format!(
            "capabilities differ after the restore: before {caps_before:?}, after {caps_after:?}"
        ));
    }
    run.check_tree(
        &tree,
        &stopped,
        "after the restores whose engine was killed",
    )?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// Every fd of every task of `tree`: its number and what it is (a pipe's
/// inode number left out, it changes), by PID.
fn fd_tables(tree: &procfs::Tree) -> Vec<(i32, Vec<String>)> {
    tree.keys()
        .map(|&p| {
            let mut fds: Vec<String> = fs::read_dir(format!("/proc/{p}/fd"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| {
                            let to = fs::read_link(e.path()).unwrap_or_default();
                            let to = to.to_string_lossy();
                            let kind = to.split_once(":[").map_or(&*to, |(k, _)| k);
                            format!("{} {kind}", e.file_name().to_string_lossy())
                        })
                        .collect()
                })
                .unwrap_or_default();
            fds.sort();
            (p, fds)
        })
        .collect()
}

/// Dump a tree with --leave-running, then dump it (it dies) and restore
/// it five times: every task has the fds it had, no more (the engine's
/// own pipes stay its own).
fn restore_no_extra_fds(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    let before = fd_tables(&tree);
    let ids = image_pids(&tree);
    let img0 = run.path("img-0");
    let args = dump_args(run, pid, &img0, "dump-0", &["--leave-running"]);
    let st = run.engine("dump-0", &img0, args)?;
    if !st.success() {
        return Err(format!("dump 0 --leave-running failed ({st})"));
    }
    let after = fd_tables(&tree);
    if after != before {
        return Err(format!(
            "fds differ after dump --leave-running: before {before:?}, after {after:?}"
        ));
    }
    dump_1(run)?;
    for round in 0..5 {
        let st = run.engine_restore(1)?;
        if !st.success() {
            return Err(format!(
                "restore {round} failed ({st}): {}",
                console(run, "restore-1").trim()
            ));
        }
        let after = fd_tables(&tree);
        let differ: Vec<String> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|((p, b), (_, a))| format!("pid {p}: before {b:?}, after {a:?}"))
            .collect();
        if !differ.is_empty() {
            return Err(format!(
                "restore {round}: fds differ from the dumped tree's: {}",
                differ.join("; ")
            ));
        }
        run.note(format!(
            "restore {round}: every task has its own fds, no more"
        ));
        if round < 4 {
            for &p in tree.keys() {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            expect_nothing_left(run, pid, &ids, &format!("after restore {round}"))?;
            let _ = fs::remove_file(run.path("restore-1.pid"));
        }
    }
    run.check_tree(&tree, &stopped, "after the fifth restore")?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// Every capability set of every task of `tree`, by PID.
fn capabilities(tree: &procfs::Tree) -> Vec<(i32, Vec<String>)> {
    tree.keys()
        .map(|&p| {
            let sets = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
                .iter()
                .map(|k| format!("{k} {}", procfs::status_field(p, k).unwrap_or_default()))
                .collect();
            (p, sets)
        })
        .collect()
}

/// The PIDs a restore of `tree` takes: its tasks', and those of the
/// leaders of their groups and sessions (a helper takes one whose leader
/// is gone). Read while the tree runs.
fn image_pids(tree: &procfs::Tree) -> BTreeSet<i32> {
    let mut ids: BTreeSet<i32> = tree.keys().copied().collect();
    for &p in tree.keys() {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
        // state ppid pgrp session
        ids.extend(
            after
                .split(' ')
                .skip(2)
                .take(2)
                .filter_map(|f| f.parse::<i32>().ok()),
        );
    }
    ids
}

/// Within a few seconds of the engine's death, none of the PIDs `ids` of
/// the tree of root `pid` may be taken, not even by a zombie (ours are
/// reaped), and no stray program of the case or copy of the engine in
/// the tree's session may run.
fn expect_nothing_left(
    run: &mut Run,
    pid: i32,
    ids: &BTreeSet<i32>,
    when: &str,
) -> Result<(), String> {
    let engine = run.cfg.engine.clone();
    let me = std::process::id() as i32;
    let mut left = Vec::new();
    let gone = trial::poll(Duration::from_secs(5), || {
        // A task of the tree holds its PID until it is reaped, by us once
        // its parent is dead: the next restore needs every PID free.
        for &p in ids {
            if procfs::stat(p).is_some_and(|s| s.ppid == me && s.is_zombie()) {
                let _ = nix::sys::wait::waitpid(
                    Pid::from_raw(p),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        left = procfs::all_processes()
            .into_iter()
            .filter(|s| {
                ids.contains(&s.pid)
                    || !s.is_zombie()
                        && procfs::exe(s.pid).is_some_and(|e| {
                            e.starts_with(&run.dir) || (e == engine && s.session == pid)
                        })
            })
            .collect();
        left.is_empty().then_some(())
    });
    if gone.is_none() {
        let shown: Vec<String> = left
            .iter()
            .map(|s| {
                format!(
                    "pid {} ({}, parent {}, exe {:?}, {} resident)",
                    s.pid,
                    s.state,
                    s.ppid,
                    procfs::exe(s.pid),
                    procfs::status_field(s.pid, "VmRSS").unwrap_or_default()
                )
            })
            .collect();
        for s in &left {
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        }
        return Err(format!(
            "{when}, tasks of the restore outlived it by 5 s: {}",
            shown.join("; ")
        ));
    }
    run.note(format!("{when}: nothing of the tree is left"));
    Ok(())
}

// ---------------------------------------------------------------------------
// SysV IPC ids and keys taken at restore time

/// The SysV objects (kind, id) an image directory holds, read from its
/// ipcns-{shm,sem,msg}-N.img.
fn image_ipc_ids(img: &Path) -> Result<BTreeSet<(&'static str, i32)>, String> {
    let mut out = BTreeSet::new();
    let names: Vec<String> = fs::read_dir(img)
        .map_err(|e| format!("{}: {e}", img.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let err = |e: images::ImageError| e.to_string();
    for n in names {
        let p = img.join(&n);
        if n.starts_with("ipcns-shm-") {
            let mut r = ImageReader::open(&p, Magic::IpcnsShm).map_err(err)?;
            while let Some(e) = r.read_entry::<pb::IpcShmEntry>().map_err(err)? {
                r.skip_raw(e.size.div_ceil(4) * 4).map_err(err)?;
                out.insert(("shm", e.desc.id as i32));
            }
        } else if n.starts_with("ipcns-sem-") {
            let mut r = ImageReader::open(&p, Magic::IpcnsSem).map_err(err)?;
            while let Some(e) = r.read_entry::<pb::IpcSemEntry>().map_err(err)? {
                r.skip_raw((e.nsems as u64 * 2).div_ceil(8) * 8)
                    .map_err(err)?;
                out.insert(("sem", e.desc.id as i32));
            }
        } else if n.starts_with("ipcns-msg-") {
            let mut r = ImageReader::open(&p, Magic::IpcnsMsg).map_err(err)?;
            while let Some(e) = r.read_entry::<pb::IpcMsgEntry>().map_err(err)? {
                for _ in 0..e.qnum {
                    let m: pb::IpcMsg = r
                        .read_entry()
                        .map_err(err)?
                        .ok_or("ipcns-msg: a queue ends early")?;
                    r.skip_raw((m.msize as u64).div_ceil(8) * 8).map_err(err)?;
                }
                out.insert(("msg", e.desc.id as i32));
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "test setup: {} holds no SysV objects",
            img.display()
        ));
    }
    Ok(out)
}

/// The live objects (kind, key, id) with the ids of `ids`: what a restore
/// of that image could create or change. (Only these: SysV trials run in
/// parallel, and ids are unique on the machine.)
fn sysvipc_live(ids: &BTreeSet<(&'static str, i32)>) -> BTreeSet<(&'static str, i32, i32)> {
    procfs::SYSVIPC_KINDS
        .iter()
        .flat_map(|&k| {
            procfs::sysvipc_objects(k)
                .into_iter()
                .map(move |(key, id)| (k, key, id))
        })
        .filter(|&(k, _, id)| ids.contains(&(k, id)))
        .collect()
}

/// A semaphore set of another program with `key`; at `id` when given
/// (through sem_next_id, as the engine does).
fn intruder_sem(key: i32, id: Option<i32>) -> Result<i32, String> {
    if let Some(id) = id {
        fs::write("/proc/sys/kernel/sem_next_id", id.to_string())
            .map_err(|e| format!("sem_next_id: {e}"))?;
    }
    // SAFETY: plain syscall.
    let got = unsafe { libc::semget(key, 2, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    let _ = fs::write("/proc/sys/kernel/sem_next_id", "-1");
    if got < 0 {
        return Err(format!(
            "semget({key:#x}): {}",
            std::io::Error::last_os_error()
        ));
    }
    if id.is_some_and(|id| id != got) {
        let _ = procfs::sysvipc_remove("sem", got);
        return Err(format!("the intruder got id {got}, not {id:?}"));
    }
    Ok(got)
}

/// Dump sysv_sem_msg, then let another program hold the semaphore set's
/// id (with another key), then its key (at another id): each restore is
/// refused naming the set, its id and key, and the holder, and creates
/// nothing (no process, no IPC object). Once the intruder is gone the
/// restore recreates the set and the case passes.
fn restore_sysvipc_taken(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    dump_1(run)?;
    let ids =
        fs::read_to_string(run.path("sysvipc.ids")).map_err(|e| format!("sysvipc.ids: {e}"))?;
    let semid: i32 = ids
        .lines()
        .find_map(|l| l.strip_prefix("sem ")?.trim().parse().ok())
        .ok_or("sysvipc.ids names no semaphore set")?;
    let key = procfs::sysvipc_objects("sem")
        .into_iter()
        .find(|&(_, id)| id == semid)
        .map(|(k, _)| k)
        .ok_or(format!("semaphore set {semid} is gone after the dump"))?;
    procfs::sysvipc_remove("sem", semid)?;
    let img = run.path("img-1");
    let dumped = image_ipc_ids(&img)?;
    let other_key = key ^ 0x5a5a;
    for (what, intruder_key, at) in [
        ("restore-id-taken", other_key, Some(semid)),
        ("restore-key-taken", key, None),
    ] {
        let intruder = intruder_sem(intruder_key, at)?;
        run.note(format!(
            "{what}: semaphore set {intruder} (key {intruder_key:#x}) of another program"
        ));
        let before = sysvipc_live(&dumped);
        let args = restore_args(run, &img, what);
        let out = expect_failure(run, what, &img, args);
        let after = sysvipc_live(&dumped);
        let _ = procfs::sysvipc_remove("sem", intruder);
        let out = out?;
        expect_mentions(
            what,
            &out,
            &[
                &["semaphore set"],
                &[&format!("set {semid} (key {:#x})", key as u32)],
                &[&format!("{:#x}", intruder_key as u32)],
                &[if at.is_some() {
                    "id is taken"
                } else {
                    "key is held"
                }],
            ],
        )?;
        expect_pid(what, &out, intruder)?;
        expect_nothing_restored(run, pid, what)?;
        if before != after {
            return Err(format!(
                "the refused {what} changed the SysV objects: before {before:x?}, after {after:x?}"
            ));
        }
    }
    restore_and_verify(run, "restore without the intruder", None)
}

/// Dump sysv_shm, remove its keyed segments (so the restore must create
/// them again) and hide the case's log file (so the restore fails after
/// creating them, when it opens the files the tasks share): the failed
/// restore leaves no process and no SysV object behind. With the log back
/// the restore succeeds and the case passes.
fn restore_sysvipc_rollback(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    dump_1(run)?;
    let ids =
        fs::read_to_string(run.path("sysvipc.ids")).map_err(|e| format!("sysvipc.ids: {e}"))?;
    for id in ids
        .lines()
        .filter_map(|l| l.strip_prefix("shm ")?.trim().parse().ok())
    {
        procfs::sysvipc_remove("shm", id)?;
    }
    let log = run.path("sysv_shm.out.inprogress");
    let hidden = run.path("hidden.out.inprogress");
    fs::rename(&log, &hidden).map_err(|e| format!("hiding {}: {e}", log.display()))?;
    let img = run.path("img-1");
    let dumped = image_ipc_ids(&img)?;
    let before = sysvipc_live(&dumped);
    if !before.is_empty() {
        return Err(format!(
            "test setup: the segments are still there: {before:x?}"
        ));
    }
    let args = restore_args(run, &img, "restore-no-log");
    let out = expect_failure(run, "restore-no-log", &img, args);
    let after = sysvipc_live(&dumped);
    fs::rename(&hidden, &log).map_err(|e| format!("restoring {}: {e}", log.display()))?;
    let out = out?;
    expect_mentions("restore-no-log", &out, &[&["sysv_shm.out.inprogress"]])?;
    expect_nothing_restored(run, pid, "restore-no-log")?;
    let created = fs::read_to_string(run.path("restore-no-log.log")).unwrap_or_default();
    if !created.contains("created again") {
        return Err(format!(
            "the failed restore did not get as far as creating the segments (its log: {})",
            created.trim()
        ));
    }
    if before != after {
        return Err(format!(
            "the failed restore left SysV objects behind: before {before:x?}, after {after:x?}"
        ));
    }
    restore_and_verify(run, "restore with the log back", None)
}

/// The segment contents of ipcns-shm-N.img cut short (manifest updated,
/// so only the IPC loader can notice): refused before anything exists.
fn truncate_ipcns_shm_resealed(
    dir: &Path,
    _pid: i32,
) -> Result<(String, Vec<Vec<String>>), String> {
    let name = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("ipcns-shm-"))
        .ok_or("test setup: the dump has no ipcns-shm image")?;
    let p = dir.join(&name);
    let len = fs::metadata(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    let cut = len - 100;
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(cut))
        .map_err(|e| format!("truncate {}: {e}", p.display()))?;
    let d = images::hash_file(&p).map_err(|e| e.to_string())?;
    reseal(dir, &name, d)?;
    Ok((
        format!("truncated {name} from {len} to {cut} bytes (manifest updated)"),
        vec![vec![name], vec!["truncated".into(), "expected".into()]],
    ))
}

/// The last step of a trial that had a restore refused: restore the intact
/// image (`what` says which), check the tree against `check` if given, and
/// let the program judge itself.
/// The tree as it was, its stopped threads, and when it is checked.
type TreeCheck<'a> = (&'a procfs::Tree, &'a BTreeSet<(i32, i32)>, &'a str);

fn restore_and_verify(
    run: &mut Run,
    what: &str,
    check: Option<TreeCheck<'_>>,
) -> Result<Outcome, String> {
    let st: ExitStatus = run.engine_restore(1)?;
    if !st.success() {
        return Err(format!(
            "{what} failed ({st}): {}",
            console(run, "restore-1").trim()
        ));
    }
    if let Some((tree, stopped, when)) = check {
        run.check_tree(tree, stopped, when)?;
    }
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// A named pipe replaced by a regular file between dump and restore: the
/// restore is refused naming the path, nothing is created; with a FIFO
/// there again, the restore goes through and the case passes.
fn restore_fifo_replaced(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    let files: Vec<pb::FileEntry> = images::read_all(img.join("files.img"), Magic::Files)
        .map_err(|e| format!("files.img: {e}"))?;
    let path = files
        .iter()
        .filter_map(|f| f.fifo.as_ref()?.regf_id)
        .filter_map(|id| files.iter().find(|f| f.id == id)?.reg.as_ref())
        .map(|r| PathBuf::from(&r.name))
        .next()
        .ok_or("test setup: no FIFO in files.img")?;
    let meta = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::remove_file(&path)
        .and_then(|()| fs::write(&path, b"not a fifo"))
        .map_err(|e| format!("replacing {}: {e}", path.display()))?;
    run.note(format!("{} replaced by a regular file", path.display()));
    let args = restore_args(run, &img, "restore-bad");
    let out = expect_failure(run, "restore-bad", &img, args)?;
    let name = path.to_string_lossy().into_owned();
    expect_mentions(
        "restore-bad",
        &out,
        &[&[name.as_str()], &["named pipe (FIFO)"]],
    )?;
    expect_nothing_restored(run, pid, "restore-bad")?;

    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path");
    fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
    nix::unistd::mkfifo(
        c.as_c_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
    std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| format!("chown {}: {e}", path.display()))?;
    restore_and_verify(
        run,
        "restore with the FIFO there again",
        Some((&tree, &stopped, "after restoring with the FIFO there again")),
    )
}
