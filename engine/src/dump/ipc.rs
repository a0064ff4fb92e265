//! Dumping System V IPC objects: shared memory segments, semaphore sets and
//! message queues, into CRIU's `ipcns-shm-N.img`, `ipcns-sem-N.img` and
//! `ipcns-msg-N.img` (N: the IPC namespace's id in the dump).
//!
//! # Which objects a dump includes
//!
//! SysV objects are not owned by processes: they live in an IPC namespace
//! until removed, and a tree in the host namespace shares that namespace
//! with every other program of the machine. Dumping the whole namespace
//! would grab (and on restore, recreate or fight over) other programs'
//! objects, so in the host namespace the dump takes what the tree uses, as
//! far as the kernel shows it:
//!
//! - shm segments attached by any task of the tree (`/SYSV%08x (deleted)`
//!   mappings, whose inode number is the shm id), and segments whose
//!   creator pid (`cpid`) or last attach/detach pid (`lpid`) in
//!   `/proc/sysvipc/shm` is a task of the tree;
//! - semaphore sets where the last operation on any semaphore (semctl
//!   GETPID; semop, SETVAL and SETALL all set it) was made by a task of the
//!   tree — the kernel keeps no creator pid for semaphores;
//! - message queues whose last sender or receiver (`lspid`, `lrpid`) is a
//!   task of the tree — the kernel keeps no creator pid for queues either.
//!
//! What this misses, honestly: a semaphore set or queue the tree created
//! but never operated on, and a detached segment whose creator was an
//! engine helper (a segment recreated by an earlier restore and not
//! attached since). Pids are compared by number, so an object last used by
//! a long-dead process whose pid a tree task now has is included too. The
//! restore keeps the markers it can (semaphore pids, the last sender of a
//! queue: see restore/ipc.rs) so that the next dump finds the same objects.
//!
//! A tree in an IPC namespace of its own is dumped whole: every object
//! there is the tree's, and so are the namespace's limits (the IPC
//! sysctls, `ipcns-var-N.img`). /proc/sysvipc, the sysctls and the IPC
//! calls all answer for the calling thread's namespace, so the engine's
//! thread joins the tree's for the dump and goes back after it (setns of
//! an IPC namespace changes only the calling thread). Pids the objects keep
//! (semaphore pids, a queue's last sender) are written as the tree sees
//! them when it has a pid namespace of its own.
//!
//! # Reading contents without changing anything
//!
//! The dump must leave the tree as it was. Segments are read through a
//! read-only attach in the engine (the shm file behind a mapping has no
//! read(), so /proc/PID/map_files cannot be used); this bumps the
//! segment's atime, dtime and lpid, which is the one visible trace.
//! Messages are copied with msgrcv(MSG_COPY), which leaves the queue
//! untouched; semaphore values come from GETALL.
//!
//! Semaphore undo lists (SEM_UNDO) cannot be read from user space and are
//! not dumped: after a restore, a task's exit no longer undoes its
//! adjustments, and a dump that kills the tree applies them to a set that
//! survives in the host namespace.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::images::vma::{VMA_AREA_REGULAR, VMA_AREA_SYSVIPC};
use crate::imgdir::ImageDir;
use crate::proc::maps::Vma;
use crate::proc::sysvipc::{self, Perm};
use crate::sys::ipc as sys;

