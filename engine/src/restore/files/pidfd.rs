//! pidfds: the task opens a pidfd of the same pid again. The process it
//! refers to is of the tree, but may be made after this task (a sibling
//! forked later): the open waits for it, within bounds.

use std::os::fd::RawFd;
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
        if p.nspid <= 0 {
            return Err(format!(
                "pidfd of pid {}, which this engine cannot restore",
                p.nspid
            ));
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
