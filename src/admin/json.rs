//! `GET /connections` and `GET /routes`: who is connected, and what is configured with each
//! upstream's state, as JSON (serde_json does the escaping: client addresses are ours, but route
//! names and upstream names come from a config file).

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::config::{format_duration, Route};
use crate::health::marks::Condition;
use crate::health::roster::Entry;
use crate::relay::Direction;
use crate::serve::listener::{RouteState, NO_ROUTE};
use crate::serve::metrics::Disposition;
use crate::serve::record::Record;
use crate::serve::status::Shared;
use crate::serve::udp::FlowView;

/// Every live connection, then every UDP flow (at most `limit` in all, oldest first each), and
/// how many there are.
pub(crate) fn connections(shared: &Shared, limit: Option<usize>) -> Value {
    let all = shared.registry.snapshot();
    let flows = shared.udp.flows();
    let total = all.len() + flows.len();
    let listed: Vec<Value> = (all.iter().map(|record| connection(record)))
        .chain(flows.iter().map(flow))
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    json!({ "total": total, "connections": listed })
}

/// A UDP flow, in a connection's shape where it has one (`transport` says which it is): each
/// direction has datagrams beside bytes, and no state (a flow has no end each way).
fn flow(flow: &FlowView) -> Value {
    let direction = |d: Direction| {
        json!({
            "datagrams": flow.datagrams[d as usize],
            "bytes": flow.bytes[d as usize],
        })
    };
    json!({
        "transport": "udp",
        "id": flow.id,
        "listener": flow.listener,
        "listener_address": flow.listener_address.to_string(),
        "client": flow.client.to_string(),
        "upstream": {
            "name": flow.upstream_name,
            "address": flow.upstream_address.to_string(),
        },
        "client_to_upstream": direction(Direction::ClientToUpstream),
        "upstream_to_client": direction(Direction::UpstreamToClient),
        "age_seconds": seconds(flow.age),
        "idle_seconds": seconds(flow.idle),
    })
}

fn connection(record: &Record) -> Value {
    let conn = &record.conn;
    let direction = |d: Direction| {
        json!({
            "state": conn.end(d).map_or("open", |end| end.kind()),
            "bytes": conn.bytes(d),
        })
    };
    json!({
        "transport": "tcp",
        "id": conn.id,
        "listener": record.listener.config.label(),
        "listener_address": record.listener_addr.to_string(),
        "route": record.route().map_or_else(|| NO_ROUTE.to_string(), |r| r.config.label()),
        "matched": record.name(),
        "client": record.client().to_string(),
        "upstream": record.upstream().map(|upstream| json!({
            "name": upstream.configured.to_string(),
            "address": upstream.resolved.to_string(),
        })),
        "client_to_upstream": direction(Direction::ClientToUpstream),
        "upstream_to_client": direction(Direction::UpstreamToClient),
        "age_seconds": seconds(conn.started.elapsed()),
        "idle_seconds": seconds(conn.idle()),
    })
}

