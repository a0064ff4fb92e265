//! Rebuilding a task's address space from the outside, through remote
//! syscalls in the freshly cloned (and still engine-shaped) child:
//!
//! 1. unmap everything the child inherited from the engine except the
//!    vDSO group ([vvar], [vvar_vclock], [vdso]), whose `syscall`
//!    instruction the remote calls run on;
//! 2. move the vDSO group to the dumped addresses (libc holds pointers
//!    into it), via a temporary place so no move clobbers another; or,
//!    where this kernel's vDSO differs from the dumped one, map the dumped
//!    vDSO's copy back with jumps into this kernel's (`restore/vdso.rs`);
//! 3. map every dumped VMA at its address (writable for now where pages
//!    must be written);
//! 4. copy the pages in with process_vm_writev straight from the mapped
//!    pages files; then set the final protections and madvise flags.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::Mutex;

use nix::sys::uio::{process_vm_writev, RemoteIoVec};
use nix::unistd::Pid as NixPid;

use super::load::{Images, PageSet, TaskImages};
use super::stage::{lock, Kind, Restorer, TaskCx, TaskStage};
use super::RestoreOptions;
use crate::error::{Error, Pid, Result};
use crate::images::pagemap::PAGE;
use crate::images::pb;
use crate::images::vma::{
    VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
    VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};
use crate::proc::maps::{self, SpecialVma};
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::sys::Mmap;

pub const KIND: Kind = Kind {
    name: "memory",
    validate: super::vdso::validate,
    new: |imgs: &Images, opts: &RestoreOptions| {
        let proxies = imgs
            .tasks
            .iter()
            .zip(super::vdso::plan_all(imgs)?)
            .filter_map(|(t, p)| Some((t.pid, p?)))
            .collect();
        let remote = match (&opts.page_server, opts.lazy_pages) {
            (Some(ps), true) => Some(super::lazy::connect(imgs, ps)?),
            _ => None,
        };
        Ok(Box::new(Memory {
            proxies,
            lazy_pages: opts.lazy_pages,
            page_server: opts.page_server.clone(),
            remote,
            ..Default::default()
        }))
    },
};

/// The address space of every task: its mappings and pages, shared
/// anonymous memory (one object for every task that maps it), private
/// memory shared copy-on-write with the parent (`cow`), and the mm fields.
#[derive(Default)]
struct Memory {
    /// Shared by the tasks being restored side by side.
    shmem: Mutex<ShmemRegistry>,
    /// The engine's own mappings that memory shared with children must
    /// avoid (None until the tree is planned).
    busy: Option<Vec<(u64, u64)>>,
    cows: Vec<super::cow::CowPlan>,
    tries: u32,
    /// The tasks whose dumped vDSO is remapped (`restore/vdso.rs`).
    proxies: BTreeMap<Pid, super::vdso::Proxy>,
    /// `--lazy-pages`, and the daemon once started (restore/lazy.rs).
    lazy_pages: bool,
    /// Each task hands the daemon its part in turn.
    lazy: Mutex<Option<super::lazy::Daemon>>,
    /// `--page-server`: the pages files are there (restore/lazy.rs).
    page_server: Option<super::lazy::PageServer>,
    /// The daemon's connections to it, until the daemon takes them.
    remote: Option<super::lazy::Connections>,
}

impl Restorer for Memory {
    /// The lazy-pages daemon is forked now, while the engine is one
    /// thread and holds the loaded images.
    fn create(&mut self, imgs: &Images, _: &mut super::stage::EngineFds) -> Result<()> {
        if self.lazy_pages {
            *lock(&self.lazy) = Some(super::lazy::Daemon::start(imgs, self.remote.take())?);
        }
        Ok(())
    }

    /// Every task's userfaultfd is with the daemon: it may finish.
    fn finish(&mut self, imgs: &Images) -> Result<()> {
        match lock(&self.lazy).as_mut() {
            Some(d) => d.go(imgs.tasks[0].pid),
            None => Ok(()),
        }
    }

    /// The tree runs: the daemon may fill in the background now.
    fn released(&mut self) {
        if let Some(d) = lock(&self.lazy).as_mut() {
            d.running();
        }
    }

    /// Which task holds which shared memory before it forks.
    fn plan_tree(&mut self, imgs: &Images, plans: &mut [super::child::ChildPlan]) -> Result<()> {
        let busy = match self.busy.take() {
            Some(b) => b,
            // Pages on a page server: nothing is held from the parent
            // (the lazy runs were fixed when the pages were staged).
            None if self.page_server.is_some() => vec![(0, u64::MAX)],
            None => super::cow::engine_mappings()?,
        };
        self.cows = super::cow::plan(imgs, &busy)?;
        self.busy = Some(busy);
        for (plan, c) in plans.iter_mut().zip(&self.cows) {
            plan.cow = c.clone();
        }
        Ok(())
    }

    /// The engine's layout is looked at again right before the clone: a
    /// region that collides with a mapping made meanwhile is planned again
    /// without it (its pages are then written, as before).
    fn plan_holds(&mut self) -> Result<bool> {
        let now = super::cow::engine_mappings()?;
        if !super::cow::collides(&self.cows, &now) {
            return Ok(true);
        }
        self.tries += 1;
        let busy = self.busy.get_or_insert_with(Vec::new);
        busy.extend(now);
        if self.tries >= 3 {
            // Give up sharing rather than risk it: everything is busy.
            *busy = vec![(0, u64::MAX)];
        }
        Ok(false)
    }

