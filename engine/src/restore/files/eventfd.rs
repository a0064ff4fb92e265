//! eventfd: a new one with the dumped counter and flags.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Eventfd;

impl FdKind for Eventfd {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Eventfd
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.efd, "EVENTFD")
    }

    fn source(
        &self,
        _imgs: &Images,
        _pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let e = f.efd.as_ref().expect("validated");
        Ok(Arc::new(Counter {
            counter: e.counter,
            flags: e.flags as i32,
        }))
    }

    fn open_in_engine(
        &self,
        _imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        _pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        let e = f.efd.as_ref().expect("validated");
        let fd = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::from_bits_retain(
                (e.flags as i32 & (libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE)) | libc::EFD_CLOEXEC,
            ),
        )
        .map_err(|err| Error::sys(pid, "eventfd", err))?;
        if e.counter != 0 {
            fd.write(e.counter)
                .map_err(|err| Error::sys(pid, "eventfd counter", err))?;
        }
        Ok(OwnedFd::from(fd))
    }
}

#[derive(Debug)]
struct Counter {
    counter: u64,
    flags: i32,
}

impl OpenFd for Counter {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        // SAFETY: eventfd and an 8-byte write on the fd we create.
        let fd = Errno::result(unsafe {
            libc::eventfd(0, self.flags & (libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE))
        })?;
        if self.counter != 0 {
            let v = self.counter.to_ne_bytes();
            Errno::result(unsafe { libc::write(fd, v.as_ptr().cast(), 8) })?;
        }
        Ok(fd)
    }

    fn describe(&self) -> String {
        "eventfd".into()
    }
}
