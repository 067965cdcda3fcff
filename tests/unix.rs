//! Unix-domain sockets both ways, through the binary: redis-server's socket reached from TCP,
//! curl's `--unix-socket` through a Unix listener, half-closes and byte-exact transfers in each
//! direction, the socket file's life (stale, taken, mode, removal at stop and reload), the
//! client's credentials in the log, abstract names, a live upgrade, the PROXY header, and the
//! one-line configuration errors.
//!
//! Every socket file lives in a scratch directory of the test; a listener's endpoint is written
//! `unix:PATH` as the router reads it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::thread;

use rustix::process::{Pid, WaitOptions};

use tcp_router::Forwarder;

use crate::util::*;

/// Bytes each way of the half-close transfers.
const BULK: usize = 3 << 20;
/// Seeds of what clients send and what upstreams answer.
const REQUEST_SEED: u64 = 25_001;
const ANSWER_SEED: u64 = 25_002;

/// SIGUSR2's number, for its bit in /proc/PID/status.
const SIGUSR2: u32 = 12;

/// The endpoint of the socket file `name` in `dir`.
fn endpoint_in(dir: &TempDir, name: &str) -> String {
    format!("unix:{}", dir.join(name).display())
}

/// The path of a `unix:/path` endpoint.
fn path_of(endpoint: &str) -> &Path {
    Path::new(endpoint.strip_prefix("unix:").expect("a unix: endpoint"))
}

/// The permission bits of the file at `path`.
fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// True if a socket file is at `path`.
fn is_socket_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// `client=unix:pid=PID,uid=UID` for a client in this process: how the log names it.
fn this_process_as_client() -> String {
    format!(
        "client=unix:pid={},uid={}",
        std::process::id(),
        rustix::process::getuid().as_raw()
    )
}

/// The binary serving the config file `text` (written to `dir`), once it has logged a listener
/// on each of `endpoints`.
fn start_config(dir: &TempDir, text: &str, endpoints: &[&str]) -> (Process, String) {
    let file = dir.write("tcp-router.conf", text);
    let mut router = Process::start_until(&["-c", &file], "listening on ");
    for endpoint in endpoints {
        router.line_with(&listening_on(endpoint));
    }
    (router, file)
}

/// The binary with the Unix listener `endpoint` forwarding to `upstream`, once it listens.
fn start_unix_listener(endpoint: &str, upstream: SocketAddr, extra: &[&str]) -> Process {
    let upstream = upstream.to_string();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend([endpoint, upstream.as_str()]);
    Process::start_until(&args, &listening_on(endpoint))
}

// ---------------------------------------------------------------------------------------------
// Real peers: redis-server's socket from TCP, curl through a Unix listener
// ---------------------------------------------------------------------------------------------

/// A RESP command of binary-safe arguments.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// redis-server listening only on a socket file (`--unixsocket PATH --port 0`), reached from a
/// TCP listener: redis-cli's PING, SET and GET, then a 1 MiB value of random bytes stored and
/// read back byte for byte; the log line names the upstream `unix:/path`.
#[test]
fn redis_on_a_socket_file_is_reached_from_tcp() {
    if skip_without(
        "unix::redis_on_a_socket_file_is_reached_from_tcp",
        &["redis-server", "redis-cli"],
    ) {
        return;
    }
    let dir = temp_dir("unix-redis");
    let redis = UnixRedisServer::start(&dir.join("redis.sock"));
    let upstream = format!("unix:{}", redis.path.display());
    let mut router = Process::start(&["127.0.0.1:0", &upstream]);
    let via = router.addr.port();
    assert_eq!(redis_cli(via, &["PING"]), "PONG");
    assert_eq!(redis_cli(via, &["SET", "unix", "socket"]), "OK");
    assert_eq!(redis_cli(via, &["GET", "unix"]), "socket");

    let value = random_bytes(25, 1 << 20);
    let mut client = connect(router.addr);
    client.write_all(&resp(&[b"SET", b"big", &value])).unwrap();
    assert_eq!(read_exact(&mut client, 5), b"+OK\r\n");
    client.write_all(&resp(&[b"GET", b"big"])).unwrap();
    let head = format!("${}\r\n", value.len());
    assert_eq!(read_exact(&mut client, head.len()), head.as_bytes());
    let got = read_exact(&mut client, value.len() + 2);
    assert!(got[..value.len()] == value[..], "the 1 MiB value differs");
    assert_eq!(&got[value.len()..], b"\r\n");
    drop(client);
    let line = router.wait_for_line("closed #");
    assert!(line.contains(&format!(" upstream={upstream}")), "{line}");
}

