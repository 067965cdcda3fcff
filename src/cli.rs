//! Command-line arguments as typed (argh), before they are validated into a [`Config`](crate::config::Config).

use std::time::Duration;

use argh::FromArgs;
use log::LevelFilter;

use crate::addr::HostPort;
use crate::duration::{parse_duration, parse_optional_duration};

/// Forward TCP connections from LISTEN to one of the UPSTREAMs, byte for byte.
#[derive(FromArgs, Debug)]
#[argh(
    example = "Forward local port 11000 to a Redis server:\n  $ tcp-router 127.0.0.1:11000 127.0.0.1:6379\n  $ redis-cli -p 11000 PING",
    example = "Listen on all IPv4 and IPv6 addresses; round-robin over three upstreams with failover:\n  $ tcp-router '[::]:8080' app1:80 app2:80 10.0.0.7:80",
    example = "Give clients 30s to finish on SIGTERM, close connections idle for 10 minutes:\n  $ tcp-router --drain-timeout 30s --idle-timeout 10m 0.0.0.0:2222 10.0.0.9:22",
    note = "Addresses are HOST:PORT, IPv6 in brackets ([::1]:80); host names are resolved at each new connection. Durations: 250ms, 5s, 2m, 1h or plain seconds.",
    error_code(0, "success, including a graceful stop on SIGINT or SIGTERM"),
    error_code(1, "runtime failure, e.g. a listen address in use or not permitted"),
    error_code(2, "invalid command line or configuration"),
    error_code(
        130,
        "a second SIGINT or SIGTERM during the drain (128 + signal number)"
    )
)]
pub struct Args {
    /// the listen address, then one or more upstream addresses
    #[argh(positional, arg_name = "LISTEN UPSTREAM")]
    pub addresses: Vec<String>,

    /// time allowed for each upstream connect before trying the next (default 5s)
    #[argh(option, from_str_fn(duration_arg), default = "Duration::from_secs(5)")]
    pub connect_timeout: Duration,

    /// most connections served at once; more wait in the kernel's backlog (default: derived from the open-files and thread limits, logged at start)
    #[argh(option)]
    pub max_connections: Option<usize>,

    /// on SIGINT/SIGTERM, how long active connections may take to finish before they are cut (default 10s)
    #[argh(option, from_str_fn(duration_arg), default = "Duration::from_secs(10)")]
    pub drain_timeout: Duration,

    /// close a connection after this long with no bytes moving in either direction (default off)
    #[argh(option, from_str_fn(optional_duration_arg), default = "None")]
    pub idle_timeout: Option<Duration>,

    /// close a half-closed connection after this long with no bytes moving (default 5m; off to disable)
    #[argh(
        option,
        from_str_fn(optional_duration_arg),
        default = "Some(Duration::from_secs(300))"
    )]
    pub fin_timeout: Option<Duration>,

    /// log level: off, error, warn, info, debug or trace (default info)
    #[argh(option, from_str_fn(parse_level), default = "LevelFilter::Info")]
    pub log_level: LevelFilter,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// Splits the positional addresses into a listen address and its upstreams.
pub fn listen_and_upstreams(args: &Args) -> Result<(HostPort, Vec<HostPort>), String> {
    let mut parsed = Vec::with_capacity(args.addresses.len());
    for text in &args.addresses {
        parsed.push(text.parse::<HostPort>().map_err(|e| e.to_string())?);
    }
    match parsed.len() {
        0 => Err("missing LISTEN and UPSTREAM addresses (see --help)".to_string()),
        1 => Err(format!(
            "missing an UPSTREAM address after LISTEN '{}' (see --help)",
            args.addresses[0]
        )),
        _ => {
            let listen = parsed.remove(0);
            Ok((listen, parsed))
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
    fn defaults() {
        let args = parse(&["127.0.0.1:11000", "127.0.0.1:6379"]).unwrap();
        assert_eq!(args.connect_timeout, Duration::from_secs(5));
        assert_eq!(args.drain_timeout, Duration::from_secs(10));
        assert_eq!(args.log_level, LevelFilter::Info);
        assert_eq!(args.idle_timeout, None);
        let (listen, upstreams) = listen_and_upstreams(&args).unwrap();
        assert_eq!(listen.to_string(), "127.0.0.1:11000");
        assert_eq!(upstreams.len(), 1);
    }

    #[test]
    fn options_take_durations_and_levels() {
        let args = parse(&[
            "--connect-timeout",
            "250ms",
            "--log-level",
            "debug",
            "--max-connections",
            "7",
            "[::1]:1",
            "[::1]:2",
            "app:80",
        ])
        .unwrap();
        assert_eq!(args.connect_timeout, Duration::from_millis(250));
        assert_eq!(args.log_level, LevelFilter::Debug);
        assert_eq!(args.max_connections, Some(7));
        assert_eq!(listen_and_upstreams(&args).unwrap().1.len(), 2);
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(&["--connect-timeout", "5x", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains("'5x'"), "{err}");
        let err = parse(&["--log-level", "loud", "a:1", "b:2"]).unwrap_err();
        assert!(err.contains("'loud'"), "{err}");
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
}
