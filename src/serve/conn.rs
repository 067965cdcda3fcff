//! One client's life on a pool worker: PROXY header from a trusted front, allow/deny, route by
//! name, connect upstream with failover, replay what was read, relay, log one line.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{listed, HostPort};
use crate::log::line::Summary;
use crate::log::rinetd::{LogRecord, LogResult, LogSink};
use crate::proto::proxy::{self, ProxyHeader};
use crate::proto::tls::{self, ClientHello};
use crate::proto::{http, Parsed};
use crate::relay::{self, Carried, Direction, HandedOver, Outcome, Resumed, Timeouts};
use crate::route::access::{self, Refusal};
use crate::route::names::MatchKind;
use crate::sys::net;

use super::clients::{ClientSlot, Evicted, PeekRefusal, PeekSlot, PerClient};
use super::closer::Closer;
use super::connect::{self, Connected};
use super::listener::{ListenerState, RouteState};
use super::metrics;
use super::peek::{self, PeekError};
use super::permits::Permit;
use super::pool::Pool;
use super::registry::Entry;

/// What the accept loop hands to a worker for one client.
#[derive(Debug)]
pub(crate) struct Job {
    /// What the accept loop decided under the per-client and peek-phase limits. Declared before
    /// the permits, so its places are given back first when the job ends.
    pub(crate) admission: Admission,
    /// The client, registered.
    pub(crate) entry: Entry,
    /// The process-wide connection slot, held until the job ends.
    #[allow(dead_code, reason = "held for its Drop, which gives the slot back")]
    pub(crate) permit: Permit,
    /// The listener's own slot, if it has a cap.
    #[allow(dead_code, reason = "held for its Drop, which gives the slot back")]
    pub(crate) listener_permit: Option<Permit>,
    /// The bound address that accepted it.
    pub(crate) listener_addr: SocketAddr,
    /// The listener's configuration at accept time.
    pub(crate) listener: Arc<ListenerState>,
    /// Where the connection is logged and released once relayed (see `closer`).
    pub(crate) closer: Option<Closer>,
    /// Where the copy threads come from: a pool of their own, whose threads run nothing but
    /// copy loops, so an idle one has touched only the pages a copy loop needs.
    pub(crate) copy_pool: Pool,
    /// rinetd's log file, if configured (as it was at accept time).
    pub(crate) log_file: Option<Arc<LogSink>>,
    /// The process-wide per-client limit.
    pub(crate) per_client: Arc<PerClient>,
}

/// The accept loop's decision under the limits that one client, or one listener's slow clients,
/// must not exceed: taken there, in accept order, so the count is exact.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// The client's places under the process-wide per-client limit and the listener's share (not
    /// yet taken on a listener that reads a PROXY header: the client is known only after it).
    pub(crate) client: Vec<ClientSlot>,
    /// A place in the listener's peek phase, if it reads anything before routing.
    pub(crate) peeking: Option<PeekSlot>,
    /// Why the client is refused, if it is: which limit, at what value.
    pub(crate) refused: Option<Limit>,
}

/// Takes a client's places under the per-client and peek-phase limits; a refused client is still
/// handed to a worker, which logs and counts it like any other connection.
pub(super) fn admit(
    per_client: &Arc<PerClient>,
    state: &ListenerState,
    entry: &Entry,
) -> Admission {
    let mut admission = Admission::default();
    // A PROXY header is taken from anyone when no trusted sender is named (warned at start).
    if state.config.accept_proxy && !listed(&state.config.accept_proxy_from, entry.conn.peer.ip()) {
        admission.refused = Some(Limit::UntrustedProxy);
        return admission;
    }
    let peer = entry.conn.peer.ip();
    // Behind a PROXY header the client is known only once the worker has read it.
    if !state.config.accept_proxy {
        match take_client_slots(per_client, state, peer) {
            Ok(slots) => admission.client = slots,
            Err(limit) => {
                admission.refused = Some(limit);
                return admission;
            }
        }
    }
    if state.config.accept_proxy || state.router.reads_first() {
        match state.peeking.take(peer, &entry.conn) {
            Ok(slot) => admission.peeking = Some(slot),
            Err(refusal) => admission.refused = Some(Limit::Peek(refusal)),
        }
    }
    admission
}

