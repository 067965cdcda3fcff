//! The counters: always on, counted where each event happens (an accept, a connection's end, an
//! upstream attempt, a chunk moved), and read by the admin endpoint.
//!
//! Every series is keyed by values from the configuration only (a listen address, a route's label,
//! an upstream as written), never by what a client sends, so no client can add a series. A
//! listener's and a route's counters are found again by their key when a reload rebuilds the
//! run-time state, so unchanged routes keep counting; the counters of removed ones stay at their
//! last values until the process exits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::relay::{End, Traffic};
use crate::sys::sync::lock;

/// How a connection ended, as the metrics count it (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    Forwarded = 0,
    Refused = 1,
    NoUpstream = 2,
    NoRoute = 3,
    PeekTimeout = 4,
    ProxyHeader = 5,
    Stopped = 6,
    Error = 7,
    ClientLimit = 8,
    PeekLimit = 9,
    PeekEvicted = 10,
    UpstreamDown = 11,
}

impl Disposition {
    /// The label values, indexed by the variant.
    pub(crate) const NAMES: [&'static str; 12] = [
        "forwarded",
        "refused",
        "no_upstream",
        "no_route",
        "peek_timeout",
        "proxy_header",
        "stopped",
        "error",
        "client_limit",
        "peek_limit",
        "peek_evicted",
        "upstream_down",
    ];
}

/// Why an upstream connect attempt failed, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    Refused = 0,
    Timeout = 1,
    Unreachable = 2,
    NotResolved = 3,
    Error = 4,
}

impl ConnectFailure {
    /// The label values, indexed by the variant.
    pub(crate) const NAMES: [&'static str; 5] =
        ["refused", "timeout", "unreachable", "not_resolved", "error"];

    /// The reason for a connect error.
    pub(crate) fn of(err: &std::io::Error) -> ConnectFailure {
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused => ConnectFailure::Refused,
            TimedOut | WouldBlock => ConnectFailure::Timeout,
            HostUnreachable | NetworkUnreachable | AddrNotAvailable | NetworkDown => {
                ConnectFailure::Unreachable
            }
            _ => ConnectFailure::Error,
        }
    }
}

/// Upper bounds of the connect-time histogram's buckets, in seconds.
pub(crate) const CONNECT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What a client's first bytes showed when its route was chosen, as the metrics count it (the
/// `protocol` label of `tcp_router_protocol_connections_total`): the readers' and protocol
/// routes' names, and `other` for bytes none of them took. A bounded set: no client can add one.
pub(crate) const PROTOCOLS: [&str; 7] =
    ["tls", "http", "ssh", "prefix", "regex", "silent", "other"];

/// A listener's counters.
#[derive(Debug, Default)]
pub(crate) struct ListenerStats {
    /// Clients accepted.
    pub(crate) accepted: AtomicU64,
    /// True once the listener reads first bytes to choose a route (its protocol counts are
    /// shown from then on, zero or not).
    reads_first: AtomicBool,
    /// Routes chosen by first bytes, by [`PROTOCOLS`].
    protocols: [AtomicU64; 7],
}

impl ListenerStats {
    /// Says that the listener reads first bytes: its protocol counts are shown.
    pub(crate) fn reads_first(&self) {
        self.reads_first.store(true, Ordering::Relaxed);
    }

