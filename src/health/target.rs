//! A target: one upstream of a route as written, and its members, one per address. An IP
//! literal is one member from the start; a name's members are what it resolves to, resolved
//! again in the background (by the checker's threads), the last good answer kept when a lookup
//! fails or finds nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Endpoint, HealthCheck, Host, HostPort};
use crate::proto::proxy::Version;
use crate::sys::resolve;
use crate::sys::sync::lock;

use super::marks::{Marks, Rules};
use super::member::Member;

/// Most members one name may have; further addresses are left out (and said so once).
pub(crate) const MAX_MEMBERS_PER_NAME: usize = 64;

/// How a target's members are checked and judged: what its route says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The active check, if the route has one.
    pub(crate) check: Option<HealthCheck>,
    /// Time one check may take.
    pub(crate) check_timeout: Duration,
    /// The PROXY header the route sends, which checks send too (LOCAL / UNKNOWN).
    pub(crate) proxy: Option<Version>,
    /// The local address connections (and checks) come from.
    pub(crate) src: Option<IpAddr>,
    /// What moves a member's state.
    pub(crate) rules: Rules,
    /// How often a name is resolved again.
    pub(crate) resolve_interval: Duration,
}

/// What is known of a name's lookups.
#[derive(Debug, Default)]
struct Naming {
    /// A lookup has finished (answered or not).
    attempted: bool,
    /// A lookup has answered at least once.
    answered: bool,
    /// The last lookup failed, and that was logged.
    failing: bool,
    /// When the last lookup finished.
    last: Option<std::time::Instant>,
}

/// One upstream of a route, with its members.
#[derive(Debug)]
pub(crate) struct Target {
    /// The upstream as written.
    pub(crate) upstream: HostPort,
    /// How its members are checked and judged.
    pub(crate) plan: Plan,
    members: Mutex<Arc<Vec<Arc<Member>>>>,
    naming: Mutex<Naming>,
    /// Lookups that answered.
    pub(crate) resolved: AtomicU64,
    /// Lookups that failed or found nothing.
    pub(crate) unresolved: AtomicU64,
}

/// The addresses `upstream` has now: a name is looked up, a Unix socket is itself.
pub(crate) fn look_up(upstream: &HostPort) -> std::io::Result<Vec<Endpoint>> {
    match &upstream.host {
        Host::Unix(path) => Ok(vec![Endpoint::Unix(path.clone())]),
        host => Ok(
            (resolve::resolve(&host.to_string(), upstream.port)?.into_iter())
                .map(Endpoint::Ip)
                .collect(),
        ),
    }
}

impl Target {
    /// A target for `upstream`: an IP literal has its one member at once; a name has none until
    /// it is resolved.
    pub(crate) fn new(upstream: HostPort, plan: Plan) -> Target {
        let addr = match &upstream.host {
            Host::Ip(ip) => Some(Endpoint::Ip(SocketAddr::new(*ip, upstream.port))),
            Host::Unix(path) => Some(Endpoint::Unix(path.clone())),
            Host::Name(_) => None,
        };
        let members = (addr.into_iter())
            .map(|addr| Arc::new(Member::new(upstream.clone(), addr, plan.rules)))
            .collect();
        Target {
            upstream,
            plan,
            members: Mutex::new(Arc::new(members)),
            naming: Mutex::new(Naming::default()),
            resolved: AtomicU64::new(0),
            unresolved: AtomicU64::new(0),
        }
    }

    /// True if the upstream is a name, resolved in the background.
    pub(crate) fn is_name(&self) -> bool {
        matches!(self.upstream.host, Host::Name(_))
    }

    /// Its members now.
    pub(crate) fn members(&self) -> Arc<Vec<Arc<Member>>> {
        Arc::clone(&lock(&self.members))
    }

    /// True if it is a name no lookup has finished for yet: a connection then resolves it
    /// itself, once, rather than finding no member.
    pub(crate) fn awaits_first_lookup(&self) -> bool {
        self.is_name() && !lock(&self.naming).attempted
    }

    /// True if its name has never resolved.
    pub(crate) fn never_resolved(&self) -> bool {
        self.is_name() && !lock(&self.naming).answered
    }

    /// True if no lookup finished in the last `gap` (and notes that one is coming).
    pub(crate) fn may_look_up_again(&self, gap: Duration) -> bool {
        let mut naming = lock(&self.naming);
        let now = std::time::Instant::now();
        let due = naming
            .last
            .is_none_or(|last| now.duration_since(last) >= gap);
        if due {
            naming.last = Some(now);
        }
        due
    }

