//! Deadlines that never overflow: `Instant + Duration` panics past the clock's range, and a
//! caller may well mean "as long as it takes" by `Duration::MAX`
//! (`Running::stop_within(Duration::MAX)`).

use std::time::{Duration, Instant};

/// Far enough to be "never" (a century), near enough that `Instant` and `poll`'s timeout can
/// hold it.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + after`, saturating at a century from now.
pub(crate) fn deadline_after(now: Instant, after: Duration) -> Instant {
    now.checked_add(after.min(NEVER))
        .unwrap_or_else(|| now.checked_add(Duration::from_secs(1)).unwrap_or(now))
}

/// `Instant::now() + after`, saturating (see [`deadline_after`]).
pub(crate) fn deadline_in(after: Duration) -> Instant {
    deadline_after(Instant::now(), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_duration_is_a_far_deadline_not_a_panic() {
        let now = Instant::now();
        let far = deadline_after(now, Duration::MAX);
        assert!(far.duration_since(now) >= Duration::from_secs(99 * 365 * 24 * 3600));
        assert_eq!(
            deadline_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(deadline_in(Duration::MAX) > now);
    }
}
