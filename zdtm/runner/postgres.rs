//! PostgreSQL as installed on the machine, dumped and restored whole: the
//! postmaster and every process it forked (checkpointer, background
//! writer, WAL writer, autovacuum, logical replication launcher), with its
//! shared memory (a shared anonymous mapping, a SysV segment, a POSIX shm
//! file), its latches (self-pipes, signalfds, epoll sets watching the
//! postmaster-death pipe every child shares) and its listening sockets (TCP
//! on loopback and a UNIX socket in a directory of its own).
//!
//! - `postgres_idle`: no client connected during the dump. Data made
//!   before it is there after the restore, over TCP and over the UNIX
//!   socket, more can be written, and the restored server shuts down
//!   cleanly when asked (its children answer its signals).
//! - `postgres_tcp_client`: a client connected over TCP (the test itself,
//!   speaking the wire protocol: it stays outside the dumped tree) has a
//!   transaction open with a temporary table in it. Dumped with
//!   `--tcp-established`, restored: the same connection still sees its
//!   table and commits, and new connections work. Ignored while `ckpt dump
//!   --help` does not offer `--tcp-established`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{engine, free_port, run_engine};

/// The installed PostgreSQL: the directory of `initdb` and `postgres`,
/// `psql`, and the user the server runs as.
#[derive(Clone, Debug)]
pub struct Install {
    bin: PathBuf,
    psql: PathBuf,
    uid: u32,
    gid: u32,
}

