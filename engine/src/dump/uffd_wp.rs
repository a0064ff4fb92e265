//! Dirty-page tracking for incremental dumps, with userfaultfd
//! write-protection in async mode and the PAGEMAP_SCAN ioctl.
//!
//! This kernel has no soft-dirty bits (no CONFIG_MEM_SOFT_DIRTY), which is
//! what CRIU's pre-dump relies on. What it has instead:
//! - a userfaultfd with `UFFD_FEATURE_WP_ASYNC` write-protects pages
//!   without anyone handling the faults: the first write to a protected
//!   page just drops the protection (a minor fault), so the tree runs on
//!   unattended; `UFFD_FEATURE_WP_UNPOPULATED` protects the page-table
//!   holes too, so untouched pages count as clean;
//! - `PAGEMAP_SCAN` reports the pages written since they were last
//!   protected (`PAGE_IS_WRITTEN`), and protects them again in the same
//!   walk (`PM_SCAN_WP_MATCHING`); with `PM_SCAN_CHECK_WPASYNC` it refuses
//!   a VMA that is not registered, so a mapping made after the pre-dump,
//!   or one a forked child inherited (fork drops the registration without
//!   UFFD_FEATURE_EVENT_FORK), is dumped in full rather than taken for
//!   clean.
//!
//! The userfaultfd is the target's own: it is created and registered
//! inside the target through remote syscalls (a uffd only registers
//! ranges of its creator's mm). It must stay open after the engine is
//! gone: releasing a uffd clears the write protection of every page it
//! registered (userfaultfd_release -> userfaultfd_clear_vma ->
//! uffd_wp_range(..., false) in the kernel), and the next dump would see
//! every page as written. So it is parked at a high fd number in the
//! target and recorded in the pre-dump's images
//! ([`crate::images::chain::TRACK_FILE`]); the next dump recognises it
//! (`anon_inode:[userfaultfd]` at the recorded number), does not dump it
//! as a file, and closes it once its images are committed. A dump that
//! fails leaves it in place: the tree stays as it was, still tracked.
//!
//! Soft-dirty tracking, where the kernel has it, is not implemented: the
//! pre-dump refuses with a message naming the missing feature instead.

use super::freeze::FrozenProc;
use crate::error::{Error, Pid, Result};
use crate::images::chain::Tracked;
use crate::images::pb;
use crate::images::vma::{
    VMA_ANON_PRIVATE, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_FILE_PRIVATE,
};
use crate::proc::pagemap::PagemapReader;
use crate::ptrace::scratch::ScratchSession;
use crate::sys::pagemap_scan::{
    scan, Scan, PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING,
};

/// What /proc/PID/fd/N links to for a userfaultfd.
pub const UFFD_LINK: &str = "anon_inode:[userfaultfd]";

const UFFD_API: u64 = 0xaa;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: u64 = 0xc018_aa3f;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// userfaultfd(2) flag: only faults from user mode, which an unprivileged
/// task may ask for whatever vm.unprivileged_userfaultfd says (write
/// faults of the kernel on a protected page are resolved in async mode
/// without the uffd anyway).
const UFFD_USER_MODE_ONLY: u64 = 1;
/// How far below the task's RLIMIT_NOFILE the uffd is parked.
const PARK_BELOW_LIMIT: u64 = 32;

/// Whether mapping `v` is tracked: private and writable memory of the
/// task's own (not the kernel's vDSO and friends). Shared memory is
/// always dumped whole.
pub fn trackable(v: &pb::VmaEntry) -> bool {
    v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE) != 0
        && v.status & (VMA_AREA_VDSO | VMA_AREA_VSYSCALL | VMA_AREA_VVAR) == 0
        && v.prot & libc::PROT_WRITE as u32 != 0
}

/// Whether fd `fd` of `pid` is a userfaultfd.
pub fn is_uffd(pid: Pid, fd: i32) -> bool {
    crate::proc::fdinfo::read_fd_link(pid, fd)
        .is_ok_and(|l| l.as_encoded_bytes() == UFFD_LINK.as_bytes())
}