/// An HTTP/1.1 server on TCP that answers every request with `body` and closes.
fn http_upstream(body: Vec<u8>) -> Upstream {
    upstream(move |mut stream| {
        if read_http_head(&mut stream).is_none() {
            return;
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.write_all(&body);
    })
}

/// curl `--unix-socket` through a Unix listener to an HTTP server on TCP: the body arrives byte
/// for byte.
#[test]
fn curl_through_a_unix_listener_reaches_an_http_server_on_tcp() {
    if skip_without(
        "unix::curl_through_a_unix_listener_reaches_an_http_server_on_tcp",
        &["curl"],
    ) {
        return;
    }
    let body = random_bytes(26, (1 << 20) + 7);
    let http = http_upstream(body.clone());
    let dir = temp_dir("unix-curl");
    let endpoint = endpoint_in(&dir, "http.sock");
    let _router = start_unix_listener(&endpoint, http.addr, &[]);
    let out = dir.join("body");
    let curl = run_tool(
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "--unix-socket"])
            .arg(path_of(&endpoint))
            .arg("-o")
            .arg(&out)
            .arg("http://x/file"),
        b"",
    );
    assert!(curl.status.success(), "curl: {}", curl.both());
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), body.len(), "the body's length");
    assert!(got == body, "the body differs");
}

// ---------------------------------------------------------------------------------------------
// Half-close and byte-exact transfers, both ways
// ---------------------------------------------------------------------------------------------

/// What a client sends in the half-close transfers.
fn request() -> Vec<u8> {
    random_bytes(REQUEST_SEED, BULK)
}

/// What an upstream answers in the half-close transfers.
fn answer() -> Vec<u8> {
    random_bytes(ANSWER_SEED, BULK)
}

/// An upstream that reads to the client's end of stream, then answers and ends its side;
/// reports the checksum of what it read.
fn answer_after_the_clients_end<S: Stream>(mut stream: S) -> (u64, u64) {
    let got = read_all(&mut stream);
    stream.write_all(&answer()).expect("answer after the end");
    stream.half_close().unwrap();
    checksum(&got)
}

/// An upstream that answers and ends its side first, then reads to the client's end of stream;
/// reports the checksum of what it read.
fn answer_first<S: Stream>(mut stream: S) -> (u64, u64) {
    stream.write_all(&answer()).expect("answer first");
    stream.half_close().unwrap();
    checksum(&read_all(&mut stream))
}

/// Serves each connection with `serve` and sends its report down a channel.
fn reporting<S: Stream>(
    serve: fn(S) -> (u64, u64),
) -> (impl Fn(S) + Send + Sync + 'static, Receiver<(u64, u64)>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let serve = move |stream: S| {
        let report = serve(stream);
        let _ = tx.lock().unwrap().send(report);
    };
    (serve, rx)
}

/// The client ends its side first; the upstream reads every byte, then answers through the
/// half-closed connection.
fn client_ends_first<S: Stream>(mut client: S, reports: &Receiver<(u64, u64)>) {
    let request = request();
    let writer = send_then_half_close(&client, request.clone());
    let got = read_all(&mut client);
    writer.join().unwrap().expect("send the request");
    assert_eq!(got.len(), BULK, "the answer's length");
    assert_eq!(checksum(&got), checksum(&answer()), "the answer");
    let report = reports
        .recv_timeout(PATIENCE)
        .expect("the upstream's report");
    assert_eq!(
        report,
        checksum(&request),
        "the request, as the upstream got it"
    );
}

/// The upstream ends its side first; the client reads every byte to that end, then still sends,
/// and the upstream reads it all.
fn upstream_ends_first<S: Stream>(mut client: S, reports: &Receiver<(u64, u64)>) {
    let got = read_all(&mut client);
    assert_eq!(got.len(), BULK, "the answer's length");
    assert_eq!(checksum(&got), checksum(&answer()), "the answer");
    let request = request();
    client
        .write_all(&request)
        .expect("send after the upstream's end");
    client.half_close().unwrap();
    let report = reports
        .recv_timeout(PATIENCE)
        .expect("the upstream's report");
    assert_eq!(
        report,
        checksum(&request),
        "the request, as the upstream got it"
    );
}

