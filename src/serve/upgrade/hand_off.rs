//! The old process's side of a live upgrade: it offers its listeners, brings every connection
//! to a safe point and sends each one's sockets and record; once the new process has started,
//! it lets them go. Until then, every failure leaves it as it was: its parked threads carry on
//! (writing what they held first), its listeners are polled again.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Endpoint;
use crate::error::Error;
use crate::relay::{Parked, Spot};
use crate::upgrade::wire::{
    ConnState, DirectionState, Message, Offered, Role, SetupState, SocketName, OLDEST_VERSION,
    UDP_SINCE, VERSION,
};
use crate::upgrade::{upgrade_error, Channel};

use super::super::record::Record;
use super::super::registry::Registry;
use super::super::status::Shared;
use super::addresses::{carried, carried_peer};
use super::{health, unexpected, QUIESCE, START, STEP};
use crate::upgrade::HandedOff;

/// A connection at its safe point.
enum AtSafePoint {
    /// Still choosing its route, having read these bytes of the client's.
    Held(Arc<Record>, Vec<u8>),
    /// Relaying, its copy threads parked.
    Parked(Arc<Record>, Parked),
}

impl AtSafePoint {
    fn record(&self) -> &Record {
        match self {
            AtSafePoint::Held(record, _) | AtSafePoint::Parked(record, _) => record,
        }
    }
}

