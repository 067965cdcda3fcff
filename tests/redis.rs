//! The tutorial's scenario, end to end: redis-cli talks to redis-server through tcp-router.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Instant;

use crate::util::*;

/// PING -> PONG, SET then GET, from redis-cli to redis-server through the binary exactly as
/// `make run` starts it.
#[test]
fn redis_cli_through_tcp_router() {
    if skip_without(
        "redis::redis_cli_through_tcp_router",
        &["redis-server", "redis-cli"],
    ) {
        return;
    }
    let redis = RedisServer::start();
    let router = Process::start(&["127.0.0.1:0", &redis.addr.to_string()]);
    let via = router.addr.port();
    assert_eq!(redis_cli(via, &["PING"]), "PONG");
    assert_eq!(redis_cli(via, &["SET", "tutorial", "day 15"]), "OK");
    assert_eq!(redis_cli(via, &["GET", "tutorial"]), "day 15");
}

/// Redis's own "Protocol desync regression" tests (tests/unit/protocol.tcl): a request Redis
/// cannot parse, sent until a write fails; Redis answers one error line and closes with the
/// request unread, so its kernel sends a reset. The client must still read the error line, as it
/// does directly. Each of the three openings, many times, directly and through the router.
#[test]
fn redis_protocol_errors_reach_the_client_before_its_reset() {
    if skip_without(
        "redis::redis_protocol_errors_reach_the_client_before_its_reset",
        &["redis-server"],
    ) {
        return;
    }
    const EACH: usize = 100;
    let redis = RedisServer::start();
    let router = start_router(config_to(&[redis.addr]));
    for (name, addr) in [
        ("directly", redis.addr),
        ("through tcp-router", router.addr),
    ] {
        let mut lost = Vec::new();
        for opening in [&b"\x00"[..], b"*\x00", b"$\x00"] {
            for _ in 0..EACH {
                let answer = desync(addr, opening);
                if !answer.contains("Protocol error") {
                    lost.push(format!("{opening:?}: {answer:?}"));
                }
            }
        }
        assert!(
            lost.is_empty(),
            "{name}: {} of {} protocol errors lost; first: {:?}",
            lost.len(),
            3 * EACH,
            lost.first()
        );
    }
}

/// Sends `opening`, then "payload" until a write fails (as the Tcl test does, in bigger writes),
/// then reads the answer line.
fn desync(addr: SocketAddr, opening: &[u8]) -> String {
    let mut client = connect(addr);
    client.write_all(opening).unwrap();
    let payload = b"payload".repeat(1024);
    let deadline = Instant::now() + PATIENCE;
    while client.write_all(&payload).is_ok() {
        assert!(
            Instant::now() < deadline,
            "Redis never closed the connection"
        );
    }
    let mut line = String::new();
    let _ = BufReader::new(client).read_line(&mut line);
    line
}
