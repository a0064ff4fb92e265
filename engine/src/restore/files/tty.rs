//! Terminal files: every one is made by the engine (`restore/tty.rs`), as
//! a task could not: a master must be the one of the pty made with its
//! state, a /dev/tty open may be shared.

use std::sync::Arc;

use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::OpenFd;
use crate::restore::load::Images;

pub struct Tty;

impl FdKind for Tty {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Tty
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        super::need_part(&f.tty, "TTY")
    }

    fn source(
        &self,
        _imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let t = f.tty.as_ref().expect("validated");
        Err(Error::task(
            pid,
            format!("fd {} (tty {})", fd.fd, t.tty_info_id),
            "the engine has not made this terminal file",
        ))
    }
}