/// SysV segments mapped by the tasks of the tree: shm id -> (pid, address)
/// of the first mapping seen, for messages.
#[derive(Debug, Default)]
pub struct IpcUse {
    pub shm: BTreeMap<i32, (Pid, u64)>,
    /// Named on the command line (`--ipc-id KIND:ID`): dumped whoever used
    /// them; each must exist.
    pub explicit: Vec<(&'static str, i32)>,
}

/// Parse `--ipc-id` values: "shm:ID", "sem:ID" or "msg:ID".
pub fn parse_ids(v: &[String]) -> Result<Vec<(&'static str, i32)>> {
    v.iter()
        .map(|s| {
            let (kind, id) = s.split_once(':').unwrap_or((s, ""));
            let kind = match kind {
                "shm" => "shm",
                "sem" => "sem",
                "msg" => "msg",
                _ => {
                    return Err(Error::Usage(format!(
                        "--ipc-id {s:?}: the kind must be shm, sem or msg (as in shm:32769)"
                    )))
                }
            };
            let id =
                id.parse::<i32>().ok().filter(|&i| i >= 0).ok_or_else(|| {
                    Error::Usage(format!("--ipc-id {s:?}: {id:?} is not an IPC id"))
                })?;
            Ok((kind, id))
        })
        .collect()
}

/// What was dumped, for the log.
#[derive(Debug, Default)]
pub struct IpcStats {
    pub shm: usize,
    pub sem: usize,
    pub msg: usize,
}

/// Turn the VmaEntry of a SysV mapping into CRIU's form: VMA_AREA_SYSVIPC
/// with the shm id in `shmid`, MAP_SHARED, no file id.
pub fn sysv_vma(pid: Pid, v: &Vma, e: &mut pb::VmaEntry, used: &mut IpcUse) -> Result<()> {
    if v.has_flag("ht") {
        return Err(Error::unsupported(
            pid,
            format!("mapping {:#x}-{:#x} ({})", v.start, v.end, v.name),
            "SysV segments on huge pages (SHM_HUGETLB) are not supported yet",
        ));
    }
    let id = i32::try_from(v.inode).map_err(|_| {
        Error::task(
            pid,
            format!("mapping {:#x}-{:#x} ({})", v.start, v.end, v.name),
            format!("inode {} is not a shm id", v.inode),
        )
    })?;
    e.status = VMA_AREA_REGULAR | VMA_AREA_SYSVIPC;
    e.shmid = id as u64;
    e.flags = libc::MAP_SHARED as u32;
    e.fd = -1;
    used.shm.entry(id).or_insert((pid, v.start));
    Ok(())
}

fn desc(p: &Perm) -> pb::IpcDescEntry {
    pb::IpcDescEntry {
        key: p.key as u32,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: p.mode,
        id: p.id as u32,
        ckpt_ctime: Some(p.ctime),
    }
}

/// Zero bytes that pad `n` up to a multiple of `align`.
fn pad(n: u64, align: u64) -> Vec<u8> {
    vec![0u8; (n.div_ceil(align) * align - n) as usize]
}

/// Dump the objects the tree uses (see the module doc). `root` is the
/// tree's root, `pids` every task of it (zombies too), `ns_id` the id of
/// its IPC namespace in this dump, `vpids` the tree's pids in its own pid
/// namespace (empty: the host's).
pub fn dump(
    dir: &ImageDir,
    root: Pid,
    pids: &BTreeSet<Pid>,
    used: &IpcUse,
    ns_id: u32,
    vpids: &BTreeMap<Pid, Pid>,
) -> Result<IpcStats> {
    let ours = crate::proc::ns::ns_id(std::process::id() as i32, "ipc")?;
    let theirs = crate::proc::ns::ns_id(root, "ipc")?;
    let vpid = |p: Pid| vpids.get(&p).copied().unwrap_or(p);
    if ours == theirs {
        return dump_objects(dir, root, pids, used, ns_id, false, &vpid);
    }
    let path = format!("/proc/{root}/ns/ipc");
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {root}: its IPC namespace"), e))?;
    let _back = InNs::enter(root, &ns)?;
    dir.write_image(&format!("ipcns-var-{ns_id}.img"), &[read_vars(root)?])?;
    dump_objects(dir, root, pids, used, ns_id, true, &vpid)
}

/// The engine's thread inside another IPC namespace, until dropped.
struct InNs(std::fs::File);

impl InNs {
    fn enter(pid: Pid, ns: &std::fs::File) -> Result<InNs> {
        let own = "/proc/thread-self/ns/ipc";
        let back = std::fs::File::open(own)
            .map_err(|e| Error::io(own, format!("pid {pid}: the engine's IPC namespace"), e))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWIPC)
            .map_err(|e| Error::sys(pid, "setns into its IPC namespace", e))?;
        Ok(InNs(back))
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.0, nix::sched::CloneFlags::CLONE_NEWIPC) {
            warn!("back to the engine's IPC namespace: {e}");
        }
    }
}

