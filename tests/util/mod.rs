//! Shared helpers: a router on an ephemeral port (library or binary), upstreams that echo, speak
//! first or reset, addresses that refuse, scratch directories, visible skips, deterministic
//! random data and deadlines instead of sleeps.

#![allow(dead_code, reason = "each test module uses its own subset")]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

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

/// How many connections the kernel holds in the backlog of the listening socket bound to `addr`
/// (handshake done, not yet accepted), from `/proc/net/tcp`: a listener's `rx_queue` there is its
/// accept queue. Fails the test if no socket listens on `addr`.
pub fn accept_queue(addr: SocketAddr) -> usize {
    const LISTEN: &str = "0A";
    tcp_table_row(addr, |local, _, state| {
        state == LISTEN && local == Some(addr)
    })
    .unwrap_or_else(|| panic!("no socket listens on {addr}"))
    .rx_queue
}

/// Bytes `stream` has written that its peer has not acknowledged yet (the socket's `tx_queue` in
/// `/proc/net/tcp`); 0 once the socket is closed.
pub fn send_queue(stream: &TcpStream) -> usize {
    tcp_row(stream).map_or(0, |row| row.tx_queue)
}

/// Bytes that `stream`'s peer socket (its other end, in this network namespace) has received and
/// its program has not read yet (that socket's `rx_queue` in `/proc/net/tcp`); 0 if it is gone.
pub fn peer_unread(stream: &TcpStream) -> usize {
    peer_row(stream).map_or(0, |row| row.rx_queue)
}

/// True while the kernel's TCP table has a socket from `local` to `remote` (a reset removes it).
pub fn tcp_socket_exists(local: SocketAddr, remote: SocketAddr) -> bool {
    connection_row(local, remote).is_some()
}

/// True once `stream`'s peer socket (its other end, in this network namespace) has sent its FIN
/// and not had it acknowledged, with bytes before it still unacknowledged too (its state in
/// `/proc/net/tcp` is FIN_WAIT1).
pub fn peer_has_sent_its_fin(stream: &TcpStream) -> bool {
    const FIN_WAIT1: u8 = 0x04;
    peer_row(stream).is_some_and(|row| row.state == FIN_WAIT1)
}

/// True once `stream`'s peer has sent its FIN and this side has not closed yet (the socket's
/// state in `/proc/net/tcp` is CLOSE_WAIT).
pub fn peer_has_half_closed(stream: &TcpStream) -> bool {
    const CLOSE_WAIT: u8 = 0x08;
    tcp_row(stream).is_some_and(|row| row.state == CLOSE_WAIT)
}

/// `stream`'s row of the kernel's TCP table, while it has one.
fn tcp_row(stream: &TcpStream) -> Option<TcpRow> {
    connection_row(stream.local_addr().ok()?, stream.peer_addr().ok()?)
}

/// The row of `stream`'s other end (in this network namespace), while it has one.
fn peer_row(stream: &TcpStream) -> Option<TcpRow> {
    connection_row(stream.peer_addr().ok()?, stream.local_addr().ok()?)
}

/// The row of the socket from `local` to `remote`.
fn connection_row(local: SocketAddr, remote: SocketAddr) -> Option<TcpRow> {
    tcp_table_row(local, |l, r, _| l == Some(local) && r == Some(remote))
}

/// What the tests read of a row of the kernel's TCP table.
struct TcpRow {
    state: u8,
    tx_queue: usize,
    rx_queue: usize,
}

/// The first row of the kernel's TCP table for `addr`'s family that `pick` chooses from its local
/// address, remote address and state (as printed, in hex).
fn tcp_table_row(
    addr: SocketAddr,
    pick: impl Fn(Option<SocketAddr>, Option<SocketAddr>, &str) -> bool,
) -> Option<TcpRow> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).expect("read the kernel's TCP table");
    text.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (local, remote, state, queues) = (fields[1], fields[2], fields[3], fields[4]);
        if !pick(proc_net_addr(local), proc_net_addr(remote), state) {
            return None;
        }
        let (tx, rx) = queues.split_once(':')?;
        Some(TcpRow {
            state: u8::from_str_radix(state, 16).ok()?,
            tx_queue: usize::from_str_radix(tx, 16).ok()?,
            rx_queue: usize::from_str_radix(rx, 16).ok()?,
        })
    })
}

