//! `GET /metrics`: every counter in the Prometheus text exposition format (version 0.0.4), each
//! family with its HELP and TYPE. Label values come from the configuration only.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::time::UNIX_EPOCH;

use crate::config::range::ip_with_ports;
use crate::health::marks::Condition;
use crate::health::member::{Member, CHECK_BUCKETS};
use crate::relay::{splice, Direction, End};
use crate::serve::listener::NO_ROUTE;
use crate::serve::metrics::{ConnectFailure, Disposition, UdpDrop, CONNECT_BUCKETS, PROTOCOLS};
use crate::serve::status::Shared;

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family as declared once: every name the exposition writes comes from one of these,
/// so a typo cannot split a series in two.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

/// The type a family declares.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

const BUILD_INFO: Family = Family {
    name: "tcp_router_build_info",
    kind: Kind::Gauge,
    help: "Always 1; the version is a label.",
};

const PROCESS_START_TIME_SECONDS: Family = Family {
    name: "process_start_time_seconds",
    kind: Kind::Gauge,
    help: "When the process started serving, in seconds since the Unix epoch.",
};

const PROCESS_OPEN_FDS: Family = Family {
    name: "process_open_fds",
    kind: Kind::Gauge,
    help: "Open file descriptors.",
};

const THREADS: Family = Family {
    name: "tcp_router_threads",
    kind: Kind::Gauge,
    help: "Threads of the process.",
};

const SPLICE_IN_USE: Family = Family {
    name: "tcp_router_splice_in_use",
    kind: Kind::Gauge,
    help: "1 if bulk bytes move through splice(2), 0 if through buffers (not tried yet, refused by the kernel, or turned off).",
};

const RELOADS_TOTAL: Family = Family {
    name: "tcp_router_reloads_total",
    kind: Kind::Counter,
    help: "Reconfigurations asked for (SIGHUP), whether or not they took effect.",
};

const RELOADS_SUCCEEDED_TOTAL: Family = Family {
    name: "tcp_router_reloads_succeeded_total",
    kind: Kind::Counter,
    help: "Reconfigurations that took effect.",
};

const LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: Family = Family {
    name: "tcp_router_last_reload_success_timestamp_seconds",
    kind: Kind::Gauge,
    help:
        "When the last reconfiguration took effect, in seconds since the Unix epoch (0: none yet).",
};

const ACCEPT_ERRORS_TOTAL: Family = Family {
    name: "tcp_router_accept_errors_total",
    kind: Kind::Counter,
    help: "Failed accept(2) calls by kind (emfile, enfile, enobufs, enomem, other); a client that left before being accepted is not counted.",
};

const STOPPING: Family = Family {
    name: "tcp_router_stopping",
    kind: Kind::Gauge,
    help: "1 from the first moment of a graceful stop (when /ready answers 503).",
};

const CONNECTIONS_ACCEPTED_TOTAL: Family = Family {
    name: "tcp_router_connections_accepted_total",
    kind: Kind::Counter,
    help: "Clients accepted, by listener.",
};

const PROTOCOL_CONNECTIONS_TOTAL: Family = Family {
    name: "tcp_router_protocol_connections_total",
    kind: Kind::Counter,
    help: "Connections on listeners that read first bytes, by listener and the protocol their first bytes showed when a route was chosen (tls, http, ssh, prefix, regex, silent; other: none of these).",
};

const CONNECTIONS_ENDED_TOTAL: Family = Family {
    name: "tcp_router_connections_ended_total",
    kind: Kind::Counter,
    help: "Connections ended, by listener, route (none: ended before one was chosen) and result.",
};

const CONNECTIONS_ACTIVE: Family = Family {
    name: "tcp_router_connections_active",
    kind: Kind::Gauge,
    help: "Connections open now, by listener and route (none: no route chosen yet).",
};

const CONNECTIONS_MAX: Family = Family {
    name: "tcp_router_connections_max",
    kind: Kind::Gauge,
    help: "The cap on connections served at once, across all listeners.",
};

const ACCEPT_PAUSED: Family = Family {
    name: "tcp_router_accept_paused",
    kind: Kind::Gauge,
    help: "1 while every connection slot is busy and new clients wait in the listeners' backlogs.",
};

