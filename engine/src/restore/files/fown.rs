//! Owners and signals of open files (F_SETOWN_EX, F_SETSIG) and O_ASYNC,
//! for every kind at once.
//!
//! O_ASYNC is set by the task itself on its own fd, once its fds are all
//! there: the kernel notes the fd number it was set through and gives it
//! as the signal's si_fd.
//!
//! Owners are set once every task of the tree is ready: an owner may be
//! any thread of the tree, which exists only then. The engine sets them on
//! its own copy of each fd (the owner belongs to the open file
//! description), so a task's seccomp filter or credentials do not matter.
//!
//! The kernel records who set the owner (for the permission check of the
//! signal); here that is the engine, which may signal anyone, so the
//! dumped uid and euid are kept in the image but not enforced.

use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::images::{fown, pb};
use crate::ptrace::remote::Remote;
use crate::restore::load::{Images, TaskImages};

/// The owner and open flags of file `f`, where its kind keeps them (a
/// FIFO in its REG entry).
fn of(imgs: &Images, f: &pb::FileEntry) -> (Option<pb::FownEntry>, Option<u32>) {
    let f = match f.fifo.as_ref().and_then(|x| x.regf_id) {
        Some(regf) => imgs.files.get(&regf).unwrap_or(f),
        None => f,
    };
    (fown::fown(f).cloned(), fown::status_flags(f))
}

/// Why an owner cannot be restored, for `validate`.
pub(super) fn check(imgs: &Images, f: &pb::FileEntry) -> std::result::Result<(), String> {
    let (Some(o), _) = of(imgs, f) else {
        return Ok(());
    };
    if o.pid != 0
        && !matches!(
            o.pid_type,
            fown::OWNER_TID | fown::OWNER_PID | fown::OWNER_PGRP
        )
    {
        return Err(format!("owner {} of unknown type {}", o.pid, o.pid_type));
    }
    if o.signum > 64 {
        return Err(format!("owner signal {} is not a signal", o.signum));
    }
    Ok(())
}

/// Sets every owner and signal of the tree's fds.
pub(super) fn restore_all(imgs: &Images) -> Result<()> {
    for t in &imgs.tasks {
        for fd in &t.fdinfo {
            let f = imgs.file(fd.id);
            let Some(o) = of(imgs, f).0.filter(fown::is_set) else {
                continue;
            };
            let what = |s: &str| format!("fd {}: {s}", fd.fd);
            let copy = crate::sys::take_fd(t.pid, fd.fd as i32)
                .map_err(|e| Error::sys(t.pid, what("a copy to set its owner"), e))?;
            crate::sys::fown::set(
                copy.as_raw_fd(),
                o.pid_type as i32,
                o.pid as i32,
                o.signum as i32,
            )
            .map_err(|e| Error::sys(t.pid, what(&format!("owner ({})", fown::describe(&o))), e))?;
        }
    }
    Ok(())
}

/// O_ASYNC on every fd of the task that had it, through F_SETFL, which
/// alone arms the signal: a file opened with O_ASYNC among its open flags
/// has the flag but no signal, so it is cleared first.
pub(super) fn set_async(r: &mut Remote<'_>, imgs: &Images, t: &TaskImages) -> Result<()> {
    for fd in &t.fdinfo {
        let (_, flags) = of(imgs, imgs.file(fd.id));
        if flags.is_none_or(|fl| fl & libc::O_ASYNC as u32 == 0) {
            continue;
        }
        let n = fd.fd as u64;
        let fl = r.call(
            libc::SYS_fcntl,
            &[n, libc::F_GETFL as u64],
            &format!("fd {}: F_GETFL", fd.fd),
        )?;
        let async_io = libc::O_ASYNC as u64;
        for v in [fl & !async_io, fl | async_io] {
            r.call(
                libc::SYS_fcntl,
                &[n, libc::F_SETFL as u64, v],
                &format!("fd {}: F_SETFL with O_ASYNC", fd.fd),
            )?;
        }
    }
    Ok(())
}
