//! The remote-syscall primitive: make a stopped thread execute one system
//! call for the engine.
//!
//! The thread's registers are pointed at a `syscall` instruction that
//! already exists in its address space (found in the vDSO, so no code is
//! ever written into the task), loaded with the arguments, run with
//! PTRACE_SYSCALL to the syscall-entry and then the syscall-exit stop, and
//! the result is read from `rax`. The original registers go back when the
//! `Remote` is finished (or dropped). `orig_rax` is set to -1 for the
//! injected call so the kernel's syscall-restart logic does not fire on
//! it, even when the thread was stopped inside a blocking call.
//!
//! Why syscall stops and not a single step: a single step ends with a
//! SIGTRAP that the kernel *forces* on the task, and forcing a signal that
//! is blocked or ignored resets its handler to SIG_DFL and unblocks it
//! (force_sig_info_to_task); it would also take a SIGTRAP the task had
//! pending for itself. Syscall stops are pure ptrace stops: no signal is
//! generated, so SIGTRAP's disposition, mask and pending state are left
//! exactly as they were. (CRIU's compel has the same problem with its
//! int3 trap and works around half of it by never blocking SIGTRAP.)

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::mem::TaskMem;
use super::{Seized, ALL_SIGNALS_BLOCKED};
use crate::error::{Error, Result, SysContext};
use crate::sys::ptrace as raw;

/// The code a batch runs (`Remote::batch`), position independent:
///
/// ```text
/// start: mov rax, [rbx]        ; table entry: nr, 6 arguments, result
///        cmp rax, -1
///        je done
///        cmp rax, -2
///        je park                 ; a new thread's table ends here
///        mov rdi, [rbx+8];  mov rsi, [rbx+16]; mov rdx, [rbx+24]
///        mov r10, [rbx+32]; mov r8, [rbx+40];  mov r9, [rbx+48]
///        syscall
///        test rax, rax            ; clone3 returning 0: the new thread,
///        jnz store                ; which goes on with its own table
///        cmp qword [rbx], 435     ; (the entry's fifth argument)
///        jne store
///        mov rbx, [rbx+40]
///        jmp start
/// store: mov [rbx+56], rax
///        add rbx, 64
///        jmp start
/// done:  write(r12, &byte, 1); close(r12)   ; tell the engine
/// park:  pause(); jmp park                   ; until PTRACE_INTERRUPT
/// byte:  .byte 0x2a
/// ```
pub const BATCH_CODE: [u8; 113] = [
    0x48, 0x8b, 0x03, 0x48, 0x83, 0xf8, 0xff, 0x74, 0x3e, 0x48, 0x83, 0xf8, 0xfe, 0x74, 0x58, 0x48,
    0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c,
    0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x75, 0x0f, 0x48, 0x81,
    0x3b, 0xb3, 0x01, 0x00, 0x00, 0x75, 0x06, 0x48, 0x8b, 0x5b, 0x28, 0xeb, 0xc3, 0x48, 0x89, 0x43,
    0x38, 0x48, 0x83, 0xc3, 0x40, 0xeb, 0xb9, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xe7, 0x48,
    0x8d, 0x35, 0x01, 0x00, 0x00, 0x00, 0xba, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x03, 0x00,
    0x00, 0x00, 0x4c, 0x89, 0xe7, 0x0f, 0x05, 0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7,
    0x2a,
];

/// A table entry that parks the thread running it (in pause(), until
/// PTRACE_INTERRUPT) without a word to the engine: the end of a new
/// thread's table ([`Remote::clone_batch`]).
const PARK: i64 = -2;

/// One thread a [`Remote::clone_batch`] makes: clone3 with the
/// `clone_args` the engine wrote at `args` (`args_len` bytes), after
/// which the new thread runs `calls` from its own table at `table`
/// (room for `calls.len() + 2` entries and 8 bytes more).
pub struct NewThread {
    pub args: u64,
    pub args_len: u64,
    pub table: u64,
    pub calls: Vec<Call>,
}

/// What a [`Remote::clone_batch`] did: each clone3's raw result, each
/// new thread's results (empty for a thread not made), the leader's
/// calls' results.
pub struct CloneBatch {
    pub cloned: Vec<i64>,
    pub threads: Vec<Vec<i64>>,
    pub after: Vec<i64>,
}

