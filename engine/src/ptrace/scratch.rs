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
    /// The page was mapped by this session (and is unmapped by it), rather
    /// than borrowed from the session of another thread of the process.
    owned: bool,
    /// Pages for batches of calls (code, table, data), mapped on first use
    /// and always by this session.
    batch_area: Option<u64>,
}

/// The batch area: one page of code, two of table, one of data.
const BATCH_PAGES: u64 = 4;
const PAGE: u64 = 4096;

impl<'a> ScratchSession<'a> {
    pub fn open(task: &'a mut Seized, syscall_ip: u64, mem: &'a TaskMem) -> Result<Self> {
        let mut remote = Remote::new(task, syscall_ip)?;
        let addr = remote.mmap_anon(
            0,
            SCRATCH_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            "the scratch page",
        )?;
        Ok(ScratchSession {
            remote: Some(remote),
            mem,
            addr,
            owned: true,
            batch_area: None,
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
            owned: false,
            batch_area: None,
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
        if let Some(a) = self.batch_area {
            return Ok(a);
        }
        let r = self.remote.as_mut().expect("session is open");
        let area = r.mmap_anon(
            0,
            BATCH_PAGES * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            "the batch area",
        )?;
        self.batch_area = Some(area);
        r.install_batch_code(self.mem, area)?;
        Ok(area)
    }

    /// A page the calls of a batch may read from and write to.
    pub fn batch_data(&mut self) -> Result<u64> {
        Ok(self.batch_area()? + 3 * PAGE)
    }

    /// Run `calls` in one go (`Remote::batch`); raw results in order.
    pub fn batch(&mut self, calls: &[crate::ptrace::remote::Call]) -> Result<Vec<i64>> {
        let area = self.batch_area()?;
        let capacity = (2 * PAGE) as usize / BATCH_ENTRY;
        let mem = self.mem;
        self.remote().batch(mem, area, area + PAGE, capacity, calls)
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

    /// Unmap the page, put the registers and mask back.
    pub fn close(mut self) -> Result<()> {
        let addr = self.addr;
        let mut remote = self.remote.take().expect("session is open");
        if let Some(area) = self.batch_area.take() {
            remote.call(
                libc::SYS_munmap,
                &[area, BATCH_PAGES * PAGE],
                "munmap of the batch area",
            )?;
        }
        if self.owned {
            remote.call(
                libc::SYS_munmap,
                &[addr, SCRATCH_SIZE],
                "munmap of the scratch page",
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
        if let Some(area) = self.batch_area.take() {
            let _ = r.raw(libc::SYS_munmap, &[area, BATCH_PAGES * PAGE]);
        }
        if self.owned {
            let _ = r.raw(libc::SYS_munmap, &[self.addr, SCRATCH_SIZE]);
            // Remote's own Drop restores registers and mask.
        }
    }
}
