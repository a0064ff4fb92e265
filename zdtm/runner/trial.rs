//! One trial: start a case program, checkpoint and restore it as the
//! variant says, then stop it and judge the result.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::cases::{Case, Flavor, Program, Variant, TEST_GID, TEST_GROUPS, TEST_UID, UNS_SHIFT};
use crate::procfs::{self, Tree};

/// `excl` cases take it for writing, all others for reading.
static EXCL: RwLock<()> = RwLock::new(());

/// Makes work directory names unique within one runner process.
static SEQ: AtomicUsize = AtomicUsize::new(0);

const POLL: Duration = Duration::from_millis(10);
/// How long a tree may take to settle (threads resumed, stragglers exited).
pub(crate) const SETTLE: Duration = Duration::from_secs(3);
/// How many lines of each log a failure report shows.
const TAIL: usize = 40;

/// Settings of the whole run, from the environment.
pub struct Config {
    /// ZDTM_ENGINE, or the `ckpt` binary of this package.
    pub engine: PathBuf,
    /// ZDTM_RESTORE_ENGINE: another engine for the restores (images of
    /// one engine restored by another); the dump engine by default.
    pub restore_engine: Option<PathBuf>,
    /// ZDTM_ENGINE_OPTS: extra options for every engine command.
    pub engine_opts: Vec<String>,
    /// ZDTM_BIN_DIR at run time, else the one build.rs set.
    pub bin_dir: Option<PathBuf>,
    /// ZDTM_WORKDIR, else /tmp/ckpt-zdtm.
    pub base: PathBuf,
    /// ZDTM_KEEP=1: keep the work directory of passing trials too.
    pub keep: bool,
}

impl Config {
    pub fn from_env() -> Config {
        let var = |k| std::env::var_os(k).filter(|v| !v.is_empty());
        Config {
            engine: var("ZDTM_ENGINE")
                .map(PathBuf::from)
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_ckpt").into()),
            restore_engine: var("ZDTM_RESTORE_ENGINE").map(PathBuf::from),
            engine_opts: std::env::var("ZDTM_ENGINE_OPTS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            bin_dir: var("ZDTM_BIN_DIR")
                .map(PathBuf::from)
                .or_else(|| option_env!("ZDTM_BIN_DIR").map(PathBuf::from)),
            base: var("ZDTM_WORKDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/tmp/ckpt-zdtm".into()),
            keep: var("ZDTM_KEEP").is_some_and(|v| v != "0"),
        }
    }
}

/// Runs one trial of `case` (the harness has already checked for root).
pub fn run(
    case: &Case,
    flavor: Flavor,
    variant: Variant,
    cfg: &Config,
) -> Result<Completion, Failed> {
    if !case.flavors.contains(&flavor) {
        return Ok(Completion::ignored_with(format!(
            "the case does not run in the {} flavour",
            flavor.label()
        )));
    }
    if let Some(gate) = case.feature {
        if let Err(reason) = gate() {
            return Ok(Completion::ignored_with(reason));
        }
    }
    let (_shared, _alone);
    if case.excl {
        _alone = EXCL.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _shared = EXCL.read().unwrap_or_else(|e| e.into_inner());
    }

    let mut run = Run::new(case, variant, cfg);
    run.flavor = flavor;
    // Note the cgroups that exist before the trial, to find its own after
    // (cgroups.rs).
    if case.suid {
        run.cg_before = Some(crate::cgroups::zdtm_dirs());
    }
    let result = run.execute();
    run.cleanup();
    let xfail = case.xfail.filter(|x| x.applies_to(variant));
    match (result, xfail) {
        (Ok(()), None) => {
            run.finish(true);
            Ok(Completion::Completed)
        }
        (Ok(()), Some(x)) => {
            run.finish(false);
            Err(run
                .report(&format!(
                    "XPASS: marked as expected to fail ({}), but passed: remove the mark",
                    x.reason
                ))
                .into())
        }
        (Err(msg), Some(x)) => {
            run.finish(true);
            let first = msg.lines().next().unwrap_or_default();
            Ok(Completion::ignored_with(format!(
                "xfail: {} (failed as expected: {first})",
                x.reason
            )))
        }
        (Err(msg), None) => {
            run.finish(false);
            Err(run.report(&msg).into())
        }
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub(crate) fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        sleep(POLL);
    }
}

/// Waits for a child of ours (launcher or engine, each started as the
/// leader of its own process group) with a time limit; when the limit
/// passes, kills its whole process group.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= end {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            return Ok(None);
        }
        sleep(POLL);
    }
}

fn tail(path: &Path, lines: usize) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        let _ = writeln!(out, "[... {skip} earlier lines ...]");
    }
    for l in &all[skip..] {
        let _ = writeln!(out, "{l}");
    }
    Some(out)
}

/// Judges a program log. Verdict lines are `PASS` and `FAIL: ...`; the
/// last one must be `PASS`, and no process of the case (children write to
/// the same log) may have reported a failure before it.
fn verdict(log: &str) -> Result<(), String> {
    let mut last = None;
    for line in log.lines() {
        if line.starts_with("FAIL:") || line == "FAIL" {
            return Err(format!("the program reported: {line}"));
        }
        if line == "PASS" {
            last = Some(line);
        }
    }
    last.map(|_| ())
        .ok_or_else(|| "the program log has no verdict line".into())
}

