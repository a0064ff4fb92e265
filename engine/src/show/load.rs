//! `show`'s view of an image directory: what the one loader
//! ([`ImageSet::read`]) read, plus a scan of every file (its magic and
//! entry count, found without knowing its message types), and the
//! descriptions of files for people.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::images::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use crate::images::{
    pb, Head, ImageKind, Magic, Payload, IMAGE_KINDS, MANIFEST_NAME, MAX_ENTRY_SIZE,
};

pub use crate::images::set::{
    Absent, DirFile, ImageSet, ManifestStatus, PageSet, Part, Task, Thread,
};

use super::names;
use crate::images::vma::VMA_ANON_SHARED;

/// Reads everything in `dir` that `show` shows. Fails only when the
/// directory itself cannot be listed; every other problem is recorded in
/// the result.
pub fn load(dir: &Path) -> crate::Result<ImageSet> {
    let mut set = ImageSet::read(dir)?;
    set.tasks.sort_by_key(|t| t.pid());
    for f in set.files.iter_mut() {
        let kind = ImageKind::of_file_name(&f.name).map(|(k, _)| k);
        let mut scan = scan(&dir.join(&f.name), kind);
        if !f.name.ends_with(".img") && scan.magic.is_none() {
            scan.error = None;
        }
        f.magic = scan.magic;
        f.entries = scan.entries;
        f.error = scan.error;
    }
    // Files that are not images (logs CRIU writes next to its images, notes
    // people leave) are listed, not held against the directory.
    // A file that does not decode is already named by its section; the
    // generic scan adds the files no section reads.
    let manifest_problems: Vec<String> = match &set.manifest {
        ManifestStatus::Problems(ps) => ps.iter().map(|p| p.to_string()).collect(),
        _ => Vec::new(),
    };
    for f in set.files.iter().filter(|f| f.name.ends_with(".img")) {
        if let Some(e) = &f.error {
            let prefix = format!("{}: ", f.name);
            let named = set
                .problems
                .iter()
                .any(|q| q.starts_with(&prefix) && !manifest_problems.contains(q));
            if !named {
                set.problems.push(format!("{prefix}{e}"));
            }
        }
    }
    // "X: missing" says nothing the manifest check has not said.
    let listed_missing: Vec<String> = manifest_problems
        .iter()
        .filter_map(|p| p.strip_suffix(&format!(": listed in {MANIFEST_NAME} but missing")))
        .map(|n| format!("{n}: missing"))
        .collect();
    set.problems.retain(|p| !listed_missing.contains(p));
    Ok(set)
}

impl ImageSet {
    /// The path of a regular file entry, or a description of another
    /// kind of file; None if files.img does not have the id.
    pub fn file_path(&self, id: u32) -> Option<String> {
        self.file(id).map(|f| self.describe(f).path)
    }