/// TCP clients to Unix upstreams: 3 MiB each way, byte-exact, with the client ending its side
/// first (the upstream answers after it), then with the upstream ending first (the client
/// still sends after it).
#[test]
fn half_close_and_bytes_exact_from_a_tcp_client_to_a_unix_upstream() {
    let dir = temp_dir("unix-half-tcp");
    let (after, after_reports) = reporting(answer_after_the_clients_end::<UnixStream>);
    let (first, first_reports) = reporting(answer_first::<UnixStream>);
    let after = unix_upstream(&endpoint_in(&dir, "after.sock"), after);
    let first = unix_upstream(&endpoint_in(&dir, "first.sock"), first);
    let text = format!(
        "route 127.0.0.1:0 {}\nroute 127.0.0.2:0 {}\n",
        after.endpoint, first.endpoint
    );
    let file = dir.write("tcp-router.conf", &text);
    let mut router = Process::start(&["-c", &file]);
    let to_after = router.listener_with(&after.endpoint);
    let to_first = router.listener_with(&first.endpoint);
    client_ends_first(connect(to_after), &after_reports);
    upstream_ends_first(connect(to_first), &first_reports);
}

/// Unix clients to TCP upstreams: the same two transfers the other way round.
#[test]
fn half_close_and_bytes_exact_from_a_unix_client_to_a_tcp_upstream() {
    let dir = temp_dir("unix-half-unix");
    let (after, after_reports) = reporting(answer_after_the_clients_end::<TcpStream>);
    let (first, first_reports) = reporting(answer_first::<TcpStream>);
    let (after, first) = (upstream(after), upstream(first));
    let (to_after, to_first) = (
        endpoint_in(&dir, "after.sock"),
        endpoint_in(&dir, "first.sock"),
    );
    let text = format!(
        "route {to_after} {}\nroute {to_first} {}\n",
        after.addr, first.addr
    );
    let _router = start_config(&dir, &text, &[&to_after, &to_first]);
    client_ends_first(connect_unix(&to_after), &after_reports);
    upstream_ends_first(connect_unix(&to_first), &first_reports);
}

/// When the TCP upstream resets, the Unix client (a Unix socket has no reset) reads end of
/// stream after every byte sent before it, then gets EPIPE on a write.
#[test]
fn a_reset_from_the_tcp_side_becomes_an_end_of_stream_then_epipe() {
    let up = upstream(|mut stream| {
        let mut hello = [0u8; 5];
        if stream.read_exact(&mut hello).is_ok() {
            let _ = stream.write_all(b"last words");
            socket2::SockRef::from(&stream)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
        }
    });
    let dir = temp_dir("unix-reset");
    let endpoint = endpoint_in(&dir, "reset.sock");
    let _router = start_unix_listener(&endpoint, up.addr, &[]);
    let mut client = connect_unix(&endpoint);
    client.write_all(b"hello").unwrap();
    assert_eq!(read_all(&mut client), b"last words");
    let broken = poll_within(PATIENCE, || match client.write(b"more") {
        Ok(_) => None,
        Err(e) => Some(e.kind()),
    });
    assert_eq!(broken, Some(ErrorKind::BrokenPipe));
}

// ---------------------------------------------------------------------------------------------
// The socket file: stale, taken, not a socket, its mode, removed at stop
// ---------------------------------------------------------------------------------------------

/// A socket file left behind by a listener that is gone (closed without unlinking its file, as
/// a killed process leaves it: nobody listens, a connect is refused) is replaced at start.
#[test]
fn a_stale_socket_file_is_replaced_at_start() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-stale");
    let endpoint = endpoint_in(&dir, "stale.sock");
    drop(UnixListener::bind(path_of(&endpoint)).unwrap());
    assert!(
        is_socket_file(path_of(&endpoint)),
        "the stale file is there"
    );
    let refused = try_connect_unix(&endpoint).expect_err("nobody listens on the stale file");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    let _router = start_unix_listener(&endpoint, echo.addr, &[]);
    round_trip(&mut connect_unix(&endpoint), b"through the replaced file");
}

/// A socket file another process listens on is left alone: the start is refused with one line
/// saying so, exit 1 (as for a TCP address in use: the configuration is valid, the address
/// taken), and that process keeps its socket.
#[test]
fn a_socket_someone_listens_on_refuses_the_start() {
    let dir = temp_dir("unix-taken");
    let endpoint = endpoint_in(&dir, "taken.sock");
    let taken = UnixListener::bind(path_of(&endpoint)).unwrap();
    let (code, _, stderr) = run_bin(&["--log-level", "off", &endpoint, "127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{endpoint}: another process is listening on it")),
        "{stderr}"
    );
    let _client = connect_unix(&endpoint);
    taken.accept().expect("the owner still listens on its file");
}

