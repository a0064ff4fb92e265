//! Netlink sockets, made by the engine before any task (as the task's
//! filesystem ids, like INET sockets) and taken by their tasks with
//! pidfd_getfd: bound to their port id and groups, connected if they were,
//! with their options, and with the messages that were queued on them
//! sent again from the socket to itself (so they say they came from its
//! own port id, not the kernel's: dump/files/netlink.rs says why).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use super::FdKind;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::OpenFd;
use crate::restore::load::Images;
use crate::restore::stage::{no_checks, EngineFds, Kind, Restorer};
use crate::sys::netlink_sock as nl;
use crate::sys::unix_sock::setsockopt_int;

pub struct Netlink;

impl FdKind for Netlink {
    fn fd_type(&self) -> pb::FdTypes {
        pb::FdTypes::Netlinksk
    }

    fn check(&self, f: &pb::FileEntry) -> std::result::Result<(), String> {
        let Some(n) = &f.nlsk else {
            return Err("NETLINKSK without its netlink_sk entry".into());
        };
        match n.sk_type.map(|t| t as i32) {
            None | Some(libc::SOCK_RAW) | Some(libc::SOCK_DGRAM) => Ok(()),
            Some(t) => Err(format!("socket:[{}]: netlink socket of type {t}", n.ino)),
        }
    }

    fn source(
        &self,
        _imgs: &Images,
        pid: Pid,
        fd: &pb::FdinfoEntry,
        f: &pb::FileEntry,
    ) -> Result<Arc<dyn OpenFd>> {
        Err(Error::task(
            pid,
            format!(
                "fd {} (socket:[{}])",
                fd.fd,
                f.nlsk.as_ref().map_or(0, |n| n.ino)
            ),
            "a netlink socket the engine did not make",
        ))
    }
}

pub const KIND: Kind = Kind {
    name: "netlink sockets",
    validate: no_checks,
    new: |_, _| Ok(Box::new(Made)),
};

struct Made;

impl Restorer for Made {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let holder = super::holders(imgs);
        for (id, f) in &imgs.files {
            let (Some(n), Some(&(pid, uid, gid))) = (&f.nlsk, holder.get(id)) else {
                continue;
            };
            let queue = imgs.sk_queues.get(id).map(Vec::as_slice).unwrap_or(&[]);
            let fd = make(n, uid, gid, queue).map_err(|(op, e)| {
                Error::sys(
                    pid,
                    format!(
                        "socket:[{}] (netlink protocol {}, port id {}): {op}",
                        n.ino, n.protocol, n.portid
                    ),
                    e,
                )
            })?;
            fds.descriptions.insert(*id, fd);
        }
        Ok(())
    }
}

fn make(
    n: &pb::NetlinkSkEntry,
    uid: u32,
    gid: u32,
    queue: &[Vec<u8>],
) -> Result<OwnedFd, (&'static str, nix::errno::Errno)> {
    let ty = n.sk_type.map_or(libc::SOCK_RAW, |t| t as i32);
    let fd = crate::sys::inet_sock::socket_owned(uid, gid, libc::AF_NETLINK, ty, n.protocol as i32)
        .map_err(|e| ("socket", e))?;
    let s = fd.as_fd();
    let o = &n.opts;
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
    if n.portid != 0 || n.groups.iter().any(|&g| g != 0) {
        nl::bind(s, n.portid, &n.groups).map_err(|e| ("bind", e))?;
    }
    for m in queue {
        nl::send_to(s, n.portid, m).map_err(|e| ("queueing its messages again", e))?;
    }
    if n.state != 0 {
        nl::connect(s, n.dst_portid, n.dst_group).map_err(|e| ("connect", e))?;
    }
    let fl = n.flags as i32 & libc::O_NONBLOCK;
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(fl)),
    )
    .map_err(|e| ("O_NONBLOCK", e))?;
    Ok(fd)
}
