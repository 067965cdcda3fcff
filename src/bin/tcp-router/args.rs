//! Command-line arguments as typed (argh), and how they become a [`Config`].
//!
//! Options that a config file's `route` keys can override are kept as `Option`s here, so they
//! become [`Overrides`]: "given on the command line" differs from "not given", and the precedence
//! route key > command line > built-in default is applied by the one merge in `config`.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use log::LevelFilter;
use tcp_router::config::{
    check_duration, parse_check_host, parse_check_port, parse_count, parse_duration,
    parse_optional_duration, parse_patterns, split_weight, Action, Admin, Balance, CheckKind,
    HostPorts, NamePattern, OnDown, Overrides, Pattern, Rule, Settings, StatusRange,
};
use tcp_router::process::Scheduler;
use tcp_router::proto::proxy::Version;
use tcp_router::{Config, Error, HostPort, Listener, Route};

/// Forward TCP connections from LISTEN to one of the UPSTREAMs, byte for byte.
#[derive(FromArgs, Debug, Clone)]
#[argh(
    example = "Forward local port 11000 to a Redis server:\n  $ tcp-router 127.0.0.1:11000 127.0.0.1:6379\n  $ redis-cli -p 11000 PING",
    example = "Listen on all IPv4 and IPv6 addresses; round-robin over three upstreams with failover:\n  $ tcp-router '[::]:8080' app1:80 app2:80 10.0.0.7:80",
    example = "Give clients 30s to finish on SIGTERM, close connections idle for 10 minutes:\n  $ tcp-router --drain-timeout 30s --idle-timeout 10m 0.0.0.0:2222 10.0.0.9:22",
    example = "Serve a rinetd.conf (and check it first):\n  $ tcp-router --check -c /etc/rinetd.conf && tcp-router -c /etc/rinetd.conf",
    example = "Two TLS sites on one port by SNI, everything else to a default; nothing is decrypted:\n  $ tcp-router 0.0.0.0:443 --sni a.example.com=10.0.0.1:443 --sni '*.example.org'=10.0.0.2:443 10.0.0.3:443",
    example = "Forward ports 9000-9099 to ports 7000-7099 of one host (100 listeners, one line):\n  $ tcp-router 0.0.0.0:9000-9099 10.0.0.5:7000-7099",
    example = "Reach Redis's Unix socket over TCP, and an HTTP service on TCP through a socket file only the group may use:\n  $ tcp-router 127.0.0.1:11000 unix:/run/redis/redis.sock\n  $ tcp-router --socket-mode 0660 --socket-group www-data unix:/run/app/http.sock 127.0.0.1:8080",
    example = "Which route would a name take?\n  $ tcp-router -c router.conf --check --explain www.example.org",
    example = "Send clients to whichever Redis answers ROLE as the primary, checked every 2s; cut the connections of a demoted one:\n  $ tcp-router --health-check 'send:ROLE\\r\\n,expect:master' --on-down close 127.0.0.1:6380 10.0.0.1:6379 10.0.0.2:6379",
    note = "Addresses are HOST:PORT, IPv6 in brackets ([::1]:80); a port range HOST:FIRST-LAST (at most 4096 ports) listens on every port of it, each forwarded to the port at the same place in each upstream range (of the same length) or to an upstream's one port; host names are resolved at each new connection. Options take their value after a space or =, as in --idle-timeout=10m; -h is --help, -V --version. Durations: 250ms, 5s, 2m, 1h or plain seconds, at most 8760h (365 days); 'off' disables a timeout. Signals: SIGINT/SIGTERM drain and stop (twice: stop now), SIGHUP re-reads --config, SIGUSR2 upgrades in place (starts the binary on disk and hands it every listener and connection).",
    error_code(
        0,
        "success, including a graceful stop on SIGINT or SIGTERM, and the old process after an upgrade on SIGUSR2"
    ),
    error_code(1, "runtime failure, e.g. a listen address in use or not permitted"),
    error_code(2, "invalid command line or configuration"),
    error_code(
        130,
        "a second SIGINT (143: SIGTERM) during the drain: 128 + signal number"
    )
)]
pub(crate) struct Args {
    /// the listen address, then its upstream addresses: HOST:PORT, or unix:/PATH or unix:@NAME for a Unix-domain socket (optional with --config, or with --sni/--host routes only)
    #[argh(positional, arg_name = "LISTEN UPSTREAM")]
    pub(crate) addresses: Vec<String>,

    /// config file: rinetd.conf syntax plus `route` lines (see tcp-router.conf(5), docs/config.md)
    #[argh(option, short = 'c')]
    pub(crate) config: Option<PathBuf>,