    fn in_task(&self, stage: TaskStage, cx: &mut TaskCx<'_>) -> Result<()> {
        let (imgs, t, plan) = (cx.imgs, cx.t, cx.plan);
        match stage {
            TaskStage::AddressSpace => {
                let ip = cx.ip;
                let proxy = self.proxies.get(&t.pid);
                cx.ip = cx.in_leader(|r, mem, scratch| {
                    let here = Here {
                        mem,
                        scratch,
                        syscall_ip: ip,
                    };
                    reset_address_space(r, &here, t, &plan.cow, proxy)
                })?;
                debug!("pid {}: address space reset", t.pid);
                Ok(())
            }
            TaskStage::Memory => {
                let shmem = &self.shmem;
                // Not taken without --lazy-pages: the tasks fill their
                // memory side by side.
                let mut lazy = self.lazy_pages.then(|| lock(&self.lazy));
                let lazy = lazy.as_mut().and_then(|d| d.as_mut());
                cx.in_leader(|r, mem, scratch| {
                    let cx = FillCx {
                        file_fds: &plan.mapped_fds,
                        mem,
                        scratch,
                        cow: &plan.cow,
                        shmem_fds: &plan.shmem_fds,
                    };
                    map_and_fill(r, imgs, t, shmem, &cx, lazy)
                })?;
                debug!("pid {}: memory restored", t.pid);
                Ok(())
            }
            TaskStage::Mm => {
                cx.in_leader(|r, mem, scratch| restore_mm(r, mem, scratch, t, plan.exe_fd))
            }
            _ => Ok(()),
        }
    }
}

const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// The child inherited the engine's rseq registration; the kernel would
/// keep writing to that (soon foreign) address. Unregistered first.
fn unregister_rseq(pid: Pid) -> Option<Step> {
    let c = crate::ptrace::rseq::rseq_config(pid)?;
    Some(Step {
        call: (
            libc::SYS_rseq,
            [
                c.rseq_abi_pointer,
                c.rseq_abi_size as u64,
                RSEQ_FLAG_UNREGISTER,
                c.signature as u64,
                0,
                0,
            ],
        ),
        want: Some(0),
        what: "rseq unregister of the engine's registration".into(),
    })
}

/// One call of the address space's reset, run with the others in one
/// batch, and the result it must have (`None`: any but an error).
struct Step {
    call: crate::ptrace::remote::Call,
    want: Option<i64>,
    what: String,
}

/// Runs `steps` in one batch: each pair of ptrace stops a call costs
/// one by one is the time of a small task's reset.
fn run_steps(r: &mut Remote<'_>, here: &Here<'_>, pid: Pid, steps: &[Step]) -> Result<()> {
    let calls: Vec<_> = steps.iter().map(|s| s.call).collect();
    let got = super::batch(r, here.mem, here.scratch, &calls)?;
    for (s, &got) in steps.iter().zip(&got) {
        if (-4095..0).contains(&got) {
            return Err(Error::sys(
                pid,
                format!("{} (in the task)", s.what),
                nix::errno::Errno::from_raw(-got as i32),
            ));
        }
        if s.want.is_some_and(|w| w != got) {
            return Err(Error::task(
                pid,
                s.what.clone(),
                format!("the call returned {got:#x}"),
            ));
        }
    }
    Ok(())
}

/// Where the remote calls of a reset run: the task's memory, the
/// engine's scratch area (already mapped, with the batch code) and the
/// `syscall` instruction single calls use until the vDSO moves.
pub struct Here<'a> {
    pub mem: &'a TaskMem,
    pub scratch: u64,
    pub syscall_ip: u64,
}

/// mm fields (code/data/brk/stack/arg/env ranges, auxv, exe) in one
/// PR_SET_MM_MAP, which needs no CAP_SYS_RESOURCE.
fn restore_mm(
    r: &mut Remote<'_>,
    mem: &TaskMem,
    scratch: u64,
    t: &TaskImages,
    exe_fd: Option<RawFd>,
) -> Result<()> {
    let mm = &t.mm;
    let auxv: Vec<u8> = mm
        .mm_saved_auxv
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let auxv_at = scratch + 256;
    let mut b = Vec::with_capacity(104);
    for v in [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        mm.mm_brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        auxv_at,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    b.extend_from_slice(&(exe_fd.map_or(u32::MAX, |f| f as u32)).to_le_bytes());
    mem.write(scratch, &b)?;
    mem.write(auxv_at, &auxv)?;
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    r.call(
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, scratch, b.len() as u64, 0],
        "prctl(PR_SET_MM_MAP)",
    )?;
    Ok(())
}

const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn is_special(v: &pb::VmaEntry) -> bool {
    v.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL) != 0
}

/// An address range of `len` bytes that overlaps none of `busy`.
pub fn find_hole(busy: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut b: Vec<(u64, u64)> = busy.to_vec();
    b.sort();
    // Prefer high addresses below the usual mmap area, well away from 0.
    let mut candidate = 0x1000_0000_0000u64;
    loop {
        let end = candidate.checked_add(len)?;
        if end > TASK_SIZE {
            break;
        }
        match b.iter().find(|&&(s, e)| s < end && candidate < e) {
            Some(&(_, e)) => candidate = e.div_ceil(PAGE) * PAGE,
            None => return Some(candidate),
        }
    }
    // Anything at all from low memory up.
    candidate = 0x1_0000;
    loop {
        let end = candidate.checked_add(len)?;
        if end > TASK_SIZE {
            return None;
        }
        match b.iter().find(|&&(s, e)| s < end && candidate < e) {
            Some(&(_, e)) => candidate = e.div_ceil(PAGE) * PAGE,
            None => return Some(candidate),
        }
    }
}

