//! A name with three addresses in /etc/hosts is a pool of three members: clients are spread over
//! all of them, a member whose check fails is skipped, and when the name stops resolving the last
//! answer is kept (and said once). Each test adds its own name's lines and removes exactly those.

use std::collections::BTreeMap;

use super::*;

/// Three name servers on 127.0.0.2-4, one port; a name for them in /etc/hosts; a router with a
/// route to the name, connect checks and re-resolution every 200 ms, its members all up.
struct Pool {
    servers: Vec<Named>,
    hosts: HostsEntries,
    upstream: String,
    run: Running,
}

impl Pool {
    /// `None` (the skip recorded) when /etc/hosts cannot be written.
    fn start(test: &str) -> Option<Pool> {
        let ips = [loopback(2), loopback(3), loopback(4)];
        let listeners = same_port_listeners(&ips);
        let port = listeners[0].local_addr().unwrap().port();
        let servers: Vec<Named> = listeners
            .into_iter()
            .zip(["p2", "p3", "p4"])
            .map(|(listener, name)| Named::listening_on(name, listener))
            .collect();
        let name = test_name("pool");
        let hosts = HostsEntries::add(test, &name, &ips)?;
        let upstream = format!("{name}:{port}");
        let run = Running::start(&format!(
            "route 127.0.0.1:0 {upstream} check=connect {FAST_CHECKS} resolve_interval=200ms\n"
        ));
        let pool = Pool {
            servers,
            hosts,
            upstream,
            run,
        };
        let all_up: Vec<(SocketAddr, &str)> = pool
            .servers
            .iter()
            .map(|server| (server.addr(), "up"))
            .collect();
        let routes = wait_for_states(pool.run.admin, &all_up);
        for server in &pool.servers {
            let member = member_at(&routes, server.addr()).unwrap();
            assert_eq!(member["upstream"], pool.upstream.as_str(), "{member:#}");
        }
        Some(pool)
    }

    /// How many of `clients` clients reached each server.
    fn spread(&self, clients: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for name in reached_by(self.run.router.addr, clients) {
            *counts.entry(name).or_insert(0) += 1;
        }
        counts
    }

    /// The addresses of the servers, as the log lists them.
    fn ips(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| s.addr().ip().to_string())
            .collect()
    }
}

#[test]
fn a_name_with_three_addresses_is_balanced_over_all_three_and_a_dead_one_is_skipped() {
    let Some(mut pool) = Pool::start(
        "health::pool::a_name_with_three_addresses_is_balanced_over_all_three_and_a_dead_one_is_skipped",
    ) else {
        return;
    };
    let resolved = pool
        .run
        .router
        .line_with(&format!("upstream {}: resolved to ", pool.upstream));
    for ip in pool.ips() {
        assert!(resolved.contains(&ip), "{resolved}");
    }
    let spread = pool.spread(30);
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().all(|n| (5..=15).contains(n)), "{spread:?}");

    pool.servers[1].stop();
    let dead = pool.servers[1].addr();
    wait_for_states(pool.run.admin, &[(dead, "down")]);
    pool.run.router.line_with(&format!(
        "upstream {} ({}) down: connect: connection refused",
        pool.upstream,
        s(dead)
    ));
    let spread = pool.spread(30);
    assert_eq!(
        spread.keys().collect::<Vec<_>>(),
        ["p2", "p4"],
        "{spread:?}"
    );
}

#[test]
fn a_name_that_stops_resolving_keeps_its_last_addresses_and_says_so_once() {
    let Some(mut pool) = Pool::start(
        "health::pool::a_name_that_stops_resolving_keeps_its_last_addresses_and_says_so_once",
    ) else {
        return;
    };
    let from = pool.run.router.drain();
    pool.hosts.remove();
    let warned = pool
        .run
        .router
        .wait_for_line(&format!("upstream {}: cannot resolve (", pool.upstream));
    let keeping = format!("; keeping {}", pool.ips().join(", "));
    assert!(warned.ends_with(&keeping), "{warned}");
    // Three more failed resolutions, said nowhere.
    let upstream = pool.upstream.clone();
    let failed = |m: &Metrics| {
        m.sum(
            "tcp_router_upstream_resolutions_total",
            &[("upstream", &upstream), ("result", "failed")],
        )
    };
    let first = failed(&metrics(pool.run.admin));
    metrics_until(pool.run.admin, "three more failed resolutions", |m| {
        failed(m) >= first + 3
    });
    let spread = pool.spread(30);
    assert_eq!(
        spread.len(),
        3,
        "clients still reach every kept address: {spread:?}"
    );
    pool.run.router.drain();
    let warnings = pool.run.router.seen[from..]
        .iter()
        .filter(|l| l.contains("cannot resolve"))
        .count();
    assert_eq!(warnings, 1, "{:#?}", &pool.run.router.seen[from..]);
}
