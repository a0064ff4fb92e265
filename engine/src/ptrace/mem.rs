//! Reading and writing another task's memory.
//!
//! `/proc/PID/mem` goes through FOLL_FORCE, so it reaches PROT_NONE and
//! read-only private pages; `process_vm_readv` is used for the bulk page
//! copy because it copies once, straight into our buffer.

use std::fs::{File, OpenOptions};
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid as NixPid;

use crate::error::{Error, Pid, Result};

pub struct TaskMem {
    pid: Pid,
    file: File,
}

impl TaskMem {
    pub fn open(pid: Pid) -> Result<TaskMem> {
        let path = format!("/proc/{pid}/mem");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, format!("pid {pid}: opening task memory"), e))?;
        Ok(TaskMem { pid, file })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Read exactly `buf.len()` bytes at `addr` (any protection).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, addr).map_err(|e| {
            Error::task(
                self.pid,
                format!("memory at {addr:#x}+{:#x}", buf.len()),
                format!("read failed: {e}"),
            )
        })
    }

    /// Write all of `buf` at `addr` (any protection of a private mapping).
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        self.file.write_all_at(buf, addr).map_err(|e| {
            Error::task(
                self.pid,
                format!("memory at {addr:#x}+{:#x}", buf.len()),
                format!("write failed: {e}"),
            )
        })
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Read a NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        let mut a = addr;
        while out.len() < max {
            let n = self.file.read_at(&mut chunk, a).map_err(|e| {
                Error::task(
                    self.pid,
                    format!("string at {a:#x}"),
                    format!("read failed: {e}"),
                )
            })?;
            if n == 0 {
                break;
            }
            if let Some(z) = chunk[..n].iter().position(|&c| c == 0) {
                out.extend_from_slice(&chunk[..z]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            a += n as u64;
        }
        Ok(out)
    }
}

/// Copy `remote` ranges of `pid` into `local` in one `process_vm_readv`
/// call per batch. Returns the number of bytes copied; a short count means
/// the range at that offset was not readable (caller falls back to
/// `TaskMem::read`).
pub fn read_vm(pid: Pid, local: &mut [u8], remote: &[RemoteIoVec]) -> Result<usize> {
    let mut iov = [IoSliceMut::new(local)];
    process_vm_readv(NixPid::from_raw(pid), &mut iov, remote)
        .map_err(|e| Error::sys(pid, "process_vm_readv of task memory", e))
}
