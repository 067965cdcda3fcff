//! `GET /metrics`: every counter in the Prometheus text exposition format (version 0.0.4), each
//! family with its HELP and TYPE. Label values come from the configuration only.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::time::UNIX_EPOCH;

use crate::relay::{splice, Direction, End};
use crate::serve::listener::NO_ROUTE;
use crate::serve::metrics::{Ended, Failure, CONNECT_BUCKETS};
use crate::serve::status::Shared;

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition being written.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
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
    e.out
}

fn process(e: &mut Exposition, shared: &Shared) {
    let metrics = &shared.metrics;
    e.family(
        "tcp_router_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    e.sample(
        "tcp_router_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.family(
        "process_start_time_seconds",
        "gauge",
        "When the process started serving, in seconds since the Unix epoch.",
    );
    let started = metrics
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    e.sample("process_start_time_seconds", &[], started);
    e.family("process_open_fds", "gauge", "Open file descriptors.");
    e.sample("process_open_fds", &[], open_fds());
    e.family("tcp_router_threads", "gauge", "Threads of the process.");
    e.sample("tcp_router_threads", &[], threads());
    e.family(
        "tcp_router_splice_in_use",
        "gauge",
        "1 if bulk bytes move through splice(2), 0 if through buffers (not tried yet, refused by the kernel, or turned off).",
    );
    e.sample("tcp_router_splice_in_use", &[], u8::from(splice::in_use()));
    e.family(
        "tcp_router_reloads_total",
        "counter",
        "Reconfigurations asked for (SIGHUP), whether or not they took effect.",
    );
    e.sample("tcp_router_reloads_total", &[], load(&metrics.reloads));
    e.family(
        "tcp_router_reloads_succeeded_total",
        "counter",
        "Reconfigurations that took effect.",
    );
    e.sample(
        "tcp_router_reloads_succeeded_total",
        &[],
        load(&metrics.reloads_ok),
    );
    e.family(
        "tcp_router_last_reload_success_timestamp_seconds",
        "gauge",
        "When the last reconfiguration took effect, in seconds since the Unix epoch (0: none yet).",
    );
    e.sample(
        "tcp_router_last_reload_success_timestamp_seconds",
        &[],
        load(&metrics.last_reload_ok),
    );
    e.family(
        "tcp_router_accept_errors_total",
        "counter",
        "Failed accept(2) calls by kind (emfile, enfile, enobufs, enomem, other); a client that left before being accepted is not counted.",
    );
    for (kind, count) in metrics.accept_errors() {
        e.sample("tcp_router_accept_errors_total", &[("kind", kind)], count);
    }
    e.family(
        "tcp_router_stopping",
        "gauge",
        "1 from the first moment of a graceful stop (when /ready answers 503).",
    );
    e.sample("tcp_router_stopping", &[], u8::from(shared.is_stopping()));
}

fn connections(e: &mut Exposition, shared: &Shared) {
    let metrics = &shared.metrics;
    e.family(
        "tcp_router_connections_accepted_total",
        "counter",
        "Clients accepted, by listener.",
    );
    for (listener, stats) in metrics.listeners() {
        e.sample(
            "tcp_router_connections_accepted_total",
            &[("listener", &listener)],
            load(&stats.accepted),
        );
    }
    e.family(
        "tcp_router_connections_ended_total",
        "counter",
        "Connections ended, by listener, route (none: ended before one was chosen) and result.",
    );
    for ((listener, route), stats) in metrics.routes() {
        for (index, result) in Ended::NAMES.iter().enumerate() {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("result", result),
            ];
            e.sample(
                "tcp_router_connections_ended_total",
                &labels,
                stats.ended_count(index),
            );
        }
    }
    e.family(
        "tcp_router_connections_active",
        "gauge",
        "Connections open now, by listener and route (none: no route chosen yet).",
    );
    let mut active: BTreeMap<(String, String), u64> = metrics
        .routes()
        .into_iter()
        .map(|(key, _)| (key, 0))
        .collect();
    for record in shared.registry.snapshot() {
        let listener = record.listener.config.listen.to_string();
        let route = record
            .route()
            .map_or_else(|| NO_ROUTE.to_string(), |r| r.config.label());
        *active.entry((listener, route)).or_default() += 1;
    }
    for ((listener, route), count) in active {
        e.sample(
            "tcp_router_connections_active",
            &[("listener", &listener), ("route", &route)],
            count,
        );
    }
    e.family(
        "tcp_router_connections_max",
        "gauge",
        "The cap on connections served at once, across all listeners.",
    );
    e.sample("tcp_router_connections_max", &[], shared.permits.capacity());
    e.family(
        "tcp_router_accept_paused",
        "gauge",
        "1 while every connection slot is busy and new clients wait in the listeners' backlogs.",
    );
    e.sample(
        "tcp_router_accept_paused",
        &[],
        u8::from(shared.is_paused()),
    );
}

