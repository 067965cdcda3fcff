//! Shared helpers, one per idea: a router on an ephemeral port (in this process here, the binary
//! in [`process`]), upstreams that echo, report or hold, patience instead of sleeps, scratch
//! directories, visible skips, the repository's own files and deterministic data. Clients and round trips are in [`net`],
//! the admin endpoint's client in [`admin`], what the tests read of /proc in [`procfs`], redis-server in [`redis`], haproxy with `accept-proxy` in [`haproxy`], extra loopback
//! addresses and /etc/hosts names in [`hosts`], and Unix-domain sockets in [`unix`].

#![allow(dead_code, reason = "each test module uses its own subset")]

mod admin;
mod haproxy;
mod hosts;
mod net;
mod process;
mod procfs;
mod redis;
mod unix;

pub use admin::*;
pub use haproxy::*;
pub use hosts::*;
pub use net::*;
pub use process::*;
pub use procfs::*;
pub use redis::*;
pub use unix::*;

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tcp_router::proto::tls::parse_client_hello;
use tcp_router::proto::Parsed;
use tcp_router::{Config, DrainReport, Forwarder, Handle, HostPort, Listener, Route};

// ---------------------------------------------------------------------------------------------
// Patience
// ---------------------------------------------------------------------------------------------

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often a poll looks again at state no event announces.
const POLL: Duration = Duration::from_millis(1);

/// Polls `poll` until it gives a value, and returns that; `None` if it has given none after
/// `patience`. For state no event announces (the kernel's tables, /proc, counters, an endpoint's
/// answers, a child's exit); the caller fails the test with what it saw last.
pub fn poll_within<T>(patience: Duration, poll: impl FnMut() -> Option<T>) -> Option<T> {
    poll_paced(patience, || thread::sleep(POLL), poll)
}

/// Waits until `done` holds (see [`poll_within`]); fails the test naming `what` after
/// [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    poll_within(PATIENCE, || done().then_some(()))
        .unwrap_or_else(|| panic!("gave up waiting: {what}"));
}

/// [`wait_until`] looking again at once, only yielding the processor between looks: for a step
/// that must follow the state as closely as a real program's would (a close right after the
/// send queue empties).
pub fn spin_until(what: &str, mut done: impl FnMut() -> bool) {
    poll_paced(PATIENCE, thread::yield_now, || done().then_some(()))
        .unwrap_or_else(|| panic!("gave up waiting: {what}"));
}

/// Polls `poll` until it gives a value or `patience` has passed, calling `pause` between looks.
fn poll_paced<T>(
    patience: Duration,
    pause: impl Fn(),
    mut poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = poll() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        pause();
    }
}

// ---------------------------------------------------------------------------------------------
// A router in this process
// ---------------------------------------------------------------------------------------------

/// A router running in this process on 127.0.0.1:0.
pub struct Router {
    pub addr: SocketAddr,
    pub handle: Handle,
    thread: Option<JoinHandle<DrainReport>>,
}

impl Router {
    /// Stops the router and returns its drain report.
    pub fn stop(mut self) -> DrainReport {
        self.handle.stop();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("router thread panicked")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// A single-listener config on 127.0.0.1:0 forwarding to `upstreams`.
pub fn config_to(upstreams: &[SocketAddr]) -> Config {
    let route = Route::new(upstreams.iter().map(|a| HostPort::from(*a)).collect());
    let mut listener = Listener::new("127.0.0.1:0".parse().unwrap());
    listener.routes.push(route);
    let mut config = Config::default();
    config.listeners.push(listener);
    config.drain_timeout = Duration::from_secs(5);
    config
}

/// Starts a router with `config` in a thread; clients may connect as soon as this returns.
pub fn start_router(config: Config) -> Router {
    let forwarder = Forwarder::from_config(&config).expect("bind router");
    let addr = forwarder.local_addr();
    let handle = forwarder.handle();
    let thread = thread::spawn(move || forwarder.serve().expect("router run"));
    Router {
        addr,
        handle,
        thread: Some(thread),
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------------

/// A test upstream: a listener on 127.0.0.1:0 serving each connection on its own thread.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

/// Serves every accepted connection with `serve` on its own thread.
pub fn upstream<F>(serve: F) -> Upstream
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(stream, _)| stream)));
    let accepted = serve_each(incoming, serve);
    Upstream { addr, accepted }
}

/// Serves every stream `incoming` accepts with `serve` on its own thread, from a thread of its
/// own; returns the count of streams accepted so far.
pub fn serve_each<S, F>(
    incoming: impl Iterator<Item = io::Result<S>> + Send + 'static,
    serve: F,
) -> Arc<AtomicUsize>
where
    S: Send + 'static,
    F: Fn(S) + Send + Sync + 'static,
{
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for stream in incoming {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let serve = Arc::clone(&serve);
            thread::spawn(move || serve(stream));
        }
    });
    accepted
}

/// Serves every connection with `serve` (see [`upstream`]) and reports what it returned for each,
/// in the order they end: what the upstream received, or how it saw the stream end.
pub fn reporting_upstream<T, F>(serve: F) -> (Upstream, mpsc::Receiver<T>)
where
    T: Send + 'static,
    F: Fn(TcpStream) -> T + Send + Sync + 'static,
{
    let (tx, reports) = mpsc::channel();
    let tx = Mutex::new(tx);
    let up = upstream(move |stream| {
        let report = serve(stream);
        let _ = tx.lock().unwrap().send(report);
    });
    (up, reports)
}

