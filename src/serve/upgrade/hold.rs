//! Where a connection still choosing its route waits while a live upgrade moves it: its set-up
//! worker stops in the peek (waiting for a PROXY header, a ClientHello or an HTTP head) with the
//! bytes read so far, and the new process starts it again from them. The relay's copy threads
//! have a safe point of their own (`relay::park`); this is the set-up worker's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::sys::sync::{lock, wait};
use crate::sys::wake::ThreadId;

/// One connection's hold: asked by the upgrade, taken by its set-up worker while it peeks.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    /// Set while an upgrade wants the set-up worker to stop.
    asked: AtomicBool,
    state: Mutex<HoldState>,
    /// Signalled when the worker stops, and when the verdict comes.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct HoldState {
    /// The set-up worker, while it waits for the client's bytes: the one an upgrade wakes.
    worker: Option<ThreadId>,
    /// The client's bytes read so far, once the worker has stopped.
    read: Option<Vec<u8>>,
    /// The upgrade's verdict: `Some(true)` released to the new process, `Some(false)` carry on.
    released: Option<bool>,
}

/// How a held set-up worker goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldVerdict {
    /// The upgrade did not happen: read on.
    ReadOn,
    /// The new process serves the connection now: return without touching the socket.
    Released,
}

impl Hold {
    /// True while an upgrade wants the set-up worker to stop.
    pub(crate) fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Registers the calling thread as the set-up worker while it waits for the client, so an
    /// upgrade can wake it; dropping the guard unregisters it.
    pub(crate) fn enter(&self) -> AwaitingClient<'_> {
        self.lock().worker = Some(ThreadId::current());
        AwaitingClient { hold: self }
    }

    /// Stops the set-up worker, having read `read` of the client's bytes, until the upgrade
    /// decides.
    pub(crate) fn wait(&self, read: Vec<u8>) -> HoldVerdict {
        let mut state = self.lock();
        state.read = Some(read);
        self.changed.notify_all();
        while state.released.is_none() && self.asked() {
            state = wait(&self.changed, state);
        }
        state.read = None;
        match state.released {
            Some(true) => HoldVerdict::Released,
            Some(false) | None => HoldVerdict::ReadOn,
        }
    }

    /// Asks the set-up worker to stop where it is.
    pub(crate) fn ask(&self) {
        self.lock().released = None;
        self.asked.store(true, Ordering::SeqCst);
    }

    /// Wakes the set-up worker out of its wait for the client's bytes, if it is in one and not
    /// stopped yet. Repeated until it stops: a worker about to wait misses a signal that comes
    /// just before.
    pub(crate) fn wake(&self) {
        let state = self.lock();
        if let (Some(worker), None) = (state.worker, &state.read) {
            // Under the lock: the worker cannot leave its wait (and end) meanwhile.
            let _ = worker.wake();
        }
    }

    /// The client's bytes read so far, once the worker has stopped.
    pub(crate) fn read(&self) -> Option<Vec<u8>> {
        self.lock().read.clone()
    }

    /// The upgrade is over for this connection: a stopped worker returns (`release`) or reads
    /// on.
    pub(crate) fn end(&self, release: bool) {
        let mut state = self.lock();
        state.released = Some(release);
        self.asked.store(false, Ordering::SeqCst);
        drop(state);
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, HoldState> {
        lock(&self.state)
    }
}

/// A set-up worker waiting for its client (see [`Hold::enter`]).
#[derive(Debug)]
pub(crate) struct AwaitingClient<'a> {
    hold: &'a Hold,
}

impl Drop for AwaitingClient<'_> {
    fn drop(&mut self) {
        self.hold.lock().worker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Runs a worker that waits in `hold` with `read`, once the upgrade has asked; returns the
    /// worker and what the upgrade saw it hold.
    fn held_worker(
        hold: &Arc<Hold>,
        read: &[u8],
    ) -> (std::thread::JoinHandle<HoldVerdict>, Vec<u8>) {
        hold.ask();
        let worker = {
            let hold = Arc::clone(hold);
            let read = read.to_vec();
            std::thread::spawn(move || hold.wait(read))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            if let Some(seen) = hold.read() {
                break seen;
            }
            assert!(Instant::now() < deadline, "the worker never stopped");
            std::thread::yield_now();
        };
        (worker, seen)
    }

    #[test]
    fn a_held_worker_returns_when_released_and_reads_on_otherwise() {
        for (release, verdict) in [(true, HoldVerdict::Released), (false, HoldVerdict::ReadOn)] {
            let hold = Arc::new(Hold::default());
            let (worker, seen) = held_worker(&hold, b"PROXY TCP4 ");
            assert_eq!(seen, b"PROXY TCP4 ");
            hold.end(release);
            assert_eq!(worker.join().unwrap(), verdict);
            assert!(!hold.asked());
            assert_eq!(
                hold.read(),
                None,
                "nothing is held once the worker has gone on"
            );
        }
    }
}
