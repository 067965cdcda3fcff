//! `--check`: validate the whole configuration, resolving every name, and print what would run;
//! with `--explain NAME`, which route a name takes on each listener that routes by name; with
//! `--explain-bytes BYTES`, which route a client sending those first bytes takes; with
//! `--probe`, what every upstream's members answer to their route's check, once.

use std::fmt::Write;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

use crate::config::acl::Rule;
use crate::config::addr::{Host, HostPort};
use crate::config::duration::format_duration;
use crate::config::{
    CheckKind, Config, HealthCheck, Listener, Protocol, Route, SocketPath, Transport,
    DEFAULT_MAX_FLOWS, DEFAULT_UDP_IDLE_TIMEOUT,
};
use crate::health::probe as one_check;
use crate::health::target::look_up;
use crate::route::names::MatchKind;
use crate::route::router::{decided, FirstBytes, Router};
use crate::sys::resolve;

/// Checks a validated configuration as `--check` does, resolving every host name in it:
/// `Ok(summary)` to print, or every problem found, one line each. With `explain`, the summary
/// ends with which route that name (an SNI or Host name) takes on each listener that routes by
/// name.
///
/// ```
/// use tcp_router::{check, Config, Listener, Route};
///
/// let mut listener = Listener::new("127.0.0.1:11000".parse()?);
/// listener.routes.push(Route::new(vec!["127.0.0.1:6379".parse()?]));
/// let mut config = Config::default();
/// config.listeners.push(listener);
/// let summary = check(&config, None).unwrap();
/// assert!(summary.starts_with("configuration OK: 1 listener(s), 1 route(s)"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(config: &Config, explain: Option<&str>) -> Result<String, Vec<String>> {
    let mut errors = Vec::new();
    for listener in shown(config) {
        resolve(&listener.listen, &listener.origin, &mut errors);
        for route in &listener.routes {
            for upstream in route.upstreams.iter().chain(&route.backups) {
                resolve(upstream, &route.origin, &mut errors);
            }
        }
    }
    if let Some(log) = &config.logfile {
        if let Err(why) = appendable(&log.path) {
            errors.push(format!(
                "log file '{}' cannot be opened for appending: {why}",
                log.path.display()
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = summary(config);
    for warning in warnings(config) {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(name) = explain {
        out.push_str(&explain_name(config, name));
    }
    Ok(out)
}

/// Whether the server could open `path` for appending at start, found without creating or
/// changing anything: an existing file is opened for appending and closed; for a file not there
/// yet, its directory must exist and be writable by this user.
fn appendable(path: &Path) -> Result<(), String> {
    match OpenOptions::new().append(true).open(path) {
        Ok(_) => return Ok(()),
        Err(err) if err.kind() != ErrorKind::NotFound => return Err(err.to_string()),
        Err(_) => {}
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(format!("'{}' is not a directory", dir.display()))
        }
        Ok(_) => {}
        Err(err) => return Err(format!("directory '{}': {err}", dir.display())),
    }
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK)
        .map_err(|errno| format!("directory '{}' is not writable: {errno}", dir.display()))
}

/// What would start but likely not as meant: no listener at all; a listen port below the
/// system's unprivileged start (1024 unless `net.ipv4.ip_unprivileged_port_start` says
/// otherwise) without `CAP_NET_BIND_SERVICE`.
fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.listeners.is_empty() {
        out.push("no listener: nothing would be served (give LISTEN UPSTREAM, a forwarding rule or a route line)".into());
    }
    let start = unprivileged_port_start();
    if !can_bind_privileged() {
        for listener in shown(config) {
            let port = listener.listen.port;
            if port != 0 && port < start {
                out.push(format!(
                    "{}: listen {}: port {port} is below {start}, which this user cannot bind without CAP_NET_BIND_SERVICE (run as root, or setcap cap_net_bind_service=+ep on the binary)",
                    listener.origin,
                    listener.label()
                ));
            }
        }
    }
    out
}

/// The lowest port an unprivileged process may bind (Linux's sysctl; 1024 where unreadable).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1024)
}

