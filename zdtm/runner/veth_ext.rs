//! A tree with a network namespace of its own and a veth to the outside
//! (`--external veth[IFNAME]`), as a container has it. Each "host" is a
//! network namespace of this machine (`ip netns add`) with a bridge
//! `br0` holding 10.77.0.1/24; the tree is a python3 echo server
//! started in host A by `unshare --net`, its `eth0` (10.77.0.2/24) paired
//! with `vA`, a port of A's bridge. The engine runs in a host's namespace
//! (`nsenter --net`), so that the restore makes the outer end there.
//!
//! - `veth_tcp`: a client in host A is connected to the server; a dump
//!   without `--external` is refused and leaves the tree running (the
//!   connection still answers); restores missing the declaration, with a
//!   bridge that is not there or an outer name that is taken are refused;
//!   then dump with `--tcp-established`, restore in A with
//!   `veth[eth0]:vA@br0`, and the same connection carries data both ways
//!   (no reset), what the client sent while the tree was down included.
//! - `veth_migrate`: the migration between two hosts: the tree is
//!   dumped in host A and restored in host B (`veth[eth0]:vB@br0`); a
//!   client in B reaches it at the same address, and its answer shows the
//!   server's state came along (the number of connections it served).
//! - `veth_migrate_userns`: the same, the tree's network namespace owned
//!   by a user namespace of its own (`unshare --user --map-root-user`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

/// The server: answers each read with the number of the connection it
/// is on and the bytes read, upper-cased.
const SERVER: &str = "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7707)); s.listen(4)
n = 0
while True:
    c, _ = s.accept(); n += 1
    while True:
        d = c.recv(100)
        if not d: break
        c.sendall(b'%d:' % n + d.upper())
    c.close()
";

pub(super) const SERVER_ADDR: &str = "10.77.0.2:7707";