    /// Counts a client whose first bytes showed `protocol` (one of [`PROTOCOLS`]; any other
    /// counts as `other`).
    pub(crate) fn matched(&self, protocol: &str) {
        let index = PROTOCOLS.iter().position(|p| *p == protocol);
        let index = index.unwrap_or(PROTOCOLS.len() - 1);
        self.protocols[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts by [`PROTOCOLS`], if the listener reads first bytes.
    pub(crate) fn protocol_counts(&self) -> Option<[u64; 7]> {
        (self.reads_first.load(Ordering::Relaxed))
            .then(|| std::array::from_fn(|i| self.protocols[i].load(Ordering::Relaxed)))
    }
}

/// A route's counters (or, under the label `none`, a listener's connections that ended before a
/// route was chosen).
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    /// Bytes relayed each way, counted while they move.
    pub(crate) traffic: Arc<Traffic>,
    /// Connections ended, by [`Disposition`].
    ended: [AtomicU64; 12],
    /// Directions ended, client to upstream first, by [`End::KINDS`].
    directions: [[AtomicU64; 6]; 2],
}

impl RouteStats {
    /// Counts a connection's end.
    pub(crate) fn ended(&self, result: Disposition) {
        self.ended[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts how one direction of a relayed connection ended.
    pub(crate) fn direction_ended(&self, direction: crate::relay::Direction, end: End) {
        self.directions[direction as usize][end.kind_index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections ended with `result` so far.
    pub(crate) fn ended_count(&self, result: usize) -> u64 {
        self.ended[result].load(Ordering::Relaxed)
    }

    /// Directions ended so far, by direction and kind index.
    pub(crate) fn direction_count(&self, direction: usize, kind: usize) -> u64 {
        self.directions[direction][kind].load(Ordering::Relaxed)
    }
}

/// An upstream's counters, with the last failure for `/routes`.
#[derive(Debug, Default)]
pub(crate) struct UpstreamStats {
    /// Connect attempts (each address tried counts once).
    pub(crate) attempts: AtomicU64,
    /// Failed attempts, by [`ConnectFailure`].
    failures: [AtomicU64; 5],
    /// Connect times of successful attempts: per bucket of [`CONNECT_BUCKETS`] (not cumulative),
    /// then the ones above the last bound.
    buckets: [AtomicU64; 13],
    /// Sum of the observed connect times, in microseconds.
    sum_micros: AtomicU64,
    /// The last failure and when it happened.
    last_error: Mutex<Option<(String, SystemTime)>>,
}

impl UpstreamStats {
    /// Counts a failed attempt.
    pub(crate) fn failed(&self, failure: ConnectFailure, error: String) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some((error, SystemTime::now()));
    }

    /// Records a successful connect's duration.
    pub(crate) fn connected(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = CONNECT_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(CONNECT_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Failed attempts with `failure` (an index into [`ConnectFailure::NAMES`]).
    pub(crate) fn failure_count(&self, failure: usize) -> u64 {
        self.failures[failure].load(Ordering::Relaxed)
    }

    /// The histogram as cumulative counts per bound (the last is `+Inf`), and the sum in
    /// seconds.
    pub(crate) fn histogram(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }

    /// The last failure: its text and when it happened.
    pub(crate) fn last_error(&self) -> Option<(String, SystemTime)> {
        lock(&self.last_error).clone()
    }
}

/// Why a UDP listener dropped a datagram, as the metrics count it (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpDrop {
    /// Larger than the buffer (a UDP payload's largest): counted, never forwarded cut.
    Oversize = 0,
    /// From a client allow/deny refuses.
    Denied = 1,
    /// Sending it failed (the upstream unreachable, a full buffer, no flow could be set up).
    SendFailed = 2,
}

impl UdpDrop {
    /// The label values, indexed by the variant.
    pub(crate) const NAMES: [&'static str; 3] = ["oversize", "denied", "send_failed"];
}

/// A UDP listener's counters.
#[derive(Debug, Default)]
pub(crate) struct UdpStats {
    /// Flows open now.
    pub(crate) flows_active: AtomicU64,
    /// Flows set up so far.
    pub(crate) flows: AtomicU64,
    /// Flows ended to make room for a new client (the listener's `max_flows` reached).
    pub(crate) evicted: AtomicU64,
    /// Datagrams relayed, client to upstream first.
    datagrams: [AtomicU64; 2],
    /// Their bytes, client to upstream first.
    bytes: [AtomicU64; 2],
    /// Datagrams dropped, by [`UdpDrop`].
    dropped: [AtomicU64; 3],
}

impl UdpStats {
    /// Counts one datagram of `len` bytes relayed in `direction`.
    pub(crate) fn relayed(&self, direction: crate::relay::Direction, len: usize) {
        self.datagrams[direction as usize].fetch_add(1, Ordering::Relaxed);
        self.bytes[direction as usize].fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts a dropped datagram.
    pub(crate) fn dropped(&self, why: UdpDrop) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams and bytes relayed in `direction` so far.
    pub(crate) fn relayed_count(&self, direction: crate::relay::Direction) -> (u64, u64) {
        let i = direction as usize;
        (
            self.datagrams[i].load(Ordering::Relaxed),
            self.bytes[i].load(Ordering::Relaxed),
        )
    }

    /// Datagrams dropped for `why` (an index into [`UdpDrop::NAMES`]) so far.
    pub(crate) fn dropped_count(&self, why: usize) -> u64 {
        self.dropped[why].load(Ordering::Relaxed)
    }
}

/// Accept errors counted by kind: the few the accept loop meets, named like their errno.
pub(crate) fn accept_error_kind(err: &std::io::Error) -> &'static str {
    match err.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::MFILE) => "emfile",
        Some(rustix::io::Errno::NFILE) => "enfile",
        Some(rustix::io::Errno::NOBUFS) => "enobufs",
        Some(rustix::io::Errno::NOMEM) => "enomem",
        _ => "other",
    }
}

/// Every counter of the process, and the keys that find them again after a reload.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// When the process started serving.
    pub(crate) started: SystemTime,
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    routes: Mutex<BTreeMap<(String, String), Arc<RouteStats>>>,
    upstreams: Mutex<BTreeMap<(String, String, String), Arc<UpstreamStats>>>,
    udp: Mutex<BTreeMap<String, Arc<UdpStats>>>,
    /// Reconfigurations asked for, and those that took effect.
    pub(crate) reloads: AtomicU64,
    pub(crate) reloads_ok: AtomicU64,
    /// When the last reconfiguration took effect, in seconds since the Unix epoch (0: never).
    pub(crate) last_reload_ok: AtomicU64,
    accept_errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            started: SystemTime::now(),
            listeners: Mutex::default(),
            routes: Mutex::default(),
            upstreams: Mutex::default(),
            udp: Mutex::default(),
            reloads: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            last_reload_ok: AtomicU64::new(0),
            accept_errors: Mutex::default(),
        }
    }
}

impl Metrics {
    /// The counters of listener `listener`, created at first use.
    pub(crate) fn listener(&self, listener: &str) -> Arc<ListenerStats> {
        Arc::clone(
            lock(&self.listeners)
                .entry(listener.to_string())
                .or_default(),
        )
    }

