//! Terminals, as CRIU writes them: each open file description of a tty is
//! a TTY file entry naming its tty's entry in tty-info.img, which holds
//! what belongs to the terminal itself (termios, window size, packet mode,
//! the pts lock, its session and foreground group). A pty's master and
//! slave are two ttys, tied by their pts number. What a read on a tty
//! would return next goes to tty-data.img under that tty's id: the input
//! queued for the slave, the output queued for the master.
//!
//! Only Unix98 ptys whose master is in the tree are dumped, with the
//! /dev/tty opens of tasks whose controlling terminal is one of them.
//! A pty is on the host's /dev/pts, or on a devpts instance the tree
//! mounted in a mount namespace of its own (a container's): its entries
//! then name that mount (`ckpt_devpts_mnt_id`), which the restore mounts
//! anew with the same options (dump/mntns.rs) and opens the pty through.
//! The instance is the device of the pty's slave node, which the engine
//! reaches from the master with TIOCGPTPEER (O_PATH: the pty is not
//! touched); ptys of any other instance (one outside the tree, one the
//! host shares) are refused naming the task, the fd and the instance.
//! The node's mode and owner are kept. A
//! terminal outside the tree (the one the tree was started from) needs
//! `--shell-job`; the console, virtual consoles and serial lines cannot be
//! taken over by a restore and are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::kernel::tty::{dev_parts, drain, fill, is_ptmx, pts_index};
use crate::sys::tty as t;

pub struct Tty;

/// The ttys of a dump, to write tty-info.img once every task is dumped.
#[derive(Default)]
pub struct TtyTable {
    /// By devpts instance (None: the host's /dev/pts; else the mnt_id
    /// of the tree's devpts mount) and pts number there.
    ptys: BTreeMap<(Option<u32>, u32), Pty>,
    /// The instance of each devpts device met so far.
    instances: BTreeMap<u64, Option<u32>>,
    /// The /dev/tty opens: (pid, "fd N (/dev/tty)").
    ctty_opens: Vec<(Pid, String)>,
    /// The tty-info id of /dev/tty.
    ctty_info: Option<u32>,
    /// `--shell-job`: a terminal outside the tree is the one the restore
    /// runs on.
    pub shell_job: bool,
}

/// One side of a pty, as first met: the task and fd, and our copy of it.
struct Side {
    pid: Pid,
    what: String,
    file: OwnedFd,
}

#[derive(Default)]
struct Pty {
    master: Option<Side>,
    slave: Option<Side>,
    master_info: u32,
    slave_info: u32,
    slave_rdev: u32,
    /// The slave node's mode bits, uid and gid.
    node: Option<(u32, u32, u32)>,
}

