//! The one record of a connection: everything known about it, filled in as it is learned. The
//! log line, rinetd's log file, `/connections`, the metrics at close and a live upgrade's wire
//! state are all read from it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{Endpoint, HostPort};
use crate::health::member::{Claim, Member};
use crate::log::line::Line;
use crate::relay::{Connection, Direction, Outcome};
use crate::sys::unix::Peer;

use super::listener::{ListenerState, RouteState};
use super::upgrade::Hold;

/// What is known about one connection. The relay's [`Connection`] holds what moves while bytes
/// move (its sockets, when it started, the bytes each way, how each direction ended); the rest
/// is set once each, as the connection learns it.
#[derive(Debug)]
pub(crate) struct Record {
    /// The sockets, the clocks, the byte counts and the ends.
    pub(crate) conn: Arc<Connection>,
    /// The listener that accepted it, as it was configured then.
    pub(crate) listener: Arc<ListenerState>,
    /// That listener's bound address.
    pub(crate) listener_addr: Endpoint,
    /// The client as tcp-router acts on it: the one a PROXY header names, once read; until then
    /// (and without a header) the socket's peer.
    client: OnceLock<SocketAddr>,
    /// The route taken, once chosen.
    route: OnceLock<Arc<RouteState>>,
    /// What the client asked for (`sni=…`, `host=…`, `first-bytes=…`) and how it matched, once
    /// read.
    name: OnceLock<Box<str>>,
    /// The upstream connected, once it is.
    upstream: OnceLock<Upstream>,
    /// The connection counted against the member it went to, while the record lives.
    lease: OnceLock<Claim>,
    /// Why tcp-router reset it while it relayed (`upstream-down`), if it did.
    reset_because: OnceLock<&'static str>,
    /// Where its set-up worker waits while a live upgrade moves it (see `upgrade::Hold`).
    pub(crate) hold: Hold,
}

/// The upstream a connection went to, as configured and as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub(crate) configured: HostPort,
    pub(crate) resolved: Endpoint,
}

impl Record {
    /// A connection accepted (or taken over) on `listener`, bound at `listener_addr`.
    pub(crate) fn new(
        conn: Connection,
        listener: Arc<ListenerState>,
        listener_addr: Endpoint,
    ) -> Record {
        Record {
            conn: Arc::new(conn),
            listener,
            listener_addr,
            client: OnceLock::new(),
            route: OnceLock::new(),
            name: OnceLock::new(),
            upstream: OnceLock::new(),
            lease: OnceLock::new(),
            reset_because: OnceLock::new(),
            hold: Hold::default(),
        }
    }

    /// The connection's number.
    pub(crate) fn id(&self) -> u64 {
        self.conn.id
    }

    /// The client as tcp-router acts on it. On a dual-stack listener an IPv4 client appears as
    /// ::ffff:a.b.c.d: it is acted on (and told to upstreams) as plain IPv4, as allow/deny does.
    /// A client of a Unix listener is a local process, known by its credentials.
    pub(crate) fn client(&self) -> Peer {
        match (self.client.get(), self.conn.peer) {
            (Some(named), _) => Peer::Ip(*named),
            (None, Peer::Ip(addr)) => Peer::Ip(canonical(addr)),
            (None, local) => local,
        }
    }

    /// What the per-client limits, allow/deny and affinity see of the client (see
    /// [`Peer::key`]).
    pub(crate) fn client_key(&self) -> IpAddr {
        self.client().key()
    }

    /// The route taken, once chosen.
    pub(crate) fn route(&self) -> Option<&Arc<RouteState>> {
        self.route.get()
    }

