//! Name routing (SNI, Host, ALPN) and PROXY protocol end to end, with real TLS peers where installed.
//!
//! openssl, curl and haproxy are used when they are on PATH; a test that needs a missing one
//! records `SKIPPED: <test>: <tool> not installed` (stderr and target/skipped-tests.txt, see
//! `util::skip`) and passes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tcp_router::proto::proxy::Version;
use tcp_router::proto::tls::parse_client_hello;
use tcp_router::proto::Parsed;
use tcp_router::Forwarder;

use crate::util::*;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `openssl s_client -brief` through `addr` asking for `name`; returns what it printed.
pub(crate) fn s_client(addr: SocketAddr, extra: &[&str]) -> ToolOutput {
    run_tool(
        Command::new("openssl")
            .args(["s_client", "-brief", "-connect", &addr.to_string()])
            .args(extra),
        b"",
    )
}

/// A real ClientHello from `openssl s_client -servername split.example.com`, captured once, as the
/// whole TLS records that carry it.
pub(crate) fn captured_hello() -> &'static [u8] {
    static HELLO: OnceLock<Vec<u8>> = OnceLock::new();
    HELLO.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = Kid(Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "split.example.com"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_client"));
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !matches!(parse_client_hello(&buf), Ok(Parsed::Complete(_))) {
                let n = stream.read(&mut chunk).expect("read the ClientHello");
                assert!(n > 0, "s_client closed before its ClientHello was complete");
                buf.extend_from_slice(&chunk[..n]);
            }
            let _ = tx.send(buf);
        });
        let buf = rx.recv_timeout(PATIENCE).expect("capture a ClientHello");
        let Ok(Parsed::Complete(hello)) = parse_client_hello(&buf) else {
            unreachable!()
        };
        assert_eq!(hello.server_name.as_deref(), Some("split.example.com"));
        // Keep exactly the records that carry the handshake message.
        let records = records(&buf);
        let message_len = 4 + u24(&records[0].1[1..4]);
        let (mut used, mut carried) = (0, 0);
        for (_, fragment) in &records {
            used += 5 + fragment.len();
            carried += fragment.len();
            if carried >= message_len {
                break;
            }
        }
        assert_eq!(carried, message_len, "ClientHello does not end a record");
        buf[..used].to_vec()
    })
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// Splits TLS records: (version, fragment) of each whole record in `buf`.
fn records(buf: &[u8]) -> Vec<([u8; 2], &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest.len() < 5 + len {
            break;
        }
        out.push(([rest[1], rest[2]], &rest[5..5 + len]));
        rest = &rest[5 + len..];
    }
    out
}

/// The same handshake message re-framed into `parts` handshake records of near-equal size.
fn reframe(hello: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let records = records(hello);
    let version = records[0].0;
    let message: Vec<u8> = records
        .iter()
        .flat_map(|(_, f)| f.iter().copied())
        .collect();
    let out: Vec<Vec<u8>> = message
        .chunks(message.len().div_ceil(parts))
        .map(|piece| {
            let mut record = vec![0x16, version[0], version[1]];
            record.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            record.extend_from_slice(piece);
            record
        })
        .collect();
    assert_eq!(out.len(), parts);
    out
}

/// An upstream that reads each connection to its end and reports every byte it got.
pub(crate) fn recording_upstream() -> (Upstream, mpsc::Receiver<Vec<u8>>) {
    reporting_upstream(|mut stream| {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        got
    })
}

/// Echoes each connection and, at its end, reports every byte it got.
pub(crate) fn echo_recording_upstream() -> (Upstream, mpsc::Receiver<Vec<u8>>) {
    reporting_upstream(|mut stream| {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        got
    })
}

/// A tiny HTTP server: reads the request head, reports it, answers `HTTP/1.0 200 OK` with `body`.
fn http_upstream(body: &'static str) -> (Upstream, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let up = upstream(move |mut stream| {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let Some(head) = read_http_head(&mut stream) else {
            return;
        };
        let _ = tx.lock().unwrap().send(head);
        let _ = stream.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{body}").as_bytes());
    });
    (up, rx)
}

/// A client with TCP_NODELAY that writes each of `chunks` separately, then reads to the end.
pub(crate) fn send_chunks(addr: SocketAddr, chunks: &[&[u8]], close: bool) -> Vec<u8> {
    let mut client = connect(addr);
    client.set_nodelay(true).unwrap();
    for chunk in chunks {
        client.write_all(chunk).unwrap();
    }
    if close {
        client.shutdown(Shutdown::Write).unwrap();
    }
    read_until_closed(&mut client)
}

