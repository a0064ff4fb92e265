//! `container`: a container without a container engine (issue 14). A
//! small root file system is built from this machine's own files
//! (Debian's busybox-static, with a /dev/null of its own) in a directory
//! of the host. In a "host" (a network namespace with a bridge, as
//! `veth_ext.rs` makes them), in a user namespace with an unprivileged
//! container's shifted ids (its root is the host's 100000:200000; the
//! host's root, whose ids the engine has, is not mapped there: see
//! `ShiftedUser`), util-linux's `unshare --mount --pid --fork --uts --ipc
//! --net` starts busybox's shell, which
//! binds that directory on itself, mounts a tmpfs on its /data and its
//! /proc, pivot_roots into it, unmounts the old root, then, from the
//! container's own busybox, sets a hostname, writes files into the tmpfs and starts a TCP
//! server (busybox's `nc -l -e cat`: one connection, echoed) and a sleep.
//! The container's `eth0` (10.77.0.2/24) is paired with `vA`, a port of
//! the host's bridge, and a client in the host connects to the server.
//! The init is dumped by its pid as seen from outside with
//! `--tcp-established --external veth[eth0]`, and restored with `-d
//! --tcp-established --external veth[eth0]:vA@br0` (its root bound again
//! from the directory it was at the dump); then the client's connection
//! echoes what it sent while the container was down and what it sends
//! after (the same connection: nothing listens any more, a reconnect
//! could not answer), and inside the restored tree the root is the
//! container's, the tmpfs holds the files with their owners and is the
//! container's (its root remounts it, before the dump and after the
//! restore), the namespace holds the container's three mounts only, and
//! the processes are there.
//!
//! The init's stdio is the host's /dev/null, opened before the unshare,
//! and must be on the host's mount again after the restore.
//!
//! The namespaces include that user namespace, which owns the others and
//! which the restore makes again with the same maps. Its /proc is mounted before the pivot_root, while the
//! host's is still visible: the kernel lets a user namespace mount a proc
//! only where one is fully visible already (mount_too_revealing), so
//! mounting it after the old root is gone fails with EPERM.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use libtest_mimic::Failed;

use super::veth_ext::{ask, connect, wait_gone, Hosts, SERVER_ADDR};

const BUSYBOX: &str = "/bin/busybox";

/// The applets the container's scripts call, as links to busybox.
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "pivot_root",
    "hostname",
    "mkdir",
    "sleep",
    "cat",
    "echo",
    "nc",
];

/// Why the trial cannot run here, if it cannot.
pub fn why_not() -> Option<String> {
    let static_bb = std::fs::read(BUSYBOX).is_ok_and(|b| is_static_elf(&b));
    (!static_bb).then(|| {
        format!("no static {BUSYBOX} on this machine (Debian's busybox-static; ci/setup.sh installs it)")
    })
}

/// A 64-bit ELF without an interpreter (PT_INTERP): it runs alone in a
/// root file system without libraries.
fn is_static_elf(b: &[u8]) -> bool {
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|x| u64::from_le_bytes(x.try_into().expect("8 bytes")) as usize)
    };
    if !b.starts_with(b"\x7fELF\x02") {
        return false;
    }
    let (Some(off), Some(size), Some(n)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..n).all(|i| {
        let o = off + i * size;
        b.get(o..o + 4) != Some(&3u32.to_le_bytes()[..])
    })
}

