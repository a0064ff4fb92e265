//! Cgroups a trial leaves behind.
//!
//! Cases that create cgroups name them `zdtm.<uniq>`, where `<uniq>` is
//! the name of the trial's work directory (zdtm/lib/cgroup.c's `cg_name()`
//! derives it from its working directory; the case table's `{uniq}`), or
//! `zdtm.<uniq>.<word>` for a second one, anywhere in any mounted
//! hierarchy. Not pids: the runner cannot see them inside a pid
//! namespace, and every ns trial's root is pid 3 of its own. After a
//! trial, such a cgroup of the trial that is still there fails it, and
//! the runner removes it (killing what is inside), so a failed trial does
//! not poison the next. Work directory names are unique (one per trial,
//! with the runner's pid and a sequence number), so trials running side by
//! side (the safety tests do) never touch each other's; cgroups that
//! existed before the trial are left alone in any case.
//!
//! Like procfs.rs, this deliberately shares no code with the engine.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prefix of cgroup directories cases create.
pub const PREFIX: &str = "zdtm.";

/// Mount points of every cgroup and cgroup2 filesystem.
fn mounts() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let fstype = post.split(' ').next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mp) = pre.split(' ').nth(4) {
            out.push(PathBuf::from(mp.replace("\\040", " ")));
        }
    }
    out
}

fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
    if depth > 12 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(PREFIX) {
            out.insert(p.clone());
        }
        walk(&p, depth + 1, out);
    }
}

/// Every `zdtm.*` cgroup directory (and those inside them) on the machine.
pub fn zdtm_dirs() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for m in mounts() {
        walk(&m, 0, &mut out);
    }
    out
}

/// Whether a cgroup directory name is one of trial `uniq`'s:
/// `zdtm.<uniq>` or `zdtm.<uniq>.<word>`. A work directory name ends in a
/// sequence number, so no other trial's `<uniq>` is `<uniq>.<word>`.
pub fn is_owned_name(name: &str, uniq: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix(uniq))
        .is_some_and(|r| {
            r.is_empty()
                || r.strip_prefix('.')
                    .is_some_and(|w| !w.is_empty() && !w.contains('.'))
        })
}

/// The cgroups of one trial that exist now and did not in `before`
/// (named as [`is_owned_name`] says).
pub fn owned(before: &BTreeSet<PathBuf>, uniq: &str) -> Vec<PathBuf> {
    let mine = |d: &Path| {
        d.file_name()
            .is_some_and(|n| is_owned_name(&n.to_string_lossy(), uniq))
    };
    let all = zdtm_dirs();
    let top: Vec<PathBuf> = all
        .iter()
        .filter(|d| mine(d) && !before.contains(*d))
        .cloned()
        .collect();
    // Only the outermost of nested matches.
    top.iter()
        .filter(|d| !top.iter().any(|o| o != *d && d.starts_with(o)))
        .cloned()
        .collect()
}

/// Remove cgroup directories: thaw them, kill what is inside, remove the
/// deepest first. Returns what could not be removed.
pub fn remove(dirs: &[PathBuf]) -> Vec<String> {
    let mut all: BTreeSet<PathBuf> = BTreeSet::new();
    for d in dirs {
        all.insert(d.clone());
        walk_all(d, &mut all);
    }
    for d in &all {
        let _ = fs::write(d.join("freezer.state"), "THAWED");
        let _ = fs::write(d.join("cgroup.freeze"), "0");
        if fs::write(d.join("cgroup.kill"), "1").is_err() {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let mut failed = Vec::new();
    // Deepest first: children sort after their parents.
    for d in all.iter().rev() {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < end && e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => {
                    failed.push(format!("{}: {e}", d.display()));
                    break;
                }
            }
        }
    }
    failed
}

fn walk_all(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.insert(e.path());
            walk_all(&e.path(), out);
        }
    }
}