/// Asserts how many connections `up` has accepted so far.
fn assert_accepted(up: &Upstream, accepted: usize, what: &str) {
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        accepted,
        "{what}: unexpected number of connections"
    );
}

// ---------------------------------------------------------------------------------------------
// SNI routing with real TLS peers
// ---------------------------------------------------------------------------------------------

/// Two TLS names on one listener reach two different `openssl s_server` backends (an exact name
/// and a wildcard), the handshake completes end to end (s_client sees each backend's own
/// certificate; curl gets each backend's status page), and the log line names the SNI and route.
#[test]
fn two_tls_names_reach_two_backends() {
    let test = "routing::two_tls_names_reach_two_backends";
    if skip_without(test, &["openssl"]) {
        return;
    }
    let dir = temp_dir("two-names");
    let (key_a, cert_a) = self_signed(&dir, "a", "a.example.com");
    let (key_b, cert_b) = self_signed(&dir, "b", "*.b.example.com");
    let a = TlsServer::start(&key_a, &cert_a, &["-www"]);
    let b = TlsServer::start(&key_b, &cert_b, &["-www"]);
    let mut router = Process::start(&[
        "127.0.0.1:0",
        "--sni",
        &format!("a.example.com={}", a.addr),
        "--sni",
        &format!("*.b.example.com={}", b.addr),
    ]);

    let out = s_client(router.addr, &["-servername", "a.example.com"]);
    assert!(
        out.status.success(),
        "s_client a.example.com:\n{}",
        out.both()
    );
    assert!(
        out.both().contains("CONNECTION ESTABLISHED"),
        "{}",
        out.both()
    );
    assert!(
        out.both().contains("Peer certificate: CN = a.example.com"),
        "{}",
        out.both()
    );
    let line = router.wait_for_line("sni=a.example.com");
    assert!(line.contains(&format!("upstream={}", a.addr)), "{line}");
    assert!(line.contains("match=exact name"), "{line}");
    assert!(line.contains("route=sni=a.example.com "), "{line}");

    let out = s_client(router.addr, &["-servername", "x.b.example.com"]);
    assert!(
        out.status.success(),
        "s_client x.b.example.com:\n{}",
        out.both()
    );
    assert!(
        out.both()
            .contains("Peer certificate: CN = *.b.example.com"),
        "{}",
        out.both()
    );
    let line = router.wait_for_line("sni=x.b.example.com");
    assert!(line.contains(&format!("upstream={}", b.addr)), "{line}");
    assert!(line.contains("match=wildcard"), "{line}");
    assert!(line.contains("route=sni=*.b.example.com "), "{line}");

    if skip_without(&format!("{test} (curl part)"), &["curl"]) {
        return;
    }
    let port = router.addr.port();
    for (name, cert) in [
        ("a.example.com", "a-cert.pem"),
        ("x.b.example.com", "b-cert.pem"),
    ] {
        let out = run_tool(
            Command::new("curl")
                .args(["-sSk", "--max-time", "20", "--resolve"])
                .arg(format!("{name}:{port}:127.0.0.1"))
                .arg(format!("https://{name}:{port}/")),
            b"",
        );
        assert!(out.status.success(), "curl {name}:\n{}", out.both());
        // s_server -www shows its own command line, which names its certificate file.
        assert!(out.stdout.contains("s_server"), "{name}: {}", out.stdout);
        assert!(out.stdout.contains(cert), "{name}: {}", out.stdout);
        let line = router.wait_for_line(&format!("sni={name}"));
        assert!(line.contains("sent="), "{line}");
    }
}

