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
/// set together with PE_PRESENT; always written with PE_PARENT, so that
/// an engine that does not know this bit takes the pages for a parent
/// image's, finds no parent image, and refuses the image rather than
/// leaving a hole where the pages were.
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

/// `e` with its page count in both fields: field 2 for readers before
/// CRIU 4 (Debian's crit 3.17), field 5 for CRIU 4.
pub fn with_both_counts(e: &pb::PagemapEntry) -> pb::PagemapEntry {
    pb::PagemapEntry {
        nr_pages64: Some(e.nr_pages as u64),
        ..*e
    }
}

/// `e` with its page count in `nr_pages` whichever field held it (CRIU 4
/// writes field 5 and leaves field 2 at 0); a count that fits no u32 is
/// refused (four billion pages, 16 TiB, in one entry).
pub fn one_count(mut e: pb::PagemapEntry) -> Result<pb::PagemapEntry, String> {
    if let Some(n) = e.nr_pages64 {
        if e.nr_pages != 0 && e.nr_pages as u64 != n {
            return Err(format!(
                "pages at {:#x}: two page counts, {} and {n}",
                e.vaddr, e.nr_pages
            ));
        }
        e.nr_pages = u32::try_from(n)
            .map_err(|_| format!("pages at {:#x}: {n} pages in one entry", e.vaddr))?;
    }
    Ok(e)
}

/// `entries` cut where mappings of `vmas` (sorted by address) begin and
/// end: CRIU lets one entry run across adjacent mappings, while ckpt's
/// checks and restore take each entry to lie in one. The pieces keep the
/// order, so the pages file is read the same way.
pub fn split_at_mappings(
    entries: &[pb::PagemapEntry],
    vmas: &[pb::VmaEntry],
) -> Vec<pb::PagemapEntry> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let end = e.vaddr.saturating_add(e.nr_pages as u64 * PAGE);
        let mut cuts: Vec<u64> = vmas
            .iter()
            .flat_map(|v| [v.start, v.end])
            .filter(|&a| e.vaddr < a && a < end && a % PAGE == 0)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut from = e.vaddr;
        for to in cuts.into_iter().chain([end]) {
            out.push(pb::PagemapEntry {
                vaddr: from,
                nr_pages: ((to - from) / PAGE) as u32,
                ..*e
            });
            from = to;
        }
    }
    out
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
            nr_pages64: None,
        }
    }

    #[test]
    fn entries_are_cut_at_mappings() {
        let vma = |start: u64, end: u64| pb::VmaEntry {
            start,
            end,
            ..Default::default()
        };
        let vmas = [
            vma(0x1000, 0x3000),
            vma(0x3000, 0x4000),
            vma(0x8000, 0x9000),
        ];
        let mut e = entry(Some(PE_PRESENT), None);
        e.nr_pages = 3;
        let got: Vec<(u64, u32)> = split_at_mappings(&[e], &vmas)
            .iter()
            .map(|e| (e.vaddr, e.nr_pages))
            .collect();
        assert_eq!(got, [(0x1000, 2), (0x3000, 1)]);
        let mut inside = entry(Some(PE_PRESENT), None);
        inside.vaddr = 0x8000;
        assert_eq!(split_at_mappings(&[inside], &vmas), [inside]);
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
