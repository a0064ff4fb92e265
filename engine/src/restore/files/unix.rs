//! UNIX sockets.
//!
//! A pair whose ends have no name (a socketpair) is made together by
//! socketpair, by the task that holds them or by the engine when the ends
//! are in several tasks. What was queued for reception on each end is
//! sent again from the other end (message by message, so datagram and
//! seqpacket boundaries stay), before the shutdown state is put back (a
//! shut-down end could not be written into any more).
//!
//! Every other socket (bound, listening, connected by name: the
//! [`Web`]) is made by the engine, before any task exists, in the order
//! the connections need: each socket is bound (its file given the dumped
//! mode and owner, removed again if the path was), datagrams queued on a
//! bound socket are sent to its name, listeners listen, the connections
//! that were accepted are connected and accepted again, then those that
//! wait to be, in the order of their file ids, then datagram sockets are
//! connected to their peers. The tasks take their sockets from the
//! engine.
//!
//! Files in flight (SCM_RIGHTS) are made by the engine first, each with
//! the other parts of its object (a pipe's other end, a pair's other
//! end), and sent again with their messages; a message with its sender's
//! credentials (SCM_CREDENTIALS) is sent by a short-lived process with
//! the sender's pid (before the tree exists, so the pid is free). A pair
//! with such messages in its queues is made by the engine too, since the
//! task that makes a pair for itself could not send them. In a tree with
//! a pid namespace of its own those queues wait for the tree ([`Step`]).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;
use crate::restore::stage::{EngineFds, Kind, Restorer};
use crate::sys::unix_sock::{self as us, autobound};

pub struct Unix;

const TCP_LISTEN: u8 = 10;

/// Whether `f` is one end of a pair socketpair makes again: both ends
/// name each other, neither is bound to a name of its own choosing
/// (autobind is), neither listens, and no other socket names either as
/// its peer.
fn is_pair(imgs: &Images, f: &pb::FileEntry) -> bool {
    let Some(me) = &f.usk else { return false };
    let plain = |u: &pb::UnixSkEntry| {
        (u.name.is_empty() || autobound(&u.name)) && u.state as u8 != TCP_LISTEN && u.peer != 0
    };
    if !plain(me) {
        return false;
    }
    let mut other = None;
    for u in imgs.files.values().filter_map(|o| o.usk.as_ref()) {
        if u.ino == me.peer {
            other = Some(u);
        } else if u.ino != me.ino && (u.peer == me.ino || u.peer == me.peer) {
            return false;
        }
    }
    other.is_some_and(|o| plain(o) && o.peer == me.ino && o.r#type == me.r#type)
}

/// One end of a pair, as it is to be made.
#[derive(Debug)]
struct EndSpec {
    ino: u32,
    autobind: bool,
    opts: pb::SkOptsEntry,
    /// The socket's own shutdown bits (1 = receive, 2 = send).
    shutdown: i32,
    /// What is queued for reception on it, message by message.
    queue: Vec<QMsg>,
    /// Its autobind name, tried again first.
    name: Vec<u8>,
    peek_off: Option<i32>,
}

/// One message to queue again: its bytes, the engine's fds of the files
/// in flight with it, its sender's credentials.
#[derive(Debug)]
struct QMsg {
    data: Vec<u8>,
    fds: Vec<RawFd>,
    creds: Option<(i32, u32, u32)>,
}

/// The engine's open files in flight, by file id.
type Flight = BTreeMap<u32, OwnedFd>;

/// The messages queued for file `id`, the files in flight with them taken
/// from `flight`.
fn queue_of(imgs: &Images, pid: Pid, id: u32, flight: &Flight) -> Result<Vec<QMsg>> {
    let Some(q) = imgs.sk_queues.get(&id) else {
        return Ok(Vec::new());
    };
    let anc = imgs.sk_queue_scm.get(&id);
    q.iter()
        .enumerate()
        .map(|(i, m)| {
            let a = anc.and_then(|a| a.get(i)).cloned().unwrap_or_default();
            let fds = a
                .rights
                .iter()
                .map(|r| {
                    flight.get(r).map(|f| f.as_raw_fd()).ok_or_else(|| {
                        Error::task(
                            pid,
                            format!("file {id}"),
                            format!("file {r} in flight in its queue was not made"),
                        )
                    })
                })
                .collect::<Result<Vec<RawFd>>>()?;
            Ok(QMsg {
                data: m.clone(),
                fds,
                creds: a.creds,
            })
        })
        .collect()
}

/// Whether messages queued on file `id` carry files in flight or their
/// senders' credentials: only the engine can send them again.
fn has_ancillary(imgs: &Images, id: u32) -> bool {
    imgs.sk_queue_scm
        .get(&id)
        .is_some_and(|q| q.iter().any(|a| !a.rights.is_empty() || a.creds.is_some()))
}

/// Sends `m` again, as its sender did (see `us::send_scm_as`).
fn resend(fd: RawFd, m: &QMsg, to: Option<&[u8]>) -> nix::Result<()> {
    match m.creds {
        Some(c) => us::send_scm_as(fd, &m.data, &m.fds, c, to),
        None => us::send_scm(fd, &m.data, &m.fds, None, to),
    }
}

/// Both ends of a pair, the one of the smaller inode first.
#[derive(Debug)]
struct Pair {
    r#type: i32,
    ends: [EndSpec; 2],
}

impl Pair {
    fn key(&self) -> (i32, u64) {
        (pb::FdTypes::Unixsk as i32, self.ends[0].ino as u64)
    }
}

fn usk(f: &pb::FileEntry) -> &pb::UnixSkEntry {
    f.usk.as_ref().expect("validated")
}

/// The pair `f` is an end of, and which end it is.
fn pair_of(imgs: &Images, pid: Pid, f: &pb::FileEntry, flight: &Flight) -> Result<(Pair, usize)> {
    let me = usk(f);
    let what = || format!("file {} (socket:[{}])", f.id, me.ino);
    let peer = imgs
        .files
        .values()
        .find(|o| o.usk.as_ref().is_some_and(|u| u.ino == me.peer))
        .ok_or_else(|| {
            Error::task(
                pid,
                what(),
                format!("its peer socket:[{}] is not in files.img", me.peer),
            )
        })?;
    let other = usk(peer);
    if other.peer != me.ino || other.r#type != me.r#type {
        return Err(Error::task(
            pid,
            what(),
            format!(
                "its peer socket:[{}] is not the other end of a pair with it",
                me.peer
            ),
        ));
    }
    let spec = |f: &pb::FileEntry| -> Result<EndSpec> {
        let u = usk(f);
        Ok(EndSpec {
            ino: u.ino,
            // The kernel gave it a name (check: only such a name).
            autobind: !u.name.is_empty(),
            opts: u.opts.clone(),
            shutdown: u.shutdown.unwrap_or(0) & 3,
            queue: queue_of(imgs, pid, f.id, flight)?,
            name: u.name.clone(),
            peek_off: u.peek_off,
        })
    };
    let (a, b) = (spec(f)?, spec(peer)?);
    Ok(if a.ino < b.ino {
        (
            Pair {
                r#type: me.r#type as i32,
                ends: [a, b],
            },
            0,
        )
    } else {
        (
            Pair {
                r#type: me.r#type as i32,
                ends: [b, a],
            },
            1,
        )
    })
}

