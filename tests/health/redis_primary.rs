//! The Redis-primary recipe with two real redis-servers, the second a replica of the first: the
//! route's check (`PING` then `+PONG`, `ROLE` then `master`) sends every client to the primary;
//! after a promotion the clients follow within fall × interval plus one interval, and with
//! `on_down=close` a connection left on the old primary is cut and logged.

use std::io::Write;
use std::time::Instant;

use super::*;

/// The check of the recipe, exactly as docs/config.md writes it.
const REDIS_PRIMARY_CHECK: &str = r"check=send:PING\r\n,expect:+PONG,send:ROLE\r\n,expect:master";

/// [`FAST_CHECKS`]'s interval; with `fall=1`, a member is down within two of them.
const INTERVAL: Duration = Duration::from_millis(200);

/// What a busy two-core machine may add to the window (processes scheduled late, a full resync).
const SLACK: Duration = Duration::from_secs(2);

/// The port of the redis-server a new client reaches through `router`.
fn reached_port(router: SocketAddr) -> u16 {
    redis_port(&mut connect(router))
}

/// `clients` new clients' redis-server ports.
fn ports_reached(router: SocketAddr, clients: usize) -> Vec<u16> {
    (0..clients).map(|_| reached_port(router)).collect()
}

/// Two redis-servers (the replica listed first, so only the check can make a client skip it), a
/// route with `extra` keys; every client reaches the primary; after the promotion every client
/// reaches the new one within the window. Returns the router, the connection `held` left on
/// the old primary, the index of the first log line after the promotion, and the two
/// redis-servers (alive while the caller holds them).
fn follow_a_promotion(extra: &str) -> (Running, TcpStream, usize, [RedisServer; 2]) {
    let old = RedisServer::start();
    let new = RedisServer::start();
    new.replicate(&old);
    let mut run = Running::start(&format!(
        "route 127.0.0.1:0 {},{} {REDIS_PRIMARY_CHECK} {FAST_CHECKS} {extra}\n",
        s(new.addr),
        s(old.addr)
    ));
    wait_for_states(run.admin, &[(old.addr, "up"), (new.addr, "down")]);
    assert_eq!(
        ports_reached(run.router.addr, 20),
        vec![old.addr.port(); 20]
    );
    let mut held = connect(run.router.addr);
    assert_eq!(redis_port(&mut held), old.addr.port());

    let from = run.router.drain();
    new.promote();
    old.replicate(&new);
    let promoted = Instant::now();
    // A client reaching the old primary as its checks fail is cut (on_down=close): not yet.
    wait_until("a client reaching the new primary", || {
        try_redis_port(&mut connect(run.router.addr)) == Ok(new.addr.port())
    });
    wait_for_states(run.admin, &[(old.addr, "down"), (new.addr, "up")]);
    let took = promoted.elapsed();
    let window = INTERVAL * 2 + SLACK;
    assert!(
        took <= window,
        "clients followed the promotion after {took:?}, more than {window:?}"
    );
    assert_eq!(
        ports_reached(run.router.addr, 20),
        vec![new.addr.port(); 20]
    );
    let line = run
        .router
        .line_where(from, PATIENCE, |l| {
            l.contains(&format!("upstream {} down: expected '", s(old.addr)))
        })
        .map(|(_, line)| line);
    assert!(
        line.is_ok(),
        "no down line; saw:\n{}",
        run.router.seen.join("\n")
    );
    (run, held, from, [old, new])
}

#[test]
fn the_redis_primary_check_with_balance_first_follows_a_promotion_and_cuts_the_old_primary() {
    if skip_without(
        "health::redis_primary::the_redis_primary_check_with_balance_first_follows_a_promotion_and_cuts_the_old_primary",
        &["redis-server"],
    ) {
        return;
    }
    let (mut run, mut held, from, _servers) = follow_a_promotion("balance=first on_down=close");
    let (_, ending) = read_to_close(&mut held);
    assert!(
        matches!(ending, Ending::Fin | Ending::Reset),
        "the connection on the old primary was not cut: {ending:?}"
    );
    let cut = run
        .router
        .line_where(from, PATIENCE, |l| l.contains("result=upstream-down"));
    assert!(
        cut.is_ok(),
        "no result=upstream-down line; saw:\n{}",
        run.router.seen.join("\n")
    );
}

#[test]
fn the_redis_primary_check_with_round_robin_never_sends_a_client_to_the_replica() {
    if skip_without(
        "health::redis_primary::the_redis_primary_check_with_round_robin_never_sends_a_client_to_the_replica",
        &["redis-server"],
    ) {
        return;
    }
    let (mut run, mut held, from, _servers) = follow_a_promotion("balance=roundrobin");
    held.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_exact(&mut held, 1).len(),
        1,
        "on_down=keep leaves the connection on the old primary open"
    );
    run.router.drain();
    let cut: Vec<&String> = run.router.seen[from..]
        .iter()
        .filter(|l| l.contains("result=upstream-down"))
        .collect();
    assert!(cut.is_empty(), "on_down=keep cut connections: {cut:#?}");
}

#[test]
fn the_recipes_in_the_docs_are_the_checks_the_tests_run() {
    let docs = repo_file("docs/config.md");
    let section = &docs[docs
        .find("## Upstream health and balancing")
        .expect("the section")..];
    for recipe in [
        format!("{REDIS_PRIMARY_CHECK} check_interval="),
        "check=http:/primary check_port=8008 on_down=close".to_string(),
    ] {
        assert!(section.contains(&recipe), "docs/config.md lacks {recipe:?}");
    }
}
