//! UNIX socket pairs: both ends are made together by socketpair, by the
//! task that holds them or by the engine when the ends are in several
//! tasks. What was queued for reception on each end is sent again from
//! the other end (message by message, so datagram and seqpacket
//! boundaries stay), before the shutdown state is put back (a shut-down
//! end could not be written into any more).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;

use super::{EnginePairs, FdKind};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::restore::child::{ChildFds, OpenFd};
use crate::restore::load::Images;
use crate::sys::unix_sock::autobound;

pub struct Unix;

/// One end of a pair, as it is to be made.
#[derive(Debug)]
struct EndSpec {
    ino: u32,
    autobind: bool,
    opts: pb::SkOptsEntry,
    /// The socket's own shutdown bits (1 = receive, 2 = send).
    shutdown: i32,
    /// What is queued for reception on it, message by message.
    queue: Vec<Vec<u8>>,
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
fn pair_of(imgs: &Images, pid: Pid, f: &pb::FileEntry) -> Result<(Pair, usize)> {
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
    let spec = |f: &pb::FileEntry| {
        let u = usk(f);
        EndSpec {
            ino: u.ino,
            // The kernel gave it a name (check: only such a name).
            autobind: !u.name.is_empty(),
            opts: u.opts.clone(),
            shutdown: u.shutdown.unwrap_or(0) & 3,
            queue: imgs.sk_queues.get(&f.id).cloned().unwrap_or_default(),
        }
    };
    let (a, b) = (spec(f), spec(peer));
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
        if !(u.name.is_empty() || autobound(&u.name)) || u.peer == 0 {
            return Err(format!(
                "socket:[{}]: only unbound connected pairs can be restored yet",
                u.ino
            ));
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
        let (pair, which) = pair_of(imgs, pid, f)?;
        Ok(Arc::new(End {
            pair,
            which,
            flags: usk(f).flags as i32,
        }))
    }

    fn object(&self, f: &pb::FileEntry) -> Option<u64> {
        f.usk.as_ref().map(|u| u.ino.min(u.peer) as u64)
    }

    fn open_in_engine(
        &self,
        imgs: &Images,
        pid: Pid,
        f: &pb::FileEntry,
        pairs: &mut EnginePairs,
    ) -> Result<OwnedFd> {
        let (pair, which) = pair_of(imgs, pid, f)?;
        let key = pair.key();
        let what = || format!("socket:[{}]", pair.ends[which].ino);
        if let std::collections::btree_map::Entry::Vacant(slot) = pairs.entry(key) {
            let [a, b] = make_pair(&pair).map_err(|e| Error::sys(pid, what(), e))?;
            // SAFETY: make_pair's fds are fresh and now ours alone.
            slot.insert(unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) });
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

/// The pair, made and filled: options, then the queued data (each end's
/// sent from the other), then SO_PASSCRED and the shutdown state.
fn make_pair(p: &Pair) -> nix::Result<[RawFd; 2]> {
    let mut sv = [0i32; 2];
    Errno::result(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            p.r#type | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    let stream = p.r#type == libc::SOCK_STREAM;
    let fill = || -> nix::Result<()> {
        for (fd, e) in sv.iter().zip(&p.ends) {
            let o = &e.opts;
            set_buf(*fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, o.so_sndbuf)?;
            set_buf(*fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, o.so_rcvbuf)?;
            set_timeout(*fd, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)?;
            set_timeout(*fd, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)?;
        }
        for (i, e) in p.ends.iter().enumerate() {
            for m in &e.queue {
                send_all(sv[1 - i], m, stream)?;
            }
        }
        for (fd, e) in sv.iter().zip(&p.ends) {
            if e.autobind {
                // bind with the family alone: the kernel picks a name.
                let sa = libc::AF_UNIX as libc::sa_family_t;
                Errno::result(unsafe {
                    libc::bind(
                        *fd,
                        (&sa as *const libc::sa_family_t).cast(),
                        std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
                    )
                })?;
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
        Ok(())
    };
    if let Err(e) = fill() {
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1]);
        }
        return Err(e);
    }
    Ok(sv)
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