const RELAYED_BYTES_TOTAL: Family = Family {
    name: "tcp_router_relayed_bytes_total",
    kind: Kind::Counter,
    help: "Bytes relayed, by listener, route and direction, counted while they move.",
};

const DIRECTIONS_ENDED_TOTAL: Family = Family {
    name: "tcp_router_directions_ended_total",
    kind: Kind::Counter,
    help: "Directions of relayed connections ended, by listener, route, direction and how (eof, reset, timeout, error, shutdown, panic).",
};

const UPSTREAM_CONNECT_ATTEMPTS_TOTAL: Family = Family {
    name: "tcp_router_upstream_connect_attempts_total",
    kind: Kind::Counter,
    help: "Connect attempts, by listener, route and upstream (as written); each address a name resolves to counts once.",
};

const UPSTREAM_CONNECT_FAILURES_TOTAL: Family = Family {
    name: "tcp_router_upstream_connect_failures_total",
    kind: Kind::Counter,
    help: "Failed connect attempts, by listener, route, upstream and reason (refused, timeout, unreachable, not_resolved, error).",
};

const CONNECT_DURATION_SECONDS: Family = Family {
    name: "tcp_router_upstream_connect_duration_seconds",
    kind: Kind::Histogram,
    help: "Time to connect to an upstream, for the attempts that succeeded.",
};

const UPSTREAM_COOLING_DOWN: Family = Family {
    name: "tcp_router_upstream_cooling_down",
    kind: Kind::Gauge,
    help: "1 while an upstream that just failed is tried only after the healthy ones.",
};

const UPSTREAM_UP: Family = Family {
    name: "tcp_router_upstream_up",
    kind: Kind::Gauge,
    help: "1 if the member (one address of an upstream) is up, 0 if it is down, cooling or not checked yet.",
};

const UPSTREAM_ACTIVE_CONNECTIONS: Family = Family {
    name: "tcp_router_upstream_active_connections",
    kind: Kind::Gauge,
    help: "Connections open to the member through the route.",
};

const UPSTREAM_CHECKS_TOTAL: Family = Family {
    name: "tcp_router_upstream_checks_total",
    kind: Kind::Counter,
    help: "Active checks of the member, by result (passed, failed).",
};

const UPSTREAM_CHECK_DURATION_SECONDS: Family = Family {
    name: "tcp_router_upstream_check_duration_seconds",
    kind: Kind::Histogram,
    help: "How long the member's active checks took, passed or failed.",
};

const UPSTREAM_TRANSITIONS_TOTAL: Family = Family {
    name: "tcp_router_upstream_transitions_total",
    kind: Kind::Counter,
    help: "Changes of the member's state, by the state entered (up; down, including cooling).",
};

const UPSTREAM_RESOLUTIONS_TOTAL: Family = Family {
    name: "tcp_router_upstream_resolutions_total",
    kind: Kind::Counter,
    help: "Lookups of an upstream's name in the background, by result (ok, failed).",
};

const UDP_FLOWS_ACTIVE: Family = Family {
    name: "tcp_router_udp_flows_active",
    kind: Kind::Gauge,
    help: "UDP flows open now (one per client address), by UDP listener.",
};

const UDP_FLOWS_TOTAL: Family = Family {
    name: "tcp_router_udp_flows_total",
    kind: Kind::Counter,
    help: "UDP flows set up, by UDP listener.",
};

const UDP_FLOWS_EVICTED_TOTAL: Family = Family {
    name: "tcp_router_udp_flows_evicted_total",
    kind: Kind::Counter,
    help: "UDP flows ended to make room for a new client (the listener's max_flows reached).",
};

const UDP_DATAGRAMS_TOTAL: Family = Family {
    name: "tcp_router_udp_datagrams_total",
    kind: Kind::Counter,
    help: "UDP datagrams relayed, by listener and direction.",
};

const UDP_BYTES_TOTAL: Family = Family {
    name: "tcp_router_udp_bytes_total",
    kind: Kind::Counter,
    help: "Bytes of the UDP datagrams relayed, by listener and direction.",
};

