//! VmaEntry of mm-PID.img: the status bits that say what a mapping is
//! (criu/include/image.h), and which mappings can share pages with the
//! parent. Dump sets these bits, restore and show act on them, so they
//! are defined once, here.

use super::pb;

pub const VMA_AREA_REGULAR: u32 = 1 << 0;
pub const VMA_AREA_STACK: u32 = 1 << 1;
pub const VMA_AREA_VSYSCALL: u32 = 1 << 2;
pub const VMA_AREA_VDSO: u32 = 1 << 3;
pub const VMA_AREA_HEAP: u32 = 1 << 5;
pub const VMA_FILE_PRIVATE: u32 = 1 << 6;
pub const VMA_FILE_SHARED: u32 = 1 << 7;
pub const VMA_ANON_SHARED: u32 = 1 << 8;
pub const VMA_ANON_PRIVATE: u32 = 1 << 9;
pub const VMA_AREA_SYSVIPC: u32 = 1 << 10;
pub const VMA_AREA_SOCKET: u32 = 1 << 11;
pub const VMA_AREA_VVAR: u32 = 1 << 12;
pub const VMA_AREA_AIORING: u32 = 1 << 13;
pub const VMA_AREA_MEMFD: u32 = 1 << 14;
pub const VMA_AREA_UPROBES: u32 = 1 << 17;
pub const VMA_AREA_SHSTK: u32 = 1 << 18;

/// Whether a mapping can hold pages shared with the parent: plain private
/// anonymous memory, which restore can create and fill before the fork.
/// Stacks, growsdown, noreserve and locked mappings and memory that a
/// fork does not pass on (MADV_DONTFORK, MADV_WIPEONFORK) cannot.
pub fn cow_eligible(e: &pb::VmaEntry) -> bool {
    let odd =
        (libc::MAP_GROWSDOWN | libc::MAP_NORESERVE | libc::MAP_LOCKED | libc::MAP_SHARED) as u32;
    let special = VMA_AREA_STACK
        | VMA_AREA_VDSO
        | VMA_AREA_VVAR
        | VMA_AREA_VSYSCALL
        | VMA_AREA_SYSVIPC
        | VMA_AREA_MEMFD
        | VMA_FILE_PRIVATE
        | VMA_FILE_SHARED
        | VMA_ANON_SHARED;
    let no_fork = (1u64 << libc::MADV_DONTFORK) | (1 << 18); // MADV_WIPEONFORK
    e.status & VMA_ANON_PRIVATE != 0
        && e.status & special == 0
        && e.flags & odd == 0
        && e.flags & libc::MAP_ANONYMOUS as u32 != 0
        && e.madv.unwrap_or(0) & no_fork == 0
}

/// The parent's mapping that `child` can share pages with: eligible, with
/// the same range, protection and flags. `parent` is sorted by address.
pub fn cow_pair<'a>(child: &pb::VmaEntry, parent: &'a [pb::VmaEntry]) -> Option<&'a pb::VmaEntry> {
    if !cow_eligible(child) {
        return None;
    }
    let i = parent
        .binary_search_by_key(&child.start, |p| p.start)
        .ok()?;
    let p = &parent[i];
    (p.end == child.end && p.prot == child.prot && p.flags == child.flags && cow_eligible(p))
        .then_some(p)
}
