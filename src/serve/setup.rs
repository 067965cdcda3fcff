//! Setting a connection up, on its set-up worker, in the steps it takes: read the PROXY header
//! of a trusted front, authorize the client, choose a route (by the client's first bytes on a
//! listener that routes by name), dial the upstream, send the preface. Each step records what it
//! learns in the connection's [`Record`]; the first that refuses ends the
//! set-up with why.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockAddr;

use crate::config::{Endpoint, Protocol, Rule};
use crate::proto::proxy::{self, ProxyHeader, Version};
use crate::proto::tls;
use crate::proto::{http, Parsed};
use crate::relay::{Direction, Timeouts};
use crate::route::access;
use crate::route::names::MatchKind;
use crate::route::router::{classify, Choice, FirstBytes};
use crate::sys::net;
use crate::sys::unix::Peer;

use super::admit::{client_places, Limit};
use super::clients::PeekSlot;
use super::dial::{self, Dialed};
use super::job::Job;
use super::listener::{ListenerState, RouteState};
use super::peek::{self, PeekError};
use super::record::{canonical, Record, Upstream};
use super::refused::Refused;
use super::upgrade::HoldVerdict;

/// Sets the connection of `job` up, having read `read` of the client's bytes already (by the old
/// process of a live upgrade, before it had chosen a route): routing reads them first. Returns
/// the route's idle limits for the relay, or why the client is refused.
pub(super) fn set_up(job: &mut Job, read: Vec<u8>) -> Result<Timeouts, Refused> {
    Setup {
        job,
        peeked: read,
        proxy_header: Vec::new(),
    }
    .run()
}

/// What set-up carries between its steps.
struct Setup<'a> {
    job: &'a mut Job,
    /// Bytes read from the client before connecting; sent upstream first, unchanged.
    peeked: Vec<u8>,
    /// The PROXY header read, if any (not sent upstream).
    proxy_header: Vec<u8>,
}