    /// validate the configuration (resolving every name), print a summary and exit
    #[argh(switch)]
    pub(crate) check: bool,

    /// with --check: show which route NAME (an SNI or Host name) takes on each listener that routes by name
    #[argh(option)]
    pub(crate) explain: Option<String>,

    /// with --check: show which route a client sending these first bytes takes on each listener that reads first bytes (with the escapes of check= TEXT, such as \\r\\n or \\x05; '' is a client that sends nothing; @PATH is the bytes of the file PATH)
    #[argh(option)]
    pub(crate) explain_bytes: Option<String>,

    /// with --check: run every route's check once on every upstream address (a connect where a route has no check), print the results, and exit 1 if a route has none up
    #[argh(switch)]
    pub(crate) probe: bool,

    /// time allowed for each upstream connect before trying the next (default 5s)
    #[argh(option, from_str_fn(positive_duration_arg))]
    pub(crate) connect_timeout: Option<Duration>,

    /// the order in which clients try a route's upstreams: roundrobin (each client starts one further along), first (every client tries them in the order written), leastconn (the fewest open connections for its weight) or source (the same upstream for the same client address) (default roundrobin)
    #[argh(option, from_str_fn(balance_arg))]
    pub(crate) balance: Option<Balance>,

    /// connects in a row that must fail before an upstream is marked down and skipped while others are up (default 1)
    #[argh(option, from_str_fn(count_arg))]
    pub(crate) max_fails: Option<usize>,

    /// how long an upstream marked down is skipped while others are up (default 5s)
    #[argh(option, from_str_fn(positive_duration_arg))]
    pub(crate) fail_timeout: Option<Duration>,

    /// check each upstream address in the background: connect, http:PATH, or send:TEXT,expect:TEXT[,...] (TEXT escapes: \r \n \t \xHH, see tcp-router.conf(5)); an address failing --fall checks in a row gets no clients until --rise pass (default: no checks)
    #[argh(option, from_str_fn(check_arg))]
    pub(crate) health_check: Option<CheckKind>,

    /// send checks to this port of each upstream address (default: the upstream's port)
    #[argh(option, from_str_fn(parse_check_port))]
    pub(crate) check_port: Option<u16>,

    /// the statuses that pass an http: check: 200, 2xx or 200-399 (default 2xx)
    #[argh(option, from_str_fn(status_arg))]
    pub(crate) check_status: Option<StatusRange>,

    /// the Host an http: check sends (default: the upstream's host as written)
    #[argh(option, from_str_fn(parse_check_host))]
    pub(crate) check_host: Option<String>,

    /// time between two checks of one upstream address, at least 100ms (default 2s)
    #[argh(option, from_str_fn(positive_duration_arg))]
    pub(crate) check_interval: Option<Duration>,

    /// time one check may take, connect included (default: --connect-timeout, at most the check interval)
    #[argh(option, from_str_fn(positive_duration_arg))]
    pub(crate) check_timeout: Option<Duration>,

    /// checks in a row that must pass before a down upstream address gets clients again (default 2)
    #[argh(option, from_str_fn(count_arg))]
    pub(crate) rise: Option<usize>,

    /// checks in a row that must fail before an upstream address is marked down (default 3)
    #[argh(option, from_str_fn(count_arg))]
    pub(crate) fall: Option<usize>,

    /// what happens to the connections of an upstream address its checks mark down: keep (they go on) or close (both sides are reset) (default keep)
    #[argh(option, from_str_fn(on_down_arg))]
    pub(crate) on_down: Option<OnDown>,

    /// how often upstream host names are resolved again in the background (default 30s)
    #[argh(option, from_str_fn(positive_duration_arg))]
    pub(crate) resolve_interval: Option<Duration>,

    /// close a connection after this long with no bytes moving in either direction (default off)
    #[argh(option, from_str_fn(optional_duration_arg))]
    pub(crate) idle_timeout: Option<Option<Duration>>,

    /// close a half-closed connection after this long with no bytes moving (default 5m; off disables)
    #[argh(option, from_str_fn(optional_duration_arg))]
    pub(crate) fin_timeout: Option<Option<Duration>>,

    /// most connections served at once; more wait in the kernel's backlog (default: derived from the open-files and thread limits, logged at start)
    #[argh(option, from_str_fn(count_arg))]
    pub(crate) max_connections: Option<usize>,

    /// most connections one client may hold at once, across all listeners (an IPv4 address, or an IPv6 /64; after a PROXY header, the client it names); more are refused (default: three quarters of --max-connections, and of a listener's own lower cap)
    #[argh(option, from_str_fn(count_arg))]
    pub(crate) max_connections_per_client: Option<usize>,

