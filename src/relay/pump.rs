//! The two copy threads of a connection: each moves one direction until it ends, applies the
//! half-close or reset rules, and leaves its result; the second to finish runs the epilogue.

use std::io;
use std::net::TcpStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::net;

use super::chunk::{self, ChunkError, Moved, Watch};
use super::connection::{Connection, Expired, Resumed, Stop};
use super::copy;
use super::finish::{chunk_end, end_of_stream, finish, Side};
use super::outcome::{Direction, End, Flow, Outcome, Timeouts};

/// A copy thread's view of its connection, for the copy loop.
struct Watcher<'a> {
    conn: &'a Connection,
    timeouts: &'a Timeouts,
}

impl Watch for Watcher<'_> {
    fn progress(&self) {
        self.conn.note_activity();
    }

    fn may_wait(&self) -> bool {
        !self.conn.is_stopped() && self.conn.wait_budget(self.timeouts).is_ok()
    }

    fn parking(&self) -> bool {
        self.conn.park_requested()
    }
}

/// The socket timeout of a connection without idle limits. Not for a deadline: a socket with a
/// timeout returns `EINTR` when its thread is signalled (see `sys::wake`), which is how a hand-off
/// brings a blocked copy thread to a safe point. Waking once an hour costs an idle connection
/// nothing measurable.
const QUIET_TICK: Duration = Duration::from_secs(3600);

/// The shortest idle limit: how often a blocked read or write must wake up to look at the
/// deadline ([`QUIET_TICK`] without limits).
fn tick(timeouts: &Timeouts) -> Duration {
    match (timeouts.idle, timeouts.fin) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(QUIET_TICK),
    }
}

/// Where a direction starts when another process left it.
#[derive(Debug)]
pub(crate) enum Carried {
    /// Running: bytes it has moved so far, and bytes read but not yet written, to be written
    /// first.
    Open { bytes: u64, pending: Vec<u8> },
    /// Ended already: its result.
    Ended(Flow),
}

/// How a relay ended: both directions' results, or handed over to another process (nothing more
/// is to be done with the connection here: no log line, no shutdown).
pub(crate) type Relayed = Result<Outcome, HandedOver>;

/// The connection now belongs to another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandedOver;

/// Relays between the client and the attached upstream until both directions end, then calls
/// `done` with both results. Each direction runs on a thread `spawn` starts (a pool worker of
/// the copy pool); this thread returns at once. Whichever copy thread ends second calls `done`,
/// so the first one is free at once (back to the pool) and no thread waits for the other.
///
/// Neither direction runs on the calling thread: the thread that set the connection up (PROXY
/// header, peek, upstream connect, log) touched stack pages the copy loop does not need, and a
/// copy thread keeps every page it has touched for as long as the connection is idle (see "One
/// stack page per idle thread" in the module doc).
pub(crate) fn relay(
    conn: &Arc<Connection>,
    timeouts: Timeouts,
    spawn: impl Fn(Box<dyn FnOnce() + Send>) -> io::Result<()>,
    done: impl FnOnce(Relayed) + Send + 'static,
) {
    resume(conn, timeouts, [None, None], spawn, done);
}

/// [`relay`] for a connection that may have run elsewhere: each direction starts as `carried`
/// says (client to upstream first; `None` from the start); one that has ended gets no thread.
/// Boxed, so a fresh connection's copy threads carry 8 bytes for it, not a whole state.
pub(crate) fn resume(
    conn: &Arc<Connection>,
    timeouts: Timeouts,
    carried: [Option<Box<Carried>>; 2],
    spawn: impl Fn(Box<dyn FnOnce() + Send>) -> io::Result<()>,
    done: impl FnOnce(Relayed) + Send + 'static,
) {
    let meeting = Arc::new(Meeting::new(done));
    // Set once a direction's thread could not be started: that direction, and every one after
    // it, arrives with this instead of running.
    let mut failed: Option<Flow> = None;
    for (direction, carried) in Direction::BOTH.into_iter().zip(carried) {
        let carried = match carried.map(|c| *c) {
            Some(Carried::Ended(flow)) => {
                meeting.arrive(direction, Ok(flow));
                continue;
            }
            carried => carried.map(Box::new),
        };
        if failed.is_none() {
            let run_conn = Arc::clone(conn);
            let run_meeting = Arc::clone(&meeting);
            let spawned = spawn(Box::new(move || {
                let flow = pump_contained(&run_conn, direction, &timeouts, carried);
                run_meeting.arrive(direction, flow);
            }));
            match spawned {
                Ok(()) => continue,
                Err(err) => failed = Some(abort_unstarted(conn, &err)),
            }
        }
        if let Some(flow) = failed {
            conn.set_end(direction, flow.end);
            meeting.arrive(direction, Ok(flow));
        }
    }
}

