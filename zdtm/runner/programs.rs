//! Whole programs people run, checkpointed and restored by the engine
//! (`cargo test --test programs`): each trial starts the program as it is
//! installed on the machine, uses it, dumps it, restores it and uses it
//! again. They need root and the program; a trial without either is
//! reported ignored, with the reason (ci/setup.sh installs the programs).
//!
//! - `http_server`: `python3 -m http.server`, bound to 127.0.0.1 on a free
//!   port, as an unprivileged user in a session of its own, serves a file
//!   before the dump and the same file after the restore.
//! - `postgres_idle`, `postgres_tcp_client`: a PostgreSQL server and its
//!   processes (`postgres.rs`).
//! - `unshare_tree`: a shell script in new pid, uts, ipc and mount
//!   namespaces made by util-linux's `unshare` (`unshare_tree.rs`).
//! - `veth_tcp`, `veth_migrate`, `veth_migrate_userns`: a server in a network namespace of its
//!   own with a veth to a "host" namespace (`--external veth[...]`), a
//!   TCP connection through it kept across dump and restore, and the
//!   tree moved to another "host" (`veth_ext.rs`).
//! - `container`: busybox in a root file system of its own that it
//!   pivot_roots into, with a tmpfs, in new namespaces, with a veth to a
//!   "host" and a TCP server inside whose client outside keeps its
//!   connection across dump and restore (`container.rs`).

mod container;
mod postgres;
mod unshare_tree;
mod veth_ext;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The uid and gid the programs run as (those of the zdtm cases).
const UID: u32 = 18943;
const GID: u32 = 58467;

fn main() {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if root && !args.list {
        // The restored program, once the engine detaches, becomes our
        // child, so it can be reaped.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("programs: PR_SET_CHILD_SUBREAPER failed: {e}");
        }
    }
    let python = find_python();
    let why_not = if !root {
        Some("needs root".to_string())
    } else if python.is_none() {
        Some("no python3 on this machine (ci/setup.sh installs it)".to_string())
    } else {
        None
    };
    let trial = Trial::test("http_server", move || {
        http_server(python.as_deref().expect("checked"))
    });
    let mut trials = vec![ignore_unless(trial, why_not)];

    let pg = if root {
        postgres::find()
    } else {
        Err("needs root".to_string())
    };
    let pg2 = pg.clone();
    let idle = Trial::test("postgres_idle", move || {
        postgres::idle(pg2.as_ref().expect("checked"))
    });
    trials.push(ignore_unless(idle, pg.as_ref().err().cloned()));
    let why_not = match &pg {
        Err(why) => Some(why.clone()),
        // Listing the trials need not run the engine.
        Ok(_) if !args.list && !postgres::tcp_established() => Some(
            "`ckpt dump --help` offers no --tcp-established: established TCP connections cannot be dumped yet"
                .to_string(),
        ),
        Ok(_) => None,
    };
    let tcp = Trial::test("postgres_tcp_client", move || {
        postgres::tcp_client(pg.as_ref().expect("checked"))
    });
    trials.push(ignore_unless(tcp, why_not));
    let why_not = (!root).then(|| "needs root".to_string());
    let unshare = Trial::test("unshare_tree", unshare_tree::run);
    trials.push(ignore_unless(unshare, why_not.clone()));
    let why_not = why_not.or_else(|| {
        (!Path::new("/usr/bin/python3").exists())
            .then(|| "no /usr/bin/python3 (the server inside)".to_string())
    });
    trials.push(ignore_unless(
        Trial::test("veth_tcp", veth_ext::tcp),
        why_not.clone(),
    ));
    trials.push(ignore_unless(
        Trial::test("veth_migrate", veth_ext::migrate),
        why_not.clone(),
    ));
    trials.push(ignore_unless(
        Trial::test("veth_migrate_userns", veth_ext::migrate_userns),
        why_not,
    ));
    let why_not = match root {
        false => Some("needs root".to_string()),
        true => container::why_not(),
    };
    trials.push(ignore_unless(
        Trial::test("container", container::run),
        why_not,
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// The trial, or the trial marked ignored with the reason said.
fn ignore_unless(trial: Trial, why_not: Option<String>) -> Trial {
    match why_not {
        Some(why) => {
            eprintln!("programs: {} ignored: {why}", trial.name());
            trial.with_ignored_flag(true)
        }
        None => trial,
    }
}

/// The system's python3 first: a shim (pyenv) would be another program
/// than the one that serves.
fn find_python() -> Option<PathBuf> {
    let sys = PathBuf::from("/usr/bin/python3");
    if sys.exists() {
        return Some(sys);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("python3"))
            .find(|p| p.exists())
    })
}