const UDP_DATAGRAMS_DROPPED_TOTAL: Family = Family {
    name: "tcp_router_udp_datagrams_dropped_total",
    kind: Kind::Counter,
    help: "UDP datagrams not relayed, by reason (oversize: larger than the buffer or the path; \
           denied: allow/deny; send_failed).",
};

/// The exposition being written.
struct Exposition {
    out: String,
}

impl Exposition {
    /// The family's HELP and TYPE lines, before its samples.
    fn family(&mut self, family: &Family) {
        let Family { name, kind, help } = family;
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, family: &Family, labels: &[(&str, &str)], value: impl Display) {
        self.sample_of(family, "", labels, value);
    }

    /// A sample of one of a histogram's series (`_bucket`, `_sum`, `_count`), or with an empty
    /// `suffix`, of the family itself.
    fn sample_of(
        &mut self,
        family: &Family,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) {
        self.out.push_str(family.name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub(crate) fn render(shared: &Shared) -> String {
    let mut e = Exposition { out: String::new() };
    process(&mut e, shared);
    connections(&mut e, shared);
    traffic(&mut e, shared);
    upstreams(&mut e, shared);
    udp(&mut e, shared);
    e.out
}

fn udp(e: &mut Exposition, shared: &Shared) {
    let listeners = shared.metrics.udp_listeners();
    let plain = [
        (&UDP_FLOWS_ACTIVE, 0),
        (&UDP_FLOWS_TOTAL, 1),
        (&UDP_FLOWS_EVICTED_TOTAL, 2),
    ];
    for (family, which) in plain {
        e.family(family);
        for (listener, stats) in &listeners {
            let counter = [&stats.flows_active, &stats.flows, &stats.evicted][which];
            e.sample(family, &[("listener", listener)], load(counter));
        }
    }
    for (family, bytes) in [(&UDP_DATAGRAMS_TOTAL, false), (&UDP_BYTES_TOTAL, true)] {
        e.family(family);
        for (listener, stats) in &listeners {
            for direction in Direction::BOTH {
                let (datagrams, octets) = stats.relayed_count(direction);
                let labels = [
                    ("listener", listener.as_str()),
                    ("direction", direction.name()),
                ];
                e.sample(family, &labels, if bytes { octets } else { datagrams });
            }
        }
    }
    e.family(&UDP_DATAGRAMS_DROPPED_TOTAL);
    for (listener, stats) in &listeners {
        for (index, reason) in UdpDrop::NAMES.iter().enumerate() {
            let labels = [("listener", listener.as_str()), ("reason", reason)];
            e.sample(
                &UDP_DATAGRAMS_DROPPED_TOTAL,
                &labels,
                stats.dropped_count(index),
            );
        }
    }
}

fn process(e: &mut Exposition, shared: &Shared) {
    let metrics = &shared.metrics;
    e.family(&BUILD_INFO);
    e.sample(&BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1);
    e.family(&PROCESS_START_TIME_SECONDS);
    let started = metrics
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    e.sample(&PROCESS_START_TIME_SECONDS, &[], started);
    e.family(&PROCESS_OPEN_FDS);
    e.sample(&PROCESS_OPEN_FDS, &[], open_fds());
    e.family(&THREADS);
    e.sample(&THREADS, &[], threads());
    e.family(&SPLICE_IN_USE);
    e.sample(&SPLICE_IN_USE, &[], u8::from(splice::in_use()));
    e.family(&RELOADS_TOTAL);
    e.sample(&RELOADS_TOTAL, &[], load(&metrics.reloads));
    e.family(&RELOADS_SUCCEEDED_TOTAL);
    e.sample(&RELOADS_SUCCEEDED_TOTAL, &[], load(&metrics.reloads_ok));
    e.family(&LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS);
    e.sample(
        &LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
        &[],
        load(&metrics.last_reload_ok),
    );
    e.family(&ACCEPT_ERRORS_TOTAL);
    for (kind, count) in metrics.accept_errors() {
        e.sample(&ACCEPT_ERRORS_TOTAL, &[("kind", kind)], count);
    }
    e.family(&STOPPING);
    e.sample(&STOPPING, &[], u8::from(shared.is_stopping()));
}

fn connections(e: &mut Exposition, shared: &Shared) {
    let metrics = &shared.metrics;
    e.family(&CONNECTIONS_ACCEPTED_TOTAL);
    for (listener, stats) in metrics.listeners() {
        e.sample(
            &CONNECTIONS_ACCEPTED_TOTAL,
            &[("listener", &listener)],
            load(&stats.accepted),
        );
    }
    e.family(&PROTOCOL_CONNECTIONS_TOTAL);
    for (listener, stats) in metrics.listeners() {
        let Some(counts) = stats.protocol_counts() else {
            continue;
        };
        for (protocol, count) in PROTOCOLS.iter().zip(counts) {
            let labels = [("listener", listener.as_str()), ("protocol", protocol)];
            e.sample(&PROTOCOL_CONNECTIONS_TOTAL, &labels, count);
        }
    }
    e.family(&CONNECTIONS_ENDED_TOTAL);
    for ((listener, route), stats) in metrics.routes() {
        for (index, result) in Disposition::NAMES.iter().enumerate() {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("result", result),
            ];
            e.sample(&CONNECTIONS_ENDED_TOTAL, &labels, stats.ended_count(index));
        }
    }
    e.family(&CONNECTIONS_ACTIVE);
    let mut active: BTreeMap<(String, String), u64> = metrics
        .routes()
        .into_iter()
        .map(|(key, _)| (key, 0))
        .collect();
    for record in shared.registry.snapshot() {
        let listener = record.listener.config.label();
        let route = record
            .route()
            .map_or_else(|| NO_ROUTE.to_string(), |r| r.config.label());
        *active.entry((listener, route)).or_default() += 1;
    }
    for ((listener, route), count) in active {
        e.sample(
            &CONNECTIONS_ACTIVE,
            &[("listener", &listener), ("route", &route)],
            count,
        );
    }
    e.family(&CONNECTIONS_MAX);
    e.sample(&CONNECTIONS_MAX, &[], shared.permits.capacity());
    e.family(&ACCEPT_PAUSED);
    e.sample(&ACCEPT_PAUSED, &[], u8::from(shared.is_paused()));
}

fn traffic(e: &mut Exposition, shared: &Shared) {
    let routes = shared.metrics.routes();
    e.family(&RELAYED_BYTES_TOTAL);
    for ((listener, route), stats) in &routes {
        for direction in Direction::BOTH {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("direction", direction.name()),
            ];
            e.sample(&RELAYED_BYTES_TOTAL, &labels, stats.traffic.get(direction));
        }
    }
    e.family(&DIRECTIONS_ENDED_TOTAL);
    for ((listener, route), stats) in &routes {
        if route == NO_ROUTE {
            continue;
        }
        for direction in Direction::BOTH {
            for (kind, end) in End::KINDS.iter().enumerate() {
                let labels = [
                    ("listener", listener.as_str()),
                    ("route", route.as_str()),
                    ("direction", direction.name()),
                    ("end", end),
                ];
                e.sample(
                    &DIRECTIONS_ENDED_TOTAL,
                    &labels,
                    stats.direction_count(direction as usize, kind),
                );
            }
        }
    }
}

fn upstreams(e: &mut Exposition, shared: &Shared) {
    let upstreams = shared.metrics.upstreams();
    e.family(&UPSTREAM_CONNECT_ATTEMPTS_TOTAL);
    for ((listener, route, upstream), stats) in &upstreams {
        let labels = [
            ("listener", listener.as_str()),
            ("route", route.as_str()),
            ("upstream", upstream.as_str()),
        ];
        e.sample(
            &UPSTREAM_CONNECT_ATTEMPTS_TOTAL,
            &labels,
            load(&stats.attempts),
        );
    }
    e.family(&UPSTREAM_CONNECT_FAILURES_TOTAL);
    for ((listener, route, upstream), stats) in &upstreams {
        for (index, reason) in ConnectFailure::NAMES.iter().enumerate() {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("upstream", upstream.as_str()),
                ("reason", reason),
            ];
            e.sample(
                &UPSTREAM_CONNECT_FAILURES_TOTAL,
                &labels,
                stats.failure_count(index),
            );
        }
    }
    e.family(&CONNECT_DURATION_SECONDS);
    for ((listener, route, upstream), stats) in &upstreams {
        let (cumulative, sum) = stats.histogram();
        let count = cumulative.last().copied().unwrap_or(0);
        let bounds = CONNECT_BUCKETS.iter().map(|b| b.to_string());
        for (le, value) in bounds.chain(["+Inf".to_string()]).zip(&cumulative) {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("upstream", upstream.as_str()),
                ("le", le.as_str()),
            ];
            e.sample_of(&CONNECT_DURATION_SECONDS, "_bucket", &labels, value);
        }
        let labels = [
            ("listener", listener.as_str()),
            ("route", route.as_str()),
            ("upstream", upstream.as_str()),
        ];
        e.sample_of(&CONNECT_DURATION_SECONDS, "_sum", &labels, sum);
        e.sample_of(&CONNECT_DURATION_SECONDS, "_count", &labels, count);
    }
    let groups = member_groups(shared);
    e.family(&UPSTREAM_COOLING_DOWN);
    for_each_group(&groups, |labels, members| {
        let cooling = members.iter().any(|m| m.state() == Condition::Cooling);
        e.sample(&UPSTREAM_COOLING_DOWN, labels, u8::from(cooling));
    });
    self::members(e, &groups);
    resolutions(e, shared);
}

