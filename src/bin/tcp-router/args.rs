//! Command-line arguments as typed (argh), before they are validated into a [`Config`](crate::config::Config).
//!
//! Options that a config file's `route` keys can override are kept as `Option`s here, so the
//! configuration can tell "given on the command line" from "not given" and apply the precedence
//! route key > command line > built-in default.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use log::LevelFilter;

use crate::acl;
use crate::addr::HostPort;
use crate::duration::{parse_duration, parse_optional_duration};
use crate::proxy_protocol::Version;
use crate::sched::Scheduler;

/// Forward TCP connections from LISTEN to one of the UPSTREAMs, byte for byte.
#[derive(FromArgs, Debug, Clone)]
#[argh(
    example = "Forward local port 11000 to a Redis server:\n  $ tcp-router 127.0.0.1:11000 127.0.0.1:6379\n  $ redis-cli -p 11000 PING",
    example = "Listen on all IPv4 and IPv6 addresses; round-robin over three upstreams with failover:\n  $ tcp-router '[::]:8080' app1:80 app2:80 10.0.0.7:80",
    example = "Give clients 30s to finish on SIGTERM, close connections idle for 10 minutes:\n  $ tcp-router --drain-timeout 30s --idle-timeout 10m 0.0.0.0:2222 10.0.0.9:22",
    example = "Serve a rinetd.conf (and check it first):\n  $ tcp-router --check -c /etc/rinetd.conf && tcp-router -c /etc/rinetd.conf",
    example = "Two TLS sites on one port by SNI, everything else to a default; nothing is decrypted:\n  $ tcp-router 0.0.0.0:443 --sni a.example.com=10.0.0.1:443 --sni '*.example.org'=10.0.0.2:443 10.0.0.3:443",
    example = "Which route would a name take?\n  $ tcp-router -c router.conf --check --explain www.example.org",
    note = "Addresses are HOST:PORT, IPv6 in brackets ([::1]:80); host names are resolved at each new connection. Durations: 250ms, 5s, 2m, 1h or plain seconds; 'off' disables a timeout. Signals: SIGINT/SIGTERM drain and stop (twice: stop now), SIGHUP re-reads --config.",
    error_code(0, "success, including a graceful stop on SIGINT or SIGTERM"),
    error_code(1, "runtime failure, e.g. a listen address in use or not permitted"),
    error_code(2, "invalid command line or configuration"),
    error_code(
        130,
        "a second SIGINT (143: SIGTERM) during the drain: 128 + signal number"
    )
)]
pub struct Args {
    /// the listen address, then its upstream addresses (optional with --config, or with --sni/--host routes only)
    #[argh(positional, arg_name = "LISTEN UPSTREAM")]
    pub addresses: Vec<String>,

    /// config file: rinetd.conf syntax plus `route` lines (see README)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    /// validate the configuration (resolving every name), print a summary and exit
    #[argh(switch)]
    pub check: bool,

    /// with --check: show which route NAME (an SNI or Host name) takes on each listener that routes by name
    #[argh(option)]
    pub explain: Option<String>,

    /// time allowed for each upstream connect before trying the next (default 5s)
    #[argh(option, from_str_fn(duration_arg))]
    pub connect_timeout: Option<Duration>,

    /// close a connection after this long with no bytes moving in either direction (default off)
    #[argh(option, from_str_fn(optional_duration_arg))]
    pub idle_timeout: Option<Option<Duration>>,

    /// close a half-closed connection after this long with no bytes moving (default 5m; off disables)
    #[argh(option, from_str_fn(optional_duration_arg))]
    pub fin_timeout: Option<Option<Duration>>,

    /// most connections served at once; more wait in the kernel's backlog (default: derived from the open-files and thread limits, logged at start)
    #[argh(option)]
    pub max_connections: Option<usize>,

    /// on SIGINT/SIGTERM, how long active connections may take to finish before they are cut (default 10s)
    #[argh(option, from_str_fn(duration_arg), default = "Duration::from_secs(10)")]
    pub drain_timeout: Duration,

    /// allow clients matching this CIDR or rinetd pattern (global rule; repeatable)
    #[argh(option, from_str_fn(pattern_arg))]
    pub allow: Vec<acl::Pattern>,

    /// deny clients matching this CIDR or rinetd pattern (global rule; repeatable)
    #[argh(option, from_str_fn(pattern_arg))]
    pub deny: Vec<acl::Pattern>,

