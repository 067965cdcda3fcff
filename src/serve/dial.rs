//! Dialing a route's upstream: the order comes from the route's balancer (round-robin, failed
//! ones last); each upstream is resolved at every dial, so DNS changes are followed, and its
//! addresses are tried within one connect budget. Every failed attempt is reported for the log.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::HostPort;
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
        let upstream = &route.config.upstreams[index];
        let stats = &route.upstream_stats[index];
        match connect_one(upstream, options, stats, failed) {
            Some(connected) => {
                route.balancer.succeeded(index);
                return Some(connected);
            }
            None => route.balancer.failed(index),
        }
    }
    None
}
