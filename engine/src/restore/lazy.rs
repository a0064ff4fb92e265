//! Lazy restore (`ckpt restore --lazy-pages`): the tree's private anonymous
//! memory is not copied before the tree runs but filled by a daemon, on
//! demand (page faults) and in the background, through userfaultfd.
//!
//! - The daemon is forked from the engine (twice, so that it is nobody's
//!   child and `-d` returns at once) when the restore makes its objects,
//!   before any task exists; it already holds the loaded images. It lives
//!   until every lazy page is in, then closes its userfaultfds (which
//!   unregisters every range: later faults are ordinary ones) and exits.
//! - In the `Memory` stage each task creates a userfaultfd (a remote
//!   syscall: a userfaultfd serves the mm of its creator); the engine takes
//!   it (pidfd_getfd), closes the task's copy, does the API handshake and
//!   registers the lazy mappings for missing-page faults from outside
//!   (ioctls on a userfaultfd act on its mm, whoever calls them), and hands
//!   it with a pidfd of the task to the daemon over a socket. The daemon
//!   serves faults from then on: later stages of the restore may touch
//!   lazy memory (the kernel writing the rseq area, /proc/PID/mem). A
//!   task in a user namespace of the tree's own has no CAP_SYS_PTRACE in
//!   the initial one, which userfaultfd(2) wants: it makes its
//!   userfaultfd with USERFAULTFD_IOC_NEW on the engine's /dev/userfaultfd
//!   ([`Daemon::uffd_dev`]), taken from the user namespace's launcher.
//! - Which memory is lazy: private anonymous mappings with pages in the
//!   task's own pages file. Everything else is copied before the tree runs
//!   as in a plain restore: file mappings, shared memory (anonymous, SysV,
//!   memfd), memory shared copy-on-write with the parent process
//!   (restore/cow.rs), pages that live in a parent image of a pre-dump
//!   chain (written before the registration: a write through /proc or
//!   process_vm_writev into a registered hole would wait for the daemon),
//!   and any mapping the kernel refuses to register.
//! - A fault copies the pages of the image in the aligned
//!   [`FAULT_WINDOW`] around the address (clamped to what the image has
//!   there; a hole gets the zero page); once the tree runs (until then the
//!   restore has the CPUs), the background fills the rest in runs of
//!   [`BACKGROUND_RUN`], reading the faults between runs.
//! - The tree may fork, mremap, MADV_DONTNEED or unmap memory not filled
//!   yet: the userfaultfd reports each (UFFD_FEATURE_EVENT_*), and the
//!   daemon follows: a forked child's mm gets its own userfaultfd and the
//!   same pages still to fill, moved memory is filled at its new place,
//!   dropped or unmapped memory is not filled at all.
//! - From a page server (`--page-server --address A --port N`, the pages
//!   files served by `ckpt page-server --lazy-pages`): the engine checks
//!   the server's pages files against the local manifest, fetches what is
//!   written before the tree runs (everything but the lazy runs) into
//!   sparse files of a staging directory ([`stage`]) that stands for the
//!   pages files, and the daemon fetches the lazy runs over a connection
//!   of its own, each fault window in one request; the background runs
//!   come over a second connection, [`RUNS_AHEAD`] asked for at a time
//!   and taken in by a thread of the daemon while it copies the last one
//!   in (the server, the transfer and the copy overlap).
//!   Memory shared copy-on-write with the parent process is not kept
//!   shared then (no held memory): the lazy runs are the same whatever
//!   the restore decides later, and a mapping userfaultfd refuses is an
//!   error rather than pages the engine does not have.
//! - Errors: if the daemon cannot fill a page (a damaged or vanished
//!   pages file, an unexpected ioctl error), it kills the tasks it was
//!   handed (SIGKILL through their pidfds) rather than let them run on
//!   wrong memory, and logs why. It ignores SIGINT, SIGTERM and SIGHUP. A
//!   daemon killed with SIGKILL cannot do that: its userfaultfds are
//!   released, and the kernel then fills the remaining pages with zeros
//!   (userfaultfd_release): do not SIGKILL it.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::load::Images;
use crate::error::{Error, Pid, Result};
use crate::images::pagemap::PAGE;
use crate::pageserver::{Ahead, RemotePages};
use crate::sys::uffd;
use crate::sys::Mmap;

/// The bytes a fault brings in around its address (aligned).
pub const FAULT_WINDOW: u64 = 256 << 10;
/// The most bytes of small runs filled before the tree runs
/// ([`Served::fill_small`]).
const SMALL_FIRST: u64 = 4 << 20;
/// The bytes of one background copy (the faults wait at most that long).
pub const BACKGROUND_RUN: u64 = 4 << 20;
/// From a page server, the bytes of one background run fetched ahead
/// ([`Served::stream`]): smaller than a local one, since several are on
/// their way at a time and the daemon copies one in between two looks at
/// the faults (each copy is what a fault may wait behind).
const AHEAD_RUN: u64 = 1 << 20;
/// The background runs asked for and not yet copied: while the daemon
/// copies one in, the server sends the next and a thread of the daemon
/// takes them in.
const RUNS_AHEAD: usize = 16;

/// Where a restore's pages files are when they are not local: a page
/// server's address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageServer {
    pub address: String,
    pub port: u16,
}

/// The bytes of one request for pages the engine writes itself.
const STAGE_RUN: u64 = 8 << 20;

