//! File locks (filelocks.img, with `--file-locks`): each is taken again by
//! its task through the fd the dump names, non-blocking, after every fd
//! exists and the engine's helper fds are closed (closing any fd of an
//! inode drops the process's POSIX locks on it), before a seccomp filter
//! could refuse the calls. flock and OFD locks belong to the open file
//! description, so every fd and task sharing it holds them again.

use super::load::Images;
use super::stage::{Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::error::Result;
use crate::images::pb;

const FL_POSIX: u32 = 1;
const FL_FLOCK: u32 = 2;
const FL_OFD: u32 = 4;

fn validate(imgs: &Images) -> Result<()> {
    for (i, l) in imgs.file_locks.iter().enumerate() {
        let bad = |why: String| imgs.bad("filelocks.img", format!("lock {i}: {why}"));
        if ![FL_POSIX, FL_FLOCK, FL_OFD].contains(&l.flag) {
            return Err(bad(format!("unknown kind {:#x}", l.flag)));
        }
        if l.r#type != libc::F_RDLCK as u32 && l.r#type != libc::F_WRLCK as u32 {
            return Err(bad(format!("unknown type {}", l.r#type)));
        }
        if l.start < 0 || l.len < 0 || (l.flag == FL_FLOCK && (l.start != 0 || l.len != 0)) {
            return Err(bad(format!("bad range {} + {}", l.start, l.len)));
        }
        let Some(t) = imgs.tasks.iter().find(|t| t.pid == l.pid) else {
            return Err(bad(format!(
                "pid {} is not a live task of the image",
                l.pid
            )));
        };
        if !t.fdinfo.iter().any(|f| f.fd as i32 == l.fd) {
            return Err(bad(format!("pid {} has no fd {}", l.pid, l.fd)));
        }
    }
    Ok(())
}

pub const KIND: Kind = Kind {
    name: "file locks",
    validate,
    new: |imgs: &Images, opts: &RestoreOptions| {
        if !opts.file_locks && !imgs.file_locks.is_empty() {
            return Err(imgs.bad(
                "filelocks.img",
                format!(
                    "the tree held {} file lock(s); restore with --file-locks to take them again",
                    imgs.file_locks.len()
                ),
            ));
        }
        Ok(Box::new(FileLocks))
    },
};

struct FileLocks;

impl Restorer for FileLocks {
    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        if stage != TaskStage::Limits {
            return Ok(());
        }
        let pid = cx.pid();
        let mine: Vec<&pb::FileLockEntry> =
            cx.imgs.file_locks.iter().filter(|l| l.pid == pid).collect();
        if mine.is_empty() {
            return Ok(());
        }
        cx.in_leader(|r, mem, scratch| {
            for l in mine {
                let write = l.r#type == libc::F_WRLCK as u32;
                let what = format!(
                    "fd {}: taking its {} {} lock on [{}, {}) again",
                    l.fd,
                    match l.flag {
                        FL_POSIX => "POSIX",
                        FL_FLOCK => "flock",
                        _ => "OFD",
                    },
                    if write { "write" } else { "read" },
                    l.start,
                    if l.len == 0 {
                        "EOF".to_string()
                    } else {
                        (l.start + l.len).to_string()
                    }
                );
                if l.flag == FL_FLOCK {
                    let op = if write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
                    r.call(libc::SYS_flock, &[l.fd as u64, op as u64], &what)?;
                    continue;
                }
                // struct flock: l_type, l_whence (shorts), l_start, l_len
                // (at 8 and 16), l_pid (0: OFD locks require it).
                let mut b = [0u8; 32];
                b[0..2].copy_from_slice(&(l.r#type as i16).to_ne_bytes());
                b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
                b[8..16].copy_from_slice(&l.start.to_ne_bytes());
                b[16..24].copy_from_slice(&l.len.to_ne_bytes());
                mem.write(scratch, &b)?;
                let cmd = if l.flag == FL_POSIX {
                    libc::F_SETLK
                } else {
                    libc::F_OFD_SETLK
                };
                r.call(libc::SYS_fcntl, &[l.fd as u64, cmd as u64, scratch], &what)?;
            }
            Ok(())
        })
    }
}
