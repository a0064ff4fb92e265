//! Task attributes: name, personality, resource limits, audit login uid
//! (set by the new task itself), RLIMIT_NOFILE (last of the fd work), and
//! the scheduling policy, nice value, CPU affinity and oom_score_adj, which
//! the engine sets from outside at the end.

use super::child::ChildPlan;
use super::load::{Images, TaskImages};
use super::stage::{EngineFds, Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;

pub const KIND: Kind = Kind {
    name: "task attributes",
    validate: super::stage::no_checks,
    new: |_: &Images, _: &RestoreOptions| Ok(Box::new(TaskAttrs)),
};

struct TaskAttrs;

impl Restorer for TaskAttrs {
    fn plan(
        &self,
        _imgs: &Images,
        t: &TaskImages,
        _fds: &EngineFds,
        plan: &mut ChildPlan,
    ) -> Result<()> {
        let tc = t.tc();
        plan.comm = super::cstr(t.pid, "comm", &tc.comm)?;
        plan.personality = Some(tc.personality as u64);
        plan.loginuid = tc.loginuid;
        plan.rlimits = tc
            .rlimits
            .as_ref()
            .map(|r| {
                r.rlimits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as u32, l.cur, l.max))
                    .collect()
            })
            .unwrap_or_default();
        Ok(())
    }

    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        let t = cx.t;
        match stage {
            TaskStage::Limits => cx.in_leader(|r, mem, scratch| set_nofile(r, mem, scratch, t)),
            TaskStage::Final => {
                sched_and_oom(t.pid, t.thread(), t.tc().oom_score_adj)?;
                for (tid, core) in &t.threads {
                    sched_and_oom(*tid, core.thread_core.as_ref().expect("validated"), None)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// RLIMIT_NOFILE, last of the fd work (restore/child.rs leaves it open).
fn set_nofile(r: &mut Remote<'_>, mem: &TaskMem, scratch: u64, t: &TaskImages) -> Result<()> {
    let Some(l) = t
        .tc()
        .rlimits
        .as_ref()
        .and_then(|r| r.rlimits.get(libc::RLIMIT_NOFILE as usize))
    else {
        return Ok(());
    };
    let mut b = l.cur.to_le_bytes().to_vec();
    b.extend_from_slice(&l.max.to_le_bytes());
    mem.write(scratch, &b)?;
    r.call(
        libc::SYS_prlimit64,
        &[0, libc::RLIMIT_NOFILE as u64, scratch, 0],
        &format!(
            "prlimit64(RLIMIT_NOFILE, {}/{}) (raising the hard limit needs CAP_SYS_RESOURCE)",
            l.cur, l.max
        ),
    )?;
    Ok(())
}

/// Attributes the engine sets from outside.
fn sched_and_oom(pid: Pid, th: &pb::ThreadCoreEntry, oom_score_adj: Option<i32>) -> Result<()> {
    if let (Some(policy), Some(prio)) = (th.sched_policy, th.sched_prio) {
        let p = libc::sched_param {
            sched_priority: prio as i32,
        };
        // SAFETY: plain syscall with a valid sched_param.
        let r = unsafe { libc::sched_setscheduler(pid, policy as i32, &p) };
        if r < 0 {
            return Err(Error::sys(
                pid,
                format!("sched_setscheduler(policy {policy}, prio {prio})"),
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(mask) = th.ckpt_cpu_affinity.as_ref().filter(|m| !m.is_empty()) {
        // SAFETY: the kernel reads mask.len() bytes.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setaffinity, pid, mask.len(), mask.as_ptr()) };
        if r < 0 {
            return Err(Error::sys(
                pid,
                "sched_setaffinity (CPU affinity)",
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(nice) = th.sched_nice {
        // SAFETY: plain syscall.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as u32, nice) };
        if r < 0 {
            return Err(Error::sys(
                pid,
                format!("setpriority(nice {nice})"),
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(adj) = oom_score_adj {
        let p = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&p, adj.to_string())
            .map_err(|e| Error::io(&p, format!("pid {pid}: oom_score_adj {adj}"), e))?;
    }
    Ok(())
}
