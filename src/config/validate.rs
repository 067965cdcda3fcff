//! Checks a [`Config`] as a whole, wherever it came from (the command line, a file, code): what no
//! single line can show, such as two listeners on one address or two routes that a client could
//! not be told apart by.

use std::collections::BTreeMap;

use crate::error::Error;

use std::time::Duration;

use super::addr::{HostPort, MAX_WEIGHT};
use super::duration::{check_duration, format_duration};
use super::health::{CheckKind, HealthCheck, MIN_CHECK_INTERVAL};
use super::model::{Config, Listener, Route, Transport};
use super::protocol::Protocol;
use super::settings::check_count;

impl Config {
    /// Checks the configuration; every problem is one line of the [`Error::Config`] it returns,
    /// starting with where the offending part was configured.
    ///
    /// ```
    /// use tcp_router::{Config, Listener, Route};
    ///
    /// let mut listener = Listener::new("127.0.0.1:0".parse()?);
    /// listener.routes.push(Route::new(vec!["127.0.0.1:6379".parse()?]));
    /// listener.routes.push(Route::new(vec!["127.0.0.1:6380".parse()?]));
    /// let mut config = Config::default();
    /// config.listeners.push(listener);
    /// let error = config.validate().unwrap_err().to_string();
    /// assert!(error.contains("duplicate route on 127.0.0.1:0"), "{error}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        if let Some(why) = self.max_connections.and_then(bad_cap) {
            errors.push(format!(
                "invalid max_connections '{}': {why}",
                self.max_connections.unwrap_or_default()
            ));
        }
        for (name, cap) in [
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
            ("max_peeking", self.max_peeking),
        ] {
            if let Some(why) = cap.and_then(bad_cap) {
                errors.push(format!(
                    "invalid {name} '{}': {why}",
                    cap.unwrap_or_default()
                ));
            }
        }
        if self.client_ipv6_prefix > 128 {
            errors.push(format!(
                "invalid client_ipv6_prefix '{}': at most 128",
                self.client_ipv6_prefix
            ));
        }
        for (key, value) in [
            ("drain_timeout", self.drain_timeout),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            if let Err(why) = check_duration(value, true) {
                errors.push(format!("invalid {key} '{}': {why}", format_duration(value)));
            }
        }
        if let Some(admin) = self
            .admin
            .as_ref()
            .filter(|a| a.listen.socket_path().is_some())
        {
            errors.push(format!(
                "invalid admin address '{}': the admin endpoint listens on TCP; give it HOST:PORT",
                admin.listen
            ));
        }
        errors.extend(duplicate_listeners(&self.listeners));
        for listener in &self.listeners {
            errors.extend(listener_errors(listener));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(once_each(errors)))
        }
    }
}

/// `errors` without repeats, in order: the listeners of a range share its label and origin, so
/// a problem of the range is found on each of its ports and said once.
fn once_each(errors: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    errors
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .collect()
}

/// Why a connection cap cannot be used, if it cannot.
fn bad_cap(max: usize) -> Option<String> {
    check_count(max).err()
}

/// Two listeners on the same address (for example the command line's and a file's), or ranges
/// that overlap each other or a single port: said once per pair, at the first port they share.
fn duplicate_listeners(listeners: &[Listener]) -> Vec<String> {
    let mut seen: BTreeMap<String, &Listener> = BTreeMap::new();
    let mut errors = Vec::new();
    for listener in listeners {
        let key = listener.key();
        let Some(first) = seen.insert(key.clone(), listener) else {
            continue;
        };
        let (label, first_label) = (listener.label(), first.label());
        errors.push(if listener.range.is_none() && first.range.is_none() {
            format!(
                "{}: listen address {key} is already used at {}",
                listener.origin, first.origin
            )
        } else {
            format!(
                "{}: listen {label} overlaps {first_label} at {} (port {} is in both): a port has one listener; give routes sharing ports the same range",
                listener.origin, first.origin, listener.listen.port
            )
        });
        // Said once: the later ports of the same pair repeat it with another port.
        seen.insert(key, first);
    }
    dedup_pairs(errors)
}

