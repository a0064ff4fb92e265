//! INET and INET6 sockets: TCP sockets not connected (fresh, bound or
//! listening) and UDP sockets (bound or not, connected or not) with the
//! datagrams queued for them. Each is a file entry of type INETSK; its
//! queued datagrams go to sk-queues.img with their source addresses, read
//! without taking them from the task (a copy of the fd peeks with
//! SO_PEEK_OFF, put back as it was).
//!
//! An established TCP connection is dumped only with --tcp-established
//! (refused otherwise, naming its addresses): its packets are blocked by
//! the network lock (`kernel/netlock.rs`), the socket is put in repair
//! mode through the engine's copy, and its sequence numbers, queues,
//! negotiated options and window go to tcp-stream-INO.img. The socket
//! stays in repair mode until the dump ends: taken out of it again when
//! the tree goes on (or the dump fails), closed in it with the killed tree
//! so that it vanishes without a word to the peer. A connection being
//! closed is dumped too, in any state up to both FINs acknowledged
//! (FIN-WAIT-1/2, CLOSE-WAIT, LAST-ACK, CLOSING): the stream image counts
//! its FINs in the sequence numbers but not in the queues' lengths, as
//! CRIU's do, and its state says which to make again.
//!
//! A connection being made, or in TIME-WAIT, is refused. So are other
//! protocols (raw sockets, SCTP, UDP-Lite), and addresses scoped to an
//! interface. So is a listening socket with connections not accepted
//! yet, as CRIU refuses it ("in-flight connection"): a connection in an
//! accept queue has no fd to put in repair mode, accepting it in the task
//! cannot be undone if the dump fails or the tree goes on, and nothing
//! but a connection's own handshake puts one into an accept queue, with
//! sequence numbers the kernel picks (only a tc BPF program validating
//! its own SYN cookies, Linux 6.9's bpf_sk_assign_tcp_reqsk, could make
//! one with given numbers).

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::{socket_ino, FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::inet::{
    addr_words, fins, is_synchronized, state_name, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
};
use crate::images::pb;
use crate::kernel::netlock::NetLock;
use crate::sys::inet_sock as is;
use crate::sys::tcp_repair as tr;
use crate::sys::unix_sock::{getsockopt_int, getsockopt_timeval, setsockopt_int};

pub struct Inet;

/// The datagrams queued on the INET sockets of a dump, and its TCP
/// connections.
#[derive(Default)]
pub struct InetTable {
    /// (file id of the receiving socket, the datagram, its source as a
    /// sockaddr).
    queues: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// The network lock, once a connection is found.
    pub lock: Option<NetLock>,
    /// The engine's copies of the sockets put in repair mode.
    repaired: Vec<OwnedFd>,
    /// Each connection's state, by socket inode, with its receive and
    /// send queues.
    streams: Vec<(u32, pb::TcpStreamEntry, Vec<u8>, Vec<u8>)>,
    /// The tree was killed: its connections stay in repair mode (so they
    /// close silently) and locked until the restore.
    handed_over: bool,
}

impl Drop for InetTable {
    fn drop(&mut self) {
        if self.handed_over {
            if let Some(l) = self.lock.take() {
                l.keep();
            }
            return;
        }
        if let Err(e) = self.resume() {
            warn!("{e}");
        }
    }
}

impl InetTable {
    /// The dumped connections go on: out of repair mode, then unlocked.
    pub fn resume(&mut self) -> std::result::Result<(), String> {
        let mut err = None;
        for s in self.repaired.drain(..) {
            if let Err(e) = tr::set_repair(s.as_fd(), false) {
                let what = is::local_addr(s.as_fd()).map_or("?".into(), |a| a.to_string());
                err.get_or_insert(format!(
                    "TCP connection from {what}: taking it out of repair mode: {e}"
                ));
            }
        }
        if let Some(mut l) = self.lock.take() {
            if let Err(e) = l.release() {
                err.get_or_insert(e);
            }
        }
        err.map_or(Ok(()), Err)
    }

    /// The tree is killed: its connections vanish in repair mode, and the
    /// lock stays for the restore.
    pub fn hand_over(&mut self) {
        self.handed_over = true;
    }

    /// sk-queues.img entries, with their payloads.
    pub fn queue_entries(&self) -> impl Iterator<Item = (pb::SkPacketEntry, &[u8])> {
        self.queues.iter().map(|(id, m, from)| {
            (
                pb::SkPacketEntry {
                    id_for: *id,
                    length: m.len() as u32,
                    scm: vec![],
                    ucred: None,
                    addr: Some(from.clone()),
                },
                m.as_slice(),
            )
        })
    }
}

impl FdDumper for Inet {
    /// An INET socket's link is the same "socket:[INO]" as any other's:
    /// the fd itself says its family.
    fn claims(&self, _link: &FdLink<'_>) -> bool {
        false
    }

    fn claims_fd(&self, fd: &FdCx<'_>) -> bool {
        super::socket_of_domain(fd, &[libc::AF_INET, libc::AF_INET6])
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let pid = fd.pid;
        let FdLink::Other(link) = fd.kind else {
            unreachable!("claimed sockets only")
        };
        let ino = socket_ino(link).expect("claimed");
        let what = format!("fd {} ({link})", fd.fd);
        let sock = crate::sys::take_fd(pid, fd.fd)
            .map_err(|e| Error::sys(pid, format!("{what}: pidfd_getfd"), e))?;
        let s = sock.as_fd();
        let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
        let no = |reason: String| Error::unsupported(pid, what.clone(), reason);
        let sol = |opt: i32, name: &str| {
            getsockopt_int(s, libc::SOL_SOCKET, opt).map_err(|e| sys(name, e))
        };
        let family = sol(libc::SO_DOMAIN, "SO_DOMAIN")?;
        let r#type = sol(libc::SO_TYPE, "SO_TYPE")?;
        let proto = sol(libc::SO_PROTOCOL, "SO_PROTOCOL")?;
        let tcp = match (r#type, proto) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) => true,
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => false,
            _ => {
                return Err(no(format!(
                    "INET socket of type {type} and protocol {proto}: only TCP and UDP sockets are supported"
                )))
            }
        };
        let local = is::local_addr(s).map_err(|e| sys("getsockname", e))?;
        let peer = is::peer_addr(s).map_err(|e| sys("getpeername", e))?;
        let shown = |a: &Option<SocketAddr>| a.map_or("nothing".to_string(), |a| a.to_string());
        let (mut state, backlog) = if tcp {
            let info = is::tcp_info(s).map_err(|e| sys("TCP_INFO", e))?;
            match info.state as u32 {
                TCP_CLOSE => (TCP_CLOSE, 0),
                TCP_LISTEN if info.unaccepted > 0 => {
                    return Err(no(format!(
                        "TCP socket listening on {local} with {} connections not accepted yet: cannot be dumped (the kernel has no way to put a connection back into an accept queue with its sequence numbers, and taking them out of it here could not be undone for a dump that fails or leaves the tree running); the program must accept them first",
                        info.unaccepted
                    )))
                }
                TCP_LISTEN => (TCP_LISTEN, info.backlog),
                st if is_synchronized(st)
                    && table.inet.tcp_established
                    && peer.is_some() =>
                {
                    (st, 0)
                }
                st if is_synchronized(st) => {
                    return Err(no(format!(
                        "TCP connection {local} -> {} ({}): established TCP connections are dumped only with --tcp-established",
                        shown(&peer),
                        state_name(st)
                    )))
                }
                st => {
                    return Err(no(format!(
                        "TCP connection {local} -> {} ({}): not supported yet (only established connections, and those being closed until both FINs are acknowledged)",
                        shown(&peer),
                        state_name(st)
                    )))
                }
            }
        } else if peer.is_some() {
            (TCP_ESTABLISHED, 0)
        } else {
            (TCP_CLOSE, 0)
        };
        for a in [Some(local), peer].into_iter().flatten() {
            if let SocketAddr::V6(v6) = a {
                if v6.scope_id() != 0 {
                    return Err(no(format!(
                        "INET6 socket with the interface-scoped address {a}: not supported yet"
                    )));
                }
            }
        }
        // TCP has a peek offset only since Linux 6.9; before, getsockopt
        // says EOPNOTSUPP and no TCP socket can have one set: it is off.
        let peek_off = match getsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF) {
            Err(Errno::EOPNOTSUPP) if tcp => -1,
            r => r.map_err(|e| sys("SO_PEEK_OFF", e))?,
        };
        if peek_off >= 0 && !tcp {
            return Err(no(
                "UDP socket with SO_PEEK_OFF set: not supported yet".into()
            ));
        }
        let opts = sock_opts(s, tcp).map_err(|(name, e)| sys(name, e))?;
        let (ip_opts, v6only) = ip_opts(s, family).map_err(|(name, e)| sys(name, e))?;
        let tcp_opts = if tcp {
            Some(tcp_opts(s).map_err(|(name, e)| sys(name, e))?)
        } else {
            None
        };
        let queue = if tcp {
            Vec::new()
        } else {
            read_queue(pid, &what, s)?
        };
        if tcp && state != TCP_CLOSE && state != TCP_LISTEN {
            let peer = peer.expect("connected");
            if peek_off >= 0 {
                return Err(no(
                    "TCP connection with SO_PEEK_OFF set: not supported yet".into()
                ));
            }
            let what = format!("{what}: TCP connection {local} -> {peer}");
            let lock = table
                .inet
                .lock
                .as_mut()
                .expect("the dump sets the lock up with --tcp-established");
            lock.block(local, peer)
                .map_err(|e| Error::task(pid, what.clone(), e))?;
            tr::set_repair(s, true).map_err(|e| sys("TCP_REPAIR", e))?;
            // From here on the dump's end takes it out of repair mode
            // again, whatever happens.
            let mine = s
                .try_clone_to_owned()
                .map_err(|e| sys("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
            table.inet.repaired.push(mine);
            let (now, entry, inq, outq) =
                read_stream(s).map_err(|(op, e)| Error::sys(pid, format!("{what}: {op}"), e))?;
            if now != state {
                debug!(
                    "pid {pid}: {what}: {} when locked, {} before",
                    state_name(now),
                    state_name(state)
                );
                state = now;
            }
            debug!(
                "pid {pid}: {what}: in seq {} len {}, out seq {} len {} ({} unsent)",
                entry.inq_seq,
                entry.inq_len,
                entry.outq_seq,
                entry.outq_len,
                entry.unsq_len.unwrap_or(0)
            );
            table.inet.streams.push((ino, entry, inq, outq));
        }
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Inetsk as i32,
            id,
            isk: Some(pb::InetSkEntry {
                id,
                ino,
                family: family as u32,
                r#type: r#type as u32,
                proto: proto as u32,
                state,
                src_port: local.port() as u32,
                dst_port: peer.map_or(0, |p| p.port() as u32),
                flags: fd.flags,
                backlog,
                src_addr: addr_words(&local.ip()),
                // No peer: the family's unspecified address, port 0, as
                // CRIU writes it (its restore wants both addresses of
                // the family's length).
                dst_addr: addr_words(&peer.map_or_else(
                    || match local {
                        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    },
                    |p| p.ip(),
                )),
                fown: pb::FownEntry::default(),
                opts,
                v6only,
                ip_opts: Some(ip_opts),
                ifname: None,
                ns_id: None,
                shutdown: tcp.then(|| shutdown_of(state)).flatten(),
                tcp_opts,
            }),
            ..Default::default()
        });
        table
            .inet
            .queues
            .extend(queue.into_iter().map(|(m, from)| (id, m, from)));
        Ok((pb::FdTypes::Inetsk, id))
    }

    fn finish(&self, table: &FileTable, dir: &crate::imgdir::ImageDir) -> Result<()> {
        for (ino, e, inq, outq) in &table.inet.streams {
            let raw: Vec<u8> = inq.iter().chain(outq).copied().collect();
            dir.write_with_payloads(&format!("tcp-stream-{ino:x}.img"), &[(*e, raw.as_slice())])?;
        }
        Ok(())
    }
}

