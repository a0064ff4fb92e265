//! A thread's rseq registration, as PTRACE_GET_RSEQ_CONFIGURATION reports
//! it: dump stores it, and restore asks it of a freshly cloned child to
//! undo the engine's own registration, which the child inherited.

use crate::error::Pid;
use crate::images::pb;

const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;

/// `None` when the thread has no registration, or the kernel cannot say
/// (the request is from Linux 5.13).
pub fn rseq_config(tid: Pid) -> Option<pb::RseqEntry> {
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        ptr: u64,
        size: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    let mut c = Conf::default();
    // SAFETY: the kernel writes at most size_of::<Conf>() bytes into `c`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION as _,
            tid,
            std::mem::size_of::<Conf>(),
            &mut c as *mut Conf,
        )
    };
    (r > 0 && c.ptr != 0).then_some(pb::RseqEntry {
        rseq_abi_pointer: c.ptr,
        rseq_abi_size: c.size,
        signature: c.sig,
        rseq_cs_pointer: None,
    })
}