impl Setup<'_> {
    fn record(&self) -> Arc<Record> {
        Arc::clone(self.job.record())
    }

    /// Every step, in order.
    fn run(&mut self) -> Result<Timeouts, Refused> {
        if let Some(limit) = self.job.admission.refused {
            return Err(limit.refusal());
        }
        let record = self.record();
        let state = &record.listener;
        let destination = self.read_proxy_header(state)?;
        self.authorize(state)?;
        let route = self.choose_route(state)?;
        self.leave_peek_phase()?;
        self.admit_to_route(&route)?;
        record.set_route(Arc::clone(&route));
        allowed(&record, &[], &route.config.acl)?;
        if record.conn.is_stopped() {
            return Err(Refused::Stopped);
        }
        let dialed = self.dial(&route)?;
        self.send_preface(&route, destination, dialed);
        Ok(Timeouts {
            idle: route.config.idle_timeout,
            fin: route.config.fin_timeout,
        })
    }

    /// Reads the PROXY header of a trusted front if the listener expects one, and records the
    /// client it names; then the client is known, and takes its places under the per-client
    /// limits. Returns the address the client connected to, if the header said.
    fn read_proxy_header(&mut self, state: &ListenerState) -> Result<Option<SocketAddr>, Refused> {
        if !state.config.accept_proxy {
            return Ok(None);
        }
        let header = match self.peek(state.config.peek_timeout, proxy::parse) {
            Err(PeekError::Held) => return Err(Refused::Upgraded),
            Err(PeekError::Evicted(why)) => return Err(Refused::Evicted(why)),
            other => other.map_err(|err| Refused::BadProxyHeader(err.to_string()))?,
        };
        let (header, used) = header;
        // Kept: a live upgrade that moves the connection before it has chosen its route hands
        // over the bytes read so far, header included, and the new process reads them again.
        self.proxy_header = self.peeked.drain(..used).collect();
        let record = self.record();
        let destination = match header {
            // A TCP6 header may name an IPv4 client as ::ffff:a.b.c.d: act on it as IPv4.
            ProxyHeader::Tcp { src, dst } => {
                record.set_client(src);
                Some(canonical(dst))
            }
            // LOCAL: the front's own health check; UNKNOWN: it does not know. Use the socket.
            ProxyHeader::Local | ProxyHeader::Unknown => None,
        };
        let ip = record.client_key();
        let places = client_places(&self.job.context.per_client, state, ip);
        self.job
            .admission
            .client
            .extend(places.map_err(Limit::refusal)?);
        if let Some(slot) = &self.job.admission.peeking {
            slot.peeking()
                .move_to(slot, ip)
                .map_err(Refused::PeekLimit)?;
        }
        Ok(destination)
    }

    /// Checks the client against the global allow and deny rules.
    fn authorize(&self, state: &ListenerState) -> Result<(), Refused> {
        allowed(self.job.record(), &state.global_acl, &[])
    }

    /// Routing has read what it needs: the listener's peek-phase place is free again, unless it
    /// was taken meanwhile (its socket is shut down for reading then).
    fn leave_peek_phase(&mut self) -> Result<(), Refused> {
        match self
            .job
            .admission
            .peeking
            .take()
            .and_then(PeekSlot::release)
        {
            Some(why) => Err(Refused::Evicted(why)),
            None => Ok(()),
        }
    }

    /// Takes the client's place under the route's own per-client limit, if it has one.
    fn admit_to_route(&mut self, route: &RouteState) -> Result<(), Refused> {
        if let Some(per_route) = &route.per_client {
            let slot = per_route.take(self.job.record().client_key());
            let slot = slot.ok_or(Refused::ClientLimit(per_route.limit()))?;
            self.job.admission.client.push(slot);
        }
        Ok(())
    }

    /// Reads the client's first bytes into `peeked` until `decide` decides (see
    /// [`peek::read_until`]), until `timeout` after the connection was accepted (one deadline
    /// for the PROXY header and what follows, kept across a live upgrade). A live upgrade may hold
    /// it where it is: the bytes read so far are offered with the connection;
    /// `Err(PeekError::Held)` if the new process took it, else the read goes on. A connection
    /// that lost its place in the peek phase ends with `Err(PeekError::Evicted)`.
    fn peek<T, E>(
        &mut self,
        timeout: Duration,
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
            (Err(PeekError::Held), _) => Err(PeekError::Held),
            (Err(_), Some(why)) => Err(PeekError::Evicted(why)),
            (Err(err), None) => Err(err),
        }
    }

    /// [`Setup::peek`] without the eviction check.
    fn read_first<T, E>(
        &mut self,
        timeout: Duration,
        decide: impl Fn(&[u8]) -> Result<Parsed<T>, E>,
    ) -> Result<T, PeekError<E>> {
        let record = self.record();
        let hold = &record.hold;
        // Registered, so an upgrade can wake this thread out of its wait.
        let _waiting = hold.enter();
        let deadline = crate::sys::clock::deadline_after(record.conn.started, timeout);
        let asked = || hold.asked();
        loop {
            let client = &record.conn.client;
            match peek::read_until(client, &mut self.peeked, deadline, &asked, &decide) {
                Err(PeekError::Held) => {
                    let mut read = self.proxy_header.clone();
                    read.extend_from_slice(&self.peeked);
                    if hold.wait(read) == HoldVerdict::Released {
                        return Err(PeekError::Held);
                    }
                }
                other => return other,
            }
        }
    }

    /// The route for this client: the listener's only one, or the one its first bytes select.
    /// Records what the client asked for, and how it matched.
    fn choose_route(&mut self, state: &ListenerState) -> Result<Arc<RouteState>, Refused> {
        let router = &state.router;
        let (found, name) = if router.reads_first() {
            let choice = match self.read_choice(state) {
                Ok(choice) => choice,
                Err(PeekError::Held) => return Err(Refused::Upgraded),
                Err(PeekError::Evicted(why)) => return Err(Refused::Evicted(why)),
                // Some bytes came, but not enough to decide, before the deadline or the client's
                // end of stream: like anything no route takes, it goes to the default route
                // (what was read is sent on unchanged), or is closed without one.
                Err(err @ (PeekError::Timeout | PeekError::Closed)) if !self.peeked.is_empty() => {
                    let what = match err {
                        PeekError::Timeout => "incomplete-at-peek-timeout",
                        _ => "incomplete-at-end-of-stream",
                    };
                    Choice {
                        first: FirstBytes::Other(what),
                        found: router.fallback(),
                    }
                }
                Err(err) => {
                    return Err(Refused::Peek {
                        why: err.to_string(),
                        timeout: matches!(err, PeekError::Timeout),
                    })
                }
            };
            let name = self.name_and_answer(&choice, state);
            let protocol_of = |i: usize| state.routes[i].config.protocol.as_ref();
            state.stats.matched(choice.protocol(protocol_of));
            (choice.found, Some(name))
        } else {
            (router.fallback(), None)
        };
        let record = self.job.record();
        if let Some(mut name) = name {
            if let Some((_, kind @ (MatchKind::Exact | MatchKind::Wildcard(_)))) = &found {
                name.push_str(&format!(" match={kind}"));
            }
            record.set_name(name);
        }
        let (index, _) = found.ok_or(Refused::NoRoute)?;
        Ok(Arc::clone(&state.routes[index]))
    }

    /// Reads the client's first bytes until the router decides. On a listener with a
    /// `proto=silent` route, a client that has sent nothing when its wait is over takes that
    /// route at once, so that the server's banner reaches it; one that has sent something goes
    /// on to the peek deadline like any other.
    fn read_choice(
        &mut self,
        state: &ListenerState,
    ) -> Result<Choice, PeekError<std::convert::Infallible>> {
        let router = &state.router;
        if let Some((index, wait)) = router.silent() {
            match self.peek(wait, |buf| classify(buf, router)) {
                Err(PeekError::Timeout) if self.peeked.is_empty() => {
                    return Ok(Choice {
                        first: FirstBytes::Silent,
                        found: Some((index, MatchKind::Protocol)),
                    })
                }
                Err(PeekError::Timeout) => {}
                other => return other,
            }
        }
        self.peek(state.config.peek_timeout, |buf| classify(buf, router))
    }

    /// Names what the client sent and the protocol that took it (`proto=tls sni=...`,
    /// `proto=ssh`, `first-bytes=...` when none did); a TLS client without a route gets an
    /// `unrecognized_name` alert, an HTTP client a `421 Misdirected Request`.
    fn name_and_answer(&self, choice: &Choice, state: &ListenerState) -> String {
        let client = &self.job.record().conn.client;
        let refused = choice.found.is_none();
        match &choice.first {
            FirstBytes::Tls(hello) => {
                let name = hello.server_name.as_deref();
                let mut text = format!("proto=tls sni={}", name.unwrap_or("(none)"));
                if hello.ech {
                    text.push_str(" ech=outer-name");
                }
                if refused {
                    let _ = (&*client).write_all(&tls::unrecognized_name_alert());
                }
                text
            }
            FirstBytes::Http(host) => {
                if refused {
                    let _ = (&*client).write_all(http::misdirected_response());
                }
                format!("proto=http host={}", host.as_deref().unwrap_or("(none)"))
            }
            FirstBytes::Leading => {
                let protocol = (choice.found.as_ref())
                    .and_then(|(i, _)| state.routes[*i].config.protocol.as_ref());
                format!("proto={}", protocol.map_or("prefix", Protocol::name))
            }
            FirstBytes::Silent => "proto=silent".to_string(),
            FirstBytes::Other(what) => format!("first-bytes={what}"),
        }
    }

    /// Dials the route's upstreams in the balancer's order until one answers, logging each
    /// failed attempt, and records the one connected.
    fn dial(&self, route: &RouteState) -> Result<Dialed, Refused> {
        let record = self.job.record();
        let mut failed = Vec::new();
        let dialed = dial::dial(route, record.client_key(), &mut failed);
        for attempt in &failed {
            log::warn!(
                "conn #{} from {}: connect to {attempt}",
                record.id(),
                record.client()
            );
        }
        let Some(mut dialed) = dialed else {
            log::warn!(
                "conn #{} from {}: no upstream reachable ({} attempt(s): {}); closing the client",
                record.id(),
                record.client(),
                failed.len(),
                route.describe_upstreams()
            );
            return Err(Refused::NoUpstream);
        };
        record.set_upstream(
            Upstream {
                configured: dialed.upstream.clone(),
                resolved: dialed.addr.clone(),
            },
            dialed.lease.take(),
        );
        Ok(dialed)
    }

    /// Sends the upstream what it gets before the relay (a PROXY header if the route sends one,
    /// then everything read from the client while deciding, unchanged), and attaches it to the
    /// connection.
    fn send_preface(&self, route: &RouteState, destination: Option<SocketAddr>, dialed: Dialed) {
        let record = self.job.record();
        let conn = &record.conn;
        net::tune(&dialed.stream);
        let mut preface = match route.config.proxy_protocol {
            Some(version) => proxy_header(record, version, destination),
            None => Vec::new(),
        };
        preface.extend_from_slice(&self.peeked);
        let sent = (&dialed.stream).write_all(&preface);
        conn.attach_upstream(dialed.stream);
        match sent {
            // The client's own bytes count as relayed; the PROXY header is ours.
            Ok(()) => conn.count(Direction::ClientToUpstream, self.peeked.len() as u64),
            Err(err) => log::warn!(
                "conn #{}: cannot send the first bytes upstream: {err}",
                conn.id
            ),
        }
    }
}