impl FdKind for Unix {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Unixsk
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        let Some(u) = &f.usk else {
            return Err("UNIXSK without unix_sk entry".into());
        };
        if !matches!(
            u.r#type as i32,
            libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
        ) {
            return Err(format!(
                "socket:[{}]: unknown socket type {}",
                u.ino, u.r#type
            ));
        }
        if u.name.len() > 108 {
            return Err(format!(
                "socket:[{}]: a name of {} bytes",
                u.ino,
                u.name.len()
            ));
        }
        if u.name.first().is_some_and(|&c| c != 0)
            && u.name.contains(&b'/')
            && u.name_dir.as_deref().is_some_and(|d| !d.starts_with('/'))
        {
            return Err(format!(
                "socket:[{}]: name_dir is not an absolute path",
                u.ino
            ));
        }
        if u.uflags & USK_EXTERN != 0 && u.name.is_empty() {
            return Err(format!(
                "socket:[{}]: outside the tree, with no name to connect to",
                u.ino
            ));
        }
        if u.state as u8 == TCP_LISTEN && u.peer != 0 {
            return Err(format!("socket:[{}]: listening, with a peer", u.ino));
        }
        Ok(())
    }

    fn source(
        &self,
        imgs: &Images,
        pid: Pid,
        _fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        if !is_pair(imgs, f) {
            // The engine made it (`Web`); the files stage injects it.
            return Err(Error::task(
                pid,
                format!("file {} (socket:[{}])", f.id, usk(f).ino),
                "a UNIX socket the engine should have made",
            ));
        }
        let (pair, which) = pair_of(imgs, pid, f, &Flight::new())?;
        Ok(Arc::new(End {
            pair,
            which,
            flags: usk(f).flags as i32,
        }))
    }

    fn object(&self, f: &pb::FileEntry) -> Option<u64> {
        f.usk
            .as_ref()
            .filter(|u| u.peer != 0)
            .map(|u| u.ino.min(u.peer) as u64)
    }

    fn open_in_engine(
        &self,
        imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        pair_in_engine(imgs, pid, f, pairs, &Flight::new(), None)
    }
}

