//! core-PID.img: registers, signal handlers and masks, credentials,
//! rlimits and the per-task and per-thread attributes the kernel keeps.
//!
//! Values /proc shows are read from /proc; the rest is asked from inside
//! the task through the scratch session (sigactions, sigaltstack, the
//! clear-tid address, prctl getters), and the rest from ptrace.

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::images::task::{TASK_ALIVE, TASK_STOPPED};
use crate::proc::{self, limits, stat::Stat, status::Status};
use crate::ptrace::regs::{regs_to_pb, xsave_to_pb};
use crate::ptrace::rseq::rseq_config;
use crate::ptrace::scratch::ScratchSession;
use crate::ptrace::Regs;

const PR_GET_TID_ADDRESS: u64 = 40;

/// Signal handlers of every catchable signal, via rt_sigaction in the task.
pub fn dump_sigactions(s: &mut ScratchSession<'_>) -> Result<Vec<pb::SaEntry>> {
    let sigs: Vec<u64> = (1..=64u64)
        .filter(|&sig| sig != libc::SIGKILL as u64 && sig != libc::SIGSTOP as u64)
        .collect();
    // One batch: 62 queries would otherwise be 124 ptrace stops.
    let data = s.batch_data()?;
    let calls: Vec<crate::ptrace::remote::Call> = sigs
        .iter()
        .enumerate()
        .map(|(i, &sig)| {
            (
                libc::SYS_rt_sigaction,
                [sig, 0, data + i as u64 * 32, 8, 0, 0],
            )
        })
        .collect();
    let results = s.batch(&calls)?;
    let mut b = vec![0u8; sigs.len() * 32];
    s.mem.read(data, &mut b)?;
    let mut out = Vec::with_capacity(sigs.len());
    for (i, (&sig, &r)) in sigs.iter().zip(&results).enumerate() {
        if r < 0 {
            return Err(Error::sys(
                s.mem.pid(),
                format!("rt_sigaction({sig}) query (in the task)"),
                nix::errno::Errno::from_raw(-r as i32),
            ));
        }
        let w = |k: usize| {
            let at = i * 32 + k * 8;
            u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
        };
        out.push(pb::SaEntry {
            sigaction: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
            compat_sigaction: None,
        });
    }
    Ok(out)
}

fn caps(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

pub fn creds_from_status(st: &Status, secbits: u32) -> pb::CredsEntry {
    pb::CredsEntry {
        uid: st.uid[0],
        euid: st.uid[1],
        suid: st.uid[2],
        fsuid: st.uid[3],
        gid: st.gid[0],
        egid: st.gid[1],
        sgid: st.gid[2],
        fsgid: st.gid[3],
        cap_inh: caps(st.cap_inh),
        cap_prm: caps(st.cap_prm),
        cap_eff: caps(st.cap_eff),
        cap_bnd: caps(st.cap_bnd),
        cap_amb: caps(st.cap_amb),
        secbits,
        groups: st.groups.clone(),
        no_new_privs: Some(st.no_new_privs as u32),
        ..Default::default()
    }
}

fn robust_list(tid: Pid) -> Result<(u64, u32)> {
    let mut head = 0u64;
    let mut len = 0usize;
    // SAFETY: the kernel writes one pointer and one size_t.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    if r < 0 {
        return Err(Error::sys(
            tid,
            "get_robust_list",
            nix::errno::Errno::last(),
        ));
    }
    Ok((head, len as u32))
}

/// The CPU affinity mask, as the kernel gives it.
fn affinity(tid: Pid) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    // SAFETY: the kernel writes at most buf.len() bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            buf.len(),
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::sys(
            tid,
            "sched_getaffinity",
            nix::errno::Errno::last(),
        ));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn sched(tid: Pid) -> (u32, u32) {
    // SAFETY: integer syscalls on another task; sched_param is plain data.
    unsafe {
        let policy = libc::sched_getscheduler(tid);
        let mut p: libc::sched_param = std::mem::zeroed();
        libc::sched_getparam(tid, &mut p);
        (policy.max(0) as u32, p.sched_priority as u32)
    }
}

