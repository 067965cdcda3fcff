//! Several protocols on one port: SSH, TLS (by name and as a whole), plain HTTP and a byte
//! prefix reach their own upstreams through one listener, byte-exact; and `--check` refuses a
//! protocol route that can never match.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;

use tcp_router::proto::tls::parse_client_hello;
use tcp_router::proto::Parsed;

use crate::routing::{
    captured_hello, echo_recording_upstream, recording_upstream, s_client, send_chunks,
};
use crate::util::*;

/// Real sshd, s_server, HTTP and MariaDB peers through one listener at once.
mod real_peers;

/// What OpenSSH 9.2 on Debian sends first.
pub(crate) const SSH_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

/// A config file with one listener on a free port and these `route` lines' tails, each
/// `UPSTREAM [KEY=VALUE]`; the router started on it.
fn start_with_routes(dir: &TempDir, routes: &[String]) -> Process {
    let text: String = routes
        .iter()
        .map(|tail| format!("route 127.0.0.1:0 {tail}\n"))
        .collect();
    let file = dir.write("router.conf", &text);
    Process::start(&["-c", &file])
}

#[test]
fn ssh_tls_http_and_a_prefix_reach_their_routes_on_one_port() {
    let dir = temp_dir("protocols");
    let (named, named_rx) = recording_upstream();
    let (any_tls, any_tls_rx) = echo_recording_upstream();
    let (ssh, ssh_rx) = recording_upstream();
    let (http, http_rx) = recording_upstream();
    let (socks, socks_rx) = recording_upstream();
    let (default, default_rx) = recording_upstream();
    let mut router = start_with_routes(
        &dir,
        &[
            format!("{} sni=split.example.com", s(named.addr)),
            format!("{} proto=tls", s(any_tls.addr)),
            format!("{} proto=ssh", s(ssh.addr)),
            format!("{} proto=http", s(http.addr)),
            format!(r"{} prefix=\x05\x01", s(socks.addr)),
            s(default.addr),
        ],
    );

    assert_eq!(send_chunks(router.addr, &[SSH_BANNER], true), b"");
    assert_eq!(ssh_rx.recv_timeout(PATIENCE).unwrap(), SSH_BANNER);
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("proto=ssh route=proto=ssh "), "{line}");

    // One byte at a time: `SSH-2.0-...` could be an HTTP method until its end of line.
    let trickled: Vec<&[u8]> = SSH_BANNER.chunks(1).collect();
    assert_eq!(send_chunks(router.addr, &trickled, true), b"");
    assert_eq!(ssh_rx.recv_timeout(PATIENCE).unwrap(), SSH_BANNER);
    router.wait_for_line("closed #2 ");

    let request = b"GET /x HTTP/1.1\r\nHost: any.example\r\n\r\n";
    assert_eq!(send_chunks(router.addr, &[request], true), b"");
    assert_eq!(http_rx.recv_timeout(PATIENCE).unwrap(), request);
    let line = router.wait_for_line("closed #3 ");
    assert!(
        line.contains("proto=http host=any.example route=proto=http "),
        "{line}"
    );

    let socks_hello = b"\x05\x01\x00";
    assert_eq!(send_chunks(router.addr, &[socks_hello], true), b"");
    assert_eq!(socks_rx.recv_timeout(PATIENCE).unwrap(), socks_hello);
    let line = router.wait_for_line("closed #4 ");
    assert!(
        line.contains(r"proto=prefix route=prefix=\x05\x01 "),
        "{line}"
    );

    assert_eq!(send_chunks(router.addr, &[b"hello\n"], true), b"");
    assert_eq!(default_rx.recv_timeout(PATIENCE).unwrap(), b"hello\n");
    let line = router.wait_for_line("closed #5 ");
    assert!(
        line.contains("first-bytes=not-tls-or-http route=default "),
        "{line}"
    );

    if skip_without(
        "protocols::ssh_tls_http_and_a_prefix_reach_their_routes_on_one_port (TLS part)",
        &["openssl"],
    ) {
        return;
    }
    let hello = captured_hello();
    assert_eq!(send_chunks(router.addr, &[hello], true), b"");
    assert_eq!(named_rx.recv_timeout(PATIENCE).unwrap(), hello);
    let line = router.wait_for_line("closed #6 ");
    assert!(
        line.contains("proto=tls sni=split.example.com match=exact name"),
        "{line}"
    );
    // No name route takes a hello without SNI: the TLS catch-all does. The echo sends s_client
    // its own hello back, so the handshake fails; what matters is which upstream got it.
    let _ = s_client(router.addr, &["-noservername"]);
    match parse_client_hello(&any_tls_rx.recv_timeout(PATIENCE).unwrap()) {
        Ok(Parsed::Complete(hello)) => assert_eq!(hello.server_name, None),
        other => panic!("the proto=tls upstream got no ClientHello: {other:?}"),
    }
    let line = router.wait_for_line("closed #7 ");
    assert!(
        line.contains("proto=tls sni=(none) route=proto=tls "),
        "{line}"
    );
    let accepted = [
        (&ssh, 2),
        (&http, 1),
        (&socks, 1),
        (&default, 1),
        (&named, 1),
    ];
    for (up, count) in accepted {
        assert_eq!(up.accepted.load(Ordering::SeqCst), count, "{}", up.addr);
    }
}