/// One end of a pair, made by the engine (`FdKind::open_in_engine`),
/// with the files in flight in its queues taken from `flight`.
fn pair_in_engine(
    imgs: &Images,
    pid: Pid,
    f: &pb::FileEntry,
    pairs: &mut EnginePairs,
    flight: &Flight,
    late: Option<&mut Vec<Step>>,
) -> Result<OwnedFd> {
    {
        let (pair, which) = pair_of(imgs, pid, f, flight)?;
        let key = pair.key();
        let ino = pair.ends[which].ino;
        let what = || format!("socket:[{ino}]");
        if let std::collections::btree_map::Entry::Vacant(slot) = pairs.entry(key) {
            let wait = pair.ends.iter().any(|e| waits_for_ns(imgs, &e.queue));
            let [a, b] = if wait {
                new_pair(pair.r#type)
            } else {
                make_pair(&pair)
            }
            .map_err(|e| Error::sys(pid, what(), e))?;
            // SAFETY: the pair's fds are fresh and now ours alone.
            let (a, b) = unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) };
            if wait {
                let late = late.ok_or_else(|| {
                    Error::unsupported(
                        pid,
                        what(),
                        "a pair in flight with its senders' credentials queued, in a tree with a pid namespace of its own: not supported yet",
                    )
                })?;
                let dup = |fd: &OwnedFd| {
                    fd.try_clone()
                        .map_err(|e| Error::io("dup", format!("pid {pid}: {}", what()), e))
                };
                late.push(Step::Pair {
                    pid,
                    fds: [dup(&a)?, dup(&b)?],
                    pair: Box::new(pair),
                });
            }
            slot.insert((a, b));
        }
        let (a, b) = &pairs[&key];
        let end = if which == 0 { a } else { b };
        let fd = end
            .try_clone()
            .map_err(|e| Error::io("socket", format!("pid {pid}: {}", what()), e))?;
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(super::nonblock(
                usk(f).flags,
            ))),
        )
        .map_err(|e| Error::sys(pid, format!("{}: flags", what()), e))?;
        Ok(fd)
    }
}

// SAFETY (the functions below): plain syscalls on sockets we create and
// own, with buffers and option values of the lengths we pass. They
// allocate nothing, so a freshly cloned child can run them.

fn setsockopt_raw<T>(fd: RawFd, opt: i32, v: &T) -> nix::Result<()> {
    Errno::result(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A buffer size: getsockopt gave the doubled value, setsockopt doubles
/// what it gets; past the sysctl limits only as root (the FORCE options).
fn set_buf(fd: RawFd, force: i32, plain: i32, got: u32) -> nix::Result<()> {
    let v = (got / 2) as i32;
    match setsockopt_raw(fd, force, &v) {
        Err(Errno::EPERM) => setsockopt_raw(fd, plain, &v),
        r => r,
    }
}

fn set_timeout(fd: RawFd, opt: i32, sec: u64, usec: u64) -> nix::Result<()> {
    if sec == 0 && usec == 0 {
        return Ok(());
    }
    let tv = libc::timeval {
        tv_sec: sec as libc::time_t,
        tv_usec: usec as libc::suseconds_t,
    };
    setsockopt_raw(fd, opt, &tv)
}

fn send_all(fd: RawFd, m: &[u8], stream: bool) -> nix::Result<()> {
    let mut off = 0;
    loop {
        let n = Errno::result(unsafe {
            libc::send(
                fd,
                m[off..].as_ptr().cast(),
                m.len() - off,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        })? as usize;
        off += n;
        if off >= m.len() {
            return Ok(());
        }
        if !stream {
            // A message goes whole or not at all.
            return Err(Errno::EMSGSIZE);
        }
    }
}

/// The options that are flags: SO_PASSSEC, SO_REUSEADDR, SO_KEEPALIVE.
fn set_flags(fd: RawFd, o: &pb::SkOptsEntry) -> nix::Result<()> {
    for (on, opt) in [
        (o.so_passsec, libc::SO_PASSSEC),
        (o.reuseaddr, libc::SO_REUSEADDR),
        (o.so_keepalive, libc::SO_KEEPALIVE),
    ] {
        if on == Some(true) {
            setsockopt_raw(fd, opt, &1i32)?;
        }
    }
    Ok(())
}

/// The pair, made and filled: options, then the queued data (each end's
/// sent from the other), then SO_PASSCRED and the shutdown state.
fn make_pair(p: &Pair) -> nix::Result<[RawFd; 2]> {
    let sv = new_pair(p.r#type)?;
    if let Err(e) = fill_pair(sv, p) {
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1]);
        }
        return Err(e);
    }
    Ok(sv)
}

fn new_pair(r#type: i32) -> nix::Result<[RawFd; 2]> {
    let mut sv = [0i32; 2];
    Errno::result(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            r#type | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    Ok(sv)
}

/// Gives a new pair its options, queues, names and shutdown state.
fn fill_pair(sv: [RawFd; 2], p: &Pair) -> nix::Result<()> {
    let stream = p.r#type == libc::SOCK_STREAM;
    {
        for (fd, e) in sv.iter().zip(&p.ends) {
            let o = &e.opts;
            set_buf(*fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, o.so_sndbuf)?;
            set_buf(*fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, o.so_rcvbuf)?;
            set_timeout(*fd, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)?;
            set_timeout(*fd, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)?;
            set_flags(*fd, o)?;
        }
        for (i, e) in p.ends.iter().enumerate() {
            for m in &e.queue {
                // (Only the engine has messages with more than bytes.)
                if m.fds.is_empty() && m.creds.is_none() {
                    send_all(sv[1 - i], &m.data, stream)?;
                } else {
                    resend(sv[1 - i], m, None)?;
                }
            }
        }
        for (fd, e) in sv.iter().zip(&p.ends) {
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            if e.autobind {
                // The name it had if it is free, else one the kernel picks.
                match us::bind(b, &e.name) {
                    Err(Errno::EADDRINUSE) => us::bind(b, b"")?,
                    r => r?,
                }
            }
            if let Some(off) = e.peek_off {
                us::setsockopt_int(b, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
            }
            if e.opts.so_passcred == Some(true) {
                setsockopt_raw(*fd, libc::SO_PASSCRED, &1i32)?;
            }
            let how = match e.shutdown {
                1 => libc::SHUT_RD,
                2 => libc::SHUT_WR,
                3 => libc::SHUT_RDWR,
                _ => continue,
            };
            Errno::result(unsafe { libc::shutdown(*fd, how) })?;
        }
    }
    Ok(())
}

/// One end of a pair, made by the task itself; both ends in one task
/// share the pair.
#[derive(Debug)]
struct End {
    pair: Pair,
    which: usize,
    flags: i32,
}

impl OpenFd for End {
    fn open(&self, cx: &mut ChildFds) -> nix::Result<RawFd> {
        let key = self.pair.key();
        let (a, b) = match cx.pairs.iter().find(|p| p.0 == key) {
            Some(&(_, a, b)) => (a, b),
            None => {
                let [x, y] = make_pair(&self.pair)?;
                // Keep both ends above every fd the task uses.
                let a = unsafe { libc::fcntl(x, libc::F_DUPFD_CLOEXEC, cx.efd + 1) };
                let b = unsafe { libc::fcntl(y, libc::F_DUPFD_CLOEXEC, cx.efd + 1) };
                unsafe {
                    libc::close(x);
                    libc::close(y);
                }
                let (a, b) = (Errno::result(a)?, Errno::result(b)?);
                cx.pairs.push((key, a, b));
                (a, b)
            }
        };
        let end = if self.which == 0 { a } else { b };
        let fd = Errno::result(unsafe { libc::fcntl(end, libc::F_DUPFD, 0) })?;
        Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFL, self.flags & libc::O_NONBLOCK) })?;
        Ok(fd)
    }

    fn describe(&self) -> String {
        format!("socket:[{}]", self.pair.ends[self.which].ino)
    }
}

