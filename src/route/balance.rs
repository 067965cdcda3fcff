//! Which upstream of a route a client tries first: round-robin, with failover to the others, and
//! a short cool-down for an upstream that just failed. Pure bookkeeping over upstream indices;
//! the connecting is `serve::connect`'s.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long an upstream that failed to connect is skipped (unless every upstream is down).
pub(crate) const COOL_DOWN: Duration = Duration::from_secs(5);

/// The health marks and round-robin cursor of one route's upstreams.
#[derive(Debug)]
pub(crate) struct Balancer {
    /// Per upstream: milliseconds since [`epoch`] until which it is skipped; 0 when healthy.
    cool_until_ms: Vec<AtomicU64>,
    /// Round-robin cursor, advanced once per client.
    next: AtomicUsize,
}

/// Process-wide reference point for the cool-down marks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Balancer {
    /// Marks for `upstreams` upstreams, all healthy.
    pub(crate) fn new(upstreams: usize) -> Balancer {
        Balancer {
            cool_until_ms: (0..upstreams).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The order in which one client tries the upstreams: each once, healthy ones from the
    /// round-robin cursor on, then those cooling down after a recent failure.
    pub(crate) fn order(&self) -> Vec<usize> {
        let n = self.cool_until_ms.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = now_ms();
        let rotated = (0..n).map(|i| (start + i) % n);
        let (healthy, cooling): (Vec<usize>, Vec<usize>) =
            rotated.partition(|&i| self.cool_until_ms[i].load(Ordering::Relaxed) <= now);
        healthy.into_iter().chain(cooling).collect()
    }

    /// How long upstream `index` is still cooling down after a failure, if it is.
    pub(crate) fn cooling_for(&self, index: usize) -> Option<Duration> {
        let until = self.cool_until_ms.get(index)?.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Upstream `index` answered: healthy again.
    pub(crate) fn succeeded(&self, index: usize) {
        self.cool_until_ms[index].store(0, Ordering::Relaxed);
    }

    /// Upstream `index` failed: skip it for [`COOL_DOWN`] while others are healthy.
    pub(crate) fn failed(&self, index: usize) {
        let until = now_ms() + COOL_DOWN.as_millis() as u64;
        self.cool_until_ms[index].store(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_the_start() {
        let balancer = Balancer::new(3);
        assert_eq!(balancer.order(), [0, 1, 2]);
        assert_eq!(balancer.order(), [1, 2, 0]);
        assert_eq!(balancer.order(), [2, 0, 1]);
    }

    #[test]
    fn cooling_upstreams_go_last_but_are_still_tried() {
        let balancer = Balancer::new(3);
        balancer.failed(0);
        assert_eq!(balancer.order(), [1, 2, 0]);
        for i in 0..3 {
            balancer.failed(i);
        }
        assert_eq!(balancer.order().len(), 3);
        assert!(balancer
            .cooling_for(2)
            .is_some_and(|left| left <= COOL_DOWN));
        balancer.succeeded(2);
        assert_eq!(balancer.cooling_for(2), None);
        assert_eq!(balancer.order()[0], 2);
    }

    #[test]
    fn no_upstreams_no_order() {
        assert!(Balancer::new(0).order().is_empty());
    }
}
