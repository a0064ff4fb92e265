//! A remote-syscall session with one scratch page in the task, for calls
//! that take or return memory (sigaction, sigaltstack, prctl getters, ...).
//! The page is unmapped again when the session ends, also on error paths
//! (Drop), so a dump never leaves anything behind in the task.

use super::mem::TaskMem;
use super::remote::{Remote, BATCH_ENTRY};
use super::Seized;
use crate::error::Result;

pub const SCRATCH_SIZE: u64 = 4096;

pub struct ScratchSession<'a> {
    remote: Option<Remote<'a>>,
    pub mem: &'a TaskMem,
    pub addr: u64,
    /// What this session mapped in the task (start, length), unmapped by
    /// it again: the owning session's scratch page with its batch area
    /// right after it, in one mapping (one mmap and one munmap a
    /// session, not two of each); a borrowing session's batch area, if
    /// it runs batches.
    mapped: Vec<(u64, u64)>,
    /// Pages for batches of calls (code, table, data), always this
    /// session's own.
    batch_area: Option<u64>,
    /// The batch code is in the area's first page, made executable: on
    /// the first batch, as a session may make none.
    code_ready: bool,
}

/// The batch area: one page of code, `TABLE_PAGES` of table, one of
/// data.
const BATCH_PAGES: u64 = TABLE_PAGES + 2;
/// Room for the tables of a wave of threads' batches (`batch_each`): 64
/// threads of 4 calls.
const TABLE_PAGES: u64 = 6;
const PAGE: u64 = 4096;

impl<'a> ScratchSession<'a> {
    pub fn open(task: &'a mut Seized, syscall_ip: u64, mem: &'a TaskMem) -> Result<Self> {
        let mut remote = Remote::new(task, syscall_ip)?;
        let len = SCRATCH_SIZE + BATCH_PAGES * PAGE;
        let addr = remote.mmap_anon(
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            "the scratch page and batch area",
        )?;
        Ok(ScratchSession {
            remote: Some(remote),
            mem,
            addr,
            mapped: vec![(addr, len)],
            batch_area: Some(addr + SCRATCH_SIZE),
            code_ready: false,
        })
    }

    /// A session in another thread of the same process, using the page an
    /// owning session mapped (threads share the address space).
    pub fn borrow(
        task: &'a mut Seized,
        syscall_ip: u64,
        mem: &'a TaskMem,
        addr: u64,
    ) -> Result<Self> {
        Ok(ScratchSession {
            remote: Some(Remote::new(task, syscall_ip)?),
            mem,
            addr,
            mapped: Vec::new(),
            batch_area: None,
            code_ready: false,
        })
    }