/// sk_shutdown as a connection in `state` has it: its sending side shut
/// down once its FIN is queued, its receiving side once the peer's came.
fn shutdown_of(state: u32) -> Option<i32> {
    let f = fins(state);
    let b = (f.received as i32 * pb::SkShutdown::Read as i32)
        | (f.sent as i32 * pb::SkShutdown::Write as i32);
    (b != 0).then_some(b)
}

/// A connection's state in repair mode: its entry, receive queue and send
/// queue.
/// The kernel counts a FIN in the sequence numbers: its own (FIN-WAIT,
/// CLOSING, LAST-ACK) in the send queue's, and in its length until the
/// peer acknowledges it (and in the part not sent, until it is sent); the
/// peer's (CLOSE-WAIT, CLOSING, LAST-ACK) in the receive queue's. The
/// entry keeps the FINs in the sequence numbers and takes them out of the
/// lengths, as CRIU's images do; the state says which FINs a restore
/// makes again.
///
/// Returns the state too, as it is in repair mode behind the network lock
/// (a FIN may have come since the first look).
fn read_stream(s: BorrowedFd<'_>) -> OptResult<(u32, pb::TcpStreamEntry, Vec<u8>, Vec<u8>)> {
    let info = is::tcp_info(s).map_err(|e| ("TCP_INFO", e))?;
    let state = info.state as u32;
    if !is_synchronized(state) {
        return Err((
            "TCP_INFO: the connection left the states that can be dumped",
            Errno::EAGAIN,
        ));
    }
    let set_q = |q| tr::set_queue(s, q).map_err(|e| ("TCP_REPAIR_QUEUE", e));
    set_q(tr::Queue::Recv)?;
    let inq_seq = tr::queue_seq(s).map_err(|e| ("TCP_QUEUE_SEQ (receive queue)", e))?;
    let inq_len = tr::inq_len(s).map_err(|e| ("SIOCINQ", e))?;
    let inq =
        tr::peek_queue(s, inq_len as usize).map_err(|e| ("peeking at the receive queue", e))?;
    set_q(tr::Queue::Send)?;
    let outq_seq = tr::queue_seq(s).map_err(|e| ("TCP_QUEUE_SEQ (send queue)", e))?;
    let outq_len = tr::outq_len(s).map_err(|e| ("SIOCOUTQ", e))?;
    let unsq_len = tr::unsent_len(s).map_err(|e| ("SIOCOUTQNSD", e))?;
    let w = tr::window(s).map_err(|e| ("TCP_REPAIR_WINDOW", e))?;
    let c = without_fins(
        state,
        Counters {
            inq_seq,
            outq_seq,
            outq_len,
            unsq_len,
            rcv_wup: w.rcv_wup,
            rcv_wnd: w.rcv_wnd,
        },
    );
    let (inq_seq, outq_seq, outq_len, unsq_len) = (c.inq_seq, c.outq_seq, c.outq_len, c.unsq_len);
    let outq =
        tr::peek_queue(s, outq_len as usize).map_err(|e| ("peeking at the send queue", e))?;
    set_q(tr::Queue::None)?;
    let opt_mask = info.options as u32;
    let mss_clamp = tr::mss(s).map_err(|e| ("TCP_MAXSEG", e))?;
    let timestamp = if opt_mask & tr::TCPI_OPT_TIMESTAMPS != 0 {
        Some(tr::timestamp(s).map_err(|e| ("TCP_TIMESTAMP", e))?)
    } else {
        None
    };
    let tcp = |opt, name| int(s, libc::IPPROTO_TCP, opt, name);
    Ok((
        state,
        pb::TcpStreamEntry {
            inq_len,
            inq_seq,
            outq_len,
            outq_seq,
            opt_mask,
            snd_wscale: info.snd_wscale as u32,
            mss_clamp,
            rcv_wscale: Some(info.rcv_wscale as u32),
            timestamp,
            cork: Some(tcp(libc::TCP_CORK, "TCP_CORK")? != 0),
            nodelay: Some(tcp(libc::TCP_NODELAY, "TCP_NODELAY")? != 0),
            unsq_len: Some(unsq_len),
            snd_wl1: Some(w.snd_wl1),
            snd_wnd: Some(w.snd_wnd),
            max_window: Some(w.max_window),
            rcv_wnd: Some(c.rcv_wnd),
            rcv_wup: Some(c.rcv_wup),
        },
        inq,
        outq,
    ))
}

