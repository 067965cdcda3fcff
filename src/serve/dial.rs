//! Dialing a route's upstream: the order comes from the route's balancer (primaries that are up,
//! then backups that are up, then those marked down); each upstream is resolved at every dial,
//! so DNS changes are followed, and its addresses are tried within one connect budget. Every
//! failed attempt is reported for the log, and every upstream marked down or up again is logged.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::{format_duration, HostPort};
use crate::route::balance::MarkedDown;
use crate::sys::{net, resolve};

use super::listener::RouteState;
use super::metrics::{ConnectFailure, UpstreamStats};

/// Where a connect attempt went and why it failed.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// The upstream as configured.
    pub(crate) upstream: HostPort,
    /// The resolved address, if resolution succeeded.
    pub(crate) addr: Option<SocketAddr>,
    /// What failed.
    pub(crate) error: io::Error,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) if addr.to_string() != self.upstream.to_string() => {
                write!(f, "{} ({addr}): {}", self.upstream, self.error)
            }
            Some(_) => write!(f, "{}: {}", self.upstream, self.error),
            None => write!(f, "{}: cannot resolve: {}", self.upstream, self.error),
        }
    }
}

/// A connected upstream.
#[derive(Debug)]
pub(crate) struct Dialed {
    /// The socket, connected.
    pub(crate) stream: TcpStream,
    /// Which upstream it is, as configured.
    pub(crate) upstream: HostPort,
    /// The address it resolved to.
    pub(crate) addr: SocketAddr,
}

/// Resolves one upstream (at each call, so DNS changes are followed) and tries its addresses in
/// order within one connect budget.
fn connect_one(
    upstream: &HostPort,
    options: ConnectOptions,
    stats: &UpstreamStats,
    failed: &mut Vec<Attempt>,
) -> Option<Dialed> {
    let addrs = match resolve::resolve(&upstream.host.to_string(), upstream.port) {
        Ok(addrs) => addrs,
        Err(error) => {
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            let attempt = Attempt {
                upstream: upstream.clone(),
                addr: None,
                error,
            };
            stats.failed(ConnectFailure::NotResolved, attempt.to_string());
            failed.push(attempt);
            return None;
        }
    };
    let deadline = crate::sys::clock::deadline_in(options.timeout);
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match net::connect(addr, options.src, left) {
            Ok(stream) => {
                stats.connected(started.elapsed());
                return Some(Dialed {
                    stream,
                    upstream: upstream.clone(),
                    addr,
                });
            }
            Err(error) => {
                let attempt = Attempt {
                    upstream: upstream.clone(),
                    addr: Some(addr),
                    error,
                };
                stats.failed(ConnectFailure::of(&attempt.error), attempt.to_string());
                failed.push(attempt);
            }
        }
    }
    None
}

/// Options for one connect.
#[derive(Debug, Clone, Copy)]
struct ConnectOptions {
    /// Time allowed per upstream (spread over its addresses when a name resolves to several).
    timeout: Duration,
    /// Local source address.
    src: Option<IpAddr>,
}

/// Connects to the route's upstreams in the balancer's order, each at most once, until one
/// answers; records the outcome in the balancer, and every failed attempt in `failed`.
pub(crate) fn dial(route: &RouteState, failed: &mut Vec<Attempt>) -> Option<Dialed> {
    let options = ConnectOptions {
        timeout: route.config.connect_timeout,
        src: route.config.src,
    };
    for index in route.balancer.order() {
        let upstream = route.upstream(index);
        let stats = &route.upstream_stats[index];
        match connect_one(upstream, options, stats, failed) {
            Some(connected) => {
                if route.balancer.succeeded(index) {
                    log::info!("upstream {upstream} up: connected");
                }
                return Some(connected);
            }
            None => {
                if let Some(down) = route.balancer.failed(index) {
                    log::warn!("{}", down_line(upstream, down, failed.last()));
                }
            }
        }
    }
    None
}

/// The log line of an upstream just marked down, with the last failure's reason:
/// `upstream 127.0.0.1:6380 down: 3 failed connects in a row (connection refused); skipped for 5s`.
fn down_line(upstream: &HostPort, down: MarkedDown, last: Option<&Attempt>) -> String {
    let reason = match last {
        Some(Attempt { addr: None, .. }) => " (cannot resolve)".to_string(),
        Some(attempt) => format!(" ({})", attempt.error.kind()),
        None => String::new(),
    };
    let connects = if down.fails == 1 {
        "1 failed connect".to_string()
    } else {
        format!("{} failed connects in a row", down.fails)
    };
    format!(
        "upstream {upstream} down: {connects}{reason}; skipped for {}",
        format_duration(down.skipped_for)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_down_line_says_how_many_failures_why_and_for_how_long() {
        let upstream: HostPort = "127.0.0.1:6380".parse().unwrap();
        let refused = Attempt {
            upstream: upstream.clone(),
            addr: Some("127.0.0.1:6380".parse().unwrap()),
            error: io::ErrorKind::ConnectionRefused.into(),
        };
        let down = |fails| MarkedDown {
            fails,
            skipped_for: Duration::from_secs(5),
        };
        assert_eq!(
            down_line(&upstream, down(3), Some(&refused)),
            "upstream 127.0.0.1:6380 down: 3 failed connects in a row (connection refused); \
             skipped for 5s"
        );
        assert_eq!(
            down_line(&upstream, down(1), None),
            "upstream 127.0.0.1:6380 down: 1 failed connect; skipped for 5s"
        );
    }
}
