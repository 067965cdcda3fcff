//! Live upgrade end to end: SIGUSR2 makes tcp-router start a new process from the binary's path on
//! disk, hand it every listener and every established connection (byte counts, half-closed
//! directions and bytes in flight included), and exit 0; an upgrade that cannot finish leaves the
//! old process serving everything, and a later SIGUSR2 may try again.
//!
//! The router runs from a copy of the binary in a scratch directory, so a test can rename another
//! file over it (writing over a running binary fails with ETXTBSY). Its listeners are on ports
//! the test holds ([`ReservedPort`]), fixed addresses, so nothing depends on how port 0 in the
//! config is carried through an upgrade. Only the first process is the test's child. The test
//! makes itself a child subreaper, so each later process is re-parented to it when the process
//! that started it exits, and its exit status can be read like a child's.
//!
//! What the tests rely on from the router: the pid file names the process serving; stderr (shared
//! by every process, since each inherits it) has `upgrade: starting` from the old process,
//! `upgrade: took over` from the new one, then `upgrade: handed over to pid NEWPID` from the old
//! one, or `upgrade failed: REASON`; the `closed #ID` line of a connection is written by the
//! process that owns it when it closes; `TCP_ROUTER_HANDOFF_VERSION` in the new process's
//! environment overrides the version of the hand-over it speaks.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitOptions};

use crate::util::*;

/// How long one step of an upgrade, or anything waiting on one, may take before the test fails:
/// longer than [`PATIENCE`], since an upgrade moves a thousand connections while two cores are
/// busy with a bulk transfer.
const PATIENT: Duration = Duration::from_secs(60);

/// Read and write timeout of the connections that live through the upgrades: they may sit
/// through a whole upgrade, or wait for the test to open their gate; a hang still fails.
const STALL: Duration = Duration::from_secs(300);

/// Bytes of the bulk transfer in each direction.
const BULK: u64 = 512 << 20;
/// The bulk transfer is written and checksummed one chunk at a time.
const CHUNK: usize = 1 << 20;
/// How far the bulk transfer's readers may go before the first upgrade, and before the second;
/// the writers may go [`AHEAD`] further, more than every buffer between them holds (two sockets'
/// send and receive buffers, at most 4 and 32 MiB here, and the router's pipe), so they stall
/// on full buffers before the gate.
const FIRST_STAGE: u64 = 128 << 20;
const SECOND_STAGE: u64 = 320 << 20;
const AHEAD: u64 = 128 << 20;
/// How long the writers must make no progress to count as stalled on full buffers.
const STALLED: Duration = Duration::from_millis(200);
/// Bytes at least in flight each way (past the readers, written by the writers) at each upgrade.
const PENDING: u64 = 2 << 20;
/// Seeds of the two directions' streams (chunk `i` is `random_bytes(SEED + i, CHUNK)`).
const CLIENT_SEED: u64 = 1 << 40;
const UPSTREAM_SEED: u64 = 2 << 40;

/// Idle connections held open across the upgrades.
const IDLE_CONNECTIONS: usize = 1000;

/// What the half-closed connection's client sends before ending its side.
const REQUEST: &[u8] = b"half-closed: answer me after both upgrades\n";
/// Bytes of the answer, more than the sockets' buffers hold, so it streams.
const ANSWER_LEN: usize = 4 << 20;

/// The server name the TLS connection asks for, and its backend's certificate names.
const TLS_NAME: &str = "tls.upgrade.test";

/// The variable that makes a new process speak another hand-over version.
const VERSION_VARIABLE: &str = "TCP_ROUTER_HANDOFF_VERSION";

/// The log lines of the contract.
const STARTING: &str = "upgrade: starting";
const TOOK_OVER: &str = "upgrade: took over";
const HANDED_OVER: &str = "upgrade: handed over to pid ";
const FAILED: &str = "upgrade failed:";

/// SIGUSR2's number, for its bit in /proc/PID/status.
const SIGUSR2: u32 = 12;

// ---------------------------------------------------------------------------------------------
// The router's processes: started from a copy of the binary, followed through the pid file
// ---------------------------------------------------------------------------------------------

/// How a process ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Code(i32),
    Signal(i32),
}

impl Ended {
    fn of(status: ExitStatus) -> Ended {
        match status.code() {
            Some(code) => Ended::Code(code),
            None => Ended::Signal(status.signal().unwrap_or(-1)),
        }
    }
}

/// One upgrade that succeeded.
pub(crate) struct Upgrade {
    pub(crate) old: u32,
    pub(crate) new: u32,
    /// Where the old process's `handed over` line is among the lines seen.
    handed_over_at: usize,
}

/// tcp-router running from `binary`, a copy of the built binary in its own scratch directory,
/// with a config file and a pid file there.
pub(crate) struct Upgradable {
    /// The first process, the test's child. Every later process writes to the same stderr pipe,
    /// so its `lines` and `seen` are the log of all of them, in the order written.
    pub(crate) first: Process,
    dir: TempDir,
    binary: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
    /// Processes started by upgrades and not reaped yet: killed if the test ends early.
    later: Vec<u32>,
}

impl Upgradable {
    /// Starts the copy with `config` (which has `listeners` listeners) and waits until each
    /// listener is logged and the pid file names the process.
    pub(crate) fn start(name: &str, config: &str, listeners: usize) -> Upgradable {
        become_subreaper();
        let dir = temp_dir(name);
        let binary = dir.join("tcp-router");
        copy_by_child(Path::new(bin()), &binary);
        let config = PathBuf::from(dir.write("tcp-router.conf", config));
        let pid_file = dir.join("tcp-router.pid");
        let mut command = Command::new(&binary);
        command
            .arg("-c")
            .arg(&config)
            .arg("--pid-file")
            .arg(&pid_file)
            // Room for the idle connections and everything else, well under the open-files limit.
            .args(["--max-connections", "3000"])
            .env_remove(VERSION_VARIABLE);
        let mut router = Upgradable {
            first: Process::spawn_command(command),
            dir,
            binary,
            config,
            pid_file,
            later: Vec::new(),
        };
        let mut from = 0;
        for n in 1..=listeners {
            let (at, _) = router.line_after(
                from,
                &["listening on "],
                &format!("listener {n} of {listeners} to be logged"),
            );
            from = at + 1;
        }
        let pid = router.first.child.id();
        let pid_file = router.pid_file.clone();
        router.wait_for("the pid file to name the first process", || {
            pid_in(&pid_file) == Some(pid)
        });
        router
    }

    /// The pid the pid file names.
    fn pid(&mut self) -> u32 {
        if let Some(pid) = pid_in(&self.pid_file) {
            return pid;
        }
        let tail = self.tail();
        panic!(
            "no pid in {}; the router's stderr ends:\n{tail}",
            self.pid_file.display()
        )
    }

    /// The number of lines written so far: lines from here on were written after this call.
    fn mark(&mut self) -> usize {
        self.first.drain()
    }

