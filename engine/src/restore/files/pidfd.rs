//! pidfds: the task opens a pidfd of the same pid again. The process it
//! refers to is of the tree, but may be made after this task (a sibling
//! forked later): the open waits for it, within bounds.
//!
//! A pidfd of a task reaped before the dump (pid -1) is made by the
//! engine before any task exists, as CRIU does (in a pid namespace of the
//! tree's own, by the driver inside it once the tree exists, so that the
//! stand-in is in the namespace: restore/engine_files.rs): a stand-in child is
//! forked, every pidfd of that process (one pidfs inode) is opened on
//! it, and it dies with the dumped status and is reaped. Its pid number is
//! free again before the tree is cloned; the pidfds poll readable and
//! hung up, signals through them fail with ESRCH, and PIDFD_GET_INFO
//! gives the exit status.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Pidfd;

impl FdKind for Pidfd {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Pidfd
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.pidfd, "PIDFD")?;
        let p = f.pidfd.as_ref().expect("checked");
        if p.nspid <= 0 && p.nspid != -1 {
            return Err(format!(
                "pidfd of pid {}, which this engine cannot restore",
                p.nspid
            ));
        }
        if let Some(st) = p.attr.as_ref().and_then(|a| a.exit_code) {
            if !crate::sys::pidfd::reproducible(st) {
                return Err(format!(
                    "pidfd of a task that died with status {st:#x}, neither an exit nor a signal"
                ));
            }
        }
        Ok(())
    }

    fn source(
        &self,
        imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let p = f.pidfd.as_ref().expect("validated");
        if p.nspid == -1 {
            return Err(Error::task(
                pid,
                format!("fd {} (pidfd of a reaped task)", fd.fd),
                "the engine did not make it",
            ));
        }
        if !imgs.tasks.iter().any(|t| t.pid == p.nspid) {
            return Err(Error::task(
                pid,
                format!("fd {} (pidfd)", fd.fd),
                format!("it refers to pid {}, which is not in the image", p.nspid),
            ));
        }
        Ok(Arc::new(Open {
            target: p.nspid,
            flags: p.flags as i32 & libc::O_NONBLOCK,
        }))
    }
}

#[derive(Debug)]
struct Open {
    target: i32,
    flags: i32,
}

impl OpenFd for Open {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        let mut tries = 0;
        loop {
            match crate::sys::pidfd_open(self.target, self.flags as u32) {
                Err(Errno::ESRCH) if tries < 5000 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                r => return r,
            }
        }
    }

    fn describe(&self) -> String {
        format!("pidfd of pid {}", self.target)
    }
}

/// The pidfds of tasks reaped before the dump, by file id: one stand-in
/// per process (pidfs inode), dead and reaped when this returns.
pub fn make_dead(imgs: &Images) -> Result<Vec<(u32, OwnedFd)>> {
    let root = imgs.tasks[0].pid;
    // By pidfs inode (0: unknown, then a stand-in of its own).
    let mut groups: BTreeMap<(u64, u32), Vec<&pb::FileEntry>> = BTreeMap::new();
    for f in imgs.files.values() {
        if let Some(p) = f.pidfd.as_ref().filter(|p| p.nspid == -1) {
            let key = if p.ino != 0 { (p.ino, 0) } else { (0, f.id) };
            groups.entry(key).or_default().push(f);
        }
    }
    let mut out = Vec::new();
    for ((ino, _), files) in groups {
        let status = files
            .iter()
            .find_map(|f| f.pidfd.as_ref()?.attr.as_ref()?.exit_code)
            .unwrap_or(libc::SIGKILL);
        let what = || {
            let ids: Vec<u32> = files.iter().map(|f| f.id).collect();
            format!("pidfds {ids:?} of a reaped task (pidfs inode {ino})")
        };
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys(root, format!("{}: pipe", what()), e))?;
        let child = crate::sys::pidfd::fork_stand_in(status, go_r.as_fd())
            .map_err(|e| Error::sys(root, format!("{}: fork of a stand-in", what()), e))?;
        drop(go_r);
        let opened: Result<Vec<(u32, OwnedFd)>> = files
            .iter()
            .map(|f| {
                let flags = f.pidfd.as_ref().expect("checked").flags & libc::O_NONBLOCK as u32;
                let fd = crate::sys::pidfd::open(child, flags).map_err(|e| {
                    Error::sys(
                        root,
                        format!("{}: pidfd_open of stand-in {child}", what()),
                        e,
                    )
                })?;
                Ok((f.id, fd))
            })
            .collect();
        // Go, whatever happened: the stand-in holds a copy of the write
        // end too, so only a byte wakes it.
        let _ = nix::unistd::write(&go_w, b"x");
        drop(go_w);
        let reaped = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None)
            .map_err(|e| Error::sys(root, format!("{}: reaping stand-in {child}", what()), e))?;
        let opened = opened?;
        let died_right = match reaped {
            nix::sys::wait::WaitStatus::Exited(_, code) => {
                libc::WIFEXITED(status) && code == libc::WEXITSTATUS(status)
            }
            nix::sys::wait::WaitStatus::Signaled(_, sig, _) => {
                libc::WIFSIGNALED(status) && sig as i32 == libc::WTERMSIG(status)
            }
            _ => false,
        };
        if !died_right {
            return Err(Error::task(
                root,
                what(),
                format!("stand-in {child} ended as {reaped:?}, not with status {status:#x}"),
            ));
        }
        debug!("{}: stand-in {child} died with status {status:#x}", what());
        out.extend(opened);
    }
    Ok(out)
}
