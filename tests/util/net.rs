//! Clients and the loopback addresses they need: connecting with timeouts (from a chosen source
//! address too), addresses that refuse or are held, reading to the end or to the close, and
//! round trips through an echo upstream.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::PATIENCE;

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

/// Connects a test client with read and write timeouts of [`PATIENCE`], so a hang fails the test.
pub fn connect(addr: SocketAddr) -> TcpStream {
    connect_with(addr, PATIENCE)
}

/// Connects a client whose reads and writes time out after `timeout`: for a connection that
/// must sit through more than one wait (an upgrade, a gate the test opens later).
pub fn connect_with(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream
}

/// Connects from the loopback address 127.0.0.`last`.
pub fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    connect_from_ip(Ipv4Addr::new(127, 0, 0, last), to)
}

/// Connects from `from`, a loopback address (any of 127.0.0.0/8).
pub fn connect_from_ip(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from = SocketAddr::from((from, 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// An address as an argument.
pub fn s(addr: SocketAddr) -> String {
    addr.to_string()
}

// ---------------------------------------------------------------------------------------------
// Addresses that refuse, ports held
// ---------------------------------------------------------------------------------------------

/// A loopback address that refuses connections for as long as it lives: a TCP socket bound to a
/// port the kernel chose and never put in listen state, so a SYN to it is answered with a reset,
/// and (bound without SO_REUSEADDR) no other socket can take the port meanwhile.
pub struct DeadAddr {
    pub addr: SocketAddr,
    _socket: Socket,
}

/// An address where nothing listens and nothing can start listening while the guard lives.
pub fn dead_addr() -> DeadAddr {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    DeadAddr {
        addr,
        _socket: socket,
    }
}

/// A loopback port held for a server that cannot be told to pick its own (redis-server): a socket
/// bound with SO_REUSEADDR and never listening. The kernel hands the port to no other socket that
/// asks for port 0, while a server that sets SO_REUSEADDR itself (as redis-server does) can bind
/// and listen on it. Keep the guard until the server is gone.
pub struct ReservedPort {
    pub port: u16,
    _socket: Socket,
}

impl ReservedPort {
    /// The held port on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Reserves a free loopback port; see [`ReservedPort`].
pub fn reserve_port() -> ReservedPort {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    ReservedPort {
        port,
        _socket: socket,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads an HTTP request head, byte by byte, up to and including its blank line; `None` if the
/// stream ends or fails first.
pub fn read_http_head(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// Reads until end of stream; fails the test on timeout or error (a reset included).
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read to end of stream");
    out
}

/// Reads exactly `n` bytes.
pub fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    stream.read_exact(&mut out).expect("read exact");
    out
}

/// How a stream ended, as the reading side saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A clean end of stream.
    Fin,
    /// A reset, after every byte before it.
    Reset,
    /// Anything else (a timeout: the end never came).
    Other(ErrorKind),
}

/// Reads until the stream ends, and says how. A reset that another thread's write on the same
/// socket collected first leaves a read of zero bytes; the socket then has no peer, which a FIN
/// does not do.
pub fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                let reset =
                    matches!(stream.peer_addr(), Err(e) if e.kind() == ErrorKind::NotConnected);
                return (got, if reset { Ending::Reset } else { Ending::Fin });
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, Ending::Reset),
            Err(e) => return (got, Ending::Other(e.kind())),
        }
    }
}

/// Reads until the peer closes; a reset counts as closed (a refused client may get either, and
/// an HTTP server may reset after its answer). Fails the test on anything else (a timeout).
pub fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    match read_to_close(stream) {
        (got, Ending::Fin | Ending::Reset) => got,
        (got, Ending::Other(kind)) => {
            panic!(
                "read until the peer closes: {kind:?} after {} bytes",
                got.len()
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing, and round trips through an echo upstream
// ---------------------------------------------------------------------------------------------

/// Writes all of `data` then shuts down the write side.
pub fn send_and_close(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
}

/// Sends `text` on `stream` (TCP or Unix) and reads as many bytes back; `Err` says which step
/// failed or what came back instead.
pub fn try_round_trip(stream: &mut (impl Read + Write), text: &[u8]) -> Result<(), String> {
    stream
        .write_all(text)
        .map_err(|e| format!("send {}: {e}", shown(text)))?;
    let mut back = vec![0u8; text.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("echo of {}: {e}", shown(text)))?;
    if back != text {
        return Err(format!("sent {}, got back {}", shown(text), shown(&back)));
    }
    Ok(())
}

/// Bytes for a message: quoted as text when short, by their length when long (a bulk transfer).
fn shown(bytes: &[u8]) -> String {
    if bytes.len() <= 256 {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("{} bytes", bytes.len())
    }
}

/// Sends `text` and expects it back from an echo upstream; returns how long that took. Fails
/// the test otherwise.
pub fn round_trip(stream: &mut (impl Read + Write), text: &[u8]) -> Duration {
    let started = Instant::now();
    try_round_trip(stream, text).unwrap_or_else(|e| panic!("{e}"));
    started.elapsed()
}

/// True if `text` comes back; false if the connection was refused, closed, or left waiting past
/// its read timeout.
pub fn echoes(stream: &mut TcpStream, text: &[u8]) -> bool {
    try_round_trip(stream, text).is_ok()
}

/// A new connection to `addr` that sends `text`, ends its side and gets `text` back, then the
/// end of stream.
pub fn echo_through(addr: SocketAddr, text: &[u8]) {
    let mut stream = connect(addr);
    send_and_close(&mut stream, text);
    assert_eq!(
        read_to_end(&mut stream),
        text,
        "the echo of {:?} through {addr}",
        String::from_utf8_lossy(text)
    );
}

/// Ends the client's side and expects the end of stream back, and nothing else.
pub fn close_cleanly(stream: &mut TcpStream) {
    stream
        .shutdown(Shutdown::Write)
        .expect("shut down the write side");
    let rest = read_to_end(stream);
    assert!(rest.is_empty(), "{} unexpected bytes", rest.len());
}
