//! The stages of a dump and the one interface every kind of kernel object
//! plugs into them with.
//!
//! A dump goes through these stages (`dump::dump` is the driver):
//!
//! 1. **Freeze**: every thread of the tree is seized (through its freezer
//!    cgroup first with `--freeze-cgroup`).
//! 2. **Tasks**, one process at a time:
//!    - *remote*: what only the task itself can tell is asked through
//!      remote syscalls in its threads: the task core, the leader's
//!      thread core and each kind's calls that fit one batch
//!      ([`Dumper::task_calls`], e.g. the interval timers) in one batch,
//!      each kind's remaining part ([`Dumper::in_task`], e.g. POSIX
//!      timers), then each other thread's core;
//!    - *state*: what /proc and ptrace tell from outside, each kind's part
//!      ([`Dumper::task`], e.g. pending signals, seccomp filters, cgroup
//!      sets);
//!    - *files*: every fd (each kind of fd is one module of `files/`),
//!      cwd, root and the executable;
//!    - *memory*: every mapping ([`Dumper::vma`] lets a kind claim one,
//!      e.g. SysV shared memory) and its pages.
//! 3. **Objects** ([`Dumper::finish`]): each kind writes the images of
//!    what the tree shares (cgroup.img, seccomp.img, the SysV IPC
//!    objects), then the tree-wide images (files.img, pstree.img,
//!    inventory.img).
//! 4. **Commit**: the image directory appears, whole, by rename.
//! 5. **Release**: the tree is killed, or left running.
//!
//! A failure at any stage leaves the tree running as it was: every seized
//! thread is detached by its Drop, every scratch mapping removed.

use crate::error::{Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::proc::{maps, status};
use crate::ptrace::remote::Call;
use crate::ptrace::scratch::ScratchSession;

use super::DumpOptions;

/// One process during the *state* step: its task core and its threads'
/// cores, leader first.
pub struct ProcCx<'a> {
    pub pid: Pid,
    pub task_core: &'a mut pb::TaskCoreEntry,
    /// (tid, /proc status of the thread, its thread core), leader first.
    pub threads: Vec<(Pid, &'a status::Status, &'a mut pb::ThreadCoreEntry)>,
}

/// What the *objects* step knows of the whole dump.
pub struct FinishCx<'a> {
    pub dir: &'a ImageDir,
    pub root: Pid,
    /// Every process of the tree, zombies included.
    pub pids: std::collections::BTreeSet<Pid>,
    /// The root task's ids (namespaces).
    pub root_ids: Option<pb::TaskKobjIdsEntry>,
    /// Host pid -> pid in the tree's own pid namespace (empty: the tree
    /// is in the engine's).
    pub vpids: &'a std::collections::BTreeMap<Pid, Pid>,
}

/// One kind of kernel object, on the dump side. Every method has a
/// default that does nothing, so a kind implements the steps it takes
/// part in.
pub trait Dumper {
    /// *remote*, in the process-wide batch: the calls this kind asks in
    /// the leader with the core's (one round trip for all), which may
    /// write into the task's memory at `at` (up to `room` bytes); with
    /// the bytes they use there. Their answers go to
    /// [`Dumper::task_answers`].
    fn task_calls(&mut self, _pid: Pid, _at: u64, _room: usize) -> Result<(Vec<Call>, usize)> {
        Ok((Vec::new(), 0))
    }

    /// The raw results of [`Dumper::task_calls`]' calls, in order, and
    /// the bytes they wrote (as many as it said it uses).
    fn task_answers(
        &mut self,
        _pid: Pid,
        _results: &[i64],
        _data: &[u8],
        _tc: &mut pb::TaskCoreEntry,
    ) -> Result<()> {
        Ok(())
    }

    /// *remote*: this kind's part of the task core asked in the leader
    /// through remote syscalls after the process-wide batch.
    fn in_task(
        &mut self,
        _pid: Pid,
        _s: &mut ScratchSession<'_>,
        _tc: &mut pb::TaskCoreEntry,
    ) -> Result<()> {
        Ok(())
    }

    /// *state*: this kind's part of the process read from outside, after
    /// the remote calls (so that what arrived meanwhile is included).
    fn task(&mut self, _p: &mut ProcCx<'_>) -> Result<()> {
        Ok(())
    }

    /// *memory*: whether this kind dumps mapping `v` of `pid` itself
    /// (then it fills in `e` and the memory step stores no pages of it).
    fn vma(&mut self, _pid: Pid, _v: &maps::Vma, _e: &mut pb::VmaEntry) -> Result<bool> {
        Ok(false)
    }

    /// *objects*: write this kind's images.
    fn finish(&mut self, _cx: &FinishCx<'_>) -> Result<()> {
        Ok(())
    }

    /// inventory.img: this kind's fields.
    fn inventory(&self, _inv: &mut pb::InventoryEntry) {}
}

/// What a kind may need to start: the options, and the freezer cgroup the
/// tree was frozen through, if any.
pub struct DumpEnv<'a> {
    pub opts: &'a DumpOptions,
    pub freezer: Option<&'a super::cgroups::Freezer>,
}

/// A kind's registration: its name and how it starts.
pub struct Kind {
    pub name: &'static str,
    pub new: fn(&DumpEnv<'_>) -> Result<Box<dyn Dumper>>,
}
