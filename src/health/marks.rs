//! One member's health marks and the rules that move them: pure bookkeeping over check results
//! and connect outcomes, given the time. With checks, the first result decides (unknown → up or
//! down), then `fall` failures in a row bring an up member down and `rise` passes bring a down
//! one up; a failed connect (after `max_fails` in a row) brings it down until checks pass again.
//! Without checks a member is served as up, but called *unknown* until a connect to it succeeds
//! (nothing is called up without evidence); `max_fails` failed connects in a row make it
//! *cooling*: skipped for `fail_timeout`, then unknown again and tried; a connect that succeeds
//! brings it up.

use std::time::{Duration, Instant, SystemTime};

/// A member's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Condition {
    /// No evidence yet: checks are configured and none has finished, or (without checks) no
    /// connect has succeeded since the start or the last cool-down.
    Unknown,
    /// Serving.
    Up,
    /// Checks fail (or a connect failed while checks are on), until `rise` checks pass.
    Down,
    /// No checks: connects failed, so it is skipped until the cool-down ends.
    Cooling,
}

impl Condition {
    /// Every condition, indexed by its number.
    pub(crate) const ALL: [Condition; 4] = [
        Condition::Unknown,
        Condition::Up,
        Condition::Down,
        Condition::Cooling,
    ];

    /// The name `/routes`, the probe and the metrics use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Condition::Unknown => "unknown",
            Condition::Up => "up",
            Condition::Down => "down",
            Condition::Cooling => "cooling",
        }
    }
}

/// What the rules are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Active checks run (and own the state).
    pub(crate) checked: bool,
    /// Checks passed in a row that bring a down member up.
    pub(crate) rise: usize,
    /// Checks failed in a row that bring an up member down.
    pub(crate) fall: usize,
    /// Failed connects in a row that count as a failure of the member.
    pub(crate) max_fails: usize,
    /// Without checks, how long a member whose connects failed is skipped.
    pub(crate) fail_timeout: Duration,
}

/// The last check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastCheck {
    /// How long it took, passed or failed.
    pub(crate) took: Duration,
    /// Why it failed; `None` if it passed.
    pub(crate) failure: Option<String>,
    /// When it finished.
    pub(crate) at: SystemTime,
}

/// A change of state, with why, for the log line `upstream X down: WHY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The state entered.
    pub(crate) to: Condition,
    /// Why, in a few words.
    pub(crate) why: String,
}

/// One member's marks.
#[derive(Debug, Clone)]
pub(crate) struct Marks {
    /// The state.
    pub(crate) state: Condition,
    /// When it was entered.
    pub(crate) since: SystemTime,
    /// Checks passed in a row.
    pub(crate) successes: usize,
    /// Checks failed in a row.
    pub(crate) failures: usize,
    /// Connects failed in a row.
    pub(crate) connect_failures: usize,
    /// Until when a cooling member is skipped.
    pub(crate) cooling_until: Option<Instant>,
    /// The last check, if one finished.
    pub(crate) last_check: Option<LastCheck>,
}

impl Marks {
    /// A new member's marks: unknown.
    pub(crate) fn new() -> Marks {
        Marks {
            state: Condition::Unknown,
            since: SystemTime::now(),
            successes: 0,
            failures: 0,
            connect_failures: 0,
            cooling_until: None,
            last_check: None,
        }
    }

    /// The state as it stands at `now`: a cooling member whose cool-down has ended is unknown.
    pub(crate) fn state_at(&self, now: Instant) -> Condition {
        match (self.state, self.cooling_until) {
            (Condition::Cooling, Some(until)) if until <= now => Condition::Unknown,
            (state, _) => state,
        }
    }

    fn enter(&mut self, to: Condition, why: String) -> Option<Change> {
        if self.state == to {
            return None;
        }
        self.state = to;
        self.since = SystemTime::now();
        Some(Change { to, why })
    }

    /// A check passed, taking `took`.
    pub(crate) fn check_passed(&mut self, rules: &Rules, took: Duration) -> Option<Change> {
        self.successes += 1;
        self.failures = 0;
        self.last_check = Some(LastCheck {
            took,
            failure: None,
            at: SystemTime::now(),
        });
        let rises = match self.state {
            Condition::Unknown => true,
            Condition::Down | Condition::Cooling => self.successes >= rules.rise,
            Condition::Up => false,
        };
        if !rises {
            return None;
        }
        self.connect_failures = 0;
        let why = match self.successes {
            1 => "check passed".to_string(),
            n => format!("{n} checks passed"),
        };
        self.enter(Condition::Up, why)
    }

    /// A check failed after `took`, because of `why`.
    pub(crate) fn check_failed(
        &mut self,
        rules: &Rules,
        took: Duration,
        why: String,
    ) -> Option<Change> {
        self.failures += 1;
        self.successes = 0;
        self.last_check = Some(LastCheck {
            took,
            failure: Some(why.clone()),
            at: SystemTime::now(),
        });
        let falls = match self.state {
            Condition::Unknown => true,
            Condition::Up => self.failures >= rules.fall,
            Condition::Down | Condition::Cooling => false,
        };
        falls.then(|| self.enter(Condition::Down, why)).flatten()
    }