/// The labels of a member series: listener, route, upstream, address.
type MemberKey = [String; 4];

/// The members of every route now configured, by their labels: one member each, except on the
/// ports of a range, whose members of one upstream share the range's labels (the listen range,
/// the upstream as written, the address with the upstream range's ports, as in
/// `10.0.0.1:7000-7099`), so a range is one series whatever its length.
fn member_groups(shared: &Shared) -> BTreeMap<MemberKey, Vec<std::sync::Arc<Member>>> {
    let mut groups: BTreeMap<MemberKey, Vec<_>> = BTreeMap::new();
    for (_, state) in shared.listeners() {
        let listener = state.config.label();
        let range = state.config.range.as_ref();
        for (index, route) in state.routes.iter().enumerate() {
            let label = route.config.label();
            for (i, entry) in route.roster.entries().iter().enumerate() {
                let written = range.and_then(|r| r.member(index, i));
                let upstream =
                    written.map_or_else(|| entry.target.upstream.to_string(), ToString::to_string);
                let ports = written.and_then(|w| w.range);
                for member in entry.target.members().iter() {
                    let address = match (member.addr.ip(), ports) {
                        (Some(addr), Some(ports)) => ip_with_ports(addr.ip(), ports),
                        _ => member.addr.to_string(),
                    };
                    let key = [listener.clone(), label.clone(), upstream.clone(), address];
                    let group = groups.entry(key).or_default();
                    // The ports of a range to one upstream port share its member: count it once.
                    if !group.iter().any(|m| std::sync::Arc::ptr_eq(m, member)) {
                        group.push(std::sync::Arc::clone(member));
                    }
                }
            }
        }
    }
    groups
}