    /// The counters of route `route` on `listener`, created at first use.
    pub(crate) fn route(&self, listener: &str, route: &str) -> Arc<RouteStats> {
        let key = (listener.to_string(), route.to_string());
        Arc::clone(lock(&self.routes).entry(key).or_default())
    }

    /// The counters of `upstream` of `route` on `listener`, created at first use.
    pub(crate) fn upstream(
        &self,
        listener: &str,
        route: &str,
        upstream: &str,
    ) -> Arc<UpstreamStats> {
        let key = (
            listener.to_string(),
            route.to_string(),
            upstream.to_string(),
        );
        Arc::clone(lock(&self.upstreams).entry(key).or_default())
    }

    /// The counters of the UDP listener `listener`, created at first use.
    pub(crate) fn udp(&self, listener: &str) -> Arc<UdpStats> {
        Arc::clone(lock(&self.udp).entry(listener.to_string()).or_default())
    }

    /// Every UDP listener's counters, by listener.
    pub(crate) fn udp_listeners(&self) -> Vec<(String, Arc<UdpStats>)> {
        lock(&self.udp)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Counts a failed `accept`.
    pub(crate) fn accept_failed(&self, err: &std::io::Error) {
        *lock(&self.accept_errors)
            .entry(accept_error_kind(err))
            .or_default() += 1;
    }

    /// Counts a reconfiguration asked for, and whether it took effect.
    pub(crate) fn reloaded(&self, ok: bool) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_reload_ok.store(now, Ordering::Relaxed);
        }
    }

    /// Every listener's counters, by listener.
    pub(crate) fn listeners(&self) -> Vec<(String, Arc<ListenerStats>)> {
        lock(&self.listeners)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Every route's counters, by (listener, route).
    pub(crate) fn routes(&self) -> Vec<((String, String), Arc<RouteStats>)> {
        lock(&self.routes)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Every upstream's counters, by (listener, route, upstream).
    pub(crate) fn upstreams(&self) -> Vec<((String, String, String), Arc<UpstreamStats>)> {
        lock(&self.upstreams)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Accept errors so far, by kind.
    pub(crate) fn accept_errors(&self) -> Vec<(&'static str, u64)> {
        lock(&self.accept_errors)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Direction;

    #[test]
    fn counters_are_found_again_by_their_key() {
        let metrics = Metrics::default();
        let a = metrics.route("127.0.0.1:80", "default");
        a.traffic.add(Direction::ClientToUpstream, 5);
        let again = metrics.route("127.0.0.1:80", "default");
        assert_eq!(again.traffic.get(Direction::ClientToUpstream), 5);
        assert_eq!(metrics.routes().len(), 1);
        metrics.route("127.0.0.1:80", "sni=a.example");
        assert_eq!(metrics.routes().len(), 2);
    }

    #[test]
    fn protocol_counts_show_once_a_listener_reads_first_bytes_and_other_takes_the_rest() {
        let stats = ListenerStats::default();
        stats.matched("ssh");
        assert_eq!(stats.protocol_counts(), None);
        stats.reads_first();
        stats.matched("regex");
        stats.matched("smtp");
        assert_eq!(stats.protocol_counts(), Some([0, 0, 1, 0, 1, 0, 1]));
    }

    #[test]
    fn the_histogram_is_cumulative_and_sums_seconds() {
        let stats = UpstreamStats::default();
        stats.connected(Duration::from_micros(300));
        stats.connected(Duration::from_millis(3));
        stats.connected(Duration::from_secs(9));
        let (cumulative, sum) = stats.histogram();
        assert_eq!(cumulative.len(), CONNECT_BUCKETS.len() + 1);
        assert_eq!(cumulative[0], 1);
        assert_eq!(cumulative[3], 2, "3 ms is in the 5 ms bucket");
        assert_eq!(*cumulative.last().unwrap(), 3);
        assert!((sum - 9.0033).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn connect_failures_have_reasons() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            ConnectFailure::of(&Error::from(ErrorKind::ConnectionRefused)),
            ConnectFailure::Refused
        );
        assert_eq!(
            ConnectFailure::of(&Error::from(ErrorKind::TimedOut)),
            ConnectFailure::Timeout
        );
        assert_eq!(
            ConnectFailure::of(&Error::from(ErrorKind::HostUnreachable)),
            ConnectFailure::Unreachable
        );
        assert_eq!(
            ConnectFailure::of(&Error::from(ErrorKind::PermissionDenied)),
            ConnectFailure::Error
        );
    }
}