/// Steps 1 and 2. Returns the new address of the `syscall` instruction.
/// The rseq unregistration, the munmaps and the vDSO group's moves go in
/// one batch from the scratch area, which stays.
pub fn reset_address_space(
    r: &mut Remote<'_>,
    here: &Here<'_>,
    t: &TaskImages,
    cow: &super::cow::CowPlan,
    proxy: Option<&super::vdso::Proxy>,
) -> Result<u64> {
    let (mem, syscall_ip) = (here.mem, here.syscall_ip);
    let pid = t.pid;
    let mut steps: Vec<Step> = unregister_rseq(pid).into_iter().collect();
    let cur = maps::read_maps(pid)?;
    let group: Vec<&maps::Vma> = cur
        .iter()
        .filter(|v| {
            matches!(
                v.is_special(),
                Some(SpecialVma::Vdso | SpecialVma::Vvar | SpecialVma::VvarVclock)
            )
        })
        .collect();
    // Everything else goes, gap by gap between the kept mappings: a few
    // munmap calls instead of one per inherited mapping (munmap ignores
    // the holes in a range).
    let mut kept: Vec<(u64, u64)> = group.iter().map(|v| (v.start, v.end)).collect();
    // Memory shared with the parent or the children stays.
    for &(s, e) in &cow.held {
        let covered = cur
            .iter()
            .filter(|v| v.start < e && s < v.end)
            .map(|v| v.end.min(e) - v.start.max(s))
            .sum::<u64>();
        if covered != e - s {
            return Err(Error::task(
                pid,
                format!("shared private memory {s:#x}-{e:#x}"),
                "the new task does not hold it",
            ));
        }
        kept.push((s, e));
    }
    // The scratch area the batch runs from.
    kept.push((here.scratch, here.scratch + super::scratch_len(t)));
    kept.sort_unstable();
    let mut from = 0u64;
    for (start, end) in kept.iter().copied().chain([(TASK_SIZE, TASK_SIZE)]) {
        if start > from {
            steps.push(Step {
                call: (libc::SYS_munmap, [from, start - from, 0, 0, 0, 0]),
                want: Some(0),
                what: format!("munmap {from:#x}-{start:#x} (what the engine left)"),
            });
        }
        from = from.max(end);
    }
    let cur_ranges: Vec<(u64, u64)> = group.iter().map(|v| (v.start, v.end)).collect();
    let vdso_idx = group
        .iter()
        .position(|v| matches!(v.is_special(), Some(SpecialVma::Vdso)))
        .ok_or_else(|| Error::task(pid, "vDSO", "the new task has no [vdso]"))?;
    let ip_off = syscall_ip - cur_ranges[vdso_idx].0;
    let mut busy: Vec<(u64, u64)> = t.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    busy.extend(cur_ranges.iter().copied());
    busy.push((here.scratch, here.scratch + super::scratch_len(t)));
    let span = cur_ranges.last().unwrap().1 - cur_ranges[0].0;
    let hole =
        || find_hole(&busy, span).ok_or_else(|| Error::task(pid, "vDSO", "no room to move it"));
    if let Some(p) = proxy {
        // This kernel's group stays whole (its code reaches its vvar pages
        // at fixed distances), out of the way of every dumped mapping.
        let clash = cur_ranges
            .iter()
            .any(|&(s, e)| t.mm.vmas.iter().any(|v| s < v.end && v.start < e));
        let (mut ip, mut base) = (syscall_ip, cur_ranges[vdso_idx].0);
        if clash {
            let to = hole()?;
            let moved: Vec<u64> = cur_ranges
                .iter()
                .map(|r| to + (r.0 - cur_ranges[0].0))
                .collect();
            ip = move_group(&mut steps, &cur_ranges, &moved, vdso_idx, ip_off);
            base = moved[vdso_idx];
        }
        run_steps(r, here, pid, &steps)?;
        r.set_syscall_ip(ip);
        let len = p.end - p.start;
        r.mmap_anon(
            p.start,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            "the dumped vDSO's copy",
        )?;
        mem.write(p.start, &p.patched(base))?;
        r.call(
            libc::SYS_mprotect,
            &[p.start, len, p.prot as u64],
            "mprotect of the dumped vDSO's copy",
        )?;
        info!(
            "pid {pid}: vDSO remapped: this kernel's vDSO at {base:#x}, the dumped one's copy at {:#x} jumps there ({} functions: {})",
            p.start,
            p.jumps.len(),
            p.jumps.iter().map(|j| j.names.join("/")).collect::<Vec<_>>().join(", ")
        );
        return Ok(ip);
    }
    let dumped = super::vdso::dumped_group(t);
    // Where each running mapping goes; the layouts match block for block
    // (CRIU writes [vvar] and [vvar_vclock] as one mapping): validation
    // (`restore/vdso.rs`) planned a proxy otherwise.
    let targets = vdso_targets(&cur_ranges, &dumped).ok_or_else(|| {
        Error::unsupported(
            pid,
            format!("vDSO layout {dumped:x?}"),
            format!("this kernel's vDSO/vvar layout ({cur_ranges:x?}) differs from the dumped one"),
        )
    })?;
    // Straight to the targets when none of them overlaps the group where
    // it is now (the usual case: two random places), else via a temporary
    // place so that no move clobbers a mapping still to move. Each move
    // is a remote call, two ptrace stops.
    let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
    let direct = cur_ranges.iter().zip(&targets).all(|(&c, &to)| {
        let moved = (to, to + (c.1 - c.0));
        cur_ranges.iter().all(|&other| !overlaps(moved, other))
    });
    if direct {
        let ip = move_group(&mut steps, &cur_ranges, &targets, vdso_idx, ip_off);
        run_steps(r, here, pid, &steps)?;
        r.set_syscall_ip(ip);
        debug!("pid {pid}: vDSO group moved to {:#x}", targets[0]);
        return Ok(ip);
    }
    let tmp: Vec<u64> = {
        let to = hole()?;
        cur_ranges
            .iter()
            .map(|r| to + (r.0 - cur_ranges[0].0))
            .collect()
    };
    move_group(&mut steps, &cur_ranges, &tmp, vdso_idx, ip_off);
    let at_tmp: Vec<(u64, u64)> = cur_ranges
        .iter()
        .zip(&tmp)
        .map(|(r, &to)| (to, to + (r.1 - r.0)))
        .collect();
    let ip = move_group(&mut steps, &at_tmp, &targets, vdso_idx, ip_off);
    run_steps(r, here, pid, &steps)?;
    r.set_syscall_ip(ip);
    debug!("pid {pid}: vDSO group moved to {:#x}", targets[0]);
    Ok(ip)
}

