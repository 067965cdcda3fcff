//! Connection slots: the default cap derived from the process limits, and the permits the accept
//! loop takes before each `accept` (one per connection, returned when it ends, on every path).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::config::MAX_CONNECTIONS_CAP;
use crate::relay::splice;

/// File descriptors kept aside for listeners, logs, DNS look-ups and the like.
const RESERVED_FDS: u64 = 64;

/// Threads kept aside for the main thread, the signal thread and idle pool workers.
const RESERVED_THREADS: u64 = 64;

/// Each connection holds two sockets (client and upstream) and two copy threads, one per
/// direction; while it is set up it holds a set-up worker, which stays in its pool (up to 2 s
/// idle) once the copy threads run. Every connection being set up at once and then relaying needs
/// all three.
const FDS_PER_CONNECTION: u64 = 2;
const THREADS_PER_CONNECTION: u64 = 3;

/// The default `--max-connections`: as many as the open-files and thread limits allow.
///
/// Descriptors: the reserve, then the splice pipes' budget, then two per connection, so the pipes
/// always fit and a pipe never takes the descriptor an `accept` needs. With 20,000 open files:
/// 1,024 pipes (2,048 descriptors), and (20,000 - 64 - 2,048) / 2 = 8,944 connections.
pub(super) fn default_max_connections(open_files: u64, threads: u64) -> usize {
    let pipe_fds = splice::FDS_PER_PIPE * splice::pipe_budget(open_files);
    let by_fds = open_files.saturating_sub(RESERVED_FDS + pipe_fds) / FDS_PER_CONNECTION;
    let by_threads = threads.saturating_sub(RESERVED_THREADS) / THREADS_PER_CONNECTION;
    let cap = MAX_CONNECTIONS_CAP as u64;
    by_fds.min(by_threads).clamp(1, cap) as usize
}

/// A fixed number of connection slots; the accept loop takes one before each `accept`.
#[derive(Debug, Clone)]
pub(crate) struct Permits {
    /// Free slots, one token each; a bounded channel so waiting for one can be `select!`ed.
    free: Receiver<()>,
    /// Where a finished connection gives its slot back.
    give_back: Sender<()>,
    /// The cap, for reports.
    capacity: usize,
    /// Wakes the accept loop when a slot frees while it waits for one (per-listener caps).
    waker: Option<Arc<Waker>>,
}

/// Wakes a poll loop through a socket when a slot is given back while it is paused.
#[derive(Debug)]
pub(super) struct Waker {
    /// Set by the accept loop when it stops polling a listener for lack of slots.
    paused: AtomicBool,
    /// Written to (one byte) to wake the accept loop's poll.
    wake: Arc<UnixStream>,
}

/// One connection slot; returned to the pool when dropped, on every path including a panic.
#[derive(Debug)]
pub(super) struct Permit {
    give_back: Sender<()>,
    waker: Option<Arc<Waker>>,
}

impl Permits {
    /// Creates `capacity` slots.
    pub(super) fn new(capacity: usize) -> Permits {
        let (give_back, free) = bounded(capacity);
        for _ in 0..capacity {
            give_back
                .send(())
                .expect("BUG: a fresh channel has room for its capacity");
        }
        Permits {
            free,
            give_back,
            capacity,
            waker: None,
        }
    }

    /// Creates `capacity` slots whose return wakes a paused accept loop through `wake`.
    pub(super) fn with_waker(capacity: usize, wake: Arc<UnixStream>) -> Permits {
        Permits {
            waker: Some(Arc::new(Waker {
                paused: AtomicBool::new(false),
                wake,
            })),
            ..Permits::new(capacity)
        }
    }

