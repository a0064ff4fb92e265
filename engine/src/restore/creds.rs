//! Credentials of a restored task, set from inside it (remote syscalls)
//! as the very last privileged step, because everything before needs the
//! engine's root powers (mapping the exe with PR_SET_MM_MAP, for one).
//!
//! Order matters: bounding set first (needs CAP_SETPCAP), then keep-caps
//! so that switching uids does not clear the permitted set, groups, gids,
//! uids, then securebits (needs CAP_SETPCAP effective), then the final
//! capability sets and the ambient ones.

use super::load::{Images, TaskImages};
use super::stage::{Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::error::Result;
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;

const SECBIT_KEEP_CAPS: u64 = 1 << 4;
const CAP_V3: u32 = 0x2008_0522;
const CAP_LAST: u32 = 63;
const CAP_KILL: u64 = 1 << 5;

fn cap64(v: &[u32]) -> u64 {
    v.first().copied().unwrap_or(0) as u64 | (v.get(1).copied().unwrap_or(0) as u64) << 32
}

fn capset(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    eff: u64,
    prm: u64,
    inh: u64,
) -> Result<()> {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&CAP_V3.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for half in 0..2 {
        let s = |v: u64| ((v >> (32 * half)) as u32).to_le_bytes();
        b.extend_from_slice(&s(eff));
        b.extend_from_slice(&s(prm));
        b.extend_from_slice(&s(inh));
    }
    mem.write(scratch, &b)?;
    r.call(libc::SYS_capset, &[scratch, scratch + 8], "capset")?;
    Ok(())
}

/// Is there anything to change compared with the engine's own (root,
/// every capability) credentials?
fn is_full_root(c: &pb::CredsEntry) -> bool {
    let all = [
        c.uid, c.gid, c.euid, c.egid, c.suid, c.sgid, c.fsuid, c.fsgid,
    ];
    let caps_now = crate::proc::status::read(std::process::id() as i32).ok();
    all.iter().all(|&x| x == 0)
        && caps_now.is_some_and(|s| {
            cap64(&c.cap_eff) == s.cap_eff
                && cap64(&c.cap_prm) == s.cap_prm
                && cap64(&c.cap_inh) == s.cap_inh
                && cap64(&c.cap_bnd) == s.cap_bnd
                && cap64(&c.cap_amb) == s.cap_amb
                && c.groups.is_empty() == s.groups.is_empty()
        })
        && c.secbits == 0
}

/// Sets the credentials `c`, with the capabilities `keep` in the effective
/// and permitted sets on top of the dumped ones (dropped at the release).
/// `groups`: whether the supplementary groups can be set (not in a user
/// namespace whose setgroups is "deny", where they stay as inherited).
/// `entered`: the task has just entered its user namespace, where its ids
/// (the engine's) may be unmapped, so they are set even when they look
/// like the engine's.
pub fn restore_creds(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    c: &pb::CredsEntry,
    keep: u64,
    groups: bool,
    entered: bool,
) -> Result<()> {
    if is_full_root(c) && !entered {
        return Ok(());
    }
    let bnd = cap64(&c.cap_bnd);
    for cap in 0..=CAP_LAST {
        if bnd & (1 << cap) == 0 {
            // EINVAL past the kernel's last capability is fine.
            let _ = r.raw(libc::SYS_prctl, &[libc::PR_CAPBSET_DROP as u64, cap as u64]);
        }
    }
    r.call(
        libc::SYS_prctl,
        &[libc::PR_SET_SECUREBITS as u64, SECBIT_KEEP_CAPS],
        "prctl(PR_SET_SECUREBITS, KEEP_CAPS)",
    )?;
    if groups {
        let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        mem.write(scratch, &groups)?;
        r.call(
            libc::SYS_setgroups,
            &[c.groups.len() as u64, scratch],
            "setgroups",
        )?;
    }
    r.call(
        libc::SYS_setresgid,
        &[c.gid as u64, c.egid as u64, c.sgid as u64],
        "setresgid",
    )?;
    r.call(
        libc::SYS_setresuid,
        &[c.uid as u64, c.euid as u64, c.suid as u64],
        "setresuid",
    )?;
    r.raw(libc::SYS_setfsgid, &[c.fsgid as u64])?;
    r.raw(libc::SYS_setfsuid, &[c.fsuid as u64])?;
    let (eff, prm, inh) = (cap64(&c.cap_eff), cap64(&c.cap_prm), cap64(&c.cap_inh));
    let full = crate::proc::status::read(std::process::id() as i32)
        .map(|s| s.cap_prm)
        .unwrap_or(!0);
    let wide = full & (bnd | keep) | prm;
    capset(r, mem, scratch, wide, wide, inh)?;
    r.call(
        libc::SYS_prctl,
        &[libc::PR_SET_SECUREBITS as u64, c.secbits as u64],
        "prctl(PR_SET_SECUREBITS)",
    )?;
    capset(r, mem, scratch, eff | keep, prm | keep, inh)?;
    let amb = cap64(&c.cap_amb);
    for cap in 0..=CAP_LAST {
        if amb & (1 << cap) != 0 {
            r.call(
                libc::SYS_prctl,
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap as u64,
                ],
                "prctl(PR_CAP_AMBIENT_RAISE)",
            )?;
        }
    }
    if c.no_new_privs == Some(1) {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
            "prctl(PR_SET_NO_NEW_PRIVS)",
        )?;
    }
    Ok(())
}