/// The client's places under the process-wide per-client limit and the listener's own share.
fn take_client_slots(
    per_client: &Arc<PerClient>,
    state: &ListenerState,
    ip: std::net::IpAddr,
) -> Result<Vec<ClientSlot>, Limit> {
    let mut slots = Vec::with_capacity(2);
    for limit in std::iter::once(per_client).chain(&state.per_client) {
        slots.push(limit.take(ip).ok_or(Limit::Client(limit.limit()))?);
    }
    Ok(slots)
}

/// Which limit refused a client, and its value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    Client(usize),
    Peek(PeekRefusal),
    /// The listener reads PROXY headers, and this sender is not one it trusts with them.
    UntrustedProxy,
}

impl Limit {
    /// How a client refused under this limit is logged and counted.
    fn refusal(self) -> Refused {
        match self {
            Limit::Client(n) => Refused::ClientLimit(n),
            Limit::Peek(refusal) => Refused::PeekLimit(refusal),
            Limit::UntrustedProxy => Refused::UntrustedProxy,
        }
    }
}

/// The client's addresses as tcp-router acts on them: from the socket, or from a PROXY header.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    /// The client (the real one, behind a trusted load balancer).
    client: SocketAddr,
    /// The address the client connected to, if a PROXY header said; otherwise the socket's
    /// local address, looked up only when a PROXY header is sent (a system call saved per client).
    destination: Option<SocketAddr>,
}

/// On a dual-stack listener IPv4 clients appear as ::ffff:a.b.c.d; act on (and tell upstreams, in
/// PROXY headers) their plain IPv4 addresses, as allow/deny does.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// What a client's first bytes say about where it wants to go.
#[derive(Debug)]
enum FirstBytes {
    Tls(ClientHello),
    Http(Option<String>),
    Other(&'static str),
}

/// Serves one client from accept to close. Everything it holds (slots, registry entry, sockets)
/// is released when the connection's last copy thread has logged it, or when this returns or
/// unwinds without a relay.
pub(crate) fn handle(job: Job) {
    handle_from(job, Vec::new());
}

/// [`handle`] for a client whose first bytes were read already (by the old process of a live
/// upgrade, before it had chosen a route): routing reads them first.
pub(super) fn handle_from(job: Job, read: Vec<u8>) {
    if let Some((ending, timeouts)) = connect(job, read) {
        relay(ending, timeouts);
    }
}

/// Relays until both directions end; the copy thread that ends last logs and releases.
// The epilogue owns one box: see "One stack page per idle thread" in the relay's module doc.
#[inline(never)]
fn relay(ending: Box<Ending>, timeouts: Timeouts) {
    let conn = Arc::clone(&ending.job.entry.conn);
    let pool = ending.job.copy_pool.clone();
    relay::relay(
        &conn,
        timeouts,
        |task| pool.execute(task),
        move |relayed| ending.relayed(relayed),
    );
}

/// Everything before the relay: the connection's ending-to-be and its idle limits, or `None` if
/// the client was refused (and is logged and closed).
#[inline(never)]
fn connect(mut job: Job, read: Vec<u8>) -> Option<(Box<Ending>, Timeouts)> {
    let conn = &job.entry.conn;
    // The client socket already has TCP_NODELAY and keepalive, inherited from the listener.
    let mut summary = Summary {
        id: conn.id,
        client: canonical(conn.peer),
        listener: job.listener_addr,
        upstream: None,
        route: None,
        name: None,
        duration: Default::default(),
        result: Err(String::new()),
    };
    let mut session = Session {
        job: &mut job,
        summary: &mut summary,
        peeked: read,
        proxy_header: Vec::new(),
        route: None,
        upstream_name: None,
        slots: Vec::new(),
    };
    let connected = session.connect_upstream();
    let route = session.route.take();
    let upstream_name = session.upstream_name.take();
    let peeked = session.peeked.len() as u64;
    let slots = std::mem::take(&mut session.slots);
    let ending = Box::new(Ending {
        job,
        summary,
        route,
        upstream_name,
        peeked,
        _slots: slots,
    });
    match connected {
        Ok(timeouts) => Some((ending, timeouts)),
        Err(refused) => {
            ending.finish(Err(refused));
            None
        }
    }
}

/// The connection and what its log lines need once it is over, whichever thread ends it.
struct Ending {
    job: Job,
    summary: Summary,
    route: Option<Arc<RouteState>>,
    upstream_name: Option<HostPort>,
    /// Bytes read from the client before connecting, sent upstream first.
    peeked: u64,
    /// The client's places under the per-client limits, given back when the connection ends.
    _slots: Vec<ClientSlot>,
}

impl Ending {
    /// The relay is over: logs and releases the connection, or, handed over to a new process
    /// (which logs it at its close), only releases it.
    ///
    /// This runs on the copy thread that ended second; the connection ends on the closing thread
    /// instead, so the log line's deep frames stay off copy threads (see `closer`). Without one
    /// (it could not be started), and for a connection handed over, here.
    fn relayed(self: Box<Self>, relayed: Result<Outcome, HandedOver>) {
        let result = relayed.map_err(|HandedOver| Refused::HandedOver);
        let Some(closer) = self.job.closer.clone().filter(|_| result.is_ok()) else {
            return self.finish(result);
        };
        closer.close(Box::new(move || self.finish(result)));
    }