/// The overlap messages of one pair of ranges, kept at the first port they share: messages that
/// differ only in the port named are one.
fn dedup_pairs(errors: Vec<String>) -> Vec<String> {
    let mut pairs = std::collections::HashSet::new();
    errors
        .into_iter()
        .filter(|e| {
            let pair = e.split_once(" (port ").map_or(e.as_str(), |(p, _)| p);
            pairs.insert(pair.to_string())
        })
        .collect()
}

fn listener_errors(listener: &Listener) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(max) = listener.max_connections {
        if let Some(why) = bad_cap(max) {
            errors.push(format!(
                "{}: invalid max_connections '{max}' for {}: {why}",
                listener.origin,
                listener.label()
            ));
        }
    }
    if let Err(why) = check_duration(listener.peek_timeout, false) {
        errors.push(format!(
            "{}: invalid peek_timeout '{}' for {}: {why}",
            listener.origin,
            format_duration(listener.peek_timeout),
            listener.label()
        ));
    }
    for route in &listener.routes {
        if let Some(Protocol::Silent { wait }) = route.protocol {
            if wait.is_zero() || wait >= listener.peek_timeout {
                errors.push(format!(
                    "{}: wait={} on {} must be greater than zero and shorter than the listener's peek_timeout ({})",
                    route.origin,
                    format_duration(wait),
                    listener.label(),
                    format_duration(listener.peek_timeout)
                ));
            }
        }
        let place = || format!("route {} on {}", route.label(), listener.label());
        if route.upstreams.is_empty() {
            errors.push(format!("{}: {} has no upstream", route.origin, place()));
        }
        for (key, value) in route_durations(route) {
            if let Err(why) = check_duration(value, false) {
                let value = format_duration(value);
                errors.push(format!(
                    "{}: invalid {key} '{value}' for {}: {why}",
                    route.origin,
                    place()
                ));
            }
        }
        let counts = [("max_fails", route.max_fails)].into_iter().chain(
            route
                .check
                .iter()
                .flat_map(|c| [("rise", c.rise), ("fall", c.fall)]),
        );
        for (key, value) in counts {
            if let Err(why) = check_count(value) {
                errors.push(format!(
                    "{}: invalid {key} '{value}' for {}: {why}",
                    route.origin,
                    place()
                ));
            }
        }
        errors.extend(
            upstream_problems(&route.upstreams)
                .into_iter()
                .chain(backup_problems(&route.upstreams, &route.backups))
                .chain(weight_problems(route))
                .chain(route.check.as_ref().and_then(check_problem))
                .map(|why| format!("{}: {why} ({})", route.origin, place())),
        );
    }
    errors.extend(duplicate_routes(listener));
    errors.extend(
        transport_problems(listener)
            .into_iter()
            .map(|why| format!("{}: {why} (listener {})", listener.origin, listener.key())),
    );
    errors.extend(shadowed_routes(listener));
    errors
}

/// What a listener of its transport cannot have: a UDP listener has no connection to read a
/// PROXY header or a name from, one route, and flows that end by their idle timeout; `max_flows`
/// is UDP's.
fn transport_problems(listener: &Listener) -> Vec<String> {
    let mut out = unix_problems(listener);
    if listener.transport != Transport::Udp {
        if listener.max_flows.is_some() {
            out.push("max_flows is a UDP setting, and this listener is TCP".to_string());
        }
        return out;
    }
    let unix_upstreams = (listener.routes.iter())
        .flat_map(|r| r.upstreams.iter().chain(&r.backups))
        .filter(|u| u.socket_path().is_some());
    for upstream in unix_upstreams {
        out.push(format!(
            "a UDP route cannot forward to a Unix stream socket ({upstream})"
        ));
    }
    if let Some(why) = listener.max_flows.and_then(bad_cap) {
        out.push(format!("invalid max_flows: {why}"));
    }
    if listener.accept_proxy {
        out.push("a UDP listener cannot read a PROXY header (accept_proxy)".into());
    }
    if listener.routes.len() > 1 {
        out.push("a UDP listener has one route: there is no name to choose among them by".into());
    }
    for route in &listener.routes {
        if route.routes_by_name() {
            out.push(format!(
                "a UDP route cannot route by name ({})",
                route.label()
            ));
        }
        let tcp_only = [
            ("proxy_protocol", route.proxy_protocol.is_some()),
            ("check", route.check.is_some()),
            ("backup", !route.backups.is_empty()),
        ];
        for (key, given) in tcp_only {
            if given {
                out.push(format!(
                    "{key}= is a TCP setting; a UDP route cannot take it"
                ));
            }
        }
        if route.idle_timeout.is_none() {
            out.push("a UDP route needs an idle_timeout: its flows end by it".into());
        }
    }
    out
}

