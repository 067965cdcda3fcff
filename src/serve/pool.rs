//! Worker threads that run connection tasks; idle workers are reused, newest first, and new ones
//! spawned on demand.
//!
//! Each worker has a slot for one task, allocated by the thread that spawns it. A worker that has
//! finished a task pushes its slot onto the pool's idle stack and parks. [`Pool::execute`] pops the
//! newest idle worker under the stack's lock, stores the task in its slot (under that same lock)
//! and unparks it; when none is idle it spawns a worker with the task as its first. A task never
//! queues behind a busy worker, and `execute` never waits for one.
//!
//! Newest first (LIFO) hands work to the threads whose stack pages and caches are still warm, and
//! leaves the longest-idle workers at the bottom of the stack, untouched, so they time out: under a
//! steady load the pool shrinks to what the concurrency needs. Idle workers beyond [`SPARES`] exit
//! after [`IDLE_KEEP`], so a burst's threads (and their stack pages) are gone a few seconds after
//! it; the spares wait longer for the next connections. A worker whose wait ran out takes the
//! stack's lock to leave; if it is no longer on the stack, `execute` popped it and its task is
//! already in the slot, so it runs that task instead.
//!
//! A worker is on the stack exactly while it can take a task: a task stored in its slot is found
//! whether or not the worker has parked yet. There is no moment when a worker counts as idle but
//! cannot take a task, so a task never waits for a worker on its way back.
//!
//! The wait itself is a `park_timeout` loop a few frames deep that allocates nothing. Each task runs
//! under `catch_unwind`: a panic costs that task only.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::sys::sync::lock;

/// A unit of work: one connection's handling, or one direction of its relay.
pub(super) type Task = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker beyond the [`SPARES`] waits for a task before it exits.
pub(super) const IDLE_KEEP: Duration = Duration::from_secs(2);

/// Idle workers kept past [`IDLE_KEEP`], so the next connections find a thread waiting.
pub(super) const SPARES: usize = 8;

/// How long a spare waits before it looks again whether it is still needed.
const SPARE_KEEP: Duration = Duration::from_secs(30);

/// Stack size of each worker. The copy loop and the connection handler are shallow; 256 KiB leaves
/// room for glibc's getaddrinfo, which allocates on the stack. Only touched pages use memory.
pub(super) const STACK_SIZE: usize = 256 * 1024;

/// A growable pool of worker threads.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Idle workers, the most recently idle at the back. A deque, not a `Vec`: the worker that
    /// times out and leaves is usually the longest idle, near the front, and a deque removes there
    /// by shifting only the few before it, not the whole stack, while `execute` waits for the
    /// lock. Its capacity is kept at least the number of live workers by [`Pool::spawn`], so a
    /// worker's push never reallocates on the worker's thread.
    idle: Mutex<VecDeque<Idle>>,
    /// Live worker threads. Incremented only under the `idle` lock, which the capacity bound above
    /// relies on; decremented when a worker exits.
    workers: AtomicUsize,
    /// Idle time after which a worker beyond the spares exits.
    idle_keep: Duration,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("workers", &self.workers.load(Ordering::Relaxed))
            .field("idle_keep", &self.idle_keep)
            .finish_non_exhaustive()
    }
}

/// An entry on the idle stack: where to put the task, and whom to wake.
struct Idle {
    slot: Arc<Slot>,
    thread: Thread,
}

/// One worker's place for its next task. Empty while the worker is listed idle; `execute` fills it under
/// the `idle` lock, at the moment it takes the worker off the stack.
struct Slot {
    task: Mutex<Option<Task>>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(IDLE_KEEP)
    }
}