/// A copy thread could not be started: the connection is reset on both sides (a direction
/// already running wakes on it and ends by itself), and the directions that never ran end with
/// this flow.
#[cold]
fn abort_unstarted(conn: &Connection, err: &io::Error) -> Flow {
    log::warn!("conn #{}: cannot start a copy thread: {err}", conn.id);
    conn.set_stop(Stop::Aborted);
    conn.abort_both();
    Flow {
        bytes: 0,
        end: End::Error(err.kind()),
        ended: conn.started.elapsed(),
    }
}

/// Where the two copy threads of a connection leave their results; the second to arrive takes
/// both and runs the epilogue.
struct Meeting<F> {
    state: Mutex<MeetingState<F>>,
}

struct MeetingState<F> {
    sent: Option<Result<Flow, HandedOver>>,
    received: Option<Result<Flow, HandedOver>>,
    done: Option<F>,
}

impl<F: FnOnce(Relayed)> Meeting<F> {
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
    fn arrive(&self, direction: Direction, flow: Result<Flow, HandedOver>) {
        let ready = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match direction {
                Direction::ClientToUpstream => state.sent = Some(flow),
                Direction::UpstreamToClient => state.received = Some(flow),
            }
            let relayed = match (state.sent, state.received) {
                (Some(Ok(sent)), Some(Ok(received))) => Ok(Outcome { sent, received }),
                (Some(_), Some(_)) => Err(HandedOver),
                _ => return,
            };
            state.done.take().map(|done| (done, relayed))
        };
        if let Some((done, outcome)) = ready {
            done(outcome);
        }
    }
}

/// [`pump`], with a panic reported as [`End::Panic`] (its guard has already reset both sockets),
/// so the connection's epilogue still runs and its slot is released.
fn pump_contained(
    conn: &Connection,
    direction: Direction,
    timeouts: &Timeouts,
    carried: Option<Box<Carried>>,
) -> Result<Flow, HandedOver> {
    catch_unwind(AssertUnwindSafe(|| {
        pump(conn, direction, timeouts, carried)
    }))
    .unwrap_or_else(|_| {
        conn.set_end(direction, End::Panic);
        Ok(Flow {
            bytes: 0,
            end: End::Panic,
            ended: conn.started.elapsed(),
        })
    })
}

/// Resets both sockets if a copy thread unwinds, so the other thread wakes and the peers learn.
struct AbortOnPanic<'a>(&'a Connection);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set_stop(Stop::Aborted);
            self.0.abort_both();
        }
    }
}

/// Copies one direction until it ends, then applies the half-close or reset rules. Without an
/// attached upstream there is nothing to copy: the direction ends as not connected. A hand-off
/// stops it at a safe point (see [`Connection::park`]); handed over, it returns [`HandedOver`] and leaves the
/// sockets as they are.
fn pump(
    conn: &Connection,
    direction: Direction,
    timeouts: &Timeouts,
    carried: Option<Box<Carried>>,
) -> Result<Flow, HandedOver> {
    let _guard = AbortOnPanic(conn);
    let Some(upstream) = conn.upstream() else {
        return Ok(Flow {
            bytes: 0,
            end: End::Error(io::ErrorKind::NotConnected),
            ended: conn.started.elapsed(),
        });
    };
    let (src, dst) = match direction {
        Direction::ClientToUpstream => (&conn.client, upstream),
        Direction::UpstreamToClient => (upstream, &conn.client),
    };
    let _inside = conn.enter(direction);
    let watcher = Watcher { conn, timeouts };
    // Each socket is read by one copy thread and written by the other, so each thread sets the
    // timeouts of the two halves it uses. There is always a timeout (see `QUIET_TICK`).
    let tick = tick(timeouts);
    net::set_send_timeout(dst, Some(tick));
    let mut receive_timeout = ReceiveTimeout::new(src, tick);
    let (mut bytes, mut pending) = match carried.map(|c| *c) {
        Some(Carried::Open { bytes, pending }) => (bytes, pending),
        Some(Carried::Ended(flow)) => return Ok(flow),
        None => (0, Vec::new()),
    };
    let mut eager = false;
    let (end, side) = loop {
        if !pending.is_empty() || conn.park_requested() {
            match write_pending(conn, direction, dst, &watcher, &mut bytes, pending) {
                Ok(()) => pending = Vec::new(),
                Err(Stopped::HandedOver) => return Err(HandedOver),
                Err(Stopped::Failed(err)) => break chunk_end(err),
            }
        }
        let moved = if eager {
            copy::move_chunk(src, dst, &watcher)
        } else {
            copy::wait_and_move(src, dst, &watcher)
        };
        match moved {
            Ok(Moved::Bytes { n, full }) => {
                bytes += n as u64;
                conn.count(direction, n as u64);
                eager = full;
                receive_timeout.restore();
            }
            Ok(Moved::WouldBlock) if eager => eager = false,
            Ok(Moved::WouldBlock) => match conn.wait_budget(timeouts) {
                // The receive timeout passed: the deadline may have moved (the other direction
                // moved bytes, or ended), so wait exactly what is left.
                Ok(budget) => receive_timeout.shorten(budget),
                Err(Expired) => break (End::Timeout, Side::Source),
            },
            // Parks at the top of the loop.
            Ok(Moved::Parked) => {}
            Err(ChunkError::Parked(parked)) => {
                bytes += parked.moved as u64;
                conn.count(direction, parked.moved as u64);
                pending = parked.pending;
                // Parks at the top of the loop even if the request is already withdrawn, so
                // the pending bytes are written before anything else.
            }
            Ok(Moved::Eof) => break (end_of_stream(conn, src), Side::Source),
            Err(err) => break chunk_end(err),
        }
    };
    // Taken before `finish` passes the end on, so the other direction, which may end because of
    // it, always ends later.
    let ended = conn.started.elapsed();
    let end = finish(conn, direction, (src, dst), end, side);
    Ok(Flow { bytes, end, ended })
}

