//! Unix-domain sockets: endpoints written as the router reads them (`unix:/path`, `unix:@name`),
//! upstreams listening on them, clients connecting to them, the binary started on one, and the
//! stream operations the tests share between TCP and Unix sockets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use super::{bin, serve_each, Process, PATIENCE};

/// The socket address an endpoint names: a file for `unix:/path`, a Linux abstract name for
/// `unix:@name`.
pub fn unix_addr(endpoint: &str) -> UnixAddr {
    let rest = endpoint
        .strip_prefix("unix:")
        .unwrap_or_else(|| panic!("{endpoint:?} is not a unix: endpoint"));
    match rest.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()).unwrap(),
        None => UnixAddr::from_pathname(rest).unwrap(),
    }
}

/// An abstract name (`unix:@...`) no other test or run uses, with `tag` in it.
pub fn abstract_endpoint(tag: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "unix:@tcp-router-test-{tag}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Connects to `endpoint`, or says why not.
pub fn try_connect_unix(endpoint: &str) -> io::Result<UnixStream> {
    UnixStream::connect_addr(&unix_addr(endpoint))
}

/// Connects a client to `endpoint` with read and write timeouts of [`PATIENCE`]; fails the test
/// if the connect does.
pub fn connect_unix(endpoint: &str) -> UnixStream {
    let stream =
        try_connect_unix(endpoint).unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// A test upstream listening on a Unix endpoint, serving each connection on its own thread.
pub struct UnixUpstream {
    /// Where it listens, as the router is told (`unix:/path` or `unix:@name`).
    pub endpoint: String,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

/// Listens on `endpoint` and serves every accepted connection with `serve` on its own thread.
pub fn unix_upstream<F>(endpoint: &str, serve: F) -> UnixUpstream
where
    F: Fn(UnixStream) + Send + Sync + 'static,
{
    let listener = UnixListener::bind_addr(&unix_addr(endpoint))
        .unwrap_or_else(|e| panic!("listen on {endpoint}: {e}"));
    let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(stream, _)| stream)));
    UnixUpstream {
        endpoint: endpoint.to_string(),
        accepted: serve_each(incoming, serve),
    }
}

/// A Unix upstream that echoes everything back and, at end of stream, shuts down its write side.
pub fn unix_echo_upstream(endpoint: &str) -> UnixUpstream {
    unix_upstream(endpoint, echo)
}

/// Echoes `stream` back to itself until end of stream, then shuts down its write side.
pub fn echo<S: Stream>(mut stream: S) {
    let mut reader = stream.clone_stream();
    let _ = io::copy(&mut reader, &mut stream);
    let _ = stream.half_close();
}

/// What the tests do alike on a TCP and a Unix stream.
pub trait Stream: Read + Write + Send + Sized + 'static {
    /// Shuts down the write side: the peer reads end of stream.
    fn half_close(&self) -> io::Result<()>;
    /// A second handle on the same socket (for a reader beside a writer).
    fn clone_stream(&self) -> Self;
}

impl Stream for TcpStream {
    fn half_close(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn clone_stream(&self) -> Self {
        self.try_clone().unwrap()
    }
}

impl Stream for UnixStream {
    fn half_close(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn clone_stream(&self) -> Self {
        self.try_clone().unwrap()
    }
}

/// Writes `data` on a thread (so a peer that answers while it reads cannot deadlock the test),
/// then shuts down the write side; the thread's result says whether every byte went.
pub fn send_then_half_close<S: Stream>(
    stream: &S,
    data: Vec<u8>,
) -> thread::JoinHandle<io::Result<()>> {
    let mut writer = stream.clone_stream();
    thread::spawn(move || {
        writer.write_all(&data)?;
        writer.half_close()
    })
}

/// Reads `stream` until end of stream; fails the test on an error or a timeout.
pub fn read_all<S: Stream>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read to end of stream after {} bytes: {e}", out.len()));
    out
}

impl Process {
    /// Starts the binary with `args` and waits until it logs a line containing `needle` (for a
    /// router whose first listener is a Unix one, whose address [`Process::start`] cannot
    /// parse); `addr` is unset.
    pub fn start_until(args: &[&str], needle: &str) -> Process {
        let mut command = Command::new(bin());
        command.args(args);
        let mut process = Process::spawn_command(command);
        process.wait_for_line(needle);
        process
    }
}

/// The `listening on unix:...` line's start for `endpoint`.
pub fn listening_on(endpoint: &str) -> String {
    format!("listening on {endpoint}")
}
