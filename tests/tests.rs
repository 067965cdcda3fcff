//! Integration tests over real loopback sockets on ephemeral ports.

/// Shared helpers: routers, upstreams, data and deadlines.
mod util;

/// The admin endpoint: metrics, readiness, live connections and routes, the status page; with
/// curl, promtool and chromium where installed.
mod admin;
/// The architecture rules of docs/design.md, read off the source.
mod architecture;
/// `--check` predicts the start: log file, patterns, privileged ports, no listener, `--explain`.
mod check;
/// The binary: command line, exit codes, signals and draining.
mod cli;
/// The config file: listeners, allow/deny, idle limits, reload, --check.
mod config_file;
/// The crate as crates.io would show it: README, manifest, licences, root exports.
mod crate_page;
/// Passive health, backups and `balance=first`: which upstream clients reach, and what is said.
mod health;
/// A peer's last words before its reset: every byte, then the reset.
mod last_words;
/// Upstream failures, failover and the connection cap.
mod limits;
/// The manual pages document every option of --help and every route key.
mod manpages;
/// What an idle connection costs in memory, bounded from /proc.
mod memory;
/// Several protocols on one port: SSH, TLS, HTTP and byte prefixes, and the load-time checks.
mod protocols;
/// Port ranges: 500 ports in one process, one line in --check, one label in the metrics,
/// reloads port by port, the one-line errors.
mod ranges;
/// The tutorial's own scenario with a real redis-server and redis-cli.
mod redis;
/// Bytes both ways: echo, server-first, half-close, resets, many concurrent streams.
mod relay;
/// SNI, Host and ALPN routing and PROXY protocol, with openssl and curl where installed.
mod routing;
/// Socket activation, readiness notification, the watchdog and SO_REUSEPORT.
mod systemd;
/// UDP forwarding: DNS through dnsmasq, idle timeouts, the flow cap, reload, rinetd's UDP rules.
mod udp;
/// Unix-domain sockets both ways: redis-server's socket and curl's --unix-socket, half-closes,
/// the socket file's life, credentials, abstract names, reload, upgrade, PROXY, errors.
mod unix;
/// Live upgrade on SIGUSR2: listeners and established connections move to a new process; a
/// failed upgrade leaves the old one serving.
mod upgrade;
/// One rule for every value: the command line, the config file and the builder alike.
mod values;
