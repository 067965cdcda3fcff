//! Dialing a route's upstream: the order comes from the route's pool (members that are up,
//! primaries before backups, then those not checked yet, then those down), names already
//! resolved in the background; each member gets one connect within the connect timeout. Every
//! failed attempt is reported for the log, and every member that goes down or up is logged.

use std::fmt;
use std::io;
use std::net::IpAddr;

use socket2::Socket;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Endpoint, HostPort};
use crate::health::member::{self, Claim, Member};

use super::listener::RouteState;
use super::metrics::ConnectFailure;

/// Where a connect attempt went and why it failed.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// The upstream as configured.
    pub(crate) upstream: HostPort,
    /// The address tried; `None` when the upstream's name has no address.
    pub(crate) addr: Option<Endpoint>,
    /// What failed.
    pub(crate) error: io::Error,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            Some(addr) if addr.to_string() != self.upstream.to_string() => {
                write!(f, "{} ({addr}): {}", self.upstream, self.error)
            }
            Some(_) => write!(f, "{}: {}", self.upstream, self.error),
            None => write!(f, "{}: cannot resolve: {}", self.upstream, self.error),
        }
    }
}

/// A connected upstream.
#[derive(Debug)]
pub(crate) struct Dialed {
    /// The socket, connected.
    pub(crate) stream: Socket,
    /// Which upstream it is, as configured.
    pub(crate) upstream: HostPort,
    /// The address it resolved to.
    pub(crate) addr: Endpoint,
    /// The connection counted against its member while it is open (until the record takes it).
    pub(crate) lease: Option<Claim>,
}

/// Connects to the route's members in the pool's order for `client`, each at most once, until
/// one answers; records the outcome in the member, and every failed attempt in `failed`.
pub(crate) fn dial(
    route: &RouteState,
    client: IpAddr,
    failed: &mut Vec<Attempt>,
) -> Option<Dialed> {
    note_unresolved(route, failed);
    for member in route.roster.order(client) {
        if let Some(dialed) = connect(route, &member, failed) {
            return Some(dialed);
        }
    }
    None
}

/// One connect to `member`, within the route's connect timeout.
fn connect(route: &RouteState, member: &Arc<Member>, failed: &mut Vec<Attempt>) -> Option<Dialed> {
    let stats = route.stats_of(&member.upstream);
    stats.attempts.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match member::connect(&member.addr, route.config.src, route.config.connect_timeout) {
        Ok(stream) => {
            stats.connected(started.elapsed());
            let (lease, change) = member.connected();
            if let Some(change) = change {
                route.roster.changed(member, &change);
            }
            Some(Dialed {
                stream,
                upstream: member.upstream.clone(),
                addr: member.addr.clone(),
                lease: Some(lease),
            })
        }
        Err(error) => {
            let kind = error.kind().to_string();
            let attempt = Attempt {
                upstream: member.upstream.clone(),
                addr: Some(member.addr.clone()),
                error,
            };
            stats.failed(ConnectFailure::of(&attempt.error), attempt.to_string());
            failed.push(attempt);
            if let Some(change) = member.connect_failed(&kind) {
                route.roster.changed(member, &change);
            }
            None
        }
    }
}

/// Reports each upstream whose name has never resolved as a failed attempt, so the log says why
/// it was not tried.
fn note_unresolved(route: &RouteState, failed: &mut Vec<Attempt>) {
    for entry in route.roster.entries() {
        if entry.target.never_resolved() && entry.target.members().is_empty() {
            let attempt = Attempt {
                upstream: entry.target.upstream.clone(),
                addr: None,
                error: io::Error::new(io::ErrorKind::NotFound, "no address yet"),
            };
            let stats = route.stats_of(&attempt.upstream);
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            stats.failed(ConnectFailure::NotResolved, attempt.to_string());
            failed.push(attempt);
        }
    }
}