/// Calls `f` with the labels of each group of members and the members.
fn for_each_group(
    groups: &BTreeMap<MemberKey, Vec<std::sync::Arc<Member>>>,
    mut f: impl FnMut(&[(&str, &str); 4], &[std::sync::Arc<Member>]),
) {
    for ([listener, route, upstream, address], members) in groups {
        let labels = [
            ("listener", listener.as_str()),
            ("route", route.as_str()),
            ("upstream", upstream.as_str()),
            ("address", address.as_str()),
        ];
        f(&labels, members);
    }
}

/// The sum of `value` over `members`.
fn total(members: &[std::sync::Arc<Member>], value: impl Fn(&Member) -> u64) -> u64 {
    members.iter().map(|m| value(m)).sum()
}

/// Each member's state, open connections, checks and changes. A group of a range is up only
/// when every port's member is up; its counts are the sums.
fn members(e: &mut Exposition, groups: &BTreeMap<MemberKey, Vec<std::sync::Arc<Member>>>) {
    e.family(&UPSTREAM_UP);
    for_each_group(groups, |labels, members| {
        let up = members.iter().all(|m| m.state() == Condition::Up);
        e.sample(&UPSTREAM_UP, labels, u8::from(up));
    });
    e.family(&UPSTREAM_ACTIVE_CONNECTIONS);
    for_each_group(groups, |labels, members| {
        let active = total(members, |m| m.active() as u64);
        e.sample(&UPSTREAM_ACTIVE_CONNECTIONS, labels, active);
    });
    e.family(&UPSTREAM_CHECKS_TOTAL);
    for_each_group(groups, |labels, members| {
        for (result, count) in [
            ("passed", total(members, |m| load(&m.stats.checks_passed))),
            ("failed", total(members, |m| load(&m.stats.checks_failed))),
        ] {
            let [a, b, c, d] = *labels;
            e.sample(
                &UPSTREAM_CHECKS_TOTAL,
                &[a, b, c, d, ("result", result)],
                count,
            );
        }
    });
    e.family(&UPSTREAM_CHECK_DURATION_SECONDS);
    for_each_group(groups, |labels, members| {
        let (cumulative, sum) = check_histogram(members);
        let bounds = CHECK_BUCKETS.iter().map(|b| b.to_string());
        for (le, value) in bounds.chain(["+Inf".to_string()]).zip(&cumulative) {
            let [a, b, c, d] = *labels;
            let labels = [a, b, c, d, ("le", le.as_str())];
            e.sample_of(&UPSTREAM_CHECK_DURATION_SECONDS, "_bucket", &labels, value);
        }
        let count = cumulative.last().copied().unwrap_or(0);
        e.sample_of(&UPSTREAM_CHECK_DURATION_SECONDS, "_sum", labels, sum);
        e.sample_of(&UPSTREAM_CHECK_DURATION_SECONDS, "_count", labels, count);
    });
    e.family(&UPSTREAM_TRANSITIONS_TOTAL);
    for_each_group(groups, |labels, members| {
        for (to, count) in [
            ("up", total(members, |m| load(&m.stats.went_up))),
            ("down", total(members, |m| load(&m.stats.went_down))),
        ] {
            let [a, b, c, d] = *labels;
            e.sample(
                &UPSTREAM_TRANSITIONS_TOTAL,
                &[a, b, c, d, ("to", to)],
                count,
            );
        }
    });
}