impl Pool {
    /// Creates an empty pool whose idle workers exit after `idle_keep`.
    pub(super) fn new(idle_keep: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                idle: Mutex::new(VecDeque::new()),
                workers: AtomicUsize::new(0),
                idle_keep,
            }),
        }
    }

    /// Runs `task` on an idle worker, or on a new one. Fails only if no thread can be spawned; the
    /// task (and whatever it owns, such as the client socket) is then dropped.
    pub(super) fn execute(&self, task: Task) -> io::Result<()> {
        let mut idle = lock(&self.inner.idle);
        let Some(worker) = idle.pop_back() else {
            drop(idle);
            return self.spawn(task);
        };
        // Stored before the lock is released: a worker whose wait ran out and finds itself off
        // the stack relies on its task being there already.
        let previous = lock(&worker.slot.task).replace(task);
        debug_assert!(previous.is_none(), "an idle worker's slot held a task");
        drop(idle);
        worker.thread.unpark();
        Ok(())
    }

    #[cfg(test)]
    /// Live worker threads (busy or idle).
    pub(super) fn workers(&self) -> usize {
        self.inner.workers.load(Ordering::Relaxed)
    }

    fn spawn(&self, first: Task) -> io::Result<()> {
        let slot = Arc::new(Slot {
            task: Mutex::new(None),
        });
        {
            let mut idle = lock(&self.inner.idle);
            let live = self.inner.workers.fetch_add(1, Ordering::Relaxed) + 1;
            // Every live worker can be on the stack at once, so room for all of them, reserved
            // here on the spawning thread, is what keeps `push_back` in `run_worker` from
            // allocating. `reserve` grows geometrically; the capacity stays after a burst (one
            // entry is two pointers).
            let room = live.saturating_sub(idle.len());
            idle.reserve(room);
        }
        let inner = Arc::clone(&self.inner);
        let spawned = thread::Builder::new()
            .name("tcp-router-worker".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                let _count = WorkerCount(&inner);
                run_worker(first, &slot, &inner);
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

fn run_worker(first: Task, slot: &Arc<Slot>, inner: &Inner) {
    // A clone of the handle std made when it spawned this thread: no allocation.
    let me = thread::current();
    let mut task = first;
    loop {
        run_contained(task);
        lock(&inner.idle).push_back(Idle {
            slot: Arc::clone(slot),
            thread: me.clone(),
        });
        task = match wait_for_task(slot, inner) {
            Some(task) => task,
            None => return,
        };
    }
}

/// Waits, listed idle, for a task; `None` when this worker is to exit (it is then off the stack).
fn wait_for_task(slot: &Arc<Slot>, inner: &Inner) -> Option<Task> {
    let mut keep = inner.idle_keep;
    loop {
        if let Some(task) = park_for_task(slot, keep) {
            return Some(task);
        }
        let mut idle = lock(&inner.idle);
        match idle.iter().position(|w| Arc::ptr_eq(&w.slot, slot)) {
            // Popped by `execute` after the wait ran out: it stored the task under this lock, so
            // the task is there now (it is never `None` here; were it, leaving would lose nothing).
            None => {
                drop(idle);
                return lock(&slot.task).take();
            }
            Some(at) if idle.len() > SPARES => {
                idle.remove(at);
                return None;
            }
            // A spare: it keeps its place on the stack and looks again later.
            Some(_) => keep = SPARE_KEEP,
        }
    }
}

/// Parks until the slot holds a task or `keep` has passed. Wakes without a task are expected: a
/// stale unpark from an earlier task given (the worker found that task before the unpark came), or
/// one from whatever a task used that parks this thread too, such as a channel.
fn park_for_task(slot: &Slot, keep: Duration) -> Option<Task> {
    // A `keep` too long to add to now is a wait without end.
    let deadline = Instant::now().checked_add(keep);
    loop {
        if let Some(task) = lock(&slot.task).take() {
            return Some(task);
        }
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                thread::park_timeout(left);
            }
        }
    }
}

