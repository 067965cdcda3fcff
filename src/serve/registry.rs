//! Live connections: counted for the drain, reachable so a graceful stop can cut what is left,
//! and listed (with where they go) for the admin endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::config::Endpoint;
use crate::relay::Connection;
use crate::sys::clock;
use crate::sys::sync::{lock, wait_timeout};
use crate::sys::unix::Peer;

use super::listener::ListenerState;
use super::record::Record;

/// Every connection between accept and its last log line.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<u64, Arc<Record>>>,
    /// Signalled when a connection leaves while [`Registry::wait_empty`] waits.
    left: Condvar,
    /// Threads in [`Registry::wait_empty`]; changed and read only under `live`'s lock, so a
    /// leaving connection signals exactly when someone may be waiting (a notify is a system call
    /// even with no waiter, and every connection leaves once).
    waiters: AtomicUsize,
    /// The next connection id.
    next_id: AtomicU64,
}

/// A connection's place in the registry; dropping it (on every path, panics included) removes it.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    /// What is known about the connection.
    pub(crate) record: Arc<Record>,
}

impl Registry {
    /// Adds a client accepted on `listener` (bound at `listener_addr`), with the next id.
    pub(super) fn register(
        self: &Arc<Self>,
        peer: Peer,
        client: Socket,
        listener: Arc<ListenerState>,
        listener_addr: Endpoint,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Connection::new(id, peer, client);
        self.insert(Record::new(conn, listener, listener_addr))
    }

    /// Adds a connection taken over from the old process of a live upgrade (with its id).
    pub(super) fn register_taken(self: &Arc<Self>, record: Record) -> Registration {
        self.next_id.fetch_max(record.id(), Ordering::Relaxed);
        self.insert(record)
    }

    fn insert(self: &Arc<Self>, record: Record) -> Registration {
        let record = Arc::new(record);
        self.lock().insert(record.id(), Arc::clone(&record));
        Registration {
            registry: Arc::clone(self),
            record,
        }
    }

    /// The id the next connection would get, minus one: ids go on from here in a new process.
    pub(super) fn last_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Continues numbering after `last` (the old process's last id).
    pub(super) fn continue_after(&self, last: u64) {
        self.next_id.fetch_max(last, Ordering::Relaxed);
    }

    /// Connections alive now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The live connections, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Record>> {
        let mut all: Vec<Arc<Record>> = self.lock().values().cloned().collect();
        all.sort_by_key(|record| record.id());
        all
    }

    /// Waits until every connection has ended, or `timeout` passes; true if all ended.
    pub(super) fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = clock::deadline_in(timeout);
        let mut live = self.lock();
        while !live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.waiters.fetch_add(1, Ordering::Relaxed);
            live = wait_timeout(&self.left, live, left);
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Cuts every live connection; returns how many were still running.
    pub(super) fn cut_all(&self) -> usize {
        let all: Vec<Arc<Record>> = self.lock().values().cloned().collect();
        all.iter().filter(|record| record.conn.cut()).count()
    }

    /// Locks the map; a panic elsewhere never leaves it unusable, since every update is one call.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Record>>> {
        lock(&self.live)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        live.remove(&self.record.id());
        if self.registry.waiters.load(Ordering::Relaxed) > 0 {
            self.registry.left.notify_all();
        }
        drop(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::listener::Rosters;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn client() -> (TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let addr = stream.local_addr().unwrap();
        (stream, addr)
    }

    fn register(registry: &Arc<Registry>) -> Registration {
        let (stream, peer) = client();
        let config = crate::config::Listener::new("127.0.0.1:1".parse().unwrap());
        let metrics = super::super::metrics::Metrics::default();
        let limits = super::super::listener::Limits {
            max_connections: 4,
            max_peeking: Some(1),
            max_per_client: None,
            v6_prefix: 64,
            peek_sharers: 1,
        };
        let state = Arc::new(ListenerState::new(
            config,
            Arc::default(),
            &metrics,
            &limits,
            &Rosters::fresh(),
        ));
        registry.register(
            peer.into(),
            stream.into(),
            state,
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn entries_leave_on_drop_and_wake_the_drain() {
        let registry = Arc::new(Registry::default());
        let entry = register(&registry);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.snapshot()[0].id(), entry.record.id());
        assert!(!registry.wait_empty(Duration::from_millis(1)));
        let waiter = {
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || registry.wait_empty(Duration::from_secs(10)))
        };
        // Dropped only once the drain waits, so the wake-up (not the first look) is tested.
        let deadline = Instant::now() + Duration::from_secs(10);
        while registry.waiters.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the drain never waited");
            std::thread::yield_now();
        }
        drop(entry);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn cut_counts_each_connection_once() {
        let registry = Arc::new(Registry::default());
        let _entry = register(&registry);
        assert_eq!(registry.cut_all(), 1);
        assert_eq!(registry.cut_all(), 0);
    }
}
