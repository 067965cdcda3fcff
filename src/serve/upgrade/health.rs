//! What the live upgrade carries of upstream health (hand-off version 2 on): the old process
//! sends, before the connections, one message per upstream of each route with its members'
//! states; the new process gives them to the same upstream of the same route (same listener,
//! same label, same upstream as written), so it never sends a client to a member the old one
//! knew to be down, and a member keeps its `since`. Open connections are counted again as they
//! arrive (each takes its claim on its member); affinity needs nothing, its hash being the same
//! in every process.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Endpoint;
use crate::health::marks::{Condition, LastCheck, Marks};
use crate::sys::clock::deadline_after;
use crate::upgrade::wire::{HealthState, MemberState};

use super::super::listener::ListenerState;
use super::super::status::Shared;
use super::addresses::{carried, taken};

/// What the old process knows of every upstream of every route it serves.
pub(super) fn known(shared: &Shared) -> Vec<HealthState> {
    let mut states = Vec::new();
    for (_, listener) in shared.listeners() {
        for route in &listener.routes {
            for entry in route.roster.entries() {
                states.push(HealthState {
                    listen: listener.config.listen.to_string(),
                    route: route.config.label(),
                    upstream: entry.target.upstream.to_string(),
                    members: (entry.target.members().iter())
                        .map(|m| member_state(&m.addr, &m.marks()))
                        .collect(),
                });
            }
        }
    }
    states
}

/// Gives what the old process knew of one upstream to the same upstream here, if there is one.
pub(super) fn restore<'a>(listeners: impl Iterator<Item = &'a ListenerState>, state: &HealthState) {
    let route = listeners
        .filter(|l| l.config.listen.to_string() == state.listen)
        .flat_map(|l| &l.routes)
        .find(|r| r.config.label() == state.route);
    let Some(route) = route else {
        return;
    };
    for entry in route.roster.entries() {
        if entry.target.upstream.to_string() == state.upstream {
            let known = (state.members.iter())
                .filter_map(|m| Some((taken(&m.addr)?, marks_of(m))))
                .collect();
            let added = entry.target.restore(known);
            route.roster.watch_members(&entry.target, &added);
        }
    }
}

/// Nanoseconds since the Unix epoch (a u64 holds them until 2554).
fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn member_state(addr: &Endpoint, marks: &Marks) -> MemberState {
    let now = Instant::now();
    MemberState {
        addr: carried(addr),
        condition: marks.state as u8,
        since_ns: nanos(marks.since),
        successes: marks.successes as u32,
        failures: marks.failures as u32,
        connect_failures: marks.connect_failures as u32,
        cooling_left_ms: (marks.cooling_until)
            .map(|until| until.saturating_duration_since(now).as_millis() as u64),
        last_check: marks.last_check.as_ref().map(|check| {
            let took = check.took.as_millis() as u64;
            (nanos(check.at), took, check.failure.clone())
        }),
    }
}

fn marks_of(state: &MemberState) -> Marks {
    let at = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    Marks {
        state: Condition::ALL[usize::from(state.condition) % Condition::ALL.len()],
        since: at(state.since_ns),
        successes: state.successes as usize,
        failures: state.failures as usize,
        connect_failures: state.connect_failures as usize,
        cooling_until: (state.cooling_left_ms)
            .map(|left| deadline_after(Instant::now(), Duration::from_millis(left))),
        last_check: (state.last_check.as_ref()).map(|(at_ns, took, failure)| LastCheck {
            took: Duration::from_millis(*took),
            failure: failure.clone(),
            at: at(*at_ns),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_marks_cross_the_wire_as_they_were() {
        let marks = Marks {
            state: Condition::Down,
            since: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            successes: 1,
            failures: 3,
            connect_failures: 2,
            cooling_until: None,
            last_check: Some(LastCheck {
                took: Duration::from_millis(4),
                failure: Some("expected 'master', got '-ERR'".into()),
                at: UNIX_EPOCH + Duration::from_nanos(1_700_000_001_000_000_007),
            }),
        };
        let state = member_state(&"127.0.0.1:6379".parse().unwrap(), &marks);
        let back = marks_of(&state);
        assert_eq!(
            (back.state, back.since, back.successes, back.failures),
            (marks.state, marks.since, 1, 3)
        );
        assert_eq!(back.connect_failures, 2);
        assert_eq!(back.last_check, marks.last_check);
    }
}
