//! The relay: two copy threads, one per direction, with exact half-close, reset propagation and
//! idle limits. It knows nothing of routing; it gets two connected sockets and returns an outcome.
//!
//! The rules (after tokio's `copy_bidirectional`, in threads):
//! - End of stream from A: shut down the write half of B (the peer of B sees a FIN) and keep
//!   copying B to A. The connection is done when both directions are done.
//! - A reset or error on either socket: reset the other side too (an RST, not a FIN, so the peer
//!   learns that the stream did not end cleanly) and wake the other thread at once.
//! - No bytes moving in either direction for the idle limit (or, once half-closed, for the fin
//!   limit): close both sides with a FIN and report `timeout`.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::copy::{self, ChunkError, Moved, Watch};
use crate::net;
use crate::pool::Pool;

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The source closed its write side cleanly (FIN); passed on as a half-close.
    Eof,
    /// A peer reset the connection, or a write found it gone; passed on as a reset.
    Reset,
    /// The connection was idle past its limit.
    Timeout,
    /// Another error on a socket; passed on as a reset.
    Error(io::ErrorKind),
    /// tcp-router ended it: a graceful stop cut it, or the other direction failed.
    Shutdown,
    /// A bug: the copy thread panicked. The connection was reset.
    Panic,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("eof"),
            End::Reset => f.write_str("reset"),
            End::Timeout => f.write_str("timeout"),
            End::Error(kind) => write!(f, "error({kind})"),
            End::Shutdown => f.write_str("shutdown"),
            End::Panic => f.write_str("panic"),
        }
    }
}

/// One direction's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Bytes written to the destination.
    pub bytes: u64,
    /// How it ended.
    pub end: End,
    /// When it ended, since the connection was accepted.
    pub ended: Duration,
}

/// Both directions' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Client to upstream.
    pub sent: Flow,
    /// Upstream to client.
    pub received: Flow,
}

impl Outcome {
    /// True if the client-to-upstream direction ended first (the client closed or failed first);
    /// the one rule behind the log line's `first=` and rinetd's `done-remote-closed`.
    pub fn client_ended_first(&self) -> bool {
        self.sent.ended <= self.received.ended
    }
}

/// Idle limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// No bytes moving either way for this long closes the connection.
    pub idle: Option<Duration>,
    /// Once one direction has ended, no bytes moving for this long closes the connection.
    pub fin: Option<Duration>,
}

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream.
    ClientToUpstream,
    /// From the upstream to the client.
    UpstreamToClient,
}

/// Why a connection was stopped from outside its own copy loop; stored in [`Connection::stop`].
const RUNNING: u8 = 0;
const CUT: u8 = 1;
const TIMED_OUT: u8 = 2;
const ABORTED: u8 = 3;

/// Marks "not half-closed" in [`Connection::half_closed_ms`].
const NEVER: u64 = u64::MAX;

/// A proxied connection: the two sockets and the state both copy threads and the registry share.
#[derive(Debug)]
pub struct Connection {
    /// Sequence number, for logs.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client socket.
    pub client: TcpStream,
    /// The upstream socket, once connected.
    upstream: OnceLock<TcpStream>,
    /// When the client was accepted.
    pub started: Instant,
    /// Milliseconds after `started` when bytes last moved in either direction.
    last_activity_ms: AtomicU64,
    /// Milliseconds after `started` when the first direction ended, or [`NEVER`].
    half_closed_ms: AtomicU64,
    /// [`RUNNING`], or why the connection was stopped.
    stop: AtomicU8,
}

impl Connection {
    /// Wraps an accepted client.
    pub fn new(id: u64, peer: SocketAddr, client: TcpStream) -> Connection {
        Connection {
            id,
            peer,
            client,
            upstream: OnceLock::new(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            half_closed_ms: AtomicU64::new(NEVER),
            stop: AtomicU8::new(RUNNING),
        }
    }

    /// Attaches the connected upstream socket; if the connection was cut meanwhile, shuts it down.
    pub fn attach_upstream(&self, upstream: TcpStream) {
        let _ = self.upstream.set(upstream);
        if self.stop.load(Ordering::SeqCst) != RUNNING {
            self.shutdown_both();
        }
    }

    /// The upstream socket, once attached.
    pub fn upstream(&self) -> Option<&TcpStream> {
        self.upstream.get()
    }

    /// True once a graceful stop or a failure has stopped this connection.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) != RUNNING
    }