/// The default route catches a TLS ClientHello without SNI (`s_client -noservername`) and a
/// plain client that is not TLS, which gets its bytes echoed by the default upstream.
#[test]
fn default_route_catches_no_sni_and_plain_clients() {
    let (default, default_rx) = echo_recording_upstream();
    let (named, _named_rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(default.addr),
        "--sni",
        &format!("a.example.com={}", named.addr),
    ]);

    let mut client = connect(router.addr);
    client.write_all(b"hello\n").unwrap();
    assert_eq!(read_exact(&mut client, 6), b"hello\n");
    send_and_close(&mut client, b"bye\n");
    assert_eq!(read_to_end(&mut client), b"bye\n");
    assert_eq!(default_rx.recv_timeout(PATIENCE).unwrap(), b"hello\nbye\n");
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("first-bytes=not-tls-or-http"), "{line}");
    assert!(line.contains("route=default"), "{line}");

    if skip_without(
        "routing::default_route_catches_no_sni_and_plain_clients (TLS part)",
        &["openssl"],
    ) {
        assert_accepted(&named, 0, "named backend");
        return;
    }
    // The echo sends s_client its own hello back, so the handshake fails; what matters is
    // which upstream got the hello.
    let _ = s_client(router.addr, &["-noservername"]);
    let got = default_rx.recv_timeout(PATIENCE).unwrap();
    match parse_client_hello(&got) {
        Ok(Parsed::Complete(hello)) => assert_eq!(hello.server_name, None),
        other => panic!("the default upstream got no ClientHello: {other:?}"),
    }
    let line = router.wait_for_line("closed #2 ");
    assert!(line.contains("sni=(none)"), "{line}");
    assert!(line.contains("route=default"), "{line}");
    assert_accepted(&named, 0, "named backend");
}

/// Without a matching route or a default, a TLS client gets exactly a fatal
/// `unrecognized_name` alert record and is closed; the log says `result=no-route` and the name.
/// openssl reports the alert by number (112).
#[test]
fn no_route_sends_unrecognized_name_alert() {
    if skip_without(
        "routing::no_route_sends_unrecognized_name_alert",
        &["openssl"],
    ) {
        return;
    }
    let hello = captured_hello();
    let (named, _rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        "--sni",
        &format!("a.example.com={}", named.addr),
    ]);
    let mut client = connect(router.addr);
    client.write_all(hello).unwrap();
    assert_eq!(
        read_until_closed(&mut client),
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]
    );
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("sni=split.example.com"), "{line}");
    assert!(line.contains("upstream=none"), "{line}");
    assert!(line.contains("result=no-route"), "{line}");

    let out = s_client(router.addr, &["-servername", "nope.example.org"]);
    assert!(!out.status.success(), "{}", out.both());
    assert!(out.both().contains("unrecognized name"), "{}", out.both());
    assert!(out.both().contains("alert number 112"), "{}", out.both());
    let line = router.wait_for_line("closed #2 ");
    assert!(line.contains("sni=nope.example.org"), "{line}");
    assert!(line.contains("result=no-route"), "{line}");
    assert_accepted(&named, 0, "named backend");
}

/// Without a matching route or a default, an HTTP client gets `421 Misdirected Request` and is
/// closed, not an empty reply; the log says `result=no-route` and the Host.
#[test]
fn no_route_answers_an_http_client_421() {
    let (named, _rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        "--host",
        &format!("a.example.com={}", named.addr),
    ]);
    let mut client = connect(router.addr);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: nope.example.org\r\n\r\n")
        .unwrap();
    let reply = read_until_closed(&mut client);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("host=nope.example.org"), "{line}");
    assert!(line.contains("result=no-route"), "{line}");
    assert_accepted(&named, 0, "named backend");
}

/// A real ClientHello sent one byte per write (TCP_NODELAY), and the same hello re-framed into
/// three TLS records, are both routed by their SNI; the chosen backend receives exactly the
/// bytes the client sent, record framing included, and the other backend gets nothing.
#[test]
fn fragmented_client_hello_is_routed_and_replayed_exactly() {
    if skip_without(
        "routing::fragmented_client_hello_is_routed_and_replayed_exactly",
        &["openssl"],
    ) {
        return;
    }
    let hello = captured_hello();
    let (split, split_rx) = recording_upstream();
    let (other, _other_rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(other.addr),
        "--sni",
        &format!("split.example.com={}", split.addr),
        "--sni",
        &format!("*.example.com={}", other.addr),
    ]);

    let bytes: Vec<&[u8]> = hello.chunks(1).collect();
    assert_eq!(send_chunks(router.addr, &bytes, true), b"");
    assert_eq!(split_rx.recv_timeout(PATIENCE).unwrap(), hello);
    let line = router.wait_for_line("closed #1 ");
    assert!(
        line.contains("sni=split.example.com match=exact name"),
        "{line}"
    );

    let records = reframe(hello, 3);
    let three = records.concat();
    assert!(matches!(
        parse_client_hello(&three),
        Ok(Parsed::Complete(h)) if h.server_name.as_deref() == Some("split.example.com")
    ));
    let chunks: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    assert_eq!(send_chunks(router.addr, &chunks, true), b"");
    assert_eq!(split_rx.recv_timeout(PATIENCE).unwrap(), three);
    let line = router.wait_for_line("closed #2 ");
    assert!(
        line.contains("sni=split.example.com match=exact name"),
        "{line}"
    );
    assert_accepted(&other, 0, "other backend");
    assert_accepted(&split, 2, "split backend");
}

