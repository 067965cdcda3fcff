//! The two copy threads of a connection: each moves one direction until it ends, applies the
//! half-close or reset rules, and leaves its result; the second to finish runs the epilogue.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::net;

use super::chunk::{ChunkError, Moved, Watch};
use super::connection::{Connection, Expired, Stop};
use super::copy;
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
/// `done` with both results. This thread copies client to upstream; the other direction runs on
/// the thread `spawn` starts (a pool worker). Whichever copy thread ends second calls `done`, so
/// the first one is free at once (back to the pool) and no thread waits for the other.
pub(crate) fn relay(
    conn: &Arc<Connection>,
    timeouts: Timeouts,
    spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> io::Result<()>,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    let meeting = Arc::new(Meeting::new(done));
    let other = Arc::clone(conn);
    let other_meeting = Arc::clone(&meeting);
    let spawned = spawn(Box::new(move || {
        let flow = pump_contained(&other, Direction::UpstreamToClient, &timeouts);
        other_meeting.arrive(Direction::UpstreamToClient, flow);
    }));
    if let Err(err) = spawned {
        log::warn!("conn #{}: cannot start a copy thread: {err}", conn.id);
        conn.set_stop(Stop::Aborted);
        conn.abort_both();
        let flow = Flow {
            bytes: 0,
            end: End::Error(err.kind()),
            ended: conn.started.elapsed(),
        };
        for direction in Direction::BOTH {
            conn.set_end(direction, flow.end);
            meeting.arrive(direction, flow);
        }
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
    catch_unwind(AssertUnwindSafe(|| pump(conn, direction, timeouts))).unwrap_or_else(|_| {
        conn.set_end(direction, End::Panic);
        Flow {
            bytes: 0,
            end: End::Panic,
            ended: conn.started.elapsed(),
        }
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
/// attached upstream there is nothing to copy: the direction ends as not connected.
fn pump(conn: &Connection, direction: Direction, timeouts: &Timeouts) -> Flow {
    let _guard = AbortOnPanic(conn);
    let Some(upstream) = conn.upstream() else {
        return Flow {
            bytes: 0,
            end: End::Error(io::ErrorKind::NotConnected),
            ended: conn.started.elapsed(),
        };
    };
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
                conn.count(direction, n as u64);
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
            Ok(Moved::Eof) => break end_of_stream(conn, src),
            Err(ChunkError::Stalled) => break End::Timeout,
            Err(ChunkError::Read(err)) | Err(ChunkError::Write(err)) => break failure(&err),
        }
    };
    // Taken before `finish` passes the end on, so the other direction, which may end because of
    // it, always ends later.
    let ended = conn.started.elapsed();
    let end = finish(conn, src, dst, end);
    conn.set_end(direction, end);
    Flow { bytes, end, ended }
}

/// What a read of zero bytes means. Linux hands a received reset to one system call only: if the
/// thread writing to this socket took it, the read here sees end of stream, and passing that on as
/// a half-close would turn the peer's reset into a clean FIN. A reset leaves the socket closed (no
/// peer address), a FIN does not; once this side has sent its own FIN the socket may close
/// normally, so the check applies only before the first half-close.
fn end_of_stream(conn: &Connection, src: &TcpStream) -> End {
    let reset = matches!(src.peer_addr(), Err(err) if err.kind() == io::ErrorKind::NotConnected);
    if reset && !conn.is_half_closed() {
        End::Reset
    } else {
        End::Eof
    }
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
            // Marked first, so the other direction, whose peer may answer this FIN with its own
            // (which closes the socket), reads that as the end of stream it is.
            conn.mark_half_closed();
            let _ = dst.shutdown(Shutdown::Write);
            End::Eof
        }
        End::Timeout if conn.set_stop(Stop::TimedOut) => {
            conn.shutdown_both();
            End::Timeout
        }
        End::Reset | End::Error(_) | End::Panic if conn.set_stop(Stop::Aborted) => {
            // Pass the failure on as a reset, and wake the thread copying the other way.
            net::abort(dst);
            net::abort(src);
            end
        }
        _ => match conn.stop() {
            Stop::TimedOut => End::Timeout,
            Stop::Running => end,
            Stop::Cut | Stop::Aborted => End::Shutdown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_the_shortest_limit() {
        let t = |idle, fin| Timeouts { idle, fin };
        let s = Duration::from_secs;
        assert_eq!(tick(&t(None, None)), None);
        assert_eq!(tick(&t(Some(s(3)), None)), Some(s(3)));
        assert_eq!(tick(&t(Some(s(3)), Some(s(2)))), Some(s(2)));
    }

    #[test]
    fn socket_errors_are_classified_as_resets_or_errors() {
        use io::ErrorKind::*;
        for kind in [ConnectionReset, ConnectionAborted, BrokenPipe, NotConnected] {
            assert_eq!(failure(&io::Error::from(kind)), End::Reset, "{kind:?}");
        }
        for kind in [TimedOut, PermissionDenied, OutOfMemory] {
            assert_eq!(
                failure(&io::Error::from(kind)),
                End::Error(kind),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_direction_without_an_upstream_ends_as_not_connected() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = client.local_addr().unwrap();
        let conn = Connection::new(1, peer, client);
        let flow = pump(&conn, Direction::ClientToUpstream, &Timeouts::default());
        assert_eq!(flow.end, End::Error(io::ErrorKind::NotConnected));
    }
}