/// The check-time histogram of `members` together: cumulative bucket counts and the sum.
fn check_histogram(members: &[std::sync::Arc<Member>]) -> (Vec<u64>, f64) {
    let mut cumulative: Vec<u64> = Vec::new();
    let mut sum = 0.0;
    for member in members {
        let (counts, seconds) = member.stats.check_histogram();
        cumulative.resize(counts.len().max(cumulative.len()), 0);
        for (total, count) in cumulative.iter_mut().zip(counts) {
            *total += count;
        }
        sum += seconds;
    }
    (cumulative, sum)
}

/// Each name's lookups, summed over the ports of a range (which look the same name up alike).
fn resolutions(e: &mut Exposition, shared: &Shared) {
    let mut counts: BTreeMap<[String; 3], [u64; 2]> = BTreeMap::new();
    for (_, state) in shared.listeners() {
        let listener = state.config.label();
        let range = state.config.range.as_ref();
        for (index, route) in state.routes.iter().enumerate() {
            let label = route.config.label();
            for (i, entry) in route.roster.entries().iter().enumerate() {
                if !entry.target.is_name() {
                    continue;
                }
                let upstream = (range.and_then(|r| r.member(index, i)))
                    .map_or_else(|| entry.target.upstream.to_string(), ToString::to_string);
                let count = counts
                    .entry([listener.clone(), label.clone(), upstream])
                    .or_default();
                count[0] += load(&entry.target.resolved);
                count[1] += load(&entry.target.unresolved);
            }
        }
    }
    e.family(&UPSTREAM_RESOLUTIONS_TOTAL);
    for ([listener, route, upstream], [ok, failed]) in &counts {
        for (result, count) in [("ok", ok), ("failed", failed)] {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("upstream", upstream.as_str()),
                ("result", result),
            ];
            e.sample(&UPSTREAM_RESOLUTIONS_TOTAL, &labels, *count);
        }
    }
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// Open descriptors, counted in /proc/self/fd (0 where there is no /proc).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count().saturating_sub(1))
}