/// Start (or go on) tracking writes in the process of session `s`: a
/// userfaultfd in async write-protect mode, made in the task and parked
/// at a high fd unless `existing` is one already, registered over every
/// range of `ranges` it accepts. Returns the parked fd and whether it was
/// made now.
pub fn arm(
    pid: Pid,
    s: &mut ScratchSession<'_>,
    existing: Option<i32>,
    ranges: &[(u64, u64)],
) -> Result<(i32, bool)> {
    let (fd, made) = match existing {
        Some(fd) => (fd, false),
        None => (make(pid, s)?, true),
    };
    let mut registered = 0;
    for &(start, end) in ranges {
        let mut arg = [0u8; 32];
        arg[0..8].copy_from_slice(&start.to_ne_bytes());
        arg[8..16].copy_from_slice(&(end - start).to_ne_bytes());
        arg[16..24].copy_from_slice(&UFFDIO_REGISTER_MODE_WP.to_ne_bytes());
        s.write(64, &arg)?;
        let r = s.raw(libc::SYS_ioctl, &[fd as u64, UFFDIO_REGISTER, s.addr + 64])?;
        if r < 0 {
            // A mapping the kernel will not track (VM_DROPPABLE, a
            // special file): it stays unregistered and the next dump
            // stores it whole.
            debug!(
                "pid {pid}: mapping {start:#x}-{end:#x} not tracked: UFFDIO_REGISTER: {}",
                nix::errno::Errno::from_raw(-r as i32)
            );
        } else {
            registered += 1;
        }
    }
    debug!(
        "pid {pid}: write tracking through fd {fd}{}: {registered} of {} mappings",
        if made { " (new)" } else { "" },
        ranges.len()
    );
    Ok((fd, made))
}

/// A new userfaultfd in the task, API handshake done, parked high.
fn make(pid: Pid, s: &mut ScratchSession<'_>) -> Result<i32> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
    let fd = s.call(
        libc::SYS_userfaultfd,
        &[flags],
        "userfaultfd(UFFD_USER_MODE_ONLY)",
    )? as i32;
    let close = |s: &mut ScratchSession<'_>, fd: i32| {
        let _ = s.raw(libc::SYS_close, &[fd as u64]);
    };
    let mut api = [0u8; 24];
    api[0..8].copy_from_slice(&UFFD_API.to_ne_bytes());
    api[8..16]
        .copy_from_slice(&(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED).to_ne_bytes());
    s.write(0, &api)?;
    let r = s.raw(libc::SYS_ioctl, &[fd as u64, UFFDIO_API, s.addr])?;
    if r < 0 {
        close(s, fd);
        return Err(Error::unsupported(
            pid,
            "write tracking (UFFDIO_API with UFFD_FEATURE_WP_ASYNC | WP_UNPOPULATED)",
            format!(
                "{}: the kernel lacks asynchronous userfaultfd write-protection (Linux 6.7+), and soft-dirty tracking is not implemented",
                nix::errno::Errno::from_raw(-r as i32)
            ),
        ));
    }
    let nofile = crate::proc::limits::read(pid)?[libc::RLIMIT_NOFILE as usize].cur;
    let from = nofile.min(1 << 20).saturating_sub(PARK_BELOW_LIMIT).max(3);
    let parked = s.raw(
        libc::SYS_fcntl,
        &[fd as u64, libc::F_DUPFD_CLOEXEC as u64, from],
    );
    close(s, fd);
    let parked = parked?;
    if parked < 0 {
        return Err(Error::sys(
            pid,
            format!("parking the userfaultfd at fd {from} or above (fcntl F_DUPFD_CLOEXEC, in the task)"),
            nix::errno::Errno::from_raw(-parked as i32),
        ));
    }
    Ok(parked as i32)
}