    /// What the client asked for, once read.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.get().map(|name| &**name)
    }

    /// The upstream connected, once it is.
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        self.upstream.get()
    }

    /// The client a PROXY header named.
    pub(crate) fn set_client(&self, client: SocketAddr) {
        let _ = self.client.set(canonical(client));
    }

    /// The route chosen; from now on the connection's bytes count for it too.
    pub(crate) fn set_route(&self, route: Arc<RouteState>) {
        self.conn.count_into(Arc::clone(&route.stats.traffic));
        let _ = self.route.set(route);
    }

    /// What the client asked for, and how it matched.
    pub(crate) fn set_name(&self, name: String) {
        let _ = self.name.set(name.into());
    }

    /// The upstream connected, and the lease that counts the connection against its member.
    pub(crate) fn set_upstream(&self, upstream: Upstream, lease: Option<Claim>) {
        let _ = self.upstream.set(upstream);
        if let Some(lease) = lease {
            let _ = self.lease.set(lease);
        }
    }

    /// True if the connection went to `member`.
    pub(crate) fn went_to(&self, member: &Arc<Member>) -> bool {
        self.lease
            .get()
            .is_some_and(|lease| Arc::ptr_eq(lease.member(), member))
    }

    /// Resets both sides now, for `why` (said in the log line as `result=WHY`); false if the
    /// connection had already stopped.
    pub(crate) fn reset(&self, why: &'static str) -> bool {
        let _ = self.reset_because.set(why);
        self.conn.reset()
    }

    /// Why tcp-router reset it, if it did.
    pub(crate) fn reset_because(&self) -> Option<&'static str> {
        self.reset_because.get().copied()
    }

    /// The route's label where the listener has several (the log line names it only then).
    pub(crate) fn route_label(&self) -> Option<String> {
        self.route()
            .filter(|_| self.listener.routes.len() > 1)
            .map(|route| route.config.label())
    }

    /// The upstream rinetd's log file names: the one connected, else the route's first (a
    /// refused client is logged with the address its rule forwards to, as rinetd does).
    pub(crate) fn rinetd_upstream(&self) -> Option<&HostPort> {
        match (self.upstream(), self.route()) {
            (Some(upstream), _) => Some(&upstream.configured),
            (None, Some(route)) => route.config.upstreams.first(),
            (None, None) => None,
        }
    }

    /// Bytes moved each way, client to upstream first: the bytes read before the relay (a
    /// peeked ClientHello) included, the PROXY headers not.
    pub(crate) fn bytes(&self) -> [u64; 2] {
        Direction::BOTH.map(|direction| self.conn.bytes(direction))
    }

    /// The per-connection log line, for a connection that ended with `result` (relayed, or the
    /// reason it was not) after `duration`.
    pub(crate) fn line<'a>(
        &'a self,
        duration: Duration,
        result: Result<&'a Outcome, &'a str>,
    ) -> Line<'a> {
        Line {
            id: self.id(),
            client: self.client(),
            listener: self.listener_addr.clone(),
            upstream: self
                .upstream()
                .map(|upstream| (&upstream.configured, &upstream.resolved)),
            name: self.name(),
            route: self.route_label(),
            bytes: self.bytes(),
            duration,
            result,
            reset_because: self.reset_because(),
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address as the IPv4 address it is.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::listener::{Limits, Rosters};
    use crate::serve::metrics::Metrics;
    use std::net::{TcpListener, TcpStream};

    /// A record of a loopback connection accepted on a listener with `routes`, forwarding to
    /// `upstream`.
    fn record(routes: usize, upstream: &str) -> Record {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (accepted, peer) = server.accept().unwrap();
        let mut config = crate::config::Listener::new("127.0.0.1:1".parse().unwrap());
        for _ in 0..routes {
            let mut route = crate::config::Route::new(vec![upstream.parse().unwrap()]);
            route.sni = Some("a.example".parse().unwrap());
            config.routes.push(route);
        }
        let limits = Limits {
            max_connections: 4,
            max_peeking: Some(1),
            max_per_client: None,
            v6_prefix: 64,
            peek_sharers: 1,
        };
        let state = ListenerState::new(
            config,
            Arc::default(),
            &Metrics::default(),
            &limits,
            &Rosters::fresh(),
        );
        drop(client);
        Record::new(
            Connection::new(1, peer.into(), accepted.into()),
            Arc::new(state),
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn the_client_is_the_sockets_peer_until_a_proxy_header_names_another_in_plain_ipv4() {
        let record = record(0, "127.0.0.1:2");
        assert_eq!(record.client(), record.conn.peer);
        record.set_client("[::ffff:192.0.2.7]:4000".parse().unwrap());
        assert_eq!(record.client(), Peer::Ip("192.0.2.7:4000".parse().unwrap()));
    }

    #[test]
    fn rinetd_names_the_upstream_connected_else_the_routes_first() {
        let record = record(1, "db.example:6379");
        assert_eq!(record.rinetd_upstream(), None, "no route yet");
        record.set_route(Arc::clone(&record.listener.routes[0]));
        assert_eq!(
            record.rinetd_upstream().map(HostPort::to_string).as_deref(),
            Some("db.example:6379")
        );
        record.set_upstream(
            Upstream {
                configured: "127.0.0.1:6380".parse().unwrap(),
                resolved: Endpoint::Ip("127.0.0.1:6380".parse().unwrap()),
            },
            None,
        );
        assert_eq!(
            record.rinetd_upstream().map(HostPort::to_string).as_deref(),
            Some("127.0.0.1:6380")
        );
    }

    #[test]
    fn the_route_is_named_only_where_the_listener_has_several() {
        for (routes, named) in [(1, false), (2, true)] {
            let record = record(routes, "127.0.0.1:2");
            record.set_route(Arc::clone(&record.listener.routes[0]));
            assert_eq!(record.route_label().is_some(), named, "{routes} route(s)");
        }
    }
}
