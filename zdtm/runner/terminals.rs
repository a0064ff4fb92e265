//! Real interactive programs on terminals (`cargo test --test terminals`):
//! `--shell-job` with a real shell job, and a tmux server.
//!
//! A zdtm program leads its own session, so a job started from a terminal
//! outside the tree cannot be one. Here the test owns two ptys: on the
//! first, a job-control shell (`setsid -c sh`, session leader, outside the
//! dumped tree) runs `cat` in the foreground; `cat` alone is dumped. On the
//! second, another shell runs `ckpt restore --shell-job`: the restored
//! `cat` must be in that shell's session, have that pty as its controlling
//! terminal and be its foreground group, and echo what is typed there.
//! Without the option, the dump refuses the tree, naming the pid, the fd
//! and the pts, and the job goes on; a restore of a --shell-job image
//! without it is refused before anything is created.
//!
//! The same with `vim` editing a file: text typed before the dump is an
//! unsaved buffer; after the restore more is typed and `:wq` must write
//! both.
//!
//! A detached tmux server with a shell in its pane (a pty the server
//! holds, the shell a session leader on it): a command typed, the server's
//! tree dumped and restored, `tmux capture-pane` must show the same screen
//! and a new command must run. tmux clients reach the server through its
//! listening UNIX socket: where the engine refuses that socket, the tmux
//! part says it skips, naming the refusal.
//!
//! Needs root, `setsid` (util-linux) and `sh` (and `vim`, `tmux` for their
//! parts, installed by ci/setup.sh); says it skips otherwise.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn pty() -> Pty {
    let p = nix::pty::openpty(None, None).expect("openpty");
    // Only the shells' stdio may reach them.
    for fd in [&p.master, &p.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .expect("FD_CLOEXEC");
    }
    Pty {
        master: std::fs::File::from(p.master),
        slave: p.slave,
    }
}

impl Pty {
    fn stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("dup"))
    }

    /// Everything the master reads until `want` shows up or `secs` pass.
    fn read_until(&mut self, want: &str, secs: u64) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut got = Vec::new();
        while Instant::now() < end && !String::from_utf8_lossy(&got).contains(want) {
            let mut p = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut p, nix::poll::PollTimeout::from(100u16)).unwrap_or(0) == 1 {
                let mut buf = [0u8; 1024];
                match self.master.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    fn type_line(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("typing");
    }
}

fn shell(on: &Pty, script: &str) -> Child {
    Command::new("setsid")
        .args(["-c", "sh", "-c", script])
        .env("TERM", "xterm")
        .stdin(on.stdio())
        .stdout(on.stdio())
        .stderr(on.stdio())
        .spawn()
        .expect("setsid -c sh")
}

/// (pgrp, session, tty_nr, tpgid) of `pid`, if it lives.
fn stat(pid: i32) -> Option<(i32, i32, u64, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    if f[0] == "Z" || f[0] == "X" {
        return None;
    }
    Some((
        f[2].parse().ok()?,
        f[3].parse().ok()?,
        f[4].parse::<i64>().ok()? as u32 as u64,
        f[5].parse().ok()?,
    ))
}

