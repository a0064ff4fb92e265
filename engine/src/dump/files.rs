//! File descriptors, cwd and root of a task: fdinfo-ID.img, files.img and
//! fs-PID.img.
//!
//! Descriptors that share one open file description (dup, dup2, fork) are
//! found with kcmp(KCMP_FILE) and stored once, so the restore can share the
//! description again (shared offset, shared flags).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::fdinfo;

pub const FD_CLOEXEC_FLAG: u32 = libc::FD_CLOEXEC as u32;

/// files.img under construction, shared by all tasks of a dump.
#[derive(Default)]
pub struct FileTable {
    pub entries: Vec<pb::FileEntry>,
    next_id: u32,
}

impl FileTable {
    pub fn next_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// A regular file, directory or device opened by path.
    pub fn add_reg(
        &mut self,
        name: &[u8],
        flags: u32,
        pos: u64,
        meta: Option<&std::fs::Metadata>,
    ) -> u32 {
        let id = self.next_id();
        let (size, mode) = match meta {
            Some(m) => ((m.file_type().is_file()).then(|| m.size()), Some(m.mode())),
            None => (None, None),
        };
        self.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Reg as i32,
            id,
            reg: Some(pb::RegFileEntry {
                id,
                flags,
                pos,
                fown: pb::FownEntry::default(),
                name: String::from_utf8_lossy(name).into_owned(),
                mnt_id: None,
                size,
                ext: None,
                mode,
                build_id: vec![],
                checksum: None,
                checksum_config: None,
                checksum_parameter: None,
            }),
            ..Default::default()
        });
        id
    }
}

fn kcmp_file(pid: Pid, fd1: i32, fd2: i32) -> Option<i32> {
    const KCMP_FILE: i32 = 0;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2) };
    (r >= 0).then_some(r as i32)
}

/// What kind of object an fd link names, for the error message when it is
/// not supported yet.
fn unsupported_kind(link: &[u8]) -> Option<&'static str> {
    let s = String::from_utf8_lossy(link);
    if s.starts_with("pipe:") {
        Some("pipes")
    } else if s.starts_with("socket:") {
        Some("sockets")
    } else if s.starts_with("anon_inode:") {
        Some("anonymous-inode files (eventfd, epoll, signalfd, timerfd, ...)")
    } else if s.starts_with('/') {
        None
    } else {
        Some("this kind of file")
    }
}

/// Dump the fds of `pid`: returns fdinfo entries and adds files to `table`.
pub fn dump_fds(pid: Pid, table: &mut FileTable) -> Result<Vec<pb::FdinfoEntry>> {
    let fds = fdinfo::list_fds(pid)?;
    let mut out: Vec<pb::FdinfoEntry> = Vec::new();
    for fd in fds {
        let info = fdinfo::read_fdinfo(pid, fd)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let fd_flags = if cloexec { FD_CLOEXEC_FLAG } else { 0 };
        // Same open file description as an fd we already have?
        if let Some(prev) = out
            .iter()
            .find(|e| kcmp_file(pid, e.fd as i32, fd) == Some(0))
        {
            let id = prev.id;
            out.push(pb::FdinfoEntry {
                id,
                flags: fd_flags,
                r#type: pb::FdTypes::Reg as i32,
                fd: fd as u32,
                xattr_security_selinux: None,
            });
            continue;
        }
        let link: OsString = fdinfo::read_fd_link(pid, fd)?;
        let link = link.as_bytes();
        if let Some(kind) = unsupported_kind(link) {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} ({})", String::from_utf8_lossy(link)),
                format!("{kind} are not supported yet"),
            ));
        }
        let proc_path = format!("/proc/{pid}/fd/{fd}");
        let meta = std::fs::metadata(&proc_path)
            .map_err(|e| Error::io(&proc_path, format!("pid {pid}: fd {fd}: stat"), e))?;
        if meta.nlink() == 0 || link.ends_with(b" (deleted)") {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} ({})", String::from_utf8_lossy(link)),
                "open files that were unlinked are not supported yet",
            ));
        }
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        let id = table.add_reg(link, flags, info.pos, Some(&meta));
        out.push(pb::FdinfoEntry {
            id,
            flags: fd_flags,
            r#type: pb::FdTypes::Reg as i32,
            fd: fd as u32,
            xattr_security_selinux: None,
        });
    }
    Ok(out)
}

fn read_link(pid: Pid, name: &str) -> Result<Vec<u8>> {
    let p = format!("/proc/{pid}/{name}");
    std::fs::read_link(&p)
        .map(|l| l.as_os_str().as_bytes().to_vec())
        .map_err(|e| Error::io(&p, format!("pid {pid}: readlink {name}"), e))
}

/// cwd, root and umask: fs-PID.img.
pub fn dump_fs(pid: Pid, umask: u32, table: &mut FileTable) -> Result<pb::FsEntry> {
    let cwd = read_link(pid, "cwd")?;
    let root = read_link(pid, "root")?;
    for (what, p) in [("cwd", &cwd), ("root", &root)] {
        if p.ends_with(b" (deleted)") {
            return Err(Error::unsupported(
                pid,
                format!("{what} {}", String::from_utf8_lossy(p)),
                "a deleted working or root directory cannot be restored",
            ));
        }
    }
    let dir_flags = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;
    let cwd_id = table.add_reg(&cwd, dir_flags, 0, None);
    let root_id = table.add_reg(&root, dir_flags, 0, None);
    Ok(pb::FsEntry {
        cwd_id,
        root_id,
        umask: Some(umask),
    })
}

/// The executable, /proc/PID/exe, as a file entry for MmEntry.exe_file_id.
pub fn dump_exe(pid: Pid, table: &mut FileTable) -> Result<u32> {
    let exe = read_link(pid, "exe")?;
    if exe.ends_with(b" (deleted)") {
        return Err(Error::unsupported(
            pid,
            format!("exe {}", String::from_utf8_lossy(&exe)),
            "the executable was deleted; unlinked files are not supported yet",
        ));
    }
    Ok(table.add_reg(&exe, libc::O_RDONLY as u32, 0, None))
}

/// A file behind a mapping (read through /proc/PID/map_files, which names
/// exactly the mapped file even when the maps line is ambiguous).
pub fn dump_mapped_file(
    pid: Pid,
    start: u64,
    end: u64,
    flags: u32,
    table: &mut FileTable,
) -> Result<u32> {
    let name = format!("map_files/{start:x}-{end:x}");
    let link = read_link(pid, &name)?;
    if link.ends_with(b" (deleted)") {
        return Err(Error::unsupported(
            pid,
            format!(
                "mapping {start:#x}-{end:#x} of {}",
                String::from_utf8_lossy(&link)
            ),
            "mappings of unlinked files are not supported yet",
        ));
    }
    let p = format!("/proc/{pid}/{name}");
    let meta = std::fs::metadata(&p).ok();
    Ok(table.add_reg(&link, flags, 0, meta.as_ref()))
}