fn traffic(e: &mut Exposition, shared: &Shared) {
    let routes = shared.metrics.routes();
    e.family(
        "tcp_router_relayed_bytes_total",
        "counter",
        "Bytes relayed, by listener, route and direction, counted while they move.",
    );
    for ((listener, route), stats) in &routes {
        for direction in Direction::BOTH {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("direction", direction.name()),
            ];
            e.sample(
                "tcp_router_relayed_bytes_total",
                &labels,
                stats.traffic.get(direction),
            );
        }
    }
    e.family(
        "tcp_router_directions_ended_total",
        "counter",
        "Directions of relayed connections ended, by listener, route, direction and how (eof, reset, timeout, error, shutdown, panic).",
    );
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
                    "tcp_router_directions_ended_total",
                    &labels,
                    stats.direction_count(direction as usize, kind),
                );
            }
        }
    }
}

fn upstreams(e: &mut Exposition, shared: &Shared) {
    let upstreams = shared.metrics.upstreams();
    e.family(
        "tcp_router_upstream_connect_attempts_total",
        "counter",
        "Connect attempts, by listener, route and upstream (as written); each address a name resolves to counts once.",
    );
    for ((listener, route, upstream), stats) in &upstreams {
        let labels = [
            ("listener", listener.as_str()),
            ("route", route.as_str()),
            ("upstream", upstream.as_str()),
        ];
        e.sample(
            "tcp_router_upstream_connect_attempts_total",
            &labels,
            load(&stats.attempts),
        );
    }
    e.family(
        "tcp_router_upstream_connect_failures_total",
        "counter",
        "Failed connect attempts, by listener, route, upstream and reason (refused, timeout, unreachable, not_resolved, error).",
    );
    for ((listener, route, upstream), stats) in &upstreams {
        for (index, reason) in Failure::NAMES.iter().enumerate() {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route.as_str()),
                ("upstream", upstream.as_str()),
                ("reason", reason),
            ];
            e.sample(
                "tcp_router_upstream_connect_failures_total",
                &labels,
                stats.failure_count(index),
            );
        }
    }
    let name = "tcp_router_upstream_connect_duration_seconds";
    e.family(
        name,
        "histogram",
        "Time to connect to an upstream, for the attempts that succeeded.",
    );
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
            e.sample(&format!("{name}_bucket"), &labels, value);
        }
        let labels = [
            ("listener", listener.as_str()),
            ("route", route.as_str()),
            ("upstream", upstream.as_str()),
        ];
        e.sample(&format!("{name}_sum"), &labels, sum);
        e.sample(&format!("{name}_count"), &labels, count);
    }
    e.family(
        "tcp_router_upstream_cooling_down",
        "gauge",
        "1 while an upstream that just failed is tried only after the healthy ones.",
    );
    for (_, state) in shared.listeners() {
        let listener = state.config.listen.to_string();
        for route in &state.routes {
            let label = route.config.label();
            for (index, upstream) in route.config.upstreams.iter().enumerate() {
                let cooling = route.balancer.cooling_for(index).is_some();
                let upstream = upstream.to_string();
                let labels = [
                    ("listener", listener.as_str()),
                    ("route", label.as_str()),
                    ("upstream", upstream.as_str()),
                ];
                e.sample(
                    "tcp_router_upstream_cooling_down",
                    &labels,
                    u8::from(cooling),
                );
            }
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
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition { out: String::new() };
        e.sample("m", &[("route", "a\"b\\c\nd")], 1);
        assert_eq!(e.out, "m{route=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
