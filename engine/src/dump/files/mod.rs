//! File descriptors, cwd and root of a task: fdinfo-ID.img, files.img and
//! fs-PID.img.
//!
//! Descriptors that share one open file description (dup, dup2, fork) are
//! found with kcmp(KCMP_FILE) and stored once, so the restore can share the
//! description again (shared offset, shared flags).
//!
//! Each kind of fd is one module here with an [`FdDumper`]. To dump a new
//! kind, write its module (which links it claims, what file entry it adds)
//! and add one line to [`FD_DUMPERS`]; the loop in [`dump_fds`] names no
//! kind. An fd no dumper claims is refused, naming the fd and its link.

mod epoll;
mod eventfd;
mod fanotify;
mod fifo;
pub mod file_lock;
pub mod fown;
mod fsnotify;
mod inet;
mod inotify;
mod netlink;
mod packet;
pub mod pidfd;
mod pipe;
pub mod reach;
mod reg;
mod signalfd;
mod timerfd;
mod tty;
mod unix;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::fdinfo;
use reach::Reach;

pub const FD_CLOEXEC_FLAG: u32 = libc::FD_CLOEXEC as u32;

/// (pid, fd, file id, type) of an fd dumped already.
type SeenFd = (Pid, i32, u32, i32);

/// files.img under construction, shared by all tasks of a dump.
#[derive(Default)]
pub struct FileTable {
    pub entries: Vec<pb::FileEntry>,
    /// fd numbers a parent image parked its write-tracking userfaultfd
    /// at (dump/uffd_wp.rs): a userfaultfd there is the engine's, not
    /// the task's, and is not dumped.
    pub parked: std::collections::BTreeSet<i32>,
    /// Buffered data of every pipe, by pipe id: (pipe size, bytes).
    pub pipe_data: std::collections::BTreeMap<u64, (u32, Vec<u8>)>,
    /// Buffered data of every FIFO, by inode (fifo-data.img).
    pub fifo_data: fifo::FifoData,
    /// (pid, fd, file id, type) of every fd of the tasks dumped so far, to
    /// find open files shared between processes.
    pub seen: Vec<(Pid, i32, u32, i32)>,
    /// The same by the (mnt_id, ino) of the file: only fds of one inode on
    /// one mount can be one open file description, so kcmp is asked about
    /// those alone, not about every pair (a task with thousands of pipes
    /// would cost millions of kcmp calls).
    by_inode: std::collections::HashMap<(u64, u64), Vec<SeenFd>>,
    /// The file entry of each executable (by device and inode) dumped so
    /// far: processes running one share it, as in CRIU's images, whose
    /// restore looks for memory shared with the parent only between
    /// processes with the same `exe_file_id`.
    exes: std::collections::HashMap<(u64, u64), u32>,
    /// memfd objects (dump/memfd.rs).
    pub memfd: crate::dump::memfd::MemfdTable,
    /// Unlinked files (dump/ghost.rs).
    pub ghost: crate::dump::ghost::GhostTable,
    /// UNIX sockets and their queues.
    pub unix: unix::UnixTable,
    /// Terminals.
    pub tty: tty::TtyTable,
    /// INET sockets' queued datagrams.
    pub inet: inet::InetTable,
    /// Netlink sockets' queued messages.
    pub netlink: netlink::NetlinkTable,
    /// inotify watches, checked against the whole tree's ghost files.
    pub watches: Vec<inotify::SeenWatch>,
    /// pidfds, checked against the whole tree.
    pub pidfds: Vec<pidfd::SeenPidfd>,
    /// Every process dumped so far, to find fd tables shared between
    /// them.
    pub processes: Vec<Pid>,
    /// Owners of open files (F_SETOWN), checked against the whole tree.
    pub owners: Vec<fown::SeenOwner>,
    /// File locks (--file-locks).
    pub locks: file_lock::LockTable,
    /// Host pid -> pid in the tree's own pid namespace (empty without
    /// one): what the images keep of lock and F_SETOWN owners.
    pub vpids: std::collections::BTreeMap<Pid, Pid>,
    /// The tree's root (host pid): the images' pids are as its pid
    /// namespace sees them.
    pub root: Pid,
    /// Which namespace each file opened by path is reached through.
    pub mounts: reach::Mounts,
    next_id: u32,
}