/// A file at the path that is not a socket is not replaced: one line, exit 1 (the address is
/// taken), the file as it was.
#[test]
fn a_file_that_is_not_a_socket_refuses_the_start() {
    let dir = temp_dir("unix-regular");
    let endpoint = endpoint_in(&dir, "data.sock");
    std::fs::write(path_of(&endpoint), "precious").unwrap();
    let (code, _, stderr) = run_bin(&["--log-level", "off", &endpoint, "127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{endpoint}: exists and is not a socket")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(path_of(&endpoint)).unwrap(),
        "precious"
    );
}

/// The socket file gets `socket_mode` (0600 here), `--socket-mode` on the command line, or 0660
/// by default; a graceful stop (SIGTERM) removes it.
#[test]
fn the_socket_file_has_its_mode_and_is_removed_at_a_graceful_stop() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-mode");
    let set = endpoint_in(&dir, "set.sock");
    let default = endpoint_in(&dir, "default.sock");
    let text = format!(
        "route {set} {up} socket_mode=0600\nroute {default} {up}\n",
        up = echo.addr
    );
    let (mut router, _) = start_config(&dir, &text, &[&set, &default]);
    assert_eq!(mode_of(path_of(&set)), 0o600, "socket_mode=0600");
    assert_eq!(mode_of(path_of(&default)), 0o660, "the default");
    round_trip(&mut connect_unix(&set), b"mode 0600");
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(0));
    for endpoint in [&set, &default] {
        assert!(
            !path_of(endpoint).exists(),
            "{endpoint} left behind at stop"
        );
    }

    let argv = endpoint_in(&dir, "argv.sock");
    let mut router = start_unix_listener(&argv, echo.addr, &["--socket-mode", "0640"]);
    assert_eq!(mode_of(path_of(&argv)), 0o640, "--socket-mode 0640");
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(0));
    assert!(!path_of(&argv).exists(), "{argv} left behind at stop");
}

/// The library takes `unix:` strings like addresses: a forwarder from a socket file to TCP
/// serves, and its file is gone once it has stopped.
#[test]
fn the_library_forwards_from_a_socket_file() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-library");
    let endpoint = endpoint_in(&dir, "library.sock");
    let forwarder = Forwarder::new(endpoint.clone(), echo.addr).expect("bind");
    let handle = forwarder.handle();
    let serving = thread::spawn(move || forwarder.serve().expect("serve"));
    round_trip(&mut connect_unix(&endpoint), b"from the library");
    handle.stop();
    serving.join().expect("the forwarder's thread");
    assert!(
        !path_of(&endpoint).exists(),
        "{endpoint} left behind at stop"
    );
}

/// A socket file passed by the service manager (`systemd-socket-activate -l PATH`) serves the
/// `unix:PATH` listener with that path, its queued client included; at the stop the file stays,
/// since the manager made it.
#[test]
fn socket_activation_passes_a_unix_listener_and_keeps_its_file() {
    if skip_without(
        "unix::socket_activation_passes_a_unix_listener_and_keeps_its_file",
        &["systemd-socket-activate"],
    ) {
        return;
    }
    let echo = echo_upstream();
    let dir = temp_dir("unix-activation");
    let endpoint = endpoint_in(&dir, "activated.sock");
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("-l")
        .arg(path_of(&endpoint))
        .arg("--fdname=web")
        .arg(bin())
        .args([endpoint.as_str(), &echo.addr.to_string()]);
    let mut router = Process::spawn_command(command);
    let mut first = None;
    wait_until("systemd-socket-activate to listen", || {
        first = try_connect_unix(&endpoint).ok();
        first.is_some()
    });
    let mut first = first.expect("connected");
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let used = router.line_where(0, PATIENCE, |line| {
        line.contains(&format!("listener {endpoint}: using fd 3"))
    });
    assert!(
        used.is_ok(),
        "no line of the passed socket; saw:\n{}",
        router.seen.join("\n")
    );
    round_trip(&mut first, b"queued before the start");
    round_trip(&mut connect_unix(&endpoint), b"through the passed socket");
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(0));
    assert!(
        is_socket_file(path_of(&endpoint)),
        "the manager's socket file was removed"
    );
}

// ---------------------------------------------------------------------------------------------
// Who the client is: credentials in the log, allow/deny, the per-client cap
// ---------------------------------------------------------------------------------------------

