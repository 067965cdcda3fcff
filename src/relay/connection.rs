//! One relayed connection's shared state: its two sockets, when bytes last moved, whether a
//! direction has ended, and whether (and why) it was stopped. Both copy threads and the drain
//! (through the registry) hold it; every field is atomic or set once, so no lock is taken while
//! bytes move.

use std::net::Shutdown;

use socket2::Socket;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sys::net;
use crate::sys::sync::{lock, wait_timeout};
use crate::sys::unix::Peer;

use super::outcome::{Direction, End, Timeouts};
use super::park::{Park, Parked};

/// Whether a connection is still running, or why it was stopped from outside a copy loop's own
/// end of stream: cut by a graceful stop, timed out by its idle or fin limit, or aborted by a
/// failure in either direction. Set once: the first cause wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stop {
    Running = 0,
    Cut = 1,
    TimedOut = 2,
    Aborted = 3,
}

impl Stop {
    fn from_u8(value: u8) -> Stop {
        match value {
            0 => Stop::Running,
            1 => Stop::Cut,
            2 => Stop::TimedOut,
            _ => Stop::Aborted,
        }
    }
}

/// Bytes moved each way, counted while they move (not only at close, so a long transfer shows
/// its progress). Each connection has its own; a route's are shared by all its connections.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    client_to_upstream: AtomicU64,
    upstream_to_client: AtomicU64,
}

impl Traffic {
    fn counter(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::ClientToUpstream => &self.client_to_upstream,
            Direction::UpstreamToClient => &self.upstream_to_client,
        }
    }

    /// Counts `n` more bytes moved `direction`.
    pub(crate) fn add(&self, direction: Direction, n: u64) {
        self.counter(direction).fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved `direction` so far.
    pub(crate) fn get(&self, direction: Direction) -> u64 {
        self.counter(direction).load(Ordering::Relaxed)
    }
}

/// A direction that has not ended yet, in [`Connection::ends`].
const OPEN: u8 = 0;

/// Marks "not half-closed" in [`Connection::half_closed_ms`].
const NEVER: u64 = u64::MAX;

/// A proxied connection: the two sockets and the state both copy threads and the registry share.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Sequence number, for logs.
    pub(crate) id: u64,
    /// The client: its address, or a local process's credentials.
    pub(crate) peer: Peer,
    /// The client socket.
    pub(crate) client: Socket,
    /// The upstream socket, once connected.
    upstream: OnceLock<Socket>,
    /// When the client was accepted.
    pub(crate) started: Instant,
    /// Milliseconds after `started` when bytes last moved in either direction.
    last_activity_ms: AtomicU64,
    /// Milliseconds after `started` when the first direction ended, or [`NEVER`].
    half_closed_ms: AtomicU64,
    /// A [`Stop`]: running, or why the connection was stopped.
    stop: AtomicU8,
    /// Bytes this connection moved each way.
    traffic: Traffic,
    /// Its route's counters too, once a route is chosen.
    route_traffic: OnceLock<std::sync::Arc<Traffic>>,
    /// How each direction ended ([`OPEN`] while it runs), client to upstream first.
    ends: [AtomicU8; 2],
    /// Where the copy threads stop for a live upgrade (see `park`).
    pub(crate) park: Park,
    /// Where a direction that met a reset on a write waits for the other to end (see
    /// `relay::finish`); signalled only once the connection is aborted.
    end_lock: Mutex<()>,
    end_set: Condvar,
}

