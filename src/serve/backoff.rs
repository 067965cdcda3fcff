//! What the accept loop does when `accept` fails: errors that concern one client are retried at
//! once; anything else (a full fd table, out of memory) is logged at most once a second and
//! waited out with a growing delay, so the loop never spins and never gives up.

use crate::config::Endpoint;
use std::io;
use std::time::{Duration, Instant};

/// The first delay after a failing `accept`: doubled at each further failure up to
/// [`BACKOFF_MAX`], reset by a success. Without it, a full fd table turns the loop into a busy
/// spin, since the pending client keeps the listener readable.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// At most one log line per this interval; the others are counted into it.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Errors that concern one client only (it went away before we accepted it): retry at once.
pub(crate) fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::PROTO.raw_os_error())
}

/// Rate-limited logging and growing delays for accept failures.
#[derive(Debug, Default)]
pub(crate) struct ErrorBackoff {
    delay: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl ErrorBackoff {
    /// Records a failure; logs at most once a second; returns how long to wait.
    pub(crate) fn failed(&mut self, addr: &Endpoint, err: &io::Error) -> Duration {
        let delay = self.next_delay();
        if self.log_due(Instant::now()) {
            log::warn!(
                "accept on {addr} failed: {err} ({} more since the last report); retrying in {delay:?}",
                self.suppressed
            );
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        delay
    }

    /// An accept succeeded: the next failure starts from the first delay again.
    pub(crate) fn reset(&mut self) {
        self.delay = None;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self
            .delay
            .map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
        self.delay = Some(delay);
        delay
    }

    /// True (and noted) if a line may be logged at `now`.
    fn log_due(&mut self, now: Instant) -> bool {
        let due = self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            self.last_log = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_success() {
        let mut backoff = ErrorBackoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_FIRST);
        assert_eq!(delays[1], BACKOFF_FIRST * 2);
        assert_eq!(delays[9], BACKOFF_MAX);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_FIRST);
    }

    #[test]
    fn logs_at_most_once_a_second_and_counts_the_rest() {
        let mut backoff = ErrorBackoff::default();
        let start = Instant::now();
        assert!(backoff.log_due(start));
        assert!(!backoff.log_due(start + Duration::from_millis(999)));
        assert!(backoff.log_due(start + LOG_EVERY));
        let addr = "127.0.0.1:1".parse().unwrap();
        let err = io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        backoff.failed(&addr, &err);
        backoff.failed(&addr, &err);
        assert_eq!(
            backoff.suppressed, 2,
            "both within the second of the last report"
        );
    }

    #[test]
    fn a_client_that_went_away_is_transient_a_full_fd_table_is_not() {
        let errno = |e: rustix::io::Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert!(is_transient(&errno(rustix::io::Errno::CONNABORTED)));
        assert!(is_transient(&errno(rustix::io::Errno::PROTO)));
        assert!(is_transient(&errno(rustix::io::Errno::INTR)));
        assert!(!is_transient(&errno(rustix::io::Errno::MFILE)));
        assert!(!is_transient(&errno(rustix::io::Errno::NOMEM)));
    }
}
