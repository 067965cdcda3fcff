//! Upstream failures cost one client, failover finds a live upstream, and the connection cap holds
//! clients in the backlog instead of dropping them.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// With every upstream refusing, the client is closed promptly: within 2 s of connecting,
/// although the connect timeout is 60 s (a refusal is final; nothing waits for the timeout).
#[test]
fn refused_upstream_closes_the_client_promptly() {
    let dead = dead_addr();
    let mut config = config_to(&[dead.addr]);
    config.listeners[0].routes[0].connect_timeout = Duration::from_secs(60);
    let router = start_router(config);
    let since = Instant::now();
    let mut client = connect(router.addr);
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the client to be closed, got {other:?}"),
    }
    let waited = since.elapsed();
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
}

/// The first upstream is dead: every client is served by the second.
#[test]
fn fails_over_to_the_next_upstream() {
    let up = echo_upstream();
    let dead = dead_addr();
    let router = start_router(config_to(&[dead.addr, up.addr]));
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

/// With the global cap at 1 and one connection open, a second client waits in the listener's
/// backlog: the router does not accept it and its upstream is never contacted, however long it
/// waits, while the first goes on being served; when the first ends, the second is accepted and
/// served.
#[test]
fn max_connections_holds_clients_in_the_backlog() {
    // Far longer than a loopback accept and upstream connect take (well under a millisecond):
    // a router that ignored its cap would have contacted the upstream by then.
    const CHANCE: Duration = Duration::from_millis(200);
    let up = echo_upstream();
    let mut config = config_to(&[up.addr]);
    config.max_connections = Some(1);
    let router = start_router(config);

    let mut first = connect(router.addr);
    first.write_all(b"ping").unwrap();
    assert_eq!(read_exact(&mut first, 4), b"ping");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);

    let mut second = connect(router.addr);
    second.write_all(b"wait").unwrap();
    // Until the second client is either queued (as it must be) or taken (which fails below).
    wait_until("the second client in the backlog or accepted", || {
        accept_queue(router.addr) == 1 || up.accepted.load(Ordering::SeqCst) > 1
    });
    // No event can say "the router is not going to accept": give it every chance, then look.
    thread::sleep(CHANCE);
    assert_eq!(
        accept_queue(router.addr),
        1,
        "the second client was accepted"
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "upstream contacted");
    first.write_all(b"pong").unwrap();
    assert_eq!(
        read_exact(&mut first, 4),
        b"pong",
        "the first is still served"
    );

    drop(first);
    assert_eq!(read_exact(&mut second, 4), b"wait");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(accept_queue(router.addr), 0);
}

/// Threads of a process, from /proc.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// During a burst the pool grows to what the concurrency needs (two threads a connection, plus
/// a few), not more, and a few seconds after it the surplus threads are gone again.
#[test]
fn threads_follow_the_load() {
    use std::io::{Read, Write};
    const CONNECTIONS: usize = 100;
    let up = crate::util::echo_upstream();
    let mut process = crate::util::Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    let pid = process.child.id();
    let idle = threads_of(pid);
    // Three waves of connections, each closed before the next opens.
    let mut most = 0;
    for wave in 0..3 {
        let mut streams: Vec<_> = (0..CONNECTIONS)
            .map(|_| crate::util::connect(process.addr))
            .collect();
        for (i, stream) in streams.iter_mut().enumerate() {
            stream.write_all(&[wave, i as u8]).unwrap();
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let mut echo = [0u8; 2];
            stream.read_exact(&mut echo).unwrap();
            assert_eq!(echo, [wave, i as u8]);
        }
        most = most.max(threads_of(pid));
        drop(streams);
    }
    // Two copy threads a connection; spares and threads on their way back allow a few more.
    assert!(
        most <= idle + 2 * CONNECTIONS + 16,
        "{most} threads for {CONNECTIONS} connections (idle: {idle})"
    );
    // After the burst the surplus leaves within a few seconds; spares stay.
    let burst_over = std::time::Instant::now();
    crate::util::wait_until("the surplus threads to exit", || {
        threads_of(pid) <= idle + 8
    });
    eprintln!(
        "threads: {idle} idle, {most} at most for {CONNECTIONS} connections, back to {} after {:?}",
        threads_of(pid),
        burst_over.elapsed()
    );
    process.signal("TERM");
    assert!(process.wait_exit().success());
}
