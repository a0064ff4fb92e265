//! Threads: every thread but the leader is created from inside the leader
//! with its old TID, and every thread gets its per-thread kernel state
//! (name, clear-tid address, robust list, alternate stack, rseq) and, last
//! of all, its signal mask, FPU state and registers.

use super::load::Images;
use super::stage::{Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::kernel::restart::restart_regs;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::regs::regs_from_pb;
use crate::ptrace::remote::{Call, Remote};
use crate::ptrace::Seized;

pub const KIND: Kind = Kind {
    name: "threads",
    validate: super::stage::no_checks,
    new: |_: &Images, _: &RestoreOptions| Ok(Box::new(Threads)),
};

struct Threads;

impl Restorer for Threads {
    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        match stage {
            TaskStage::Threads => {
                let t = cx.t;
                let made = cx.in_leader(|r, mem, scratch| {
                    // From the leader, while it still has the privileges
                    // clone3 with set_tid needs.
                    let mut made = Vec::with_capacity(t.threads.len());
                    for (tid, _) in &t.threads {
                        made.push(clone_thread(r, mem, scratch, *tid)?);
                    }
                    restore_thread(r, mem, scratch, t.info(), t.thread())?;
                    Ok(made)
                })?;
                cx.threads = made;
                if !t.threads.is_empty() {
                    debug!("pid {}: {} threads created", t.pid, t.threads.len());
                }
                restore_threads(cx)
            }
            TaskStage::Final => {
                let t = cx.t;
                for (th, (_, core)) in cx.threads.iter_mut().zip(&t.threads) {
                    let info = core.thread_info.as_ref().expect("validated");
                    let tcore = core.thread_core.as_ref().expect("validated");
                    set_final_state(th, info, tcore.blk_sigset.unwrap_or(0))?;
                }
                let blk = t.thread().blk_sigset.unwrap_or(t.tc().blk_sigset);
                set_final_state(&mut cx.task, t.info(), blk)
            }
            _ => Ok(()),
        }
    }
}

fn set_final_state(th: &mut Seized, info: &pb::ThreadInfoX86, blk: u64) -> Result<()> {
    th.set_sigmask(blk)?;
    let own = th.xstate()?;
    match &info.fpregs.ckpt_xsave_raw {
        Some(x) if x.len() == own.len() => th.set_xstate(x)?,
        raw => {
            // No raw area, or one of another CPU's size (a dump from
            // another machine): CRIU's fields, component by component, at
            // this CPU's offsets.
            if let Some(x) = raw {
                let bv = u64::from_le_bytes(x[512..520].try_into().expect("validated"));
                let lost = crate::ptrace::regs::components_lost(bv);
                // A thread in a system call (through a libc wrapper) holds
                // no live vector state: the C ABI clobbers it across the
                // call. Elsewhere the lost registers may be in use.
                if lost != 0 && info.gpregs.orig_ax as i64 == -1 {
                    return Err(Error::unsupported(
                        th.tid,
                        "FPU state",
                        format!(
                            "its xsave area ({} bytes, components {bv:#x}) uses components {lost:#x} this CPU lacks ({} bytes), outside a system call",
                            x.len(),
                            own.len()
                        ),
                    ));
                }
                if lost != 0 {
                    debug!(
                        "tid {}: xsave components {lost:#x} dropped (not on this CPU; the thread is in a system call)",
                        th.tid
                    );
                }
            }
            th.set_xstate(&crate::ptrace::regs::xsave_from_pb(&info.fpregs, &own))?;
        }
    }
    th.set_regs(&restart_regs(regs_from_pb(&info.gpregs)))
}

/// Create thread `tid` from inside the leader (clone3 with set_tid). The
/// new thread is auto-attached (PTRACE_O_TRACECLONE) and stays stopped
/// before it runs a single instruction; its registers are set later.
fn clone_thread(r: &mut Remote<'_>, mem: &TaskMem, scratch: u64, tid: Pid) -> Result<Seized> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let args_at = scratch + 1024;
    let tid_at = args_at + 128;
    let mut args = [0u64; 11];
    args[0] = flags;
    args[8] = tid_at; // set_tid
    args[9] = 1; // set_tid_size
    let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write(args_at, &bytes)?;
    mem.write(tid_at, &(tid as u32).to_le_bytes())?;
    let got = r.call(
        libc::SYS_clone3,
        &[args_at, bytes.len() as u64],
        &format!("clone3 of thread {tid}"),
    )?;
    if got != tid as u64 {
        return Err(Error::task(
            tid,
            "thread",
            format!("clone3 created thread {got} instead"),
        ));
    }
    Seized::adopt_stopped(tid)
}

/// Per-thread kernel state that needs a call from inside the thread.
/// Threads set up at once (`Remote::raw_each`), each with its own slot
/// of this many bytes for its name and alternate stack in the scratch
/// area's batch table (two pages, unused outside a batch).
const SLOT: u64 = 64;
const SLOTS_AT: u64 = 2 * 4096;
const WAVE: usize = (2 * 4096 / SLOT) as usize;

