//! Shared helpers: a router on an ephemeral port (library or binary), upstreams that echo, speak
//! first or reset, deterministic random data and deadlines instead of sleeps.

#![allow(dead_code, reason = "each test module uses its own subset")]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tcp_router::{Config, DrainReport, Forwarder, Handle, HostPort, Listener, Route};

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

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
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let serve = Arc::clone(&serve);
            thread::spawn(move || serve(stream));
        }
    });
    Upstream { addr, accepted }
}

/// Echoes everything back; at end of stream, shuts down its write side.
pub fn echo_upstream() -> Upstream {
    upstream(|mut stream| {
        let mut reader = stream.try_clone().unwrap();
        let _ = io::copy(&mut reader, &mut stream);
        let _ = stream.shutdown(Shutdown::Write);
    })
}

/// An address where nothing listens (a port just released).
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Connects a test client with read and write timeouts, so a hang fails the test.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to router");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads until end of stream; fails the test on timeout or error.
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

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
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

pub fn checksum(data: &[u8]) -> (u64, u64) {
    let mut sum = Checksum::new();
    sum.update(data);
    sum.finish()
}

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcp-router")
}

/// The binary running with `args`; its stderr lines are forwarded to a channel.
pub struct Process {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub addr: SocketAddr,
    /// Every stderr line seen so far by `wait_for_line`.
    pub seen: Vec<String>,
}

impl Process {
    /// Starts the binary and waits until it logs its listening address.
    pub fn start(args: &[&str]) -> Process {
        let mut child = Command::new(bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcp-router");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Process {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            seen: Vec::new(),
        };
        let line = process.wait_for_line("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("address after 'listening on'");
        process.addr = addr.parse().expect("listening address");
        process
    }

    /// Waits for a stderr line containing `needle`; fails the test after [`PATIENCE`].
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; fails the test after [`PATIENCE`].
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "tcp-router did not exit");
            // Polling the child's status: there is no portable blocking wait with a timeout.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything left on stderr after exit.
    pub fn rest_of_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args`; returns (exit code, stderr).
pub fn run_bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tcp-router");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes all of `data` then shuts down the write side.
pub fn send_and_close(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
}