    /// how many leading bits of an IPv6 address make one client for --max-connections-per-client (default 64)
    #[argh(
        option,
        from_str_fn(prefix_arg),
        default = "tcp_router::config::DEFAULT_CLIENT_IPV6_PREFIX"
    )]
    pub(crate) client_ipv6_prefix: u8,

    /// most connections of one listener still sending what routing reads (a PROXY header, a ClientHello, an HTTP head); more are refused, one client at most half of them; when full, a newcomer takes the place of the longest-waiting connection of the clients holding the most, if they hold at least as many as its own (default: a quarter of the listener's cap, the process cap's quarter split among the listeners that read first)
    #[argh(option, from_str_fn(count_arg))]
    pub(crate) max_peeking: Option<usize>,

    /// on SIGINT/SIGTERM, how long active connections may take to finish before they are cut (default 10s)
    #[argh(option, from_str_fn(duration_arg), default = "Duration::from_secs(10)")]
    pub(crate) drain_timeout: Duration,

    /// allow clients matching this CIDR or rinetd pattern (global rule; repeatable)
    #[argh(option, from_str_fn(pattern_arg))]
    pub(crate) allow: Vec<Pattern>,

    /// deny clients matching this CIDR or rinetd pattern (global rule; repeatable)
    #[argh(option, from_str_fn(pattern_arg))]
    pub(crate) deny: Vec<Pattern>,

    /// route TLS clients whose SNI matches PATTERN (a.example.com, *.example.com) to UPSTREAM[,UPSTREAM...] (repeatable)
    #[argh(option, from_str_fn(name_route_arg))]
    pub(crate) sni: Vec<NameRouteArg>,

    /// route plain HTTP/1.x clients whose Host matches PATTERN to UPSTREAM[,UPSTREAM...] (repeatable)
    #[argh(option, from_str_fn(name_route_arg))]
    pub(crate) host: Vec<NameRouteArg>,

    /// how long a client may take to send its TLS ClientHello, HTTP headers or PROXY header (default 5s)
    #[argh(option, from_str_fn(positive_duration_arg))]
    pub(crate) peek_timeout: Option<Duration>,

    /// send a PROXY protocol header (v1 or v2) to upstreams, so they see the real client address
    #[argh(option, from_str_fn(version_arg))]
    pub(crate) proxy_protocol: Option<Version>,

    /// bind every listener with SO_REUSEPORT, so several tcp-router processes can serve one address (the kernel spreads new connections among them)
    #[argh(switch)]
    pub(crate) reuse_port: bool,

    /// the mode of a unix:/PATH listener's socket file, in octal (default 0660: its owner and group may connect)
    #[argh(option, from_str_fn(socket_mode_arg))]
    pub(crate) socket_mode: Option<u32>,

    /// the owner of a unix:/PATH listener's socket file, a user name or number
    #[argh(option)]
    pub(crate) socket_owner: Option<String>,

    /// the group of a unix:/PATH listener's socket file, a group name or number
    #[argh(option)]
    pub(crate) socket_group: Option<String>,

    /// expect a PROXY protocol header (v1 or v2) from a trusted load balancer in front, and refuse clients without one
    #[argh(switch)]
    pub(crate) accept_proxy: bool,

    /// trust a PROXY header only from these senders (CIDR blocks or rinetd patterns, comma-separated); implies --accept-proxy, and clients from anywhere else are refused
    #[argh(option, from_str_fn(parse_patterns))]
    pub(crate) accept_proxy_from: Option<Vec<Pattern>>,

    /// serve the admin endpoint on ADDR (e.g. 127.0.0.1:9901): Prometheus metrics at /metrics, /ready, /health, /connections, /routes and a status page at /
    #[argh(option)]
    pub(crate) admin: Option<HostPort>,

    /// allow only clients matching this CIDR or rinetd pattern to ask the admin endpoint; others get 403 (repeatable)
    #[argh(option, from_str_fn(pattern_arg))]
    pub(crate) admin_allow: Vec<Pattern>,

    /// on SIGINT/SIGTERM, keep accepting this long after /ready turns 503, so a load balancer stops sending first (default 0s)
    #[argh(option, from_str_fn(duration_arg), default = "Duration::ZERO")]
    pub(crate) shutdown_grace: Duration,

    /// write the process id to this file (removed at exit), so `kill -HUP $(cat FILE)` works
    #[argh(option)]
    pub(crate) pid_file: Option<PathBuf>,

    /// CPU scheduling policy: batch (SCHED_BATCH, the default when started at nice 0 under the default policy; fewer context switches under load) or inherit (keep the policy and nice value tcp-router was started with)
    #[argh(option, default = "Scheduler::Batch")]
    pub(crate) scheduler: Scheduler,

    /// log level: off, error, warn, info, debug or trace (default info)
    #[argh(option, from_str_fn(parse_level), default = "LevelFilter::Info")]
    pub(crate) log_level: LevelFilter,

    /// print the version and exit
    #[argh(switch)]
    pub(crate) version: bool,
}

