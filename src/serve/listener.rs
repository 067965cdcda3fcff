//! A listener's configuration at run time: its routes with their upstreams' health, the router
//! that picks among them, and the global allow/deny rules. Built from the configuration at start
//! and at each reload, then shared read-only by every connection accepted meanwhile; established
//! connections keep the state they were accepted with.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, HostPort, HostPorts, ListenRange, Listener, Route, Rule};
use crate::health::checker::Checker;
use crate::health::roster::Roster;
use crate::route::router::Router;

use super::clients::{self, Peeking, PerClient};
use super::metrics::{ListenerStats, Metrics, RouteStats, UpstreamStats};

/// A route ready to serve: as configured, with its upstreams' members and their health.
#[derive(Debug)]
pub(crate) struct RouteState {
    /// The route as configured.
    pub(crate) config: Route,
    /// Its upstreams (`config.upstreams` then `config.backups`), their members and the order in
    /// which a client tries them.
    pub(crate) roster: Roster,
    /// The route's counters.
    pub(crate) stats: Arc<RouteStats>,
    /// Each upstream's counters: `config.upstreams`, then `config.backups` (indices continue
    /// after the primaries, as in the pool).
    pub(crate) upstream_stats: Vec<Arc<UpstreamStats>>,
    /// The route's own per-client limit (`max_connections_per_client=`), if it has one.
    pub(crate) per_client: Option<Arc<PerClient>>,
}

/// Where a route is, for its counters and for finding it again on reload.
struct Place<'a> {
    /// The listener as configured.
    listener: &'a Listener,
    /// Its label: its range as written, or its listen address.
    label: &'a str,
    /// The route's index among the listener's routes.
    index: usize,
}

impl Place<'_> {
    /// The label of the route's member `member` (upstreams then backups): its range as written
    /// on a listener of a range, so a range's ports count under one label; else the upstream.
    fn member_label(&self, member: usize, upstream: &HostPort) -> String {
        let range = self.listener.range.as_ref();
        range
            .and_then(|r| r.member(self.index, member))
            .map_or_else(|| upstream.to_string(), ToString::to_string)
    }
}

impl RouteState {
    fn new(
        config: Route,
        place: &Place<'_>,
        metrics: &Metrics,
        v6_prefix: u8,
        rosters: &Rosters<'_>,
    ) -> RouteState {
        let label = config.label();
        let upstream_stats = (config.upstreams.iter())
            .chain(&config.backups)
            .enumerate()
            .map(|(i, u)| metrics.upstream(place.label, &label, &place.member_label(i, u)))
            .collect();
        let previous = rosters.previous_route(&place.listener.listen, &label);
        let sibling = rosters.sibling(place, &label);
        let earlier: Vec<&Roster> = (previous.iter().map(|r| &r.roster))
            .chain(sibling.iter().map(|r| &r.roster))
            .collect();
        RouteState {
            roster: Roster::new(&config, v6_prefix, &earlier, rosters.checker),
            stats: metrics.route(place.label, &label),
            upstream_stats,
            per_client: config
                .max_connections_per_client
                .map(|limit| PerClient::new(limit, v6_prefix)),
            config,
        }
    }

    /// Every upstream, primaries then backups: index `i` is the pool's and `upstream_stats`'s
    /// upstream `i`.
    pub(crate) fn all_upstreams(&self) -> impl Iterator<Item = &HostPort> {
        self.config.upstreams.iter().chain(&self.config.backups)
    }

    /// The counters of `upstream` (its first entry, if it is written twice).
    pub(crate) fn stats_of(&self, upstream: &HostPort) -> &UpstreamStats {
        let index = self
            .all_upstreams()
            .position(|u| u == upstream)
            .unwrap_or(0);
        &self.upstream_stats[index]
    }

    /// The upstreams as one readable list, for logs; backups, if any, after `backup`.
    pub(crate) fn describe_upstreams(&self) -> String {
        let list = |hosts: &[HostPort]| {
            let names: Vec<String> = hosts.iter().map(HostPort::to_string).collect();
            names.join(", ")
        };
        match self.config.backups.as_slice() {
            [] => list(&self.config.upstreams),
            backups => format!("{}, backup {}", list(&self.config.upstreams), list(backups)),
        }
    }
}

/// What routes build their pools with: the server's checker, and the listeners they replace
/// (whose unchanged upstreams keep their members and health).
#[derive(Debug)]
pub(crate) struct Rosters<'a> {
    /// Runs the checks and lookups.
    checker: &'a Checker,
    /// The listeners served until now, by their listen address (none at start).
    previous: HashMap<HostPort, Arc<ListenerState>>,
    /// The routes built so far for the first port of each range, by range and route label:
    /// the other ports' routes share their targets, so an upstream port the whole range goes to
    /// is one target, checked once.
    siblings: RefCell<HashMap<(String, String), Arc<RouteState>>>,
}

