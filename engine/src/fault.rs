//! Fault points: with `CKPT_FAULT=NAME` in its environment the engine
//! fails on purpose at point NAME, as if the kernel had refused something
//! there. The safety trials run every point and check what a real failure
//! at that moment must leave: after a dump, the tree running as before with
//! no image; after a restore, nothing of the tree and its pids free.
//!
//! The points are compiled in and cost one comparison each; without the
//! variable none fires.
//!
//! They are also where a dump gives up once the `ckpt` that started it is
//! gone ([`abandon`], see `dump/worker.rs`): every point is a place where
//! failing is safe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Pid, Result};

/// The variable that names the point to fail at.
pub const VAR: &str = "CKPT_FAULT";

/// The dump's points, in the order a dump reaches them.
pub const DUMP_POINTS: &[&str] = &[
    // Every task of the tree is seized.
    "dump-frozen",
    // Inside a task's remote-syscall session, its scratch page mapped.
    "dump-remote",
    // A task's state read from outside.
    "dump-state",
    // A task's fds dumped.
    "dump-files",
    // A task's pages written.
    "dump-memory",
    // Every kind's and the tree-wide images written.
    "dump-objects",
    // The image directory synced, about to be renamed into place.
    "dump-commit",
];

/// The restore's points before and after the per-task stages.
pub const RESTORE_POINTS: &[&str] = &[
    // Every image loaded and checked, nothing created.
    "restore-validated",
    // The objects the engine makes exist, no task yet.
    "restore-objects",
    // Every task exists.
    "restore-tree",
    // Every task is taken over, before the kinds' finish.
    "restore-tasks",
    // Half of the tasks released (parent-death signal, capabilities).
    "restore-release",
    // Some tasks detached and running.
    "restore-detach",
];

/// The point of a restore task stage (`restore-task-memory` ...): the
/// first task to finish that stage fails.
pub fn task_stage_point(stage: &str) -> String {
    format!("restore-task-{}", stage.to_lowercase())
}

fn wanted() -> Option<&'static str> {
    static WANT: OnceLock<Option<String>> = OnceLock::new();
    WANT.get_or_init(|| std::env::var(VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

static ABANDONED: AtomicBool = AtomicBool::new(false);

/// Asks the work under way to give up at its next point. Async-signal-safe.
pub fn abandon() {
    ABANDONED.store(true, Ordering::Relaxed);
}

/// Fails when the work was abandoned; long loops (page copying) call it
/// between steps.
pub fn abandoned(pid: Pid) -> Result<()> {
    if ABANDONED.load(Ordering::Relaxed) {
        return Err(Error::task(
            pid,
            "dump",
            "the ckpt process that started it was killed: abandoned, the tree left as it was",
        ));
    }
    Ok(())
}

/// Fails with an error naming `pid` and the point when `CKPT_FAULT` names
/// `point`, or when the work was abandoned.
pub fn check(pid: Pid, point: &str) -> Result<()> {
    abandoned(pid)?;
    match wanted() {
        Some(w) if w == point => Err(Error::task(
            pid,
            format!("fault point {point}"),
            format!("failing here on purpose ({VAR}={point})"),
        )),
        _ => Ok(()),
    }
}

/// Whether `name` is a point of this engine (so a test can tell a point
/// that was never reached from a misspelt one).
pub fn is_point(name: &str) -> bool {
    DUMP_POINTS.contains(&name)
        || RESTORE_POINTS.contains(&name)
        || crate::restore::stage::TaskStage::ALL
            .iter()
            .any(|s| task_stage_point(&format!("{s:?}")) == name)
}