/// The counters of a connection that its FINs take part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counters {
    /// After the last byte received (TCP_QUEUE_SEQ of the receive queue).
    inq_seq: u32,
    /// After the last byte queued to send.
    outq_seq: u32,
    /// Not acknowledged yet (SIOCOUTQ).
    outq_len: u32,
    /// Never sent (SIOCOUTQNSD).
    unsq_len: u32,
    /// Where the receive window was last announced, and its size.
    rcv_wup: u32,
    rcv_wnd: u32,
}

/// The counters as a tcp-stream image has them (CRIU's convention,
/// `images::inet::data_seqs`): the sequence numbers and the window as
/// the kernel has them, FINs counted; the lengths of data alone. Its own
/// FIN is the last thing queued: in the send queue's length until the
/// peer acknowledges it, and in the part never sent until it is sent (so
/// there if anything is).
fn without_fins(state: u32, c: Counters) -> Counters {
    let f = fins(state);
    let mut out = c;
    if f.sent {
        if !f.acked {
            out.outq_len = c.outq_len.saturating_sub(1);
        }
        out.unsq_len = c.unsq_len.saturating_sub(1);
    }
    out
}

pub(super) type OptResult<T> = std::result::Result<T, (&'static str, Errno)>;

fn int(s: BorrowedFd<'_>, level: i32, opt: i32, name: &'static str) -> OptResult<i32> {
    getsockopt_int(s, level, opt).map_err(|e| (name, e))
}

/// The socket-level options; keepalive timings of a TCP socket too.
pub(super) fn sock_opts(s: BorrowedFd<'_>, tcp: bool) -> OptResult<pb::SkOptsEntry> {
    let sol = |opt, name| int(s, libc::SOL_SOCKET, opt, name);
    let (snd_s, snd_us) =
        getsockopt_timeval(s, libc::SO_SNDTIMEO).map_err(|e| ("SO_SNDTIMEO", e))?;
    let (rcv_s, rcv_us) =
        getsockopt_timeval(s, libc::SO_RCVTIMEO).map_err(|e| ("SO_RCVTIMEO", e))?;
    let keep = |opt, name| -> OptResult<Option<u32>> {
        if tcp {
            Ok(Some(int(s, libc::IPPROTO_TCP, opt, name)? as u32))
        } else {
            Ok(None)
        }
    };
    Ok(pb::SkOptsEntry {
        so_sndbuf: sol(libc::SO_SNDBUF, "SO_SNDBUF")? as u32,
        so_rcvbuf: sol(libc::SO_RCVBUF, "SO_RCVBUF")? as u32,
        so_snd_tmo_sec: snd_s,
        so_snd_tmo_usec: snd_us,
        so_rcv_tmo_sec: rcv_s,
        so_rcv_tmo_usec: rcv_us,
        reuseaddr: Some(sol(libc::SO_REUSEADDR, "SO_REUSEADDR")? != 0),
        so_reuseport: Some(sol(libc::SO_REUSEPORT, "SO_REUSEPORT")? != 0),
        so_priority: Some(sol(libc::SO_PRIORITY, "SO_PRIORITY")? as u32),
        so_broadcast: Some(sol(libc::SO_BROADCAST, "SO_BROADCAST")? != 0),
        so_keepalive: Some(sol(libc::SO_KEEPALIVE, "SO_KEEPALIVE")? != 0),
        so_buf_lock: Some(sol(libc::SO_BUF_LOCK, "SO_BUF_LOCK")? as u32),
        tcp_keepcnt: keep(libc::TCP_KEEPCNT, "TCP_KEEPCNT")?,
        tcp_keepidle: keep(libc::TCP_KEEPIDLE, "TCP_KEEPIDLE")?,
        tcp_keepintvl: keep(libc::TCP_KEEPINTVL, "TCP_KEEPINTVL")?,
        ..Default::default()
    })
}

/// IP-level options, and IPV6_V6ONLY of an INET6 socket.
fn ip_opts(s: BorrowedFd<'_>, family: i32) -> OptResult<(pb::IpOptsEntry, Option<bool>)> {
    if family == libc::AF_INET6 {
        let v6 = |opt, name| int(s, libc::IPPROTO_IPV6, opt, name);
        return Ok((
            pb::IpOptsEntry {
                freebind: Some(v6(libc::IPV6_FREEBIND, "IPV6_FREEBIND")? != 0),
                tos: Some(v6(libc::IPV6_TCLASS, "IPV6_TCLASS")? as u32),
                ..Default::default()
            },
            Some(v6(libc::IPV6_V6ONLY, "IPV6_V6ONLY")? != 0),
        ));
    }
    let ip = |opt, name| int(s, libc::IPPROTO_IP, opt, name);
    Ok((
        pb::IpOptsEntry {
            freebind: Some(ip(libc::IP_FREEBIND, "IP_FREEBIND")? != 0),
            tos: Some(ip(libc::IP_TOS, "IP_TOS")? as u32),
            ..Default::default()
        },
        None,
    ))
}

fn tcp_opts(s: BorrowedFd<'_>) -> OptResult<pb::TcpOptsEntry> {
    let tcp = |opt, name| int(s, libc::IPPROTO_TCP, opt, name);
    Ok(pb::TcpOptsEntry {
        cork: Some(tcp(libc::TCP_CORK, "TCP_CORK")? != 0),
        nodelay: Some(tcp(libc::TCP_NODELAY, "TCP_NODELAY")? != 0),
        keepcnt: Some(tcp(libc::TCP_KEEPCNT, "TCP_KEEPCNT")? as u32),
        keepidle: Some(tcp(libc::TCP_KEEPIDLE, "TCP_KEEPIDLE")? as u32),
        keepintvl: Some(tcp(libc::TCP_KEEPINTVL, "TCP_KEEPINTVL")? as u32),
    })
}

/// The datagrams queued for reception on a UDP socket, in order, each with
/// its source as a sockaddr; SO_PEEK_OFF is put back to "off" (as it was)
/// whatever happens.
fn read_queue(pid: Pid, what: &str, s: BorrowedFd<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
    setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).map_err(|e| sys("SO_PEEK_OFF", e))?;
    let got = peek_all(pid, what, s);
    let back = setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)
        .map_err(|e| sys("putting SO_PEEK_OFF back", e));
    let got = got?;
    back?;
    Ok(got)
}

