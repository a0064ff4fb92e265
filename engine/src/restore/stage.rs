//! The stages of a restore and the one interface every kind of kernel
//! object plugs into them with.
//!
//! A restore goes through these stages, in order (`restore::restore` is
//! the driver):
//!
//! 1. **Validate** ([`Kind::validate`]): every image is read and checked
//!    (`load`), each kind checks its own part. Nothing exists yet.
//! 2. **Objects** ([`Restorer::create`]): the objects the engine makes
//!    itself, before any task: SysV IPC objects, memfd objects, unlinked
//!    files, files shared between tasks, cgroups.
//! 3. **Plan** ([`Restorer::plan`], [`Restorer::plan_tree`]): what each
//!    new task does for itself right after its clone (its [`ChildPlan`]),
//!    and which task forks which.
//! 4. **Tree** ([`Restorer::tree_created`]): every task is cloned with its
//!    PID, has set itself up and waits; none has run code of its own.
//! 5. **Tasks** ([`Restorer::in_task`]): the engine takes each task over
//!    and goes through the [`TaskStage`]s in it, from the address space to
//!    the registers.
//! 6. **Release** ([`Restorer::finish`], [`Restorer::release_task`], then
//!    [`Restorer::released`]): last fixes that need every task ready, the
//!    settings that would let a task outlive the engine, then the tree
//!    runs.
//!
//! A failure at any stage kills every task made so far; a kind undoes what
//! it made in its `Drop`, unless it was told [`Restorer::released`].

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::child::ChildPlan;
use super::load::{Images, TaskImages};
use super::RestoreOptions;
use crate::error::{Pid, Result};
use crate::images::pb;
use crate::ptrace::mem::TaskMem;
use crate::ptrace::remote::Remote;
use crate::ptrace::Seized;

/// The steps the engine takes in each task, in this order. Each kind does
/// its part of a step for the task (and its threads) in
/// [`Restorer::in_task`]; the driver itself only maps and removes its
/// scratch area (before `AddressSpace`, whose calls run from it in one
/// batch, and before `Final`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskStage {
    /// The address space inherited from the engine goes (the vDSO group
    /// moves to its dumped place); `TaskCx::ip` may change.
    AddressSpace,
    /// Every mapping with its contents.
    Memory,
    /// In-task parts of objects the engine made (semaphore values a task
    /// set last, a queue's last message).
    Objects,
    /// Open files the engine holds go into the task.
    Files,
    /// mm fields, auxv and the executable.
    Mm,
    /// The other threads exist, each with its per-thread kernel state.
    Threads,
    /// Pending signals and timers.
    Signals,
    /// Limits that had to wait until the engine's own fd work was done.
    Limits,
    /// Seccomp filters, while the task still has the privilege.
    Seccomp,
    /// Credentials, and what a credential change resets.
    Creds,
    /// Masks, FPU state and registers of every thread; attributes set
    /// from outside.
    Final,
}

impl TaskStage {
    pub const ALL: [TaskStage; 11] = [
        TaskStage::AddressSpace,
        TaskStage::Memory,
        TaskStage::Objects,
        TaskStage::Files,
        TaskStage::Mm,
        TaskStage::Threads,
        TaskStage::Signals,
        TaskStage::Limits,
        TaskStage::Seccomp,
        TaskStage::Creds,
        TaskStage::Final,
    ];
}

/// Open file descriptions the engine holds for the tasks, by file id of
/// files.img: files shared between tasks and files only the engine can
/// make. A task takes each of its own over from its inherited copy of
/// the engine's fd table right after its clone (`FdSource::Inherit`;
/// the `late` ones with pidfd_getfd in the `Files` stage) or, to map
/// one, reopens its inherited copy of the engine's fd through
/// /proc/self/fd/N.
#[derive(Default)]
pub struct EngineFds {
    pub descriptions: BTreeMap<u32, OwnedFd>,
    /// Files that no path names (memfds, unlinked files): a mapping of
    /// one is made from the engine's description, not from a path.
    pub pathless: std::collections::BTreeSet<u32>,
    /// Files whose description the engine makes only once the tree
    /// exists, over a place-holder held at the same fd until then
    /// (restore/engine_files.rs, the pidfds of reaped tasks in a pid
    /// namespace of the tree's own): a task cannot take these over in its
    /// clone (`FdSource::Inherit`), the engine puts them in
    /// (`FdSource::Inject`).
    pub late: std::collections::BTreeSet<u32>,
    /// Shared anonymous memory objects the engine made and filled, by
    /// shmid, in a tree with a user namespace of its own
    /// (restore/memory.rs `make_objects`).
    pub shmem: BTreeMap<u64, OwnedFd>,
}

impl EngineFds {
    /// The engine's fd a task reopens to map file `id`, if only the
    /// engine's description reaches it (the task inherits the engine's
    /// fds in its clone: restore/child.rs).
    pub fn map_fd(&self, id: u32) -> Option<RawFd> {
        if !self.pathless.contains(&id) {
            return None;
        }
        Some(self.descriptions.get(&id)?.as_raw_fd())
    }
}

/// One task during the `Tasks` stage: seized, with its images, its plan
/// and the engine's handles on it.
pub struct TaskCx<'a> {
    pub imgs: &'a Images,
    pub t: &'a TaskImages,
    pub plan: &'a ChildPlan,
    pub task: Seized,
    /// The other threads, in the order of `t.threads`, once the
    /// `Threads` stage made them.
    pub threads: Vec<Seized>,
    pub mem: TaskMem,
    /// The `syscall` instruction remote calls run on.
    pub ip: u64,
    /// The engine's scratch area in the task (0 before `Memory`).
    pub scratch: u64,
}