/// The moves of each of `from` (the vDSO group) to its address in `to`,
/// added to `steps`; returns the new address of the `syscall`
/// instruction the remote calls use (`ip_off` into the `[vdso]`,
/// `from[vdso_idx]`).
fn move_group(
    steps: &mut Vec<Step>,
    from: &[(u64, u64)],
    to: &[u64],
    vdso_idx: usize,
    ip_off: u64,
) -> u64 {
    for (&(s, e), &to) in from.iter().zip(to) {
        steps.push(Step {
            call: (
                libc::SYS_mremap,
                [
                    s,
                    e - s,
                    e - s,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    to,
                    0,
                ],
            ),
            want: Some(to as i64),
            what: format!("mremap {s:#x}-{e:#x} -> {to:#x}"),
        });
    }
    to[vdso_idx] + ip_off
}

/// The address each of `cur` (the running vDSO group, sorted) moves to
/// so that it lies as in `dumped`: both cut into blocks of adjacent
/// mappings, which must have the same sizes in the same order.
pub(super) fn vdso_targets(cur: &[(u64, u64)], dumped: &[(u64, u64)]) -> Option<Vec<u64>> {
    fn blocks(g: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &(s, e) in g {
            match out.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
    let (cb, db) = (blocks(cur), blocks(dumped));
    let size = |b: &[(u64, u64)]| b.iter().map(|(s, e)| e - s).collect::<Vec<_>>();
    if size(&cb) != size(&db) {
        return None;
    }
    cur.iter()
        .map(|r| {
            let b = cb.iter().position(|b| b.0 <= r.0 && r.1 <= b.1)?;
            Some(db[b].0 + (r.0 - cb[b].0))
        })
        .collect()
}

/// What a VMA needs while pages are written into it.
fn write_prot(v: &pb::VmaEntry) -> u32 {
    v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
}

/// What `map_and_fill` draws on besides the images: the fds the child
/// opened for its file mappings (by file id), its memory, the scratch
/// area and the memory it shares with its parent.
pub struct FillCx<'a> {
    pub file_fds: &'a BTreeMap<u32, RawFd>,
    pub mem: &'a TaskMem,
    pub scratch: u64,
    pub cow: &'a super::cow::CowPlan,
    /// The task's helper fds of the shared anonymous objects the engine
    /// made, by shmid (`make_objects`).
    pub shmem_fds: &'a BTreeMap<u64, RawFd>,
}

/// Steps 3 and 4; with `lazy`, the lazy mappings' own pages are left to
/// the lazy-pages daemon.
pub fn map_and_fill(
    r: &mut Remote<'_>,
    imgs: &Images,
    t: &TaskImages,
    shmem: &Mutex<ShmemRegistry>,
    cx: &FillCx<'_>,
    lazy: Option<&mut super::lazy::Daemon>,
) -> Result<()> {
    let (file_fds, mem, scratch, cow) = (cx.file_fds, cx.mem, cx.scratch, cx.cow);
    let pid = t.pid;
    let pages_file = open_pages(imgs, &t.pages, lazy.is_none())?;
    // Which VMAs get pages (so they are mapped writable first).
    let mut has_pages = vec![false; t.mm.vmas.len()];
    for e in &t.pages.entries {
        if let Some(i) =
            t.mm.vmas
                .iter()
                .position(|v| v.start <= e.vaddr && e.vaddr < v.end)
        {
            has_pages[i] = true;
        }
    }
    // SysV segments first, attached whole (restore/ipc.rs).
    super::ipc::attach_shm(r, imgs, t)?;
    let mut maps: Vec<(&pb::VmaEntry, crate::ptrace::remote::Call)> = Vec::new();
    for (i, v) in t.mm.vmas.iter().enumerate() {
        if is_special(v) || super::ipc::is_sysv(v) {
            continue;
        }
        if v.status & VMA_ANON_SHARED != 0 {
            match cx.shmem_fds.get(&v.shmid) {
                Some(&fd) => map_object(r, v, fd)?,
                None => map_shared_anon(r, imgs, t, v, shmem, mem, scratch)?,
            }
            continue;
        }
        // Held memory is in place with its content already.
        if cow.holds(v.start, v.end) {
            continue;
        }
        let prot = if has_pages[i] { write_prot(v) } else { v.prot };
        let (fd, off) = if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
            let fd = *file_fds.get(&(v.shmid as u32)).ok_or_else(|| {
                Error::task(
                    pid,
                    format!("mapping {:#x}-{:#x}", v.start, v.end),
                    "no fd for its file",
                )
            })?;
            (fd as u64, v.pgoff)
        } else {
            (u64::MAX, 0)
        };
        let flags = v.flags as u64 | libc::MAP_FIXED as u64;
        maps.push((
            v,
            (
                libc::SYS_mmap,
                [v.start, v.end - v.start, prot as u64, flags, fd, off],
            ),
        ));
    }
    // The plain mappings in one batch (they are independent of each other).
    let calls: Vec<_> = maps.iter().map(|(_, c)| *c).collect();
    for ((v, _), got) in maps.iter().zip(super::batch(r, mem, scratch, &calls)?) {
        if got != v.start as i64 {
            let file = if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
                let id = v.shmid as u32;
                match imgs.files.get(&id).and_then(|f| f.reg.as_ref()) {
                    Some(reg) => format!(" of file {} (id {id})", reg.name),
                    None => format!(" of file id {id}"),
                }
            } else {
                String::new()
            };
            return Err(Error::task(
                pid,
                format!("mapping {:#x}-{:#x}{file}", v.start, v.end),
                if (-4095..0).contains(&got) {
                    format!("mmap: {}", nix::errno::Errno::from_raw(-got as i32))
                } else {
                    format!("mmap placed it at {got:#x}")
                },
            ));
        }
    }
    // Private pages (not into held memory, whose pages the task
    // wrote itself; pages shared with the parent that could not be held
    // are copied from the ancestor that has them).
    // The dumped vDSO's pages are for other engines: this task keeps the
    // running kernel's (moved into place by `reset_address_space`).
    let vdso: Vec<(u64, u64)> =
        t.mm.vmas
            .iter()
            .filter(|v| v.status & VMA_AREA_VDSO != 0)
            .map(|v| (v.start, v.end))
            .collect();
    let lazy_vmas = match lazy {
        Some(_) => lazy_mappings(t, cow),
        None => Vec::new(),
    };
    let within = |set: &[(u64, u64)], a: u64| set.iter().any(|&(s, e)| s <= a && a < e);
    let name = t.pages.pages_file();
    write_pages(pid, &pages_file, (imgs, &name), &t.pages.entries, |a| {
        (!cow.holds_addr(a) && !within(&vdso, a) && !within(&lazy_vmas, a)).then_some(a)
    })?;
    super::cow::write_unshared(imgs, t, cow, mem)?;
    // Pages in a parent image (incremental dumps), also into memory held
    // from the parent process: the task's own entries say what its pages
    // are there.
    write_parent_pages(imgs, t, &vdso)?;
    if let Some(d) = lazy {
        // Registered last: nothing the engine writes may fault on them.
        let refused = register_lazy(r, imgs, t, &lazy_vmas, d)?;
        if let (Some(&(s, e)), Some(_)) = (refused.first(), &imgs.pages_dir) {
            return Err(Error::task(
                pid,
                format!("mapping {s:#x}-{e:#x}"),
                "userfaultfd refused it, and its pages are on the page server, not here",
            ));
        }
        write_pages(pid, &pages_file, (imgs, &name), &t.pages.entries, |a| {
            within(&refused, a).then_some(a)
        })?;
    }
    // Final protections and advice, in one batch.
    let mut calls: Vec<(&pb::VmaEntry, &'static str, crate::ptrace::remote::Call)> = Vec::new();
    for (i, v) in t.mm.vmas.iter().enumerate() {
        if is_special(v) {
            continue;
        }
        let len = v.end - v.start;
        // Held memory was mapped read-write.
        let held =
            cow.holds(v.start, v.end) && v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32;
        if held || (has_pages[i] && write_prot(v) != v.prot) {
            calls.push((
                v,
                "mprotect",
                (libc::SYS_mprotect, [v.start, len, v.prot as u64, 0, 0, 0]),
            ));
        }
        let madv = v.madv.unwrap_or(0);
        for bit in (0..64u64).filter(|b| madv & (1 << b) != 0) {
            calls.push((
                v,
                "madvise",
                (libc::SYS_madvise, [v.start, len, bit, 0, 0, 0]),
            ));
        }
    }
    let list: Vec<_> = calls.iter().map(|c| c.2).collect();
    for ((v, what, c), got) in calls.iter().zip(super::batch(r, mem, scratch, &list)?) {
        if got < 0 {
            return Err(Error::sys(
                pid,
                format!(
                    "{what}({}) {:#x}-{:#x} (in the task)",
                    c.1[2], v.start, v.end
                ),
                nix::errno::Errno::from_raw(-got as i32),
            ));
        }
    }
    Ok(())
}

