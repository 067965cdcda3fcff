//! Which member of a route a client tries first, and which next: pure ordering over what the
//! caller knows of each member (its standing, role, weight, open connections and a stable key).
//!
//! Members are taken in six groups, each in the policy's order: primaries that are up, backups
//! that are up, primaries not checked yet, backups not checked yet, then, as a last resort,
//! primaries and backups that are down. So backups serve only while no primary is up, and a
//! client is never refused while any member might answer. The policies:
//!
//! - `roundrobin`: each client starts one step further along the group, a member taking as many
//!   steps as its weight (3:1 sends three clients to the first for each one to the second);
//! - `first`: the order written (a primary with ordered standbys);
//! - `leastconn`: fewest open connections for its weight first, ties to the heavier, then the
//!   one written first;
//! - `source`: rendezvous (highest random weight) hashing of the client: each member scores the
//!   client by a hash of both keys, scaled by its weight, and the best score goes first. The
//!   same client gets the same order while the members stay, and a member that leaves takes only
//!   its own clients with it.

use std::cmp::Ordering;
use std::net::IpAddr;

use crate::config::Balance;

/// What the balancer is told about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// A backup: used only while no primary is up.
    pub(crate) backup: bool,
    /// Whether it is up, not yet checked, or down.
    pub(crate) standing: Standing,
    /// Its share relative to the others (at least 1).
    pub(crate) weight: u32,
    /// Connections open to it through this route.
    pub(crate) active: usize,
    /// A hash that names it across processes and reloads ([`stable_hash`] of the upstream as
    /// written and its address), for `source`.
    pub(crate) key: u64,
}

/// How much a member is trusted to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Standing {
    /// Up (checks pass, or no reason to think otherwise).
    Up,
    /// Checked, but no result yet.
    Unknown,
    /// Down: checks fail, or connects failed and it is skipped for a while.
    Down,
}

/// The order in which one client tries the members, each once. `ticket` is the route's
/// round-robin counter, advanced once per client; `client` is [`client_hash`] of the client.
pub(crate) fn order(
    balance: Balance,
    candidates: &[Candidate],
    ticket: u64,
    client: u64,
) -> Vec<usize> {
    let mut order = Vec::with_capacity(candidates.len());
    for standing in [Standing::Up, Standing::Unknown, Standing::Down] {
        for backup in [false, true] {
            let group: Vec<usize> = (0..candidates.len())
                .filter(|&i| candidates[i].standing == standing && candidates[i].backup == backup)
                .collect();
            order.extend(group_order(balance, candidates, group, ticket, client));
        }
    }
    order
}

/// One group's members (indices into `candidates`, in written order) in the policy's order.
fn group_order(
    balance: Balance,
    candidates: &[Candidate],
    mut group: Vec<usize>,
    ticket: u64,
    client: u64,
) -> Vec<usize> {
    let weight = |i: usize| u64::from(candidates[i].weight.max(1));
    match balance {
        Balance::First => {}
        Balance::RoundRobin => {
            let total: u64 = group.iter().map(|&i| weight(i)).sum();
            if total > 0 {
                let mut step = ticket % total;
                let start = group
                    .iter()
                    .position(|&i| {
                        let inside = step < weight(i);
                        step = step.saturating_sub(weight(i));
                        inside
                    })
                    .unwrap_or(0);
                group.rotate_left(start);
            }
        }
        Balance::LeastConn => group.sort_by(|&a, &b| {
            let load =
                |i: usize, other: usize| candidates[i].active as u128 * weight(other) as u128;
            load(a, b)
                .cmp(&load(b, a))
                .then(weight(b).cmp(&weight(a)))
                .then(a.cmp(&b))
        }),
        Balance::Source => {
            let score = |i: usize| rendezvous_score(client, candidates[i].key, weight(i));
            group.sort_by(|&a, &b| {
                score(b)
                    .partial_cmp(&score(a))
                    .unwrap_or(Ordering::Equal)
                    .then(a.cmp(&b))
            });
        }
    }
    group
}

/// A member's score for a client under weighted rendezvous hashing: `weight / -ln(u)`, with `u`
/// uniform in (0, 1) from a hash of both keys. The highest score wins; each member wins a share
/// of clients proportional to its weight.
fn rendezvous_score(client: u64, member: u64, weight: u64) -> f64 {
    let hash = mix(client ^ mix(member));
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -unit.ln()
}

/// The key of a client for `source`: its IPv4 address, or the first `v6_prefix` bits of its
/// IPv6 address (an IPv4-mapped IPv6 address is its IPv4 address).
pub(crate) fn client_hash(ip: IpAddr, v6_prefix: u8) -> u64 {
    match ip {
        IpAddr::V4(v4) => stable_hash(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets()),
            None => {
                let bits = u128::from(v6);
                let kept = match u32::from(v6_prefix.min(128)) {
                    0 => 0,
                    prefix => bits & (u128::MAX << (128 - prefix)),
                };
                stable_hash(&kept.to_be_bytes())
            }
        },
    }
}

/// A hash that is the same in every process and every build (FNV-1a, then a finalizer), so
/// affinity survives a reload and a live upgrade.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(fnv)
}