fn build_rootfs(root: &Path) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", root.display());
    for d in ["bin", "proc", "data", "dev"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| err(d, e))?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).map_err(|e| err("busybox", e))?;
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).map_err(|e| err(a, e))?;
    }
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .map_err(|e| format!("mknod {}/dev/null: {e}", root.display()))?;
    // 0666 whatever the umask: the container's root is not the host's.
    std::fs::set_permissions(
        root.join("dev/null"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .map_err(|e| format!("chmod {}/dev/null: {e}", root.display()))?;
    Ok(())
}

/// What the container looks like from the host: its files through
/// /proc/PID/root and its mounts as it sees them.
fn inside(init: i32) -> Result<String, String> {
    let root = format!("/proc/{init}/root");
    let read = |p: &str| std::fs::read_to_string(format!("{root}{p}")).unwrap_or_default();
    // As the host sees them: the container's shifted root.
    let owner = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(format!("{root}{p}"))
            .map_or("?".into(), |m| format!("{}:{}", m.uid(), m.gid()))
    };
    // Relative to the init's root, as it sees them.
    let mounts: Vec<String> = std::fs::read_to_string(format!("/proc/{init}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap_or(0);
            format!(
                "{} {}",
                f.get(4).unwrap_or(&""),
                f.get(sep + 1).unwrap_or(&"")
            )
        })
        .collect();
    // Its user namespace: not the host's, with the same maps, owning its
    // network namespace.
    let ns = |p: &str, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
    let own_user = ns(&init.to_string(), "user") != ns("self", "user");
    let map = |m: &str| {
        std::fs::read_to_string(format!("/proc/{init}/{m}"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // The init's stdio, /dev/null opened by the test before the unshare:
    // on the host's /dev mount, which the restore must give back (not
    // the container's own /dev/null at the same path). Mount ids are
    // unique across namespaces and the host's mount is the same one.
    let ids = |p: &str| -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{p}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').next().map(String::from))
            .collect()
    };
    let (host_ids, tree_ids) = (ids("self"), ids(&init.to_string()));
    let stdio: Vec<String> = (0..3)
        .map(|fd| {
            let id = std::fs::read_to_string(format!("/proc/{init}/fdinfo/{fd}"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("mnt_id:"))
                .map_or("?".into(), |m| m.trim().to_string());
            let on = match (host_ids.contains(&id), tree_ids.contains(&id)) {
                (true, false) => "host",
                (false, true) => "container",
                _ => "?",
            };
            format!("{on}:{id}")
        })
        .collect();
    Ok(format!(
        "a: {}b: {}owners: {} {}\nhostname: {}mounts: {}\nold root visible: {}\n\
         own user namespace: {own_user}, uid_map {}, gid_map {}\nstdio on mounts: {}\n",
        read("/data/a"),
        read("/data/d/b"),
        owner("/data/a"),
        owner("/data/d"),
        hostname(init)?,
        mounts.join(", "),
        Path::new(&format!("{root}/usr")).exists(),
        map("uid_map"),
        map("gid_map"),
        stdio.join(" "),
    ))
}

/// A user namespace with an unprivileged container's shifted ids (its
/// root is the host's 100000:200000; the host's root, whose ids the
/// engine has, is not mapped there), held by a process in it until the
/// container, which `nsenter --user` (as its root) puts in it, runs.
/// util-linux's `unshare --map-users` would need newuidmap.
struct ShiftedUser(std::process::Child);

impl ShiftedUser {
    fn new() -> Result<Self, String> {
        let child = Command::new("unshare")
            .args(["--user", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare --user: {e}"))?;
        let user = ShiftedUser(child);
        let pid = user.0.id();
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/user")).ok();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ns(&pid.to_string()) == ns("self") {
            if std::time::Instant::now() > deadline {
                return Err("the user namespace's holder did not unshare in 10 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (file, map) in [
            ("uid_map", "0 100000 65536\n"),
            ("gid_map", "0 200000 65536\n"),
        ] {
            std::fs::write(format!("/proc/{pid}/{file}"), map)
                .map_err(|e| format!("writing /proc/{pid}/{file}: {e}"))?;
        }
        Ok(user)
    }
}

impl Drop for ShiftedUser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process in the container's user and mount namespaces remounts its
/// /data with size `size`: only the user namespace that owns the tmpfs's
/// superblock may (a tmpfs the restore mounted as the host's could not
/// be). busybox's mount would add the options /proc/mounts shows, whose
/// uid= is the host's id, which the namespace does not map (EINVAL).
fn remount_data(init: i32, size: &str) -> Result<(), String> {
    use nix::sched::{setns, CloneFlags};
    let open = |kind: &str| {
        std::fs::File::open(format!("/proc/{init}/ns/{kind}"))
            .map_err(|e| format!("/proc/{init}/ns/{kind}: {e}"))
    };
    let (user, mnt) = (open("user")?, open("mnt")?);
    let data = std::ffi::CString::new(format!("size={size}")).expect("no NUL");
    // SAFETY: the child makes raw system calls only (setns, mount, _exit)
    // on what was made before the fork (nothing allocates), then exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let entered = setns(&user, CloneFlags::CLONE_NEWUSER)
                .and_then(|()| setns(&mnt, CloneFlags::CLONE_NEWNS));
            let code = match entered {
                Err(e) => e as i32,
                // SAFETY: NUL-terminated strings that outlive the call.
                Ok(()) => match unsafe {
                    libc::mount(
                        std::ptr::null(),
                        c"/data".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT,
                        data.as_ptr().cast(),
                    )
                } {
                    0 => 0,
                    _ => nix::errno::Errno::last() as i32,
                },
            };
            // SAFETY: _exit ends the child at once.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).map_err(|e| format!("waitpid: {e}"))? {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                nix::sys::wait::WaitStatus::Exited(_, e) => Err(format!(
                    "the container's root cannot remount its /data with size={size}: {}",
                    nix::errno::Errno::from_raw(e)
                )),
                other => Err(format!("the remounting process: {other:?}")),
            }
        }
    }
}

/// The host name in the init's UTS namespace (a sysctl reads the
/// reader's).
fn hostname(init: i32) -> Result<String, String> {
    let out = Command::new("nsenter")
        .args(["-t", &init.to_string(), "-u", "hostname"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run() -> Result<(), Failed> {
    // Host A: a network namespace with a bridge, where the container's
    // veth goes, the client connects from and the engine runs.
    let mut h = Hosts::new("container", &["A"])?;
    let host = h.names[0].clone();
    let dir = h.clean.dir.clone();
    let rootfs = dir.join("rootfs");
    build_rootfs(&rootfs)?;
    let r = rootfs.to_string_lossy();
    let port = SERVER_ADDR.rsplit(':').next().expect("a port");
    // From the host's busybox in the container's directory, until the
    // pivot; then from the container's own. The server is busybox's nc
    // listening for one connection, then cat echoing it: after the dump
    // nothing listens, so only the same connection can answer.
    let script = format!(
        "B={r}/bin/busybox; $B mount --bind {r} {r} && cd {r} && \
         $B mount -t tmpfs -o size=1m,mode=0755 ckpt_data data && \
         $B mount -t proc proc proc && \
         $B pivot_root . . && /bin/busybox umount -l . && cd / && \
         exec /bin/busybox env -i PATH=/bin /bin/sh -c '\
         hostname ckpt-container && \
         echo hello > /data/a && mkdir /data/d && echo world > /data/d/b && \
         {{ nc -l -p {port} -e cat </dev/null >/dev/null 2>&1 & }} && \
         {{ sleep 1000 & }} && exec sleep 1001'"
    );
    let user = ShiftedUser::new()?;
    let mut unshare = Command::new("nsenter");
    unshare
        .arg(format!("--net=/run/netns/{host}"))
        .arg("nsenter")
        .arg(format!("--user=/proc/{}/ns/user", user.0.id()))
        .arg("unshare")
        .args(["--mount", "--pid", "--fork", "--uts", "--ipc", "--net"])
        .arg(rootfs.join("bin/busybox"))
        .args(["sh", "-c", &script]);
    // Ready once the init is the last sleep, with the server and the
    // other sleep its children.
    let ready = |init: i32| {
        let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap_or_default();
        let kids = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .unwrap_or_default();
        (comm.trim() == "sleep" && kids.split_whitespace().count() == 2)
            .then(|| inside(init).ok())
            .flatten()
    };
    let (init, before, clean) = super::start_unshared(unshare, &dir, "the container", ready)?;
    drop(user);
    h.clean = clean;
    let want = "a: hello\nb: world\nowners: 100000:200000 100000:200000\n\
                hostname: ckpt-container\n\
                mounts: / ext4, /data tmpfs, /proc proc\nold root visible: false\n\
                own user namespace: true, uid_map 0 100000 65536, gid_map 0 200000 65536\n";
    // The stdio's mounts are the host's, whatever their ids (the same
    // after the restore: `after != before` below).
    let stdio = before.lines().last().unwrap_or_default();
    let all_host = stdio
        .strip_prefix("stdio on mounts: ")
        .is_some_and(|l| l.split(' ').all(|m| m.starts_with("host:")));
    let want = format!(
        "{want}{}\n",
        if all_host {
            stdio
        } else {
            "stdio on mounts: host:ID host:ID host:ID"
        }
    );
    let want = want.replace(
        " ext4,",
        &format!(
            " {},",
            before
                .split("mounts: / ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("?")
        ),
    );
    if before != want {
        return Err(format!("before the dump, inside:\n{before}\nwant:\n{want}").into());
    }
    remount_data(init, "2m").map_err(|e| format!("before the dump: {e}"))?;
    h.plug(&host, init)?;
    let mut c = connect(&host)?;
    ask(&mut c, "one", "one")?;
    super::dump_unshared(
        Some(&host),
        &dir,
        init,
        &mut h.clean,
        &["--tcp-established", "--external", "veth[eth0]"],
    )?;
    // The old vA goes with the dumped namespace, from a kernel work queue.
    wait_gone(&host, "vA")?;
    // Sent while the container is down, echoed by the restored one.
    let restored = h.restore_answering(&host, &mut c, "mid", "mid")?;
    // The same connection, both ways.
    ask(&mut c, "two", "two")?;
    let after = inside(restored)?;
    if after != before {
        return Err(
            format!("inside the restored container:\n{after}\nbefore the dump:\n{before}").into(),
        );
    }
    remount_data(restored, "3m").map_err(|e| format!("after the restore: {e}"))?;
    let kids = std::fs::read_to_string(format!("/proc/{restored}/task/{restored}/children"))
        .unwrap_or_default();
    if kids.split_whitespace().count() != 2 {
        return Err(format!(
            "the restored init has children {kids:?}, want the sleep and the server"
        )
        .into());
    }
    ask(&mut c, "three", "three")?;
    h.clean.keep = false;
    Ok(())
}
