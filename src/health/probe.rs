//! One active check against one address: connect, an optional PROXY header, then the check's
//! steps or its HTTP request, all within one timeout.
//!
//! Blocking, on the checker's own thread: one socket, one deadline for the whole check, and an
//! abortive close at the end (a reset, so a checker running every few seconds leaves no
//! TIME_WAIT sockets behind). A failure is one line, as the `down:` log line quotes it.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::config::{
    escape_truncated, format_duration, CheckKind, Endpoint, HealthCheck, StatusRange, Step,
};
use crate::proto::proxy::{encode_local, Version};
use crate::sys::net;

use super::member::connect;

/// How much of an upstream's answer a failure quotes, in characters once escaped.
const QUOTED: usize = 64;

/// The most an `expect` reads without finding its text: an upstream that streams is not read
/// forever.
const EXPECT_WINDOW: usize = 16 << 10;

/// The most an HTTP check reads for its status line.
const STATUS_LINE_CAP: usize = 4 << 10;

/// Where a member's checks go: its address, at `check_port` when the check has one (a Unix
/// socket has no port: its checks go to the socket).
pub(crate) fn target(member: &Endpoint, check: &HealthCheck) -> Endpoint {
    match (member, check.port) {
        (Endpoint::Ip(addr), Some(port)) => Endpoint::Ip(SocketAddr::new(addr.ip(), port)),
        _ => member.clone(),
    }
}

/// Runs `check` once against `target`, from `src` if given, sending a PROXY header first when
/// `proxy` says so; `host` is an HTTP check's `Host`. Everything (connect included) must be done
/// within `timeout`. Ok: the time it took. Err: why it failed, one line (`connect: connection
/// refused`, `timed out after 1s`, `expected 'master', got '...'`, `status 503, expected 2xx`).
pub(crate) fn run(
    check: &CheckKind,
    target: &Endpoint,
    host: &str,
    proxy: Option<Version>,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let stream = connect(target, src, timeout).map_err(|err| match err.kind() {
        io::ErrorKind::TimedOut => timed_out(timeout),
        kind => format!("connect: {kind}"),
    })?;
    let mut conn = Conn {
        stream,
        deadline: start + timeout,
        timeout,
        received: Vec::new(),
    };
    let result = conn.exchange(check, host, proxy);
    net::abort(&conn.stream);
    result.map(|()| start.elapsed())
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", format_duration(timeout))
}

/// One check's connection.
struct Conn {
    stream: Socket,
    /// When the whole check must be done.
    deadline: Instant,
    /// The check's timeout, for messages.
    timeout: Duration,
    /// What arrived since the previous matched `expect`.
    received: Vec<u8>,
}

/// What one read brought.
enum Arrival {
    /// Bytes, appended to `received`.
    Some,
    /// The upstream closed its side.
    Closed,
    /// The deadline passed.
    TimedOut,
}

impl Conn {
    /// The check's steps after the connect.
    fn exchange(
        &mut self,
        check: &CheckKind,
        host: &str,
        proxy: Option<Version>,
    ) -> Result<(), String> {
        if let Some(version) = proxy {
            self.send(&encode_local(version))?;
        }
        match check {
            CheckKind::Connect => Ok(()),
            CheckKind::Script(steps) => steps.iter().try_for_each(|step| match step {
                Step::Send(bytes) => self.send(bytes),
                Step::Expect(text) => self.expect(text),
            }),
            CheckKind::Http { path, status } => self.http(path, host, *status),
        }
    }