    fn remote(&mut self) -> &mut Remote<'a> {
        self.remote.as_mut().expect("session is open")
    }

    pub fn call(&mut self, nr: i64, args: &[u64], what: &str) -> Result<u64> {
        self.remote().call(nr, args, what)
    }

    /// Raw result (negative errno), for calls whose failure is an answer.
    pub fn raw(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        self.remote().raw(nr, args)
    }

    fn batch_area(&mut self) -> Result<u64> {
        let r = self.remote.as_mut().expect("session is open");
        let area = match self.batch_area {
            Some(a) => a,
            None => {
                let len = BATCH_PAGES * PAGE;
                let a =
                    r.mmap_anon(0, len, libc::PROT_READ | libc::PROT_WRITE, "the batch area")?;
                self.mapped.push((a, len));
                self.batch_area = Some(a);
                a
            }
        };
        if !self.code_ready {
            r.install_batch_code(self.mem, area)?;
            self.code_ready = true;
        }
        Ok(area)
    }

    /// A page the calls of a batch may read from and write to.
    pub fn batch_data(&mut self) -> Result<u64> {
        Ok(self.batch_area()? + (1 + TABLE_PAGES) * PAGE)
    }

    /// Run `calls` in one go (`Remote::batch`); raw results in order.
    pub fn batch(&mut self, calls: &[crate::ptrace::remote::Call]) -> Result<Vec<i64>> {
        let area = self.batch_area()?;
        let capacity = (TABLE_PAGES * PAGE) as usize / BATCH_ENTRY;
        let mem = self.mem;
        self.remote().batch(mem, area, area + PAGE, capacity, calls)
    }

    /// Run `calls[i]` in `others[i]`, other threads of this session's
    /// process, all at once (`Remote::batch_each`), through this session's
    /// batch code; raw results per thread. Their pipes are made here
    /// first, in one batch of this session's thread, and on an error
    /// whatever is left of them is closed again, so the task's fd table
    /// ends as it was. None, with nothing run, when the task has no room
    /// for two fds a thread (near its RLIMIT_NOFILE): the caller makes
    /// the calls one by one then.
    pub fn batch_each(
        &mut self,
        others: &mut [Remote<'_>],
        calls: &[Vec<crate::ptrace::remote::Call>],
    ) -> Result<Option<Vec<Vec<i64>>>> {
        let area = self.batch_area()?;
        let data = area + (1 + TABLE_PAGES) * PAGE;
        let mut tables = Vec::with_capacity(calls.len());
        let mut at = area + PAGE;
        for c in calls {
            tables.push(at);
            at += ((c.len() + 2) * BATCH_ENTRY) as u64;
        }
        if at > data || (calls.len() * 8) as u64 > PAGE {
            return Err(crate::error::Error::Usage(format!(
                "internal: {} threads' batches do not fit the batch area",
                calls.len()
            )));
        }
        let made: Vec<crate::ptrace::remote::Call> = (0..calls.len() as u64)
            .map(|i| {
                (
                    libc::SYS_pipe2,
                    [data + 8 * i, libc::O_CLOEXEC as u64, 0, 0, 0, 0],
                )
            })
            .collect();
        let res = self.batch(&made)?;
        let mut b = vec![0u8; calls.len() * 8];
        self.mem.read(data, &mut b)?;
        let word =
            |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64;
        let pipes: Vec<(u64, u64)> = res
            .iter()
            .enumerate()
            .filter(|(_, &r)| r == 0)
            .map(|(i, _)| (word(8 * i), word(8 * i + 4)))
            .collect();
        let full = [-libc::EMFILE as i64, -libc::ENFILE as i64];
        let ran = match res.iter().find(|&&r| r != 0) {
            Some(r) if full.contains(r) => Ok(None),
            Some(&r) => Err(crate::error::Error::sys(
                self.mem.pid(),
                "pipe2 for the threads' batches of remote syscalls (in the task)",
                nix::errno::Errno::from_raw(-r as i32),
            )),
            None => {
                let mem = self.mem;
                Remote::batch_each(others, mem, area, &tables, &pipes, calls).map(Some)
            }
        };
        if !matches!(ran, Ok(Some(_))) {
            let close: Vec<crate::ptrace::remote::Call> = pipes
                .iter()
                .flat_map(|&(r, w)| [r, w])
                .map(|fd| (libc::SYS_close, [fd, 0, 0, 0, 0, 0]))
                .collect();
            let _ = self.batch(&close);
        }
        ran
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.mem.read(self.addr + off, buf)
    }

    pub fn write(&self, off: u64, buf: &[u8]) -> Result<()> {
        self.mem.write(self.addr + off, buf)
    }

    pub fn read_u64(&self, off: u64) -> Result<u64> {
        self.mem.read_u64(self.addr + off)
    }

    /// Unmap what the session mapped, put the registers and mask back.
    pub fn close(mut self) -> Result<()> {
        let mut remote = self.remote.take().expect("session is open");
        for (addr, len) in std::mem::take(&mut self.mapped).into_iter().rev() {
            remote.call(
                libc::SYS_munmap,
                &[addr, len],
                "munmap of the scratch page or batch area",
            )?;
        }
        remote.finish()
    }
}

impl Drop for ScratchSession<'_> {
    fn drop(&mut self) {
        let Some(mut r) = self.remote.take() else {
            return;
        };
        for &(addr, len) in self.mapped.iter().rev() {
            let _ = r.raw(libc::SYS_munmap, &[addr, len]);
        }
        // Remote's own Drop restores registers and mask.
    }
}
