//! INET and INET6 sockets (TCP not connected, UDP). The engine makes every
//! one of them before any task exists and each task takes its own with
//! pidfd_getfd, because the sockets of a tree depend on each other: a
//! datagram queued on one is sent again from the socket it came from, so
//! its source address is the one it had, which needs that socket bound and
//! not yet connected anywhere else.
//!
//! So it goes in steps over all the sockets: each is made with its options
//! and bound (SO_REUSEADDR on for the bind and listen, as CRIU does; a
//! port still held by the dumped tree's own closed connections in
//! TIME-WAIT is freed by dropping them with sock_diag); then the queues are filled, each datagram from a socket of the
//! tree bound to its source, or else from a temporary one bound there;
//! then UDP sockets are connected and TCP ones listen.
//!
//! An established TCP connection (tcp-stream-INO.img, restored only with
//! --tcp-established) is made in repair mode: bound, its sequence numbers
//! set, "connected" without a packet, its negotiated options, queues and
//! window set. It stays in repair mode, silent, until every task is ready
//! (`finish`): then repair mode is turned off and the part of the send
//! queue that was never sent is sent as new data. A connection being
//! closed gets its FINs again (`inet_fin`). The network lock the
//! dump left is lifted once the tree runs; a restore that fails closes
//! the sockets still in repair mode, so the peers hear nothing, and keeps
//! it for the next attempt. Where the sockets are made in a network
//! namespace that has no lock (one the restore made anew: the dump's went
//! with the old one), the restore locks the connections there first
//! (`lock_here`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::inet_fin::{self, Step};
use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::inet::{
    addrs, data_seqs, is_synchronized, state_name, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
};
use crate::images::pb;
use crate::images::set::TcpStream;
use crate::kernel::netlock;
use crate::restore::child::OpenFd;
use crate::restore::load::Images;
use crate::restore::stage::{EngineFds, Kind, Restorer};
use crate::sys::inet_sock as is;
use crate::sys::tcp_repair as tr;
use crate::sys::unix_sock::setsockopt_int;

pub struct Inet;

fn isk(f: &pb::FileEntry) -> &pb::InetSkEntry {
    f.isk.as_ref().expect("validated")
}

/// Why an inet_sk_entry cannot be restored, if so.
fn check_entry(i: &pb::InetSkEntry) -> std::result::Result<(), String> {
    let what = format!("socket:[{}]", i.ino);
    if !matches!(i.family as i32, libc::AF_INET | libc::AF_INET6) {
        return Err(format!("{what}: family {} is not INET", i.family));
    }
    let tcp = match (i.r#type as i32, i.proto as i32) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => true,
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => false,
        (t, p) => {
            return Err(format!(
                "{what}: type {t} and protocol {p}: only TCP and UDP sockets can be restored"
            ))
        }
    };
    let Some((_, peer)) = addrs(i) else {
        return Err(format!(
            "{what}: its addresses or ports do not make {} addresses",
            if i.family as i32 == libc::AF_INET {
                "INET"
            } else {
                "INET6"
            }
        ));
    };
    let ok = match (tcp, i.state) {
        (true, TCP_CLOSE) | (true, TCP_LISTEN) => peer.is_none(),
        (true, st) if is_synchronized(st) => peer.is_some(),
        (false, TCP_CLOSE) => peer.is_none(),
        (false, TCP_ESTABLISHED) => peer.is_some(),
        _ => false,
    };
    if !ok {
        return Err(format!(
            "{what}: a {} socket in state {}{}: cannot be restored yet",
            if tcp { "TCP" } else { "UDP" },
            state_name(i.state),
            if peer.is_some() { " with a peer" } else { "" }
        ));
    }
    Ok(())
}

impl FdKind for Inet {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Inetsk
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        match &f.isk {
            None => Err("INETSK without its inet_sk entry".into()),
            Some(i) => check_entry(i),
        }
    }

    fn source(
        &self,
        _imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        // `KIND` made every one in the engine, before any plan.
        Err(Error::task(
            pid,
            format!("fd {} (socket:[{}])", fd.fd, isk(f).ino),
            "an INET socket the engine did not make",
        ))
    }
}

