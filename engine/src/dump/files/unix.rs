//! UNIX domain sockets, for now only unbound connected pairs whose two
//! ends are both in the tree (socketpair, across fork and dup). Each end
//! is a file entry of type UNIXSK naming its peer by inode; what is queued
//! for reception on an end goes to sk-queues.img, one entry per message
//! (per run of bytes for a stream), without taking it from the task: the
//! queue is peeked through a copy of the fd with SO_PEEK_OFF, which is put
//! back as it was.
//!
//! Everything else about sockets (bound or listening ones, a peer outside
//! the tree, file descriptors or credentials in flight, other families) is
//! refused, naming the fd.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::sys::unix_sock::{self as us, autobound, UnixDiag};

const TCP_LISTEN: u8 = 10;

pub struct Unix;

/// The sockets of a dump, to pair their ends once every task is dumped,
/// and their queues.
#[derive(Default)]
pub struct UnixTable {
    /// By inode.
    socks: BTreeMap<u32, Seen>,
    /// (file id of the receiving end, one message or run of bytes).
    queues: Vec<(u32, Vec<u8>)>,
}

struct Seen {
    pid: Pid,
    /// "fd N (socket:[INO])".
    what: String,
    peer: u32,
    r#type: u8,
}

fn socket_ino(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
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
        let what = format!("fd {} ({link})", fd.fd);
        let no = |reason: String| Error::unsupported(pid, what.clone(), reason);
        let sock = crate::sys::take_fd(pid, fd.fd)
            .map_err(|e| Error::sys(pid, format!("{what}: pidfd_getfd"), e))?;
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
        let peer = check_shape(&d).map_err(no)?;
        let peek_off = us::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
            .map_err(|e| sys("SO_PEEK_OFF", e))?;
        if peek_off >= 0 {
            return Err(no(
                "UNIX socket with SO_PEEK_OFF set: not supported yet".into()
            ));
        }
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
            ..Default::default()
        };
        let queue = read_queue(pid, &what, s, &d)?;
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
                backlog: 0,
                peer,
                fown: pb::FownEntry::default(),
                opts,
                name: d.name.clone().unwrap_or_default(),
                shutdown: Some(d.shutdown as i32 & 3),
                file_perms: None,
                name_dir: None,
                deleted: None,
            }),
            ..Default::default()
        });
        table.unix.queues.extend(queue.into_iter().map(|m| (id, m)));
        table.unix.socks.insert(
            ino,
            Seen {
                pid,
                what,
                peer,
                r#type: d.r#type,
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
            .map(|(id, m)| {
                (
                    pb::SkPacketEntry {
                        id_for: *id,
                        length: m.len() as u32,
                        scm: vec![],
                        addr: None,
                    },
                    m.as_slice(),
                )
            })
            .chain(table.inet.queue_entries())
            .collect();
        if !entries.is_empty() {
            dir.write_with_payloads("sk-queues.img", &entries)?;
        }
        Ok(())
    }
}

