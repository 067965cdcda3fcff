//! The thread that ends connections: it writes each one's log lines (the info line, rinetd's log
//! file) and releases it (slots, registry entry, sockets), in the order they ended.
//!
//! Why a thread of its own: formatting a log line (the timestamp, the addresses) is the deepest
//! code a connection runs. Run on the copy thread that ended second, it touched a stack page the
//! copy loop never needs, and a pool thread keeps every page it has touched, for every later
//! connection it serves: after a burst of connections had come and gone, half the copy threads of
//! the static build carried a second page (14.5 instead of 10.5 KiB per idle connection). Here the
//! formatting runs on one thread whose pages are touched once. Under load it takes the ends as
//! they queue, without a wake-up each.
//!
//! A connection is released only once its lines are written, so a drain that waits for the last
//! connection also waits for its line. A panic while ending one connection is contained (the
//! panic hook reports it) and costs that connection's line only.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;

use crossbeam_channel::{unbounded, Receiver, Sender};

/// One connection's end: its lines and its release.
pub(super) type End = Box<dyn FnOnce() + Send + 'static>;

/// Where copy threads hand over the connections they have ended. Cloned into each connection;
/// the thread exits once every clone is gone (the server and all its connections).
#[derive(Debug, Clone)]
pub(super) struct Closer {
    ends: Sender<End>,
}

impl Closer {
    /// Starts the thread.
    pub(super) fn start() -> io::Result<Closer> {
        let (ends, queue) = unbounded();
        thread::Builder::new()
            .name("tcp-router-close".into())
            .spawn(move || run(&queue))?;
        Ok(Closer { ends })
    }

    /// Queues `end` for the thread; gives it back if the thread is gone (it then runs where the
    /// caller is).
    pub(super) fn close(&self, end: End) -> Result<(), End> {
        self.ends.send(end).map_err(|failed| failed.into_inner())
    }
}

fn run(queue: &Receiver<End>) {
    for end in queue {
        let _ = catch_unwind(AssertUnwindSafe(end));
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
            closer
                .close(Box::new(move || {
                    let name = thread::current().name().map(String::from);
                    tx.send((i, name)).unwrap();
                }))
                .map_err(drop)
                .unwrap();
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
        closer
            .close(Box::new(|| panic!("test panic in an end")))
            .map_err(drop)
            .unwrap();
        closer
            .close(Box::new(move || tx.send(7).unwrap()))
            .map_err(drop)
            .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
    }

    #[test]
    fn the_thread_leaves_when_the_last_closer_is_gone() {
        let (ends, queue) = unbounded::<End>();
        let thread = thread::spawn(move || run(&queue));
        let closer = Closer { ends };
        let second = closer.clone();
        drop(closer);
        drop(second);
        thread.join().unwrap();
    }
}
