//! x86-64 registers <-> CRIU's UserX86RegsEntry / UserX86FpregsEntry.
//!
//! The xsave area is stored twice: decoded into CRIU's fields (so crit and
//! CRIU can read it) and raw in `ckpt_xsave_raw`, which is what ckpt
//! restores from, so no state component is lost whatever this CPU has.

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
        e.xsave = Some(pb::UserX86XsaveEntry {
            xstate_bv: u64_at(x, 512),
            ymmh_space: words(x, 576, 64),
            ..Default::default()
        });
    }
    e
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
