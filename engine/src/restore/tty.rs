//! Terminals: every pty of the image is made by the engine before any task
//! exists, with the same pts number where it is free, its termios, window
//! size, queued data, packet mode, exclusive flag, lock, and its slave
//! node's mode and owner. A pty of the host's /dev/pts is opened through
//! /dev/ptmx; one of a devpts instance of the tree's own
//! (`ckpt_devpts_mnt_id`) through that instance's ptmx, which the mount
//! namespace's restore has just mounted anew (restore/mntns.rs): the
//! instance is private to the tree, so its pts numbers are all free and
//! each comes back exactly. Its master is opened through the mount the
//! tree opened it through (`ckpt_mnt_id`: a container's /dev/ptmx is a
//! bind of the instance's ptmx), so the master's /proc/PID/fd link names
//! the same path. Each open file
//! description of its master and slave is made here too and reaches the
//! tasks as a shared file does (pidfd_getfd); a master can only be made
//! once, so one open file description of it is all there can be.
//!
//! A /dev/tty open is made by the engine too (see
//! `sys::tty::open_dev_tty_via`): several tasks may share it.
//!
//! The engine keeps one slave open of its own for the pty's whole restore:
//! the session leader makes it its controlling terminal right after its
//! setsid (`ChildPlan::tty`), and a task of the foreground group makes its
//! group the foreground one, from inside the session as the kernel wants.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::child::ChildPlan;
use super::load::{Images, TaskImages};
use super::stage::{EngineFds, Kind, Restorer};
use crate::error::{Error, Result};
use crate::images::pb;
use crate::kernel::tty::{dev_parts, fill, is_ptmx, pts_index};
use crate::sys::tty as t;

pub const KIND: Kind = Kind {
    name: "terminals",
    validate,
    new,
};