    /// Takes the members and marks another process knew (a live upgrade): a name's addresses
    /// become its members at once (the next lookup updates them), and each member known here
    /// takes its marks. Returns the members that are new, to be checked.
    pub(crate) fn restore(&self, known: Vec<(Endpoint, Marks)>) -> Vec<Arc<Member>> {
        let mut added = Vec::new();
        if self.is_name() && !known.is_empty() {
            let addrs: Vec<Endpoint> = known.iter().map(|(addr, _)| addr.clone()).collect();
            let mut members = lock(&self.members);
            let (next, new) = self.members_at(&members, &addrs);
            *members = Arc::new(next);
            added = new;
            let mut naming = lock(&self.naming);
            naming.attempted = true;
            naming.answered = true;
        }
        let members = self.members();
        for (addr, marks) in known {
            if let Some(member) = members.iter().find(|m| m.addr == addr) {
                member.restore(marks);
            }
        }
        added
    }

    /// Resolves the name now and updates the members, logging what changed; returns the
    /// members that are new (to be checked) and whether the lookup answered.
    pub(crate) fn resolve(&self) -> (Vec<Arc<Member>>, bool) {
        match look_up(&self.upstream) {
            Ok(addrs) => {
                self.resolved.fetch_add(1, Ordering::Relaxed);
                (self.answered(addrs), true)
            }
            Err(error) => {
                self.unresolved.fetch_add(1, Ordering::Relaxed);
                self.failed(&error.to_string());
                (Vec::new(), false)
            }
        }
    }

    /// A lookup answered `addrs`: members kept, added and removed, each change logged.
    fn answered(&self, mut addrs: Vec<Endpoint>) -> Vec<Arc<Member>> {
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        let mut naming = lock(&self.naming);
        if addrs.len() > MAX_MEMBERS_PER_NAME {
            if !naming.answered {
                log::warn!(
                    "upstream {}: {} addresses; using the first {MAX_MEMBERS_PER_NAME}",
                    self.upstream,
                    addrs.len()
                );
            }
            addrs.truncate(MAX_MEMBERS_PER_NAME);
        }
        let mut members = lock(&self.members);
        let old = Arc::clone(&members);
        let (next, added) = self.members_at(&old, &addrs);
        let removed: Vec<String> = (old.iter())
            .filter(|m| !addrs.contains(&m.addr))
            .map(|m| m.host())
            .collect();
        *members = Arc::new(next);
        drop(members);
        let ips = |list: &[Arc<Member>]| -> String {
            let ips: Vec<String> = list.iter().map(|m| m.host()).collect();
            ips.join(", ")
        };
        if !naming.answered {
            log::info!("upstream {}: resolved to {}", self.upstream, ips(&added));
        } else {
            if !added.is_empty() {
                log::info!("upstream {}: added {}", self.upstream, ips(&added));
            }
            if !removed.is_empty() {
                log::info!("upstream {}: removed {}", self.upstream, removed.join(", "));
            }
        }
        if naming.failing {
            log::info!("upstream {}: resolves again", self.upstream);
        }
        *naming = Naming {
            attempted: true,
            answered: true,
            failing: false,
            last: Some(std::time::Instant::now()),
        };
        added
    }

    /// The members for `addrs`, in their order: those of `old` at the same address kept (with
    /// their health and open connections), the others new; and the new ones.
    fn members_at(
        &self,
        old: &[Arc<Member>],
        addrs: &[Endpoint],
    ) -> (Vec<Arc<Member>>, Vec<Arc<Member>>) {
        let mut added = Vec::new();
        let next = (addrs.iter())
            .map(|addr| match old.iter().find(|m| &m.addr == addr) {
                Some(kept) => Arc::clone(kept),
                None => {
                    let member = Arc::new(Member::new(
                        self.upstream.clone(),
                        addr.clone(),
                        self.plan.rules,
                    ));
                    added.push(Arc::clone(&member));
                    member
                }
            })
            .collect();
        (next, added)
    }

    /// A lookup failed: the last answer is kept; said once until a lookup answers again.
    fn failed(&self, error: &str) {
        let mut naming = lock(&self.naming);
        naming.attempted = true;
        naming.last = Some(std::time::Instant::now());
        if naming.failing {
            return;
        }
        naming.failing = true;
        if naming.answered {
            let members = self.members();
            let kept: Vec<String> = members.iter().map(|m| m.host()).collect();
            log::warn!(
                "upstream {}: cannot resolve ({error}); keeping {}",
                self.upstream,
                kept.join(", ")
            );
        } else {
            log::warn!(
                "upstream {}: cannot resolve ({error}); down until it resolves",
                self.upstream
            );
        }
    }
}