/// The listeners being served, their routes with settings and counters, and each upstream's
/// state.
pub(crate) fn routes(shared: &Shared) -> Value {
    let live = shared.registry.snapshot();
    let listeners: Vec<Value> = shared
        .listeners()
        .iter()
        .map(|(addr, state)| {
            let active_for = |route: Option<&str>| {
                live.iter()
                    .filter(|record| record.listener_addr == *addr)
                    .filter(|record| record.route().map(|r| r.config.label()).as_deref() == route)
                    .count()
            };
            let routes: Vec<Value> = state
                .routes
                .iter()
                .map(|route| {
                    let label = route.config.label();
                    route_json(route, active_for(Some(&label)))
                })
                .collect();
            json!({
                "listen": state.config.listen.to_string(),
                "range": state.config.range.as_ref().map(|r| r.listen.to_string()),
                "address": addr.to_string(),
                "origin": state.config.origin,
                "accept_proxy": state.config.accept_proxy,
                "accept_proxy_from": (state.config.accept_proxy_from.iter())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                "peek_timeout": format_duration(state.config.peek_timeout),
                "max_connections": state.config.max_connections,
                "accepted": state.stats.accepted.load(std::sync::atomic::Ordering::Relaxed),
                "routing": active_for(None),
                "routes": routes,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "stopping": shared.is_stopping(),
        "active": live.len(),
        "max_connections": shared.permits.capacity(),
        "listeners": listeners,
    })
}

fn route_json(route: &RouteState, active: usize) -> Value {
    let config: &Route = &route.config;
    let ended: serde_json::Map<String, Value> = Disposition::NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), json!(route.stats.ended_count(i))))
        .collect();
    let upstreams: Vec<Value> = (route.roster.entries().iter().enumerate())
        .flat_map(|(i, entry)| upstream_json(route, i, entry))
        .collect();
    let optional = |d: Option<Duration>| d.map_or_else(|| "off".to_string(), format_duration);
    json!({
        "route": config.label(),
        "origin": config.origin,
        "sni": config.sni.as_ref().map(ToString::to_string),
        "host": config.host.as_ref().map(ToString::to_string),
        "alpn": config.alpn,
        "connect_timeout": format_duration(config.connect_timeout),
        "idle_timeout": optional(config.idle_timeout),
        "fin_timeout": optional(config.fin_timeout),
        "proxy_protocol": config.proxy_protocol.map(|v| v.to_string()),
        "src": config.src.map(|ip| ip.to_string()),
        "balance": config.balance.to_string(),
        "max_fails": config.max_fails,
        "fail_timeout": format_duration(config.fail_timeout),
        "check": config.check.as_ref().map(|c| c.kind.to_string()),
        "check_port": config.check.as_ref().and_then(|c| c.port),
        "check_interval": config.check.as_ref().map(|c| format_duration(c.interval)),
        "check_timeout": config.check.as_ref().map(|_| format_duration(route.roster.check_timeout())),
        "rise": config.check.as_ref().map(|c| c.rise),
        "fall": config.check.as_ref().map(|c| c.fall),
        "on_down": config.on_down.to_string(),
        "resolve_interval": format_duration(config.resolve_interval),
        "active": active,
        "bytes": {
            "client_to_upstream": route.stats.traffic.get(Direction::ClientToUpstream),
            "upstream_to_client": route.stats.traffic.get(Direction::UpstreamToClient),
        },
        "ended": ended,
        "upstreams": upstreams,
    })
}

/// One entry per member of the route's upstream `index` (one with no address for a name that
/// has none yet, with every key a member has, so a client reads one shape).
fn upstream_json(route: &RouteState, index: usize, entry: &Entry) -> Vec<Value> {
    let stats = &route.upstream_stats[index];
    let last_error = stats.last_error();
    let common = json!({
        "upstream": entry.target.upstream.to_string(),
        "role": if entry.backup { "backup" } else { "primary" },
        "weight": entry.weight,
        "attempts": stats.attempts.load(std::sync::atomic::Ordering::Relaxed),
        "last_error": last_error.as_ref().map(|(text, _)| text.clone()),
        "last_error_at": last_error.map(|(_, at)| timestamp(at)),
    });
    let members = entry.target.members();
    if members.is_empty() {
        let state = if entry.target.awaits_first_lookup() {
            "unknown"
        } else {
            "down"
        };
        let mut value = common;
        value["address"] = Value::Null;
        value["state"] = json!(state);
        value["since"] = Value::Null;
        value["health"] = json!("down");
        value["down_for_seconds"] = Value::Null;
        value["last_check"] = Value::Null;
        value["successes"] = json!(0);
        value["failures"] = json!(0);
        value["active"] = json!(0);
        return vec![value];
    }
    let now = Instant::now();
    members
        .iter()
        .map(|member| {
            let marks = member.marks();
            let state = marks.state_at(now);
            let mut value = common.clone();
            value["address"] = json!(member.addr.to_string());
            value["state"] = json!(state.name());
            value["since"] = json!(timestamp(marks.since));
            let down = matches!(state, Condition::Down | Condition::Cooling);
            value["health"] = json!(if down { "down" } else { "up" });
            value["down_for_seconds"] = json!((state == Condition::Cooling)
                .then(|| marks.cooling_until.map(|until| seconds(until - now)))
                .flatten());
            value["last_check"] = marks.last_check.map_or(Value::Null, |check| {
                json!({
                    "result": check.failure.as_deref().unwrap_or("passed"),
                    "at": timestamp(check.at),
                    "took_seconds": seconds(check.took),
                })
            });
            value["successes"] = json!(marks.successes);
            value["failures"] = json!(marks.failures);
            value["active"] = json!(member.active());
            value
        })
        .collect()
}

/// Seconds with millisecond precision.
fn seconds(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// An RFC 3339 time in UTC, with all nine fraction digits: one width for every timestamp.
fn timestamp(at: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    OffsetDateTime::from(at).format(&format).unwrap_or_default()
}
