//! File locks (with `--file-locks`, CRIU's option): flock, POSIX (fcntl)
//! and OFD locks held by the tree, from the `lock:` lines of each fd's
//! fdinfo, into filelocks.img.
//!
//! fdinfo lists, for one fd, the flock and OFD locks its open file
//! description owns and the POSIX locks its process owns on that inode.
//! So an flock or OFD lock is taken from the first fd of its description
//! (the restore takes it again through that fd, for every fd sharing the
//! description), a POSIX lock from the first fd of its process that can
//! take it again (open for reading for a read lock, for writing for a
//! write lock). A task blocked waiting for a lock is no holder: the freeze
//! interrupts its request, which the restored task makes again.
//!
//! Without the option a lock is refused: a restore without it would let
//! another process take what the tree believes it holds.

use super::FileTable;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::fdinfo;

pub const FL_POSIX: u32 = 1;
pub const FL_FLOCK: u32 = 2;
pub const FL_OFD: u32 = 4;

#[derive(Default)]
pub struct LockTable {
    /// `--file-locks`.
    pub enabled: bool,
    pub entries: Vec<pb::FileLockEntry>,
    /// POSIX locks taken already, by (pid, lock).
    posix_done: std::collections::BTreeSet<(Pid, Lock)>,
    /// POSIX locks no fd of their task could take yet, with the fd they
    /// were seen on.
    pending: std::collections::BTreeMap<(Pid, Lock), i32>,
}

/// One `lock:` line: "1: POSIX  ADVISORY  WRITE 5348 fe:00:123 0 EOF".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lock {
    pub flag: u32,
    /// F_RDLCK or F_WRLCK.
    pub r#type: u32,
    pub inode: String,
    pub start: i64,
    /// 0: to the end of the file.
    pub len: i64,
}

/// Parses a `lock:` value; Err names what cannot be restored.
pub fn parse(line: &str) -> std::result::Result<Lock, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.len() != 8 {
        return Err(format!("unexpected lock line {line:?}"));
    }
    let flag = match w[1] {
        "POSIX" => FL_POSIX,
        "FLOCK" => FL_FLOCK,
        "OFDLCK" => FL_OFD,
        "LEASE" | "DELEG" | "BREAKING" => {
            return Err(format!("a file lease ({line}) cannot be checkpointed"))
        }
        k => {
            return Err(format!(
                "a lock of kind {k} ({line}) cannot be checkpointed"
            ))
        }
    };
    if w[2] != "ADVISORY" {
        return Err(format!("a {} lock ({line}) cannot be checkpointed", w[2]));
    }
    let r#type = match w[3] {
        "READ" => libc::F_RDLCK as u32,
        "WRITE" => libc::F_WRLCK as u32,
        t => {
            return Err(format!(
                "a lock of type {t} ({line}) cannot be checkpointed"
            ))
        }
    };
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("bad number {s:?} in lock line {line:?}"))
    };
    let start = num(w[6])?;
    let len = match w[7] {
        "EOF" => 0,
        end => num(end)? - start + 1,
    };
    if start < 0 || len < 0 {
        return Err(format!("bad range in lock line {line:?}"));
    }
    Ok(Lock {
        flag,
        r#type,
        inode: w[5].to_string(),
        start,
        len,
    })
}

/// The locks fd `fd` of `pid` shows. `new_file`: the first fd of its open
/// file description in the tree.
pub fn note(
    pid: Pid,
    fd: i32,
    info: &fdinfo::FdInfo,
    new_file: bool,
    table: &mut FileTable,
) -> Result<()> {
    let lines: Vec<&str> = info.get_all("lock").collect();
    if lines.is_empty() {
        return Ok(());
    }
    let what = || {
        let link = fdinfo::read_fd_link(pid, fd).unwrap_or_default();
        format!("fd {fd} ({})", link.to_string_lossy())
    };
    if !table.locks.enabled {
        let lock = lines[0].split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(Error::unsupported(
            pid,
            what(),
            format!("it holds a file lock ({lock}); file locks are not supported yet without --file-locks"),
        ));
    }
    let acc = info.flags as i32 & libc::O_ACCMODE;
    for line in lines {
        let l = parse(line).map_err(|why| Error::unsupported(pid, what(), why))?;
        match l.flag {
            FL_POSIX => {
                let key = (pid, l);
                if table.locks.posix_done.contains(&key) {
                    continue;
                }
                let can = if key.1.r#type == libc::F_WRLCK as u32 {
                    acc != libc::O_RDONLY
                } else {
                    acc != libc::O_WRONLY
                };
                if can {
                    table.locks.pending.remove(&key);
                    table.locks.entries.push(entry(&key.1, table.vpid(pid), fd));
                    table.locks.posix_done.insert(key);
                } else {
                    table.locks.pending.entry(key).or_insert(fd);
                }
            }
            _ if new_file => table.locks.entries.push(entry(&l, table.vpid(pid), fd)),
            _ => {}
        }
    }
    Ok(())
}

/// Once every fd of `pid` is seen: a POSIX lock no fd of it can take again
/// is refused.
pub fn check_task(pid: Pid, table: &FileTable) -> Result<()> {
    match table.locks.pending.iter().find(|((p, _), _)| *p == pid) {
        None => Ok(()),
        Some(((_, l), fd)) => Err(Error::unsupported(
            pid,
            format!("fd {fd}"),
            format!(
                "its process holds a POSIX {} lock on inode {} but has no fd open {} it, so the lock cannot be taken again",
                if l.r#type == libc::F_WRLCK as u32 { "write" } else { "read" },
                l.inode,
                if l.r#type == libc::F_WRLCK as u32 { "for writing to" } else { "for reading from" },
            ),
        )),
    }
}

fn entry(l: &Lock, pid: Pid, fd: i32) -> pb::FileLockEntry {
    pb::FileLockEntry {
        flag: l.flag,
        r#type: l.r#type,
        pid,
        fd,
        start: l.start,
        len: l.len,
    }
}

/// filelocks.img, if the tree holds any lock.
pub fn finish(table: &FileTable, dir: &crate::imgdir::ImageDir) -> Result<()> {
    if table.locks.entries.is_empty() {
        return Ok(());
    }
    dir.write_image("filelocks.img", &table.locks.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines() {
        assert_eq!(
            parse("1: POSIX  ADVISORY  WRITE 5348 fe:00:123 10 19"),
            Ok(Lock {
                flag: FL_POSIX,
                r#type: libc::F_WRLCK as u32,
                inode: "fe:00:123".into(),
                start: 10,
                len: 10
            })
        );
        let f = parse("2: FLOCK  ADVISORY  READ 77 00:2a:9 0 EOF").unwrap();
        assert_eq!(
            (f.flag, f.r#type, f.len),
            (FL_FLOCK, libc::F_RDLCK as u32, 0)
        );
        assert_eq!(
            parse("3: OFDLCK ADVISORY  READ -1 00:2a:9 0 9")
                .unwrap()
                .flag,
            FL_OFD
        );
        assert!(parse("4: LEASE  ACTIVE    READ 5 00:2a:9 0 EOF").is_err());
        assert!(parse("5: POSIX  ADVISORY  WRITE 5").is_err());
    }
}
