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
use ckpt::kernel::netlock;
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
        let args = dump_args(run, pid, &img, &what, run.case.dump_opts);
        let out = with_fault(run, point, |run| expect_failure(run, &what, &img, args))?;
        expect_point_named(&what, &out, point)?;
        expect_pid(&what, &out, pid)?;
        let lock = netlock::table_name(pid);
        if netlock::is_locked(&lock) {
            return Err(format!(
                "{what}: the network lock (nft table inet {lock}) is still there after the dump failed at {point}"
            ));
        }
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
        let mut args = restore_args(run, &img, &what);
        args.extend(run.case.restore_opts.iter().map(Into::into));
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

/// How many times each of the dump and the restore is killed.
const KILLS: u32 = 20;

/// The `mem` program with 1 GiB of data.
pub fn mem_1gib_case() -> Case {
    Case {
        args: &["--mb=1024"],
        timeout: Duration::from_secs(300),
        ..case_named("mem")
    }
}

/// A small xorshift generator: the moments differ from run to run, and the
/// seed is in the trace to replay one.
struct Moments(u64);

impl Moments {
    fn next_below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.0 % ms)
    }
}

/// Engine processes still working on `img` (a dump's worker goes on for
/// a moment after its launcher is killed, putting the tree back).
fn engines_on(run: &Run, img: &Path) -> Vec<i32> {
    let needle = img.as_os_str().as_bytes();
    procfs::all_processes()
        .into_iter()
        .filter(|s| procfs::exe(s.pid).as_deref() == Some(run.cfg.engine.as_path()))
        .filter(|s| {
            fs::read(format!("/proc/{}/cmdline", s.pid))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == needle))
        })
        .map(|s| s.pid)
        .collect()
}

fn wait_engines_gone(run: &Run, img: &Path, what: &str) -> Result<(), String> {
    let me = std::process::id() as i32;
    let mut left = Vec::new();
    let gone = trial::poll(Duration::from_secs(60), || {
        // Orphaned workers become ours (the runner is a subreaper).
        for p in engines_on(run, img) {
            if procfs::stat(p).is_some_and(|s| s.ppid == me && s.is_zombie()) {
                let _ = nix::sys::wait::waitpid(
                    Pid::from_raw(p),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        left = engines_on(run, img)
            .into_iter()
            .filter(|&p| procfs::stat(p).is_some_and(|s| !s.is_zombie()))
            .collect();
        left.is_empty().then_some(())
    });
    match gone {
        Some(()) => Ok(()),
        None => Err(format!(
            "{what}: engine processes {left:?} still run after 60 s"
        )),
    }
}

/// No temporary image directory is left in the work directory.
fn expect_no_temporaries(run: &Run, what: &str) -> Result<(), String> {
    let tmp: Vec<String> = fs::read_dir(run.path(""))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ckpt-tmp-"))
        .collect();
    if tmp.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: temporary image directories left: {tmp:?}"))
    }
}

/// `kill/1gib`: the engine SIGKILLed at random moments of a dump of a
/// 1 GiB program (the tree must run on unharmed: not stopped, not traced,
/// the same mappings, no temporary directory), then of its restore
/// (nothing of the tree left, its pids free); then a whole restore, and
/// the program checks every page.
pub fn killed_1gib(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut moments = Moments(seed);
    run.note(format!("moments from seed {seed}"));

    // How long a whole dump takes here.
    let img = run.path("img-timing");
    let t0 = std::time::Instant::now();
    let args = dump_args(run, pid, &img, "dump-timing", &["--leave-running"]);
    let st = run.engine("dump-timing", &img, args)?;
    let took = t0.elapsed();
    if !st.success() {
        return Err(format!(
            "dump-timing failed ({st}): {}",
            console(run, "dump-timing")
        ));
    }
    fs::remove_dir_all(&img).map_err(|e| format!("remove {}: {e}", img.display()))?;
    check_unharmed(run, &before, "after a whole --leave-running dump")?;

    for i in 0..KILLS {
        let what = format!("dump-killed-{i}");
        let img = run.path(&format!("img-killed-{i}"));
        fs::create_dir(&img).map_err(|e| format!("create {}: {e}", img.display()))?;
        let args = dump_args(run, pid, &img, &what, &["--leave-running"]);
        let at = moments.next_below(took);
        let (mut engine, _) = run.spawn_engine(&what, args)?;
        std::thread::sleep(at);
        let _ = engine.kill();
        let st = engine.wait().map_err(|e| format!("{what}: waiting: {e}"))?;
        wait_engines_gone(run, &img, &what)?;
        check_unharmed(
            run,
            &before,
            &format!("after {what} (SIGKILL after {at:?}: {st})"),
        )?;
        expect_no_temporaries(run, &what)?;
        // Killed after its commit, a dump is whole; else there is none.
        if img.join(MANIFEST_NAME).exists() {
            Manifest::verify(&img)
                .map_err(|e| format!("{what}: an image was left, damaged: {e}"))?;
        } else {
            expect_no_image(&img, &img, &[])?;
        }
        fs::remove_dir_all(&img).map_err(|e| format!("remove {}: {e}", img.display()))?;
        run.note(format!(
            "{what}: SIGKILLed after {at:?} ({st}); the tree runs on unharmed"
        ));
    }

    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    let ids = image_pids(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    for i in 0..KILLS {
        let what = format!("restore-killed-{i}");
        let args = restore_args(run, &img, &what);
        let at = moments.next_below(took);
        let (mut engine, _) = run.spawn_engine(&what, args)?;
        std::thread::sleep(at);
        let _ = engine.kill();
        let st = engine.wait().map_err(|e| format!("{what}: waiting: {e}"))?;
        if st.success() {
            // Restored before the moment came: the tree goes, as a killed
            // restore's must.
            for &p in tree.keys() {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        expect_nothing_left(
            run,
            pid,
            &ids,
            &format!("{what} (SIGKILL after {at:?}: {st})"),
        )?;
        let _ = fs::remove_file(run.path(&format!("{what}.pid")));
        run.note(format!(
            "{what}: SIGKILLed after {at:?} ({st}); nothing left"
        ));
    }
    restore_and_verify(
        run,
        "restore after the killed ones",
        Some((
            &tree,
            &stopped,
            "after the restores whose engine was killed",
        )),
    )
}
