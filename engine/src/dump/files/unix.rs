//! UNIX domain sockets. Each socket an fd refers to is a file entry of
//! type UNIXSK naming its peer by inode, its name, and, bound to a path,
//! the file's mode and owner (or that the path was removed). A client
//! whose connection waits in a listener's backlog names the listener as
//! its peer, as CRIU writes it. What is queued for reception on a
//! socket goes to sk-queues.img, one entry per message (per run of bytes
//! for a stream), without taking it from the task: the queue is peeked
//! through a copy of the fd with SO_PEEK_OFF, which is put back as it was.
//!
//! Files in flight (SCM_RIGHTS) come with the peek as copies installed
//! in the engine; each is dumped by the kind that claims it, as a file
//! entry no fd refers to (or the entry of a task's fd, if it is the same
//! open file), and the message names them by file id. The sender's
//! credentials, which a receiver with SO_PASSCRED gets, go with it too.
//! A socket in flight must be one end of a pair whose other end is in the
//! tree, with no files in flight in its queues: a chain of sockets in
//! flight (or a loop, which only the kernel's garbage collector ends) is
//! refused.
//!
//! What the restore could not make again (a peer outside the tree, data
//! sent on a connection not yet accepted, other families) is refused,
//! naming the fd. Data sent on a connection not accepted yet sits in the
//! queue of a socket no fd reaches; the kernel gives it only to accept(),
//! which would change the tree, so it is refused too. Nothing else reads
//! it (Linux 6.18): unix_diag tells the pending sockets (UNIX_DIAG_ICONS)
//! and how many bytes wait (UNIX_DIAG_RQLEN), never the bytes; SIOCUNIXFILE
//! opens only the path a socket is bound to; pidfd_getfd and MSG_PEEK need
//! an fd, which the pending socket gets only from accept(); and no call
//! puts an accepted socket back into the listener's queue, so accepting it
//! in the task or the engine could not be undone for a dump that fails or
//! leaves the tree running.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use nix::errno::Errno;

use super::{socket_ino, FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::sys::unix_sock::{self as us, autobound, UnixDiag};

const TCP_LISTEN: u8 = 10;
const TCP_ESTABLISHED: u8 = 1;

pub struct Unix;

/// (file id of the receiving end, one message or run of bytes, the ids of
/// the files in flight with it, its sender's (pid, uid, gid)).
type Queued = (u32, Vec<u8>, Vec<u32>, Option<(i32, u32, u32)>);

/// The sockets of a dump, to pair their ends once every task is dumped,
/// and their queues.
#[derive(Default)]
pub struct UnixTable {
    /// By inode.
    socks: BTreeMap<u32, Seen>,
    /// (file id of the receiving end, one message or run of bytes, the
    /// ids of the files in flight with it, its sender's credentials).
    queues: Vec<Queued>,
    /// The engine's copies of the files in flight, open to the end of the
    /// dump (see `dump_in_flight`).
    pub held: Vec<std::os::fd::OwnedFd>,
    /// While the files in flight to a socket are dumped: that socket's
    /// task and name, for a socket in flight to be named by.
    flight: Option<(Pid, String)>,
    /// --ext-unix-sk: a peer outside the tree is connected to again.
    pub ext_unix_sk: bool,
    /// The listener of every connection waiting to be accepted, by the
    /// client's inode; asked once, when first needed.
    waiting: Option<BTreeMap<u32, u32>>,
}

#[derive(Debug, Clone)]
struct Seen {
    pid: Pid,
    /// "fd N (socket:[INO])".
    what: String,
    /// In the image: for a client waiting to be accepted, its listener.
    peer: u32,
    r#type: u8,
    /// Bound to a name the kernel did not choose.
    named: bool,
    /// Data is queued on it.
    queued: bool,
    /// Waiting in the backlog of `peer`.
    pending: bool,
    listening: bool,
    /// A listener: the clients whose connections wait in its backlog.
    icons: Vec<u32>,
    /// An entry of its own for a peer outside the tree (--ext-unix-sk).
    external: bool,
    /// In flight in another socket's queue, held by no fd.
    in_flight: bool,
    /// Files are in flight in its queue.
    rights: bool,
}

fn family_name(domain: i32) -> String {
    match domain {
        libc::AF_INET => "INET".into(),
        libc::AF_INET6 => "INET6".into(),
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        d => format!("family {d}"),
    }
}

fn type_name(t: u8) -> &'static str {
    match t as i32 {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "unknown type",
    }
}

