//! Processes: the binary as a [`Process`] whose stderr the test reads line by line, tools run to
//! completion, children killed when a test fails, signals, and `openssl` peers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::{poll_within, TempDir, PATIENCE};

/// How long a helper child (cp, `openssl req`, `openssl s_client`) may take: generous, since each
/// takes milliseconds.
const KID_PATIENCE: Duration = Duration::from_secs(60);

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

/// True if `line` logs a TCP listener (not a UDP one, `listening on ADDR/udp -> ...`, nor a Unix
/// one, `listening on unix:...`) and contains `needle`.
fn tcp_listening(line: &str, needle: &str) -> bool {
    line.contains("listening on ")
        && !line.contains("/udp -> ")
        && !line.contains("listening on unix:")
        && line.contains(needle)
}

/// The binary running with `args`; its stderr lines are forwarded to a channel.
pub struct Process {
    pub child: Child,
    pub lines: Receiver<String>,
    pub addr: SocketAddr,
    /// Every stderr line received so far, in order: a line's index here says what came before it.
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
        let line = (process.line_where(0, PATIENCE, |line| tcp_listening(line, "")))
            .unwrap_or_else(|_| panic!("no TCP listener logged; saw:\n{}", process.seen.join("\n")))
            .1;
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
        let lines = lines_of(child.stderr.take().unwrap());
        Process {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            seen: Vec::new(),
        }
    }

    /// Moves every line written so far into `seen`; returns how many lines it has: a line from
    /// here on was written after this call.
    pub fn drain(&mut self) -> usize {
        self.seen.extend(self.lines.try_iter());
        self.seen.len()
    }

    /// The first line at or after index `from` of `seen` for which `pick` holds, and its index,
    /// receiving lines as they come until `patience` has passed; `pick` sees each line once, in
    /// order. `Err` says whether time ran out or every writer closed the pipe.
    pub fn line_where(
        &mut self,
        from: usize,
        patience: Duration,
        mut pick: impl FnMut(&str) -> bool,
    ) -> Result<(usize, String), RecvTimeoutError> {
        let deadline = Instant::now() + patience;
        let mut next = from;
        loop {
            while let Some(line) = self.seen.get(next) {
                if pick(line) {
                    return Ok((next, line.clone()));
                }
                next += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.seen.push(self.lines.recv_timeout(left)?);
        }
    }

    /// The first line from index `from` on containing `needle` and its index; fails the test
    /// after [`PATIENCE`] with every line seen.
    fn line_containing(&mut self, from: usize, needle: &str) -> (usize, String) {
        self.line_where(from, PATIENCE, |line| line.contains(needle))
            .unwrap_or_else(|_| {
                panic!(
                    "no stderr line containing {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                )
            })
    }

    /// Waits for a new stderr line (one not in `seen` yet) containing `needle`; fails the test
    /// after [`PATIENCE`].
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.line_containing(self.seen.len(), needle).1
    }

    /// The first stderr line containing `needle`: among those seen already, or the next one.
    pub fn line_with(&mut self, needle: &str) -> String {
        self.line_containing(0, needle).1
    }

    /// Waits until `n` stderr lines in all (those seen already count) contain `needle`.
    pub fn wait_for_lines(&mut self, needle: &str, n: usize) {
        let mut from = 0;
        for _ in 0..n {
            from = self.line_containing(from, needle).0 + 1;
        }
    }

    /// The address of the listener whose `listening on` line contains `needle` too.
    pub fn listener_with(&mut self, needle: &str) -> SocketAddr {
        let line = self
            .line_where(0, PATIENCE, |l| tcp_listening(l, needle))
            .unwrap_or_else(|_| {
                panic!(
                    "no listener logged with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                )
            })
            .1;
        listening_addr(&line)
    }

    /// The address of the UDP listener whose `listening on ADDR/udp -> ...` line contains
    /// `needle` too.
    pub fn udp_listener_with(&mut self, needle: &str) -> SocketAddr {
        let line = self
            .line_where(0, PATIENCE, |l| {
                l.contains("listening on ") && l.contains("/udp -> ") && l.contains(needle)
            })
            .unwrap_or_else(|_| {
                panic!(
                    "no UDP listener logged with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                )
            })
            .1;
        listening_addr(&line.replacen("/udp -> ", " -> ", 1))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// Waits for the process to exit; fails the test after [`PATIENCE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for_exit(&mut self.child, "tcp-router", PATIENCE)
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

/// Every line `pipe` gives, read on a thread for the pipe's whole life (so it never fills).
pub fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// What `pick` makes of the first line from `lines` it accepts; fails the test naming `what`
/// after [`PATIENCE`], with the lines passed over.
pub fn first_line<T>(
    lines: &Receiver<String>,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    let mut passed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => match pick(&line) {
                Some(value) => return value,
                None => passed.push(line),
            },
            Err(_) => panic!("no line: {what}; saw:\n{}", passed.join("\n")),
        }
    }
}

/// Waits for `child` to exit; fails the test naming `what` after `patience`. (It polls: there is
/// no portable blocking wait with a timeout.)
pub fn wait_for_exit(child: &mut Child, what: &str, patience: Duration) -> ExitStatus {
    poll_within(patience, || child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("{what} did not exit within {patience:?}"))
}

/// Sends `signal` (a name kill(1) knows: `TERM`, `USR2`) to `pid`; fails the test if kill does.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid}");
}

/// Runs the binary to completion with `args`; returns (exit code, stdout, stderr).
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

/// Runs the binary with `args` and expects a usage or configuration error: exit code 2 and one
/// line on stderr, containing `needle`, and no panic.
pub fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, _, stderr) = run_bin(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

/// What a tool run to completion printed.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// Standard output and standard error, for messages and searches.
    pub fn both(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `command` with `stdin` as its input and reads what it prints; fails the test if it
/// takes longer than [`PATIENCE`].
pub fn run_tool(command: &mut Command, stdin: &[u8]) -> ToolOutput {
    let mut child = Kid(command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}")));
    let mut input = child.0.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written from a thread so a tool that does not read its input cannot block the test.
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = drain(Box::new(child.0.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.0.stderr.take().unwrap()));
    let status = wait_for_exit(&mut child.0, &format!("{command:?}"), PATIENCE);
    ToolOutput {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Kid(pub Child);

impl Kid {
    /// Waits for the child to exit; fails naming `what` after a minute.
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        wait_for_exit(&mut self.0, what, KID_PATIENCE)
    }
}

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
        let lines = lines_of(kid.0.stdout.take().unwrap());
        let addr = first_line(&lines, "s_server's ACCEPT line", |line| {
            let addr = line.strip_prefix("ACCEPT ")?;
            Some(addr.trim().parse().expect("s_server's ACCEPT address"))
        });
        TlsServer { addr, _kid: kid }
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
        req.wait_exit("openssl req").success(),
        "openssl req failed for {cn}"
    );
    (key, cert)
}
