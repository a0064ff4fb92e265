//! Seccomp filters back into each thread, oldest first.
//!
//! Installed while the task still has the engine's privileges (a filter
//! needs CAP_SYS_ADMIN or no_new_privs, and the restored credentials may
//! have neither), after everything else that runs inside the thread:
//! PTRACE_O_SUSPEND_SECCOMP keeps the engine's later remote calls
//! unfiltered, and the filters take effect when the engine detaches.

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::kernel::seccomp::{chain, SECCOMP_MODE_FILTER, SECCOMP_MODE_STRICT};
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;

use super::load::Images;
use super::stage::{Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;

pub const KIND: Kind = Kind {
    name: "seccomp",
    validate,
    new: |_: &Images, _: &RestoreOptions| Ok(Box::new(Seccomp)),
};

/// Every thread's seccomp state can be installed again.
fn validate(imgs: &Images) -> Result<()> {
    for t in &imgs.tasks {
        let cores =
            std::iter::once((t.pid, &t.core)).chain(t.threads.iter().map(|(tid, c)| (*tid, c)));
        for (tid, core) in cores {
            if let Some(why) = core
                .thread_core
                .as_ref()
                .and_then(|th| check(th, &imgs.seccomp))
            {
                return Err(imgs.bad(&format!("core-{tid}.img"), why));
            }
        }
    }
    Ok(())
}

struct Seccomp;

impl Restorer for Seccomp {
    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        if stage != TaskStage::Seccomp {
            return Ok(());
        }
        let (imgs, t) = (cx.imgs, cx.t);
        cx.in_leader(|r, mem, _| install(r, t.pid, mem, t.thread(), &imgs.seccomp))?;
        cx.in_threads(|r, mem, _, tid, core| {
            let tcore = core.thread_core.as_ref().expect("validated");
            install(r, tid, mem, tcore, &imgs.seccomp)
        })
    }
}

const SECCOMP_SET_MODE_STRICT: u64 = 0;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// The flags the kernel remembers per filter and lets us set again.
const KNOWN_FLAGS: u32 = 2 /* LOG */ | 4 /* SPEC_ALLOW */;

/// Why the seccomp state of one thread core cannot be restored, if so.
pub fn check(th: &pb::ThreadCoreEntry, filters: &[pb::SeccompFilter]) -> Option<String> {
    match th.seccomp_mode.unwrap_or(0) {
        0 | SECCOMP_MODE_STRICT => None,
        SECCOMP_MODE_FILTER => {
            let Some(newest) = th.seccomp_filter else {
                return Some("seccomp filter mode without a filter index".into());
            };
            match chain(filters, newest) {
                None => Some(format!(
                    "seccomp filter {newest}: not in seccomp.img, or its chain is broken"
                )),
                Some(c) => c.iter().find_map(|f| {
                    let flags = f.flags.unwrap_or(0);
                    if f.filter.is_empty() || f.filter.len() % 8 != 0 || f.filter.len() > 4096 * 8 {
                        Some(format!(
                            "a seccomp filter of {} bytes is not a BPF program",
                            f.filter.len()
                        ))
                    } else if flags & !KNOWN_FLAGS != 0 {
                        Some(format!(
                            "seccomp filter flags {flags:#x} are not restorable"
                        ))
                    } else {
                        None
                    }
                }),
            }
        }
        m => Some(format!("unknown seccomp mode {m}")),
    }
}

/// Puts the thread behind `r` into its dumped seccomp mode.
pub fn install(
    r: &mut Remote<'_>,
    tid: Pid,
    mem: &TaskMem,
    th: &pb::ThreadCoreEntry,
    filters: &[pb::SeccompFilter],
) -> Result<()> {
    match th.seccomp_mode.unwrap_or(0) {
        SECCOMP_MODE_STRICT => {
            r.call(
                libc::SYS_seccomp,
                &[SECCOMP_SET_MODE_STRICT, 0, 0],
                "seccomp(SECCOMP_SET_MODE_STRICT)",
            )?;
        }
        SECCOMP_MODE_FILTER => {
            let newest = th.seccomp_filter.unwrap_or(0);
            let progs = chain(filters, newest).ok_or_else(|| {
                Error::task(tid, format!("seccomp filter {newest}"), "broken chain")
            })?;
            let longest = progs.iter().map(|f| f.filter.len()).max().unwrap_or(0);
            let len = (16 + longest as u64).next_multiple_of(4096);
            let buf = r.mmap_anon(
                0,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                "a buffer for seccomp filters",
            )?;
            for (i, f) in progs.iter().enumerate() {
                // struct sock_fprog { u16 len; u64 filter; } then the program.
                let mut b = Vec::with_capacity(16 + f.filter.len());
                b.extend_from_slice(&((f.filter.len() / 8) as u64).to_le_bytes());
                b.extend_from_slice(&(buf + 16).to_le_bytes());
                b.extend_from_slice(&f.filter);
                mem.write(buf, &b)?;
                r.call(
                    libc::SYS_seccomp,
                    &[SECCOMP_SET_MODE_FILTER, f.flags.unwrap_or(0) as u64, buf],
                    &format!("seccomp(SECCOMP_SET_MODE_FILTER) of filter {i} of the chain"),
                )?;
            }
            r.call(
                libc::SYS_munmap,
                &[buf, len],
                "munmap of the seccomp buffer",
            )?;
        }
        _ => {}
    }
    Ok(())
}