fn peek_all(pid: Pid, what: &str, s: BorrowedFd<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let sys = |op: &str, e: Errno| Error::sys(pid, format!("{what}: {op}"), e);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let (got, full, from) = match is::peek_datagram(s, &mut buf) {
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(sys("peeking at its receive queue", e)),
            Ok(r) => r,
        };
        if full > got {
            // Larger than the buffer: again, whole, from where it starts.
            setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, bytes as i32)
                .map_err(|e| sys("SO_PEEK_OFF", e))?;
            buf.resize(full, 0);
            continue;
        }
        if full == 0 {
            // A peek offset cannot step over a datagram of no bytes.
            return Err(Error::unsupported(
                pid,
                what.to_string(),
                "UDP socket with an empty datagram queued: not supported yet",
            ));
        }
        let from = from.ok_or_else(|| {
            Error::task(
                pid,
                what.to_string(),
                "a queued datagram has no INET source address",
            )
        })?;
        out.push((buf[..got].to_vec(), is::to_bytes(&from)));
        bytes += got;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fins_left_out_of_the_lengths_only() {
        use crate::images::inet::*;
        let raw = Counters {
            inq_seq: 1001,
            outq_seq: 5001,
            outq_len: 301,
            unsq_len: 0,
            rcv_wup: 1001,
            rcv_wnd: 100,
        };
        assert_eq!(without_fins(TCP_ESTABLISHED, raw), raw);
        // The peer's FIN: in the sequence numbers and the window, as CRIU
        // keeps it.
        assert_eq!(without_fins(TCP_CLOSE_WAIT, raw), raw);
        // Its own FIN, sent and not acknowledged: out of the length only.
        for st in [TCP_LAST_ACK, TCP_CLOSING] {
            let c = without_fins(st, raw);
            assert_eq!(
                (c.inq_seq, c.outq_seq, c.outq_len, c.unsq_len),
                (1001, 5001, 300, 0)
            );
        }
        // Not sent yet: in the part never sent.
        let w1 = without_fins(
            TCP_FIN_WAIT1,
            Counters {
                unsq_len: 41,
                ..raw
            },
        );
        assert_eq!(
            (w1.outq_seq, w1.outq_len, w1.unsq_len, w1.inq_seq),
            (5001, 300, 40, 1001)
        );
        // Acknowledged: nothing left in the queue.
        let w2 = without_fins(TCP_FIN_WAIT2, Counters { outq_len: 0, ..raw });
        assert_eq!((w2.outq_seq, w2.outq_len), (5001, 0));
        // What the restore takes the FINs out of again.
        for st in [
            TCP_ESTABLISHED,
            TCP_CLOSE_WAIT,
            TCP_LAST_ACK,
            TCP_CLOSING,
            TCP_FIN_WAIT1,
        ] {
            let c = without_fins(st, raw);
            let e = pb::TcpStreamEntry {
                inq_seq: c.inq_seq,
                outq_seq: c.outq_seq,
                outq_len: c.outq_len,
                rcv_wup: Some(c.rcv_wup),
                rcv_wnd: Some(c.rcv_wnd),
                ..Default::default()
            };
            let d = data_seqs(st, &e);
            let f = fins(st);
            assert_eq!(d.inq_seq, 1001 - f.received as u32, "{}", state_name(st));
            assert_eq!(d.outq_seq, 5001 - f.sent as u32, "{}", state_name(st));
            let (wup, wnd) = if f.received { (1000, 101) } else { (1001, 100) };
            assert_eq!((d.rcv_wup, d.rcv_wnd), (Some(wup), Some(wnd)));
        }
    }

    #[test]
    fn inet_claims_no_link_by_itself() {
        for l in [&b"socket:[9]"[..], b"/x", b"pipe:[1]"] {
            assert!(!Inet.claims(&FdLink::of(l)));
        }
        assert_eq!(socket_ino("socket:[77]"), Some(77));
    }
}
