//! x86-64 registers <-> CRIU's UserX86RegsEntry / UserX86FpregsEntry.
//!
//! The xsave area is stored twice: decoded into CRIU's fields (so crit and
//! CRIU can read it) and raw in `ckpt_xsave_raw`, which is what ckpt
//! restores from, so no state component is lost whatever this CPU has.
//! Images without the raw area (CRIU's, or edited with crit) are restored
//! from CRIU's fields, laid over the new thread's own area.

use crate::images::pb;
use crate::ptrace::Regs;

pub fn regs_to_pb(r: &Regs) -> pb::UserX86RegsEntry {
    pb::UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(pb::UserX86RegsMode::Native as i32),
    }
}

pub fn regs_from_pb(e: &pb::UserX86RegsEntry) -> Regs {
    // SAFETY: plain integers; zero is valid.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    r.r15 = e.r15;
    r.r14 = e.r14;
    r.r13 = e.r13;
    r.r12 = e.r12;
    r.rbp = e.bp;
    r.rbx = e.bx;
    r.r11 = e.r11;
    r.r10 = e.r10;
    r.r9 = e.r9;
    r.r8 = e.r8;
    r.rax = e.ax;
    r.rcx = e.cx;
    r.rdx = e.dx;
    r.rsi = e.si;
    r.rdi = e.di;
    r.orig_rax = e.orig_ax;
    r.rip = e.ip;
    r.cs = e.cs;
    r.eflags = e.flags;
    r.rsp = e.sp;
    r.ss = e.ss;
    r.fs_base = e.fs_base;
    r.gs_base = e.gs_base;
    r.ds = e.ds;
    r.es = e.es;
    r.fs = e.fs;
    r.gs = e.gs;
    r
}

fn u16_at(b: &[u8], o: usize) -> u32 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u32
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn words(b: &[u8], from: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| u32_at(b, from + 4 * i)).collect()
}

/// Decode the legacy (fxsave) region and the xsave header + AVX upper
/// halves into CRIU's message; keep the whole area raw as well.
pub fn xsave_to_pb(x: &[u8]) -> pb::UserX86FpregsEntry {
    let mut e = pb::UserX86FpregsEntry {
        ckpt_xsave_raw: Some(x.to_vec()),
        ..Default::default()
    };
    if x.len() >= 512 {
        e.cwd = u16_at(x, 0);
        e.swd = u16_at(x, 2);
        e.twd = u16_at(x, 4);
        e.fop = u16_at(x, 6);
        e.rip = u64_at(x, 8);
        e.rdp = u64_at(x, 16);
        e.mxcsr = u32_at(x, 24);
        e.mxcsr_mask = u32_at(x, 28);
        e.st_space = words(x, 32, 32);
        e.xmm_space = words(x, 160, 64);
        e.padding = words(x, 416, 24);
    }
    if x.len() >= 576 + 256 {
        let mut xs = pb::UserX86XsaveEntry {
            xstate_bv: u64_at(x, 512),
            ..Default::default()
        };
        for c in COMPONENTS {
            if let Some((off, size)) = component(c.bit).filter(|&(o, n)| o + n <= x.len()) {
                let b = &x[off..off + size];
                match (c.field)(&mut xs) {
                    Words::W32(v) => *v = b.chunks(4).map(|w| u32_at(w, 0)).collect(),
                    Words::W64(v) => *v = b.chunks(8).map(|w| u64_at(w, 0)).collect(),
                }
            }
        }
        e.xsave = Some(xs);
    }
    e
}

