//! Which upstream of a route a client tries first, and which next: the primaries that are up in
//! the policy's order (round-robin, or as written for `first`), then the backups that are up,
//! then as a last resort those marked down (primaries first, each group in the policy's order).
//! An upstream is down after `max_fails` connects in a row failed, for `fail_timeout` after the
//! last of them; a connect that succeeds clears its count. Pure bookkeeping over upstream indices
//! (primaries first, backups after them); the connecting is `serve::dial`'s.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::{Balance, Route};

/// How a route's balancer chooses and when it gives up on an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The order of the up upstreams within each group (primaries, backups).
    pub(crate) balance: Balance,
    /// Consecutive failed connects that mark an upstream down (at least 1).
    pub(crate) max_fails: usize,
    /// How long an upstream marked down is skipped.
    pub(crate) fail_timeout: Duration,
}

impl Policy {
    /// The policy `route` is configured with.
    pub(crate) fn of(route: &Route) -> Policy {
        Policy {
            balance: route.balance,
            max_fails: route.max_fails.max(1),
            fail_timeout: route.fail_timeout,
        }
    }
}

/// An upstream just marked down: how many connects in a row failed, and for how long it is
/// skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MarkedDown {
    /// Consecutive failed connects, `max_fails` or more.
    pub(crate) fails: usize,
    /// How long it is skipped.
    pub(crate) skipped_for: Duration,
}

/// The health marks and round-robin cursor of one route's upstreams.
#[derive(Debug)]
pub(crate) struct Balancer {
    policy: Policy,
    /// How many of the upstreams are primaries; the rest are backups.
    primaries: usize,
    /// Per upstream: milliseconds since [`epoch`] until which it is skipped; 0 when up.
    down_until_ms: Vec<AtomicU64>,
    /// Per upstream: connects that failed in a row since its last success.
    fails: Vec<AtomicUsize>,
    /// Round-robin cursor, advanced once per client (round-robin only).
    next: AtomicUsize,
}

