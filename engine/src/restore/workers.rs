//! The Tasks and Release stages on several tracer threads at once.
//!
//! Each task's work is mostly remote calls, each two ptrace stops in
//! which the engine waits for the task; done one task after the other on
//! one thread, a tree of many tasks waited on each in turn. The tasks are
//! spread over a few threads here instead, and a task stays with the
//! thread that seized it to the end (a tracee belongs to the thread that
//! attached it): seize, every stage, the release and the detach.
//!
//! The driver's thread leads: it sends every thread the same step and
//! waits for all of them before the next, so the threads meet between
//! steps. A task stage is one step (every task has done the stages before
//! it when any starts it); the release goes one depth of the tree at a
//! time, parents first, the detach the other way; the kinds' `finish`
//! runs on the driver's thread between the two, every task held. Tasks
//! that share an fd table stay on one thread, one after the other, as
//! remote calls in one of them make and close fds in the other's table.
//! An error from any thread ends the restore at that step: the error of
//! the first task (in the images' order) that failed is the restore's,
//! every thread lets its tasks go and the driver kills the tree.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::RwLock;

use super::child::ChildPlan;
use super::load::Images;
use super::stage::{EngineFds, Restorer, TaskCx, TaskStage};
use crate::error::{Error, Result};
use crate::fault;

/// One step of the threads, the same for all of them.
#[derive(Clone, Copy)]
enum Step {
    /// Take over the thread's tasks.
    Seize,
    Stage(TaskStage),
    /// Release the tasks this far below the root.
    Release(usize),
    /// Let the tasks this far below the root go.
    Detach(usize),
}

/// What a thread sends back for one step: the index (in `imgs.tasks`) of
/// the task that failed, with its error.
type Outcome = std::result::Result<(), (usize, Error)>;

/// The threads' shared inputs.
struct Shared<'a> {
    imgs: &'a Images,
    plans: &'a [ChildPlan],
    /// Read by the threads in each step; the driver's `finish` writes
    /// between steps.
    kinds: &'a RwLock<&'a mut [Box<dyn Restorer>]>,
    depths: &'a [usize],
}

/// How many threads: the tasks' waits on each other's ptrace stops
/// overlap well past the CPUs, and each thread is a few pages of stack.
fn threads_for(groups: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    groups.min(4 * cpus).clamp(1, 16)
}

/// The tasks' groups (an fd table shared, or one task alone), dealt round
/// robin to `n` threads in the images' order: each thread's list is in that
/// order (parents first).
fn deal(imgs: &Images, n: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); n];
    if n == 0 {
        return out;
    }
    let mut owner_of = std::collections::BTreeMap::new();
    let mut next = 0;
    for (i, t) in imgs.tasks.iter().enumerate() {
        let group = t.fd_table_owner.unwrap_or(t.pid);
        let w = *owner_of.entry(group).or_insert_with(|| {
            let w = next % n;
            next += 1;
            w
        });
        out[w].push(i);
    }
    out
}

fn groups(imgs: &Images) -> usize {
    let g: std::collections::BTreeSet<_> = imgs
        .tasks
        .iter()
        .map(|t| t.fd_table_owner.unwrap_or(t.pid))
        .collect();
    g.len()
}