/// One call of a batch: the syscall number and six arguments.
pub type Call = (i64, [u64; 6]);

/// Bytes per batch table entry: nr, six arguments, result.
pub const BATCH_ENTRY: usize = 64;
const BATCH_TIMEOUT_MS: i32 = 10_000;

/// Waits, with a time limit, until the batch in the task is over: its
/// byte came through `fd` and then the end of file, once the task closed
/// the write end, its last syscall. The byte alone is not enough: the
/// task would often be interrupted between its write and its close, and
/// keep the pipe's write end for good.
fn wait_readable(fd: &std::os::fd::OwnedFd, ms: i32) -> bool {
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
    let mut got = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let t = nix::poll::PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(nix::poll::PollTimeout::ZERO);
        match nix::poll::poll(&mut fds, t) {
            Ok(0) => return false,
            Ok(_) => {
                // The byte, then EOF (only EOF if the task died).
                let mut b = [0u8; 1];
                match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut b) {
                    Ok(1) => got = true,
                    Ok(_) => return got,
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(_) => return false,
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Remote calls made by this engine process, one by one and in batches,
/// for the debug log (the per-task cost of dump and restore is mostly
/// these round trips).
pub static STATS: RemoteStats = RemoteStats {
    calls: std::sync::atomic::AtomicU64::new(0),
    batches: std::sync::atomic::AtomicU64::new(0),
    batched_calls: std::sync::atomic::AtomicU64::new(0),
};

pub struct RemoteStats {
    pub calls: std::sync::atomic::AtomicU64,
    pub batches: std::sync::atomic::AtomicU64,
    pub batched_calls: std::sync::atomic::AtomicU64,
}

impl std::fmt::Display for RemoteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        write!(
            f,
            "{} remote syscalls one by one, {} batches of {} calls",
            self.calls.load(Relaxed),
            self.batches.load(Relaxed),
            self.batched_calls.load(Relaxed)
        )
    }
}

pub struct Remote<'a> {
    task: &'a mut Seized,
    syscall_ip: u64,
    saved_mask: u64,
    finished: bool,
    /// The thread is in a PTRACE_EVENT_STOP of our PTRACE_INTERRUPT, the
    /// stop it was frozen in (a batch ends there): its registers can go
    /// back as they are, without another round trip
    /// (`back_to_interrupt_stop`).
    at_interrupt_stop: bool,
}

/// Find the address of a `syscall` instruction (0f 05) among `ranges`, in
/// order. Any occurrence of those two bytes in executable memory decodes as
/// `syscall` when jumped to directly, which is all a single step needs.
pub fn find_syscall_insn(mem: &TaskMem, ranges: &[(u64, u64)]) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    for &(start, end) in ranges {
        let mut addr = start;
        while addr < end {
            let n = ((end - addr) as usize).min(buf.len());
            if mem.read(addr, &mut buf[..n]).is_err() {
                break;
            }
            if let Some(i) = buf[..n].windows(2).position(|w| w == [0x0f, 0x05]) {
                return Ok(addr + i as u64);
            }
            // Overlap by one byte so a pair split across chunks is found.
            addr += (n as u64).saturating_sub(1).max(1);
        }
    }
    Err(Error::task(
        mem.pid(),
        "remote syscall",
        "no syscall instruction found in the task's executable mappings",
    ))
}

/// A batch's table (`BATCH_CODE`): closing the task's read end of the
/// pipe, the calls, the terminator.
fn batch_table(task_rd: u64, calls: &[Call]) -> Vec<u8> {
    let mut t = Vec::with_capacity((calls.len() + 2) * BATCH_ENTRY);
    let mut entry = |nr: i64, args: &[u64; 6]| {
        t.extend_from_slice(&nr.to_le_bytes());
        for a in args {
            t.extend_from_slice(&a.to_le_bytes());
        }
        t.extend_from_slice(&0u64.to_le_bytes());
    };
    entry(libc::SYS_close, &[task_rd, 0, 0, 0, 0, 0]);
    for (nr, args) in calls {
        entry(*nr, args);
    }
    entry(-1, &[0; 6]);
    t
}