/// Whether this process holds `CAP_NET_BIND_SERVICE` (bit 10 of `CapEff` in /proc/self/status).
fn can_bind_privileged() -> bool {
    const CAP_NET_BIND_SERVICE: u32 = 10;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_BIND_SERVICE) != 0)
}

fn resolve(addr: &HostPort, origin: &str, errors: &mut Vec<String>) {
    if let Host::Name(_) = addr.host {
        if let Err(err) = resolve::resolve(&addr.host.to_string(), addr.port) {
            errors.push(format!("{origin}: cannot resolve '{addr}': {err}"));
        }
    }
}

/// The listeners as the operator wrote them: each one alone, and the first port of each range
/// for the whole range (whose other ports differ only in their port numbers).
fn shown(config: &Config) -> impl Iterator<Item = &Listener> {
    config.listeners.iter().filter(|l| match &l.range {
        Some(range) => l.listen.port == range.listen.first.port,
        None => true,
    })
}

/// `listeners (N in R port ranges)`, counting every port of a range.
fn count_listeners(config: &Config) -> String {
    let ranged = config
        .listeners
        .iter()
        .filter(|l| l.range.is_some())
        .count();
    let ranges = shown(config).filter(|l| l.range.is_some()).count();
    match ranges {
        0 => format!("{} listener(s)", config.listeners.len()),
        _ => format!(
            "{} listener(s) ({ranged} in {ranges} port range(s))",
            config.listeners.len()
        ),
    }
}

fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "configuration OK: {}, {} route(s)",
        count_listeners(config),
        config
            .listeners
            .iter()
            .map(|l| l.routes.len())
            .sum::<usize>()
    );
    if !config.acl.is_empty() {
        let _ = writeln!(out, "global rules: {}", rules(&config.acl));
    }
    if let Some(log) = &config.logfile {
        let format = if log.common { "common" } else { "rinetd" };
        let _ = writeln!(out, "log file: {} ({format} format)", log.path.display());
    }
    if let Some(pid) = &config.pid_file {
        let _ = writeln!(out, "pid file: {}", pid.display());
    }
    for listener in shown(config) {
        let mut extras = Vec::new();
        if let Some(range) = &listener.range {
            extras.push(format!("{} ports", range.listen.len()));
        }
        if listener.accept_proxy && listener.accept_proxy_from.is_empty() {
            extras.push("accept_proxy (from any sender)".to_string());
        } else if listener.accept_proxy {
            let trusted: Vec<String> = listener
                .accept_proxy_from
                .iter()
                .map(ToString::to_string)
                .collect();
            extras.push(format!("accept_proxy_from={}", trusted.join(",")));
        }
        if listener.reuse_port {
            extras.push("reuse_port".to_string());
        }
        if let Some(max) = listener.max_connections {
            extras.push(format!("max_connections={max}"));
        }
        if listener.transport == Transport::Udp {
            let max = listener.max_flows.unwrap_or(DEFAULT_MAX_FLOWS);
            extras.push(format!("max_flows={max}"));
        }
        let extras = if extras.is_empty() {
            String::new()
        } else {
            format!(" [{}]", extras.join(" "))
        };
        let mode = match listener.listen.socket_path() {
            Some(SocketPath::Path(_)) => format!(" (mode {:04o})", listener.socket_mode),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "listen {}{}{mode} ({}){extras}",
            listener.label(),
            listener.transport.suffix(),
            listener.origin
        );
        for (index, route) in listener.routes.iter().enumerate() {
            let written = Written::of(listener, index, route);
            let upstreams = weighted(route, 0, written.upstreams());
            let keys = match listener.transport {
                Transport::Udp => udp_keys(route),
                _ => tcp_keys(route, &written),
            };
            let _ = writeln!(
                out,
                "  route {} -> {} ({}) {}",
                route.label(),
                upstreams.join(", "),
                route.origin,
                keys.join(" ")
            );
            for line in members(route) {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// What a TCP route sets: its timeouts, source address, PROXY header, health, rules.
fn tcp_keys(route: &Route, written: &Written) -> Vec<String> {
    let mut keys = vec![format!(
        "connect_timeout={}",
        format_duration(route.connect_timeout)
    )];
    keys.push(format!(
        "idle_timeout={}",
        route.idle_timeout.map_or("off".into(), format_duration)
    ));
    keys.push(format!(
        "fin_timeout={}",
        route.fin_timeout.map_or("off".into(), format_duration)
    ));
    if let Some(src) = route.src {
        keys.push(format!("src={src}"));
    }
    if let Some(version) = route.proxy_protocol {
        keys.push(format!("proxy_protocol={version}"));
    }
    keys.extend(health_keys(route, written));
    if !route.acl.is_empty() {
        keys.push(format!("rules: {}", rules(&route.acl)));
    }
    keys
}

/// What a UDP route sets: its flows' idle timeout, its source address, its rules.
fn udp_keys(route: &Route) -> Vec<String> {
    let timeout = route.idle_timeout.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT);
    let mut keys = vec![format!("idle_timeout={}", format_duration(timeout))];
    keys.extend(route.src.map(|src| format!("src={src}")));
    if !route.acl.is_empty() {
        keys.push(format!("rules: {}", rules(&route.acl)));
    }
    keys
}

/// For each upstream of `route` written as a name, its members now: `db.example:5432 is
/// 10.0.0.2:5432, 10.0.0.3:5432` (each address a member with its own health and share).
fn members(route: &Route) -> Vec<String> {
    (route.upstreams.iter().chain(&route.backups))
        .filter(|u| matches!(u.host, Host::Name(_)))
        .filter_map(|u| {
            let addrs = resolve::resolve(&u.host.to_string(), u.port).ok()?;
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            Some(format!("{u} is {}", addrs.join(", ")))
        })
        .collect()
}

/// A route's upstreams then backups as written: ranges on a listener of a range, else the
/// route's own.
struct Written {
    members: Vec<String>,
    primaries: usize,
}

impl Written {
    fn of(listener: &Listener, index: usize, route: &Route) -> Written {
        let from_range = (listener.range.as_ref()).and_then(|r| r.members.get(index));
        let members: Vec<String> = match from_range {
            Some(members) => members.iter().map(ToString::to_string).collect(),
            None => (route.upstreams.iter().chain(&route.backups))
                .map(ToString::to_string)
                .collect(),
        };
        Written {
            primaries: route.upstreams.len().min(members.len()),
            members,
        }
    }

    fn upstreams(&self) -> &[String] {
        &self.members[..self.primaries]
    }

    fn backups(&self) -> &[String] {
        &self.members[self.primaries..]
    }
}

/// How a route balances and when it gives up on an upstream: `balance=`, `max_fails=`,
/// `fail_timeout=`, `backup=` when it has backups, its check with every setting in force when
/// it has one, and `resolve_interval=` when an upstream is a name.
fn health_keys(route: &Route, written: &Written) -> Vec<String> {
    let mut keys = vec![
        format!("balance={}", route.balance),
        format!("max_fails={}", route.max_fails),
        format!("fail_timeout={}", format_duration(route.fail_timeout)),
    ];
    if !written.backups().is_empty() {
        let backups = weighted(route, route.upstreams.len(), written.backups());
        keys.push(format!("backup={}", backups.join(",")));
    }
    if let Some(check) = &route.check {
        keys.extend(check_keys(route, check));
    }
    let named = |u: &HostPort| matches!(u.host, Host::Name(_));
    if route.upstreams.iter().chain(&route.backups).any(named) {
        keys.push(format!(
            "resolve_interval={}",
            format_duration(route.resolve_interval)
        ));
    }
    keys
}

/// A route's check as `key=value`s: `check=` and the settings it runs with.
fn check_keys(route: &Route, check: &HealthCheck) -> Vec<String> {
    let mut keys = vec![format!("check={}", check.kind)];
    if let CheckKind::Http { status, .. } = &check.kind {
        keys.push(format!("check_status={status}"));
    }
    if let Some(port) = check.port {
        keys.push(format!("check_port={port}"));
    }
    if let Some(host) = &check.host {
        keys.push(format!("check_host={host}"));
    }
    let timeout = check.timeout_with(route.connect_timeout);
    keys.extend([
        format!("check_interval={}", format_duration(check.interval)),
        format!("check_timeout={}", format_duration(timeout)),
        format!("rise={}", check.rise),
        format!("fall={}", check.fall),
        format!("on_down={}", route.on_down),
    ]);
    keys
}

/// `upstreams` as written, with `*W` after those whose weight is not 1; `first` is the index of
/// the first of them among the route's upstreams then backups.
fn weighted(route: &Route, first: usize, upstreams: &[String]) -> Vec<String> {
    let with_weight = |(i, upstream): (usize, &String)| match route.weight(first + i) {
        1 => upstream.to_string(),
        w => format!("{upstream}*{w}"),
    };
    upstreams.iter().enumerate().map(with_weight).collect()
}

fn rules(list: &[Rule]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn explain_name(config: &Config, name: &str) -> String {
    per_reading_listener(
        config,
        &format!("'{name}'"),
        "no listener routes by name",
        |router, listener| router.explain(name, &listener.routes),
    )
}

/// For each listener that reads first bytes, `explain '...' on LISTENER:` (`what` is the quoted
/// thing explained, `'name'` or `bytes`) and the lines `explain` gives, indented; `none` when no
/// listener reads first bytes.
fn per_reading_listener(
    config: &Config,
    what: &str,
    none: &str,
    explain: impl Fn(&Router, &Listener) -> Vec<String>,
) -> String {
    let mut out = String::new();
    let mut any = false;
    for listener in shown(config) {
        let router = Router::new(&listener.routes);
        if !router.reads_first() {
            continue;
        }
        any = true;
        let _ = writeln!(out, "explain {what} on {}:", listener.label());
        for line in explain(&router, listener) {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !any {
        let _ = writeln!(out, "explain {what}: {none}");
    }
    out
}

/// Which route a client whose first bytes are `sample` takes on each listener that reads first
/// bytes, and why: `--check --explain-bytes`. `sample` takes the escapes of a `check=` TEXT
/// (`\r \n \t \\ \xHH`); an empty sample is a client that sends nothing; `@PATH` is the
/// bytes of the file at PATH, unchanged (a capture: a sample that starts with `@` is written
/// `\x40`). Decided by the same function the server routes by, so it cannot disagree with it.
/// The error is a bad escape or a file that cannot be read.
///
/// ```
/// use tcp_router::config::Protocol;
/// use tcp_router::{explain_bytes, Config, Listener, Route};
///
/// let mut ssh = Route::new(vec!["127.0.0.1:22".parse()?]);
/// ssh.protocol = Some(Protocol::Ssh);
/// let mut listener = Listener::new("127.0.0.1:2222".parse()?);
/// listener.routes = vec![ssh, Route::new(vec!["127.0.0.1:80".parse()?])];
/// let mut config = Config::default();
/// config.listeners.push(listener);
/// let text = explain_bytes(&config, r"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
/// assert!(text.contains(r"'SSH-2.0-OpenSSH_9.2\r\n': route proto=ssh (protocol route)"), "{text}");
/// assert!(explain_bytes(&config, "hello").unwrap().contains("'hello' (not-tls-or-http): route default"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn explain_bytes(config: &Config, sample: &str) -> Result<String, String> {
    let bytes = sample_bytes(sample).map_err(|why| format!("--explain-bytes: {why}"))?;
    let quoted = crate::config::escape_truncated(&bytes, 64);
    Ok(per_reading_listener(
        config,
        "bytes",
        &format!("no listener reads first bytes to route '{quoted}'"),
        |router, listener| vec![explain_sample(router, listener, &bytes, &quoted)],
    ))
}

/// The bytes `--explain-bytes` explains: the file `@PATH` holds, or `sample` unescaped.
fn sample_bytes(sample: &str) -> Result<Vec<u8>, String> {
    match sample.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|err| format!("cannot read '{path}': {err}")),
        None => crate::config::unescape(sample),
    }
}

/// Where `bytes` go on one listener, in words.
fn explain_sample(router: &Router, listener: &Listener, bytes: &[u8], shown: &str) -> String {
    let route = |found: Option<(usize, MatchKind)>| match found {
        Some((i, kind)) => format!("route {} ({kind})", listener.routes[i].label()),
        None => "no route: the client is refused".to_string(),
    };
    let peek = format_duration(listener.peek_timeout);
    if bytes.is_empty() {
        return match router.silent() {
            Some((i, wait)) => format!(
                "a client that sends nothing: after {}, {}",
                format_duration(wait),
                route(Some((i, MatchKind::Protocol)))
            ),
            None => format!("a client that sends nothing: closed after peek_timeout ({peek})"),
        };
    }
    let Some(choice) = decided(bytes, router) else {
        return format!(
            "'{shown}': not enough bytes to decide{}; a client that sends no more waits for \
             peek_timeout ({peek}), then takes {}",
            waiting_for(router, listener, bytes),
            route(router.fallback())
        );
    };
    let what = match &choice.first {
        FirstBytes::Tls(hello) => format!(
            "TLS ClientHello with SNI {}",
            hello.server_name.as_deref().unwrap_or("(none)")
        ),
        FirstBytes::Http(host) => format!(
            "HTTP request with Host {}",
            host.as_deref().unwrap_or("(none)")
        ),
        FirstBytes::Leading => match choice
            .found
            .as_ref()
            .map(|(i, _)| &listener.routes[*i].protocol)
        {
            Some(Some(Protocol::Regex(pattern))) => format!(
                "'{shown}' (its first {} bytes match the expression)",
                pattern.min_bytes()
            ),
            _ => format!("'{shown}'"),
        },
        FirstBytes::Silent => format!("'{shown}'"),
        FirstBytes::Other(why) => format!("'{shown}' ({why})"),
    };
    format!("{what}: {}", route(choice.found))
}

/// Why bytes too few to decide are so, when a `regex=` route waits for its window: ` (route
/// regex=... sees the first N bytes, M are here)`; empty otherwise.
fn waiting_for(router: &Router, listener: &Listener, bytes: &[u8]) -> String {
    let Some(i) = router.waiting_route(bytes) else {
        return String::new();
    };
    let route = &listener.routes[i];
    match &route.protocol {
        Some(Protocol::Regex(pattern)) => format!(
            " (route {} sees the first {} bytes, {} are here)",
            route.label(),
            pattern.min_bytes(),
            bytes.len()
        ),
        _ => format!(" (route {} needs more)", route.label()),
    }
}

/// What `--check --probe` found: a table of every member's state, and the routes with none up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Probed {
    /// One row per member (an address of an upstream of a route), under a header, columns
    /// aligned: listener, route, upstream, address, role, state, detail.
    pub table: String,
    /// One line per route with no member up: `route default on 127.0.0.1:11000: no member up`.
    pub unserved: Vec<String>,
}

/// One member probed.
struct Row {
    listener: String,
    route: String,
    upstream: String,
    address: String,
    role: &'static str,
    result: Result<std::time::Duration, String>,
}

/// Resolves every upstream of `config` and runs each route's check once on every address (a
/// connect where a route has no check), all at once, each within its check timeout: an operator
/// sees what the upstreams say before reloading.
///
/// ```
/// use tcp_router::{probe, Config, Listener, Route};
///
/// let upstream = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut listener = Listener::new("127.0.0.1:11000".parse()?);
/// listener.routes.push(Route::new(vec![upstream.local_addr()?.into()]));
/// let mut config = Config::default();
/// config.listeners.push(listener);
/// let probed = probe(&config);
/// assert!(probed.unserved.is_empty());
/// assert!(probed.table.lines().nth(1).unwrap().contains(" up "));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn probe(config: &Config) -> Probed {
    let mut rows = Vec::new();
    let mut routes = Vec::new();
    // The ports of a range that share an upstream port probe it once, on the first. A probe
    // connects over TCP: UDP routes are not probed.
    let mut probed = std::collections::HashSet::new();
    let tcp = (config.listeners.iter()).filter(|l| l.transport == Transport::Tcp);
    for listener in tcp {
        let label = listener.label();
        for route in &listener.routes {
            let first = rows.len();
            let mut fresh = |u: &HostPort| probed.insert((label.clone(), route.label(), u.clone()));
            rows.extend(probe_route(&label, route, &mut fresh));
            if first < rows.len() {
                routes.push((label.clone(), route.label(), first..rows.len()));
            }
        }
    }
    let mut said = std::collections::HashSet::new();
    let unserved = routes
        .into_iter()
        .filter(|(_, _, range)| !rows[range.clone()].iter().any(|r| r.result.is_ok()))
        .map(|(listener, route, _)| format!("route {route} on {listener}: no member up"))
        .filter(|line| said.insert(line.clone()))
        .collect();
    Probed {
        table: table(&rows),
        unserved,
    }
}

