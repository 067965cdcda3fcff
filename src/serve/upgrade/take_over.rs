//! The new process's side of a live upgrade: it says hello, takes the listening sockets the old
//! process offers, and once it is ready takes every connection (its sockets and record) and,
//! on commit, starts them: a relaying one's copy threads carry on where the old ones parked, a
//! held one is set up from the start, reading first what the old process had read.

use std::cell::RefCell;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use crate::config::{Config, Endpoint, HostPort, Listener, Transport};
use crate::error::Error;
use crate::relay::{Connection, Direction, End, Past, Spot, Timeouts};
use crate::sys::resolve::resolve;
use crate::sys::unix::Peer;
use crate::upgrade::wire::{ConnState, DirectionState, Message, Role, SetupState, SocketName};
use crate::upgrade::{upgrade_error, Channel};

use super::super::admit::{self, readmit};
use super::super::bound::Listening;
use super::super::conn;
use super::super::job::{Context, Job};
use super::super::listener::{Limits, ListenerState, Rosters};
use super::super::permits::{Permit, Permits};
use super::super::pool::Pool;
use super::super::record::{Record, Upstream};
use super::super::status::Shared;
use super::addresses::{taken, taken_peer};
use super::{health, unexpected, QUIESCE, START, STEP};
use crate::health::member::Claim;
use crate::upgrade::TakenOver;

/// What the old process offered: its listening sockets by address (and whether the service
/// manager handed them in), its UDP listen sockets by address, and its admin endpoint's.
pub(crate) struct Offer {
    pub(crate) next_id: u64,
    pub(crate) listeners: Vec<OfferedSocket>,
    pub(crate) udp: Vec<(Endpoint, UdpSocket)>,
    pub(crate) admin: Option<TcpListener>,
}

/// A listening socket offered.
pub(crate) struct OfferedSocket {
    pub(crate) addr: Endpoint,
    pub(crate) socket: Socket,
    pub(crate) handed_in: bool,
}

/// What the new process's server lends to take connections over.
pub(crate) struct Taker<'a> {
    pub(crate) listening: &'a [Listening],
    pub(crate) shared: &'a Shared,
    /// Where connections still choosing a route are set up.
    pub(crate) pool: &'a Pool,
    /// What every connection shares with the server.
    pub(crate) context: &'a Arc<Context>,
    /// Listeners a reload removed while some of their connections went on: each connection
    /// keeps its own listener's address (in its log line and its counters), with no route.
    pub(crate) gone: RefCell<Vec<Arc<ListenerState>>>,
}

/// A connection taken over, ready to start.
enum Arrived {
    /// Relaying: its copy threads carry on at their spots, under these idle limits.
    Relaying(Job, Timeouts, [Option<Box<Spot>>; 2]),
    /// Still choosing its route: served from the start, reading first what was read.
    Held(Job, Vec<u8>),
}

/// Says hello and receives the listening sockets.
pub(crate) fn receive_offer(channel: &Channel) -> Result<Offer, Error> {
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
        udp: Vec::new(),
        admin: None,
    };
    for (offered, fd) in offered.into_iter().zip(fds) {
        let addr = taken(&offered.addr).ok_or_else(|| {
            upgrade_error(
                "a listener came with a Unix socket name tcp-router does not write".into(),
            )
        })?;
        match offered.role {
            Role::Listener => offer.listeners.push(OfferedSocket {
                addr,
                socket: Socket::from(fd),
                handed_in: offered.handed_in,
            }),
            Role::Udp => offer.udp.push((addr, UdpSocket::from(fd))),
            Role::Admin => offer.admin = Some(TcpListener::from(fd)),
        }
    }
    Ok(offer)
}

/// The sockets offered for each listener of `config`, by bound address; a listener offered
/// nothing is bound as usual, an offered socket no listener wants is closed (logged). A UDP
/// listener gets nothing here (see [`assign_udp`]).
pub(crate) fn assign(config: &Config, offered: Vec<OfferedSocket>) -> Vec<Option<OfferedSocket>> {
    let offered = offered.into_iter().map(|o| (o.addr.clone(), o)).collect();
    let listeners = config.listeners.iter().map(|listener| {
        // The offered sockets are TCP listeners; a UDP listener is given its own.
        (listener.transport == Transport::Tcp).then_some(listener)
    });
    by_address(listeners, offered, "listened on")
}

/// The UDP sockets offered for each UDP listener of `config`, in order, by bound address, as
/// [`assign`] does for the TCP ones.
pub(crate) fn assign_udp(
    config: &Config,
    offered: Vec<(Endpoint, UdpSocket)>,
) -> Vec<Option<UdpSocket>> {
    let listeners = (config.listeners.iter())
        .filter(|listener| listener.transport == Transport::Udp)
        .map(Some);
    by_address(listeners, offered, "received UDP on")
}

