//! One flow: a client address of a UDP listener, with its own upstream socket (connected, so the
//! kernel gives it only the upstream's datagrams and the upstream sees one source port per
//! client), its counters, how it ended, and its log line. Its reply thread is the listener's
//! (`port`). An upstream given as a name is resolved on that thread, not on the listener's
//! receiving thread: until the flow is connected, its client's datagrams wait in it, in order.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::HostPort;
use crate::log::line::FlowLine;
use crate::log::rinetd::{LogRecord, LogResult, LogSink};
use crate::relay::Direction;
use crate::serve::metrics::{UdpDrop, UdpStats};
use crate::sys::datagram;
use crate::sys::sync::lock;

/// The most datagrams of a client that wait while its flow connects (a name resolving); more are
/// dropped and counted.
const MAX_WAITING: usize = 64;

/// Why a flow ended: the `result` of its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// No datagram either way for the idle timeout.
    Idle,
    /// Ended to make room for a new client (`max_flows`).
    Evicted,
    /// The server stopped.
    Stopped,
    /// A reload removed its listener.
    Removed,
    /// Its upstream socket failed.
    Error,
    /// A live upgrade handed its listener to a new process, which sets up a flow of its own.
    Upgraded,
}

impl Ending {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ending::Idle => "idle",
            Ending::Evicted => "evicted",
            Ending::Stopped => "stopped",
            Ending::Removed => "removed",
            Ending::Error => "error",
            Ending::Upgraded => "upgraded",
        }
    }

    /// rinetd's word for it in its log file: a flow its timeout ended is `done-remote-closed`,
    /// the word rinetd gives one; one tcp-router ended is `done-local-closed`.
    fn rinetd(self) -> LogResult {
        match self {
            Ending::Idle => LogResult::DoneRemoteClosed,
            Ending::Error => LogResult::UnknownError,
            Ending::Evicted | Ending::Stopped | Ending::Removed | Ending::Upgraded => {
                LogResult::DoneLocalClosed
            }
        }
    }
}

/// Where a flow's rinetd line goes, and the listener as written (the line's bind host and port).
#[derive(Debug)]
pub(super) struct RinetdLog {
    pub(super) sink: Arc<LogSink>,
    pub(super) listen: HostPort,
}

/// Counts every datagram of every flow, in the order they move.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// A client's flow through a UDP listener.
#[derive(Debug)]
pub(super) struct UdpFlow {
    /// Its sequence number on the listener, for the log.
    pub(super) id: u64,
    /// The client's address.
    pub(super) client: SocketAddr,
    /// Connected to the upstream, once it is.
    upstream: OnceLock<UdpSocket>,
    /// The upstream as configured.
    pub(super) upstream_name: HostPort,
    /// The address it resolved to, once it has.
    upstream_addr: OnceLock<SocketAddr>,
    /// Until the flow is connected, the client's datagrams waiting to go, in order; `None` once
    /// they have gone.
    waiting: Mutex<Option<Vec<Vec<u8>>>>,
    /// How long the flow lasts without a datagram either way.
    pub(super) idle_timeout: Duration,
    /// rinetd's log file, if configured.
    pub(super) rinetd: Option<RinetdLog>,
    pub(super) started: Instant,
    /// When the last datagram moved, in milliseconds after `started`.
    last_ms: AtomicU64,
    /// Where the last datagram falls among every flow's ([`ACTIVITY`]): the flow idle longest
    /// has the lowest, even when two moved within one millisecond.
    last_seq: AtomicU64,
    /// Datagrams and bytes relayed, client to upstream first.
    datagrams: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    /// Why it ended, once it has.
    ending: OnceLock<Ending>,
}

impl UdpFlow {
    /// A flow not connected yet (see [`UdpFlow::connected`]).
    pub(super) fn new(
        id: u64,
        client: SocketAddr,
        upstream_name: HostPort,
        idle_timeout: Duration,
        rinetd: Option<RinetdLog>,
    ) -> UdpFlow {
        UdpFlow {
            id,
            client,
            upstream: OnceLock::new(),
            upstream_name,
            upstream_addr: OnceLock::new(),
            waiting: Mutex::new(Some(Vec::new())),
            idle_timeout,
            rinetd,
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_seq: AtomicU64::new(ACTIVITY.fetch_add(1, Ordering::Relaxed)),
            datagrams: Default::default(),
            bytes: Default::default(),
            ending: OnceLock::new(),
        }
    }

    /// Notes that a datagram moved now.
    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
        let seq = ACTIVITY.fetch_add(1, Ordering::Relaxed);
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The order of its last datagram among every flow's: lower moved longer ago.
    pub(super) fn last_activity(&self) -> u64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// How long since the last datagram either way (or since the start).
    pub(super) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Counts a datagram of `len` bytes relayed in `direction`.
    pub(super) fn count(&self, direction: Direction, len: usize) {
        self.datagrams[direction as usize].fetch_add(1, Ordering::Relaxed);
        self.bytes[direction as usize].fetch_add(len as u64, Ordering::Relaxed);
    }

