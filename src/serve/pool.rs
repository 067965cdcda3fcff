//! Worker threads that run connection jobs; idle workers are reused, and new ones spawned on demand.
//!
//! The hand-off is a zero-capacity (rendezvous) crossbeam channel: `try_send` succeeds only when a
//! worker is idle and waiting, so a job never queues behind a busy worker. When none is idle, a new
//! worker is spawned with the job. Workers that stay idle for [`IDLE_KEEP`] exit, so a burst does not
//! leave thousands of parked threads behind. Each job runs under `catch_unwind`: a panic costs that
//! job only.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

/// A unit of work: one connection's handling, or one direction of its relay.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for a job before it exits.
pub(super) const IDLE_KEEP: Duration = Duration::from_secs(30);

/// Stack size of each worker. The copy loop and the connection handler are shallow; 256 KiB leaves
/// room for glibc's getaddrinfo, which allocates on the stack. Only touched pages use memory.
pub(super) const STACK_SIZE: usize = 256 * 1024;

/// A growable pool of worker threads.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Rendezvous sender: succeeds only when a worker is blocked in `recv`.
    jobs_tx: Sender<Job>,
    /// Shared by all workers.
    jobs_rx: Receiver<Job>,
    /// Live worker threads, for reports and tests.
    workers: AtomicUsize,
    /// Idle time after which a worker exits.
    idle_keep: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(IDLE_KEEP)
    }
}

impl Pool {
    /// Creates an empty pool whose idle workers exit after `idle_keep`.
    pub(super) fn new(idle_keep: Duration) -> Pool {
        let (jobs_tx, jobs_rx) = bounded(0);
        Pool {
            inner: Arc::new(Inner {
                jobs_tx,
                jobs_rx,
                workers: AtomicUsize::new(0),
                idle_keep,
            }),
        }
    }

    /// Runs `job` on an idle worker, or on a new one. Fails only if no thread can be spawned; the
    /// job (and whatever it owns, such as the client socket) is then dropped.
    pub(super) fn execute(&self, job: Job) -> io::Result<()> {
        match self.inner.jobs_tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => self.spawn(job),
        }
    }

    #[cfg(test)]
    /// Live worker threads (busy or idle).
    pub(super) fn workers(&self) -> usize {
        self.inner.workers.load(Ordering::Relaxed)
    }

    fn spawn(&self, first: Job) -> io::Result<()> {
        let inner = Arc::clone(&self.inner);
        inner.workers.fetch_add(1, Ordering::Relaxed);
        let spawned = thread::Builder::new()
            .name("tcp-router-worker".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                let _count = WorkerCount(&inner);
                run_worker(first, &inner);
            });
        if spawned.is_err() {
            self.inner.workers.fetch_sub(1, Ordering::Relaxed);
        }
        spawned.map(drop)
    }
}

/// Decrements the live-worker count when a worker exits, however it exits.
struct WorkerCount<'a>(&'a Inner);

impl Drop for WorkerCount<'_> {
    fn drop(&mut self) {
        self.0.workers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn run_worker(first: Job, inner: &Inner) {
    run_contained(first);
    loop {
        match inner.jobs_rx.recv_timeout(inner.idle_keep) {
            Ok(job) => run_contained(job),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Runs a job so that its panic ends the job, not the worker or the process. The panic itself is
/// reported by the panic hook; the job's guards (permits, registry entries) drop during unwinding.
fn run_contained(job: Job) {
    let _ = catch_unwind(AssertUnwindSafe(job));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;

    #[test]
    fn idle_workers_are_reused() {
        let pool = Pool::new(Duration::from_secs(5));
        let (done_tx, done_rx) = unbounded();
        let tx = done_tx.clone();
        pool.execute(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        let first = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // The rendezvous send succeeds as soon as that worker waits for its next job.
        let mut job: Job = Box::new(move || done_tx.send(thread::current().id()).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Err(TrySendError::Full(back)) = pool.inner.jobs_tx.try_send(job) {
            assert!(
                std::time::Instant::now() < deadline,
                "worker never became idle"
            );
            job = back;
            thread::yield_now();
        }
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(first));
        assert_eq!(pool.workers(), 1);
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_pool() {
        let pool = Pool::new(Duration::from_secs(5));
        let (done_tx, done_rx) = unbounded();
        pool.execute(Box::new(|| panic!("test panic"))).unwrap();
        pool.execute(Box::new(move || done_tx.send(7).unwrap()))
            .unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(7));
    }

    #[test]
    fn idle_workers_exit() {
        let pool = Pool::new(Duration::from_millis(20));
        let (done_tx, done_rx) = unbounded();
        pool.execute(Box::new(move || done_tx.send(()).unwrap()))
            .unwrap();
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.workers() > 0 {
            assert!(std::time::Instant::now() < deadline, "worker did not exit");
            thread::yield_now();
        }
    }
}