/// Decodes an address as `/proc/net/tcp{,6}` prints it: the address's bytes in host order, as
/// hex words, then `:` and the port in hex.
fn proc_net_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[8 * i..8 * i + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Waits until `done` holds, checking every millisecond, for state no event announces (the
/// kernel's tables); fails the test naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(1));
    }
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

pub fn checksum(data: &[u8]) -> (u64, u64) {
    let mut sum = Checksum::new();
    sum.update(data);
    sum.finish()
}

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcp-router")
}

/// The address of a `listening on ADDR -> ...` line.
pub fn listening_addr(line: &str) -> SocketAddr {
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address after 'listening on'")
        .parse()
        .expect("listening address")
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
        let mut command = Command::new(bin());
        command.args(args);
        Process::start_command(command)
    }

    /// Starts `command` (the binary, or something that runs it) and waits until it logs its
    /// listening address.
    pub fn start_command(command: Command) -> Process {
        let mut process = Process::spawn_command(command);
        let line = process.wait_for_line("listening on ");
        process.addr = listening_addr(&line);
        process
    }

    /// Starts `command` without waiting for anything; `addr` is unset.
    pub fn spawn_command(mut command: Command) -> Process {
        let mut child = command
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
        Process {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            seen: Vec::new(),
        }
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

/// Connects from the loopback address 127.0.0.`last`.
pub fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    connect_from_ip(std::net::Ipv4Addr::new(127, 0, 0, last), to)
}

/// Connects from `from`, a loopback address (any of 127.0.0.0/8).
pub fn connect_from_ip(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from = SocketAddr::from((from, 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
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

/// State and parent of `pid`, from /proc/PID/stat (after the command name, which may hold
/// spaces and parentheses).
pub fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

pub fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, parent)| parent)
}

/// True while `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z')
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Kid(pub std::process::Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server` on 127.0.0.1 with its own port (`mode`: `-www`, or `-rev` and the like),
/// ready once it said `ACCEPT`.
pub struct TlsServer {
    pub addr: SocketAddr,
    _kid: Kid,
}

impl TlsServer {
    pub fn start(key: &Path, cert: &Path, mode: &[&str]) -> TlsServer {
        let mut kid = Kid(Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0"])
            .args(mode)
            .arg("-key")
            .arg(key)
            .arg("-cert")
            .arg(cert)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server"));
        let stdout = kid.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keeps reading for the server's whole life, so its output can never fill the pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("s_server printed no ACCEPT line");
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                break addr.trim().parse().expect("s_server's ACCEPT address");
            }
        };
        TlsServer { addr, _kid: kid }
    }
}

/// Waits for `kid` to exit; fails naming `what` after a minute (generous: a copy or an
/// `openssl req` takes milliseconds).
pub fn wait_kid(kid: &mut Kid, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = kid.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit in time");
        // Polling the child's status: there is no portable blocking wait with a timeout.
        thread::sleep(Duration::from_millis(5));
    }
}

/// Makes a self-signed EC key and certificate for `cn` in `dir`; returns (key, cert).
pub fn self_signed(dir: &TempDir, file_tag: &str, cn: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(&format!("{file_tag}-key.pem"));
    let cert = dir.join(&format!("{file_tag}-cert.pem"));
    let mut req = Kid(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1", "-subj", &format!("/CN={cn}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl req"));
    assert!(
        wait_kid(&mut req, "openssl req").success(),
        "openssl req failed for {cn}"
    );
    (key, cert)
}

/// True when the tests run as root (uid 0), from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(uids.split_whitespace().next()? == "0")
        })
        .unwrap_or(false)
}
