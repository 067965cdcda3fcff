//! Worker threads that run connection jobs; idle workers are reused, and new ones spawned on demand.
//!
//! The hand-off is a zero-capacity (rendezvous) crossbeam channel: `try_send` succeeds only when a
//! worker is idle and waiting, so a job never queues behind a busy worker. When none is idle, a new
//! worker is spawned with the job; when one is just about to wait (it has finished a job and is on
//! its way back), the job waits for it briefly instead, so the pool grows to what the concurrency
//! needs rather than overshooting while workers return. Idle workers beyond [`SPARES`] exit after
//! [`IDLE_KEEP`], so a burst's threads (and their stack pages) are gone a few seconds after it;
//! the spares wait longer for the next connections. Each job runs under `catch_unwind`: a panic
//! costs that job only.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};

/// A unit of work: one connection's handling, or one direction of its relay.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker beyond the [`SPARES`] waits for a job before it exits.
pub(super) const IDLE_KEEP: Duration = Duration::from_secs(2);

/// Idle workers kept past [`IDLE_KEEP`], so the next connections find a thread waiting.
pub(super) const SPARES: usize = 8;

/// How long a spare waits before it looks again whether it is still needed.
const SPARE_KEEP: Duration = Duration::from_secs(30);

/// How long a job waits for a worker that is on its way back to wait for jobs.
const HANDOFF_WAIT: Duration = Duration::from_millis(1);

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
    /// Workers waiting for a job, or about to (counted before they wait).
    idle: AtomicUsize,
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
                idle: AtomicUsize::new(0),
                idle_keep,
            }),
        }
    }

    /// Runs `job` on an idle worker, or on a new one. Fails only if no thread can be spawned; the
    /// job (and whatever it owns, such as the client socket) is then dropped.
    pub(super) fn execute(&self, job: Job) -> io::Result<()> {
        let job = match self.inner.jobs_tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => job,
        };
        if self.inner.idle.load(Ordering::SeqCst) == 0 {
            return self.spawn(job);
        }
        match self.inner.jobs_tx.send_timeout(job, HANDOFF_WAIT) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(job)) | Err(SendTimeoutError::Disconnected(job)) => {
                self.spawn(job)
            }
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
    let mut keep = inner.idle_keep;
    // Counted idle from here until a job comes (or the worker leaves).
    inner.idle.fetch_add(1, Ordering::SeqCst);
    loop {
        match inner.jobs_rx.recv_timeout(keep) {
            Ok(job) => {
                inner.idle.fetch_sub(1, Ordering::SeqCst);
                run_contained(job);
                keep = inner.idle_keep;
                inner.idle.fetch_add(1, Ordering::SeqCst);
            }
            Err(RecvTimeoutError::Timeout) if !retire(inner) => keep = SPARE_KEEP,
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                inner.idle.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// An idle worker whose wait ran out leaves if more than [`SPARES`] are idle (it is then no
/// longer counted as idle); otherwise it stays on as a spare.
fn retire(inner: &Inner) -> bool {
    inner
        .idle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |idle| {
            (idle > SPARES).then(|| idle - 1)
        })
        .is_ok()
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

    /// Runs `n` jobs at once (each waits until all have started), then lets them finish.
    fn burst(pool: &Pool, n: usize) {
        let started = Arc::new(std::sync::Barrier::new(n + 1));
        let (done_tx, done_rx) = unbounded();
        for _ in 0..n {
            let started = Arc::clone(&started);
            let done_tx = done_tx.clone();
            pool.execute(Box::new(move || {
                started.wait();
                done_tx.send(()).unwrap();
            }))
            .unwrap();
        }
        started.wait();
        for _ in 0..n {
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
    }

    fn wait_for_workers(pool: &Pool, most: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.workers() > most {
            assert!(
                std::time::Instant::now() < deadline,
                "{} workers, expected at most {most}",
                pool.workers()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn surplus_idle_workers_exit_and_spares_stay() {
        let pool = Pool::new(Duration::from_millis(50));
        burst(&pool, 40);
        assert!(pool.workers() >= 40);
        wait_for_workers(&pool, SPARES);
        // The spares stay: they wait much longer than the surplus did.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(pool.workers(), SPARES);
    }

    #[test]
    fn a_second_burst_reuses_the_first_bursts_workers() {
        let pool = Pool::new(Duration::from_secs(5));
        burst(&pool, 30);
        // Wait until every worker of the first burst is back and waiting for jobs.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.inner.idle.load(Ordering::SeqCst) < pool.workers() {
            assert!(
                std::time::Instant::now() < deadline,
                "workers never came back"
            );
            thread::yield_now();
        }
        let before = pool.workers();
        burst(&pool, 30);
        assert_eq!(pool.workers(), before, "the second burst spawned workers");
    }
}