/// Without an HTTP route nothing else can claim `SSH-`: its fourth byte decides, so a client
/// that sends its banner a byte at a time reaches the SSH upstream before its end of line.
#[test]
fn an_ssh_client_trickling_its_banner_is_routed_at_the_fourth_byte() {
    let dir = temp_dir("protocols-trickle");
    let (ssh, ssh_rx) = recording_upstream();
    let (default, _default_rx) = recording_upstream();
    let router = start_with_routes(
        &dir,
        &[format!("{} proto=ssh", s(ssh.addr)), s(default.addr)],
    );
    let mut client = connect(router.addr);
    client.set_nodelay(true).unwrap();
    for byte in &SSH_BANNER[..4] {
        client.write_all(std::slice::from_ref(byte)).unwrap();
    }
    wait_until("the SSH upstream is dialed", || {
        ssh.accepted.load(Ordering::SeqCst) == 1
    });
    client.write_all(&SSH_BANNER[4..]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(ssh_rx.recv_timeout(PATIENCE).unwrap(), SSH_BANNER);
    assert_eq!(default.accepted.load(Ordering::SeqCst), 0);
}

/// `--check` refuses a protocol route another hides, and two alike, naming both lines.
#[test]
fn check_refuses_a_protocol_route_that_can_never_match() {
    let dir = temp_dir("protocols-check");
    let file = dir.write(
        "router.conf",
        "route 127.0.0.1:8443 127.0.0.1:1 prefix=SSH\n\
         route 127.0.0.1:8443 127.0.0.1:2 proto=ssh\n\
         route 127.0.0.1:8443 127.0.0.1:3 proto=tls\n\
         route 127.0.0.1:8443 127.0.0.1:4 proto=tls\n",
    );
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains(
            ":2: route proto=ssh on 127.0.0.1:8443 can never match: line 1 has prefix=SSH"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            ":4: duplicate route on 127.0.0.1:8443: line 3 already has one with proto=tls"
        ),
        "{stderr}"
    );
}

/// A server-first upstream, as SMTP is: its banner on connect, then `221 bye` to `QUIT`; reports
/// what it received.
pub(crate) fn smtp_upstream() -> (Upstream, std::sync::mpsc::Receiver<Vec<u8>>) {
    reporting_upstream(|mut stream| {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = stream.write_all(b"220 mail.example ESMTP\r\n");
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n") {
            match std::io::Read::read(&mut stream, &mut byte) {
                Ok(1) => got.push(byte[0]),
                _ => return got,
            }
        }
        let _ = stream.write_all(b"221 bye\r\n");
        got
    })
}

/// The client's side of [`smtp_upstream`]'s exchange: the banner, `QUIT`, `221 bye`, the end.
pub(crate) fn smtp_exchange(client: &mut TcpStream) {
    let banner = b"220 mail.example ESMTP\r\n";
    assert_eq!(read_exact(client, banner.len()), banner);
    client.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_until_closed(client), b"221 bye\r\n");
}