/// Why a direction stopped while it had bytes to write first.
enum Stopped {
    HandedOver,
    Failed(ChunkError),
}

/// Writes the bytes a direction read but has not written, after parking if a hand-off wants it
/// (see [`Connection::park`]): they go first, in order, whichever process writes them. Cold and
/// apart from the copy loop, so its frame is not on an idle copy thread's stack.
#[cold]
#[inline(never)]
fn write_pending(
    conn: &Connection,
    direction: Direction,
    dst: &TcpStream,
    watcher: &Watcher<'_>,
    bytes: &mut u64,
    mut pending: Vec<u8>,
) -> Result<(), Stopped> {
    loop {
        if conn.park_requested() {
            match conn.park(direction, pending, *watcher.timeouts) {
                Resumed::Released => return Err(Stopped::HandedOver),
                Resumed::Resume(back) => pending = back,
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        match chunk::write_all(dst, &pending, watcher) {
            Ok(()) => {
                *bytes += pending.len() as u64;
                conn.count(direction, pending.len() as u64);
                return Ok(());
            }
            Err(ChunkError::Parked(parked)) => {
                let moved = pending.len() - parked.pending.len();
                *bytes += moved as u64;
                conn.count(direction, moved as u64);
                pending = parked.pending;
            }
            Err(err) => return Err(Stopped::Failed(err)),
        }
    }
}

/// The receive timeout of a copy thread's source socket, which bounds a blocking wait so the thread
/// can look at the idle deadline. Normally the shortest idle limit (the same tick as the send
/// timeout); shortened to the exact time left once a wait has ended without bytes.
struct ReceiveTimeout<'a> {
    socket: &'a TcpStream,
    tick: Duration,
    current: Option<Duration>,
}

impl<'a> ReceiveTimeout<'a> {
    fn new(socket: &'a TcpStream, tick: Duration) -> ReceiveTimeout<'a> {
        let mut timeout = ReceiveTimeout {
            socket,
            tick,
            current: None,
        };
        timeout.set(Some(tick));
        timeout
    }

    /// Back to the tick after bytes moved (a system call only if it was shortened).
    fn restore(&mut self) {
        self.set(Some(self.tick));
    }

    /// The next wait lasts at most `budget` (`None`: as long as the tick).
    fn shorten(&mut self, budget: Option<Duration>) {
        self.set(Some(budget.unwrap_or(self.tick)));
    }

    fn set(&mut self, timeout: Option<Duration>) {
        if timeout != self.current {
            net::set_receive_timeout(self.socket, timeout);
            self.current = timeout;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_the_shortest_limit() {
        let t = |idle, fin| Timeouts { idle, fin };
        let s = Duration::from_secs;
        assert_eq!(tick(&t(None, None)), QUIET_TICK);
        assert_eq!(tick(&t(Some(s(3)), None)), s(3));
        assert_eq!(tick(&t(Some(s(3)), Some(s(2)))), s(2));
    }

    #[test]
    fn a_direction_without_an_upstream_ends_as_not_connected() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = client.local_addr().unwrap();
        let conn = Connection::new(1, peer, client);
        let flow = pump(
            &conn,
            Direction::ClientToUpstream,
            &Timeouts::default(),
            None,
        );
        assert_eq!(flow.unwrap().end, End::Error(io::ErrorKind::NotConnected));
    }
}

#[cfg(test)]
mod park_tests {
    //! A hand-off's safe point: copy threads blocked in `recv` or in a write stop where they are,
    //! holding what they read and did not write, and then either carry on or return.

    use super::*;
    use crate::relay::Settled;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Instant;

    /// A relayed connection over loopback: the test holds the client's and the upstream's far
    /// ends; the relay runs on threads of its own and reports on `done`.
    struct Relayed {
        conn: Arc<Connection>,
        client: TcpStream,
        upstream: TcpStream,
        done: mpsc::Receiver<Result<Outcome, HandedOver>>,
    }

    fn relayed() -> Relayed {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (client_side, peer) = listener.accept().unwrap();
        let upstream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (upstream_far, _) = listener.accept().unwrap();
        let conn = Arc::new(Connection::new(1, peer, client_side));
        conn.attach_upstream(upstream);
        let (tx, done) = mpsc::channel();
        let relay_conn = Arc::clone(&conn);
        std::thread::spawn(move || {
            relay(
                &relay_conn,
                Timeouts::default(),
                |task| std::thread::Builder::new().spawn(task).map(drop),
                move |relayed| tx.send(relayed).unwrap(),
            )
        });
        Relayed {
            conn,
            client,
            upstream: upstream_far,
            done,
        }
    }

    /// Asks for a park and wakes the threads until both directions have stopped.
    fn park(conn: &Connection) -> [Settled; 2] {
        conn.request_park();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(crate::relay::Halted::Relaying(settled, _)) = conn.settled() {
                return settled;
            }
            assert!(Instant::now() < deadline, "the copy threads did not park");
            conn.poke();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn echo_once(r: &mut Relayed, message: &[u8]) {
        r.client.write_all(message).unwrap();
        let mut got = vec![0; message.len()];
        r.upstream.read_exact(&mut got).unwrap();
        assert_eq!(got, message);
    }

    #[test]
    fn idle_threads_park_in_recv_and_carry_on_when_resumed() {
        let mut r = relayed();
        echo_once(&mut r, b"before");
        let settled = park(&r.conn);
        assert_eq!(
            settled,
            [Settled::Parked(Vec::new()), Settled::Parked(Vec::new())]
        );
        r.conn.end_park(false);
        echo_once(&mut r, b"after");
        drop(r.client);
        drop(r.upstream);
        let outcome = r
            .done
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(outcome.sent.bytes, 11);
    }

    #[test]
    fn a_blocked_write_parks_with_its_bytes_and_a_released_relay_leaves_the_sockets_open() {
        let mut r = relayed();
        // The upstream reads nothing, so the copy thread ends up blocked writing to it.
        let sender = {
            let mut client = r.client.try_clone().unwrap();
            std::thread::spawn(move || {
                let chunk = vec![7u8; 64 * 1024];
                let mut sent = 0u64;
                while client.write_all(&chunk).is_ok() {
                    sent += chunk.len() as u64;
                    if sent >= 64 << 20 {
                        break;
                    }
                }
                sent
            })
        };
        // Wait until the relay has moved bytes and is stuck.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.conn.bytes(Direction::ClientToUpstream) == 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        let settled = park(&r.conn);
        let Settled::Parked(pending) = &settled[0] else {
            panic!("{settled:?}")
        };
        r.conn.end_park(true);
        assert_eq!(
            r.done.recv_timeout(Duration::from_secs(10)).unwrap(),
            Err(HandedOver)
        );
        // Nothing was shut down: the upstream's far end gets every byte moved so far (and no
        // end of stream), the parked bytes are the ones that follow.
        let moved = r.conn.bytes(Direction::ClientToUpstream) as usize;
        r.upstream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 1 << 16];
        loop {
            match r.upstream.read(&mut buf) {
                Ok(0) => panic!("the upstream saw an end of stream"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        assert_eq!(got.len(), moved);
        assert!(got.iter().chain(pending).all(|&b| b == 7));
        drop(r.client);
        drop(r.conn);
        let _ = sender.join();
    }
}