impl FileTable {
    /// The pid the tree sees for host pid `pid` (the same without a pid
    /// namespace of its own, or for a pid outside it).
    pub fn vpid(&self, pid: Pid) -> Pid {
        self.vpids.get(&pid).copied().unwrap_or(pid)
    }

    pub fn next_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// A regular file, directory or device opened by path, on a mount of
    /// the namespace `reach` says.
    pub fn add_reg(
        &mut self,
        name: &[u8],
        flags: u32,
        pos: u64,
        meta: Option<&std::fs::Metadata>,
        reach: reach::Reach,
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
                mnt_id: match reach {
                    reach::Reach::Tree(m) => i32::try_from(m).ok(),
                    _ => None,
                },
                size,
                ext: None,
                mode,
                build_id: vec![],
                checksum: None,
                checksum_config: None,
                checksum_parameter: None,
                ckpt_host_mount: (reach == reach::Reach::Host).then_some(true),
            }),
            ..Default::default()
        });
        id
    }
}

/// Every kind of fd the dump knows, asked in this order.
pub static FD_DUMPERS: &[&dyn FdDumper] = &[
    &fifo::Fifo,
    &tty::Tty,
    &reg::Reg,
    &pipe::Pipe,
    &eventfd::Eventfd,
    &epoll::Epoll,
    &signalfd::Signalfd,
    &timerfd::Timerfd,
    &inet::Inet,
    &netlink::Netlink,
    &packet::Packet,
    &unix::Unix,
    &pidfd::Pidfd,
    &inotify::Inotify,
    &fanotify::Fanotify,
];

/// The inode of a socket fd, from its link "socket:[INO]".
pub(super) fn socket_ino(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether `fd` is a socket of one of `domains`: every socket's link is
/// the same "socket:[INO]", so the socket itself (SO_DOMAIN) says. A
/// socket the engine cannot take is left to the kind that claims it,
/// which says why.
pub(super) fn socket_of_domain(fd: &FdCx<'_>, domains: &[i32]) -> bool {
    let FdLink::Other(link) = fd.kind else {
        return false;
    };
    if socket_ino(link).is_none() {
        return false;
    }
    let Ok(sock) = crate::sys::take_fd(fd.pid, fd.fd) else {
        return false;
    };
    use std::os::fd::AsFd;
    crate::sys::unix_sock::getsockopt_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)
        .is_ok_and(|d| domains.contains(&d))
}

/// One kind of file descriptor, on the dump side.
pub trait FdDumper: Sync {
    /// Whether this kind dumps the fd whose /proc link is `link`.
    fn claims(&self, link: &FdLink<'_>) -> bool;

    /// Whether this kind dumps `fd`, for a kind its link alone does not
    /// tell (a FIFO's link is a path, like a regular file's).
    fn claims_fd(&self, fd: &FdCx<'_>) -> bool {
        self.claims(&fd.kind)
    }

    /// Adds the fd's file entry (and any payload, e.g. pipe data) to the
    /// table; returns its (fd type, file id).
    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)>;

    /// Refuses what can only be judged once all fds of the task `pid` are
    /// known (`fds`, in fd order, shared ones included).
    fn check_task(&self, _pid: Pid, _table: &FileTable, _fds: &[pb::FdinfoEntry]) -> Result<()> {
        Ok(())
    }

    /// Once every task is dumped: refuses what only the whole tree tells
    /// (a socket's peer outside it), and writes this kind's own images.
    fn finish(&self, _table: &FileTable, _dir: &crate::imgdir::ImageDir) -> Result<()> {
        Ok(())
    }
}

/// Every kind's [`FdDumper::finish`].
pub fn finish(table: &mut FileTable, dir: &crate::imgdir::ImageDir) -> Result<()> {
    // Entries of their own for the peers outside the tree (--ext-unix-sk).
    unix::external_peers(table)?;
    file_lock::finish(table, dir)?;
    FD_DUMPERS.iter().try_for_each(|d| d.finish(table, dir))
}

