//! A few threads for the work of a dump or restore that needs no tracer:
//! jobs handed over in order, each run by whichever thread is free.
//!
//! A tracee belongs to the thread that seized it, so whatever goes through
//! ptrace stays on that thread; what only reads /proc or the task's memory
//! (process_vm_readv, pagemap) and writes images can run beside it. The
//! outcome is the same whichever thread ran what: the results come back in
//! the order the jobs went in, and of several failed jobs the error is the
//! first one's (as in `restore/workers.rs`, the first task's in the
//! images' order). A failure stops the jobs not started yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::Scope;

use crate::error::{Error, Result};

/// A job's number (its place in the order) and its outcome; None for a
/// job not started after another failed.
type Outcome<R> = (usize, Option<Result<R>>);

pub struct Pool<'scope, J, R> {
    /// None when the jobs run on the caller's thread as they come.
    jobs: Option<SyncSender<(usize, J)>>,
    done: Receiver<Outcome<R>>,
    /// Run here when there are no threads.
    inline: Arc<dyn Fn(J) -> Result<R> + Send + Sync + 'scope>,
    inline_done: Vec<Outcome<R>>,
    sent: usize,
    failed: Arc<AtomicBool>,
    what: &'static str,
}

impl<'scope, J: Send + 'scope, R: Send + 'scope> Pool<'scope, J, R> {
    /// `threads` threads (none: every job runs in `submit`) named `what`,
    /// each running `work` on the jobs it takes. At most two jobs per
    /// thread wait: a job may hold fds and buffers, and the caller should
    /// not run far ahead of the threads.
    pub fn new<'env>(
        scope: &'scope Scope<'scope, 'env>,
        what: &'static str,
        threads: usize,
        work: impl Fn(J) -> Result<R> + Send + Sync + 'scope,
    ) -> Result<Self> {
        let work: Arc<dyn Fn(J) -> Result<R> + Send + Sync + 'scope> = Arc::new(work);
        let failed = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = channel::<Outcome<R>>();
        let jobs = if threads == 0 {
            None
        } else {
            let (tx, rx) = sync_channel::<(usize, J)>(2 * threads);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..threads {
                let (rx, done, work, failed) =
                    (rx.clone(), done_tx.clone(), work.clone(), failed.clone());
                std::thread::Builder::new()
                    .name(format!("ckpt-{what}"))
                    .spawn_scoped(scope, move || loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((i, job)) = next else { break };
                        let out = (!failed.load(Ordering::Relaxed)).then(|| work(job));
                        if matches!(out, Some(Err(_))) {
                            failed.store(true, Ordering::Relaxed);
                        }
                        if done.send((i, out)).is_err() {
                            break;
                        }
                    })
                    .map_err(|e| Error::io("thread", format!("a {what} thread"), e))?;
            }
            Some(tx)
        };
        Ok(Pool {
            jobs,
            done,
            inline: work,
            inline_done: Vec::new(),
            sent: 0,
            failed,
            what,
        })
    }

    /// Hand over the next job (it may wait for a thread to take one).
    pub fn submit(&mut self, job: J) -> Result<()> {
        let i = self.sent;
        self.sent += 1;
        match &self.jobs {
            None => {
                let out = (self.inline)(job);
                let failed = out.is_err();
                self.inline_done.push((i, Some(out)));
                if failed {
                    self.failed.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Some(tx) => tx
                .send((i, job))
                .map_err(|_| Error::Usage(format!("internal: the {} threads are gone", self.what))),
        }
    }

    /// A job failed: the caller may stop handing over more.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Wait for every job; their results in the order they were handed
    /// over, or the first failed job's error.
    pub fn finish(self) -> Result<Vec<R>> {
        let what = self.what;
        match self.wait()? {
            (out, false) => Ok(out),
            // Jobs are skipped only after a failure, which `wait` returns.
            (_, true) => Err(Error::Usage(format!(
                "internal: {what} jobs skipped without a failure"
            ))),
        }
    }

    /// Every job's result in order, or the first failed job's error; and
    /// whether jobs were skipped (after a failure, the caller's included).
    fn wait(mut self) -> Result<(Vec<R>, bool)> {
        drop(self.jobs.take());
        let mut all: Vec<Option<Option<Result<R>>>> = (0..self.sent).map(|_| None).collect();
        let inline = std::mem::take(&mut self.inline_done);
        let waiting = self.sent - inline.len();
        for (i, out) in inline {
            all[i] = Some(out);
        }
        for _ in 0..waiting {
            match self.done.recv() {
                Ok((i, out)) => all[i] = Some(out),
                Err(_) => {
                    return Err(Error::Usage(format!(
                        "internal: a {} thread ended without a word",
                        self.what
                    )))
                }
            }
        }
        let mut out = Vec::with_capacity(all.len());
        let mut skipped = false;
        for o in all.into_iter().map(|o| o.expect("every job reported")) {
            match o {
                Some(Ok(r)) => out.push(r),
                Some(Err(e)) => return Err(e),
                None => skipped = true,
            }
        }
        Ok((out, skipped))
    }

    /// The caller failed with `e` before handing over job number `sent`:
    /// the jobs not started are dropped, those running waited for, and the
    /// error is the first of theirs, if any, or else `e`.
    pub fn fail(self, e: Error) -> Error {
        self.failed.store(true, Ordering::Relaxed);
        match self.wait() {
            Err(first) => first,
            Ok(_) => e,
        }
    }
}

/// Threads for work that keeps a CPU busy: one per CPU, no more than
/// jobs, and none for one job, which has nothing to overlap with and would
/// only wait for a thread to be scheduled (a time slice on a loaded
/// machine: t64's dump took 10 to 20 ms longer so).
pub fn threads_for(jobs: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match jobs {
        0 | 1 => 0,
        n => n.min(cpus),
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use crate::error::{Error, Result};

    /// Job `i` sleeps a little less the later it comes, so that the
    /// threads finish out of order; `fail` names jobs that fail.
    fn run(threads: usize, jobs: usize, fail: &[usize]) -> Result<Vec<usize>> {
        std::thread::scope(|scope| {
            let mut pool = Pool::new(scope, "test", threads, |i: usize| {
                std::thread::sleep(std::time::Duration::from_millis((jobs - i) as u64));
                match fail.contains(&i) {
                    true => Err(Error::Usage(format!("job {i} failed"))),
                    false => Ok(i * 10),
                }
            })?;
            for i in 0..jobs {
                pool.submit(i)?;
            }
            pool.finish()
        })
    }

    #[test]
    fn results_come_back_in_the_order_given() {
        for threads in [0, 1, 3] {
            let want: Vec<usize> = (0..8).map(|i| i * 10).collect();
            assert_eq!(run(threads, 8, &[]).unwrap(), want, "{threads} threads");
        }
    }

    #[test]
    fn the_first_failed_job_is_the_error() {
        for threads in [0, 1, 3] {
            let e = run(threads, 8, &[5, 2, 6]).unwrap_err();
            assert_eq!(
                e.to_string(),
                Error::Usage("job 2 failed".into()).to_string()
            );
        }
    }

    /// The caller's failure: the jobs not started are dropped, and the
    /// error is that of a job that failed already, or else the caller's.
    #[test]
    fn a_failure_of_the_caller_after_the_jobs_comes_second() {
        let got = std::thread::scope(|scope| {
            let mut pool = Pool::new(scope, "test", 2, |i: usize| match i {
                1 => Err(Error::Usage("job 1 failed".into())),
                _ => Ok(()),
            })
            .unwrap();
            for i in 0..3 {
                pool.submit(i).unwrap();
            }
            // Job 1 failed before the caller did.
            while !pool.failed() {
                std::thread::yield_now();
            }
            pool.fail(Error::Usage("caller failed".into()))
        });
        assert_eq!(
            got.to_string(),
            Error::Usage("job 1 failed".into()).to_string()
        );
        let got = std::thread::scope(|scope| {
            let mut pool = Pool::new(scope, "test", 2, |_: usize| Ok(())).unwrap();
            pool.submit(0).unwrap();
            pool.fail(Error::Usage("caller failed".into()))
        });
        assert_eq!(
            got.to_string(),
            Error::Usage("caller failed".into()).to_string()
        );
    }
}