    /// Logs the connection (the info line and rinetd's logfile), then releases it; one a live
    /// upgrade moved is only released (the new process logs it).
    fn finish(self: Box<Self>, result: Result<Outcome, Refused>) {
        if let Err(Refused::HandedOver) = result {
            return;
        }
        let Ending {
            job,
            mut summary,
            route,
            upstream_name,
            peeked,
            _slots: slots,
        } = *self;
        let result = result.map(|mut outcome| {
            outcome.sent.bytes += peeked;
            outcome
        });
        let rinetd_result = rinetd_result(&result);
        count_end(&job, route.as_deref(), &result);
        summary.duration = job.entry.conn.started.elapsed();
        summary.result = result.map_err(|refused| refused.to_string());
        if log::log_enabled!(log::Level::Info) {
            // Rendered here, not inside the logger, so the two formatting passes do not nest (see
            // "One stack page per idle thread" in the relay's module doc).
            let line = summary.to_string();
            log::info!("{line}");
        }
        if let Some(sink) = &job.log_file {
            let outcome = summary.result.as_ref().ok();
            let listen = &job.listener.config.listen;
            let (connect_host, connect_port) = match (&upstream_name, &route) {
                (Some(name), _) => (name.host.to_string(), name.port),
                (None, Some(route)) => route
                    .config
                    .upstreams
                    .first()
                    .map_or((String::new(), 0), |u| (u.host.to_string(), u.port)),
                (None, None) => (String::new(), 0),
            };
            sink.write(&LogRecord {
                time: SystemTime::now(),
                client: summary.client.ip(),
                bind_host: &listen.host.to_string(),
                bind_port: listen.port,
                connect_host: &connect_host,
                connect_port,
                bytes_in: outcome.map_or(0, |o| o.sent.bytes),
                bytes_out: outcome.map_or(0, |o| o.received.bytes),
                result: rinetd_result,
            });
        }
        // The client's places first, then (with `job`) the connection slots: a client let in
        // because a slot came free must find its own places free too.
        drop(slots);
        drop(job);
    }
}

/// A connection another process handed over, ready to carry on here.
pub(super) struct Adopted {
    ending: Box<Ending>,
    timeouts: Timeouts,
    carried: [Option<Box<Carried>>; 2],
}

/// Where an adopted connection's log line and counters come from.
pub(super) struct Inherited {
    /// What its log line says, as the old process knew it.
    pub(super) summary: Summary,
    pub(super) route: Option<Arc<RouteState>>,
    pub(super) upstream_name: Option<HostPort>,
    pub(super) peeked: u64,
    pub(super) slots: Vec<ClientSlot>,
    pub(super) timeouts: Timeouts,
    pub(super) carried: [Option<Box<Carried>>; 2],
}

impl Adopted {
    /// Wraps `job` (its entry holds the adopted connection, its upstream attached) with what
    /// the old process passed on.
    pub(super) fn new(job: Job, inherited: Inherited) -> Adopted {
        let Inherited {
            summary,
            route,
            upstream_name,
            peeked,
            slots,
            timeouts,
            carried,
        } = inherited;
        if let Some(route) = &route {
            job.entry.conn.count_into(Arc::clone(&route.stats.traffic));
        }
        Adopted {
            ending: Box::new(Ending {
                job,
                summary,
                route,
                upstream_name,
                peeked,
                _slots: slots,
            }),
            timeouts,
            carried,
        }
    }

