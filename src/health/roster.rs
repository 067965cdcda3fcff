//! A route's roster: its upstreams as targets, each with a weight and a role, and the order in
//! which one client tries their members (`route::balance` decides; the roster tells it what it
//! knows). A roster built by a reload keeps the targets of the route it replaces whose upstream
//! and checks are unchanged, with their members' states and open connections.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Balance, Endpoint, HostPort, Route};
use crate::route::balance::{self, Candidate, Standing};
use crate::sys::clock::deadline_after;

use super::checker::Checker;
use super::marks::Rules;
use super::member::Member;
use super::target::{Plan, Target};

/// One upstream of the pool.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The upstream and its members.
    pub(crate) target: Arc<Target>,
    /// Its weight.
    pub(crate) weight: u32,
    /// True for a backup.
    pub(crate) backup: bool,
}

/// A route's upstreams at run time.
#[derive(Debug)]
pub(crate) struct Roster {
    entries: Vec<Entry>,
    balance: Balance,
    v6_prefix: u8,
    ticket: AtomicU64,
    checker: Checker,
}

/// The plan of `route`'s targets.
pub(crate) fn plan_of(route: &Route) -> Plan {
    let check = route.check.clone();
    Plan {
        check_timeout: (check.as_ref()).map_or(route.connect_timeout, |c| {
            c.timeout_with(route.connect_timeout)
        }),
        proxy: route.proxy_protocol,
        src: route.src,
        rules: Rules {
            checked: check.is_some(),
            rise: check.as_ref().map_or(1, |c| c.rise.max(1)),
            fall: check.as_ref().map_or(1, |c| c.fall.max(1)),
            max_fails: route.max_fails.max(1),
            fail_timeout: route.fail_timeout,
        },
        resolve_interval: route.resolve_interval,
        check,
    }
}

impl Roster {
    /// The roster of `route`, taking over the targets of `earlier` rosters (the route it
    /// replaces, the same route on another port of its range) whose upstream and plan are the
    /// same, the first found; new targets are watched by `checker`.
    pub(crate) fn new(
        route: &Route,
        v6_prefix: u8,
        earlier: &[&Roster],
        checker: &Checker,
    ) -> Roster {
        let plan = plan_of(route);
        let written = (route.upstreams.iter().map(|u| (u, false)))
            .chain(route.backups.iter().map(|u| (u, true)));
        let entries = written
            .enumerate()
            .map(|(i, (upstream, backup))| {
                let kept = (earlier.iter()).find_map(|r| r.target_like(upstream, &plan));
                let target = kept.unwrap_or_else(|| {
                    let target = Arc::new(Target::new(upstream.clone(), plan.clone()));
                    checker.watch(&target);
                    target
                });
                Entry {
                    target,
                    weight: route.weight(i),
                    backup,
                }
            })
            .collect();
        Roster {
            entries,
            balance: route.balance,
            v6_prefix,
            ticket: AtomicU64::new(0),
            checker: checker.clone(),
        }
    }

    fn target_like(&self, upstream: &HostPort, plan: &Plan) -> Option<Arc<Target>> {
        (self.entries.iter())
            .find(|e| &e.target.upstream == upstream && &e.target.plan == plan)
            .map(|e| Arc::clone(&e.target))
    }

    /// Schedules the checks of `members`, new to `target` (which is one of this roster's).
    pub(crate) fn watch_members(&self, target: &Arc<Target>, members: &[Arc<Member>]) {
        self.checker.watch_members(target, members);
    }

    /// Reports a change of `member`'s state seen by a connection (logged, and heard by those
    /// waiting for news).
    pub(crate) fn changed(&self, member: &Arc<Member>, change: &super::marks::Change) {
        self.checker.changed(member, change);
        if change.to != super::marks::Condition::Up {
            let target = self
                .entries
                .iter()
                .find(|e| e.target.upstream == member.upstream);
            if let Some(entry) = target {
                self.checker.resolve_soon(&entry.target);
            }
        }
    }

    /// The time one check may take (the plan's; every target of a pool has the same plan).
    pub(crate) fn check_timeout(&self) -> std::time::Duration {
        self.entries
            .first()
            .map_or(std::time::Duration::ZERO, |e| e.target.plan.check_timeout)
    }

    /// Its upstreams, primaries then backups, as written.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The member of `upstream` at `addr`, if the pool has it (a connection taken over by a live
    /// upgrade counts against it).
    pub(crate) fn member(&self, upstream: &HostPort, addr: &Endpoint) -> Option<Arc<Member>> {
        (self.entries.iter())
            .filter(|e| &e.target.upstream == upstream)
            .flat_map(|e| e.target.members().iter().cloned().collect::<Vec<_>>())
            .find(|m| &m.addr == addr)
    }

    /// The members one client from `client` tries, in order, each once. A name no lookup has
    /// finished for is resolved here, once; while every member with checks is still unknown,
    /// waits (up to the check timeout) for a first result.
    pub(crate) fn order(&self, client: IpAddr) -> Vec<Arc<Member>> {
        for entry in &self.entries {
            if entry.target.awaits_first_lookup() {
                let (added, _) = entry.target.resolve();
                self.checker.watch_members(&entry.target, &added);
            }
        }
        let mut members = self.members();
        if let Some(deadline) = self.first_results_deadline(&members) {
            while members
                .iter()
                .all(|(_, m)| m.standing() == Standing::Unknown)
                && Instant::now() < deadline
            {
                self.checker.wait_for_news(deadline);
                members = self.members();
            }
        }
        let candidates: Vec<Candidate> = (members.iter())
            .map(|(entry, member)| Candidate {
                backup: entry.backup,
                standing: member.standing(),
                weight: entry.weight,
                active: member.active(),
                key: member.key,
            })
            .collect();
        let ticket = match self.balance {
            Balance::RoundRobin => self.ticket.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let client = match self.balance {
            Balance::Source => balance::client_hash(client, self.v6_prefix),
            _ => 0,
        };
        balance::order(self.balance, &candidates, ticket, client)
            .into_iter()
            .map(|i| Arc::clone(&members[i].1))
            .collect()
    }

    /// Every member with its entry, in written order.
    fn members(&self) -> Vec<(&Entry, Arc<Member>)> {
        let mut all = Vec::new();
        for entry in &self.entries {
            all.extend(
                entry
                    .target
                    .members()
                    .iter()
                    .map(|m| (entry, Arc::clone(m))),
            );
        }
        all
    }

    /// When members are checked but none has a result yet: how long a client waits for one.
    fn first_results_deadline(&self, members: &[(&Entry, Arc<Member>)]) -> Option<Instant> {
        let unknown = !members.is_empty()
            && members
                .iter()
                .all(|(_, m)| m.standing() == Standing::Unknown);
        let timeout = (self.entries.iter())
            .filter(|e| e.target.plan.check.is_some())
            .map(|e| e.target.plan.check_timeout)
            .max()?;
        unknown.then(|| deadline_after(Instant::now(), timeout))
    }
}