/// The log line names a Unix client by its credentials (this test's pid and uid) and the
/// listener by its path; a TCP client's line names a Unix upstream `unix:/path`.
#[test]
fn the_log_line_names_the_clients_credentials_and_the_unix_upstream() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-log");
    let listen = endpoint_in(&dir, "in.sock");
    let up = unix_echo_upstream(&endpoint_in(&dir, "up.sock"));
    let text = format!(
        "route {listen} {}\nroute 127.0.0.1:0 {}\n",
        echo.addr, up.endpoint
    );
    let (mut router, _) = start_config(&dir, &text, &[&listen]);

    let mut client = connect_unix(&listen);
    round_trip(&mut client, b"who am I");
    drop(client);
    let line = router.wait_for_line("closed #");
    assert!(line.contains(&this_process_as_client()), "{line}");
    assert!(line.contains(&format!(" listener={listen} ")), "{line}");

    let to_unix = router.listener_with(&up.endpoint);
    echo_through(to_unix, b"to a unix upstream");
    let line = router.wait_for_line("closed #");
    assert!(
        line.contains(&format!(" upstream={} ", up.endpoint)),
        "{line}"
    );
}

/// allow/deny rules do not apply to a Unix client (the file's mode is the access control): a
/// global `allow` of another network still lets it through, while a TCP client is refused.
#[test]
fn allow_and_deny_do_not_apply_to_a_unix_client() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-allow");
    let listen = endpoint_in(&dir, "in.sock");
    let text = format!(
        "allow 10.0.0.0/8\nroute {listen} {up}\nroute 127.0.0.1:0 {up}\n",
        up = echo.addr
    );
    let (mut router, _) = start_config(&dir, &text, &[&listen]);
    round_trip(&mut connect_unix(&listen), b"a unix client is not matched");
    let tcp = router.listener_with(&echo.addr.to_string());
    assert!(
        !echoes(&mut connect(tcp), b"a tcp client from 127.0.0.1 is"),
        "the TCP client got through"
    );
}

/// `max_connections_per_client` counts a Unix listener's clients per uid: a second connection
/// from this test's uid is refused while the first is open, and served once it has closed.
#[test]
fn the_per_client_cap_counts_unix_clients_by_uid() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-per-client");
    let listen = endpoint_in(&dir, "in.sock");
    let text = format!(
        "route {listen} {} max_connections_per_client=1\n",
        echo.addr
    );
    let (mut router, _) = start_config(&dir, &text, &[&listen]);
    let mut first = connect_unix(&listen);
    round_trip(&mut first, b"the first");
    let mut second = connect_unix(&listen);
    let _ = second.write_all(b"the second");
    let mut buf = [0u8; 16];
    assert!(
        matches!(second.read(&mut buf), Ok(0) | Err(_)),
        "a second connection of the same uid was served"
    );
    drop(first);
    router.wait_for_line(" sent=9 received=9 ");
    // The slot is free once the first connection's end is counted, just after its line.
    wait_until("a new connection of this uid to be served", || {
        try_round_trip(&mut connect_unix(&listen), b"served again").is_ok()
    });
}

/// The admin endpoint shows a Unix client by its credentials in `/connections`, and the
/// listener as `unix:/path` in the metrics' labels.
#[test]
fn the_admin_endpoint_shows_unix_clients_and_listeners() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-admin");
    let listen = endpoint_in(&dir, "in.sock");
    let mut router = Process::start_until(
        &["--admin", "127.0.0.1:0", &listen, &echo.addr.to_string()],
        &listening_on(&listen),
    );
    let admin = router.admin_addr();
    let mut client = connect_unix(&listen);
    round_trip(&mut client, b"look at me");
    let credentials = this_process_as_client();
    let who = credentials.strip_prefix("client=").unwrap();
    let connections = get(admin, "/connections");
    assert!(connections.text().contains(who), "{}", connections.text());
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.text().contains(&format!("listener=\"{listen}\"")),
        "{}",
        metrics.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Abstract names
// ---------------------------------------------------------------------------------------------

