//! Fault-injection trials, part of `cargo test --test safety`: the engine
//! is made to fail at each of its fault points (`CKPT_FAULT`, see
//! `engine/src/fault.rs`), as a kernel refusal there would.
//!
//! - `dump/fault-points`: a dump failing at each point leaves the tree
//!   running as before (same processes, not stopped, not traced, the same
//!   mappings: no scratch page left) and no image; the message names the
//!   point. The tree then passes its own checks.
//! - `restore/fault-points`: a restore failing at each point (before the
//!   tasks, in each task stage, during the release) leaves no process of
//!   the tree and its pids free; the intact image then restores and the
//!   program passes.

use super::*;

use ckpt::fault;
use ckpt::restore::stage::TaskStage;

fn with_fault<T>(run: &mut Run, point: &str, f: impl FnOnce(&mut Run) -> T) -> T {
    run.engine_env = vec![(fault::VAR.to_string(), point.to_string())];
    let r = f(run);
    run.engine_env.clear();
    r
}

fn expect_point_named(what: &str, out: &str, point: &str) -> Result<(), String> {
    if out.contains(point) {
        Ok(())
    } else {
        Err(format!(
            "{what}: the engine did not fail at fault point {point} (never reached?): {}",
            out.trim()
        ))
    }
}

pub fn dump_fault_points(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    for (i, point) in fault::DUMP_POINTS.iter().enumerate() {
        let what = format!("dump-fault-{i}");
        let img = run.path(&format!("img-fault-{i}"));
        let args = dump_args(run, pid, &img, &what, &[]);
        let out = with_fault(run, point, |run| expect_failure(run, &what, &img, args))?;
        expect_point_named(&what, &out, point)?;
        expect_pid(&what, &out, pid)?;
        check_unharmed(run, &before, &format!("after the dump failed at {point}"))?;
        expect_no_image(&img, &run.path(""), &[])?;
        run.note(format!(
            "{what}: failed at {point}; the tree runs on unharmed"
        ));
    }
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

pub fn restore_fault_points(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    let ids = image_pids(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    let mut points: Vec<String> = Vec::new();
    points.extend(fault::RESTORE_POINTS[..3].iter().map(|p| p.to_string()));
    points.extend(
        TaskStage::ALL
            .iter()
            .map(|s| fault::task_stage_point(&format!("{s:?}"))),
    );
    points.extend(fault::RESTORE_POINTS[3..].iter().map(|p| p.to_string()));
    for (i, point) in points.iter().enumerate() {
        if !fault::is_point(point) {
            return Err(format!(
                "test setup: {point} is not a fault point of the engine"
            ));
        }
        let what = format!("restore-fault-{i}");
        let args = restore_args(run, &img, &what);
        let out = with_fault(run, point, |run| expect_failure(run, &what, &img, args))?;
        expect_point_named(&what, &out, point)?;
        expect_nothing_left(run, pid, &ids, &format!("the restore failed at {point}"))?;
        expect_nothing_restored(run, pid, &what)?;
        run.note(format!(
            "{what}: failed at {point}; nothing left, pid {pid} free"
        ));
    }
    restore_and_verify(
        run,
        "restore of the image after the failed ones",
        Some((&tree, &stopped, "after the restores that failed on purpose")),
    )
}