/// Process-wide reference point for the down marks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`], never 0 (0 marks an upstream up).
fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Balancer {
    /// Marks for `primaries` primary and `backups` backup upstreams, all up.
    pub(crate) fn new(primaries: usize, backups: usize, policy: Policy) -> Balancer {
        let n = primaries + backups;
        Balancer {
            policy,
            primaries,
            down_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            fails: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The order in which one client tries the upstreams, each once.
    pub(crate) fn order(&self) -> Vec<usize> {
        self.order_at(now_ms())
    }

    /// [`Balancer::order`] at `now` (milliseconds since [`epoch`]).
    fn order_at(&self, now: u64) -> Vec<usize> {
        let n = self.down_until_ms.len();
        let start = match self.policy.balance {
            Balance::First => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let group = |from: usize, len: usize| (0..len).map(move |i| from + (start + i) % len);
        let (up, down): (Vec<usize>, Vec<usize>) = group(0, self.primaries)
            .chain(group(self.primaries, n - self.primaries))
            .partition(|&i| self.down_until_ms[i].load(Ordering::Relaxed) <= now);
        up.into_iter().chain(down).collect()
    }

    /// How long upstream `index` is still down (skipped while others are up), if it is.
    pub(crate) fn cooling_for(&self, index: usize) -> Option<Duration> {
        self.down_for_at(index, now_ms())
    }

    fn down_for_at(&self, index: usize, now: u64) -> Option<Duration> {
        let until = self.down_until_ms.get(index)?.load(Ordering::Relaxed);
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// True if upstream `index` is a backup rather than a primary.
    pub(crate) fn is_backup(&self, index: usize) -> bool {
        index >= self.primaries
    }

    /// Upstream `index` accepted a connection: up, its count cleared. True if it had been marked
    /// down (its failures had reached `max_fails`), so the caller can say it is up again.
    pub(crate) fn succeeded(&self, index: usize) -> bool {
        let fails = self.fails[index].swap(0, Ordering::Relaxed);
        if fails != 0 {
            self.down_until_ms[index].store(0, Ordering::Relaxed);
        }
        fails >= self.policy.max_fails
    }

    /// Upstream `index` failed a connect: at `max_fails` in a row (and at each failure after
    /// that) it is skipped for `fail_timeout` while others are up. Returns the mark when this
    /// failure is the one that reached `max_fails`, so the caller says so once.
    pub(crate) fn failed(&self, index: usize) -> Option<MarkedDown> {
        self.failed_at(index, now_ms())
    }

    fn failed_at(&self, index: usize, now: u64) -> Option<MarkedDown> {
        let fails = self.fails[index].fetch_add(1, Ordering::Relaxed) + 1;
        if fails < self.policy.max_fails {
            return None;
        }
        let until = now + self.policy.fail_timeout.as_millis() as u64;
        self.down_until_ms[index].store(until, Ordering::Relaxed);
        (fails == self.policy.max_fails).then_some(MarkedDown {
            fails,
            skipped_for: self.policy.fail_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_SECONDS: Duration = Duration::from_secs(5);

    fn policy(balance: Balance, max_fails: usize) -> Policy {
        Policy {
            balance,
            max_fails,
            fail_timeout: FIVE_SECONDS,
        }
    }

    fn round_robin(primaries: usize, backups: usize) -> Balancer {
        Balancer::new(primaries, backups, policy(Balance::RoundRobin, 1))
    }

    #[test]
    fn round_robin_rotates_the_start() {
        let balancer = round_robin(3, 0);
        assert_eq!(balancer.order_at(1), [0, 1, 2]);
        assert_eq!(balancer.order_at(1), [1, 2, 0]);
        assert_eq!(balancer.order_at(1), [2, 0, 1]);
    }

    #[test]
    fn down_upstreams_go_last_but_are_still_tried() {
        let balancer = round_robin(3, 0);
        assert!(balancer.failed_at(0, 1).is_some());
        assert_eq!(balancer.order_at(2), [1, 2, 0]);
        for i in 0..3 {
            balancer.failed_at(i, 1);
        }
        assert_eq!(balancer.order_at(2).len(), 3);
        assert_eq!(
            balancer.down_for_at(2, 1001),
            Some(FIVE_SECONDS - Duration::from_secs(1))
        );
        assert!(balancer.succeeded(2));
        assert_eq!(balancer.down_for_at(2, 1001), None);
        assert_eq!(balancer.order_at(2)[0], 2);
    }

    #[test]
    fn a_down_mark_expires_after_fail_timeout() {
        let balancer = Balancer::new(2, 0, policy(Balance::First, 1));
        balancer.failed_at(0, 1000);
        assert_eq!(balancer.order_at(5999), [1, 0]);
        assert_eq!(
            balancer.down_for_at(0, 5999),
            Some(Duration::from_millis(1))
        );
        assert_eq!(balancer.order_at(6000), [0, 1]);
        assert_eq!(balancer.down_for_at(0, 6000), None);
    }

    #[test]
    fn first_keeps_the_written_order_and_skips_the_down() {
        let balancer = Balancer::new(3, 0, policy(Balance::First, 1));
        assert_eq!(balancer.order_at(1), [0, 1, 2]);
        assert_eq!(balancer.order_at(1), [0, 1, 2]);
        balancer.failed_at(0, 1);
        assert_eq!(balancer.order_at(2), [1, 2, 0]);
        balancer.failed_at(1, 1);
        assert_eq!(balancer.order_at(2), [2, 0, 1]);
    }

    #[test]
    fn backups_come_after_every_up_primary_and_before_the_down_ones() {
        let balancer = round_robin(2, 2);
        assert_eq!(balancer.order_at(1), [0, 1, 2, 3]);
        assert_eq!(balancer.order_at(1), [1, 0, 3, 2]);
        balancer.failed_at(0, 1);
        balancer.failed_at(1, 1);
        assert_eq!(balancer.order_at(2), [2, 3, 0, 1]);
        balancer.failed_at(2, 1);
        assert_eq!(balancer.order_at(2), [3, 1, 0, 2]);
        assert!(balancer.is_backup(2) && !balancer.is_backup(1));
    }

    #[test]
    fn a_primary_back_up_takes_the_clients_from_the_backups() {
        let balancer = Balancer::new(1, 1, policy(Balance::First, 1));
        balancer.failed_at(0, 1);
        assert_eq!(balancer.order_at(2), [1, 0]);
        assert_eq!(balancer.order_at(5001), [0, 1]);
        assert!(balancer.succeeded(0));
        assert!(!balancer.succeeded(0));
        assert_eq!(balancer.order_at(5002), [0, 1]);
    }

    #[test]
    fn max_fails_counts_failures_in_a_row_and_a_success_clears_them() {
        let balancer = Balancer::new(2, 0, policy(Balance::First, 3));
        assert_eq!(balancer.failed_at(0, 1), None);
        assert_eq!(balancer.failed_at(0, 1), None);
        assert_eq!(balancer.order_at(2), [0, 1]);
        assert!(!balancer.succeeded(0));
        assert_eq!(balancer.failed_at(0, 1), None);
        assert_eq!(balancer.failed_at(0, 1), None);
        assert_eq!(
            balancer.failed_at(0, 1),
            Some(MarkedDown {
                fails: 3,
                skipped_for: FIVE_SECONDS
            })
        );
        assert_eq!(balancer.order_at(2), [1, 0]);
        // Still failing after the mark expired: down again at once, said only once.
        assert_eq!(balancer.failed_at(0, 6000), None);
        assert_eq!(balancer.order_at(6001), [1, 0]);
        assert!(balancer.succeeded(0));
    }

    #[test]
    fn no_upstreams_no_order() {
        assert!(round_robin(0, 0).order().is_empty());
        assert!(Balancer::new(0, 0, policy(Balance::First, 1))
            .order()
            .is_empty());
    }
}