    /// Cuts the connection (graceful stop after the drain timeout): both sides get a FIN and both
    /// copy threads wake. Returns false if it had already stopped.
    pub fn cut(&self) -> bool {
        let first = self.set_stop(CUT);
        self.shutdown_both();
        first
    }

    fn set_stop(&self, cause: u8) -> bool {
        self.stop
            .compare_exchange(RUNNING, cause, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn shutdown_both(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = self.upstream() {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    fn abort_both(&self) {
        net::abort(&self.client);
        if let Some(upstream) = self.upstream() {
            net::abort(upstream);
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn mark_half_closed(&self) {
        let now = self.elapsed_ms();
        let _ =
            self.half_closed_ms
                .compare_exchange(NEVER, now, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// When the connection expires if no more bytes move, under `timeouts`.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        let idle = timeouts.idle.map(|idle| self.at_ms(last) + idle);
        let half = self.half_closed_ms.load(Ordering::SeqCst);
        let fin = match (timeouts.fin, half) {
            (Some(fin), half) if half != NEVER => Some(self.at_ms(last.max(half)) + fin),
            _ => None,
        };
        match (idle, fin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long a copy thread may wait for bytes before it must look at the deadline again, or
    /// `Err` if the deadline has passed. While not half-closed, the fin limit bounds the wait
    /// too, because the other direction may end meanwhile and make the fin limit apply.
    fn wait_budget(&self, timeouts: &Timeouts) -> Result<Option<Duration>, Expired> {
        let now = Instant::now();
        let mut budget = match self.deadline(timeouts) {
            Some(deadline) if deadline <= now => return Err(Expired),
            Some(deadline) => Some(deadline - now),
            None => None,
        };
        if self.half_closed_ms.load(Ordering::SeqCst) == NEVER {
            if let Some(fin) = timeouts.fin {
                budget = Some(budget.map_or(fin, |b| b.min(fin)));
            }
        }
        Ok(budget)
    }
}

/// The deadline has passed.
#[derive(Debug)]
struct Expired;

/// A copy thread's view of its connection, for [`copy::move_chunk`].
struct Watcher<'a> {
    conn: &'a Connection,
    timeouts: &'a Timeouts,
}

impl Watch for Watcher<'_> {
    fn progress(&self) {
        self.conn
            .last_activity_ms
            .store(self.conn.elapsed_ms(), Ordering::Relaxed);
    }

    fn may_wait(&self) -> bool {
        !self.conn.is_stopped() && self.conn.wait_budget(self.timeouts).is_ok()
    }
}

/// The shortest idle limit: how often a blocked read or write must wake up to look at the
/// deadline.
fn tick(timeouts: &Timeouts) -> Option<Duration> {
    match (timeouts.idle, timeouts.fin) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Relays between the client and the attached upstream until both directions end, then calls
/// `done` with both results. This thread copies client to upstream; the other direction runs on a
/// pool worker. Whichever copy thread ends second calls `done`, so the first one is free at once
/// (back to the pool) and no thread waits for the other.
pub fn relay(
    conn: &Arc<Connection>,
    timeouts: Timeouts,
    pool: &Pool,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    let meeting = Arc::new(Meeting::new(done));
    let other = Arc::clone(conn);
    let other_meeting = Arc::clone(&meeting);
    let spawned = pool.execute(Box::new(move || {
        let flow = pump_contained(&other, Direction::UpstreamToClient, &timeouts);
        other_meeting.arrive(Direction::UpstreamToClient, flow);
    }));
    if let Err(err) = spawned {
        log::warn!("conn #{}: cannot start a copy thread: {err}", conn.id);
        conn.set_stop(ABORTED);
        conn.abort_both();
        let flow = Flow {
            bytes: 0,
            end: End::Error(err.kind()),
            ended: conn.started.elapsed(),
        };
        meeting.arrive(Direction::UpstreamToClient, flow);
        meeting.arrive(Direction::ClientToUpstream, flow);
        return;
    }
    let flow = pump_contained(conn, Direction::ClientToUpstream, &timeouts);
    meeting.arrive(Direction::ClientToUpstream, flow);
}

/// Where the two copy threads of a connection leave their results; the second to arrive takes
/// both and runs the epilogue.
struct Meeting<F> {
    state: Mutex<MeetingState<F>>,
}

struct MeetingState<F> {
    sent: Option<Flow>,
    received: Option<Flow>,
    done: Option<F>,
}

impl<F: FnOnce(Outcome)> Meeting<F> {
    fn new(done: F) -> Meeting<F> {
        Meeting {
            state: Mutex::new(MeetingState {
                sent: None,
                received: None,
                done: Some(done),
            }),
        }
    }

    /// Leaves one direction's result; runs `done` (on this thread) if the other is already in.
    fn arrive(&self, direction: Direction, flow: Flow) {
        let ready = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match direction {
                Direction::ClientToUpstream => state.sent = Some(flow),
                Direction::UpstreamToClient => state.received = Some(flow),
            }
            match (state.sent, state.received) {
                (Some(sent), Some(received)) => state
                    .done
                    .take()
                    .map(|done| (done, Outcome { sent, received })),
                _ => None,
            }
        };
        if let Some((done, outcome)) = ready {
            done(outcome);
        }
    }
}

/// [`pump`], with a panic reported as [`End::Panic`] (its guard has already reset both sockets),
/// so the connection's epilogue still runs and its slot is released.
fn pump_contained(conn: &Connection, direction: Direction, timeouts: &Timeouts) -> Flow {
    catch_unwind(AssertUnwindSafe(|| pump(conn, direction, timeouts))).unwrap_or_else(|_| Flow {
        bytes: 0,
        end: End::Panic,
        ended: conn.started.elapsed(),
    })
}

/// Resets both sockets if a copy thread unwinds, so the other thread wakes and the peers learn.
struct AbortOnPanic<'a>(&'a Connection);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set_stop(ABORTED);
            self.0.abort_both();
        }
    }
}

/// Copies one direction until it ends, then applies the half-close or reset rules.
pub fn pump(conn: &Connection, direction: Direction, timeouts: &Timeouts) -> Flow {
    let _guard = AbortOnPanic(conn);
    let upstream = conn
        .upstream()
        .expect("BUG: pump called before the upstream was attached");
    let (src, dst) = match direction {
        Direction::ClientToUpstream => (&conn.client, upstream),
        Direction::UpstreamToClient => (upstream, &conn.client),
    };
    let watcher = Watcher { conn, timeouts };
    // Each socket is read by one copy thread and written by the other, so each thread sets the
    // timeouts of the two halves it uses.
    let tick = tick(timeouts);
    net::set_send_timeout(dst, tick);
    let mut receive_timeout = ReceiveTimeout::new(src, tick);
    let mut bytes = 0u64;
    let mut eager = false;
    let end = loop {
        let moved = if eager {
            copy::move_chunk(src, dst, &watcher)
        } else {
            copy::wait_and_move(src, dst, &watcher)
        };
        match moved {
            Ok(Moved::Bytes { n, full }) => {
                bytes += n as u64;
                eager = full;
                receive_timeout.restore();
            }
            Ok(Moved::WouldBlock) if eager => eager = false,
            Ok(Moved::WouldBlock) => match conn.wait_budget(timeouts) {
                // The receive timeout passed: the deadline may have moved (the other direction
                // moved bytes, or ended), so wait exactly what is left.
                Ok(budget) => receive_timeout.shorten(budget),
                Err(Expired) => break End::Timeout,
            },
            Ok(Moved::Eof) => break End::Eof,
            Err(ChunkError::Stalled) => break End::Timeout,
            Err(ChunkError::Read(err)) | Err(ChunkError::Write(err)) => break failure(&err),
        }
    };
    // Taken before `finish` passes the end on, so the other direction, which may end because of
    // it, always ends later.
    let ended = conn.started.elapsed();
    let end = finish(conn, src, dst, end);
    Flow { bytes, end, ended }
}

fn failure(err: &io::Error) -> End {
    if net::is_reset(err) {
        End::Reset
    } else {
        End::Error(err.kind())
    }
}

/// The receive timeout of a copy thread's source socket, which bounds a blocking wait so the thread
/// can look at the idle deadline. Normally the shortest idle limit (the same tick as the send
/// timeout); shortened to the exact time left once a wait has ended without bytes.
struct ReceiveTimeout<'a> {
    socket: &'a TcpStream,
    tick: Option<Duration>,
    current: Option<Duration>,
}

impl<'a> ReceiveTimeout<'a> {
    fn new(socket: &'a TcpStream, tick: Option<Duration>) -> ReceiveTimeout<'a> {
        let mut timeout = ReceiveTimeout {
            socket,
            tick,
            current: None,
        };
        timeout.set(tick);
        timeout
    }

    /// Back to the tick after bytes moved (a system call only if it was shortened).
    fn restore(&mut self) {
        self.set(self.tick);
    }

    /// The next wait lasts at most `budget` (`None`: as long as the tick).
    fn shorten(&mut self, budget: Option<Duration>) {
        self.set(budget.or(self.tick));
    }

    fn set(&mut self, timeout: Option<Duration>) {
        if timeout != self.current {
            net::set_receive_timeout(self.socket, timeout);
            self.current = timeout;
        }
    }
}

/// Applies the end of one direction to the sockets, and says how it ended. If something else
/// stopped the connection first (a cut, a timeout or a failure in the other direction), that is
/// what this direction reports.
fn finish(conn: &Connection, src: &TcpStream, dst: &TcpStream, end: End) -> End {
    match end {
        End::Eof if !conn.is_stopped() => {
            // Half-close: the destination's peer sees end of stream, the other direction goes on.
            let _ = dst.shutdown(Shutdown::Write);
            conn.mark_half_closed();
            End::Eof
        }
        End::Timeout if conn.set_stop(TIMED_OUT) => {
            conn.shutdown_both();
            End::Timeout
        }
        End::Reset | End::Error(_) | End::Panic if conn.set_stop(ABORTED) => {
            // Pass the failure on as a reset, and wake the thread copying the other way.
            net::abort(dst);
            net::abort(src);
            end
        }
        _ => match conn.stop.load(Ordering::SeqCst) {
            TIMED_OUT => End::Timeout,
            RUNNING => end,
            _ => End::Shutdown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_pair() -> Connection {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = client.local_addr().unwrap();
        Connection::new(1, peer, client)
    }

    #[test]
    fn no_timeouts_means_no_deadline() {
        let conn = conn_pair();
        assert_eq!(conn.deadline(&Timeouts::default()), None);
        assert_eq!(conn.wait_budget(&Timeouts::default()).unwrap(), None);
    }

    #[test]
    fn fin_limit_applies_only_once_half_closed() {
        let conn = conn_pair();
        let timeouts = Timeouts {
            idle: None,
            fin: Some(Duration::from_secs(60)),
        };
        assert_eq!(conn.deadline(&timeouts), None);
        // Not half-closed yet: the wait is still bounded so the thread re-checks later.
        assert_eq!(
            conn.wait_budget(&timeouts).unwrap(),
            Some(Duration::from_secs(60))
        );
        conn.mark_half_closed();
        assert!(conn.deadline(&timeouts).is_some());
    }

    #[test]
    fn expired_idle_limit_is_reported() {
        let conn = conn_pair();
        let timeouts = Timeouts {
            idle: Some(Duration::ZERO),
            fin: None,
        };
        assert!(conn.wait_budget(&timeouts).is_err());
    }

    #[test]
    fn end_names_match_the_log_vocabulary() {
        let names: Vec<String> = [End::Eof, End::Reset, End::Timeout, End::Shutdown]
            .iter()
            .map(End::to_string)
            .collect();
        assert_eq!(names, ["eof", "reset", "timeout", "shutdown"]);
    }
}