/// The per-thread part (ThreadCoreEntry) and thread_info of one thread.
/// `blk` is the thread's blocked mask as it was before the engine blocked
/// signals for its remote calls.
pub fn dump_thread(
    tid: Pid,
    regs: &Regs,
    xstate: &[u8],
    blk: u64,
    stat: &Stat,
    status: &Status,
    s: &mut ScratchSession<'_>,
) -> Result<(pb::ThreadInfoX86, pb::ThreadCoreEntry)> {
    s.call(
        libc::SYS_prctl,
        &[PR_GET_TID_ADDRESS, s.addr],
        "prctl(PR_GET_TID_ADDRESS)",
    )?;
    let clear_tid_addr = s.read_u64(0)?;
    s.call(libc::SYS_sigaltstack, &[0, s.addr], "sigaltstack query")?;
    let mut ss = [0u8; 24];
    s.read(0, &mut ss)?;
    let ss_sp = u64::from_le_bytes(ss[0..8].try_into().unwrap());
    let ss_flags = u32::from_le_bytes(ss[8..12].try_into().unwrap());
    let ss_size = u64::from_le_bytes(ss[16..24].try_into().unwrap());
    s.call(
        libc::SYS_prctl,
        &[libc::PR_GET_PDEATHSIG as u64, s.addr],
        "prctl(PR_GET_PDEATHSIG)",
    )?;
    let mut pd = [0u8; 4];
    s.read(0, &mut pd)?;
    let secbits = s.call(
        libc::SYS_prctl,
        &[libc::PR_GET_SECUREBITS as u64],
        "prctl(PR_GET_SECUREBITS)",
    )? as u32;
    let (futex_rla, futex_rla_len) = robust_list(tid)?;
    let (policy, prio) = sched(tid);
    let info = pb::ThreadInfoX86 {
        clear_tid_addr,
        // Rewound, as CRIU writes them (kernel/restart.rs).
        gpregs: regs_to_pb(&crate::kernel::restart::rewound(*regs)),
        fpregs: xsave_to_pb(xstate),
        tls: vec![],
    };
    let tc = pb::ThreadCoreEntry {
        futex_rla,
        futex_rla_len,
        sched_nice: Some(stat.nice as i32),
        sched_policy: Some(policy),
        sched_prio: Some(prio),
        blk_sigset: Some(blk),
        sas: Some(pb::ThreadSasEntry {
            ss_sp,
            ss_size,
            ss_flags,
        }),
        pdeath_sig: Some(u32::from_le_bytes(pd)),
        creds: Some(creds_from_status(status, secbits)),
        seccomp_mode: Some(status.seccomp as i32),
        comm: Some(stat.comm.clone()),
        rseq_entry: rseq_config(tid),
        ckpt_cpu_affinity: Some(affinity(tid)?),
        ..Default::default()
    };
    Ok((info, tc))
}

/// The per-process part (TaskCoreEntry).
pub fn dump_task_core(
    pid: Pid,
    stopped: bool,
    blk: u64,
    stat: &Stat,
    s: &mut ScratchSession<'_>,
) -> Result<pb::TaskCoreEntry> {
    let personality = proc::read_file(pid, "personality")?;
    let personality = u32::from_str_radix(personality.trim(), 16)
        .map_err(|e| Error::task(pid, "/proc/PID/personality", format!("not hex: {e}")))?;
    let rl = limits::read(pid)?;
    let oom = proc::read_file(pid, "oom_score_adj")?
        .trim()
        .parse::<i32>()
        .ok();
    let loginuid = proc::read_file(pid, "loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let sigactions = dump_sigactions(s)?;
    s.call(
        libc::SYS_prctl,
        &[libc::PR_GET_CHILD_SUBREAPER as u64, s.addr],
        "prctl(PR_GET_CHILD_SUBREAPER)",
    )?;
    let mut sr = [0u8; 4];
    s.read(0, &mut sr)?;
    Ok(pb::TaskCoreEntry {
        task_state: if stopped { TASK_STOPPED } else { TASK_ALIVE },
        exit_code: 0,
        personality,
        flags: stat.flags,
        blk_sigset: blk,
        comm: stat.comm.clone(),
        rlimits: Some(pb::TaskRlimitsEntry {
            rlimits: rl
                .iter()
                .map(|r| pb::RlimitEntry {
                    cur: r.cur,
                    max: r.max,
                })
                .collect(),
        }),
        loginuid,
        oom_score_adj: oom,
        sigactions,
        child_subreaper: Some(u32::from_le_bytes(sr) != 0),
        stop_signo: stopped.then_some(libc::SIGSTOP as u32),
        ..Default::default()
    })
}