/// What a char device is, as far as terminals go.
enum Dev {
    Master,
    Slave(u32),
    Ctty,
    /// Terminals no restore can take over, by what to call them.
    Refused(&'static str),
}

fn classify(rdev: u64) -> Option<Dev> {
    let (major, minor) = dev_parts(rdev);
    Some(match (major, minor) {
        _ if is_ptmx(major, minor) => Dev::Master,
        _ if pts_index(major, minor).is_some() => Dev::Slave(pts_index(major, minor)?),
        (5, 0) => Dev::Ctty,
        (5, 1) => Dev::Refused("the system console"),
        (4, 0..=63) => Dev::Refused("virtual consoles"),
        (4, _) | (204, _) | (188, _) | (166, _) => Dev::Refused("serial terminals"),
        (2 | 3, _) => Dev::Refused("BSD ptys"),
        _ => return None,
    })
}

/// What the fd is, its device number and the device of the file system
/// its node is on.
fn tty_dev(fd: &FdCx<'_>) -> Option<(Dev, u64, u64)> {
    if !matches!(fd.kind, FdLink::Path) {
        return None;
    }
    let m = std::fs::metadata(fd.proc_path()).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    classify(m.rdev()).map(|d| (d, m.rdev(), m.dev()))
}

/// The devpts instance whose device is `dev` (a pty `n` of `pid`'s
/// `what` is on it): None for the host's /dev/pts, else the mnt_id of
/// the tree's own mount of it (module doc).
fn instance(tt: &mut TtyTable, pid: Pid, what: &str, n: u32, dev: u64) -> Result<Option<u32>> {
    if let Some(&i) = tt.instances.get(&dev) {
        return Ok(i);
    }
    let (major, minor) = dev_parts(dev);
    let refuse = |why: &str| {
        Error::unsupported(
            pid,
            format!("{what} (pty {n} of the devpts instance {major}:{minor})"),
            why.to_string(),
        )
    };
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let i = if ino("/dev/pts").map(|(d, _)| d) == Some(dev) {
        None
    } else if crate::proc::ns::ns_id(pid, "mnt").ok()
        == crate::proc::ns::ns_id(std::process::id() as Pid, "mnt").ok()
    {
        return Err(refuse(
            "it is not the host's /dev/pts, and the tree has no mount namespace of its own to mount it again in",
        ));
    } else {
        let on = |ms: &[crate::proc::mountinfo::MountInfo]| {
            ms.iter()
                .find(|m| {
                    m.fstype == "devpts"
                        && (m.major, m.minor) == (major, minor)
                        && m.root == Path::new("/")
                })
                .map(|m| m.mnt_id as u32)
        };
        let host = crate::proc::mountinfo::read(std::process::id() as Pid)?;
        if on(&host).is_some() {
            return Err(refuse(
                "the host mounts this instance too: only the host's /dev/pts or an instance the tree mounted in its own mount namespace can be restored",
            ));
        }
        match on(&crate::proc::mountinfo::read(pid)?) {
            Some(id) => Some(id),
            None => {
                return Err(refuse(
                    "the instance is not mounted in the tree's mount namespace (a pty of an instance outside the tree)",
                ))
            }
        }
    };
    tt.instances.insert(dev, i);
    Ok(i)
}

impl FdDumper for Tty {
    /// A tty's link is a path like a device file's: the device number
    /// tells.
    fn claims(&self, _link: &FdLink<'_>) -> bool {
        false
    }

    fn claims_fd(&self, fd: &FdCx<'_>) -> bool {
        tty_dev(fd).is_some()
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let pid = fd.pid;
        let what = format!("fd {} ({})", fd.fd, String::from_utf8_lossy(fd.link));
        let (dev, rdev, fs_dev) = tty_dev(fd).expect("claimed");
        let take = |what: &str| {
            crate::sys::take_fd(pid, fd.fd)
                .map_err(|e| Error::sys(pid, format!("{what}: pidfd_getfd"), e))
        };
        // A master of an instance of the tree's own: the mount it was
        // opened through (the instance's, or a bind of its ptmx).
        let mut master_mnt = None;
        let info = match dev {
            Dev::Refused(name) => {
                return Err(Error::unsupported(
                    pid,
                    what,
                    format!(
                        "{name} cannot be checkpointed: a restore could not take the terminal over"
                    ),
                ))
            }
            Dev::Ctty => {
                table.tty.ctty_opens.push((pid, what));
                match table.tty.ctty_info {
                    Some(id) => id,
                    None => {
                        let id = table.next_id();
                        table.tty.ctty_info = Some(id);
                        id
                    }
                }
            }
            Dev::Master => {
                let file = take(&what)?;
                let n = t::pts_number(file.as_raw_fd())
                    .map_err(|e| Error::sys(pid, format!("{what}: TIOCGPTN"), e))?;
                let node = t::slave_node(file.as_raw_fd())
                    .and_then(|f| nix::sys::stat::fstat(f.as_raw_fd()))
                    .map_err(|e| Error::sys(pid, format!("{what}: TIOCGPTPEER (pty {n})"), e))?;
                let inst = instance(&mut table.tty, pid, &what, n, node.st_dev)?;
                let ids = [table.next_id(), table.next_id()];
                let p = table.tty.ptys.entry((inst, n)).or_default();
                if p.master_info == 0 {
                    (p.master_info, p.slave_info) = (ids[0], ids[1]);
                }
                p.node = Some((node.st_mode & 0o7777, node.st_uid, node.st_gid));
                if let Some(other) = &p.master {
                    // One master per pty: a second open file description
                    // of it cannot be.
                    return Err(Error::task(
                        pid,
                        what,
                        format!(
                            "pty {n} has a second master ({} of pid {})",
                            other.what, other.pid
                        ),
                    ));
                }
                p.master = Some(Side { pid, what, file });
                master_mnt = inst.map(|_| fd.info.mnt_id as u32);
                p.master_info
            }
            Dev::Slave(n) => {
                let inst = instance(&mut table.tty, pid, &what, n, fs_dev)?;
                let ids = [table.next_id(), table.next_id()];
                let p = table.tty.ptys.entry((inst, n)).or_default();
                if p.master_info == 0 {
                    (p.master_info, p.slave_info) = (ids[0], ids[1]);
                }
                p.slave_rdev = rdev as u32;
                if p.slave.is_none() {
                    let file = take(&what)?;
                    let p = table.tty.ptys.get_mut(&(inst, n)).expect("just added");
                    p.slave = Some(Side { pid, what, file });
                }
                table.tty.ptys[&(inst, n)].slave_info
            }
        };
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Tty as i32,
            id,
            tty: Some(pb::TtyFileEntry {
                id,
                tty_info_id: info,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                ckpt_mnt_id: master_mnt,
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Tty, id))
    }

