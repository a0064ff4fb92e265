//! Safety trials for cgroups, part of `cargo test --test safety`:
//!
//! - `restore/cgroup-bad-path`: a cgroup path with `..` in cgroup.img is
//!   refused before any process exists, naming the file and the problem;
//! - `restore/cgroup-move-fails`: a restore whose tasks cannot join their
//!   cgroup (a recreated v1 cpuset without CPUs) fails, kills what it
//!   created and removes the cgroups it made (the intact image then
//!   restores fine, which it could not if the broken cgroup were left);
//! - `restore/cgroup-root-internal-processes`: an ns-flavour tree (its
//!   init in the runner's cgroup2 cgroup, which enables controllers for
//!   the case's cgroup below) restored with `--cgroup-root` for cgroup2
//!   would need the init in a new cgroup with those controllers enabled,
//!   which cgroup2 forbids: refused before any process exists, with the
//!   reason, and no cgroup made; the restore without it then works;
//! - `dump/freeze-cgroup-enospc`: a dump through the freezer cgroup that
//!   fails (no space for the images) leaves the cgroup thawed and the
//!   forking tree running as before;
//! - `dump/frozen-cgroup`: a tree frozen by its cgroup, dumped without
//!   `--freeze-cgroup`, is refused at once (it would never stop) with the
//!   pid and the cgroup, and goes on once thawed.

use super::*;

fn cgroup_case(name: &str, run: &mut Run) -> Result<Option<Outcome>, String> {
    let case = case_named(name);
    if let Some(gate) = case.feature {
        if let Err(why) = gate() {
            return Ok(Some(Outcome::Ignored(why)));
        }
    }
    run.cg_before = Some(crate::cgroups::zdtm_dirs());
    Ok(None)
}

pub fn restore_bad_path(run: &mut Run) -> Result<Outcome, String> {
    if let Some(o) = cgroup_case("cgroup_pids", run)? {
        return Ok(o);
    }
    restore_damaged(run, dotdot_path)
}

/// The first membership path of cgroup.img gets a `..` component.
fn dotdot_path(dir: &Path, _pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let p = dir.join("cgroup.img");
    let mut cg: pb::CgroupEntry = images::read_one(&p, Magic::Cgroup).map_err(|e| e.to_string())?;
    let m = cg
        .sets
        .iter_mut()
        .flat_map(|s| s.ctls.iter_mut())
        .find(|m| m.path != "/")
        .ok_or("test setup: no membership below a root")?;
    let was = m.path.clone();
    m.path = format!("{was}/../../etc");
    let d = images::write_image(&p, Magic::Cgroup, &[cg]).map_err(|e| e.to_string())?;
    reseal(dir, "cgroup.img", d)?;
    Ok((
        format!("cgroup.img: path {was} -> {was}/../../etc (manifest updated)"),
        vec![vec!["cgroup.img".into()], vec!["..".into()]],
    ))
}

pub fn restore_move_fails(run: &mut Run) -> Result<Outcome, String> {
    if let Some(o) = cgroup_case("cgroup_v1_props", run)? {
        return Ok(o);
    }
    restore_damaged(run, cpuset_without_cpus)
}

