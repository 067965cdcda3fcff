//! Upstream failures cost one client, failover finds a live upstream, and the connection cap holds
//! clients in the backlog instead of dropping them.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::util::*;

/// With every upstream refusing, the client is closed promptly (well before any timeout).
#[test]
fn refused_upstream_closes_the_client() {
    let router = start_router(config_to(&[dead_addr()]));
    let mut client = connect(router.addr);
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the client to be closed, got {other:?}"),
    }
}

/// The first upstream is dead: every client is served by the second.
#[test]
fn fails_over_to_the_next_upstream() {
    let up = echo_upstream();
    let router = start_router(config_to(&[dead_addr(), up.addr]));
    for i in 0..4u8 {
        let mut client = connect(router.addr);
        send_and_close(&mut client, &[i; 10]);
        assert_eq!(read_to_end(&mut client), [i; 10]);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
}

/// Two live upstreams share clients round-robin.
#[test]
fn round_robin_spreads_clients() {
    let a = echo_upstream();
    let b = echo_upstream();
    let router = start_router(config_to(&[a.addr, b.addr]));
    for _ in 0..4 {
        let mut client = connect(router.addr);
        send_and_close(&mut client, b"x");
        assert_eq!(read_to_end(&mut client), b"x");
    }
    assert_eq!(a.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}

/// At the cap, a new client waits in the backlog (its upstream is not even contacted) and is
/// served as soon as an earlier connection ends.
#[test]
fn max_connections_holds_clients_in_the_backlog() {
    let up = echo_upstream();
    let mut config = config_to(&[up.addr]);
    config.max_connections = Some(2);
    let router = start_router(config);

    let mut first = connect(router.addr);
    let mut second = connect(router.addr);
    for client in [&mut first, &mut second] {
        client.write_all(b"ping").unwrap();
        assert_eq!(read_exact(client, 4), b"ping");
    }
    let mut third = connect(router.addr);
    third.write_all(b"wait").unwrap();
    // A negative check needs some time to pass; 300ms is ample for a loopback round trip.
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4];
    let err = third
        .read(&mut buf)
        .expect_err("third client must not be served yet");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    drop(first);
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_exact(&mut third, 4), b"wait");
    second.write_all(b"ok").unwrap();
    assert_eq!(read_exact(&mut second, 2), b"ok");
}