/// The mappings of `t` a lazy restore fills after the tree runs: private
/// anonymous ones (not huge pages) with pages of their own in the pages
/// file, none of it held from the parent process; a mapping that shares
/// a pagemap entry with another mapping stays eager.
pub(super) fn lazy_mappings(t: &TaskImages, cow: &super::cow::CowPlan) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> =
        t.mm.vmas
            .iter()
            .filter(|v| {
                v.status & VMA_ANON_PRIVATE != 0
                    && v.status & VMA_ANON_SHARED == 0
                    && !is_special(v)
                    && !super::ipc::is_sysv(v)
                    && v.flags & libc::MAP_HUGETLB as u32 == 0
                    && !cow.held.iter().any(|&(s, e)| s < v.end && v.start < e)
            })
            .map(|v| (v.start, v.end))
            .collect();
    let mut with_pages = vec![false; out.len()];
    for (vaddr, len, _) in super::lazy::present_runs(&t.pages.entries) {
        let end = vaddr + len;
        for i in 0..out.len() {
            let (s, e) = out[i];
            if s < end && vaddr < e {
                // An entry reaching out of a lazy mapping: no lazy pages
                // there at all (the entry goes in whole, eagerly).
                if vaddr < s || e < end {
                    with_pages[i] = false;
                    out[i] = (0, 0);
                } else if out[i] != (0, 0) {
                    with_pages[i] = true;
                }
            }
        }
    }
    out.into_iter()
        .zip(with_pages)
        .filter(|&(r, w)| w && r != (0, 0))
        .map(|(r, _)| r)
        .collect()
}