impl UnixTable {
    /// The listener in whose backlog the connection of client `ino`
    /// waits, if it does.
    fn listener_of(&mut self, ino: u32) -> nix::Result<Option<u32>> {
        if self.waiting.is_none() {
            let mut m = BTreeMap::new();
            for l in us::unix_listeners()? {
                for i in &l.icons {
                    m.insert(*i, l.ino);
                }
            }
            self.waiting = Some(m);
        }
        Ok(self.waiting.as_ref().and_then(|m| m.get(&ino).copied()))
    }
}

/// A name as a person reads it: a path, or @ and an abstract name.
fn shown(name: &[u8]) -> String {
    match name.strip_prefix(b"\0") {
        Some(abs) => format!("@{}", String::from_utf8_lossy(abs)),
        // A path may come with the terminating zero it was bound with.
        None => String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_string(),
    }
}

/// Where a path-bound socket's file is: its mode and owner, the
/// directory a relative name was bound in (taken to be the task's cwd),
/// or that the path no longer leads to it (removed, or another file there
/// now): the restore binds it there and removes the path again.
struct BoundPath {
    perms: Option<pb::FilePermsEntry>,
    name_dir: Option<String>,
    deleted: bool,
}

fn bound_path(
    pid: Pid,
    name: &[u8],
    vfs: Option<(u32, u32)>,
) -> std::result::Result<BoundPath, String> {
    let path = shown(name);
    let (at, name_dir) = if path.starts_with('/') {
        (format!("/proc/{pid}/root{path}"), None)
    } else {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map_err(|e| format!("bound to the relative path {path}: its cwd: {e}"))?;
        (
            format!("/proc/{pid}/cwd/{path}"),
            Some(cwd.to_string_lossy().into_owned()),
        )
    };
    let here = std::fs::symlink_metadata(&at)
        .ok()
        .filter(|m| m.file_type().is_socket() && vfs.is_some_and(|(ino, _)| m.ino() == ino as u64));
    match here {
        Some(m) => Ok(BoundPath {
            perms: Some(pb::FilePermsEntry {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }),
            name_dir,
            deleted: false,
        }),
        None => Ok(BoundPath {
            perms: None,
            name_dir,
            deleted: true,
        }),
    }
}