impl Rosters<'static> {
    /// No previous listeners, and a checker of its own (for unit tests).
    #[cfg(test)]
    pub(crate) fn fresh() -> Rosters<'static> {
        static CHECKER: std::sync::OnceLock<Checker> = std::sync::OnceLock::new();
        Rosters::new(CHECKER.get_or_init(Checker::default), &[])
    }
}

impl<'a> Rosters<'a> {
    /// Rosters run by `checker`, taking over what `previous` (the listeners served until now)
    /// knows of unchanged upstreams.
    pub(crate) fn new(
        checker: &'a Checker,
        previous: &[(crate::config::Endpoint, Arc<ListenerState>)],
    ) -> Rosters<'a> {
        let previous = (previous.iter())
            .map(|(_, state)| (state.config.listen.clone(), Arc::clone(state)))
            .collect();
        Rosters {
            checker,
            previous,
            siblings: RefCell::default(),
        }
    }

    /// The route labelled `label` already built for another port of `place`'s range, if any.
    fn sibling(&self, place: &Place<'_>, label: &str) -> Option<Arc<RouteState>> {
        place.listener.range.as_ref()?;
        let key = (place.label.to_string(), label.to_string());
        self.siblings.borrow().get(&key).cloned()
    }

    /// Remembers `route` of a listener of a range, for the range's other ports.
    fn remember(&self, place: &Place<'_>, route: &Arc<RouteState>) {
        if place.listener.range.is_some() {
            let key = (place.label.to_string(), route.config.label());
            self.siblings
                .borrow_mut()
                .entry(key)
                .or_insert_with(|| Arc::clone(route));
        }
    }

    /// The route labelled `label` on the listener configured on `listen`, until now (a port of
    /// a range is found by its own address).
    fn previous_route(&self, listen: &HostPort, label: &str) -> Option<&Arc<RouteState>> {
        (self.previous.get(listen)?.routes.iter()).find(|route| route.config.label() == label)
    }
}

/// A listener's configuration at run time; swapped as a whole on reload.
#[derive(Debug)]
pub(crate) struct ListenerState {
    /// The listener as configured.
    pub(crate) config: Listener,
    /// Its routes, in configuration order.
    pub(crate) routes: Vec<Arc<RouteState>>,
    /// Picks a route by name.
    pub(crate) router: Router,
    /// Allow/deny rules for every listener.
    pub(crate) global_acl: Arc<Vec<Rule>>,
    /// The listener's counters.
    pub(crate) stats: Arc<ListenerStats>,
    /// The counters of its connections that end before a route is chosen (route label `none`).
    pub(crate) unrouted: Arc<RouteStats>,
    /// Its connections still sending what routing reads, capped, with a share per client.
    pub(crate) peeking: Arc<Peeking>,
    /// One client's share of the listener's own cap, when that cap is below the process's and
    /// no `--max-connections-per-client` was given.
    pub(crate) per_client: Option<Arc<PerClient>>,
}

/// The limits a listener's state is built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The process-wide connection cap.
    pub(crate) max_connections: usize,
    /// `--max-peeking`, if given: every listener's peek budget; else a quarter of its cap.
    pub(crate) max_peeking: Option<usize>,
    /// `--max-connections-per-client`, if given; else each listener with a cap of its own lets
    /// one client hold three quarters of it.
    pub(crate) max_per_client: Option<usize>,
    /// Bits of an IPv6 address that make one client.
    pub(crate) v6_prefix: u8,
    /// How many listeners read before routing (a PROXY header, a name), a port range once: the
    /// process cap's quarter for the peek phase is split among them.
    pub(crate) peek_sharers: usize,
}

impl Limits {
    /// The limits of `config` under a process-wide cap of `max_connections`.
    pub(crate) fn new(config: &Config, max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_peeking: config.max_peeking,
            max_per_client: config.max_connections_per_client,
            v6_prefix: config.client_ipv6_prefix,
            peek_sharers: peek_sharers(config),
        }
    }

    /// The peek budget of a listener with `cap`: `--max-peeking` if given, else a quarter of
    /// its cap, and no more than its part of a quarter of the process cap, so that the listeners
    /// together never hold more than that in the peek phase (and the accept loop always has
    /// slots left to take in the client that evicts a silent one).
    pub(crate) fn peek_budget(&self, cap: usize) -> usize {
        self.max_peeking.unwrap_or_else(|| {
            let part = clients::peek_budget(self.max_connections) / self.peek_sharers.max(1);
            clients::peek_budget(cap).min(part.max(1))
        })
    }

    /// The smallest cap that applies to `listener`'s connections: the process's or its own.
    pub(crate) fn cap_of(&self, listener: &Listener) -> usize {
        listener
            .max_connections
            .map_or(self.max_connections, |own| own.min(self.max_connections))
    }
}