    /// The last lines written, without the churn's clean connections (they would fill it).
    fn tail(&mut self) -> String {
        self.first.drain();
        let churn = format!(" sent={CHURN_LEN} received={CHURN_LEN} ");
        let lines: Vec<&str> = self
            .first
            .seen
            .iter()
            .filter(|l| !l.contains(&churn))
            .map(String::as_str)
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The first line at or after index `from` of the log containing one of `needles`, and its
    /// index; fails naming `what` after [`PATIENT`].
    fn line_after(&mut self, from: usize, needles: &[&str], what: &str) -> (usize, String) {
        let found = self.first.line_where(from, PATIENT, |line| {
            needles.iter().any(|needle| line.contains(needle))
        });
        match found {
            Ok(found) => found,
            Err(RecvTimeoutError::Timeout) => panic!(
                "gave up after {PATIENT:?} waiting for {what} (a line with {needles:?}); the \
                 router's stderr ends:\n{}",
                self.tail()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "every router process closed its stderr while the test waited for {what} (a \
                 line with {needles:?}); it ends:\n{}",
                self.tail()
            ),
        }
    }

    /// Polls `poll` until it gives a value, for state no log line announces (counters, files,
    /// /proc); fails naming `what` after [`PATIENT`].
    fn poll_until<T>(
        &mut self,
        what: &str,
        mut poll: impl FnMut(&mut Upgradable) -> Option<T>,
    ) -> T {
        let found = poll_within(PATIENT, || {
            let value = poll(self);
            if value.is_none() {
                self.first.drain();
            }
            value
        });
        found.unwrap_or_else(|| {
            panic!(
                "gave up after {PATIENT:?} waiting for {what}; the router's stderr ends:\n{}",
                self.tail()
            )
        })
    }

    /// Waits until `done` holds; see [`Upgradable::poll_until`].
    fn wait_for(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        self.poll_until(what, |_| done().then_some(()));
    }

    /// Waits until `pid` has SIGUSR2's handler installed: sent earlier, the signal would kill it.
    fn wait_until_it_catches_usr2(&mut self, pid: u32) {
        self.wait_for(&format!("pid {pid} to catch SIGUSR2"), || {
            catches(pid, SIGUSR2)
        });
    }

    /// Sends SIGUSR2 to the process the pid file names and waits until a new process has taken
    /// over, running the file now at the binary's path, the old one has exited 0, and the pid
    /// file names the new one.
    pub(crate) fn upgrade(&mut self) -> Upgrade {
        let old = self.pid();
        self.wait_until_it_catches_usr2(old);
        let from = self.mark();
        send_signal(old, "USR2");
        let what = format!("the end of pid {old}'s upgrade");
        let (handed_over_at, line) = self.line_after(from, &[HANDED_OVER, FAILED], &what);
        if line.contains(FAILED) {
            panic!(
                "pid {old}'s upgrade failed: {line}\nthe router's stderr ends:\n{}",
                self.tail()
            );
        }
        let new: u32 = line
            .split(HANDED_OVER)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid after {HANDED_OVER:?} in {line:?}"));
        assert_ne!(new, old, "{line}");
        self.later.push(new);
        let (starting_at, _) = self.line_after(from, &[STARTING], "the upgrade's first line");
        assert!(starting_at < handed_over_at, "{STARTING:?} after {line:?}");
        self.line_after(from, &[TOOK_OVER], "the new process's line");
        let ended = self.wait_exit(old);
        assert_eq!(
            ended,
            Ended::Code(0),
            "pid {old} after handing over to {new}; the router's stderr ends:\n{}",
            self.tail()
        );
        let pid_file = self.pid_file.clone();
        self.wait_for(&format!("the pid file to name pid {new}"), || {
            pid_in(&pid_file) == Some(new)
        });
        assert_runs(new, &self.binary);
        Upgrade {
            old,
            new,
            handed_over_at,
        }
    }

    /// Sends SIGUSR2 to the process the pid file names, expects the upgrade to fail, and checks
    /// the process is still there and still named by the pid file; returns the failure's line.
    fn failed_upgrade(&mut self) -> String {
        let old = self.pid();
        self.wait_until_it_catches_usr2(old);
        let from = self.mark();
        send_signal(old, "USR2");
        let what = format!("the end of pid {old}'s upgrade");
        let (_, line) = self.line_after(from, &[HANDED_OVER, FAILED], &what);
        assert!(
            line.contains(FAILED),
            "an upgrade that should fail did not: {line}"
        );
        self.line_after(from, &[STARTING], "the upgrade's first line");
        assert!(alive(old), "pid {old} is gone after {line:?}");
        assert_eq!(pid_in(&self.pid_file), Some(old), "after {line:?}");
        line
    }

    /// Waits until `pid` (the first process, or a later one re-parented to the test) exits.
    fn wait_exit(&mut self, pid: u32) -> Ended {
        let ended = if pid == self.first.child.id() {
            self.poll_until(
                &format!("pid {pid} (the first process) to exit"),
                |router| {
                    let status = router.first.child.try_wait().expect("wait for the router");
                    status.map(Ended::of)
                },
            )
        } else {
            self.poll_until(&format!("pid {pid} to exit"), |_| reaped(pid))
        };
        self.later.retain(|p| *p != pid);
        ended
    }

    /// SIGTERM to the process the pid file names, which must drain and exit 0.
    pub(crate) fn stop(&mut self) {
        let pid = self.pid();
        send_signal(pid, "TERM");
        let ended = self.wait_exit(pid);
        assert_eq!(
            ended,
            Ended::Code(0),
            "pid {pid} after SIGTERM; the router's stderr ends:\n{}",
            self.tail()
        );
    }

    /// Renames a copy of `file` (a new file, even if `file` is what runs) over the binary: what
    /// the next upgrade must start.
    fn install(&self, file: &Path) {
        let new = self.dir.join("tcp-router.new");
        copy_by_child(file, &new);
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&new, &self.binary).expect("rename the new binary over the old");
    }

    /// Renames a shell script with `text` over the binary. The text is written to a file that is
    /// never executed, and copied from there (see [`copy_by_child`]).
    fn install_script(&self, text: &str) {
        let source = self.dir.write("script.sh", text);
        self.install(Path::new(&source));
    }

    /// The `closed #` lines at or after index `from` of the connections in `keys`, every one of
    /// them, in the order of `keys`; waits for those not written yet.
    fn close_lines(&mut self, from: usize, keys: &[Key]) -> Vec<Vec<(usize, String)>> {
        let wanted: HashMap<&Key, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
        let mut found: Vec<Vec<(usize, String)>> = vec![Vec::new(); keys.len()];
        let mut missing = keys.len();
        // Records the line at index `at`; true once every key has a line.
        let mut record = |at: usize, line: &str| {
            let slots = Key::of(line)
                .into_iter()
                .filter_map(|key| wanted.get(&key).copied());
            for slot in slots {
                missing -= usize::from(found[slot].is_empty());
                found[slot].push((at, line.to_string()));
            }
            missing == 0
        };
        let mut at = from;
        let last = self.first.line_where(from, PATIENT, |line| {
            at += 1;
            record(at - 1, line)
        });
        let Ok((last, _)) = last else {
            let absent: Vec<String> = keys
                .iter()
                .zip(&found)
                .filter(|(_, lines)| lines.is_empty())
                .take(10)
                .map(|(key, _)| format!("{key:?}"))
                .collect();
            panic!(
                "gave up after {PATIENT:?} waiting for the close lines of {missing} \
                 connection(s), among them {absent:?}; the router's stderr ends:\n{}",
                self.tail()
            )
        };
        // The lines received already after the last one wanted: a second close line there must
        // be seen too.
        for (at, line) in self.first.seen.iter().enumerate().skip(last + 1) {
            record(at, line);
        }
        found
    }
}