// ---------------------------------------------------------------------------------------------
// Host routing
// ---------------------------------------------------------------------------------------------

/// Plain HTTP requests are routed by Host: an exact name with a port, a wildcard in upper-case
/// header spelling, a request split across several writes, a request without Host (default),
/// and curl with `-H Host:`; each backend gets the request head unchanged.
#[test]
fn http_requests_are_routed_by_host() {
    let (a, a_rx) = http_upstream("A");
    let (b, b_rx) = http_upstream("B");
    let (d, d_rx) = http_upstream("D");
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(d.addr),
        "--host",
        &format!("a.example.com={}", a.addr),
        "--host",
        &format!("*.b.example.com={}", b.addr),
    ]);
    let ok = |body: &str| format!("HTTP/1.0 200 OK\r\n\r\n{body}").into_bytes();

    let request = b"GET / HTTP/1.1\r\nHost: a.example.com:8080\r\n\r\n";
    assert_eq!(send_chunks(router.addr, &[request], false), ok("A"));
    assert_eq!(a_rx.recv_timeout(PATIENCE).unwrap(), request);
    let line = router.wait_for_line("closed #1 ");
    assert!(
        line.contains("host=a.example.com match=exact name"),
        "{line}"
    );
    assert!(line.contains("route=host=a.example.com "), "{line}");

    let request = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHOST: x.b.example.com\r\n\r\n";
    assert_eq!(send_chunks(router.addr, &[request], false), ok("B"));
    assert_eq!(b_rx.recv_timeout(PATIENCE).unwrap(), request);
    let line = router.wait_for_line("closed #2 ");
    assert!(
        line.contains("host=x.b.example.com match=wildcard"),
        "{line}"
    );

    let parts: [&[u8]; 4] = [
        b"GET /split HTTP/1.1\r\nAccept: */*\r\nHo",
        b"st: a.exa",
        b"mple.com\r\n",
        b"\r\n",
    ];
    assert_eq!(send_chunks(router.addr, &parts, false), ok("A"));
    assert_eq!(a_rx.recv_timeout(PATIENCE).unwrap(), parts.concat());

    let request = b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n";
    assert_eq!(send_chunks(router.addr, &[request], false), ok("D"));
    assert_eq!(d_rx.recv_timeout(PATIENCE).unwrap(), request);
    let line = router.wait_for_line("closed #4 ");
    assert!(line.contains("host=(none)"), "{line}");
    assert!(line.contains("route=default"), "{line}");

    if skip_without(
        "routing::http_requests_are_routed_by_host (curl part)",
        &["curl"],
    ) {
        return;
    }
    let out = run_tool(
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "-H", "Host: a.example.com"])
            .arg(format!("http://{}/curl", router.addr)),
        b"",
    );
    assert!(out.status.success(), "curl:\n{}", out.both());
    assert_eq!(out.stdout, "A");
    let head = String::from_utf8(a_rx.recv_timeout(PATIENCE).unwrap()).unwrap();
    assert!(head.starts_with("GET /curl HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Host: a.example.com\r\n"), "{head}");
    assert_accepted(&b, 1, "b backend");
    assert_accepted(&d, 1, "default backend");
}

/// On a listener with name routes, a client that sends nothing is closed after
/// `--peek-timeout 200ms` (not sooner, and well before the 5s default), logged as `peek-timeout`,
/// and no upstream, not even the default, is connected.
#[test]
fn silent_client_is_closed_after_the_peek_timeout() {
    let (named, _rx) = recording_upstream();
    let (default, _drx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(default.addr),
        "--peek-timeout",
        "200ms",
        "--sni",
        &format!("a.example.com={}", named.addr),
    ]);
    // Timed from before the connect: the router's peek deadline cannot start earlier.
    let start = Instant::now();
    let mut client = connect(router.addr);
    assert_eq!(read_until_closed(&mut client), b"");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("result=peek-timeout"), "{line}");
    assert!(line.contains("upstream=none"), "{line}");
    assert_accepted(&named, 0, "named backend");
    assert_accepted(&default, 0, "default backend");
}