/// The hosts (network namespaces) a trial made, removed when the trial
/// ends, however it ends; then the tree and the work directory go
/// (`clean`).
pub(super) struct Hosts {
    pub(super) names: Vec<String>,
    pub(super) clean: super::Cleanup,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl Hosts {
    /// Hosts `hosts` (suffixes), each with its bridge, and the work dir.
    pub(super) fn new(trial: &str, hosts: &[&str]) -> Result<Hosts, String> {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("ckpt-programs-{trial}.{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut h = Hosts {
            names: vec![],
            clean: super::Cleanup {
                child: None,
                restored: None,
                dir,
                keep: true,
            },
        };
        for s in hosts {
            let n = format!("ckpt-{trial}-{s}-{me}");
            sh(&["ip", "netns", "add", &n])?;
            h.names.push(n.clone());
            sh(&["ip", "-n", &n, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", &n, "link", "add", "br0", "type", "bridge"])?;
            sh(&["ip", "-n", &n, "addr", "add", "10.77.0.1/24", "dev", "br0"])?;
            sh(&["ip", "-n", &n, "link", "set", "br0", "up"])?;
        }
        Ok(h)
    }

    /// The server in a network namespace of its own (owned by a user
    /// namespace of its own too with `userns`, root mapped to root), its
    /// eth0 paired with `vA`, a port of host `host`'s bridge. Returns its
    /// pid.
    fn start_tree(&mut self, host: &str, userns: bool) -> Result<i32, String> {
        let user: &[&str] = match userns {
            true => &["--user", "--map-root-user"],
            false => &[],
        };
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .arg("unshare")
            .args(user)
            .args(["--net", "/usr/bin/python3", "-c", SERVER])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Not the runner's: a log file it writes on would have grown by the
            // restore, and the restore refuses a file that changed size.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let pid = child.id() as i32;
        self.clean.child = Some(child);
        // Its own namespace once unshare has run (then python execs).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mine = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
        loop {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if theirs.is_some_and(|t| t != mine) && comm.starts_with("python") {
                break;
            }
            if Instant::now() > deadline {
                return Err("the server did not start in its own namespace in 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.plug(host, pid)?;
        Ok(pid)
    }

    /// Pairs an `eth0` (10.77.0.2/24, up, with `lo` up) in `pid`'s
    /// network namespace with `vA`, a port of host `host`'s bridge.
    pub(super) fn plug(&self, host: &str, pid: i32) -> Result<(), String> {
        let ns = format!("/proc/{pid}/ns/net");
        sh(&[
            "ip", "-n", host, "link", "add", "vA", "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        sh(&["ip", "-n", host, "link", "set", "vA", "master", "br0", "up"])?;
        let t = pid.to_string();
        sh(&["nsenter", "-t", &t, "-n", "ip", "link", "set", "lo", "up"])?;
        sh(&[
            "nsenter",
            "-t",
            &t,
            "-n",
            "ip",
            "addr",
            "add",
            "10.77.0.2/24",
            "dev",
            "eth0",
        ])?;
        sh(&["nsenter", "-t", &t, "-n", "ip", "link", "set", "eth0", "up"])
    }

    /// The engine with `args`, in host `host`'s network namespace.
    fn engine(&self, host: &str, log: &str, args: &[&str]) -> Result<(), String> {
        super::run_engine_in(Some(host), &self.clean.dir, log, args)
            .map_err(|e| format!("in {host}: {e}"))
    }

    /// The engine's error message for `args` in `host`, which must fail.
    fn refused(&self, host: &str, args: &[&str]) -> Result<String, String> {
        match self.engine(host, "refused.log", args) {
            Ok(()) => Err(format!("engine {args:?} in {host} did not refuse")),
            Err(e) => Ok(e),
        }
    }

    fn img(&self) -> PathBuf {
        self.clean.dir.join("img")
    }

    /// `restore -d` in `host` with `more`; the restored root's pid.
    fn restore(&mut self, host: &str, more: &[&str]) -> Result<i32, String> {
        let pid = super::restore_detached_in(Some(host), &self.clean.dir, &self.img(), more)?;
        self.clean.restored = Some(pid);
        Ok(pid)
    }

    /// Sends `what` on `c` while the tree is dumped, restores it in
    /// `host` with `--tcp-established`, its eth0 paired again with vA on
    /// br0, and checks the answer is `want`: the client retransmits
    /// until the restored connection takes it (a reset on the way, from
    /// the restored namespace before its socket is made, would fail the
    /// read). The restored root's pid.
    pub(super) fn restore_answering(
        &mut self,
        host: &str,
        c: &mut TcpStream,
        what: &str,
        want: &str,
    ) -> Result<i32, String> {
        c.write_all(what.as_bytes())
            .map_err(|e| format!("sending {what:?} while dumped: {e}"))?;
        let pid = self.restore(
            host,
            &["--tcp-established", "--external", "veth[eth0]:vA@br0"],
        )?;
        c.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        answer(c, what, want)?;
        Ok(pid)
    }

    /// The tree started by `start_tree`, killed by a dump: reaped.
    fn reap_dumped(&mut self) -> Result<(), String> {
        let mut c = self.clean.child.take().ok_or("no tree")?;
        let st = c.wait().map_err(|e| e.to_string())?;
        if st.success() {
            return Err(format!("the server ended well after the dump ({st})"));
        }
        Ok(())
    }
}

/// `f` run in a thread that joins host `host`'s network namespace (a
/// socket it makes stays there).
fn in_host<T: Send>(host: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{host}");
    let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| "the thread in the host's namespace panicked".to_string())?
    })
}

/// A TCP connection to the server from host `host`, tried for 5 s.
pub(super) fn connect(host: &str) -> Result<TcpStream, String> {
    let addr: SocketAddr = SERVER_ADDR.parse().expect("an address");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match in_host(host, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        })? {
            Ok(c) => {
                c.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                return Ok(c);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("connecting to {addr} from {host}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends `what` and checks the answer is `want`.
pub(super) fn ask(c: &mut TcpStream, what: &str, want: &str) -> Result<(), String> {
    c.write_all(what.as_bytes())
        .map_err(|e| format!("sending {what:?}: {e}"))?;
    answer(c, what, want)
}

/// Checks the answer to `what`, sent, is `want`.
fn answer(c: &mut TcpStream, what: &str, want: &str) -> Result<(), String> {
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got)
        .map_err(|e| format!("reading the answer to {what:?} (want {want:?}): {e}"))?;
    if got != want.as_bytes() {
        return Err(format!(
            "the answer to {what:?} is {:?}, not {want:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}

fn must_say(msg: &str, words: &[&str]) -> Result<(), String> {
    match words.iter().find(|w| !msg.contains(*w)) {
        Some(w) => Err(format!("the engine's message lacks {w:?}:\n{msg}")),
        None => Ok(()),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn tcp() -> Result<(), Failed> {
    let t = Instant::now();
    let mut h = Hosts::new("veth-tcp", &["A"])?;
    let a = h.names[0].clone();
    let pid = h.start_tree(&a, false)?;
    let mut c = connect(&a)?;
    ask(&mut c, "one", "1:ONE")?;
    let img = path_str(&h.img());
    let p = pid.to_string();
    // Not declared: refused, naming the device and the option; the tree
    // runs on.
    let msg = h.refused(&a, &["dump", "-t", &p, "-D", &img, "--tcp-established"])?;
    must_say(&msg, &[&p, "net:[", "eth0", "--external veth[eth0]", "vA"])?;
    ask(&mut c, "two", "1:TWO")?;
    h.engine(
        &a,
        "dump.log",
        &[
            "dump",
            "-t",
            &p,
            "-D",
            &img,
            "--tcp-established",
            "--external",
            "veth[eth0]",
        ],
    )?;
    h.reap_dumped()?;
    // The kernel removes the killed tree's namespace, and the veth with
    // it, from a work queue: vA's name is free once that is done.
    wait_gone(&a, "vA")?;
    // Restores refused before any process: no declaration, no bridge, a
    // name taken.
    let base = ["restore", "-D", &img, "--tcp-established"];
    for (more, words) in [
        (
            vec![],
            vec!["veth eth0", "vA", "--external veth[eth0]:OUTNAME"],
        ),
        (
            vec!["--external", "veth[eth0]:vA@nobr"],
            vec!["nobr", "no bridge"],
        ),
        (
            vec!["--external", "veth[eth0]:br0"],
            vec!["br0", "exists already"],
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(more).collect();
        must_say(&h.refused(&a, &args)?, &words)?;
    }
    h.restore_answering(&a, &mut c, "mid", "1:MID")?;
    // The same connection, both ways.
    ask(&mut c, "three", "1:THREE")?;
    ask(&mut c, "four", "1:FOUR")?;
    if t.elapsed() > Duration::from_secs(20) {
        return Err(format!("the trial took {:?}", t.elapsed()).into());
    }
    h.clean.keep = false;
    Ok(())
}

pub fn migrate() -> Result<(), Failed> {
    migrate_tree("veth-migrate", false)
}

/// `veth_migrate_userns`: the same with the tree's network namespace
/// owned by a user namespace of the tree's.
pub fn migrate_userns() -> Result<(), Failed> {
    migrate_tree("veth-migrate-uns", true)
}

fn migrate_tree(trial: &str, userns: bool) -> Result<(), Failed> {
    let t = Instant::now();
    let mut h = Hosts::new(trial, &["A", "B"])?;
    let (a, b) = (h.names[0].clone(), h.names[1].clone());
    let pid = h.start_tree(&a, userns)?;
    {
        let mut c = connect(&a)?;
        ask(&mut c, "in a", "1:IN A")?;
    }
    // Dumped without --tcp-established: once the server has closed its
    // end of that connection.
    wait_idle(pid)?;
    let img = path_str(&h.img());
    h.engine(
        &a,
        "dump.log",
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            &img,
            "--external",
            "veth[eth0]",
        ],
    )?;
    h.reap_dumped()?;
    let restored = h.restore(&b, &["--external", "veth[eth0]:vB@br0"])?;
    let user_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    if userns == (user_of(&restored.to_string()) == user_of("self")) {
        return Err(format!(
            "the restored server's user namespace is {:?}, this one's {:?} (userns: {userns})",
            user_of(&restored.to_string()),
            user_of("self")
        )
        .into());
    }
    // In B, at the same address: the server's second connection.
    let mut c = connect(&b)?;
    ask(&mut c, "in b", "2:IN B")?;
    // Nothing of it is left in A.
    if connect_once(&a) {
        return Err("the server still answers in host A".into());
    }
    let took = t.elapsed();
    eprintln!("{trial}: {took:?}");
    if took > Duration::from_secs(10) {
        return Err(format!("the trial took {took:?}").into());
    }
    h.clean.keep = false;
    Ok(())
}

/// Whether one quick connection from `host` reaches the server.
fn connect_once(host: &str) -> bool {
    let addr: SocketAddr = SERVER_ADDR.parse().expect("an address");
    in_host(host, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    })
    .unwrap_or(false)
}

/// Waits until the server's namespace has no TCP socket on its port but
/// the listening one (/proc/PID/net/tcp: state 0A is LISTEN).
fn wait_idle(pid: i32) -> Result<(), String> {
    let port = format!(":{:04X} ", 7707);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
            .map_err(|e| format!("/proc/{pid}/net/tcp: {e}"))?;
        let busy = tcp
            .lines()
            .skip(1)
            .filter(|l| l.contains(&port))
            .any(|l| l.split_whitespace().nth(3) != Some("0A"));
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the server still has a connection after 5 s:\n{tcp}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until host `host` has no device `dev`.
pub(super) fn wait_gone(host: &str, dev: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sh(&["ip", "-n", host, "link", "show", dev]).is_ok() {
        if Instant::now() > deadline {
            return Err(format!("{dev} is still in {host} 5 s after the dump"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