/// The result field of every entry of the batch table of `len` bytes at
/// `table`, once the batch ran: the pipe's close, the calls, the
/// terminator.
fn batch_results(mem: &TaskMem, table: u64, len: usize) -> Result<Vec<i64>> {
    let mut res = vec![0u8; len];
    mem.read(table, &mut res)?;
    Ok(res
        .chunks_exact(BATCH_ENTRY)
        .map(|e| i64::from_le_bytes(e[BATCH_ENTRY - 8..].try_into().expect("8 bytes")))
        .collect())
}

impl<'a> Remote<'a> {
    /// A pipe made by the task for a batch, its fds written at `table`:
    /// (read end, write end) in the task. The engine takes the read end
    /// (root may take fds from any task; an unprivileged task may not
    /// take one from the engine).
    fn batch_pipe(&mut self, mem: &TaskMem, table: u64) -> Result<(u64, u64)> {
        self.call(
            libc::SYS_pipe2,
            &[table, libc::O_CLOEXEC as u64],
            "pipe2 for a batch of remote syscalls",
        )?;
        let mut fds = [0u8; 8];
        mem.read(table, &mut fds)?;
        let fd = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64;
        Ok((fd(&fds[..4]), fd(&fds[4..])))
    }

    /// Start running syscalls in `task`. All signals are blocked meanwhile,
    /// so a signal that arrives during the dump stays pending (and is
    /// dumped) instead of interrupting the injected call.
    pub fn new(task: &'a mut Seized, syscall_ip: u64) -> Result<Remote<'a>> {
        let saved_mask = task.sigmask()?;
        task.set_sigmask(ALL_SIGNALS_BLOCKED)?;
        Ok(Remote {
            task,
            syscall_ip,
            saved_mask,
            finished: false,
            at_interrupt_stop: false,
        })
    }

    pub fn tid(&self) -> i32 {
        self.task.tid
    }

    /// The instruction moved (the restore mremaps the vDSO).
    pub fn set_syscall_ip(&mut self, ip: u64) {
        self.syscall_ip = ip;
    }

    /// Execute syscall `nr` with `args`; returns the raw result (negative
    /// errno on failure), like the kernel does.
    pub fn raw(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        self.set_call(nr, args)?;
        // Entry stop, then exit stop (events such as PTRACE_EVENT_CLONE
        // come between the two).
        self.run_to_syscall_stop(nr, "entry")?;
        self.run_to_syscall_stop(nr, "exit")?;
        self.call_result(nr)
    }

    /// Runs one syscall in each of several threads at once: the `i`th
    /// call (if any) in `remotes[i]`; raw results in the same places.
    ///
    /// Each remote call costs two round trips between the engine and a
    /// stopped thread, and the time goes in waking and scheduling both
    /// sides rather than in the calls; resuming every thread before
    /// waiting for any lets those round trips overlap (on every CPU, and
    /// with the engine's own work), where one call after the other pays
    /// each in full.
    pub fn raw_each(
        remotes: &mut [Remote<'_>],
        calls: &[Option<Call>],
    ) -> Result<Vec<Option<i64>>> {
        let mut started = Vec::new();
        for (i, (r, c)) in remotes.iter_mut().zip(calls).enumerate() {
            if let Some((nr, args)) = c {
                r.set_call(*nr, args)?;
                r.resume_syscall(*nr, "entry")?;
                started.push(i);
            }
        }
        for &i in &started {
            let nr = calls[i].expect("started").0;
            remotes[i].wait_syscall_stop(nr)?;
            remotes[i].resume_syscall(nr, "exit")?;
        }
        let mut out = vec![None; remotes.len()];
        for &i in &started {
            let nr = calls[i].expect("started").0;
            remotes[i].wait_syscall_stop(nr)?;
            out[i] = Some(remotes[i].call_result(nr)?);
        }
        Ok(out)
    }

    /// [`Remote::finish`] for several threads, their round trips
    /// overlapping as in [`Remote::raw_each`].
    pub fn finish_each(mut remotes: Vec<Remote<'_>>) -> Result<()> {
        let away = |r: &&Remote<'_>| !r.at_interrupt_stop;
        for r in remotes.iter().filter(away) {
            ptrace::interrupt(r.task.npid()).ctx(r.task.tid, || {
                "PTRACE_INTERRUPT after remote syscalls".into()
            })?;
        }
        for r in remotes.iter().filter(away) {
            ptrace::cont(r.task.npid(), None)
                .ctx(r.task.tid, || "PTRACE_CONT after remote syscalls".into())?;
        }
        for r in remotes.iter_mut() {
            if !r.at_interrupt_stop {
                super::wait_event_stop(r.task.tid, None)?;
            }
            // Back in its interrupt stop: the rest needs no round trip.
            r.finished = true;
            let regs = r.task.regs;
            raw::set_regs(r.task.npid(), &regs).ctx(r.task.tid, || {
                "restoring registers after remote syscalls".into()
            })?;
            r.task.set_sigmask(r.saved_mask)?;
        }
        Ok(())
    }

    /// Registers for syscall `nr` at the syscall instruction.
    fn set_call(&mut self, nr: i64, args: &[u64]) -> Result<()> {
        let tid = self.task.tid;
        self.at_interrupt_stop = false;
        STATS
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut regs = self.task.regs;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rip = self.syscall_ip;
        regs.eflags &= !0x100; // TF is the kernel's business while stepping
        let slots = [
            &mut regs.rdi,
            &mut regs.rsi,
            &mut regs.rdx,
            &mut regs.r10,
            &mut regs.r8,
            &mut regs.r9,
        ];
        for (slot, &a) in slots.into_iter().zip(args.iter()) {
            *slot = a;
        }
        raw::set_regs(self.task.npid(), &regs)
            .ctx(tid, || format!("setting registers for remote syscall {nr}"))
    }

    /// The raw result of the call that just left its exit stop.
    fn call_result(&mut self, nr: i64) -> Result<i64> {
        let after = raw::get_regs(self.task.npid()).ctx(self.task.tid, || {
            format!("reading result of remote syscall {nr}")
        })?;
        Ok(after.rax as i64)
    }

    /// Resume with PTRACE_SYSCALL until the next syscall stop.
    fn run_to_syscall_stop(&mut self, nr: i64, which: &str) -> Result<()> {
        self.resume_syscall(nr, which)?;
        self.wait_syscall_stop(nr)
    }

    fn resume_syscall(&mut self, nr: i64, which: &str) -> Result<()> {
        ptrace::syscall(self.task.npid(), None).ctx(self.task.tid, || {
            format!("PTRACE_SYSCALL to the {which} of remote syscall {nr}")
        })
    }

    /// Wait for the syscall stop the thread was resumed to. Every signal
    /// is blocked meanwhile (`new`), so a SIGTRAP stop can only be a
    /// syscall stop (the options may lack PTRACE_O_TRACESYSGOOD).
    fn wait_syscall_stop(&mut self, nr: i64) -> Result<()> {
        let tid = self.task.tid;
        loop {
            let st = waitpid(self.task.npid(), Some(WaitPidFlag::__WALL))
                .ctx(tid, || format!("waiting for remote syscall {nr}"))?;
            match st {
                WaitStatus::Stopped(_, Signal::SIGTRAP) | WaitStatus::PtraceSyscall(_) => {
                    return Ok(())
                }
                WaitStatus::Stopped(_, sig) => {
                    return Err(Error::task(
                        tid,
                        format!("remote syscall {nr}"),
                        format!("interrupted by {sig:?}"),
                    ))
                }
                WaitStatus::PtraceEvent(..) => {
                    ptrace::syscall(self.task.npid(), None).ctx(tid, || {
                        format!("continuing remote syscall {nr} after an event")
                    })?;
                }
                other => {
                    return Err(Error::task(
                        tid,
                        format!("remote syscall {nr}"),
                        format!("task left the ptrace stop: {other:?}"),
                    ))
                }
            }
        }
    }

    /// Set the task off on a batch: `BATCH_CODE` at `code` walks the table
    /// at `table` and writes to `done_fd` when done (no syscall restart,
    /// no single-step).
    fn start_batch(&mut self, code: u64, table: u64, done_fd: u64) -> Result<()> {
        let tid = self.task.tid;
        self.at_interrupt_stop = false;
        let mut regs = self.task.regs;
        regs.rip = code;
        regs.rbx = table;
        regs.r12 = done_fd;
        regs.orig_rax = u64::MAX;
        regs.eflags &= !0x100;
        raw::set_regs(self.task.npid(), &regs).ctx(tid, || {
            "setting registers for a batch of remote syscalls".into()
        })?;
        ptrace::cont(self.task.npid(), None)
            .ctx(tid, || "PTRACE_CONT into a batch of remote syscalls".into())
    }

    /// Runs `calls` inside the task in one go and returns their raw
    /// results: `BATCH_CODE` (already at `code`, an executable page of the
    /// task) walks the table written at `table` (room for `capacity`
    /// entries), then tells the engine through a pipe and parks in pause()
    /// until PTRACE_INTERRUPT takes it back into a ptrace stop.
    ///
    /// One run costs one remote call (a pipe) and one
    /// PTRACE_CONT/PTRACE_INTERRUPT round trip, instead of two ptrace stops
    /// per call: worth it from a handful of calls on. No signal is
    /// generated, so the task's signal state is untouched, as with `raw`.
    /// Only for calls that cannot block (every signal is blocked).
    pub fn batch(
        &mut self,
        mem: &TaskMem,
        code: u64,
        table: u64,
        capacity: usize,
        calls: &[Call],
    ) -> Result<Vec<i64>> {
        let tid = self.task.tid;
        let mut out = Vec::with_capacity(calls.len());
        // One entry for closing the pipe's read end, one for the terminator.
        for chunk in calls.chunks(capacity.saturating_sub(2).max(1)) {
            STATS
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            STATS
                .batched_calls
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let (task_rd, done_fd) = self.batch_pipe(mem, table)?;
            let rd = match crate::sys::take_fd(mem.pid(), task_rd as i32) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = self.raw(libc::SYS_close, &[task_rd]);
                    let _ = self.raw(libc::SYS_close, &[done_fd]);
                    return Err(Error::sys(tid, "pidfd_getfd of the batch pipe", e));
                }
            };
            let t = batch_table(task_rd, chunk);
            mem.write(table, &t)?;
            self.start_batch(code, table, done_fd)?;
            let finished = wait_readable(&rd, BATCH_TIMEOUT_MS);
            // Back into a ptrace stop whatever happened.
            ptrace::interrupt(self.task.npid()).ctx(tid, || {
                "PTRACE_INTERRUPT after a batch of remote syscalls".into()
            })?;
            let kind = super::wait_event_stop(tid, None)?;
            self.at_interrupt_stop = self.interrupted(kind);
            if !finished {
                return Err(Error::task(
                    tid,
                    "batch of remote syscalls",
                    format!("did not finish within {BATCH_TIMEOUT_MS} ms"),
                ));
            }
            out.extend(&batch_results(mem, table, t.len())?[1..=chunk.len()]);
        }
        Ok(out)
    }

