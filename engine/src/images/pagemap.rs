//! The pagemap images (pagemap-PID.img, pagemap-shmem-ID.img): which
//! pages of a mapping have their contents in the pages file, and where
//! the rest come from. Dump writes these flags, restore and show read
//! them, so their meaning is defined once, here.

use super::pb;

/// The unit of PagemapEntry.nr_pages and of the pages file.
pub const PAGE: u64 = 4096;

/// PagemapEntry.flags: the pages are in the parent image (incremental
/// dumps, which ckpt does not write).
pub const PE_PARENT: u32 = 1 << 0;
/// PagemapEntry.flags: the pages are fetched on demand (lazy restore,
/// which ckpt does not do).
pub const PE_LAZY: u32 = 1 << 1;
/// PagemapEntry.flags: the pages are in the pages file.
pub const PE_PRESENT: u32 = 1 << 2;
/// PagemapEntry.flags, a ckpt extension (CRIU defines bits 0-2 only; crit
/// shows this one as a number): the pages are the very pages of the
/// parent process at the same address (still copy-on-write shared since
/// the fork), so they are not stored here; restore makes them shared
/// again by forking the task from a parent that already holds them. Never
/// set together with PE_PRESENT.
pub const PE_COW_PARENT: u32 = 1 << 16;

/// Whether an entry's pages are in the pages file (PE_PRESENT, or an old
/// image without flags).
pub fn entry_present(e: &pb::PagemapEntry) -> bool {
    match e.flags {
        Some(f) => f & PE_PRESENT != 0 && f & PE_COW_PARENT == 0,
        None => e.in_parent != Some(true),
    }
}

/// Whether an entry stands for pages shared with the parent.
pub fn entry_cow(e: &pb::PagemapEntry) -> bool {
    e.flags.is_some_and(|f| f & PE_COW_PARENT != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(flags: Option<u32>, in_parent: Option<bool>) -> pb::PagemapEntry {
        pb::PagemapEntry {
            vaddr: 0x1000,
            nr_pages: 1,
            in_parent,
            flags,
        }
    }

    #[test]
    fn present_and_cow() {
        assert!(entry_present(&entry(Some(PE_PRESENT), None)));
        assert!(entry_present(&entry(None, None)));
        assert!(!entry_present(&entry(None, Some(true))));
        assert!(!entry_present(&entry(Some(PE_PARENT), None)));
        let cow = entry(Some(PE_COW_PARENT), None);
        assert!(entry_cow(&cow) && !entry_present(&cow));
        let both = entry(Some(PE_COW_PARENT | PE_PRESENT), None);
        assert!(entry_cow(&both) && !entry_present(&both));
    }
}