pub fn restore_root_internal_processes(run: &mut Run) -> Result<Outcome, String> {
    if let Some(o) = cgroup_case("cgroup_tree", run)? {
        return Ok(o);
    }
    let own = fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .ok_or("the runner has no cgroup2 cgroup")?;
    let mnt = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if !post.starts_with("cgroup2 ") {
                return None;
            }
            Some(PathBuf::from(pre.split(' ').nth(4)?.replace("\\040", " ")))
        })
        .ok_or("no cgroup2 hierarchy is mounted")?;
    let ctl = fs::read_to_string(
        mnt.join(own.trim_start_matches('/'))
            .join("cgroup.subtree_control"),
    )
    .unwrap_or_default();
    if ctl.trim().is_empty() {
        return Ok(Outcome::Ignored(format!(
            "the runner's cgroup2 cgroup {own} enables no controller: the case's cgroups need none, and the restore has nothing to refuse"
        )));
    }
    run.flavor = crate::cases::Flavor::Ns;
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    run.note("dump 1: tree gone");
    let img = run.path("img-1");
    let uniq = run.uniq();
    let newroot = format!("/zdtm.{uniq}.new");
    let mut args = restore_args(run, &img, "restore-newroot");
    args.push(format!("--cgroup-root=cgroup2:{newroot}").into());
    let out = expect_failure(run, "restore-newroot", &img, args)?;
    expect_mentions(
        "restore-newroot",
        &out,
        &[
            &["pid 1:"],
            &[&newroot],
            &["no processes"],
            &["subtree_control"],
        ],
    )?;
    expect_nothing_restored(run, pid, "restore-newroot")?;
    if let Some(d) = crate::cgroups::zdtm_dirs()
        .into_iter()
        .find(|d| d.ends_with(&newroot[1..]))
    {
        return Err(format!(
            "the refused restore left the cgroup {}",
            d.display()
        ));
    }
    let st = run.engine_restore(1)?;
    if !st.success() {
        return Err(format!(
            "the restore without --cgroup-root failed ({st}): {}",
            console(run, "restore-1").trim()
        ));
    }
    run.check_restored(1, &tree, &stopped)?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// The case's cgroups are removed (as the cgroup_deleted hook does) and the
/// cpuset directory's cpuset.cpus is emptied in cgroup.img: the restore
/// recreates it without CPUs, and no task can join it (ENOSPC).
fn cpuset_without_cpus(dir: &Path, pid: i32) -> Result<(String, Vec<Vec<String>>), String> {
    let p = dir.join("cgroup.img");
    let mut cg: pb::CgroupEntry = images::read_one(&p, Magic::Cgroup).map_err(|e| e.to_string())?;
    fn empty_cpus(d: &mut [pb::CgroupDirEntry]) -> bool {
        let mut hit = false;
        for e in d {
            for prop in e.properties.iter_mut().filter(|p| p.name == "cpuset.cpus") {
                prop.value.clear();
                hit = true;
            }
            hit |= empty_cpus(&mut e.children);
        }
        hit
    }
    let mut hit = false;
    for c in cg
        .controllers
        .iter_mut()
        .filter(|c| c.cnames.iter().any(|n| n == "cpuset"))
    {
        hit |= empty_cpus(&mut c.dirs);
    }
    if !hit {
        return Err("test setup: no cpuset.cpus in cgroup.img".into());
    }
    let d = images::write_image(&p, Magic::Cgroup, &[cg]).map_err(|e| e.to_string())?;
    reseal(dir, "cgroup.img", d)?;
    // The hook finds the case's cgroups by the work dir's (the parent's) name.
    let work = dir.parent().ok_or("no work dir")?;
    cases::remove_case_cgroups(work, 1)?;
    Ok((
        "cgroup.img: cpuset.cpus emptied, the case's cgroups removed (manifest updated)".into(),
        vec![vec!["cpuset".into()], vec![pid.to_string()]],
    ))
}