impl Drop for Upgradable {
    /// A test that failed half-way may leave later processes running, and one started but not
    /// announced yet (named by the pid file, re-parented to the test): they are killed, by pid,
    /// and reaped. The first process is `first`'s to kill.
    fn drop(&mut self) {
        let mut pids = self.later.clone();
        if let Some(pid) = pid_in(&self.pid_file) {
            let first = self.first.child.id();
            if pid != first && !pids.contains(&pid) && parent_of(pid) == Some(std::process::id()) {
                pids.push(pid);
            }
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
            if let Some(pid) = Pid::from_raw(pid as i32) {
                let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
            }
        }
    }
}

/// Copies `from` to `to` with cp(1). A file that will be executed is never written by the test
/// process itself: a process another test thread forks meanwhile would hold the descriptor open
/// for writing until it execs, and executing the file then fails with ETXTBSY.
fn copy_by_child(from: &Path, to: &Path) {
    let mut cp = Kid(Command::new("cp")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn cp"));
    let status = cp.wait_exit("cp");
    assert!(status.success(), "cp {} {}", from.display(), to.display());
}

/// Makes the test process the subreaper of its descendants: a router process whose parent
/// exits becomes the test's child, so its exit status can be read. (Process-wide, and harmless
/// to the other tests: an orphan of theirs would only wait here instead of under init.)
fn become_subreaper() {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("make the test a child subreaper");
}

/// The exit of `pid`, a child of the test, if it has exited (reaping it).
fn reaped(pid: u32) -> Option<Ended> {
    let raw = Pid::from_raw(pid as i32).expect("a pid is positive");
    match rustix::process::waitpid(Some(raw), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Some(match status.exit_status() {
            Some(code) => Ended::Code(code),
            None => Ended::Signal(status.terminating_signal().unwrap_or(-1)),
        }),
        Ok(None) => None,
        Err(err) => panic!(
            "pid {pid} is not a child of the test, though its parent exited and the test is a \
             child subreaper: {err}"
        ),
    }
}

/// The pid a pid file holds, if it holds one.
fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Asserts `pid` runs the very file at `binary` now (not a file it replaced).
fn assert_runs(pid: u32, binary: &Path) {
    let running = std::fs::metadata(format!("/proc/{pid}/exe")).expect("pid's executable");
    let on_disk = std::fs::metadata(binary).expect("the binary");
    assert_eq!(
        (running.dev(), running.ino()),
        (on_disk.dev(), on_disk.ino()),
        "pid {pid} does not run the file at {} (the upgrade started another file)",
        binary.display()
    );
}

/// A connection as its `closed #` line names it: client and listener addresses, or only the
/// listener (for a client whose address the test does not know, the only one of its listener).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    client: Option<SocketAddr>,
    listener: SocketAddr,
}

impl Key {
    fn of_stream(stream: &TcpStream, listener: SocketAddr) -> Key {
        Key {
            client: Some(stream.local_addr().unwrap()),
            listener,
        }
    }

