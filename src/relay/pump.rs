//! The two copy threads of a connection: each moves one direction until it ends, applies the
//! half-close or reset rules, and leaves its result; the second to finish runs the epilogue.

use socket2::Socket;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::net;
use crate::sys::sync::lock;

use super::chunk::{ChunkError, Moved, Watch};
use super::connection::{Connection, Expired, Stop};
use super::copy;
use super::finish::{chunk_end, end_of_stream, finish, Side};
use super::outcome::{Direction, End, Flow, Outcome, Timeouts};
use super::park::{self, Left, Released, Spot};

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

    fn park_asked(&self) -> bool {
        self.conn.park.asked()
    }
}

/// The socket timeout of a connection without idle limits. Not for a deadline: a socket with a
/// timeout returns `EINTR` when its thread is signalled (see `sys::wake`), which is how a live upgrade
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

/// How a relay ended: both directions' results, or released to another process by a live
/// upgrade.
pub(crate) type Relayed = Result<Outcome, Released>;

/// Relays between the client and the attached upstream until both directions end, then calls
/// `done` with both results. Each direction runs on a thread `spawn` starts (a pool worker of
/// the copy pool); this thread returns at once. Whichever copy thread ends second calls `done`,
/// so the first one is free at once (back to the pool) and no thread waits for the other.
///
/// Neither direction runs on the calling thread: the thread that set the connection up (PROXY
/// header, peek, upstream connect, log) touched stack pages the copy loop does not need, and a
/// copy thread keeps every page it has touched for as long as the connection is idle (see "One
/// stack page per idle thread" in the module doc).
/// Each direction starts at its [`Spot`] (client to upstream first): `None` from the start, or
/// where the old process of a live upgrade parked it; one that has ended gets no thread. Boxed,
/// so a fresh connection's copy threads carry 8 bytes for it, not a whole state.
pub(crate) fn relay(
    conn: &Arc<Connection>,
    timeouts: Timeouts,
    spots: [Option<Box<Spot>>; 2],
    spawn: impl Fn(Box<dyn FnOnce() + Send>) -> io::Result<()>,
    done: impl FnOnce(Relayed) + Send + 'static,
) {
    let meeting = Arc::new(Meeting::new(done));
    // Set once a direction's thread could not be started: that direction, and every one after
    // it, arrives with this instead of running.
    let mut failed: Option<Flow> = None;
    for (direction, spot) in Direction::BOTH.into_iter().zip(spots) {
        let held = match spot.map(|spot| *spot) {
            Some(Spot::Disposition(end, ms)) => {
                let ended = Duration::from_millis(ms);
                meeting.arrive(direction, Ok(Flow { end, ended }));
                continue;
            }
            Some(Spot::Holding(held)) => held,
            None => Vec::new(),
        };
        if failed.is_none() {
            let run_conn = Arc::clone(conn);
            let run_meeting = Arc::clone(&meeting);
            let spawned = spawn(Box::new(move || {
                let flow = pump_contained(&run_conn, direction, &timeouts, held);
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
    sent: Option<Result<Flow, Released>>,
    received: Option<Result<Flow, Released>>,
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
    fn arrive(&self, direction: Direction, flow: Result<Flow, Released>) {
        let ready = {
            let mut state = lock(&self.state);
            match direction {
                Direction::ClientToUpstream => state.sent = Some(flow),
                Direction::UpstreamToClient => state.received = Some(flow),
            }
            let relayed = match (state.sent, state.received) {
                (Some(Ok(sent)), Some(Ok(received))) => Ok(Outcome { sent, received }),
                (Some(_), Some(_)) => Err(Released),
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
    held: Vec<u8>,
) -> Result<Flow, Released> {
    catch_unwind(AssertUnwindSafe(|| pump(conn, direction, timeouts, held))).unwrap_or_else(|_| {
        conn.set_end(direction, End::Panic);
        Ok(Flow {
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
/// attached upstream there is nothing to copy: the direction ends as not connected. `held` are
/// bytes read (by the old process of a live upgrade) and not yet written: they go first. Every
/// turn may stop at the safe point (see `park`); released, it returns [`Released`] and leaves
/// the sockets as they are.
fn pump(
    conn: &Connection,
    direction: Direction,
    timeouts: &Timeouts,
    mut held: Vec<u8>,
) -> Result<Flow, Released> {
    let _guard = AbortOnPanic(conn);
    let Some(upstream) = conn.upstream() else {
        return Ok(Flow {
            end: End::Error(io::ErrorKind::NotConnected),
            ended: conn.started.elapsed(),
        });
    };
    let (src, dst) = match direction {
        Direction::ClientToUpstream => (&conn.client, upstream),
        Direction::UpstreamToClient => (upstream, &conn.client),
    };
    let _inside = conn.park.enter(direction);
    let watcher = Watcher { conn, timeouts };
    // Each socket is read by one copy thread and written by the other, so each thread sets the
    // timeouts of the two halves it uses. There is always a timeout (see `QUIET_TICK`).
    let tick = tick(timeouts);
    net::set_send_timeout(dst, Some(tick));
    let mut receive_timeout = ReceiveTimeout::new(src, tick);
    let mut eager = false;
    let (end, side) = loop {
        if !held.is_empty() || conn.park.asked() {
            let taken = std::mem::take(&mut held);
            let count = |n| conn.count(direction, n);
            let at = (direction, *timeouts);
            match park::safe_point(&conn.park, at, dst, &watcher, &count, taken) {
                Ok(()) => {}
                Err(Left::Released) => return Err(Released),
                Err(Left::Failed(err)) => break chunk_end(err),
            }
        }
        let moved = if eager {
            copy::move_chunk(src, dst, &watcher)
        } else {
            copy::wait_and_move(src, dst, &watcher)
        };
        match moved {
            Ok(Moved::Bytes { n, full }) => {
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
            // Stops at the safe point at the top of the loop.
            Ok(Moved::Interrupted) => {}
            Err(ChunkError::Interrupted(stop)) => {
                conn.count(direction, stop.moved as u64);
                // Held even if the park is already withdrawn, so these bytes are written before
                // anything else.
                held = stop.held;
            }
            Ok(Moved::Eof) => break (end_of_stream(conn, src), Side::Source),
            Err(err) => break chunk_end(err),
        }
    };
    // Taken before `finish` passes the end on, so the other direction, which may end because of
    // it, always ends later.
    let ended = conn.started.elapsed();
    let end = finish(conn, direction, (src, dst), end, side);
    Ok(Flow { end, ended })
}

/// The receive timeout of a copy thread's source socket, which bounds a blocking wait so the thread
/// can look at the idle deadline. Normally the shortest idle limit (the same tick as the send
/// timeout); shortened to the exact time left once a wait has ended without bytes.
struct ReceiveTimeout<'a> {
    socket: &'a Socket,
    tick: Duration,
    current: Option<Duration>,
}

impl<'a> ReceiveTimeout<'a> {
    fn new(socket: &'a Socket, tick: Duration) -> ReceiveTimeout<'a> {
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
    use std::net::TcpStream;

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
        let conn = Connection::new(1, peer.into(), client.into());
        let flow = pump(
            &conn,
            Direction::ClientToUpstream,
            &Timeouts::default(),
            Vec::new(),
        );
        assert_eq!(flow.unwrap().end, End::Error(io::ErrorKind::NotConnected));
    }
}