/// CRIU's uflags bit of a socket outside the tree, connected to again.
const USK_EXTERN: u32 = 1;

fn shown(name: &[u8]) -> String {
    match name.strip_prefix(b"\0") {
        Some(abs) => format!("@{}", String::from_utf8_lossy(abs)),
        None => String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_string(),
    }
}

pub const KIND: Kind = Kind {
    name: "unix sockets",
    validate: |_| Ok(()),
    new: |_, _| Ok(Box::new(Web::default())),
};

/// The UNIX sockets that are not plain pairs, made by the engine; the
/// files it bound, removed again should the restore fail.
#[derive(Default)]
pub struct Web {
    bound: Vec<PathBuf>,
    released: bool,
    /// What waits for the tree (see [`Step`]), in order.
    late: Vec<Step>,
    /// The files in flight the late queues send.
    flight: Flight,
}

/// Work on a socket put off until the tree exists. In a tree with a pid
/// namespace of its own, a queued message's sender is a pid of that
/// namespace, which only a process inside it can name (the kernel takes
/// SCM_CREDENTIALS' pid in the sender's namespace and tells the receiver
/// its own view of it); the engine's driver is in there once the tree is
/// made (restore/ns.rs). So such a queue is sent then, and what must
/// follow it (the peek offset, the shutdown state) waits with it.
enum Step {
    /// A pair to give its options, queues and state (`fill_pair`).
    Pair {
        pid: Pid,
        fds: [OwnedFd; 2],
        pair: Box<Pair>,
    },
    /// Messages to send from `from` (to the address `to`).
    Send {
        pid: Pid,
        what: String,
        from: OwnedFd,
        to: Option<Vec<u8>>,
        queue: Vec<QMsg>,
    },
    /// The last settings of a socket whose queue waited.
    Finish {
        pid: Pid,
        what: String,
        fd: OwnedFd,
        peek_off: Option<i32>,
        shutdown: i32,
    },
}

/// Whether queue `q` waits for the tree's pid namespace (see [`Step`]).
fn waits_for_ns(imgs: &Images, q: &[QMsg]) -> bool {
    imgs.ns.pid && q.iter().any(|m| m.creds.is_some())
}