/// The listening sockets a live upgrade offers: the stream listeners' (TCP or Unix: bound
/// address, socket, and whether the service manager handed it in), the UDP listeners', the
/// admin endpoint's.
pub(crate) struct Offering<'a> {
    pub(crate) streams: Vec<(Endpoint, BorrowedFd<'a>, bool)>,
    pub(crate) udp: Vec<(SocketAddr, BorrowedFd<'a>)>,
    pub(crate) admin: Option<(SocketAddr, BorrowedFd<'a>)>,
}

/// What here a process of hand-off version 1 or 2 cannot take: UDP listeners, Unix socket
/// listeners, connections to a Unix socket upstream.
fn newer_than_version_2(offering: &Offering<'_>, shared: &Shared) -> Vec<String> {
    let unix_listeners = (offering.streams.iter())
        .filter(|(addr, _, _)| matches!(addr, Endpoint::Unix(_)))
        .count();
    let unix_upstreams = (shared.registry.snapshot().iter())
        .filter(|r| {
            r.upstream()
                .is_some_and(|u| matches!(u.resolved, Endpoint::Unix(_)))
        })
        .count();
    [
        (offering.udp.len(), "UDP listeners"),
        (unix_listeners, "Unix socket listeners"),
        (unix_upstreams, "connections to Unix socket upstreams"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{what} ({n} here)"))
    .collect()
}

/// Offers `offering` to the new process at the other end of `channel`, then every connection
/// of `shared`. Returns once the new process has started; on `Err` everything here carries on.
pub(crate) fn hand_off(
    channel: Channel,
    offering: &Offering<'_>,
    shared: &Shared,
) -> Result<HandedOff, Error> {
    let pid = channel.peer_pid();
    let version = greet(&channel)?;
    let newer = newer_than_version_2(offering, shared);
    if version < UDP_SINCE && !newer.is_empty() {
        let reason = format!(
            "the new process speaks hand-off version {version}, which cannot take {}; restart \
             instead, or reload without them first",
            newer.join(" or ")
        );
        let _ = channel.send(
            &Message::Refuse {
                reason: reason.clone(),
            },
            &[],
        );
        return Err(upgrade_error(reason));
    }
    let sockets = offer(&channel, version, offering, shared.registry.last_id())?;
    match channel.recv(START)?.0 {
        Message::Ready => {}
        Message::Refuse { reason } => {
            return Err(upgrade_error(format!("the new process refused: {reason}")))
        }
        other => return Err(unexpected("ready", &other)),
    }
    let stopped = match bring_to_safe_points(&shared.registry, || shared.is_stopping()) {
        Ok(stopped) => stopped,
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
    let sent =
        send_health(&channel, version, shared).and_then(|()| send_connections(&channel, &stopped));
    if let Err(err) = sent {
        resume_all(&shared.registry);
        return Err(err);
    }
    for one in &stopped {
        release(one.record());
    }
    Ok(HandedOff {
        pid,
        listeners: sockets,
        connections: stopped.len(),
        channel,
    })
}

/// Takes the new process's hello and returns the version it speaks, refusing one this process
/// cannot speak (newer, or older than [`OLDEST_VERSION`]).
fn greet(channel: &Channel) -> Result<u32, Error> {
    match channel.recv(START)?.0 {
        Message::Hello { version, .. } if (OLDEST_VERSION..=VERSION).contains(&version) => {
            Ok(version)
        }
        Message::Hello { version, .. } => {
            let reason = format!(
                "the new process speaks hand-off version {version}, this one versions \
                 {OLDEST_VERSION} to {VERSION}"
            );
            let _ = channel.send(
                &Message::Refuse {
                    reason: reason.clone(),
                },
                &[],
            );
            Err(upgrade_error(reason))
        }
        other => Err(unexpected("hello", &other)),
    }
}

/// Offers the listening sockets (the TCP listeners', the UDP ones', the admin endpoint's last);
/// returns how many.
fn offer(
    channel: &Channel,
    version: u32,
    offering: &Offering<'_>,
    last_id: u64,
) -> Result<usize, Error> {
    let mut offered: Vec<Offered> = (offering.streams.iter())
        .map(|(addr, _, handed_in)| Offered {
            role: Role::Listener,
            addr: carried(addr),
            handed_in: *handed_in,
        })
        .collect();
    let mut fds: Vec<BorrowedFd<'_>> = offering.streams.iter().map(|(_, fd, _)| *fd).collect();
    for (addr, fd) in &offering.udp {
        offered.push(Offered {
            role: Role::Udp,
            addr: SocketName::Ip(*addr),
            handed_in: false,
        });
        fds.push(*fd);
    }
    if let Some((addr, fd)) = offering.admin {
        offered.push(Offered {
            role: Role::Admin,
            addr: SocketName::Ip(addr),
            handed_in: false,
        });
        fds.push(fd);
    }
    let offer = Message::Offer {
        version,
        next_id: last_id,
        listeners: offered,
    };
    channel.send(&offer, &fds)?;
    Ok(fds.len())
}

/// Sends what is known of every upstream's members (from version 2 on).
fn send_health(channel: &Channel, version: u32, shared: &Shared) -> Result<(), Error> {
    if version < 2 {
        return Ok(());
    }
    for state in health::known(shared) {
        channel.send(&Message::Health(Box::new(state)), &[])?;
    }
    Ok(())
}

/// Sends every connection at its safe point, commits, and waits for the new process to start.
fn send_connections(channel: &Channel, stopped: &[AtSafePoint]) -> Result<(), Error> {
    for one in stopped {
        match one {
            AtSafePoint::Held(record, read) => channel.send(
                &Message::Setup(Box::new(setup_state(record, read))),
                &[record.conn.client.as_fd()],
            )?,
            AtSafePoint::Parked(record, parked) => {
                let state = conn_state(record, parked)?;
                let Some(upstream) = record.conn.upstream() else {
                    return Err(upgrade_error(format!(
                        "conn #{} has no upstream socket",
                        record.id()
                    )));
                };
                channel.send(
                    &Message::Conn(Box::new(state)),
                    &[record.conn.client.as_fd(), upstream.as_fd()],
                )?;
            }
        }
    }
    channel.send(
        &Message::Commit {
            connections: stopped.len() as u32,
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
/// for the last few milliseconds: first, with nothing relaying parked, hold the connections
/// still choosing a route where they are (they move with what they have read), and wait for
/// those dialing their upstream to begin relaying (or end); then ask all the relaying ones to
/// park and wait until each has.
fn bring_to_safe_points(
    registry: &Registry,
    stopping: impl Fn() -> bool,
) -> Result<Vec<AtSafePoint>, String> {
    let started = Instant::now();
    let setting_up = |record: &Record| record.upstream().is_none() && record.hold.read().is_none();
    for record in registry.snapshot() {
        if setting_up(&record) {
            record.hold.ask();
        }
    }
    wait_rounds(&stopping, started, "begun relaying", || {
        let mut waiting = 0;
        for record in registry.snapshot().iter().filter(|r| setting_up(r)) {
            record.hold.wake();
            waiting += 1;
        }
        waiting
    })?;
    let setting_up = started.elapsed();
    for record in registry.snapshot() {
        if record.hold.read().is_none() {
            record.conn.park.ask();
        }
    }
    let mut stopped = Vec::new();
    wait_rounds(&stopping, Instant::now(), "reached a safe point", || {
        stopped.clear();
        let mut waiting = 0;
        for record in registry.snapshot() {
            if let Some(read) = record.hold.read() {
                stopped.push(AtSafePoint::Held(record, read));
            } else if let Some(parked) = record.conn.parked() {
                stopped.push(AtSafePoint::Parked(record, parked));
            } else {
                // A thread that missed its signal gets another at the next round.
                record.conn.park.wake();
                waiting += 1;
            }
        }
        waiting
    })?;
    log::debug!(
        "upgrade: {} connection(s) at a safe point after {:?} ({:?} waiting for connections \
         still setting up)",
        stopped.len(),
        started.elapsed(),
        setting_up
    );
    Ok(stopped)
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

/// The new process has started: every connection stopped here returns without touching its
/// sockets.
fn release(record: &Record) {
    record.hold.end(true);
    record.conn.park.end(true);
}

/// The upgrade did not happen: every stopped thread carries on.
fn resume_all(registry: &Registry) {
    for record in registry.snapshot() {
        record.hold.end(false);
        record.conn.park.end(false);
    }
}

/// A held connection's record, as the wire carries it.
fn setup_state(record: &Record, read: &[u8]) -> SetupState {
    SetupState {
        id: record.id(),
        peer: carried_peer(record.conn.peer),
        listener: carried(&record.listener_addr),
        elapsed_ms: record.conn.elapsed_ms(),
        read: read.to_vec(),
    }
}

/// A parked connection's record, as the wire carries it.
fn conn_state(record: &Record, parked: &Parked) -> Result<ConnState, Error> {
    let conn = &record.conn;
    let missing = || upgrade_error(format!("conn #{} is not relaying yet", conn.id));
    let upstream = record.upstream().ok_or_else(missing)?;
    let past = conn.past();
    let directions = parked.spots.clone().map(|spot| match spot {
        Spot::Holding(pending) => DirectionState::Open { pending },
        Spot::Disposition(end, ms) => DirectionState::Disposition {
            end: end.code(),
            ms,
        },
    });
    let timeouts = parked.timeouts;
    Ok(ConnState {
        id: conn.id,
        peer: carried_peer(conn.peer),
        client: carried_peer(record.client()),
        listener: carried(&record.listener_addr),
        listen: record.listener.config.listen.to_string(),
        route: record.route().map(|route| route.config.label()),
        upstream_name: upstream.configured.to_string(),
        upstream_addr: carried(&upstream.resolved),
        name: record.name().map(str::to_string),
        elapsed_ms: past.elapsed_ms,
        activity_ms: past.activity_ms,
        half_closed_ms: past.half_closed_ms,
        traffic: past.traffic,
        idle_timeout_ms: timeouts.idle.map(|d| d.as_millis() as u64),
        fin_timeout_ms: timeouts.fin.map(|d| d.as_millis() as u64),
        directions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::steps::{refusal, STEP};
    use super::super::take_over::receive_offer;
    use super::*;
    use crate::serve::metrics::Metrics;
    use crate::serve::permits::Permits;
    use crate::serve::status::Shared;
    use crate::upgrade::wire::Message;
    use crate::upgrade::Channel;

    fn shared() -> Shared {
        Shared::new(Metrics::default(), Permits::new(4))
    }

    fn nothing() -> Offering<'static> {
        Offering {
            streams: Vec::new(),
            udp: Vec::new(),
            admin: None,
        }
    }

    /// A new process of version 2 cannot take a UDP socket: refused on both sides, in one line
    /// naming the version and what to do.
    #[test]
    fn a_new_process_too_old_for_udp_listeners_is_refused_with_one_line() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let (old, new) = Channel::pair();
        let peer = std::thread::spawn(move || {
            new.send(&Message::Hello { version: 2, pid: 1 }, &[])
                .unwrap();
            new.recv(STEP).unwrap().0
        });
        let offering = Offering {
            udp: vec![(addr, socket.as_fd())],
            ..nothing()
        };
        let err = hand_off(old, &offering, &shared()).unwrap_err().to_string();
        assert!(err.contains("version 2, which cannot take UDP"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        match peer.join().unwrap() {
            Message::Refuse { reason } => assert!(reason.contains("UDP"), "{reason}"),
            other => panic!("{other:?}"),
        }
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
        let err = hand_off(old, &nothing(), &shared()).unwrap_err();
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
            let err = hand_off(old, &nothing(), &shared())
                .unwrap_err()
                .to_string();
            peer.join().unwrap();
            if refuse {
                assert!(err.contains("refused: bad config"), "{err}");
            } else {
                assert!(err.contains("closed the channel"), "{err}");
            }
        }
    }
}