/// The peer of a socket this dump can take, or why not.
fn check_shape(d: &UnixDiag) -> std::result::Result<u32, String> {
    if !matches!(
        d.r#type as i32,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        return Err(format!(
            "UNIX socket of type {}: not supported yet",
            d.r#type
        ));
    }
    if d.state == TCP_LISTEN {
        return Err(format!(
            "listening UNIX {} socket: not supported yet",
            type_name(d.r#type)
        ));
    }
    if let Some(name) = d.name.as_deref().filter(|n| !n.is_empty() && !autobound(n)) {
        let shown = match name.strip_prefix(b"\0") {
            Some(abs) => format!("@{}", String::from_utf8_lossy(abs)),
            // A path may come with the terminating zero it was bound with.
            None => String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_string(),
        };
        return Err(format!("UNIX socket bound to {shown}: not supported yet"));
    }
    d.peer.ok_or_else(|| {
        format!(
            "unconnected UNIX {} socket (or its peer is closed): not supported yet",
            type_name(d.r#type)
        )
    })
}

/// Every socket's peer is a socket of the tree whose peer it is, of its
/// type: a pair made by socketpair, which the restore can make again.
fn check_peers(socks: &BTreeMap<u32, Seen>) -> Result<()> {
    for (ino, s) in socks {
        let no = |reason: String| Error::unsupported(s.pid, s.what.clone(), reason);
        match socks.get(&s.peer) {
            None => {
                return Err(no(format!(
                    "UNIX socket whose peer socket:[{}] is outside the dumped tree: not supported yet",
                    s.peer
                )))
            }
            Some(p) if p.peer != *ino || p.r#type != s.r#type => {
                return Err(no(format!(
                    "UNIX socket connected to socket:[{}] ({}), which is connected elsewhere: not supported yet",
                    s.peer, p.what
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What is queued for reception on `s`, message by message (a stream: one
/// run of bytes), read with MSG_PEEK from offset 0 on; SO_PEEK_OFF is put
/// back to "off" (as it was) whatever happens.
fn read_queue(pid: Pid, what: &str, s: BorrowedFd<'_>, d: &UnixDiag) -> Result<Vec<Vec<u8>>> {
    let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
    us::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .map_err(|e| sys("SO_PEEK_OFF", e))?;
    let got = peek_all(pid, what, s, d);
    let back = us::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)
        .map_err(|e| sys("putting SO_PEEK_OFF back", e));
    let got = got?;
    back?;
    Ok(got)
}

fn peek_all(pid: Pid, what: &str, s: BorrowedFd<'_>, d: &UnixDiag) -> Result<Vec<Vec<u8>>> {
    let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
    let no = |reason: &str| Error::unsupported(pid, what.to_string(), reason.to_string());
    let stream = d.r#type as i32 == libc::SOCK_STREAM;
    // Stream and seqpacket: sock_diag gives the bytes of the whole queue.
    let total = (d.r#type as i32 != libc::SOCK_DGRAM).then(|| d.rqlen.map_or(0, |r| r.0 as usize));
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if total.is_some_and(|t| bytes >= t) {
            break;
        }
        let (got, full, flags) = match us::peek(s, &mut buf, !stream) {
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(sys("peeking at its receive queue", e)),
            Ok(r) => r,
        };
        if flags & libc::MSG_CTRUNC != 0 {
            return Err(no(
                "UNIX socket with file descriptors or credentials (SO_PASSCRED) in its queued messages: not supported yet",
            ));
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
        match out.last_mut() {
            Some(run) if stream => run.extend_from_slice(&buf[..got]),
            _ => out.push(buf[..got].to_vec()),
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
        }
    }

    #[test]
    fn links_of_sockets() {
        assert_eq!(socket_ino("socket:[1234]"), Some(1234));
        assert_eq!(socket_ino("socket:[x]"), None);
        assert_eq!(socket_ino("pipe:[1]"), None);
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
        assert_eq!(check_shape(&d), Ok(6));
        d.name = Some(b"/tmp/s\0".to_vec());
        assert!(check_shape(&d)
            .unwrap_err()
            .ends_with("bound to /tmp/s: not supported yet"));
        d.name = Some(b"\0abs".to_vec());
        assert!(check_shape(&d).unwrap_err().contains("bound to @abs"));
        d.name = Some(b"\0a1b2c".to_vec());
        assert_eq!(check_shape(&d), Ok(6));
        d.name = Some(b"\0a1b2g".to_vec());
        assert!(check_shape(&d).is_err());
        d.name = None;
        d.state = TCP_LISTEN;
        assert!(check_shape(&d).unwrap_err().contains("listening"));
        d.state = 7;
        d.peer = None;
        assert!(check_shape(&d).unwrap_err().contains("unconnected"));
    }

    #[test]
    fn peers_must_pair_up() {
        let st = libc::SOCK_STREAM;
        let mut m = BTreeMap::from([(1, seen(2, st)), (2, seen(1, st))]);
        assert!(check_peers(&m).is_ok());
        m.insert(3, seen(9, st));
        let e = check_peers(&m).unwrap_err().to_string();
        assert!(e.contains("socket:[9] is outside"), "{e}");
        m.insert(3, seen(1, st));
        assert!(check_peers(&m).is_err());
        let m = BTreeMap::from([(1, seen(2, st)), (2, seen(1, libc::SOCK_DGRAM))]);
        assert!(check_peers(&m).is_err());
    }
}
