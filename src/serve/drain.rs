//! The graceful stop: with the listeners closed, connections still choosing a route are closed at
//! once, established ones get the drain timeout to finish, and the rest are cut.

use std::time::{Duration, Instant};

use crate::config::format_duration;
use crate::sys::clock;

use super::bound::Listening;
use super::clients::Evicted;
use super::status::{Shared, HEARTBEAT};

/// How long to wait for cut connections to log their last line before exiting anyway.
pub(super) const CUT_GRACE: Duration = Duration::from_secs(2);

/// How a graceful stop went: how many connections were active when it began, how many finished
/// within the drain timeout, and how many had to be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections alive when the stop began.
    pub active: usize,
    /// Of those, how many finished on their own within the drain timeout.
    pub finished: usize,
    /// How many were cut when the drain timeout passed.
    pub cut: usize,
}

impl DrainReport {
    /// The report of a drain that found `active` connections and had to cut `cut` of them.
    fn after(active: usize, cut: usize) -> DrainReport {
        DrainReport {
            active,
            finished: active.saturating_sub(cut),
            cut,
        }
    }
}

/// Stops accepting (closing the `listening` sockets), waits for live connections up to
/// `drain_timeout`, then cuts the rest.
pub(super) fn drain(
    listening: Vec<Listening>,
    shared: &Shared,
    drain_timeout: Duration,
) -> DrainReport {
    drop(listening);
    shared.set_listeners(Vec::new());
    let registry = &shared.registry;
    let active = registry.len();
    let started = Instant::now();
    log::info!(
        "stopping: accepting no more clients; {active} active connection(s), waiting up to {}",
        format_duration(drain_timeout)
    );
    let silent = evict_peeking(shared);
    if silent > 0 {
        log::info!(
            "stopping: {silent} connection(s) still choosing a route closed at once (nothing \
                 of theirs is in flight)"
        );
    }
    let mut report = DrainReport::after(active, 0);
    if !wait_empty_beating(shared, drain_timeout) {
        report = DrainReport::after(active, registry.cut_all());
        wait_empty_beating(shared, CUT_GRACE);
    }
    log::info!(
        "stopped: {} connection(s) finished, {} cut; drained in {} (drain timeout {})",
        report.finished,
        report.cut,
        format_duration(Duration::from_millis(started.elapsed().as_millis() as u64)),
        format_duration(drain_timeout)
    );
    report
}

/// Waits until every connection has ended or `timeout` passes (true if all ended), in heartbeats:
/// the process is busy draining, not stuck, and `/health` should say so.
pub(super) fn wait_empty_beating(shared: &Shared, timeout: Duration) -> bool {
    let deadline = clock::deadline_in(timeout);
    loop {
        shared.beat();
        let left = deadline.saturating_duration_since(Instant::now());
        if shared.registry.wait_empty(left.min(HEARTBEAT)) {
            return true;
        }
        if left <= HEARTBEAT {
            return false;
        }
    }
}

/// Closes every connection still in the peek phase (silent, or sending what routing reads): a
/// graceful stop waits only for established connections. Returns how many.
fn evict_peeking(shared: &Shared) -> usize {
    shared
        .registry
        .snapshot()
        .iter()
        .map(|live| live.listener.peeking.evict_all(Evicted::Stopping))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::metrics::Metrics;
    use crate::serve::permits::Permits;

    #[test]
    fn what_was_not_cut_finished_on_its_own() {
        let report = DrainReport::after(5, 2);
        assert_eq!((report.active, report.finished, report.cut), (5, 3, 2));
        assert_eq!(DrainReport::after(0, 0), DrainReport::default());
        assert_eq!(
            DrainReport::after(4, 0).finished,
            4,
            "none cut, all finished"
        );
    }

    #[test]
    fn cutting_more_than_were_active_never_counts_below_zero_finished() {
        // Connections still choosing a route when the stop began may be cut too.
        let report = DrainReport::after(1, 3);
        assert_eq!((report.finished, report.cut), (0, 3));
    }

    #[test]
    fn a_drain_with_nothing_open_returns_at_once_and_clears_the_listeners() {
        let shared = Shared::new(Metrics::default(), Permits::new(4));
        let report = drain(Vec::new(), &shared, Duration::from_secs(3_600));
        assert_eq!(report, DrainReport::default());
        assert!(shared.listeners().is_empty());
    }
}