impl FdDumper for Unix {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        matches!(link, FdLink::Other(s) if socket_ino(s).is_some())
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let pid = fd.pid;
        let FdLink::Other(link) = fd.kind else {
            unreachable!("claimed sockets only")
        };
        let ino = socket_ino(link).expect("claimed");
        // A socket in flight is named by the socket it is in flight to,
        // and its errors by that socket's task.
        let (pid, what, in_flight) = match &table.unix.flight {
            Some((p, to)) => (*p, format!("{link}, in flight to {to}"), true),
            None => (pid, format!("fd {} ({link})", fd.fd), false),
        };
        let sock = crate::sys::take_fd(fd.pid, fd.fd)
            .map_err(|e| Error::sys(pid, format!("{what}: pidfd_getfd"), e))?;
        let no = |reason: String| Error::unsupported(pid, what.clone(), reason);
        let s = sock.as_fd();
        let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
        let domain = us::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(|e| sys("SO_DOMAIN", e))?;
        if domain != libc::AF_UNIX {
            return Err(no(format!(
                "{} sockets: not supported yet",
                family_name(domain)
            )));
        }
        let d = us::unix_diag(ino)
            .map_err(|e| sys("sock_diag", e))?
            .ok_or_else(|| {
                no("UNIX socket sock_diag does not know (in another network namespace?): not supported yet".into())
            })?;
        check_shape(&d).map_err(no)?;
        let listening = d.state == TCP_LISTEN;
        let mut peer = d.peer.unwrap_or(0);
        let mut pending = false;
        // A connection not accepted yet: its peer, the socket the
        // listener made for it, has no inode (no file), so sock_diag says
        // none; the listener names the client among its waiting ones.
        if d.peer.is_none() && d.state == TCP_ESTABLISHED && d.r#type as i32 != libc::SOCK_DGRAM {
            if let Some(l) = table
                .unix
                .listener_of(ino)
                .map_err(|e| sys("sock_diag of the listening sockets", e))?
            {
                // What it sent is in the new socket's queue, which no fd
                // reaches.
                if d.rqlen.is_some_and(|(_, out)| out > 0) {
                    return Err(no(format!(
                        "UNIX socket that sent data on a connection socket:[{l}] has not accepted yet: not supported yet"
                    )));
                }
                peer = l;
                pending = true;
            }
        }
        // (A datagram socket others connected to is "established" too.)
        if peer == 0 && d.state == TCP_ESTABLISHED && d.r#type as i32 != libc::SOCK_DGRAM {
            return Err(no(format!(
                "UNIX {} socket whose peer is closed: not supported yet",
                type_name(d.r#type)
            )));
        }
        let name = d.name.clone().unwrap_or_default();
        let bound = if name.first().is_some_and(|&c| c != 0) {
            bound_path(pid, &name, d.vfs).map_err(no)?
        } else {
            BoundPath {
                perms: None,
                name_dir: None,
                deleted: false,
            }
        };
        let peek_off = us::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
            .map_err(|e| sys("SO_PEEK_OFF", e))?;
        let int = |opt: i32, name: &str| {
            us::getsockopt_int(s, libc::SOL_SOCKET, opt).map_err(|e| sys(name, e))
        };
        let (snd_s, snd_us) =
            us::getsockopt_timeval(s, libc::SO_SNDTIMEO).map_err(|e| sys("SO_SNDTIMEO", e))?;
        let (rcv_s, rcv_us) =
            us::getsockopt_timeval(s, libc::SO_RCVTIMEO).map_err(|e| sys("SO_RCVTIMEO", e))?;
        let opts = pb::SkOptsEntry {
            so_sndbuf: int(libc::SO_SNDBUF, "SO_SNDBUF")? as u32,
            so_rcvbuf: int(libc::SO_RCVBUF, "SO_RCVBUF")? as u32,
            so_snd_tmo_sec: snd_s,
            so_snd_tmo_usec: snd_us,
            so_rcv_tmo_sec: rcv_s,
            so_rcv_tmo_usec: rcv_us,
            so_passcred: Some(int(libc::SO_PASSCRED, "SO_PASSCRED")? != 0),
            so_passsec: Some(int(libc::SO_PASSSEC, "SO_PASSSEC")? != 0),
            reuseaddr: Some(int(libc::SO_REUSEADDR, "SO_REUSEADDR")? != 0),
            so_keepalive: Some(int(libc::SO_KEEPALIVE, "SO_KEEPALIVE")? != 0),
            ..Default::default()
        };
        // A listener, or a stream never connected, has nothing to read.
        let readable = d.r#type as i32 == libc::SOCK_DGRAM || d.state == TCP_ESTABLISHED;
        let peeked = if readable {
            read_queue(pid, &what, s, &d, peek_off, table.root)?
        } else {
            Vec::new()
        };
        if let Some(why) = refuse_creds(&peeked) {
            return Err(no(why));
        }
        let rights = peeked.iter().any(|p| !p.rights.is_empty());
        if rights && in_flight {
            return Err(no(
                "UNIX socket in flight whose own queue has file descriptors in flight (a chain or loop of sockets in flight): not supported".into(),
            ));
        }
        let mut queue = Vec::with_capacity(peeked.len());
        for p in peeked {
            let mut ids = Vec::with_capacity(p.rights.len());
            if !p.rights.is_empty() {
                table.unix.flight = Some((pid, what.clone()));
                let whose = format!("pid {pid} {what}");
                let dumped: Result<Vec<u32>> = p
                    .rights
                    .into_iter()
                    .map(|f| super::dump_in_flight(&whose, f, table).map(|(_, id)| id))
                    .collect();
                table.unix.flight = None;
                ids = dumped?;
            }
            queue.push((p.data, ids, p.creds));
        }
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Unixsk as i32,
            id,
            usk: Some(pb::UnixSkEntry {
                id,
                ino,
                r#type: d.r#type as u32,
                state: d.state as u32,
                flags: fd.flags,
                uflags: 0,
                backlog: if listening {
                    d.rqlen.map_or(0, |(_, max)| max)
                } else {
                    0
                },
                peer,
                // Filled in for every kind by fown.rs.
                fown: pb::FownEntry::default(),
                opts,
                name: name.clone(),
                shutdown: Some(d.shutdown as i32 & 3),
                file_perms: bound.perms,
                name_dir: bound.name_dir,
                deleted: bound.deleted.then_some(true),
                peek_off: (peek_off >= 0).then_some(peek_off),
            }),
            ..Default::default()
        });
        let queued = !queue.is_empty();
        table
            .unix
            .queues
            .extend(queue.into_iter().map(|(m, r, c)| (id, m, r, c)));
        table.unix.socks.insert(
            ino,
            Seen {
                pid,
                what,
                peer,
                r#type: d.r#type,
                named: !name.is_empty() && !autobound(&name),
                queued,
                pending,
                listening,
                // A client gone (closed) is 0, whatever inode the kernel
                // still gives it.
                icons: d
                    .icons
                    .iter()
                    .map(|&i| match us::unix_diag(i) {
                        Ok(None) => 0,
                        _ => i,
                    })
                    .collect(),
                external: false,
                in_flight,
                rights,
            },
        );
        Ok((pb::FdTypes::Unixsk, id))
    }

    fn finish(&self, table: &FileTable, dir: &ImageDir) -> Result<()> {
        check_peers(&table.unix.socks)?;
        let entries: Vec<(pb::SkPacketEntry, &[u8])> = table
            .unix
            .queues
            .iter()
            .map(|(id, m, rights, creds)| {
                (
                    pb::SkPacketEntry {
                        id_for: *id,
                        length: m.len() as u32,
                        scm: if rights.is_empty() {
                            vec![]
                        } else {
                            vec![pb::ScmEntry {
                                r#type: libc::SCM_RIGHTS as u32,
                                rights: rights.clone(),
                            }]
                        },
                        addr: None,
                        ucred: creds.map(|(pid, uid, gid)| pb::SkUcredEntry {
                            uid,
                            gid,
                            pid: pid as u32,
                        }),
                    },
                    m.as_slice(),
                )
            })
            .chain(table.inet.queue_entries())
            .chain(table.netlink.queue_entries())
            .collect();
        if !entries.is_empty() {
            dir.write_with_payloads("sk-queues.img", &entries)?;
        }
        Ok(())
    }
}