/// The staging directory of a restore from a page server: removed when
/// the restore is done with it.
pub struct Staging {
    dir: std::path::PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fetch from `server` the pages of every pages file the restore writes
/// before the tree runs (all but the lazy runs of each task, which the
/// daemon fetches) into sparse files of a fresh staging directory on
/// tmpfs, and point `imgs` at it.
pub fn stage(imgs: &mut Images, server: &mut RemotePages) -> Result<Staging> {
    let root = imgs.tasks[0].pid;
    let base = std::path::Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("ckpt-lazy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, "creating the staging directory", e))?;
    let staging = Staging { dir };
    let mut lazy = lazy_runs(imgs, false);
    let (mut fetched, mut buf) = (0u64, Vec::new());
    for (name, size) in server.files() {
        let path = staging.dir.join(&name);
        let f = std::fs::File::create(&path)
            .and_then(|f| f.set_len(size).map(|()| f))
            .map_err(|e| Error::io(&path, "creating a staged pages file", e))?;
        let mut skip = lazy.remove(&name).unwrap_or_default();
        skip.sort_unstable();
        let mut at = 0u64;
        for (off, len) in skip.into_iter().chain([(size, 0)]) {
            while at < off {
                let n = (off - at).min(STAGE_RUN);
                buf.resize(n as usize, 0);
                server.fetch(&name, at, &mut buf)?;
                std::os::unix::fs::FileExt::write_all_at(&f, &buf, at)
                    .map_err(|e| Error::io(&path, "writing a staged pages file", e))?;
                at += n;
                fetched += n;
            }
            at = at.max(off + len);
        }
    }
    info!(
        "pid {root}: {} MiB fetched from the page server {} before the tree runs",
        fetched >> 20,
        server.peer()
    );
    imgs.pages_dir = Some(staging.dir.clone());
    Ok(staging)
}

/// The runs (offset, length) of each pages file that only the lazy-pages
/// daemon reads: the pages of each task's lazy mappings, but for the
/// tasks whose pages a descendant shares copy-on-write (entries without
/// data: the engine copies those from the ancestor's file, so its file is
/// read whole), and with `cow_children`, but for those descendants too
/// (whose lazy mappings depend on what the restore holds from the parent,
/// decided later).
fn lazy_runs(imgs: &Images, cow_children: bool) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut whole = std::collections::BTreeSet::new();
    for t in &imgs.tasks {
        if t.pages
            .entries
            .iter()
            .any(crate::images::pagemap::entry_cow)
        {
            if cow_children {
                whole.insert(t.pid);
            }
            let mut ppid = t.pstree.ppid as i32;
            while let Some(p) = imgs.tasks.iter().find(|p| p.pid == ppid && p.pid != t.pid) {
                if !whole.insert(p.pid) {
                    break;
                }
                ppid = p.pstree.ppid as i32;
            }
        }
    }
    let mut lazy: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for t in imgs.tasks.iter().filter(|t| !whole.contains(&t.pid)) {
        let ranges = super::memory::lazy_mappings(t, &Default::default());
        let runs = lazy.entry(t.pages.pages_file()).or_default();
        for (vaddr, len, off) in present_runs(&t.pages.entries) {
            for &(s, e) in &ranges {
                let (a, b) = (vaddr.max(s), (vaddr + len).min(e));
                if a < b {
                    runs.push((off + (a - vaddr), b - a));
                }
            }
        }
    }
    lazy
}

/// A lazy restore from local images: the blocks of each pages file that
/// only the daemon reads are left for it to check as it serves them
/// (before their first byte reaches a task); every other block is
/// checked here, before any task exists. Fills `imgs.deferred`.
pub fn defer_blocks(imgs: &mut Images) -> Result<()> {
    let manifest = crate::images::Manifest::read(&imgs.dir)?;
    let runs = lazy_runs(imgs, true);
    let mut now: Vec<(String, Vec<u64>)> = Vec::new();
    let mut deferred = BTreeMap::new();
    for (name, _) in manifest.iter() {
        let Some(want) = manifest.blocks(name) else {
            continue;
        };
        if crate::images::set::pages_file_id(name).is_none() {
            continue;
        }
        let mut d = crate::images::manifest::DeferredBlocks::new(name, want);
        let mut keep: Vec<(u64, u64)> = runs
            .get(name)
            .map(|r| r.iter().map(|&(off, len)| (off, off + len)).collect())
            .unwrap_or_default();
        keep.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(keep.len());
        for (a, z) in keep {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(z),
                _ => merged.push((a, z)),
            }
        }
        let check = d.not_within(&merged);
        d.mark_checked(&check);
        now.push((name.to_string(), check));
        deferred.insert(name.to_string(), std::sync::Mutex::new(d));
    }
    manifest.check_blocks(&imgs.dir, &now)?;
    let lazy: u64 = deferred
        .values()
        .map(|d| d.lock().map_or(0, |d| d.unchecked()))
        .sum();
    debug!(
        "lazy pages: {lazy} blocks of {} pages files left for the daemon to check as it reads them",
        deferred.len()
    );
    imgs.deferred = deferred;
    Ok(())
}

/// A run of pages to fill: `len` bytes at `addr` from offset `off` of
/// pages file `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub addr: u64,
    pub len: u64,
    pub src: usize,
    pub off: u64,
}

/// The pages of one mm still to fill, by address (runs never overlap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    runs: BTreeMap<u64, (u64, usize, u64)>,
}

impl Plan {
    pub fn insert(&mut self, p: Piece) {
        if p.len > 0 {
            self.take_range(p.addr, p.addr + p.len);
            self.runs.insert(p.addr, (p.addr + p.len, p.src, p.off));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|(s, (e, _, _))| e - s).sum()
    }

    /// Removes and returns what the plan has in `[a, b)`, in address order.
    pub fn take_range(&mut self, a: u64, b: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        // The run that starts before `a` and reaches into the range.
        let first = self
            .runs
            .range(..a)
            .next_back()
            .filter(|(_, &(e, _, _))| e > a)
            .map(|(&s, _)| s);
        let keys: Vec<u64> = first
            .into_iter()
            .chain(self.runs.range(a..b).map(|(&s, _)| s))
            .collect();
        for s in keys {
            let (e, src, off) = self.runs.remove(&s).expect("key just listed");
            let (cs, ce) = (s.max(a), e.min(b));
            if s < cs {
                self.runs.insert(s, (cs, src, off));
            }
            if ce < e {
                self.runs.insert(ce, (e, src, off + (ce - s)));
            }
            out.push(Piece {
                addr: cs,
                len: ce - cs,
                src,
                off: off + (cs - s),
            });
        }
        out
    }

    /// What a fault at `addr` brings in: the plan's pages in the aligned
    /// window of `window` bytes (a power of two) around it, the run with
    /// the faulting page first.
    pub fn take_fault(&mut self, addr: u64, window: u64) -> Vec<Piece> {
        let a = addr & !(window - 1);
        let mut got = self.take_range(a, a.saturating_add(window));
        if let Some(i) = got
            .iter()
            .position(|p| p.addr <= addr && addr < p.addr + p.len)
        {
            got[..=i].rotate_right(1);
        }
        got
    }

    /// What the plan has from `from` on, without taking it: at most `max`
    /// bytes of the run holding `from`, or else of the next run above it.
    pub fn peek_from(&self, from: u64, max: u64) -> Option<Piece> {
        let (&s, &(e, src, off)) = self
            .runs
            .range(..=from)
            .next_back()
            .filter(|(_, &(e, _, _))| e > from)
            .or_else(|| self.runs.range(from..).next())?;
        let a = s.max(from);
        Some(Piece {
            addr: a,
            len: (e - a).min(max),
            src,
            off: off + (a - s),
        })
    }