/// Why parsing ended before there were arguments to run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Early {
    /// `--help`: the text for stdout, exit 0.
    Print(String),
    /// A usage error: one line for stderr, exit 2.
    Usage(String),
}

/// Parses `argv` (the program's name first) the way `main` does; the one path from the command
/// line to [`Args`], which the fuzz target `argv` drives too.
pub(crate) fn parse(argv: &[String]) -> Result<Args, Early> {
    let argv = normalize(argv);
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let command = strs.first().map_or("tcp-router", |c| {
        c.rsplit('/').next().unwrap_or("tcp-router")
    });
    let args = Args::from_args(&[command], strs.get(1..).unwrap_or(&[])).map_err(|early| {
        match early.status {
            Ok(()) => Early::Print(early.output),
            Err(()) => {
                let first = early.output.lines().next().unwrap_or("invalid arguments");
                Early::Usage(format!("{first} (see --help)"))
            }
        }
    })?;
    if args.explain.is_some() && !args.check {
        return Err(Early::Usage(
            "--explain needs --check: tcp-router --check --explain NAME [-c FILE | LISTEN ...] explains without serving".into(),
        ));
    }
    if args.explain_bytes.is_some() && !args.check {
        return Err(Early::Usage(
            "--explain-bytes needs --check: tcp-router --check --explain-bytes BYTES [-c FILE | LISTEN ...] explains without serving".into(),
        ));
    }
    if args.probe && !args.check {
        return Err(Early::Usage(
            "--probe needs --check: tcp-router --check --probe [-c FILE | LISTEN ...] checks every upstream once without serving".into(),
        ));
    }
    Ok(args)
}

/// The options that take no value.
const SWITCHES: [&str; 6] = [
    "--check",
    "--probe",
    "--reuse-port",
    "--accept-proxy",
    "--version",
    "--help",
];

/// argv as argh reads it, from the forms people type first: `--opt=value` becomes `--opt value`,
/// `-h` `--help` and `-V` `--version`. Nothing after `--` changes (it is all positional).
fn normalize(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 1);
    let mut rest = argv.iter();
    if let Some(program) = rest.next() {
        out.push(program.clone());
    }
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--" => {
                out.push(arg.clone());
                out.extend(rest.by_ref().cloned());
            }
            "-h" => out.push("--help".into()),
            "-V" => out.push("--version".into()),
            long if long.starts_with("--") && long.contains('=') => {
                let (name, value) = long.split_once('=').unwrap_or((long, ""));
                if SWITCHES.contains(&name) {
                    // A switch takes no value: left whole, argh names it as unrecognized,
                    // rather than the value turning into a positional address.
                    out.push(arg.clone());
                } else {
                    out.push(name.to_string());
                    out.push(value.to_string());
                }
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// `--sni PATTERN=UPSTREAM[,UPSTREAM...]` as typed; the pattern is checked when the config is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameRouteArg {
    /// The name pattern, as typed.
    pub(crate) pattern: String,
    /// Its upstreams (ranges when LISTEN is one).
    pub(crate) upstreams: Vec<HostPorts>,
    /// The weight of each (`*W`, 1 without).
    pub(crate) weights: Vec<u32>,
}

