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

/// What the process-wide batch asks besides the signal handlers: the
/// child-subreaper flag, the program break and the dumpable flag.
pub struct TaskCalls {
    pub brk: u64,
    pub dumpable: u64,
}

/// Signal handlers of every catchable signal, via rt_sigaction in the
/// task, with PR_GET_CHILD_SUBREAPER, brk(0), PR_GET_DUMPABLE and the
/// leader's thread calls (`extra`, whose raw results come back) in the
/// same batch (each a round trip of its own otherwise); the subreaper
/// flag lands in the data page after the handlers.
#[allow(clippy::type_complexity)]
fn dump_sigactions(
    s: &mut ScratchSession<'_>,
    extra: &[crate::ptrace::remote::Call],
) -> Result<(Vec<pb::SaEntry>, bool, TaskCalls, Vec<i64>)> {
    let sigs: Vec<u64> = (1..=64u64)
        .filter(|&sig| sig != libc::SIGKILL as u64 && sig != libc::SIGSTOP as u64)
        .collect();
    // One batch: 62 queries would otherwise be 124 ptrace stops.
    let data = s.batch_data()?;
    let mut calls: Vec<crate::ptrace::remote::Call> = sigs
        .iter()
        .enumerate()
        .map(|(i, &sig)| {
            (
                libc::SYS_rt_sigaction,
                [sig, 0, data + i as u64 * 32, 8, 0, 0],
            )
        })
        .collect();
    let subreaper_at = data + sigs.len() as u64 * 32;
    let more: [(crate::ptrace::remote::Call, &str); 3] = [
        (
            (
                libc::SYS_prctl,
                [
                    libc::PR_GET_CHILD_SUBREAPER as u64,
                    subreaper_at,
                    0,
                    0,
                    0,
                    0,
                ],
            ),
            "prctl(PR_GET_CHILD_SUBREAPER)",
        ),
        ((libc::SYS_brk, [0; 6]), "brk(0)"),
        (
            (
                libc::SYS_prctl,
                [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            ),
            "prctl(PR_GET_DUMPABLE)",
        ),
    ];
    calls.extend(more.iter().map(|m| m.0));
    calls.extend_from_slice(extra);
    let results = s.batch(&calls)?;
    let mut b = vec![0u8; sigs.len() * 32 + 4];
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
    let tail = &results[sigs.len()..sigs.len() + more.len()];
    for (&r, (_, what)) in tail.iter().zip(&more) {
        if (-4095..0).contains(&r) {
            return Err(Error::sys(
                s.mem.pid(),
                format!("{what} (in the task)"),
                nix::errno::Errno::from_raw(-r as i32),
            ));
        }
    }
    let at = sigs.len() * 32;
    let subreaper = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) != 0;
    Ok((
        out,
        subreaper,
        TaskCalls {
            brk: tail[1] as u64,
            dumpable: tail[2] as u64,
        },
        results[sigs.len() + more.len()..].to_vec(),
    ))
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

/// The leader's per-thread part (ThreadCoreEntry) and thread_info, from
/// the raw results of its [`thread_calls`] (made in the process-wide
/// batch, `dump_task_core`) and its slot at the start of the scratch
/// page.
fn leader_thread(
    l: &ThreadSnap,
    results: &[i64],
    s: &mut ScratchSession<'_>,
) -> Result<(pb::ThreadInfoX86, pb::ThreadCoreEntry)> {
    let calls = thread_calls(s.addr);
    let mut got = [0i64; THREAD_CALLS];
    if results.len() != THREAD_CALLS {
        return Err(Error::task(
            l.tid,
            "remote syscalls",
            "internal: a result missing",
        ));
    }
    for ((g, &r), (_, what)) in got.iter_mut().zip(results).zip(calls) {
        if (-4095..0).contains(&r) {
            return Err(Error::sys(
                l.tid,
                format!("{what} (in the task)"),
                nix::errno::Errno::from_raw(-r as i32),
            ));
        }
        *g = r;
    }
    let mut slot = [0u8; THREAD_SLOT as usize];
    s.read(0, &mut slot)?;
    thread_parts(
        l.tid, &l.regs, &l.xstate, l.blk, &l.stat, &l.status, &slot, &got,
    )
}

/// What a thread looks like from outside, read before any remote call.
pub struct ThreadSnap {
    pub tid: Pid,
    pub regs: Regs,
    pub xstate: Vec<u8>,
    pub blk: u64,
    pub stat: Stat,
    pub status: Status,
}

/// Bytes of scratch memory the calls of [`thread_calls`] write to.
pub const THREAD_SLOT: u64 = 64;
const THREAD_CALLS: usize = 4;

/// What each thread is asked from inside (its answers in its slot of the
/// scratch page, at `slot`): the clear-tid address (at 0), its alternate
/// stack (at 8), its parent-death signal (at 32) and securebits (the
/// result of the last call).
fn thread_calls(slot: u64) -> [(crate::ptrace::remote::Call, &'static str); THREAD_CALLS] {
    [
        (
            (libc::SYS_prctl, [PR_GET_TID_ADDRESS, slot, 0, 0, 0, 0]),
            "prctl(PR_GET_TID_ADDRESS)",
        ),
        (
            (libc::SYS_sigaltstack, [0, slot + 8, 0, 0, 0, 0]),
            "sigaltstack query",
        ),
        (
            (
                libc::SYS_prctl,
                [libc::PR_GET_PDEATHSIG as u64, slot + 32, 0, 0, 0, 0],
            ),
            "prctl(PR_GET_PDEATHSIG)",
        ),
        (
            (
                libc::SYS_prctl,
                [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
            ),
            "prctl(PR_GET_SECUREBITS)",
        ),
    ]
}

/// Every thread but the leader: its calls and images as the leader's (`leader_thread`), a wave of
/// threads at a time, each in its own slot of the leader's scratch page.
/// The calls of a wave run as one batch per thread, all threads at once
/// (`ScratchSession::batch_each`): one round trip per thread instead of a
/// round of two ptrace stops per call and thread (t64's 64 threads had
/// four such rounds). A task with no room for the batches' pipes gets
/// the calls one at a time in every thread at once (`Remote::raw_each`).
pub fn dump_threads(
    threads: &mut [crate::ptrace::Seized],
    snaps: &[ThreadSnap],
    syscall_ip: u64,
    s: &mut ScratchSession<'_>,
) -> Result<Vec<(pb::ThreadInfoX86, pb::ThreadCoreEntry)>> {
    use crate::ptrace::remote::Remote;
    const WAVE: usize = (crate::ptrace::scratch::SCRATCH_SIZE / THREAD_SLOT) as usize;
    let page = s.addr;
    let mut out = Vec::with_capacity(threads.len());
    for (ths, snaps) in threads.chunks_mut(WAVE).zip(snaps.chunks(WAVE)) {
        let mut remotes = ths
            .iter_mut()
            .map(|t| Remote::new(t, syscall_ip))
            .collect::<Result<Vec<_>>>()?;
        let calls: Vec<_> = (0..remotes.len())
            .map(|k| thread_calls(page + k as u64 * THREAD_SLOT))
            .collect();
        let raw: Vec<Vec<_>> = calls
            .iter()
            .map(|c| c.iter().map(|c| c.0).collect())
            .collect();
        let got: Vec<Vec<i64>> = match s.batch_each(&mut remotes, &raw)? {
            Some(got) => got,
            None => {
                let mut got = vec![vec![0i64; THREAD_CALLS]; remotes.len()];
                for step in 0..THREAD_CALLS {
                    let these: Vec<_> = calls.iter().map(|c| Some(c[step].0)).collect();
                    let res = Remote::raw_each(&mut remotes, &these)?;
                    for (k, r) in res.into_iter().enumerate() {
                        got[k][step] = r.expect("every thread makes every call");
                    }
                }
                got
            }
        };
        for (k, got) in got.iter().enumerate() {
            for (step, &r) in got.iter().enumerate() {
                if (-4095..0).contains(&r) {
                    return Err(Error::sys(
                        snaps[k].tid,
                        format!("{} (in the task)", calls[k][step].1),
                        nix::errno::Errno::from_raw(-r as i32),
                    ));
                }
            }
        }
        Remote::finish_each(remotes)?;
        let mut slots = vec![0u8; snaps.len() * THREAD_SLOT as usize];
        s.mem.read(page, &mut slots)?;
        for (k, sn) in snaps.iter().enumerate() {
            let slot = &slots[k * THREAD_SLOT as usize..][..THREAD_SLOT as usize];
            let got: [i64; THREAD_CALLS] = got[k][..].try_into().map_err(|_| {
                Error::task(sn.tid, "remote syscalls", "internal: a result missing")
            })?;
            out.push(thread_parts(
                sn.tid, &sn.regs, &sn.xstate, sn.blk, &sn.stat, &sn.status, slot, &got,
            )?);
        }
    }
    Ok(out)
}

/// A thread's images from what /proc, ptrace and its calls told.
#[allow(clippy::too_many_arguments)]
fn thread_parts(
    tid: Pid,
    regs: &Regs,
    xstate: &[u8],
    blk: u64,
    stat: &Stat,
    status: &Status,
    slot: &[u8],
    got: &[i64; THREAD_CALLS],
) -> Result<(pb::ThreadInfoX86, pb::ThreadCoreEntry)> {
    let word = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    let clear_tid_addr = word(0);
    let ss_sp = word(8);
    let ss_flags = u32::from_le_bytes(slot[16..20].try_into().expect("4 bytes"));
    let ss_size = word(24);
    let pd = u32::from_le_bytes(slot[32..36].try_into().expect("4 bytes"));
    let secbits = got[3] as u32;
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
        pdeath_sig: Some(pd),
        creds: Some(creds_from_status(status, secbits)),
        seccomp_mode: Some(status.seccomp as i32),
        comm: Some(stat.comm.clone()),
        rseq_entry: rseq_config(tid),
        ckpt_cpu_affinity: Some(affinity(tid)?),
        ..Default::default()
    };
    Ok((info, tc))
}

/// What the leader's session asks: the per-process part (TaskCoreEntry)
/// and the leader's thread part, in one batch.
#[allow(clippy::type_complexity)]
pub fn dump_task_core(
    pid: Pid,
    stopped: bool,
    leader: &ThreadSnap,
    stat: &Stat,
    s: &mut ScratchSession<'_>,
    kinds: &mut [Box<dyn super::kind::Dumper>],
) -> Result<(
    pb::TaskCoreEntry,
    TaskCalls,
    (pb::ThreadInfoX86, pb::ThreadCoreEntry),
)> {
    let blk = leader.blk;
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
    // The leader's thread calls, then each kind's, in the batch of the
    // signal handlers' queries; the kinds' answers in the data page's
    // second half.
    let mut extra: Vec<_> = thread_calls(s.addr).iter().map(|c| c.0).collect();
    let kinds_at = s.batch_data()? + KINDS_DATA;
    let mut asked = Vec::with_capacity(kinds.len());
    let mut used = 0usize;
    for k in kinds.iter_mut() {
        let room = KINDS_ROOM - used;
        let (c, n) = k.task_calls(pid, kinds_at + used as u64, room)?;
        if n > room {
            return Err(Error::task(
                pid,
                "remote syscalls",
                "internal: a kind's calls overflow the batch's data page",
            ));
        }
        asked.push((extra.len(), c.len(), used, n));
        extra.extend(c);
        used += n;
    }
    let (sigactions, subreaper, calls, got) = dump_sigactions(s, &extra)?;
    let leader_part = leader_thread(leader, &got[..THREAD_CALLS], s)?;
    let mut data = vec![0u8; used];
    s.mem.read(kinds_at, &mut data)?;
    let mut tc = pb::TaskCoreEntry {
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
        child_subreaper: Some(subreaper),
        stop_signo: stopped.then_some(libc::SIGSTOP as u32),
        ..Default::default()
    };
    for (k, &(from, n, off, len)) in kinds.iter_mut().zip(&asked) {
        k.task_answers(pid, &got[from..from + n], &data[off..off + len], &mut tc)?;
    }
    Ok((tc, calls, leader_part))
}

/// Where in the batch's data page the kinds' calls of the process-wide
/// batch write (`Dumper::task_calls`): after the signal handlers (62 x
/// 32 bytes) and the subreaper flag.
const KINDS_DATA: u64 = 2048;
const KINDS_ROOM: usize = 4096 - KINDS_DATA as usize;
const _: () = assert!(62 * 32 + 4 <= KINDS_DATA as usize);