/// The IPC sysctls of the caller's IPC namespace (kernel.sem, msg*, shm*,
/// fs.mqueue.*).
fn read_vars(root: Pid) -> Result<pb::IpcVarEntry> {
    let read = |name: &str| -> Result<String> {
        let path = format!("/proc/sys/{name}");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::io(&path, format!("pid {root}: its IPC namespace's {name}"), e))
    };
    let num = |name: &str| -> Result<u64> {
        let v = read(name)?;
        v.parse().map_err(|_| {
            Error::task(
                root,
                format!("/proc/sys/{name}"),
                format!("{v:?} is not a number"),
            )
        })
    };
    let opt = |name: &str| num(name).ok().map(|v| v as u32);
    let sem = read("kernel/sem")?;
    let sem_ctls: Vec<u32> = sem
        .split_whitespace()
        .map(|w| w.parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .ok()
        .filter(|v: &Vec<u32>| v.len() == 4)
        .ok_or_else(|| {
            Error::task(
                root,
                "/proc/sys/kernel/sem",
                format!("{sem:?} is not four numbers"),
            )
        })?;
    Ok(pb::IpcVarEntry {
        sem_ctls,
        msg_ctlmax: num("kernel/msgmax")? as u32,
        msg_ctlmnb: num("kernel/msgmnb")? as u32,
        msg_ctlmni: num("kernel/msgmni")? as u32,
        auto_msgmni: opt("kernel/auto_msgmni").unwrap_or(0),
        shm_ctlmax: num("kernel/shmmax")?,
        shm_ctlall: num("kernel/shmall")?,
        shm_ctlmni: num("kernel/shmmni")? as u32,
        shm_rmid_forced: num("kernel/shm_rmid_forced")? as u32,
        mq_queues_max: num("fs/mqueue/queues_max")? as u32,
        mq_msg_max: num("fs/mqueue/msg_max")? as u32,
        mq_msgsize_max: num("fs/mqueue/msgsize_max")? as u32,
        mq_msg_default: opt("fs/mqueue/msg_default"),
        mq_msgsize_default: opt("fs/mqueue/msgsize_default"),
        msg_next_id: None,
        sem_next_id: None,
        shm_next_id: None,
    })
}

/// The objects of the caller's IPC namespace: those the tree uses, or
/// every one (`whole`: the namespace is the tree's).
fn dump_objects(
    dir: &ImageDir,
    root: Pid,
    pids: &BTreeSet<Pid>,
    used: &IpcUse,
    ns_id: u32,
    whole: bool,
    vpid: &dyn Fn(Pid) -> Pid,
) -> Result<IpcStats> {
    let mut stats = IpcStats::default();
    let touched = |p: Pid| whole || (p > 0 && pids.contains(&p));
    let named = |kind: &str, id: i32| used.explicit.contains(&(kind, id));
    for &(kind, id) in &used.explicit {
        let there = match kind {
            "shm" => sysvipc::read_shm(root)?.iter().any(|s| s.perm.id == id),
            "sem" => sysvipc::read_sem(root)?.iter().any(|s| s.perm.id == id),
            _ => sysvipc::read_msg(root)?.iter().any(|s| s.perm.id == id),
        };
        if !there {
            return Err(Error::Usage(format!(
                "--ipc-id {kind}:{id}: there is no such object in the tree's IPC namespace"
            )));
        }
    }

    // Shared memory.
    let table = sysvipc::read_shm(root)?;
    for (&id, &(pid, at)) in &used.shm {
        if !table.iter().any(|s| s.perm.id == id) {
            return Err(Error::task(
                pid,
                format!("SysV segment {id} mapped at {at:#x}"),
                "not in /proc/sysvipc/shm (another IPC namespace?)",
            ));
        }
    }
    let shms: Vec<_> = table
        .iter()
        .filter(|s| {
            used.shm.contains_key(&s.perm.id)
                || touched(s.cpid)
                || touched(s.lpid)
                || named("shm", s.perm.id)
        })
        .collect();
    if !shms.is_empty() {
        dir.write_stream(&format!("ipcns-shm-{ns_id}.img"), |w| {
            for s in &shms {
                let id = s.perm.id;
                let what = || format!("SysV segment {id} (key {:#x})", s.perm.key as u32);
                let at = sys::ShmAttach::new(id, s.size, true)
                    .map_err(|e| Error::sys(root, format!("{}: shmat to read it", what()), e))?;
                w.write_entry(&pb::IpcShmEntry {
                    desc: desc(&s.perm),
                    size: s.size,
                    in_pagemaps: None,
                })?;
                w.write_raw(at.as_slice())?;
                w.write_raw(&pad(s.size, 4))?;
                debug!("pid {root}: {}: {} bytes", what(), s.size);
            }
            Ok(())
        })?;
        stats.shm = shms.len();
    }

    // Semaphores.
    let mut sems = Vec::new();
    for s in sysvipc::read_sem(root)? {
        let id = s.perm.id;
        let what = || format!("SysV semaphore set {id} (key {:#x})", s.perm.key as u32);
        let mut sempids = Vec::with_capacity(s.nsems as usize);
        for n in 0..s.nsems {
            match sys::semctl_getpid(id, n as i32) {
                Ok(p) => sempids.push(p),
                // Removed since /proc was read: not ours to dump.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EIDRM) => break,
                Err(e) => return Err(Error::sys(root, format!("{}: semctl(GETPID)", what()), e)),
            }
        }
        if sempids.len() != s.nsems as usize
            || !(sempids.iter().any(|&p| touched(p)) || named("sem", id))
        {
            continue;
        }
        let values = sys::semctl_getall(id, s.nsems as usize)
            .map_err(|e| Error::sys(root, format!("{}: semctl(GETALL)", what()), e))?;
        sems.push((s, values, sempids));
    }
    if !sems.is_empty() {
        dir.write_stream(&format!("ipcns-sem-{ns_id}.img"), |w| {
            for (s, values, sempids) in &sems {
                w.write_entry(&pb::IpcSemEntry {
                    desc: desc(&s.perm),
                    nsems: s.nsems,
                    ckpt_sempid: sempids.iter().map(|&p| vpid(p)).collect(),
                })?;
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_raw(&bytes)?;
                w.write_raw(&pad(bytes.len() as u64, 8))?;
            }
            Ok(())
        })?;
        stats.sem = sems.len();
    }

    // Message queues.
    let mut queues = Vec::new();
    for q in sysvipc::read_msg(root)? {
        if !(touched(q.lspid) || touched(q.lrpid) || named("msg", q.perm.id)) {
            continue;
        }
        let id = q.perm.id;
        let what = || format!("SysV message queue {id} (key {:#x})", q.perm.key as u32);
        let ds = sys::msgctl_stat(id)
            .map_err(|e| Error::sys(root, format!("{}: msgctl(IPC_STAT)", what()), e))?;
        let mut msgs = Vec::with_capacity(ds.qnum as usize);
        let max = (ds.cbytes as usize).max(1);
        for i in 0..ds.qnum {
            let m = sys::msg_copy(id, i, max);
            // Another program (the tree is frozen) took messages meanwhile:
            // the queue is what is left.
            if m == Err(nix::errno::Errno::ENOMSG) {
                break;
            }
            let m = m.map_err(|e| match e {
                nix::errno::Errno::ENOSYS => Error::unsupported(
                    root,
                    what(),
                    "this kernel cannot copy messages out of a queue (msgrcv MSG_COPY needs CONFIG_CHECKPOINT_RESTORE)",
                ),
                e => Error::sys(root, format!("{}: msgrcv(MSG_COPY) of message {i}", what()), e),
            })?;
            msgs.push(m);
        }
        queues.push((q, ds, msgs));
    }
    if !queues.is_empty() {
        dir.write_stream(&format!("ipcns-msg-{ns_id}.img"), |w| {
            for (q, ds, msgs) in &queues {
                w.write_entry(&pb::IpcMsgEntry {
                    desc: desc(&q.perm),
                    qbytes: ds.qbytes as u32,
                    qnum: msgs.len() as u32,
                    ckpt_lspid: (ds.lspid > 0).then(|| vpid(ds.lspid)),
                })?;
                for (mtype, text) in msgs {
                    w.write_entry(&pb::IpcMsg {
                        mtype: *mtype,
                        msize: text.len() as u32,
                    })?;
                    w.write_raw(text)?;
                    w.write_raw(&pad(text.len() as u64, 8))?;
                }
            }
            Ok(())
        })?;
        stats.msg = queues.len();
    }
    Ok(stats)
}