impl Args {
    /// The configuration these arguments describe: the config file's listeners (if `--config`)
    /// after the command line's own (if addresses are given), the command line's options as the
    /// defaults of every route, all checked. Every problem is one line of the error.
    pub(crate) fn load(&self) -> Result<Config, Error> {
        let defaults = Settings::default().merge(&self.overrides());
        let mut errors = Vec::new();
        let mut config = match &self.config {
            Some(path) => Config::from_file(path, &defaults).unwrap_or_else(|file_errors| {
                errors.extend(file_errors);
                Config::default()
            }),
            None => Config::default(),
        };
        match cli_listeners(self, &defaults) {
            Ok(listeners) => drop(config.listeners.splice(0..0, listeners)),
            Err(err) => errors.insert(0, err),
        }
        config.acl.extend(self.rules());
        config.max_connections = self.max_connections;
        config.drain_timeout = self.drain_timeout;
        config.max_connections_per_client = self.max_connections_per_client;
        config.client_ipv6_prefix = self.client_ipv6_prefix;
        config.max_peeking = self.max_peeking;
        config.shutdown_grace = self.shutdown_grace;
        // --admin moves the file's endpoint (keeping its allow list) or adds one.
        if let Some(listen) = &self.admin {
            let admin = config
                .admin
                .get_or_insert_with(|| Admin::new(listen.clone()));
            admin.listen = listen.clone();
            admin.origin = "command line".into();
        }
        if !self.admin_allow.is_empty() {
            match &mut config.admin {
                Some(admin) => admin.allow = self.admin_allow.clone(),
                None => errors.push("--admin-allow needs an admin endpoint (--admin ADDR)".into()),
            }
        }
        if self.pid_file.is_some() {
            config.pid_file = self.pid_file.clone();
        }
        if let Err(Error::Config(lines)) = config.validate() {
            errors.extend(lines);
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config(errors))
        }
    }

    /// What the command line gives every route and listener, unless a route key says otherwise.
    fn overrides(&self) -> Overrides {
        let mut given = Overrides::default();
        given.connect_timeout = self.connect_timeout;
        given.idle_timeout = self.idle_timeout;
        given.fin_timeout = self.fin_timeout;
        given.balance = self.balance;
        given.max_fails = self.max_fails;
        given.fail_timeout = self.fail_timeout;
        given.check = self.health_check.clone();
        given.check_port = self.check_port;
        given.check_status = self.check_status;
        given.check_host = self.check_host.clone();
        given.check_interval = self.check_interval;
        given.check_timeout = self.check_timeout;
        given.rise = self.rise;
        given.fall = self.fall;
        given.on_down = self.on_down;
        given.resolve_interval = self.resolve_interval;
        given.peek_timeout = self.peek_timeout;
        given.proxy_protocol = self.proxy_protocol;
        given.accept_proxy = self.accept_proxy.then_some(true);
        if let Some(trusted) = &self.accept_proxy_from {
            given.accept_proxy = Some(true);
            given.accept_proxy_from = Some(trusted.clone());
        }
        given.reuse_port = self.reuse_port.then_some(true);
        given.socket_mode = self.socket_mode;
        given.socket_owner = self.socket_owner.clone();
        given.socket_group = self.socket_group.clone();
        given
    }

    /// `--allow` and `--deny`, as global rules after the file's.
    fn rules(&self) -> Vec<Rule> {
        let allow = self.allow.iter().map(|p| (Action::Allow, p));
        let deny = self.deny.iter().map(|p| (Action::Deny, p));
        allow
            .chain(deny)
            .map(|(action, pattern)| Rule {
                action,
                pattern: pattern.clone(),
            })
            .collect()
    }
}

/// The listener given by the positional arguments and `--sni`/`--host`, if any: one per port
/// when LISTEN is a range.
fn cli_listeners(args: &Args, defaults: &Settings) -> Result<Vec<Listener>, String> {
    let Some((listen, (upstreams, weights))) = listen_and_upstreams(args)? else {
        return Ok(Vec::new());
    };
    if let Some(why) = args
        .overrides()
        .check_problems(defaults.check.as_ref())
        .first()
    {
        return Err(format!("command line: {why}"));
    }
    let origin = || "command line".to_string();
    let first =
        |list: &[HostPorts]| -> Vec<HostPort> { list.iter().map(|m| m.first.clone()).collect() };
    let mut listener = Listener::with(listen.first.clone(), defaults, origin());
    let mut members = Vec::new();
    if !upstreams.is_empty() {
        let mut route = Route::with(first(&upstreams), defaults, origin());
        route.weights = weights_unless_all_one(weights);
        listener.routes.push(route);
        members.push(upstreams);
    }
    for (flag, list) in [("--sni", &args.sni), ("--host", &args.host)] {
        for NameRouteArg {
            pattern,
            upstreams,
            weights,
        } in list
        {
            let parsed: NamePattern = pattern
                .parse()
                .map_err(|e| format!("invalid {flag} pattern: {e}"))?;
            let mut route = Route::with(first(upstreams), defaults, format!("{flag} {pattern}"));
            route.weights = weights_unless_all_one(weights.clone());
            if flag == "--sni" {
                route.sni = Some(parsed);
            } else {
                route.host = Some(parsed);
            }
            listener.routes.push(route);
            members.push(upstreams.clone());
        }
    }
    listener
        .for_range(listen, members)
        .map_err(|why| format!("command line: {why}"))
}