/// A field of CRIU's xsave entry, as 32- or 64-bit words.
enum Words<'a> {
    W32(&'a mut Vec<u32>),
    W64(&'a mut Vec<u64>),
}

/// An xsave state component CRIU keeps in a field of its own.
struct Component {
    bit: u32,
    field: fn(&mut pb::UserX86XsaveEntry) -> Words<'_>,
}

/// AVX, MPX, AVX-512 and PKRU: the components CRIU's entry has fields for.
const COMPONENTS: &[Component] = &[
    Component {
        bit: 2,
        field: |x| Words::W32(&mut x.ymmh_space),
    },
    Component {
        bit: 3,
        field: |x| Words::W64(&mut x.bndreg_state),
    },
    Component {
        bit: 4,
        field: |x| Words::W64(&mut x.bndcsr_state),
    },
    Component {
        bit: 5,
        field: |x| Words::W64(&mut x.opmask_reg),
    },
    Component {
        bit: 6,
        field: |x| Words::W64(&mut x.zmm_upper),
    },
    Component {
        bit: 7,
        field: |x| Words::W64(&mut x.hi16_zmm),
    },
    Component {
        bit: 9,
        field: |x| Words::W32(&mut x.pkru),
    },
];

/// Where state component `bit` lies in the standard (not compacted)
/// xsave format of this CPU, and its size; `None` when the CPU lacks it.
///
/// CPUID leaf 0xd is asked once per engine process: the answer does not
/// change while the machine runs, and in a VM every CPUID instruction
/// exits to the hypervisor (20-28 us each on this project's VMs, measured
/// 2026-12-07), where a dump asked it for every component of every thread
/// (7 a thread: 7,007 for t1000, about 0.14 s of its dump).
fn component(bit: u32) -> Option<(usize, usize)> {
    static LAYOUT: std::sync::OnceLock<[Option<(usize, usize)>; XFEATURE_BITS]> =
        std::sync::OnceLock::new();
    let layout = LAYOUT.get_or_init(|| {
        std::array::from_fn(|b| {
            // Leaf 0xd's sub-leaves 0 and 1 are not components' places.
            if b < 2 {
                return None;
            }
            let (size, off, _, _) = crate::sys::cpuid(0xd, b as u32);
            (size != 0 && off != 0).then_some((off as usize, size as usize))
        })
    });
    layout.get(bit as usize).copied().flatten()
}

/// Components up to PKRU (bit 9), the last [`COMPONENTS`] has.
const XFEATURE_BITS: usize = 10;
const _: () = {
    let mut i = 0;
    while i < COMPONENTS.len() {
        assert!((COMPONENTS[i].bit as usize) < XFEATURE_BITS);
        i += 1;
    }
};

/// xsave state components a CPU without them may drop without loss: MPX
/// (bits 3 and 4: Linux has not supported it since 5.6) and PKRU (bit 9:
/// without protection keys on this CPU no page has a key the register
/// would guard).
pub const XFEATURES_DROPPABLE: u64 = 1 << 3 | 1 << 4 | 1 << 9;

/// The state components in use in `bv` (an xsave header's xstate_bv)
/// that an area built by [`xsave_from_pb`] on this CPU cannot hold: this
/// CPU lacks them, or CRIU's fields have no place for them, except
/// [`XFEATURES_DROPPABLE`].
pub fn components_lost(bv: u64) -> u64 {
    const HARMLESS: u64 = XFEATURES_DROPPABLE;
    let kept = COMPONENTS
        .iter()
        .filter(|c| component(c.bit).is_some())
        .fold(0b11u64 | HARMLESS, |m, c| m | 1 << c.bit);
    bv & !kept
}

/// The xsave area for a thread of an image that has only CRIU's fields:
/// `own` (the new thread's area, of the size this kernel wants) with the
/// legacy region, the header and every component CRIU keeps written over
/// it. Components the image marks in use but this CPU lacks, or CRIU has
/// no field for, are left at their initial state.
pub fn xsave_from_pb(e: &pb::UserX86FpregsEntry, own: &[u8]) -> Vec<u8> {
    let mut x = own.to_vec();
    if x.len() < 576 {
        return x;
    }
    let put16 =
        |x: &mut Vec<u8>, o: usize, v: u32| x[o..o + 2].copy_from_slice(&(v as u16).to_le_bytes());
    let put_words = |x: &mut Vec<u8>, o: usize, w: &[u32], max: usize| {
        for (i, v) in w.iter().take(max).enumerate() {
            x[o + 4 * i..o + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    };
    put16(&mut x, 0, e.cwd);
    put16(&mut x, 2, e.swd);
    put16(&mut x, 4, e.twd);
    put16(&mut x, 6, e.fop);
    x[8..16].copy_from_slice(&e.rip.to_le_bytes());
    x[16..24].copy_from_slice(&e.rdp.to_le_bytes());
    x[24..28].copy_from_slice(&e.mxcsr.to_le_bytes());
    x[28..32].copy_from_slice(&e.mxcsr_mask.to_le_bytes());
    put_words(&mut x, 32, &e.st_space, 32);
    put_words(&mut x, 160, &e.xmm_space, 64);
    // x87 and SSE are always written; the rest where the image has them.
    let mut bv = 0b11u64;
    if let Some(xs) = &e.xsave {
        let mut xs = xs.clone();
        for c in COMPONENTS {
            let Some((off, size)) = component(c.bit).filter(|&(o, n)| o + n <= x.len()) else {
                continue;
            };
            if xs.xstate_bv & (1 << c.bit) == 0 {
                continue;
            }
            let bytes: Vec<u8> = match (c.field)(&mut xs) {
                Words::W32(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
                Words::W64(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
            };
            if bytes.len() < size {
                continue;
            }
            x[off..off + size].copy_from_slice(&bytes[..size]);
            bv |= 1 << c.bit;
        }
        bv &= xs.xstate_bv | 0b11;
    }
    x[512..520].copy_from_slice(&bv.to_le_bytes());
    // Standard format: no compaction.
    x[520..528].fill(0);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Regs {
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn regs_roundtrip() {
        let mut r = zero();
        r.rax = 1;
        r.rip = 0x401000;
        r.fs_base = 0x7f00_0000_1000;
        r.orig_rax = u64::MAX;
        let back = regs_from_pb(&regs_to_pb(&r));
        assert_eq!(back.rax, 1);
        assert_eq!(back.rip, 0x401000);
        assert_eq!(back.fs_base, 0x7f00_0000_1000);
        assert_eq!(back.orig_rax, u64::MAX);
    }

    #[test]
    fn component_layout_is_cpuid() {
        for c in COMPONENTS {
            let (size, off, _, _) = crate::sys::cpuid(0xd, c.bit);
            let want = (size != 0 && off != 0).then_some((off as usize, size as usize));
            assert_eq!(component(c.bit), want, "component {}", c.bit);
            // Asked again, from the table.
            assert_eq!(component(c.bit), want, "component {} again", c.bit);
        }
        // AVX is on every CPU this project runs on.
        assert!(component(2).is_some());
        assert_eq!(component(XFEATURE_BITS as u32), None);
    }

    #[test]
    fn xsave_decode_keeps_raw() {
        let mut x = vec![0u8; 832];
        x[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        x[512] = 7;
        let e = xsave_to_pb(&x);
        assert_eq!(e.mxcsr, 0x1f80);
        assert_eq!(e.xsave.unwrap().xstate_bv, 7);
        assert_eq!(e.ckpt_xsave_raw.unwrap().len(), 832);
    }
}