/// Every member of `route` that `fresh` says is not probed yet, in parallel, in written order.
fn probe_route(
    listener: &str,
    route: &Route,
    fresh: &mut dyn FnMut(&HostPort) -> bool,
) -> Vec<Row> {
    let check = route.check.clone().unwrap_or_else(|| HealthCheck {
        timeout: Some(route.connect_timeout),
        ..HealthCheck::new(CheckKind::Connect)
    });
    let timeout = check.timeout_with(route.connect_timeout);
    let written = (route.upstreams.iter().map(|u| (u, "primary")))
        .chain(route.backups.iter().map(|u| (u, "backup")));
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (upstream, role) in written.filter(|&(u, _)| fresh(u)) {
        let row = |address: String, result| Row {
            listener: listener.to_string(),
            route: route.label(),
            upstream: upstream.to_string(),
            address,
            role,
            result,
        };
        match look_up(upstream) {
            Ok(addrs) => {
                for addr in addrs {
                    let shown = addr.to_string();
                    targets.push((rows.len(), addr, upstream.host.to_string()));
                    rows.push(row(shown, Err(String::new())));
                }
            }
            Err(err) => rows.push(row("-".into(), Err(format!("cannot resolve: {err}")))),
        }
    }
    let results: Vec<(usize, Result<std::time::Duration, String>)> = std::thread::scope(|scope| {
        let running: Vec<_> = (targets.iter())
            .map(|(index, addr, host)| {
                let check = &check;
                scope.spawn(move || {
                    let host = check.host.as_deref().unwrap_or(host);
                    let target = one_check::target(addr, check);
                    let run = one_check::run(
                        &check.kind,
                        &target,
                        host,
                        route.proxy_protocol,
                        route.src,
                        timeout,
                    );
                    (*index, run)
                })
            })
            .collect();
        running.into_iter().filter_map(|t| t.join().ok()).collect()
    });
    for (index, result) in results {
        rows[index].result = result;
    }
    rows
}

/// The rows as a table, columns aligned, the header first.
fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 7]> = std::iter::once(
        [
            "LISTENER", "ROUTE", "UPSTREAM", "ADDRESS", "ROLE", "STATE", "DETAIL",
        ]
        .map(String::from),
    )
    .chain(rows.iter().map(|row| {
        let (state, detail) = match &row.result {
            Ok(took) => ("up", format!("passed in {:.1}ms", took.as_secs_f64() * 1e3)),
            Err(why) => ("down", why.clone()),
        };
        [
            row.listener.clone(),
            row.route.clone(),
            row.upstream.clone(),
            row.address.clone(),
            row.role.to_string(),
            state.to_string(),
            detail,
        ]
    }))
    .collect();
    let widths: Vec<usize> = (0..7)
        .map(|c| cells.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = (row.iter().zip(&widths))
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