fn engine() -> PathBuf {
    std::env::var_os("ZDTM_ENGINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ckpt").into())
}

/// Kills and reaps what it holds when the trial ends, however it ends.
struct Cleanup {
    child: Option<Child>,
    restored: Option<i32>,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.restored.take() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts `unshare` (util-linux's, with --fork) and waits up to 10 s
/// until `ready` gives something for its init (unshare's child, pid 1 of
/// the new pid namespace): the init, what `ready` gave, and the cleanup
/// that holds unshare. `what` names the tree in the timeout's message.
fn start_unshared(
    mut unshare: Command,
    dir: &Path,
    what: &str,
    ready: impl Fn(i32) -> Option<String>,
) -> Result<(i32, String, Cleanup), String> {
    let mut unshare = unshare
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Not the runner's: a log file it writes on would have grown by the
        // restore, and the restore refuses a file that changed size.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start unshare: {e}"))?;
    let outer = unshare.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
            .unwrap_or_default();
        let init = kids.split_whitespace().next().and_then(|p| p.parse().ok());
        if let Some((init, v)) = init.and_then(|i| ready(i).map(|v| (i, v))) {
            let clean = Cleanup {
                child: Some(unshare),
                restored: None,
                dir: dir.to_path_buf(),
                keep: true,
            };
            return Ok((init, v, clean));
        }
        if Instant::now() > deadline {
            let _ = unshare.kill();
            let _ = unshare.wait();
            return Err(format!("{what} did not start its processes in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Dumps the init of a tree `start_unshared` started (by its pid as seen
/// from outside), checks the dump ended unshare, and restores it with
/// `-d`: the restored init's pid, which `clean` now holds.
fn dump_and_restore(dir: &Path, init: i32, clean: &mut Cleanup) -> Result<i32, String> {
    dump_unshared(None, dir, init, clean, &[])?;
    let restored = restore_detached(dir, &dir.join("img"))?;
    clean.restored = Some(restored);
    Ok(restored)
}

/// The dump half of [`dump_and_restore`], with `more` options, the
/// engine in the network namespace `/run/netns/NETNS` when given; the
/// images go to DIR/img.
fn dump_unshared(
    netns: Option<&str>,
    dir: &Path,
    init: i32,
    clean: &mut Cleanup,
    more: &[&str],
) -> Result<(), String> {
    let img = dir.join("img");
    let (pid, img) = (init.to_string(), img.to_string_lossy());
    let mut args = vec!["dump", "-t", &pid, "-D", &img];
    args.extend(more);
    run_engine_in(netns, dir, "dump.log", &args)?;
    let mut unshare = clean.child.take().expect("started");
    let st = unshare.wait().map_err(|e| e.to_string())?;
    if st.success() {
        return Err(format!(
            "unshare ended well after the dump ({st}): was its init killed?"
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// GET `path` over a new connection; the body of a 200 response.
fn get(addr: SocketAddr, path: &str) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("reading the response: {e}"))?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("a response without a header")?;
    let head = String::from_utf8_lossy(&resp[..end]).to_string();
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("response: {}", head.lines().next().unwrap_or("")));
    }
    Ok(resp[end + 4..].to_vec())
}

fn wait_serving(addr: SocketAddr, child: &mut Child) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the server exited first: {st}"));
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err(format!("nothing listens on {addr} after 15 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_engine(dir: &Path, log: &str, args: &[&str]) -> Result<(), String> {
    run_engine_in(None, dir, log, args)
}

/// [`run_engine`], in the network namespace `/run/netns/NETNS` when
/// given (nsenter).
fn run_engine_in(netns: Option<&str>, dir: &Path, log: &str, args: &[&str]) -> Result<(), String> {
    let mut cmd = match netns {
        Some(n) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{n}")).arg(engine());
            c
        }
        None => Command::new(engine()),
    };
    let out = cmd
        .args(args)
        .args(["-o", &dir.join(log).to_string_lossy(), "-v4"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the engine: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let logged = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    let tail: Vec<&str> = logged.lines().rev().take(15).collect();
    Err(format!(
        "engine {args:?}: {}\n{}\n---- tail of {log} ----\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// `ckpt restore -D IMG -d --pidfile`: the restored root's pid (as this
/// process sees it) from the pidfile.
fn restore_detached(dir: &Path, img: &Path) -> Result<i32, String> {
    restore_detached_in(None, dir, img, &[])
}

/// [`restore_detached`] with `more` options, in the network namespace
/// `/run/netns/NETNS` when given.
fn restore_detached_in(
    netns: Option<&str>,
    dir: &Path,
    img: &Path,
    more: &[&str],
) -> Result<i32, String> {
    let pidfile = dir.join("restore.pid");
    let (img_s, pid_s) = (img.to_string_lossy(), pidfile.to_string_lossy());
    let mut args = vec!["restore", "-D", &img_s, "-d", "--pidfile", &pid_s];
    args.extend(more);
    run_engine_in(netns, dir, "restore.log", &args)?;
    std::fs::read_to_string(&pidfile)
        .map_err(|e| format!("{}: {e}", pidfile.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", pidfile.display()))
}

fn http_server(python: &Path) -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("ckpt-programs-http.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
    let mut clean = Cleanup {
        child: None,
        restored: None,
        dir: dir.clone(),
        keep: true,
    };
    for d in [&dir, &www] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    // 300 KiB that no two trials share.
    let body: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ std::process::id() as u8)
        .collect();
    std::fs::write(www.join("data.bin"), &body).map_err(|e| e.to_string())?;
    std::fs::set_permissions(www.join("data.bin"), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--directory")
    .arg(&www)
    .current_dir(&www)
    .stdin(Stdio::null())
    .stdout(log.try_clone().map_err(|e| e.to_string())?)
    .stderr(log)
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("LANG", "C.UTF-8")
    .env("HOME", &www)
    .uid(UID)
    .gid(GID);
    // SAFETY: setsid is async-signal-safe. A session of its own, as a
    // daemon has.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let pid = child.id() as i32;
    let child = clean.child.insert(child);
    wait_serving(addr, child)?;
    let got = get(addr, "/data.bin")?;
    if got != body {
        return Err(format!("before the dump: {} bytes served, not the file", got.len()).into());
    }

    let img = dir.join("img");
    let pid_s = pid.to_string();
    run_engine(
        &dir,
        "dump.log",
        &["dump", "-t", &pid_s, "-D", &img.to_string_lossy()],
    )?;
    // Reaped, so its PID is free for the restore.
    let mut child = clean.child.take().expect("started");
    let st = child.wait().map_err(|e| e.to_string())?;
    if st.code().is_some() {
        return Err(format!("the dump did not kill the server: {st}").into());
    }
    if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        return Err(format!("something still listens on {addr} after the dump").into());
    }
    clean.restored = Some(pid);
    let restored = restore_detached(&dir, &img)?;
    if restored != pid {
        return Err(format!("restored as pid {restored}, not {pid}").into());
    }
    for n in 1..=3 {
        let got =
            get(addr, "/data.bin").map_err(|e| format!("after the restore, fetch {n}: {e}"))?;
        if got != body {
            return Err(format!(
                "after the restore, fetch {n}: {} bytes served, not the file",
                got.len()
            )
            .into());
        }
    }
    clean.keep = false;
    Ok(())
}
