//! Allow/deny decisions: which clients a listener's rules let in, checked in rinetd's order.

use std::fmt;
use std::net::IpAddr;

use crate::config::acl::{Action, Rule};

/// Which set of rules refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleSet {
    /// Rules written before the first forwarding rule.
    Global,
    /// Rules written after a forwarding rule, applying to it only.
    Rule,
}

impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleSet::Global => "global",
            RuleSet::Rule => "per-rule",
        })
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefusalReason {
    /// This deny rule matched the client.
    Denied(Rule),
    /// The set has allow rules (this many) and none matched the client.
    NotAllowed {
        /// Number of allow rules in the set.
        allow_rules: usize,
    },
}

/// A refused client: which set refused it and why. Display suits a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The set whose rules refused the client.
    pub set: RuleSet,
    /// The matching deny rule, or the count of allow rules none of which matched.
    pub reason: RefusalReason,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            RefusalReason::Denied(rule) => write!(f, "{} rules: '{rule}' matched", self.set),
            RefusalReason::NotAllowed { allow_rules } => {
                let s = if *allow_rules == 1 { "" } else { "s" };
                write!(
                    f,
                    "{} rules: no allow rule matched ({allow_rules} allow rule{s})",
                    self.set
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// Decides whether client `ip` may connect, exactly in rinetd's order: global allows,
/// global denies, then the forwarding rule's own allows and denies. Within a set, when
/// there is at least one allow rule the client must match one of them ("not-allowed"
/// otherwise), and a client matching any deny rule is refused ("denied"). Allows are
/// checked before denies, as rinetd does, which only matters for which reason is reported.
pub(crate) fn check(global: &[Rule], local: &[Rule], ip: IpAddr) -> Result<(), Refusal> {
    check_set(global, ip).map_err(|reason| Refusal {
        set: RuleSet::Global,
        reason,
    })?;
    check_set(local, ip).map_err(|reason| Refusal {
        set: RuleSet::Rule,
        reason,
    })
}

fn check_set(rules: &[Rule], ip: IpAddr) -> Result<(), RefusalReason> {
    let allows = || rules.iter().filter(|r| r.action == Action::Allow);
    let allow_rules = allows().count();
    if allow_rules > 0 && !allows().any(|r| r.pattern.matches(ip)) {
        return Err(RefusalReason::NotAllowed { allow_rules });
    }
    match rules
        .iter()
        .find(|r| r.action == Action::Deny && r.pattern.matches(ip))
    {
        Some(rule) => Err(RefusalReason::Denied(rule.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::acl::{allow, deny};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_rules_allows_everyone() {
        assert_eq!(check(&[], &[], ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn allow_only_sets() {
        let global = [allow("192.0.2.*"), allow("2001:db8::/32")];
        assert!(check(&global, &[], ip("192.0.2.9")).is_ok());
        assert!(check(&global, &[], ip("2001:db8::9")).is_ok());
        let r = check(&global, &[], ip("198.51.100.1")).unwrap_err();
        assert_eq!(r.set, RuleSet::Global);
        assert_eq!(r.reason, RefusalReason::NotAllowed { allow_rules: 2 });
        assert_eq!(
            r.to_string(),
            "global rules: no allow rule matched (2 allow rules)"
        );
    }

    #[test]
    fn deny_only_sets() {
        let local = [deny("10.0.0.0/8")];
        assert!(check(&[], &local, ip("192.0.2.1")).is_ok());
        let r = check(&[], &local, ip("10.1.2.3")).unwrap_err();
        assert_eq!(r.set, RuleSet::Rule);
        assert_eq!(r.reason, RefusalReason::Denied(deny("10.0.0.0/8")));
        assert_eq!(r.to_string(), "per-rule rules: 'deny 10.0.0.0/8' matched");
    }

    #[test]
    fn mixed_set_needs_an_allow_and_no_deny() {
        let set = [allow("192.168.2.*"), deny("192.168.2.1?")];
        assert!(check(&set, &[], ip("192.168.2.5")).is_ok());
        let r = check(&set, &[], ip("192.168.2.15")).unwrap_err();
        assert_eq!(r.reason, RefusalReason::Denied(deny("192.168.2.1?")));
        let r = check(&set, &[], ip("192.168.3.15")).unwrap_err();
        assert_eq!(r.reason, RefusalReason::NotAllowed { allow_rules: 1 });
    }

    #[test]
    fn allows_are_checked_before_denies_like_rinetd() {
        // Matches the deny and no allow: rinetd reports not-allowed.
        let set = [deny("10.*"), allow("192.0.2.*")];
        let r = check(&set, &[], ip("10.0.0.1")).unwrap_err();
        assert_eq!(
            r.to_string(),
            "global rules: no allow rule matched (1 allow rule)"
        );
    }

    #[test]
    fn global_is_checked_before_local_and_both_apply() {
        let global = [deny("203.0.113.*")];
        let local = [allow("203.0.113.*"), allow("192.0.2.*")];
        // A global deny wins over a local allow.
        let r = check(&global, &local, ip("203.0.113.5")).unwrap_err();
        assert_eq!(r.set, RuleSet::Global);
        // A local allow list still restricts clients the global set lets through.
        let r = check(&global, &local, ip("198.51.100.5")).unwrap_err();
        assert_eq!(r.set, RuleSet::Rule);
        assert!(check(&global, &local, ip("192.0.2.5")).is_ok());
        // A local allow cannot widen a global allow list.
        let global = [allow("192.0.2.*")];
        let local = [allow("198.51.100.*")];
        let r = check(&global, &local, ip("198.51.100.1")).unwrap_err();
        assert_eq!(r.set, RuleSet::Global);
    }

    #[test]
    fn mapped_clients_are_checked_as_ipv4() {
        let global = [allow("192.0.2.0/24")];
        assert!(check(&global, &[], ip("::ffff:192.0.2.1")).is_ok());
        let local = [deny("192.0.2.1")];
        assert!(check(&[], &local, ip("::ffff:192.0.2.1")).is_err());
    }
}
