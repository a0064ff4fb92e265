//! epoll sets, rebuilt inside their task from its own fd numbers once
//! every other fd exists (the dump refuses a set shared between
//! processes, which could not be rebuilt there).
//!
//! A watched file that other processes share too (a pipe a parent passed
//! down: PostgreSQL's postmaster-death pipe) is in the task when it builds
//! its sets (taken over from the engine's fds it inherited), unless the
//! engine makes it only once the tree exists (`FdSource::Inject`): the
//! engine puts that in later (pidfd_getfd). The task leaves such files
//! out, and the engine adds them to the set with remote calls once they
//! are in place, under the same fd number.

use std::os::fd::RawFd;
use std::sync::Arc;

use nix::errno::Errno;

use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::restore::child::{ChildFds, ChildPlan, FdSource, OpenFd};
use crate::restore::load::{Images, TaskImages};

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
            // Not there yet: a shared file the engine injects later, and
            // adds to the set then (`watch_injected`).
            if nix::fcntl::fcntl(tfd, nix::fcntl::FcntlArg::F_GETFD) == Err(Errno::EBADF) {
                continue;
            }
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

/// `struct epoll_event` as the x86_64 kernel reads it: packed, 12 bytes.
fn epoll_event_bytes(events: u32, data: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&events.to_ne_bytes());
    b[4..].copy_from_slice(&data.to_ne_bytes());
    b
}

/// Adds to the task's epoll sets the watched files the engine has just
/// injected (the task left them out: they were not there yet). A set
/// watching an fd the task does not have at all is an error.
pub fn watch_injected(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    imgs: &Images,
    t: &TaskImages,
    plan: &ChildPlan,
) -> Result<()> {
    for f in &t.fdinfo {
        let file = imgs.file(f.id);
        if file.r#type != pb::FdTypes::Eventpoll as i32 {
            continue;
        }
        let Some(e) = file.epfd.as_ref() else {
            continue;
        };
        for tfd in &e.tfd {
            match plan.fds.iter().find(|p| p.fd == tfd.tfd as RawFd) {
                Some(p) if matches!(p.source, FdSource::Inject { .. }) => {}
                Some(_) => continue,
                None => {
                    return Err(Error::Task {
                        pid: t.pid,
                        what: format!("epoll set at fd {}", f.fd),
                        reason: format!(
                            "it watches fd {}, which the task does not have in the images",
                            tfd.tfd
                        ),
                    })
                }
            }
            mem.write(scratch, &epoll_event_bytes(tfd.events, tfd.data))?;
            r.call(
                libc::SYS_epoll_ctl,
                &[
                    f.fd as u64,
                    libc::EPOLL_CTL_ADD as u64,
                    tfd.tfd as u64,
                    scratch,
                ],
                &format!("epoll set at fd {}: adding shared fd {}", f.fd, tfd.tfd),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn epoll_event_is_packed_like_the_kernel_reads_it() {
        assert_eq!(std::mem::size_of::<libc::epoll_event>(), 12);
        assert_eq!(std::mem::offset_of!(libc::epoll_event, u64), 4);
        let b = super::epoll_event_bytes(0x8000_0019, 0x1122_3344_5566_7788);
        assert_eq!(b[..4], 0x8000_0019u32.to_ne_bytes());
        assert_eq!(b[4..], 0x1122_3344_5566_7788u64.to_ne_bytes());
    }
}