/// splitmix64's finalizer: spreads every input bit over every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::XorShift;

    fn up(key: u64) -> Candidate {
        Candidate {
            backup: false,
            standing: Standing::Up,
            weight: 1,
            active: 0,
            key,
        }
    }

    fn with(standing: Standing, backup: bool) -> Candidate {
        Candidate {
            standing,
            backup,
            ..up(0)
        }
    }

    #[test]
    fn round_robin_rotates_the_start() {
        let members = [up(1), up(2), up(3)];
        let orders: Vec<Vec<usize>> = (0..3)
            .map(|t| order(Balance::RoundRobin, &members, t, 0))
            .collect();
        assert_eq!(orders, [[0, 1, 2], [1, 2, 0], [2, 0, 1]]);
    }

    #[test]
    fn round_robin_gives_each_member_as_many_turns_as_its_weight() {
        let members = [Candidate { weight: 3, ..up(1) }, up(2)];
        let firsts: Vec<usize> = (0..8)
            .map(|t| order(Balance::RoundRobin, &members, t, 0)[0])
            .collect();
        assert_eq!(firsts, [0, 0, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn groups_go_up_primaries_up_backups_unknown_then_down() {
        let members = [
            with(Standing::Down, false),
            with(Standing::Unknown, true),
            with(Standing::Up, true),
            with(Standing::Unknown, false),
            with(Standing::Down, true),
            with(Standing::Up, false),
        ];
        assert_eq!(order(Balance::First, &members, 0, 0), [5, 2, 3, 1, 0, 4]);
    }

    #[test]
    fn first_keeps_the_written_order_within_a_group() {
        let members = [up(1), with(Standing::Down, false), up(3), up(4)];
        for ticket in 0..4 {
            assert_eq!(order(Balance::First, &members, ticket, 0), [0, 2, 3, 1]);
        }
    }

    #[test]
    fn least_connections_prefers_the_fewest_for_their_weight_then_the_heavier_then_the_first() {
        let members = [
            Candidate { active: 4, ..up(1) },
            Candidate { active: 2, ..up(2) },
            Candidate {
                active: 4,
                weight: 2,
                ..up(3)
            },
            Candidate { active: 2, ..up(4) },
        ];
        assert_eq!(order(Balance::LeastConn, &members, 0, 0), [2, 1, 3, 0]);
    }

    #[test]
    fn source_is_stable_for_one_client_and_spreads_clients() {
        let members = [up(11), up(22), up(33)];
        let mut counts = [0usize; 3];
        for i in 0..3000u32 {
            let client = client_hash(IpAddr::from(i.to_be_bytes()), 64);
            let first = order(Balance::Source, &members, 7, client);
            assert_eq!(first, order(Balance::Source, &members, 99, client));
            counts[first[0]] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn source_gives_shares_in_proportion_to_weight() {
        let members = [
            Candidate {
                weight: 3,
                ..up(11)
            },
            up(22),
        ];
        let heavy = (0..4000u32)
            .filter(|i| {
                let client = client_hash(IpAddr::from(i.to_be_bytes()), 64);
                order(Balance::Source, &members, 0, client)[0] == 0
            })
            .count();
        assert!((2800..3200).contains(&heavy), "{heavy} of 4000");
    }

    #[test]
    fn ipv6_clients_share_a_key_within_the_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_hash(a, 64), client_hash(b, 64));
        assert_ne!(client_hash(a, 64), client_hash(c, 64));
        assert_ne!(client_hash(a, 128), client_hash(b, 128));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_hash(mapped, 64), client_hash(v4, 64));
    }

    #[test]
    fn the_stable_hash_does_not_change_between_builds() {
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(b"127.0.0.1:6379"), 0x15ad_ec3e_aaf6_cb76);
    }

    #[test]
    fn no_members_no_order() {
        for balance in [
            Balance::RoundRobin,
            Balance::First,
            Balance::LeastConn,
            Balance::Source,
        ] {
            assert!(order(balance, &[], 0, 0).is_empty());
        }
    }

    const ALL: [Balance; 4] = [
        Balance::RoundRobin,
        Balance::First,
        Balance::LeastConn,
        Balance::Source,
    ];

    fn random_candidates(rng: &mut XorShift) -> Vec<Candidate> {
        (0..rng.below(8))
            .map(|_| Candidate {
                backup: rng.below(2) == 1,
                standing: [Standing::Up, Standing::Unknown, Standing::Down][rng.below(3)],
                weight: 1 + rng.below(4) as u32,
                active: rng.below(10),
                key: rng.next_u64(),
            })
            .collect()
    }

    #[test]
    fn every_order_lists_each_member_once() {
        let mut rng = XorShift::new(24);
        for _ in 0..2000 {
            let candidates = random_candidates(&mut rng);
            let (ticket, client) = (rng.next_u64(), rng.next_u64());
            for balance in ALL {
                let mut got = order(balance, &candidates, ticket, client);
                got.sort_unstable();
                assert_eq!(got, (0..candidates.len()).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_own_clients() {
        let mut rng = XorShift::new(7);
        for _ in 0..2000 {
            let members: Vec<Candidate> =
                (0..2 + rng.below(5)).map(|_| up(rng.next_u64())).collect();
            let gone = rng.below(members.len());
            let client = rng.next_u64();
            let before = members[order(Balance::Source, &members, 0, client)[0]].key;
            let rest: Vec<Candidate> = (members.iter().enumerate())
                .filter(|&(i, _)| i != gone)
                .map(|(_, c)| *c)
                .collect();
            let after = rest[order(Balance::Source, &rest, 0, client)[0]].key;
            if before != members[gone].key {
                assert_eq!(before, after);
            }
        }
    }
}