/// The terminals the tree had outside it (dumped with --shell-job).
fn external(imgs: &Images) -> impl Iterator<Item = &pb::TtyInfoEntry> {
    imgs.tty_info
        .values()
        .filter(|i| i.r#type == pb::TtyType::ExtTty as i32)
}

fn new(imgs: &Images, opts: &super::RestoreOptions) -> Result<Box<dyn Restorer>> {
    if let Some(i) = external(imgs).next() {
        if !opts.shell_job {
            return Err(imgs.bad(
                "tty-info.img",
                format!(
                    "tty {} (pts {}) was the tree's terminal outside it (dumped with --shell-job): restore with --shell-job to give the tree this terminal",
                    i.id,
                    i.pty.as_ref().map_or(0, |p| p.index)
                ),
            ));
        }
        if !nix::unistd::isatty(0).unwrap_or(false) {
            return Err(Error::task(
                imgs.tasks[0].pid,
                "--shell-job",
                "the restore's stdin is not a terminal, so there is none to give the tree",
            ));
        }
    }
    Ok(Box::new(Ttys {
        shell_job: opts.shell_job,
        ..Default::default()
    }))
}

/// A pty of the image: its two ttys' info ids and the files of each.
#[derive(Default, Debug)]
struct PtySpec {
    master: Option<u32>,
    slave: Option<u32>,
    master_files: Vec<u32>,
    slave_files: Vec<u32>,
    /// The ptmx its master is opened through, as the tree names it, when
    /// the dump said which mount the tree opened it through
    /// (`ckpt_mnt_id`): its /proc/PID/fd link then reads the same.
    ptmx: Option<String>,
}

/// A pty's devpts instance (None: the host's /dev/pts; else the mnt_id of
/// the tree's devpts mount) and its pts number there.
type PtyKey = (Option<u32>, u32);

/// How errors name a pty.
fn pty_name((inst, n): PtyKey) -> String {
    match inst {
        None => format!("pty {n}"),
        Some(id) => format!("pty {n} of the devpts instance of mount {id}"),
    }
}

/// Where the pty's master and slave are opened (module doc); the master
/// through `ptmx` (the tree's path) when the dump said.
fn pty_paths(imgs: &Images, (inst, n): PtyKey, ptmx: Option<&str>) -> (PathBuf, PathBuf) {
    let dir = match inst.and_then(|id| super::mntns::own_devpts(imgs.ns.mnt.as_deref()?, id)) {
        Some(at) => super::mntns::in_tree(at),
        None => PathBuf::from("/dev/pts"),
    };
    let ptmx = match (inst, ptmx) {
        (Some(_), Some(p)) => super::mntns::in_tree(p),
        (Some(_), None) => dir.join("ptmx"),
        (None, _) => PathBuf::from("/dev/ptmx"),
    };
    (ptmx, dir.join(n.to_string()))
}

/// The ptys of the image, by instance and pts number.
fn ptys(imgs: &Images) -> std::result::Result<BTreeMap<PtyKey, PtySpec>, String> {
    let mut out: BTreeMap<PtyKey, PtySpec> = BTreeMap::new();
    for i in imgs.tty_info.values() {
        if i.r#type == pb::TtyType::Ctty as i32 || i.r#type == pb::TtyType::ExtTty as i32 {
            continue;
        }
        if i.r#type != pb::TtyType::Pty as i32 {
            return Err(format!(
                "tty {}: terminals of type {:?} cannot be restored",
                i.id,
                pb::TtyType::try_from(i.r#type).map_or("?".into(), |x| format!("{x:?}"))
            ));
        }
        let Some(p) = &i.pty else {
            return Err(format!("tty {}: a pty without its pty entry", i.id));
        };
        if i.termios.as_ref().is_none_or(|x| x.c_cc.len() != 19) || i.winsize.is_none() {
            return Err(format!(
                "tty {}: no termios (with 19 c_cc) or no window size",
                i.id
            ));
        }
        if let Some(id) = i.ckpt_devpts_mnt_id {
            if imgs
                .ns
                .mnt
                .as_deref()
                .and_then(|m| super::mntns::own_devpts(m, id))
                .is_none()
            {
                return Err(format!(
                    "tty {}: pty {} is on the devpts of mount {id}, which is not a devpts instance the tree mounted in its mount namespace (mountpoints-N.img)",
                    i.id, p.index
                ));
            }
        }
        let (major, minor) = dev_parts(i.rdev as u64);
        let key = (i.ckpt_devpts_mnt_id, p.index);
        let spec = out.entry(key).or_default();
        let slot = if is_ptmx(major, minor) {
            &mut spec.master
        } else if pts_index(major, minor) == Some(p.index) {
            &mut spec.slave
        } else {
            return Err(format!(
                "tty {}: device {major}:{minor} is neither /dev/ptmx nor /dev/pts/{}",
                i.id, p.index
            ));
        };
        if slot.replace(i.id).is_some() {
            return Err(format!("{} has two ttys of one side", pty_name(key)));
        }
    }
    for f in imgs.files.values() {
        let Some(tf) = &f.tty else { continue };
        for (&key, spec) in out.iter_mut() {
            if spec.master == Some(tf.tty_info_id) {
                spec.master_files.push(f.id);
                if let (Some(inst), Some(via)) = (key.0, tf.ckpt_mnt_id) {
                    let mounts = imgs.ns.mnt.as_deref().unwrap_or_default();
                    spec.ptmx = Some(super::mntns::ptmx_through(mounts, inst, via).ok_or_else(
                        || {
                            format!(
                                "{}: its master (file {}) was opened through mount {via}, which is neither the instance's mount nor a bind of its ptmx (mountpoints-N.img)",
                                pty_name(key),
                                f.id
                            )
                        },
                    )?);
                }
            } else if spec.slave == Some(tf.tty_info_id) {
                spec.slave_files.push(f.id);
            } else {
                continue;
            }
            if spec.master_files.len() > 1 {
                return Err(format!(
                    "{}: files {:?} are two open file descriptions of one master",
                    pty_name(key),
                    spec.master_files
                ));
            }
        }
    }
    for (&key, spec) in &out {
        if spec.master.is_none() || spec.slave.is_none() {
            return Err(format!(
                "{}: only one of its sides is in the image (a terminal outside the tree)",
                pty_name(key)
            ));
        }
    }
    Ok(out)
}

fn info(imgs: &Images, id: u32) -> &pb::TtyInfoEntry {
    &imgs.tty_info[&id]
}

