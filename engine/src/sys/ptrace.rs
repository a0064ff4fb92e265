//! ptrace requests that `nix` does not cover (regsets, signal masks,
//! siginfo queues, seccomp filters), plus re-exports of the ones it does.

use nix::errno::Errno;
use nix::unistd::Pid;

pub use libc::user_regs_struct as Regs;

const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;
const PTRACE_GETREGSET: u32 = 0x4204;
const PTRACE_SETREGSET: u32 = 0x4205;
const PTRACE_GETSIGMASK: u32 = 0x420a;
const PTRACE_SETSIGMASK: u32 = 0x420b;

/// Largest xsave area we accept; the kernel tells the real size.
pub const XSAVE_MAX: usize = 16384;

fn regset(req: u32, tid: Pid, note: usize, buf: *mut u8, len: usize) -> nix::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    // SAFETY: `iov` points at `len` valid bytes owned by the caller; the
    // kernel writes at most `len` (GETREGSET) or reads them (SETREGSET).
    let r = unsafe {
        libc::ptrace(
            req as _,
            tid.as_raw(),
            note as *mut libc::c_void,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r).map(|_| iov.iov_len)
}

pub fn get_regs(tid: Pid) -> nix::Result<Regs> {
    // SAFETY: Regs is plain old data; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    let n = regset(
        PTRACE_GETREGSET,
        tid,
        NT_PRSTATUS,
        (&mut regs as *mut Regs).cast(),
        std::mem::size_of::<Regs>(),
    )?;
    if n != std::mem::size_of::<Regs>() {
        return Err(Errno::EIO);
    }
    Ok(regs)
}

pub fn set_regs(tid: Pid, regs: &Regs) -> nix::Result<()> {
    let mut copy = *regs;
    regset(
        PTRACE_SETREGSET,
        tid,
        NT_PRSTATUS,
        (&mut copy as *mut Regs).cast(),
        std::mem::size_of::<Regs>(),
    )
    .map(|_| ())
}

/// The full xsave area (x87, SSE, AVX, ... whatever this CPU has).
pub fn get_xstate(tid: Pid) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSAVE_MAX];
    let n = regset(
        PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE,
        buf.as_mut_ptr(),
        buf.len(),
    )?;
    buf.truncate(n);
    Ok(buf)
}

pub fn set_xstate(tid: Pid, xstate: &[u8]) -> nix::Result<()> {
    let mut buf = xstate.to_vec();
    regset(
        PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE,
        buf.as_mut_ptr(),
        buf.len(),
    )
    .map(|_| ())
}

pub fn get_sigmask(tid: Pid) -> nix::Result<u64> {
    let mut mask = 0u64;
    // SAFETY: the kernel writes exactly 8 bytes (data size) into `mask`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK as _,
            tid.as_raw(),
            8usize as *mut libc::c_void,
            &mut mask as *mut u64,
        )
    };
    Errno::result(r).map(|_| mask)
}

pub fn set_sigmask(tid: Pid, mask: u64) -> nix::Result<()> {
    let m = mask;
    // SAFETY: the kernel reads exactly 8 bytes from `m`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK as _,
            tid.as_raw(),
            8usize as *mut libc::c_void,
            &m as *const u64,
        )
    };
    Errno::result(r).map(|_| ())
}

const PTRACE_SECCOMP_GET_FILTER: u32 = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: u32 = 0x420d;
/// BPF_MAXINSNS: no filter is longer.
const BPF_MAXINSNS: usize = 4096;
/// sizeof(struct sock_filter).
pub const SOCK_FILTER_SIZE: usize = 8;

/// The `index`-th seccomp filter of a stopped tracee (0 is the newest),
/// as raw `struct sock_filter[]`; `None` past the oldest one.
pub fn get_seccomp_filter(tid: Pid, index: u64) -> nix::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; BPF_MAXINSNS * SOCK_FILTER_SIZE];
    // SAFETY: `buf` holds BPF_MAXINSNS instructions, the most a filter has;
    // the kernel writes the filter's instructions into it and returns
    // their count.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER as _,
            tid.as_raw(),
            index as *mut libc::c_void,
            buf.as_mut_ptr(),
        )
    };
    match Errno::result(r) {
        Ok(n) => {
            buf.truncate(n as usize * SOCK_FILTER_SIZE);
            Ok(Some(buf))
        }
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The SECCOMP_FILTER_FLAG_* the `index`-th filter was installed with
/// (only LOG and SPEC_ALLOW are remembered by the kernel).
pub fn get_seccomp_flags(tid: Pid, index: u64) -> nix::Result<u64> {
    // struct seccomp_metadata { filter_off, flags }
    let mut md = [index, 0u64];
    // SAFETY: `md` is a 16-byte struct seccomp_metadata; the kernel reads
    // filter_off and writes flags.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_METADATA as _,
            tid.as_raw(),
            std::mem::size_of_val(&md) as *mut libc::c_void,
            md.as_mut_ptr(),
        )
    };
    Errno::result(r).map(|_| md[1])
}