/// What an fd's /proc link names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdLink<'a> {
    /// A file opened by path (or a memfd, or an unlinked file).
    Path,
    /// A pipe, by inode.
    Pipe(u64),
    /// An anon inode, by its name ("[eventfd]").
    AnonInode(&'a str),
    /// Anything else, as the link says it ("socket:[123]").
    Other(&'a str),
}

impl<'a> FdLink<'a> {
    pub fn of(link: &'a [u8]) -> Self {
        let s = std::str::from_utf8(link).unwrap_or("");
        if link.starts_with(b"/") {
            FdLink::Path
        } else if let Some(ino) = s
            .strip_prefix("pipe:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            FdLink::Pipe(ino)
        } else if let Some(name) = s.strip_prefix("anon_inode:") {
            FdLink::AnonInode(name)
        } else {
            FdLink::Other(s)
        }
    }
}

/// One fd of a task, as a dumper sees it.
pub struct FdCx<'a> {
    pub pid: Pid,
    pub fd: i32,
    /// Its /proc/PID/fd link, as read.
    pub link: &'a [u8],
    /// The link, classified.
    pub kind: FdLink<'a>,
    /// Open flags, without O_CLOEXEC (that is the fd's, not the file's).
    pub flags: u32,
    /// Its fdinfo, read before the link.
    pub info: &'a fdinfo::FdInfo,
}

impl FdCx<'_> {
    /// The fd as /proc names it, to open or stat the file behind it.
    pub fn proc_path(&self) -> String {
        format!("/proc/{}/fd/{}", self.pid, self.fd)
    }

    /// A refusal naming the fd and its link: `what` are not supported yet.
    pub fn unsupported(&self, what: &str) -> Error {
        unsupported_fd(self.pid, self.fd, self.link, what)
    }

    /// A decoded fdinfo field, or an error naming the fd and what is
    /// missing.
    pub fn field<T>(
        &self,
        kind: &str,
        field: &str,
        v: Option<std::result::Result<T, String>>,
    ) -> Result<T> {
        match v {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(Error::task(
                self.pid,
                format!("fd {} ({kind})", self.fd),
                format!("fdinfo: {e}"),
            )),
            None => Err(Error::task(
                self.pid,
                format!("fd {} ({kind})", self.fd),
                format!("no {field} in fdinfo"),
            )),
        }
    }
}

/// 0 when fd1 of pid1 and fd2 of pid2 are the same open file description.
fn kcmp_file(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Option<i32> {
    const KCMP_FILE: i32 = 0;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    (r >= 0).then_some(r as i32)
}

fn unsupported_fd(pid: Pid, fd: i32, link: &[u8], what: &str) -> Error {
    Error::unsupported(
        pid,
        format!("fd {fd} ({})", String::from_utf8_lossy(link)),
        format!("{what} are not supported yet"),
    )
}

/// The refusal of an fd no dumper claims.
fn unclaimed(fd: &FdCx<'_>) -> Error {
    match fd.kind {
        FdLink::AnonInode(name) => fd.unsupported(&format!("{name} descriptors")),
        FdLink::Other(s) if s.starts_with("socket:") => fd.unsupported("sockets"),
        _ => fd.unsupported("files of this kind"),
    }
}

/// 0 when pid1 and pid2 use one fd table.
fn kcmp_files(pid1: Pid, pid2: Pid) -> Option<i32> {
    const KCMP_FILES: i32 = 2;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILES, 0, 0) };
    (r >= 0).then_some(r as i32)
}

/// Whose fd table `pid` uses: `None` for a table of its own, or the
/// process it shares one with (clone with CLONE_FILES but not
/// CLONE_THREAD): its parent `ppid`, or a sibling that owns the table
/// (their parent has a table of its own). The restore rebuilds those
/// layouts: the owner restores the fds and clones the sharer with
/// CLONE_FILES (and CLONE_PARENT for a sibling). A table shared with
/// another process of the tree is refused, naming both. The tree is
/// dumped parents first, and siblings in order, so the owner is known
/// already; in a chain (a sharer's child sharing too) every task's files
/// id is the top one's.
pub fn fd_table(pid: Pid, ppid: Pid, table: &mut FileTable) -> Result<Option<Pid>> {
    let shared = table.processes.contains(&ppid) && kcmp_files(ppid, pid) == Some(0);
    if shared {
        table.processes.push(pid);
        return Ok(Some(ppid));
    }
    let Some(&other) = table
        .processes
        .iter()
        .find(|&&q| kcmp_files(q, pid) == Some(0))
    else {
        table.processes.push(pid);
        return Ok(None);
    };
    let parent_of = |q: Pid| crate::proc::stat::read(q).map(|s| s.ppid);
    if parent_of(other)? == ppid {
        table.processes.push(pid);
        return Ok(Some(other));
    }
    Err(Error::unsupported(
        pid,
        format!("its fd table, shared with pid {other}"),
        format!(
            "an fd table (CLONE_FILES without CLONE_THREAD) can only be restored when \
             shared with the parent or a sibling, and pid {other} is neither to pid {pid} \
             (its parent {ppid} has a table of its own)"
        ),
    ))
}

