//! Worker threads that run connection jobs; idle workers are reused, and new ones spawned on demand.
//!
//! Each idle worker waits on its own bounded (capacity 1) crossbeam channel, and puts that
//! channel's sender on a stack of idle workers. A job goes to the worker that became idle last
//! (its stack and caches are warm, and the ones at the bottom of the stack stay idle long enough to
//! exit), through that worker's channel, so no two workers contend for one channel. When none is
//! idle, a new worker is spawned with the job; a job never queues behind a busy worker. Workers
//! that stay idle for [`IDLE_KEEP`] exit, so a burst does not leave thousands of parked threads
//! behind. Each job runs under `catch_unwind`: a panic costs that job only.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

/// A unit of work: one connection's handling, or one direction of its relay.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for a job before it exits.
pub const IDLE_KEEP: Duration = Duration::from_secs(30);

/// Stack size of each worker. The copy loop and the connection handler are shallow; 256 KiB leaves
/// room for glibc's getaddrinfo, which allocates on the stack. Only touched pages use memory.
pub const STACK_SIZE: usize = 256 * 1024;

/// A growable pool of worker threads.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The hand-off channels of idle workers, the most recently idle last.
    idle: Mutex<Vec<Sender<Job>>>,
    /// Live worker threads, for reports and tests.
    workers: AtomicUsize,
    /// Idle time after which a worker exits.
    idle_keep: Duration,
}

impl Inner {
    fn idle(&self) -> MutexGuard<'_, Vec<Sender<Job>>> {
        // A panic never happens while this lock is held; recover the list if it somehow did.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(IDLE_KEEP)
    }
}

impl Pool {
    /// Creates an empty pool whose idle workers exit after `idle_keep`.
    pub fn new(idle_keep: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                idle: Mutex::new(Vec::new()),
                workers: AtomicUsize::new(0),
                idle_keep,
            }),
        }
    }

    /// Runs `job` on an idle worker, or on a new one. Fails only if no thread can be spawned; the
    /// job (and whatever it owns, such as the client socket) is then dropped.
    pub fn execute(&self, mut job: Job) -> io::Result<()> {
        loop {
            let Some(worker) = self.inner.idle().pop() else {
                return self.spawn(job);
            };
            // The worker's channel is empty (it is idle); it fails only if the worker has exited.
            match worker.try_send(job) {
                Ok(()) => return Ok(()),
                Err(err) => job = err.into_inner(),
            }
        }
    }

    /// Live worker threads (busy or idle).
    pub fn workers(&self) -> usize {
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
    let (tx, rx) = bounded(1);
    run_contained(first);
    while let Some(job) = next_job(inner, &tx, &rx) {
        run_contained(job);
    }
}

/// Waits, idle, for the next job; `None` when the worker has been idle for `idle_keep`.
fn next_job(inner: &Inner, tx: &Sender<Job>, rx: &Receiver<Job>) -> Option<Job> {
    inner.idle().push(tx.clone());
    match rx.recv_timeout(inner.idle_keep) {
        Ok(job) => Some(job),
        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
            let mut idle = inner.idle();
            match idle.iter().position(|sender| sender.same_channel(tx)) {
                Some(at) => {
                    idle.remove(at);
                    None
                }
                // A dispatcher took this worker off the stack just now: its job is on the way.
                None => {
                    drop(idle);
                    rx.recv().ok()
                }
            }
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

    /// Waits until `n` workers are idle.
    fn wait_idle(pool: &Pool, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.inner.idle().len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "workers never became idle"
            );
            thread::yield_now();
        }
    }

    #[test]
    fn idle_workers_are_reused() {
        let pool = Pool::new(Duration::from_secs(5));
        let (done_tx, done_rx) = unbounded();
        let tx = done_tx.clone();
        pool.execute(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        let first = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        wait_idle(&pool, 1);
        pool.execute(Box::new(move || {
            done_tx.send(thread::current().id()).unwrap()
        }))
        .unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(first));
        assert_eq!(pool.workers(), 1);
    }

    #[test]
    fn the_most_recently_idle_worker_gets_the_next_job() {
        let pool = Pool::new(Duration::from_secs(5));
        let (done_tx, done_rx) = unbounded();
        let (release_tx, release_rx) = unbounded::<()>();
        // Two busy workers; the second is released (becomes idle) last.
        for _ in 0..2 {
            let (tx, release) = (done_tx.clone(), release_rx.clone());
            pool.execute(Box::new(move || {
                release.recv().unwrap();
                tx.send(thread::current().id()).unwrap();
            }))
            .unwrap();
        }
        release_tx.send(()).unwrap();
        let _first = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        wait_idle(&pool, 1);
        release_tx.send(()).unwrap();
        let last = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        wait_idle(&pool, 2);
        pool.execute(Box::new(move || {
            done_tx.send(thread::current().id()).unwrap()
        }))
        .unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(last));
    }

    #[test]
    fn no_job_is_lost_when_workers_time_out_as_jobs_arrive() {
        // Workers give up after 1 ms idle, so dispatches race with workers leaving the stack.
        let pool = Pool::new(Duration::from_millis(1));
        let (done_tx, done_rx) = unbounded();
        let jobs = 2_000;
        for i in 0..jobs {
            let tx = done_tx.clone();
            pool.execute(Box::new(move || tx.send(i).unwrap())).unwrap();
            if i % 7 == 0 {
                // Let some workers reach their idle timeout between jobs.
                thread::sleep(Duration::from_micros(1_500));
            }
        }
        let mut seen = vec![false; jobs];
        for _ in 0..jobs {
            let i = done_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a job was lost");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));
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