    /// Takes a slot, or marks the owner paused so that the next returned slot wakes it. Returns
    /// `None` when paused; the caller must stop polling until [`Permits::is_paused`] turns false.
    pub(super) fn take_or_pause(&self) -> Option<Permit> {
        if let Some(permit) = self.try_take() {
            return Some(permit);
        }
        if let Some(waker) = &self.waker {
            waker.paused.store(true, Ordering::SeqCst);
        }
        // A slot may have come back between the first try and the pause mark: try again, so
        // that wake-up is not lost.
        let permit = self.try_take();
        if permit.is_some() {
            if let Some(waker) = &self.waker {
                waker.paused.store(false, Ordering::SeqCst);
            }
        }
        permit
    }

    /// True while the owner waits for a slot (after [`Permits::take_or_pause`] returned `None`).
    pub(super) fn is_paused(&self) -> bool {
        self.waker
            .as_ref()
            .is_some_and(|w| w.paused.load(Ordering::SeqCst))
    }

    /// Takes a slot if one is free now.
    pub(super) fn try_take(&self) -> Option<Permit> {
        self.free.try_recv().ok().map(|()| self.permit())
    }

    /// The channel to `select!` on when waiting for a slot; wrap what it yields with [`Permits::permit`].
    pub(super) fn receiver(&self) -> &Receiver<()> {
        &self.free
    }

    /// Wraps a token received from [`Permits::receiver`].
    pub(super) fn permit(&self) -> Permit {
        Permit {
            give_back: self.give_back.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    /// Slots in use now.
    pub(super) fn in_use(&self) -> usize {
        self.capacity - self.free.len()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Cannot fail: the channel has room for every token that was taken out of it.
        let _ = self.give_back.try_send(());
        if let Some(waker) = &self.waker {
            if waker.paused.swap(false, Ordering::SeqCst) {
                // A full wake socket already has a wake-up pending; that is enough.
                let _ = (&*waker.wake).write(&[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_fits_the_tighter_limit() {
        // 2,048 descriptors for splice pipes.
        assert_eq!(default_max_connections(20_000, 32_768), 8_944);
        assert_eq!(default_max_connections(1_000_000, 32_768), 10_901);
        // nobody with `nproc 400`: (400 - 64) / 3, room for every connection's set-up worker.
        assert_eq!(default_max_connections(1_000_000, 400), 112);
        assert_eq!(default_max_connections(10, 10), 1);
        assert_eq!(
            default_max_connections(u64::MAX, u64::MAX),
            MAX_CONNECTIONS_CAP
        );
    }

    #[test]
    fn pipes_come_out_of_the_descriptor_budget() {
        assert_eq!(splice::pipe_budget(20_000), splice::MAX_PIPES);
        // A small limit: 128 pipes (256 fds), (1,024 - 64 - 256) / 2 connections.
        assert_eq!(splice::pipe_budget(1_024), 128);
        assert_eq!(default_max_connections(1_024, 32_768), 352);
        let (fds, threads) = (20_000, 1 << 20);
        let conns = default_max_connections(fds, threads) as u64;
        let pipe_fds = splice::FDS_PER_PIPE * splice::pipe_budget(fds);
        assert!(RESERVED_FDS + pipe_fds + FDS_PER_CONNECTION * conns <= fds);
    }

    #[test]
    fn permits_are_given_back_on_drop() {
        let permits = Permits::new(2);
        let a = permits.try_take().unwrap();
        let _b = permits.try_take().unwrap();
        assert!(permits.try_take().is_none());
        assert_eq!(permits.in_use(), 2);
        drop(a);
        assert!(permits.try_take().is_some());
    }

    #[test]
    fn a_returned_slot_wakes_a_paused_owner() {
        let (wake, mut woken) = UnixStream::pair().unwrap();
        let permits = Permits::with_waker(1, Arc::new(wake));
        let only = permits.take_or_pause().unwrap();
        assert!(permits.take_or_pause().is_none());
        assert!(permits.is_paused());
        drop(only);
        assert!(!permits.is_paused());
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut woken, &mut byte).unwrap();
        assert!(permits.take_or_pause().is_some());
    }
}