impl Step {
    fn run(&self) -> Result<()> {
        match self {
            Step::Pair { pid, fds, pair } => {
                fill_pair([fds[0].as_raw_fd(), fds[1].as_raw_fd()], pair).map_err(|e| {
                    Error::sys(
                        *pid,
                        format!(
                            "socket:[{}]: its queues, in its pid namespace",
                            pair.ends[0].ino
                        ),
                        e,
                    )
                })
            }
            Step::Send {
                pid,
                what,
                from,
                to,
                queue,
            } => {
                for m in queue {
                    resend(from.as_raw_fd(), m, to.as_deref()).map_err(|e| {
                        Error::sys(*pid, format!("{what}: queueing its data again"), e)
                    })?;
                }
                Ok(())
            }
            Step::Finish {
                pid,
                what,
                fd,
                peek_off,
                shutdown,
            } => finish_socket(*pid, what, fd.as_fd(), *peek_off, *shutdown),
        }
    }
}

/// The last settings of a socket, after its queue: the peek offset, and
/// the shutdown state (a shut-down end could not be written into).
fn finish_socket(
    pid: Pid,
    what: &str,
    fd: std::os::fd::BorrowedFd<'_>,
    peek_off: Option<i32>,
    shutdown: i32,
) -> Result<()> {
    let err = |op: &str, e| Error::sys(pid, format!("{what}: {op}"), e);
    if let Some(off) = peek_off {
        us::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)
            .map_err(|e| err("SO_PEEK_OFF", e))?;
    }
    us::shutdown(fd, shutdown).map_err(|e| err("shutdown", e))
}