    /// The next background run: at most `max` bytes of the lowest run.
    pub fn take_next(&mut self, max: u64) -> Option<Piece> {
        let (&s, &(e, _, _)) = self.runs.iter().next()?;
        self.take_range(s, s + (e - s).min(max)).pop()
    }

    /// A background run from the other end: at most `max` bytes at the
    /// top of the highest run (the copier's, [`Copier`]).
    pub fn take_last(&mut self, max: u64) -> Option<Piece> {
        let (&s, &(e, _, _)) = self.runs.iter().next_back()?;
        self.take_range(s.max(e.saturating_sub(max)), e).pop()
    }

    /// The tree moved `[from, from+len)` to `to` (mremap): what was to
    /// fill there is to fill at the new place; what was at the new place
    /// is gone.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved = self.take_range(from, from.saturating_add(len));
        self.take_range(to, to.saturating_add(len));
        for p in moved {
            self.insert(Piece {
                addr: p.addr - from + to,
                ..p
            });
        }
    }
}

/// Runs of `entries` whose pages are in the pages file: (address, bytes,
/// offset in the file), in file order.
pub fn present_runs(
    entries: &[crate::images::pb::PagemapEntry],
) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    let mut off = 0u64;
    entries
        .iter()
        .filter(|e| crate::images::pagemap::entry_present(e))
        .map(move |e| {
            let len = e.nr_pages as u64 * PAGE;
            let r = (e.vaddr, len, off);
            off += len;
            r
        })
}

/// The plan of task `t`'s pages inside `ranges` (the lazy mappings), from
/// its pages file `src`.
pub fn task_plan(
    entries: &[crate::images::pb::PagemapEntry],
    ranges: &[(u64, u64)],
    src: usize,
) -> Plan {
    let mut plan = Plan::default();
    for (vaddr, len, off) in present_runs(entries) {
        for &(s, e) in ranges {
            let (a, b) = (vaddr.max(s), (vaddr + len).min(e));
            if a < b {
                plan.insert(Piece {
                    addr: a,
                    len: b - a,
                    src,
                    off: off + (a - vaddr),
                });
            }
        }
    }
    plan
}

/// The engine's end of the daemon.
pub struct Daemon {
    sock: OwnedFd,
    pid: Pid,
    /// /dev/userfaultfd, for a tree in a user namespace of its own
    /// ([`Daemon::uffd_dev`]).
    dev: Option<OwnedFd>,
}

const MSG_TASK: u8 = b'T';
const MSG_GO: u8 = b'G';
const MSG_ACK: u8 = b'A';
const MSG_RUN: u8 = b'R';

/// The daemon's own connections to the page server (which serves while
/// any is open): one for the faults, one for the background runs.
pub type Connections = (RemotePages, RemotePages);

/// The daemon's connections, made when the restore begins: before the
/// engine enters the tree's network namespace, where the page server's
/// address would be another's (its loopback the tree's own).
pub fn connect(imgs: &Images, server: &PageServer) -> Result<Connections> {
    let manifest = crate::images::Manifest::read(&imgs.dir)?;
    let one = || {
        RemotePages::connect(&server.address, server.port, &manifest)
            .map_err(|e| e.context("lazy pages: the daemon's connections"))
    };
    Ok((one()?, one()?))
}

impl Daemon {
    /// Fork the daemon (the engine must be single-threaded); with
    /// `remote`, it fetches the lazy pages over those connections to the
    /// page server (`connect`), which it takes: the engine's copies are
    /// closed.
    pub fn start(imgs: &Images, remote: Option<Connections>) -> Result<Daemon> {
        let root = imgs.tasks[0].pid;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys(root, "lazy pages: socketpair", e))?;
        match crate::sys::fork_single_threaded()
            .map_err(|e| Error::sys(root, "lazy pages: fork of the daemon", e))?
        {
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                drop(remote);
                let _ = nix::sys::wait::waitpid(child, None);
                let mut b = [0u8; 4];
                let n = nix::sys::socket::recv(ours.as_raw_fd(), &mut b, MsgFlags::empty())
                    .map_err(|e| Error::sys(root, "lazy pages: hello from the daemon", e))?;
                if n != 4 {
                    return Err(Error::task(
                        root,
                        "lazy pages",
                        "the daemon did not start (its error is in the log)",
                    ));
                }
                let pid = i32::from_ne_bytes(b);
                info!("lazy pages: daemon is pid {pid}");
                let dev = match imgs.ns.user {
                    Some(_) => match open_uffd_dev(root) {
                        Ok(d) => Some(d),
                        // Without the device, userfaultfd(2) in the task
                        // works if unprivileged users may use it.
                        Err(_) if unprivileged_userfaultfd() => {
                            warn!(
                                "pid {root}: lazy pages: /dev/userfaultfd cannot be opened; the tasks \
                                 make their userfaultfds with userfaultfd(2) (vm.unprivileged_userfaultfd = 1)"
                            );
                            None
                        }
                        Err(e) => return Err(e),
                    },
                    None => None,
                };
                Ok(Daemon {
                    sock: ours,
                    pid,
                    dev,
                })
            }
            nix::unistd::ForkResult::Child => {
                drop(ours);
                // The daemon is the grandchild: the engine reaps the child.
                let code = match crate::sys::fork_single_threaded() {
                    Ok(nix::unistd::ForkResult::Child) => daemon_main(imgs, remote, theirs),
                    Ok(nix::unistd::ForkResult::Parent { .. }) => 0,
                    Err(_) => 1,
                };
                std::process::exit(code)
            }
        }
    }

    /// The engine's fd of /dev/userfaultfd in a tree with a user
    /// namespace of its own, opened before any task exists, so that the
    /// user namespace's launcher has it too (restore/userns.rs): a task
    /// there makes its userfaultfd with it (`USERFAULTFD_IOC_NEW`), since
    /// userfaultfd(2) wants CAP_SYS_PTRACE in the initial user namespace
    /// (with vm.unprivileged_userfaultfd 0), which no task there has.
    pub fn uffd_dev(&self) -> Option<RawFd> {
        self.dev.as_ref().map(|d| d.as_raw_fd())
    }

    /// Hand the userfaultfd of task `idx` (registered over `ranges`) and a
    /// pidfd of it to the daemon.
    pub fn hand_over(
        &mut self,
        pid: Pid,
        idx: usize,
        ranges: &[(u64, u64)],
        uffd: OwnedFd,
        pidfd: OwnedFd,
    ) -> Result<()> {
        let mut b = vec![MSG_TASK];
        b.extend_from_slice(&(idx as u32).to_ne_bytes());
        for &(s, e) in ranges {
            b.extend_from_slice(&s.to_ne_bytes());
            b.extend_from_slice(&e.to_ne_bytes());
        }
        let fds = [uffd.as_raw_fd(), pidfd.as_raw_fd()];
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(&b)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| {
            Error::sys(
                pid,
                format!(
                    "lazy pages: handing the userfaultfd to the daemon (pid {})",
                    self.pid
                ),
                e,
            )
        })?;
        Ok(())
    }

    /// Every task is handed over: the daemon may finish once all is in.
    /// Fails if the daemon is gone.
    pub fn go(&mut self, root: Pid) -> Result<()> {
        let what = format!("lazy pages: the daemon (pid {})", self.pid);
        nix::sys::socket::send(self.sock.as_raw_fd(), &[MSG_GO], MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| Error::sys(root, what.clone(), e))?;
        let mut b = [0u8; 1];
        let n = nix::sys::socket::recv(self.sock.as_raw_fd(), &mut b, MsgFlags::empty())
            .map_err(|e| Error::sys(root, what.clone(), e))?;
        if n != 1 || b[0] != MSG_ACK {
            return Err(Error::task(root, what, "it died (see its log)"));
        }
        Ok(())
    }

    /// The tree runs: the daemon starts filling in the background (until
    /// then it only answers faults, and leaves the CPUs to the restore).
    /// A daemon that is gone has said why in the log already.
    pub fn running(&mut self) {
        let _ = nix::sys::socket::send(self.sock.as_raw_fd(), &[MSG_RUN], MsgFlags::MSG_NOSIGNAL);
    }
}

