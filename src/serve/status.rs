//! What the server shares with whoever watches it (the admin endpoint): the counters, the live
//! connections, the listeners as now configured, the connection slots, and whether the accept
//! loop is alive, paused at its cap, or stopping. Written by the serving threads, read by others;
//! nothing here blocks serving.

use crate::config::Endpoint;
use crate::sys::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::health::checker::Checker;

use super::listener::ListenerState;
use super::metrics::Metrics;
use super::permits::Permits;
use super::registry::Registry;
use super::udp::UdpBoard;

/// How often the accept loop shows it is alive, even with nothing to accept.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// The server's state, shared.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Every counter.
    pub(crate) metrics: Metrics,
    /// The live connections.
    pub(crate) registry: Arc<Registry>,
    /// The process-wide connection slots.
    pub(crate) permits: Permits,
    /// Runs the upstreams' checks and name lookups.
    pub(crate) checker: Checker,
    /// The listeners being served: bound address and run-time state.
    listeners: Mutex<Vec<(Endpoint, Arc<ListenerState>)>>,
    /// The UDP listeners being served, and their flows.
    pub(crate) udp: Arc<UdpBoard>,
    /// True while the accept loop waits for a free slot.
    paused: AtomicBool,
    /// True from the first moment of a graceful stop.
    stopping: AtomicBool,
    /// Milliseconds after `epoch` when the accept loop last went round.
    heartbeat_ms: AtomicU64,
    epoch: Instant,
}

impl Drop for Shared {
    /// The checker's threads go with the server, however it ended (a server that never ran,
    /// because a listener could not be bound, included).
    fn drop(&mut self) {
        self.checker.stop();
    }
}

impl Shared {
    pub(crate) fn new(metrics: Metrics, permits: Permits) -> Shared {
        Shared {
            metrics,
            registry: Arc::new(Registry::default()),
            permits,
            checker: Checker::default(),
            listeners: Mutex::new(Vec::new()),
            udp: Arc::default(),
            paused: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The listeners being served now.
    pub(crate) fn listeners(&self) -> Vec<(Endpoint, Arc<ListenerState>)> {
        self.lock_listeners().clone()
    }

    pub(super) fn set_listeners(&self, listeners: Vec<(Endpoint, Arc<ListenerState>)>) {
        *self.lock_listeners() = listeners;
    }

    fn lock_listeners(&self) -> MutexGuard<'_, Vec<(Endpoint, Arc<ListenerState>)>> {
        lock(&self.listeners)
    }

    /// True while the accept loop waits for a free connection slot.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub(super) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// True from the first moment of a graceful stop until the process exits.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(super) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The accept loop went round: it is alive.
    pub(super) fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the accept loop last went round.
    pub(crate) fn since_heartbeat(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}