/// CRIU's uflags bit of a socket outside the tree, connected to again.
const USK_EXTERN: u32 = 1;

/// With --ext-unix-sk, an entry (no fd refers to it) for each peer outside
/// the tree that a socket of the tree is connected to: the restore
/// connects the socket to the peer's name again. The peer must have a
/// name (an absolute path or an abstract name), and nothing may be queued
/// on the socket from it: that data could not be sent again.
pub fn external_peers(table: &mut super::FileTable) -> Result<()> {
    if !table.unix.ext_unix_sk {
        return Ok(());
    }
    let outside: Vec<(u32, Seen)> = table
        .unix
        .socks
        .values()
        .filter(|s| s.peer != 0 && !table.unix.socks.contains_key(&s.peer))
        .map(|s| (s.peer, s.clone()))
        .collect();
    for (peer, s) in outside {
        if table.unix.socks.contains_key(&peer) {
            continue; // two sockets of the tree with one peer outside
        }
        let no = |reason: String| Error::unsupported(s.pid, s.what.clone(), reason);
        let d = us::unix_diag(peer)
            .map_err(|e| {
                Error::sys(
                    s.pid,
                    format!("{}: sock_diag of its peer socket:[{peer}]", s.what),
                    e,
                )
            })?
            .ok_or_else(|| no(format!("its peer socket:[{peer}] outside the tree is gone")))?;
        let name = d.name.clone().unwrap_or_default();
        if name.is_empty() || name[0] != 0 && name[0] != b'/' {
            return Err(no(format!(
                "UNIX socket whose peer socket:[{peer}] outside the dumped tree has no name to connect to again{}: not supported",
                if name.is_empty() { String::new() } else { format!(" ({} is relative)", shown(&name)) }
            )));
        }
        if s.queued {
            return Err(no(format!(
                "UNIX socket with data queued from its peer socket:[{peer}] ({}) outside the dumped tree: not supported yet",
                shown(&name)
            )));
        }
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Unixsk as i32,
            id,
            usk: Some(pb::UnixSkEntry {
                id,
                ino: peer,
                r#type: d.r#type as u32,
                state: d.state as u32,
                uflags: USK_EXTERN,
                name: name.clone(),
                shutdown: Some(d.shutdown as i32 & 3),
                ..Default::default()
            }),
            ..Default::default()
        });
        table.unix.socks.insert(
            peer,
            Seen {
                pid: s.pid,
                what: format!("socket:[{peer}] ({}) outside the tree", shown(&name)),
                peer: 0,
                r#type: d.r#type,
                named: true,
                queued: false,
                pending: false,
                listening: d.state == TCP_LISTEN,
                icons: vec![],
                external: true,
                in_flight: false,
                rights: false,
            },
        );
    }
    Ok(())
}