/// Runs a task so that its panic ends the task, not the worker or the process. The panic itself is
/// reported by the panic hook; the task's guards (permits, registry entries) drop during unwinding.
fn run_contained(task: Task) {
    let _ = catch_unwind(AssertUnwindSafe(task));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{unbounded, Receiver, Sender};
    use std::sync::atomic::AtomicU8;
    use std::thread::ThreadId;

    /// Workers listed on the idle stack.
    fn idle(pool: &Pool) -> usize {
        lock(&pool.inner.idle).len()
    }

    /// Polls `done` until it holds, failing the test after a generous deadline.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A task that reports the thread it runs on.
    fn report(to: &Sender<ThreadId>) -> Task {
        let to = to.clone();
        Box::new(move || to.send(thread::current().id()).unwrap())
    }

    /// A task that reports its thread, then holds that worker until `gate` says go (or closes).
    fn report_and_hold(to: &Sender<ThreadId>, gate: Receiver<()>) -> Task {
        let to = to.clone();
        Box::new(move || {
            to.send(thread::current().id()).unwrap();
            let _ = gate.recv_timeout(Duration::from_secs(10));
        })
    }

    fn recv<T>(rx: &Receiver<T>) -> T {
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn idle_workers_are_reused() {
        let pool = Pool::new(Duration::from_secs(5));
        let (done_tx, done_rx) = unbounded();
        pool.execute(report(&done_tx)).unwrap();
        let first = recv(&done_rx);
        wait_until("the worker is idle", || idle(&pool) == 1);
        pool.execute(report(&done_tx)).unwrap();
        assert_eq!(recv(&done_rx), first);
        assert_eq!(pool.workers(), 1);
    }

    #[test]
    fn the_newest_idle_worker_is_reused_first() {
        let pool = Pool::new(Duration::from_secs(5));
        let (id_tx, id_rx) = unbounded();
        let mut gates = Vec::new();
        let mut started = Vec::new();
        for _ in 0..3 {
            let (go_tx, go_rx) = unbounded();
            pool.execute(report_and_hold(&id_tx, go_rx)).unwrap();
            // Each task holds its worker, so the next one spawns another.
            started.push(recv(&id_rx));
            gates.push(go_tx);
        }
        assert_eq!(pool.workers(), 3);
        // Released one at a time, they become idle in this order; the last is the newest.
        for (n, gate) in gates.iter().enumerate() {
            gate.send(()).unwrap();
            wait_until("the released worker is idle", || idle(&pool) == n + 1);
        }
        // Held again, one task each: newest idle first, the longest idle last. The gates stay open
        // to the end, so each task keeps its worker busy and the next must take another.
        let mut holds = Vec::new();
        for expected in started.iter().rev() {
            let (go_tx, go_rx) = unbounded();
            pool.execute(report_and_hold(&id_tx, go_rx)).unwrap();
            assert_eq!(recv(&id_rx), *expected, "not the newest idle worker");
            holds.push(go_tx);
        }
        assert_eq!(
            pool.workers(),
            3,
            "a task spawned a worker while one was idle"
        );
    }

    #[test]
    fn a_panicking_task_does_not_kill_the_pool() {
        let pool = Pool::new(Duration::from_secs(5));
        let (done_tx, done_rx) = unbounded();
        pool.execute(Box::new(|| panic!("test panic"))).unwrap();
        pool.execute(Box::new(move || done_tx.send(7).unwrap()))
            .unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(7));
    }

    #[test]
    fn a_panicking_task_does_not_kill_its_worker() {
        let pool = Pool::new(Duration::from_secs(5));
        let (id_tx, id_rx) = unbounded();
        let tx = id_tx.clone();
        pool.execute(Box::new(move || {
            tx.send(thread::current().id()).unwrap();
            panic!("test panic");
        }))
        .unwrap();
        let panicked_on = recv(&id_rx);
        wait_until("the worker is idle again", || idle(&pool) == 1);
        pool.execute(report(&id_tx)).unwrap();
        assert_eq!(recv(&id_rx), panicked_on);
        assert_eq!(pool.workers(), 1);
    }

    /// Runs `n` tasks at once (each waits until all have started), then lets them finish. Returns
    /// the live workers counted while all `n` were running: counted after they finish, some could
    /// already have left on a loaded machine.
    fn burst(pool: &Pool, n: usize) -> usize {
        let started = Arc::new(std::sync::Barrier::new(n + 1));
        let (done_tx, done_rx) = unbounded();
        for _ in 0..n {
            let started = Arc::clone(&started);
            let done_tx = done_tx.clone();
            pool.execute(Box::new(move || {
                started.wait();
                // Held until the workers are counted.
                started.wait();
                done_tx.send(()).unwrap();
            }))
            .unwrap();
        }
        started.wait();
        let running = pool.workers();
        started.wait();
        for _ in 0..n {
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        running
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
        assert!(burst(&pool, 40) >= 40);
        wait_for_workers(&pool, SPARES);
        // The spares stay: they wait much longer than the surplus did.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(pool.workers(), SPARES);
        assert_eq!(idle(&pool), SPARES);
    }

    #[test]
    fn a_second_burst_reuses_the_first_bursts_workers() {
        let pool = Pool::new(Duration::from_secs(5));
        burst(&pool, 30);
        wait_until("every worker is back", || idle(&pool) == pool.workers());
        let before = pool.workers();
        burst(&pool, 30);
        assert_eq!(pool.workers(), before, "the second burst spawned workers");
    }

    /// Runs `per_thread` tasks from each of `threads` threads at once and checks that every task ran
    /// exactly once. Every `hold_every`th task holds its worker a little, so the pool grows past
    /// the spares and surplus workers keep leaving while tasks arrive.
    fn run_each_once(pool: &Pool, threads: usize, per_thread: usize, hold_every: usize) {
        let total = threads * per_thread;
        let runs: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(0)).collect());
        let done = Arc::new(AtomicUsize::new(0));
        thread::scope(|scope| {
            for t in 0..threads {
                let (runs, done) = (Arc::clone(&runs), Arc::clone(&done));
                scope.spawn(move || {
                    for i in t * per_thread..(t + 1) * per_thread {
                        let (runs, done) = (Arc::clone(&runs), Arc::clone(&done));
                        pool.execute(Box::new(move || {
                            if i % hold_every == 0 {
                                thread::sleep(Duration::from_micros(200));
                            }
                            runs[i].fetch_add(1, Ordering::Relaxed);
                            done.fetch_add(1, Ordering::Release);
                        }))
                        .unwrap();
                    }
                });
            }
        });
        wait_until("every task has run", || {
            done.load(Ordering::Acquire) >= total
        });
        assert_eq!(done.load(Ordering::Acquire), total);
        let wrong: Vec<(usize, u8)> = runs
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .enumerate()
            .filter(|&(_, n)| n != 1)
            .collect();
        assert!(
            wrong.is_empty(),
            "tasks not run exactly once (task, runs): {wrong:?}"
        );
        // No worker is lost or stuck: each either comes back to the stack or leaves.
        wait_until("every worker is back", || idle(pool) == pool.workers());
    }

    #[test]
    fn a_task_given_as_the_wait_runs_out_still_runs() {
        // With no idle time at all, every worker's wait runs out as soon as it is listed, so
        // tasks given keep meeting workers on their way off the stack, spares included (a spare
        // that runs a task starts its next wait with `idle_keep` again).
        let pool = Pool::new(Duration::ZERO);
        for _ in 0..20 {
            run_each_once(&pool, 4, 1000, 64);
        }
        wait_for_workers(&pool, SPARES);
    }

    #[test]
    fn concurrent_executes_all_run_exactly_once() {
        let pool = Pool::new(Duration::from_secs(5));
        run_each_once(&pool, 8, 2000, 16);
    }
}