/// `unix:@name` both ways: an abstract listener forwarding to TCP, and a TCP listener
/// forwarding to an abstract upstream.
#[test]
fn abstract_names_work_both_ways() {
    let echo = echo_upstream();
    let listen = abstract_endpoint("listen");
    let up = unix_echo_upstream(&abstract_endpoint("upstream"));
    let dir = temp_dir("unix-abstract");
    let text = format!(
        "route {listen} {}\nroute 127.0.0.1:0 {}\n",
        echo.addr, up.endpoint
    );
    let (mut router, _) = start_config(&dir, &text, &[&listen]);
    round_trip(&mut connect_unix(&listen), b"to an abstract listener");
    let to_abstract = router.listener_with(&up.endpoint);
    echo_through(to_abstract, b"to an abstract upstream");
    assert_eq!(up.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------

/// A reload keeps a Unix listener whose path is unchanged (the same socket file, its open
/// connection served, its new mode applied) and removes another (its file gone, its open
/// connection still served to its end).
#[test]
fn a_reload_keeps_one_unix_listener_and_removes_another() {
    let echo = echo_upstream();
    let dir = temp_dir("unix-reload");
    let kept = endpoint_in(&dir, "kept.sock");
    let gone = endpoint_in(&dir, "gone.sock");
    let v1 = format!("route {kept} {up}\nroute {gone} {up}\n", up = echo.addr);
    let (mut router, file) = start_config(&dir, &v1, &[&kept, &gone]);
    let inode = std::fs::metadata(path_of(&kept)).unwrap().ino();
    let mut on_kept = connect_unix(&kept);
    let mut on_gone = connect_unix(&gone);
    round_trip(&mut on_kept, b"before the reload");
    round_trip(&mut on_gone, b"before the reload");

    std::fs::write(
        &file,
        format!("route {kept} {} socket_mode=0600\n", echo.addr),
    )
    .unwrap();
    router.signal("HUP");
    router.wait_for_line("reloaded");
    wait_until("the removed listener's file to go", || {
        !path_of(&gone).exists()
    });
    assert!(
        try_connect_unix(&gone).is_err(),
        "the removed listener still accepts"
    );
    let kept_file = std::fs::metadata(path_of(&kept)).unwrap();
    assert_eq!(
        kept_file.ino(),
        inode,
        "the kept listener's file was made again"
    );
    assert_eq!(mode_of(path_of(&kept)), 0o600, "the new mode at reload");

    round_trip(&mut on_kept, &random_bytes(27, 1 << 20));
    round_trip(&mut on_gone, &random_bytes(28, 1 << 20));
    round_trip(&mut connect_unix(&kept), b"a new client after the reload");
}

// ---------------------------------------------------------------------------------------------
// Live upgrade
// ---------------------------------------------------------------------------------------------

/// The exit code of `pid`, a child of the test (re-parented to it), once it has exited.
fn reaped(pid: u32) -> Option<i32> {
    let raw = Pid::from_raw(pid as i32).expect("a pid is positive");
    match rustix::process::waitpid(Some(raw), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Some(status.exit_status().unwrap_or(-1)),
        Ok(None) => None,
        Err(err) => panic!("pid {pid} is not a child of the test: {err}"),
    }
}

/// A process the test did not start but must not leave behind: killed by pid if still there
/// when dropped.
struct KilledOnDrop(u32);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &self.0.to_string()])
                .status();
            let _ = poll_within(PATIENCE, || reaped(self.0));
        }
    }
}

/// A live upgrade moves a Unix client's connection (to a TCP upstream) and a TCP client's
/// connection to a Unix upstream: both carry on byte-exact in the new process, which logs their
/// close lines with every byte counted; the listener's socket file stays through the hand-over
/// and is removed when the new process stops.
#[test]
fn a_live_upgrade_moves_unix_connections_both_ways() {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("make the test a child subreaper");
    let echo = echo_upstream();
    let dir = temp_dir("unix-upgrade");
    let listen = endpoint_in(&dir, "in.sock");
    let up = unix_echo_upstream(&endpoint_in(&dir, "up.sock"));
    let held = reserve_port();
    let tcp_listen = held.addr();
    let text = format!(
        "route {listen} {}\nroute {tcp_listen} {}\n",
        echo.addr, up.endpoint
    );
    let config = dir.write("tcp-router.conf", &text);
    let mut router = Process::start_until(&["-c", &config], &listening_on(&listen));
    router.line_with(&format!("listening on {tcp_listen}"));
    let inode = std::fs::metadata(path_of(&listen)).unwrap().ino();

    let mut from_unix = connect_unix(&listen);
    let mut to_unix = connect(tcp_listen);
    let before = random_bytes(29, 1 << 20);
    round_trip(&mut from_unix, &before);
    round_trip(&mut to_unix, &before);

    let old = router.child.id();
    wait_until("the router to catch SIGUSR2", || catches(old, SIGUSR2));
    router.signal("USR2");
    let handed = router.wait_for_line("upgrade: handed over to pid ");
    let new: u32 = handed
        .split("handed over to pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {handed:?}"));
    let _new_guard = KilledOnDrop(new);
    assert_eq!(router.wait_exit().code(), Some(0), "the old process");
    let file = std::fs::metadata(path_of(&listen)).expect("the socket file after the upgrade");
    assert_eq!(file.ino(), inode, "the socket file was made again");

    let after = random_bytes(30, 2 << 20);
    round_trip(&mut from_unix, &after);
    round_trip(&mut to_unix, &after);
    round_trip(
        &mut connect_unix(&listen),
        b"a new client of the new process",
    );
    close_cleanly(&mut to_unix);
    from_unix.half_close().unwrap();
    assert!(read_all(&mut from_unix).is_empty());
    let total = before.len() + after.len();
    let counted = format!(" sent={total} received={total} ");
    let credentials = this_process_as_client();
    let to_upstream = format!(" upstream={} ", up.endpoint);
    for (whose, needle) in [
        ("the Unix client", &credentials),
        ("the TCP client", &to_upstream),
    ] {
        let found = router.line_where(0, PATIENCE, |line| {
            line.contains("closed #") && line.contains(needle) && line.contains(&counted)
        });
        assert!(
            found.is_ok(),
            "no close line of {whose} with {counted:?}; saw:\n{}",
            router.seen.join("\n")
        );
    }

    send_signal(new, "TERM");
    let code = poll_within(PATIENCE, || reaped(new)).expect("the new process to exit");
    assert_eq!(code, 0, "the new process after SIGTERM");
    assert!(!path_of(&listen).exists(), "{listen} left behind at stop");
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------------------------