/// For each listener (`None`: one to skip), the offered socket bound to its address; the
/// sockets no listener wants are closed, each logged as the old process having `done` on its
/// address.
fn by_address<'a, T>(
    listeners: impl Iterator<Item = Option<&'a Listener>>,
    offered: Vec<(Endpoint, T)>,
    done: &str,
) -> Vec<Option<T>> {
    let mut left: Vec<Option<(Endpoint, T)>> = offered.into_iter().map(Some).collect();
    let sockets = listeners
        .map(|listener| {
            let listener = listener?;
            let addrs = match listener.listen.socket_path() {
                Some(_) => Vec::new(),
                None => resolve(&listener.listen.host.to_string(), listener.listen.port)
                    .unwrap_or_default(),
            };
            // Port 0 was bound to some free port: the same address with any port is it.
            let wanted = |addr: &Endpoint| match addr {
                Endpoint::Ip(addr) => {
                    addrs.contains(addr)
                        || (listener.listen.port == 0 && addrs.iter().any(|a| a.ip() == addr.ip()))
                }
                Endpoint::Unix(path) => listener.listen.socket_path() == Some(path),
            };
            left.iter_mut()
                .find(|o| o.as_ref().is_some_and(|(addr, _)| wanted(addr)))
                .and_then(Option::take)
                .map(|(_, socket)| socket)
        })
        .collect();
    for (addr, _) in left.into_iter().flatten() {
        log::warn!(
            "upgrade: the old process {done} {addr}, which the configuration no longer has; \
             closing it"
        );
    }
    sockets
}

