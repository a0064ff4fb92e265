//! CPUID and XGETBV: what this CPU offers user space, for the images'
//! record of the CPU they were dumped on (kernel/cpu.rs).

use std::arch::x86_64::{__cpuid_count, CpuidResult};

/// `cpuid` with `leaf` and `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// XCR0, the state components the kernel enabled for xsave, or 0 when
/// the kernel did not enable XSAVE (CPUID.1:ECX.OSXSAVE clear), where
/// XGETBV would fault.
pub fn xcr0() -> u64 {
    const OSXSAVE: u32 = 1 << 27;
    if cpuid(1, 0).ecx & OSXSAVE == 0 {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; it is defined whenever
    // CR4.OSXSAVE is set, which CPUID.1:ECX.OSXSAVE reflects (checked
    // above). It touches no memory and only the named registers.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}
