//! Restoring System V IPC objects (see dump/ipc.rs for which ones a dump
//! holds) with their ids and keys.
//!
//! # Reuse, recreate or refuse
//!
//! In the host IPC namespace an object outlives the killed tree unless it
//! was removed. So for each dumped object, before any process exists
//! (after the dumped tree's pids are free, so its last detaches are done):
//!
//! - an object with the same id that is the *same object* — same key,
//!   creator uid/gid, ctime (creation or last IPC_SET) and size — is reused
//!   as it is: its contents are the live truth, which may be newer than the
//!   image (another process may have written since);
//! - if the id is free, the object is created again with that id: the id
//!   goes into /proc/sys/kernel/{shm,sem,msg}_next_id right before the
//!   shmget/semget/msgget with IPC_CREAT|IPC_EXCL and the same key (the
//!   kernel uses it for the next object of the namespace and resets it to
//!   -1); a forked helper with the creator's uid/gid makes the call, so
//!   cuid/cgid come back too. Then owner and mode (IPC_SET), then contents:
//!   the segment's bytes, SETALL of the semaphore values, the messages in
//!   order with their types. The id the kernel gave is checked;
//! - an id or key held by another object is refused, naming the object,
//!   id, key and holder. All the checks run before the first object is
//!   created.
//!
//! Creation is serialized between ckpt processes by a lock file
//! (/run/lock/ckpt-sysvipc.lock, flock; programs that create SysV objects
//! while restores run may take it too, as the zdtm cases do). Other
//! programs can create an object between our write of next_id and our
//! get: if it took another id, ours is removed and created again; if it
//! took ours, the restore fails cleanly rather than restoring a wrong id.
//! Ids are `seq * 32768 + index` and the kernel allocates by index: an
//! object at the same index with another sequence number blocks the id
//! as much as one with the same id, and is refused the same way.
//!
//! Objects created by a restore that then fails are removed again
//! ([`IpcRestore`]'s Drop); reused ones are left as they were.
//!
//! # What comes back with them
//!
//! - Segments removed while attached (SHM_DEST, key IPC_PRIVATE) are
//!   recreated, attached by every task that had them, then removed again.
//! - Semaphore pids (GETPID): each semaphore whose last operation was a
//!   task of the tree gets its value set again from inside that task
//!   (SETVAL during the take-over), so GETPID reads the same, and the next
//!   dump finds the set again.
//! - A queue's last sender (lspid): the last message is queued from inside
//!   that task when it is one of the tree and the message fits in the
//!   scratch page; the last receiver (lrpid) and the stime/rtime/otime
//!   times cannot be set and read as the restore left them.
//! - Not restored: semaphore undo lists (SEM_UNDO; unreadable from user
//!   space), a segment's atime/dtime/lpid/cpid, a queue byte limit above
//!   kernel.msgmnb (raising it needs CAP_SYS_RESOURCE, which this machine
//!   does not give even to root: refused with that reason).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::load::{Images, TaskImages};
use crate::error::{Error, Pid, Result};
use crate::images::pagemap::PAGE;
use crate::images::set::SysvIpc;
use crate::images::vma::VMA_AREA_SYSVIPC;
use crate::images::{pb, ImageError};
use crate::proc::sysvipc::{self, Perm, SHM_DEST, SHM_LOCKED};
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::sys::ipc as sys;

