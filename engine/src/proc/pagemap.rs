//! `/proc/PID/pagemap`: one u64 per virtual page.
//!
//! Bits (Documentation/admin-guide/mm/pagemap.rst):
//! 63 present, 62 swapped, 61 file page or shared anonymous, 58 guard
//! region (6.15+), 57 uffd write-protected, 56 exclusively mapped,
//! 55 soft-dirty (never set on this machine: no CONFIG_MEM_SOFT_DIRTY),
//! 0-54 the PFN when present (0 without CAP_SYS_ADMIN), or swap type
//! (0-4) and offset (5-54) when swapped.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;

use super::{proc_path, Pid, ProcError};

/// Size of one pagemap entry.
pub const ENTRY_SIZE: u64 = 8;

pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_FILE: u64 = 1 << 61;
pub const PM_GUARD_REGION: u64 = 1 << 58;
pub const PM_UFFD_WP: u64 = 1 << 57;
pub const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// One decoded pagemap entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PageFlags(pub u64);

impl PageFlags {
    pub fn present(self) -> bool {
        self.0 & PM_PRESENT != 0
    }
    pub fn swapped(self) -> bool {
        self.0 & PM_SWAP != 0
    }
    /// A file page or a shared anonymous page (page cache / shmem).
    pub fn file_or_shared_anon(self) -> bool {
        self.0 & PM_FILE != 0
    }
    pub fn guard_region(self) -> bool {
        self.0 & PM_GUARD_REGION != 0
    }
    pub fn uffd_wp(self) -> bool {
        self.0 & PM_UFFD_WP != 0
    }
    /// Mapped by this process only.
    pub fn exclusive(self) -> bool {
        self.0 & PM_MMAP_EXCLUSIVE != 0
    }
    pub fn soft_dirty(self) -> bool {
        self.0 & PM_SOFT_DIRTY != 0
    }
    /// The page has content to dump: present or swapped out.
    pub fn has_content(self) -> bool {
        self.0 & (PM_PRESENT | PM_SWAP) != 0
    }
    /// The page frame number, when present (0 if the reader lacks
    /// CAP_SYS_ADMIN).
    pub fn pfn(self) -> Option<u64> {
        self.present().then_some(self.0 & PM_PFN_MASK)
    }
    /// Swap type, when swapped.
    pub fn swap_type(self) -> Option<u64> {
        (self.swapped() && !self.present()).then_some(self.0 & 0x1f)
    }
    /// Swap offset, when swapped.
    pub fn swap_offset(self) -> Option<u64> {
        (self.swapped() && !self.present()).then_some((self.0 & PM_PFN_MASK) >> 5)
    }
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// An open `/proc/PID/pagemap`. Reads use pread on one fd, in batches as
/// large as the caller's range (the kernel walks the page tables in one
/// call per batch), so a GiB-sized VMA costs one syscall, not one per page.
///
/// The fd is also what PAGEMAP_SCAN ioctls go to (see [`AsFd`]).
#[derive(Debug)]
pub struct PagemapReader {
    file: File,
    pid: Pid,
    page_size: u64,
}

/// Largest single pread, in entries (64 MiB of entries covers 32 GiB of
/// address space with 4 KiB pages).
const MAX_BATCH_ENTRIES: usize = 8 << 20;

impl PagemapReader {
    pub fn open(pid: Pid) -> Result<Self, ProcError> {
        let path = proc_path(pid, "pagemap");
        let file = File::open(&path).map_err(|e| ProcError::io(pid, path, e))?;
        Ok(PagemapReader {
            file,
            pid,
            page_size: page_size(),
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Replace the contents of `out` with one entry per page of
    /// `[start, end)` (both page-aligned; decode with [`PageFlags`]).
    /// The range must lie within the task's user address space.
    pub fn read_range(&self, start: u64, end: u64, out: &mut Vec<u64>) -> Result<(), ProcError> {
        let ps = self.page_size;
        let err = |msg: String| {
            ProcError::io(
                self.pid,
                proc_path(self.pid, "pagemap"),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
            )
        };
        if (start | end) & (ps - 1) != 0 || end < start {
            return Err(err(format!(
                "bad range {start:#x}-{end:#x} (must be page-aligned, start <= end)"
            )));
        }
        let n = ((end - start) / ps) as usize;
        out.clear();
        out.resize(n, 0);
        let mut done = 0usize;
        while done < n {
            let batch = (n - done).min(MAX_BATCH_ENTRIES);
            let chunk = &mut out[done..done + batch];
            // SAFETY: any bit pattern is a valid u64; the byte view covers
            // exactly the chunk and lives no longer than it.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<u8>(), batch * 8)
            };
            let mut got = 0usize;
            while got < bytes.len() {
                let off = (start / ps + done as u64) * ENTRY_SIZE + got as u64;
                match self.file.read_at(&mut bytes[got..], off) {
                    Ok(0) => {
                        return Err(err(format!(
                            "pagemap ended at {:#x} while reading {start:#x}-{end:#x} \
                             (beyond the user address space?)",
                            (off / ENTRY_SIZE) * ps
                        )))
                    }
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(ProcError::io(self.pid, proc_path(self.pid, "pagemap"), e))
                    }
                }
            }
            done += batch;
        }
        Ok(())
    }
}

impl AsFd for PagemapReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for PagemapReader {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode() {
        let p = PageFlags(PM_PRESENT | PM_MMAP_EXCLUSIVE | 0x1234);
        assert!(p.present() && p.exclusive() && !p.swapped() && !p.file_or_shared_anon());
        assert_eq!(p.pfn(), Some(0x1234));
        assert_eq!(p.swap_type(), None);
        assert!(p.has_content());
        let s = PageFlags(PM_SWAP | (77 << 5) | 3);
        assert!(s.swapped() && !s.present() && s.has_content());
        assert_eq!(
            (s.swap_type(), s.swap_offset(), s.pfn()),
            (Some(3), Some(77), None)
        );
        let f = PageFlags(PM_FILE | PM_UFFD_WP);
        assert!(f.file_or_shared_anon() && f.uffd_wp() && !f.has_content());
        assert!(PageFlags(PM_GUARD_REGION).guard_region());
        assert!(PageFlags(PM_SOFT_DIRTY).soft_dirty());
        assert!(!PageFlags(0).has_content());
    }