/// The state of one trial. The safety tests (zdtm/runner/safety.rs) drive
/// it step by step, hence the crate-visible parts.
pub(crate) struct Run<'a> {
    pub(crate) case: &'a Case,
    /// `H` unless set after [`Run::new`].
    pub(crate) flavor: Flavor,
    variant: Variant,
    pub(crate) cfg: &'a Config,
    pub(crate) dir: PathBuf,
    /// The root of the case's tree, once the pidfile was read.
    pub(crate) pid: Option<i32>,
    /// Every PID seen in the case's tree (for reaping and cleanup).
    pub(crate) known: BTreeSet<i32>,
    /// Replaces the variant's label in the work directory's name.
    pub(crate) label: Option<String>,
    /// What happened, step by step, for the failure report.
    trace: Vec<String>,
    /// Engine logs and console outputs, in order, for the failure report.
    engine_files: Vec<PathBuf>,
    /// `zdtm.*` cgroups that existed before the trial.
    pub(crate) cg_before: Option<BTreeSet<PathBuf>>,
    /// Extra environment of the engine commands (a fault point to fail at).
    pub(crate) engine_env: Vec<(String, String)>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(case: &'a Case, variant: Variant, cfg: &'a Config) -> Run<'a> {
        Run {
            case,
            flavor: Flavor::H,
            variant,
            cfg,
            dir: PathBuf::new(),
            pid: None,
            known: BTreeSet::new(),
            trace: Vec::new(),
            engine_files: Vec::new(),
            label: None,
            cg_before: None,
            engine_env: if variant == Variant::VdsoProxy {
                vec![("CKPT_VDSO".into(), "proxy".into())]
            } else {
                Vec::new()
            },
        }
    }

    /// The work directory's name: unique, usable as a cgroup name (the
    /// case table's `{uniq}`; the cases' cg_name() is `zdtm.<uniq>`).
    pub(crate) fn uniq(&self) -> String {
        self.dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// Case arguments and engine options: `{dir}` is the work directory,
    /// `{uniq}` its name (unique, usable as a cgroup name).
    fn subst(&self, s: &str) -> String {
        s.replace("{dir}", &self.dir.to_string_lossy())
            .replace("{uniq}", &self.uniq())
    }

    fn name(&self) -> &'a str {
        self.case.name
    }

    pub(crate) fn note(&mut self, s: impl Into<String>) {
        self.trace.push(s.into());
    }

    fn execute(&mut self) -> Result<(), String> {
        self.prepare()?;
        self.start()?;
        let mut failed_as_expected = false;
        for n in 1..=self.variant.cycles() {
            // A new pid namespace's init comes back with another pid
            // outside it (check_restored).
            let pid = self.pid.expect("started");
            let before = self.snapshot(pid);
            let stopped_before = stopped_threads(&before);
            if self.variant == Variant::PreDump {
                self.pre_dump(n, &before, &stopped_before)?;
            }
            let status = self.engine_dump(n)?;
            if !status.success() {
                if self.case.crfail && status.code().is_some() {
                    self.expect_crfail_reason(&format!("dump-{n}"))?;
                    self.note(format!("dump {n} failed, as expected for a crfail case"));
                    self.check_tree(&before, &stopped_before, "after the failed dump")?;
                    failed_as_expected = true;
                    break;
                }
                let alive = procfs::stat(pid).is_some_and(|s| !s.is_zombie());
                return Err(format!(
                    "dump {n} failed ({status}); the tree is {}",
                    if alive { "still running" } else { "gone" }
                ));
            }
            if self.variant == Variant::LeaveRunning {
                self.check_tree(&before, &stopped_before, "after dump --leave-running")?;
                continue;
            }
            self.wait_tree_gone(self.case.timeout).map_err(|left| {
                format!("dump {n} exited 0, but the dumped tree is still there: {left}")
            })?;
            self.note(format!("dump {n}: tree gone"));
            if let Some(hook) = self.case.between {
                hook(&self.dir, n).map_err(|e| format!("between dump {n} and restore: {e}"))?;
                self.note(format!("dump {n}: between-hook done"));
            }
            let status = self.engine_restore(n)?;
            if !status.success() {
                if self.case.crfail && status.code().is_some() {
                    self.expect_crfail_reason(&format!("restore-{n}"))?;
                    self.note(format!("restore {n} failed, as expected for a crfail case"));
                    self.wait_tree_gone(SETTLE).map_err(|left| {
                        format!("restore {n} failed as expected, but left processes: {left}")
                    })?;
                    self.pid = None;
                    return Ok(());
                }
                let left = procfs::members(pid);
                return Err(format!(
                    "restore {n} failed ({status}){}",
                    if left.is_empty() {
                        String::new()
                    } else {
                        format!(" and left processes behind: {}", describe(&left))
                    }
                ));
            }
            self.check_variant_took_effect(n)?;
            self.check_restored(n, &before, &stopped_before)?;
        }
        if self.case.crfail && !failed_as_expected && self.variant != Variant::LeaveRunning {
            return Err(
                "crfail case: dump and restore were expected to fail, but both succeeded".into(),
            );
        }
        self.stop_and_verify()
    }

    /// A crfail case's engine command failed: for the expected reason?
    fn expect_crfail_reason(&self, what: &str) -> Result<(), String> {
        let Some(want) = self.case.crfail_reason else {
            return Ok(());
        };
        let console = fs::read_to_string(self.path(&format!("{what}.console"))).unwrap_or_default();
        if console.contains(want) {
            Ok(())
        } else {
            Err(format!(
                "{what} failed, but not for the expected reason (\"{want}\"): {}",
                console.trim()
            ))
        }
    }

    /// Creates the work directory and copies the program into it.
    ///
    /// The copy keeps the case independent of the build tree (which may be
    /// rebuilt while a case is dumped) and readable by the test uid.
    pub(crate) fn prepare(&mut self) -> Result<(), String> {
        let src = match self.case.program {
            Program::C(name) => match &self.cfg.bin_dir {
                Some(d) => d.join(name),
                None => return Err("ZDTM_BIN_DIR is not set (build.rs should set it)".into()),
            },
            Program::Rust(path) => PathBuf::from(path),
        };
        if !src.is_file() {
            return Err(format!(
                "program {} does not exist (is zdtm/cases/{} written and built?)",
                src.display(),
                self.name()
            ));
        }
        let base = &self.cfg.base;
        fs::create_dir_all(base).map_err(|e| format!("create {}: {e}", base.display()))?;
        let base = &base
            .canonicalize()
            .map_err(|e| format!("{}: {e}", base.display()))?;
        if !self.case.suid || self.shifted() {
            // The unprivileged program (or a shifted namespace's root, which
            // has no privilege over the host's files) must reach its
            // directory.
            for dir in base.ancestors() {
                let mode = fs::metadata(dir)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o001 == 0 {
                    return Err(format!(
                        "{} (mode {mode:o}) is not searchable by others, so uid {TEST_UID} \
                         cannot reach its work directory: chmod o+x it or set ZDTM_WORKDIR",
                        dir.display()
                    ));
                }
            }
        }
        let label = match (&self.label, self.flavor) {
            (Some(l), _) => l.clone(),
            (None, Flavor::H) => self.variant.label().to_string(),
            (None, f) => format!("{}-{}", f.label(), self.variant.label()),
        };
        let stem = format!("{}.{label}.{}", self.name(), std::process::id());
        let dir = loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let d = base.join(format!("{stem}.{n}"));
            match fs::create_dir(&d) {
                Ok(()) => break d,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("create {}: {e}", d.display())),
            }
        };
        self.dir = dir;
        let dir = &self.dir;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        // The program (the namespace's root in a shifted `uns` trial) writes
        // its pidfile and log here.
        let (uid, gid) = match self.case.suid {
            true => self.host_ids(0, 0),
            false => self.host_ids(TEST_UID, TEST_GID),
        };
        if (uid, gid) != (0, 0) {
            chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let exe = dir.join(self.case.name);
        fs::copy(&src, &exe)
            .map_err(|e| format!("copy {} to {}: {e}", src.display(), exe.display()))?;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", exe.display()))?;
        let note = format!("work dir {}, program {}", dir.display(), src.display());
        self.note(note);
        Ok(())
    }

    /// A `uns` trial whose ids are all shifted (`UNS_SHIFT`, unless
    /// `Case::uns_identity`).
    fn shifted(&self) -> bool {
        self.flavor == Flavor::Uns && self.case.uns_identity.is_none()
    }

    /// The host's view of the program's ids `uid`:`gid` (`shifted`).
    fn host_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        match self.shifted() {
            true => (uid + UNS_SHIFT.0, gid + UNS_SHIFT.1),
            false => (uid, gid),
        }
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn outfile(&self) -> PathBuf {
        self.path(&format!("{}.out", self.name()))
    }

    fn pidfile(&self) -> PathBuf {
        self.path(&format!("{}.pid", self.name()))
    }

    /// Starts the program and waits until it is ready.
    pub(crate) fn start(&mut self) -> Result<(), String> {
        let name = self.name();
        let launch_log = self.path("launcher.log");
        let log = File::create(&launch_log).map_err(|e| format!("create launcher.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(self.path(name));
        cmd.arg0(format!("./{name}"))
            .arg(format!("--pidfile={name}.pid"))
            .arg(format!("--outfile={name}.out"))
            .args(self.case.args.iter().map(|a| self.subst(a)))
            .current_dir(&self.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C");
        if matches!(self.flavor, Flavor::Ns | Flavor::Uns) {
            // zdtm/lib/ns.c: the program re-executes itself as the init of
            // new namespaces; the pidfile names that init (as seen here).
            cmd.env("ZDTM_NEWNS", "1");
        }
        if self.flavor == Flavor::Uns {
            // ns.c: a user namespace that owns the others; 2: every id
            // shifted.
            cmd.env("ZDTM_USERNS", if self.shifted() { "2" } else { "1" });
        }
        if !self.case.suid {
            let groups: Vec<String> = TEST_GROUPS.iter().map(u32::to_string).collect();
            cmd.env("ZDTM_UID", TEST_UID.to_string())
                .env("ZDTM_GID", TEST_GID.to_string())
                .env("ZDTM_GROUPS", groups.join(" "));
        }
        no_inherited_fds(&mut cmd);
        let mut launcher = spawn_retrying(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", self.path(name).display()))?;
        let timeout = self.case.timeout;
        let status = wait_child(&mut launcher, timeout).map_err(|e| e.to_string())?;
        match status {
            None => return Err(format!("the launcher did not exit within {timeout:?}")),
            Some(st) if !st.success() => return Err(format!("the launcher failed ({st})")),
            Some(_) => {}
        }
        let text = fs::read_to_string(self.pidfile()).map_err(|e| {
            format!(
                "the launcher exited 0, but {}: {e}",
                self.pidfile().display()
            )
        })?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("{name}.pid holds '{text}', not a PID"))?;
        self.pid = Some(pid);
        self.known.insert(pid);
        self.note(format!("started, pid {pid}"));

        let st = procfs::stat(pid)
            .filter(|s| !s.is_zombie())
            .ok_or_else(|| format!("pid {pid} from {name}.pid is not running"))?;
        if st.session != pid {
            return Err(format!(
                "pid {pid} is not a session leader (session {}): the program must setsid()",
                st.session
            ));
        }
        if !self.case.suid {
            // In the ns flavour the namespace's init stays root; the test
            // it started (its only child once the inner launcher is gone)
            // drops the credentials.
            let pid = match self.flavor {
                Flavor::H => pid,
                _ => procfs::all_processes()
                    .into_iter()
                    .find(|s| s.ppid == pid)
                    .map(|s| s.pid)
                    .ok_or_else(|| format!("the namespace's init {pid} has no child: no test"))?,
            };
            let (uid, gid) = self.host_ids(TEST_UID, TEST_GID);
            let groups = TEST_GROUPS.iter().map(|&g| self.host_ids(0, g).1);
            let want = [
                ("Uid", vec![uid; 4]),
                ("Gid", vec![gid; 4]),
                ("Groups", groups.collect()),
            ];
            for (key, want) in want {
                let mut have: Vec<u32> = procfs::status_field(pid, key)
                    .unwrap_or_default()
                    .split(' ')
                    .filter_map(|v| v.parse().ok())
                    .collect();
                have.sort_unstable();
                if have != want {
                    return Err(format!(
                        "pid {pid} runs with {key} {have:?}, expected {want:?}: the program \
                         must drop to ZDTM_UID/ZDTM_GID/ZDTM_GROUPS"
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn snapshot(&mut self, pid: i32) -> Tree {
        let t = procfs::snapshot(pid);
        self.known.extend(t.values().map(|i| i.host));
        t
    }

    pub(crate) fn engine_dump(&mut self, n: usize) -> Result<ExitStatus, String> {
        let pid = self.pid.expect("started");
        let img = self.path(&format!("img-{n}"));
        let mut args: Vec<OsString> = vec![
            "dump".into(),
            "-t".into(),
            pid.to_string().into(),
            "-D".into(),
            img.clone().into(),
            "-o".into(),
            self.path(&format!("dump-{n}.log")).into(),
            "-v4".into(),
        ];
        if self.variant == Variant::LeaveRunning {
            args.push("--leave-running".into());
        }
        if self.variant == Variant::PreDump {
            // Relative to -D, as CRIU takes it.
            args.push("--prev-images-dir".into());
            args.push(format!("../img-pre-{n}").into());
        }
        args.extend(self.case.dump_opts.iter().map(|o| self.subst(o).into()));
        if self.variant != Variant::PageServer {
            return self.engine(&format!("dump-{n}"), &img, args);
        }
        // The pages go to a page server writing img-srv-N; once both are
        // done they join the other images, as a user moving them would.
        let server = self.start_page_server(
            &self.path(&format!("img-srv-{n}")),
            &format!("page-server-{n}"),
            false,
        )?;
        args.extend(server.dump_args().into_iter().map(Into::into));
        let status = self.engine(&format!("dump-{n}"), &img, args)?;
        if !status.success() {
            return Ok(status);
        }
        let pages = self.finish_page_server(server)?;
        if !pages_files(&img).is_empty() {
            return Err(format!(
                "dump {n} wrote pages files into {} too",
                img.display()
            ));
        }
        copy_into(&pages, &img)?;
        self.note(format!(
            "{} pages files from page-server-{n} put into img-{n}",
            pages.len()
        ));
        Ok(status)
    }

    /// The pre-dump variant's first step: pre-dump the tree into
    /// img-pre-N, check it runs on as before, and let it run (and write)
    /// for a while before the dump.
    fn pre_dump(
        &mut self,
        n: usize,
        before: &Tree,
        stopped_before: &BTreeSet<(i32, i32)>,
    ) -> Result<(), String> {
        let pid = self.pid.expect("started");
        let img = self.path(&format!("img-pre-{n}"));
        let args: Vec<OsString> = vec![
            "pre-dump".into(),
            "-t".into(),
            pid.to_string().into(),
            "-D".into(),
            img.clone().into(),
            "-o".into(),
            self.path(&format!("pre-dump-{n}.log")).into(),
            "-v4".into(),
        ];
        let status = self.engine(&format!("pre-dump-{n}"), &img, args)?;
        if !status.success() {
            return Err(format!("pre-dump {n} failed ({status})"));
        }
        self.check_tree(before, stopped_before, "after the pre-dump")?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }

    /// A variant whose restore option could silently do nothing proves it
    /// did something, from the restore's -v4 log: `lazy`, that some
    /// mapping was left to the lazy-pages daemon; `vdso-proxy`, that a
    /// vDSO was remapped.
    fn check_variant_took_effect(&self, n: usize) -> Result<(), String> {
        /// "pid N: K mappings lazy, M refused" with K > 0.
        fn some_lazy(l: &str) -> bool {
            l.split_once(" mappings lazy")
                .and_then(|(head, _)| head.rsplit(' ').next())
                .is_some_and(|k| k != "0")
        }
        fn remapped(l: &str) -> bool {
            l.contains("vDSO remapped")
        }
        let (what, took): (&str, fn(&str) -> bool) = match self.variant {
            Variant::Lazy | Variant::LazyRemote => ("no mapping was made lazy", some_lazy),
            Variant::VdsoProxy => ("no vDSO was remapped", remapped),
            _ => return Ok(()),
        };
        let log = self.path(&format!("restore-{n}.log"));
        let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        if text.lines().any(took) {
            return Ok(());
        }
        Err(format!(
            "restore {n} succeeded, but {what} ({})",
            log.display()
        ))
    }

    pub(crate) fn engine_restore(&mut self, n: usize) -> Result<ExitStatus, String> {
        let img = self.path(&format!("img-{n}"));
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            "-D".into(),
            img.clone().into(),
            "-d".into(),
            "--pidfile".into(),
            self.path(&format!("restore-{n}.pid")).into(),
            "-o".into(),
            self.path(&format!("restore-{n}.log")).into(),
            "-v4".into(),
        ];
        if matches!(self.variant, Variant::Lazy | Variant::LazyRemote) {
            args.push("--lazy-pages".into());
        }
        args.extend(self.case.restore_opts.iter().map(|o| self.subst(o).into()));
        if self.variant != Variant::LazyRemote {
            return self.engine(&format!("restore-{n}"), &img, args);
        }
        // The pages files leave the images for a lazy page server's
        // directory (with the manifest that vouches for them).
        let srv = self.path(&format!("img-lps-{n}"));
        fs::create_dir(&srv).map_err(|e| format!("create {}: {e}", srv.display()))?;
        let manifest = ckpt::images::MANIFEST_NAME;
        fs::copy(img.join(manifest), srv.join(manifest))
            .map_err(|e| format!("copy the manifest of {}: {e}", img.display()))?;
        let pages = pages_files(&img);
        for p in &pages {
            let to = srv.join(p.file_name().expect("a file"));
            fs::rename(p, &to).map_err(|e| format!("move {}: {e}", p.display()))?;
        }
        let server = self.start_page_server(&srv, &format!("lazy-page-server-{n}"), true)?;
        args.extend(server.dump_args().into_iter().map(Into::into));
        let status = self.engine(&format!("restore-{n}"), &img, args)?;
        if status.success() {
            // It exits once the daemon has every page.
            self.finish_page_server(server)?;
            self.note(format!(
                "restore {n}: {} pages files fetched from lazy-page-server-{n}",
                pages.len()
            ));
        }
        Ok(status)
    }

    /// Runs one engine command with the case's time limit. Its -o log is
    /// `<what>.log`, its stdout and stderr go to `<what>.console`.
    pub(crate) fn engine(
        &mut self,
        what: &str,
        img: &Path,
        args: Vec<OsString>,
    ) -> Result<ExitStatus, String> {
        if what.starts_with("dump") || what.starts_with("pre-dump") {
            // CRIU wants -D to exist; an engine that writes a temporary
            // directory and renames it into place can rename over it.
            fs::create_dir(img).map_err(|e| format!("create {}: {e}", img.display()))?;
        }
        let (mut child, cmdline) = self.spawn_engine(what, args)?;
        let t0 = Instant::now();
        let timeout = self.case.timeout;
        let status = wait_child(&mut child, timeout).map_err(|e| e.to_string())?;
        let took = t0.elapsed();
        match status {
            None => Err(format!(
                "{what} did not finish within {timeout:?} and was killed: {cmdline}"
            )),
            Some(st) => {
                self.note(format!("{what}: {st} after {took:.2?}: {cmdline}"));
                Ok(st)
            }
        }
    }

    /// Starts one engine command and returns it running, with its command
    /// line; its files are named as with [`Run::engine`].
    pub(crate) fn spawn_engine(
        &mut self,
        what: &str,
        mut args: Vec<OsString>,
    ) -> Result<(Child, String), String> {
        args.extend(self.cfg.engine_opts.iter().map(Into::into));
        let log = self.path(&format!("{what}.log"));
        let console = self.path(&format!("{what}.console"));
        self.engine_files.push(log);
        self.engine_files.push(console.clone());
        let out = File::create(&console).map_err(|e| format!("create {what}.console: {e}"))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let engine = match &self.cfg.restore_engine {
            Some(e) if what.starts_with("restore") => e,
            _ => &self.cfg.engine,
        };
        let mut cmd = Command::new(engine);
        cmd.args(&args)
            .envs(self.engine_env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let cmdline = format!(
            "{}{} {}",
            self.engine_env
                .iter()
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>(),
            engine.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        no_inherited_fds(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", engine.display()))?;
        Ok((child, cmdline))
    }

    /// Waits until no process of the case is left, reaping the zombies that
    /// are ours. Err lists what is left.
    pub(crate) fn wait_tree_gone(&mut self, timeout: Duration) -> Result<(), String> {
        let Some(pid) = self.pid else { return Ok(()) };
        let known = self.known.clone();
        let left = poll(timeout, || {
            procfs::reap_zombies(pid, &known);
            procfs::members(pid).is_empty().then_some(())
        });
        match left {
            Some(()) => Ok(()),
            None => Err(describe(&procfs::members(pid))),
        }
    }

    /// The tree must be as it was: the same processes, threads and
    /// credentials, the root alive, and no thread newly stopped.
    pub(crate) fn check_tree(
        &mut self,
        before: &Tree,
        stopped_before: &BTreeSet<(i32, i32)>,
        when: &str,
    ) -> Result<(), String> {
        let pid = self.pid.expect("started");
        let mut problems = Vec::new();
        let ok = poll(SETTLE, || {
            problems.clear();
            match procfs::stat(pid) {
                None => problems.push(format!("pid {pid} does not exist")),
                Some(s) if s.is_zombie() => problems.push(format!("pid {pid} is a zombie")),
                Some(s) if s.session != pid => problems.push(format!(
                    "pid {pid} is in session {}, not its own",
                    s.session
                )),
                Some(_) => {}
            }
            let mut now = procfs::snapshot(pid);
            // A tree that forks on its own: compare only the processes that
            // exist both before and after.
            let mut before = before.clone();
            if self.case.forks {
                let root = procfs::inner_pid(pid, pid);
                before.retain(|p, _| *p == root || now.contains_key(p));
                now.retain(|p, _| *p == root || before.contains_key(p));
            }
            problems.extend(procfs::diff_trees(&before, &now));
            for (p, t) in stopped_threads(&now).difference(stopped_before) {
                problems.push(format!("pid {p} thread {t} is left stopped"));
            }
            problems.is_empty().then_some(())
        });
        match ok {
            Some(()) => {
                self.note(format!("{when}: tree as before"));
                Ok(())
            }
            None => Err(format!("{when}: {}", problems.join("; "))),
        }
    }

    /// After a successful restore `n`: the tree is as `before` (the pid
    /// of a pid namespace's init followed to its new value).
    pub(crate) fn check_restored(
        &mut self,
        n: usize,
        before: &Tree,
        stopped_before: &BTreeSet<(i32, i32)>,
    ) -> Result<(), String> {
        let pid = self.pid.expect("started");
        let pf = self.path(&format!("restore-{n}.pid"));
        if let Ok(text) = fs::read_to_string(&pf) {
            // The init of a pid namespace of the tree's own keeps its pid
            // inside (1) and every pid of the tree there (check_tree), but
            // not the one the runner sees: follow it.
            let me = std::process::id() as i32;
            let new_init = text.trim().parse::<i32>().ok().filter(|&p| {
                p != pid
                    && procfs::pid_ns_depth(p) > procfs::pid_ns_depth(me)
                    && procfs::inner_pid(p, p) == 1
            });
            if let Some(p) = new_init {
                self.note(format!(
                    "restore {n}: the pid namespace's init is pid {p} outside it now"
                ));
                self.known.insert(p);
                self.known.extend(procfs::members(p).iter().map(|s| s.pid));
                self.pid = Some(p);
                if self.flavor == Flavor::Uns {
                    let problems = procfs::userns_problems(p, self.shifted());
                    if !problems.is_empty() {
                        return Err(format!("after restore {n}: {}", problems.join("; ")));
                    }
                    self.note(format!(
                        "restore {n}: its user namespace has the flavour's maps and owns the others"
                    ));
                }
                return self.check_tree(before, stopped_before, &format!("after restore {n}"));
            }
            if text.trim() != pid.to_string() {
                return Err(format!(
                    "restore {n} wrote '{}' into its --pidfile, expected {pid}",
                    text.trim()
                ));
            }
        }
        self.check_tree(before, stopped_before, &format!("after restore {n}"))
    }

    /// SIGTERM, wait for the root to exit, then judge the log and look for
    /// leftovers.
    pub(crate) fn stop_and_verify(&mut self) -> Result<(), String> {
        let pid = self.pid.expect("started");
        let name = self.name().to_string();
        kill(Pid::from_raw(pid), Signal::SIGTERM)
            .map_err(|e| format!("kill({pid}, SIGTERM): {e}"))?;
        let known = self.known.clone();
        let timeout = self.case.timeout;
        poll(timeout, || {
            procfs::reap_zombies(pid, &known);
            procfs::stat(pid)
                .filter(|s| s.session == pid)
                .is_none()
                .then_some(())
        })
        .ok_or_else(|| match procfs::stat(pid) {
            Some(s) if s.is_zombie() => format!(
                "pid {pid} exited after SIGTERM, but its parent (pid {}) does not reap it",
                s.ppid
            ),
            _ => format!("pid {pid} did not exit within {timeout:?} of SIGTERM"),
        })?;
        self.note(format!("pid {pid} exited after SIGTERM"));

        let out = self.outfile();
        let log = match fs::read(&out) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                let inprogress = self.path(&format!("{name}.out.inprogress"));
                return Err(if inprogress.exists() {
                    format!("{name}.out does not exist, only {name}.out.inprogress: the program did not finish")
                } else {
                    format!("{}: {e}", out.display())
                });
            }
        };
        verdict(&log)?;
        if self.pidfile().exists() {
            return Err(format!("the program passed, but left {name}.pid behind"));
        }
        self.wait_tree_gone(SETTLE)
            .map_err(|left| format!("processes of the case remain after the verdict: {left}"))?;
        let mounts = procfs::mounts_under(&self.dir);
        if !mounts.is_empty() {
            return Err(format!(
                "mounts remain in the work dir: {}",
                mounts.join(", ")
            ));
        }
        // No cgroup of the trial may remain.
        if self.cg_before.is_some() {
            let left = self.own_cgroups();
            if !left.is_empty() {
                return Err(format!(
                    "cgroups remain after the verdict: {}",
                    left.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        // SysV IPC objects keyed on the work dir (ftok) must
        // be gone; cleanup() removes them either way.
        let ipc = procfs::sysvipc_of_dir(&self.dir);
        if !ipc.is_empty() {
            return Err(format!(
                "SysV IPC objects of the case remain after the verdict (kind, key, id): {ipc:x?}"
            ));
        }
        self.pid = None;
        Ok(())
    }

    /// Kills whatever is left of the case: its session and descendants, and
    /// anything running the program copy of the work directory.
    pub(crate) fn cleanup(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        self.cleanup_cgroups();
        let kill_all = |pid: Option<i32>, dir: &Path| -> Vec<i32> {
            let mut victims: BTreeSet<i32> = pid
                .map(|p| procfs::members(p).iter().map(|s| s.pid).collect())
                .unwrap_or_default();
            for s in procfs::all_processes() {
                if procfs::exe(s.pid).is_some_and(|e| e.starts_with(dir)) {
                    victims.insert(s.pid);
                }
            }
            let me = std::process::id() as i32;
            victims.retain(|&v| v != me && v > 1);
            for &v in &victims {
                let _ = kill(Pid::from_raw(v), Signal::SIGKILL);
            }
            victims.into_iter().collect()
        };
        let pid = self.pid;
        let dir = self.dir.clone();
        // Leftover SysV objects of a failed case (removing one a
        // live process still uses is harmless: it goes when they detach).
        for (kind, _, id) in procfs::sysvipc_of_dir(&dir) {
            let _ = procfs::sysvipc_remove(kind, id);
        }
        let first = kill_all(pid, &dir);
        if first.is_empty() {
            return;
        }
        self.known.extend(&first);
        self.note(format!("cleanup: SIGKILL {first:?}"));
        let known = self.known.clone();
        let sid = pid.unwrap_or(0);
        let gone = poll(Duration::from_secs(10), || {
            procfs::reap_zombies(sid, &known);
            kill_all(pid, &dir).is_empty().then_some(())
        });
        if gone.is_none() {
            self.note("cleanup: processes survived SIGKILL for 10s");
        }
        // Zombies re-parented to us outside the session.
        procfs::reap_zombies(sid, &self.known);
    }

    /// The cgroups of this trial (see cgroups.rs for the naming rule).
    fn own_cgroups(&self) -> Vec<PathBuf> {
        let Some(before) = &self.cg_before else {
            return Vec::new();
        };
        crate::cgroups::owned(before, &self.uniq())
    }

    /// Removes the `zdtm.*` cgroups the trial created, killing
    /// what is in them.
    fn cleanup_cgroups(&mut self) {
        if self.cg_before.is_none() {
            return;
        }
        let new = self.own_cgroups();
        if new.is_empty() {
            return;
        }
        let failed = crate::cgroups::remove(&new);
        self.note(format!("cleanup: removed cgroups {new:?}"));
        if !failed.is_empty() {
            self.note(format!("cleanup: could not remove cgroups: {failed:?}"));
        }
    }

    /// Removes the work directory of a passing trial unless ZDTM_KEEP is
    /// set; a failing trial's directory is always kept.
    pub(crate) fn finish(&mut self, passed: bool) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if passed && !self.cfg.keep {
            let _ = fs::remove_dir_all(&self.dir);
        } else if passed {
            eprintln!("{}: kept {}", self.name(), self.dir.display());
        }
    }

    /// The failure message: what went wrong, the steps, the program log and
    /// the tails of the engine's logs.
    pub(crate) fn report(&self, msg: &str) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "{msg}");
        if self.dir.as_os_str().is_empty() {
            return r;
        }
        let _ = writeln!(r, "work dir (kept): {}", self.dir.display());
        let _ = writeln!(r, "steps:");
        for t in &self.trace {
            let _ = writeln!(r, "  {t}");
        }
        let name = self.name();
        let show_line = |r: &mut String, label: &str| {
            let _ = writeln!(r, "---- {label} ----");
        };
        let show = |r: &mut String, label: &str, path: &Path, lines: usize| {
            if let Some(t) = tail(path, lines).filter(|t| !t.trim().is_empty()) {
                let _ = writeln!(r, "---- {label} ----\n{t}");
            }
        };
        let out = self.outfile();
        let inprogress = self.path(&format!("{name}.out.inprogress"));
        let log = if out.exists() { out } else { inprogress };
        let label = log.file_name().unwrap_or_default().to_string_lossy();
        match fs::metadata(&log) {
            Ok(m) if m.len() > 0 => show(&mut r, &format!("program log {label}"), &log, 200),
            Ok(_) => show_line(&mut r, &format!("program log {label}: empty")),
            Err(_) => show_line(&mut r, &format!("no program log ({name}.out)")),
        }
        show(&mut r, "launcher output", &self.path("launcher.log"), TAIL);
        for f in &self.engine_files {
            let label = f.file_name().unwrap_or_default().to_string_lossy();
            show(&mut r, &format!("tail of {label}"), f, TAIL);
        }
        // Again at the end, where a report cut to its tail still has it.
        let _ = writeln!(r, "---- failure ----\n{msg}");
        r
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // A panic in the runner must not leave the case running either.
        if std::thread::panicking() {
            self.cleanup();
        }
    }
}

/// Only stdin, stdout and stderr pass to a program or the engine: the
/// runner itself may have inherited descriptors (cargo's jobserver pipe)
/// that would become part of the case's state.
pub(crate) fn no_inherited_fds(cmd: &mut Command) {
    // SAFETY: close_range is async-signal-safe. It marks the descriptors
    // close-on-exec rather than closing them, so std's own close-on-exec
    // pipe that reports exec errors keeps working.
    unsafe {
        cmd.pre_exec(|| {
            if libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Exec of a freshly copied program can fail with ETXTBSY while another
/// thread's fork still holds the copy's write descriptor; retry then.
pub(crate) fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

pub(crate) fn stopped_threads(tree: &Tree) -> BTreeSet<(i32, i32)> {
    let mut set = BTreeSet::new();
    for (&pid, info) in tree {
        for (&tid, &host) in info.threads.iter().zip(&info.host_threads) {
            if procfs::task_stat(info.host, host).is_some_and(|s| s.is_stopped()) {
                set.insert((pid, tid));
            }
        }
    }
    set
}

pub(crate) fn describe(left: &[procfs::Stat]) -> String {
    if left.is_empty() {
        return "nothing".into();
    }
    left.iter()
        .map(|s| format!("pid {} (state {}, parent {})", s.pid, s.state, s.ppid))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Page servers (`ckpt page-server`), for the page-server variant and the
// safety trials

/// The `pages-N.img` files in `dir`, sorted.
pub(crate) fn pages_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(ckpt::images::set::pages_file_id)
                        .is_some()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Copies `files` into `dir` (a page server's pages files joining the
/// dump's other images, as a user moving them would).
pub(crate) fn copy_into(files: &[PathBuf], dir: &Path) -> Result<(), String> {
    for p in files {
        let to = dir.join(p.file_name().expect("a file"));
        fs::copy(p, &to).map_err(|e| format!("copy {} to {}: {e}", p.display(), to.display()))?;
    }
    Ok(())
}

/// The dump options that send the pages to a page server on loopback
/// port `port`.
pub(crate) fn page_server_args(port: u16) -> [String; 5] {
    [
        "--page-server".into(),
        "--address".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
    ]
}

/// A running `ckpt page-server` on a loopback port; killed if dropped
/// before [`Run::finish_page_server`].
pub(crate) struct PageServer {
    child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    what: String,
}

impl PageServer {
    /// The dump options that send the pages to it (the same options
    /// point a lazy restore at a lazy page server).
    pub(crate) fn dump_args(&self) -> [String; 5] {
        page_server_args(self.port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Run<'_> {
    /// Starts `ckpt page-server` into `dir` on a free loopback port (its
    /// files are `<what>.log` and `<what>.console`); with `lazy`, one
    /// serving `dir`'s pages to a lazy restore (`--lazy-pages`).
    pub(crate) fn start_page_server(
        &mut self,
        dir: &Path,
        what: &str,
        lazy: bool,
    ) -> Result<PageServer, String> {
        let mut args: Vec<OsString> = vec![
            "page-server".into(),
            "-D".into(),
            dir.into(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "-o".into(),
            self.path(&format!("{what}.log")).into(),
            "-v4".into(),
        ];
        if lazy {
            args.push("--lazy-pages".into());
        }
        let (child, cmdline) = self.spawn_engine(what, args)?;
        self.note(format!("{what}: started: {cmdline}"));
        let mut server = PageServer {
            child: Some(child),
            dir: dir.to_path_buf(),
            port: 0,
            what: what.to_string(),
        };
        let console = self.path(&format!("{what}.console"));
        let port = poll(Duration::from_secs(10), || {
            fs::read_to_string(&console)
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("ckpt page-server: listening on "))
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.trim().parse().ok())
        });
        server.port = port.ok_or_else(|| {
            format!(
                "{what} did not say which port it listens on within 10 s: {}",
                fs::read_to_string(&console).unwrap_or_default().trim()
            )
        })?;
        Ok(server)
    }

    /// Waits for a page server whose dump has ended: it must exit 0;
    /// returns the pages files it wrote.
    pub(crate) fn finish_page_server(&mut self, mut s: PageServer) -> Result<Vec<PathBuf>, String> {
        let mut child = s.child.take().expect("running");
        let st = wait_child(&mut child, Duration::from_secs(30))
            .map_err(|e| format!("waiting for {}: {e}", s.what))?;
        let console = self.path(&format!("{}.console", s.what));
        match st {
            Some(st) if st.success() => Ok(pages_files(&s.dir)),
            Some(st) => Err(format!(
                "{} failed ({st}): {}",
                s.what,
                fs::read_to_string(&console).unwrap_or_default().trim()
            )),
            None => Err(format!("{} did not exit after the dump", s.what)),
        }
    }
}