/// The task's userfaultfd for lazy pages: made in the task (it serves its
/// creator's mm), taken by the engine, closed in the task, registered over
/// `ranges` from here and handed to the daemon. Returns the ranges the
/// kernel refused to register, whose pages the caller writes now.
fn register_lazy(
    r: &mut Remote<'_>,
    imgs: &Images,
    t: &TaskImages,
    ranges: &[(u64, u64)],
    d: &mut super::lazy::Daemon,
) -> Result<Vec<(u64, u64)>> {
    use crate::sys::uffd;
    use std::os::fd::AsFd;
    let pid = t.pid;
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = match (d.uffd_dev(), super::userns::launcher_pidfd()) {
        // In a user namespace of the tree's own: with the engine's
        // /dev/userfaultfd, taken from the launcher like a shared file.
        (Some(dev), Some(at)) => {
            let dev_here = r.call(
                libc::SYS_pidfd_getfd,
                &[at as u64, dev as u64, 0],
                &format!("pidfd_getfd of /dev/userfaultfd (fd {dev} of the user namespace's launcher)"),
            )?;
            let made = r.call(
                libc::SYS_ioctl,
                &[dev_here, uffd::USERFAULTFD_IOC_NEW, flags],
                "USERFAULTFD_IOC_NEW on /dev/userfaultfd for lazy pages",
            );
            r.call(
                libc::SYS_close,
                &[dev_here],
                "close of /dev/userfaultfd",
            )?;
            made?
        }
        _ => r.call(
            libc::SYS_userfaultfd,
            &[flags],
            "userfaultfd for lazy pages (it needs CAP_SYS_PTRACE when vm.unprivileged_userfaultfd is 0)",
        )?,
    };
    let taken = crate::sys::take_fd(pid, fd as i32);
    r.call(
        libc::SYS_close,
        &[fd],
        "close of the lazy-pages userfaultfd",
    )?;
    let uffd = taken.map_err(|e| Error::sys(pid, "pidfd_getfd of its userfaultfd", e))?;
    uffd::api(uffd.as_fd(), uffd::FEATURES).map_err(|e| {
        Error::sys(
            pid,
            "UFFDIO_API with the fork, remap, remove and unmap events (lazy pages)",
            e,
        )
    })?;
    let mut registered = Vec::with_capacity(ranges.len());
    let mut refused = Vec::new();
    for &(s, e) in ranges {
        match uffd::register_missing(uffd.as_fd(), s, e - s) {
            Ok(()) => registered.push((s, e)),
            Err(err) => {
                debug!("pid {pid}: mapping {s:#x}-{e:#x} not lazy: UFFDIO_REGISTER: {err}");
                refused.push((s, e));
            }
        }
    }
    let pidfd = crate::sys::pidfd::open(pid, 0)
        .map_err(|e| Error::sys(pid, "pidfd_open for the lazy-pages daemon", e))?;
    let idx = imgs
        .tasks
        .iter()
        .position(|x| x.pid == pid)
        .ok_or_else(|| Error::task(pid, "lazy pages", "not a task of the images"))?;
    d.hand_over(pid, idx, &registered, uffd, pidfd)?;
    debug!(
        "pid {pid}: {} mappings lazy, {} refused",
        registered.len(),
        refused.len()
    );
    Ok(refused)
}

/// Shared anonymous memory objects already recreated in this restore: by
/// shmid, the task and the window through which the object can be opened
/// again (/proc/PID/map_files/START-END).
#[derive(Default)]
pub struct ShmemRegistry {
    objects: BTreeMap<u64, (i32, u64, u64)>,
}

/// The size an object must have: its furthest window in any task.
fn object_size(imgs: &Images, shmid: u64) -> u64 {
    imgs.tasks
        .iter()
        .flat_map(|t| t.mm.vmas.iter())
        .filter(|v| v.status & VMA_ANON_SHARED != 0 && v.shmid == shmid)
        .map(|v| v.pgoff + (v.end - v.start))
        .max()
        .unwrap_or(0)
}

/// Shared anonymous memory objects in a tree with a user namespace of its
/// own are made and filled by the engine before any task exists, one fd
/// each (`EngineFds::shmem`), and every window of one is mapped from the
/// task's helper fd of it (`map_object`). Without them, a task would open
/// the object through /proc/PID/map_files of the first task that mapped
/// it (`map_shared_anon`), which needs CAP_CHECKPOINT_RESTORE in the
/// initial user namespace, and may not take the engine's fd either (the
/// engine is outside its namespace).
pub fn make_objects(imgs: &Images, fds: &mut super::stage::EngineFds) -> Result<()> {
    if imgs.ns.user.is_none() {
        return Ok(());
    }
    let root = imgs.tasks[0].pid;
    for t in &imgs.tasks {
        for v in t.mm.vmas.iter().filter(|v| v.status & VMA_ANON_SHARED != 0) {
            if fds.shmem.contains_key(&v.shmid) {
                continue;
            }
            let size = object_size(imgs, v.shmid);
            let what = format!("shared anonymous object {:#x} ({size} bytes)", v.shmid);
            let fd = crate::sys::shared_anon_object(size).map_err(|e| {
                Error::io(
                    "/proc/self/map_files",
                    format!("pid {root}: making {what}"),
                    e,
                )
            })?;
            let f = std::fs::File::from(fd);
            if let Some(set) = imgs.shmem.get(&v.shmid).filter(|s| !s.entries.is_empty()) {
                fill_object(imgs, set, &f, t.pid, &what, "the engine's fd")?;
            }
            fds.shmem.insert(v.shmid, f.into());
        }
    }
    Ok(())
}

/// A window of a shared anonymous object, mapped from the task's fd `fd`
/// of it.
fn map_object(r: &mut Remote<'_>, v: &pb::VmaEntry, fd: RawFd) -> Result<()> {
    let flags = (v.flags & !(libc::MAP_ANONYMOUS as u32)) as u64 | libc::MAP_FIXED as u64;
    r.call(
        libc::SYS_mmap,
        &[
            v.start,
            v.end - v.start,
            v.prot as u64,
            flags,
            fd as u64,
            v.pgoff,
        ],
        &format!(
            "mmap shared mapping {:#x}-{:#x} from its object's fd",
            v.start, v.end
        ),
    )?;
    Ok(())
}