    /// The flow is connected to its upstream by `socket`: the datagrams waiting go first, in
    /// order, and the next ones straight after them.
    pub(super) fn connected(&self, socket: UdpSocket, stats: &UdpStats) {
        let addr = socket
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = self.upstream_addr.set(addr);
        let _ = self.upstream.set(socket);
        let mut waiting = lock(&self.waiting);
        for payload in waiting.take().unwrap_or_default() {
            self.send_now(stats, &payload);
        }
    }

    /// The flow could not be connected: the datagrams waiting are dropped, counted.
    pub(super) fn not_connected(&self, stats: &UdpStats) {
        for _ in lock(&self.waiting).take().unwrap_or_default() {
            stats.dropped(UdpDrop::SendFailed);
        }
    }

    /// Its socket connected to the upstream, once it is.
    pub(super) fn upstream(&self) -> Option<&UdpSocket> {
        self.upstream.get()
    }

    /// The address the upstream resolved to (unspecified until it has).
    pub(super) fn upstream_addr(&self) -> SocketAddr {
        (self.upstream_addr.get().copied()).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Ends the flow for `why` (the first reason given wins) and wakes its reply thread, which
    /// logs it (one still connecting sees it once its lookup returns).
    pub(super) fn end(&self, why: Ending) {
        let _ = self.ending.set(why);
        if let Some(upstream) = self.upstream.get() {
            datagram::wake_receivers(upstream);
        }
    }

    /// Why it ended, if it has.
    pub(super) fn ending(&self) -> Option<Ending> {
        self.ending.get().copied()
    }

    /// Sends a client's datagram upstream (or keeps it until the flow is connected), counting
    /// it in its listener's `stats` too.
    pub(super) fn send_upstream(&self, stats: &UdpStats, payload: &[u8]) {
        if let Some(waiting) = lock(&self.waiting).as_mut() {
            if waiting.len() < MAX_WAITING {
                waiting.push(payload.to_vec());
            } else {
                stats.dropped(UdpDrop::SendFailed);
            }
            return;
        }
        self.send_now(stats, payload);
    }

    fn send_now(&self, stats: &UdpStats, payload: &[u8]) {
        let Some(upstream) = self.upstream.get() else {
            stats.dropped(UdpDrop::SendFailed);
            return;
        };
        match upstream.send(payload) {
            Ok(_) => {
                self.count(Direction::ClientToUpstream, payload.len());
                stats.relayed(Direction::ClientToUpstream, payload.len());
            }
            Err(err) => stats.dropped(send_failure(&err)),
        }
    }

    /// Sends one of the upstream's datagrams to the client from the listen `socket`, counting
    /// it in its listener's `stats` too.
    pub(super) fn send_to_client(&self, socket: &UdpSocket, stats: &UdpStats, payload: &[u8]) {
        self.touch();
        match socket.send_to(payload, self.client) {
            Ok(_) => {
                self.count(Direction::UpstreamToClient, payload.len());
                stats.relayed(Direction::UpstreamToClient, payload.len());
            }
            Err(err) => stats.dropped(send_failure(&err)),
        }
    }

    /// Datagrams relayed so far, client to upstream first.
    pub(crate) fn datagrams(&self) -> [u64; 2] {
        self.datagrams.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Bytes relayed so far, client to upstream first.
    pub(crate) fn bytes(&self) -> [u64; 2] {
        self.bytes.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// The flow's line in rinetd's log file, if configured, and then its one log line, at its
    /// end, on the UDP listener bound to `listener`.
    pub(super) fn log_end(&self, listener: SocketAddr, ending: Ending) {
        let line = FlowLine {
            id: self.id,
            client: self.client,
            listener,
            upstream: (&self.upstream_name, self.upstream_addr()),
            datagrams: self.datagrams(),
            bytes: self.bytes(),
            duration: self.started.elapsed(),
            result: ending.name(),
        };
        if let Some(rinetd) = &self.rinetd {
            rinetd.sink.write(&LogRecord {
                time: SystemTime::now(),
                client: self.client.ip(),
                bind_host: &rinetd.listen.host.to_string(),
                bind_port: rinetd.listen.port,
                connect_host: &self.upstream_name.host.to_string(),
                connect_port: self.upstream_name.port,
                bytes_in: line.bytes[0],
                bytes_out: line.bytes[1],
                result: ending.rinetd(),
            });
        }
        log::info!("{line}");
    }
}

/// How a failed send is counted: too large for the path, or failed.
fn send_failure(err: &std::io::Error) -> UdpDrop {
    if datagram::is_too_large(err) {
        UdpDrop::Oversize
    } else {
        UdpDrop::SendFailed
    }
}