/// Says ready, takes every connection, and on commit starts them.
pub(crate) fn take_connections(
    server: &Taker<'_>,
    channel: Channel,
    listeners: usize,
) -> Result<TakenOver, Error> {
    channel.send(&Message::Ready, &[])?;
    let mut arrived = Vec::new();
    loop {
        // The old process may take a while to bring its connections to a safe point.
        let (message, fds) = channel.recv(QUIESCE + START)?;
        match message {
            Message::Conn(state) => arrived.push(take_relaying(server, &state, fds)?),
            Message::Setup(state) => arrived.push(take_held(server, &state, fds)?),
            Message::Health(state) => {
                health::restore(server.listening.iter().map(|l| &*l.state), &state)
            }
            Message::Commit { connections } if connections as usize == arrived.len() => break,
            Message::Commit { connections } => {
                return Err(upgrade_error(format!(
                    "the old process committed {connections} connections but sent {}",
                    arrived.len()
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
    let connections = arrived.len();
    for one in arrived {
        if let Err(err) = start(one, server.pool) {
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

/// Starts a connection's threads. A copy thread that cannot be started resets its connection
/// and says so (see `relay::relay`); a set-up worker that cannot is the error.
fn start(arrived: Arrived, pool: &Pool) -> std::io::Result<()> {
    match arrived {
        Arrived::Relaying(job, timeouts, spots) => {
            conn::relay(job, timeouts, spots);
            Ok(())
        }
        Arrived::Held(job, read) => pool.execute(Box::new(move || conn::serve(job, read))),
    }
}

impl Taker<'_> {
    /// The run-time state of the listener bound to `addr` (configured as `listen`), and its own
    /// connection cap; for an address no listener has any more, a state of its own with no
    /// routes.
    fn listener_for(
        &self,
        id: u64,
        addr: &Endpoint,
        listen: Option<&str>,
    ) -> (Arc<ListenerState>, Option<&Permits>) {
        if let Some(listening) = self.listening.iter().find(|l| &l.addr == addr) {
            return (Arc::clone(&listening.state), listening.limit.as_ref());
        }
        log::warn!(
            "upgrade: conn #{id}: its listener {addr} is not in the configuration any more (a \
             reload removed it); it goes on, counted under that address with no route"
        );
        let mut gone = self.gone.borrow_mut();
        let label = listen
            .and_then(|listen| listen.parse::<HostPort>().ok())
            .unwrap_or_else(|| HostPort::from(addr.clone()));
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
            &Rosters::new(&self.shared.checker, &[]),
        ));
        gone.push(Arc::clone(&state));
        (state, None)
    }

    /// Connection slots for a connection taken over: taken even beyond a cap the new
    /// configuration lowered (the connection is live).
    fn slots(&self, limit: Option<&Permits>) -> (Permit, Option<Permit>) {
        let take = |permits: &Permits| permits.try_take().unwrap_or_else(|| permits.permit());
        (take(&self.shared.permits), limit.map(take))
    }
}

/// Takes a connection that was still choosing its route (nothing starts yet): its client, the
/// bytes read so far, and fresh places under this process's limits.
fn take_held(server: &Taker<'_>, state: &SetupState, fds: Vec<OwnedFd>) -> Result<Arrived, Error> {
    let [client] = sockets(state.id, fds)?;
    let (client, peer, bound) = arrived(state.id, client, &state.peer, &state.listener)?;
    let (listener, limit) = server.listener_for(state.id, &bound, None);
    let past = Past {
        elapsed_ms: state.elapsed_ms,
        ..Past::default()
    };
    let conn = Connection::taken(state.id, peer, client, past);
    let record = Record::new(conn, listener, bound);
    let registration = server.shared.registry.register_taken(record);
    let admission = admit::admit(&server.context.per_client, &registration.record);
    let slots = server.slots(limit);
    let job = Job::new(server.context, registration, slots, admission);
    Ok(Arrived::Held(job, state.read.clone()))
}

/// Takes a relaying connection from its record and sockets (nothing starts yet).
fn take_relaying(
    server: &Taker<'_>,
    state: &ConnState,
    fds: Vec<OwnedFd>,
) -> Result<Arrived, Error> {
    let [client, upstream] = sockets(state.id, fds)?;
    let (client, peer, bound) = arrived(state.id, client, &state.peer, &state.listener)?;
    let (listener, limit) = server.listener_for(state.id, &bound, Some(&state.listen));
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
    let conn = Connection::taken(state.id, peer, client, past);
    conn.attach_upstream(Socket::from(upstream));
    let spots = spots(&conn, state);
    let record = Record::new(conn, listener, bound);
    if let SocketName::Ip(client) = state.client {
        record.set_client(client);
    }
    let client_key = record.client_key();
    let resolved = taken(&state.upstream_addr).ok_or_else(|| {
        upgrade_error(format!(
            "conn #{} came with an upstream socket name tcp-router does not write",
            state.id
        ))
    })?;
    let upstream = Upstream {
        configured: (state.upstream_name.parse())
            .unwrap_or_else(|_| HostPort::from(resolved.clone())),
        resolved,
    };
    let member = (route.as_ref()).and_then(|route| {
        route
            .roster
            .member(&upstream.configured, &upstream.resolved)
    });
    record.set_upstream(upstream, member.as_ref().map(Claim::new));
    if let Some(name) = &state.name {
        record.set_name(name.clone());
    }
    if let Some(route) = &route {
        record.set_route(Arc::clone(route));
    }
    let registration = server.shared.registry.register_taken(record);
    let admission = readmit(&server.context.per_client, route.as_deref(), client_key);
    let job = Job::new(server.context, registration, server.slots(limit), admission);
    let timeouts = Timeouts {
        idle: state.idle_timeout_ms.map(Duration::from_millis),
        fin: state.fin_timeout_ms.map(Duration::from_millis),
    };
    Ok(Arrived::Relaying(job, timeouts, spots))
}

/// The `N` sockets a connection's message must carry, or why not.
/// A client socket as it arrived, with the client and the listener the wire names for it.
fn arrived(
    id: u64,
    client: OwnedFd,
    peer: &SocketName,
    listener: &SocketName,
) -> Result<(Socket, Peer, Endpoint), Error> {
    let client = Socket::from(client);
    let odd = |what: &str| upgrade_error(format!("conn #{id} came with {what}"));
    let peer = taken_peer(peer, &client)
        .map_err(|err| odd(&format!("a client whose credentials cannot be read: {err}")))?;
    let bound =
        taken(listener).ok_or_else(|| odd("a listener socket name tcp-router does not write"))?;
    Ok((client, peer, bound))
}

fn sockets<const N: usize>(id: u64, fds: Vec<OwnedFd>) -> Result<[OwnedFd; N], Error> {
    fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        upgrade_error(format!(
            "conn #{id} came with {} sockets, not {N}",
            fds.len()
        ))
    })
}

/// Where each direction of a connection taken over starts; an ended one is recorded as ended.
fn spots(conn: &Connection, state: &ConnState) -> [Option<Box<Spot>>; 2] {
    Direction::BOTH.map(|direction| {
        let spot = match &state.directions[direction as usize] {
            DirectionState::Open { pending } => Spot::Holding(pending.clone()),
            DirectionState::Disposition { end, ms } => {
                let end = End::from_code(*end).unwrap_or(End::Eof);
                conn.set_end(direction, end);
                Spot::Disposition(end, *ms)
            }
        };
        Some(Box::new(spot))
    })
}
