//! The tree's own user namespace, made before every other namespace of the
//! tree, which it must own as the dumped one did.
//!
//! # Who does what
//!
//! A process writes a namespace's maps from outside it, and a namespace is
//! owned by the user namespace of the process that creates it. The engine
//! must stay outside (it needs the host's powers to the end: ptrace,
//! /proc, cgroups, mounts), and a process with threads cannot enter a user
//! namespace at all. So:
//!
//! 1. `make`: a holder process, forked from the engine, unshares a user
//!    namespace; the engine writes its setgroups, uid_map and gid_map; the
//!    holder, now with every capability in it, unshares the tree's UTS,
//!    IPC, network, mount and time namespaces, which the namespace thus
//!    owns. The engine keeps fds of them all and lets the holder go.
//! 2. restore/ns.rs has the engine's thread enter the UTS, IPC, network
//!    and mount namespaces (setns into a namespace the tree's user
//!    namespace owns needs only the engine's host powers) and set them up
//!    as for a tree without a user namespace: names, sysctls, devices,
//!    SysV objects.
//! 3. `clone_root`: a launcher process, forked from the engine, enters the
//!    time namespace and, when the root is the init of a new pid
//!    namespace, the user namespace, then clones the root with
//!    CLONE_PARENT (the root is the engine's child, as without a user
//!    namespace) and CLONE_NEWPID, so the pid namespace is owned by the
//!    user namespace too. In the engine's pid namespace the launcher
//!    clones the root with the engine's powers (set_tid there needs them)
//!    and the root enters the user namespace itself before anything else
//!    (and the launcher after it).
//! 4. The launcher stays, in the user namespace, as the source of the
//!    files the tasks share (restore/files: pidfd_getfd from the engine),
//!    until the restore is over (`done`): a task in the namespace may not
//!    take fds from the engine, which is outside, but may from a process
//!    in it with no more powers than its own. The tasks' pidfd of "the
//!    engine" (restore/pidns.rs `engine_pidfd`) names the launcher.
//!
//! Credentials in the images are as the tree sees them (dump/userns.rs):
//! restore/creds.rs sets them inside the namespace, where they mean the
//! same; with setgroups denied the supplementary groups cannot be set and
//! are left as inherited.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use nix::sched::CloneFlags;

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// The most extents a map may have (the kernel's limit).
const MAX_EXTENTS: usize = 340;

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(crate::images::ImageError::invalid(path, reason))
}

