//! Seccomp filters, per thread (seccomp.img).
//!
//! The kernel keeps a chain of filters per thread; threads forked or
//! cloned after a filter was installed share it. The image keeps every
//! distinct filter once, each naming the filter installed before it
//! (`prev`), and each thread names the newest filter of its chain. Two
//! filters are "the same" when their programs, flags and earlier chains
//! are: that is all a restore can reproduce, and all a program can see.
//!
//! The engine seizes with PTRACE_O_SUSPEND_SECCOMP (ptrace/mod.rs), so its
//! own remote syscalls are never filtered, on dump or on restore.

use nix::unistd::Pid as NixPid;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::sys::ptrace::{get_seccomp_filter, get_seccomp_flags};

/// Every distinct filter of the dump, in seccomp.img order.
#[derive(Debug, Default)]
pub struct SeccompTable {
    pub filters: Vec<pb::SeccompFilter>,
}

impl SeccompTable {
    /// Reads the filter chain of stopped thread `tid` (in filter mode) and
    /// returns the index of its newest filter in the table.
    pub fn dump_thread(&mut self, tid: Pid) -> Result<u32> {
        let ntid = NixPid::from_raw(tid);
        // Newest first, as the kernel numbers them.
        let mut chain = Vec::new();
        for index in 0.. {
            let what = || format!("seccomp filter {index}");
            let Some(prog) = get_seccomp_filter(ntid, index).map_err(|e| {
                Error::sys(tid, format!("{}: PTRACE_SECCOMP_GET_FILTER", what()), e)
            })?
            else {
                break;
            };
            let flags = get_seccomp_flags(ntid, index).map_err(|e| {
                Error::sys(tid, format!("{}: PTRACE_SECCOMP_GET_METADATA", what()), e)
            })?;
            chain.push((prog, flags as u32));
        }
        if chain.is_empty() {
            return Err(Error::task(
                tid,
                "seccomp",
                "the thread is in filter mode but has no filter",
            ));
        }
        let mut prev: Option<u32> = None;
        for (prog, flags) in chain.into_iter().rev() {
            let entry = pb::SeccompFilter {
                filter: prog,
                prev,
                flags: Some(flags),
            };
            let at = match self.filters.iter().position(|f| *f == entry) {
                Some(i) => i,
                None => {
                    self.filters.push(entry);
                    self.filters.len() - 1
                }
            };
            prev = Some(at as u32);
        }
        Ok(prev.expect("the chain is not empty"))
    }

    pub fn entry(&self) -> Option<pb::SeccompEntry> {
        (!self.filters.is_empty()).then(|| pb::SeccompEntry {
            seccomp_filters: self.filters.clone(),
        })
    }
}

/// Seccomp filters of every thread in filter mode, each filter stored
/// once in seccomp.img however many threads share it.
pub const KIND: super::kind::Kind = super::kind::Kind {
    name: "seccomp",
    new: |_| Ok(Box::new(SeccompTable::default())),
};

impl super::kind::Dumper for SeccompTable {
    fn task(&mut self, p: &mut super::kind::ProcCx<'_>) -> Result<()> {
        for (tid, status, tc) in p.threads.iter_mut() {
            if status.seccomp as i32 == crate::kernel::seccomp::SECCOMP_MODE_FILTER {
                tc.seccomp_filter = Some(self.dump_thread(*tid)?);
            }
        }
        Ok(())
    }

    fn finish(&mut self, cx: &super::kind::FinishCx<'_>) -> Result<()> {
        if let Some(e) = self.entry() {
            cx.dir.write_image("seccomp.img", &[e])?;
        }
        Ok(())
    }
}