/// Echoes everything back; at end of stream, shuts down its write side.
pub fn echo_upstream() -> Upstream {
    upstream(|mut stream| {
        let mut reader = stream.try_clone().unwrap();
        let _ = io::copy(&mut reader, &mut stream);
        let _ = stream.shutdown(Shutdown::Write);
    })
}

// ---------------------------------------------------------------------------------------------
// Scratch directories and skips
// ---------------------------------------------------------------------------------------------

/// A scratch directory under the system temp dir, unique to this process and call, removed on
/// drop.
pub struct TempDir(PathBuf);

/// A fresh scratch directory whose name contains `name`.
pub fn temp_dir(name: &str) -> TempDir {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "tcp-router-test-{name}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&path).expect("create temp dir");
    TempDir(path)
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path of `name` in this directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` in this directory; returns its path as a string, for argv.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True if `tool` is an executable file in a directory of PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// Where every skip is also recorded, one line each: `target/skipped-tests.txt` (libtest captures
/// a passing test's stderr, so `make test` shows this file instead).
pub fn skip_file() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .join("skipped-tests.txt")
}

/// Records that `test` (or the part of it named there) did not run because of `reason`: one line
/// `SKIPPED: <test>: <reason>` on stderr and appended to [`skip_file`]. The test then returns.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED: {test}: {reason}\n");
    eprint!("{line}");
    // One write of one short line to a file opened for appending: lines from tests running at
    // the same time do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_file())
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        eprintln!("cannot record the skip in {}: {err}", skip_file().display());
    }
}

/// True (after recording the skip with [`skip`]) if one of `tools` is not on PATH, so `test`
/// should return.
pub fn skip_without(test: &str, tools: &[&str]) -> bool {
    match tools.iter().find(|tool| !on_path(tool)) {
        Some(tool) => {
            skip(test, &format!("{tool} not installed"));
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The repository's own files
// ---------------------------------------------------------------------------------------------

/// The text of `path`, relative to the repository's root (a page of docs/, a manual page, the
/// manifest).
pub fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The body of the first ```` ```lang ```` block after `intro` in `page`: what the page quotes
/// there.
pub fn fenced_block<'a>(page: &'a str, intro: &str, lang: &str) -> &'a str {
    let at = page
        .find(intro)
        .unwrap_or_else(|| panic!("no {intro:?} in the page"));
    let after = &page[at + intro.len()..];
    let fence = format!("```{lang}\n");
    let start = after
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block after {intro:?}"))
        + fence.len();
    let end = start
        + after[start..]
            .find("```")
            .unwrap_or_else(|| panic!("no end of the block after {intro:?}"));
    &after[start..end]
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*), different per seed. The only PRNG of the
/// integration tests.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fast order-sensitive checksum (FNV-1a over 64-bit words), to compare streams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    hash: u64,
    len: u64,
    /// Bytes not yet forming a whole word, kept so chunk boundaries do not matter.
    tail: [u8; 8],
    tail_len: usize,
}

impl Checksum {
    pub fn new() -> Checksum {
        Checksum {
            hash: 0xcbf2_9ce4_8422_2325,
            ..Default::default()
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while self.tail_len > 0 && !data.is_empty() {
            self.tail[self.tail_len] = data[0];
            self.tail_len += 1;
            data = &data[1..];
            if self.tail_len == 8 {
                self.word(u64::from_le_bytes(self.tail));
                self.tail_len = 0;
            }
        }
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            self.word(u64::from_le_bytes(word.try_into().unwrap()));
        }
        for &b in words.remainder() {
            self.tail[self.tail_len] = b;
            self.tail_len += 1;
        }
    }

    fn word(&mut self, w: u64) {
        self.hash = (self.hash ^ w).wrapping_mul(0x0000_0100_0000_01B3);
    }

    pub fn finish(mut self) -> (u64, u64) {
        for i in 0..self.tail_len {
            self.word(self.tail[i] as u64 | 0x100);
        }
        (self.hash, self.len)
    }
}

/// The [`Checksum`] of `data`: (hash, length).
pub fn checksum(data: &[u8]) -> (u64, u64) {
    let mut sum = Checksum::new();
    sum.update(data);
    sum.finish()
}

/// A minimal TLS 1.2-style ClientHello record with `name` in the server_name extension; checked
/// to parse to that name (lower-cased, as routing compares names).
pub fn client_hello(name: &str) -> Vec<u8> {
    let name_bytes = name.as_bytes();
    let mut server_name = Vec::new();
    server_name.extend_from_slice(&(name_bytes.len() as u16 + 3).to_be_bytes());
    server_name.push(0); // host_name
    server_name.extend_from_slice(&(name_bytes.len() as u16).to_be_bytes());
    server_name.extend_from_slice(name_bytes);
    let mut extensions = vec![0x00, 0x00]; // server_name
    extensions.extend_from_slice(&(server_name.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&server_name);
    let mut body = vec![0x03, 0x03]; // legacy_version: TLS 1.2
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(body.len() as u16 + 4).to_be_bytes());
    record.push(0x01); // ClientHello
    record.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&body);
    let lower = name.to_ascii_lowercase();
    assert!(
        matches!(
            parse_client_hello(&record),
            Ok(Parsed::Complete(hello)) if hello.server_name.as_deref() == Some(lower.as_str())
        ),
        "the ClientHello for {name:?} does not parse to its name"
    );
    record
}