/// Dump the fds of `pid`: returns fdinfo entries and adds files to `table`.
/// Called once per fd table, in the task that owns it ([`fd_table`]).
pub fn dump_fds(pid: Pid, table: &mut FileTable) -> Result<Vec<pb::FdinfoEntry>> {
    let fds = fdinfo::list_fds(pid)?;
    let mut out: Vec<pb::FdinfoEntry> = Vec::new();
    for fd in fds {
        if table.parked.contains(&fd) && crate::dump::uffd_wp::is_uffd(pid, fd) {
            debug!("pid {pid}: fd {fd} is the write-tracking userfaultfd: not dumped");
            continue;
        }
        let info = fdinfo::read_fdinfo(pid, fd)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let fd_flags = if cloexec { FD_CLOEXEC_FLAG } else { 0 };
        // Same open file description as an fd we already have, here or in
        // a task dumped before (inherited across fork)?
        let key = (info.mnt_id, info.ino);
        let same = table.by_inode.get(&key).and_then(|c| {
            c.iter()
                .find(|s| kcmp_file(s.0, s.1, pid, fd) == Some(0))
                .map(|s| (s.2, s.3))
        });
        file_lock::note(pid, fd, &info, same.is_none(), table)?;
        if let Some((id, r#type)) = same {
            out.push(pb::FdinfoEntry {
                id,
                flags: fd_flags,
                r#type,
                fd: fd as u32,
                xattr_security_selinux: None,
            });
            table
                .by_inode
                .entry(key)
                .or_default()
                .push((pid, fd, id, r#type));
            continue;
        }
        let link: OsString = fdinfo::read_fd_link(pid, fd)?;
        let link = link.as_bytes();
        let cx = FdCx {
            pid,
            fd,
            link,
            kind: FdLink::of(link),
            flags: info.flags & !(libc::O_CLOEXEC as u32),
            info: &info,
        };
        let dumper = FD_DUMPERS
            .iter()
            .find(|d| d.claims_fd(&cx))
            .ok_or_else(|| unclaimed(&cx))?;
        let (ftype, id) = dumper.dump(&cx, table)?;
        fown::record(&cx, id, table)?;
        table
            .by_inode
            .entry(key)
            .or_default()
            .push((pid, fd, id, ftype as i32));
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
    file_lock::check_task(pid, table)?;
    for d in FD_DUMPERS {
        d.check_task(pid, table, &out)?;
    }
    Ok(out)
}

/// A file in flight (SCM_RIGHTS) in a socket's queue, whose copy the
/// engine holds (`fd`, from a peek): its file id, the one of a task's fd
/// if it is the same open file description (kcmp), or an entry of its
/// own no fd refers to, made by the kind that claims it. The engine keeps
/// the copy open to the end of the dump, so that kcmp can compare the
/// fds of the tasks dumped after it with it. `whose` names the socket.
pub(super) fn dump_in_flight(
    whose: &str,
    fd: std::os::fd::OwnedFd,
    table: &mut FileTable,
) -> Result<(pb::FdTypes, u32)> {
    use std::os::fd::AsRawFd;
    let me = std::process::id() as Pid;
    let raw = fd.as_raw_fd();
    let ctx = |e: Error| e.context(format!("a file in flight to {whose}"));
    let info = fdinfo::read_fdinfo(me, raw).map_err(|e| ctx(e.into()))?;
    let key = (info.mnt_id, info.ino);
    let same = table.by_inode.get(&key).and_then(|c| {
        c.iter()
            .find(|s| kcmp_file(s.0, s.1, me, raw) == Some(0))
            .map(|s| (s.2, s.3))
    });
    let (ftype, id) = match same {
        Some((id, t)) => (pb::FdTypes::try_from(t).unwrap_or(pb::FdTypes::Und), id),
        None => {
            let link: OsString = fdinfo::read_fd_link(me, raw).map_err(|e| ctx(e.into()))?;
            let link = link.as_bytes();
            let cx = FdCx {
                pid: me,
                fd: raw,
                link,
                kind: FdLink::of(link),
                flags: info.flags & !(libc::O_CLOEXEC as u32),
                info: &info,
            };
            let dumper = FD_DUMPERS
                .iter()
                .find(|d| d.claims_fd(&cx))
                .ok_or_else(|| ctx(unclaimed(&cx)))?;
            let (ftype, id) = dumper.dump(&cx, table).map_err(ctx)?;
            fown::record(&cx, id, table).map_err(ctx)?;
            (ftype, id)
        }
    };
    table
        .by_inode
        .entry(key)
        .or_default()
        .push((me, raw, id, ftype as i32));
    table.unix.held.push(fd);
    Ok((ftype, id))
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
    let cwd_id = table.add_reg(&cwd, dir_flags, 0, None, Reach::ByName);
    let root_id = table.add_reg(&root, dir_flags, 0, None, Reach::ByName);
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
        if crate::dump::memfd::is_memfd(pid, "exe", &p, &exe, &meta)? {
            let id = table.add_memfd(pid, "exe", &p, &exe, &meta, flags, None)?;
            table.memfd.set_exe(pid, id);
            return Ok(id);
        }
        if crate::dump::ghost::is_ghost(&meta) {
            return table.add_ghost(pid, "exe", &p, &exe, &meta, flags, None);
        }
        return Err(Error::unsupported(
            pid,
            format!("exe {}", String::from_utf8_lossy(&exe)),
            "the executable was deleted but is still linked elsewhere; that cannot be restored yet",
        ));
    }
    let p = format!("/proc/{pid}/exe");
    let meta = std::fs::metadata(&p)
        .map_err(|e| Error::io(&p, format!("pid {pid}: stat of the executable"), e))?;
    let key = (meta.dev(), meta.ino());
    if let Some(&id) = table.exes.get(&key) {
        return Ok(id);
    }
    let id = table.add_reg(&exe, libc::O_RDONLY as u32, 0, None, Reach::ByName);
    table.exes.insert(key, id);
    Ok(id)
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
        if crate::dump::memfd::is_memfd(pid, &what, &p, &link, &meta)? {
            return table.add_memfd(pid, &what, &p, &link, &meta, flags, None);
        }
        if crate::dump::ghost::is_ghost(&meta) {
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
    Ok(table.add_reg(&link, flags, 0, meta.as_ref(), Reach::ByName))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_classified() {
        assert_eq!(FdLink::of(b"/tmp/x"), FdLink::Path);
        assert_eq!(FdLink::of(b"pipe:[1234]"), FdLink::Pipe(1234));
        assert_eq!(
            FdLink::of(b"anon_inode:[eventfd]"),
            FdLink::AnonInode("[eventfd]")
        );
        assert_eq!(FdLink::of(b"socket:[5]"), FdLink::Other("socket:[5]"));
        assert_eq!(FdLink::of(b"pipe:[x]"), FdLink::Other("pipe:[x]"));
    }

    #[test]
    fn one_dumper_per_known_link_and_none_for_the_rest() {
        let claimants = |l: &[u8]| {
            FD_DUMPERS
                .iter()
                .filter(|d| d.claims(&FdLink::of(l)))
                .count()
        };
        for l in [
            &b"/etc/passwd"[..],
            b"pipe:[7]",
            b"anon_inode:[eventfd]",
            b"anon_inode:[eventpoll]",
            b"anon_inode:[signalfd]",
            b"anon_inode:[timerfd]",
            b"socket:[9]",
            b"anon_inode:[pidfd]",
            b"anon_inode:inotify",
            b"anon_inode:[fanotify]",
        ] {
            assert_eq!(claimants(l), 1, "{}", String::from_utf8_lossy(l));
        }
        for l in [&b"anon_inode:[io_uring]"[..], b"net:[4026531840]"] {
            assert_eq!(claimants(l), 0, "{}", String::from_utf8_lossy(l));
        }
    }
}