/// vm.unprivileged_userfaultfd is 1: userfaultfd(2) works for a task
/// without CAP_SYS_PTRACE in the initial user namespace.
fn unprivileged_userfaultfd() -> bool {
    std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").is_ok_and(|v| v.trim() == "1")
}

/// /dev/userfaultfd, read and write (`Daemon::uffd_dev`).
fn open_uffd_dev(root: Pid) -> Result<OwnedFd> {
    let path = "/dev/userfaultfd";
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| {
            Error::io(
                path,
                format!(
                    "pid {root}: lazy pages in a user namespace of the tree's own (its tasks \
                     make their userfaultfds with it: Linux 6.1; or set vm.unprivileged_userfaultfd = 1)"
                ),
                e,
            )
        })
}

/// One mm the daemon fills.
struct Mm {
    uffd: OwnedFd,
    plan: Plan,
    /// Faults to answer again once pending events are read (the copy
    /// said the mm was changing).
    retry: Vec<u64>,
    /// From a page server: the address below which the plan's runs have
    /// been asked for in the background ([`Served::stream`]).
    streamed: u64,
    what: String,
}

struct Fatal(String);

/// The daemon: never returns into the engine. Its exit code.
fn daemon_main(imgs: &Images, remote: Option<Connections>, sock: OwnedFd) -> i32 {
    let _ = nix::unistd::setsid();
    crate::sys::ignore_signals(&[
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGPIPE,
    ]);
    // Nobody reads the engine's standard output once it is gone; the log
    // goes on where the engine's goes.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
        if !crate::log::is_stderr() {
            let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
        }
    }
    // The second connection for the background runs, fetched ahead by a
    // thread of the daemon's own (the engine forks it single-threaded).
    let (remote, ahead) = match remote {
        None => (None, None),
        Some((faults, runs)) => match runs.ahead() {
            Ok(a) => (Some(faults), Some(a)),
            Err(e) => {
                error!("lazy pages: {e}");
                return 1;
            }
        },
    };
    let me = std::process::id() as i32;
    if nix::sys::socket::send(sock.as_raw_fd(), &me.to_ne_bytes(), MsgFlags::MSG_NOSIGNAL).is_err()
    {
        return 1;
    }
    let mut d = Served {
        imgs,
        sources: (0..imgs.tasks.len()).map(|_| None).collect(),
        remote,
        ahead,
        in_flight: 0,
        spare: Vec::new(),
        buf: Vec::new(),
        mms: Vec::new(),
        pidfds: Vec::new(),
        copied: 0,
        faults: 0,
        copier: None,
    };
    let t0 = std::time::Instant::now();
    let mut copier_end = None;
    if d.remote.is_none() {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok((wake, wake_w)) => {
                let (jobs, jobs_rx) = std::sync::mpsc::channel();
                let (done_tx, done) = std::sync::mpsc::channel();
                d.copier = Some(Copier {
                    jobs,
                    done,
                    wake,
                    busy: None,
                });
                copier_end = Some((jobs_rx, done_tx, wake_w));
            }
            // Without it the daemon's thread copies everything.
            Err(e) => warn!("lazy pages: no copier thread (pipe: {e})"),
        }
    }
    let run = std::thread::scope(|s| {
        if let Some((jobs, done, wake)) = copier_end {
            s.spawn(move || copier_main(imgs, jobs, done, wake));
        }
        let r = d.run(&sock);
        // Its end of the channel: the copier's loop ends.
        d.copier = None;
        r
    });
    match run {
        Ok(true) => {
            info!(
                "lazy pages: all in after {:?}: {} MiB copied, {} faults",
                t0.elapsed(),
                d.copied >> 20,
                d.faults
            );
            if let Some(r) = d.remote.take() {
                r.end();
            }
            0
        }
        Ok(false) => 0,
        Err(Fatal(why)) => {
            error!("lazy pages: {why}; killing the restored tasks");
            for p in &d.pidfds {
                let _ = uffd::pidfd_kill(p.as_fd(), libc::SIGKILL);
            }
            let _ = nix::sys::socket::send(sock.as_raw_fd(), b"X", MsgFlags::MSG_NOSIGNAL);
            1
        }
    }
}

struct Served<'a> {
    imgs: &'a Images,
    /// Each task's pages file, mapped when its first mm arrives (an
    /// empty map for pages on the page server).
    sources: Vec<Option<std::sync::Arc<Mmap>>>,
    /// The page server holding the pages files, if they are not local.
    remote: Option<RemotePages>,
    /// Its second connection, for the background runs: each asked for
    /// with the mm and the piece it is for.
    ahead: Option<Ahead<(usize, Piece)>>,
    /// Background runs asked for on `ahead`, not yet in.
    in_flight: usize,
    /// Buffers of runs copied in, for the next ones.
    spare: Vec<Vec<u8>>,
    /// The bytes of the last piece fetched from it.
    buf: Vec<u8>,
    mms: Vec<Mm>,
    pidfds: Vec<OwnedFd>,
    copied: u64,
    faults: u64,
    /// From local images: the second thread copying runs in.
    copier: Option<Copier>,
}