/// One window of a shared anonymous object. The first window anyone maps
/// creates the object (at its full size, so every other window fits) and
/// the engine fills it through its file; later windows, in this task or
/// another, map that same file, so writes are seen by everyone again.
fn map_shared_anon(
    r: &mut Remote<'_>,
    imgs: &Images,
    t: &TaskImages,
    v: &pb::VmaEntry,
    shmem: &Mutex<ShmemRegistry>,
    mem: &TaskMem,
    scratch: u64,
) -> Result<()> {
    // Held to the end: the first window of an object makes and fills it
    // before another task maps it through that window.
    let mut shmem = lock(shmem);
    let pid = t.pid;
    let len = v.end - v.start;
    let what = format!("shared mapping {:#x}-{:#x}", v.start, v.end);
    let fixed = libc::MAP_FIXED as u64;
    if let Some(&(owner, ws, we)) = shmem.objects.get(&v.shmid) {
        let path = format!("/proc/{owner}/map_files/{ws:x}-{we:x}\0");
        mem.write(scratch + 3072, path.as_bytes())?;
        let fd = r.call(
            libc::SYS_open,
            &[scratch + 3072, (libc::O_RDWR | libc::O_CLOEXEC) as u64],
            &format!("{what}: open of the object through pid {owner}"),
        )?;
        let got = map_object(r, v, fd as RawFd);
        r.call(libc::SYS_close, &[fd], "close of a shared memory fd")?;
        got?;
        return Ok(());
    }
    let size = object_size(imgs, v.shmid).max(v.pgoff + len);
    if v.pgoff == 0 && len == size {
        r.call(
            libc::SYS_mmap,
            &[
                v.start,
                len,
                v.prot as u64,
                v.flags as u64 | fixed,
                u64::MAX,
                0,
            ],
            &format!("mmap {what}"),
        )?;
    } else {
        // Create the whole object elsewhere, move this window into place,
        // drop the rest of the temporary mapping (the object keeps its size).
        let mut busy: Vec<(u64, u64)> = t.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
        busy.push((scratch, scratch + super::scratch_len(t)));
        let hole = find_hole(&busy, size)
            .ok_or_else(|| Error::task(pid, what.clone(), "no room to create the object"))?;
        r.call(
            libc::SYS_mmap,
            &[
                hole,
                size,
                v.prot as u64,
                (libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
            &format!("mmap of the whole object for {what}"),
        )?;
        r.call(
            libc::SYS_mremap,
            &[
                hole + v.pgoff,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                v.start,
            ],
            &format!("mremap of {what} into place"),
        )?;
        for (a, n) in [
            (hole, v.pgoff),
            (hole + v.pgoff + len, size - v.pgoff - len),
        ] {
            if n > 0 {
                r.call(
                    libc::SYS_munmap,
                    &[a, n],
                    "munmap of the rest of the object",
                )?;
            }
        }
    }
    shmem.objects.insert(v.shmid, (pid, v.start, v.end));
    // Fill the object through its file, whatever the window shows.
    if let Some(set) = imgs.shmem.get(&v.shmid).filter(|s| !s.entries.is_empty()) {
        let path = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, format!("pid {pid}: opening {what}"), e))?;
        fill_object(imgs, set, &f, pid, &what, &path)?;
    }
    Ok(())
}

/// Writes an object's dumped pages through its file `f` (`path` names it
/// in errors).
fn fill_object(
    imgs: &Images,
    set: &PageSet,
    f: &std::fs::File,
    pid: i32,
    what: &str,
    path: &str,
) -> Result<()> {
    let src = open_pages(imgs, set, true)?;
    let data = src.as_slice();
    let mut off = 0usize;
    for e in &set.entries {
        let n = e.nr_pages as usize * PAGE as usize;
        std::os::unix::fs::FileExt::write_all_at(f, &data[off..off + n], e.vaddr).map_err(
            |err| {
                Error::io(
                    path,
                    format!("pid {pid}: writing {what} at offset {:#x}", e.vaddr),
                    err,
                )
            },
        )?;
        off += n;
    }
    Ok(())
}

/// The pages of `t` its pagemap leaves in parent images, from their pages
/// files (resolved and checked by the loader).
fn write_parent_pages(imgs: &Images, t: &TaskImages, vdso: &[(u64, u64)]) -> Result<()> {
    if t.parent_runs.is_empty() {
        return Ok(());
    }
    let mut maps = Vec::with_capacity(imgs.parent_files.len());
    for path in &imgs.parent_files {
        let f =
            std::fs::File::open(path).map_err(|e| Error::io(path, "opening parent pages", e))?;
        maps.push(Mmap::map(&f).map_err(|e| Error::io(path, "mapping parent pages", e))?);
    }
    let mut ranges: Vec<(&[u8], u64)> = Vec::with_capacity(t.parent_runs.len());
    for r in &t.parent_runs {
        if vdso.iter().any(|&(s, e)| s <= r.vaddr && r.vaddr < e) {
            continue;
        }
        let data = maps[r.file].as_slice();
        let (a, b) = (r.offset as usize, (r.offset + r.len) as usize);
        let Some(bytes) = data.get(a..b) else {
            return Err(Error::io(
                &imgs.parent_files[r.file],
                format!("pages of pid {} at {:#x}", t.pid, r.vaddr),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "beyond the end of the file",
                ),
            ));
        };
        let mut at = 0usize;
        while at < bytes.len() {
            let n = (bytes.len() - at).min(WRITE_PIECE);
            ranges.push((&bytes[at..at + n], r.vaddr + at as u64));
            at += n;
        }
    }
    debug!(
        "pid {}: {} pages from parent images",
        t.pid,
        t.parent_runs.iter().map(|r| r.len / PAGE).sum::<u64>()
    );
    write_ranges(t.pid, &ranges)
}

