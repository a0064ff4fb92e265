//! Netlink sockets (NETLINK_ROUTE and the others): their protocol, port
//! id, multicast groups, the peer they are connected to and their options,
//! as a file entry of type NETLINKSK. One with messages waiting to be read
//! is refused: the kernel sent those, and cannot be asked to again.

use std::os::fd::AsFd;

use nix::errno::Errno;

use super::inet::sock_opts;
use super::{socket_ino, FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Result};
use crate::images::pb;
use crate::sys::netlink_sock as nl;
use crate::sys::unix_sock::getsockopt_int;

pub struct Netlink;

impl FdDumper for Netlink {
    /// Its link is "socket:[INO]" like any socket's: the fd says.
    fn claims(&self, _link: &FdLink<'_>) -> bool {
        false
    }

    fn claims_fd(&self, fd: &FdCx<'_>) -> bool {
        super::socket_of_domain(fd, &[libc::AF_NETLINK])
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
        let protocol = getsockopt_int(s, libc::SOL_SOCKET, libc::SO_PROTOCOL)
            .map_err(|e| sys("SO_PROTOCOL", e))?;
        let sk_type =
            getsockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| sys("SO_TYPE", e))?;
        let (portid, _) = nl::local(s).map_err(|e| sys("getsockname", e))?;
        let (dst_portid, dst_group) = nl::peer(s).map_err(|e| sys("getpeername", e))?;
        let groups = nl::memberships(s).map_err(|e| sys("NETLINK_LIST_MEMBERSHIPS", e))?;
        if nl::has_queued(s).map_err(|e| sys("peeking at its receive queue", e))? {
            return Err(Error::unsupported(
                pid,
                what,
                format!(
                    "netlink socket (protocol {protocol}, port id {portid}) with messages waiting to be read: not supported yet"
                ),
            ));
        }
        let opts = sock_opts(s, false).map_err(|(name, e)| sys(name, e))?;
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Netlinksk as i32,
            id,
            nlsk: Some(pb::NetlinkSkEntry {
                id,
                ino,
                protocol: protocol as u32,
                state: (dst_portid != 0 || dst_group != 0) as u32,
                flags: fd.flags,
                portid,
                groups,
                dst_portid,
                dst_group,
                fown: pb::FownEntry::default(),
                opts,
                ns_id: None,
                sk_type: Some(sk_type as u32),
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Netlinksk, id))
    }
}