pub fn dump_freeze_enospc(run: &mut Run) -> Result<Outcome, String> {
    if let Some(o) = cgroup_case("cgroup_freeze", run)? {
        return Ok(o);
    }
    run.start()?;
    let pid = run.pid.expect("started");
    let before = run.snapshot(pid);
    let stopped = trial::stopped_threads(&before);
    let mnt = run.path("small");
    fs::create_dir(&mnt).map_err(|e| format!("create {}: {e}", mnt.display()))?;
    let mut small = match Tmpfs::mount(&mnt, "size=64k,mode=0755") {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Ok(Outcome::Ignored(format!("cannot mount a tmpfs here: {e}")))
        }
        Err(e) => return Err(format!("mount tmpfs on {}: {e}", mnt.display())),
    };
    let img = mnt.join("img");
    let uniq = run.uniq();
    let cg = format!("/zdtm.{uniq}");
    let freeze = format!("--freeze-cgroup={cg}");
    let checks = (|| {
        let args = dump_args(run, pid, &img, "dump-freeze", &[&freeze]);
        let out = expect_failure(run, "dump-freeze", &img, args)?;
        expect_mentions("dump-freeze", &out, &[&["No space left"]])?;
        let log = fs::read_to_string(run.path("dump-freeze.log")).unwrap_or_default();
        if !log.contains("seized through the freezer") {
            return Err(format!(
                "the dump did not freeze through {cg}: its log does not say so"
            ));
        }
        // Thawed again, in whichever hierarchy the case used.
        let state = crate::cgroups::zdtm_dirs()
            .into_iter()
            .find(|d| d.ends_with(&cg[1..]))
            .and_then(|d| {
                fs::read_to_string(d.join("freezer.state"))
                    .or_else(|_| fs::read_to_string(d.join("cgroup.freeze")))
                    .ok()
            })
            .ok_or_else(|| format!("cannot read the freezer state of {cg}"))?;
        if !matches!(state.trim(), "THAWED" | "0") {
            return Err(format!(
                "after the failed dump the freezer of {cg} is {}",
                state.trim()
            ));
        }
        run.check_tree(&before, &stopped, "after the failed dump")
    })();
    let unmounted = small.unmount();
    checks?;
    unmounted?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// The freezer file of the cgroup_freeze case's cgroup (`zdtm.<uniq>`).
fn case_freezer(run: &Run) -> Result<PathBuf, String> {
    let uniq = run.uniq();
    let name = format!("zdtm.{uniq}");
    crate::cgroups::zdtm_dirs()
        .into_iter()
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy() == name))
        .map(|d| {
            let v1 = d.join("freezer.state");
            if v1.exists() {
                v1
            } else {
                d.join("cgroup.freeze")
            }
        })
        .find(|f| f.exists())
        .ok_or_else(|| format!("no freezer cgroup {name}"))
}

/// A tree frozen by its freezer cgroup, dumped without --freeze-cgroup:
/// refused at once (a frozen task never reaches a ptrace stop, so seizing
/// it would hang), naming the cgroup; thawed, the tree goes on as before.
pub fn dump_frozen(run: &mut Run) -> Result<Outcome, String> {
    if let Some(o) = cgroup_case("cgroup_freeze", run)? {
        return Ok(o);
    }
    run.start()?;
    let pid = run.pid.expect("started");
    let before = run.snapshot(pid);
    let stopped = trial::stopped_threads(&before);
    let f = case_freezer(run)?;
    let v1 = f.ends_with("freezer.state");
    fs::write(&f, if v1 { "FROZEN" } else { "1" }).map_err(|e| format!("{}: {e}", f.display()))?;
    let frozen = trial::poll(Duration::from_secs(10), || {
        let state = if v1 {
            fs::read_to_string(&f).unwrap_or_default()
        } else {
            fs::read_to_string(f.with_file_name("cgroup.events")).unwrap_or_default()
        };
        (state.trim() == "FROZEN" || state.lines().any(|l| l == "frozen 1")).then_some(())
    });
    let checks = (|| {
        frozen.ok_or("the case's cgroup did not freeze")?;
        run.note(format!("froze {}", f.display()));
        let img = run.path("img-frozen");
        let args = dump_args(run, pid, &img, "dump-frozen", &[]);
        let t0 = std::time::Instant::now();
        let out = expect_failure(run, "dump-frozen", &img, args)?;
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("the refusal took {:?}", t0.elapsed()));
        }
        expect_mentions("dump-frozen", &out, &[&["frozen"], &["--freeze-cgroup"]])?;
        expect_pid("dump-frozen", &out, pid)?;
        Ok(())
    })();
    let thawed = fs::write(&f, if v1 { "THAWED" } else { "0" });
    checks?;
    thawed.map_err(|e| format!("thawing {}: {e}", f.display()))?;
    run.check_tree(&before, &stopped, "after the refused dump")?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}
