//! The live upgrade, both sides: the old process offers its listeners, brings every connection
//! to a safe point and sends each one's sockets and state; the new one takes them and carries on.
//!
//! The order is what makes it safe:
//! 1. Hello (new → old, with its version) and offer (old → new: the listening sockets). From the
//!    moment it takes the request the old process accepts nothing; clients wait in the kernel's
//!    accept queues, which both processes now share.
//! 2. Ready (new → old): the new process has validated its configuration and adopted or bound
//!    every listener, but accepts nothing yet.
//! 3. The old process stops the connections still choosing a route where they are (waiting for
//!    a ClientHello, a Host header or a PROXY header: `relay::Connection::park_setup`, with the
//!    bytes read so far) and waits for those connecting upstream to begin relaying. Then it asks
//!    every connection's copy threads to park (`relay::Connection::park`): a thread blocked in
//!    `recv` or in a write is woken with a signal and stops where it is, holding the bytes it
//!    had read and not written.
//! 4. One message per connection (its sockets attached), then commit; the new process answers
//!    started before it touches any of them, and only then does the old one let its threads go
//!    (they return without touching the sockets) and close its copies. A connection that was
//!    choosing its route is served from the start by the new process, reading first what the
//!    old one had read.
//!
//! Until started, every failure leaves the old process as it was: its parked threads carry on
//! (writing what they held first), its listeners are polled again.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, HostPort};
use crate::error::Error;
use crate::handoff::wire::{
    ConnState, DirectionState, Message, Offered, Role, SetupState, VERSION,
};
use crate::handoff::{upgrade_error, Channel};
use crate::log::line::Summary;
use crate::relay::{Carried, Connection, Direction, End, Flow, Halted, Past, Settled, Timeouts};

use std::cell::RefCell;

use super::bound::Listening;
use super::clients::PerClient;
use super::closer::Closer;
use super::conn::{self, Adopted, Inherited, Job};
use super::listener::{Limits, ListenerState};
use super::permits::Permits;
use super::pool::Pool;
use super::registry::{Live, Registry};
use super::status::Shared;
use crate::log::rinetd::LogSink;

/// What the new process needs of its server to adopt connections.
pub(super) struct Adopter<'a> {
    pub(super) listening: &'a [Listening],
    pub(super) shared: &'a Shared,
    /// Where connections still choosing a route are set up.
    pub(super) pool: &'a Pool,
    /// Where adopted connections' copy threads come from.
    pub(super) copy_pool: &'a Pool,
    /// Where they are logged and released.
    pub(super) closer: &'a Option<Closer>,
    pub(super) log_file: &'a Option<Arc<LogSink>>,
    pub(super) per_client: &'a Arc<PerClient>,
    /// Listeners a reload removed while some of their connections went on: each connection
    /// keeps its own listener's address (in its log line and its counters), with no route.
    pub(super) gone: RefCell<Vec<Arc<ListenerState>>>,
}

impl Adopter<'_> {
    /// The run-time state of the listener bound to `addr` (configured as `listen`), and its own
    /// connection cap; for an address no listener has any more, a state of its own with no
    /// routes.
    fn listener_for(
        &self,
        id: u64,
        addr: SocketAddr,
        listen: Option<&str>,
    ) -> (Arc<ListenerState>, Option<&Permits>) {
        if let Some(listening) = self.listening.iter().find(|l| l.addr == addr) {
            return (Arc::clone(&listening.state), listening.limit.as_ref());
        }
        log::warn!(
            "upgrade: conn #{id}: its listener {addr} is not in the configuration any more (a \
             reload removed it); it goes on, counted under that address with no route"
        );
        let mut gone = self.gone.borrow_mut();
        let label = listen
            .and_then(|listen| listen.parse::<HostPort>().ok())
            .unwrap_or_else(|| HostPort::from(addr));
        if let Some(state) = gone.iter().find(|state| state.config.listen == label) {
            return (Arc::clone(state), None);
        }
        let limits = Limits {
            max_connections: usize::MAX,
            max_peeking: Some(0),
            max_per_client: None,
            v6_prefix: 64,
            peek_sharers: 1,
        };
        let config = crate::config::Listener::new(label);
        let state = Arc::new(ListenerState::new(
            config,
            Arc::default(),
            &self.shared.metrics,
            &limits,
        ));
        gone.push(Arc::clone(&state));
        (state, None)
    }
}