/// Threads, from /proc/self/status (0 where there is no /proc).
fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::{Config, Listener, Route, Transport};
    use crate::serve::Server;

    /// Every family, in the order the exposition writes them.
    const FAMILIES: &[&Family] = &[
        &BUILD_INFO,
        &PROCESS_START_TIME_SECONDS,
        &PROCESS_OPEN_FDS,
        &THREADS,
        &SPLICE_IN_USE,
        &RELOADS_TOTAL,
        &RELOADS_SUCCEEDED_TOTAL,
        &LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
        &ACCEPT_ERRORS_TOTAL,
        &STOPPING,
        &CONNECTIONS_ACCEPTED_TOTAL,
        &PROTOCOL_CONNECTIONS_TOTAL,
        &CONNECTIONS_ENDED_TOTAL,
        &CONNECTIONS_ACTIVE,
        &CONNECTIONS_MAX,
        &ACCEPT_PAUSED,
        &RELAYED_BYTES_TOTAL,
        &DIRECTIONS_ENDED_TOTAL,
        &UPSTREAM_CONNECT_ATTEMPTS_TOTAL,
        &UPSTREAM_CONNECT_FAILURES_TOTAL,
        &CONNECT_DURATION_SECONDS,
        &UPSTREAM_COOLING_DOWN,
        &UPSTREAM_UP,
        &UPSTREAM_ACTIVE_CONNECTIONS,
        &UPSTREAM_CHECKS_TOTAL,
        &UPSTREAM_CHECK_DURATION_SECONDS,
        &UPSTREAM_TRANSITIONS_TOTAL,
        &UPSTREAM_RESOLUTIONS_TOTAL,
        &UDP_FLOWS_ACTIVE,
        &UDP_FLOWS_TOTAL,
        &UDP_FLOWS_EVICTED_TOTAL,
        &UDP_DATAGRAMS_TOTAL,
        &UDP_BYTES_TOTAL,
        &UDP_DATAGRAMS_DROPPED_TOTAL,
    ];

    /// The exposition of a server with one listener, one route and two upstreams (one named),
    /// each family with a sample.
    fn exposition() -> String {
        let mut listener = Listener::new("127.0.0.1:0".parse().unwrap());
        let mut route = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        route.backups = vec!["localhost:1".parse().unwrap()];
        let mut ssh = Route::new(vec!["127.0.0.1:2".parse().unwrap()]);
        ssh.protocol = Some(crate::config::Protocol::Ssh);
        listener.routes = vec![route, ssh];
        let mut udp = Listener::new("127.0.0.1:0".parse().unwrap());
        udp.transport = Transport::Udp;
        let mut route = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        route.idle_timeout = Some(std::time::Duration::from_secs(1));
        udp.routes = vec![route];
        let config = Config {
            listeners: vec![listener, udp],
            ..Config::default()
        };
        let server = Server::bind(&config, Vec::new()).unwrap();
        let shared = server.shared();
        shared
            .metrics
            .accept_failed(&std::io::Error::from_raw_os_error(24));
        render(&shared)
    }

    #[test]
    fn every_metric_name_is_declared_once() {
        let names: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FAMILIES.len(), "a name declared twice");
    }

    #[test]
    fn every_declared_family_is_written_with_samples_and_nothing_else_is() {
        let text = exposition();
        let typed: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        let declared: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(typed, declared, "the families written, in order");
        for family in FAMILIES {
            let series = |line: &&str| {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let base = match family.kind {
                    Kind::Histogram => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(name),
                    Kind::Counter | Kind::Gauge => name,
                };
                !line.starts_with('#') && base == family.name
            };
            assert!(
                text.lines().any(|line| series(&line)),
                "no sample of {}",
                family.name
            );
        }
        let sampled = text.lines().filter(|line| !line.starts_with('#'));
        for line in sampled {
            assert!(
                FAMILIES.iter().any(|f| line.starts_with(f.name)),
                "a sample of no declared family: {line}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition { out: String::new() };
        let m = Family {
            name: "m",
            kind: Kind::Gauge,
            help: "",
        };
        e.sample(&m, &[("route", "a\"b\\c\nd")], 1);
        assert_eq!(e.out, "m{route=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