/// A client that sends nothing reaches the `proto=silent` route once its wait is over, reads the
/// server's banner and talks on, byte-exact; an SSH client on the same port still reaches SSH.
#[test]
fn a_client_that_waits_for_the_server_reaches_the_silent_route() {
    let dir = temp_dir("protocols-silent");
    let (smtp, smtp_rx) = smtp_upstream();
    let (ssh, ssh_rx) = recording_upstream();
    let mut router = start_with_routes(
        &dir,
        &[
            format!("{} proto=ssh", s(ssh.addr)),
            format!("{} proto=silent wait=200ms", s(smtp.addr)),
        ],
    );
    let mut client = connect(router.addr);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    smtp_exchange(&mut client);
    drop(client);
    assert_eq!(smtp_rx.recv_timeout(PATIENCE).unwrap(), b"QUIT\r\n");
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("proto=silent route=proto=silent "), "{line}");

    assert_eq!(send_chunks(router.addr, &[SSH_BANNER], true), b"");
    assert_eq!(ssh_rx.recv_timeout(PATIENCE).unwrap(), SSH_BANNER);
    assert_eq!(smtp.accepted.load(Ordering::SeqCst), 1);
}

/// `--check --explain-bytes` says where first bytes go, as the server decides: SSH, a prefix, a
/// regex and the bytes it waits for, a TLS-looking start that needs more bytes, a client that
/// sends nothing, a capture read from a file (`@PATH`); a bad escape, a missing file and a
/// missing `--check` are usage errors.
#[test]
fn check_explain_bytes_predicts_each_clients_route() {
    let dir = temp_dir("protocols-explain");
    let file = dir.write(
        "router.conf",
        "route 127.0.0.1:8443 127.0.0.1:1 sni=a.example\n\
         route 127.0.0.1:8443 127.0.0.1:2 proto=ssh\n\
         route 127.0.0.1:8443 127.0.0.1:3 prefix=\\x05\\x01\n\
         route 127.0.0.1:8443 127.0.0.1:6 regex=(?i)^(ehlo|helo)\\x20 min_bytes=5\n\
         route 127.0.0.1:8443 127.0.0.1:4 proto=silent wait=1s\n\
         route 127.0.0.1:8443 127.0.0.1:5\n",
    );
    let explain = |bytes: &str| {
        let (code, stdout, stderr) = run_bin(&["--check", "-c", &file, "--explain-bytes", bytes]);
        assert_eq!(code, 0, "{bytes}: {stdout}{stderr}");
        let at = stdout.find("explain bytes on 127.0.0.1:8443:\n  ");
        let at = at.unwrap_or_else(|| panic!("{bytes}: no explanation in:\n{stdout}"));
        stdout[at..].lines().nth(1).unwrap().trim().to_string()
    };
    assert_eq!(
        explain(r"SSH-2.0-OpenSSH_9.2\r\n"),
        r"'SSH-2.0-OpenSSH_9.2\r\n': route proto=ssh (protocol route)"
    );
    assert_eq!(
        explain(r"\x05\x01\x00"),
        r"'\x05\x01\x00': route prefix=\x05\x01 (protocol route)"
    );
    assert_eq!(
        explain(r"\x16\x03\x01"),
        r"'\x16\x03\x01': not enough bytes to decide (route regex=(?i)^(ehlo|helo)\x20,min_bytes=5 sees the first 5 bytes, 3 are here); a client that sends no more waits for peek_timeout (5s), then takes route default (default route)"
    );
    assert_eq!(
        explain(""),
        "a client that sends nothing: after 1s, route proto=silent (protocol route)"
    );
    assert_eq!(
        explain("hello"),
        "'hello' (not-tls-or-http): route default (default route)"
    );
    assert_eq!(
        explain(r"EHLO mail.example\r\n"),
        r"'EHLO mail.example\r\n' (its first 5 bytes match the expression): route regex=(?i)^(ehlo|helo)\x20,min_bytes=5 (protocol route)"
    );
    assert_eq!(
        explain("ehl"),
        r"'ehl': not enough bytes to decide (route regex=(?i)^(ehlo|helo)\x20,min_bytes=5 sees the first 5 bytes, 3 are here); a client that sends no more waits for peek_timeout (5s), then takes route default (default route)"
    );
    let capture = dir.write("banner.bin", "SSH-2.0-PuTTY_Release_0.81\r\n");
    assert_eq!(
        explain(&format!("@{capture}")),
        r"'SSH-2.0-PuTTY_Release_0.81\r\n': route proto=ssh (protocol route)"
    );
    let (code, _, stderr) = run_bin(&["--check", "-c", &file, "--explain-bytes", "@/nonexistent"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--explain-bytes: cannot read '/nonexistent': No such file"),
        "{stderr}"
    );

    let (code, _, stderr) = run_bin(&["--check", "-c", &file, "--explain-bytes", r"\q"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(r"--explain-bytes: unknown escape \q"),
        "{stderr}"
    );
    let (code, _, stderr) = run_bin(&["-c", &file, "--explain-bytes", "x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--explain-bytes needs --check"), "{stderr}");
}

/// Behind a balancer that sends PROXY v2, the header comes before the first bytes: it is read
/// and set aside, the SSH banner after it routes to `proto=ssh`, whose upstream gets a v1 header
/// naming the header's client, then the banner unchanged; a client that sends the header and
/// then nothing still takes the wait route, and the server's banner reaches it.
#[test]
fn a_proxy_header_comes_before_the_first_bytes_and_protocol_routes_send_one_on() {
    let dir = temp_dir("protocols-proxy");
    let (ssh, ssh_rx) = recording_upstream();
    let (smtp, smtp_rx) = smtp_upstream();
    let mut router = start_with_routes(
        &dir,
        &[
            format!(
                "{} proto=ssh accept_proxy=true proxy_protocol=v1",
                s(ssh.addr)
            ),
            format!("{} proto=silent wait=200ms accept_proxy=true", s(smtp.addr)),
        ],
    );
    let header = crate::routing::v2_header(
        "192.0.2.7:5000".parse().unwrap(),
        "127.0.0.1:22".parse().unwrap(),
    );
    let sent = [header.as_slice(), SSH_BANNER].concat();
    assert_eq!(send_chunks(router.addr, &[&sent], true), b"");
    let want = [
        b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 22\r\n".as_slice(),
        SSH_BANNER,
    ]
    .concat();
    assert_eq!(ssh_rx.recv_timeout(PATIENCE).unwrap(), want);
    let line = router.wait_for_line("closed #1 ");
    assert!(line.contains("client=192.0.2.7:5000 "), "{line}");
    assert!(line.contains("proto=ssh route=proto=ssh "), "{line}");

    let mut client = connect(router.addr);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(&header).unwrap();
    smtp_exchange(&mut client);
    drop(client);
    assert_eq!(smtp_rx.recv_timeout(PATIENCE).unwrap(), b"QUIT\r\n");
    let line = router.wait_for_line("closed #2 ");
    assert!(line.contains("client=192.0.2.7:5000 "), "{line}");
    assert!(line.contains("proto=silent route=proto=silent "), "{line}");
}

/// A client waiting for the wait route holds its place under `--max-connections-per-client`:
/// with two of its connections waiting, a third is refused at once (an SSH banner makes no
/// difference), and the two waiting ones are served when their wait is over.
#[test]
fn clients_in_the_wait_count_against_the_per_client_cap() {
    let dir = temp_dir("protocols-per-client");
    let (ssh, _ssh_rx) = recording_upstream();
    let (smtp, _smtp_rx) = smtp_upstream();
    let file = dir.write(
        "router.conf",
        &format!(
            "route 127.0.0.1:0 {} proto=ssh\nroute 127.0.0.1:0 {} proto=silent wait=1s\n",
            s(ssh.addr),
            s(smtp.addr)
        ),
    );
    let mut router = Process::start(&["-c", &file, "--max-connections-per-client", "2"]);
    let mut waiting: Vec<TcpStream> = (0..2).map(|_| connect(router.addr)).collect();
    let mut third = connect(router.addr);
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = third.write_all(SSH_BANNER);
    assert_eq!(read_until_closed(&mut third), b"");
    let line = router.wait_for_line("result=refused-client-limit");
    assert!(line.contains("upstream=none "), "{line}");
    assert_eq!(ssh.accepted.load(Ordering::SeqCst), 0);
    for client in &mut waiting {
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        smtp_exchange(client);
    }
    drop(waiting);
    router.wait_for_lines("proto=silent route=proto=silent ", 2);
}

/// A protocol route's own `max_connections_per_client` applies once its bytes choose it: with
/// one SSH connection open, a second SSH client from the same address is refused when its
/// banner takes the route, while the wait route, which has no cap, still serves that address.
#[test]
fn a_protocol_routes_own_per_client_cap_refuses_at_the_route_only() {
    let dir = temp_dir("protocols-route-cap");
    let (ssh, ssh_rx) = recording_upstream();
    let (smtp, _smtp_rx) = smtp_upstream();
    let mut router = start_with_routes(
        &dir,
        &[
            format!("{} proto=ssh max_connections_per_client=1", s(ssh.addr)),
            format!("{} proto=silent wait=200ms", s(smtp.addr)),
        ],
    );
    let mut first = connect(router.addr);
    first.write_all(SSH_BANNER).unwrap();
    wait_until("the first SSH client is relayed", || {
        ssh.accepted.load(Ordering::SeqCst) == 1
    });
    let mut second = connect(router.addr);
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    second.write_all(SSH_BANNER).unwrap();
    assert_eq!(read_until_closed(&mut second), b"");
    let line = router.wait_for_line("result=refused-client-limit");
    assert!(line.contains("proto=ssh "), "{line}");

    let mut silent = connect(router.addr);
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    smtp_exchange(&mut silent);
    first.shutdown(Shutdown::Write).unwrap();
    assert_eq!(ssh_rx.recv_timeout(PATIENCE).unwrap(), SSH_BANNER);
    assert_eq!(ssh.accepted.load(Ordering::SeqCst), 1);
}

/// A reload adds a regex route to a listener that already reads first bytes: a reload whose
/// pattern does not compile is refused in one line naming it, and the old routes serve on;
/// once a good one is in, SOCKS5 bytes reach it and are logged `proto=regex`.
#[test]
fn a_reload_adds_a_regex_route_and_refuses_a_bad_pattern() {
    let dir = temp_dir("protocols-reload");
    let (ssh, _ssh_rx) = recording_upstream();
    let (socks, socks_rx) = recording_upstream();
    let (default, default_rx) = recording_upstream();
    let held = reserve_port();
    let listen = held.addr();
    let base = format!(
        "route {listen} {} proto=ssh\nroute {listen} {}\n",
        s(ssh.addr),
        s(default.addr)
    );
    let file = dir.write("router.conf", &base);
    let mut router = Process::start(&["-c", &file]);
    let hello = b"\x05\x01\x00";
    assert_eq!(send_chunks(listen, &[hello], true), b"");
    assert_eq!(default_rx.recv_timeout(PATIENCE).unwrap(), hello);

    dir.write(
        "router.conf",
        &format!(
            "{base}route {listen} {} regex=(\\x05 min_bytes=2\n",
            s(socks.addr)
        ),
    );
    router.signal("HUP");
    let refused = router.wait_for_line("reload refused");
    assert!(
        refused.contains("invalid regex '(\\x05': unclosed group"),
        "{refused}"
    );
    assert_eq!(send_chunks(listen, &[hello], true), b"");
    assert_eq!(default_rx.recv_timeout(PATIENCE).unwrap(), hello);

    dir.write(
        "router.conf",
        &format!(
            "{base}route {listen} {} regex=^\\x05[\\x01-\\x09] min_bytes=2\n",
            s(socks.addr)
        ),
    );
    router.signal("HUP");
    router.wait_for_line("reloaded");
    assert_eq!(send_chunks(listen, &[hello], true), b"");
    assert_eq!(socks_rx.recv_timeout(PATIENCE).unwrap(), hello);
    let line = router.wait_for_line("proto=regex ");
    assert!(
        line.contains(r"route=regex=^\x05[\x01-\x09],min_bytes=2 "),
        "{line}"
    );
}