/// What a Unix listener cannot be: a UDP one. (The socket file's keys on a route line whose
/// listener has no file are the file parser's error; from the command line they are every
/// listener's default, and a listener without a file has no use for them.)
fn unix_problems(listener: &Listener) -> Vec<String> {
    let mut out = Vec::new();
    if listener.listen.socket_path().is_some() && listener.transport == Transport::Udp {
        out.push("a Unix socket listener carries streams: it cannot be UDP".into());
    }
    out
}

/// A route's durations as `(key, value)`; a timeout that is off is not there. None may be zero:
/// off is `None`, and a zero connect deadline would fail every connect.
fn route_durations(route: &Route) -> impl Iterator<Item = (&'static str, Duration)> {
    [
        ("connect_timeout", Some(route.connect_timeout)),
        ("idle_timeout", route.idle_timeout),
        ("fin_timeout", route.fin_timeout),
        ("fail_timeout", Some(route.fail_timeout)),
        ("check_interval", route.check.as_ref().map(|c| c.interval)),
        (
            "check_timeout",
            route.check.as_ref().and_then(|c| c.timeout),
        ),
        ("resolve_interval", Some(route.resolve_interval)),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value?)))
}

/// Weights that are not one per upstream and backup, or out of 1 to [`MAX_WEIGHT`].
fn weight_problems(route: &Route) -> Vec<String> {
    let members = route.upstreams.len() + route.backups.len();
    let mut problems = Vec::new();
    if !route.weights.is_empty() && route.weights.len() != members {
        problems.push(format!(
            "{} weights for {members} upstreams and backups (one each, or none)",
            route.weights.len()
        ));
    }
    if let Some(bad) = route
        .weights
        .iter()
        .find(|w| !(1..=MAX_WEIGHT).contains(*w))
    {
        problems.push(format!(
            "invalid weight '{bad}': must be from 1 to {MAX_WEIGHT}"
        ));
    }
    problems
}

/// What a check cannot be, beyond its durations and counts: checked more often than
/// [`MIN_CHECK_INTERVAL`], or given a `Host` without being an HTTP check.
fn check_problem(check: &HealthCheck) -> Option<String> {
    if check.interval < MIN_CHECK_INTERVAL && !check.interval.is_zero() {
        return Some(format!(
            "invalid check_interval '{}': must be at least {}",
            format_duration(check.interval),
            format_duration(MIN_CHECK_INTERVAL)
        ));
    }
    match (&check.host, &check.kind) {
        (Some(host), kind) if !matches!(kind, CheckKind::Http { .. }) => Some(format!(
            "'check_host={}' needs an http check (check=http:PATH)",
            super::text::printable(host)
        )),
        _ => None,
    }
}

/// Backups that cannot be connected to (port 0), that repeat a primary, or that are listed twice.
fn backup_problems(primaries: &[HostPort], backups: &[HostPort]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, backup) in backups.iter().enumerate() {
        if backup.lacks_port() {
            problems.push(format!("invalid backup '{backup}': port 0 is not allowed"));
        } else if primaries.contains(backup) {
            problems.push(format!("backup '{backup}' is also a primary upstream"));
        } else if backups[..i].contains(backup) {
            problems.push(format!("backup '{backup}' is listed twice"));
        }
    }
    problems
}

/// Upstreams that cannot be connected to (port 0) or are listed twice in one route: the config
/// file's rule, applied to routes from anywhere. Sorted, so checking is n log n in upstreams.
fn upstream_problems(upstreams: &[HostPort]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut sorted: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
    for (upstream, text) in upstreams.iter().zip(&sorted) {
        if upstream.lacks_port() {
            problems.push(format!("invalid upstream '{text}': port 0 is not allowed"));
        }
    }
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        if pair[0] == pair[1] {
            problems.push(format!("upstream '{}' is listed twice", pair[0]));
        }
    }
    problems
}

