//! A member: one address of one upstream of one route, with its health marks, its open
//! connections and its counters. Connections read its standing without a lock; checks and
//! connect outcomes change it under one.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::config::{Endpoint, HostPort};
use crate::route::balance::{stable_hash, Standing};
use crate::sys::sync::lock;
use crate::sys::{net, unix};

use super::marks::{Change, Condition, Marks, Rules};

/// Bounds of the check-duration histogram, in seconds.
pub(crate) const CHECK_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A member's counters, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct MemberStats {
    /// Checks that passed.
    pub(crate) checks_passed: AtomicU64,
    /// Checks that failed.
    pub(crate) checks_failed: AtomicU64,
    /// Check durations: one count per bucket of [`CHECK_BUCKETS`] and one above, and the sum in
    /// microseconds.
    check_buckets: [AtomicU64; 9],
    check_micros: AtomicU64,
    /// Changes into up.
    pub(crate) went_up: AtomicU64,
    /// Changes into down or cooling.
    pub(crate) went_down: AtomicU64,
}

impl MemberStats {
    fn checked(&self, took: Duration, passed: bool) {
        let counter = if passed {
            &self.checks_passed
        } else {
            &self.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = CHECK_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(CHECK_BUCKETS.len());
        self.check_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.check_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The check-duration histogram: cumulative counts per bucket (the last is `+Inf`), and the
    /// sum in seconds.
    pub(crate) fn check_histogram(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = (self.check_buckets.iter())
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.check_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }
}

/// One address of one upstream.
#[derive(Debug)]
pub(crate) struct Member {
    /// The upstream as written.
    pub(crate) upstream: HostPort,
    /// The address.
    pub(crate) addr: Endpoint,
    /// Its name for the balancer, the same in every process: a hash of both.
    pub(crate) key: u64,
    rules: Rules,
    marks: Mutex<Marks>,
    /// [`Condition`] as a number, for lock-free reads.
    state: AtomicU8,
    /// Milliseconds since [`epoch`] until which a cooling member is skipped.
    cooling_until_ms: AtomicU64,
    /// Connections open to it (held by [`Claim`]s).
    active: AtomicUsize,
    /// Its counters.
    pub(crate) stats: MemberStats,
}

/// Connects to `to` within `timeout`, from `src` if given (an IP address; a Unix socket has no
/// source): the one way both connections (`serve::dial`) and checks (`probe`) reach a member.
pub(crate) fn connect(to: &Endpoint, src: Option<IpAddr>, timeout: Duration) -> io::Result<Socket> {
    match to {
        Endpoint::Ip(addr) => net::connect(*addr, src, timeout),
        Endpoint::Unix(path) => unix::connect(&path.sun_path(), timeout),
    }
}

/// Process-wide reference point for lock-free deadlines.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

impl Member {
    /// A new member of `upstream` at `addr`, under `rules`.
    pub(crate) fn new(upstream: HostPort, addr: Endpoint, rules: Rules) -> Member {
        let key = stable_hash(format!("{upstream} {addr}").as_bytes());
        let marks = Marks::new();
        let state = marks.state as usize;
        Member {
            upstream,
            addr,
            key,
            rules,
            marks: Mutex::new(marks),
            state: AtomicU8::new(state as u8),
            cooling_until_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            stats: MemberStats::default(),
        }
    }

    /// Its address without the port a name's members share: the IP address, or the socket path.
    pub(crate) fn host(&self) -> String {
        match &self.addr {
            Endpoint::Ip(addr) => addr.ip().to_string(),
            Endpoint::Unix(path) => path.to_string(),
        }
    }

    /// The state now, without a lock (a cooling member whose cool-down ended is unknown).
    pub(crate) fn state(&self) -> Condition {
        let state =
            Condition::ALL[usize::from(self.state.load(Ordering::Relaxed)) % Condition::ALL.len()];
        if state == Condition::Cooling
            && self.cooling_until_ms.load(Ordering::Relaxed) <= millis_since_epoch(Instant::now())
        {
            return Condition::Unknown;
        }
        state
    }

    /// How the balancer sees it: without checks, a member nothing has shown to be down is
    /// served as up.
    pub(crate) fn standing(&self) -> Standing {
        match self.state() {
            Condition::Up => Standing::Up,
            Condition::Unknown if !self.rules.checked => Standing::Up,
            Condition::Unknown => Standing::Unknown,
            Condition::Down | Condition::Cooling => Standing::Down,
        }
    }

    /// Connections open to it.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// A copy of its marks.
    pub(crate) fn marks(&self) -> Marks {
        lock(&self.marks).clone()
    }

    /// Takes the marks another process knew (a live upgrade): a check that finished here
    /// meanwhile is superseded, the next one counts from them.
    pub(crate) fn restore(&self, marks: Marks) {
        self.change(|m| {
            *m = marks;
            None
        });
    }

    /// Applies `step` to the marks and mirrors the result for lock-free reads; counts a change.
    fn change(&self, step: impl FnOnce(&mut Marks) -> Option<Change>) -> Option<Change> {
        let mut marks = lock(&self.marks);
        let change = step(&mut marks);
        let state = marks.state as usize;
        self.state.store(state as u8, Ordering::Relaxed);
        let until = marks.cooling_until.map_or(0, millis_since_epoch);
        self.cooling_until_ms.store(until, Ordering::Relaxed);
        drop(marks);
        if let Some(change) = &change {
            let counter = match change.to {
                Condition::Up => &self.stats.went_up,
                _ => &self.stats.went_down,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        change
    }

    /// A check finished: passed after `took`, or failed for the reason given.
    pub(crate) fn checked(&self, result: Result<Duration, (Duration, String)>) -> Option<Change> {
        match result {
            Ok(took) => {
                self.stats.checked(took, true);
                self.change(|m| m.check_passed(&self.rules, took))
            }
            Err((took, why)) => {
                self.stats.checked(took, false);
                self.change(|m| m.check_failed(&self.rules, took, why))
            }
        }
    }

    /// A connect to it failed (`kind` says how).
    pub(crate) fn connect_failed(&self, kind: &str) -> Option<Change> {
        self.change(|m| m.connect_failed(&self.rules, kind, Instant::now()))
    }

    /// A connect to it succeeded: the connection holds the returned lease while it is open.
    pub(crate) fn connected(self: &Arc<Member>) -> (Claim, Option<Change>) {
        let change = self.change(|m| m.connected(&self.rules));
        (Claim::new(self), change)
    }

    /// How it is named in log lines: the upstream as written, and the address too when the
    /// upstream is a name (`db.example:5432 (10.0.0.2:5432)`).
    pub(crate) fn describe(&self) -> String {
        if self.upstream.to_string() == self.addr.to_string() {
            self.upstream.to_string()
        } else {
            format!("{} ({})", self.upstream, self.addr)
        }
    }
}

/// One open connection to a member, counted while it lives.
#[derive(Debug)]
pub(crate) struct Claim {
    member: Arc<Member>,
}

impl Claim {
    /// Counts one more connection open to `member`.
    pub(crate) fn new(member: &Arc<Member>) -> Claim {
        member.active.fetch_add(1, Ordering::Relaxed);
        Claim {
            member: Arc::clone(member),
        }
    }

    /// The member it counts against.
    pub(crate) fn member(&self) -> &Arc<Member> {
        &self.member
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.member.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(checked: bool) -> Rules {
        Rules {
            checked,
            rise: 1,
            fall: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(5),
        }
    }

    fn member(checked: bool) -> Arc<Member> {
        let upstream: HostPort = "127.0.0.1:6379".parse().unwrap();
        Arc::new(Member::new(
            upstream,
            "127.0.0.1:6379".parse().unwrap(),
            rules(checked),
        ))
    }

    #[test]
    fn a_lease_counts_an_open_connection_while_it_lives() {
        let member = member(false);
        let (lease, change) = member.connected();
        assert_eq!((member.active(), change), (1, None));
        let second = Claim::new(&member);
        drop(lease);
        assert_eq!(member.active(), 1);
        drop(second);
        assert_eq!(member.active(), 0);
    }

    #[test]
    fn the_lock_free_state_follows_the_marks() {
        let member = member(true);
        assert_eq!(member.standing(), Standing::Unknown);
        assert!(member
            .checked(Err((Duration::ZERO, "refused".into())))
            .is_some());
        assert_eq!(member.standing(), Standing::Down);
        assert!(member.checked(Ok(Duration::from_millis(2))).is_some());
        assert_eq!(member.standing(), Standing::Up);
        assert_eq!(member.stats.went_up.load(Ordering::Relaxed), 1);
        assert_eq!(member.stats.went_down.load(Ordering::Relaxed), 1);
        let (counts, sum) = member.stats.check_histogram();
        assert_eq!((counts[0], counts[2], counts[8]), (1, 2, 2));
        assert!(sum > 0.001);
    }

    #[test]
    fn a_cooling_member_stands_down_until_its_cool_down_ends() {
        let member = member(false);
        assert!(member.connect_failed("connection refused").is_some());
        assert_eq!(member.standing(), Standing::Down);
        assert_eq!(member.describe(), "127.0.0.1:6379");
    }
}