    #[test]
    fn self_pagemap() {
        let me = std::process::id() as Pid;
        let r = PagemapReader::open(me).unwrap();
        let ps = r.page_size();
        assert_eq!(ps, 4096);
        // 64 pages: touch the even ones only.
        let n = 64usize;
        let len = n * ps as usize;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        for i in (0..n).step_by(2) {
            // SAFETY: within the mapping.
            unsafe { *(addr as *mut u8).add(i * ps as usize) = 1 };
        }
        let start = addr as u64;
        let mut out = vec![1, 2, 3];
        r.read_range(start, start + len as u64, &mut out).unwrap();
        assert_eq!(out.len(), n);
        for (i, e) in out.iter().enumerate() {
            let f = PageFlags(*e);
            assert_eq!(f.present(), i % 2 == 0, "page {i}: {e:#x}");
            if i % 2 == 0 {
                assert!(f.exclusive() && !f.file_or_shared_anon());
                assert!(f.pfn().unwrap() > 0, "root sees PFNs");
            }
        }
        r.read_range(start, start, &mut out).unwrap();
        assert!(out.is_empty());
        assert!(r
            .read_range(start + 1, start + len as u64, &mut out)
            .is_err());
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(addr, len) };
        // Beyond the user address space: an error, not a hang.
        assert!(r
            .read_range(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000, &mut out)
            .is_err());
    }

    proptest! {
        #[test]
        fn bits(v: u64) {
            let f = PageFlags(v);
            prop_assert_eq!(f.present(), v >> 63 == 1);
            prop_assert_eq!(f.swapped(), (v >> 62) & 1 == 1);
            prop_assert_eq!(f.file_or_shared_anon(), (v >> 61) & 1 == 1);
            prop_assert_eq!(f.uffd_wp(), (v >> 57) & 1 == 1);
            prop_assert_eq!(f.exclusive(), (v >> 56) & 1 == 1);
            if f.present() {
                prop_assert_eq!(f.pfn(), Some(v & ((1 << 55) - 1)));
            }
        }
    }
}