impl Served<'_> {
    /// Serve until everything is in (true) or the restore failed (false).
    fn run(&mut self, sock: &OwnedFd) -> std::result::Result<bool, Fatal> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut go = false;
        let mut ctl = true;
        // The tree runs (or the engine is gone): fill in the background.
        let mut running = false;
        // A run came in last time: there may be more waiting.
        let mut took = false;
        let mut msgs = Vec::new();
        loop {
            let pending = self.mms.iter().any(|m| !m.plan.is_empty());
            let copying = self.copier.as_ref().is_some_and(|c| c.busy.is_some());
            if go && !pending && !copying {
                return Ok(true);
            }
            if !ctl && !go {
                return Ok(false);
            }
            // Runs on their way from the page server: the next poll
            // wakes when one is in; else this thread fetches or reads
            // the next run itself, between two looks at the faults.
            let streaming = running && self.stream()?;
            let busy = running && pending && (!streaming || took);
            let revents: Vec<bool> = {
                let mut pfds: Vec<PollFd<'_>> = Vec::with_capacity(self.mms.len() + 2);
                if ctl {
                    pfds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
                }
                for m in &self.mms {
                    pfds.push(PollFd::new(m.uffd.as_fd(), PollFlags::POLLIN));
                }
                if let Some(a) = &self.ahead {
                    pfds.push(PollFd::new(a.ready_fd(), PollFlags::POLLIN));
                }
                if let Some(c) = self.copier.as_ref().filter(|_| copying) {
                    pfds.push(PollFd::new(c.wake.as_fd(), PollFlags::POLLIN));
                }
                let t = if busy {
                    PollTimeout::ZERO
                } else {
                    PollTimeout::NONE
                };
                match poll(&mut pfds, t) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(Fatal(format!("poll: {e}"))),
                }
                pfds.iter()
                    .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            let mut ready = revents.into_iter();
            if ctl && ready.next() == Some(true) {
                match self.control(sock)? {
                    Control::Task => {}
                    Control::Go => {
                        go = true;
                        let _ = nix::sys::socket::send(
                            sock.as_raw_fd(),
                            &[MSG_ACK],
                            MsgFlags::MSG_NOSIGNAL,
                        );
                        self.fill_small()?;
                    }
                    Control::Run => running = true,
                    Control::Closed => {
                        ctl = false;
                        running = true;
                    }
                }
            }
            let ready: Vec<bool> = ready.take(self.mms.len()).collect();
            for (i, _) in ready.iter().enumerate().filter(|(_, &r)| r) {
                msgs.clear();
                match uffd::read_msgs(self.mms[i].uffd.as_fd(), &mut msgs) {
                    Ok(()) => {}
                    // The mm is gone (its tasks exited).
                    Err(Errno::ESRCH) => self.mms[i].plan = Plan::default(),
                    Err(e) => {
                        return Err(Fatal(format!(
                            "{}: reading the userfaultfd: {e}",
                            self.mms[i].what
                        )))
                    }
                }
                for m in msgs.clone() {
                    self.event(i, &m)?;
                }
            }
            for i in 0..self.mms.len() {
                for addr in std::mem::take(&mut self.mms[i].retry) {
                    self.fault(i, addr)?;
                }
            }
            took = self.arrived()?;
            // The copier's run, if it is in (its wake fd is polled last).
            self.settle(false)?;
            if streaming || !running {
                continue;
            }
            self.hand_off()?;
            if let Some(i) = self.mms.iter().position(|m| !m.plan.is_empty()) {
                if let Some(p) = self.mms[i].plan.take_next(BACKGROUND_RUN) {
                    self.fill(i, p)?;
                }
            }
        }
    }

    /// The copier's run, once it is in (or at once, waiting, with
    /// `wait`): its bytes counted, its rest back into the plan, its
    /// failure the daemon's.
    fn settle(&mut self, wait: bool) -> std::result::Result<(), Fatal> {
        let Some(c) = self.copier.as_mut() else {
            return Ok(());
        };
        let Some((i, p)) = c.busy else {
            return Ok(());
        };
        let got = match wait {
            true => c.done.recv().ok(),
            false => c.done.try_recv().ok(),
        };
        let Some((n, how)) = got else {
            return match wait {
                true => Err(Fatal("the copier thread is gone".into())),
                false => Ok(()),
            };
        };
        // Its byte, written right after the answer.
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(c.wake.as_raw_fd(), &mut b);
        c.busy = None;
        self.copied += n;
        match how {
            Ok(how) => copied_into(&mut self.mms[i], how).map(drop),
            Err(e) => Err(Fatal(format!(
                "{}: pages at {:#x}: {e}",
                self.mms[i].what, p.addr
            ))),
        }
    }

    /// Gives the copier the top run of the last mm with pages to fill,
    /// if it is idle.
    fn hand_off(&mut self) -> std::result::Result<(), Fatal> {
        let Some(c) = self.copier.as_mut() else {
            return Ok(());
        };
        if c.busy.is_some() {
            return Ok(());
        }
        let Some(i) = self.mms.iter().rposition(|m| !m.plan.is_empty()) else {
            return Ok(());
        };
        let Some(p) = self.mms[i].plan.take_last(BACKGROUND_RUN) else {
            return Ok(());
        };
        let Some(src) = self.sources.get(p.src).and_then(|s| s.clone()) else {
            return Err(Fatal(format!("no pages file for piece {p:?}")));
        };
        let what = &self.mms[i].what;
        let uffd = self.mms[i]
            .uffd
            .try_clone()
            .map_err(|e| Fatal(format!("{what}: dup of its userfaultfd: {e}")))?;
        if c.jobs.send(Job { uffd, p, src }).is_err() {
            self.mms[i].plan.insert(p);
            return Err(Fatal("the copier thread is gone".into()));
        }
        c.busy = Some((i, p));
        Ok(())
    }

    /// Once every task is handed over, while the engine releases the
    /// tree: the small runs of each mm (its stack, heap, data: what a
    /// program touches first), up to [`SMALL_FIRST`] bytes in all, so
    /// that its first instructions do not wait on faults behind the
    /// background.
    fn fill_small(&mut self) -> std::result::Result<(), Fatal> {
        let mut left = SMALL_FIRST;
        for i in 0..self.mms.len() {
            let small: Vec<(u64, u64)> = self.mms[i]
                .plan
                .runs
                .iter()
                .map(|(&s, &(e, _, _))| (s, e))
                .filter(|&(s, e)| e - s <= FAULT_WINDOW)
                .collect();
            for (s, e) in small {
                if e - s > left {
                    return Ok(());
                }
                left -= e - s;
                for p in self.mms[i].plan.take_range(s, e) {
                    self.fill(i, p)?;
                }
            }
        }
        Ok(())
    }

    /// From a page server: keep [`RUNS_AHEAD`] background runs asked for
    /// on the second connection, each mm's runs in address order from
    /// where its last one ended. True while any is on its way. What this
    /// passes by (a run that moved below an mm's mark, one put back after
    /// a failed copy) is fetched over the first connection once nothing
    /// is on its way.
    fn stream(&mut self) -> std::result::Result<bool, Fatal> {
        let Some(ahead) = self.ahead.as_mut() else {
            return Ok(false);
        };
        while self.in_flight < RUNS_AHEAD {
            let Some((i, p)) = self
                .mms
                .iter()
                .enumerate()
                .find_map(|(i, m)| m.plan.peek_from(m.streamed, AHEAD_RUN).map(|p| (i, p)))
            else {
                break;
            };
            self.mms[i].streamed = p.addr + p.len;
            let name = self.imgs.tasks[p.src].pages.pages_file();
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.resize(p.len as usize, 0);
            ahead
                .ask((i, p), &name, p.off, buf)
                .map_err(|e| Fatal(format!("{}: pages at {:#x}: {e}", self.mms[i].what, p.addr)))?;
            self.in_flight += 1;
        }
        Ok(self.in_flight > 0)
    }

    /// Copy in the next background run that came in from the page
    /// server, if one did (true): what of it the plan still has (a fault
    /// may have brought some of it in meanwhile, the tree may have
    /// dropped or moved some). One run, then the faults again.
    fn arrived(&mut self) -> std::result::Result<bool, Fatal> {
        let Some(ahead) = self.ahead.as_mut() else {
            return Ok(false);
        };
        let Some(((i, run), buf, got)) = ahead.take() else {
            return Ok(false);
        };
        {
            self.in_flight -= 1;
            got.map_err(|e| {
                Fatal(format!(
                    "{}: pages at {:#x}: {e}",
                    self.mms[i].what, run.addr
                ))
            })?;
            for p in self.mms[i].plan.take_range(run.addr, run.addr + run.len) {
                let inside =
                    p.src == run.src && p.off >= run.off && p.off + p.len <= run.off + run.len;
                if inside {
                    let at = (p.off - run.off) as usize;
                    copy_in(
                        &mut self.mms[i],
                        &mut self.copied,
                        p,
                        &buf[at..at + p.len as usize],
                    )?;
                } else {
                    self.mms[i].plan.insert(p);
                }
            }
            self.spare.push(buf);
        }
        Ok(true)
    }

    fn control(&mut self, sock: &OwnedFd) -> std::result::Result<Control, Fatal> {
        let mut buf = vec![0u8; 1 << 16];
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (n, fds) = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let mut fds = Vec::new();
                for c in m
                    .cmsgs()
                    .map_err(|e| Fatal(format!("control message: {e}")))?
                {
                    if let ControlMessageOwned::ScmRights(f) = c {
                        fds.extend(f);
                    }
                }
                (m.bytes, fds)
            }
            Err(Errno::EINTR | Errno::EAGAIN) => return Ok(Control::Task),
            Err(_) => return Ok(Control::Closed),
        };
        // SAFETY-free ownership: these fds were just installed for us.
        let fds: Vec<OwnedFd> = fds.into_iter().map(crate::sys::fd::own).collect();
        if n == 0 {
            return Ok(Control::Closed);
        }
        match buf[0] {
            MSG_GO => Ok(Control::Go),
            MSG_RUN => Ok(Control::Run),
            MSG_TASK if n >= 5 && (n - 5) % 16 == 0 && fds.len() == 2 => {
                let idx = u32::from_ne_bytes(buf[1..5].try_into().unwrap()) as usize;
                let ranges: Vec<(u64, u64)> = buf[5..n]
                    .chunks_exact(16)
                    .map(|c| {
                        (
                            u64::from_ne_bytes(c[..8].try_into().unwrap()),
                            u64::from_ne_bytes(c[8..].try_into().unwrap()),
                        )
                    })
                    .collect();
                let t = self
                    .imgs
                    .tasks
                    .get(idx)
                    .ok_or_else(|| Fatal(format!("task index {idx} out of range")))?;
                if self.sources[idx].is_none() {
                    let m = match self.remote {
                        Some(_) => Mmap::empty(),
                        None => super::memory::open_pages(self.imgs, &t.pages, false)
                            .map_err(|e| Fatal(e.to_string()))?,
                    };
                    self.sources[idx] = Some(std::sync::Arc::new(m));
                }
                let mut fds = fds.into_iter();
                let (uffd, pidfd) = (fds.next().unwrap(), fds.next().unwrap());
                self.pidfds.push(pidfd);
                let plan = task_plan(&t.pages.entries, &ranges, idx);
                debug!(
                    "lazy pages: pid {}: {} MiB in {} mappings",
                    t.pid,
                    plan.bytes() >> 20,
                    ranges.len()
                );
                self.mms.push(Mm {
                    uffd,
                    plan,
                    retry: Vec::new(),
                    streamed: 0,
                    what: format!("pid {}", t.pid),
                });
                Ok(Control::Task)
            }
            _ => Err(Fatal(format!("a bad control message ({n} bytes)"))),
        }
    }

    fn event(&mut self, i: usize, m: &uffd::Msg) -> std::result::Result<(), Fatal> {
        // The copier's run first, where it matters ([`Copier`]): a fault
        // inside it, or any other event.
        let addr = m.arg[1] & !(PAGE - 1);
        let inside = |&(j, p): &(usize, Piece)| j == i && p.addr <= addr && addr < p.addr + p.len;
        let busy = self.copier.as_ref().and_then(|c| c.busy);
        if busy.is_some_and(|b| m.event != uffd::EVENT_PAGEFAULT || inside(&b)) {
            self.settle(true)?;
        }
        match m.event {
            uffd::EVENT_PAGEFAULT => {
                self.faults += 1;
                self.fault(i, m.arg[1] & !(PAGE - 1))?;
            }
            uffd::EVENT_FORK => {
                let child = Mm {
                    uffd: uffd::fork_fd(m),
                    plan: self.mms[i].plan.clone(),
                    retry: Vec::new(),
                    streamed: 0,
                    what: format!("a child forked by {}", self.mms[i].what),
                };
                debug!("lazy pages: {}", child.what);
                self.mms.push(child);
            }
            uffd::EVENT_REMAP => {
                let [from, to, len] = m.arg;
                self.mms[i].plan.remap(from, to, len);
            }
            uffd::EVENT_REMOVE | uffd::EVENT_UNMAP => {
                let [start, end, _] = m.arg;
                self.mms[i].plan.take_range(start, end);
            }
            e => {
                return Err(Fatal(format!(
                    "{}: unexpected userfaultfd event {e:#x}",
                    self.mms[i].what
                )))
            }
        }
        Ok(())
    }

    /// Answer a fault at `addr` (page-aligned) of mm `i`.
    fn fault(&mut self, i: usize, addr: u64) -> std::result::Result<(), Fatal> {
        let pieces = self.mms[i].plan.take_fault(addr, FAULT_WINDOW);
        let mut covered = false;
        for p in pieces {
            covered |= p.addr <= addr && addr < p.addr + p.len;
            if !self.fill(i, p)? && p.addr <= addr && addr < p.addr + p.len {
                self.mms[i].retry.push(addr);
            }
        }
        if covered {
            return Ok(());
        }
        // A hole (or a page already filled meanwhile): zeros, or a wake.
        let fd = self.mms[i].uffd.as_fd();
        match uffd::zeropage(fd, addr, PAGE) {
            (_, None) => Ok(()),
            (_, Some(Errno::EEXIST)) => {
                let _ = uffd::wake(fd, addr, PAGE);
                Ok(())
            }
            (_, Some(Errno::EAGAIN)) => {
                self.mms[i].retry.push(addr);
                Ok(())
            }
            // The mapping or the mm is gone: nobody waits for it.
            (_, Some(Errno::ENOENT | Errno::ESRCH | Errno::EINVAL)) => Ok(()),
            (_, Some(e)) => Err(Fatal(format!(
                "{}: zero page at {addr:#x}: {e}",
                self.mms[i].what
            ))),
        }
    }

    /// Copy piece `p` into mm `i`. False if the mm was changing and the
    /// rest went back into the plan.
    fn fill(&mut self, i: usize, p: Piece) -> std::result::Result<bool, Fatal> {
        let Some(src) = self.sources.get(p.src).and_then(|s| s.as_ref()) else {
            return Err(Fatal(format!("no pages file for piece {p:?}")));
        };
        let data: &[u8] = match &mut self.remote {
            Some(r) => {
                let name = self.imgs.tasks[p.src].pages.pages_file();
                self.buf.resize(p.len as usize, 0);
                r.fetch(&name, p.off, &mut self.buf).map_err(|e| {
                    Fatal(format!("{}: pages at {:#x}: {e}", self.mms[i].what, p.addr))
                })?;
                &self.buf
            }
            None => match src.as_slice().get(p.off as usize..(p.off + p.len) as usize) {
                Some(d) => {
                    // Checked before its first byte reaches the task.
                    let name = self.imgs.tasks[p.src].pages.pages_file();
                    self.imgs
                        .check_deferred(&name, src.as_slice(), p.off, p.len)
                        .map_err(|e| {
                            Fatal(format!("{}: pages at {:#x}: {e}", self.mms[i].what, p.addr))
                        })?;
                    d
                }
                None => {
                    return Err(Fatal(format!(
                        "{}: pages at {:#x} are beyond the end of their pages file",
                        self.mms[i].what, p.addr
                    )))
                }
            },
        };
        copy_in(&mut self.mms[i], &mut self.copied, p, data)
    }
}