/// The PostgreSQL of this machine, or why there is none. initdb must be
/// able to look its user up, hence a user of the system: `postgres` (the
/// Debian package makes it), else `nobody`.
pub fn find() -> Result<Install, String> {
    let mut dirs = vec![PathBuf::from("/usr/local/bin")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    let bin = dirs
        .into_iter()
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .ok_or("no initdb and postgres in /usr/local/bin or /usr/lib/postgresql/*/bin (ci/setup.sh installs postgresql)")?;
    let psql = [bin.join("psql"), PathBuf::from("/usr/bin/psql")]
        .into_iter()
        .find(|p| p.exists())
        .ok_or("no psql (ci/setup.sh installs postgresql)")?;
    let user = ["postgres", "nobody"]
        .into_iter()
        .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
        .ok_or("neither a postgres nor a nobody user on this machine")?;
    Ok(Install {
        bin,
        psql,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// Whether this engine can dump established TCP connections.
pub fn tcp_established() -> bool {
    Command::new(engine())
        .args(["dump", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--tcp-established"))
        .unwrap_or(false)
}

/// A cluster in a temporary directory and the server running on it.
struct Server {
    pg: Install,
    dir: PathBuf,
    sock: PathBuf,
    port: u16,
    /// The postmaster, our child until the dump.
    child: Option<Child>,
    pid: i32,
    /// Every process of the tree when it was dumped.
    tree: BTreeSet<i32>,
    restored: bool,
    keep: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.restored {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(self.pid), None);
        }
        // The children of a killed postmaster are ours (we are a child
        // subreaper) and die of its death.
        for &p in &self.tree {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        reap(&self.tree, Duration::from_secs(5));
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits until every pid in `pids` is gone, reaping those that are ours.
fn reap(pids: &BTreeSet<i32>, limit: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        let mut alive = false;
        for &p in pids {
            match waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => alive = true,
                Ok(_) => {}
                // Not our child (yet): alive while /proc has it.
                Err(_) => alive |= Path::new(&format!("/proc/{p}")).exists(),
            }
        }
        if !alive {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes the images in `img` hold, zombies left out: the restored
/// postmaster may reap those before the test looks.
fn dumped_tree(img: &Path) -> Result<BTreeSet<i32>, String> {
    use ckpt::images::{self, pb, Magic};
    let tree: Vec<pb::PstreeEntry> =
        images::read_all(img.join("pstree.img"), Magic::Pstree).map_err(|e| e.to_string())?;
    let mut alive = BTreeSet::new();
    for e in tree {
        let core: Vec<pb::CoreEntry> =
            images::read_all(img.join(format!("core-{}.img", e.pid)), Magic::Core)
                .map_err(|e| e.to_string())?;
        let dead = core
            .first()
            .and_then(|c| c.tc.as_ref())
            .is_some_and(|tc| tc.task_state == images::task::TASK_DEAD);
        if !dead {
            alive.insert(e.pid as i32);
        }
    }
    Ok(alive)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// `pid` and every process under it.
fn tree_of(pid: i32) -> BTreeSet<i32> {
    let mut all = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if !all.insert(p) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let f = t.path().join("children");
            if let Ok(s) = std::fs::read_to_string(f) {
                todo.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            }
        }
    }
    all
}

fn mkdir_for(path: &Path, pg: &Install) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(pg.uid)),
        Some(nix::unistd::Gid::from_raw(pg.gid)),
    )
    .map_err(|e| format!("chown {}: {e}", path.display()))
}

impl Server {
    /// initdb, then the postmaster in a session of its own.
    fn start(pg: &Install, name: &str) -> Result<Server, String> {
        let dir = std::env::temp_dir().join(format!("ckpt-programs-{name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sock = dir.join("sock");
        let mut s = Server {
            pg: pg.clone(),
            dir: dir.clone(),
            sock: sock.clone(),
            port: free_port()?,
            child: None,
            pid: 0,
            tree: BTreeSet::new(),
            restored: false,
            keep: true,
        };
        mkdir_for(&dir, pg)?;
        mkdir_for(&sock, pg)?;
        let out = s
            .as_user(&pg.bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
        let mut cmd = s.as_user(&pg.bin.join("postgres"));
        cmd.arg("-D")
            .arg(dir.join("data"))
            .arg("-k")
            .arg(&sock)
            .args([
                "-p",
                &s.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
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
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        s.pid = child.id() as i32;
        s.child = Some(child);
        s.wait_ready()?;
        Ok(s)
    }

    fn as_user(&self, prog: &Path) -> Command {
        let mut cmd = Command::new(prog);
        cmd.current_dir(&self.dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &self.dir)
            .uid(self.pg.uid)
            .gid(self.pg.gid);
        cmd
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            if self.psql_tcp("SELECT 1").is_ok_and(|o| o == "1") {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!("postgres exited: {st}\n{}", self.log_tail()));
                }
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "postgres not ready after 60 s\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` with psql against `host` (an address or the socket
    /// directory); its output without alignment, trimmed.
    fn psql(&self, host: &str, sql: &str) -> Result<String, String> {
        let out = self
            .as_user(&self.pg.psql)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", host])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql -h {host} -c {sql:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn psql_tcp(&self, sql: &str) -> Result<String, String> {
        self.psql("127.0.0.1", sql)
    }

    fn psql_unix(&self, sql: &str) -> Result<String, String> {
        self.psql(&self.sock.to_string_lossy(), sql)
    }

    /// Dumps the postmaster's tree (which kills it) and waits until every
    /// process of it is gone, so that its PIDs are free.
    fn dump(&mut self, extra: &[&str], backends: usize) -> Result<(), String> {
        self.settle(backends)?;
        self.tree = tree_of(self.pid);
        if self.tree.len() < 4 {
            return Err(format!(
                "the postmaster has only {} processes: {:?}",
                self.tree.len(),
                self.tree
            ));
        }
        let img = self.dir.join("img");
        let pid = self.pid.to_string();
        let mut args = vec!["dump", "-t", &pid];
        args.extend_from_slice(extra);
        let img_s = img.to_string_lossy().to_string();
        args.extend_from_slice(&["-D", &img_s]);
        run_engine(&self.dir, "dump.log", &args)?;
        let mut child = self.child.take().expect("started");
        let st = child.wait().map_err(|e| e.to_string())?;
        if st.code().is_some() {
            return Err(format!("the dump did not kill the postmaster: {st}"));
        }
        if !reap(&self.tree, Duration::from_secs(10)) {
            return Err(format!("processes of {:?} outlive the dump", self.tree));
        }
        // The tree seen before the dump can still hold a process on its
        // way out (a backend of the last psql session, an autovacuum
        // worker): what the restore must bring back is what the images hold.
        self.tree = dumped_tree(&img)?;
        if self.psql_tcp("SELECT 1").is_ok() {
            return Err("something still answers on the port after the dump".into());
        }
        Ok(())
    }

    /// Waits until the server has exactly `backends` client backends: the
    /// ones of psql sessions that ended exit on their own, and the tree
    /// compared after the restore is the one dumped.
    fn settle(&self, backends: usize) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let n = tree_of(self.pid)
                .into_iter()
                .filter(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.starts_with(b"postgres: postgres postgres "))
                })
                .count();
            if n == backends {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("{n} client backends, not {backends}, after 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn restore(&mut self, opts: &[&str]) -> Result<(), String> {
        let pidfile = self.dir.join("restore.pid");
        let img = self.dir.join("img");
        let (img, pidfile) = (img.to_string_lossy(), pidfile.to_string_lossy());
        let mut args = vec!["restore", "-D", &img, "-d", "--pidfile", &pidfile];
        args.extend_from_slice(opts);
        run_engine(&self.dir, "restore.log", &args)?;
        self.restored = true;
        let restored: i32 = std::fs::read_to_string(&*pidfile)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("pidfile: {e}"))?;
        if restored != self.pid {
            return Err(format!("restored as pid {restored}, not {}", self.pid));
        }
        let now: BTreeSet<i32> = tree_of(self.pid)
            .into_iter()
            .filter(|p| !is_zombie(*p))
            .collect();
        if now != self.tree {
            return Err(format!("restored tree {now:?}, dumped {:?}", self.tree));
        }
        Ok(())
    }

    /// A fast shutdown (SIGINT): the postmaster tells its children, waits
    /// for them, has the checkpointer write a shutdown checkpoint and exits
    /// 0. This needs every restored process to answer its signals and
    /// latches.
    fn shutdown(&mut self) -> Result<(), String> {
        kill(Pid::from_raw(self.pid), Signal::SIGINT).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        loop {
            match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, 0)) => break,
                Ok(WaitStatus::StillAlive) => {}
                other => {
                    return Err(format!(
                        "the restored postmaster ended with {other:?}\n{}",
                        self.log_tail()
                    ))
                }
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "the restored postmaster did not shut down in 30 s\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.restored = false;
        if !reap(&self.tree, Duration::from_secs(10)) {
            return Err(format!("processes of {:?} outlive the shutdown", self.tree));
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        if !log.contains("database system is shut down") {
            return Err(format!(
                "no clean shutdown in the log:\n{}",
                self.log_tail()
            ));
        }
        Ok(())
    }
}

fn expect(what: &str, got: Result<String, String>, want: &str) -> Result<(), String> {
    let got = got.map_err(|e| format!("{what}: {e}"))?;
    if got != want {
        return Err(format!("{what}: got {got:?}, want {want:?}"));
    }
    Ok(())
}

pub fn idle(pg: &Install) -> Result<(), Failed> {
    let mut s = Server::start(pg, "postgres-idle")?;
    s.psql_tcp(
        "CREATE TABLE before_dump (id int PRIMARY KEY, v text); \
         INSERT INTO before_dump SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    )?;
    let sum = "SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) FROM before_dump";
    let want = s.psql_unix(sum)?;
    s.dump(&[], 0)?;
    s.restore(&[])?;
    expect("over TCP after the restore", s.psql_tcp(sum), &want)?;
    expect(
        "over the UNIX socket after the restore",
        s.psql_unix(sum),
        &want,
    )?;
    s.psql_tcp(
        "CREATE TABLE after_restore AS SELECT g AS id FROM generate_series(1, 1000) g; \
         UPDATE before_dump SET v = 'x' WHERE id <= 10; CHECKPOINT",
    )?;
    expect(
        "reading what was written after the restore",
        s.psql_unix(
            "SELECT (SELECT sum(id) FROM after_restore), \
             (SELECT count(*) FROM before_dump WHERE v = 'x')",
        ),
        "500500|10",
    )?;
    s.shutdown()?;
    s.keep = false;
    Ok(())
}

/// A PostgreSQL frontend on one TCP connection (protocol 3.0, trust
/// authentication, simple queries), enough for the test to be the client.
struct Wire {
    s: TcpStream,
}

/// The rows (first column, NULL as None) and the transaction status after
/// a query ('I' idle, 'T' in a transaction, 'E' failed transaction).
type QueryResult = (Vec<Option<String>>, u8);

impl Wire {
    fn connect(port: u16) -> Result<Wire, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut w = Wire { s };
        let mut body = 196608u32.to_be_bytes().to_vec();
        for kv in ["user", "postgres", "database", "postgres"] {
            body.extend_from_slice(kv.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        w.s.write_all(&msg).map_err(|e| format!("startup: {e}"))?;
        w.until_ready().map(|_| w)
    }

    fn message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.s
            .read_exact(&mut head)
            .map_err(|e| format!("reading a message: {e}"))?;
        let len = u32::from_be_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.s
            .read_exact(&mut body)
            .map_err(|e| format!("reading a message body: {e}"))?;
        Ok((head[0], body))
    }

    fn until_ready(&mut self) -> Result<QueryResult, String> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (t, body) = self.message()?;
            match t {
                b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                    return Err(format!("authentication asked for: {body:?}"))
                }
                b'E' => {
                    let m = body
                        .split(|&b| b == 0)
                        .find(|f| f.first() == Some(&b'M'))
                        .map(|f| String::from_utf8_lossy(&f[1..]).to_string());
                    error = Some(m.unwrap_or_else(|| "an error".into()));
                }
                b'D' => {
                    let n = i32::from_be_bytes(body[2..6].try_into().expect("4 bytes"));
                    rows.push(
                        (n >= 0)
                            .then(|| String::from_utf8_lossy(&body[6..6 + n as usize]).to_string()),
                    );
                }
                b'Z' => {
                    return match error {
                        Some(e) => Err(format!("server error: {e}")),
                        None => Ok((rows, body[0])),
                    }
                }
                _ => {}
            }
        }
    }

    fn query(&mut self, sql: &str) -> Result<QueryResult, String> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.s
            .write_all(&msg)
            .map_err(|e| format!("sending {sql:?}: {e}"))?;
        self.until_ready().map_err(|e| format!("{sql:?}: {e}"))
    }
}

fn check_query(w: &mut Wire, sql: &str, rows: &[&str], status: u8) -> Result<(), String> {
    let (got, st) = w.query(sql)?;
    let want: Vec<Option<String>> = rows.iter().map(|r| Some(r.to_string())).collect();
    if got != want || st != status {
        return Err(format!(
            "{sql:?}: rows {got:?} in state {:?}, want {want:?} in state {:?}",
            st as char, status as char
        ));
    }
    Ok(())
}

pub fn tcp_client(pg: &Install) -> Result<(), Failed> {
    let mut s = Server::start(pg, "postgres-tcp")?;
    s.psql_tcp("CREATE TABLE shared (id int); INSERT INTO shared VALUES (1), (2)")?;
    let mut w = Wire::connect(s.port)?;
    check_query(&mut w, "SELECT pg_backend_pid()::text <> ''", &["t"], b'I')?;
    check_query(&mut w, "BEGIN", &[], b'T')?;
    check_query(
        &mut w,
        "CREATE TEMP TABLE mine AS SELECT g AS x FROM generate_series(1, 100) g",
        &[],
        b'T',
    )?;
    check_query(&mut w, "INSERT INTO shared VALUES (3)", &[], b'T')?;
    check_query(&mut w, "SELECT sum(x)::text FROM mine", &["5050"], b'T')?;
    s.dump(&["--tcp-established"], 1)?;
    s.restore(&["--tcp-established"])?;
    check_query(&mut w, "SELECT sum(x)::text FROM mine", &["5050"], b'T')
        .map_err(|e| format!("the same connection after the restore: {e}"))?;
    check_query(&mut w, "COMMIT", &[], b'I')?;
    check_query(&mut w, "SELECT count(*)::text FROM mine", &["100"], b'I')?;
    expect(
        "a new connection sees the committed row",
        s.psql_tcp("SELECT sum(id) FROM shared"),
        "6",
    )?;
    expect(
        "a new connection over the UNIX socket",
        s.psql_unix("SELECT count(*) FROM shared"),
        "3",
    )?;
    drop(w);
    s.shutdown()?;
    s.keep = false;
    Ok(())
}