fn child_named(parent: u32, name: &str) -> Option<i32> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let comm = s.split_once('(').and_then(|x| x.1.rsplit_once(')'));
            let ppid = s
                .rsplit_once(')')
                .and_then(|x| x.1.split_whitespace().nth(1));
            if comm.is_some_and(|c| c.0 == name) && ppid == Some(&parent.to_string()) {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn ckpt(args: &[&str]) -> (bool, String) {
    let out = Command::new(CKPT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ckpt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills what the test started, whatever happened.
struct Reaper(Vec<i32>, Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for c in &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("terminals: skipped (needs root)");
        return;
    }
    if Command::new("setsid").arg("--version").output().is_err() {
        println!("terminals: skipped (no setsid from util-linux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("img");
    let img = img.to_str().expect("utf-8 path");
    let mut a = pty();
    let sh = shell(&a, "set -m; cat; exec sleep 1000");
    let mut reap = Reaper(vec![], vec![sh]);
    let sh_pid = reap.1[0].id();
    let cat = child_named(sh_pid, "cat").expect("the shell's cat");
    reap.0.push(cat);
    a.type_line("one\n");
    let got = a.read_until("one\r\none\r\n", 5);
    assert!(got.contains("one\r\none\r\n"), "cat did not echo: {got:?}");
    let (pgrp, sid, tty_a, fg) = stat(cat).expect("cat lives");
    assert_eq!(
        (pgrp, fg),
        (cat, cat),
        "cat is not a foreground job of its own"
    );
    assert_eq!(sid, sh_pid as i32);
    assert_eq!(
        tty_a,
        std::fs::metadata(nix::unistd::ttyname(a.slave.as_fd()).unwrap())
            .unwrap()
            .rdev()
    );

    // Without --shell-job: refused, naming pid, fd and pts; the job goes on.
    let (ok, err) = ckpt(&["dump", "-t", &cat.to_string(), "-D", img]);
    assert!(!ok, "a dump without --shell-job succeeded");
    assert!(
        err.contains(&format!("pid {cat}"))
            && err.contains("fd 0 (/dev/pts/")
            && err.contains("--shell-job"),
        "the refusal does not name pid, fd, pts and the option: {err}"
    );
    a.type_line("again\n");
    let got = a.read_until("again\r\nagain\r\n", 5);
    assert!(
        got.contains("again\r\nagain\r\n"),
        "cat stopped after a refused dump: {got:?}"
    );

    let (ok, err) = ckpt(&["dump", "-t", &cat.to_string(), "-D", img, "--shell-job"]);
    assert!(ok, "dump --shell-job failed: {err}");
    let end = Instant::now() + Duration::from_secs(5);
    while stat(cat).is_some() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stat(cat).is_none(), "cat still runs after its dump");

    // A restore without the option is refused before anything exists.
    let (ok, err) = ckpt(&["restore", "-d", "-D", img]);
    assert!(
        !ok && err.contains("--shell-job"),
        "restore without --shell-job: {err}"
    );
    assert!(stat(cat).is_none(), "a refused restore left cat running");

    let mut b = pty();
    let script =
        format!("{CKPT} restore --shell-job -d -D {img}; echo restored $?; exec sleep 1000");
    let sh2 = shell(&b, &script);
    let sh2_pid = sh2.id() as i32;
    reap.1.push(sh2);
    let got = b.read_until("restored ", 10);
    let got = got + &b.read_until("\n", 2);
    assert!(got.contains("restored 0"), "restore --shell-job: {got}");
    let (pgrp, sid, tty_b, fg) = stat(cat).expect("cat restored");
    let rdev_b = std::fs::metadata(nix::unistd::ttyname(b.slave.as_fd()).unwrap())
        .unwrap()
        .rdev();
    assert_eq!(sid, sh2_pid, "cat is not in the restoring shell's session");
    assert_eq!(
        tty_b, rdev_b,
        "cat's controlling terminal is not the restore's"
    );
    assert_eq!((pgrp, fg), (cat, cat), "cat is not the foreground job");
    b.type_line("two\n");
    let got = b.read_until("two\r\ntwo\r\n", 5);
    assert!(
        got.contains("two\r\ntwo\r\n"),
        "restored cat does not echo: {got:?}"
    );
    println!("terminals: cat ok");
    drop(reap);
    vim(dir.path());
    tmux(dir.path());
}

fn tmux_cmd(sock: &str, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("tmux")
        .args(["-S", sock, "-f", "/dev/null"])
        .args(args)
        .env("TERM", "xterm")
        .env("HOME", dir)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .expect("running tmux");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The pane's screen once it shows `want` (or after 5 s).
fn screen_with(sock: &str, dir: &std::path::Path, want: &str) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, s) = tmux_cmd(sock, dir, &["capture-pane", "-p"]);
        if s.contains(want) || Instant::now() > end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A detached tmux server: same screen after a restore, and a new command
/// runs.
fn tmux(dir: &std::path::Path) {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("terminals: tmux part skipped (no tmux; ci/setup.sh installs it)");
        return;
    }
    let sock = dir.join("tmux.sock");
    let sock = sock.to_str().unwrap();
    let img = dir.join("img-tmux");
    let img = img.to_str().unwrap();
    let (ok, _) = tmux_cmd(
        sock,
        dir,
        &["new-session", "-d", "-x", "80", "-y", "24", "sh"],
    );
    assert!(ok, "tmux new-session");
    let (_, pid) = tmux_cmd(sock, dir, &["display", "-p", "#{pid}"]);
    let server: i32 = pid.trim().parse().expect("the server's pid");
    let reap = Reaper(vec![server], vec![]);
    tmux_cmd(sock, dir, &["send-keys", "echo before-$((6*7))", "Enter"]);
    let before = screen_with(sock, dir, "before-42");
    assert!(
        before.contains("before-42"),
        "the pane did not run the command: {before}"
    );
    let (ok, err) = ckpt(&["dump", "-t", &server.to_string(), "-D", img]);
    if !ok && err.contains("UNIX") && err.contains("not supported yet") {
        println!(
            "terminals: tmux part skipped: the engine refuses the server's socket: {}",
            err.trim()
        );
        tmux_cmd(sock, dir, &["kill-server"]);
        return;
    }
    assert!(ok, "dump of the tmux server failed: {err}");
    let end = Instant::now() + Duration::from_secs(5);
    while stat(server).is_some() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, err) = ckpt(&["restore", "-d", "-D", img]);
    assert!(ok, "restore of the tmux server failed: {err}");
    let after = screen_with(sock, dir, "before-42");
    assert_eq!(
        after.trim_end(),
        before.trim_end(),
        "the pane's screen changed"
    );
    tmux_cmd(sock, dir, &["send-keys", "echo after-$((6*8))", "Enter"]);
    let now = screen_with(sock, dir, "after-48");
    assert!(
        now.contains("after-48"),
        "the restored pane did not run a new command: {now}"
    );
    tmux_cmd(sock, dir, &["kill-server"]);
    drop(reap);
    println!("terminals: tmux ok");
}

/// vim as the shell's job: an unsaved buffer survives and `:wq` writes it.
fn vim(dir: &std::path::Path) {
    if Command::new("vim").arg("--version").output().is_err() {
        println!("terminals: vim part skipped (no vim; ci/setup.sh installs it)");
        return;
    }
    let file = dir.join("edited.txt");
    let img = dir.join("img-vim");
    let (file_s, img_s) = (file.to_str().unwrap(), img.to_str().unwrap());
    let mut a = pty();
    let sh = shell(
        &a,
        &format!(
            "set -m; HOME={} vim -N -u NONE -i NONE -n {file_s}; exec sleep 1000",
            dir.display()
        ),
    );
    let mut reap = Reaper(vec![], vec![sh]);
    let vim = child_named(reap.1[0].id(), "vim").expect("the shell's vim");
    reap.0.push(vim);
    // Its first screen, then the insertion echoed.
    a.read_until("\x1b[", 5);
    std::thread::sleep(Duration::from_millis(500));
    a.type_line("ihello from before\x1b");
    a.read_until("before", 5);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, err) = ckpt(&["dump", "-t", &vim.to_string(), "-D", img_s, "--shell-job"]);
    assert!(ok, "dump --shell-job of vim failed: {err}");
    assert!(!file.exists(), "vim wrote the file before :wq");
    let mut b = pty();
    let sh2 = shell(
        &b,
        &format!("{CKPT} restore --shell-job -d -D {img_s}; echo restored $?; exec sleep 1000"),
    );
    reap.1.push(sh2);
    let got = b.read_until("restored ", 10);
    let got = got + &b.read_until("\n", 2);
    assert!(
        got.contains("restored 0"),
        "restore --shell-job of vim: {got}"
    );
    b.type_line("A and after\x1b:wq\r");
    let end = Instant::now() + Duration::from_secs(10);
    let want = "hello from before and after\n";
    while Instant::now() < end && std::fs::read_to_string(&file).ok().as_deref() != Some(want) {
        b.read_until("never", 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&file).ok();
    assert_eq!(text.as_deref(), Some(want), "what the restored vim wrote");
    println!("terminals: vim ok");
}