/// A TLS record header that announces more than the client sends is waited for, not trusted:
/// the hello inside it is not routed by its name. At the client's end of stream (and, for a
/// client that stays silent after it, at the peek deadline) the connection goes to the default
/// route with every byte it sent, unchanged; the named backend sees nothing.
#[test]
fn an_incomplete_record_goes_to_the_default_route_with_its_bytes() {
    // A whole ClientHello for a.example.com, in a record that claims 40 bytes more.
    let mut hello = client_hello("a.example.com");
    let claimed = u16::from_be_bytes([hello[3], hello[4]]) + 40;
    hello[3..5].copy_from_slice(&claimed.to_be_bytes());
    for (half_close, peek) in [(true, "5s"), (false, "300ms")] {
        let (named, _rx) = recording_upstream();
        let (default, drx) = recording_upstream();
        let mut router = Process::start(&[
            "127.0.0.1:0",
            &s(default.addr),
            "--peek-timeout",
            peek,
            "--sni",
            &format!("a.example.com={}", named.addr),
        ]);
        let mut client = connect(router.addr);
        client.write_all(&hello).unwrap();
        if half_close {
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        if !half_close {
            // Silent after its incomplete record: routed once the peek deadline passes; then
            // the client ends, so the backend's recording ends too.
            wait_until("the default backend to be connected", || {
                default.accepted.load(std::sync::atomic::Ordering::SeqCst) == 1
            });
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let why = if half_close {
            "incomplete-at-end-of-stream"
        } else {
            "incomplete-at-peek-timeout"
        };
        let line = router.wait_for_line("closed #1 ");
        let got = drx
            .recv_timeout(PATIENCE)
            .expect("the default backend is used");
        assert_eq!(got, hello, "every byte, unchanged");
        assert!(line.contains(&format!("first-bytes={why}")), "{line}");
        assert_accepted(&named, 0, "named backend");
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------------------------

/// The v2 header tcp-router must send, built here by hand from the spec.
pub(crate) fn v2_header(client: SocketAddr, router: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    match (client, router) {
        (SocketAddr::V4(c), SocketAddr::V4(r)) => {
            h.extend_from_slice(&[0x11, 0x00, 12]);
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&r.ip().octets());
        }
        (SocketAddr::V6(c), SocketAddr::V6(r)) => {
            h.extend_from_slice(&[0x21, 0x00, 36]);
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&r.ip().octets());
        }
        _ => unreachable!("one family per test"),
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&router.port().to_be_bytes());
    h
}

/// Sends `data` through a router (in this process) on `listen` that sends a PROXY header of
/// `version`; returns what the upstream received, the client's address and the router's.
fn through_proxy_protocol(
    listen: &str,
    version: Version,
    data: &[u8],
) -> (Vec<u8>, SocketAddr, SocketAddr) {
    let (up, rx) = recording_upstream();
    let router = start_router(proxy_protocol_config(listen, up.addr, version));
    let mut client = connect(router.addr);
    let client_addr = client.local_addr().unwrap();
    send_and_close(&mut client, data);
    assert_eq!(read_to_end(&mut client), b"");
    (rx.recv_timeout(PATIENCE).unwrap(), client_addr, router.addr)
}

/// A one-listener config on `listen` to `upstream`, sending a PROXY header of `version`.
fn proxy_protocol_config(
    listen: &str,
    upstream: SocketAddr,
    version: Version,
) -> tcp_router::Config {
    Forwarder::builder(listen)
        .upstream(upstream)
        .proxy_protocol(version)
        .into_config()
        .expect("a valid config")
}

/// PROXY protocol v1 and v2 out of an IPv4 listener: the upstream receives exactly
/// `PROXY TCP4 127.0.0.1 127.0.0.1 CLIENTPORT ROUTERPORT\r\n`, or the 28-byte v2 header, then
/// the client's bytes.
#[test]
fn proxy_protocol_out_ipv4() {
    let (got, client, router) = through_proxy_protocol("127.0.0.1:0", Version::V1, b"hello v1");
    let want = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\nhello v1",
        client.port(),
        router.port()
    );
    assert_eq!(String::from_utf8_lossy(&got), want);

    let (got, client, router) = through_proxy_protocol("127.0.0.1:0", Version::V2, b"hello v2");
    let mut want = v2_header(client, router);
    assert_eq!(want.len(), 28);
    want.extend_from_slice(b"hello v2");
    assert_eq!(got, want);
}

/// The same on a `[::1]` listener: `PROXY TCP6 ::1 ::1 ...` and the v2 family byte 0x21 with
/// 36 bytes of addresses. Skipped (visibly) where ::1 cannot be bound.
#[test]
fn proxy_protocol_out_ipv6() {
    if TcpListener::bind("[::1]:0").is_err() {
        skip("routing::proxy_protocol_out_ipv6", "::1 cannot be bound");
        return;
    }
    let (got, client, router) = through_proxy_protocol("[::1]:0", Version::V1, b"hello v1");
    let want = format!(
        "PROXY TCP6 ::1 ::1 {} {}\r\nhello v1",
        client.port(),
        router.port()
    );
    assert_eq!(String::from_utf8_lossy(&got), want);

    let (got, client, router) = through_proxy_protocol("[::1]:0", Version::V2, b"hello v2");
    let mut want = v2_header(client, router);
    assert_eq!(want.len(), 52);
    want.extend_from_slice(b"hello v2");
    assert_eq!(got, want);
}

/// `--accept-proxy`: the address in the client's PROXY header is the client for the log, for
/// allow/deny (`--deny 127.0.0.0/8` denies the real socket address yet the client is served)
/// and for the PROXY header sent onward; the header itself is not passed on as data.
#[test]
fn accept_proxy_uses_the_header_address() {
    let (up, rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(up.addr),
        "--accept-proxy",
        "--proxy-protocol",
        "v1",
        "--deny",
        "127.0.0.0/8",
    ]);
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 80\r\n";
    let got = send_chunks(router.addr, &[&[&header[..], b"data"].concat()], true);
    assert_eq!(got, b"");
    let mut want = header.to_vec();
    want.extend_from_slice(b"data");
    assert_eq!(
        String::from_utf8_lossy(&rx.recv_timeout(PATIENCE).unwrap()),
        String::from_utf8_lossy(&want)
    );
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("client=192.0.2.7:5000 "), "{line}");
    assert!(line.contains(&format!("upstream={}", up.addr)), "{line}");
}

