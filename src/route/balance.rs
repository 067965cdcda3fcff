//! A route's upstreams: round-robin choice, failover (each tried at most once per client), and a
//! short cool-down for an upstream that just failed.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::addr::HostPort;
use crate::net;

/// How long an upstream that failed to connect is skipped (unless every upstream is down).
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// The upstreams of one route, with their health marks.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    /// Round-robin cursor, advanced once per client.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Upstream {
    addr: HostPort,
    /// Milliseconds since [`epoch`] until which this upstream is skipped; 0 when healthy.
    cool_until_ms: AtomicU64,
}

/// Where a connect attempt went and why it failed.
#[derive(Debug)]
pub struct Attempt {
    /// The upstream as configured.
    pub upstream: HostPort,
    /// The resolved address, if resolution succeeded.
    pub addr: Option<SocketAddr>,
    /// What failed.
    pub error: io::Error,
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
pub struct Connected {
    /// The socket, connected.
    pub stream: TcpStream,
    /// Which upstream it is, as configured.
    pub upstream: HostPort,
    /// The address it resolved to.
    pub addr: SocketAddr,
}

/// Options for one connect.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Time allowed per upstream (spread over its addresses when a name resolves to several).
    pub timeout: Duration,
    /// Local source address.
    pub src: Option<IpAddr>,
}

/// Process-wide reference point for the cool-down marks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Upstreams {
    /// Wraps the configured upstreams; all start healthy.
    pub fn new(addrs: &[HostPort]) -> Upstreams {
        Upstreams {
            list: addrs
                .iter()
                .map(|addr| Upstream {
                    addr: addr.clone(),
                    cool_until_ms: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The configured upstreams, in order.
    pub fn addrs(&self) -> impl Iterator<Item = &HostPort> {
        self.list.iter().map(|u| &u.addr)
    }

    /// Connects to the next upstream in round-robin order, failing over to the others. Each is
    /// tried at most once; those cooling down after a recent failure are tried last. Every failed
    /// attempt is logged at warn by the caller from the returned list.
    pub fn connect(&self, options: ConnectOptions, failed: &mut Vec<Attempt>) -> Option<Connected> {
        for index in self.order() {
            let upstream = &self.list[index];
            match connect_one(&upstream.addr, options, failed) {
                Some(connected) => {
                    upstream.cool_until_ms.store(0, Ordering::Relaxed);
                    return Some(connected);
                }
                None => {
                    let until = now_ms() + COOL_DOWN.as_millis() as u64;
                    upstream.cool_until_ms.store(until, Ordering::Relaxed);
                }
            }
        }
        None
    }

    /// Indices to try: healthy ones from the round-robin cursor on, then cooling ones.
    fn order(&self) -> Vec<usize> {
        let n = self.list.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = now_ms();
        let rotated = (0..n).map(|i| (start + i) % n);
        let (healthy, cooling): (Vec<usize>, Vec<usize>) =
            rotated.partition(|&i| self.list[i].cool_until_ms.load(Ordering::Relaxed) <= now);
        healthy.into_iter().chain(cooling).collect()
    }
}

/// Resolves one upstream (at each call, so DNS changes are followed) and tries its addresses in
/// order within one connect budget.
fn connect_one(
    upstream: &HostPort,
    options: ConnectOptions,
    failed: &mut Vec<Attempt>,
) -> Option<Connected> {
    let addrs = match upstream.resolve() {
        Ok(addrs) => addrs,
        Err(error) => {
            failed.push(Attempt {
                upstream: upstream.clone(),
                addr: None,
                error,
            });
            return None;
        }
    };
    let deadline = Instant::now() + options.timeout;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match net::connect(addr, options.src, left) {
            Ok(stream) => {
                return Some(Connected {
                    stream,
                    upstream: upstream.clone(),
                    addr,
                })
            }
            Err(error) => failed.push(Attempt {
                upstream: upstream.clone(),
                addr: Some(addr),
                error,
            }),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(n: usize) -> Upstreams {
        let addrs: Vec<HostPort> = (0..n)
            .map(|i| format!("127.0.0.1:{}", 1000 + i).parse().unwrap())
            .collect();
        Upstreams::new(&addrs)
    }

    #[test]
    fn round_robin_rotates_the_start() {
        let ups = upstreams(3);
        assert_eq!(ups.order(), [0, 1, 2]);
        assert_eq!(ups.order(), [1, 2, 0]);
        assert_eq!(ups.order(), [2, 0, 1]);
    }

    #[test]
    fn cooling_upstreams_go_last_but_are_still_tried() {
        let ups = upstreams(3);
        ups.list[0]
            .cool_until_ms
            .store(now_ms() + 60_000, Ordering::Relaxed);
        assert_eq!(ups.order(), [1, 2, 0]);
        for u in &ups.list {
            u.cool_until_ms.store(now_ms() + 60_000, Ordering::Relaxed);
        }
        assert_eq!(ups.order().len(), 3);
    }
}