/// How long each side waits for the other's next message while nothing slow is expected.
const STEP: Duration = Duration::from_secs(10);

/// How long the new process may take to start and be ready (configuration, binding).
const START: Duration = Duration::from_secs(30);

/// How long connections may take to reach a safe point (those connecting upstream finish that
/// first; the connect timeouts bound it).
const QUIESCE: Duration = Duration::from_secs(15);

/// What an old process handed over.
#[derive(Debug)]
pub struct HandedOff {
    /// The new process's id.
    pub pid: u32,
    /// Listening sockets handed over (the admin endpoint's included).
    pub listeners: usize,
    /// Established connections handed over.
    pub connections: usize,
    /// Held until dropped: the new process waits for it to close before it tells the service
    /// manager it is the main process.
    #[allow(dead_code, reason = "held for its Drop, which closes the channel")]
    channel: Channel,
}

/// What a new process took over.
#[derive(Debug)]
pub struct TakenOver {
    /// Listening sockets taken over (the admin endpoint's included).
    pub listeners: usize,
    /// Established connections taken over.
    pub connections: usize,
    channel: Channel,
}

impl TakenOver {
    /// Waits (up to `timeout`) until the old process has let go of everything and closed the
    /// channel; after that it has told the service manager who the main process is.
    pub fn wait_released(self, timeout: Duration) {
        let (done, wait) = crossbeam_channel::bounded(1);
        let channel = self.channel;
        let waiter = std::thread::Builder::new()
            .name("tcp-router-upgrade".into())
            .spawn(move || {
                channel.wait_closed();
                let _ = done.send(());
            });
        if waiter.is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

// ----- the old process -------------------------------------------------------------------------

/// The old side: offers `listeners` (and the admin endpoint's socket), then every connection of
/// `shared`. Returns once the new process has started; on `Err` everything here carries on.
pub(super) fn give(
    channel: Channel,
    listeners: &[(SocketAddr, BorrowedFd<'_>, bool)],
    admin: Option<(SocketAddr, BorrowedFd<'_>)>,
    shared: &Shared,
) -> Result<HandedOff, Error> {
    let pid = channel.peer_pid().unwrap_or(0);
    let (hello, _) = channel.recv(START)?;
    match hello {
        Message::Hello { version, .. } if version == VERSION => {}
        Message::Hello { version, .. } => {
            let reason = format!(
                "the new process speaks hand-off version {version}, this one version {VERSION}"
            );
            let _ = channel.send(
                &Message::Refuse {
                    reason: reason.clone(),
                },
                &[],
            );
            return Err(upgrade_error(reason));
        }
        other => return Err(unexpected("hello", &other)),
    }
    let mut offered: Vec<Offered> = listeners
        .iter()
        .map(|(addr, _, handed_in)| Offered {
            role: Role::Listener,
            addr: *addr,
            handed_in: *handed_in,
        })
        .collect();
    let mut fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd, _)| *fd).collect();
    if let Some((addr, fd)) = admin {
        offered.push(Offered {
            role: Role::Admin,
            addr,
            handed_in: false,
        });
        fds.push(fd);
    }
    let offer = Message::Offer {
        version: VERSION,
        next_id: shared.registry.last_id(),
        listeners: offered,
    };
    channel.send(&offer, &fds)?;
    match channel.recv(START)?.0 {
        Message::Ready => {}
        Message::Refuse { reason } => {
            return Err(upgrade_error(format!("the new process refused: {reason}")))
        }
        other => return Err(unexpected("ready", &other)),
    }
    let parked = match quiesce(&shared.registry, || shared.is_stopping()) {
        Ok(parked) => parked,
        Err(why) => {
            let _ = channel.send(
                &Message::Refuse {
                    reason: why.clone(),
                },
                &[],
            );
            resume_all(&shared.registry);
            return Err(upgrade_error(why));
        }
    };
    match send_connections(&channel, &parked) {
        Ok(()) => {}
        Err(err) => {
            resume_all(&shared.registry);
            return Err(err);
        }
    }
    for (live, _) in &parked {
        live.conn.end_park(true);
    }
    Ok(HandedOff {
        pid,
        listeners: fds.len(),
        connections: parked.len(),
        channel,
    })
}

/// A connection at its safe point, and where it stopped.
type ParkedConn = (Arc<Live>, Halted);

/// Sends every parked connection, commits, and waits for the new process to start.
fn send_connections(channel: &Channel, parked: &[ParkedConn]) -> Result<(), Error> {
    for (live, halted) in parked {
        let (settled, timeouts) = match halted {
            Halted::Relaying(settled, timeouts) => (settled, timeouts),
            Halted::SettingUp(read) => {
                let setup = SetupState {
                    id: live.conn.id,
                    peer: live.conn.peer,
                    listener: live.listener_addr,
                    elapsed_ms: live.conn.past().elapsed_ms,
                    read: read.clone(),
                };
                channel.send(
                    &Message::Setup(Box::new(setup)),
                    &[live.conn.client.as_fd()],
                )?;
                continue;
            }
        };
        let state = conn_state(live, &(settled.clone(), *timeouts))?;
        let Some(upstream) = live.conn.upstream() else {
            return Err(upgrade_error(format!(
                "conn #{} has no upstream socket",
                live.conn.id
            )));
        };
        channel.send(
            &Message::Conn(Box::new(state)),
            &[live.conn.client.as_fd(), upstream.as_fd()],
        )?;
    }
    channel.send(
        &Message::Commit {
            connections: parked.len() as u32,
        },
        &[],
    )?;
    match channel.recv(STEP)?.0 {
        Message::Started => Ok(()),
        Message::Refuse { reason } => Err(upgrade_error(format!(
            "the new process refused the connections: {reason}"
        ))),
        other => Err(unexpected("started", &other)),
    }
}

/// Brings every connection to a safe point, in two steps so established connections stop only
/// for the last few milliseconds: first, with nothing relaying parked, stop the connections
/// still choosing a route where they are (they move with what they have read), and wait for
/// those connecting upstream to begin relaying (or end); then ask all of them to park and wait
/// until each has. Returns the parked ones with where each stopped.
fn quiesce(registry: &Registry, stopping: impl Fn() -> bool) -> Result<Vec<ParkedConn>, String> {
    let started = Instant::now();
    let setting_up = |live: &Live| {
        live.upstream.get().is_none() && !matches!(live.conn.settled(), Some(Halted::SettingUp(_)))
    };
    for live in registry.snapshot() {
        if setting_up(&live) {
            live.conn.request_park();
        }
    }
    wait_rounds(&stopping, started, "begun relaying", || {
        let mut waiting = 0;
        for live in registry.snapshot().iter().filter(|live| setting_up(live)) {
            live.conn.poke();
            waiting += 1;
        }
        waiting
    })?;
    let setting_up = started.elapsed();
    for live in registry.snapshot() {
        live.conn.request_park();
    }
    let mut parked = Vec::new();
    wait_rounds(&stopping, Instant::now(), "reached a safe point", || {
        parked.clear();
        let mut waiting = 0;
        for live in registry.snapshot() {
            match live.conn.settled() {
                Some(settled) => parked.push((live, settled)),
                None => {
                    // A thread that missed its signal gets another at the next round.
                    live.conn.poke();
                    waiting += 1;
                }
            }
        }
        waiting
    })?;
    log::debug!(
        "upgrade: {} connection(s) at a safe point after {:?} ({:?} waiting for connections \
         still setting up)",
        parked.len(),
        started.elapsed(),
        setting_up
    );
    Ok(parked)
}

/// Calls `waiting` in rounds, shortly apart, until it says 0; fails on a stop request, or after
/// [`QUIESCE`] from `since` (naming how many connections had not `what`).
fn wait_rounds(
    stopping: &impl Fn() -> bool,
    since: Instant,
    what: &str,
    mut waiting: impl FnMut() -> usize,
) -> Result<(), String> {
    let mut pause = Duration::from_micros(200);
    loop {
        let left = waiting();
        if left == 0 {
            return Ok(());
        }
        if stopping() {
            return Err("a stop was requested meanwhile".into());
        }
        if since.elapsed() > QUIESCE {
            return Err(format!(
                "{left} connection(s) had not {what} within {QUIESCE:?}"
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// The hand-off did not happen: every parked thread carries on.
fn resume_all(registry: &Registry) {
    for live in registry.snapshot() {
        live.conn.end_park(false);
    }
}

/// A parked connection's state for the new process.
fn conn_state(live: &Live, parked: &([Settled; 2], Timeouts)) -> Result<ConnState, Error> {
    let conn = &live.conn;
    let (settled, timeouts) = parked;
    let missing = || upgrade_error(format!("conn #{} is not relaying yet", conn.id));
    let (upstream_name, upstream_addr) = live.upstream.get().ok_or_else(missing)?.clone();
    let past = conn.past();
    let directions = settled.clone().map(|settled| match settled {
        Settled::Parked(pending) => DirectionState::Open { pending },
        Settled::Ended(end, ms) => DirectionState::Ended {
            end: end.code(),
            ms,
        },
    });
    Ok(ConnState {
        id: conn.id,
        peer: conn.peer,
        client: live.client.get().copied().unwrap_or(conn.peer),
        listener: live.listener_addr,
        listen: live.listener.config.listen.to_string(),
        route: live.route.get().map(|route| route.config.label()),
        upstream_name,
        upstream_addr,
        name: live.name.get().map(|name| name.to_string()),
        elapsed_ms: past.elapsed_ms,
        activity_ms: past.activity_ms,
        half_closed_ms: past.half_closed_ms,
        traffic: past.traffic,
        idle_timeout_ms: timeouts.idle.map(|d| d.as_millis() as u64),
        fin_timeout_ms: timeouts.fin.map(|d| d.as_millis() as u64),
        directions,
    })
}

/// A refusal to send the other side.
pub(super) fn refusal(reason: String) -> Message {
    Message::Refuse { reason }
}

fn unexpected(wanted: &str, got: &Message) -> Error {
    upgrade_error(format!(
        "expected the {wanted} message, got the {}",
        got.name()
    ))
}

// ----- the new process -------------------------------------------------------------------------

/// What the old process offered: its listening sockets by address (and whether the service
/// manager handed them in), and its admin endpoint's.
pub(super) struct Offer {
    pub(super) next_id: u64,
    pub(super) listeners: Vec<OfferedSocket>,
    pub(super) admin: Option<TcpListener>,
}

/// A listening socket offered.
pub(super) struct OfferedSocket {
    pub(super) addr: SocketAddr,
    pub(super) socket: TcpListener,
    pub(super) handed_in: bool,
}

/// The new side, first step: says hello and receives the listening sockets.
pub(super) fn receive_offer(channel: &Channel) -> Result<Offer, Error> {
    let ours = channel.version();
    channel.send(
        &Message::Hello {
            version: ours,
            pid: std::process::id(),
        },
        &[],
    )?;
    let (message, fds) = channel.recv(STEP)?;
    let (next_id, offered) = match message {
        Message::Offer {
            version,
            next_id,
            listeners,
        } if version == ours => (next_id, listeners),
        Message::Offer { version, .. } => {
            return Err(upgrade_error(format!(
                "the old process speaks hand-off version {version}, this one version {ours}"
            )))
        }
        Message::Refuse { reason } => {
            return Err(upgrade_error(format!("the old process refused: {reason}")))
        }
        other => return Err(unexpected("offer", &other)),
    };
    if fds.len() != offered.len() {
        return Err(upgrade_error(format!(
            "the offer names {} sockets but carries {}",
            offered.len(),
            fds.len()
        )));
    }
    let mut offer = Offer {
        next_id,
        listeners: Vec::new(),
        admin: None,
    };
    for (offered, fd) in offered.into_iter().zip(fds) {
        let socket = TcpListener::from(fd);
        match offered.role {
            Role::Listener => offer.listeners.push(OfferedSocket {
                addr: offered.addr,
                socket,
                handed_in: offered.handed_in,
            }),
            Role::Admin => offer.admin = Some(socket),
        }
    }
    Ok(offer)
}

/// The sockets offered for each listener of `config`, by bound address; a listener offered
/// nothing is bound as usual, an offered socket no listener wants is closed (logged).
pub(super) fn assign(config: &Config, offered: Vec<OfferedSocket>) -> Vec<Option<OfferedSocket>> {
    let mut left: Vec<Option<OfferedSocket>> = offered.into_iter().map(Some).collect();
    let sockets = config
        .listeners
        .iter()
        .map(|listener| {
            let addrs = crate::sys::resolve::resolve(
                &listener.listen.host.to_string(),
                listener.listen.port,
            )
            .unwrap_or_default();
            // Port 0 was bound to some free port: the same address with any port is it.
            let wanted = |addr: &SocketAddr| {
                addrs.contains(addr)
                    || (listener.listen.port == 0 && addrs.iter().any(|a| a.ip() == addr.ip()))
            };
            left.iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| wanted(&o.addr)))
                .and_then(Option::take)
        })
        .collect();
    for unwanted in left.into_iter().flatten() {
        log::warn!(
            "upgrade: the old process listened on {}, which the configuration no longer has; closing it",
            unwanted.addr
        );
    }
    sockets
}

/// The new side, second step: says ready, takes every connection, and on commit starts them.
pub(super) fn take_connections(
    server: &Adopter<'_>,
    channel: Channel,
    listeners: usize,
) -> Result<TakenOver, Error> {
    channel.send(&Message::Ready, &[])?;
    let mut adopted = Vec::new();
    loop {
        // The old process may take a while to bring its connections to a safe point.
        let (message, fds) = channel.recv(QUIESCE + START)?;
        match message {
            Message::Conn(state) => adopted.push(Taken::Relaying(adopt(server, &state, fds)?)),
            Message::Setup(state) => adopted.push(adopt_setup(server, &state, fds)?),
            Message::Commit { connections } if connections as usize == adopted.len() => break,
            Message::Commit { connections } => {
                return Err(upgrade_error(format!(
                    "the old process committed {connections} connections but sent {}",
                    adopted.len()
                )))
            }
            Message::Refuse { reason } => {
                return Err(upgrade_error(format!("the old process gave up: {reason}")))
            }
            other => return Err(unexpected("connection", &other)),
        }
    }
    // Said before anything is touched: from here on the old process lets go.
    channel.send(&Message::Started, &[])?;
    let connections = adopted.len();
    for one in adopted {
        if let Err(err) = one.start(server.pool) {
            log::warn!(
                "upgrade: cannot start a worker for a connection taken over: {err}; closing it"
            );
        }
    }
    Ok(TakenOver {
        listeners,
        connections,
        channel,
    })
}

/// A connection taken over, ready to start.
enum Taken {
    /// Relaying: its copy threads carry on.
    Relaying(Adopted),
    /// Still choosing its route: served from the start, reading first what was read.
    SettingUp(Job, Vec<u8>),
}

impl Taken {
    /// Starts its threads. A copy thread that cannot be started resets its connection and says
    /// so (see `relay::resume`); a set-up worker that cannot is the error.
    fn start(self, pool: &Pool) -> std::io::Result<()> {
        match self {
            Taken::Relaying(adopted) => {
                adopted.start();
                Ok(())
            }
            Taken::SettingUp(job, read) => {
                pool.execute(Box::new(move || conn::handle_from(job, read)))
            }
        }
    }
}

/// Builds a connection that was still choosing its route (nothing starts yet): its client, the
/// bytes read so far, and fresh places under this process's limits.
fn adopt_setup(
    server: &Adopter<'_>,
    state: &SetupState,
    fds: Vec<OwnedFd>,
) -> Result<Taken, Error> {
    let [client]: [OwnedFd; 1] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        upgrade_error(format!(
            "conn #{} came with {} sockets, not 1",
            state.id,
            fds.len()
        ))
    })?;
    let (listener, limit) = server.listener_for(state.id, state.listener, None);
    let past = Past {
        elapsed_ms: state.elapsed_ms,
        ..Past::default()
    };
    let conn = Connection::adopted(state.id, state.peer, TcpStream::from(client), past);
    let entry = server
        .shared
        .registry
        .adopt(conn, Arc::clone(&listener), state.listener);
    let permits = &server.shared.permits;
    let job = Job {
        admission: conn::admit(server.per_client, &listener, &entry),
        entry,
        permit: permits.try_take().unwrap_or_else(|| permits.permit()),
        listener_permit: limit.map(|limit| limit.try_take().unwrap_or_else(|| limit.permit())),
        listener_addr: state.listener,
        listener,
        closer: server.closer.clone(),
        copy_pool: server.copy_pool.clone(),
        log_file: server.log_file.clone(),
        per_client: Arc::clone(server.per_client),
    };
    Ok(Taken::SettingUp(job, state.read.clone()))
}

/// Builds one connection from its state and sockets (nothing starts yet).
fn adopt(server: &Adopter<'_>, state: &ConnState, fds: Vec<OwnedFd>) -> Result<Adopted, Error> {
    let [client, upstream]: [OwnedFd; 2] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        upgrade_error(format!(
            "conn #{} came with {} sockets, not 2",
            state.id,
            fds.len()
        ))
    })?;
    let (client, upstream) = (TcpStream::from(client), TcpStream::from(upstream));
    let (listener, limit) = server.listener_for(state.id, state.listener, Some(&state.listen));
    let route = state.route.as_ref().and_then(|label| {
        listener
            .routes
            .iter()
            .find(|route| route.config.label() == *label)
            .cloned()
    });
    if route.is_none() && !listener.routes.is_empty() {
        log::warn!(
            "upgrade: conn #{}: its route {:?} is not in the configuration any more; counted as unrouted",
            state.id,
            state.route.as_deref().unwrap_or("")
        );
    }
    let past = Past {
        elapsed_ms: state.elapsed_ms,
        activity_ms: state.activity_ms,
        half_closed_ms: state.half_closed_ms,
        traffic: state.traffic,
    };
    let conn = Connection::adopted(state.id, state.peer, client, past);
    conn.attach_upstream(upstream);
    let carried = carried(&conn, state);
    let entry = server
        .shared
        .registry
        .adopt(conn, Arc::clone(&listener), state.listener);
    let live = &entry.live;
    let _ = live.client.set(state.client);
    let _ = live
        .upstream
        .set((state.upstream_name.clone(), state.upstream_addr));
    if let Some(name) = &state.name {
        let _ = live.name.set(name.as_str().into());
    }
    if let Some(route) = &route {
        let _ = live.route.set(Arc::clone(route));
    }
    let timeouts = Timeouts {
        idle: state.idle_timeout_ms.map(Duration::from_millis),
        fin: state.fin_timeout_ms.map(Duration::from_millis),
    };
    let mut slots = Vec::new();
    slots.extend(server.per_client.take(state.client.ip()));
    if let Some(per_route) = route.as_ref().and_then(|r| r.per_client.as_ref()) {
        slots.extend(per_route.take(state.client.ip()));
    }
    // Slots beyond a cap the new configuration lowered are still taken: the connection is live.
    let permits = &server.shared.permits;
    let permit = permits.try_take().unwrap_or_else(|| permits.permit());
    let listener_permit = limit.map(|limit| limit.try_take().unwrap_or_else(|| limit.permit()));
    let summary = Summary {
        id: state.id,
        client: state.client,
        listener: state.listener,
        upstream: Some((state.upstream_name.clone(), state.upstream_addr)),
        route: route
            .as_ref()
            .filter(|_| listener.routes.len() > 1)
            .map(|r| r.config.label()),
        name: state.name.clone(),
        duration: Duration::ZERO,
        result: Err(String::new()),
    };
    let job = Job {
        admission: Default::default(),
        entry,
        permit,
        listener_permit,
        listener_addr: state.listener,
        listener,
        closer: server.closer.clone(),
        copy_pool: server.copy_pool.clone(),
        log_file: server.log_file.clone(),
        per_client: Arc::clone(server.per_client),
    };
    Ok(Adopted::new(
        job,
        Inherited {
            summary,
            route,
            upstream_name: state.upstream_name.parse::<HostPort>().ok(),
            // Counted in the relay's bytes from here on (see `carried`).
            peeked: 0,
            slots,
            timeouts,
            carried,
        },
    ))
}

/// Where each direction of a connection taken over starts; an ended one is recorded as ended.
fn carried(conn: &Connection, state: &ConnState) -> [Option<Box<Carried>>; 2] {
    Direction::BOTH.map(|direction| {
        let index = direction as usize;
        // Whole-life counts, the bytes read before the relay (a peeked ClientHello) included:
        // the log line's `sent=` is the same either way.
        let bytes = state.traffic[index];
        match &state.directions[index] {
            DirectionState::Open { pending } => Some(Box::new(Carried::Open {
                bytes,
                pending: pending.clone(),
            })),
            DirectionState::Ended { end, ms } => {
                let end = End::from_code(*end).unwrap_or(End::Eof);
                conn.set_end(direction, end);
                Some(Box::new(Carried::Ended(Flow {
                    bytes,
                    end,
                    ended: Duration::from_millis(*ms),
                })))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::metrics::Metrics;
    use crate::serve::permits::Permits;

    fn shared() -> Shared {
        Shared::new(Metrics::default(), Permits::new(4))
    }

    #[test]
    fn another_version_is_refused_on_both_sides() {
        let (old, new) = Channel::pair();
        let peer = std::thread::spawn(move || {
            new.send(
                &Message::Hello {
                    version: 999,
                    pid: 1,
                },
                &[],
            )
            .unwrap();
            new.recv(STEP).unwrap().0
        });
        let err = give(old, &[], None, &shared()).unwrap_err();
        assert!(err.to_string().contains("version 999"), "{err}");
        match peer.join().unwrap() {
            Message::Refuse { reason } => assert!(reason.contains("version 999"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_process_that_refuses_or_vanishes_changes_nothing() {
        for refuse in [true, false] {
            let (old, new) = Channel::pair();
            let peer = std::thread::spawn(move || {
                let offer = receive_offer(&new).unwrap();
                assert!(offer.listeners.is_empty());
                if refuse {
                    new.send(&refusal("bad config".into()), &[]).unwrap();
                }
            });
            let err = give(old, &[], None, &shared()).unwrap_err().to_string();
            peer.join().unwrap();
            if refuse {
                assert!(err.contains("refused: bad config"), "{err}");
            } else {
                assert!(err.contains("closed the channel"), "{err}");
            }
        }
    }
}