/// Write-protect every page of `ranges` (registered ones) written since
/// the last protection: from now on, only pages the task writes count as
/// written. The tree must be frozen since its pages were copied.
pub fn write_protect(pid: Pid, pagemap: &PagemapReader, ranges: &[(u64, u64)]) -> Result<()> {
    use std::os::fd::AsFd;
    let mut out = Vec::new();
    for &(start, end) in ranges {
        out.clear();
        let r = scan(
            pagemap.as_fd(),
            start,
            end,
            Scan {
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                category_mask: PAGE_IS_WRITTEN,
                anyof_mask: 0,
                return_mask: PAGE_IS_WRITTEN,
            },
            &mut out,
        );
        match r {
            Ok(()) => {}
            // Not registered: dumped whole next time.
            Err(nix::errno::Errno::EPERM) => {}
            Err(e) => {
                return Err(Error::sys(
                    pid,
                    format!("write-protecting {start:#x}-{end:#x} (PAGEMAP_SCAN)"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// The pages of `[start, end)` written since they were last protected,
/// as sorted ranges; None if the range is not (wholly) tracked, so that
/// every page counts as written.
pub fn written(
    pid: Pid,
    pagemap: &PagemapReader,
    start: u64,
    end: u64,
) -> Result<Option<Vec<(u64, u64)>>> {
    use std::os::fd::AsFd;
    let mut out = Vec::new();
    let r = scan(
        pagemap.as_fd(),
        start,
        end,
        Scan {
            flags: PM_SCAN_CHECK_WPASYNC,
            category_mask: PAGE_IS_WRITTEN,
            anyof_mask: 0,
            return_mask: PAGE_IS_WRITTEN,
        },
        &mut out,
    );
    match r {
        Ok(()) => Ok(Some(out.iter().map(|r| (r.start, r.end)).collect())),
        Err(nix::errno::Errno::EPERM) => Ok(None),
        Err(e) => Err(Error::sys(
            pid,
            format!("written pages of {start:#x}-{end:#x} (PAGEMAP_SCAN)"),
            e,
        )),
    }
}

/// Close fd `fd` in frozen process `p` through a remote call, best
/// effort (a failure is logged: the fd then stays, harmless but open).
pub fn close_in(p: &mut FrozenProc, fd: i32) {
    let pid = p.pid;
    let r = (|| -> Result<()> {
        let vmas = crate::proc::maps::read_smaps(pid)?;
        let mem = crate::ptrace::mem::TaskMem::open(pid)?;
        let ip = super::syscall_ip(&vmas, &mem)?;
        let leader = p.threads.first_mut().ok_or_else(|| {
            Error::task(pid, "closing the write-tracking userfaultfd", "no thread")
        })?;
        let mut r = crate::ptrace::remote::Remote::new(leader, ip)?;
        r.call(
            libc::SYS_close,
            &[fd as u64],
            &format!("close({fd}) of the write-tracking userfaultfd"),
        )?;
        r.finish()
    })();
    match r {
        Ok(()) => debug!("pid {pid}: write-tracking userfaultfd (fd {fd}) closed"),
        Err(e) => warn!("pid {pid}: closing the write-tracking userfaultfd (fd {fd}): {e}"),
    }
}

/// Close the tracking a parent image recorded (`parked`), in every
/// process of the tree that has a userfaultfd at one of those fd numbers
/// (a child forked since the pre-dump inherited it).
pub fn close_parked(tree: &mut [FrozenProc], parked: &[Tracked]) {
    let fds: std::collections::BTreeSet<i32> = parked.iter().map(|t| t.fd).collect();
    for p in tree.iter_mut().filter(|p| p.zombie.is_none()) {
        for &fd in &fds {
            if is_uffd(p.pid, fd) {
                close_in(p, fd);
            }
        }
    }
}

/// Undo the tracking a failed dump armed (`armed`). Pages it protected
/// again no longer tell what was written since the parent image, so the
/// parent's userfaultfd goes too where it was reused: the next dump
/// against that parent stores those processes whole, which is always
/// right.
pub fn disarm(tree: &mut [FrozenProc], armed: &[Tracked], _parent: &[Tracked]) {
    for t in armed {
        if let Some(p) = tree.iter_mut().find(|p| p.pid == t.pid) {
            close_in(p, t.fd);
        }
    }
}
