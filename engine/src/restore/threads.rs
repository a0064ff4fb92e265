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
                make_threads(cx)?;
                if !cx.t.threads.is_empty() {
                    debug!("pid {}: {} threads created", cx.pid(), cx.t.threads.len());
                }
                Ok(())
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

/// Room in the scratch area for each new thread of one batch, after the
/// driver's pages (`restore::scratch_len`): its clone3 arguments and
/// set_tid at 0, its name at [`NAME_AT`], its alternate stack at
/// [`NAME_AT`] + 16, its table of calls at [`TABLE_AT`].
pub const THREAD_SLOT: u64 = 1024;
const SET_TID_AT: u64 = 96;
const NAME_AT: u64 = 112;
const TABLE_AT: u64 = 256;
/// Threads one batch makes: the leader's table (two pages, 128
/// entries) holds a clone3 each, the leader's own calls and three more.
pub const WAVE: usize = 64;

/// Every thread but the leader, with its old TID, from inside the
/// leader while it still has the privileges clone3 with set_tid needs;
/// each new thread gives itself its per-thread state (name, clear-tid
/// address, robust list, alternate stack, rseq) right out of its clone,
/// and the leader its own: one batch for up to [`WAVE`] threads
/// (`Remote::clone_batch`). The new threads are then seized, all at once.
///
/// A thread whose rseq area says it was inside a critical section
/// (`rseq_cs` set) registers rseq from its ptrace stop instead, as the
/// last of its calls: the kernel checks the section against the thread's
/// final registers when it first runs them (and goes to its abort
/// handler), where a registration in the batch would have it checked
/// against the batch code and cleared.
fn make_threads(cx: &mut TaskCx<'_>) -> Result<()> {
    let t = cx.t;
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    if t.threads.is_empty() {
        return leader_alone(cx);
    }
    let area = cx.scratch + super::SCRATCH_LEN;
    let mut late_rseq: Vec<usize> = Vec::new();
    // The new threads must run at once, untraced: no stop at each clone.
    cx.task.set_options(nix::sys::ptrace::Options::empty())?;
    let mut made = Vec::with_capacity(t.threads.len());
    let mut leader_calls = Some(thread_calls(
        &cx.mem,
        cx.scratch + 2048,
        t.info(),
        t.thread(),
    )?);
    let mut first = 0;
    let r = (|| -> Result<()> {
        for wave in t.threads.chunks(WAVE) {
            let mut list = Vec::with_capacity(wave.len());
            let mut whats = Vec::with_capacity(wave.len());
            for (k, (tid, core)) in wave.iter().enumerate() {
                let slot = area + k as u64 * THREAD_SLOT;
                let mut args = [0u64; 11];
                args[0] = flags;
                args[8] = slot + SET_TID_AT; // set_tid
                args[9] = 1; // set_tid_size
                let mut bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
                bytes.resize(SET_TID_AT as usize, 0);
                bytes.extend_from_slice(&(*tid as u32).to_le_bytes());
                cx.mem.write(slot, &bytes)?;
                let info = core.thread_info.as_ref().expect("validated");
                let tcore = core.thread_core.as_ref().expect("validated");
                let mut calls = thread_calls(&cx.mem, slot + NAME_AT, info, tcore)?;
                if tcore
                    .rseq_entry
                    .as_ref()
                    .is_some_and(|rs| !rseq_idle(&cx.mem, rs.rseq_abi_pointer))
                {
                    calls.retain(|c| c.0 .0 != libc::SYS_rseq);
                    late_rseq.push(first + k);
                }
                list.push(crate::ptrace::remote::NewThread {
                    args: slot,
                    args_len: 88,
                    table: slot + TABLE_AT,
                    calls: calls.iter().map(|c| c.0).collect(),
                });
                whats.push(calls.into_iter().map(|c| c.1).collect::<Vec<_>>());
            }
            let mine = leader_calls.take().unwrap_or_default();
            let after: Vec<Call> = mine.iter().map(|c| c.0).collect();
            let got = cx.in_leader(|r, mem, scratch| {
                r.clone_batch(
                    mem,
                    scratch + 4096,
                    scratch + 2 * 4096,
                    2 * 4096 / crate::ptrace::remote::BATCH_ENTRY,
                    &list,
                    &after,
                )
            })?;
            for (res, (_, what)) in got.after.iter().zip(&mine) {
                check_result(cx.pid(), *res, what)?;
            }
            for (&c, (tid, _)) in got.cloned.iter().zip(wave) {
                if (-4095..0).contains(&c) {
                    return Err(Error::sys(
                        *tid,
                        format!("clone3 of thread {tid} (in the task)"),
                        nix::errno::Errno::from_raw(-c as i32),
                    ));
                }
                if c != *tid as i64 {
                    return Err(Error::task(
                        *tid,
                        "thread",
                        format!("clone3 created thread {c} instead"),
                    ));
                }
            }
            for (tid, _) in wave {
                Seized::seize_nowait(*tid)?;
            }
            for (tid, _) in wave {
                made.push(Seized::wait_seized(*tid, None)?);
            }
            for ((res, whats), (tid, _)) in got.threads.iter().zip(&whats).zip(wave) {
                for (r, what) in res.iter().zip(whats) {
                    check_result(*tid, *r, what)?;
                }
            }
            first += wave.len();
        }
        Ok(())
    })();
    cx.threads = made;
    cx.task
        .set_options(nix::sys::ptrace::Options::PTRACE_O_TRACECLONE)?;
    r?;
    // rseq last, from the stop of a thread caught in a critical section.
    for i in late_rseq {
        let (tid, core) = &t.threads[i];
        let rs = core
            .thread_core
            .as_ref()
            .and_then(|c| c.rseq_entry.as_ref())
            .expect("has rseq");
        let mut r = Remote::new(&mut cx.threads[i], cx.ip)?;
        r.call(
            libc::SYS_rseq,
            &[
                rs.rseq_abi_pointer,
                rs.rseq_abi_size as u64,
                0,
                rs.signature as u64,
            ],
            &format!("rseq registration of thread {tid}"),
        )?;
        r.abandon();
    }
    Ok(())
}