/// How many listeners read before routing (a PROXY header, a name), a range counting once: its
/// ports share one peek budget (see `configured::listener_states`).
fn peek_sharers(config: &Config) -> usize {
    let reads_first = |l: &&Listener| l.accept_proxy || l.routes.iter().any(Route::routes_by_name);
    let mut ranges = std::collections::HashSet::new();
    (config.listeners.iter().filter(reads_first))
        .filter(|l| match &l.range {
            Some(range) => ranges.insert(Arc::as_ptr(range)),
            None => true,
        })
        .count()
}

/// The route label of connections that ended before a route was chosen.
pub(crate) const NO_ROUTE: &str = "none";

impl ListenerState {
    /// The run-time state of a listener from a validated configuration; its counters are found
    /// (or made) in `metrics`.
    pub(crate) fn new(
        config: Listener,
        global_acl: Arc<Vec<Rule>>,
        metrics: &Metrics,
        limits: &Limits,
        rosters: &Rosters<'_>,
    ) -> ListenerState {
        let label = config.label();
        let router = Router::new(&config.routes);
        let routes = (config.routes.iter().cloned().enumerate())
            .map(|(index, r)| {
                let place = Place {
                    listener: &config,
                    label: &label,
                    index,
                };
                let route = Arc::new(RouteState::new(
                    r,
                    &place,
                    metrics,
                    limits.v6_prefix,
                    rosters,
                ));
                rosters.remember(&place, &route);
                route
            })
            .collect();
        let cap = limits.cap_of(&config);
        let budget = limits.peek_budget(cap);
        let per_client = (limits.max_per_client.is_none() && cap < limits.max_connections)
            .then(|| PerClient::new(clients::client_share(cap), limits.v6_prefix));
        let stats = metrics.listener(&label);
        if router.reads_first() {
            stats.reads_first();
        }
        ListenerState {
            stats,
            unrouted: metrics.route(&label, NO_ROUTE),
            peeking: Peeking::new(budget, clients::peek_share(budget), limits.v6_prefix),
            per_client,
            config,
            routes,
            router,
            global_acl,
        }
    }

    /// What one client may hold here, for the `listening on` line: its share of the listener's
    /// own cap, and of the peek phase if the listener reads before routing.
    pub(crate) fn describe_limits(&self) -> String {
        let mut parts = Vec::new();
        if let Some(per_client) = &self.per_client {
            parts.push(format!("{} per client", per_client.limit()));
        }
        if self.config.accept_proxy || self.router.reads_first() {
            parts.push(format!(
                "{} choosing a route at once, {} per client",
                self.peeking.limit(),
                self.peeking.per_client()
            ));
        }
        parts.join("; ")
    }

    /// One line per route, `[label] upstreams`, or just the upstreams for a lone default route;
    /// on a range, the upstreams as written (`10.0.0.1:7000-7099`).
    pub(crate) fn describe(&self) -> String {
        let parts: Vec<String> = (self.routes.iter().enumerate())
            .map(|(index, r)| {
                let upstreams = match &self.config.range {
                    Some(range) => describe_written(range, index, r.config.upstreams.len()),
                    None => r.describe_upstreams(),
                };
                if self.routes.len() == 1 && !r.config.routes_by_name() {
                    upstreams
                } else {
                    format!("[{}] {upstreams}", r.config.label())
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// The members of route `index` of a range as written, backups after `backup`, as
/// [`RouteState::describe_upstreams`] shows one port's.
fn describe_written(range: &ListenRange, index: usize, primaries: usize) -> String {
    let written = range.members.get(index).map_or(&[][..], Vec::as_slice);
    let list = |members: &[HostPorts]| {
        let names: Vec<String> = members.iter().map(ToString::to_string).collect();
        names.join(", ")
    };
    let (upstreams, backups) = written.split_at(primaries.min(written.len()));
    match backups {
        [] => list(upstreams),
        backups => format!("{}, backup {}", list(upstreams), list(backups)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, peek_sharers: usize) -> Limits {
        Limits {
            max_connections,
            max_peeking: None,
            max_per_client: None,
            v6_prefix: 64,
            peek_sharers,
        }
    }

    #[test]
    fn listeners_that_read_first_share_a_quarter_of_the_process_cap() {
        assert_eq!(limits(100, 1).peek_budget(100), 25);
        assert_eq!(limits(100, 4).peek_budget(100), 6);
        // A listener's own lower cap gives a smaller budget still.
        assert_eq!(limits(100, 1).peek_budget(10), 2);
        assert_eq!(limits(2, 3).peek_budget(2), 1, "at least one");
        let given = Limits {
            max_peeking: Some(50),
            ..limits(100, 4)
        };
        assert_eq!(given.peek_budget(10), 50, "--max-peeking as given");
    }

    #[test]
    fn a_listener_with_its_own_cap_counts_its_clients_apart() {
        let mut listener = Listener::new("127.0.0.1:1".parse().unwrap());
        assert_eq!(limits(100, 1).cap_of(&listener), 100);
        listener.max_connections = Some(10);
        assert_eq!(limits(100, 1).cap_of(&listener), 10);
        listener.max_connections = Some(1_000);
        assert_eq!(limits(100, 1).cap_of(&listener), 100);
    }
}
