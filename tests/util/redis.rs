//! redis-server for a test: started on a held loopback port (or a Unix socket file), ready once
//! it answers a PING, spoken to in raw RESP (inline commands) so a test needs no client library,
//! and redis-cli.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{
    connect, first_line, lines_of, read_exact, reserve_port, run_tool, Kid, ReservedPort, PATIENCE,
};

/// redis-server on 127.0.0.1 for one test, killed and reaped on drop.
pub struct RedisServer {
    _kid: Kid,
    pub addr: SocketAddr,
    /// Holds the port until redis-server is gone (redis cannot be told to pick its own).
    _port: ReservedPort,
}

impl RedisServer {
    /// Starts redis-server on a reserved port and returns once it has logged that it accepts
    /// connections and has answered a PING over a socket; fails the test after
    /// [`super::PATIENCE`].
    pub fn start() -> RedisServer {
        let port = reserve_port();
        let kid = spawn_redis(&["--port", &port.port.to_string(), "--bind", "127.0.0.1"]);
        let server = RedisServer {
            _kid: kid,
            addr: port.addr(),
            _port: port,
        };
        expect_pong(connect(server.addr));
        server
    }

    /// Sends the inline command `line` and expects `+OK`.
    pub fn ok(&self, line: &str) {
        let mut stream = connect(self.addr);
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        assert_eq!(
            read_exact(&mut stream, 5),
            b"+OK\r\n",
            "redis-server on {} answers {line:?}",
            self.addr
        );
    }

    /// Makes this server a replica of `primary` (`REPLICAOF`).
    pub fn replicate(&self, primary: &RedisServer) {
        self.ok(&format!("REPLICAOF 127.0.0.1 {}", primary.addr.port()));
    }

    /// Makes this server a primary (`REPLICAOF NO ONE`).
    pub fn promote(&self) {
        self.ok("REPLICAOF NO ONE");
    }
}

/// What redis-cli prints for `args`, sent to 127.0.0.1:`port`, trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = run_tool(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        b"",
    );
    out.stdout.trim().to_string()
}

/// redis-server listening only on a Unix socket file (`--unixsocket PATH --port 0`), killed
/// and reaped on drop.
pub struct UnixRedisServer {
    _kid: Kid,
    /// The socket file.
    pub path: PathBuf,
}

impl UnixRedisServer {
    /// Starts redis-server on the socket file `path` (mode 0700) and returns once it has logged
    /// that it accepts connections and has answered a PING there.
    pub fn start(path: &Path) -> UnixRedisServer {
        let kid = spawn_redis(&[
            "--port",
            "0",
            "--unixsocket",
            path.to_str().expect("a UTF-8 path"),
            "--unixsocketperm",
            "700",
        ]);
        let ping = UnixStream::connect(path).expect("connect to redis-server's socket");
        ping.set_read_timeout(Some(PATIENCE)).unwrap();
        expect_pong(ping);
        UnixRedisServer {
            _kid: kid,
            path: path.to_path_buf(),
        }
    }
}

/// redis-server started with `listen` (its listening options) and no persistence, once it has
/// logged that it accepts connections; fails the test after [`super::PATIENCE`].
fn spawn_redis(listen: &[&str]) -> Kid {
    let mut kid = Kid(Command::new("redis-server")
        .args(listen)
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server"));
    // redis-server logs to stdout.
    let lines = lines_of(kid.0.stdout.take().unwrap());
    first_line(&lines, "redis-server ready to accept connections", |line| {
        // "Ready to accept connections" on TCP; "... ready to accept connections at PATH" on
        // a socket file alone.
        let line = line.to_ascii_lowercase();
        line.contains("ready to accept connections").then_some(())
    });
    kid
}

/// Sends PING on `stream` and expects PONG.
fn expect_pong(mut stream: impl Read + Write) {
    stream.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    stream
        .read_exact(&mut pong)
        .expect("redis-server's answer to PING");
    assert_eq!(&pong, b"+PONG\r\n", "redis-server answers PING");
}

/// The port of the redis-server `stream` reaches (`CONFIG GET port`), the stream left open; 0
/// if it answers with an error (a replica loading its primary's data says `-LOADING`).
pub fn redis_port(stream: &mut TcpStream) -> u16 {
    try_redis_port(stream).unwrap_or_else(|why| panic!("{why}"))
}

/// [`redis_port`], or why the stream gave no answer (it was cut, or closed).
pub fn try_redis_port(stream: &mut TcpStream) -> Result<u16, String> {
    stream
        .write_all(b"CONFIG GET port\r\n")
        .map_err(|e| format!("CONFIG GET port: {e}"))?;
    // *2 CRLF $4 CRLF port CRLF $N CRLF DIGITS CRLF: five line ends; an error is one line.
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    let line_ends = |got: &[u8]| got.windows(2).filter(|w| w == b"\r\n").count();
    while line_ends(&got) < 5 {
        if got.first() == Some(&b'-') && line_ends(&got) == 1 {
            return Ok(0);
        }
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => {
                return Err(format!(
                    "CONFIG GET port: {other:?} after {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.lines()
        .nth(4)
        .and_then(|port| port.trim().parse().ok())
        .ok_or_else(|| format!("no port in {text:?}"))
}