    fn finish(&self, table: &FileTable, dir: &ImageDir) -> Result<()> {
        let tt = &table.tty;
        let pids: BTreeSet<Pid> = table.seen.iter().map(|s| s.0).collect();
        if tt.ptys.is_empty() && tt.ctty_opens.is_empty() && pids.is_empty() {
            return Ok(());
        }
        let mut stats = Vec::new();
        for &pid in &pids {
            stats.push(crate::proc::stat::read(pid)?);
        }
        // A pty's master outside the tree: the terminal the tree was
        // started from, most likely.
        for p in tt.ptys.values() {
            if let (None, Some(s), false) = (&p.master, &p.slave, tt.shell_job) {
                return Err(Error::unsupported(
                    s.pid,
                    s.what.clone(),
                    "the terminal is outside the tree (its master is not held by the tree): a tree started from a terminal needs --shell-job",
                ));
            }
        }
        // Every controlling terminal in the tree is a pty of it.
        for s in &stats {
            if s.tty_nr == 0 {
                continue;
            }
            let (major, minor) = dev_parts(s.tty_nr as u32 as u64);
            let inside = pts_index(major, minor).is_some_and(|n| {
                tt.ptys
                    .iter()
                    .any(|(&(_, i), p)| i == n && p.master.is_some())
            });
            if !inside && !tt.shell_job {
                let name = match pts_index(major, minor) {
                    Some(n) => format!("/dev/pts/{n}"),
                    None => format!("device {major}:{minor}"),
                };
                return Err(Error::unsupported(
                    s.pid,
                    format!("controlling terminal {name}"),
                    "the terminal is outside the tree: a tree started from a terminal needs --shell-job",
                ));
            }
        }
        for (pid, what) in &tt.ctty_opens {
            let st = stats.iter().find(|s| s.pid == *pid).expect("a dumped task");
            if st.tty_nr == 0 {
                return Err(Error::unsupported(
                    *pid,
                    what.clone(),
                    "/dev/tty of a task that has no controlling terminal any more cannot be reopened",
                ));
            }
        }
        let mut infos = Vec::new();
        let mut data = Vec::new();
        if let Some(id) = tt.ctty_info {
            infos.push(pb::TtyInfoEntry {
                id,
                r#type: pb::TtyType::Ctty as i32,
                rdev: libc::makedev(5, 0) as u32,
                ..Default::default()
            });
        }
        for (&(inst, n), p) in &tt.ptys {
            let Some(m) = &p.master else {
                infos.push(external(n, p, &stats));
                continue;
            };
            let (mut info, queued) = dump_pty(n, m, p.slave.as_ref(), &stats)?;
            // The ioctls answer in the engine's pid namespace; the images
            // keep the pids the tree sees.
            info.sid = table.vpid(info.sid as Pid) as u32;
            info.pgrp = table.vpid(info.pgrp as Pid) as u32;
            info.ckpt_devpts_mnt_id = inst;
            if let Some((mode, uid, gid)) = p.node {
                (info.ckpt_mode, info.ckpt_uid, info.ckpt_gid) = (Some(mode), Some(uid), Some(gid));
            }
            let mut slave_info = info.clone();
            slave_info.id = p.slave_info;
            slave_info.rdev = if p.slave_rdev != 0 {
                p.slave_rdev
            } else {
                libc::makedev(136 + n / 256, n % 256) as u32
            };
            let mut master_info = info;
            master_info.id = p.master_info;
            master_info.rdev = libc::makedev(5, 2) as u32;
            let (input, output) = queued;
            if !input.is_empty() {
                data.push(pb::TtyDataEntry {
                    tty_id: p.slave_info,
                    data: input,
                });
            }
            if !output.is_empty() {
                data.push(pb::TtyDataEntry {
                    tty_id: p.master_info,
                    data: output,
                });
            }
            infos.push(master_info);
            infos.push(slave_info);
        }
        if !infos.is_empty() {
            dir.write_image("tty-info.img", &infos)?;
        }
        if !data.is_empty() {
            dir.write_image("tty-data.img", &data)?;
        }
        Ok(())
    }
}

/// A pty whose master is outside the tree (--shell-job): the restore
/// gives its files the terminal it runs on. Its session and foreground
/// group are those a task of the tree sees, if it is their terminal.
fn external(n: u32, p: &Pty, stats: &[crate::proc::stat::Stat]) -> pb::TtyInfoEntry {
    let rdev = p.slave_rdev;
    let of = stats.iter().find(|s| s.tty_nr as u32 == rdev);
    pb::TtyInfoEntry {
        id: p.slave_info,
        r#type: pb::TtyType::ExtTty as i32,
        sid: of.map_or(0, |s| s.session as u32),
        pgrp: of.map_or(0, |s| s.tpgid.max(0) as u32),
        rdev,
        pty: Some(pb::TtyPtyEntry { index: n }),
        ..Default::default()
    }
}

fn termios_entry(x: &t::Termios) -> pb::TermiosEntry {
    pb::TermiosEntry {
        c_iflag: x.c_iflag,
        c_oflag: x.c_oflag,
        c_cflag: x.c_cflag,
        c_lflag: x.c_lflag,
        c_line: x.c_line as u32,
        c_ispeed: x.c_ispeed,
        c_ospeed: x.c_ospeed,
        c_cc: x.c_cc.iter().map(|&c| c as u32).collect(),
    }
}

fn locked_entry(x: &t::KTermios) -> pb::TermiosEntry {
    pb::TermiosEntry {
        c_iflag: x.iflag,
        c_oflag: x.oflag,
        c_cflag: x.cflag,
        c_lflag: x.lflag,
        c_line: x.line as u32,
        c_ispeed: 0,
        c_ospeed: 0,
        c_cc: x.cc.iter().map(|&c| c as u32).collect(),
    }
}

/// The pty's state (without id and rdev) and its queued (input, output),
/// read out and put back. Its session and foreground group must be in the
/// tree.
#[allow(clippy::type_complexity)]
fn dump_pty(
    n: u32,
    m: &Side,
    slave: Option<&Side>,
    stats: &[crate::proc::stat::Stat],
) -> Result<(pb::TtyInfoEntry, (Vec<u8>, Vec<u8>))> {
    let fd = m.file.as_raw_fd();
    let sys = |op: &str, e| Error::sys(m.pid, format!("{} (pty {n}): {op}", m.what), e);
    let term = t::get_termios(fd).map_err(|e| sys("TCGETS2", e))?;
    let locked_term = t::get_locked_termios(fd).map_err(|e| sys("TIOCGLCKTRMIOS", e))?;
    let ws = t::get_winsize(fd).map_err(|e| sys("TIOCGWINSZ", e))?;
    let locked = t::get_locked(fd).map_err(|e| sys("TIOCGPTLCK", e))?;
    let packet = t::get_packet(fd).map_err(|e| sys("TIOCGPKT", e))?;
    let exclusive = match slave {
        Some(s) => t::get_exclusive(s.file.as_raw_fd()).map_err(|e| sys("TIOCGEXCL", e))?,
        None => false,
    };
    let sid = t::session(fd).map_err(|e| sys("TIOCGSID", e))?;
    let pgrp = if sid != 0 {
        t::foreground(fd).map_err(|e| sys("TIOCGPGRP", e))?
    } else {
        0
    };
    if sid != 0 && !stats.iter().any(|s| s.pid == sid && s.session == sid) {
        return Err(Error::unsupported(
            m.pid,
            format!("{} (pty {n})", m.what),
            format!(
                "it is the controlling terminal of session {sid}, whose leader is not in the tree"
            ),
        ));
    }
    if pgrp > 0 && !stats.iter().any(|s| s.pgrp == pgrp) {
        return Err(Error::unsupported(
            m.pid,
            format!("{} (pty {n})", m.what),
            format!("its foreground process group {pgrp} has no member in the tree"),
        ));
    }
    if packet {
        t::set_packet(fd, false).map_err(|e| sys("TIOCPKT", e))?;
    }
    // Without a slave in the tree nothing could be put back: what the
    // master would read is left where it is (and not restored).
    let Some(sfd) = slave.map(|s| s.file.as_raw_fd()) else {
        if packet {
            t::set_packet(fd, true).map_err(|e| sys("TIOCPKT", e))?;
        }
        return Ok((
            info(
                locked,
                exclusive,
                packet,
                sid,
                pgrp,
                &term,
                &locked_term,
                &ws,
                n,
            ),
            Default::default(),
        ));
    };
    let queued = drain(fd, Some(sfd), &term);
    // Whatever happened, put back what was read, the termios and packet
    // mode: the tree must be as it was.
    let (input, output) = queued
        .as_ref()
        .map(|q| (&q.0[..], &q.1[..]))
        .unwrap_or((&[], &[]));
    let back = fill(fd, sfd, &term, input, output);
    let pkt = if packet {
        t::set_packet(fd, true)
    } else {
        Ok(())
    };
    let queued = queued.map_err(|e| sys("reading its queued data", e))?;
    back.map_err(|e| sys("putting its queued data back", e))?;
    pkt.map_err(|e| sys("TIOCPKT", e))?;
    Ok((
        info(
            locked,
            exclusive,
            packet,
            sid,
            pgrp,
            &term,
            &locked_term,
            &ws,
            n,
        ),
        queued,
    ))
}

#[allow(clippy::too_many_arguments)]
fn info(
    locked: bool,
    exclusive: bool,
    packet: bool,
    sid: i32,
    pgrp: i32,
    term: &t::Termios,
    locked_term: &t::KTermios,
    ws: &libc::winsize,
    n: u32,
) -> pb::TtyInfoEntry {
    pb::TtyInfoEntry {
        id: 0,
        r#type: pb::TtyType::Pty as i32,
        locked,
        exclusive,
        packet_mode: packet,
        sid: sid as u32,
        pgrp: pgrp.max(0) as u32,
        rdev: 0,
        termios: Some(termios_entry(term)),
        termios_locked: Some(locked_entry(locked_term)),
        winsize: Some(pb::WinsizeEntry {
            ws_row: ws.ws_row as u32,
            ws_col: ws.ws_col as u32,
            ws_xpixel: ws.ws_xpixel as u32,
            ws_ypixel: ws.ws_ypixel as u32,
        }),
        pty: Some(pb::TtyPtyEntry { index: n }),
        ..Default::default()
    }
}