/// A v1 header from the front and an HTTP request in the same segment: the header is consumed,
/// the request is routed by its Host, and the upstream gets a v2 header re-encoded from the
/// front's addresses, then the request unchanged.
#[test]
fn accept_proxy_then_host_routing_then_proxy_v2_out() {
    let (a, a_rx) = recording_upstream();
    let (d, _d_rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(d.addr),
        "--host",
        &format!("a.example.com={}", a.addr),
        "--accept-proxy",
        "--proxy-protocol",
        "v2",
    ]);
    let request = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
    let sent = [&b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 80\r\n"[..], request].concat();
    assert_eq!(send_chunks(router.addr, &[&sent], true), b"");
    let mut want = v2_header(
        "192.0.2.7:5000".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    );
    want.extend_from_slice(request);
    assert_eq!(a_rx.recv_timeout(PATIENCE).unwrap(), want);
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("client=192.0.2.7:5000 "), "{line}");
    assert!(
        line.contains("host=a.example.com match=exact name"),
        "{line}"
    );
    assert_accepted(&d, 0, "default backend");
}

/// With `--accept-proxy`, `--deny 192.0.2.7` refuses a client whose header says 192.0.2.7
/// (logged `refused`), serves one whose header says 192.0.2.8, and a client without a valid
/// header is closed and logged `refused-no-proxy-header`; refused clients never reach upstream.
#[test]
fn accept_proxy_allow_deny_and_missing_header() {
    let (up, rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(up.addr),
        "--accept-proxy",
        "--deny",
        "192.0.2.7",
    ]);
    let denied = b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 80\r\ndata";
    assert_eq!(send_chunks(router.addr, &[denied], false), b"");
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("client=192.0.2.7:5000 "), "{line}");
    assert!(line.contains("result=refused"), "{line}");
    assert!(!line.contains("refused-no-proxy-header"), "{line}");

    let served = b"PROXY TCP4 192.0.2.8 127.0.0.1 5001 80\r\ndata";
    assert_eq!(send_chunks(router.addr, &[served], true), b"");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"data");
    let line = router.wait_for_line("closed #2 ");
    assert!(line.contains("client=192.0.2.8:5001 "), "{line}");
    assert!(line.contains("sent=4 "), "{line}");

    assert_eq!(
        send_chunks(router.addr, &[b"GET / HTTP/1.0\r\n\r\n"], false),
        b""
    );
    let line = router.wait_for_line("closed #3 ");
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    assert!(line.contains("result=refused-no-proxy-header"), "{line}");
    assert_accepted(&up, 1, "upstream");
}