    /// A connect to the member failed (`kind` says how: `connection refused`).
    pub(crate) fn connect_failed(
        &mut self,
        rules: &Rules,
        kind: &str,
        now: Instant,
    ) -> Option<Change> {
        self.connect_failures += 1;
        let fails = self.connect_failures;
        if fails < rules.max_fails.max(1) {
            return None;
        }
        let connects = match fails {
            1 => "1 failed connect".to_string(),
            n => format!("{n} failed connects in a row"),
        };
        if rules.checked {
            self.successes = 0;
            return match self.state {
                Condition::Down => None,
                _ => self.enter(
                    Condition::Down,
                    format!("{connects} ({kind}); until checks pass"),
                ),
            };
        }
        self.cooling_until = Some(crate::sys::clock::deadline_after(now, rules.fail_timeout));
        let why = format!(
            "{connects} ({kind}); skipped for {}",
            crate::config::format_duration(rules.fail_timeout)
        );
        if fails == rules.max_fails.max(1) {
            self.state = Condition::Up;
            return self.enter(Condition::Cooling, why);
        }
        self.state = Condition::Cooling;
        None
    }

    /// A connect to the member succeeded. Without checks that is evidence it is up: said only
    /// when it ends a cool-down.
    pub(crate) fn connected(&mut self, rules: &Rules) -> Option<Change> {
        self.connect_failures = 0;
        if rules.checked {
            return None;
        }
        let cooled = self.state == Condition::Cooling;
        self.cooling_until = None;
        let change = self.enter(Condition::Up, "connected".to_string());
        change.filter(|_| cooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    fn rules(checked: bool, max_fails: usize) -> Rules {
        Rules {
            checked,
            rise: 2,
            fall: 3,
            max_fails,
            fail_timeout: FIVE,
        }
    }

    fn to(change: Option<Change>) -> Option<Condition> {
        change.map(|c| c.to)
    }

    #[test]
    fn the_first_check_decides_then_rise_and_fall_apply() {
        let rules = rules(true, 1);
        let mut marks = Marks::new();
        assert_eq!(marks.state, Condition::Unknown);
        assert_eq!(to(marks.check_passed(&rules, FIVE)), Some(Condition::Up));
        assert_eq!(to(marks.check_failed(&rules, FIVE, "x".into())), None);
        assert_eq!(to(marks.check_failed(&rules, FIVE, "x".into())), None);
        let down = marks
            .check_failed(&rules, FIVE, "expected 'master'".into())
            .unwrap();
        assert_eq!(
            (down.to, down.why.as_str()),
            (Condition::Down, "expected 'master'")
        );
        assert_eq!(to(marks.check_passed(&rules, FIVE)), None);
        let up = marks.check_passed(&rules, FIVE).unwrap();
        assert_eq!((up.to, up.why.as_str()), (Condition::Up, "2 checks passed"));
    }

    #[test]
    fn a_first_failed_check_makes_an_unknown_member_down_at_once() {
        let rules = rules(true, 1);
        let mut marks = Marks::new();
        assert_eq!(
            to(marks.check_failed(&rules, FIVE, "refused".into())),
            Some(Condition::Down)
        );
    }

    #[test]
    fn with_checks_a_failed_connect_holds_the_member_down_until_checks_rise() {
        let rules = rules(true, 1);
        let mut marks = Marks::new();
        marks.check_passed(&rules, FIVE);
        let now = Instant::now();
        let down = marks
            .connect_failed(&rules, "connection refused", now)
            .unwrap();
        assert_eq!(
            down.why,
            "1 failed connect (connection refused); until checks pass"
        );
        assert_eq!(marks.state_at(now + FIVE * 10), Condition::Down);
        assert_eq!(to(marks.connected(&rules)), None);
        assert_eq!(to(marks.check_passed(&rules, FIVE)), None);
        assert_eq!(to(marks.check_passed(&rules, FIVE)), Some(Condition::Up));
    }

    #[test]
    fn without_checks_failed_connects_cool_a_member_for_fail_timeout() {
        let rules = rules(false, 2);
        let mut marks = Marks::new();
        assert_eq!(marks.connected(&rules), None);
        assert_eq!(marks.state, Condition::Up);
        let now = Instant::now();
        assert_eq!(
            marks.connect_failed(&rules, "connection refused", now),
            None
        );
        let cooling = marks
            .connect_failed(&rules, "connection refused", now)
            .unwrap();
        assert_eq!(
            cooling.why,
            "2 failed connects in a row (connection refused); skipped for 5s"
        );
        assert_eq!(
            marks.state_at(now + Duration::from_secs(4)),
            Condition::Cooling
        );
        assert_eq!(marks.state_at(now + FIVE), Condition::Unknown);
        assert_eq!(marks.connect_failed(&rules, "x", now + FIVE), None);
        assert_eq!(marks.state_at(now + FIVE), Condition::Cooling);
        let up = marks.connected(&rules).unwrap();
        assert_eq!((up.to, up.why.as_str()), (Condition::Up, "connected"));
        assert_eq!(marks.connected(&rules), None);
    }
}
