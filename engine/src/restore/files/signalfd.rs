//! signalfd: a new one reading the same signals.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;

pub struct Signalfd;

impl FdKind for Signalfd {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Signalfd
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.sgfd, "SIGNALFD")
    }

    fn source(
        &self,
        _imgs: &Images,
        _pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        Ok(Arc::new(mask_of(f)))
    }

    fn open_in_engine(
        &self,
        _imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        _pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        super::open_here(pid, &mask_of(f))
    }
}

fn mask_of(f: &pb::FileEntry) -> Mask {
    let s = f.sgfd.as_ref().expect("validated");
    Mask {
        mask: s.sigmask,
        flags: s.flags as i32,
    }
}

/// A signalfd reading the signals of `mask` (bit n-1 = signal n).
#[derive(Debug)]
struct Mask {
    mask: u64,
    flags: i32,
}

impl OpenFd for Mask {
    fn open(&self, _cx: &mut ChildFds) -> nix::Result<RawFd> {
        make_signalfd(self.mask, self.flags & libc::O_NONBLOCK)
    }

    fn describe(&self) -> String {
        format!("signalfd (mask {:#x})", self.mask)
    }
}

/// `flags`: O_NONBLOCK and O_CLOEXEC are taken.
pub fn make_signalfd(mask: u64, flags: i32) -> nix::Result<RawFd> {
    let m = mask;
    // SAFETY: signalfd4 reads 8 bytes of mask from `m`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &m as *const u64,
            8usize,
            flags & (libc::O_NONBLOCK | libc::O_CLOEXEC),
        )
    };
    Errno::result(fd).map(|fd| fd as RawFd)
}