/// The PROXY v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// An upstream that reads everything a connection sends and reports it.
fn recording_upstream() -> (Upstream, Receiver<Vec<u8>>) {
    reporting_upstream(|mut stream: TcpStream| {
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        got
    })
}

/// The path bytes of a 108-byte `sun_path` field of a PROXY v2 AF_UNIX address: up to its
/// first NUL.
fn sun_path(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// From a Unix listener, PROXY v2 carries AF_UNIX stream addresses (family byte 0x31, 216 bytes
/// of addresses: the client's unnamed socket empty, the listener's path), and v1 says
/// `PROXY UNKNOWN`; the client's bytes follow each header.
#[test]
fn proxy_headers_from_a_unix_listener() {
    let (up, reports) = recording_upstream();
    let dir = temp_dir("unix-proxy");
    let v2 = endpoint_in(&dir, "v2.sock");
    let v1 = endpoint_in(&dir, "v1.sock");
    let text = format!(
        "route {v2} {up} proxy_protocol=v2\nroute {v1} {up} proxy_protocol=v1\n",
        up = up.addr
    );
    let _router = start_config(&dir, &text, &[&v2, &v1]);

    let mut client = connect_unix(&v2);
    client.write_all(b"after v2").unwrap();
    client.half_close().unwrap();
    let got = reports.recv_timeout(PATIENCE).expect("the v2 connection");
    assert!(got.len() >= 16 + 216, "{got:?}");
    assert_eq!(&got[..12], V2_SIGNATURE);
    assert_eq!(got[12], 0x21, "version 2, PROXY");
    assert_eq!(got[13], 0x31, "AF_UNIX, stream");
    assert_eq!(
        u16::from_be_bytes([got[14], got[15]]),
        216,
        "addresses' length"
    );
    assert_eq!(sun_path(&got[16..124]), b"", "the client's unnamed socket");
    let listener = path_of(&v2).to_str().unwrap().as_bytes();
    assert_eq!(sun_path(&got[124..232]), listener, "the listener's path");
    assert_eq!(&got[232..], b"after v2");

    let mut client = connect_unix(&v1);
    client.write_all(b"after v1").unwrap();
    client.half_close().unwrap();
    let got = reports.recv_timeout(PATIENCE).expect("the v1 connection");
    let text = String::from_utf8_lossy(&got);
    let (header, rest) = text.split_once("\r\n").expect("a header line");
    assert!(header.starts_with("PROXY UNKNOWN"), "{text:?}");
    assert_eq!(rest, "after v1");
}

/// A TCP client going to a Unix upstream gets the TCP addresses in the PROXY header, as always.
#[test]
fn proxy_header_to_a_unix_upstream_carries_the_tcp_addresses() {
    let (tx, reports) = mpsc::channel();
    let tx = Mutex::new(tx);
    let dir = temp_dir("unix-proxy-up");
    let up = unix_upstream(&endpoint_in(&dir, "up.sock"), move |mut stream| {
        let got = read_all(&mut stream);
        let _ = tx.lock().unwrap().send(got);
    });
    let file = dir.write(
        "tcp-router.conf",
        &format!("route 127.0.0.1:0 {} proxy_protocol=v1\n", up.endpoint),
    );
    let router = Process::start(&["-c", &file]);
    let mut client = connect(router.addr);
    send_and_close(&mut client, b"hello");
    let got = reports.recv_timeout(PATIENCE).expect("the connection");
    let me = client.local_addr().unwrap();
    let expected = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\nhello",
        me.port(),
        router.addr.port()
    );
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A socket path of `len` bytes under /tmp.
fn path_of_len(len: usize) -> String {
    let mut path = String::from("/tmp/");
    path.push_str(&"s".repeat(len - path.len()));
    path
}

/// Each bad `unix:` value on the command line: one line naming what is wrong, exit 2.
#[test]
fn bad_unix_arguments_are_one_line_each_and_exit_2() {
    let long = format!("unix:{}", path_of_len(108));
    let cases: &[(&[&str], &str)] = &[
        (
            &["unix:run/a.sock", "127.0.0.1:1"],
            "a socket path must be absolute",
        ),
        (
            &["127.0.0.1:0", "unix:run/a.sock"],
            "a socket path must be absolute",
        ),
        (
            &[&long, "127.0.0.1:1"],
            "longer than the 107 bytes a Unix socket path may have",
        ),
        (&["unix:", "127.0.0.1:1"], "unix:"),
        (&["unix:@", "127.0.0.1:1"], "unix:@"),
        (
            &["--socket-mode", "999", "unix:/tmp/a.sock", "127.0.0.1:1"],
            "999",
        ),
    ];
    for (args, needle) in cases {
        assert_one_line_error(args, needle);
    }
}

/// Each bad `unix:` line of a config file gets its own FILE:LINE: error and --check exits 2:
/// a relative path, a path too long, empty names, a socket key on a TCP listener, a bad mode,
/// UDP or a port range with a Unix socket, and a rinetd line (told to use a `route` line).
#[test]
fn bad_unix_config_lines_are_reported_with_their_line() {
    let dir = temp_dir("unix-check-bad");
    let lines = [
        (
            "route unix:run/a.sock 127.0.0.1:1".to_string(),
            "a socket path must be absolute",
        ),
        (
            format!("route unix:{} 127.0.0.1:1", path_of_len(108)),
            "longer than the 107 bytes a Unix socket path may have",
        ),
        ("route unix: 127.0.0.1:1".to_string(), "unix:"),
        ("route unix:@ 127.0.0.1:1".to_string(), "unix:@"),
        (
            "route 127.0.0.1:9000 127.0.0.1:1 socket_mode=0600".to_string(),
            "socket_mode",
        ),
        (
            "route unix:/tmp/x.sock 127.0.0.1:1 socket_mode=999".to_string(),
            "999",
        ),
        (
            "route 127.0.0.1:5353/udp unix:/tmp/dns.sock".to_string(),
            "unix:",
        ),
        (
            "route unix:/tmp/y.sock 127.0.0.1:9000-9001".to_string(),
            "unix:",
        ),
        ("127.0.0.1 8080 unix:/run/app.sock 80".to_string(), "route"),
    ];
    let text: String = lines.iter().map(|(line, _)| format!("{line}\n")).collect();
    let file = dir.write("bad.conf", &text);
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    for (n, (line, needle)) in lines.iter().enumerate() {
        let prefix = format!("{file}:{}: ", n + 1);
        let error = stderr.lines().find(|l| l.starts_with(&prefix));
        let error = error.unwrap_or_else(|| panic!("no error for {line:?}:\n{stderr}"));
        assert!(error.contains(needle), "{line:?}: {error}");
    }
}

/// Good `unix:` lines check: `--check` prints a Unix listener `unix:/path (mode 0660)`, and a
/// path of exactly 107 bytes is accepted.
#[test]
fn check_prints_a_unix_listener_with_its_mode() {
    let dir = temp_dir("unix-check-good");
    let longest = path_of_len(107);
    let text = format!(
        "route unix:/tmp/tcp-router-check.sock 127.0.0.1:1\n\
         route unix:{longest} 127.0.0.1:1 socket_mode=0600\n\
         route 127.0.0.1:9000 unix:/run/redis/redis.sock\n\
         route unix:@tcp-router-check 127.0.0.1:1\n"
    );
    let file = dir.write("good.conf", &text);
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("unix:/tmp/tcp-router-check.sock (mode 0660)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("unix:{longest} (mode 0600)")),
        "{stdout}"
    );
    assert!(stdout.contains("unix:/run/redis/redis.sock"), "{stdout}");
}