/// How a copy of a piece ended ([`copy_run`]).
#[derive(Debug)]
enum Copied {
    /// All in (or the pages were there already).
    Done,
    /// The mm was changing: this rest of the piece is still to fill.
    Again(Piece),
    /// The mapping is gone (nothing waits for it).
    Gone,
    /// The whole mm is gone.
    MmGone,
    /// Anything else, at this address.
    Failed(u64, Errno),
}

/// UFFDIO_COPY of piece `p` from `data` (its bytes) through `uffd`; the
/// bytes that went in, and how it ended.
fn copy_run(uffd: std::os::fd::BorrowedFd<'_>, p: Piece, data: &[u8]) -> (u64, Copied) {
    let mut done = 0u64;
    let mut copied = 0u64;
    while done < p.len {
        let (n, err) = uffd::copy(uffd, p.addr + done, &data[done as usize..]);
        done += n;
        copied += n;
        match err {
            None => {}
            _ if n > 0 => {}
            // A page already there (written by the restore itself).
            Some(Errno::EEXIST) => done += PAGE,
            Some(Errno::EAGAIN) => {
                let rest = Piece {
                    addr: p.addr + done,
                    len: p.len - done,
                    off: p.off + done,
                    ..p
                };
                return (copied, Copied::Again(rest));
            }
            Some(Errno::ENOENT | Errno::EINVAL) => return (copied, Copied::Gone),
            Some(Errno::ESRCH) => return (copied, Copied::MmGone),
            Some(e) => return (copied, Copied::Failed(p.addr + done, e)),
        }
    }
    (copied, Copied::Done)
}