    /// Starts its copy threads (one per direction still open) on the copy pool; the one that
    /// ends last logs it, with the bytes of its whole life.
    pub(super) fn start(self) {
        let Adopted {
            ending,
            timeouts,
            carried,
        } = self;
        let conn = Arc::clone(&ending.job.entry.conn);
        let pool = ending.job.copy_pool.clone();
        relay::resume(
            &conn,
            timeouts,
            carried,
            |task| pool.execute(task),
            move |relayed| ending.relayed(relayed),
        );
    }
}

/// Counts the connection's end for its route (or, refused before one was chosen, for the
/// listener's `none`), and how each direction ended.
fn count_end(job: &Job, route: Option<&RouteState>, result: &Result<Outcome, Refused>) {
    let stats = route.map_or(&job.listener.unrouted, |route| &route.stats);
    stats.ended(metrics_result(result));
    if let Ok(outcome) = result {
        stats.direction_ended(Direction::ClientToUpstream, outcome.sent.end);
        stats.direction_ended(Direction::UpstreamToClient, outcome.received.end);
    }
}

/// The metrics' word for how a connection ended.
fn metrics_result(result: &Result<Outcome, Refused>) -> metrics::Ended {
    match result {
        Ok(_) => metrics::Ended::Forwarded,
        Err(Refused::Acl(_)) => metrics::Ended::Refused,
        Err(Refused::NoUpstream) => metrics::Ended::NoUpstream,
        Err(Refused::NoRoute) => metrics::Ended::NoRoute,
        Err(Refused::Peek { timeout: true, .. }) => metrics::Ended::PeekTimeout,
        Err(Refused::Peek { .. }) => metrics::Ended::Error,
        Err(Refused::BadProxyHeader(_) | Refused::UntrustedProxy) => metrics::Ended::ProxyHeader,
        Err(Refused::Stopped | Refused::HandedOver) => metrics::Ended::Stopped,
        Err(Refused::ClientLimit(_)) => metrics::Ended::ClientLimit,
        Err(Refused::PeekLimit(_)) => metrics::Ended::PeekLimit,
        Err(Refused::Evicted(Evicted::ForNewcomer)) => metrics::Ended::PeekEvicted,
        Err(Refused::Evicted(Evicted::Stopping)) => metrics::Ended::Stopped,
    }
}

/// rinetd's word for how a connection ended: which side closed first, or why it was refused.
fn rinetd_result(result: &Result<Outcome, Refused>) -> LogResult {
    match result {
        Ok(outcome) if outcome.client_ended_first() => LogResult::DoneRemoteClosed,
        Ok(_) => LogResult::DoneLocalClosed,
        Err(Refused::Acl(refusal)) => LogResult::refused(refusal),
        Err(Refused::NoUpstream) => LogResult::LocalConnectFailed,
        Err(
            Refused::BadProxyHeader(_)
            | Refused::UntrustedProxy
            | Refused::NoRoute
            | Refused::Peek { .. }
            | Refused::Stopped
            | Refused::HandedOver
            | Refused::ClientLimit(_)
            | Refused::PeekLimit(_)
            | Refused::Evicted(_),
        ) => LogResult::UnknownError,
    }
}

/// Why a client was closed without a relay; the text goes in the log line's `result=`.
#[derive(Debug)]
enum Refused {
    BadProxyHeader(String),
    /// The listener reads PROXY headers only from senders it trusts, and this is not one.
    UntrustedProxy,
    Acl(Refusal),
    NoRoute,
    /// Reading what routing needs failed: timed out, or for another reason.
    Peek {
        why: String,
        timeout: bool,
    },
    NoUpstream,
    Stopped,
    /// A live upgrade moved it, before it had chosen a route, to the new process, which logs it.
    HandedOver,
    /// The client has this many connections already.
    ClientLimit(usize),
    /// The listener's peek phase is full, or the client holds its share of it.
    PeekLimit(PeekRefusal),
    /// It lost its place in the peek phase: to a newcomer, or to a graceful stop.
    Evicted(Evicted),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::BadProxyHeader(why) => write!(f, "refused-no-proxy-header ({why})"),
            Refused::UntrustedProxy => {
                f.write_str("refused-untrusted-proxy (not a trusted PROXY header sender)")
            }
            Refused::Acl(refusal) => write!(f, "refused ({refusal})"),
            Refused::NoRoute => f.write_str("no-route"),
            Refused::Peek { why, .. } => write!(f, "{why}"),
            Refused::NoUpstream => f.write_str("no-upstream"),
            Refused::Stopped => f.write_str("stopped"),
            Refused::HandedOver => f.write_str("handed-over"),
            Refused::ClientLimit(n) => {
                write!(f, "refused-client-limit (the client has {n} connections)")
            }
            Refused::PeekLimit(PeekRefusal::Full(n)) => write!(
                f,
                "refused-peek-limit ({n} connections of this listener are choosing a route)"
            ),
            Refused::PeekLimit(PeekRefusal::Share(n)) => write!(
                f,
                "refused-peek-limit (the client has {n} connections choosing a route)"
            ),
            Refused::Evicted(Evicted::ForNewcomer) => f.write_str(
                "evicted-peek-full (the listener's peek phase was full; this client held the most)",
            ),
            Refused::Evicted(Evicted::Stopping) => {
                f.write_str("stopped (still choosing a route when the graceful stop began)")
            }
        }
    }
}