/// Credentials, thread by thread (they are per thread in the kernel), and
/// what a credential change resets after them: the parent-death signal
/// (per thread), the child subreaper flag and the dumpable flag.
///
/// Until the release a task must die with its parent
/// (`child::tie_to_parent`), so the leader's parent-death signal is
/// SIGKILL again after the change cleared it, and the leader keeps
/// CAP_KILL: the kernel sends a parent-death signal with the dying
/// parent's credentials, and the children it must kill may still have the
/// engine's (root), or other uids than its own. Both go at the release,
/// when every task is ready: CAP_KILL is dropped and the dumped signal
/// set.
pub const KIND: Kind = Kind {
    name: "credentials",
    validate: super::stage::no_checks,
    new: |imgs: &Images, _: &RestoreOptions| Ok(Box::new(Creds(imgs.ns.users.clone()))),
};

/// The user namespaces, for whether each task's denies setgroups.
struct Creds(super::userns::UserImages);

impl Restorer for Creds {
    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        if stage != TaskStage::Creds {
            return Ok(());
        }
        let t = cx.t;
        // restore_creds's `groups`: per the task's own user namespace.
        let groups = !self.0.setgroups_denied(t.ids.user_ns_id);
        let entered = super::userns::enter_own(cx)?;
        cx.in_leader(|r, mem, scratch| match &t.thread().creds {
            Some(c) => restore_creds(r, mem, scratch, c, CAP_KILL, groups, entered),
            None => Ok(()),
        })?;
        cx.in_threads(|r, mem, scratch, _, core| {
            let tcore = core.thread_core.as_ref().expect("validated");
            if let Some(c) = &tcore.creds {
                restore_creds(r, mem, scratch, c, 0, groups, entered)?;
            }
            set_pdeath(r, tcore)
        })?;
        cx.in_leader(|r, _, _| {
            r.call(
                libc::SYS_prctl,
                &[libc::PR_SET_PDEATHSIG as u64, libc::SIGKILL as u64],
                "prctl(PR_SET_PDEATHSIG, SIGKILL) until the release",
            )?;
            after_creds(r, t)
        })
    }

    fn release_task(&self, cx: &mut TaskCx<'_>) -> Result<()> {
        let t = cx.t;
        let c = t.thread().creds.as_ref().filter(|c| !is_full_root(c));
        let sig = t.thread().pdeath_sig.unwrap_or(0);
        let mut r = Remote::new(&mut cx.task, cx.ip)?;
        if let Some(c) = c {
            // The scratch area is gone with the helper fds; a page of its
            // own for capset's arguments.
            let page = r.mmap_anon(
                0,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                "a page for capset",
            )?;
            let (eff, prm, inh) = (cap64(&c.cap_eff), cap64(&c.cap_prm), cap64(&c.cap_inh));
            capset(&mut r, &cx.mem, page, eff, prm, inh)?;
            r.call(libc::SYS_munmap, &[page, 4096], "munmap of the capset page")?;
        }
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, sig as u64],
            &format!("prctl(PR_SET_PDEATHSIG, {sig}), the dumped parent-death signal"),
        )?;
        r.finish()
    }
}

/// The parent-death signal is per thread and reset by a credential change.
fn set_pdeath(r: &mut Remote<'_>, th: &pb::ThreadCoreEntry) -> Result<()> {
    if let Some(sig) = th.pdeath_sig.filter(|&s| s != 0) {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, sig as u64],
            "prctl(PR_SET_PDEATHSIG)",
        )?;
    }
    Ok(())
}

/// Process-wide settings that a credential change would reset.
fn after_creds(r: &mut Remote<'_>, t: &TaskImages) -> Result<()> {
    if t.tc().child_subreaper == Some(true) {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_CHILD_SUBREAPER as u64, 1],
            "prctl(PR_SET_CHILD_SUBREAPER)",
        )?;
    }
    if let Some(d) = t.mm.dumpable {
        r.call(
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, d as u64],
            "prctl(PR_SET_DUMPABLE)",
        )?;
    }
    Ok(())
}