impl Drop for Web {
    fn drop(&mut self) {
        if !self.released {
            for p in &self.bound {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl Restorer for Web {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let mut late = Vec::new();
        let flight = in_flight(imgs, fds, &mut late)?;
        self.late = late;
        let made = self.build(imgs, &flight)?;
        for (id, fd) in made {
            fds.descriptions.insert(id, fd);
        }
        if !self.late.is_empty() {
            self.flight = flight;
        }
        Ok(())
    }

    fn tree_created(&mut self, _imgs: &Images) -> Result<()> {
        for step in std::mem::take(&mut self.late) {
            step.run()?;
        }
        self.flight.clear();
        Ok(())
    }

    fn released(&mut self) {
        self.released = true;
    }
}

/// The files in flight in the queues, made by the engine before the
/// sockets they are sent to again. The parts of one object (a pipe's
/// ends, a pair's ends) are made together, so that a task's fd to the
/// other part meets the one in flight: every part a task holds is left in
/// `fds` for the task to take, as is every pair of the tree with files in
/// flight in its queues (the engine sends them, the task could not).
fn in_flight(imgs: &Images, fds: &mut EngineFds, late: &mut Vec<Step>) -> Result<Flight> {
    let holder = super::holders(imgs);
    let mut flight = Flight::new();
    let mut pairs = EnginePairs::new();
    let wanted: Vec<(u32, u32)> = imgs
        .sk_queue_scm
        .iter()
        .flat_map(|(to, q)| {
            q.iter()
                .flat_map(move |a| a.rights.iter().map(move |r| (*r, *to)))
        })
        .collect();
    let pid_of = |id: u32, to: u32| {
        holder
            .get(&id)
            .or_else(|| holder.get(&to))
            .map_or(0, |h| h.0)
    };
    let dup = |pid: Pid, id: u32, fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| Error::io("dup", format!("pid {pid}: file {id}, in flight"), e))
    };
    for (id, to) in wanted {
        let f = imgs.file(id);
        let kind = super::kind_of(f.r#type).expect("validated");
        let group: Vec<u32> = match kind.object(f) {
            Some(o) => imgs
                .files
                .values()
                .filter(|g| g.r#type == f.r#type && kind.object(g) == Some(o))
                .map(|g| g.id)
                .collect(),
            None => vec![id],
        };
        for g in group {
            if flight.contains_key(&g) {
                continue;
            }
            let pid = pid_of(g, to);
            if let Some(fd) = fds.descriptions.get(&g) {
                flight.insert(g, dup(pid, g, fd)?);
                continue;
            }
            let fd = kind
                .open_in_engine(imgs, pid, imgs.file(g), &mut pairs)
                .map_err(|e| {
                    e.context(format!(
                        "file {g}, {} file {to}'s queue",
                        if g == id {
                            "in flight in"
                        } else {
                            "a part of a file in flight in"
                        }
                    ))
                })?;
            if holder.contains_key(&g) {
                fds.descriptions.insert(g, dup(pid, g, &fd)?);
            }
            flight.insert(g, fd);
        }
    }
    for f in imgs.files.values() {
        let Some((pid, _, _)) = holder.get(&f.id).copied() else {
            continue;
        };
        if fds.descriptions.contains_key(&f.id) || !is_pair(imgs, f) {
            continue;
        }
        let peer = imgs
            .files
            .values()
            .find(|o| o.usk.as_ref().is_some_and(|u| u.ino == usk(f).peer))
            .map_or(0, |o| o.id);
        if has_ancillary(imgs, f.id) || has_ancillary(imgs, peer) {
            let fd = pair_in_engine(imgs, pid, f, &mut pairs, &flight, Some(&mut *late))?;
            fds.descriptions.insert(f.id, fd);
        }
    }
    Ok(flight)
}

/// A socket of the web: its entry, and the task to name in errors.
struct Sk<'a> {
    id: u32,
    pid: Pid,
    u: &'a pb::UnixSkEntry,
}

impl Sk<'_> {
    fn what(&self) -> String {
        format!("file {} (socket:[{}])", self.id, self.u.ino)
    }

    fn err(&self, op: &str, e: Errno) -> Error {
        Error::sys(self.pid, format!("{}: {op}", self.what()), e)
    }

    /// A copy of `fd` for work that waits ([`Step`]).
    fn dup(&self, fd: &OwnedFd) -> Result<OwnedFd> {
        fd.try_clone()
            .map_err(|e| Error::io("dup", format!("pid {}: {}", self.pid, self.what()), e))
    }

    fn listening(&self) -> bool {
        self.u.state as u8 == TCP_LISTEN
    }

    /// A name of its own choosing (not the kernel's).
    fn named(&self) -> bool {
        !self.u.name.is_empty() && !autobound(&self.u.name)
    }

    /// The address to reach it by from the engine: its abstract name, or
    /// its path made absolute (the peer's address a connected socket
    /// reports is the bound one, however it was reached).
    fn address(&self) -> Vec<u8> {
        match self.path() {
            Some(p) => p.into_os_string().into_encoded_bytes(),
            None => self.u.name.clone(),
        }
    }

    fn path(&self) -> Option<PathBuf> {
        let n = &self.u.name;
        if n.first().is_none_or(|&c| c == 0) {
            return None;
        }
        let n = String::from_utf8_lossy(n)
            .trim_end_matches('\0')
            .to_string();
        Some(match &self.u.name_dir {
            Some(d) if !n.starts_with('/') => PathBuf::from(d).join(n),
            _ => PathBuf::from(n),
        })
    }
}

impl Web {
    fn build(&mut self, imgs: &Images, flight: &Flight) -> Result<BTreeMap<u32, OwnedFd>> {
        let mut pid_of: BTreeMap<u32, Pid> = BTreeMap::new();
        for t in &imgs.tasks {
            for fd in &t.fdinfo {
                pid_of.entry(fd.id).or_insert(t.pid);
            }
        }
        let web: Vec<Sk<'_>> = imgs
            .files
            .values()
            .filter(|f| f.usk.is_some() && pid_of.contains_key(&f.id) && !is_pair(imgs, f))
            .map(|f| Sk {
                id: f.id,
                pid: pid_of[&f.id],
                u: usk(f),
            })
            .collect();
        if web.is_empty() {
            return Ok(BTreeMap::new());
        }
        let by_ino: BTreeMap<u32, &Sk<'_>> = web.iter().map(|s| (s.u.ino, s)).collect();
        // Peers outside the tree (--ext-unix-sk), reached by their names.
        let external: BTreeMap<u32, &pb::UnixSkEntry> = imgs
            .files
            .values()
            .filter_map(|f| f.usk.as_ref())
            .filter(|u| u.uflags & USK_EXTERN != 0)
            .map(|u| (u.ino, u))
            .collect();
        let mut out: BTreeMap<u32, OwnedFd> = BTreeMap::new();

        // Connections that were accepted from a listener of the tree: the
        // accepted end carries the listener's name, the client none.
        let mut accepted: BTreeMap<u32, (u32, u32)> = BTreeMap::new(); // accepted ino -> (listener, client)
        for a in &web {
            let Some(c) = by_ino.get(&a.u.peer) else {
                continue;
            };
            if a.listening()
                || c.named()
                || c.u.peer != a.u.ino
                || a.u.r#type as i32 == libc::SOCK_DGRAM
            {
                continue;
            }
            if let Some(l) = web.iter().find(|l| {
                l.listening()
                    && l.u.r#type == a.u.r#type
                    && l.u.name == a.u.name
                    && !a.u.name.is_empty()
            }) {
                accepted.insert(a.u.ino, (l.u.ino, c.u.ino));
            }
        }
        // Connected pairs of the web made by socketpair (stream or
        // seqpacket whose listener is gone): their names are not kept.
        let mut paired: BTreeMap<u32, u32> = BTreeMap::new();
        for a in &web {
            let Some(b) = by_ino.get(&a.u.peer) else {
                continue;
            };
            if a.u.r#type as i32 != libc::SOCK_DGRAM
                && !a.listening()
                && b.u.peer == a.u.ino
                && !accepted.contains_key(&a.u.ino)
                && !accepted.contains_key(&b.u.ino)
                && !accepted
                    .values()
                    .any(|(_, c)| *c == a.u.ino || *c == b.u.ino)
                && a.u.ino < b.u.ino
            {
                paired.insert(a.u.ino, b.u.ino);
            }
        }

        // Every socket, with its options and name; datagrams queued on a
        // bound one are sent to it now, before it connects anywhere.
        let mut finish_late: std::collections::BTreeSet<u32> = Default::default();
        let mut socks: BTreeMap<u32, OwnedFd> = BTreeMap::new();
        for (a, b) in &paired {
            let sa = by_ino[a];
            let (x, y) = us::socketpair(sa.u.r#type as i32).map_err(|e| sa.err("socketpair", e))?;
            socks.insert(*a, x);
            socks.insert(*b, y);
        }
        for s in &web {
            if accepted.contains_key(&s.u.ino) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(v) = socks.entry(s.u.ino) {
                v.insert(us::socket(s.u.r#type as i32).map_err(|e| s.err("socket", e))?);
            }
            let fd = socks[&s.u.ino].as_fd();
            set_opts(s, fd)?;
            if !s.u.name.is_empty() && !paired.values().chain(paired.keys()).any(|i| *i == s.u.ino)
            {
                self.bind(s, fd)?;
            }
            if s.u.r#type as i32 == libc::SOCK_DGRAM && s.named() {
                let q = queue_of(imgs, s.pid, s.id, flight)?;
                if waits_for_ns(imgs, &q) {
                    let t = us::socket(libc::SOCK_DGRAM).map_err(|e| s.err("socket", e))?;
                    finish_late.insert(s.u.ino);
                    self.late.push(Step::Send {
                        pid: s.pid,
                        what: s.what(),
                        from: t,
                        to: Some(s.address()),
                        queue: q,
                    });
                } else if !q.is_empty() {
                    let t = us::socket(libc::SOCK_DGRAM).map_err(|e| s.err("socket", e))?;
                    for m in q {
                        resend(t.as_raw_fd(), &m, Some(&s.address()))
                            .map_err(|e| s.err("queueing its datagrams again", e))?;
                    }
                }
            }
            if s.u.deleted == Some(true) {
                if let Some(p) = s.path() {
                    std::fs::remove_file(&p).map_err(|e| {
                        Error::io(
                            &p,
                            format!("pid {}: {}: removing its path again", s.pid, s.what()),
                            e,
                        )
                    })?;
                    self.bound.retain(|b| *b != p);
                }
            }
            if s.listening() {
                us::listen(fd, s.u.backlog as i32).map_err(|e| s.err("listen", e))?;
            }
        }

        // Connections: the accepted ones first (accept() gives the rest
        // after them), in file id order.
        let mut acc: Vec<(u32, u32, u32)> =
            accepted.iter().map(|(a, (l, c))| (*a, *l, *c)).collect();
        acc.sort_by_key(|(_, _, c)| by_ino[c].id);
        for (a, l, c) in acc {
            let (sa, sl, sc) = (by_ino[&a], by_ino[&l], by_ino[&c]);
            us::connect(socks[&c].as_fd(), &sl.address())
                .map_err(|e| sc.err("connect to its listener", e))?;
            let fd =
                us::accept(socks[&l].as_fd()).map_err(|e| sa.err("accept from its listener", e))?;
            set_opts(sa, fd.as_fd())?;
            socks.insert(a, fd);
        }
        let mut clients: Vec<&Sk<'_>> = web
            .iter()
            .filter(|s| {
                by_ino.get(&s.u.peer).is_some_and(|p| {
                    (p.listening() && !accepted.contains_key(&s.u.ino))
                        || (s.u.r#type as i32 == libc::SOCK_DGRAM && p.named())
                })
            })
            .collect();
        clients.sort_by_key(|s| s.id);
        let mut outside: Vec<&Sk<'_>> = web
            .iter()
            .filter(|s| external.contains_key(&s.u.peer))
            .collect();
        outside.sort_by_key(|s| s.id);
        for s in outside {
            let p = external[&s.u.peer];
            us::connect(socks[&s.u.ino].as_fd(), &p.name).map_err(|e| {
                s.err(
                    &format!(
                        "connect to its peer outside the tree, socket:[{}] ({})",
                        p.ino,
                        shown(&p.name)
                    ),
                    e,
                )
            })?;
        }
        for s in clients {
            let p = by_ino[&s.u.peer];
            us::connect(socks[&s.u.ino].as_fd(), &p.address())
                .map_err(|e| s.err(&format!("connect to socket:[{}]", p.u.ino), e))?;
        }

        // Connected streams get their queues back from their peers, then
        // every socket its last options and shutdown state.
        for s in &web {
            if s.u.r#type as i32 == libc::SOCK_DGRAM {
                continue;
            }
            let q = queue_of(imgs, s.pid, s.id, flight)?;
            if q.is_empty() {
                continue;
            }
            let from = socks
                .get(&s.u.peer)
                .filter(|_| by_ino.get(&s.u.peer).is_some_and(|p| p.u.peer == s.u.ino))
                .ok_or_else(|| {
                    Error::task(
                        s.pid,
                        s.what(),
                        "data queued, and no peer in the image to send it",
                    )
                })?;
            if waits_for_ns(imgs, &q) {
                finish_late.extend([s.u.ino, s.u.peer]);
                self.late.push(Step::Send {
                    pid: s.pid,
                    what: s.what(),
                    from: s.dup(from)?,
                    to: None,
                    queue: q,
                });
                continue;
            }
            for m in q {
                resend(from.as_raw_fd(), &m, None)
                    .map_err(|e| s.err("queueing its data again", e))?;
            }
        }
        for s in &web {
            let fd = socks.remove(&s.u.ino).expect("made above");
            if s.u.opts.so_passcred == Some(true) {
                us::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
                    .map_err(|e| s.err("SO_PASSCRED", e))?;
            }
            if finish_late.contains(&s.u.ino) {
                self.late.push(Step::Finish {
                    pid: s.pid,
                    what: s.what(),
                    fd: s.dup(&fd)?,
                    peek_off: s.u.peek_off,
                    shutdown: s.u.shutdown.unwrap_or(0),
                });
            } else {
                finish_socket(
                    s.pid,
                    &s.what(),
                    fd.as_fd(),
                    s.u.peek_off,
                    s.u.shutdown.unwrap_or(0),
                )?;
            }
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(
                    super::nonblock(s.u.flags),
                )),
            )
            .map_err(|e| s.err("flags", e))?;
            out.insert(s.id, fd);
        }
        Ok(out)
    }