fn validate(imgs: &Images) -> Result<()> {
    let ptys = ptys(imgs).map_err(|why| imgs.bad("tty-info.img", why))?;
    for id in imgs.tty_data.keys() {
        if imgs.tty_info[id].r#type != pb::TtyType::Pty as i32 {
            return Err(imgs.bad(
                "tty-data.img",
                format!("data queued for tty {id}, which is not a pty"),
            ));
        }
    }
    let live = |pid: i32| imgs.tasks.iter().find(|t| t.pid == pid);
    for (&key, spec) in &ptys {
        let n = pty_name(key);
        let i = info(imgs, spec.master.expect("checked"));
        let sid = i.sid as i32;
        if sid != 0 && live(sid).is_none_or(|t| t.pstree.sid as i32 != sid) {
            return Err(imgs.bad(
                "tty-info.img",
                format!("{n}: the leader of its session {sid} is not a live task of the image"),
            ));
        }
        let pgrp = i.pgrp as i32;
        if sid != 0 && pgrp != 0 && !imgs.tasks.iter().any(|t| t.pstree.pgid as i32 == pgrp) {
            return Err(imgs.bad(
                "tty-info.img",
                format!("{n}: no live task is in its foreground process group {pgrp}"),
            ));
        }
    }
    // /dev/tty opens: the task's session has a pty of the image.
    for t in &imgs.tasks {
        for fd in &t.fdinfo {
            let f = imgs.file(fd.id);
            let Some(tf) = &f.tty else { continue };
            if info(imgs, tf.tty_info_id).r#type != pb::TtyType::Ctty as i32 {
                continue;
            }
            let sid = t.pstree.sid;
            if !ptys
                .values()
                .any(|s| info(imgs, s.master.expect("checked")).sid == sid)
                && !external(imgs).any(|i| i.sid == sid)
            {
                return Err(imgs.bad(
                    &format!("fdinfo-{}.img", t.ids.files_id),
                    format!(
                        "pid {}: fd {} is /dev/tty, but no pty of the image is the controlling terminal of its session {sid}",
                        t.pid, fd.fd
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A pty made again.
struct Made {
    /// The engine's own slave.
    slave: OwnedFd,
    sid: i32,
    pgrp: i32,
}

#[derive(Default)]
struct Ttys {
    made: Vec<Made>,
    shell_job: bool,
}

/// Opens `ptmx` until it gives pts number `want` (the kernel hands out
/// the lowest free one); if `want` is taken, the first master past it.
fn open_master(ptmx: &Path, want: u32, flags: i32) -> nix::Result<(OwnedFd, u32)> {
    let mut extra = Vec::new();
    loop {
        let fd = open_tty(ptmx, flags & libc::O_ACCMODE)?;
        let n = t::pts_number(fd.as_raw_fd())?;
        if n >= want || extra.len() > 4096 {
            return Ok((fd, n));
        }
        extra.push(fd);
    }
}

/// Opens a terminal device with the access mode and status flags of
/// `flags`, never as a controlling terminal.
fn open_tty(path: impl AsRef<Path>, flags: i32) -> nix::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let acc = flags & libc::O_ACCMODE;
    std::fs::OpenOptions::new()
        .read(acc != libc::O_WRONLY)
        .write(acc != libc::O_RDONLY)
        .custom_flags((flags & (libc::O_APPEND | libc::O_NONBLOCK)) | libc::O_NOCTTY)
        .open(path.as_ref())
        .map(OwnedFd::from)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn termios(e: &pb::TermiosEntry) -> t::Termios {
    let mut cc = [0u8; 19];
    for (d, s) in cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    t::Termios {
        c_iflag: e.c_iflag,
        c_oflag: e.c_oflag,
        c_cflag: e.c_cflag,
        c_lflag: e.c_lflag,
        c_line: e.c_line as u8,
        c_cc: cc,
        c_ispeed: e.c_ispeed,
        c_ospeed: e.c_ospeed,
    }
}

fn ktermios(e: &pb::TermiosEntry) -> t::KTermios {
    let mut cc = [0u8; 19];
    for (d, s) in cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    t::KTermios {
        iflag: e.c_iflag,
        oflag: e.c_oflag,
        cflag: e.c_cflag,
        lflag: e.c_lflag,
        line: e.c_line as u8,
        cc,
    }
}

impl Ttys {
    /// --shell-job: files of the terminal outside the tree are opened
    /// again from the restore's stdin; /dev/tty opens of its session are
    /// the engine's own /dev/tty, the same terminal.
    fn external_files(&self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let ext: Vec<&pb::TtyInfoEntry> = external(imgs).collect();
        for t in &imgs.tasks {
            for fd in &t.fdinfo {
                let Some(tf) = &imgs.file(fd.id).tty else {
                    continue;
                };
                if fds.descriptions.contains_key(&fd.id) {
                    continue;
                }
                let i = info(imgs, tf.tty_info_id);
                let path = if i.r#type == pb::TtyType::ExtTty as i32 {
                    "/proc/self/fd/0"
                } else if i.r#type == pb::TtyType::Ctty as i32
                    && ext.iter().any(|e| e.sid == t.pstree.sid)
                {
                    "/dev/tty"
                } else {
                    continue;
                };
                let d = open_tty(path, file_flags(imgs, fd.id)).map_err(|e| {
                    Error::sys(
                        t.pid,
                        format!("fd {} (--shell-job): opening {path}", fd.fd),
                        e,
                    )
                })?;
                fds.descriptions.insert(fd.id, d);
            }
        }
        Ok(())
    }
}

fn file_flags(imgs: &Images, id: u32) -> i32 {
    imgs.file(id)
        .tty
        .as_ref()
        .map_or(libc::O_RDWR as u32, |x| x.flags) as i32
}

impl Restorer for Ttys {
    fn create(&mut self, imgs: &Images, fds: &mut EngineFds) -> Result<()> {
        let ptys = ptys(imgs).map_err(|why| imgs.bad("tty-info.img", why))?;
        let root = imgs.tasks[0].pid;
        for (&key, spec) in &ptys {
            let (inst, n) = key;
            let mi = info(imgs, spec.master.expect("checked"));
            let si = info(imgs, spec.slave.expect("checked"));
            let what = |op: &str| {
                format!(
                    "{} (tty-info ids {} and {}): {op}",
                    pty_name(key),
                    mi.id,
                    si.id
                )
            };
            let sys = |op: &str, e: Errno| Error::sys(root, what(op), e);
            let mflags = spec
                .master_files
                .first()
                .map_or(libc::O_RDWR, |&id| file_flags(imgs, id));
            let (ptmx, _) = pty_paths(imgs, key, spec.ptmx.as_deref());
            let (master, got) = open_master(&ptmx, n, mflags)
                .map_err(|e| sys(&format!("opening {}", ptmx.display()), e))?;
            if inst.is_some() && got != n {
                // The instance is the tree's alone and made anew: its
                // numbers are free unless the image is not as the dump
                // wrote it.
                return Err(Error::task(
                    root,
                    what("opening its master"),
                    format!("{} gave pts number {got}, not {n}", ptmx.display()),
                ));
            }
            let m = master.as_raw_fd();
            t::set_locked(m, false).map_err(|e| sys("TIOCSPTLCK", e))?;
            let (_, slave_path) = pty_paths(imgs, (inst, got), None);
            let open_slave = |flags: i32| open_tty(&slave_path, flags);
            let slave = open_slave(libc::O_RDWR).map_err(|e| sys("opening its slave", e))?;
            // devpts gives the slave to whoever opened the master: to the
            // owner the dump found (the tree's chown or grantpt), else (an
            // image without it) the host's ids of the task holding the
            // master.
            let owner = match (si.ckpt_uid, si.ckpt_gid) {
                (Some(u), Some(g)) => Some((u, g)),
                _ => spec
                    .master_files
                    .first()
                    .and_then(|id| super::files::holders(imgs).get(id).map(|&(_, u, g)| (u, g))),
            };
            if let Some((u, g)) = owner {
                nix::unistd::fchown(
                    slave.as_raw_fd(),
                    Some(nix::unistd::Uid::from_raw(u)),
                    Some(nix::unistd::Gid::from_raw(g)),
                )
                .map_err(|e| sys(&format!("chown to {u}:{g}"), e))?;
            }
            if let Some(mode) = si.ckpt_mode {
                nix::sys::stat::fchmod(
                    slave.as_raw_fd(),
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
                )
                .map_err(|e| sys(&format!("chmod to {mode:o}"), e))?;
            }
            let ws = mi.winsize.as_ref().expect("validated");
            let ws = libc::winsize {
                ws_row: ws.ws_row as u16,
                ws_col: ws.ws_col as u16,
                ws_xpixel: ws.ws_xpixel as u16,
                ws_ypixel: ws.ws_ypixel as u16,
            };
            t::set_winsize(m, &ws).map_err(|e| sys("TIOCSWINSZ", e))?;
            let term = termios(mi.termios.as_ref().expect("validated"));
            let empty = Vec::new();
            let input = imgs.tty_data.get(&si.id).unwrap_or(&empty);
            let output = imgs.tty_data.get(&mi.id).unwrap_or(&empty);
            fill(m, slave.as_raw_fd(), &term, input, output)
                .map_err(|e| sys("termios and queued data", e))?;
            if let Some(l) = &mi.termios_locked {
                let l = ktermios(l);
                if l != t::KTermios::default() {
                    t::set_locked_termios(m, &l).map_err(|e| sys("TIOCSLCKTRMIOS", e))?;
                }
            }
            for &id in &spec.slave_files {
                let fd = open_slave(file_flags(imgs, id))
                    .map_err(|e| sys(&format!("opening the slave for file {id}"), e))?;
                fds.descriptions.insert(id, fd);
            }
            // /dev/tty opens of the tasks whose controlling terminal it is.
            let sid = mi.sid;
            for t in imgs
                .tasks
                .iter()
                .filter(|t| sid != 0 && t.pstree.sid == sid)
            {
                for fd in &t.fdinfo {
                    let f = imgs.file(fd.id);
                    let is_ctty = f.tty.as_ref().is_some_and(|x| {
                        info(imgs, x.tty_info_id).r#type == pb::TtyType::Ctty as i32
                    });
                    if !is_ctty || fds.descriptions.contains_key(&fd.id) {
                        continue;
                    }
                    let flags = file_flags(imgs, fd.id)
                        & (libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK);
                    let d = t::open_dev_tty_via(slave.as_raw_fd(), flags)
                        .map_err(|e| sys(&format!("opening /dev/tty for file {}", fd.id), e))?;
                    fds.descriptions.insert(fd.id, d);
                }
            }
            if mi.packet_mode {
                t::set_packet(m, true).map_err(|e| sys("TIOCPKT", e))?;
            }
            if mi.exclusive || si.exclusive {
                t::set_exclusive(slave.as_raw_fd(), true).map_err(|e| sys("TIOCEXCL", e))?;
            }
            if mi.locked {
                t::set_locked(m, true).map_err(|e| sys("TIOCSPTLCK", e))?;
            }
            nix::fcntl::fcntl(
                m,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(
                    mflags & libc::O_NONBLOCK,
                )),
            )
            .map_err(|e| sys("F_SETFL", e))?;
            match spec.master_files.first() {
                Some(&id) => {
                    fds.descriptions.insert(id, master);
                }
                // No master file: the image has none (cannot be: a pty
                // without its master is refused at dump).
                None => drop(master),
            }
            self.made.push(Made {
                slave,
                sid: mi.sid as i32,
                pgrp: mi.pgrp as i32,
            });
        }
        if self.shell_job {
            self.external_files(imgs, fds)?;
        }
        Ok(())
    }

    /// With --shell-job, the tree's group comes back as the foreground one
    /// of the restore's terminal if it was of its own.
    fn finish(&mut self, imgs: &Images) -> Result<()> {
        if !self.shell_job {
            return Ok(());
        }
        for i in external(imgs) {
            let pgrp = i.pgrp as i32;
            if pgrp > 0 && imgs.tasks.iter().any(|t| t.pstree.pgid as i32 == pgrp) {
                t::set_foreground_of_mine(0, pgrp).map_err(|e| {
                    Error::sys(
                        pgrp,
                        format!("--shell-job: making process group {pgrp} the foreground one of the restore's terminal"),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }

    fn plan(
        &self,
        imgs: &Images,
        t: &TaskImages,
        _fds: &EngineFds,
        plan: &mut ChildPlan,
    ) -> Result<()> {
        for m in &self.made {
            let fd: RawFd = m.slave.as_raw_fd();
            if m.sid == t.pid {
                plan.tty.ctty = Some(fd);
            }
            if m.sid == 0 || m.pgrp == 0 || m.pgrp == m.sid {
                continue;
            }
            // The group's leader if it lives, else its first member.
            let setter = imgs
                .tasks
                .iter()
                .find(|x| x.pid == m.pgrp && x.pstree.pgid as i32 == m.pgrp)
                .or_else(|| imgs.tasks.iter().find(|x| x.pstree.pgid as i32 == m.pgrp));
            if setter.is_some_and(|x| x.pid == t.pid) {
                plan.tty.fg = Some((fd, m.pgrp));
            }
        }
        Ok(())
    }
}
