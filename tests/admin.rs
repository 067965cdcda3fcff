//! The admin endpoint over real loopback sockets: Prometheus metrics that count exactly and add no
//! series for what clients send, readiness through a graceful stop, live connections and routes
//! as JSON, a request head bounded in size and time, an allow list, and the status page in a real
//! browser; with curl, promtool and chromium where installed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcp_router::proto::tls::parse_client_hello;
use tcp_router::proto::Parsed;
use tcp_router::Forwarder;

use crate::util::*;

// ---------------------------------------------------------------------------------------------
// Helpers: curl, upstreams that hold or linger, a client that sends first, random names
// ---------------------------------------------------------------------------------------------

/// curl with `args`, which must succeed (any HTTP status): its `-i` output parsed.
fn curl(args: &[&str]) -> Reply {
    let out = run_tool(
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(args),
        b"",
    );
    assert!(out.status.success(), "curl {args:?}: {}", out.stderr);
    Reply::parse(out.stdout.as_bytes())
}

/// An upstream that reads exactly `expect` bytes from its one client, reports them, waits for a
/// release, answers `answer`, waits for another, shuts down its write side and reads to the end.
fn held_upstream(
    expect: usize,
    answer: Vec<u8>,
) -> (Upstream, mpsc::Receiver<Vec<u8>>, mpsc::Sender<()>) {
    let (got_tx, got_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let got_tx = Mutex::new(got_tx);
    let release_rx = Mutex::new(release_rx);
    let up = upstream(move |mut stream| {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = vec![0u8; expect];
        if stream.read_exact(&mut got).is_err() {
            return;
        }
        let _ = got_tx.lock().unwrap().send(got);
        if release_rx.lock().unwrap().recv().is_err() {
            return;
        }
        let _ = stream.write_all(&answer);
        if release_rx.lock().unwrap().recv().is_err() {
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.read_to_end(&mut Vec::new());
    });
    (up, got_rx, release_tx)
}

/// Echoes until the client's end of stream, then keeps its own write side open until released
/// (or the sender is dropped): a connection that stays half-closed.
fn lingering_echo_upstream() -> (Upstream, mpsc::Sender<()>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let up = upstream(move |mut stream| {
        let mut reader = stream.try_clone().unwrap();
        let _ = std::io::copy(&mut reader, &mut stream);
        let _ = release_rx.lock().unwrap().recv();
        let _ = stream.shutdown(Shutdown::Write);
    });
    (up, release_tx)
}

/// A client that sends `first`, is answered or closed, and reads until closed.
fn one_shot(addr: SocketAddr, first: &[u8]) -> Vec<u8> {
    let mut client = connect(addr);
    client.write_all(first).unwrap();
    read_until_closed(&mut client)
}

/// A random host name of one to three labels, some letters in capitals, ending in `suffix`.
fn random_name(seed: u64, suffix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let bytes = random_bytes(seed, 64);
    let labels = 1 + usize::from(bytes[0]) % 3;
    let mut name = String::new();
    for l in 0..labels {
        let len = 1 + usize::from(bytes[1 + l]) % 20;
        for i in 0..len {
            let b = bytes[4 + l * 20 + i];
            name.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
        }
        name.push('.');
    }
    name.push_str(suffix);
    name
}

// ---------------------------------------------------------------------------------------------
// curl and promtool
// ---------------------------------------------------------------------------------------------

/// curl gets every endpoint with its status and content type (`/metrics`, `/ready`, `/health`,
/// `/routes`, `/connections`, `/`, and HEAD), and `promtool check metrics` accepts the exposition
/// after traffic has filled the connect-time histogram, a refused-connect series and the counts
/// by protocol.
#[test]
fn curl_reads_every_endpoint_and_promtool_accepts_the_metrics() {
    let test = "admin::curl_reads_every_endpoint_and_promtool_accepts_the_metrics";
    if skip_without(test, &["curl"]) {
        return;
    }
    let up = echo_upstream();
    let dead = dead_addr();
    let (router, admin) = start_with_admin(&[
        "127.0.0.1:0",
        &s(up.addr),
        "--host",
        &format!("dead.example={}", dead.addr),
    ]);
    let router_addr = router.addr;
    let mut client = connect(router_addr);
    round_trip(&mut client, b"ping\n");
    drop(client);
    one_shot(router_addr, b"GET / HTTP/1.1\r\nHost: dead.example\r\n\r\n");
    let m = metrics_until(admin, "both connections ended", |m| {
        m.sum("tcp_router_connections_ended_total", &[]) == 2
    });
    // The listener reads first bytes (it has a host= route): each client counts by protocol.
    for (protocol, count) in [("http", 1), ("other", 1), ("ssh", 0)] {
        let labels = [("protocol", protocol)];
        let counted = m.count("tcp_router_protocol_connections_total", &labels);
        assert_eq!(counted, count, "{protocol}");
    }
    let default = [("route", "default")];
    assert_eq!(
        m.count(
            "tcp_router_upstream_connect_duration_seconds_count",
            &default
        ),
        1
    );
    assert_eq!(
        m.count(
            "tcp_router_upstream_connect_failures_total",
            &[("route", "host=dead.example"), ("reason", "refused")]
        ),
        1
    );

    let url = |path: &str| format!("http://{admin}{path}");
    let reply = curl(&[&url("/metrics")]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(reply
        .text()
        .contains("# TYPE tcp_router_upstream_connect_duration_seconds histogram\n"));
    let exposition = reply.body;

    let reply = curl(&[&url("/ready")]);
    assert_eq!((reply.status, reply.text()), (200, "ready\n"));
    let reply = curl(&[&url("/health")]);
    assert_eq!((reply.status, reply.text()), (200, "ok\n"));
    let reply = curl(&[&url("/routes")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    assert_eq!(reply.json()["listeners"][0]["address"], s(router_addr));
    let reply = curl(&[&url("/connections?limit=5")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["total"], 0);
    let reply = curl(&[&url("/")]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply.text().contains("<title>tcp-router</title>"));
    let reply = curl(&["-I", &url("/metrics")]);
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("Cache-Control"), Some("no-store"));

    if skip_without(&format!("{test} (promtool part)"), &["promtool"]) {
        return;
    }
    let out = run_tool(
        Command::new("promtool").args(["check", "metrics"]),
        &exposition,
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------------

/// Known byte counts through two Host routes of one listener show up exactly in
/// `tcp_router_relayed_bytes_total` while the connections are still open (the client's bytes,
/// including the request head routing read first, before any answer; then the answer), and
/// both directions once they closed, matching each connection's `closed #N` log line.
#[test]
fn relayed_bytes_are_exact_per_route_during_and_after_a_transfer() {
    struct Leg {
        route: &'static str,
        request: Vec<u8>,
        answer: Vec<u8>,
    }
    let leg = |route, host: &str, body_len, answer_len, seed| {
        let mut request =
            format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_len}\r\n\r\n")
                .into_bytes();
        request.extend_from_slice(&random_bytes(seed, body_len));
        Leg {
            route,
            request,
            answer: random_bytes(seed + 1, answer_len),
        }
    };
    let legs = [
        leg("host=a.example", "a.example", 100_000, 250_000, 1),
        leg("default", "other.example", 70_001, 33_333, 3),
    ];
    let held: Vec<_> = legs
        .iter()
        .map(|l| held_upstream(l.request.len(), l.answer.clone()))
        .collect();
    let (mut router, admin) = start_with_admin(&[
        "127.0.0.1:0",
        &s(held[1].0.addr),
        "--host",
        &format!("a.example={}", held[0].0.addr),
    ]);

    let mut clients = Vec::new();
    for (leg, (_, got, _)) in legs.iter().zip(&held) {
        let mut client = connect(router.addr);
        client.write_all(&leg.request).unwrap();
        assert_eq!(
            got.recv_timeout(PATIENCE).unwrap(),
            leg.request,
            "{}",
            leg.route
        );
        clients.push(client);
    }
    let relayed = |m: &Metrics, route, direction| {
        m.count(
            "tcp_router_relayed_bytes_total",
            &[
                ("listener", "127.0.0.1:0"),
                ("route", route),
                ("direction", direction),
            ],
        )
    };
    let during = metrics_until(admin, "the client's bytes counted on both routes", |m| {
        legs.iter()
            .all(|l| relayed(m, l.route, "client_to_upstream") == l.request.len() as u64)
    });
    for leg in &legs {
        let labels = [("route", leg.route)];
        assert_eq!(during.count("tcp_router_connections_active", &labels), 1);
        assert_eq!(relayed(&during, leg.route, "upstream_to_client"), 0);
        assert_eq!(
            during.sum("tcp_router_connections_ended_total", &labels),
            0,
            "{}: still open",
            leg.route
        );
    }

    for ((leg, (_, _, release)), client) in legs.iter().zip(&held).zip(&mut clients) {
        release.send(()).unwrap();
        assert_eq!(
            read_exact(client, leg.answer.len()),
            leg.answer,
            "{}",
            leg.route
        );
    }
    let answered = metrics_until(admin, "the answers counted on both routes", |m| {
        legs.iter()
            .all(|l| relayed(m, l.route, "upstream_to_client") == l.answer.len() as u64)
    });
    for leg in &legs {
        let labels = [("route", leg.route)];
        assert_eq!(answered.count("tcp_router_connections_active", &labels), 1);
        assert_eq!(
            answered.sum("tcp_router_connections_ended_total", &labels),
            0
        );
    }

    for ((_, (_, _, release)), client) in legs.iter().zip(&held).zip(&mut clients) {
        release.send(()).unwrap();
        close_cleanly(client);
    }
    // A connection is counted as ended just before it leaves the live set: wait for both.
    let after = metrics_until(admin, "both connections ended and left", |m| {
        legs.iter().all(|l| {
            m.count(
                "tcp_router_connections_ended_total",
                &[("route", l.route), ("result", "forwarded")],
            ) == 1
                && m.count("tcp_router_connections_active", &[("route", l.route)]) == 0
        })
    });
    for leg in &legs {
        let (sent, received) = (leg.request.len() as u64, leg.answer.len() as u64);
        assert_eq!(relayed(&after, leg.route, "client_to_upstream"), sent);
        assert_eq!(relayed(&after, leg.route, "upstream_to_client"), received);
        for direction in ["client_to_upstream", "upstream_to_client"] {
            let labels = [
                ("route", leg.route),
                ("direction", direction),
                ("end", "eof"),
            ];
            assert_eq!(after.count("tcp_router_directions_ended_total", &labels), 1);
        }
        let line = router.line_with(&format!(" route={} ", leg.route));
        assert!(
            line.contains(&format!(" sent={sent} received={received} ")),
            "{line}"
        );
    }
    assert_eq!(
        after.sum("tcp_router_relayed_bytes_total", &[("route", "none")]),
        0
    );
    assert_eq!(
        after.count(
            "tcp_router_connections_accepted_total",
            &[("listener", "127.0.0.1:0")]
        ),
        2
    );
}

/// Refused connects to a dead upstream are counted by reason (`refused`) with each client as
/// `no_upstream`, and clients turned away by `--deny` or by an `--allow` that excludes them as
/// `refused` (before a route is chosen: route `none`), the upstream never contacted.
#[test]
fn connect_failures_and_refusals_are_counted() {
    let dead = dead_addr();
    let (router, admin) = start_with_admin(&["127.0.0.1:0", &s(dead.addr)]);
    for _ in 0..3 {
        assert!(one_shot(router.addr, b"hello").is_empty());
    }
    let m = metrics_until(admin, "three clients ended", |m| {
        m.sum("tcp_router_connections_ended_total", &[]) == 3
    });
    let upstream = [("route", "default"), ("upstream", &s(dead.addr))];
    let reason = |r| {
        let mut labels = upstream.to_vec();
        labels.push(("reason", r));
        m.count("tcp_router_upstream_connect_failures_total", &labels)
    };
    assert_eq!(reason("refused"), 3);
    for other in ["timeout", "unreachable", "not_resolved", "error"] {
        assert_eq!(reason(other), 0, "{other}");
    }
    assert_eq!(
        m.count("tcp_router_upstream_connect_attempts_total", &upstream),
        3
    );
    assert_eq!(
        m.count(
            "tcp_router_connections_ended_total",
            &[("route", "default"), ("result", "no_upstream")]
        ),
        3
    );
    assert_eq!(
        m.count(
            "tcp_router_upstream_connect_duration_seconds_count",
            &upstream
        ),
        0
    );
    assert_eq!(m.count("tcp_router_upstream_cooling_down", &upstream), 1);

    let up = echo_upstream();
    for rule in [["--deny", "127.0.0.1"], ["--allow", "10.0.0.0/8"]] {
        let (router, admin) = start_with_admin(&[rule[0], rule[1], "127.0.0.1:0", &s(up.addr)]);
        for _ in 0..2 {
            assert!(one_shot(router.addr, b"hello").is_empty());
        }
        let m = metrics_until(admin, "two clients ended", |m| {
            m.sum("tcp_router_connections_ended_total", &[]) == 2
        });
        assert_eq!(
            m.count(
                "tcp_router_connections_ended_total",
                &[("route", "none"), ("result", "refused")]
            ),
            2,
            "{rule:?}"
        );
        assert_eq!(
            m.count("tcp_router_upstream_connect_attempts_total", &[]),
            0
        );
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
}

/// 1,000 TLS clients with random server names (to an exact, a wildcard and the default route)
/// add no series: the set of names and labels in `/metrics` is the same before and after, and
/// each client was counted under the route its name took.
#[test]
fn random_sni_names_add_no_series() {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 8;
    let wild = echo_upstream();
    let default = echo_upstream();
    let exact = echo_upstream();
    let (router, admin) = start_with_admin(&[
        "127.0.0.1:0",
        &s(default.addr),
        "--sni",
        &format!("a.example.com={}", exact.addr),
        "--sni",
        &format!("*.example.org={}", wild.addr),
    ]);
    let names: Vec<String> = (0..CLIENTS)
        .map(|i| {
            let suffix = ["example.org", "b.example.com", "test"][i % 3];
            random_name(i as u64, suffix)
        })
        .collect();
    for name in &names {
        match parse_client_hello(&client_hello(name)) {
            Ok(Parsed::Complete(hello)) => {
                assert_eq!(hello.server_name, Some(name.to_ascii_lowercase()))
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let before = metrics(admin).series();

    let names = Arc::new(names);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let names = Arc::clone(&names);
            let addr = router.addr;
            thread::spawn(move || {
                for name in names.iter().skip(t).step_by(THREADS) {
                    echo_through(addr, &client_hello(name));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let after = metrics_until(admin, "every client counted as ended", |m| {
        m.sum("tcp_router_connections_ended_total", &[]) == CLIENTS as u64
    });
    let wild_clients = CLIENTS.div_ceil(3);
    let forwarded = |route| {
        after.count(
            "tcp_router_connections_ended_total",
            &[("route", route), ("result", "forwarded")],
        )
    };
    assert_eq!(forwarded("sni=*.example.org"), wild_clients as u64);
    assert_eq!(forwarded("default"), (CLIENTS - wild_clients) as u64);
    assert_eq!(forwarded("sni=a.example.com"), 0);
    assert_eq!(wild.accepted.load(Ordering::SeqCst), wild_clients);
    assert_eq!(exact.accepted.load(Ordering::SeqCst), 0);

    let after = after.series();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "series added: {added:#?}\nseries removed: {removed:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Readiness and the graceful stop
// ---------------------------------------------------------------------------------------------

/// With `--shutdown-grace 2s`, `/ready` turns 503 at SIGTERM while a transfer is held open; the
/// listener still serves a new client during the grace, closes when the drain begins (not
/// before the grace is over), and the held transfer then completes byte-exact and the process
/// exits 0 with nothing cut.
#[test]
fn ready_turns_503_at_sigterm_while_the_grace_keeps_accepting_and_the_transfer_drains() {
    let up = echo_upstream();
    let (mut router, admin) = start_with_admin(&[
        "--shutdown-grace",
        "2s",
        "--drain-timeout",
        "10s",
        "127.0.0.1:0",
        &s(up.addr),
    ]);
    let data = random_bytes(5, 1 << 20);
    let half = data.len() / 2;
    let mut held = connect(router.addr);
    let (next_tx, next_rx) = mpsc::channel::<()>();
    let writer = {
        let mut held = held.try_clone().unwrap();
        let data = data.clone();
        thread::spawn(move || {
            held.write_all(&data[..half]).unwrap();
            next_rx.recv().unwrap();
            held.write_all(&data[half..]).unwrap();
            held.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = read_exact(&mut held, half);
    let reply = get(admin, "/ready");
    assert_eq!((reply.status, reply.text()), (200, "ready\n"));

    router.signal("TERM");
    let signalled = Instant::now();
    router.wait_for_line("stopping: not ready; accepting for");
    let reply = get(admin, "/ready");
    assert_eq!((reply.status, reply.text()), (503, "stopping\n"));
    assert_eq!(metrics(admin).count("tcp_router_stopping", &[]), 1);
    assert_eq!(get_json(admin, "/routes")["stopping"], true);

    echo_through(router.addr, b"a client during the grace");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "served within the grace"
    );

    router.wait_for_line("stopping: accepting no more clients; 1 active connection(s)");
    let grace = signalled.elapsed();
    assert!(
        grace >= Duration::from_millis(1900),
        "drain began after {grace:?}"
    );
    let refused = TcpStream::connect(router.addr);
    assert!(refused.is_err(), "the listener is closed while draining");
    let reply = get(admin, "/ready");
    assert_eq!(reply.status, 503, "still not ready while draining");

    next_tx.send(()).unwrap();
    echoed.extend(read_to_end(&mut held));
    writer.join().unwrap();
    assert_eq!(
        checksum(&echoed),
        checksum(&data),
        "the held transfer is byte-exact"
    );
    let status = router.wait_exit();
    assert_eq!(status.code(), Some(0));
    let log = router.rest_of_stderr().join("\n");
    assert!(
        log.contains("stopped: 1 connection(s) finished, 0 cut"),
        "{log}"
    );
}

/// The library: `Builder::admin` binds the endpoint and `admin_addr` says where (none without
/// it); `/ready` is 503 from the moment `Handle::stop` is called while a connection drains, and
/// the endpoint closes once the forwarder has stopped.
#[test]
fn the_library_serves_the_endpoint_at_admin_addr() {
    let up = echo_upstream();
    let plain = Forwarder::new("127.0.0.1:0", up.addr).unwrap();
    assert_eq!(plain.admin_addr(), None);
    drop(plain);

    let forwarder = Forwarder::builder("127.0.0.1:0")
        .upstream(up.addr)
        .admin("127.0.0.1:0")
        .drain_timeout(Duration::from_secs(10))
        .bind()
        .unwrap();
    let admin = forwarder.admin_addr().expect("an admin address");
    assert!(admin.ip().is_loopback() && admin.port() != 0, "{admin}");
    let listen = forwarder.local_addr();
    let handle = forwarder.handle();
    let running = forwarder.spawn().unwrap();
    assert_eq!(get(admin, "/ready").status, 200);
    assert_eq!(get(admin, "/health").status, 200);

    let mut client = connect(listen);
    round_trip(&mut client, b"ping");
    handle.stop();
    let reply = get(admin, "/ready");
    assert_eq!((reply.status, reply.text()), (503, "stopping\n"));
    json_until(admin, "/routes", "the drain began", |v| {
        v["stopping"] == true && v["listeners"].as_array().is_some_and(Vec::is_empty)
    });
    assert_eq!(get_json(admin, "/connections")["total"], 1);
    send_and_close(&mut client, b"bye");
    assert_eq!(read_to_end(&mut client), b"bye");
    let report = running.join().unwrap();
    assert_eq!((report.active, report.finished, report.cut), (1, 1, 0));
    wait_until("the admin endpoint closes", || {
        TcpStream::connect(admin).is_err()
    });
}

// ---------------------------------------------------------------------------------------------
// The request head: time, size, method, path
// ---------------------------------------------------------------------------------------------

/// An admin client that connects, says so on `connected`, then sends a request one byte a
/// second, waiting for an answer between bytes; returns the answer and how long after connecting
/// it began to arrive.
fn slow_admin_client(admin: SocketAddr, connected: mpsc::Sender<()>) -> (Reply, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(admin).unwrap();
    let _ = connected.send(());
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    for &byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) => panic!("slow client: {err}"),
        }
    }
    let answered = started.elapsed();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    got.extend(read_until_closed(&mut stream));
    (Reply::parse(&got), answered)
}

/// Forty admin clients sending one byte a second (more than the endpoint has answering
/// threads) hold no thread while their requests arrive: `/ready`, `/health` and `/metrics` are
/// answered 200 meanwhile, forwarded echo round trips, on an open connection and a new one, still
/// complete promptly (under 1 s), and each slow client gets 408 when its 5 s deadline passes.
#[test]
fn slow_admin_clients_delay_no_forwarded_byte_and_no_probe() {
    const SLOW: usize = 40;
    let up = echo_upstream();
    let (router, admin) = start_with_admin(&["127.0.0.1:0", &s(up.addr)]);
    let mut forwarded = connect(router.addr);
    forwarded.set_nodelay(true).unwrap();
    let payload = random_bytes(6, 512);
    let baseline = (0..20)
        .map(|_| round_trip(&mut forwarded, &payload))
        .max()
        .unwrap();

    let (connected_tx, connected) = mpsc::channel();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let connected_tx = connected_tx.clone();
            thread::spawn(move || slow_admin_client(admin, connected_tx))
        })
        .collect();
    for _ in 0..SLOW {
        connected.recv_timeout(PATIENCE).unwrap();
    }
    wait_until("the admin endpoint accepts the slow clients", || {
        accept_queue(admin) == 0
    });
    for path in ["/ready", "/health", "/metrics"] {
        let reply = get(admin, path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }

    let bound = Duration::from_secs(1);
    let held = (0..20)
        .map(|_| round_trip(&mut forwarded, &payload))
        .max()
        .unwrap();
    assert!(held < bound, "round trip {held:?} (baseline {baseline:?})");
    let mut fresh = connect(router.addr);
    fresh.set_nodelay(true).unwrap();
    let first = round_trip(&mut fresh, &payload);
    assert!(first < bound, "first round trip of a new client {first:?}");
    drop(fresh);

    for client in slow {
        let (reply, after) = client.join().unwrap();
        assert_eq!(reply.status, 408, "{}", reply.text());
        assert!(
            after >= Duration::from_millis(4950) && after < Duration::from_secs(7),
            "408 after {after:?}"
        );
    }
    assert_eq!(get(admin, "/ready").status, 200);
    assert!(round_trip(&mut forwarded, &payload) < bound);
}

/// Sixteen silent sockets from a refused address (127.0.0.5, with only 127.0.0.1 allowed) are
/// answered 403 at once, without sending a byte, and cost the endpoint nothing: an allowed
/// client's `/health` and `/ready` are answered 200 while they stay open.
#[test]
fn silent_sockets_from_a_refused_address_cannot_fail_the_probes() {
    const REFUSED: usize = 16;
    let up = echo_upstream();
    let (_router, admin) =
        start_with_admin(&["--admin-allow", "127.0.0.1", "127.0.0.1:0", &s(up.addr)]);
    let mut silent: Vec<TcpStream> = (0..REFUSED).map(|_| connect_from(5, admin)).collect();
    wait_until("the admin endpoint accepts the silent clients", || {
        accept_queue(admin) == 0
    });
    for _ in 0..20 {
        for path in ["/health", "/ready"] {
            let reply = get(admin, path);
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        }
    }
    for stream in &mut silent {
        let reply = Reply::parse(&read_until_closed(stream));
        assert_eq!((reply.status, reply.text()), (403, "forbidden\n"));
    }
}

/// Twenty clients asking at once, 100 requests each (2,000), across every path (a scraper, status pages,
/// probes), are all answered 200: none sees a busy answer.
#[test]
fn twenty_concurrent_clients_never_see_a_busy_answer() {
    let up = echo_upstream();
    let (_router, admin) = start_with_admin(&["127.0.0.1:0", &s(up.addr)]);
    let clients: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let paths = [
                    "/metrics",
                    "/",
                    "/routes",
                    "/connections",
                    "/health",
                    "/ready",
                ];
                (0..100)
                    .map(|n| paths[(i + n) % paths.len()])
                    .map(|path| (path, get(admin, path).status))
                    .filter(|&(_, status)| status != 200)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let failed: Vec<_> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 2000 not 200: {failed:?}",
        failed.len()
    );
}

/// A client that asks for `/metrics` and never reads, with a small receive buffer and segment
/// size so the answer cannot all be sent: it holds an answering thread (for the 5 s write
/// deadline at most).
fn unread_metrics_request(admin: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.connect(&admin.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: hog\r\n\r\n")
        .unwrap();
    stream
}

/// With every answering thread held by clients that do not read a large `/metrics`, a further
/// `/metrics` is answered 429 with `Retry-After` (not 503, which would read as unhealthy), while
/// `/health` and `/ready` are still answered 200.
#[test]
fn a_busy_endpoint_answers_429_with_retry_after_and_still_answers_probes() {
    let up = echo_upstream();
    let dir = temp_dir("admin-busy");
    let routes: String = (0..150)
        .map(|n| format!("route 127.0.0.1:0 {} sni=n{n}.example\n", up.addr))
        .collect();
    let path = dir.write("router.conf", &format!("admin 127.0.0.1 0\n{routes}"));
    let mut router = Process::start(&["-c", &path]);
    let admin = router.admin_addr();
    let size = get(admin, "/metrics").body.len();
    assert!(size > 200_000, "/metrics is only {size} bytes");
    let mut hogs = Vec::new();
    let busy = loop {
        let reply = get(admin, "/metrics");
        if reply.status != 200 {
            break reply;
        }
        assert!(hogs.len() < 200, "never busy with {} hogs", hogs.len());
        hogs.extend((0..8).map(|_| unread_metrics_request(admin)));
    };
    assert_eq!(busy.status, 429, "{}", busy.text());
    assert_eq!(busy.header("Retry-After"), Some("1"));
    for path in ["/health", "/ready"] {
        let reply = get(admin, path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    drop(hogs);
}

/// Eight clients that keep sending a byte every 20 ms after their request are cut off soon after
/// their answer, well within the 5 s deadline, so they cannot lock the endpoint: another client
/// is served again within 2 s.
#[test]
fn clients_that_keep_sending_do_not_hold_the_admin_threads() {
    const ADMIN_THREADS: usize = 8;
    let up = echo_upstream();
    let (_router, admin) = start_with_admin(&["127.0.0.1:0", &s(up.addr)]);
    let stop = Arc::new(AtomicBool::new(false));
    let (connected_tx, connected) = mpsc::channel();
    let hogs: Vec<_> = (0..ADMIN_THREADS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let connected_tx = connected_tx.clone();
            thread::spawn(move || {
                let mut stream = connect(admin);
                stream
                    .write_all(b"GET /ready HTTP/1.1\r\nHost: hog\r\n\r\n")
                    .unwrap();
                let _ = connected_tx.send(());
                // Until the server closes its end for good, which makes a write fail (or, if the
                // server never does, for well over the 5 s request deadline).
                let began = Instant::now();
                while !stop.load(Ordering::SeqCst) && began.elapsed() < Duration::from_secs(8) {
                    if stream.write_all(b"x").is_err() {
                        return true;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                false
            })
        })
        .collect();
    for _ in 0..ADMIN_THREADS {
        connected.recv_timeout(PATIENCE).unwrap();
    }
    wait_until("the admin endpoint accepts the clients", || {
        accept_queue(admin) == 0
    });
    let started = Instant::now();
    let served = poll_within(Duration::from_secs(2), || {
        (get(admin, "/ready").status == 200).then_some(())
    })
    .is_some();
    if !served {
        stop.store(true, Ordering::SeqCst);
    }
    let still_connected = hogs
        .into_iter()
        .map(|hog| hog.join().unwrap())
        .filter(|cut| !cut)
        .count();
    assert!(
        served,
        "the endpoint still answers 503 after {:?}",
        started.elapsed()
    );
    assert_eq!(still_connected, 0, "clients never cut off");
}

/// A request head over 8 KiB gets 431 (one just under it is served), POST and DELETE get 405
/// with `Allow: GET, HEAD`, HEAD gets the headers with no body, an unknown path 404, a bad limit
/// or something that is not HTTP 400.
#[test]
fn requests_outside_the_protocol_get_431_405_404_and_head_has_no_body() {
    let up = echo_upstream();
    let (_router, admin) = start_with_admin(&["127.0.0.1:0", &s(up.addr)]);
    let padded = |total: usize| {
        let start = b"GET /ready HTTP/1.1\r\nX-Padding: ".to_vec();
        let mut req = start.clone();
        req.resize(total - 4, b'a');
        req.extend_from_slice(b"\r\n\r\n");
        req
    };
    let reply = exchange(admin, &padded(9 * 1024));
    assert_eq!(reply.status, 431, "{}", reply.text());
    let reply = exchange(admin, &padded(8 * 1024 - 16));
    assert_eq!((reply.status, reply.text()), (200, "ready\n"));

    for method in ["POST", "DELETE"] {
        let reply = request(admin, method, "/metrics");
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("Allow"), Some("GET, HEAD"), "{method}");
    }

    let full = get(admin, "/routes");
    let head = request(admin, "HEAD", "/routes");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD got a body: {:?}", head.text());
    assert_eq!(head.header("Content-Type"), Some("application/json"));
    assert_eq!(
        head.header("Content-Length"),
        Some(full.body.len().to_string().as_str())
    );

    let reply = get(admin, "/no-such-page");
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("/metrics"), "{}", reply.text());
    assert_eq!(get(admin, "/connections?limit=many").status, 400);
    assert_eq!(exchange(admin, &client_hello("a.example")).status, 400);
}

// ---------------------------------------------------------------------------------------------
// Who may ask
// ---------------------------------------------------------------------------------------------

/// `--admin-allow` refuses a client outside it with 403 and serves one inside (the flag
/// repeats); the config file's `admin ADDR PORT` and `admin_allow` do the same, and a reload
/// that changes only `admin_allow` keeps the endpoint's address and takes the new list.
#[test]
fn admin_allow_refuses_clients_outside_it() {
    let test = "admin::admin_allow_refuses_clients_outside_it";
    if skip_without(test, &["curl"]) {
        return;
    }
    let up = echo_upstream();
    let (_outside, admin) =
        start_with_admin(&["--admin-allow", "10.0.0.0/8", "127.0.0.1:0", &s(up.addr)]);
    for path in ["/metrics", "/ready", "/"] {
        let reply = curl(&[&format!("http://{admin}{path}")]);
        assert_eq!((reply.status, reply.text()), (403, "forbidden\n"), "{path}");
    }
    let (_inside, admin) = start_with_admin(&[
        "--admin-allow",
        "10.0.0.0/8",
        "--admin-allow",
        "127.0.0.0/8",
        "127.0.0.1:0",
        &s(up.addr),
    ]);
    let reply = curl(&[&format!("http://{admin}/ready")]);
    assert_eq!((reply.status, reply.text()), (200, "ready\n"));

    let dir = temp_dir("admin-allow");
    let file = |allow: &str| {
        format!(
            "admin 127.0.0.1 0\nadmin_allow {allow}\nroute 127.0.0.1:0 {}\n",
            up.addr
        )
    };
    let path = dir.write("router.conf", &file("10.0.0.0/8"));
    let mut router = Process::start(&["-c", &path]);
    let admin = router.admin_addr();
    assert_eq!(curl(&[&format!("http://{admin}/ready")]).status, 403);
    dir.write("router.conf", &file("127.0.0.1"));
    router.signal("HUP");
    router.wait_for_line("reloaded: ");
    let reply = curl(&[&format!("http://{admin}/routes")]);
    assert_eq!(reply.status, 200);
    let routes = reply.json();
    let origin = routes["listeners"][0]["origin"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(origin.contains("router.conf"), "{origin}");
}

/// The JSON docs/operations.md quotes for `/connections` and `/routes` has the shape of the real
/// output (every key, every value's type; arrays by their first element), from the setup the
/// docs describe: one listener, one route with two upstreams, one live connection. A field added
/// or renamed without the docs fails here.
#[test]
fn the_json_samples_in_the_docs_have_the_real_outputs_shape() {
    fn shape(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let fields: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", shape(v)))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }
            Value::Array(items) => format!("[{}]", items.first().map_or(String::new(), shape)),
            Value::String(_) => "string".into(),
            Value::Number(_) => "number".into(),
            Value::Bool(_) => "bool".into(),
            Value::Null => "null".into(),
        }
    }
    fn quoted(docs: &str, intro: &str) -> Value {
        serde_json::from_str(fenced_block(docs, intro, "json")).expect("the docs' sample is JSON")
    }
    let docs = repo_file("docs/operations.md");
    let (up, release) = lingering_echo_upstream();
    let other = echo_upstream();
    let (router, admin) = start_with_admin(&["127.0.0.1:0", &s(up.addr), &s(other.addr)]);
    let mut client = connect(router.addr);
    round_trip(&mut client, b"hello");
    for (intro, path) in [
        (
            "`GET /connections` (trimmed to one connection):",
            "/connections",
        ),
        (
            "`GET /routes` (one listener, one route with two upstreams):",
            "/routes",
        ),
    ] {
        let real = get_json(admin, path);
        let sample = quoted(&docs, intro);
        assert_eq!(
            shape(&sample),
            shape(&real),
            "docs/operations.md's {path} sample is stale; the real output:\n{}",
            serde_json::to_string_pretty(&real).unwrap()
        );
    }
    drop(release);
}

/// An upstream nothing has shown to be up is never called "up": `/routes` says "unknown" until
/// a connect fails, then "cooling"; the status page has no "up" pill.
#[test]
fn an_upstream_is_never_called_up_without_evidence() {
    let dead = dead_addr();
    let (router, admin) = start_with_admin(&["127.0.0.1:0", &s(dead.addr)]);
    let member = |routes: &Value| routes["listeners"][0]["routes"][0]["upstreams"][0].clone();
    let before = member(&get_json(admin, "/routes"));
    assert_eq!(before["state"], "unknown", "{before:#}");
    assert_eq!(
        before["health"], "up",
        "served, though not called up: {before:#}"
    );
    let mut client = connect(router.addr);
    let _ = read_until_closed(&mut client);
    json_until(admin, "/routes", "the failed upstream cooling", |routes| {
        member(routes)["state"] == "cooling"
    });
    let page = get(admin, "/").text().to_string();
    assert!(!page.contains("\"up\""), "the page still says up");
}

/// A route with `check=connect` shows its member `up` on the checks' evidence alone (no client
/// has come), with the last check `passed` and the route's check settings in `/routes`, and
/// `tcp_router_upstream_up` is 1 for it.
#[test]
fn a_checked_member_is_up_with_a_passed_check_in_routes_and_metrics() {
    let up = echo_upstream();
    let dir = temp_dir("admin-check");
    let path = dir.write(
        "router.conf",
        &format!(
            "admin 127.0.0.1 0\nroute 127.0.0.1:0 {} check=connect check_interval=200ms\n",
            up.addr
        ),
    );
    let mut router = Process::start(&["-c", &path]);
    let admin = router.admin_addr();
    let route = |routes: &Value| routes["listeners"][0]["routes"][0].clone();
    let routes = json_until(admin, "/routes", "the member up", |routes| {
        route(routes)["upstreams"][0]["state"] == "up"
    });
    let route = route(&routes);
    assert_eq!(route["check"], "connect", "{route:#}");
    assert_eq!(route["check_interval"], "200ms", "{route:#}");
    assert_eq!(
        (route["rise"].clone(), route["fall"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(route["on_down"], "keep");
    let member = &route["upstreams"][0];
    assert_eq!(member["address"], s(up.addr), "{member:#}");
    assert_eq!(member["health"], "up", "{member:#}");
    assert_eq!(member["last_check"]["result"], "passed", "{member:#}");
    assert!(
        member["last_check"]["took_seconds"].as_f64().is_some(),
        "{member:#}"
    );
    assert!(member["successes"].as_u64() >= Some(1), "{member:#}");
    assert_eq!(member["attempts"], 0, "no client came: {member:#}");

    let address = s(up.addr);
    let labels = [
        ("listener", "127.0.0.1:0"),
        ("route", "default"),
        ("upstream", address.as_str()),
        ("address", address.as_str()),
    ];
    let m = metrics(admin);
    assert_eq!(m.count("tcp_router_upstream_up", &labels), 1);
    assert_eq!(m.count("tcp_router_upstream_cooling_down", &labels), 0);
    let passed = [labels.as_slice(), &[("result", "passed")]].concat();
    assert!(m.count("tcp_router_upstream_checks_total", &passed) >= 1);
}

/// Every refused reload is counted, whatever the reason: a typo the binary's reader refuses
/// (before the forwarder sees it), a duplicate route the forwarder refuses, and a good one that
/// takes effect.
#[test]
fn every_refused_reload_is_counted_whatever_the_reason() {
    let up = echo_upstream();
    let dir = temp_dir("admin-reloads");
    let good = format!(
        "route 127.0.0.1:0 {}
",
        up.addr
    );
    let path = dir.write("router.conf", &good);
    let mut router = Process::start(&["--admin", "127.0.0.1:0", "-c", &path]);
    let admin = router.admin_addr();
    let reloads = |m: &Metrics| {
        (
            m.count("tcp_router_reloads_total", &[]),
            m.count("tcp_router_reloads_succeeded_total", &[]),
        )
    };
    assert_eq!(reloads(&metrics(admin)), (0, 0));
    dir.write(
        "router.conf",
        &format!(
            "{good}rout 127.0.0.1:1 127.0.0.1:2
"
        ),
    );
    router.signal("HUP");
    metrics_until(admin, "the typo counted", |m| reloads(m) == (1, 0));
    dir.write(
        "router.conf",
        &format!(
            "{good}route 127.0.0.1:0 127.0.0.1:2
"
        ),
    );
    router.signal("HUP");
    metrics_until(admin, "the duplicate counted", |m| reloads(m) == (2, 0));
    dir.write("router.conf", &good);
    router.signal("HUP");
    metrics_until(admin, "the good one counted", |m| reloads(m) == (3, 1));
}

// ---------------------------------------------------------------------------------------------
// Live connections and routes
// ---------------------------------------------------------------------------------------------

/// `/connections` lists live connections oldest first with the id of their `closed #N` line,
/// listener, route, client, upstream and each direction's state and bytes (a half-closed one
/// shows `eof` one way, `open` the other); `?limit=1` lists one of two. `/routes` shows an
/// upstream that refused in cool-down with its last error.
#[test]
fn connections_and_routes_show_the_live_state() {
    let (up, release) = lingering_echo_upstream();
    let dead = dead_addr();
    let (mut router, admin) = start_with_admin(&[
        "127.0.0.1:0",
        &s(up.addr),
        "--host",
        &format!("dead.example={}", dead.addr),
    ]);
    let mut first = connect(router.addr);
    round_trip(&mut first, b"first client\n");
    let mut second = connect(router.addr);
    round_trip(&mut second, b"second, a longer line\n");

    let expected = [(&first, 13), (&second, 22)];
    let listing = json_until(
        admin,
        "/connections",
        "both connections counted both ways",
        |v| {
            let listed = v["connections"].as_array().unwrap();
            v["total"] == 2
                && listed.len() == 2
                && listed.iter().zip(expected).all(|(c, (_, bytes))| {
                    c["client_to_upstream"]["bytes"] == bytes
                        && c["upstream_to_client"]["bytes"] == bytes
                })
        },
    );
    let listed = listing["connections"].as_array().unwrap();
    for (entry, (client, bytes)) in listed.iter().zip(expected) {
        assert_eq!(
            entry["client"],
            s(client.local_addr().unwrap()),
            "{entry:#}"
        );
        assert_eq!(entry["listener"], "127.0.0.1:0");
        assert_eq!(entry["listener_address"], s(router.addr));
        assert_eq!(entry["route"], "default");
        assert_eq!(entry["upstream"]["name"], s(up.addr));
        assert_eq!(entry["upstream"]["address"], s(up.addr));
        for direction in ["client_to_upstream", "upstream_to_client"] {
            assert_eq!(entry[direction]["state"], "open", "{entry:#}");
            assert_eq!(entry[direction]["bytes"], bytes, "{entry:#}");
        }
        assert!(entry["age_seconds"].as_f64().unwrap() >= 0.0);
        assert!(entry["idle_seconds"].as_f64().unwrap() >= 0.0);
    }
    let first_id = listed[0]["id"].as_u64().unwrap();
    assert!(first_id < listed[1]["id"].as_u64().unwrap(), "oldest first");
    let limited = get_json(admin, "/connections?limit=1");
    assert_eq!(limited["total"], 2);
    assert_eq!(limited["connections"].as_array().unwrap().len(), 1);
    assert_eq!(limited["connections"][0]["id"], first_id);

    first.shutdown(Shutdown::Write).unwrap();
    json_until(
        admin,
        "/connections",
        "the first client's direction ended",
        |v| {
            let c = &v["connections"][0];
            c["id"] == first_id
                && c["client_to_upstream"]["state"] == "eof"
                && c["upstream_to_client"]["state"] == "open"
        },
    );
    release.send(()).unwrap();
    assert!(read_to_end(&mut first).is_empty());
    let line = router.wait_for_line(&format!("closed #{first_id} "));
    assert!(
        line.contains(&format!("client={} ", first.local_addr().unwrap())),
        "{line}"
    );
    assert!(line.contains(" sent=13 received=13 "), "{line}");
    json_until(admin, "/connections", "one connection left", |v| {
        v["total"] == 1
    });

    assert!(one_shot(router.addr, b"GET / HTTP/1.1\r\nHost: dead.example\r\n\r\n").is_empty());
    router.wait_for_line("no-upstream");
    let routes = get_json(admin, "/routes");
    let listener = &routes["listeners"][0];
    assert_eq!(listener["address"], s(router.addr));
    assert_eq!(listener["listen"], "127.0.0.1:0");
    assert_eq!(listener["accepted"], 3);
    let route = |label: &str| {
        listener["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == label)
            .unwrap_or_else(|| panic!("no route {label} in {routes:#}"))
            .clone()
    };
    let failing = route("host=dead.example");
    assert_eq!(failing["ended"]["no_upstream"], 1);
    let upstream = &failing["upstreams"][0];
    assert_eq!(upstream["upstream"], s(dead.addr));
    assert_eq!(upstream["attempts"], 1);
    assert_eq!(upstream["state"], "cooling", "{upstream:#}");
    let cooling = upstream["down_for_seconds"].as_f64().expect("cooling");
    assert!(cooling > 0.0 && cooling <= 5.0, "{cooling}");
    let error = upstream["last_error"].as_str().expect("a last error");
    assert!(
        error.contains(&s(dead.addr)) && error.contains("refused"),
        "{error}"
    );
    let at = upstream["last_error_at"].as_str().expect("when");
    assert!(at.contains('T') && at.ends_with('Z'), "{at}");

    let default = route("default");
    assert_eq!(default["active"], 1);
    assert_eq!(default["ended"]["forwarded"], 1);
    assert_eq!(default["bytes"]["client_to_upstream"], 13 + 22);
    let healthy = &default["upstreams"][0];
    assert_eq!(healthy["state"], "up", "connected: {healthy:#}");
    assert_eq!(healthy["down_for_seconds"], Value::Null);
    assert_eq!(healthy["last_error"], Value::Null);
    assert_eq!(healthy["attempts"], 2);
    let m = metrics(admin);
    let cooling = |route| m.count("tcp_router_upstream_cooling_down", &[("route", route)]);
    assert_eq!((cooling("host=dead.example"), cooling("default")), (1, 0));
}

// ---------------------------------------------------------------------------------------------
// The status page in a real browser
// ---------------------------------------------------------------------------------------------

/// Headless chromium with `--dump-dom`, run for `url` with a fresh profile; returns the DOM
/// after the page's scripts ran.
fn chromium_dom(url: &str) -> String {
    let profile = temp_dir("chromium");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let out = run_tool(
        Command::new("chromium").args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &profile_arg,
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ]),
        b"",
    );
    assert!(
        out.status.success(),
        "chromium: {}\n{}",
        out.status,
        out.stderr
    );
    out.stdout
}

/// How long `upstream` is still cooling down after a failure, from `GET /routes`; `None` if it
/// is not.
fn cooling_for(admin: SocketAddr, upstream: SocketAddr) -> Option<Duration> {
    let routes = get_json(admin, "/routes");
    routes["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|listener| listener["routes"].as_array().unwrap())
        .flat_map(|route| route["upstreams"].as_array().unwrap())
        .filter(|u| u["upstream"] == s(upstream))
        .find_map(|u| u["down_for_seconds"].as_f64())
        .map(Duration::from_secs_f64)
}

/// The row of the status page's member table for `upstream` (written as an address), if any.
fn member_row(dom: &str, upstream: SocketAddr) -> Option<&str> {
    let code = format!("<code>{upstream}</code>");
    dom.split(r#"<tr class="member">"#)
        .skip(1)
        .map(|row| row.split("</tr>").next().unwrap())
        .find(|row| row.contains(&code))
}

/// The status page as chromium renders it while `dead` (the first upstream of the route that
/// `request` reaches) is cooling down after the refusal a client has just met. A browser
/// starting on a loaded machine can outlast the cool-down, and then the page rightly shows the
/// upstream as unknown again. Only then is the refusal renewed (short clients: the round-robin cursor starts
/// every other one at `dead`) and the page fetched again, once the short clients have left the
/// listing.
fn page_while_cooling(
    admin: SocketAddr,
    router: SocketAddr,
    dead: SocketAddr,
    request: &[u8],
) -> String {
    for _ in 0..3 {
        let asked = Instant::now();
        let left = cooling_for(admin, dead).unwrap_or_else(|| panic!("{dead} is not cooling down"));
        let dom = chromium_dom(&format!("http://{admin}/"));
        if member_row(&dom, dead).is_some_and(|row| row.contains(r#"class="pill bad""#)) {
            return dom;
        }
        assert!(
            asked.elapsed() >= left,
            "{dead} not shown cooling within its cool-down ({left:?} left when chromium started):\n{dom}"
        );
        for tried in 0.. {
            if cooling_for(admin, dead).is_some() {
                break;
            }
            assert!(tried < 4, "{dead} was not tried by {tried} new clients");
            let mut short = connect(router);
            round_trip(&mut short, request);
        }
        json_until(admin, "/connections", "the short clients left", |v| {
            v["total"] == 2
        });
    }
    panic!("chromium outlasted the cool-down three times");
}

/// The status page in headless chromium, while a connection on each route is live and bytes
/// flow, renders both route labels and policies, the members (two up with a connection open
/// each, one cooling after a refusal with why in its title, its route failing over), the state,
/// and each live connection's client and route.
#[test]
fn the_status_page_renders_routes_and_live_connections_in_a_browser() {
    let test = "admin::the_status_page_renders_routes_and_live_connections_in_a_browser";
    if skip_without(test, &["chromium"]) {
        return;
    }
    let default_up = echo_upstream();
    let named_up = echo_upstream();
    let dead = dead_addr();
    let (router, admin) = start_with_admin(&[
        "127.0.0.1:0",
        &s(default_up.addr),
        "--host",
        &format!("a.example={},{}", dead.addr, named_up.addr),
    ]);
    let request = b"GET /live HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let mut named = connect(router.addr);
    round_trip(&mut named, request);
    let busy = connect(router.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let mut busy = busy.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = random_bytes(7, 4096);
            while !stop.load(Ordering::SeqCst) {
                round_trip(&mut busy, &chunk);
                // Pacing, so the traffic does not starve the browser of the two cores.
                thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let dom = page_while_cooling(admin, router.addr, dead.addr, request);
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    busy.shutdown(Shutdown::Write).unwrap();

    assert!(
        dom.contains(r#"<span id="state" class="pill">serving</span>"#),
        "{dom}"
    );
    for text in [
        "<code>default</code>",
        "<code>host=a.example</code>",
        "balance=roundrobin · no check, max_fails=1 fail_timeout=5s · on_down=keep",
        r#"<span class="muted" id="conn-count">(2)</span>"#,
    ] {
        assert!(dom.contains(text), "no {text:?} in the page:\n{dom}");
    }
    for up in [default_up.addr, named_up.addr] {
        let row = member_row(&dom, up).unwrap_or_else(|| panic!("no member {up}:\n{dom}"));
        for text in ["<td>primary</td>", r#"class="pill""#, ">up</span>"] {
            assert!(row.contains(text), "no {text:?} in {up}'s row: {row}");
        }
        assert!(
            row.ends_with(r#"<td class="num">1</td>"#),
            "one active: {row}"
        );
    }
    let row = member_row(&dom, dead.addr).unwrap();
    for text in [
        r#"class="pill bad""#,
        ">cooling</span>",
        "skipped for ",
        "refused",
    ] {
        assert!(
            row.contains(text),
            "no {text:?} in {}'s row: {row}",
            dead.addr
        );
    }
    let rows: Vec<&str> = dom
        .split(r#"<tr class="connection">"#)
        .skip(1)
        .map(|row| row.split("</tr>").next().unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{dom}");
    for (client, route, upstream) in [
        (&named, "host=a.example", named_up.addr),
        (&busy, "default", default_up.addr),
    ] {
        let client = format!("<code>{}</code>", client.local_addr().unwrap());
        let row = rows
            .iter()
            .find(|row| row.contains(&client))
            .unwrap_or_else(|| panic!("no row for {client}:\n{dom}"));
        assert!(row.contains(&format!("<code>{route}</code>")), "{row}");
        assert!(row.contains(&format!("<code>{upstream}</code>")), "{row}");
        assert!(row.contains("open / open"), "{row}");
    }
}

/// The status page in headless chromium shows a listener's protocol routes by their labels
/// (`proto=ssh`, `regex=...`, `proto=silent`), and under each live connection's route what its
/// first bytes matched; `/connections` says the same as `matched`.
#[test]
fn the_status_page_shows_protocol_routes_and_what_each_connection_matched() {
    let test = "admin::the_status_page_shows_protocol_routes_and_what_each_connection_matched";
    if skip_without(test, &["chromium"]) {
        return;
    }
    let (ssh_up, socks_up, silent_up) = (echo_upstream(), echo_upstream(), echo_upstream());
    let dir = temp_dir("admin-protocols");
    let file = dir.write(
        "router.conf",
        &format!(
            "route 127.0.0.1:0 {} proto=ssh\n\
             route 127.0.0.1:0 {} regex=^\\x05[\\x01-\\x09] min_bytes=2\n\
             route 127.0.0.1:0 {} proto=silent wait=100ms\n",
            s(ssh_up.addr),
            s(socks_up.addr),
            s(silent_up.addr)
        ),
    );
    let (router, admin) = start_with_admin(&["-c", &file]);
    let mut ssh = connect(router.addr);
    round_trip(&mut ssh, b"SSH-2.0-OpenSSH_9.2\r\n");
    let mut socks = connect(router.addr);
    round_trip(&mut socks, b"\x05\x01\x00");
    let mut silent = connect(router.addr);
    wait_until("the silent client takes its route", || {
        get(admin, "/connections").json()["connections"]
            .as_array()
            .is_some_and(|all| all.iter().any(|c| c["matched"] == "proto=silent"))
    });
    round_trip(&mut silent, b"after the wait\n");

    let dom = chromium_dom(&format!("http://{admin}/"));
    for text in [
        "<code>proto=ssh</code>",
        r"<code>regex=^\x05[\x01-\x09],min_bytes=2</code>",
        "<code>proto=silent</code>",
    ] {
        assert!(dom.contains(text), "no {text:?} in the page:\n{dom}");
    }
    for (client, matched) in [
        (&ssh, "proto=ssh"),
        (&socks, "proto=regex"),
        (&silent, "proto=silent"),
    ] {
        let client = format!("<code>{}</code>", client.local_addr().unwrap());
        let row = dom
            .split(r#"<tr class="connection">"#)
            .find(|row| row.contains(&client))
            .unwrap_or_else(|| panic!("no row for {client}:\n{dom}"));
        let shown = format!(r#"<div class="muted matched">{matched}</div>"#);
        assert!(row.contains(&shown), "no {shown} in {row}");
    }
}