    /// Both keys a `closed #` line matches (with and without its client); none for another line.
    fn of(line: &str) -> Vec<Key> {
        if !line.contains("closed #") {
            return Vec::new();
        }
        let field = |name: &str| -> Option<SocketAddr> {
            line.split(&format!(" {name}="))
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        };
        let (Some(client), Some(listener)) = (field("client"), field("listener")) else {
            return Vec::new();
        };
        vec![
            Key {
                client: Some(client),
                listener,
            },
            Key {
                client: None,
                listener,
            },
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and upstreams
// ---------------------------------------------------------------------------------------------

/// What idle connection `i` sends before the upgrades and after them.
fn idle_text(i: usize, when: &str) -> Vec<u8> {
    format!("idle {i:04} {when} the upgrades\n").into_bytes()
}

/// An upstream that reads its client's request to the end, reports it, and answers `answer`
/// (then closes) only when released.
fn answering_after_release(answer: Vec<u8>) -> (Upstream, Receiver<Vec<u8>>, Sender<()>) {
    let (got_tx, got_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let got_tx = Mutex::new(got_tx);
    let release_rx = Mutex::new(release_rx);
    let up = upstream(move |mut stream| {
        stream.set_read_timeout(Some(STALL)).unwrap();
        stream.set_write_timeout(Some(STALL)).unwrap();
        let mut request = Vec::new();
        if stream.read_to_end(&mut request).is_err() {
            return;
        }
        let _ = got_tx.lock().unwrap().send(request);
        if release_rx.lock().unwrap().recv_timeout(STALL).is_err() {
            return;
        }
        let _ = stream.write_all(&answer);
    });
    (up, got_rx, release_tx)
}

// ---------------------------------------------------------------------------------------------
// The bulk transfer: 512 MiB each way at once, in stages the test opens
// ---------------------------------------------------------------------------------------------

/// How far the bulk connection's ends may go (as a byte count), opened stage by stage by the test.
struct Gate {
    open_to: Mutex<u64>,
    opened: Condvar,
}

impl Gate {
    fn new(bytes: u64) -> Gate {
        Gate {
            open_to: Mutex::new(bytes),
            opened: Condvar::new(),
        }
    }

    fn open_to(&self, bytes: u64) {
        *self.open_to.lock().unwrap() = bytes;
        self.opened.notify_all();
    }

    /// Waits until the gate is open to at least `bytes`, and returns how far it is open; an
    /// error after [`STALL`].
    fn wait_for(&self, bytes: u64) -> Result<u64, String> {
        let open_to = self.open_to.lock().unwrap();
        let (open_to, waited) = self
            .opened
            .wait_timeout_while(open_to, STALL, |open_to| *open_to < bytes)
            .unwrap();
        if waited.timed_out() {
            return Err(format!("the gate stayed below {bytes} bytes for {STALL:?}"));
        }
        Ok(*open_to)
    }
}

/// One end of the bulk connection.
#[derive(Debug, Clone, Copy)]
enum End {
    Client,
    Upstream,
}

impl End {
    /// The first seed of the stream this end writes.
    fn seed(self) -> u64 {
        match self {
            End::Client => CLIENT_SEED,
            End::Upstream => UPSTREAM_SEED,
        }
    }
}

/// Bytes one end has written (whole chunks the kernel took) and read.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
}

/// The bulk transfer's state, shared by its two ends and the test: both directions move alike.
/// Writers stay behind `write` and readers behind `read`; with `read` below `write`, the readers
/// stop while the writers go on until every buffer between them is full, so bytes are pending
/// in the router (and in the sockets) when the test upgrades it.
struct Bulk {
    write: Gate,
    read: Gate,
    client: Counts,
    upstream: Counts,
}

impl Bulk {
    fn new(read: u64, write: u64) -> Arc<Bulk> {
        Arc::new(Bulk {
            write: Gate::new(write),
            read: Gate::new(read),
            client: Counts::default(),
            upstream: Counts::default(),
        })
    }

    fn counts(&self, end: End) -> &Counts {
        match end {
            End::Client => &self.client,
            End::Upstream => &self.upstream,
        }
    }

    /// Lets the readers go to `read` bytes and the writers to `write`.
    fn open_to(&self, read: u64, write: u64) {
        self.read.open_to(read);
        self.write.open_to(write);
    }

    /// Bytes in flight each way (sent by one end, not yet read by the other): client to
    /// upstream, upstream to client.
    fn in_flight(&self) -> (u64, u64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        (
            load(&self.client.sent).saturating_sub(load(&self.upstream.received)),
            load(&self.upstream.sent).saturating_sub(load(&self.client.received)),
        )
    }

    /// True once both readers are at `read` and at least `pending` more bytes are in flight
    /// each way.
    fn held_at(&self, read: u64, pending: u64) -> bool {
        let got = |end: End| self.counts(end).received.load(Ordering::SeqCst);
        let (up, down) = self.in_flight();
        got(End::Client) == read && got(End::Upstream) == read && up >= pending && down >= pending
    }

    /// True once neither writer has made progress for [`STALLED`]: every buffer between the
    /// ends is full, the router's own included. `last` is the previous sample and when it
    /// changed. (No event says that nothing moves; the relay's slow-reader test samples too.)
    fn writers_stalled(&self, last: &mut ((u64, u64), Instant)) -> bool {
        let sent = (
            self.client.sent.load(Ordering::SeqCst),
            self.upstream.sent.load(Ordering::SeqCst),
        );
        if sent != last.0 {
            *last = (sent, Instant::now());
        }
        last.1.elapsed() >= STALLED
    }

    /// Waits until the readers are at `read`, bytes are in flight each way and the writers have
    /// stalled on full buffers.
    fn wait_until_held(&self, router: &mut Upgradable, read: u64) {
        let mut last = ((0, 0), Instant::now());
        router.wait_for(
            &format!(
                "the bulk transfer to be held at {} MiB, buffers full",
                read >> 20
            ),
            || self.held_at(read, PENDING) && self.writers_stalled(&mut last),
        );
    }

    /// What the bulk counters say, for messages.
    fn describe(&self) -> String {
        let counts = |end: End| {
            let counts = self.counts(end);
            let sent = counts.sent.load(Ordering::SeqCst);
            let received = counts.received.load(Ordering::SeqCst);
            format!("{end:?} sent {sent}, received {received}")
        };
        format!("{}; {}", counts(End::Client), counts(End::Upstream))
    }
}

/// What one end of the bulk connection sent and received: checksum and length of each.
#[derive(Debug, Clone, Copy)]
struct Ends {
    sent: (u64, u64),
    received: (u64, u64),
}

/// One end of the bulk connection: writes [`BULK`] bytes of its own stream as far as the write
/// gate lets it, then ends its direction; meanwhile reads the other direction, as far as the read
/// gate lets it, to its end.
fn bulk_end(stream: TcpStream, end: End, bulk: Arc<Bulk>) -> Result<Ends, String> {
    stream.set_read_timeout(Some(STALL)).unwrap();
    stream.set_write_timeout(Some(STALL)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let writing = Arc::clone(&bulk);
    let sender = thread::spawn(move || -> Result<(u64, u64), String> {
        let mut sum = Checksum::new();
        for i in 0..BULK / CHUNK as u64 {
            writing.write.wait_for((i + 1) * CHUNK as u64)?;
            let chunk = random_bytes(end.seed() + i, CHUNK);
            sum.update(&chunk);
            writer
                .write_all(&chunk)
                .map_err(|e| format!("write after {i} MiB: {e}"))?;
            let sent = &writing.counts(end).sent;
            sent.fetch_add(CHUNK as u64, Ordering::SeqCst);
        }
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("end of stream after writing: {e}"))?;
        Ok(sum.finish())
    });
    let mut reader = stream;
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; 256 << 10];
    let received = &bulk.counts(end).received;
    loop {
        let got = received.load(Ordering::SeqCst);
        // At the end of the stream the gate is open to all of it: one more read finds the end
        // (or bytes that should not be there, which the checksum then counts).
        let open_to = bulk.read.wait_for((got + 1).min(BULK))?;
        let room = open_to.saturating_sub(got).clamp(1, buf.len() as u64) as usize;
        match reader.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => {
                sum.update(&buf[..n]);
                received.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    let sent = sender
        .join()
        .map_err(|_| "the writer panicked".to_string())??;
    Ok(Ends {
        sent,
        received: sum.finish(),
    })
}

/// The bulk connection's upstream ([`bulk_end`] on each connection); reports its ends.
fn bulk_upstream(bulk: &Arc<Bulk>) -> (Upstream, Receiver<Result<Ends, String>>) {
    let bulk = Arc::clone(bulk);
    reporting_upstream(move |stream| bulk_end(stream, End::Upstream, Arc::clone(&bulk)))
}

/// The bulk connection's client, on its own thread: its address, and its ends when done.
fn bulk_client(addr: SocketAddr, bulk: &Arc<Bulk>) -> (SocketAddr, Receiver<Result<Ends, String>>) {
    let stream = connect_with(addr, STALL);
    let local = stream.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let bulk = Arc::clone(bulk);
    thread::spawn(move || {
        let _ = tx.send(bulk_end(stream, End::Client, bulk));
    });
    (local, rx)
}

/// What an end of the bulk connection reported, once it has.
fn bulk_result(rx: &Receiver<Result<Ends, String>>, end: &str) -> Option<Ends> {
    match rx.try_recv() {
        Ok(Ok(ends)) => Some(ends),
        Ok(Err(err)) => panic!("the bulk connection's {end}: {err}"),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => panic!("the bulk connection's {end} reported nothing"),
    }
}

// ---------------------------------------------------------------------------------------------
// The churn: short connections in a tight loop, every failure counted
// ---------------------------------------------------------------------------------------------

/// Bytes each churn connection sends (and gets back): `churn NNNNNNNNNN\n`.
const CHURN_LEN: usize = 17;

/// How the churn's connections went.
#[derive(Debug, Default)]
struct Tally {
    successes: usize,
    refused: usize,
    reset: usize,
    short: usize,
    timed_out: usize,
    other: usize,
    /// The first few failures, described.
    examples: Vec<String>,
}

impl Tally {
    fn failures(&self) -> usize {
        self.refused + self.reset + self.short + self.timed_out + self.other
    }

    fn record(&mut self, failure: ChurnFailure) {
        let (count, text) = match failure {
            ChurnFailure::Refused(text) => (&mut self.refused, text),
            ChurnFailure::Reset(text) => (&mut self.reset, text),
            ChurnFailure::Short(text) => (&mut self.short, text),
            ChurnFailure::TimedOut(text) => (&mut self.timed_out, text),
            ChurnFailure::Other(text) => (&mut self.other, text),
        };
        *count += 1;
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

/// Why one churn connection failed.
enum ChurnFailure {
    Refused(String),
    Reset(String),
    Short(String),
    TimedOut(String),
    Other(String),
}

impl ChurnFailure {
    fn of(err: io::Error, i: u64, step: &str) -> ChurnFailure {
        let text = format!("connection {i}, {step}: {err}");
        match err.kind() {
            ErrorKind::ConnectionRefused => ChurnFailure::Refused(text),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                ChurnFailure::Reset(text)
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ChurnFailure::TimedOut(text),
            _ => ChurnFailure::Other(text),
        }
    }
}

/// Connection `i` of the churn: connect, send a line, end the side, get the line and the end.
fn churn_once(addr: SocketAddr, i: u64) -> Result<(), ChurnFailure> {
    let text = format!("churn {i:010}\n");
    let mut stream = TcpStream::connect(addr).map_err(|e| ChurnFailure::of(e, i, "connect"))?;
    stream.set_read_timeout(Some(PATIENT)).unwrap();
    stream.set_write_timeout(Some(PATIENT)).unwrap();
    stream
        .write_all(text.as_bytes())
        .map_err(|e| ChurnFailure::of(e, i, "write"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| ChurnFailure::of(e, i, "shutdown"))?;
    let mut echoed = Vec::new();
    stream
        .read_to_end(&mut echoed)
        .map_err(|e| ChurnFailure::of(e, i, "read"))?;
    if echoed != text.as_bytes() {
        let got = String::from_utf8_lossy(&echoed);
        return Err(ChurnFailure::Short(format!(
            "connection {i}: sent {text:?}, got {got:?}"
        )));
    }
    Ok(())
}

/// A thread opening, using and closing connections to an echo listener back to back.
struct Churn {
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicUsize>,
    tally: Receiver<Tally>,
}

impl Churn {
    fn start(addr: SocketAddr) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicUsize::new(0));
        let (tx, tally) = mpsc::channel();
        let (stopping, counted) = (Arc::clone(&stop), Arc::clone(&successes));
        thread::spawn(move || {
            let mut tally = Tally::default();
            let mut i = 0;
            while !stopping.load(Ordering::SeqCst) {
                match churn_once(addr, i) {
                    Ok(()) => {
                        tally.successes += 1;
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(failure) => tally.record(failure),
                }
                i += 1;
            }
            let _ = tx.send(tally);
        });
        Churn {
            stop,
            successes,
            tally,
        }
    }

    fn successes(&self) -> usize {
        self.successes.load(Ordering::SeqCst)
    }

    /// Stops the loop and returns its tally (its last connection may take [`PATIENT`]).
    fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.tally
            .recv_timeout(PATIENT + PATIENCE)
            .expect("the churn thread's tally")
    }
}

// ---------------------------------------------------------------------------------------------
// TLS: openssl s_server behind an SNI route, openssl s_client in front
// ---------------------------------------------------------------------------------------------

/// `openssl s_server -rev` (each line it receives comes back reversed) on 127.0.0.1 with a
/// fresh self-signed certificate for [`TLS_NAME`], for one connection.
struct TlsBackend {
    addr: SocketAddr,
    _server: TlsServer,
    _dir: TempDir,
}

impl TlsBackend {
    fn start() -> TlsBackend {
        let dir = temp_dir("upgrade-tls");
        let (key, cert) = self_signed(&dir, "backend", TLS_NAME);
        let server = TlsServer::start(&key, &cert, &["-rev", "-naccept", "1"]);
        TlsBackend {
            addr: server.addr,
            _server: server,
            _dir: dir,
        }
    }
}

/// `openssl s_client` asking for [`TLS_NAME`] through the router, talking line by line.
struct TlsClient {
    kid: Kid,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    stderr: Receiver<String>,
}

impl TlsClient {
    fn connect(addr: SocketAddr) -> TlsClient {
        let mut kid = Kid(Command::new("openssl")
            .args(["s_client", "-brief", "-servername", TLS_NAME])
            .args(["-connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_client"));
        TlsClient {
            stdin: kid.0.stdin.take(),
            replies: lines_of(kid.0.stdout.take().unwrap()),
            stderr: lines_of(kid.0.stderr.take().unwrap()),
            kid,
        }
    }

    /// What s_client wrote on stderr so far (the handshake's summary, errors).
    fn diagnostics(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Sends `text` as a line through the TLS session; returns the line that comes back.
    fn say(&mut self, text: &str) -> String {
        let stdin = self.stdin.as_mut().expect("s_client's input is open");
        writeln!(stdin, "{text}").expect("write to s_client");
        match self.replies.recv_timeout(PATIENT) {
            Ok(line) => line,
            Err(_) => panic!(
                "no answer to {text:?} through the TLS session within {PATIENT:?}; s_client \
                 said:\n{}",
                self.diagnostics()
            ),
        }
    }

    /// Ends the session (s_client closes it at the end of its input) and waits for s_client.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.kid.wait_exit("openssl s_client");
        assert!(
            status.success(),
            "s_client: {status}\n{}",
            self.diagnostics()
        );
    }
}

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// Asserts the bulk transfer is still held at `stage` with bytes in flight after `upgrade`: the
/// readers were stopped all through it, so those bytes were pending when the connection moved.
fn assert_held_through(bulk: &Bulk, stage: u64, upgrade: &Upgrade) {
    let (up, down) = bulk.in_flight();
    eprintln!(
        "upgrade from pid {} to {}: bulk held at {} MiB, {} KiB in flight to the upstream, {} KiB \
         to the client",
        upgrade.old,
        upgrade.new,
        stage >> 20,
        up >> 10,
        down >> 10
    );
    assert!(
        bulk.held_at(stage, PENDING),
        "the bulk transfer after the upgrade from pid {} to {}: {}",
        upgrade.old,
        upgrade.new,
        bulk.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Two upgrades in a row while a 512 MiB transfer runs each way, 1,000 idle connections wait, a
/// half-closed connection waits for its answer, a TLS session routed by SNI is open and a churn
/// of short connections never stops: every byte arrives, nothing is refused or reset, each
/// connection's close line comes from the last process with the bytes of its whole life, both
/// old processes exit 0, and the last one stops on SIGTERM with 0.
#[test]
fn upgrade_moves_every_connection() {
    const TEST: &str = "upgrade::upgrade_moves_every_connection";
    // The idle connections are 2,000 descriptors here (client and upstream ends).
    tcp_router::process::raise_open_files_limit();

    let echo = echo_upstream();
    let bulk = Bulk::new(FIRST_STAGE, FIRST_STAGE + AHEAD);
    let (bulk_up, bulk_upstream_end) = bulk_upstream(&bulk);
    let answer = random_bytes(0xA45E, ANSWER_LEN);
    let (half, request_rx, release) = answering_after_release(answer.clone());
    let tls = if skip_without(&format!("{TEST} (TLS part)"), &["openssl"]) {
        None
    } else {
        Some(TlsBackend::start())
    };

    let held = [
        reserve_port(),
        reserve_port(),
        reserve_port(),
        reserve_port(),
    ];
    let [echo_listen, bulk_listen, half_listen, tls_listen] =
        held.each_ref().map(ReservedPort::addr);
    let mut config = format!(
        "route {echo_listen} {}\nroute {bulk_listen} {}\nroute {half_listen} {}\n",
        echo.addr, bulk_up.addr, half.addr
    );
    if let Some(tls) = &tls {
        config.push_str(&format!("route {tls_listen} {} sni={TLS_NAME}\n", tls.addr));
    }
    let listeners = 3 + usize::from(tls.is_some());
    let mut router = Upgradable::start("upgrade-moves", &config, listeners);

    let churn = Churn::start(echo_listen);
    let mut idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|i| {
            let mut stream = connect_with(echo_listen, PATIENT);
            round_trip(&mut stream, &idle_text(i, "before"));
            stream
        })
        .collect();
    let mut half_closed = connect_with(half_listen, STALL);
    send_and_close(&mut half_closed, REQUEST);
    let request = router.poll_until("the half-closed connection's request and end", |_| {
        request_rx.try_recv().ok()
    });
    assert_eq!(request, REQUEST);
    let mut tls_client = tls.as_ref().map(|_| TlsClient::connect(tls_listen));
    if let Some(client) = &mut tls_client {
        let text = "said before the upgrades";
        assert_eq!(client.say(text), reversed(text));
    }
    let (bulk_client_addr, bulk_client_end) = bulk_client(bulk_listen, &bulk);
    bulk.wait_until_held(&mut router, FIRST_STAGE);
    // Every long-lived connection is open: their close lines can only come after this.
    let opened = router.mark();

    let first = router.upgrade();
    assert_held_through(&bulk, FIRST_STAGE, &first);
    bulk.open_to(SECOND_STAGE, SECOND_STAGE + AHEAD);
    bulk.wait_until_held(&mut router, SECOND_STAGE);
    // A new file at the binary's path: the second upgrade must start it, not the file running.
    router.install(Path::new(bin()));
    let second = router.upgrade();
    assert_eq!(second.old, first.new);
    assert_held_through(&bulk, SECOND_STAGE, &second);

    let served = churn.successes();
    router.wait_for("the last process to serve new connections", || {
        churn.successes() > served + 10
    });
    release.send(()).unwrap();
    let got = read_to_end(&mut half_closed);
    assert_eq!(
        checksum(&got),
        checksum(&answer),
        "the half-closed connection's answer"
    );
    if let Some(mut client) = tls_client.take() {
        let text = "said after the upgrades";
        assert_eq!(client.say(text), reversed(text));
        client.finish();
    }
    for (i, stream) in idle.iter_mut().enumerate() {
        round_trip(stream, &idle_text(i, "after"));
    }
    for stream in &idle {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    for stream in &mut idle {
        assert!(read_to_end(stream).is_empty());
    }
    bulk.open_to(BULK, BULK);
    let client_end = router.poll_until("the bulk transfer's client to finish", |_| {
        bulk_result(&bulk_client_end, "client")
    });
    let upstream_end = router.poll_until("the bulk transfer's upstream to finish", |_| {
        bulk_result(&bulk_upstream_end, "upstream")
    });
    assert_eq!(client_end.sent.1, BULK);
    assert_eq!(upstream_end.sent.1, BULK);
    assert_eq!(
        upstream_end.received, client_end.sent,
        "client to upstream: (checksum, length) received against sent"
    );
    assert_eq!(
        client_end.received, upstream_end.sent,
        "upstream to client: (checksum, length) received against sent"
    );

    let tally = churn.stop();
    eprintln!(
        "the churn: {} connections, {} failed",
        tally.successes,
        tally.failures()
    );
    assert!(
        tally.failures() == 0 && tally.successes > 0,
        "the churn across the upgrades: {tally:#?}"
    );

    let bulk_key = Key {
        client: Some(bulk_client_addr),
        listener: bulk_listen,
    };
    let half_key = Key::of_stream(&half_closed, half_listen);
    let tls_key = Key {
        client: None,
        listener: tls_listen,
    };
    let mut keys = vec![bulk_key, half_key];
    keys.extend(
        idle.iter()
            .map(|stream| Key::of_stream(stream, echo_listen)),
    );
    if tls.is_some() {
        keys.push(tls_key);
    }
    let lines = router.close_lines(opened, &keys);
    for (key, lines) in keys.iter().zip(&lines) {
        assert_eq!(lines.len(), 1, "{key:?} closed more than once: {lines:#?}");
        let (at, line) = &lines[0];
        assert!(
            *at > second.handed_over_at,
            "{key:?} was logged closed before the second upgrade was done: {line}"
        );
    }
    let bulk_line = &lines[0][0].1;
    assert!(
        bulk_line.contains(&format!(" sent={BULK} received={BULK} ")),
        "{bulk_line}"
    );
    let both_ended = "client_to_upstream=eof upstream_to_client=eof";
    assert!(bulk_line.contains(both_ended), "{bulk_line}");
    let half_line = &lines[1][0].1;
    let half_bytes = format!(" sent={} received={ANSWER_LEN} ", REQUEST.len());
    assert!(half_line.contains(&half_bytes), "{half_line}");
    assert!(half_line.contains("client_to_upstream=eof"), "{half_line}");
    for (i, lines) in lines[2..2 + IDLE_CONNECTIONS].iter().enumerate() {
        let bytes = idle_text(i, "before").len() + idle_text(i, "after").len();
        let line = &lines[0].1;
        assert!(
            line.contains(&format!(" sent={bytes} received={bytes} ")),
            "idle connection {i}: {line}"
        );
    }
    if tls.is_some() {
        let tls_line = &lines[2 + IDLE_CONNECTIONS][0].1;
        assert!(tls_line.contains(&format!("sni={TLS_NAME}")), "{tls_line}");
    }

    router.stop();
}

/// A way to make an upgrade fail, and its undoing.
#[derive(Debug, Clone, Copy)]
enum Breakage {
    /// The file at the binary's path is a script that exits 1 at once.
    ExitsAtOnce,
    /// The config file no longer parses, so the new process refuses to start.
    InvalidConfig,
    /// The new process speaks another version of the hand-over.
    OtherVersion,
}

impl Breakage {
    fn apply(self, router: &Upgradable) {
        match self {
            Breakage::ExitsAtOnce => router.install_script("#!/bin/sh\nexit 1\n"),
            Breakage::InvalidConfig => {
                let mut text = std::fs::read_to_string(&router.config).unwrap();
                text.push_str("frobnicate\n");
                std::fs::write(&router.config, text).unwrap();
            }
            Breakage::OtherVersion => router.install_script(&format!(
                "#!/bin/sh\n{VERSION_VARIABLE}=999 exec '{}' \"$@\"\n",
                bin()
            )),
        }
    }

    fn undo(self, router: &Upgradable, config: &str) {
        match self {
            Breakage::ExitsAtOnce | Breakage::OtherVersion => router.install(Path::new(bin())),
            Breakage::InvalidConfig => std::fs::write(&router.config, config).unwrap(),
        }
    }
}

/// Each way an upgrade can fail (the new binary exits at once, the config file is invalid, the
/// new process speaks another hand-over version) logs `upgrade failed:` and leaves the old
/// process serving: the connection opened before goes on, new ones are served, the pid file
/// keeps the old pid. Undone, a further SIGUSR2 succeeds, and the connection moves too.
#[test]
fn upgrade_failure_keeps_the_old_process_serving() {
    let echo = echo_upstream();
    let held = reserve_port();
    let listen = held.addr();
    let config = format!("route {listen} {}\n", echo.addr);
    let mut router = Upgradable::start("upgrade-failure", &config, 1);

    for breakage in [
        Breakage::ExitsAtOnce,
        Breakage::InvalidConfig,
        Breakage::OtherVersion,
    ] {
        let mut before = connect_with(listen, PATIENT);
        let texts = ["opened before SIGUSR2\n", "after the failure\n", "moved\n"];
        round_trip(&mut before, texts[0].as_bytes());
        let old = router.pid();
        breakage.apply(&router);
        let failure = router.failed_upgrade();
        if let Breakage::OtherVersion = breakage {
            assert!(
                failure.to_lowercase().contains("version"),
                "the reason does not name the version: {failure}"
            );
        }
        round_trip(&mut before, texts[1].as_bytes());
        round_trip(&mut connect_with(listen, PATIENT), b"a new connection\n");
        // Again after those round trips: a failed new process must not have written it late.
        assert_eq!(
            router.pid(),
            old,
            "{breakage:?}: the pid file after {failure:?}"
        );

        breakage.undo(&router, &config);
        let upgrade = router.upgrade();
        round_trip(&mut before, texts[2].as_bytes());
        round_trip(
            &mut connect_with(listen, PATIENT),
            b"served by the new process\n",
        );
        close_cleanly(&mut before);
        let key = Key::of_stream(&before, listen);
        let lines = router.close_lines(upgrade.handed_over_at, &[key]);
        let line = &lines[0][0].1;
        let bytes: usize = texts.iter().map(|t| t.len()).sum();
        assert!(
            line.contains(&format!(" sent={bytes} received={bytes} ")),
            "{breakage:?}, then pid {} to {}: {line}",
            upgrade.old,
            upgrade.new
        );
    }
    router.stop();
}

/// The rest of what a live upgrade must get right: the admin endpoint is served by the new
/// process (its own counters, the moved connection counted as active); a connection still
/// choosing its route (half an HTTP head read) moves with what was read and is routed by the new
/// process; a second SIGUSR2 while one runs is ignored; SIGTERM while the new process is still
/// starting ends the upgrade, and the old process then drains everything itself.
#[test]
fn upgrade_moves_the_admin_endpoint_and_a_stop_wins_over_an_upgrade() {
    let echo = echo_upstream();
    let (held, held_host, held_admin) = (reserve_port(), reserve_port(), reserve_port());
    let (listen, host_listen, admin) = (held.addr(), held_host.addr(), held_admin.addr());
    let config = format!(
        "route {listen} {up}\nroute {host_listen} {up} host=a.example\nadmin {ip} {port}\n",
        up = echo.addr,
        ip = admin.ip(),
        port = admin.port()
    );
    let mut router = Upgradable::start("upgrade-edges", &config, 2);
    let mut open = connect_with(listen, PATIENT);
    round_trip(&mut open, b"before\n");
    let first_start = metrics(admin).total("process_start_time_seconds");

    let upgrade = router.upgrade();
    round_trip(&mut open, b"moved\n");
    let moved = metrics(admin);
    assert_eq!(
        moved.total("tcp_router_connections_active"),
        Some(1.0),
        "the moved connection, counted by the new process:\n{}",
        moved.text
    );
    assert!(
        moved.total("process_start_time_seconds") >= first_start,
        "{}",
        moved.text
    );
    let connections = get(admin, "/connections");
    assert!(
        connections.text().contains("\"id\":"),
        "{}",
        connections.text()
    );

    // Half a request head: the connection is still choosing its route when the upgrade comes.
    let (head, tail) = (&b"GET / HTTP/1.1\r\nHo"[..], &b"st: a.example\r\n\r\n"[..]);
    let mut choosing = connect_with(host_listen, PATIENT);
    choosing.write_all(head).unwrap();
    router.wait_for("the half-sent head to be accepted", || {
        metrics(admin).total("tcp_router_connections_active") == Some(2.0)
    });
    let second = router.upgrade();
    assert_ne!(second.old, upgrade.old);
    choosing.write_all(tail).unwrap();
    let whole = [head, tail].concat();
    assert_eq!(
        read_exact(&mut choosing, whole.len()),
        whole,
        "the upstream got the head as sent, in order"
    );
    close_cleanly(&mut choosing);
    let key = Key::of_stream(&choosing, host_listen);
    let lines = router.close_lines(second.handed_over_at, &[key]);
    let line = &lines[0][0].1;
    assert!(
        line.contains("host=a.example") && line.contains(&format!(" sent={} ", whole.len())),
        "{line}"
    );

    // A new binary that takes its time starting holds the upgrade while the signals come.
    router.install_script("#!/bin/sh\nexec sleep 60\n");
    let pid = second.new;
    router.wait_until_it_catches_usr2(pid);
    let from = router.mark();
    send_signal(pid, "USR2");
    router.line_after(from, &[STARTING], "the upgrade's first line");
    send_signal(pid, "USR2");
    router.line_after(
        from,
        &["already under way; ignored"],
        "the second SIGUSR2 ignored",
    );
    send_signal(pid, "TERM");
    let (_, failed) = router.line_after(from, &[FAILED, HANDED_OVER], "the upgrade to end");
    assert!(failed.contains("stop was requested"), "{failed}");
    router.line_after(from, &["stopping: accepting no more clients"], "the drain");
    // The old process drains everything: the connection it kept still works meanwhile.
    round_trip(&mut open, b"drained by the old process\n");
    close_cleanly(&mut open);
    assert_eq!(router.wait_exit(pid), Ended::Code(0), "{}", router.tail());
}

/// A connection that outlived its listener (a reload removed it) keeps that listener's address
/// when an upgrade moves it: in the new process's warning and in its close line.
#[test]
fn a_connection_whose_listener_was_removed_keeps_its_listener_across_an_upgrade() {
    let echo = echo_upstream();
    let (held_kept, held_removed) = (reserve_port(), reserve_port());
    let (kept, removed) = (held_kept.addr(), held_removed.addr());
    let config = format!("route {kept} {up}\nroute {removed} {up}\n", up = echo.addr);
    let mut router = Upgradable::start("upgrade-gone-listener", &config, 2);
    let mut open = connect_with(removed, PATIENT);
    round_trip(&mut open, b"before the reload\n");

    std::fs::write(&router.config, format!("route {kept} {}\n", echo.addr)).unwrap();
    let from = router.mark();
    send_signal(router.pid(), "HUP");
    router.line_after(
        from,
        &[&format!("closing listener {removed}")],
        "the reload",
    );
    round_trip(&mut open, b"after the reload\n");

    let upgrade = router.upgrade();
    let (_, warning) = router.line_after(
        from,
        &["is not in the configuration any more"],
        "the warning",
    );
    assert!(warning.contains(&removed.to_string()), "{warning}");
    round_trip(&mut open, b"after the upgrade\n");
    close_cleanly(&mut open);
    let key = Key::of_stream(&open, removed);
    let lines = router.close_lines(upgrade.handed_over_at, &[key]);
    let line = &lines[0][0].1;
    assert!(line.contains(&format!(" listener={removed} ")), "{line}");
    router.stop();
}

// ---------------------------------------------------------------------------------------------
// The new process checks where it connects
// ---------------------------------------------------------------------------------------------

/// A listening hand-off socket at `dir/channel`, as an old process would make it (SEQPACKET).
fn handoff_listener(dir: &Path) -> (socket2::Socket, PathBuf) {
    let path = dir.join("channel");
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)
        .expect("a SEQPACKET socket");
    socket
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    socket.listen(1).unwrap();
    (socket, path)
}

/// The binary started as a live upgrade's new process (`TCP_ROUTER_UPGRADE=channel`) through
/// `sh`, so that `sh`, not the test, is its parent.
fn start_as_new_process(channel: &Path, upstream: SocketAddr) -> Process {
    let mut command = Command::new("sh");
    command
        .args(["-c", "\"$0\" \"$@\"; exit $?", bin()])
        .args(["127.0.0.1:0", &upstream.to_string()])
        .env("TCP_ROUTER_UPGRADE", channel);
    Process::spawn_command(command)
}

/// A new process refuses a rendezvous directory that is not its own user's with mode 0700 (mode
/// 0755; as root, also one owned by nobody), though an old process seems to listen there; it
/// exits 1 naming the directory and why, before connecting.
#[test]
fn a_new_process_refuses_a_rendezvous_directory_others_could_enter_or_own() {
    let up = echo_upstream();
    let scratch = temp_dir("rendezvous-dirs");
    let mut cases = vec![("open", 0o755, None, "mode 0755")];
    if rustix::process::geteuid().is_root() {
        cases.push(("foreign", 0o700, Some(65534), "owned by uid 65534"));
    }
    for (name, mode, owner, why) in cases {
        let dir = scratch.join(name);
        std::fs::create_dir(&dir).unwrap();
        let (_listener, channel) = handoff_listener(&dir);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
        }
        let mut new = start_as_new_process(&channel, up.addr);
        let line = new.wait_for_line("rendezvous directory");
        assert!(line.contains(why), "{name}: {line}");
        assert!(line.contains(&dir.display().to_string()), "{name}: {line}");
        assert_eq!(new.wait_exit().code(), Some(1), "{name}");
    }
}

/// A new process whose rendezvous directory is private but whose listener is not its parent
/// (the test listens; `sh` started the process) refuses to take over from it, and exits 1.
#[test]
fn a_new_process_refuses_a_peer_that_is_not_its_parent() {
    let up = echo_upstream();
    let scratch = temp_dir("rendezvous-peer");
    let dir = scratch.join("private");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_listener, channel) = handoff_listener(&dir);
    let mut new = start_as_new_process(&channel, up.addr);
    let line = new.wait_for_line("not this process's parent");
    assert!(
        line.contains(&format!("is pid {}", std::process::id())),
        "{line}"
    );
    assert_eq!(new.wait_exit().code(), Some(1));
}

/// A connection still choosing its route keeps its peek deadline across an upgrade: counted from
/// its accept in the old process, not started again when the new one takes it over.
#[test]
fn the_peek_deadline_is_kept_across_an_upgrade() {
    let echo = echo_upstream();
    let held = reserve_port();
    let listen = held.addr();
    let config = format!(
        "route {listen} {up} host=a.example peek_timeout=2s\n",
        up = echo.addr
    );
    let mut router = Upgradable::start("upgrade-peek-deadline", &config, 1);
    let mut choosing = connect_with(listen, PATIENT);
    let since = Instant::now();
    choosing.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    // The client's own pause is the case: it is still choosing its route a second in.
    std::thread::sleep(Duration::from_secs(1));
    router.upgrade();
    let mut rest = Vec::new();
    let _ = choosing.read_to_end(&mut rest);
    let took = since.elapsed();
    // At the deadline, 2 s after the accept (not 2 s after the upgrade, 3 s and more).
    assert!(took < Duration::from_millis(2_700), "closed after {took:?}");
    router.stop();
}

/// While a UDP listener is configured, an upgrade to a new process that speaks hand-off version
/// 2 (which cannot take UDP sockets) is refused with one line saying so, and the old process
/// reads its UDP socket again and keeps serving TCP and UDP.
#[test]
fn an_upgrade_to_a_version_without_udp_is_refused_while_a_udp_listener_is_configured() {
    let echo = echo_upstream();
    let udp_echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_upstream = udp_echo.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp_echo.recv_from(&mut buf) {
            let _ = udp_echo.send_to(&buf[..n], from);
        }
    });
    let held = reserve_port();
    let listen = held.addr();
    let config = format!(
        "route {listen} {}\nroute 127.0.0.1:0/udp {udp_upstream}/udp\n",
        echo.addr
    );
    let mut router = Upgradable::start("upgrade-udp", &config, 2);
    router.install_script(&format!(
        "#!/bin/sh\n{VERSION_VARIABLE}=2 exec '{}' \"$@\"\n",
        bin()
    ));
    let failure = router.failed_upgrade();
    assert!(
        failure.contains("version 2, which cannot take UDP listeners (1 here)"),
        "{failure}"
    );
    round_trip(&mut connect_with(listen, PATIENT), b"still served\n");
    let udp_listen = router.first.udp_listener_with(&udp_upstream.to_string());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENT)).unwrap();
    client.send_to(b"udp still served", udp_listen).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"udp still served");
    router.stop();
}