/// A route's weights as [`Route::weights`] holds them: none when all are 1.
fn weights_unless_all_one(weights: Vec<u32>) -> Vec<u32> {
    if weights.iter().all(|&w| w == 1) {
        Vec::new()
    } else {
        weights
    }
}

/// The upstreams of a list (positional addresses, or `--sni`'s after `=`), each one port or a
/// range, with the weight of its `*W` suffix (1 without).
fn weighted_upstreams<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<(Vec<HostPorts>, Vec<u32>), String> {
    let mut upstreams = Vec::new();
    let mut weights = Vec::new();
    for text in texts {
        let (address, weight) = split_weight(text)?;
        upstreams.push(address.parse::<HostPorts>().map_err(|e| e.to_string())?);
        weights.push(weight);
    }
    Ok((upstreams, weights))
}

/// The upstreams of a route given on the command line, and their weights.
type Upstreams = (Vec<HostPorts>, Vec<u32>);

/// Splits the positional addresses into a listen address (or range) and its upstreams (possibly
/// none).
fn listen_and_upstreams(args: &Args) -> Result<Option<(HostPorts, Upstreams)>, String> {
    let listen = args.addresses.first().map(|text| text.parse::<HostPorts>());
    let listen = listen.transpose().map_err(|e| e.to_string())?;
    let upstreams = weighted_upstreams(args.addresses.iter().skip(1).map(String::as_str))?;
    let routes_by_name = !args.sni.is_empty() || !args.host.is_empty();
    match listen {
        None if args.config.is_some() && !routes_by_name => Ok(None),
        None => Err("missing LISTEN and UPSTREAM addresses (see --help)".to_string()),
        Some(_) if upstreams.0.is_empty() && !routes_by_name => Err(format!(
            "missing an UPSTREAM address after LISTEN '{}' (see --help)",
            args.addresses[0]
        )),
        Some(listen) => Ok(Some((listen, upstreams))),
    }
}

// The values below are checked by the library's own rules (`check_duration`, `parse_count`), the
// ones a config file's keys and the builder go through; argh puts the flag and the value in front
// of the reason: "Error parsing option '--connect-timeout' with value '0': must be greater than
// zero".

/// `--drain-timeout`, `--shutdown-grace`: a duration, zero allowed.
fn duration_arg(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    Ok(check_duration(d, true)?)
}

/// `--connect-timeout`, `--peek-timeout`: a duration that cannot be zero.
fn positive_duration_arg(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    Ok(check_duration(d, false)?)
}

/// `--idle-timeout`, `--fin-timeout`: a duration, or `off` (or 0).
fn optional_duration_arg(text: &str) -> Result<Option<Duration>, String> {
    let d = parse_optional_duration(text).map_err(|e| e.to_string())?;
    Ok(d.map(|d| check_duration(d, false)).transpose()?)
}

/// `--max-connections` and the other caps.
fn count_arg(text: &str) -> Result<usize, String> {
    parse_count(text)
}

/// `--client-ipv6-prefix`: 0 to 128 bits.
fn prefix_arg(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(bits) if bits <= 128 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(bits),
        _ => Err("expected a number of bits from 0 to 128".into()),
    }
}

fn pattern_arg(text: &str) -> Result<Pattern, String> {
    text.parse::<Pattern>().map_err(|e| e.to_string())
}

/// `--balance`: `roundrobin`, `first`, `leastconn` or `source`.
fn balance_arg(text: &str) -> Result<Balance, String> {
    text.parse()
}

/// `--health-check`: a `check=` value.
fn check_arg(text: &str) -> Result<CheckKind, String> {
    text.parse()
}

/// `--check-status`: `200`, `2xx` or `200-399`.
fn status_arg(text: &str) -> Result<StatusRange, String> {
    text.parse()
}

/// `--on-down`: `keep` or `close`.
fn on_down_arg(text: &str) -> Result<OnDown, String> {
    text.parse()
}

/// A socket file's mode, read as a `socket_mode=` key is (the one parser of it).
fn socket_mode_arg(text: &str) -> Result<u32, String> {
    let mut given = Overrides::default();
    given.set("socket_mode", text)?;
    given
        .socket_mode
        .ok_or_else(|| format!("invalid socket_mode '{text}'"))
}

fn version_arg(text: &str) -> Result<Version, String> {
    text.parse::<Version>().map_err(|e| e.to_string())
}