/// What a copy's end means for mm `mm`: the rest back into its plan
/// when it was changing (false), its plan dropped when it is gone.
fn copied_into(mm: &mut Mm, how: Copied) -> std::result::Result<bool, Fatal> {
    match how {
        Copied::Done | Copied::Gone => Ok(true),
        Copied::Again(rest) => {
            mm.plan.insert(rest);
            Ok(false)
        }
        Copied::MmGone => {
            mm.plan = Plan::default();
            Ok(true)
        }
        Copied::Failed(at, e) => Err(Fatal(format!("{}: copying pages to {at:#x}: {e}", mm.what))),
    }
}

/// Copy piece `p` of mm `mm` from `data` (its bytes), adding what went
/// in to `copied`. False if the mm was changing and the rest went back
/// into its plan.
fn copy_in(
    mm: &mut Mm,
    copied: &mut u64,
    p: Piece,
    data: &[u8],
) -> std::result::Result<bool, Fatal> {
    let (n, how) = copy_run(mm.uffd.as_fd(), p, data);
    *copied += n;
    copied_into(mm, how)
}

/// A second thread that copies background runs in from local images,
/// from the top of a plan while the daemon's thread goes from the bottom:
/// UFFDIO_COPY (each page allocated in the task) is what bounds a lazy
/// restore, and a plain one spreads it over the CPUs too. One run at a
/// time: the daemon settles it ([`Served::settle`]) before it answers a
/// fault inside it or reads any other event of the mms (a fork, mremap,
/// or unmap, which hold the mm changing until read, so the copy is
/// either in before them or comes back as [`Copied::Again`], whose rest
/// the plan takes before the event applies).
struct Copier {
    jobs: std::sync::mpsc::Sender<Job>,
    done: std::sync::mpsc::Receiver<(u64, std::result::Result<Copied, String>)>,
    /// Readable when a run is done (a byte each).
    wake: OwnedFd,
    /// The run on its way, and its mm.
    busy: Option<(usize, Piece)>,
}

