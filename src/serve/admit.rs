//! Admission: a client's places under the limits that one client, or one listener's slow
//! clients, must not exceed, taken on the accept loop in accept order so the count is exact.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::listed;
use crate::sys::unix::Peer;

use super::clients::{ClientSlot, PeekRefusal, PeekSlot, PerClient};
use super::listener::{ListenerState, RouteState};
use super::record::Record;
use super::refused::Refused;

/// The accept loop's decision for one client.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// The client's places under the process-wide per-client limit, the listener's share and
    /// its route's (taken later on a listener that reads a PROXY header: the client is known
    /// only after it; and the route's once it is chosen).
    pub(crate) client: Vec<ClientSlot>,
    /// A place in the listener's peek phase, if it reads anything before routing.
    pub(crate) peeking: Option<PeekSlot>,
    /// Why the client is refused, if it is: which limit, at what value.
    pub(crate) refused: Option<Limit>,
}

/// Takes a client's places under the per-client and peek-phase limits; a refused client is still
/// handed to a worker, which logs and counts it like any other connection.
pub(crate) fn admit(per_client: &Arc<PerClient>, record: &Record) -> Admission {
    let state = &record.listener;
    let mut admission = Admission::default();
    let peer = record.conn.peer.key();
    // A PROXY header is taken from anyone when no trusted sender is named (warned at start); on
    // a Unix listener, from any process the socket file lets in.
    let local = matches!(record.conn.peer, Peer::Local(_));
    if state.config.accept_proxy && !local && !listed(&state.config.accept_proxy_from, peer) {
        admission.refused = Some(Limit::UntrustedProxy);
        return admission;
    }
    // Behind a PROXY header the client is known only once the worker has read it.
    if !state.config.accept_proxy {
        match client_places(per_client, state, peer) {
            Ok(slots) => admission.client = slots,
            Err(limit) => {
                admission.refused = Some(limit);
                return admission;
            }
        }
    }
    if state.config.accept_proxy || state.router.reads_first() {
        match state.peeking.take(peer, &record.conn) {
            Ok(slot) => admission.peeking = Some(slot),
            Err(refusal) => admission.refused = Some(Limit::Peek(refusal)),
        }
    }
    admission
}

/// The admission of a connection taken over in a live upgrade, relaying already: its places
/// under this process's per-client limits, taken even beyond a cap the new configuration
/// lowered (the connection is live).
pub(crate) fn readmit(
    per_client: &Arc<PerClient>,
    route: Option<&RouteState>,
    client: IpAddr,
) -> Admission {
    let mut admission = Admission::default();
    admission.client.extend(per_client.take(client));
    if let Some(per_route) = route.and_then(|route| route.per_client.as_ref()) {
        admission.client.extend(per_route.take(client));
    }
    admission
}

/// The client's places under the process-wide per-client limit and the listener's own share.
pub(crate) fn client_places(
    per_client: &Arc<PerClient>,
    state: &ListenerState,
    ip: IpAddr,
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
    pub(crate) fn refusal(self) -> Refused {
        match self {
            Limit::Client(n) => Refused::ClientLimit(n),
            Limit::Peek(refusal) => Refused::PeekLimit(refusal),
            Limit::UntrustedProxy => Refused::UntrustedProxy,
        }
    }
}