    /// Bind `fd` to the socket's name: a path (a stale socket file left
    /// there by the dumped socket is replaced; the new one gets the
    /// dumped mode and owner), an abstract name, or an autobind name
    /// (the same one if it is free).
    fn bind(&mut self, s: &Sk<'_>, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        let name = &s.u.name;
        if name[0] == 0 {
            return match us::bind(fd, name) {
                Err(Errno::EADDRINUSE) if autobound(name) => us::bind(fd, b""),
                r => r,
            }
            .map_err(|e| {
                s.err(
                    &format!("bind to @{}", String::from_utf8_lossy(&name[1..])),
                    e,
                )
            });
        }
        let path = s.path().expect("a path");
        let io = |what: &str, e: std::io::Error| {
            Error::io(&path, format!("pid {}: {}: {what}", s.pid, s.what()), e)
        };
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if !m.file_type().is_socket() {
                return Err(Error::task(
                    s.pid,
                    s.what(),
                    format!(
                        "its path {} is taken by a file that is not a socket",
                        path.display()
                    ),
                ));
            }
            // A socket file nobody listens on any more is stale.
            let probe = us::socket(s.u.r#type as i32).map_err(|e| s.err("socket", e))?;
            let dir_name = path.as_os_str().as_encoded_bytes();
            match us::connect(probe.as_fd(), dir_name) {
                Err(Errno::ECONNREFUSED) => std::fs::remove_file(&path)
                    .map_err(|e| io("removing the stale socket file", e))?,
                _ => {
                    return Err(Error::task(
                        s.pid,
                        s.what(),
                        format!("its path {} is in use by a live socket", path.display()),
                    ))
                }
            }
        }
        // Bound as it was (a relative name from its directory), so that
        // getsockname gives the same name.
        let cwd = match &s.u.name_dir {
            Some(d) if name[0] != b'/' => {
                let back = std::env::current_dir().map_err(|e| io("the engine's cwd", e))?;
                std::env::set_current_dir(d).map_err(|e| io("chdir to its directory", e))?;
                Some(back)
            }
            _ => None,
        };
        let r = us::bind(fd, name);
        if let Some(back) = cwd {
            std::env::set_current_dir(&back).map_err(|e| io("chdir back", e))?;
        }
        r.map_err(|e| s.err(&format!("bind to {}", path.display()), e))?;
        self.bound.push(path.clone());
        if let Some(p) = &s.u.file_perms {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(p.mode))
                .map_err(|e| io("chmod", e))?;
            std::os::unix::fs::lchown(&path, Some(p.uid), Some(p.gid))
                .map_err(|e| io("chown", e))?;
        }
        Ok(())
    }
}

/// Buffer sizes and timeouts.
fn set_opts(s: &Sk<'_>, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let o = &s.u.opts;
    let raw = fd.as_raw_fd();
    set_buf(raw, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, o.so_sndbuf)
        .map_err(|e| s.err("SO_SNDBUF", e))?;
    set_buf(raw, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, o.so_rcvbuf)
        .map_err(|e| s.err("SO_RCVBUF", e))?;
    if o.so_snd_tmo_sec != 0 || o.so_snd_tmo_usec != 0 {
        us::setsockopt_timeval(fd, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)
            .map_err(|e| s.err("SO_SNDTIMEO", e))?;
    }
    if o.so_rcv_tmo_sec != 0 || o.so_rcv_tmo_usec != 0 {
        us::setsockopt_timeval(fd, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)
            .map_err(|e| s.err("SO_RCVTIMEO", e))?;
    }
    set_flags(raw, o).map_err(|e| s.err("SO_PASSSEC, SO_REUSEADDR or SO_KEEPALIVE", e))?;
    Ok(())
}
