//! Netlink sockets (NETLINK_ROUTE and the others): their protocol, port
//! id, multicast groups, the peer they are connected to and their options,
//! as a file entry of type NETLINKSK, and the messages waiting to be read
//! (sk-queues.img, with their senders).
//!
//! Netlink cannot peek past the first message of a queue, so the dump
//! takes the messages off it; a dump that fails, or leaves the tree
//! running, puts them back by sending them from the socket to itself. A
//! message put back (at restore too) says it came from the socket's own
//! port id, not from the kernel's 0: no user-space sender can say 0, and
//! CRIU has the same limit. Programs that drop messages not sent by the
//! kernel lose those.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;

use super::inet::sock_opts;
use super::{socket_ino, FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::sys::netlink_sock as nl;
use crate::sys::unix_sock::getsockopt_int;

pub struct Netlink;

/// The messages taken off the queues of the tree's netlink sockets.
#[derive(Default)]
pub struct NetlinkTable {
    taken: Vec<Taken>,
    /// The tree was killed: what was taken is in the images alone.
    handed_over: bool,
}

struct Taken {
    /// File id of the socket.
    id: u32,
    pid: Pid,
    what: String,
    /// The engine's copy of the socket.
    sock: OwnedFd,
    portid: u32,
    /// (message, sender's port id, group), in queue order.
    msgs: Vec<(Vec<u8>, u32, u32)>,
}

impl Drop for NetlinkTable {
    fn drop(&mut self) {
        if !self.handed_over {
            if let Err(e) = self.put_back() {
                warn!("{e}");
            }
        }
    }
}

impl NetlinkTable {
    /// The tree goes on: every message taken goes back, ahead of any the
    /// kernel queued since.
    pub fn put_back(&mut self) -> Result<()> {
        let mut first = None;
        for t in self.taken.drain(..) {
            if let Err(e) = t.put_back() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The tree is killed: nothing goes back.
    pub fn hand_over(&mut self) {
        self.handed_over = true;
    }

    /// sk-queues.img entries, with their payloads.
    pub fn queue_entries(&self) -> impl Iterator<Item = (pb::SkPacketEntry, &[u8])> {
        self.taken.iter().flat_map(|t| {
            t.msgs.iter().map(move |(m, portid, group)| {
                (
                    pb::SkPacketEntry {
                        id_for: t.id,
                        length: m.len() as u32,
                        scm: vec![],
                        addr: Some(nl::addr_bytes(*portid, *group)),
                        ucred: None,
                    },
                    m.as_slice(),
                )
            })
        })
    }
}

impl Taken {
    fn put_back(self) -> Result<()> {
        let s = self.sock.as_fd();
        let sys = |op: &str, e: Errno| Error::sys(self.pid, format!("{}: {op}", self.what), e);
        // What arrived meanwhile goes behind what was there before.
        let mut since = Vec::new();
        while let Some(m) = nl::take(s).map_err(|e| sys("reading its receive queue", e))? {
            since.push(m.0);
        }
        let n = self.msgs.len();
        for m in self.msgs.iter().map(|m| &m.0).chain(&since) {
            nl::send_to(s, self.portid, m).map_err(|e| {
                sys(
                    &format!("putting its {n} queued message(s) back (lost from here on)"),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// Bytes a socket may have queued, at most: a receive buffer of the
/// kernel's largest (net.core.rmem_max is far below).
const MAX_QUEUED: usize = 256 << 20;

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
        let opts = sock_opts(s, false).map_err(|(name, e)| sys(name, e))?;
        let id = table.next_id();
        // Taken now; the table puts them back if the dump goes no further.
        let mut taken = Taken {
            id,
            pid,
            what: what.clone(),
            sock,
            portid,
            msgs: Vec::new(),
        };
        let mut bytes = 0;
        let read = loop {
            match nl::take(taken.sock.as_fd()) {
                Ok(None) => break Ok(()),
                Ok(Some(m)) => {
                    bytes += m.0.len();
                    taken.msgs.push(m);
                    if bytes > MAX_QUEUED {
                        break Err(Error::task(
                            pid,
                            what.clone(),
                            format!("more than {MAX_QUEUED} bytes queued on a netlink socket"),
                        ));
                    }
                }
                Err(e) => break Err(sys("reading its receive queue", e)),
            }
        };
        if !taken.msgs.is_empty() {
            debug!(
                "pid {pid}: {what}: {} message(s), {bytes} bytes queued",
                taken.msgs.len()
            );
            table.netlink.taken.push(taken);
        }
        read?;
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