/// Why the restore could not make a socket of this type again, if so.
fn check_shape(d: &UnixDiag) -> std::result::Result<(), String> {
    if !matches!(
        d.r#type as i32,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        return Err(format!(
            "UNIX socket of type {}: not supported yet",
            d.r#type
        ));
    }
    Ok(())
}

/// Every socket's peer is a socket of the tree the restore can connect
/// it to again: the other end of a pair (socketpair, or a connection
/// accepted), a listener it waits to be accepted by, or a bound datagram
/// socket; and every connection waiting in a listener's backlog comes
/// from a socket of the tree.
fn check_peers(socks: &BTreeMap<u32, Seen>) -> Result<()> {
    let mut waiting: BTreeMap<u32, usize> = BTreeMap::new();
    for (ino, s) in socks {
        let no = |reason: String| Error::unsupported(s.pid, s.what.clone(), reason);
        if s.in_flight {
            let pair = socks.get(&s.peer).is_some_and(|p| {
                p.peer == *ino && !p.named && !p.listening && !p.pending && !p.external
            }) && !s.named
                && !s.pending
                && !socks.iter().any(|(i, o)| {
                    *i != s.peer && *i != *ino && (o.peer == *ino || o.peer == s.peer)
                });
            if !pair {
                return Err(no(
                    "UNIX socket in flight that is not one end of a pair (socketpair) whose other end is in the tree: not supported yet".into(),
                ));
            }
            if socks.get(&s.peer).is_some_and(|p| p.rights) {
                return Err(no(format!(
                    "UNIX socket in flight whose peer socket:[{}] has file descriptors in flight in its queue: not supported yet",
                    s.peer
                )));
            }
        }
        if s.peer != 0 {
            let Some(p) = socks.get(&s.peer) else {
                return Err(no(format!(
                    "UNIX socket whose peer socket:[{}]{} is outside the dumped tree: not supported without --ext-unix-sk",
                    s.peer,
                    peer_name(s.peer)
                )));
            };
            let fits = p.r#type == s.r#type
                && if p.external {
                    true
                } else if s.pending {
                    p.listening
                } else {
                    p.peer == *ino || (s.r#type as i32 == libc::SOCK_DGRAM && p.named)
                };
            if !fits {
                return Err(no(format!(
                    "UNIX socket connected to socket:[{}] ({}), which is connected elsewhere: not supported yet",
                    s.peer, p.what
                )));
            }
            if s.pending {
                *waiting.entry(s.peer).or_default() += 1;
            }
        }
        // Datagrams are queued again by sending them to its name, or from
        // the other end of its pair.
        if s.queued && !s.named && s.r#type as i32 == libc::SOCK_DGRAM {
            let pair = socks.get(&s.peer).is_some_and(|p| p.peer == *ino)
                && !socks.iter().any(|(i, o)| {
                    *i != s.peer && *i != *ino && (o.peer == *ino || o.peer == s.peer)
                });
            if !pair {
                return Err(no(
                    "unnamed UNIX datagram socket with messages queued, not one end of a pair: not supported yet".into(),
                ));
            }
        }
    }
    for (ino, s) in socks.iter().filter(|(_, s)| s.listening && !s.external) {
        let from_tree = waiting.get(ino).copied().unwrap_or(0);
        // A client that closed its end is 0 among the waiting ones: what
        // it sent, if anything, is in a socket no fd reaches, which only
        // accept() gives (as CRIU, refused).
        let closed = s.icons.iter().filter(|&&i| i == 0).count();
        if closed > 0 {
            return Err(Error::unsupported(
                s.pid,
                s.what.clone(),
                format!(
                    "listening UNIX socket with {closed} connection(s) waiting to be accepted whose client closed its end (any data it sent can only be read by accept()): not supported yet"
                ),
            ));
        }
        if from_tree < s.icons.len() {
            return Err(Error::unsupported(
                s.pid,
                s.what.clone(),
                format!(
                    "listening UNIX socket with {} connection(s) from outside the dumped tree waiting to be accepted: not supported yet",
                    s.icons.len() - from_tree
                ),
            ));
        }
    }
    Ok(())
}

