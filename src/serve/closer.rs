//! The thread that ends connections: it writes each one's log lines (the info line, rinetd's log
//! file) and releases it (slots, registry entry, sockets), in the order they ended.
//!
//! Why a thread of its own: formatting a log line (the timestamp, the addresses) is the deepest
//! code a connection runs. Run on the copy thread that ended second, it touched a stack page the
//! copy loop never needs, and a pool thread keeps every page it has touched, for every later
//! connection it serves: after a burst of connections had come and gone, half the copy threads of
//! the static build carried a second page (docs/performance.md, "At the shape's floor: one
//! stack page, and the connection path"). Here the
//! formatting runs on one thread whose pages are touched once. Under load it takes the ends as
//! they queue, without a wake-up each.
//!
//! A connection is released only once its lines are written, so a drain that waits for the last
//! connection also waits for its line. A panic while ending one connection is contained (the
//! panic hook reports it) and costs that connection's line only.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use crate::sys::sync::{lock, wait};

use super::pool::Task;

/// Where copy threads hand over the connections they have ended. Cloned into each connection;
/// the thread exits once every clone is gone (the server and all its connections).
#[derive(Debug, Clone)]
pub(super) struct Closer {
    queue: Arc<Queue>,
    /// Shared by the clones only (the thread holds `queue`, not this): when the last clone
    /// drops, the thread is told to leave.
    _last: Arc<LeaveOnDrop>,
}

/// Ends waiting for the thread. A mutex and a condition variable rather than a channel:
/// crossbeam's receiver spins and yields before it sleeps (four `sched_yield` per connection at
/// one connection at a time), and a notify here is made only when the thread sleeps, so under
/// load the ends queue without a system call each.
#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    ends: VecDeque<Task>,
    /// The thread waits, or is about to, on `wake`: set by the thread, cleared by whoever wakes
    /// it (under the lock).
    sleeping: bool,
    /// Every [`Closer`] is gone: run what is queued, then leave.
    closed: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = lock(&self.state).ends.len();
        f.debug_struct("Queue").field("queued", &queued).finish()
    }
}

impl std::fmt::Debug for LeaveOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaveOnDrop")
    }
}

/// Tells the thread to leave when the last [`Closer`] drops.
struct LeaveOnDrop(Arc<Queue>);

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.closed = true;
        self.0.wake_if_sleeping(state);
    }
}

impl Closer {
    /// Starts the thread.
    pub(super) fn start() -> io::Result<Closer> {
        let queue = Arc::new(Queue::default());
        let theirs = Arc::clone(&queue);
        thread::Builder::new()
            .name("tcp-router-close".into())
            .spawn(move || run(&theirs))?;
        Ok(Closer {
            _last: Arc::new(LeaveOnDrop(Arc::clone(&queue))),
            queue,
        })
    }

    /// Queues `end` for the thread.
    pub(super) fn close(&self, end: Task) {
        let mut state = lock(&self.queue.state);
        state.ends.push_back(end);
        self.queue.wake_if_sleeping(state);
    }
}

impl Queue {
    /// Wakes the thread if it sleeps, after letting go of the lock (a thread woken while the lock
    /// is held would block on it at once: two more system calls). `sleeping` is cleared here, so
    /// ends queued before the thread runs wake it once; the thread sets it again before it waits.
    fn wake_if_sleeping(&self, mut state: MutexGuard<'_, State>) {
        let sleeping = mem::take(&mut state.sleeping);
        drop(state);
        if sleeping {
            self.wake.notify_one();
        }
    }
}

/// Runs the ends as they come, a whole queue at a time, until told to leave.
fn run(queue: &Queue) {
    let mut batch = VecDeque::new();
    loop {
        {
            let mut state = lock(&queue.state);
            while state.ends.is_empty() && !state.closed {
                state.sleeping = true;
                state = wait(&queue.wake, state);
            }
            state.sleeping = false;
            if state.ends.is_empty() {
                return;
            }
            mem::swap(&mut batch, &mut state.ends);
        }
        for end in batch.drain(..) {
            let _ = catch_unwind(AssertUnwindSafe(end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn ends_run_in_order_on_the_closing_thread() {
        let closer = Closer::start().unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            closer.close(Box::new(move || {
                let name = thread::current().name().map(String::from);
                tx.send((i, name)).unwrap();
            }));
        }
        for i in 0..100 {
            let (got, name) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, i);
            assert_eq!(name.as_deref(), Some("tcp-router-close"));
        }
    }

    #[test]
    fn a_panicking_end_costs_only_itself() {
        let closer = Closer::start().unwrap();
        let (tx, rx) = mpsc::channel();
        closer.close(Box::new(|| panic!("test panic in an end")));
        closer.close(Box::new(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
    }

    #[test]
    fn the_thread_runs_what_is_queued_then_leaves_when_the_last_closer_is_gone() {
        let closer = Closer::start().unwrap();
        let queue = Arc::clone(&closer.queue);
        let (tx, rx) = mpsc::channel();
        let second = closer.clone();
        second.close(Box::new(move || tx.send(()).unwrap()));
        drop(closer);
        drop(second);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(()));
        // The thread holds the queue until it leaves.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&queue) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread did not leave"
            );
            thread::yield_now();
        }
    }
}
