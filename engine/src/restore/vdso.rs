//! How each task's vDSO comes back, decided before any process exists.
//!
//! - **Move** (the same kernel build): this kernel's vDSO group
//!   (`[vvar]`, `[vvar_vclock]`, `[vdso]`) has the dumped layout and its
//!   functions sit at the dumped offsets, so the group is moved to the
//!   dumped addresses (`memory::reset_address_space`) and every pointer
//!   the program holds is valid as it is.
//! - **Proxy** (another kernel): the layouts differ, or the functions moved.
//!   This kernel's group stays where the new task has it (or moves to a
//!   hole if that clashes with a dumped mapping); the dumped `[vdso]`'s own
//!   pages (from the images) are mapped back at their address with each
//!   exported function's entry replaced by a jump to the same function in
//!   this kernel's vDSO (`kernel::vdso`). The dumped vvar range stays
//!   unmapped: only the old code read it, and it no longer runs past a
//!   function's entry.
//!
//! A dumped function this kernel's vDSO lacks, a damaged dumped vDSO, or a
//! thread stopped inside the old vDSO's code (not at an entry and not
//! right after its fallback `syscall`) is refused here, at validation.
//!
//! `CKPT_VDSO=proxy` in the engine's environment takes the proxy path even
//! when the move would do: a restore on the dumping kernel then exercises
//! the proxy (the zdtm `vdso-proxy` trials).

use std::os::unix::fs::FileExt;

use super::load::{Images, TaskImages};
use crate::error::{Error, Result};
use crate::images::pagemap::{entry_present, PAGE};
use crate::images::vma::{VMA_AREA_VDSO, VMA_AREA_VVAR};
use crate::kernel::vdso::{self, Jump, Sym};
use crate::proc::maps::{self, SpecialVma};

/// The environment variable that forces the proxy.
pub const VAR: &str = "CKPT_VDSO";

/// The dumped vDSO's copy to map back, and its jumps.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    /// The dumped vDSO's pages, unpatched.
    pub image: Vec<u8>,
    pub jumps: Vec<Jump>,
}

impl Proxy {
    /// The copy with its jumps to this kernel's vDSO at `new_base`.
    pub fn patched(&self, new_base: u64) -> Vec<u8> {
        let mut img = self.image.clone();
        vdso::patch(&mut img, &self.jumps, new_base);
        img
    }
}

/// This kernel's vDSO group as the engine has it (every task cloned from
/// the engine has the same): its ranges, sorted, and its functions.
pub struct ThisKernel {
    pub ranges: Vec<(u64, u64)>,
    /// Which of `ranges` is the `[vdso]`.
    pub vdso_idx: usize,
    pub syms: Vec<Sym>,
}

pub fn this_kernel() -> Result<ThisKernel> {
    let me = std::process::id() as i32;
    let cur = maps::read_maps(me)?;
    let mut ranges = Vec::new();
    let mut vdso = None;
    for v in &cur {
        match v.is_special() {
            Some(SpecialVma::Vvar | SpecialVma::VvarVclock) => ranges.push((v.start, v.end)),
            Some(SpecialVma::Vdso) => {
                ranges.push((v.start, v.end));
                vdso = Some((v.start, v.end));
            }
            _ => {}
        }
    }
    ranges.sort_unstable();
    let (s, e) = vdso.ok_or_else(|| Error::task(me, "vDSO", "the engine has no [vdso]"))?;
    let vdso_idx = ranges.iter().position(|r| r.0 == s).unwrap_or_default();
    let mut img = vec![0u8; (e - s) as usize];
    let path = "/proc/self/mem";
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut img, s))
        .map_err(|err| Error::io(path, "reading this kernel's vDSO", err))?;
    let syms = vdso::symbols(&img)
        .map_err(|why| Error::task(me, "this kernel's vDSO", format!("not understood: {why}")))?;
    Ok(ThisKernel {
        ranges,
        vdso_idx,
        syms,
    })
}

fn forced() -> bool {
    std::env::var(VAR).is_ok_and(|v| v == "proxy")
}

/// Every task's plan: None to move the group, or the proxy to map. Errors
/// name the task, the dumped vDSO and the reason.
pub fn plan_all(imgs: &Images) -> Result<Vec<Option<Proxy>>> {
    let cur = this_kernel()?;
    imgs.tasks.iter().map(|t| plan(imgs, t, &cur)).collect()
}

/// The kind's validation: every task's vDSO can come back.
pub fn validate(imgs: &Images) -> Result<()> {
    plan_all(imgs).map(|_| ())
}

/// The dumped vDSO group's ranges ([vvar] pages and [vdso]), in order.
pub fn dumped_group(t: &TaskImages) -> Vec<(u64, u64)> {
    t.mm.vmas
        .iter()
        .filter(|v| v.status & (VMA_AREA_VDSO | VMA_AREA_VVAR) != 0)
        .map(|v| (v.start, v.end))
        .collect()
}