impl TaskCx<'_> {
    pub fn pid(&self) -> Pid {
        self.t.pid
    }

    /// Runs `f` with remote calls in the leader.
    pub fn in_leader<R>(
        &mut self,
        f: impl FnOnce(&mut Remote<'_>, &TaskMem, u64) -> Result<R>,
    ) -> Result<R> {
        let mut r = Remote::new(&mut self.task, self.ip)?;
        let out = f(&mut r, &self.mem, self.scratch)?;
        r.abandon();
        Ok(out)
    }

    /// Runs `f` with remote calls in every other thread, with its tid and
    /// its core image.
    pub fn in_threads(
        &mut self,
        mut f: impl FnMut(&mut Remote<'_>, &TaskMem, u64, Pid, &pb::CoreEntry) -> Result<()>,
    ) -> Result<()> {
        for (th, (tid, core)) in self.threads.iter_mut().zip(&self.t.threads) {
            let mut r = Remote::new(th, self.ip)?;
            f(&mut r, &self.mem, self.scratch, *tid, core)?;
            r.abandon();
        }
        Ok(())
    }
}

/// One kind of kernel object, on the restore side. Every method has a
/// default that does nothing, so a kind implements the stages it takes
/// part in. What a kind made and must undo if the restore fails, it undoes
/// in its `Drop` (the driver drops the kinds after it killed the tasks).
///
/// The per-task methods ([`Restorer::in_task`], [`Restorer::release_task`])
/// take `&self`: the driver runs them for several tasks at once, each task
/// on the tracer thread that seized it (`restore/workers.rs`). What a kind
/// shares between tasks there sits behind a lock of its own.
pub trait Restorer: Send + Sync {
    /// Objects: make what the engine makes itself before any task exists.
    /// Descriptions meant for the tasks go into `fds`.
    fn create(&mut self, _imgs: &Images, _fds: &mut EngineFds) -> Result<()> {
        Ok(())
    }

    /// Plan: add this kind's part to what task `t` does for itself.
    fn plan(
        &self,
        _imgs: &Images,
        _t: &TaskImages,
        _fds: &EngineFds,
        _plan: &mut ChildPlan,
    ) -> Result<()> {
        Ok(())
    }

    /// Plan: tree-wide decisions over every task's plan (in the order of
    /// `imgs.tasks`), made right before the tree is created. A plan that
    /// depends on the engine's own state is checked again with
    /// [`Restorer::plan_holds`] after the driver built the tree's plan.
    fn plan_tree(&mut self, _imgs: &Images, _plans: &mut [ChildPlan]) -> Result<()> {
        Ok(())
    }

    /// Whether the tree-wide plan still holds (checked right before the
    /// clone; `plan_tree` runs again when it does not).
    fn plan_holds(&mut self) -> Result<bool> {
        Ok(true)
    }

    /// Tree: every task exists and waits; none has run code of its own.
    fn tree_created(&mut self, _imgs: &Images) -> Result<()> {
        Ok(())
    }

    /// Tasks: this kind's part of `stage` in one task. Every task has
    /// done the stages before `stage` (the driver's threads meet between
    /// stages); other tasks may be in `stage` at the same time.
    fn in_task(&self, _stage: TaskStage, _cx: &mut TaskCx<'_>) -> Result<()> {
        Ok(())
    }

    /// Release: every task is ready and still held; last fixes.
    fn finish(&mut self, _imgs: &Images) -> Result<()> {
        Ok(())
    }

    /// Release, in one task, once every task is ready (after `finish`;
    /// parents before children): what may only be set when nothing can
    /// fail any more. Until then a new task dies with its parent, so that
    /// no half-restored task outlives the engine (`child::tie_to_parent`);
    /// its dumped parent-death signal and its final capabilities (without
    /// the CAP_KILL it needs to kill its children) come here. Its
    /// registers are final and the scratch area is gone: remote calls put
    /// the registers back (`Remote::finish`) and bring their own memory.
    fn release_task(&self, _cx: &mut TaskCx<'_>) -> Result<()> {
        Ok(())
    }

    /// The tree runs: what was made stays.
    fn released(&mut self) {}
}

/// A kind's registration: its name, its image checks and how it starts.
pub struct Kind {
    pub name: &'static str,
    /// Validate: this kind's checks of the loaded images (no process
    /// exists yet). A problem names the image file.
    pub validate: fn(&Images) -> Result<()>,
    /// Its restore state for these images and options.
    pub new: fn(&Images, &RestoreOptions) -> Result<Box<dyn Restorer>>,
}

/// A lock of the restore's state shared by the tasks' threads. One held by
/// a thread that failed still guards whole updates: each is made under
/// the lock in one go, and the failure aborts the restore anyway.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// For kinds with nothing to check beyond what the loader checks.
pub fn no_checks(_: &Images) -> Result<()> {
    Ok(())
}

/// The fds a task's plan puts above all its own fds for the engine's use
/// while it rebuilds memory (mapped files, the executable).
pub fn helper_fd_range(plan: &ChildPlan) -> Option<(RawFd, RawFd)> {
    let n = plan.helper_files.len() as RawFd;
    (n > 0).then(|| (plan.helper_fd_base, plan.helper_fd_base + n - 1))
}
