//! AF_PACKET sockets (SOCK_RAW, SOCK_DGRAM): the protocol and interface
//! they are bound to, their PACKET_* options, memberships and fanout
//! group, as a file entry of type PACKETSK, read from packet_diag as CRIU
//! does. A socket with a ring (PACKET_RX_RING, PACKET_TX_RING: memory the
//! task maps) or a socket filter is refused, naming the fd.
//!
//! The packets queued for reception are not kept, as CRIU does not keep
//! them: they are copies of what crossed an interface, and a restore
//! that drops them looks like the loss any packet socket sees.

use std::os::fd::AsFd;

use nix::errno::Errno;

use super::inet::sock_opts;
use super::{socket_ino, FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;
use crate::sys::packet_sock::{self as ps, PDI_AUXDATA, PDI_LOSS, PDI_ORIGDEV, PDI_VNETHDR};
use crate::sys::unix_sock::getsockopt_int;

pub struct Packet;

/// PACKET_FANOUT_CBPF: from this type on a BPF program picks the socket.
const FANOUT_CBPF: u32 = 6;

impl FdDumper for Packet {
    /// Its link is "socket:[INO]" like any socket's: the fd says.
    fn claims(&self, _link: &FdLink<'_>) -> bool {
        false
    }

    fn claims_fd(&self, fd: &FdCx<'_>) -> bool {
        super::socket_of_domain(fd, &[libc::AF_PACKET])
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
        let d = ps::packet_diag(ino)
            .map_err(|e| sys("packet_diag", e))?
            .ok_or_else(|| {
                no("packet socket packet_diag does not know (in another network namespace?): not supported yet".into())
            })?;
        if d.rx_ring.is_some() || d.tx_ring.is_some() {
            let which = match (d.rx_ring.is_some(), d.tx_ring.is_some()) {
                (true, true) => "PACKET_RX_RING and PACKET_TX_RING",
                (true, false) => "PACKET_RX_RING",
                _ => "PACKET_TX_RING",
            };
            return Err(no(format!(
                "packet socket with a mapped ring ({which}): not supported yet"
            )));
        }
        if d.filter {
            return Err(no(
                "packet socket with a socket filter (SO_ATTACH_FILTER): not supported yet".into(),
            ));
        }
        if !matches!(d.r#type as i32, libc::SOCK_RAW | libc::SOCK_DGRAM) {
            return Err(no(format!(
                "packet socket of type {}: not supported",
                d.r#type
            )));
        }
        // packet_diag leaves the group's flags out; getsockopt has them.
        let fanout = match getsockopt_int(s, libc::SOL_PACKET, libc::PACKET_FANOUT)
            .map_err(|e| sys("PACKET_FANOUT", e))? as u32
        {
            0 if d.fanout.is_none() => None,
            f => Some(f),
        };
        if let Some(ty) = fanout
            .map(|f| (f >> 16) & 0xff)
            .filter(|&t| t >= FANOUT_CBPF)
        {
            return Err(no(format!(
                "packet socket in fanout group {} of type {ty} (a BPF program chooses): not supported yet",
                fanout.unwrap_or(0) & 0xffff
            )));
        }
        let opts = sock_opts(s, false).map_err(|(name, e)| sys(name, e))?;
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Packetsk as i32,
            id,
            psk: Some(pb::PacketSockEntry {
                id,
                r#type: d.r#type as u32,
                protocol: d.num as u32,
                flags: fd.flags,
                ifindex: d.ifindex,
                fown: pb::FownEntry::default(),
                opts,
                version: d.version,
                reserve: d.reserve,
                aux_data: d.flags & PDI_AUXDATA != 0,
                orig_dev: d.flags & PDI_ORIGDEV != 0,
                vnet_hdr: d.flags & PDI_VNETHDR != 0,
                loss: d.flags & PDI_LOSS != 0,
                timestamp: d.tstamp,
                copy_thresh: d.copy_thresh,
                mclist: d
                    .mclist
                    .iter()
                    .flat_map(|(index, count, ty, addr)| {
                        // Added `count` times; each is one entry, as the
                        // restore adds it again.
                        (0..*count).map(move |_| pb::PacketMclist {
                            index: *index,
                            r#type: *ty as u32,
                            addr: addr.clone(),
                        })
                    })
                    .collect(),
                fanout,
                rx_ring: None,
                tx_ring: None,
                ino: Some(ino),
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Packetsk, id))
    }
}