/// Sends `data` from 127.0.0.`last`, half-closes, and reads until the router closes (a write
/// the router refused before reading may fail: it is not the test's point).
fn send_from(last: u8, addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut client = connect_from(last, addr);
    let _ = client.write_all(data);
    let _ = client.shutdown(Shutdown::Write);
    read_until_closed(&mut client)
}

/// `--accept-proxy-from 127.0.0.2`: a client from 127.0.0.3 whose header claims 192.0.2.8 is
/// refused at accept and logged `refused-untrusted-proxy` with its own address, and never
/// reaches the upstream; the trusted sender's client is served as the header names it.
#[test]
fn a_strangers_proxy_header_is_refused() {
    let (up, rx) = recording_upstream();
    let mut router = Process::start(&[
        "127.0.0.1:0",
        &s(up.addr),
        "--accept-proxy-from",
        "127.0.0.2",
    ]);
    let claimed = b"PROXY TCP4 192.0.2.8 127.0.0.1 5000 80\r\ndata";
    assert_eq!(send_from(3, router.addr, claimed), b"");
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("client=127.0.0.3:"), "{line}");
    assert!(line.contains("result=refused-untrusted-proxy"), "{line}");
    assert_accepted(&up, 0, "a stranger's header");

    assert_eq!(send_from(2, router.addr, claimed), b"");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"data");
    let line = router.wait_for_line("closed #2 ");
    assert!(line.contains("client=192.0.2.8:5000 "), "{line}");
    assert!(
        !router.seen.iter().any(|l| l.contains("from any sender")),
        "warned though a trusted list is given"
    );
}

/// The config file's `accept_proxy_from=127.0.0.2` with a global `allow 192.0.2.8`: allow/deny
/// sees the address a trusted balancer's header names (its client 192.0.2.8 is served, 192.0.2.9
/// refused, though the balancer's own address is not allowed), while a stranger claiming the
/// allowed 192.0.2.8 is refused; the header's TCP6 `::ffff:192.0.2.8` is logged as IPv4.
#[test]
fn allow_deny_sees_the_header_address_only_from_a_trusted_balancer() {
    let (up, rx) = recording_upstream();
    let dir = temp_dir("accept-proxy-from");
    let file = dir.write(
        "router.conf",
        &format!(
            "allow 192.0.2.8\nroute 127.0.0.1:0 {} accept_proxy_from=127.0.0.2\n",
            up.addr
        ),
    );
    let mut router = Process::start(&["-c", &file]);
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 5000 80\r\ndata");
    assert_eq!(
        send_from(2, router.addr, header("192.0.2.8").as_bytes()),
        b""
    );
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"data");
    assert!(router
        .wait_for_line("closed #1 ")
        .contains("client=192.0.2.8:5000 "));

    assert_eq!(
        send_from(2, router.addr, header("192.0.2.9").as_bytes()),
        b""
    );
    let line = router.wait_for_line("closed #2 ");
    assert!(line.contains("client=192.0.2.9:5000 "), "{line}");
    assert!(line.contains("result=refused ("), "{line}");

    assert_eq!(
        send_from(4, router.addr, header("192.0.2.8").as_bytes()),
        b""
    );
    let line = router.wait_for_line("closed #3 ");
    assert!(line.contains("client=127.0.0.4:"), "{line}");
    assert!(line.contains("result=refused-untrusted-proxy"), "{line}");
    assert_accepted(&up, 1, "only the allowed client of the balancer");

    let mapped = b"PROXY TCP6 ::ffff:192.0.2.8 ::ffff:127.0.0.1 5001 80\r\ndata";
    assert_eq!(send_from(2, router.addr, mapped), b"");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"data");
    let line = router.wait_for_line("closed #4 ");
    assert!(line.contains("client=192.0.2.8:5001 "), "{line}");
}

