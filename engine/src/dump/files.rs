//! File descriptors, cwd and root of a task: fdinfo-ID.img, files.img and
//! fs-PID.img.
//!
//! Descriptors that share one open file description (dup, dup2, fork) are
//! found with kcmp(KCMP_FILE) and stored once, so the restore can share the
//! description again (shared offset, shared flags).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::fdinfo;

pub const FD_CLOEXEC_FLAG: u32 = libc::FD_CLOEXEC as u32;

/// files.img under construction, shared by all tasks of a dump.
#[derive(Default)]
pub struct FileTable {
    pub entries: Vec<pb::FileEntry>,
    /// Buffered data of every pipe, by pipe id: (pipe size, bytes).
    pub pipe_data: std::collections::BTreeMap<u64, (u32, Vec<u8>)>,
    /// (pid, fd, file id, type) of every fd of the tasks dumped so far, to
    /// find open files shared between processes.
    pub seen: Vec<(Pid, i32, u32, i32)>,
    /// memfd objects (dump/memfd.rs).
    pub memfd: super::memfd::MemfdTable,
    /// Unlinked files (dump/ghost.rs).
    pub ghost: super::ghost::GhostTable,
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

/// 0 when fd1 of pid1 and fd2 of pid2 are the same open file description.
fn kcmp_file(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Option<i32> {
    const KCMP_FILE: i32 = 0;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    (r >= 0).then_some(r as i32)
}

/// What an fd's /proc link names.
#[derive(Debug, PartialEq, Eq)]
enum FdKind<'a> {
    Path,
    Pipe(u64),
    AnonInode(&'a str),
    Other(&'a str),
}

fn fd_kind(link: &[u8]) -> FdKind<'_> {
    let s = std::str::from_utf8(link).unwrap_or("");
    if link.starts_with(b"/") {
        FdKind::Path
    } else if let Some(ino) = s
        .strip_prefix("pipe:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
    {
        FdKind::Pipe(ino)
    } else if let Some(name) = s.strip_prefix("anon_inode:") {
        FdKind::AnonInode(name)
    } else {
        FdKind::Other(s)
    }
}

fn unsupported_fd(pid: Pid, fd: i32, link: &[u8], what: &str) -> Error {
    Error::unsupported(
        pid,
        format!("fd {fd} ({})", String::from_utf8_lossy(link)),
        format!("{what} are not supported yet"),
    )
}

/// Dump the fds of `pid`: returns fdinfo entries and adds files to `table`.
pub fn dump_fds(pid: Pid, table: &mut FileTable) -> Result<Vec<pb::FdinfoEntry>> {
    let fds = fdinfo::list_fds(pid)?;
    let mut out: Vec<pb::FdinfoEntry> = Vec::new();
    for fd in fds {
        let info = fdinfo::read_fdinfo(pid, fd)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let fd_flags = if cloexec { FD_CLOEXEC_FLAG } else { 0 };
        // Same open file description as an fd we already have, here or in
        // a task dumped before (inherited across fork)?
        let same = out
            .iter()
            .find(|e| kcmp_file(pid, e.fd as i32, pid, fd) == Some(0))
            .map(|e| (e.id, e.r#type))
            .or_else(|| {
                table
                    .seen
                    .iter()
                    .find(|s| kcmp_file(s.0, s.1, pid, fd) == Some(0))
                    .map(|s| (s.2, s.3))
            });
        if let Some((id, r#type)) = same {
            out.push(pb::FdinfoEntry {
                id,
                flags: fd_flags,
                r#type,
                fd: fd as u32,
                xattr_security_selinux: None,
            });
            continue;
        }
        let link: OsString = fdinfo::read_fd_link(pid, fd)?;
        let link = link.as_bytes();
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        let (ftype, id) = match fd_kind(link) {
            FdKind::Path => dump_path_fd(pid, fd, link, flags, &info, table)?,
            FdKind::Pipe(ino) => (pb::FdTypes::Pipe, dump_pipe(pid, fd, ino, flags, table)?),
            FdKind::AnonInode("[eventfd]") => {
                let counter =
                    fdinfo_field(pid, fd, "eventfd", "eventfd-count", info.eventfd_count())?;
                let id = table.next_id();
                table.entries.push(pb::FileEntry {
                    r#type: pb::FdTypes::Eventfd as i32,
                    id,
                    efd: Some(pb::EventfdFileEntry {
                        id,
                        flags,
                        fown: pb::FownEntry::default(),
                        counter,
                    }),
                    ..Default::default()
                });
                (pb::FdTypes::Eventfd, id)
            }
            FdKind::AnonInode("[eventpoll]") => {
                let targets = info.epoll_targets().map_err(|e| {
                    Error::task(pid, format!("fd {fd} (epoll)"), format!("fdinfo: {e}"))
                })?;
                let id = table.next_id();
                let tfd = targets
                    .iter()
                    .map(|t| pb::EventpollTfdEntry {
                        id,
                        tfd: t.tfd as u32,
                        events: t.events,
                        data: t.data,
                        dev: Some(t.sdev),
                        inode: Some(t.ino),
                        pos: Some(t.pos),
                    })
                    .collect();
                table.entries.push(pb::FileEntry {
                    r#type: pb::FdTypes::Eventpoll as i32,
                    id,
                    epfd: Some(pb::EventpollFileEntry {
                        id,
                        flags,
                        fown: pb::FownEntry::default(),
                        tfd,
                    }),
                    ..Default::default()
                });
                (pb::FdTypes::Eventpoll, id)
            }
            FdKind::AnonInode("[signalfd]") => (
                pb::FdTypes::Signalfd,
                dump_signalfd(pid, fd, flags, &info, table)?,
            ),
            FdKind::AnonInode("[timerfd]") => {
                (pb::FdTypes::Timerfd, dump_timerfd(pid, fd, flags, table)?)
            }
            FdKind::AnonInode(name) => {
                return Err(unsupported_fd(
                    pid,
                    fd,
                    link,
                    &format!("{name} descriptors"),
                ))
            }
            FdKind::Other(s) if s.starts_with("socket:") => {
                return Err(unsupported_fd(pid, fd, link, "sockets"))
            }
            FdKind::Other(_) => return Err(unsupported_fd(pid, fd, link, "files of this kind")),
        };
        out.push(pb::FdinfoEntry {
            id,
            flags: fd_flags,
            r#type: ftype as i32,
            fd: fd as u32,
            xattr_security_selinux: None,
        });
    }
    table
        .seen
        .extend(out.iter().map(|e| (pid, e.fd as i32, e.id, e.r#type)));
    // The restore re-adds epoll targets by fd number: each must still be
    // open at that number.
    for f in table.entries.iter().filter_map(|e| e.epfd.as_ref()) {
        for t in &f.tfd {
            if !out.iter().any(|e| e.fd == t.tfd) {
                return Err(Error::unsupported(
                    pid,
                    format!("epoll target fd {}", t.tfd),
                    "the epoll set watches a file that is no longer open at that fd",
                ));
            }
        }
    }
    Ok(out)
}

/// A decoded fdinfo field, or an error naming the fd and what is missing.
fn fdinfo_field<T>(
    pid: Pid,
    fd: i32,
    kind: &str,
    field: &str,
    v: Option<std::result::Result<T, String>>,
) -> Result<T> {
    match v {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Error::task(
            pid,
            format!("fd {fd} ({kind})"),
            format!("fdinfo: {e}"),
        )),
        None => Err(Error::task(
            pid,
            format!("fd {fd} ({kind})"),
            format!("no {field} in fdinfo"),
        )),
    }
}

// signalfd and timerfd, from their fdinfo.

fn dump_signalfd(
    pid: Pid,
    fd: i32,
    flags: u32,
    info: &fdinfo::FdInfo,
    table: &mut FileTable,
) -> Result<u32> {
    let sigmask = fdinfo_field(pid, fd, "signalfd", "sigmask", info.signalfd_sigmask())?;
    let id = table.next_id();
    table.entries.push(pb::FileEntry {
        r#type: pb::FdTypes::Signalfd as i32,
        id,
        sgfd: Some(pb::SignalfdEntry {
            id,
            flags,
            fown: pb::FownEntry::default(),
            sigmask,
        }),
        ..Default::default()
    });
    Ok(id)
}

fn dump_timerfd(pid: Pid, fd: i32, flags: u32, table: &mut FileTable) -> Result<u32> {
    // An expired periodic timerfd is only moved on (its ticks counted, the
    // timer re-armed) when it is read or asked: fdinfo would show it
    // disarmed. Ask it (timerfd_gettime on a copy of the fd, which is what
    // the task's own timerfd_gettime would do), then read fdinfo again.
    refresh_timerfd(pid, fd)?;
    let info = &fdinfo::read_fdinfo(pid, fd)?;
    let t = fdinfo_field(pid, fd, "timerfd", "clockid", info.timerfd())?;
    let id = table.next_id();
    table.entries.push(pb::FileEntry {
        r#type: pb::FdTypes::Timerfd as i32,
        id,
        tfd: Some(pb::TimerfdEntry {
            id,
            flags,
            fown: pb::FownEntry::default(),
            clockid: t.clockid as u32,
            ticks: t.ticks,
            settime_flags: t.settime_flags,
            vsec: t.it_value.0,
            vnsec: t.it_value.1,
            isec: t.it_interval.0,
            insec: t.it_interval.1,
            ckpt_clock_now: crate::kernel::clock::clock_now_ns(t.clockid),
            ckpt_boot_id: crate::proc::boot_id::boot_id(),
        }),
        ..Default::default()
    });
    Ok(id)
}
/// timerfd_gettime on fd `fd` of `pid` (through pidfd_getfd).
fn refresh_timerfd(pid: Pid, fd: i32) -> Result<()> {
    use std::os::fd::AsRawFd;
    let what = || format!("fd {fd} (timerfd)");
    let copy = crate::sys::take_fd(pid, fd)
        .map_err(|e| Error::sys(pid, format!("{}: pidfd_getfd", what()), e))?;
    // SAFETY: timerfd_gettime writes one itimerspec into `its`.
    let r = unsafe {
        let mut its: libc::itimerspec = std::mem::zeroed();
        libc::timerfd_gettime(copy.as_raw_fd(), &mut its)
    };
    if r < 0 {
        return Err(Error::sys(
            pid,
            format!("{}: timerfd_gettime", what()),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// A regular file, directory or device (or a memfd, or an unlinked file).
fn dump_path_fd(
    pid: Pid,
    fd: i32,
    link: &[u8],
    flags: u32,
    info: &fdinfo::FdInfo,
    table: &mut FileTable,
) -> Result<(pb::FdTypes, u32)> {
    let proc_path = format!("/proc/{pid}/fd/{fd}");
    let meta = std::fs::metadata(&proc_path)
        .map_err(|e| Error::io(&proc_path, format!("pid {pid}: fd {fd}: stat"), e))?;
    // memfd objects and unlinked files (dump/memfd.rs, dump/ghost.rs).
    let what = format!("fd {fd}");
    if super::memfd::is_memfd(pid, &what, &proc_path, link, &meta)? {
        let id = table.add_memfd(pid, &what, &proc_path, link, &meta, flags, Some(info.pos))?;
        return Ok((pb::FdTypes::Memfd, id));
    }
    if super::ghost::is_ghost(&meta) {
        let id = table.add_ghost(pid, &what, &proc_path, link, &meta, flags, Some(info.pos))?;
        return Ok((pb::FdTypes::Reg, id));
    }
    if meta.nlink() == 0 || link.ends_with(b" (deleted)") {
        return Err(unsupported_fd(
            pid,
            fd,
            link,
            "unlinked files other than regular files, and deleted files still linked elsewhere,",
        ));
    }
    if meta.file_type().is_fifo() {
        return Err(unsupported_fd(pid, fd, link, "named pipes (FIFOs)"));
    }
    if meta.file_type().is_socket() {
        return Err(unsupported_fd(pid, fd, link, "sockets"));
    }
    Ok((
        pb::FdTypes::Reg,
        table.add_reg(link, flags, info.pos, Some(&meta)),
    ))
}

/// One end of a pipe. Both ends get the same pipe_id (the pipe's inode);
/// the buffered data is read once per pipe, without consuming it.
fn dump_pipe(pid: Pid, fd: i32, ino: u64, flags: u32, table: &mut FileTable) -> Result<u32> {
    let id = table.next_id();
    table.entries.push(pb::FileEntry {
        r#type: pb::FdTypes::Pipe as i32,
        id,
        pipe: Some(pb::PipeEntry {
            id,
            pipe_id: ino as u32,
            flags,
            fown: pb::FownEntry::default(),
        }),
        ..Default::default()
    });
    if let std::collections::btree_map::Entry::Vacant(e) = table.pipe_data.entry(ino) {
        e.insert(peek_pipe(pid, fd)?);
    }
    Ok(id)
}

/// (pipe size, buffered bytes) of the pipe behind `fd` of `pid`: a second
/// reader opened through /proc, and tee(2) into a pipe of ours, which
/// copies the data without taking it from the task's pipe.
fn peek_pipe(pid: Pid, fd: i32) -> Result<(u32, Vec<u8>)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let path = format!("/proc/{pid}/fd/{fd}");
    let what = || format!("fd {fd} (pipe)");
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| {
            Error::io(
                &path,
                format!("pid {pid}: {}: opening a second reader", what()),
                e,
            )
        })?;
    let last = nix::errno::Errno::last;
    // SAFETY: fcntl, pipe2, tee and read on fds we own, into a buffer of
    // the length we pass.
    unsafe {
        let size = libc::fcntl(src.as_raw_fd(), libc::F_GETPIPE_SZ);
        let mut p = [0i32; 2];
        if size < 0 || libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) < 0 {
            return Err(Error::sys(pid, what(), last()));
        }
        let (rd, wr) = (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]));
        libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        let n = libc::tee(
            src.as_raw_fd(),
            wr.as_raw_fd(),
            size as usize,
            libc::SPLICE_F_NONBLOCK,
        );
        if n < 0 && last() != nix::errno::Errno::EAGAIN {
            return Err(Error::sys(
                pid,
                format!("{}: tee of its data", what()),
                last(),
            ));
        }
        let mut data = vec![0u8; n.max(0) as usize];
        let mut got = 0usize;
        while got < data.len() {
            let r = libc::read(
                rd.as_raw_fd(),
                data[got..].as_mut_ptr().cast(),
                data.len() - got,
            );
            if r <= 0 {
                return Err(Error::sys(
                    pid,
                    format!("{}: reading its data", what()),
                    last(),
                ));
            }
            got += r as usize;
        }
        Ok((size as u32, data))
    }
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
        // A deleted executable is a ghost file like any other
        // (its text mappings are the same inode, so the same ghost).
        let p = format!("/proc/{pid}/exe");
        let meta = std::fs::metadata(&p)
            .map_err(|e| Error::io(&p, format!("pid {pid}: stat of the executable"), e))?;
        // A memfd (fexecve) likewise is the memfd of its text mappings.
        let flags = libc::O_RDONLY as u32;
        if super::memfd::is_memfd(pid, "exe", &p, &exe, &meta)? {
            let id = table.add_memfd(pid, "exe", &p, &exe, &meta, flags, None)?;
            table.memfd.set_exe(pid, id);
            return Ok(id);
        }
        if super::ghost::is_ghost(&meta) {
            return table.add_ghost(pid, "exe", &p, &exe, &meta, flags, None);
        }
        return Err(Error::unsupported(
            pid,
            format!("exe {}", String::from_utf8_lossy(&exe)),
            "the executable was deleted but is still linked elsewhere; that cannot be restored yet",
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
        // Mappings of memfd objects and unlinked files.
        let p = format!("/proc/{pid}/{name}");
        let meta = std::fs::metadata(&p)
            .map_err(|e| Error::io(&p, format!("pid {pid}: stat of a mapped file"), e))?;
        let what = format!("mapping {start:#x}-{end:#x}");
        if super::memfd::is_memfd(pid, &what, &p, &link, &meta)? {
            return table.add_memfd(pid, &what, &p, &link, &meta, flags, None);
        }
        if super::ghost::is_ghost(&meta) {
            return table.add_ghost(pid, &what, &p, &link, &meta, flags, None);
        }
        return Err(Error::unsupported(
            pid,
            format!(
                "mapping {start:#x}-{end:#x} of {}",
                String::from_utf8_lossy(&link)
            ),
            "mappings of deleted files that are not regular files or are still linked elsewhere are not supported yet",
        ));
    }
    let p = format!("/proc/{pid}/{name}");
    let meta = std::fs::metadata(&p).ok();
    Ok(table.add_reg(&link, flags, 0, meta.as_ref()))
}
