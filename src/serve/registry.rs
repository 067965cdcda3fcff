//! Live connections: counted for the drain, reachable so a graceful stop can cut what is left.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::relay::Connection;

/// Every connection between accept and its last log line.
#[derive(Debug, Default)]
pub(super) struct Registry {
    live: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Signalled whenever a connection leaves, for [`Registry::wait_empty`].
    left: Condvar,
    /// The next connection id.
    next_id: AtomicU64,
}

/// A connection's place in the registry; dropping it (on every path, panics included) removes it.
#[derive(Debug)]
pub(super) struct Entry {
    registry: Arc<Registry>,
    /// The connection.
    pub conn: Arc<Connection>,
}

impl Registry {
    /// Adds an accepted client and returns its entry.
    pub(super) fn register(self: &Arc<Self>, peer: SocketAddr, client: TcpStream) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Arc::new(Connection::new(id, peer, client));
        self.lock().insert(id, Arc::clone(&conn));
        Entry {
            registry: Arc::clone(self),
            conn,
        }
    }

    /// Connections alive now.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits until every connection has ended, or `timeout` passes; true if all ended.
    pub(super) fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut live = self.lock();
        while !live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = match self.left.wait_timeout(live, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Cuts every live connection; returns how many were still running.
    pub(super) fn cut_all(&self) -> usize {
        let live: Vec<Arc<Connection>> = self.lock().values().cloned().collect();
        live.iter().filter(|conn| conn.cut()).count()
    }

    /// Locks the map; a panic elsewhere never leaves it unusable, since every update is one call.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.conn.id);
        self.registry.left.notify_all();
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

    #[test]
    fn entries_leave_on_drop_and_wake_the_drain() {
        let registry = Arc::new(Registry::default());
        let (stream, peer) = client();
        let entry = registry.register(peer, stream);
        assert_eq!(registry.len(), 1);
        assert!(!registry.wait_empty(Duration::from_millis(1)));
        let waiter = {
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || registry.wait_empty(Duration::from_secs(10)))
        };
        drop(entry);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn cut_counts_each_connection_once() {
        let registry = Arc::new(Registry::default());
        let (stream, peer) = client();
        let _entry = registry.register(peer, stream);
        assert_eq!(registry.cut_all(), 1);
        assert_eq!(registry.cut_all(), 0);
    }
}