impl Connection {
    /// Wraps an accepted client.
    pub(crate) fn new(id: u64, peer: Peer, client: Socket) -> Connection {
        Connection {
            id,
            peer,
            client,
            upstream: OnceLock::new(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            half_closed_ms: AtomicU64::new(NEVER),
            stop: AtomicU8::new(Stop::Running as u8),
            traffic: Traffic::default(),
            route_traffic: OnceLock::new(),
            ends: [AtomicU8::new(OPEN), AtomicU8::new(OPEN)],
            park: Park::default(),
            end_lock: Mutex::new(()),
            end_set: Condvar::new(),
        }
    }

    /// A connection taken over from the old process of a live upgrade, with the clocks and
    /// counters of its life there.
    pub(crate) fn taken(id: u64, peer: Peer, client: Socket, past: Past) -> Connection {
        let conn = Connection::new(id, peer, client);
        let now = Instant::now();
        let conn = Connection {
            started: now
                .checked_sub(Duration::from_millis(past.elapsed_ms))
                .unwrap_or(now),
            ..conn
        };
        conn.last_activity_ms
            .store(past.activity_ms, Ordering::Relaxed);
        if let Some(half) = past.half_closed_ms {
            conn.half_closed_ms.store(half, Ordering::SeqCst);
        }
        for direction in Direction::BOTH {
            conn.traffic
                .add(direction, past.traffic[direction as usize]);
        }
        conn
    }

    /// What another process needs to carry on this connection's clocks and counters.
    pub(crate) fn past(&self) -> Past {
        Past {
            elapsed_ms: self.elapsed_ms(),
            activity_ms: self.last_activity_ms.load(Ordering::Relaxed),
            half_closed_ms: self.half_closed_at_ms(),
            traffic: Direction::BOTH.map(|d| self.bytes(d)),
        }
    }

    /// Counts the bytes of this connection into `route` too, from now on.
    pub(crate) fn count_into(&self, route: std::sync::Arc<Traffic>) {
        let _ = self.route_traffic.set(route);
    }

    /// Counts `n` bytes moved `direction`, for the connection and its route.
    pub(crate) fn count(&self, direction: Direction, n: u64) {
        self.traffic.add(direction, n);
        if let Some(route) = self.route_traffic.get() {
            route.add(direction, n);
        }
    }

    /// Bytes moved `direction` so far.
    pub(crate) fn bytes(&self, direction: Direction) -> u64 {
        self.traffic.get(direction)
    }

    /// Records how `direction` ended. Once the connection is aborted, the other direction may be
    /// waiting for this ([`Connection::wait_for_end`]): it is told.
    pub(crate) fn set_end(&self, direction: Direction, end: End) {
        self.ends[direction as usize].store(end.code(), Ordering::SeqCst);
        if self.stop() == Stop::Aborted {
            let _held = lock(&self.end_lock);
            self.end_set.notify_all();
        }
    }

    /// Waits until `direction` has ended, or `deadline` passes (`None`). Only for an aborted
    /// connection: [`Connection::set_end`] signals only then. Both the end and the stop are
    /// sequentially consistent, so either this sees the end or the end's writer sees the stop.
    pub(crate) fn wait_for_end(&self, direction: Direction, deadline: Instant) -> Option<End> {
        let mut held = lock(&self.end_lock);
        loop {
            if let Some(end) = End::from_code(self.ends[direction as usize].load(Ordering::SeqCst))
            {
                return Some(end);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            held = wait_timeout(&self.end_set, held, left);
        }
    }

    /// How `direction` ended, or `None` while it runs.
    pub(crate) fn end(&self, direction: Direction) -> Option<End> {
        End::from_code(self.ends[direction as usize].load(Ordering::Relaxed))
    }

    /// How long since bytes last moved either way.
    pub(crate) fn idle(&self) -> Duration {
        let last = self.at_ms(self.last_activity_ms.load(Ordering::Relaxed));
        last.elapsed()
    }

    /// Attaches the connected upstream socket; if the connection was cut meanwhile, shuts it down.
    pub(crate) fn attach_upstream(&self, upstream: Socket) {
        let _ = self.upstream.set(upstream);
        if self.is_stopped() {
            self.shutdown_both();
        }
    }

    /// The upstream socket, once attached.
    pub(crate) fn upstream(&self) -> Option<&Socket> {
        self.upstream.get()
    }

    /// True once a graceful stop or a failure has stopped this connection.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop() != Stop::Running
    }

    /// Running, or why the connection was stopped.
    pub(crate) fn stop(&self) -> Stop {
        Stop::from_u8(self.stop.load(Ordering::SeqCst))
    }

    /// Cuts the connection (graceful stop after the drain timeout): both sides get a FIN and both
    /// copy threads wake. Returns false if it had already stopped.
    pub(crate) fn cut(&self) -> bool {
        let first = self.set_stop(Stop::Cut);
        self.shutdown_both();
        first
    }

    /// Resets the connection from outside its copy threads (its upstream went down): both sides
    /// get an RST and both copy threads wake. Returns false if it had already stopped.
    pub(crate) fn reset(&self) -> bool {
        let first = self.set_stop(Stop::Aborted);
        if first {
            self.abort_both();
        }
        first
    }

    /// Records why the connection stops, unless it already had a cause; true if this was first.
    pub(crate) fn set_stop(&self, cause: Stop) -> bool {
        self.stop
            .compare_exchange(
                Stop::Running as u8,
                cause as u8,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    pub(crate) fn shutdown_both(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = self.upstream() {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn abort_both(&self) {
        net::abort(&self.client);
        if let Some(upstream) = self.upstream() {
            net::abort(upstream);
        }
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// Bytes moved in either direction: the connection is not idle.
    pub(crate) fn note_activity(&self) {
        self.last_activity_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// One direction has ended: from now on the fin limit applies.
    pub(crate) fn mark_half_closed(&self) {
        let now = self.elapsed_ms();
        let _ =
            self.half_closed_ms
                .compare_exchange(NEVER, now, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Whether one direction has already ended with a half-close.
    pub(crate) fn is_half_closed(&self) -> bool {
        self.half_closed_at_ms().is_some()
    }

    /// Where the copy threads stopped for a live upgrade, once every direction is either parked
    /// or ended (at least one parked); `None` until then, or if the connection was stopped. A
    /// direction that ended before ended with a half-close, and at its time.
    pub(crate) fn parked(&self) -> Option<Parked> {
        if self.is_stopped() {
            return None;
        }
        let ended_ms = self
            .half_closed_at_ms()
            .unwrap_or_else(|| self.elapsed_ms());
        self.park
            .spots(Direction::BOTH.map(|d| self.end(d)), ended_ms)
    }

    /// When the first direction ended, in milliseconds after the start, if one has.
    pub(crate) fn half_closed_at_ms(&self) -> Option<u64> {
        let half = self.half_closed_ms.load(Ordering::SeqCst);
        (half != NEVER).then_some(half)
    }

    /// When the connection expires if no more bytes move, under `timeouts`.
    pub(crate) fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        let idle = timeouts.idle.map(|idle| self.at_ms(last) + idle);
        let half = self.half_closed_ms.load(Ordering::SeqCst);
        let fin = match (timeouts.fin, half) {
            (Some(fin), half) if half != NEVER => Some(self.at_ms(last.max(half)) + fin),
            _ => None,
        };
        match (idle, fin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long a copy thread may wait for bytes before it must look at the deadline again, or
    /// `Err` if the deadline has passed. While not half-closed, the fin limit bounds the wait
    /// too, because the other direction may end meanwhile and make the fin limit apply.
    pub(crate) fn wait_budget(&self, timeouts: &Timeouts) -> Result<Option<Duration>, Expired> {
        let now = Instant::now();
        let mut budget = match self.deadline(timeouts) {
            Some(deadline) if deadline <= now => return Err(Expired),
            Some(deadline) => Some(deadline - now),
            None => None,
        };
        if self.half_closed_ms.load(Ordering::SeqCst) == NEVER {
            if let Some(fin) = timeouts.fin {
                budget = Some(budget.map_or(fin, |b| b.min(fin)));
            }
        }
        Ok(budget)
    }
}

/// A connection's clocks and counters as the old process of a live upgrade passes them on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Past {
    /// Milliseconds since it was accepted.
    pub(crate) elapsed_ms: u64,
    /// When bytes last moved, in milliseconds after the start.
    pub(crate) activity_ms: u64,
    /// When the first direction ended, if one has.
    pub(crate) half_closed_ms: Option<u64>,
    /// Bytes moved each way, client to upstream first.
    pub(crate) traffic: [u64; 2],
}

/// The deadline has passed.
#[derive(Debug)]
pub(crate) struct Expired;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn connection() -> Connection {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = client.local_addr().unwrap();
        Connection::new(1, peer.into(), client.into())
    }

    #[test]
    fn no_timeouts_means_no_deadline() {
        let conn = connection();
        assert_eq!(conn.deadline(&Timeouts::default()), None);
        assert_eq!(conn.wait_budget(&Timeouts::default()).unwrap(), None);
    }

    #[test]
    fn fin_limit_applies_only_once_half_closed() {
        let conn = connection();
        let timeouts = Timeouts {
            idle: None,
            fin: Some(Duration::from_secs(60)),
        };
        assert_eq!(conn.deadline(&timeouts), None);
        // Not half-closed yet: the wait is still bounded so the thread re-checks later.
        assert_eq!(
            conn.wait_budget(&timeouts).unwrap(),
            Some(Duration::from_secs(60))
        );
        conn.mark_half_closed();
        assert!(conn.deadline(&timeouts).is_some());
    }

    #[test]
    fn expired_idle_limit_is_reported() {
        let conn = connection();
        let timeouts = Timeouts {
            idle: Some(Duration::ZERO),
            fin: None,
        };
        assert!(conn.wait_budget(&timeouts).is_err());
    }

    #[test]
    fn the_first_stop_cause_wins() {
        let conn = connection();
        assert_eq!(conn.stop(), Stop::Running);
        assert!(conn.set_stop(Stop::TimedOut));
        assert!(!conn.set_stop(Stop::Aborted));
        assert!(!conn.cut(), "already stopped");
        assert_eq!(conn.stop(), Stop::TimedOut);
        assert!(conn.is_stopped());
    }
}