    /// Time left before the deadline, or the timeout's failure.
    fn left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timed_out(self.timeout))
        } else {
            Ok(left)
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        net::set_send_timeout(&self.stream, Some(self.left()?));
        self.stream
            .write_all(bytes)
            .map_err(|err| match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(self.timeout),
                kind => format!("send: {kind}"),
            })
    }

    /// Reads what arrives next, waiting at most until the deadline.
    fn read(&mut self) -> Result<Arrival, String> {
        let Ok(left) = self.left() else {
            return Ok(Arrival::TimedOut);
        };
        net::set_receive_timeout(&self.stream, Some(left));
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(Arrival::Closed),
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                Ok(Arrival::Some)
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Arrival::TimedOut)
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(Arrival::Some),
            Err(err) => Err(format!("receive: {}", err.kind())),
        }
    }

    /// Waits until what arrived since the previous expect holds `text`; what follows it is kept
    /// for the next.
    fn expect(&mut self, text: &[u8]) -> Result<(), String> {
        loop {
            if let Some(at) = find(&self.received, text) {
                self.received.drain(..at + text.len());
                return Ok(());
            }
            let read = if self.received.len() > EXPECT_WINDOW {
                Arrival::TimedOut
            } else {
                self.read()?
            };
            match read {
                Arrival::Some => continue,
                _ if !self.received.is_empty() => {
                    return Err(format!(
                        "expected '{}', got '{}'",
                        escape_truncated(text, QUOTED),
                        escape_truncated(&self.received, QUOTED)
                    ))
                }
                Arrival::Closed => {
                    return Err(format!(
                        "closed before '{}'",
                        escape_truncated(text, QUOTED)
                    ))
                }
                Arrival::TimedOut => return Err(timed_out(self.timeout)),
            }
        }
    }

    /// `GET path`, passing when the status is in `status`.
    fn http(&mut self, path: &str, host: &str, status: StatusRange) -> Result<(), String> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcp-router-check\r\nConnection: close\r\n\r\n"
        );
        self.send(request.as_bytes())?;
        let line = self.status_line()?;
        match status_code(&line) {
            Some(code) if status.contains(code) => Ok(()),
            Some(code) => Err(format!("status {code}, expected {status}")),
            None => Err(format!(
                "not an HTTP response: '{}'",
                escape_truncated(&line, QUOTED)
            )),
        }
    }

    /// The response's first line, without its line end.
    fn status_line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = find(&self.received, b"\n") {
                let line = &self.received[..end];
                return Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
            }
            if self.received.len() >= STATUS_LINE_CAP {
                return Ok(self.received.clone());
            }
            match self.read()? {
                Arrival::Some => continue,
                Arrival::Closed if self.received.is_empty() => {
                    return Err("closed before the status line".into())
                }
                Arrival::Closed => return Ok(self.received.clone()),
                Arrival::TimedOut => return Err(timed_out(self.timeout)),
            }
        }
    }
}