fn plan(imgs: &Images, t: &TaskImages, cur: &ThisKernel) -> Result<Option<Proxy>> {
    let pid = t.pid;
    let group = dumped_group(t);
    let Some(dumped) = t.mm.vmas.iter().find(|v| v.status & VMA_AREA_VDSO != 0) else {
        // Nothing to move or to proxy (a task that had unmapped it).
        return Ok(None);
    };
    let what = format!("the dumped vDSO at {:#x}-{:#x}", dumped.start, dumped.end);
    let image = dumped_bytes(imgs, t, dumped.start, dumped.end)?;
    let old = match &image {
        Some(img) => Some(vdso::symbols(img).map_err(|why| {
            Error::task(
                pid,
                what.clone(),
                format!("its pages are not a vDSO the engine understands: {why}"),
            )
        })?),
        None => None,
    };
    // The blocks have the same sizes and the [vdso] lands on the dumped one.
    let layout_same = super::memory::vdso_targets(&cur.ranges, &group)
        .is_some_and(|targets| targets[cur.vdso_idx] == dumped.start);
    let syms_same = old
        .as_ref()
        .is_none_or(|o| vdso::same_symbols(o, &cur.syms));
    if layout_same && syms_same && !forced() {
        return Ok(None);
    }
    let (Some(image), Some(old)) = (image, old) else {
        return Err(Error::unsupported(
            pid,
            what,
            format!(
                "this kernel's vDSO/vvar layout ({:x?}) differs from the dumped one ({group:x?}) and the images hold none of the dumped vDSO's pages to remap it",
                cur.ranges
            ),
        ));
    };
    let jumps = vdso::jumps(&old, &cur.syms)
        .map_err(|why| Error::unsupported(pid, what.clone(), format!("cannot remap it: {why}")))?;
    let ips = std::iter::once((pid, &t.core))
        .chain(t.threads.iter().map(|(tid, c)| (*tid, c)))
        .filter_map(|(tid, c)| Some((tid, c.thread_info.as_ref()?.gpregs.ip)));
    for (tid, ip) in ips {
        if (dumped.start..dumped.end).contains(&ip)
            && !vdso::ip_resumable(&image, &jumps, ip - dumped.start)
        {
            return Err(Error::unsupported(
                pid,
                format!("thread {tid}"),
                format!(
                    "stopped at {ip:#x}, inside the code of {what}, which cannot run against this kernel's vvar pages; dump it again"
                ),
            ));
        }
    }
    Ok(Some(Proxy {
        start: dumped.start,
        end: dumped.end,
        prot: dumped.prot,
        image,
        jumps,
    }))
}

/// The dumped pages of `start..end` (this image's pages file or a parent
/// image's), None unless every page is there.
fn dumped_bytes(imgs: &Images, t: &TaskImages, start: u64, end: u64) -> Result<Option<Vec<u8>>> {
    let mut out = vec![0u8; (end - start) as usize];
    let mut have = vec![false; ((end - start) / PAGE) as usize];
    let path = imgs.path(&t.pages.pages_file());
    let mut file = None;
    let mut off = 0u64;
    for e in &t.pages.entries {
        if !entry_present(e) {
            continue;
        }
        let len = e.nr_pages as u64 * PAGE;
        for p in 0..e.nr_pages as u64 {
            let a = e.vaddr + p * PAGE;
            if start <= a && a < end {
                if file.is_none() {
                    file = Some(
                        std::fs::File::open(&path)
                            .map_err(|err| Error::io(&path, "opening pages", err))?,
                    );
                }
                let i = (a - start) as usize;
                file.as_ref()
                    .unwrap()
                    .read_exact_at(&mut out[i..i + PAGE as usize], off + p * PAGE)
                    .map_err(|err| {
                        Error::io(
                            &path,
                            format!("pid {}: reading the vDSO page at {a:#x}", t.pid),
                            err,
                        )
                    })?;
                have[i / PAGE as usize] = true;
            }
        }
        off += len;
    }
    for r in &t.parent_runs {
        let path = &imgs.parent_files[r.file];
        for p in 0..r.len / PAGE {
            let a = r.vaddr + p * PAGE;
            if start <= a && a < end {
                let i = (a - start) as usize;
                std::fs::File::open(path)
                    .and_then(|f| {
                        f.read_exact_at(&mut out[i..i + PAGE as usize], r.offset + p * PAGE)
                    })
                    .map_err(|err| {
                        Error::io(
                            path,
                            format!("pid {}: reading the vDSO page at {a:#x}", t.pid),
                            err,
                        )
                    })?;
                have[i / PAGE as usize] = true;
            }
        }
    }
    Ok(have.iter().all(|&h| h).then_some(out))
}