/// Every thread but the leader gets its per-thread state, a wave of
/// threads at a time, each thread's calls in order.
fn restore_threads(cx: &mut TaskCx<'_>) -> Result<()> {
    let t = cx.t;
    let (mem, scratch, ip) = (&cx.mem, cx.scratch, cx.ip);
    for (ths, cores) in cx.threads.chunks_mut(WAVE).zip(t.threads.chunks(WAVE)) {
        let mut plans = Vec::with_capacity(ths.len());
        for (k, (_, core)) in cores.iter().enumerate() {
            let info = core.thread_info.as_ref().expect("validated");
            let tcore = core.thread_core.as_ref().expect("validated");
            plans.push(thread_calls(
                mem,
                scratch + SLOTS_AT + k as u64 * SLOT,
                info,
                tcore,
            )?);
        }
        let mut remotes = ths
            .iter_mut()
            .map(|th| Remote::new(th, ip))
            .collect::<Result<Vec<_>>>()?;
        let steps = plans.iter().map(Vec::len).max().unwrap_or(0);
        for step in 0..steps {
            let calls: Vec<Option<Call>> = plans.iter().map(|p| p.get(step).map(|c| c.0)).collect();
            let got = Remote::raw_each(&mut remotes, &calls)?;
            for ((res, plan), (tid, _)) in got.iter().zip(&plans).zip(cores) {
                if let (Some(r), Some((_, what))) = (res, plan.get(step)) {
                    if (-4095..0).contains(r) {
                        return Err(Error::sys(
                            *tid,
                            format!("{what} (in the task)"),
                            nix::errno::Errno::from_raw(-*r as i32),
                        ));
                    }
                }
            }
        }
        for r in remotes {
            r.abandon();
        }
    }
    Ok(())
}

/// The calls that give a thread its state (as `restore_thread` makes
/// them), with their data written at `slot` (`SLOT` bytes).
fn thread_calls(
    mem: &TaskMem,
    slot: u64,
    info: &pb::ThreadInfoX86,
    th: &pb::ThreadCoreEntry,
) -> Result<Vec<(Call, &'static str)>> {
    let mut calls = Vec::new();
    if let Some(comm) = &th.comm {
        let mut name = comm.as_bytes().to_vec();
        name.truncate(15);
        name.push(0);
        mem.write(slot, &name)?;
        calls.push((
            (
                libc::SYS_prctl,
                [libc::PR_SET_NAME as u64, slot, 0, 0, 0, 0],
            ),
            "prctl(PR_SET_NAME)",
        ));
    }
    calls.push((
        (
            libc::SYS_set_tid_address,
            [info.clear_tid_addr, 0, 0, 0, 0, 0],
        ),
        "set_tid_address",
    ));
    if th.futex_rla != 0 {
        calls.push((
            (
                libc::SYS_set_robust_list,
                [th.futex_rla, th.futex_rla_len as u64, 0, 0, 0, 0],
            ),
            "set_robust_list",
        ));
    }
    if let Some(sas) = &th.sas {
        // A disabled stack is set too (see `restore_thread`).
        let at = slot + 16;
        mem.write(at, &sigaltstack_bytes(sas))?;
        calls.push(((libc::SYS_sigaltstack, [at, 0, 0, 0, 0, 0]), "sigaltstack"));
    }
    if let Some(rs) = &th.rseq_entry {
        calls.push((
            (
                libc::SYS_rseq,
                [
                    rs.rseq_abi_pointer,
                    rs.rseq_abi_size as u64,
                    0,
                    rs.signature as u64,
                    0,
                    0,
                ],
            ),
            "rseq registration",
        ));
    }
    Ok(calls)
}

/// A `stack_t` for sigaltstack, never marked as in use.
fn sigaltstack_bytes(sas: &pb::ThreadSasEntry) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&sas.ss_sp.to_le_bytes());
    b.extend_from_slice(&(sas.ss_flags & !(libc::SS_ONSTACK as u32)).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&sas.ss_size.to_le_bytes());
    b
}

/// The leader's own per-thread state: the calls of [`thread_calls`], in
/// one batch (`super::batch`) when there are more than two, which costs
/// about what two single remote calls cost.
fn restore_thread(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    info: &pb::ThreadInfoX86,
    th: &pb::ThreadCoreEntry,
) -> Result<()> {
    // A disabled alternate stack is set too: the leader inherited the
    // engine's own (Rust's guard-page handler), which is unmapped now;
    // SA_ONSTACK handlers would crash on it.
    let calls = thread_calls(mem, scratch + 2048, info, th)?;
    let results = if calls.len() > 2 {
        let raw: Vec<Call> = calls.iter().map(|c| c.0).collect();
        super::batch(r, mem, scratch, &raw)?
    } else {
        calls
            .iter()
            .map(|((nr, args), _)| r.raw(*nr, args))
            .collect::<Result<Vec<_>>>()?
    };
    for (res, (_, what)) in results.iter().zip(&calls) {
        if (-4095..0).contains(res) {
            return Err(Error::sys(
                r.tid(),
                format!("{what} (in the task)"),
                nix::errno::Errno::from_raw(-*res as i32),
            ));
        }
    }
    Ok(())
}