/// Checks the maps of userns-N.img (`path`) as the kernel would, so a bad
/// image is refused before any process exists.
pub fn validate(path: &Path, u: &pb::UsernsEntry) -> Result<()> {
    for (name, map) in [("uid_map", &u.uid_map), ("gid_map", &u.gid_map)] {
        if map.is_empty() || map.len() > MAX_EXTENTS {
            return Err(bad(
                path,
                format!(
                    "{name} has {} extents (1 to {MAX_EXTENTS} allowed)",
                    map.len()
                ),
            ));
        }
        let end = |a: u32, n: u32| a.checked_add(n);
        for (i, e) in map.iter().enumerate() {
            if e.count == 0
                || end(e.first, e.count).is_none()
                || end(e.lower_first, e.count).is_none()
            {
                return Err(bad(
                    path,
                    format!("{name} extent {i} ({e:?}) is empty or overflows"),
                ));
            }
            let overlap = |a: u32, b: u32, n: u32, m: u32| a < b + m && b < a + n;
            for (j, f) in map.iter().enumerate().take(i) {
                if overlap(e.first, f.first, e.count, f.count)
                    || overlap(e.lower_first, f.lower_first, e.count, f.count)
                {
                    return Err(bad(
                        path,
                        format!("{name} extents {j} and {i} overlap ({f:?}, {e:?})"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The kernel's text of a map.
fn map_text(map: &[pb::UidGidExtent]) -> String {
    map.iter()
        .map(|e| format!("{} {} {}\n", e.first, e.lower_first, e.count))
        .collect()
}

/// The namespaces `make` made, held by fds until the root's clone.
struct Made {
    user: OwnedFd,
    /// The time namespace for the root, with its offsets written.
    time: Option<OwnedFd>,
}

/// What `make` leaves for `clone_root`: a restore makes one tree.
static MADE: Mutex<Option<Made>> = Mutex::new(None);

/// The launcher, alive until `done`.
static LAUNCHER: Mutex<Option<Pid>> = Mutex::new(None);

/// The restore is over (or failed): the launcher goes.
pub fn done() {
    let pid = LAUNCHER.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(pid) = pid {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// The other namespaces the holder made, to be entered by the engine's
/// thread: (flag, fd).
pub type Entered = Vec<(CloneFlags, OwnedFd)>;

/// Step 1 of the module doc: a new user namespace with `u`'s maps, and in
/// it new namespaces of the kinds in `flags` (CLONE_NEWTIME among them:
/// its offsets, `time_offsets`, are written before any task is in it).
/// Returns fds of the namespaces of `flags` but time, for the engine's
/// thread to enter.
pub fn make(
    root: Pid,
    u: &pb::UsernsEntry,
    flags: CloneFlags,
    time_offsets: Option<&str>,
) -> Result<Entered> {
    let err = |what: &str, e| Error::sys(root, format!("user namespace: {what}"), e);
    let (up_rd, up_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let (go_rd, go_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let holder = crate::sys::fork_restore_child().map_err(|e| err("fork of the holder", e))?;
    if holder == 0 {
        drop(up_rd);
        drop(go_wr);
        holder_main(up_wr, go_rd, flags);
    }
    drop(up_wr);
    drop(go_rd);
    let r = set_up(root, holder, u, flags, time_offsets, up_rd, go_wr);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(holder), None);
    r
}

/// The holder (a forked copy of the engine): raw system calls only, then
/// it waits to be killed.
fn holder_main(up: OwnedFd, go: OwnedFd, flags: CloneFlags) -> ! {
    crate::restore::child::tie_to_parent(nix::unistd::getppid().as_raw());
    let say = |b: u8| {
        let _ = nix::unistd::write(&up, &[b]);
    };
    if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_err() {
        say(b'u');
        crate::sys::process::exit_now(1);
    }
    say(b'1');
    let mut b = [0u8; 1];
    if !matches!(nix::unistd::read(go.as_raw_fd(), &mut b), Ok(1)) {
        crate::sys::process::exit_now(1);
    }
    if nix::sched::unshare(flags).is_err() {
        say(b'n');
        crate::sys::process::exit_now(1);
    }
    say(b'2');
    loop {
        nix::unistd::pause();
    }
}

/// The engine's side of `make`.
fn set_up(
    root: Pid,
    holder: Pid,
    u: &pb::UsernsEntry,
    flags: CloneFlags,
    time_offsets: Option<&str>,
    up: OwnedFd,
    go: OwnedFd,
) -> Result<Entered> {
    let mut up = std::fs::File::from(up);
    let mut step = |want: u8, what: &str| -> Result<()> {
        let mut b = [0u8; 1];
        match up.read(&mut b) {
            Ok(1) if b[0] == want => Ok(()),
            _ => Err(Error::task(
                root,
                "user namespace",
                format!("the holder process (pid {holder}) could not {what} (reply {b:?})"),
            )),
        }
    };
    step(b'1', "unshare a user namespace")?;
    let write = |name: &str, text: &str| -> Result<()> {
        let path = format!("/proc/{holder}/{name}");
        std::fs::write(&path, text).map_err(|e| {
            Error::io(
                &path,
                format!("pid {root}: its user namespace's {name} {text:?}"),
                e,
            )
        })
    };
    // setgroups first: gid_map cannot be written with "allow" by an
    // unprivileged writer, and "deny" is settable only before gid_map.
    let deny = u.ckpt_setgroups_deny == Some(true);
    write("setgroups", if deny { "deny" } else { "allow" })?;
    write("uid_map", &map_text(&u.uid_map))?;
    write("gid_map", &map_text(&u.gid_map))?;
    std::fs::File::from(go)
        .write_all(b"g")
        .map_err(|e| Error::io("pipe", format!("pid {root}: the holder's go"), e))?;
    step(b'2', &format!("unshare its other namespaces ({flags:?})"))?;
    let open = |name: &str| -> Result<OwnedFd> {
        let path = format!("/proc/{holder}/ns/{name}");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(&path, format!("pid {root}: its new {name} namespace"), e))
    };
    let time = match flags.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
        true => {
            if let Some(text) = time_offsets {
                let path = format!("/proc/{holder}/timens_offsets");
                std::fs::write(&path, text).map_err(|e| {
                    Error::io(
                        &path,
                        format!("pid {root}: time namespace offsets {text:?}"),
                        e,
                    )
                })?;
            }
            Some(open("time_for_children")?)
        }
        false => None,
    };
    let mut out = Vec::new();
    for (flag, name) in [
        (CloneFlags::CLONE_NEWNET, "net"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWNS, "mnt"),
    ] {
        if flags.contains(flag) {
            out.push((flag, open(name)?));
        }
    }
    let user = open("user")?;
    *MADE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Made { user, time });
    debug!(
        "user namespace: uid_map {:?}, gid_map {:?}, setgroups {}",
        map_text(&u.uid_map),
        map_text(&u.gid_map),
        if deny { "deny" } else { "allow" }
    );
    Ok(out)
}

/// Steps 3 and 4 of the module doc: clones the root (pid `root`, `flags`
/// with CLONE_NEWPID or not) through a launcher, which puts a pidfd of
/// itself at `pidfd_at` first. Its copies of the tasks' `err_pipes` it
/// closes after the clone: their end is how the engine knows a task is
/// set up. Like `clone3_with_pid`: `Ok(0)` in the root, its pid in the
/// engine.
pub fn clone_root(
    root: Pid,
    flags: u64,
    pidfd_at: Option<i32>,
    err_pipes: &[i32],
) -> nix::Result<i32> {
    use nix::errno::Errno;
    let made = MADE.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(made) = made else {
        return Err(Errno::ENOENT);
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let launcher = crate::sys::fork_restore_child()?;
    if launcher == 0 {
        drop(rd);
        let r = launch(&made, root, flags, pidfd_at);
        let v: i32 = match r {
            Ok(0) => return Ok(0),
            Ok(pid) => pid,
            Err(e) => -(e as i32),
        };
        let _ = nix::unistd::write(&wr, &v.to_le_bytes());
        drop(wr);
        if v < 0 {
            crate::sys::process::exit_now(1);
        }
        for &fd in err_pipes {
            crate::sys::fd::close(fd);
        }
        // The tasks' source of shared files, until `done` kills it.
        loop {
            nix::unistd::pause();
        }
    }
    drop(wr);
    *LAUNCHER.lock().unwrap_or_else(|p| p.into_inner()) = Some(launcher);
    let mut b = [0u8; 4];
    let got = std::fs::File::from(rd).read_exact(&mut b);
    if got.is_err() {
        done();
        return Err(Errno::ECHILD);
    }
    match i32::from_le_bytes(b) {
        v if v > 0 => Ok(v),
        v => {
            done();
            Err(Errno::from_raw(-v))
        }
    }
}

/// The launcher: its namespaces, then the root's clone. Returns 0 in
/// the root.
fn launch(made: &Made, root: Pid, flags: u64, pidfd_at: Option<i32>) -> nix::Result<i32> {
    crate::restore::child::tie_to_parent(nix::unistd::getppid().as_raw());
    if let Some(n) = pidfd_at {
        let me = crate::sys::pidfd::open(nix::unistd::getpid().as_raw(), 0)?;
        crate::sys::fd::dup2(me.as_raw_fd(), n)?;
    }
    if let Some(t) = &made.time {
        nix::sched::setns(t, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))?;
    }
    let own_pid = flags & libc::CLONE_NEWPID as u64 != 0;
    if own_pid {
        nix::sched::setns(&made.user, CloneFlags::CLONE_NEWUSER)?;
    }
    // CLONE_PARENT takes the launcher's exit signal (SIGCHLD): clone3
    // wants none of its own with it.
    let got = crate::sys::clone3_with_pid(root, flags | libc::CLONE_PARENT as u64, 0)?;
    if !own_pid {
        // The root, and the launcher (step 4), into the namespace.
        if nix::sched::setns(&made.user, CloneFlags::CLONE_NEWUSER).is_err() && got == 0 {
            crate::sys::process::exit_now(1);
        }
    }
    if got != 0 {
        // The tasks take their shared files from the launcher with
        // pidfd_getfd, a ptrace access check: from inside the user
        // namespace it passes only for a dumpable process (the launcher's
        // memory was made outside, where no capability of theirs counts),
        // which the launcher was not (found by hand: EPERM).
        nix::sys::prctl::set_dumpable(true)?;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(first: u32, lower_first: u32, count: u32) -> pb::UidGidExtent {
        pb::UidGidExtent {
            first,
            lower_first,
            count,
        }
    }

    #[test]
    fn maps_are_checked_before_any_process() {
        let p = Path::new("userns-5.img");
        let good = pb::UsernsEntry {
            uid_map: vec![ext(0, 100000, 1000), ext(1000, 300000, 10)],
            gid_map: vec![ext(0, 100000, 65536)],
            ckpt_setgroups_deny: None,
        };
        validate(p, &good).unwrap();
        let mut overlap = good.clone();
        overlap.uid_map[1].lower_first = 100500;
        let e = validate(p, &overlap).unwrap_err().to_string();
        assert!(e.contains("userns-5.img") && e.contains("overlap"), "{e}");
        let mut empty = good.clone();
        empty.gid_map.clear();
        let e = validate(p, &empty).unwrap_err().to_string();
        assert!(e.contains("gid_map has 0 extents"), "{e}");
        let mut wrap = good;
        wrap.uid_map[0].lower_first = u32::MAX;
        assert!(validate(p, &wrap).is_err());
    }
}