/// The status of an `HTTP/1.x NNN ...` status line.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let digits = rest.strip_prefix(b" ")?.get(..3)?;
    let after = rest.get(4);
    if !minor.is_ascii_digit() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if after.is_some_and(|&b| b != b' ') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::net::TcpStream;
    use std::thread;

    const SECOND: Duration = Duration::from_secs(1);

    /// A loopback server that serves one connection with `serve` on its own thread; joined (and
    /// its assertions checked) by [`OneShot::done`].
    struct OneShot {
        addr: SocketAddr,
        thread: thread::JoinHandle<()>,
    }

    impl OneShot {
        fn start(serve: impl FnOnce(TcpStream) + Send + 'static) -> OneShot {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let thread = thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                serve(stream);
            });
            OneShot { addr, thread }
        }

        fn done(self) {
            self.thread.join().unwrap();
        }
    }

    /// A server that reads `request` exactly, then writes `answer` and closes.
    fn answering(request: &'static [u8], answer: &'static [u8]) -> OneShot {
        OneShot::start(move |mut stream| {
            let mut got = vec![0; request.len()];
            stream.read_exact(&mut got).unwrap();
            assert_eq!(got, request);
            let _ = stream.write_all(answer);
        })
    }

    /// A server that reads an HTTP request's head and answers with `answer`.
    fn http_server(answer: &'static [u8]) -> OneShot {
        OneShot::start(move |mut stream| {
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            assert_eq!(
                String::from_utf8(head).unwrap(),
                "GET /ready HTTP/1.1\r\nHost: db.example\r\nUser-Agent: tcp-router-check\r\n\
                 Connection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer);
        })
    }

    fn check(value: &str) -> CheckKind {
        value.parse().unwrap()
    }

    fn run_at(kind: &CheckKind, addr: SocketAddr) -> Result<Duration, String> {
        run(kind, &Endpoint::Ip(addr), "db.example", None, None, SECOND)
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn a_connect_check_passes_on_a_listener_and_fails_on_a_closed_port() {
        let server = OneShot::start(drop);
        let took = run_at(&CheckKind::Connect, server.addr).unwrap();
        assert!(took < SECOND, "{took:?}");
        server.done();
        assert_eq!(
            run_at(&CheckKind::Connect, closed_port()),
            Err("connect: connection refused".into())
        );
    }

    #[test]
    fn a_script_passes_when_every_expect_arrives() {
        let server = answering(b"PING\r\nROLE\r\n", b"+PONG\r\n*3\r\n$6\r\nmaster\r\n");
        let redis = check(r"send:PING\r\n,send:ROLE\r\n,expect:+PONG,expect:master");
        assert!(run_at(&redis, server.addr).is_ok());
        server.done();
    }

    #[test]
    fn a_script_fails_quoting_what_arrived_instead() {
        let server = answering(b"ROLE\r\n", b"*3\r\n$5\r\nslave\r\n");
        let err = run_at(&check(r"send:ROLE\r\n,expect:master"), server.addr).unwrap_err();
        assert_eq!(err, r"expected 'master', got '*3\r\n$5\r\nslave\r\n'");
        server.done();
    }

    #[test]
    fn an_expect_looks_only_after_the_previous_match() {
        let server = answering(b"", b"+OK\r\n");
        let err = run_at(&check("expect:+OK,expect:OK"), server.addr).unwrap_err();
        assert_eq!(err, r"expected 'OK', got '\r\n'");
        server.done();
        let server = answering(b"", b"");
        let err = run_at(&check("expect:+OK"), server.addr).unwrap_err();
        assert_eq!(err, "closed before '+OK'");
        server.done();
    }

    #[test]
    fn a_silent_upstream_fails_at_the_timeout_not_later() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let server = OneShot::start(move |_stream| {
            let _ = stopped.recv();
        });
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let result = run(
            &check(r"send:PING\r\n,expect:+PONG"),
            &Endpoint::Ip(server.addr),
            "",
            None,
            None,
            timeout,
        );
        let took = start.elapsed();
        assert_eq!(result, Err("timed out after 300ms".into()));
        assert!(took >= timeout && took < 2 * timeout, "{took:?}");
        stop.send(()).unwrap();
        server.done();
    }

    #[test]
    fn an_http_check_passes_on_a_status_in_range_only() {
        let ready = check("http:/ready");
        let server = http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(run_at(&ready, server.addr).is_ok());
        server.done();
        let server = http_server(b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            run_at(&ready, server.addr),
            Err("status 503, expected 2xx".into())
        );
        server.done();
        let server = http_server(b"HTTP/1.1 503\r\n\r\n");
        let any = CheckKind::Http {
            path: "/ready".into(),
            status: "200-599".parse().unwrap(),
        };
        assert!(run_at(&any, server.addr).is_ok());
        server.done();
    }

    #[test]
    fn an_http_check_refuses_what_is_not_a_status_line() {
        let ready = check("http:/ready");
        let server = http_server(b"SSH-2.0-OpenSSH_9.6\r\n");
        assert_eq!(
            run_at(&ready, server.addr),
            Err(r"not an HTTP response: 'SSH-2.0-OpenSSH_9.6'".into())
        );
        server.done();
        let server = http_server(b"");
        assert_eq!(
            run_at(&ready, server.addr),
            Err("closed before the status line".into())
        );
        server.done();
        for line in [
            &b"HTTP/1.1 20"[..],
            b"HTTP/2 200",
            b"HTTP/1.1 2000",
            b"HTTP/1.1 +20",
        ] {
            assert_eq!(status_code(line), None, "{line:?}");
        }
        assert_eq!(status_code(b"HTTP/1.1 204"), Some(204));
    }

    #[test]
    fn a_proxy_header_goes_first_on_every_check() {
        let server = answering(b"PROXY UNKNOWN\r\n", b"");
        let result = run(
            &CheckKind::Connect,
            &Endpoint::Ip(server.addr),
            "",
            Some(Version::V1),
            None,
            SECOND,
        );
        assert!(result.is_ok());
        server.done();
        let server = answering(b"\r\n\r\n\0\r\nQUIT\n\x20\0\0\0PING", b"+PONG");
        let result = run(
            &check("send:PING,expect:+PONG"),
            &Endpoint::Ip(server.addr),
            "",
            Some(Version::V2),
            None,
            SECOND,
        );
        assert!(result.is_ok(), "{result:?}");
        server.done();
    }

    #[test]
    fn checks_go_to_the_check_port_when_there_is_one() {
        let server = OneShot::start(drop);
        let mut health = HealthCheck {
            kind: CheckKind::Connect,
            port: Some(server.addr.port()),
            host: None,
            interval: SECOND,
            timeout: None,
            rise: 1,
            fall: 1,
        };
        let member: Endpoint = "127.0.0.1:6379".parse().unwrap();
        let at = target(&member, &health);
        assert_eq!(at, Endpoint::Ip(server.addr));
        assert!(run_at(&health.kind, server.addr).is_ok());
        server.done();
        health.port = None;
        assert_eq!(target(&member, &health), member);
    }
}