/// The state of one client while it is being served.
struct Session<'a> {
    job: &'a mut Job,
    summary: &'a mut Summary,
    /// Bytes read from the client before connecting; sent upstream first, unchanged.
    peeked: Vec<u8>,
    /// The PROXY header read, if any (not sent upstream).
    proxy_header: Vec<u8>,
    route: Option<Arc<RouteState>>,
    upstream_name: Option<HostPort>,
    /// The client's places under the per-client limits.
    slots: Vec<ClientSlot>,
}

impl Session<'_> {
    /// Everything before the relay: PROXY header, allow/deny, route, connect, first bytes sent.
    /// Returns the route's idle limits for the relay.
    fn connect_upstream(&mut self) -> Result<Timeouts, Refused> {
        let state = Arc::clone(&self.job.listener);
        if let Some(limit) = self.job.admission.refused {
            return Err(limit.refusal());
        }
        let addrs = self.client_addrs(&state)?;
        self.summary.client = addrs.client;
        let live = Arc::clone(&self.job.entry.live);
        let _ = live.client.set(addrs.client);
        if state.config.accept_proxy {
            // Only now is the client known: the one the PROXY header names.
            let ip = addrs.client.ip();
            let slots = take_client_slots(&self.job.per_client, &state, ip);
            self.slots.extend(slots.map_err(Limit::refusal)?);
            if let Some(slot) = &self.job.admission.peeking {
                slot.peeking()
                    .move_to(slot, ip)
                    .map_err(Refused::PeekLimit)?;
            }
        }
        access::check(&state.global_acl, &[], addrs.client.ip()).map_err(Refused::Acl)?;
        let route = self.choose_route(&state)?;
        // Routing has read what it needs: the listener's peek-phase place is free again, unless
        // it was taken meanwhile (its socket is shut down for reading then).
        if let Some(why) = self
            .job
            .admission
            .peeking
            .take()
            .and_then(PeekSlot::release)
        {
            return Err(Refused::Evicted(why));
        }
        if let Some(per_route) = &route.per_client {
            let slot = per_route.take(addrs.client.ip());
            self.slots
                .push(slot.ok_or(Refused::ClientLimit(per_route.limit()))?);
        }
        self.route = Some(Arc::clone(&route));
        let _ = live.route.set(Arc::clone(&route));
        self.job
            .entry
            .conn
            .count_into(Arc::clone(&route.stats.traffic));
        access::check(&[], &route.config.acl, addrs.client.ip()).map_err(Refused::Acl)?;
        let conn = &self.job.entry.conn;
        if conn.is_stopped() {
            return Err(Refused::Stopped);
        }
        let upstream = self.connect(&route)?;
        self.summary.upstream = Some((upstream.upstream.to_string(), upstream.addr));
        self.upstream_name = Some(upstream.upstream.clone());
        let _ = live
            .upstream
            .set((upstream.upstream.to_string(), upstream.addr));
        net::tune(&upstream.stream);
        let preface = self.preface(&route, addrs);
        let sent_first = (&upstream.stream).write_all(&preface);
        conn.attach_upstream(upstream.stream);
        match sent_first {
            // The client's own bytes count as relayed; the PROXY header is ours.
            Ok(()) => conn.count(Direction::ClientToUpstream, self.peeked.len() as u64),
            Err(err) => log::warn!(
                "conn #{}: cannot send the first bytes upstream: {err}",
                conn.id
            ),
        }
        let timeouts = Timeouts {
            idle: route.config.idle_timeout,
            fin: route.config.fin_timeout,
        };
        if let Some(name) = &self.summary.name {
            let _ = live.name.set(name.as_str().into());
        }
        Ok(timeouts)
    }

    /// Reads the client's first bytes into `peeked` until `decide` decides (see
    /// [`peek::read_until`]), until `timeout` after the connection was accepted (one deadline
    /// for the PROXY header and what follows, kept across a live upgrade). A live upgrade may stop
    /// it at a safe point: the bytes read so far are offered with the connection;
    /// `Err(PeekError::Parked)` if it was handed over, else the read goes on. A connection that
    /// lost its place in the peek phase ends with `Err(PeekError::Evicted)`.
    fn peek<T, E>(
        &mut self,
        timeout: std::time::Duration,
        decide: impl Fn(&[u8]) -> Result<Parsed<T>, E>,
    ) -> Result<T, PeekError<E>> {
        // Once the client has sent something it is not silent, and gives way to a newcomer only
        // when no silent connection can.
        let spoke = self.job.admission.peeking.as_ref().map(PeekSlot::spoke);
        let read = self.read_first(timeout, |buf: &[u8]| {
            if let Some(spoke) = &spoke {
                spoke.mark();
            }
            decide(buf)
        });
        let evicted = self
            .job
            .admission
            .peeking
            .as_ref()
            .and_then(PeekSlot::evicted);
        match (read, evicted) {
            (Ok(value), _) => Ok(value),
            (Err(PeekError::Parked), _) => Err(PeekError::Parked),
            (Err(_), Some(why)) => Err(PeekError::Evicted(why)),
            (Err(err), None) => Err(err),
        }
    }

    /// [`Session::peek`] without the eviction check.
    fn read_first<T, E>(
        &mut self,
        timeout: std::time::Duration,
        decide: impl Fn(&[u8]) -> Result<Parsed<T>, E>,
    ) -> Result<T, PeekError<E>> {
        let conn = Arc::clone(&self.job.entry.conn);
        // Registered, so a hand-off can wake this thread out of its wait.
        let _inside = conn.enter(Direction::ClientToUpstream);
        let deadline = crate::sys::clock::deadline_after(conn.started, timeout);
        let parking = || conn.park_requested();
        loop {
            match peek::read_until(&conn.client, &mut self.peeked, deadline, &parking, &decide) {
                Err(PeekError::Parked) => {
                    let mut read = self.proxy_header.clone();
                    read.extend_from_slice(&self.peeked);
                    if conn.park_setup(read) == Resumed::Released {
                        return Err(PeekError::Parked);
                    }
                }
                other => return other,
            }
        }
    }

    /// Reads the PROXY header of a trusted front if the listener expects one.
    fn client_addrs(&mut self, state: &ListenerState) -> Result<Addrs, Refused> {
        let conn = &self.job.entry.conn;
        let socket = Addrs {
            client: canonical(conn.peer),
            destination: None,
        };
        if !state.config.accept_proxy {
            return Ok(socket);
        }
        let header = match self.peek(state.config.peek_timeout, proxy::parse) {
            Err(PeekError::Parked) => return Err(Refused::HandedOver),
            Err(PeekError::Evicted(why)) => return Err(Refused::Evicted(why)),
            other => other.map_err(|err| Refused::BadProxyHeader(err.to_string()))?,
        };
        let (header, used) = header;
        // Kept: a live upgrade that moves the connection before it has chosen its route hands
        // over the bytes read so far, header included, and the new process reads them again.
        self.proxy_header = self.peeked.drain(..used).collect();
        Ok(match header {
            // A TCP6 header may name an IPv4 client as ::ffff:a.b.c.d: act on it as IPv4.
            ProxyHeader::Tcp { src, dst } => Addrs {
                client: canonical(src),
                destination: Some(canonical(dst)),
            },
            // LOCAL: the front's own health check; UNKNOWN: it does not know. Use the socket.
            ProxyHeader::Local | ProxyHeader::Unknown => socket,
        })
    }

    /// The route for this client: the listener's only one, or the one its first bytes select.
    fn choose_route(&mut self, state: &ListenerState) -> Result<Arc<RouteState>, Refused> {
        let router = &state.router;
        let found = if router.reads_first() {
            let first = self.peek(state.config.peek_timeout, |buf| {
                classify(buf, router.routes_tls(), router.routes_http())
            });
            match first {
                Ok(first) => self.route_by(first, state),
                Err(PeekError::Parked) => return Err(Refused::HandedOver),
                Err(PeekError::Evicted(why)) => return Err(Refused::Evicted(why)),
                // Some bytes came, but not a whole hello or head, before the deadline or the
                // client's end of stream: like anything that is not TLS or HTTP, it goes to the
                // default route (what was read is sent on unchanged), or is closed without one.
                Err(err @ (PeekError::Timeout | PeekError::Closed)) if !self.peeked.is_empty() => {
                    let what = match err {
                        PeekError::Timeout => "incomplete-at-peek-timeout",
                        _ => "incomplete-at-end-of-stream",
                    };
                    self.route_by(FirstBytes::Other(what), state)
                }
                Err(err) => {
                    return Err(Refused::Peek {
                        why: err.to_string(),
                        timeout: matches!(err, PeekError::Timeout),
                    })
                }
            }
        } else {
            router.fallback()
        };
        let Some((index, kind)) = found else {
            return Err(Refused::NoRoute);
        };
        let route = Arc::clone(&state.routes[index]);
        if state.routes.len() > 1 {
            self.summary.route = Some(route.config.label());
        }
        if let (Some(name), MatchKind::Exact | MatchKind::Wildcard(_)) =
            (&mut self.summary.name, &kind)
        {
            name.push_str(&format!(" match={kind}"));
        }
        Ok(route)
    }

    /// Looks the route up from what the client sent; a TLS client without a route gets an
    /// `unrecognized_name` alert, an HTTP client a `421 Misdirected Request`.
    fn route_by(&mut self, first: FirstBytes, state: &ListenerState) -> Option<(usize, MatchKind)> {
        let router = &state.router;
        match first {
            FirstBytes::Tls(hello) => {
                let name = hello.server_name.as_deref();
                let mut text = format!("sni={}", name.unwrap_or("(none)"));
                if hello.ech {
                    text.push_str(" ech=outer-name");
                }
                self.summary.name = Some(text);
                let found = router.for_tls(name, &hello.alpn);
                if found.is_none() {
                    let _ =
                        (&self.job.entry.conn.client).write_all(&tls::unrecognized_name_alert());
                }
                found
            }
            FirstBytes::Http(host) => {
                self.summary.name = Some(format!("host={}", host.as_deref().unwrap_or("(none)")));
                let found = router.for_http(host.as_deref());
                if found.is_none() {
                    let _ = (&self.job.entry.conn.client).write_all(http::misdirected_response());
                }
                found
            }
            FirstBytes::Other(what) => {
                self.summary.name = Some(format!("first-bytes={what}"));
                router.fallback()
            }
        }
    }

    fn connect(&self, route: &RouteState) -> Result<Connected, Refused> {
        let conn = &self.job.entry.conn;
        let mut failed = Vec::new();
        let connected = connect::connect(route, &mut failed);
        for attempt in &failed {
            log::warn!(
                "conn #{} from {}: connect to {attempt}",
                conn.id,
                self.summary.client
            );
        }
        connected.ok_or_else(|| {
            log::warn!(
                "conn #{} from {}: no upstream reachable ({} attempt(s): {}); closing the client",
                conn.id,
                self.summary.client,
                failed.len(),
                route.describe_upstreams()
            );
            Refused::NoUpstream
        })
    }

    /// The bytes the upstream gets before the relay: a PROXY header if the route sends one, then
    /// everything read from the client while deciding, unchanged.
    fn preface(&self, route: &RouteState, addrs: Addrs) -> Vec<u8> {
        let mut out = match route.config.proxy_protocol {
            Some(version) => {
                let destination = addrs.destination.unwrap_or_else(|| {
                    let conn = &self.job.entry.conn;
                    canonical(conn.client.local_addr().unwrap_or(self.job.listener_addr))
                });
                proxy::encode(version, addrs.client, destination)
            }
            None => Vec::new(),
        };
        out.extend_from_slice(&self.peeked);
        out
    }
}