/// One run for the copier: the mm's userfaultfd and its pages file.
struct Job {
    uffd: OwnedFd,
    p: Piece,
    src: std::sync::Arc<Mmap>,
}

/// The copier's thread: checks each run's deferred blocks, copies it,
/// says how it went, until the daemon drops its end.
fn copier_main(
    imgs: &Images,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: std::sync::mpsc::Sender<(u64, std::result::Result<Copied, String>)>,
    wake: OwnedFd,
) {
    for j in jobs {
        let p = j.p;
        let file = j.src.as_slice();
        let out = match file.get(p.off as usize..(p.off + p.len) as usize) {
            None => (
                0,
                Err("they are beyond the end of their pages file".to_string()),
            ),
            Some(d) => {
                let name = imgs.tasks[p.src].pages.pages_file();
                match imgs.check_deferred(&name, file, p.off, p.len) {
                    Err(e) => (0, Err(e.to_string())),
                    Ok(()) => {
                        let (n, how) = copy_run(j.uffd.as_fd(), p, d);
                        (n, Ok(how))
                    }
                }
            }
        };
        if done.send(out).is_err() {
            return;
        }
        let _ = nix::unistd::write(&wake, &[1]);
    }
}

enum Control {
    Task,
    Go,
    Run,
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn piece(addr: u64, len: u64, off: u64) -> Piece {
        Piece {
            addr,
            len,
            src: 0,
            off,
        }
    }

    #[test]
    fn fault_takes_the_window_around_the_address_faulting_run_first() {
        let mut p = Plan::default();
        p.insert(piece(0x10000, 0x4000, 0));
        p.insert(piece(0x20000, 0x80000, 0x4000));
        let got = p.take_fault(0x52000, 0x40000);
        // Window 0x40000-0x80000, inside the second run.
        assert_eq!(got, vec![piece(0x40000, 0x40000, 0x24000)]);
        let got = p.take_fault(0x11000, 0x40000);
        assert_eq!(
            got,
            vec![piece(0x10000, 0x4000, 0), piece(0x20000, 0x20000, 0x4000)]
        );
        // The end of the second run, then nothing is left.
        assert_eq!(
            p.take_fault(0x90000, 0x40000),
            vec![piece(0x80000, 0x20000, 0x64000)]
        );
        assert!(p.is_empty());
        assert_eq!(p.take_fault(0x90000, 0x40000), vec![]);
    }

    #[test]
    fn take_last_takes_the_top_of_the_highest_run() {
        let mut p = Plan::default();
        p.insert(piece(0x10000, 0x3000, 0));
        p.insert(piece(0x20000, 0x5000, 0x3000));
        assert_eq!(p.take_last(0x2000), Some(piece(0x23000, 0x2000, 0x6000)));
        assert_eq!(p.take_last(0x10000), Some(piece(0x20000, 0x3000, 0x3000)));
        assert_eq!(p.take_last(0x10000), Some(piece(0x10000, 0x3000, 0)));
        assert_eq!(p.take_last(0x1000), None);
    }

    #[test]
    fn peek_from_looks_without_taking() {
        let mut p = Plan::default();
        p.insert(piece(0x10000, 0x4000, 0));
        p.insert(piece(0x20000, 0x80000, 0x4000));
        assert_eq!(p.peek_from(0, 0x2000), Some(piece(0x10000, 0x2000, 0)));
        // From inside a run, and past its end to the next.
        assert_eq!(
            p.peek_from(0x12000, 0x100000),
            Some(piece(0x12000, 0x2000, 0x2000))
        );
        assert_eq!(
            p.peek_from(0x14000, 0x10000),
            Some(piece(0x20000, 0x10000, 0x4000))
        );
        assert_eq!(p.peek_from(0xa0000, 0x10000), None);
        assert_eq!(p.bytes(), 0x84000);
    }

    #[test]
    fn remap_moves_what_is_left() {
        let mut p = Plan::default();
        p.insert(piece(0x10000, 0x10000, 0));
        p.take_range(0x10000, 0x11000);
        p.remap(0x10000, 0x100000, 0x10000);
        assert_eq!(p.take_next(u64::MAX), Some(piece(0x101000, 0xf000, 0x1000)));
        assert!(p.is_empty());
    }

    /// A page-granular model: address page -> file page, or none.
    fn model(p: &Plan) -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        for (&s, &(e, _, off)) in &p.runs {
            for a in (s..e).step_by(PAGE as usize) {
                m.insert(a, off + (a - s));
            }
        }
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Taking windows never loses, duplicates or shifts a page, always
        /// brings the faulting page first if the plan has it, and stays
        /// in the window.
        #[test]
        fn windows_partition_the_plan(
            runs in prop::collection::vec((0u64..512, 1u64..64), 0..12),
            faults in prop::collection::vec(0u64..600, 1..40),
            wshift in 0u32..6,
        ) {
            let mut plan = Plan::default();
            let mut off = 0;
            for (start, n) in runs {
                plan.insert(piece(start * PAGE, n * PAGE, off * PAGE));
                off += n;
            }
            let mut want = model(&plan);
            let window = PAGE << wshift;
            for f in faults {
                let addr = f * PAGE;
                let had = want.contains_key(&addr);
                let got = plan.take_fault(addr, window);
                if had {
                    prop_assert!(got[0].addr <= addr && addr < got[0].addr + got[0].len);
                }
                for p in &got {
                    prop_assert!(p.addr & !(window - 1) == addr & !(window - 1));
                    for k in 0..p.len / PAGE {
                        let a = p.addr + k * PAGE;
                        prop_assert_eq!(want.remove(&a), Some(p.off + k * PAGE));
                    }
                }
                prop_assert_eq!(&model(&plan), &want);
            }
            while let Some(p) = plan.take_next(3 * PAGE) {
                prop_assert!(p.len <= 3 * PAGE);
                for k in 0..p.len / PAGE {
                    prop_assert_eq!(want.remove(&(p.addr + k * PAGE)), Some(p.off + k * PAGE));
                }
            }
            prop_assert!(want.is_empty());
        }
    }
}