/// A live upgrade while protocol routes choose: a client held in the wait (it has sent nothing)
/// moves to the new process and is served there by the `proto=silent` route when its wait is
/// over, the server's banner reaching it; a client that has sent half of `SSH-` moves with its
/// bytes, and once it sends the rest the SSH upstream gets the whole banner, byte-exact.
#[test]
fn waiting_and_half_sent_ssh_clients_move_with_an_upgrade() {
    use crate::protocols::{smtp_exchange, smtp_upstream, SSH_BANNER};
    let (smtp, smtp_rx) = smtp_upstream();
    let (ssh, ssh_rx) = crate::routing::recording_upstream();
    let held = reserve_port();
    let listen = held.addr();
    let config = format!(
        "route {listen} {ssh} proto=ssh peek_timeout=20s\n\
         route {listen} {smtp} proto=silent wait=6s peek_timeout=20s\n",
        ssh = ssh.addr,
        smtp = smtp.addr
    );
    let mut router = Upgradable::start("upgrade-protocols", &config, 1);
    let mut silent = connect_with(listen, PATIENT);
    let mut half = connect_with(listen, PATIENT);
    half.write_all(&SSH_BANNER[..2]).unwrap();
    // Accepted in order: once a later client is served, these two are choosing their routes.
    let whole = crate::routing::send_chunks(listen, &[SSH_BANNER], true);
    assert_eq!(whole, b"");
    assert_eq!(ssh_rx.recv_timeout(PATIENT).unwrap(), SSH_BANNER);
    router.line_after(
        0,
        &["proto=ssh route=proto=ssh "],
        "the whole banner's line",
    );
    let from = router.mark();

    let upgrade = router.upgrade();
    assert_eq!(
        smtp.accepted.load(Ordering::SeqCst),
        0,
        "the wait ended before the upgrade did"
    );
    let (_, took_over) = router.line_after(from, &[TOOK_OVER], "the new process's line");
    assert!(
        took_over.contains("and 2 connection(s)"),
        "both choosing clients move: {took_over}"
    );
    half.write_all(&SSH_BANNER[2..]).unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    assert_eq!(ssh_rx.recv_timeout(PATIENT).unwrap(), SSH_BANNER);
    smtp_exchange(&mut silent);
    drop(silent);
    assert_eq!(smtp_rx.recv_timeout(PATIENT).unwrap(), b"QUIT\r\n");
    let (at, line) = router.line_after(
        from,
        &["proto=silent route=proto=silent "],
        "the silent client's line",
    );
    assert!(
        at > upgrade.handed_over_at,
        "closed by the old process: {line}"
    );
    router.stop();
}