/// " (NAME)" of a socket outside the tree, if it is bound.
fn peer_name(ino: u32) -> String {
    match us::unix_diag(ino) {
        Ok(Some(UnixDiag { name: Some(n), .. })) if !n.is_empty() => format!(" ({})", shown(&n)),
        _ => String::new(),
    }
}

/// One message queued (a stream: a run of bytes that came with the same
/// ancillary data).
struct Peeked {
    data: Vec<u8>,
    /// The engine's copies of the files in flight with it, which the peek
    /// installed.
    rights: Vec<std::os::fd::OwnedFd>,
    /// Its sender's (pid, uid, gid), which a receiver with SO_PASSCRED gets.
    creds: Option<(i32, u32, u32)>,
}

/// What is queued for reception on `s`, message by message (a stream: one
/// run of bytes), read with MSG_PEEK from offset 0 on; SO_PEEK_OFF is put
/// back as it was (`peek_off`) whatever happens.
fn read_queue(
    pid: Pid,
    what: &str,
    s: BorrowedFd<'_>,
    d: &UnixDiag,
    peek_off: i32,
    root: Pid,
) -> Result<Vec<Peeked>> {
    let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
    us::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .map_err(|e| sys("SO_PEEK_OFF", e))?;
    let got = peek_all(pid, what, s, d).and_then(|q| senders_in_tree_ns(pid, what, s, q, root));
    let back = us::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, peek_off)
        .map_err(|e| sys("putting SO_PEEK_OFF back", e));
    let got = got?;
    back?;
    Ok(got)
}

/// `q` with its senders' pids as the tree's root sees them, when the
/// root is in a pid namespace other than the engine's: the images keep
/// pids as the root's namespace sees them, and the restore sends the
/// messages from there. A socket's task in a namespace nested below the
/// root's is refused: a sender only that namespace sees could not be
/// given back.
fn senders_in_tree_ns(
    pid: Pid,
    what: &str,
    s: BorrowedFd<'_>,
    mut q: Vec<Peeked>,
    root: Pid,
) -> Result<Vec<Peeked>> {
    if q.iter().all(|p| p.creds.is_none()) {
        return Ok(q);
    }
    let ns_of = |p: &str| {
        std::fs::metadata(format!("/proc/{p}/ns/pid"))
            .map(|m| m.ino())
            .map_err(|e| Error::io(format!("/proc/{p}/ns/pid"), what.to_string(), e))
    };
    let tree_ns = ns_of(&root.to_string())?;
    if ns_of(&pid.to_string())? != tree_ns {
        return Err(Error::unsupported(
            pid,
            what.to_string(),
            "UNIX socket with SO_PASSCRED and messages queued with their senders' credentials, held in a pid namespace nested below the tree root's: not supported yet",
        ));
    }
    if ns_of("self")? == tree_ns {
        return Ok(q);
    }
    let ns = std::fs::File::open(format!("/proc/{root}/ns/pid"))
        .map_err(|e| Error::io(format!("/proc/{root}/ns/pid"), what.to_string(), e))?;
    let mut offsets = Vec::new();
    let mut at = 0usize;
    for p in &q {
        if p.creds.is_some() {
            offsets.push(at as i32);
        }
        at += p.data.len();
    }
    let pids = us::peek_pids_in(s, ns.as_fd(), &offsets).map_err(|e| {
        Error::sys(
            pid,
            format!("{what}: its queued messages' senders, seen from its pid namespace"),
            e,
        )
    })?;
    for (p, v) in q.iter_mut().filter(|p| p.creds.is_some()).zip(pids) {
        if let Some(c) = p.creds.as_mut() {
            c.0 = v;
        }
    }
    Ok(q)
}