    /// A file entry described, with what other images add to it (the
    /// data buffered in a pipe).
    pub fn describe(&self, f: &pb::FileEntry) -> FileView {
        let mut v = describe_file(f);
        // A FIFO's path and flags are in the REG entry it names.
        if let Some(r) = f
            .fifo
            .as_ref()
            .and_then(|p| self.file(p.regf_id?))
            .and_then(|e| e.reg.as_ref())
        {
            v.path = r.name.clone();
            v.flags = Some(r.flags);
        }
        let data = f
            .pipe
            .as_ref()
            .map(|p| self.pipe_data.get(&p.pipe_id))
            .or(f.fifo.as_ref().map(|p| self.fifo_data.get(&p.pipe_id)));
        if let Some(data) = data {
            match data {
                Some(d) => {
                    let bytes = d.bytes.len() as u64;
                    v.extra
                        .push(("buffered".into(), names::count(bytes, "byte")));
                    if let Some(size) = d.size {
                        v.extra
                            .push(("pipe size".into(), names::human(size as u64)));
                    }
                }
                None => v.extra.push(("buffered".into(), "nothing".into())),
            }
        }
        if f.usk.is_some()
            || f.nlsk.is_some()
            || f.isk
                .as_ref()
                .is_some_and(|i| i.r#type == libc::SOCK_DGRAM as u32)
        {
            let q = self.sk_queues.get(&f.id);
            let bytes: usize = q.map_or(0, |q| q.iter().map(Vec::len).sum());
            v.extra.push((
                "queued".into(),
                match q {
                    None => "nothing".into(),
                    Some(q) => format!(
                        "{} in {}",
                        names::count(bytes as u64, "byte"),
                        names::count(q.len() as u64, "message")
                    ),
                },
            ));
        }
        // Files in flight and senders' credentials with the queued messages.
        if let Some(q) = self.sk_queue_scm.get(&f.id) {
            let rights: Vec<String> = q
                .iter()
                .flat_map(|a| a.rights.iter().map(|r| format!("file {r}")))
                .collect();
            if !rights.is_empty() {
                v.extra.push(("in flight".into(), rights.join(", ")));
            }
            let creds: Vec<String> = q
                .iter()
                .filter_map(|a| a.creds)
                .map(|(pid, uid, gid)| format!("pid {pid} uid {uid} gid {gid}"))
                .collect();
            if !creds.is_empty() {
                v.extra.push(("senders".into(), creds.join(", ")));
            }
        }
        if let Some(t) = f.isk.as_ref().and_then(|i| self.tcp_streams.get(&i.ino)) {
            super::inet::describe_stream(t, &mut v);
        }
        // A terminal: which one, and its own state from tty-info.img.
        if let Some(t) = &f.tty {
            match self.tty_info.get(&t.tty_info_id) {
                Some(i) => {
                    let (major, minor) = (libc::major(i.rdev as u64), libc::minor(i.rdev as u64));
                    let index = i.pty.as_ref().map(|p| p.index);
                    v.path = match (pb::TtyType::try_from(i.r#type), index) {
                        (Ok(pb::TtyType::Ctty), _) => "/dev/tty".into(),
                        (Ok(pb::TtyType::Pty), Some(n)) if major == 5 && minor == 2 => {
                            format!("/dev/ptmx (master of pty {n})")
                        }
                        (Ok(pb::TtyType::Pty), Some(n)) => format!("/dev/pts/{n}"),
                        (ty, _) => format!(
                            "{} tty {major}:{minor}",
                            ty.map_or("unknown".into(), |t| format!("{t:?}"))
                        ),
                    };
                    v.extra.push(("tty".into(), i.id.to_string()));
                    if let Some(id) = i.ckpt_devpts_mnt_id {
                        v.extra
                            .push(("on the devpts of".into(), format!("mount {id}")));
                    }
                    if let (Some(mode), Some(uid), Some(gid)) =
                        (i.ckpt_mode, i.ckpt_uid, i.ckpt_gid)
                    {
                        v.extra.push((
                            "pts node".into(),
                            format!("mode {mode:o}, owner {uid}:{gid}"),
                        ));
                    }
                    if i.sid != 0 {
                        v.extra.push((
                            "controlling terminal of".into(),
                            format!("session {}, foreground group {}", i.sid, i.pgrp),
                        ));
                    }
                    if let Some(w) = &i.winsize {
                        v.extra
                            .push(("window".into(), format!("{}x{}", w.ws_row, w.ws_col)));
                    }
                    let mut modes = Vec::new();
                    if i.packet_mode {
                        modes.push("packet mode");
                    }
                    if i.locked {
                        modes.push("locked");
                    }
                    if i.exclusive {
                        modes.push("exclusive");
                    }
                    if !modes.is_empty() {
                        v.extra.push(("modes".into(), modes.join(", ")));
                    }
                    if let Some(d) = self.tty_data.get(&i.id) {
                        v.extra.push((
                            "queued to read".into(),
                            names::count(d.len() as u64, "byte"),
                        ));
                    }
                }
                None => v.extra.push(("tty".into(), "not in tty-info.img".into())),
            }
        }
        // A memfd's name and object; an unlinked file's ghost.
        if let Some(i) = f.memfd.as_ref().and_then(|m| self.memfds.get(&m.inode_id)) {
            v.path = format!("/memfd:{}", i.name);
            v.extra.push((
                "memfd inode".into(),
                format!("{}, {}", i.inode_id, names::human(i.size)),
            ));
            v.extra.push((
                "seals".into(),
                names::flags(i.seals as u64, MEMFD_SEALS, "none"),
            ));
        }
        if let Some(g) = self.ghosts.get(&f.id) {
            v.extra.push((
                "unlinked".into(),
                format!("contents in ghost-file-{g:x}.img"),
            ));
        }
        // An unlinked FIFO: its path entry is the ghost.
        if let Some(g) = f.fifo.as_ref().and_then(|p| self.ghosts.get(&p.regf_id?)) {
            v.extra.push((
                "unlinked".into(),
                format!("made again from ghost-file-{g:x}.img"),
            ));
        }
        v
    }

    /// Stored pages of one mapping of `task`.
    pub fn vma_pages(&self, task: &Task, v: &pb::VmaEntry) -> u64 {
        if v.status & VMA_ANON_SHARED != 0 {
            match self.shmem.get(&v.shmid) {
                Some(Ok(set)) => set.pages_in(v.pgoff, v.pgoff + (v.end - v.start)),
                _ => 0,
            }
        } else {
            match &task.pagemap {
                Ok(set) => set.pages_in(v.start, v.end),
                Err(_) => 0,
            }
        }
    }
}

/// F_SEAL_* names.
const MEMFD_SEALS: names::Flags = &[
    (0x1, "F_SEAL_SEAL"),
    (0x2, "F_SEAL_SHRINK"),
    (0x4, "F_SEAL_GROW"),
    (0x8, "F_SEAL_WRITE"),
    (0x10, "F_SEAL_FUTURE_WRITE"),
    (0x20, "F_SEAL_EXEC"),
];

/// A file entry of files.img, described for people.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileView {
    /// "REG", "PIPE", ... (fd_types).
    pub kind: String,
    /// The path of a regular file; "pipe:[ID]" and the like otherwise.
    pub path: String,
    pub flags: Option<u32>,
    pub pos: Option<u64>,
    /// Other facts worth a look (size, mode, counter, ...), as key/value.
    pub extra: Vec<(String, String)>,
}

pub fn fd_type_name(t: i32) -> String {
    pb::FdTypes::try_from(t)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type {t}"))
}

pub fn describe_file(f: &pb::FileEntry) -> FileView {
    use super::names;
    let mut v = FileView {
        kind: fd_type_name(f.r#type),
        path: format!("{} file {}", fd_type_name(f.r#type), f.id),
        ..Default::default()
    };
    if let Some(r) = &f.reg {
        v.path = r.name.clone();
        v.flags = Some(r.flags);
        v.pos = Some(r.pos);
        if let Some(m) = r.mode {
            v.extra
                .push(("file type".into(), names::file_type(m).to_string()));
            v.extra.push(("mode".into(), format!("{:04o}", m & 0o7777)));
        }
        if let Some(s) = r.size {
            v.extra.push(("size".into(), names::human(s)));
        }
        if let Some(m) = r.mnt_id {
            v.extra.push(("mnt_id".into(), m.to_string()));
        }
        if r.ckpt_host_mount == Some(true) {
            v.extra.push(("on".into(), "a host mount".into()));
        }
    } else if let Some(p) = &f.pipe {
        v.path = format!("pipe:[{}]", p.pipe_id);
        v.flags = Some(p.flags);
    } else if let Some(p) = &f.fifo {
        v.path = format!("fifo:[{}]", p.pipe_id);
        v.extra.push(("pipe id".into(), p.pipe_id.to_string()));
    } else if let Some(e) = &f.efd {
        v.path = "anon_inode:[eventfd]".into();
        v.flags = Some(e.flags);
        v.extra.push(("counter".into(), e.counter.to_string()));
    } else if let Some(e) = &f.epfd {
        v.path = "anon_inode:[eventpoll]".into();
        v.flags = Some(e.flags);
        let watched: Vec<String> = e
            .tfd
            .iter()
            .map(|t| {
                format!(
                    "fd {} {} data {:#x}",
                    t.tfd,
                    names::flags(t.events as u64, names::EPOLL_EVENTS, "no events"),
                    t.data
                )
            })
            .collect();
        v.extra.push((
            "watches".into(),
            if watched.is_empty() {
                "nothing".into()
            } else {
                watched.join("; ")
            },
        ));
    } else if let Some(s) = &f.sgfd {
        v.path = "anon_inode:[signalfd]".into();
        v.flags = Some(s.flags);
        v.extra.push(("mask".into(), names::sigset(s.sigmask)));
    } else if let Some(t) = &f.tfd {
        v.path = "anon_inode:[timerfd]".into();
        v.flags = Some(t.flags);
        v.extra.push(("clock".into(), names::clock(t.clockid)));
        v.extra.push(("ticks".into(), t.ticks.to_string()));
    } else if let Some(i) = &f.ify {
        v.path = "anon_inode:inotify".into();
        v.flags = Some(i.flags);
        let watched: Vec<String> =
            i.wd.iter()
                .map(|w| {
                    format!(
                        "wd {} {} (inode {}) mask {}{}",
                        w.wd,
                        w.f_handle.path.as_deref().unwrap_or("?"),
                        w.i_ino,
                        names::inotify_mask(w.mask),
                        if w.ignored_mask != 0 {
                            format!(" ignored {}", names::inotify_mask(w.ignored_mask))
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
        v.extra.push((
            "watches".into(),
            if watched.is_empty() {
                "nothing".into()
            } else {
                watched.join("; ")
            },
        ));
    } else if let Some(a) = &f.ffy {
        v.path = "anon_inode:[fanotify]".into();
        v.flags = Some(a.flags);
        v.extra.push((
            "init".into(),
            format!("flags {:#x} event flags {:#o}", a.faflags, a.evflags),
        ));
        let marks: Vec<String> = a
            .mark
            .iter()
            .map(|m| {
                let on = match (&m.ie, &m.me) {
                    (Some(ie), _) => format!(
                        "{} (inode {})",
                        ie.f_handle.path.as_deref().unwrap_or("?"),
                        ie.i_ino
                    ),
                    (None, Some(me)) => format!("mount {}", me.mnt_id),
                    _ => "?".into(),
                };
                format!(
                    "{on} mask {} ignored {} flags {}",
                    names::fanotify_mask(m.mask as u64),
                    names::fanotify_mask(m.ignored_mask as u64),
                    names::flags(m.mflags as u64, names::FANOTIFY_MARK_FLAGS, "0")
                )
            })
            .collect();
        v.extra.push((
            "marks".into(),
            if marks.is_empty() {
                "nothing".into()
            } else {
                marks.join("; ")
            },
        ));
    } else if let Some(m) = &f.memfd {
        v.path = format!("memfd (inode {})", m.inode_id);
        v.flags = Some(m.flags);
        v.pos = Some(m.pos);
    } else if let Some(t) = &f.tty {
        v.path = format!("tty (tty-info id {})", t.tty_info_id);
        v.flags = Some(t.flags);
    } else if let Some(n) = &f.nsf {
        v.path = format!("namespace file (ns id {})", n.ns_id);
        v.flags = Some(n.flags);
    } else if let Some(i) = &f.isk {
        super::inet::describe(i, &mut v);
    } else if let Some(n) = &f.nlsk {
        super::inet::describe_netlink(n, &mut v);
    } else if let Some(p) = &f.psk {
        super::inet::describe_packet(p, &mut v);
    } else if let Some(u) = &f.usk {
        v.path = format!("socket:[{}]", u.ino);
        v.flags = Some(u.flags);
        let ty = match u.r#type as i32 {
            libc::SOCK_STREAM => "stream".to_string(),
            libc::SOCK_DGRAM => "datagram".to_string(),
            libc::SOCK_SEQPACKET => "seqpacket".to_string(),
            t => format!("type {t}"),
        };
        v.extra.push(("unix socket".into(), ty));
        let state = match u.state {
            1 => "established".to_string(),
            7 => "closed".to_string(),
            10 => "listening".to_string(),
            s => format!("state {s}"),
        };
        v.extra.push(("state".into(), state));
        if u.peer != 0 {
            v.extra
                .push(("peer".into(), format!("socket:[{}]", u.peer)));
        }
        if !u.name.is_empty() {
            let name = match u.name.strip_prefix(b"\0") {
                Some(abs) => format!("@{}", String::from_utf8_lossy(abs)),
                None => String::from_utf8_lossy(&u.name)
                    .trim_end_matches('\0')
                    .to_string(),
            };
            let how = if crate::sys::unix_sock::autobound(&u.name) {
                " (autobind)"
            } else {
                ""
            };
            v.extra.push(("name".into(), format!("{name}{how}")));
            if let Some(d) = &u.name_dir {
                v.extra.push(("bound in".into(), d.clone()));
            }
            if let Some(p) = &u.file_perms {
                v.extra.push((
                    "file".into(),
                    format!("mode {:o}, owner {}:{}", p.mode, p.uid, p.gid),
                ));
            }
            if u.deleted == Some(true) {
                v.extra.push(("file".into(), "removed".into()));
            }
        }
        if u.state == 10 {
            v.extra.push(("backlog".into(), u.backlog.to_string()));
        }
        if u.uflags & 1 != 0 {
            v.extra.push((
                "outside the tree".into(),
                "connected to again by name".into(),
            ));
        }
        let shut = match u.shutdown.unwrap_or(0) & 3 {
            0 => None,
            1 => Some("read"),
            2 => Some("write"),
            _ => Some("read and write"),
        };
        if let Some(s) = shut {
            v.extra.push(("shut down".into(), s.into()));
        }
        v.extra.push((
            "buffers".into(),
            format!(
                "send {}, receive {}",
                names::human(u.opts.so_sndbuf as u64),
                names::human(u.opts.so_rcvbuf as u64)
            ),
        ));
        for (on, name) in [
            (u.opts.so_passcred, "SO_PASSCRED"),
            (u.opts.so_passsec, "SO_PASSSEC"),
            (u.opts.reuseaddr, "SO_REUSEADDR"),
            (u.opts.so_keepalive, "SO_KEEPALIVE"),
        ] {
            if on == Some(true) {
                v.extra.push((name.into(), "on".into()));
            }
        }
        if let Some(off) = u.peek_off {
            v.extra.push(("SO_PEEK_OFF".into(), off.to_string()));
        }
    } else if let Some(p) = &f.pidfd {
        v.path = "anon_inode:[pidfd]".into();
        v.flags = Some(p.flags);
        if p.nspid == -1 {
            v.extra.push(("pid".into(), "reaped".into()));
            let died = match p.attr.as_ref().and_then(|a| a.exit_code) {
                Some(st) if libc::WIFEXITED(st) => format!("exit {}", libc::WEXITSTATUS(st)),
                Some(st) if libc::WIFSIGNALED(st) => format!("signal {}", libc::WTERMSIG(st)),
                Some(st) => format!("status {st:#x}"),
                None => "unknown".into(),
            };
            v.extra.push(("died by".into(), died));
        } else {
            v.extra.push(("pid".into(), p.nspid.to_string()));
        }
    } else if f.ext.is_some() {
        v.path = "external file".into();
    }
    if let Some(o) = crate::images::fown::fown(f).filter(|o| crate::images::fown::is_set(o)) {
        v.extra
            .push(("owner".into(), crate::images::fown::describe(o)));
    }
    v
}

// ------------------------------------------------------------------ generic scan

struct Scan {
    magic: Option<String>,
    entries: Option<u64>,
    error: Option<String>,
}

/// The varint fields of an encoded protobuf message, by field number.
fn varint_fields(mut b: &[u8]) -> BTreeMap<u32, u64> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let skip = match wire {
            0 => match varint(&mut b) {
                Some(v) => {
                    out.insert(tag, v);
                    0
                }
                None => break,
            },
            1 => 8,
            2 => match varint(&mut b) {
                Some(n) => n as usize,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        b = &b[skip..];
    }
    out
}

/// Field numbers of the length fields that say how many raw bytes follow
/// an entry (see [`Payload::RawAfterEntry`]).
fn length_field(message: &str, field: &str) -> Option<u32> {
    Some(match (message, field) {
        ("pipe_data_entry", "bytes") => 2,
        ("sk_packet_entry", "length") => 2,
        ("ipc_shm_entry", "size") => 2,
        ("ipc_sem_entry", "nsems") => 2,
        ("tcp_stream_entry", "inq_len") => 1,
        ("tcp_stream_entry", "outq_len") => 3,
        ("bpfmap_data_entry", "keys_bytes") => 2,
        ("bpfmap_data_entry", "values_bytes") => 3,
        _ => return None,
    })
}

/// Raw bytes after an entry of `message`, from a "a+b" / "n*2" field
/// expression.
fn raw_len(message: &str, expr: &str, fields: &BTreeMap<u32, u64>) -> Option<u64> {
    if message == "ipc_shm_entry" && fields.get(&3) == Some(&1) {
        return Some(0); // in_pagemaps: the contents are elsewhere
    }
    let mut total = 0u64;
    for term in expr.split('+') {
        let (name, mul) = match term.split_once('*') {
            Some((n, m)) => (n, m.parse::<u64>().ok()?),
            None => (term, 1),
        };
        let tag = length_field(message, name)?;
        total += fields.get(&tag).copied().unwrap_or(0) * mul;
    }
    Some(total)
}

fn round_up(n: u64, align: u32) -> u64 {
    let a = align.max(1) as u64;
    n.div_ceil(a) * a
}

/// Reads a file's header and counts its entries without knowing their
/// types, following the payload rules of the magic table.
fn scan(path: &Path, kind: Option<&'static ImageKind>) -> Scan {
    let mut s = Scan {
        magic: None,
        entries: None,
        error: None,
    };
    if kind.is_some_and(|k| k.magic.head() == Head::Raw) {
        s.magic = Some(Magic::Raw.name().to_string());
        return s;
    }
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            s.error = Some(format!("cannot open: {e}"));
            return s;
        }
    };
    let mut r = BufReader::new(f);
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                s.error = Some(format!("cannot read: {e}"));
                return s;
            }
        }
    }
    let w0 = (got >= 4).then(|| u32::from_le_bytes(head[0..4].try_into().unwrap()));
    let w1 = (got >= 8).then(|| u32::from_le_bytes(head[4..8].try_into().unwrap()));
    let (value, hdr_len) = match (w0, w1) {
        (Some(a), Some(b)) if a == IMG_COMMON_MAGIC || a == IMG_SERVICE_MAGIC => (b, 8u64),
        (Some(a), _) if Magic::from_value(a).is_some_and(|m| m.head() == Head::MagicOnly) => (a, 4),
        _ => {
            s.error = Some(match (kind, w0) {
                (_, None) => format!("{got} bytes: too short for an image header"),
                (None, Some(a)) => format!("not a CRIU image (starts with {a:#010x})"),
                (Some(k), Some(a)) => format!(
                    "bad header: starts with {a:#010x}, expected the header of a {} image",
                    k.magic.name()
                ),
            });
            return s;
        }
    };
    let magic = Magic::from_value(value);
    s.magic = Some(match magic {
        Some(m) => m.name().to_string(),
        None => format!("unknown magic {value:#010x}"),
    });
    if let (Some(k), Some(m)) = (kind, magic) {
        if k.magic != m {
            s.error = Some(format!(
                "the header says {}, but the file name says {}",
                m.name(),
                k.magic.name()
            ));
        }
    }
    // The payload rules of the kind the name says, or of the first kind
    // with this magic.
    let kind = kind.or_else(|| IMAGE_KINDS.iter().find(|k| Some(k.magic) == magic));
    let Some(kind) = kind else {
        return s;
    };
    // The 8 bytes read may hold the start of the first entry.
    if let Err(e) = r.seek(SeekFrom::Start(hdr_len)) {
        s.error = Some(format!("cannot read: {e}"));
        return s;
    }
    let message = kind.message.unwrap_or("");
    let mut offset = hdr_len;
    let mut count = 0u64;
    let mut buf = Vec::new();
    let mut read_entry =
        |r: &mut BufReader<File>, offset: &mut u64| -> Result<Option<Vec<u8>>, String> {
            let mut len = [0u8; 4];
            let mut n = 0;
            while n < 4 {
                match r.read(&mut len[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(format!("at byte {offset}: {e}")),
                }
            }
            if n == 0 {
                return Ok(None);
            }
            if n < 4 {
                return Err(format!("at byte {offset}: truncated entry length"));
            }
            let len = u32::from_le_bytes(len);
            if len > MAX_ENTRY_SIZE {
                return Err(format!(
                    "at byte {offset}: entry length {len} exceeds the limit (corrupted?)"
                ));
            }
            buf.resize(len as usize, 0);
            r.read_exact(&mut buf)
                .map_err(|_| format!("at byte {offset}: entry of {len} bytes is truncated"))?;
            *offset += 4 + len as u64;
            Ok(Some(buf.clone()))
        };
    let skip = |r: &mut BufReader<File>, offset: &mut u64, n: u64| -> Result<(), String> {
        let copied = std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())
            .map_err(|e| format!("at byte {offset}: {e}"))?;
        if copied < n {
            return Err(format!(
                "at byte {offset}: {n} bytes of raw data expected, {copied} found"
            ));
        }
        *offset += n;
        Ok(())
    };
    let result = (|| -> Result<(), String> {
        while let Some(msg) = read_entry(&mut r, &mut offset)? {
            count += 1;
            let fields = varint_fields(&msg);
            match kind.payload {
                Payload::Entries | Payload::HeadThenEntries { .. } | Payload::RawFile => {}
                Payload::RawAfterEntry { field, align } => {
                    let n = raw_len(message, field, &fields).unwrap_or(0);
                    skip(&mut r, &mut offset, round_up(n, align))?;
                }
                Payload::IpcMsgQueue => {
                    let qnum = fields.get(&3).copied().unwrap_or(0);
                    for _ in 0..qnum {
                        let Some(m) = read_entry(&mut r, &mut offset)? else {
                            return Err(format!("at byte {offset}: message queue ends early"));
                        };
                        count += 1;
                        let msize = varint_fields(&m).get(&2).copied().unwrap_or(0);
                        skip(&mut r, &mut offset, round_up(msize, 8))?;
                    }
                }
                Payload::GhostFile => {
                    if fields.get(&9) == Some(&1) {
                        while let Some(c) = read_entry(&mut r, &mut offset)? {
                            count += 1;
                            let len = varint_fields(&c).get(&1).copied().unwrap_or(0);
                            skip(&mut r, &mut offset, len)?;
                        }
                    }
                    // Otherwise the contents run to the end of the file.
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    s.entries = Some(count);
    if let Err(e) = result {
        s.error.get_or_insert(e);
    }
    s
}
