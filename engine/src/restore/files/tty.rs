//! Terminal files. A pty's master and slave files are made by the engine
//! (`restore/tty.rs`), as a task could not: the master must be the one of
//! the pty made with its state. A /dev/tty open is the task's own, once
//! its controlling terminal is set.

use std::sync::Arc;

use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::OpenFd;
use crate::restore::load::Images;
use crate::restore::tty::DevTty;

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
        imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let t = f.tty.as_ref().expect("validated");
        match imgs.tty_info.get(&t.tty_info_id) {
            Some(i) if i.r#type == pb::TtyType::Ctty as i32 => Ok(Arc::new(DevTty {
                flags: t.flags as i32,
            })),
            _ => Err(Error::task(
                pid,
                format!("fd {} (tty {})", fd.fd, t.tty_info_id),
                "the engine has not made this terminal file",
            )),
        }
    }
}
