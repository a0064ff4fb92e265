//! A remote-syscall session with one scratch page in the task, for calls
//! that take or return memory (sigaction, sigaltstack, prctl getters, ...).
//! The page is unmapped again when the session ends, also on error paths
//! (Drop), so a dump never leaves anything behind in the task.

use super::mem::TaskMem;
use super::remote::Remote;
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
}

impl<'a> ScratchSession<'a> {
    pub fn open(task: &'a mut Seized, syscall_ip: u64, mem: &'a TaskMem) -> Result<Self> {
        let mut remote = Remote::new(task, syscall_ip)?;
        let addr = remote.call(
            libc::SYS_mmap,
            &[
                0,
                SCRATCH_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
            "mmap of the scratch page",
        )?;
        Ok(ScratchSession {
            remote: Some(remote),
            mem,
            addr,
            owned: true,
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
        if let Some(mut r) = self.remote.take().filter(|_| self.owned) {
            let _ = r.raw(libc::SYS_munmap, &[self.addr, SCRATCH_SIZE]);
            // Remote's own Drop restores registers and mask.
        }
    }
}