/// What must be unique among the routes of one listener: which table the route is in (TLS names
/// or HTTP Host, or a protocol route), its name pattern or protocol, and its ALPN. The one
/// uniqueness check: the tables that routing builds from these (`route::names`,
/// `route::router`) then never hold two entries a client could match alike.
fn route_key(route: &Route) -> (&'static str, Option<String>, Option<&str>) {
    let (kind, pattern) = match (&route.sni, &route.host, &route.protocol) {
        (Some(p), _, _) => ("sni", Some(p.to_string())),
        (None, Some(p), _) => ("host", Some(p.to_string())),
        (None, None, Some(protocol)) => (protocol.key(), Some(protocol.to_string())),
        (None, None, None) => ("", None),
    };
    (kind, pattern, route.alpn.as_deref())
}

fn describe_key(route: &Route) -> String {
    if let Some(protocol) = &route.protocol {
        return protocol.to_string();
    }
    let (kind, pattern, alpn) = route_key(route);
    let mut parts = Vec::new();
    if let Some(p) = pattern {
        parts.push(format!("{kind}={p}"));
    }
    if let Some(a) = alpn {
        parts.push(format!("alpn={a}"));
    }
    if parts.is_empty() {
        "no sni/host/alpn".to_string()
    } else {
        parts.join(" ")
    }
}

/// Protocol routes of one listener that an earlier one hides. Routes by leading bytes
/// (`proto=ssh`, whose clients start with `SSH-`, and `prefix=`) are tried in the order written,
/// so one whose bytes start with an earlier one's can take no client. Two alike are duplicates,
/// which [`duplicate_routes`] reports.
fn shadowed_routes(listener: &Listener) -> Vec<String> {
    let by_bytes: Vec<(&Route, &[u8])> = (listener.routes.iter())
        .filter_map(|r| Some((r, r.protocol.as_ref()?.leading_bytes()?)))
        .collect();
    let mut errors = Vec::new();
    for (at, (later, bytes)) in by_bytes.iter().enumerate() {
        let hidden_by = by_bytes[..at]
            .iter()
            .find(|(first, lead)| bytes.starts_with(lead) && first.protocol != later.protocol);
        if let Some((first, _)) = hidden_by {
            errors.push(format!(
                "{}: route {} on {} can never match: {} has {}, which is tried first and takes every client this one would",
                later.origin,
                later.label(),
                listener.label(),
                earlier_place(&first.origin, &later.origin),
                first.label()
            ));
        }
    }
    errors
}

/// Routes of one listener with the key of an earlier one, found through a map from each key to
/// the first route with it: n log n in routes (20,000 `sni=` routes are checked in milliseconds).
fn duplicate_routes(listener: &Listener) -> Vec<String> {
    let mut first_with: BTreeMap<_, &Route> = BTreeMap::new();
    let mut errors = Vec::new();
    for later in &listener.routes {
        let (kind, pattern, alpn) = route_key(later);
        let key = (kind, pattern, alpn);
        match first_with.get(&key) {
            Some(first) => errors.push(format!(
                "{}: duplicate route on {}: {} already has one with {}",
                later.origin,
                listener.label(),
                earlier_place(&first.origin, &later.origin),
                describe_key(later)
            )),
            None => {
                first_with.insert(key, later);
            }
        }
    }
    errors
}