/// Decides what the first bytes are, for the routing tables the listener has.
fn classify(
    buf: &[u8],
    by_sni: bool,
    by_host: bool,
) -> Result<Parsed<FirstBytes>, std::convert::Infallible> {
    let mut undecided = false;
    if by_sni {
        match tls::parse_client_hello(buf) {
            Ok(Parsed::Complete(hello)) => return Ok(Parsed::Complete(FirstBytes::Tls(hello))),
            Ok(Parsed::Partial) => undecided = true,
            Err(tls::TlsError::NotTls) => {}
            Err(_) => return Ok(Parsed::Complete(FirstBytes::Other("malformed-tls"))),
        }
    }
    if by_host {
        match http::parse_host(buf) {
            Ok(Parsed::Complete(host)) => return Ok(Parsed::Complete(FirstBytes::Http(host))),
            Ok(Parsed::Partial) => undecided = true,
            Err(http::HttpError::NotHttp) => {}
            Err(_) => return Ok(Parsed::Complete(FirstBytes::Other("malformed-http"))),
        }
    }
    Ok(if undecided {
        Parsed::Partial
    } else {
        Parsed::Complete(FirstBytes::Other("not-tls-or-http"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{End, Flow};
    use std::time::Duration;

    fn outcome(sent_ms: u64, received_ms: u64) -> Outcome {
        let flow = |ms| Flow {
            bytes: 1,
            end: End::Eof,
            ended: Duration::from_millis(ms),
        };
        Outcome {
            sent: flow(sent_ms),
            received: flow(received_ms),
        }
    }

    #[test]
    fn rinetd_results_say_who_closed_first_or_why_there_was_no_relay() {
        assert_eq!(
            rinetd_result(&Ok(outcome(1, 2))),
            LogResult::DoneRemoteClosed
        );
        assert_eq!(
            rinetd_result(&Ok(outcome(2, 1))),
            LogResult::DoneLocalClosed
        );
        assert_eq!(
            rinetd_result(&Err(Refused::NoUpstream)),
            LogResult::LocalConnectFailed
        );
        assert_eq!(
            rinetd_result(&Err(Refused::NoRoute)),
            LogResult::UnknownError
        );
        assert_eq!(
            rinetd_result(&Err(Refused::Peek {
                why: "peek-timeout".into(),
                timeout: true
            })),
            LogResult::UnknownError
        );
    }

    #[test]
    fn refusals_read_as_the_log_line_words() {
        assert_eq!(Refused::NoRoute.to_string(), "no-route");
        assert_eq!(Refused::NoUpstream.to_string(), "no-upstream");
        assert_eq!(Refused::Stopped.to_string(), "stopped");
        assert_eq!(
            Refused::BadProxyHeader("peek-timeout".into()).to_string(),
            "refused-no-proxy-header (peek-timeout)"
        );
    }

    fn decided(buf: &[u8], by_sni: bool, by_host: bool) -> Option<String> {
        match classify(buf, by_sni, by_host) {
            Ok(Parsed::Complete(FirstBytes::Tls(hello))) => {
                Some(format!("tls {:?}", hello.server_name))
            }
            Ok(Parsed::Complete(FirstBytes::Http(host))) => Some(format!("http {host:?}")),
            Ok(Parsed::Complete(FirstBytes::Other(what))) => Some(what.to_string()),
            Ok(Parsed::Partial) => None,
            Err(never) => match never {},
        }
    }

    #[test]
    fn first_bytes_are_classified_for_the_tables_the_listener_has() {
        let get = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(
            decided(get, true, true).as_deref(),
            Some("http Some(\"a.example\")")
        );
        // A listener that routes TLS only does not read HTTP heads.
        assert_eq!(
            decided(get, true, false).as_deref(),
            Some("not-tls-or-http")
        );
        assert_eq!(
            decided(b"GE", false, true),
            None,
            "more bytes could make it HTTP"
        );
        assert_eq!(
            decided(b"\x16\x03\x01", true, true),
            None,
            "a TLS record has begun"
        );
        assert_eq!(
            decided(b"SSH-2.0-x\r\n", true, true).as_deref(),
            Some("not-tls-or-http")
        );
        // A handshake record that holds a ServerHello, not a ClientHello.
        let server_hello = [0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
        assert_eq!(
            decided(&server_hello, true, false).as_deref(),
            Some("malformed-tls")
        );
    }
}