/// The leader's own per-thread state, in a task of one thread: the calls
/// of [`thread_calls`] in one batch (`super::batch`) when there are more
/// than two, which costs about what two single remote calls cost.
fn leader_alone(cx: &mut TaskCx<'_>) -> Result<()> {
    let t = cx.t;
    // A disabled alternate stack is set too: the leader inherited the
    // engine's own (Rust's guard-page handler), which is unmapped now;
    // SA_ONSTACK handlers would crash on it.
    let calls = thread_calls(&cx.mem, cx.scratch + 2048, t.info(), t.thread())?;
    let results = cx.in_leader(|r, mem, scratch| {
        if calls.len() > 2 {
            let raw: Vec<Call> = calls.iter().map(|c| c.0).collect();
            super::batch(r, mem, scratch, &raw)
        } else {
            calls
                .iter()
                .map(|((nr, args), _)| r.raw(*nr, args))
                .collect::<Result<Vec<_>>>()
        }
    })?;
    for (res, (_, what)) in results.iter().zip(&calls) {
        check_result(t.pid, *res, what)?;
    }
    Ok(())
}

/// Whether the rseq area at `at` (restored already) says its thread was
/// outside any critical section (`rseq_cs`, at offset 8, is 0).
fn rseq_idle(mem: &TaskMem, at: u64) -> bool {
    let mut cs = [0u8; 8];
    mem.read(at + 8, &mut cs).is_ok() && cs == [0; 8]
}

fn check_result(tid: Pid, res: i64, what: &str) -> Result<()> {
    if (-4095..0).contains(&res) {
        return Err(Error::sys(
            tid,
            format!("{what} (in the task)"),
            nix::errno::Errno::from_raw(-res as i32),
        ));
    }
    Ok(())
}

/// The calls that give a thread its state, with their data written at
/// `slot` (40 bytes: its name, then its alternate stack at 16).
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