fn name_route_arg(text: &str) -> Result<NameRouteArg, String> {
    let (pattern, upstreams) = text.split_once('=').ok_or_else(|| {
        format!("invalid route '{text}': expected PATTERN=UPSTREAM[,UPSTREAM...]")
    })?;
    let (upstreams, weights) = weighted_upstreams(upstreams.split(','))?;
    Ok(NameRouteArg {
        pattern: pattern.to_string(),
        upstreams,
        weights,
    })
}

/// Parses a log level name for `--log-level`.
fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse::<LevelFilter>().map_err(|_| {
        format!("invalid log level '{text}': expected off, error, warn, info, debug or trace")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::from_args(&["tcp-router"], args).map_err(|e| e.output)
    }

    #[test]
    fn defaults_are_left_to_the_config() {
        let args = parse(&["127.0.0.1:11000", "127.0.0.1:6379"]).unwrap();
        assert_eq!(args.connect_timeout, None);
        assert_eq!(args.drain_timeout, Duration::from_secs(10));
        assert_eq!(args.log_level, LevelFilter::Info);
        let (listen, upstreams) = listen_and_upstreams(&args).unwrap().unwrap();
        assert_eq!(listen.to_string(), "127.0.0.1:11000");
        assert_eq!(
            upstreams,
            (vec!["127.0.0.1:6379".parse().unwrap()], vec![1])
        );
    }

    #[test]
    fn options_take_durations_levels_and_routes() {
        let args = parse(&[
            "--connect-timeout",
            "250ms",
            "--idle-timeout",
            "off",
            "--log-level",
            "debug",
            "--sni",
            "*.example.com=[::1]:443,127.0.0.1:443",
            "--deny",
            "10.0.0.0/8",
            "[::1]:1",
        ])
        .unwrap();
        assert_eq!(args.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(args.idle_timeout, Some(None));
        assert_eq!(args.sni[0].pattern, "*.example.com");
        assert_eq!(args.sni[0].upstreams.len(), 2);
        assert_eq!(args.deny.len(), 1);
        assert_eq!(listen_and_upstreams(&args).unwrap().unwrap().1 .0.len(), 0);
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(&["--connect-timeout", "5x", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains("'5x'"), "{err}");
        let err = parse(&["--log-level", "loud", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains("'loud'"), "{err}");
        let err = parse(&["--sni", "a.example.com", "a:1"]).unwrap_err();
        assert!(err.contains("PATTERN=UPSTREAM"), "{err}");
        let err = parse(&["--allow", "10.0.0.0/33", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        let args = parse(&["127.0.0.1:99999", "b:2"]).unwrap();
        let err = listen_and_upstreams(&args).unwrap_err();
        assert!(
            err.contains("'127.0.0.1:99999'") && err.contains("range"),
            "{err}"
        );
        let args = parse(&["127.0.0.1:1"]).unwrap();
        assert!(listen_and_upstreams(&args)
            .unwrap_err()
            .contains("UPSTREAM"));
    }

    fn normalized(args: &[&str]) -> Vec<String> {
        let argv: Vec<String> = std::iter::once("tcp-router")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        normalize(&argv)[1..].to_vec()
    }

    #[test]
    fn gnu_forms_become_what_argh_reads() {
        assert_eq!(normalized(&["--idle-timeout=5s"]), ["--idle-timeout", "5s"]);
        assert_eq!(
            normalized(&["--sni=*.example.com=[::1]:443", "-c", "f"]),
            ["--sni", "*.example.com=[::1]:443", "-c", "f"]
        );
        assert_eq!(normalized(&["--log-level="]), ["--log-level", ""]);
        assert_eq!(normalized(&["-h"]), ["--help"]);
        assert_eq!(normalized(&["--check=true"]), ["--check=true"]);
        assert_eq!(normalized(&["-V"]), ["--version"]);
        assert_eq!(
            normalized(&["a:1", "--", "-h", "--x=y"]),
            ["a:1", "--", "-h", "--x=y"]
        );
        let argv: Vec<String> = ["tcp-router", "--idle-timeout=5s", "a:1", "b:2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let args = super::parse(&argv).unwrap();
        assert_eq!(args.idle_timeout, Some(Some(Duration::from_secs(5))));
        let help = |flag: &str| super::parse(&["tcp-router".into(), flag.into()]).unwrap_err();
        assert!(matches!(help("-h"), Early::Print(text) if text.starts_with("Usage: tcp-router")));
        assert!(
            super::parse(&["tcp-router".into(), "-V".into()])
                .unwrap()
                .version
        );
    }

    #[test]
    fn the_switch_list_is_the_switches_argh_knows() {
        let help = Args::from_args(&["tcp-router"], &["--help"])
            .unwrap_err()
            .output;
        let usage = help.lines().next().unwrap();
        let mut switches: Vec<&str> = usage
            .split_whitespace()
            .filter_map(|t| t.strip_prefix('[')?.strip_suffix(']'))
            .filter(|t| t.starts_with("--") && *t != "--")
            .collect();
        switches.push("--help");
        switches.sort_unstable();
        let mut listed = SWITCHES.to_vec();
        listed.sort_unstable();
        assert_eq!(switches, listed);
    }

    #[test]
    fn check_options_become_route_defaults() {
        let args = parse(&[
            "--health-check",
            r"send:PING\r\n,expect:+PONG",
            "--check-port",
            "9121",
            "--check-interval",
            "500ms",
            "--rise",
            "1",
            "--fall",
            "2",
            "--on-down",
            "close",
            "--resolve-interval",
            "1m",
            "--balance",
            "leastconn",
            "127.0.0.1:6380",
            "10.0.0.1:6379*3",
            "10.0.0.2:6379",
        ])
        .unwrap();
        let config = args.load().unwrap();
        let route = &config.listeners[0].routes[0];
        assert_eq!(route.weights, [3, 1]);
        assert_eq!(route.balance, Balance::LeastConn);
        assert_eq!(route.on_down, OnDown::Close);
        assert_eq!(route.resolve_interval, Duration::from_secs(60));
        let check = route.check.as_ref().unwrap();
        assert_eq!(check.kind.to_string(), r"send:PING\r\n,expect:+PONG");
        assert_eq!(check.port, Some(9121));
        assert_eq!(
            (check.interval, check.rise, check.fall),
            (Duration::from_millis(500), 1, 2)
        );
    }

    #[test]
    fn check_options_without_a_check_and_bad_values_are_refused() {
        let args = parse(&["--rise", "2", "127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        let err = args.load().unwrap_err().to_string();
        assert_eq!(err, "command line: 'rise=2' needs check=");
        let err = parse(&["--health-check", r"send:\q", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains(r"unknown escape \q"), "{err}");
        let err = parse(&["--check-status", "2xx-3xx", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains("a range (200-399)"), "{err}");
        let args = parse(&["127.0.0.1:1", "127.0.0.1:2*0"]).unwrap();
        assert_eq!(
            listen_and_upstreams(&args).unwrap_err(),
            "invalid weight '*0' in '127.0.0.1:2*0': expected a whole number from 1 to 256"
        );
        let err = parse(&["--sni", "a.example=b:1*300", "a:1"]).unwrap_err();
        assert!(err.contains("'*300'"), "{err}");
    }

    #[test]
    fn probe_needs_check() {
        let argv = |args: &[&str]| -> Vec<String> {
            std::iter::once("tcp-router")
                .chain(args.iter().copied())
                .map(String::from)
                .collect()
        };
        assert!(
            super::parse(&argv(&["--check", "--probe", "a:1", "b:2"]))
                .unwrap()
                .probe
        );
        assert!(matches!(
            super::parse(&argv(&["--probe", "a:1", "b:2"])),
            Err(Early::Usage(line)) if line.starts_with("--probe needs --check")
        ));
    }

    #[test]
    fn a_listen_range_is_one_listener_per_port_with_its_upstream_port() {
        let args = parse(&[
            "127.0.0.1:9000-9009",
            "10.0.0.1:7000-7009",
            "--sni",
            "a.example=10.0.0.2:443",
        ])
        .unwrap();
        let config = args.load().unwrap();
        assert_eq!(config.listeners.len(), 10);
        let last = &config.listeners[9];
        assert_eq!(last.listen.to_string(), "127.0.0.1:9009");
        assert_eq!(last.label(), "127.0.0.1:9000-9009");
        assert_eq!(last.routes[0].upstreams[0].to_string(), "10.0.0.1:7009");
        assert_eq!(last.routes[1].upstreams[0].to_string(), "10.0.0.2:443");
        let args = parse(&["127.0.0.1:9000-9009", "10.0.0.1:7000-7001"]).unwrap();
        assert_eq!(
            args.load().unwrap_err().to_string(),
            "command line: upstream range 10.0.0.1:7000-7001 has 2 ports but the listen range 127.0.0.1:9000-9009 has 10: give a range of the same length, or one port for all"
        );
    }

    #[test]
    fn a_config_file_makes_addresses_optional() {
        let args = parse(&["-c", "/etc/rinetd.conf"]).unwrap();
        assert_eq!(listen_and_upstreams(&args), Ok(None));
    }
}
