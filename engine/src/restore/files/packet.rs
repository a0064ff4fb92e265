//! AF_PACKET sockets, made by the engine before any task (with the
//! task's filesystem ids, so the socket's owner is the task's) and taken
//! by their tasks with pidfd_getfd: the PACKET_* options first (the
//! version must come before anything uses it), then the bind to the
//! protocol and interface, the memberships, and the fanout group last
//! (the kernel lets only a bound socket join one).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::OpenFd;
use crate::restore::load::Images;
use crate::restore::stage::{no_checks, EngineFds, Kind, Restorer};
use crate::sys::packet_sock as ps;
use crate::sys::unix_sock::setsockopt_int;

pub struct Packet;

/// What CRIU writes in `fanout` for a socket in no group.
const NO_FANOUT: u32 = 0xffff_ffff;

fn fanout(p: &pb::PacketSockEntry) -> Option<u32> {
    p.fanout.filter(|&f| f != NO_FANOUT)
}

fn what(p: &pb::PacketSockEntry, id: u32) -> String {
    match p.ino {
        Some(ino) => format!("socket:[{ino}] (packet)"),
        None => format!("file {id} (packet socket)"),
    }
}

impl FdKind for Packet {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Packetsk
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        let Some(p) = &f.psk else {
            return Err("PACKETSK without its packet_sock entry".into());
        };
        let w = what(p, f.id);
        if !matches!(p.r#type as i32, libc::SOCK_RAW | libc::SOCK_DGRAM) {
            return Err(format!("{w}: packet socket of type {}", p.r#type));
        }
        if p.protocol > 0xffff {
            return Err(format!("{w}: protocol {:#x} is not 16 bits", p.protocol));
        }
        if p.rx_ring.is_some() || p.tx_ring.is_some() {
            return Err(format!(
                "{w}: a packet socket with a ring (PACKET_RX_RING/PACKET_TX_RING): not supported"
            ));
        }
        if let Some(m) = p.mclist.iter().find(|m| m.addr.len() > 8) {
            return Err(format!(
                "{w}: a membership with an address of {} bytes (at most 8)",
                m.addr.len()
            ));
        }
        Ok(())
    }

    fn source(
        &self,
        _imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        let w = f.psk.as_ref().map_or(String::new(), |p| what(p, f.id));
        Err(Error::task(
            pid,
            format!("fd {} ({w})", fd.fd),
            "a packet socket the engine did not make",
        ))
    }
}

pub const KIND: Kind = Kind {
    name: "packet sockets",
    validate: no_checks,
    new: |_, _| Ok(Box::new(Made)),
};

struct Made;

impl Restorer for Made {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let holder = super::holders(imgs);
        for (id, f) in &imgs.files {
            let (Some(p), Some(&(pid, uid, gid))) = (&f.psk, holder.get(id)) else {
                continue;
            };
            let fd = make(p, uid, gid).map_err(|(op, e)| {
                Error::sys(
                    pid,
                    format!(
                        "{}, protocol {:#06x}, interface {}: {op}",
                        what(p, *id),
                        p.protocol,
                        p.ifindex
                    ),
                    e,
                )
            })?;
            fds.descriptions.insert(*id, fd);
        }
        Ok(())
    }
}

fn make(p: &pb::PacketSockEntry, uid: u32, gid: u32) -> Result<OwnedFd, (&'static str, Errno)> {
    let proto = (p.protocol as u16).to_be() as i32;
    let fd = crate::sys::inet_sock::socket_owned(uid, gid, libc::AF_PACKET, p.r#type as i32, proto)
        .map_err(|e| ("socket", e))?;
    let s = fd.as_fd();
    let o = &p.opts;
    let lock = o.so_buf_lock.unwrap_or(3);
    if lock & 1 != 0 {
        setsockopt_int(
            s,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (o.so_sndbuf / 2) as i32,
        )
        .map_err(|e| ("SO_SNDBUFFORCE", e))?;
    }
    if lock & 2 != 0 {
        setsockopt_int(
            s,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (o.so_rcvbuf / 2) as i32,
        )
        .map_err(|e| ("SO_RCVBUFFORCE", e))?;
    }
    if let Some(l) = o.so_buf_lock {
        setsockopt_int(s, libc::SOL_SOCKET, libc::SO_BUF_LOCK, l as i32)
            .map_err(|e| ("SO_BUF_LOCK", e))?;
    }
    if let Some(prio) = o.so_priority.filter(|&v| v != 0) {
        setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PRIORITY, prio as i32)
            .map_err(|e| ("SO_PRIORITY", e))?;
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
            crate::sys::inet_sock::setsockopt_timeval(s, opt, sec, usec).map_err(|e| (name, e))?;
        }
    }
    let pkt = |opt: i32, v: u32, name: &'static str| {
        if v == 0 {
            return Ok(());
        }
        setsockopt_int(s, libc::SOL_PACKET, opt, v as i32).map_err(|e| (name, e))
    };
    pkt(libc::PACKET_VERSION, p.version, "PACKET_VERSION")?;
    pkt(libc::PACKET_RESERVE, p.reserve, "PACKET_RESERVE")?;
    pkt(libc::PACKET_AUXDATA, p.aux_data as u32, "PACKET_AUXDATA")?;
    pkt(libc::PACKET_ORIGDEV, p.orig_dev as u32, "PACKET_ORIGDEV")?;
    pkt(libc::PACKET_VNET_HDR, p.vnet_hdr as u32, "PACKET_VNET_HDR")?;
    pkt(libc::PACKET_LOSS, p.loss as u32, "PACKET_LOSS")?;
    pkt(libc::PACKET_TIMESTAMP, p.timestamp, "PACKET_TIMESTAMP")?;
    pkt(
        libc::PACKET_COPY_THRESH,
        p.copy_thresh,
        "PACKET_COPY_THRESH",
    )?;
    if p.ifindex != 0 {
        ps::bind(s, p.protocol as u16, p.ifindex).map_err(|e| ("bind", e))?;
    }
    for m in &p.mclist {
        ps::add_membership(s, m.index, m.r#type as u16, &m.addr)
            .map_err(|e| ("PACKET_ADD_MEMBERSHIP", e))?;
    }
    if let Some(f) = fanout(p) {
        setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_FANOUT, f as i32)
            .map_err(|e| ("PACKET_FANOUT", e))?;
    }
    let fl = p.flags as i32 & libc::O_NONBLOCK;
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(fl)),
    )
    .map_err(|e| ("O_NONBLOCK", e))?;
    Ok(fd)
}
