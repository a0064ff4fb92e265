//! A process's pages, copied beside the tracer thread.
//!
//! Copying pages needs no ptrace: pagemap and process_vm_readv only need
//! the task stopped, which it stays until the tree is let go. So while the
//! tracer thread goes on with the next process's remote calls, a pages
//! thread (`crate::pool`) copies this one's private memory and the shared
//! anonymous memory it is the first to map. Everything that numbers or
//! names something (the pages ids, which shared object is whose) is
//! decided on the tracer thread in the tree's order when the job is made,
//! so the images do not depend on which thread ran first.

use crate::error::{Pid, Result};
use crate::fault;
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::proc::pagemap::PagemapReader;
use crate::ptrace::mem::TaskMem;

use super::memory::{self, PageSink, PagemapBuilder, ParentMarks, VmaKind};

/// The pages of one process to copy.
pub struct Job {
    pub pid: Pid,
    pub ppid: Pid,
    pub vpid: Pid,
    /// The id of its private pages (pages-ID.img).
    pub private_id: u32,
    pub vmas: Vec<pb::VmaEntry>,
    /// Each mapping's kind, and whether it is readable.
    pub kinds: Vec<(VmaKind, bool)>,
    pub mem: TaskMem,
    pub pagemap: PagemapReader,
    /// The parent's mappings whose pages the process may still share
    /// with it, when its parent is in the tree.
    pub cow_parent: Option<Vec<pb::VmaEntry>>,
    /// Pages an incremental dump leaves in the parent image.
    pub marks: ParentMarks,
    /// An incremental dump: its counts are logged.
    pub incremental: bool,
    /// Shared anonymous objects this process is the first to map:
    /// (shmid, start, end, pages id).
    pub shmem: Vec<(u64, u64, u64, u32)>,
}

/// What a job copied, for the dump's counts.
#[derive(Debug, Default)]
pub struct Done {
    pub pages: u64,
    /// Pages recorded as shared with the parent (PE_COW_PARENT).
    pub cow_pages: u64,
    pub shmem_pages: u64,
}

impl Job {
    /// Copy the pages and write pages-ID.img and the pagemaps.
    pub fn run(self, dir: &ImageDir) -> Result<Done> {
        let (pid, ppid) = (self.pid, self.ppid);
        let mut done = Done::default();
        let mut sinks = vec![PageSink {
            pages: dir.pages_writer(self.private_id)?,
            pm: PagemapBuilder::default(),
        }];
        let jobs: Vec<_> = self
            .vmas
            .iter()
            .zip(&self.kinds)
            .filter(|(_, (kind, _))| {
                matches!(
                    kind,
                    VmaKind::AnonPrivate | VmaKind::FilePrivate | VmaKind::Vdso
                )
            })
            .map(|(e, &(kind, readable))| memory::VmaJob {
                entry: e,
                kind,
                readable,
                sink: 0,
                base: 0,
            })
            .collect();
        let zero_pfn = memory::zero_pfn();
        // Pages still shared with the parent are not stored again.
        let cow = match &self.cow_parent {
            Some(parent) => memory::find_cow_pages(pid, ppid, &self.vmas, parent, zero_pfn),
            None => memory::CowMarks::new(),
        };
        let in_parent = memory::dump_pages_cow(
            pid,
            &self.mem,
            &self.pagemap,
            zero_pfn,
            &jobs,
            &mut sinks,
            &cow,
            &self.marks,
        )?;
        drop(jobs);
        let mut private = sinks.pop().expect("sink 0 exists");
        done.pages = private.pm.total_pages();
        let cow = memory::cow_entries(&cow);
        done.cow_pages = cow.iter().map(|e| e.nr_pages as u64).sum();
        if done.cow_pages > 0 {
            debug!(
                "pid {pid}: {} pages shared with parent {ppid}",
                done.cow_pages
            );
        }
        if self.incremental {
            let kept: u64 = in_parent.iter().map(|e| e.nr_pages as u64).sum();
            debug!(
                "pid {pid}: {} pages written since the parent image stored, {kept} pages left in it",
                done.pages
            );
        }
        memory::merge_cow_entries(&mut private.pm.entries, cow);
        memory::merge_cow_entries(&mut private.pm.entries, in_parent);
        dir.finish_pages(private.pages)?;
        dir.write_pagemap(
            &format!("pagemap-{}.img", self.vpid),
            self.private_id,
            &private.pm.entries,
        )?;
        // Shared anonymous memory: each object once per dump, whoever maps it.
        for &(shmid, start, end, id) in &self.shmem {
            let mut sink = PageSink {
                pages: dir.pages_writer(id)?,
                pm: PagemapBuilder::default(),
            };
            memory::dump_shmem_object(pid, start, end, &mut sink)?;
            done.shmem_pages += sink.pm.total_pages();
            dir.finish_pages(sink.pages)?;
            dir.write_pagemap(&format!("pagemap-shmem-{shmid}.img"), id, &sink.pm.entries)?;
        }
        debug!("pid {pid}: pages copied");
        fault::check(pid, "dump-memory")?;
        Ok(done)
    }
}
