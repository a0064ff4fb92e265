//! Terminal ioctls on raw fds. They allocate nothing, so a freshly cloned
//! restore child may call the ones it needs (TIOCSCTTY, TIOCSPGRP).

use std::os::fd::RawFd;

use nix::errno::Errno;

/// The kernel's `struct termios2`: the speeds as numbers, not as the
/// `Bnnn` codes glibc's `struct termios` hides in c_cflag.
pub type Termios = libc::termios2;

/// The kernel's `struct termios` (TIOCGLCKTRMIOS has no termios2 form).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KTermios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; 19],
}

fn ioctl_ptr<T>(fd: RawFd, req: libc::Ioctl, v: *mut T) -> nix::Result<i32> {
    // SAFETY: `v` points to a live value of the type the request reads or
    // writes (the callers pair each request with its argument type).
    Errno::result(unsafe { libc::ioctl(fd, req, v) })
}

fn get_int(fd: RawFd, req: libc::Ioctl) -> nix::Result<i32> {
    let mut v: libc::c_int = 0;
    ioctl_ptr(fd, req, &mut v)?;
    Ok(v)
}

fn set_int(fd: RawFd, req: libc::Ioctl, v: i32) -> nix::Result<()> {
    let mut v: libc::c_int = v;
    ioctl_ptr(fd, req, &mut v).map(drop)
}

pub fn get_termios(fd: RawFd) -> nix::Result<Termios> {
    // SAFETY: termios2 is plain data; all zeroes is a valid value.
    let mut t: Termios = unsafe { std::mem::zeroed() };
    ioctl_ptr(fd, libc::TCGETS2, &mut t)?;
    Ok(t)
}

pub fn set_termios(fd: RawFd, t: &Termios) -> nix::Result<()> {
    let mut t = *t;
    ioctl_ptr(fd, libc::TCSETS2, &mut t).map(drop)
}

pub fn get_locked_termios(fd: RawFd) -> nix::Result<KTermios> {
    let mut t = KTermios::default();
    ioctl_ptr(fd, libc::TIOCGLCKTRMIOS, &mut t)?;
    Ok(t)
}

/// Needs CAP_SYS_ADMIN.
pub fn set_locked_termios(fd: RawFd, t: &KTermios) -> nix::Result<()> {
    let mut t = *t;
    ioctl_ptr(fd, libc::TIOCSLCKTRMIOS, &mut t).map(drop)
}

pub fn get_winsize(fd: RawFd) -> nix::Result<libc::winsize> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    ioctl_ptr(fd, libc::TIOCGWINSZ, &mut w)?;
    Ok(w)
}

pub fn set_winsize(fd: RawFd, w: &libc::winsize) -> nix::Result<()> {
    let mut w = *w;
    ioctl_ptr(fd, libc::TIOCSWINSZ, &mut w).map(drop)
}

/// The pts number of a pty master.
pub fn pts_number(master: RawFd) -> nix::Result<u32> {
    get_int(master, libc::TIOCGPTN).map(|n| n as u32)
}

/// An O_PATH fd of the slave's node of a pty master (TIOCGPTPEER): which
/// devpts instance the pty is on, and its node's mode and owner. O_PATH
/// opens no tty, so the pty is left as it was (no open or close of its
/// slave, whose last close would hang the master up).
pub fn slave_node(master: RawFd) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let flags = libc::O_PATH | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes its flags by value and returns a new fd,
    // which is wrapped at once and owned by the caller.
    let fd = Errno::result(unsafe { libc::ioctl(master, libc::TIOCGPTPEER, flags) })?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

pub fn get_locked(master: RawFd) -> nix::Result<bool> {
    get_int(master, libc::TIOCGPTLCK).map(|v| v != 0)
}

pub fn set_locked(master: RawFd, locked: bool) -> nix::Result<()> {
    set_int(master, libc::TIOCSPTLCK, locked as i32)
}

pub fn get_packet(master: RawFd) -> nix::Result<bool> {
    get_int(master, libc::TIOCGPKT).map(|v| v != 0)
}

pub fn set_packet(master: RawFd, on: bool) -> nix::Result<()> {
    set_int(master, libc::TIOCPKT, on as i32)
}

pub fn get_exclusive(fd: RawFd) -> nix::Result<bool> {
    get_int(fd, libc::TIOCGEXCL).map(|v| v != 0)
}

pub fn set_exclusive(fd: RawFd, on: bool) -> nix::Result<()> {
    let req = if on { libc::TIOCEXCL } else { libc::TIOCNXCL };
    // SAFETY: these requests take no argument.
    Errno::result(unsafe { libc::ioctl(fd, req) }).map(drop)
}