/// Where the first of two things was configured, as seen from the second: `line N` within one
/// file, the full origin otherwise.
fn earlier_place(first: &str, later: &str) -> String {
    match (first.rsplit_once(':'), later.rsplit_once(':')) {
        (Some((file_a, line)), Some((file_b, _)))
            if file_a == file_b && line.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("line {line}")
        }
        _ => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(routes: Vec<Route>) -> Listener {
        let mut listener = Listener::new("127.0.0.1:443".parse().unwrap());
        listener.routes = routes;
        listener
    }

    fn route(origin: &str, sni: Option<&str>) -> Route {
        let mut route = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        route.origin = origin.into();
        route.sni = sni.map(|p| p.parse().unwrap());
        route
    }

    fn errors(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(Error::Config(lines)) => lines,
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn a_second_default_route_is_named_with_both_places() {
        let mut config = Config::default();
        config.listeners.push(listener(vec![
            route("--sni", None),
            route("f.conf:3", None),
        ]));
        assert_eq!(
            errors(&config),
            ["f.conf:3: duplicate route on 127.0.0.1:443: --sni already has one with no sni/host/alpn"]
        );
    }

    fn protocol_route(origin: &str, key: &str, value: &str) -> Route {
        let mut route = route(origin, None);
        route.protocol = Some(Protocol::parse(key, value).unwrap());
        route
    }

    #[test]
    fn a_protocol_route_that_can_never_match_is_named_with_the_one_that_hides_it() {
        let mut config = Config::default();
        config.listeners.push(listener(vec![
            protocol_route("f.conf:1", "proto", "tls"),
            protocol_route("f.conf:2", "prefix", r"\x05"),
            protocol_route("f.conf:3", "prefix", r"\x05\x01"),
            protocol_route("f.conf:4", "prefix", "SSH"),
            protocol_route("f.conf:5", "proto", "ssh"),
            protocol_route("f.conf:6", "proto", "tls"),
            protocol_route("f.conf:7", "prefix", r"\x05"),
            protocol_route("f.conf:8", "prefix", "SSX"),
        ]));
        assert_eq!(
            errors(&config),
            [
                "f.conf:6: duplicate route on 127.0.0.1:443: line 1 already has one with proto=tls",
                "f.conf:7: duplicate route on 127.0.0.1:443: line 2 already has one with prefix=\\x05",
                "f.conf:3: route prefix=\\x05\\x01 on 127.0.0.1:443 can never match: line 2 has prefix=\\x05, which is tried first and takes every client this one would",
                "f.conf:5: route proto=ssh on 127.0.0.1:443 can never match: line 4 has prefix=SSH, which is tried first and takes every client this one would",
            ]
        );
    }

    #[test]
    fn the_wait_of_a_silent_route_is_shorter_than_the_peek_timeout() {
        let mut config = Config::default();
        let mut silent = route("f.conf:2", None);
        silent.protocol = Some(Protocol::Silent {
            wait: Duration::from_secs(10),
        });
        let mut l = listener(vec![route("f.conf:1", None), silent]);
        l.peek_timeout = Duration::from_secs(10);
        config.listeners.push(l);
        assert_eq!(
            errors(&config),
            ["f.conf:2: wait=10s on 127.0.0.1:443 must be greater than zero and shorter than the listener's peek_timeout (10s)"]
        );
        config.listeners[0].peek_timeout = Duration::from_secs(11);
        assert_eq!(errors(&config), Vec::<String>::new());
    }

    #[test]
    fn a_backup_may_not_repeat_a_primary_or_another_backup_and_health_keys_are_bounded() {
        let mut config = Config::default();
        let mut r = route("f.conf:2", None);
        r.backups = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:2"]
            .map(|b| b.parse().unwrap())
            .to_vec();
        r.max_fails = 0;
        r.fail_timeout = Duration::ZERO;
        config.listeners.push(listener(vec![r]));
        assert_eq!(
            errors(&config),
            [
                "f.conf:2: invalid fail_timeout '0s' for route default on 127.0.0.1:443: must be greater than zero",
                "f.conf:2: invalid max_fails '0' for route default on 127.0.0.1:443: must be at least 1",
                "f.conf:2: backup '127.0.0.1:1' is also a primary upstream (route default on 127.0.0.1:443)",
                "f.conf:2: backup '127.0.0.1:2' is listed twice (route default on 127.0.0.1:443)",
            ]
        );
    }

    #[test]
    fn checks_and_weights_are_bounded() {
        let mut config = Config::default();
        let mut r = route("f.conf:2", None);
        r.weights = vec![2, 1];
        let mut given = crate::config::Overrides::default();
        given.set("check", "connect").unwrap();
        given.set("check_interval", "50ms").unwrap();
        given.set("check_host", "a.example").unwrap();
        let settings = crate::config::Settings::default().merge(&given);
        r.check = Route::with(Vec::new(), &settings, "code".into()).check;
        if let Some(check) = &mut r.check {
            check.rise = 0;
        }
        let mut zero = route("f.conf:3", Some("a.example"));
        zero.weights = vec![0];
        config.listeners.push(listener(vec![r, zero]));
        assert_eq!(
            errors(&config),
            [
                "f.conf:2: invalid rise '0' for route default on 127.0.0.1:443: must be at least 1",
                "f.conf:2: 2 weights for 1 upstreams and backups (one each, or none) (route default on 127.0.0.1:443)",
                "f.conf:2: invalid check_interval '50ms': must be at least 100ms (route default on 127.0.0.1:443)",
                "f.conf:3: invalid weight '0': must be from 1 to 256 (route sni=a.example on 127.0.0.1:443)",
            ]
        );
        let Some(check) = &mut config.listeners[0].routes[0].check else {
            unreachable!()
        };
        check.interval = Duration::from_secs(1);
        check.rise = 1;
        config.listeners[0].routes[0].weights.clear();
        config.listeners[0].routes[1].weights.clear();
        assert_eq!(
            errors(&config),
            ["f.conf:2: 'check_host=a.example' needs an http check (check=http:PATH) (route default on 127.0.0.1:443)"]
        );
    }

    #[test]
    fn two_listeners_on_one_address() {
        let mut config = Config::default();
        let mut first = listener(vec![route("command line", None)]);
        first.origin = "command line".into();
        let mut second = first.clone();
        second.origin = "f.conf:1".into();
        config.listeners = vec![first, second];
        assert_eq!(
            errors(&config),
            ["f.conf:1: listen address 127.0.0.1:443 is already used at command line"]
        );
    }

    #[test]
    fn caps_of_zero_and_routes_without_upstreams_are_refused() {
        let mut config = Config {
            max_connections: Some(0),
            ..Config::default()
        };
        let mut empty = route("code", Some("a.example"));
        empty.upstreams.clear();
        let mut l = listener(vec![empty]);
        l.max_connections = Some(0);
        config.listeners.push(l);
        let found = errors(&config);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0], "invalid max_connections '0': must be at least 1");
        assert!(found[2].contains("route sni=a.example on 127.0.0.1:443 has no upstream"));
    }

    #[test]
    fn a_cap_too_large_to_hold_is_refused_not_allocated() {
        let config = Config {
            max_connections: Some(usize::MAX),
            ..Config::default()
        };
        assert_eq!(
            errors(&config),
            [format!(
                "invalid max_connections '{}': must be at most 1048576",
                usize::MAX
            )]
        );
    }

    #[test]
    fn durations_out_of_bounds_and_bad_upstreams_are_refused_wherever_they_come_from() {
        let mut config = Config {
            drain_timeout: Duration::MAX,
            ..Config::default()
        };
        let mut bad = route("code", None);
        bad.connect_timeout = Duration::ZERO;
        bad.idle_timeout = Some(Duration::from_secs(366 * 24 * 3600));
        bad.upstreams = ["127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:1"]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect();
        let mut l = listener(vec![bad]);
        l.peek_timeout = Duration::ZERO;
        config.listeners.push(l);
        let found = errors(&config);
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(found[0].starts_with("invalid drain_timeout '"), "{found:?}");
        assert!(found[0].ends_with("': must be at most 8760h (365 days)"));
        assert_eq!(
            found[1],
            "code: invalid peek_timeout '0s' for 127.0.0.1:443: must be greater than zero"
        );
        assert_eq!(found[2], "code: invalid connect_timeout '0s' for route default on 127.0.0.1:443: must be greater than zero");
        assert_eq!(found[3], "code: invalid idle_timeout '8784h' for route default on 127.0.0.1:443: must be at most 8760h (365 days)");
        assert_eq!(found[4], "code: invalid upstream '127.0.0.1:0': port 0 is not allowed (route default on 127.0.0.1:443)");
        assert_eq!(
            found[5],
            "code: upstream '127.0.0.1:1' is listed twice (route default on 127.0.0.1:443)"
        );
    }

    #[test]
    fn earlier_places_are_short_within_one_file() {
        assert_eq!(earlier_place("a.conf:1", "a.conf:9"), "line 1");
        assert_eq!(earlier_place("a.conf:1", "b.conf:9"), "a.conf:1");
        assert_eq!(earlier_place("command line", "a.conf:9"), "command line");
    }
}