/// The stages *Tasks* and *Release* of `restore::take_over_tree`
/// (`restore::take_over` seizes a task, `restore::run_stage` runs one
/// stage in it); the engine's fds for the tasks are closed before the tree is let go.
pub fn run(
    imgs: &Images,
    plans: &[ChildPlan],
    kinds: &mut [Box<dyn Restorer>],
    fds: EngineFds,
    depths: &[usize],
) -> Result<()> {
    let root = imgs.tasks[0].pid;
    // In a pid namespace of the tree's own the driver runs inside it
    // (restore/ns.rs), where a thread of its would take a pid of the
    // namespace that a task or thread of the images may need: the
    // driver's one thread takes every task there, one after the other.
    let inline = imgs.ns.pid;
    let n = if inline { 0 } else { threads_for(groups(imgs)) };
    let lists = deal(imgs, n);
    let everyone: Vec<usize> = (0..imgs.tasks.len()).collect();
    let max_depth = depths.iter().copied().max().unwrap_or(0);
    let kinds = RwLock::new(kinds);
    let shared = Shared {
        imgs,
        plans,
        kinds: &kinds,
        depths,
    };
    let shared = &shared;
    let mut here = Vec::new();
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = channel::<Outcome>();
        let mut steps: Vec<Sender<Step>> = Vec::with_capacity(n);
        for mine in lists {
            let (tx, rx) = channel();
            steps.push(tx);
            let done = done_tx.clone();
            std::thread::Builder::new()
                .name("ckpt-restore".into())
                .spawn_scoped(scope, move || {
                    worker(shared, mine, rx, done);
                })
                .map_err(|e| Error::io("thread", format!("pid {root}: a restore thread"), e))?;
        }
        drop(done_tx);
        let mut all = |step: Step| -> Result<()> {
            if inline {
                return do_step(shared, &everyone, &mut here, step).map_err(|(_, e)| e);
            }
            for tx in &steps {
                // A thread that is gone failed and said so already.
                let _ = tx.send(step);
            }
            let mut first: Option<(usize, Error)> = None;
            for _ in 0..steps.len() {
                match done_rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err((i, e))) => {
                        if first.as_ref().is_none_or(|(j, _)| i < *j) {
                            first = Some((i, e));
                        }
                    }
                    Err(_) => {
                        return Err(Error::task(
                            root,
                            "restore",
                            "a restore thread ended without a word",
                        ))
                    }
                }
            }
            match first {
                Some((_, e)) => Err(e),
                None => Ok(()),
            }
        };
        all(Step::Seize)?;
        for s in TaskStage::ALL {
            all(Step::Stage(s))?;
        }
        // Release. Every task is ready, so the last settings that would
        // let a task outlive the engine (its dumped parent-death signal,
        // the end of its extra CAP_KILL) come now, parents first: should
        // the engine die half-way, the tasks set so far are the top of
        // the tree, whose root then lives on, and no parent death kills
        // anything, so the whole ready tree runs. Then the tree is let
        // go, children first. (A task dumped stopped is in its group stop
        // by then; detaching leaves it stopped.)
        fault::check(root, "restore-tasks")?;
        for k in kinds.write().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            k.finish(imgs)?;
        }
        let half = max_depth.div_ceil(2).max(1);
        for d in 0..=max_depth {
            if d == half {
                fault::check(root, "restore-release")?;
            }
            all(Step::Release(d))?;
        }
        // The tasks hold what they need of the engine's fds.
        drop(fds);
        for d in (0..=max_depth).rev() {
            if d + 1 == half {
                fault::check(root, "restore-detach")?;
            }
            all(Step::Detach(d))?;
        }
        Ok(())
    })
}

/// One thread: its tasks, in the images' order, through every step.
fn worker<'a>(sh: &Shared<'a>, mine: Vec<usize>, steps: Receiver<Step>, done: Sender<Outcome>) {
    let mut held: Vec<(usize, TaskCx<'a>)> = Vec::with_capacity(mine.len());
    for step in steps {
        let out = do_step(sh, &mine, &mut held, step);
        let failed = out.is_err();
        if done.send(out).is_err() || failed {
            // The driver gave up, or this thread's tasks are let go (their
            // `Drop`) and killed with the tree.
            break;
        }
    }
}

/// One step in the tasks `mine`, held in `held` once seized.
fn do_step<'a>(
    sh: &Shared<'a>,
    mine: &[usize],
    held: &mut Vec<(usize, TaskCx<'a>)>,
    step: Step,
) -> Outcome {
    let kinds = sh.kinds.read().unwrap_or_else(|e| e.into_inner());
    let kinds: &[Box<dyn Restorer>] = &kinds;
    let mut out: Outcome = Ok(());
    match step {
        Step::Seize => {
            for &i in mine {
                match super::take_over(sh.imgs, i, &sh.plans[i]) {
                    Ok(cx) => held.push((i, cx)),
                    Err(e) => {
                        out = Err((i, e));
                        break;
                    }
                }
            }
        }
        Step::Stage(s) => {
            for (i, cx) in held.iter_mut() {
                if let Err(e) = super::run_stage(s, cx, kinds) {
                    out = Err((*i, e));
                    break;
                }
            }
        }
        Step::Release(d) => {
            'tasks: for (i, cx) in held.iter_mut().filter(|(i, _)| sh.depths[*i] == d) {
                for k in kinds {
                    if let Err(e) = k.release_task(cx) {
                        out = Err((*i, e));
                        break 'tasks;
                    }
                }
            }
        }
        Step::Detach(d) => {
            let (go, stay): (Vec<_>, Vec<_>) =
                held.drain(..).partition(|(i, _)| sh.depths[*i] == d);
            *held = stay;
            'go: for (i, cx) in go.into_iter().rev() {
                for th in cx.threads {
                    if let Err(e) = th.detach() {
                        out = Err((i, e));
                        break 'go;
                    }
                }
                if let Err(e) = cx.task.detach() {
                    out = Err((i, e));
                    break;
                }
            }
        }
    }
    out
}