/// A segment of the image; its bytes stay in the file until restored.
#[derive(Debug, Clone)]
pub struct ShmImage {
    pub desc: pb::IpcDescEntry,
    pub size: u64,
    /// ipcns-shm-N.img and the offset of the segment's bytes in it.
    pub path: PathBuf,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct SemImage {
    pub desc: pb::IpcDescEntry,
    pub values: Vec<u16>,
    pub sempids: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct MsgImage {
    pub desc: pb::IpcDescEntry,
    pub qbytes: u32,
    /// (mtype, text), oldest first.
    pub msgs: Vec<(u64, Vec<u8>)>,
    pub lspid: Option<i32>,
}

/// The SysV IPC objects of an image directory.
#[derive(Debug, Clone, Default)]
pub struct IpcImages {
    pub shm: Vec<ShmImage>,
    pub sem: Vec<SemImage>,
    pub msg: Vec<MsgImage>,
}

impl IpcImages {
    pub fn is_empty(&self) -> bool {
        self.shm.is_empty() && self.sem.is_empty() && self.msg.is_empty()
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image(ImageError::invalid(path, reason))
}

/// Check ipcns-{shm,sem,msg}-N.img of the tree's IPC namespace, as the
/// loader read them,
/// and that every SysV mapping of every task refers to a segment of the
/// image and lies inside it.
pub fn from_set(dir: &Path, ipc: &SysvIpc, tasks: &[TaskImages]) -> Result<IpcImages> {
    let mut out = IpcImages::default();
    let Some(root) = tasks.first() else {
        return Ok(out);
    };
    let ns = root.ids.ipc_ns_id.unwrap_or(0);
    for t in tasks {
        if t.ids.ipc_ns_id.unwrap_or(0) != ns {
            return Err(bad(
                &dir.join(format!("ids-{}.img", t.pid)),
                format!(
                    "pid {}: IPC namespace {:?} differs from the root's ({ns}); nested IPC namespaces are not supported",
                    t.pid, t.ids.ipc_ns_id
                ),
            ));
        }
    }
    let shm_path = dir.join(format!("ipcns-shm-{ns}.img"));
    for seg in ipc.shm.iter().filter(|s| s.ns == ns) {
        let e = &seg.entry;
        if e.in_pagemaps == Some(true) {
            return Err(bad(
                &shm_path,
                format!(
                    "segment {}: contents in pagemaps (CRIU's newer layout) are not supported",
                    e.desc.id
                ),
            ));
        }
        out.shm.push(ShmImage {
            size: e.size,
            desc: e.desc,
            path: seg.path.clone(),
            offset: seg.offset,
        });
    }
    let sem_path = dir.join(format!("ipcns-sem-{ns}.img"));
    for set in ipc.sem.iter().filter(|s| s.ns == ns) {
        let e = &set.entry;
        let n = e.nsems as usize;
        if n == 0 || n > 65536 || (!e.ckpt_sempid.is_empty() && e.ckpt_sempid.len() != n) {
            return Err(bad(
                &sem_path,
                format!(
                    "semaphore set {}: {n} semaphores, {} pids",
                    e.desc.id,
                    e.ckpt_sempid.len()
                ),
            ));
        }
        if let Some(v) = set.values.iter().find(|&&v| v > 32767) {
            return Err(bad(
                &sem_path,
                format!(
                    "semaphore set {}: value {v} is above SEMVMX (32767)",
                    e.desc.id
                ),
            ));
        }
        out.sem.push(SemImage {
            desc: e.desc,
            values: set.values.clone(),
            sempids: e.ckpt_sempid.clone(),
        });
    }
    let msg_path = dir.join(format!("ipcns-msg-{ns}.img"));
    for q in ipc.msg.iter().filter(|q| q.ns == ns) {
        let e = &q.entry;
        for (i, (mtype, _)) in q.msgs.iter().enumerate() {
            if *mtype == 0 || *mtype > i64::MAX as u64 {
                return Err(bad(
                    &msg_path,
                    format!(
                        "queue {}: message {i} has type {mtype}, not a positive long",
                        e.desc.id
                    ),
                ));
            }
        }
        out.msg.push(MsgImage {
            desc: e.desc,
            qbytes: e.qbytes,
            msgs: q.msgs.clone(),
            lspid: e.ckpt_lspid,
        });
    }
    // Ids are unique per kind; keys too, but for IPC_PRIVATE.
    fn unique<'a>(
        path: &Path,
        what: &str,
        descs: impl Iterator<Item = &'a pb::IpcDescEntry>,
    ) -> Result<()> {
        let mut ids = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for d in descs {
            if !ids.insert(d.id) || (d.key != 0 && !keys.insert(d.key)) {
                return Err(bad(
                    path,
                    format!("{what} {} (key {:#x}) appears twice", d.id, d.key),
                ));
            }
        }
        Ok(())
    }
    unique(&shm_path, "segment", out.shm.iter().map(|s| &s.desc))?;
    unique(&sem_path, "semaphore set", out.sem.iter().map(|s| &s.desc))?;
    unique(&msg_path, "queue", out.msg.iter().map(|s| &s.desc))?;
    // Every SysV mapping lies inside a segment of the image.
    for t in tasks {
        for v in
            t.mm.vmas
                .iter()
                .filter(|v| v.status & VMA_AREA_SYSVIPC != 0)
        {
            let seg = out.shm.iter().find(|s| s.desc.id as u64 == v.shmid);
            let fits =
                seg.is_some_and(|s| v.pgoff + (v.end - v.start) <= s.size.div_ceil(PAGE) * PAGE);
            if !fits || v.pgoff % PAGE != 0 || v.start < v.pgoff {
                return Err(bad(
                    &dir.join(format!("mm-{}.img", t.pid)),
                    format!(
                        "SysV mapping {:#x}-{:#x} (offset {:#x}) refers to segment {}, which {}",
                        v.start,
                        v.end,
                        v.pgoff,
                        v.shmid,
                        if seg.is_some() {
                            "is smaller"
                        } else {
                            "ipcns-shm has not got"
                        }
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Shm,
    Sem,
    Msg,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Shm => "shm",
            Kind::Sem => "sem",
            Kind::Msg => "msg",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Shm => "SysV segment",
            Kind::Sem => "SysV semaphore set",
            Kind::Msg => "SysV message queue",
        }
    }
}

/// One object of the live namespace, as /proc/sysvipc shows it, with its
/// size (bytes or semaphores; 0 for queues).
#[derive(Clone, Copy, Debug)]
struct Live {
    perm: Perm,
    size: u64,
    /// For messages naming a holder: a segment's creator pid.
    cpid: Pid,
}

fn describe(kind: Kind, l: &Live) -> String {
    let mut s = format!(
        "{} {} (key {:#x}, owner uid {}, creator uid {} gid {}, mode {:o}, ctime {}",
        kind.noun(),
        l.perm.id,
        l.perm.key as u32,
        l.perm.uid,
        l.perm.cuid,
        l.perm.cgid,
        l.perm.mode,
        l.perm.ctime
    );
    match kind {
        Kind::Shm => s += &format!(", {} bytes, created by pid {})", l.size, l.cpid),
        Kind::Sem => s += &format!(", {} semaphores)", l.size),
        Kind::Msg => s += ")",
    }
    s
}

/// Why `live` (holding the dumped id) is not the dumped object, or None
/// when it is the same one.
fn difference(d: &pb::IpcDescEntry, size: u64, kind: Kind, live: &Live) -> Option<String> {
    let p = &live.perm;
    if p.key as u32 != d.key {
        return Some(format!("key {:#x}, not {:#x}", p.key as u32, d.key));
    }
    if (p.cuid, p.cgid) != (d.cuid, d.cgid) {
        return Some(format!(
            "creator {}:{}, not {}:{}",
            p.cuid, p.cgid, d.cuid, d.cgid
        ));
    }
    if d.ckpt_ctime.is_some_and(|c| c != p.ctime) {
        return Some(format!(
            "ctime {}, not {} (created or changed since the dump)",
            p.ctime,
            d.ckpt_ctime.unwrap_or(0)
        ));
    }
    if kind != Kind::Msg && live.size != size {
        return Some(format!("size {}, not {size}", live.size));
    }
    None
}

/// Ids are `seq * SLOTS + index`; the kernel allocates by index, so an
/// object at the same index with another sequence number blocks the id
/// (IPCMNI; 32768 unless the kernel was booted with ipcmni_extend).
const SLOTS: i32 = 32768;

fn same_slot(a: i32, b: i32) -> bool {
    a.rem_euclid(SLOTS) == b.rem_euclid(SLOTS)
}

/// What to do with one dumped object.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Reuse,
    Create,
}

/// Decide for one object; `Err` is the refusal's reason.
fn plan(
    kind: Kind,
    d: &pb::IpcDescEntry,
    size: u64,
    live: &[Live],
) -> std::result::Result<Plan, String> {
    let what = format!("{} {} (key {:#x})", kind.noun(), d.id, d.key);
    if let Some(l) = live.iter().find(|l| l.perm.id as u32 == d.id) {
        return match difference(d, size, kind, l) {
            None => Ok(Plan::Reuse),
            Some(why) => Err(format!(
                "{what}: the id is taken by another object, {} ({why})",
                describe(kind, l)
            )),
        };
    }
    if let Some(l) = live.iter().find(|l| same_slot(l.perm.id, d.id as i32)) {
        return Err(format!(
            "{what}: the id's slot is taken by another object, {} (ids that differ by a multiple of {SLOTS} share a slot)",
            describe(kind, l)
        ));
    }
    if d.key != 0 {
        if let Some(l) = live.iter().find(|l| l.perm.key as u32 == d.key) {
            return Err(format!(
                "{what}: the key is held by another object, {}",
                describe(kind, l)
            ));
        }
    }
    Ok(Plan::Create)
}

/// Objects being restored; removes the ones it created unless `finish`ed.
#[derive(Default)]
pub struct IpcRestore {
    root: Pid,
    created: Vec<(Kind, i32)>,
    /// Segments to remove again once every task has attached (SHM_DEST).
    rmid_after: Vec<i32>,
    /// Per task: (set id, semaphore, value) to set again from inside it.
    sem_fixups: BTreeMap<Pid, Vec<(i32, u32, u16)>>,
    /// Per task: (queue id, mtype, text) of a last message it sends.
    msg_last: BTreeMap<Pid, Vec<(i32, u64, Vec<u8>)>>,
    /// Held while objects are created (see [`lock`]).
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Serializes next_id use between ckpt processes: /run/lock (or /tmp)
/// lock file, flock'ed.
fn lock(root: Pid) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = if Path::new("/run/lock").is_dir() {
        "/run/lock"
    } else {
        "/tmp"
    };
    let path = format!("{dir}/ckpt-sysvipc.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, format!("pid {root}: SysV IPC lock"), e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(root, format!("flock {path}"), e))
}

/// The objects of one kind in the engine's IPC namespace.
fn live_objects(root: Pid, kind: Kind) -> Result<Vec<Live>> {
    Ok(match kind {
        Kind::Shm => sysvipc::read_shm(root)?
            .iter()
            .map(|s| Live {
                perm: s.perm,
                size: s.size,
                cpid: s.cpid,
            })
            .collect(),
        Kind::Sem => sysvipc::read_sem(root)?
            .iter()
            .map(|s| Live {
                perm: s.perm,
                size: s.nsems as u64,
                cpid: 0,
            })
            .collect(),
        Kind::Msg => sysvipc::read_msg(root)?
            .iter()
            .map(|s| Live {
                perm: s.perm,
                size: 0,
                cpid: 0,
            })
            .collect(),
    })
}

fn set_next_id(root: Pid, kind: Kind, id: i32) -> Result<()> {
    let path = format!("/proc/sys/kernel/{}_next_id", kind.name());
    std::fs::write(&path, id.to_string()).map_err(|e| {
        Error::io(
            &path,
            format!("pid {root}: setting the next {} id to {id}", kind.name()),
            e,
        )
    })
}

/// SysV IPC objects: made (or found intact) before any task exists, put
/// back in the state the tasks left them in from inside the tasks, and
/// removed again if the restore fails.
pub const KIND: super::stage::Kind = super::stage::Kind {
    name: "SysV IPC",
    validate: super::stage::no_checks,
    new: |_, _| Ok(Box::new(Ipc(None))),
};

struct Ipc(Option<IpcRestore>);

impl super::stage::Restorer for Ipc {
    fn create(&mut self, imgs: &Images, _: &mut super::stage::EngineFds) -> Result<()> {
        self.0 = Some(prepare(imgs)?);
        Ok(())
    }

    fn in_task(
        &self,
        stage: super::stage::TaskStage,
        cx: &mut super::stage::TaskCx<'_>,
    ) -> Result<()> {
        match &self.0 {
            Some(ipc) if stage == super::stage::TaskStage::Objects => {
                let t = cx.t;
                cx.in_leader(|r, mem, scratch| ipc.in_task(r, t, mem, scratch))
            }
            _ => Ok(()),
        }
    }

    /// Segments removed at dump time are removed again.
    fn finish(&mut self, _: &Images) -> Result<()> {
        match &mut self.0 {
            Some(ipc) => ipc.finish(),
            None => Ok(()),
        }
    }
}

/// Check every dumped object against the live namespace, then create the
/// ones that are gone. Nothing is created if any check fails.
pub fn prepare(imgs: &Images) -> Result<IpcRestore> {
    let ipc = &imgs.ipc;
    let root = imgs.tasks[0].pid;
    let mut out = IpcRestore::default();
    out.root = root;
    if ipc.is_empty() {
        return Ok(out);
    }
    out._lock = Some(lock(root)?);
    let shm_live = live_objects(root, Kind::Shm)?;
    let sem_live = live_objects(root, Kind::Sem)?;
    let msg_live = live_objects(root, Kind::Msg)?;
    let refuse = |why: String| {
        Error::task(
            root,
            "restore of SysV IPC objects",
            format!("{why}; nothing was restored"),
        )
    };
    let mut shm_plans = Vec::new();
    for s in &ipc.shm {
        shm_plans.push(plan(Kind::Shm, &s.desc, s.size, &shm_live).map_err(refuse)?);
    }
    let mut sem_plans = Vec::new();
    for s in &ipc.sem {
        sem_plans.push(plan(Kind::Sem, &s.desc, s.values.len() as u64, &sem_live).map_err(refuse)?);
    }
    let mut msg_plans = Vec::new();
    for q in &ipc.msg {
        msg_plans.push(plan(Kind::Msg, &q.desc, 0, &msg_live).map_err(refuse)?);
    }
    let live_task = |p: Option<i32>| p.filter(|&p| p > 0 && imgs.tasks.iter().any(|t| t.pid == p));
    for (s, p) in ipc.shm.iter().zip(&shm_plans) {
        if *p == Plan::Create {
            out.create_shm(s)?;
        } else {
            debug!("SysV segment {} is still there: reused", s.desc.id);
        }
    }
    for (s, p) in ipc.sem.iter().zip(&sem_plans) {
        if *p == Plan::Create {
            let id = out.create(Kind::Sem, &s.desc, |key, flags| {
                sys::semget(key, s.values.len() as i32, flags)
            })?;
            sys::semctl_setall(id, &s.values).map_err(|e| {
                Error::sys(root, format!("SysV semaphore set {id}: semctl(SETALL)"), e)
            })?;
            for (n, (&pid, &val)) in s.sempids.iter().zip(&s.values).enumerate() {
                if let Some(pid) = live_task(Some(pid)) {
                    out.sem_fixups
                        .entry(pid)
                        .or_default()
                        .push((id, n as u32, val));
                }
            }
        } else {
            debug!("SysV semaphore set {} is still there: reused", s.desc.id);
        }
    }
    for (q, p) in ipc.msg.iter().zip(&msg_plans) {
        if *p == Plan::Create {
            let id = out.create(Kind::Msg, &q.desc, sys::msgget)?;
            let ds = sys::msgctl_stat(id)
                .map_err(|e| Error::sys(root, format!("SysV message queue {id}: IPC_STAT"), e))?;
            if ds.qbytes != q.qbytes as u64 {
                sys::msgctl_set(id, q.desc.uid, q.desc.gid, q.desc.mode & 0o777, q.qbytes as u64)
                    .map_err(|e| {
                        Error::sys(
                            root,
                            format!(
                                "SysV message queue {id}: setting its byte limit to {} (the kernel default is {}; raising it above kernel.msgmnb needs CAP_SYS_RESOURCE)",
                                q.qbytes, ds.qbytes
                            ),
                            e,
                        )
                    })?;
            }
            let mut msgs = &q.msgs[..];
            if let (Some(pid), Some(last)) = (live_task(q.lspid), q.msgs.last()) {
                if last.1.len() + 8 <= PAGE as usize {
                    out.msg_last
                        .entry(pid)
                        .or_default()
                        .push((id, last.0, last.1.clone()));
                    msgs = &q.msgs[..q.msgs.len() - 1];
                }
            }
            for (i, (mtype, text)) in msgs.iter().enumerate() {
                sys::msgsnd(id, *mtype, text).map_err(|e| {
                    Error::sys(
                        root,
                        format!("SysV message queue {id}: msgsnd of message {i}"),
                        e,
                    )
                })?;
            }
        } else {
            debug!("SysV message queue {} is still there: reused", q.desc.id);
        }
    }
    out._lock = None;
    Ok(out)
}

impl IpcRestore {
    /// Create one object with the dumped id, key, creator, owner and mode.
    /// `get(key, flags)` makes the get call (in a helper with the creator's
    /// credentials).
    fn create(
        &mut self,
        kind: Kind,
        d: &pb::IpcDescEntry,
        get: impl Fn(i32, i32) -> nix::Result<i32>,
    ) -> Result<i32> {
        let root = self.root;
        let want = d.id as i32;
        let what = format!("{} {want} (key {:#x})", kind.noun(), d.key);
        let flags = sys::IPC_CREAT | sys::IPC_EXCL | (d.mode & 0o777) as i32;
        let mut attempt = 0;
        let got = loop {
            set_next_id(root, kind, want)?;
            let got = sys::as_creator(d.cuid, d.cgid, || get(d.key as i32, flags));
            // The kernel resets next_id when it allocates; not on failure.
            let _ = set_next_id(root, kind, -1);
            let got = got.map_err(|e| Error::sys(root, format!("{what}: creating it again"), e))?;
            if got == want {
                break got;
            }
            // A program that does not take our lock created an object
            // between our write of next_id and our get: it took either
            // next_id (then the id is taken now) or another id (then try
            // again).
            let _ = remove(kind, got);
            let live = live_objects(root, kind)?;
            if let Err(why) = plan(kind, d, 0, &live).map(|_| ()).and_then(|()| {
                match live.iter().find(|l| same_slot(l.perm.id, want)) {
                    Some(l) => Err(format!(
                        "{what}: taken while it was being created, by {}",
                        describe(kind, l)
                    )),
                    None => Ok(()),
                }
            }) {
                return Err(Error::task(
                    root,
                    "restore of SysV IPC objects",
                    format!("{why}; nothing was restored"),
                ));
            }
            attempt += 1;
            if attempt == 3 {
                return Err(Error::task(
                    root,
                    what,
                    format!("the kernel gave id {got} three times over (other programs keep creating objects); nothing was restored"),
                ));
            }
        };
        self.created.push((kind, got));
        let set = match kind {
            Kind::Shm => sys::shmctl_set(got, d.uid, d.gid, d.mode & 0o777),
            Kind::Sem => sys::semctl_set(got, d.uid, d.gid, d.mode & 0o777),
            Kind::Msg => Ok(()), // with its byte limit, by the caller
        };
        set.map_err(|e| Error::sys(root, format!("{what}: IPC_SET of owner and mode"), e))?;
        if kind == Kind::Msg {
            let ds = sys::msgctl_stat(got)
                .map_err(|e| Error::sys(root, format!("{what}: IPC_STAT"), e))?;
            sys::msgctl_set(got, d.uid, d.gid, d.mode & 0o777, ds.qbytes)
                .map_err(|e| Error::sys(root, format!("{what}: IPC_SET of owner and mode"), e))?;
        }
        info!("{what}: created again");
        Ok(got)
    }

    fn create_shm(&mut self, s: &ShmImage) -> Result<()> {
        let root = self.root;
        let d = &s.desc;
        let id = self.create(Kind::Shm, d, |key, flags| sys::shmget(key, s.size, flags))?;
        let what = format!("SysV segment {id}");
        let mut at = sys::ShmAttach::new(id, s.size, false)
            .map_err(|e| Error::sys(root, format!("{what}: shmat to fill it"), e))?;
        let f = std::fs::File::open(&s.path).map_err(|e| Error::io(&s.path, "opening", e))?;
        // Copy page by page, skipping zero pages (the new segment reads as
        // zeros and stays sparse).
        let mem = at.as_mut_slice();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0usize;
        while off < mem.len() {
            let n = buf.len().min(mem.len() - off);
            f.read_exact_at(&mut buf[..n], s.offset + off as u64)
                .map_err(|e| Error::io(&s.path, format!("{what}: reading its contents"), e))?;
            for (i, page) in buf[..n].chunks(PAGE as usize).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    let a = off + i * PAGE as usize;
                    mem[a..a + page.len()].copy_from_slice(page);
                }
            }
            off += n;
        }
        drop(at);
        if d.mode & SHM_LOCKED != 0 {
            sys::shmctl_cmd(id, sys::SHM_LOCK)
                .map_err(|e| Error::sys(root, format!("{what}: SHM_LOCK"), e))?;
        }
        if d.mode & SHM_DEST != 0 {
            self.rmid_after.push(id);
        }
        Ok(())
    }

    /// Inside task `t`, during its take-over (still root, memory mapped):
    /// semaphore values set again from it, the last message of a queue it
    /// sent last.
    pub fn in_task(
        &self,
        r: &mut Remote<'_>,
        t: &TaskImages,
        mem: &TaskMem,
        scratch: u64,
    ) -> Result<()> {
        for &(id, n, val) in self.sem_fixups.get(&t.pid).into_iter().flatten() {
            r.call(
                libc::SYS_semctl,
                &[id as u64, n as u64, 16 /* SETVAL */, val as u64],
                &format!("semctl(SETVAL) of semaphore {n} of SysV set {id}"),
            )?;
        }
        for (id, mtype, text) in self.msg_last.get(&t.pid).into_iter().flatten() {
            let mut b = mtype.to_le_bytes().to_vec();
            b.extend_from_slice(text);
            mem.write(scratch, &b)?;
            r.call(
                libc::SYS_msgsnd,
                &[
                    *id as u64,
                    scratch,
                    text.len() as u64,
                    sys::IPC_NOWAIT as u64,
                ],
                &format!("msgsnd of the last message of SysV queue {id}"),
            )?;
        }
        Ok(())
    }

    /// Every task has attached its segments: remove again those that were
    /// removed at dump time. The objects stay.
    pub fn finish(&mut self) -> Result<()> {
        for &id in &self.rmid_after {
            sys::shmctl_cmd(id, sys::IPC_RMID).map_err(|e| {
                Error::sys(self.root, format!("SysV segment {id}: IPC_RMID again"), e)
            })?;
        }
        self.created.clear();
        Ok(())
    }
}

fn remove(kind: Kind, id: i32) -> nix::Result<()> {
    match kind {
        Kind::Shm => sys::shmctl_cmd(id, sys::IPC_RMID),
        Kind::Sem => sys::semctl_rmid(id),
        Kind::Msg => sys::msgctl_rmid(id),
    }
}

impl Drop for IpcRestore {
    fn drop(&mut self) {
        for &(kind, id) in self.created.iter().rev() {
            if let Err(e) = remove(kind, id) {
                warn!(
                    "{} {id}: removing it after the failed restore: {e}",
                    kind.noun()
                );
            }
        }
    }
}

/// Attach every SysV mapping of `t` at its address, in the task (remote
/// shmat), before the rest of its memory is mapped: one attach per (segment,
/// address) covers the whole segment, so the parts the task had unmapped
/// are unmapped again and each mapping gets its protection. (The scratch
/// page and the vDSO's temporary place are chosen among the dumped
/// mappings only; they could in principle fall into such an unmapped part
/// and make shmat fail with EINVAL, naming the segment.)
pub fn attach_shm(r: &mut Remote<'_>, imgs: &Images, t: &TaskImages) -> Result<()> {
    let pid = t.pid;
    let mut groups: BTreeMap<(u64, u64), Vec<&pb::VmaEntry>> = BTreeMap::new();
    for v in t.mm.vmas.iter().filter(|v| is_sysv(v)) {
        groups
            .entry((v.shmid, v.start - v.pgoff))
            .or_default()
            .push(v);
    }
    for ((id, base), vmas) in groups {
        let seg = imgs
            .ipc
            .shm
            .iter()
            .find(|s| s.desc.id as u64 == id)
            .expect("validated");
        let len = seg.size.div_ceil(PAGE) * PAGE;
        let write = vmas.iter().any(|v| v.prot & libc::PROT_WRITE as u32 != 0);
        let exec = vmas.iter().any(|v| v.prot & libc::PROT_EXEC as u32 != 0);
        let mut flags = 0;
        let mut prot = libc::PROT_READ as u32;
        if write {
            prot |= libc::PROT_WRITE as u32;
        } else {
            flags |= sys::SHM_RDONLY;
        }
        if exec {
            prot |= libc::PROT_EXEC as u32;
            flags |= sys::SHM_EXEC;
        }
        let what = format!("SysV segment {id} at {base:#x}");
        let got = r.call(
            libc::SYS_shmat,
            &[id, base, flags as u64],
            &format!("shmat of {what}"),
        )?;
        if got != base {
            return Err(Error::task(
                pid,
                what,
                format!("shmat placed it at {got:#x}"),
            ));
        }
        // Unmap what the task had not mapped; set each mapping's protection.
        let mut at = base;
        for v in &vmas {
            if v.start > at {
                r.call(
                    libc::SYS_munmap,
                    &[at, v.start - at],
                    &format!("munmap of a gap in {what}"),
                )?;
            }
            if v.prot != prot {
                r.call(
                    libc::SYS_mprotect,
                    &[v.start, v.end - v.start, v.prot as u64],
                    &format!("mprotect {:#x}-{:#x} of {what}", v.start, v.end),
                )?;
            }
            at = v.end;
        }
        if at < base + len {
            r.call(
                libc::SYS_munmap,
                &[at, base + len - at],
                &format!("munmap of the tail of {what}"),
            )?;
        }
    }
    Ok(())
}

/// A SysV shm mapping (restored by [`attach_shm`], not mmap).
pub fn is_sysv(v: &pb::VmaEntry) -> bool {
    v.status & VMA_AREA_SYSVIPC != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::images::set::ImageSet;
    use crate::images::Magic;

    /// Reads the images as the restore does, through the one loader, which
    /// refuses what it cannot read.
    fn load(dir: &Path, tasks: &[TaskImages]) -> Result<IpcImages> {
        let set = ImageSet::read(dir)?;
        if let Some(p) = set.problems.iter().find(|p| p.contains("ipcns")) {
            return Err(bad(dir, p));
        }
        from_set(dir, &set.sysvipc, tasks)
    }

    fn desc(id: u32, key: u32) -> pb::IpcDescEntry {
        pb::IpcDescEntry {
            key,
            uid: 18943,
            gid: 58467,
            cuid: 18943,
            cgid: 58467,
            mode: 0o600,
            id,
            ckpt_ctime: Some(1000),
        }
    }

    fn live(id: i32, key: i32, ctime: i64, size: u64) -> Live {
        Live {
            perm: Perm {
                key,
                id,
                mode: 0o600,
                uid: 18943,
                gid: 58467,
                cuid: 18943,
                cgid: 58467,
                ctime,
            },
            size,
            cpid: 77,
        }
    }

    #[test]
    fn free_id_is_created() {
        assert_eq!(plan(Kind::Shm, &desc(5, 0x42), 4096, &[]), Ok(Plan::Create));
        let other = live(6, 0x43, 1, 4096);
        assert_eq!(
            plan(Kind::Shm, &desc(5, 0x42), 4096, &[other]),
            Ok(Plan::Create)
        );
    }

    #[test]
    fn same_object_is_reused() {
        let l = live(5, 0x42, 1000, 4096);
        assert_eq!(plan(Kind::Shm, &desc(5, 0x42), 4096, &[l]), Ok(Plan::Reuse));
        // Queues have no size to compare.
        assert_eq!(plan(Kind::Msg, &desc(5, 0x42), 0, &[l]), Ok(Plan::Reuse));
    }

    #[test]
    fn taken_id_is_refused_naming_the_holder() {
        for (l, why) in [
            (live(5, 0x99, 1000, 4096), "key 0x99, not 0x42"),
            (live(5, 0x42, 2000, 4096), "ctime 2000, not 1000"),
            (live(5, 0x42, 1000, 8192), "size 8192, not 4096"),
        ] {
            let e = plan(Kind::Shm, &desc(5, 0x42), 4096, &[l]).unwrap_err();
            assert!(
                e.contains("SysV segment 5 (key 0x42): the id is taken"),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
            assert!(e.contains("created by pid 77"), "{e}");
        }
    }

    fn task(ns: u32, vmas: Vec<pb::VmaEntry>) -> TaskImages {
        TaskImages {
            pid: 100,
            pstree: Default::default(),
            core: Default::default(),
            mm: pb::MmEntry {
                vmas,
                ..Default::default()
            },
            pages: Default::default(),
            fdinfo: vec![],
            fs: Default::default(),
            ids: pb::TaskKobjIdsEntry {
                ipc_ns_id: Some(ns),
                ..Default::default()
            },
            fd_table_owner: None,
            threads: vec![],
            parent_runs: vec![],
        }
    }

    fn sysv_vma(shmid: u64, start: u64, len: u64) -> pb::VmaEntry {
        pb::VmaEntry {
            start,
            end: start + len,
            shmid,
            status: VMA_AREA_SYSVIPC | 1,
            flags: libc::MAP_SHARED as u32,
            prot: 3,
            fd: -1,
            ..Default::default()
        }
    }

    /// ipcns-shm-2.img with segments (id, key, size), ipcns-sem-2.img with
    /// sets (id, key, values), ipcns-msg-2.img with queues (id, key, types).
    fn images(
        dir: &Path,
        shm: &[(u32, u32, u64)],
        sem: &[(u32, u32, &[u16])],
        msg: &[(u32, u32, &[u64])],
    ) {
        use crate::images::ImageWriter;
        let mut w = ImageWriter::create(dir.join("ipcns-shm-2.img"), Magic::IpcnsShm).unwrap();
        for &(id, key, size) in shm {
            w.write_entry(&pb::IpcShmEntry {
                desc: desc(id, key),
                size,
                in_pagemaps: None,
            })
            .unwrap();
            w.write_raw(&vec![7u8; size.div_ceil(4) as usize * 4])
                .unwrap();
        }
        w.finish().unwrap();
        let mut w = ImageWriter::create(dir.join("ipcns-sem-2.img"), Magic::IpcnsSem).unwrap();
        for &(id, key, vals) in sem {
            w.write_entry(&pb::IpcSemEntry {
                desc: desc(id, key),
                nsems: vals.len() as u32,
                ckpt_sempid: vec![],
            })
            .unwrap();
            let mut b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            b.resize(b.len().div_ceil(8) * 8, 0);
            w.write_raw(&b).unwrap();
        }
        w.finish().unwrap();
        let mut w = ImageWriter::create(dir.join("ipcns-msg-2.img"), Magic::IpcnsMsg).unwrap();
        for &(id, key, types) in msg {
            w.write_entry(&pb::IpcMsgEntry {
                desc: desc(id, key),
                qbytes: 16384,
                qnum: types.len() as u32,
                ckpt_lspid: None,
            })
            .unwrap();
            for &t in types {
                w.write_entry(&pb::IpcMsg { mtype: t, msize: 3 }).unwrap();
                w.write_raw(&[1, 2, 3, 0, 0, 0, 0, 0]).unwrap();
            }
        }
        w.finish().unwrap();
    }

    #[test]
    fn load_reads_and_checks_the_images() {
        let d = tempfile::tempdir().unwrap();
        images(
            d.path(),
            &[(5, 0x42, 6000), (6, 0, 4096)],
            &[(1, 0x43, &[1, 2, 3])],
            &[(2, 0x44, &[3, 1])],
        );
        let t = task(
            2,
            vec![sysv_vma(5, 0x10000, 8192), sysv_vma(6, 0x20000, 4096)],
        );
        let ipc = load(d.path(), &[t]).unwrap();
        assert_eq!(ipc.shm.len(), 2);
        assert_eq!(ipc.sem[0].values, vec![1, 2, 3]);
        assert_eq!(
            ipc.msg[0].msgs,
            vec![(3, vec![1, 2, 3]), (1, vec![1, 2, 3])]
        );
        // A mapping beyond its segment, or of a segment the image lacks.
        for (v, why) in [
            (sysv_vma(5, 0x10000, 3 * 4096), "is smaller"),
            (sysv_vma(9, 0x10000, 4096), "ipcns-shm has not got"),
        ] {
            let e = load(d.path(), &[task(2, vec![v])]).unwrap_err().to_string();
            assert!(e.contains("mm-100.img") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn load_refuses_bad_objects() {
        for (shm, sem, msg, why) in [
            (
                &[(5u32, 0x42u32, 4096u64), (5, 0x43, 4096)][..],
                &[][..],
                &[][..],
                "appears twice",
            ),
            (
                &[][..],
                &[(1u32, 0x43u32, &[1u16, 40000][..])][..],
                &[][..],
                "SEMVMX",
            ),
            (
                &[][..],
                &[][..],
                &[(2u32, 0x44u32, &[0u64][..])][..],
                "not a positive long",
            ),
        ] {
            let d = tempfile::tempdir().unwrap();
            images(d.path(), shm, sem, msg);
            let e = load(d.path(), &[task(2, vec![])]).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("ipcns-"), "{e}");
        }
    }

    #[test]
    fn taken_slot_is_refused() {
        let l = live(5 + 32768, 0x77, 1, 4096);
        let e = plan(Kind::Shm, &desc(5, 0x42), 4096, &[l]).unwrap_err();
        assert!(
            e.contains("the id's slot is taken by another object, SysV segment 32773"),
            "{e}"
        );
        assert!(same_slot(32769, 1) && !same_slot(2, 1));
    }

    #[test]
    fn taken_key_is_refused() {
        let l = live(9, 0x42, 1000, 3);
        let e = plan(Kind::Sem, &desc(5, 0x42), 3, &[l]).unwrap_err();
        assert!(
            e.contains("the key is held by another object, SysV semaphore set 9"),
            "{e}"
        );
        // IPC_PRIVATE is no key: many objects have it.
        let l = live(9, 0, 1000, 3);
        assert_eq!(plan(Kind::Sem, &desc(5, 0), 3, &[l]), Ok(Plan::Create));
    }
}