/// On a dual-stack listener (`[::]`), where the system shows IPv4 clients as ::ffff:a.b.c.d,
/// `--accept-proxy-from 127.0.0.2` still trusts 127.0.0.2, and a stranger refused at accept is
/// logged in IPv4 form.
#[test]
fn trusted_senders_match_and_strangers_log_as_ipv4_on_a_dual_stack_listener() {
    let (up, rx) = recording_upstream();
    let mut router = Process::start(&["[::]:0", &s(up.addr), "--accept-proxy-from", "127.0.0.2"]);
    let port = router.addr.port();
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let header = b"PROXY TCP4 192.0.2.8 127.0.0.1 5000 80\r\ndata";
    assert_eq!(send_from(3, to, header), b"");
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("client=127.0.0.3:"), "{line}");
    assert!(line.contains("result=refused-untrusted-proxy"), "{line}");
    assert_eq!(send_from(2, to, header), b"");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"data");
    assert!(router
        .wait_for_line("closed #2 ")
        .contains("client=192.0.2.8:5000 "));
}

/// A bare `--accept-proxy` (no trusted list) still serves, and warns at start that any sender
/// can choose the client address.
#[test]
fn a_bare_accept_proxy_warns_at_start() {
    let up = echo_upstream();
    let mut router = Process::start(&["--accept-proxy", "127.0.0.1:0", &s(up.addr)]);
    let line = router.wait_for_line("from any sender");
    assert!(line.contains("WARN") || line.contains("warn"), "{line}");
    assert!(line.contains("--accept-proxy-from"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// --check --explain
// ---------------------------------------------------------------------------------------------

/// `--check -c FILE --explain NAME` exits 0 and names the route NAME takes: the exact-name route
/// over the wildcard, the wildcard for another name under it, the default for anything else.
#[test]
fn check_explain_names_the_route() {
    let dir = temp_dir("explain");
    let file = dir.write(
        "router.conf",
        "route 127.0.0.1:8443 127.0.0.1:1 sni=www.example.com\n\
         route 127.0.0.1:8443 127.0.0.1:2 sni=*.example.com\n\
         route 127.0.0.1:8443 127.0.0.1:3\n",
    );
    let file = file.as_str();
    let cases = [
        ("www.example.com", "route sni=www.example.com (exact name)"),
        ("foo.example.com", "route sni=*.example.com (wildcard"),
        ("other.org", "route default (default route)"),
    ];
    for (name, want) in cases {
        let (code, stdout, stderr) = run_bin(&["--check", "-c", file, "--explain", name]);
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("TLS with SNI '{name}'")))
            .unwrap_or_else(|| panic!("{name}: no explanation in:\n{stdout}"));
        assert!(line.contains(want), "{name}: {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// haproxy as a PROXY protocol backend
// ---------------------------------------------------------------------------------------------

/// haproxy with `accept-proxy` in front of an echo upstream: with a PROXY v2 header from the
/// router the echo round trip works through it (haproxy drops a connection whose header it
/// rejects); without a PROXY header the same setup fails: haproxy closes the connection and
/// never connects to the echo upstream.
#[test]
fn haproxy_accepts_our_proxy_v2_header() {
    if skip_without("routing::haproxy_accepts_our_proxy_v2_header", &["haproxy"]) {
        return;
    }
    let echo = echo_upstream();
    let mut haproxy = Haproxy::start(echo.addr);

    let with = start_router(proxy_protocol_config(
        "127.0.0.1:0",
        haproxy.addr,
        Version::V2,
    ));
    let mut client = connect(with.addr);
    client.write_all(b"ping through haproxy\n").unwrap();
    let mut echoed = vec![0u8; 21];
    if let Err(err) = client.read_exact(&mut echoed) {
        let exited = haproxy.kid.0.try_wait().unwrap();
        panic!(
            "no echo through haproxy ({err}); haproxy exited: {exited:?}\n{}",
            haproxy.log()
        );
    }
    assert_eq!(echoed, b"ping through haproxy\n");
    send_and_close(&mut client, b"bye");
    assert_eq!(read_to_end(&mut client), b"bye");
    assert_accepted(&echo, 1, "echo upstream");

    let without = start_router(config_to(&[haproxy.addr]));
    let got = send_chunks(without.addr, &[b"ping through haproxy\n"], false);
    assert_eq!(
        got, b"",
        "haproxy passed a connection without a PROXY header"
    );
    assert_accepted(&echo, 1, "echo upstream");
}