/// SysV IPC objects the tree uses: its segments' mappings are claimed
/// here (their contents are stored once per segment, with the objects).
pub const KIND: super::kind::Kind = super::kind::Kind {
    name: "SysV IPC",
    new: |env| {
        Ok(Box::new(IpcUse {
            explicit: parse_ids(&env.opts.ipc_ids)?,
            ..Default::default()
        }))
    },
};

impl super::kind::Dumper for IpcUse {
    fn vma(&mut self, pid: Pid, v: &Vma, e: &mut pb::VmaEntry) -> Result<bool> {
        if !v.is_sysv_shm() {
            return Ok(false);
        }
        sysv_vma(pid, v, e, self)?;
        Ok(true)
    }

    fn finish(&mut self, cx: &super::kind::FinishCx<'_>) -> Result<()> {
        let ns_id = cx.root_ids.and_then(|i| i.ipc_ns_id).unwrap_or(1);
        let s = dump(cx.dir, cx.root, &cx.pids, self, ns_id, cx.vpids)?;
        debug!(
            "pid {}: SysV IPC: {} segments, {} semaphore sets, {} queues",
            cx.root, s.shm, s.sem, s.msg
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipc_id_option() {
        let v: Vec<String> = ["shm:0", "sem:32769", "msg:7"].map(String::from).to_vec();
        assert_eq!(
            parse_ids(&v).unwrap(),
            vec![("shm", 0), ("sem", 32769), ("msg", 7)]
        );
        for bad in ["shm", "shm:", "pipe:3", "sem:-1", "msg:x", "7"] {
            let e = parse_ids(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains("--ipc-id") && e.contains(bad), "{bad}: {e}");
        }
    }
}
