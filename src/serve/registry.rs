//! Live connections: counted for the drain, reachable so a graceful stop can cut what is left,
//! and listed (with where they go) for the admin endpoint.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::relay::Connection;
use crate::sys::clock;

use super::listener::{ListenerState, RouteState};

/// A live connection and what is known of it so far: set once each, as the connection learns it.
#[derive(Debug)]
pub(crate) struct Live {
    /// The sockets and the relay's state.
    pub(crate) conn: Arc<Connection>,
    /// The listener that accepted it, as it was configured then.
    pub(crate) listener: Arc<ListenerState>,
    /// That listener's bound address.
    pub(crate) listener_addr: SocketAddr,
    /// The route taken, once chosen.
    pub(crate) route: OnceLock<Arc<RouteState>>,
    /// The client as tcp-router acts on it (after a PROXY header), once known.
    pub(crate) client: OnceLock<SocketAddr>,
    /// The upstream connected, as configured and as resolved.
    pub(crate) upstream: OnceLock<(String, SocketAddr)>,
    /// What the client asked for (`sni=…`, `host=…`), once read: for a live upgrade to pass on.
    pub(crate) name: OnceLock<Box<str>>,
}

/// Every connection between accept and its last log line.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<u64, Arc<Live>>>,
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
pub(super) struct Entry {
    registry: Arc<Registry>,
    /// The connection.
    pub(super) conn: Arc<Connection>,
    /// What is known of it, for the admin endpoint.
    pub(super) live: Arc<Live>,
}

impl Registry {
    /// Adds a client accepted on `listener` (bound at `listener_addr`) and returns its entry.
    pub(super) fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        client: TcpStream,
        listener: Arc<ListenerState>,
        listener_addr: SocketAddr,
    ) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Arc::new(Connection::new(id, peer, client));
        self.insert(conn, listener, listener_addr)
    }

    /// Adds a connection another process handed over (with its id).
    pub(super) fn adopt(
        self: &Arc<Self>,
        conn: Connection,
        listener: Arc<ListenerState>,
        listener_addr: SocketAddr,
    ) -> Entry {
        self.next_id.fetch_max(conn.id, Ordering::Relaxed);
        self.insert(Arc::new(conn), listener, listener_addr)
    }

    fn insert(
        self: &Arc<Self>,
        conn: Arc<Connection>,
        listener: Arc<ListenerState>,
        listener_addr: SocketAddr,
    ) -> Entry {
        let live = Arc::new(Live {
            conn: Arc::clone(&conn),
            listener,
            listener_addr,
            route: OnceLock::new(),
            client: OnceLock::new(),
            upstream: OnceLock::new(),
            name: OnceLock::new(),
        });
        self.lock().insert(conn.id, Arc::clone(&live));
        Entry {
            registry: Arc::clone(self),
            conn,
            live,
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
    pub(crate) fn snapshot(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        all.sort_by_key(|live| live.conn.id);
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
            live = match self.left.wait_timeout(live, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Cuts every live connection; returns how many were still running.
    pub(super) fn cut_all(&self) -> usize {
        let live: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        live.iter().filter(|live| live.conn.cut()).count()
    }

    /// Locks the map; a panic elsewhere never leaves it unusable, since every update is one call.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Live>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        live.remove(&self.conn.id);
        if self.registry.waiters.load(Ordering::Relaxed) > 0 {
            self.registry.left.notify_all();
        }
        drop(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn client() -> (TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let addr = stream.local_addr().unwrap();
        (stream, addr)
    }

    fn register(registry: &Arc<Registry>) -> Entry {
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
        ));
        registry.register(peer, stream, state, "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn entries_leave_on_drop_and_wake_the_drain() {
        let registry = Arc::new(Registry::default());
        let entry = register(&registry);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.snapshot()[0].conn.id, entry.conn.id);
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