    /// route TLS clients whose SNI matches PATTERN (a.example.com, *.example.com) to UPSTREAM[,UPSTREAM...] (repeatable)
    #[argh(option, from_str_fn(name_route_arg))]
    pub sni: Vec<NameRouteArg>,

    /// route plain HTTP/1.x clients whose Host matches PATTERN to UPSTREAM[,UPSTREAM...] (repeatable)
    #[argh(option, from_str_fn(name_route_arg))]
    pub host: Vec<NameRouteArg>,

    /// how long a client may take to send its TLS ClientHello, HTTP headers or PROXY header (default 5s)
    #[argh(option, from_str_fn(duration_arg))]
    pub peek_timeout: Option<Duration>,

    /// send a PROXY protocol header (v1 or v2) to upstreams, so they see the real client address
    #[argh(option, from_str_fn(version_arg))]
    pub proxy_protocol: Option<Version>,

    /// expect a PROXY protocol header (v1 or v2) from a trusted load balancer in front, and refuse clients without one
    #[argh(switch)]
    pub accept_proxy: bool,

    /// write the process id to this file (removed at exit), so `kill -HUP $(cat FILE)` works
    #[argh(option)]
    pub pid_file: Option<PathBuf>,

    /// CPU scheduling policy: batch (SCHED_BATCH, the default when started at nice 0 under the default policy; fewer context switches under load) or inherit (keep the policy and nice value tcp-router was started with)
    #[argh(option, default = "Scheduler::Batch")]
    pub scheduler: Scheduler,

    /// log level: off, error, warn, info, debug or trace (default info)
    #[argh(option, from_str_fn(parse_level), default = "LevelFilter::Info")]
    pub log_level: LevelFilter,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// `--sni PATTERN=UPSTREAM[,UPSTREAM...]` as typed; the pattern is checked when the config is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRouteArg {
    /// The name pattern, as typed.
    pub pattern: String,
    /// Its upstreams.
    pub upstreams: Vec<HostPort>,
}

/// Splits the positional addresses into a listen address and its upstreams (possibly none).
pub fn listen_and_upstreams(args: &Args) -> Result<Option<(HostPort, Vec<HostPort>)>, String> {
    let mut parsed = Vec::with_capacity(args.addresses.len());
    for text in &args.addresses {
        parsed.push(text.parse::<HostPort>().map_err(|e| e.to_string())?);
    }
    let routes_by_name = !args.sni.is_empty() || !args.host.is_empty();
    match parsed.len() {
        0 if args.config.is_some() && !routes_by_name => Ok(None),
        0 => Err("missing LISTEN and UPSTREAM addresses (see --help)".to_string()),
        1 if !routes_by_name => Err(format!(
            "missing an UPSTREAM address after LISTEN '{}' (see --help)",
            args.addresses[0]
        )),
        _ => {
            let listen = parsed.remove(0);
            Ok(Some((listen, parsed)))
        }
    }
}

/// `--connect-timeout` and friends: a duration, with the error as argh wants it.
fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// `--idle-timeout` and friends: a duration or `off`.
fn optional_duration_arg(text: &str) -> Result<Option<Duration>, String> {
    parse_optional_duration(text).map_err(|e| e.to_string())
}

fn pattern_arg(text: &str) -> Result<acl::Pattern, String> {
    text.parse::<acl::Pattern>().map_err(|e| e.to_string())
}

fn version_arg(text: &str) -> Result<Version, String> {
    text.parse::<Version>().map_err(|e| e.to_string())
}

fn name_route_arg(text: &str) -> Result<NameRouteArg, String> {
    let (pattern, upstreams) = text.split_once('=').ok_or_else(|| {
        format!("invalid route '{text}': expected PATTERN=UPSTREAM[,UPSTREAM...]")
    })?;
    let upstreams = upstreams
        .split(',')
        .map(|u| u.parse::<HostPort>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NameRouteArg {
        pattern: pattern.to_string(),
        upstreams,
    })
}

/// Parses a log level name for `--log-level`.
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
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
        assert_eq!(upstreams.len(), 1);
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
        assert_eq!(listen_and_upstreams(&args).unwrap().unwrap().1.len(), 0);
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

    #[test]
    fn a_config_file_makes_addresses_optional() {
        let args = parse(&["-c", "/etc/rinetd.conf"]).unwrap();
        assert_eq!(listen_and_upstreams(&args), Ok(None));
    }
}
