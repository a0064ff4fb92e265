//! The PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7+): which pages
//! of a range are in given categories (written since they were last
//! write-protected, present, ...), and, with `PM_SCAN_WP_MATCHING`,
//! write-protecting the matching ones in the same walk. The dirty tracking
//! of incremental dumps rests on it (dump/uffd_wp.rs).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = 0xc060_6610;

/// pm_scan_arg.flags: write-protect the pages that match.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// pm_scan_arg.flags: fail (EPERM) on a VMA without async uffd-wp, rather
/// than reporting its pages as they are.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// Page categories (include/uapi/linux/fs.h).
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// struct pm_scan_arg.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// struct page_region: `[start, end)` whose pages all have `categories`
/// (masked by the return mask).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// What to ask of one scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan {
    pub flags: u64,
    /// Pages must have every category of this mask...
    pub category_mask: u64,
    /// ...and at least one of this one (0: no such condition).
    pub anyof_mask: u64,
    /// Categories reported in each region.
    pub return_mask: u64,
}

/// Scan `[start, end)` of the task whose pagemap is `pagemap`, appending
/// the matching regions to `out` (adjacent pages with the same reported
/// categories come as one region). Walks the whole range, in as many
/// calls as the regions need.
pub fn scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    what: Scan,
    out: &mut Vec<PageRegion>,
) -> Result<(), Errno> {
    const VEC: usize = 1024;
    let mut buf = vec![PageRegion::default(); VEC];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: what.flags,
            start: at,
            end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: VEC as u64,
            category_mask: what.category_mask,
            category_anyof_mask: what.anyof_mask,
            return_mask: what.return_mask,
            ..Default::default()
        };
        // SAFETY: `arg` is a pm_scan_arg of the size it claims; the kernel
        // writes at most `vec_len` regions into `buf`, which has that many,
        // and `walk_end` into `arg`; both outlive the call.
        let n = Errno::result(unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN as _,
                &mut arg as *mut PmScanArg,
            )
        })? as usize;
        out.extend_from_slice(&buf[..n.min(VEC)]);
        if arg.walk_end <= at {
            break; // no progress: cannot happen, but never loop forever
        }
        at = arg.walk_end;
    }
    Ok(())
}