/// Whether the entry is a TCP connection (with a tcp-stream image).
fn is_connection(i: &pb::InetSkEntry) -> bool {
    i.proto as i32 == libc::IPPROTO_TCP && !matches!(i.state, TCP_CLOSE | TCP_LISTEN)
}

/// Why a connection's stream cannot be restored, if so.
fn check_stream(state: u32, t: &TcpStream) -> std::result::Result<(), String> {
    let e = &t.entry;
    inet_fin::check(state, e)?;
    if e.opt_mask & tr::TCPI_OPT_WSCALE != 0
        && (e.snd_wscale > 14 || e.rcv_wscale.unwrap_or(0) > 14)
    {
        return Err(format!(
            "window scales {} and {} are over 14",
            e.snd_wscale,
            e.rcv_wscale.unwrap_or(0)
        ));
    }
    if e.mss_clamp == 0 || e.mss_clamp > 65535 {
        return Err(format!("MSS clamp {} is not a segment size", e.mss_clamp));
    }
    Ok(())
}

/// Each socket's queued datagrams come with their source addresses; each
/// TCP connection's stream is one that can be restored.
fn validate(imgs: &Images) -> Result<()> {
    for f in imgs.files.values() {
        let Some(i) = &f.isk else { continue };
        if !is_connection(i) {
            continue;
        }
        let name = format!("tcp-stream-{:x}.img", i.ino);
        let Some(t) = imgs.tcp_streams.get(&i.ino) else {
            return Err(imgs.bad(
                &name,
                format!("missing, for the TCP connection socket:[{}]", i.ino),
            ));
        };
        check_stream(i.state, t)
            .map_err(|e| imgs.bad(&name, format!("socket:[{}]: {e}", i.ino)))?;
    }
    for (id, q) in &imgs.sk_queues {
        let Some(i) = imgs.files.get(id).and_then(|f| f.isk.as_ref()) else {
            continue;
        };
        let addrs = imgs.sk_queue_addrs.get(id);
        for n in 0..q.len() {
            let from = addrs
                .and_then(|a| a.get(n))
                .and_then(|a| a.as_deref())
                .and_then(is::from_bytes);
            if from.is_none() {
                return Err(imgs.bad(
                    "sk-queues.img",
                    format!(
                        "datagram {} queued for socket:[{}] (file {id}) has no INET source address",
                        n + 1,
                        i.ino
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub const KIND: Kind = Kind {
    name: "INET sockets",
    validate,
    new: |imgs, opts| {
        let conn = imgs
            .files
            .values()
            .filter_map(|f| f.isk.as_ref())
            .find(|i| is_connection(i));
        let lock = match conn {
            Some(i) if !opts.tcp_established => {
                let (l, p) = addrs(i).expect("validated");
                return Err(Error::Usage(format!(
                    "{}: socket:[{}] is the TCP connection {l} -> {}: restored only with --tcp-established",
                    imgs.dir.display(),
                    i.ino,
                    p.map_or("?".into(), |p| p.to_string())
                )));
            }
            Some(_) => imgs.tasks.first().map(|t| netlock::table_name(t.pid)),
            None => None,
        };
        Ok(Box::new(Made {
            repaired: Vec::new(),
            lock,
        }))
    },
};

/// A connection made in repair mode, waiting for `finish`.
struct Repaired {
    pid: Pid,
    what: String,
    fd: OwnedFd,
    /// The part of the send queue never sent.
    unsent: Vec<u8>,
    /// What is left of closing it again once the bytes never sent are
    /// (its own FIN goes after them, and what came after its FIN).
    after: Vec<Step>,
    peer: inet_fin::Peer,
}

struct Made {
    repaired: Vec<Repaired>,
    /// The network lock's table, to lift at the end.
    lock: Option<String>,
}

impl Made {
    fn unlock(&mut self) {
        if let Some(t) = self.lock.take() {
            if netlock::is_locked(&t) {
                match netlock::unlock(&t) {
                    Ok(()) => debug!("network lock {t} lifted"),
                    Err(e) => warn!("{e}"),
                }
            }
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        // A restore that failed: the sockets still in repair mode close
        // without a word, and the lock stays (as CRIU leaves it), so the
        // peers keep their connections for another restore.
        self.repaired.clear();
        if let Some(t) = self.lock.take() {
            if netlock::is_locked(&t) {
                warn!(
                    "the network lock stays for another restore of these images (nft delete table inet {t} lifts it)"
                );
            }
        }
    }
}

impl Restorer for Made {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        if let Some(t) = &self.lock {
            lock_here(imgs, t)?;
        }
        for (id, fd) in make_all(imgs, &mut self.repaired)? {
            fds.descriptions.insert(id, fd);
        }
        Ok(())
    }

    fn finish(&mut self, _imgs: &Images) -> Result<()> {
        for r in &self.repaired {
            let fd = r.fd.as_fd();
            let err = |op: &str, e: Errno| Error::sys(r.pid, format!("{}: {op}", r.what), e);
            tr::set_repair(fd, false).map_err(|e| err("leaving repair mode", e))?;
            let mut left = r.unsent.as_slice();
            while !left.is_empty() {
                match tr::send_some(fd, left) {
                    Ok(n) => left = &left[n..],
                    Err(Errno::EAGAIN) => {
                        // Room the kernel did not give yet: a larger
                        // buffer, as the dumped socket had it full.
                        let now = crate::sys::unix_sock::getsockopt_int(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_SNDBUF,
                        )
                        .map_err(|e| err("SO_SNDBUF", e))?;
                        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, now)
                            .map_err(|e| err("SO_SNDBUFFORCE", e))?;
                    }
                    Err(e) => return Err(err("sending the data never sent", e)),
                }
            }
            for &step in &r.after {
                inet_fin::run(fd, step, &r.peer, false)
                    .map_err(|e| Error::task(r.pid, r.what.clone(), e))?;
            }
        }
        self.repaired.clear();
        Ok(())
    }

    fn released(&mut self) {
        self.unlock();
    }
}

/// The network lock of the images' connections, taken in the tree's new
/// network namespace before any of its links is up (restore/netns.rs):
/// a peer outside, through a veth, retransmitting into the namespace
/// while its socket is not made yet would otherwise be answered with a
/// reset. The stage's own `lock_here` then finds it taken.
pub fn lock_before_links(imgs: &Images) -> Result<()> {
    let any = imgs
        .files
        .values()
        .filter_map(|f| f.isk.as_ref())
        .any(is_connection);
    match (any, imgs.tasks.first()) {
        (true, Some(root)) => lock_here(imgs, &netlock::table_name(root.pid)),
        _ => Ok(()),
    }
}

/// The network lock over every connection of the images, in the network
/// namespace the sockets are made in, if `table` is not there already.
/// A connection in repair mode still answers what it receives: the peer's
/// FIN, made again for a connection in CLOSE-WAIT, is acknowledged a few
/// milliseconds later, and if the peer's socket is not made yet (the other
/// end of a connection inside the tree, made after it), the kernel answers
/// that ACK with a reset, which leaves the connection CLOSE. The lock drops
/// the ACK, as it drops every packet of the connections until the tree
/// runs, and lets the segments the restore makes up through (its mark).
fn lock_here(imgs: &Images, table: &str) -> Result<()> {
    if netlock::is_locked(table) {
        return Ok(());
    }
    let root = imgs.tasks[0].pid;
    let mut lock = netlock::NetLock::new(root);
    for f in imgs.files.values() {
        let Some(i) = f.isk.as_ref().filter(|i| is_connection(i)) else {
            continue;
        };
        let (local, peer) = addrs(i).expect("validated");
        let peer = peer.expect("validated");
        lock.block(local, peer).map_err(|e| {
            Error::task(
                root,
                format!("socket:[{}] (TCP connection {local} -> {peer})", i.ino),
                e,
            )
        })?;
    }
    debug!(
        "network lock {}: made in the network namespace of the restore, which had none",
        lock.table()
    );
    // Lifted with the dump's, once the tree runs (`released`).
    lock.keep();
    Ok(())
}

/// One socket being made.
struct Sock<'a> {
    id: u32,
    /// A task that holds it, to name in errors.
    pid: Pid,
    i: &'a pb::InetSkEntry,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    fd: OwnedFd,
}

impl Sock<'_> {
    fn err(&self, op: &str, e: Errno) -> Error {
        Error::sys(
            self.pid,
            format!(
                "socket:[{}] (file {}, {}): {op}",
                self.i.ino, self.id, self.local
            ),
            e,
        )
    }
}

fn make_all(imgs: &Images, repaired: &mut Vec<Repaired>) -> Result<Vec<(u32, OwnedFd)>> {
    let holder = super::holders(imgs);
    let mut socks = Vec::new();
    for (id, f) in &imgs.files {
        let (Some(i), Some(&(pid, uid, gid))) = (&f.isk, holder.get(id)) else {
            continue;
        };
        let (local, peer) = addrs(i).expect("validated");
        let fd = is::socket_owned(uid, gid, i.family as i32, i.r#type as i32, i.proto as i32)
            .map_err(|e| Error::sys(pid, format!("socket:[{}]: socket", i.ino), e))?;
        let s = Sock {
            id: *id,
            pid,
            i,
            local,
            peer,
            fd,
        };
        set_options(&s)?;
        if is_connection(i) {
            tr::set_repair(s.fd.as_fd(), true).map_err(|e| s.err("TCP_REPAIR", e))?;
        }
        if local.port() != 0 || !local.ip().is_unspecified() {
            let fd = s.fd.as_fd();
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
                .map_err(|e| s.err("SO_REUSEADDR", e))?;
            let mut bound = is::bind(fd, &local);
            if bound == Err(Errno::EADDRINUSE) && i.proto as i32 == libc::IPPROTO_TCP {
                // The tree's own closed connections, kept in TIME-WAIT,
                // hold a port the socket had bound: drop them, as if the
                // socket had stayed (the dumped tree had the port).
                let gone = crate::sys::inet_diag::destroy_time_wait(local.ip(), local.port())
                    .map_err(|e| s.err("dropping the TIME-WAIT connections of its port", e))?;
                if gone > 0 {
                    debug!("{local}: {gone} connection(s) in TIME-WAIT dropped");
                    bound = is::bind(fd, &local);
                }
            }
            bound.map_err(|e| match e {
                Errno::EADDRINUSE => Error::task(
                    s.pid,
                    format!("socket:[{}] (file {})", i.ino, s.id),
                    format!(
                        "cannot bind {local} again: in use by another socket, or (without SO_REUSEADDR) by a closed connection in TIME-WAIT"
                    ),
                ),
                e => s.err("bind", e),
            })?;
        }
        socks.push(s);
    }
    fill_queues(imgs, &socks)?;
    for s in &socks {
        let fd = s.fd.as_fd();
        if is_connection(s.i) {
            let t = &imgs.tcp_streams[&s.i.ino];
            let (unsent, after, peer) = resume_stream(s, t)?;
            repaired.push(Repaired {
                pid: s.pid,
                what: format!(
                    "socket:[{}] (file {}, TCP connection {} -> {})",
                    s.i.ino,
                    s.id,
                    s.local,
                    s.peer.expect("validated")
                ),
                fd: s
                    .fd
                    .try_clone()
                    .map_err(|e| s.err("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?,
                unsent,
                after,
                peer,
            });
        } else if let Some(peer) = s.peer {
            is::connect(fd, &peer).map_err(|e| s.err(&format!("connect to {peer}"), e))?;
        }
        if s.i.state == TCP_LISTEN {
            is::listen(fd, s.i.backlog as i32).map_err(|e| s.err("listen", e))?;
        }
    }
    for s in &socks {
        let fd = s.fd.as_fd();
        // Only now: listen() looks for conflicts on the port again, with
        // the connections accepted from it bound there too.
        let reuse = s.i.opts.reuseaddr.unwrap_or(false) as i32;
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuse)
            .map_err(|e| s.err("SO_REUSEADDR", e))?;
        let fl = s.i.flags as i32 & libc::O_NONBLOCK;
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&s.fd),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(fl)),
        )
        .map_err(|e| s.err("O_NONBLOCK", e))?;
    }
    Ok(socks.into_iter().map(|s| (s.id, s.fd)).collect())
}

/// A connection in repair mode, as the stream image has it: sequence
/// numbers, connect, negotiated options, queues, window; then its FINs
/// (`inet_fin`), up to its own if bytes never sent must go before it.
/// Returns the part of the send queue never sent, which goes out after
/// repair mode, and the steps of closing it left for then.
fn resume_stream(s: &Sock<'_>, t: &TcpStream) -> Result<(Vec<u8>, Vec<Step>, inet_fin::Peer)> {
    let fd = s.fd.as_fd();
    // The image counts the FINs in the sequence numbers (CRIU's way);
    // the rebuilt connection has none until they are made again.
    let e = &data_seqs(s.i.state, &t.entry);
    let peer = s.peer.expect("validated");
    let q = |q: tr::Queue| tr::set_queue(fd, q).map_err(|err| s.err("TCP_REPAIR_QUEUE", err));
    q(tr::Queue::Recv)?;
    tr::set_queue_seq(fd, e.inq_seq.wrapping_sub(e.inq_len))
        .map_err(|err| s.err("TCP_QUEUE_SEQ (receive queue)", err))?;
    q(tr::Queue::Send)?;
    tr::set_queue_seq(fd, e.outq_seq.wrapping_sub(e.outq_len))
        .map_err(|err| s.err("TCP_QUEUE_SEQ (send queue)", err))?;
    q(tr::Queue::None)?;
    is::connect(fd, &peer)
        .map_err(|err| s.err(&format!("connect to {peer} in repair mode"), err))?;
    let mut opts = vec![(tr::TCPOPT_MAXSEG, e.mss_clamp)];
    if e.opt_mask & tr::TCPI_OPT_SACK != 0 {
        opts.push((tr::TCPOPT_SACK_PERM, 0));
    }
    if e.opt_mask & tr::TCPI_OPT_WSCALE != 0 {
        opts.push((
            tr::TCPOPT_WINDOW,
            e.snd_wscale | (e.rcv_wscale.unwrap_or(0) << 16),
        ));
    }
    if e.opt_mask & tr::TCPI_OPT_TIMESTAMPS != 0 {
        opts.push((tr::TCPOPT_TIMESTAMP, 0));
    }
    tr::set_options(fd, &opts).map_err(|err| s.err("TCP_REPAIR_OPTIONS", err))?;
    if let Some(ts) = e.timestamp {
        tr::set_timestamp(fd, ts).map_err(|err| s.err("TCP_TIMESTAMP", err))?;
    }
    // The queues need the room they had: the dumped sizes, or more.
    let o = &s.i.opts;
    let force = |opt, name, want: u32, have: u32| {
        let v = (have / 2).max(want);
        setsockopt_int(fd, libc::SOL_SOCKET, opt, v as i32).map_err(|err| s.err(name, err))
    };
    force(
        libc::SO_RCVBUFFORCE,
        "SO_RCVBUFFORCE",
        e.inq_len,
        o.so_rcvbuf,
    )?;
    force(
        libc::SO_SNDBUFFORCE,
        "SO_SNDBUFFORCE",
        e.outq_len,
        o.so_sndbuf,
    )?;
    let unsent = e.unsq_len.unwrap_or(0) as usize;
    let sent = t.outq.len() - unsent;
    q(tr::Queue::Recv)?;
    fill_stream(s, &t.inq, "receive")?;
    q(tr::Queue::Send)?;
    fill_stream(s, &t.outq[..sent], "send")?;
    q(tr::Queue::None)?;
    if let (Some(snd_wl1), Some(snd_wnd), Some(max_window), Some(rcv_wnd), Some(rcv_wup)) =
        (e.snd_wl1, e.snd_wnd, e.max_window, e.rcv_wnd, e.rcv_wup)
    {
        let w = tr::Window {
            snd_wl1,
            snd_wnd,
            max_window,
            rcv_wnd,
            rcv_wup,
        };
        tr::set_window(fd, &w).map_err(|err| s.err("TCP_REPAIR_WINDOW", err))?;
    }
    // Autotuning again, if the dumped socket had it (CRIU's images
    // without SO_BUF_LOCK: both sizes stay locked, as CRIU does).
    let lock = o.so_buf_lock.unwrap_or(3);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BUF_LOCK, lock as i32)
        .map_err(|err| s.err("SO_BUF_LOCK", err))?;
    let fin = inet_fin::Peer::of(s.local, peer, e);
    let mut steps = inet_fin::steps(s.i.state);
    // Its own FIN waits for the bytes never sent, and what came after it
    // waits for it.
    let now = match steps.iter().position(|&st| st == Step::Shut) {
        Some(at) if unsent > 0 => at,
        _ => steps.len(),
    };
    let after = steps.split_off(now);
    for step in steps {
        inet_fin::run(fd, step, &fin, true).map_err(|err| {
            Error::task(
                s.pid,
                format!(
                    "socket:[{}] (file {}, TCP connection {} -> {peer}, {})",
                    s.i.ino,
                    s.id,
                    s.local,
                    state_name(s.i.state)
                ),
                err,
            )
        })?;
    }
    Ok((t.outq[sent..].to_vec(), after, fin))
}

/// `data` into the queue selected in repair mode, in pieces the kernel
/// takes (halved while it has no memory for one).
fn fill_stream(s: &Sock<'_>, data: &[u8], which: &str) -> Result<()> {
    let fd = s.fd.as_fd();
    let mut chunk = data.len().clamp(1, 64 << 10);
    let mut left = data;
    while !left.is_empty() {
        let n = chunk.min(left.len());
        match tr::send_some(fd, &left[..n]) {
            Ok(0) => return Err(s.err(&format!("filling its {which} queue"), Errno::EIO)),
            Ok(k) => left = &left[k..],
            Err(Errno::ENOMEM | Errno::EAGAIN) if chunk > 1 => chunk /= 2,
            Err(e) => return Err(s.err(&format!("filling its {which} queue"), e)),
        }
    }
    Ok(())
}

/// The options of the image, before the bind (IPV6_V6ONLY can only be set
/// then).
fn set_options(s: &Sock<'_>) -> Result<()> {
    let fd = s.fd.as_fd();
    let o = &s.i.opts;
    let set = |level: i32, opt: i32, v: i32, name: &str| {
        setsockopt_int(fd, level, opt, v).map_err(|e| s.err(name, e))
    };
    let sol = libc::SOL_SOCKET;
    let v6 = s.i.family as i32 == libc::AF_INET6;
    if v6 {
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            s.i.v6only.unwrap_or(false) as i32,
            "IPV6_V6ONLY",
        )?;
    }
    if let Some(ip) = &s.i.ip_opts {
        if ip.freebind == Some(true) {
            let (level, opt) = if v6 {
                (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND)
            } else {
                (libc::IPPROTO_IP, libc::IP_FREEBIND)
            };
            set(level, opt, 1, "IP_FREEBIND")?;
        }
        if let Some(tos) = ip.tos.filter(|&t| t != 0) {
            let (level, opt, name) = if v6 {
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS")
            } else {
                (libc::IPPROTO_IP, libc::IP_TOS, "IP_TOS")
            };
            set(level, opt, tos as i32, name)?;
        }
    }
    if o.so_reuseport == Some(true) {
        set(sol, libc::SO_REUSEPORT, 1, "SO_REUSEPORT")?;
    }
    if o.so_broadcast == Some(true) {
        set(sol, libc::SO_BROADCAST, 1, "SO_BROADCAST")?;
    }
    if let Some(p) = o.so_priority.filter(|&p| p != 0) {
        set(sol, libc::SO_PRIORITY, p as i32, "SO_PRIORITY")?;
    }
    // Only the sizes set by hand: the kernel tunes the others (CRIU's
    // images without SO_BUF_LOCK: both, as CRIU does).
    let lock = o.so_buf_lock.unwrap_or(3);
    if lock & 1 != 0 {
        set(
            sol,
            libc::SO_SNDBUFFORCE,
            (o.so_sndbuf / 2) as i32,
            "SO_SNDBUFFORCE",
        )?;
    }
    if lock & 2 != 0 {
        set(
            sol,
            libc::SO_RCVBUFFORCE,
            (o.so_rcvbuf / 2) as i32,
            "SO_RCVBUFFORCE",
        )?;
    }
    if let Some(l) = o.so_buf_lock {
        set(sol, libc::SO_BUF_LOCK, l as i32, "SO_BUF_LOCK")?;
    }
    for (opt, sec, usec, name) in [
        (
            libc::SO_SNDTIMEO,
            o.so_snd_tmo_sec,
            o.so_snd_tmo_usec,
            "SO_SNDTIMEO",
        ),
        (
            libc::SO_RCVTIMEO,
            o.so_rcv_tmo_sec,
            o.so_rcv_tmo_usec,
            "SO_RCVTIMEO",
        ),
    ] {
        if sec != 0 || usec != 0 {
            is::setsockopt_timeval(fd, opt, sec, usec).map_err(|e| s.err(name, e))?;
        }
    }
    if o.so_keepalive == Some(true) {
        set(sol, libc::SO_KEEPALIVE, 1, "SO_KEEPALIVE")?;
    }
    let t = s.i.tcp_opts.unwrap_or_default();
    let tcp = libc::IPPROTO_TCP;
    let keep = [
        (
            libc::TCP_KEEPCNT,
            t.keepcnt.or(o.tcp_keepcnt),
            "TCP_KEEPCNT",
        ),
        (
            libc::TCP_KEEPIDLE,
            t.keepidle.or(o.tcp_keepidle),
            "TCP_KEEPIDLE",
        ),
        (
            libc::TCP_KEEPINTVL,
            t.keepintvl.or(o.tcp_keepintvl),
            "TCP_KEEPINTVL",
        ),
    ];
    if s.i.proto as i32 == libc::IPPROTO_TCP {
        for (opt, v, name) in keep {
            if let Some(v) = v {
                set(tcp, opt, v as i32, name)?;
            }
        }
        if t.nodelay == Some(true) {
            set(tcp, libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
        }
        if t.cork == Some(true) {
            set(tcp, libc::TCP_CORK, 1, "TCP_CORK")?;
        }
    }
    Ok(())
}

/// `a` with a v4-mapped INET6 address as the INET one it stands for.
fn plain(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        a => a,
    }
}

/// Where a sender of `family` reaches `target`, bound to `local`.
fn destination(local: SocketAddr, family: i32) -> SocketAddr {
    let ip = match (family, plain(local).ip()) {
        (libc::AF_INET, IpAddr::V4(v4)) if !v4.is_unspecified() => IpAddr::V4(v4),
        (libc::AF_INET, _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (_, IpAddr::V6(v6)) if !v6.is_unspecified() => IpAddr::V6(v6),
        _ => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, local.port())
}

/// Every datagram sent again, in order, from its source address. The
/// engine's thread stays on one CPU meanwhile: loopback delivers each
/// through the sending CPU's backlog, and two backlogs could reorder.
fn fill_queues(imgs: &Images, socks: &[Sock<'_>]) -> Result<()> {
    if !socks
        .iter()
        .any(|s| imgs.sk_queues.get(&s.id).is_some_and(|q| !q.is_empty()))
    {
        return Ok(());
    }
    let me = nix::unistd::Pid::from_raw(0);
    let was = nix::sched::sched_getaffinity(me).ok();
    if let Some(set) = &was {
        let cpu = (0..nix::sched::CpuSet::count()).find(|&c| set.is_set(c).unwrap_or(false));
        if let Some(cpu) = cpu {
            let mut one = nix::sched::CpuSet::new();
            if one.set(cpu).is_ok() {
                let _ = nix::sched::sched_setaffinity(me, &one);
            }
        }
    }
    let r = socks.iter().try_for_each(|t| fill_one(imgs, socks, t));
    if let Some(set) = &was {
        let _ = nix::sched::sched_setaffinity(me, set);
    }
    r
}

fn fill_one(imgs: &Images, socks: &[Sock<'_>], t: &Sock<'_>) -> Result<()> {
    let Some(q) = imgs.sk_queues.get(&t.id) else {
        return Ok(());
    };
    let addrs = &imgs.sk_queue_addrs[&t.id];
    for (m, from) in q.iter().zip(addrs) {
        let from = plain(is::from_bytes(from.as_deref().expect("validated")).expect("validated"));
        let family = if from.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let sender = socks.iter().find(|s| {
            s.i.proto as i32 == libc::IPPROTO_UDP
                && s.i.family as i32 == family
                && (s.local == from
                    || (s.local.ip().is_unspecified() && s.local.port() == from.port()))
        });
        let to = destination(t.local, family);
        let what = |e: Errno| {
            t.err(
                &format!("sending its queued datagram from {from} again to {to}"),
                e,
            )
        };
        match sender {
            Some(s) => is::send_to(s.fd.as_fd(), m, &to).map_err(what)?,
            None => {
                let tmp = temporary_sender(family, from).map_err(what)?;
                is::send_to(tmp.as_fd(), m, &to).map_err(what)?;
            }
        }
    }
    Ok(())
}

/// A UDP socket bound to `from`, which no socket of the tree is.
fn temporary_sender(family: i32, from: SocketAddr) -> nix::Result<OwnedFd> {
    let fd = is::socket(family, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
    let b: BorrowedFd<'_> = fd.as_fd();
    setsockopt_int(b, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let (level, opt) = if family == libc::AF_INET6 {
        (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND)
    } else {
        (libc::IPPROTO_IP, libc::IP_FREEBIND)
    };
    setsockopt_int(b, level, opt, 1)?;
    is::bind(b, &from)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::inet::addr_words;

    fn entry(tcp: bool, state: u32, local: &str, peer: Option<&str>) -> pb::InetSkEntry {
        let l: SocketAddr = local.parse().unwrap();
        let p: Option<SocketAddr> = peer.map(|p| p.parse().unwrap());
        pb::InetSkEntry {
            ino: 5,
            family: if l.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            } as u32,
            r#type: if tcp {
                libc::SOCK_STREAM
            } else {
                libc::SOCK_DGRAM
            } as u32,
            proto: if tcp {
                libc::IPPROTO_TCP
            } else {
                libc::IPPROTO_UDP
            } as u32,
            state,
            src_port: l.port() as u32,
            src_addr: addr_words(&l.ip()),
            dst_port: p.map_or(0, |p| p.port() as u32),
            dst_addr: p.map_or_else(Vec::new, |p| addr_words(&p.ip())),
            ..Default::default()
        }
    }

    #[test]
    fn entries_checked() {
        assert!(check_entry(&entry(true, TCP_LISTEN, "127.0.0.1:80", None)).is_ok());
        assert!(check_entry(&entry(true, TCP_CLOSE, "[::]:0", None)).is_ok());
        assert!(check_entry(&entry(false, TCP_ESTABLISHED, "[::1]:5", Some("[::1]:6"))).is_ok());
        for st in [TCP_ESTABLISHED, 4, 5, 8, 9, 11] {
            assert!(check_entry(&entry(true, st, "127.0.0.1:1", Some("127.0.0.1:2"))).is_ok());
            assert!(check_entry(&entry(true, st, "127.0.0.1:1", None)).is_err());
        }
        // Connecting, and the peer's side closed.
        for (st, name) in [(2, "SYN-SENT"), (6, "TIME-WAIT")] {
            let e = check_entry(&entry(true, st, "127.0.0.1:1", Some("127.0.0.1:2")));
            assert!(e
                .unwrap_err()
                .contains(&format!("TCP socket in state {name}")));
        }
        assert!(check_entry(&entry(false, TCP_ESTABLISHED, "127.0.0.1:1", None)).is_err());
        let mut bad = entry(false, TCP_CLOSE, "127.0.0.1:1", None);
        bad.src_addr = vec![1, 2];
        assert!(check_entry(&bad).is_err());
        bad = entry(false, TCP_CLOSE, "127.0.0.1:1", None);
        bad.src_port = 70000;
        assert!(check_entry(&bad).is_err());
    }

    #[test]
    fn destinations() {
        let d = |l: &str, f| destination(l.parse().unwrap(), f).to_string();
        assert_eq!(d("0.0.0.0:9", libc::AF_INET), "127.0.0.1:9");
        assert_eq!(d("10.1.2.3:9", libc::AF_INET), "10.1.2.3:9");
        assert_eq!(d("[::]:9", libc::AF_INET), "127.0.0.1:9");
        assert_eq!(d("[::]:9", libc::AF_INET6), "[::1]:9");
        assert_eq!(d("[::ffff:127.0.0.2]:9", libc::AF_INET), "127.0.0.2:9");
        assert_eq!(d("[fd00::1]:9", libc::AF_INET6), "[fd00::1]:9");
    }
}
