//! epoll sets, rebuilt inside their task from its own fd numbers once
//! every other fd exists (the dump refuses a set shared between
//! processes, which could not be rebuilt there).

use std::os::fd::RawFd;
use std::sync::Arc;

use nix::errno::Errno;

use super::FdKind;
use crate::error::{Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Epoll;

impl FdKind for Epoll {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Eventpoll
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.epfd, "EVENTPOLL")
    }

    fn source(
        &self,
        _imgs: &Images,
        _pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let e = f.epfd.as_ref().expect("validated");
        Ok(Arc::new(Set {
            targets: e
                .tfd
                .iter()
                .map(|t| (t.tfd as RawFd, t.events, t.data))
                .collect(),
        }))
    }
}

/// (fd, events, data) of every watched file.
#[derive(Debug)]
struct Set {
    targets: Vec<(RawFd, u32, u64)>,
}

impl OpenFd for Set {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        // SAFETY: epoll calls on the fd we create, with a valid event.
        let fd = Errno::result(unsafe { libc::epoll_create1(0) })?;
        for &(tfd, events, data) in &self.targets {
            let mut ev = libc::epoll_event { events, u64: data };
            Errno::result(unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, tfd, &mut ev) })?;
        }
        Ok(fd)
    }

    fn describe(&self) -> String {
        "epoll".into()
    }

    fn after_others(&self) -> bool {
        true
    }
}