/// The pages file of `set`, mapped; `whole`: populated at once, for a
/// reader of all of it (without: only the parts read are faulted in, as a
/// lazy restore's engine, which leaves most of it to the daemon, wants).
pub(super) fn open_pages(imgs: &Images, set: &PageSet, whole: bool) -> Result<Mmap> {
    let path = imgs.path(&set.pages_file());
    if set.stored_pages() == 0 {
        return Ok(Mmap::empty());
    }
    if whole && imgs.pages_dir.is_none() {
        if let Some(m) = imgs.take_mapped(&set.pages_file()) {
            return Ok(m);
        }
    }
    let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, "opening pages", e))?;
    // A file staged from a page server has holes where the lazy runs are:
    // populating would allocate them.
    let map = match whole && imgs.pages_dir.is_none() {
        true => Mmap::map(&f),
        false => Mmap::map_sparse(&f),
    };
    map.map_err(|e| Error::io(&path, "mapping pages", e))
}

/// Copy pages into the task, many ranges per process_vm_writev call, on
/// two threads (each half of the bytes): the copy and the task's page
/// allocation are the whole cost, and both scale with cores.
///
/// `file` (the images and the pages file's name): a lazy restore may have
/// left blocks of it unchecked ([`Images::check_deferred`]); those read
/// here are checked first.
fn write_pages(
    pid: i32,
    src: &Mmap,
    file: (&Images, &str),
    entries: &[pb::PagemapEntry],
    to_addr: impl Fn(u64) -> Option<u64>,
) -> Result<()> {
    let data = src.as_slice();
    let mut ranges: Vec<(&[u8], u64)> = Vec::with_capacity(entries.len());
    // Entries without data (shared with the parent) take no room in the
    // pages file; present ones `to_addr` declines (in memory the task
    // filled itself, or lazy memory) are skipped.
    for (vaddr, len, off) in super::lazy::present_runs(entries) {
        let Some(addr) = to_addr(vaddr) else {
            continue;
        };
        file.0
            .check_deferred(file.1, data, off, len)
            .map_err(|e| e.for_pid(pid, "restoring pages"))?;
        let (len, off) = (len as usize, off as usize);
        // Split big runs so both threads get work even for one huge VMA.
        let mut a = 0usize;
        while a < len {
            let n = (len - a).min(WRITE_PIECE);
            ranges.push((&data[off + a..off + a + n], addr + a as u64));
            a += n;
        }
    }
    let total: usize = ranges.iter().map(|(s, _)| s.len()).sum();
    if total < PARALLEL_MIN {
        return write_ranges(pid, &ranges);
    }
    let mut acc = 0usize;
    let mid = ranges
        .iter()
        .position(|(s, _)| {
            acc += s.len();
            acc >= total / 2
        })
        .map_or(ranges.len(), |i| i + 1);
    let (a, b) = ranges.split_at(mid);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| write_ranges(pid, b));
        let ra = write_ranges(pid, a);
        let rb = h.join().unwrap_or_else(|_| {
            Err(Error::task(
                pid,
                "restoring pages",
                "a writer thread panicked",
            ))
        });
        ra.and(rb)
    })
}

const IOV: usize = 512;
const WRITE_PIECE: usize = 64 << 20;
const PARALLEL_MIN: usize = 16 << 20;

fn write_ranges(pid: i32, ranges: &[(&[u8], u64)]) -> Result<()> {
    for chunk in ranges.chunks(IOV) {
        let mut batch = chunk.to_vec();
        writev_all(pid, &mut batch)?;
    }
    Ok(())
}

/// process_vm_writev until every range of `batch` is written.
fn writev_all(pid: i32, batch: &mut Vec<(&[u8], u64)>) -> Result<()> {
    let mut i = 0;
    while i < batch.len() {
        let local: Vec<IoSlice<'_>> = batch[i..].iter().map(|(s, _)| IoSlice::new(s)).collect();
        let remote: Vec<RemoteIoVec> = batch[i..]
            .iter()
            .map(|(s, a)| RemoteIoVec {
                base: *a as usize,
                len: s.len(),
            })
            .collect();
        let mut n = process_vm_writev(NixPid::from_raw(pid), &local, &remote).map_err(|e| {
            Error::sys(
                pid,
                format!("writing restored pages at {:#x}", batch[i].1),
                e,
            )
        })?;
        if n == 0 {
            return Err(Error::task(
                pid,
                format!("pages at {:#x}", batch[i].1),
                "process_vm_writev wrote nothing",
            ));
        }
        while n > 0 {
            let l = batch[i].0.len();
            if n >= l {
                n -= l;
                i += 1;
            } else {
                batch[i].0 = &batch[i].0[n..];
                batch[i].1 += n as u64;
                n = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::vdso_targets;

    #[test]
    fn vdso_group_moves_block_by_block() {
        // This kernel: [vvar] 16 KiB, [vvar_vclock] 8 KiB, [vdso] 8 KiB.
        let cur = [(0x10000, 0x14000), (0x14000, 0x16000), (0x16000, 0x18000)];
        // CRIU writes the two vvar mappings as one.
        let criu = [(0x70000, 0x76000), (0x76000, 0x78000)];
        assert_eq!(
            vdso_targets(&cur, &criu),
            Some(vec![0x70000, 0x74000, 0x76000])
        );
        // ckpt writes them as the kernel has them.
        let ckpt = [(0x70000, 0x74000), (0x74000, 0x76000), (0x76000, 0x78000)];
        assert_eq!(
            vdso_targets(&cur, &ckpt),
            Some(vec![0x70000, 0x74000, 0x76000])
        );
        // Another kernel's layout.
        assert_eq!(vdso_targets(&cur, &[(0x70000, 0x72000)]), None);
    }
}