    /// Makes new threads of the task from its leader and gives each its
    /// own calls, all in one run of `BATCH_CODE` (at `code`): the
    /// leader's table at `table` (room for `capacity` entries) clones
    /// each thread of `threads` (clone3), then runs `after`; each new
    /// thread, right out of its clone3, runs its own calls from its own
    /// table. Everyone tells the engine through one pipe (the leader a
    /// byte `L`, each thread a `T`) and parks; the leader is taken back
    /// into a ptrace stop, the new threads are left parked, not traced
    /// (the caller seizes them: the leader must not have
    /// PTRACE_O_TRACECLONE set, or each clone3 would stop it and each new
    /// thread would wait for the engine before its first instruction).
    ///
    /// One round trip for every thread and every call, instead of two
    /// ptrace stops per call; the new threads' calls run side by side.
    /// Only for calls that cannot block. The new threads run nothing but
    /// `BATCH_CODE` and their table (no stack, every signal blocked as in
    /// the leader).
    pub fn clone_batch(
        &mut self,
        mem: &TaskMem,
        code: u64,
        table: u64,
        capacity: usize,
        threads: &[NewThread],
        after: &[Call],
    ) -> Result<CloneBatch> {
        let tid = self.task.tid;
        let n = threads.len();
        let entries = 1 + n + after.len() + 2;
        if entries > capacity {
            return Err(Error::task(
                tid,
                "batch of remote syscalls",
                format!("{entries} entries do not fit in a table of {capacity}"),
            ));
        }
        STATS
            .batches
            .fetch_add(1 + n as u64, std::sync::atomic::Ordering::Relaxed);
        STATS.batched_calls.fetch_add(
            (n + after.len() + threads.iter().map(|t| t.calls.len()).sum::<usize>()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let (task_rd, done_fd) = self.batch_pipe(mem, table)?;
        let r = self.clone_batch_run(mem, code, table, threads, after, task_rd, done_fd);
        // The write end stays in the task until the engine closes it:
        // every thread had to write to it first.
        let closed = self.call(
            libc::SYS_close,
            &[done_fd],
            "close of the batch pipe's write end",
        );
        let out = r?;
        closed?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn clone_batch_run(
        &mut self,
        mem: &TaskMem,
        code: u64,
        table: u64,
        threads: &[NewThread],
        after: &[Call],
        task_rd: u64,
        done_fd: u64,
    ) -> Result<CloneBatch> {
        use std::os::fd::AsRawFd;
        let tid = self.task.tid;
        let n = threads.len();
        let rd = match crate::sys::take_fd(mem.pid(), task_rd as i32) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = self.raw(libc::SYS_close, &[task_rd]);
                return Err(Error::sys(tid, "pidfd_getfd of the batch pipe", e));
            }
        };
        // A table: the calls, a write of the byte kept right after the
        // table to the pipe, the end.
        let table_of =
            |at: u64, first: Option<Call>, calls: &mut dyn Iterator<Item = Call>, byte: u8| {
                let mut list: Vec<Call> = first.into_iter().collect();
                list.extend(calls);
                let byte_at = at + (list.len() as u64 + 2) * BATCH_ENTRY as u64;
                list.push((libc::SYS_write, [done_fd, byte_at, 1, 0, 0, 0]));
                let mut t = Vec::with_capacity((list.len() + 1) * BATCH_ENTRY + 8);
                for (nr, args) in list.iter().chain([&(PARK, [0; 6])]) {
                    t.extend_from_slice(&nr.to_le_bytes());
                    for a in args {
                        t.extend_from_slice(&a.to_le_bytes());
                    }
                    t.extend_from_slice(&0u64.to_le_bytes());
                }
                t.extend_from_slice(&u64::from(byte).to_le_bytes());
                t
            };
        for th in threads {
            let t = table_of(th.table, None, &mut th.calls.iter().copied(), b'T');
            mem.write(th.table, &t)?;
        }
        let mut leader_calls = threads
            .iter()
            .map(|th| (libc::SYS_clone3, [th.args, th.args_len, 0, 0, th.table, 0]))
            .chain(after.iter().copied());
        let lt = table_of(
            table,
            Some((libc::SYS_close, [task_rd, 0, 0, 0, 0, 0])),
            &mut leader_calls,
            b'L',
        );
        mem.write(table, &lt)?;
        self.start_batch(code, table, done_fd)?;

        // The leader's byte, then one from every thread it made.
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(BATCH_TIMEOUT_MS as u64);
        let mut cloned: Option<Vec<i64>> = None;
        let mut heard = 0usize;
        let mut failed_clone = false;
        let finished = loop {
            if let Some(c) = &cloned {
                if failed_clone || heard >= c.iter().filter(|&&r| r > 0).count() {
                    break true;
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut pfd = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&rd),
                nix::poll::PollFlags::POLLIN,
            )];
            let t = nix::poll::PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(nix::poll::PollTimeout::ZERO);
            match nix::poll::poll(&mut pfd, t) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break false,
            }
            let mut buf = [0u8; 256];
            let got = match nix::unistd::read(rd.as_raw_fd(), &mut buf) {
                Ok(0) => break false,
                Ok(k) => k,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(_) => break false,
            };
            for &b in &buf[..got] {
                if b == b'T' {
                    heard += 1;
                } else if cloned.is_none() {
                    // The leader is done: its clone3 results are in.
                    let res = batch_results(mem, table, lt.len() - 8)?;
                    let c = res[1..=n].to_vec();
                    failed_clone = c.iter().any(|&r| r <= 0);
                    cloned = Some(c);
                }
            }
        };
        // Back into a ptrace stop whatever happened.
        ptrace::interrupt(self.task.npid()).ctx(tid, || {
            "PTRACE_INTERRUPT after a batch of remote syscalls".into()
        })?;
        super::wait_event_stop(tid, None)?;
        let Some(cloned) = cloned.filter(|_| finished) else {
            return Err(Error::task(
                tid,
                "batch of remote syscalls that makes threads",
                format!(
                    "did not finish within {BATCH_TIMEOUT_MS} ms ({heard} of {n} new threads done)"
                ),
            ));
        };
        let res = batch_results(mem, table, lt.len() - 8)?;
        if res[0] != 0 {
            return Err(Error::sys(
                tid,
                "close of the batch pipe's read end (in the task)",
                nix::errno::Errno::from_raw(-res[0] as i32),
            ));
        }
        let after_res = res[1 + n..1 + n + after.len()].to_vec();
        let mut out = Vec::with_capacity(n);
        for (th, &c) in threads.iter().zip(&cloned) {
            if c <= 0 {
                out.push(Vec::new());
                continue;
            }
            let len = (th.calls.len() + 2) * BATCH_ENTRY;
            let r = batch_results(mem, th.table, len)?;
            out.push(r[..th.calls.len()].to_vec());
        }
        Ok(CloneBatch {
            cloned,
            threads: out,
            after: after_res,
        })
    }

    /// [`Remote::batch`] in several threads of one process at once:
    /// `remotes[i]` runs `calls[i]` from its own table at `tables[i]`
    /// (room for `calls[i].len() + 2` entries) through `BATCH_CODE` at
    /// `code`, and tells the engine through its own pipe `pipes[i]` (the
    /// task's read and write ends, made in the task beforehand, one per
    /// thread: threads share the fd table, and each closes its write end).
    /// Raw results, per thread in order.
    ///
    /// Every thread is resumed before the engine waits for any, so their
    /// runs overlap; a thread costs one PTRACE_CONT/PTRACE_INTERRUPT
    /// round trip for all its calls instead of two ptrace stops per call
    /// (`raw_each`). On an error, fds of `pipes` may be left in the task:
    /// the caller closes them (none was reused meanwhile: nothing else
    /// opens a file in the task).
    pub fn batch_each(
        remotes: &mut [Remote<'_>],
        mem: &TaskMem,
        code: u64,
        tables: &[u64],
        pipes: &[(u64, u64)],
        calls: &[Vec<Call>],
    ) -> Result<Vec<Vec<i64>>> {
        let mut rds = Vec::with_capacity(remotes.len());
        for (r, &(task_rd, _)) in remotes.iter().zip(pipes) {
            let rd = crate::sys::take_fd(mem.pid(), task_rd as i32)
                .map_err(|e| Error::sys(r.task.tid, "pidfd_getfd of the batch pipe", e))?;
            rds.push(rd);
        }
        let mut written = Vec::with_capacity(remotes.len());
        for ((&table, &(task_rd, _)), chunk) in tables.iter().zip(pipes).zip(calls) {
            STATS
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            STATS
                .batched_calls
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let t = batch_table(task_rd, chunk);
            mem.write(table, &t)?;
            written.push(t.len());
        }
        for ((r, &table), &(_, done_fd)) in remotes.iter_mut().zip(tables).zip(pipes) {
            r.start_batch(code, table, done_fd)?;
        }
        let finished: Vec<bool> = rds
            .iter()
            .map(|rd| wait_readable(rd, BATCH_TIMEOUT_MS))
            .collect();
        // Back into a ptrace stop whatever happened.
        for r in remotes.iter() {
            ptrace::interrupt(r.task.npid()).ctx(r.task.tid, || {
                "PTRACE_INTERRUPT after a batch of remote syscalls".into()
            })?;
        }
        for r in remotes.iter_mut() {
            let kind = super::wait_event_stop(r.task.tid, None)?;
            r.at_interrupt_stop = r.interrupted(kind);
        }
        let mut out = Vec::with_capacity(remotes.len());
        for (((r, &table), &len), done) in remotes.iter().zip(tables).zip(&written).zip(finished) {
            if !done {
                return Err(Error::task(
                    r.task.tid,
                    "batch of remote syscalls",
                    format!("did not finish within {BATCH_TIMEOUT_MS} ms"),
                ));
            }
            let res = batch_results(mem, table, len)?;
            if res[0] != 0 {
                return Err(Error::sys(
                    r.task.tid,
                    "close of the batch pipe's read end (in the task)",
                    nix::errno::Errno::from_raw(-res[0] as i32),
                ));
            }
            out.push(res[1..res.len() - 1].to_vec());
        }
        Ok(out)
    }

    /// Puts `BATCH_CODE` into the page at `page` (mapped by the caller)
    /// and makes it executable. The code page is never writable in the
    /// task (the engine writes through /proc/PID/mem), which also suits
    /// memory-deny-write-execute.
    pub fn install_batch_code(&mut self, mem: &TaskMem, page: u64) -> Result<()> {
        mem.write(page, &BATCH_CODE)?;
        self.call(
            libc::SYS_mprotect,
            &[page, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64],
            "mprotect of the batch code page",
        )?;
        Ok(())
    }

    /// A fresh private anonymous mapping in the task (at `addr` with
    /// MAP_FIXED_NOREPLACE, or wherever the kernel likes if `addr` is 0).
    pub fn mmap_anon(&mut self, addr: u64, len: u64, prot: i32, what: &str) -> Result<u64> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if addr != 0 {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        self.call(
            libc::SYS_mmap,
            &[addr, len, prot as u64, flags as u64, u64::MAX, 0],
            &format!("mmap of {what}"),
        )
    }

    /// Like `raw`, but a negative result becomes an error naming `what`.
    pub fn call(&mut self, nr: i64, args: &[u64], what: &str) -> Result<u64> {
        let r = self.raw(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::sys(
                self.task.tid,
                format!("{what} (in the task)"),
                nix::errno::Errno::from_raw(-r as i32),
            ));
        }
        Ok(r as u64)
    }

    /// Put the thread's registers and signal mask back.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        self.back_to_interrupt_stop()?;
        let regs = self.task.regs;
        raw::set_regs(self.task.npid(), &regs).ctx(self.task.tid, || {
            "restoring registers after remote syscalls".into()
        })?;
        self.task.set_sigmask(self.saved_mask)
    }

    /// The last remote call left the thread in a syscall-exit stop, from
    /// which the kernel returns to user space without its syscall-restart
    /// logic (that runs only after signal handling). The thread was
    /// frozen in a PTRACE_EVENT_STOP inside signal handling, where a
    /// syscall it was blocked in (rax = -ERESTART*) gets restarted on
    /// resume; take it back there (PTRACE_INTERRUPT + PTRACE_CONT) before
    /// its registers go back, so that it goes on exactly as it would have.
    fn back_to_interrupt_stop(&mut self) -> Result<()> {
        if self.at_interrupt_stop {
            return Ok(());
        }
        let tid = self.task.tid;
        ptrace::interrupt(self.task.npid())
            .ctx(tid, || "PTRACE_INTERRUPT after remote syscalls".into())?;
        ptrace::cont(self.task.npid(), None)
            .ctx(tid, || "PTRACE_CONT after remote syscalls".into())?;
        super::wait_event_stop(tid, None).map(|_| ())
    }

    /// Whether the stop `kind` that our PTRACE_INTERRUPT brought is the
    /// one the thread was frozen in: a thread frozen in a group stop goes
    /// the round trip as before.
    fn interrupted(&self, kind: super::StopKind) -> bool {
        use super::StopKind::Running;
        kind == Running && self.task.kind == Running
    }

    /// Finish without restoring anything: the restore sets final state itself.
    pub fn abandon(mut self) {
        self.finished = true;
    }
}

impl Drop for Remote<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.back_to_interrupt_stop();
            let regs = self.task.regs;
            let _ = raw::set_regs(self.task.npid(), &regs);
            let _ = self.task.set_sigmask(self.saved_mask);
        }
    }
}