/// Checks the client against `global` then `route` allow and deny rules. They name IP addresses:
/// a client of a Unix listener is not subject to them (its socket file's mode says who may
/// connect).
fn allowed(record: &Record, global: &[Rule], route: &[Rule]) -> Result<(), Refused> {
    match record.client() {
        Peer::Ip(client) => access::check(global, route, client.ip()).map_err(Refused::Acl),
        Peer::Local(_) => Ok(()),
    }
}

/// The PROXY header a route sends: the client and the address it connected to (`destination`,
/// when an accepted header named it, else the listener's own); Unix sockets on both sides as
/// `AF_UNIX`, ends of two families as unspecified.
fn proxy_header(record: &Record, version: Version, destination: Option<SocketAddr>) -> Vec<u8> {
    let local = record.conn.client.local_addr().ok();
    let listener = match destination {
        Some(named) => Endpoint::Ip(named),
        None => match local.as_ref().and_then(SockAddr::as_socket) {
            Some(bound) => Endpoint::Ip(canonical(bound)),
            None => record.listener_addr.clone(),
        },
    };
    match (record.client(), listener) {
        (Peer::Ip(client), Endpoint::Ip(listener)) => proxy::encode(version, client, listener),
        (Peer::Local(_), Endpoint::Unix(path)) => {
            proxy::encode_unix(version, b"", &path.sun_path())
        }
        _ => proxy::encode_unspecified(version),
    }
}