/// Why the senders' credentials of the messages cannot be given again, if
/// so: the restore sends each message from a process with its sender's
/// pid (in the tree's pid namespace, as the socket's task sees it), and
/// 0 is a sender that namespace does not see.
fn refuse_creds(q: &[Peeked]) -> Option<String> {
    q.iter().filter_map(|p| p.creds).find(|c| c.0 <= 0).map(|c| {
        format!(
            "UNIX socket with SO_PASSCRED and a message queued from a sender outside its task's pid namespace (uid {} gid {}): not supported yet",
            c.1, c.2
        )
    })
}

/// Why a queued message's ancillary data cannot be queued again: a kind
/// other than files in flight and credentials, or more than a peek holds.
fn refuse_ancillary(anc: &us::Ancillary) -> Option<String> {
    if let Some(t) = anc.other.first() {
        return Some(format!(
            "UNIX socket with ancillary data of type {t} in its queued messages (SO_PASSSEC?): not supported yet"
        ));
    }
    anc.truncated.then(|| {
        "UNIX socket with more ancillary data in a queued message than a peek can hold: not supported yet".into()
    })
}

fn peek_all(pid: Pid, what: &str, s: BorrowedFd<'_>, d: &UnixDiag) -> Result<Vec<Peeked>> {
    let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
    let no = |reason: &str| Error::unsupported(pid, what.to_string(), reason.to_string());
    let stream = d.r#type as i32 == libc::SOCK_STREAM;
    // Stream and seqpacket: sock_diag gives the bytes of the whole queue.
    let total = (d.r#type as i32 != libc::SOCK_DGRAM).then(|| d.rqlen.map_or(0, |r| r.0 as usize));
    let mut out: Vec<Peeked> = Vec::new();
    let mut bytes = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if total.is_some_and(|t| bytes >= t) {
            break;
        }
        let (got, full, _, anc) = match us::peek_ancillary(s, &mut buf, !stream) {
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(sys("peeking at its receive queue", e)),
            Ok(r) => r,
        };
        if let Some(why) = refuse_ancillary(&anc) {
            return Err(no(&why));
        }
        if !stream && full > got {
            // A message larger than the buffer: again, whole, from where
            // it starts.
            us::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, bytes as i32)
                .map_err(|e| sys("SO_PEEK_OFF", e))?;
            buf.resize(full, 0);
            continue;
        }
        if got == 0 {
            // End of a stream that was shut down, or of a seqpacket queue
            // (it says 0 once shut down); otherwise a message of no bytes,
            // which a peek offset cannot step over.
            if stream || total.is_some_and(|t| bytes >= t) {
                break;
            }
            return Err(no(
                "UNIX socket with an empty message queued: not supported yet",
            ));
        }
        // A run of a stream goes on while nothing comes with its bytes.
        match out.last_mut() {
            Some(run)
                if stream
                    && run.rights.is_empty()
                    && anc.rights.is_empty()
                    && run.creds == anc.creds =>
            {
                run.data.extend_from_slice(&buf[..got])
            }
            _ => out.push(Peeked {
                data: buf[..got].to_vec(),
                rights: anc.rights,
                creds: anc.creds,
            }),
        }
        bytes += got;
    }
    if let Some(t) = total.filter(|&t| t != bytes) {
        return Err(Error::task(
            pid,
            what.to_string(),
            format!("{bytes} bytes read from its receive queue, sock_diag says {t}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(peer: u32, t: i32) -> Seen {
        Seen {
            pid: 1,
            what: "fd 3 (socket:[1])".into(),
            peer,
            r#type: t as u8,
            named: false,
            queued: false,
            pending: false,
            listening: false,
            icons: vec![],
            external: false,
            in_flight: false,
            rights: false,
        }
    }

    #[test]
    fn links_of_sockets() {
        assert_eq!(socket_ino("socket:[1234]"), Some(1234));
        assert_eq!(socket_ino("socket:[x]"), None);
        assert_eq!(socket_ino("pipe:[1]"), None);
    }

    #[test]
    fn names_shown() {
        assert_eq!(shown(b"/tmp/s\0"), "/tmp/s");
        assert_eq!(shown(b"\0abs"), "@abs");
    }

    #[test]
    fn shapes_refused() {
        let mut d = UnixDiag {
            ino: 5,
            r#type: libc::SOCK_STREAM as u8,
            state: 1,
            peer: Some(6),
            ..Default::default()
        };
        assert_eq!(check_shape(&d), Ok(()));
        d.r#type = libc::SOCK_RAW as u8;
        assert!(check_shape(&d).unwrap_err().contains("of type"));
    }

    #[test]
    fn peers_must_pair_up() {
        let st = libc::SOCK_STREAM;
        let dg = libc::SOCK_DGRAM;
        let mut m = BTreeMap::from([(1, seen(2, st)), (2, seen(1, st))]);
        assert!(check_peers(&m).is_ok());
        m.insert(3, seen(9, st));
        let e = check_peers(&m).unwrap_err().to_string();
        assert!(e.contains("socket:[9] is outside"), "{e}");
        m.insert(3, seen(1, st));
        assert!(check_peers(&m).is_err());
        let m = BTreeMap::from([(1, seen(2, st)), (2, seen(1, dg))]);
        assert!(check_peers(&m).is_err());
        // Datagram clients of a bound socket, which is connected to none.
        let mut server = seen(0, dg);
        server.named = true;
        let mut m = BTreeMap::from([(1, server), (2, seen(1, dg)), (3, seen(1, dg))]);
        assert!(check_peers(&m).is_ok());
        m.get_mut(&1).unwrap().named = false;
        assert!(check_peers(&m).is_err());
        // A listener with one connection waiting from the tree, one not.
        let mut l = seen(0, st);
        l.listening = true;
        l.icons = vec![7, 8];
        let mut c = seen(1, st);
        c.pending = true;
        let mut m = BTreeMap::from([(1, l), (2, c)]);
        let e = check_peers(&m).unwrap_err().to_string();
        assert!(e.contains("1 connection(s) from outside"), "{e}");
        m.get_mut(&1).unwrap().icons.pop();
        assert!(check_peers(&m).is_ok());
        // A connection waiting whose client closed.
        m.get_mut(&1).unwrap().icons.push(0);
        let e = check_peers(&m).unwrap_err().to_string();
        assert!(e.contains("whose client closed its end"), "{e}");
        m.get_mut(&1).unwrap().icons.pop();
        // Messages queued on an unnamed datagram socket others send to.
        let mut a = seen(2, dg);
        a.queued = true;
        let mut m = BTreeMap::from([(1, a), (2, seen(1, dg))]);
        assert!(check_peers(&m).is_ok());
        m.insert(3, seen(1, dg));
        assert!(check_peers(&m).is_err());
        // A socket in flight: one end of a pair, whose peer has no files
        // in flight; not a client of a listener.
        let mut f = seen(2, st);
        f.in_flight = true;
        let mut m = BTreeMap::from([(1, f), (2, seen(1, st))]);
        assert!(check_peers(&m).is_ok());
        m.get_mut(&2).unwrap().rights = true;
        let e = check_peers(&m).unwrap_err().to_string();
        assert!(e.contains("has file descriptors in flight"), "{e}");
        m.get_mut(&2).unwrap().rights = false;
        m.get_mut(&2).unwrap().named = true;
        let e = check_peers(&m).unwrap_err().to_string();
        assert!(e.contains("not one end of a pair"), "{e}");
    }
}