/// The session of the tty (asked through its master, which anyone may
/// ask); 0 when it is nobody's controlling terminal.
pub fn session(master: RawFd) -> nix::Result<i32> {
    match get_int(master, libc::TIOCGSID) {
        Err(Errno::ENOTTY) => Ok(0),
        r => r,
    }
}

/// The foreground process group (0: none), through the master.
pub fn foreground(master: RawFd) -> nix::Result<i32> {
    get_int(master, libc::TIOCGPGRP)
}

/// Makes `fd`'s tty the caller's controlling terminal (the caller leads
/// a session that has none); `steal` takes it from another session
/// (CAP_SYS_ADMIN).
pub fn set_ctty(fd: RawFd, steal: bool) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    Errno::result(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, steal as libc::c_int) }).map(drop)
}

/// Makes `pgrp` the foreground group of the caller's controlling terminal.
pub fn set_foreground(fd: RawFd, pgrp: i32) -> nix::Result<()> {
    set_int(fd, libc::TIOCSPGRP, pgrp)
}

/// Reads what is there now, without waiting: `Ok(None)` once nothing more
/// is ready (or the other side is closed).
pub fn read_ready(fd: RawFd, buf: &mut [u8]) -> nix::Result<Option<usize>> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd of ours.
    let n = Errno::result(unsafe { libc::poll(&mut p, 1, 0) })?;
    if n == 0 || p.revents & libc::POLLIN == 0 {
        return Ok(None);
    }
    // SAFETY: a buffer of ours with its length.
    match Errno::result(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
        Ok(0) | Err(Errno::EIO | Errno::EAGAIN) => Ok(None),
        Ok(n) => Ok(Some(n as usize)),
        Err(e) => Err(e),
    }
}

/// Writes all of `data`.
pub fn write_all(fd: RawFd, data: &[u8]) -> nix::Result<()> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: a buffer of ours with its length.
        let n = Errno::result(unsafe {
            libc::write(fd, data[off..].as_ptr().cast(), data.len() - off)
        })?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        off += n as usize;
    }
    Ok(())
}

/// A /dev/tty open file description whose terminal is `slave`'s, as a
/// task of a session with that controlling terminal would have opened it:
/// a short-lived child makes the terminal its own (setsid, TIOCSCTTY),
/// opens /dev/tty and hands it over (pidfd_getfd); its session ends with
/// it, which leaves a pty as it was (no hangup), nobody's terminal again.
pub fn open_dev_tty_via(slave: RawFd, flags: i32) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (val_r, val_w) = nix::unistd::pipe()?;
    let (done_r, done_w) = nix::unistd::pipe()?;
    // SAFETY: the child runs only async-signal-safe syscalls on fds it
    // inherited and buffers of its own, then _exit; the parent owns every
    // fd it wraps.
    unsafe {
        let pid = Errno::result(libc::fork())?;
        if pid == 0 {
            libc::close(done_w.as_raw_fd());
            let ok = libc::setsid() >= 0 && libc::ioctl(slave, libc::TIOCSCTTY, 0) == 0;
            let v: i32 = if ok {
                libc::open(c"/dev/tty".as_ptr(), flags | libc::O_NOCTTY)
            } else {
                -1
            };
            let v = if v >= 0 { v } else { -Errno::last_raw() };
            libc::write(val_w.as_raw_fd(), (&v as *const i32).cast(), 4);
            let mut b = 0u8;
            libc::read(done_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        drop(val_w);
        drop(done_r);
        let mut v: i32 = 0;
        let n = libc::read(val_r.as_raw_fd(), (&mut v as *mut i32).cast(), 4);
        let got = if n != 4 {
            Err(Errno::EIO)
        } else if v < 0 {
            Err(Errno::from_raw(-v))
        } else {
            Errno::result(libc::syscall(libc::SYS_pidfd_open, pid, 0)).and_then(|pidfd| {
                let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
                Errno::result(libc::syscall(
                    libc::SYS_pidfd_getfd,
                    pidfd.as_raw_fd(),
                    v,
                    0,
                ))
                .map(|fd| OwnedFd::from_raw_fd(fd as i32))
            })
        };
        drop(done_w);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        got
    }
}

/// tcsetpgrp on the caller's own controlling terminal `fd`, with SIGTTOU
/// blocked so that a caller not in the foreground is not stopped by it.
pub fn set_foreground_of_mine(fd: RawFd, pgrp: i32) -> nix::Result<()> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
    let r = set_foreground(fd, pgrp);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    r
}
