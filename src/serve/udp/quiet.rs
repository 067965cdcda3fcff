//! Log lines a flood cannot multiply: a refused UDP client is logged at most once a minute, and
//! at most [`LINES_PER_MINUTE`] lines a minute are logged in all, so a flood of datagrams (or of
//! forged source addresses) cannot flood the log. Every refused datagram is counted all the
//! same. The warning that a listener's flows are at their cap follows the same rule.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sys::sync::lock;

/// The most refusal lines one listener logs in a minute.
pub(super) const LINES_PER_MINUTE: usize = 20;

/// The window in which each client is logged once.
const WINDOW: Duration = Duration::from_secs(60);

/// Which addresses were logged about in the current minute.
#[derive(Debug)]
pub(super) struct OncePerMinute {
    window: Mutex<QuietWindow>,
}

#[derive(Debug)]
struct QuietWindow {
    started: Instant,
    logged: HashSet<IpAddr>,
}

impl OncePerMinute {
    pub(super) fn new(now: Instant) -> OncePerMinute {
        OncePerMinute {
            window: Mutex::new(QuietWindow {
                started: now,
                logged: HashSet::new(),
            }),
        }
    }

    /// True if a refusal of `client` at `now` is to be logged.
    pub(super) fn should_log(&self, client: IpAddr, now: Instant) -> bool {
        let mut window = lock(&self.window);
        if now.saturating_duration_since(window.started) >= WINDOW {
            window.started = now;
            window.logged.clear();
        }
        if window.logged.len() >= LINES_PER_MINUTE || window.logged.contains(&client) {
            return false;
        }
        window.logged.insert(client);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_refused_client_is_logged_once_a_minute() {
        let start = Instant::now();
        let log = OncePerMinute::new(start);
        assert!(log.should_log(ip(1), start));
        assert!(!log.should_log(ip(1), start + Duration::from_secs(59)));
        assert!(log.should_log(ip(2), start + Duration::from_secs(59)));
        assert!(log.should_log(ip(1), start + Duration::from_secs(60)));
    }

    #[test]
    fn a_flood_of_clients_logs_a_bounded_number_of_lines() {
        let start = Instant::now();
        let log = OncePerMinute::new(start);
        let logged = (0..=255).filter(|&n| log.should_log(ip(n), start)).count();
        assert_eq!(logged, LINES_PER_MINUTE);
    }
}
