//! The relay's one safe point, where a live upgrade may move a connection: both copy threads
//! stopped between a read and a write, each holding the bytes it read and has not written.
//!
//! The upgrade (in `serve::upgrade`) asks ([`Park::ask`], on the connection's park), wakes the
//! copy threads out of the `recv` or write they sleep in ([`Park::wake`]: a thread-directed
//! signal, see `sys::wake`; the sockets always carry a timeout, so the call returns `EINTR`), and
//! looks at where they stopped (`Connection::parked`). Then it ends the park ([`Park::end`]):
//! released, the threads return [`Released`] without touching the sockets; otherwise they carry
//! on, writing what they held first. The new process starts each
//! direction at its [`Spot`] (see `pump::relay`).
//!
//! The copy loop meets this module at one place: [`safe_point`], at the top of each turn.

use socket2::Socket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use crate::sys::sync::{lock, wait};
use crate::sys::wake::ThreadId;

use super::chunk::{self, ChunkError, Watch};
use super::outcome::{Direction, End, Timeouts};

/// Where a connection's copy threads meet an upgrade. While none runs it costs one atomic load
/// per chunk moved and a lock at each copy thread's start and end; the meeting state is made by
/// the first upgrade that asks, so a connection none touched carries an empty slot.
#[derive(Debug, Default)]
pub(crate) struct Park {
    /// Set while an upgrade wants the copy threads stopped at their safe point.
    asked: AtomicBool,
    /// The copy thread of each direction while it is inside its copy loop, for an upgrade to
    /// wake; under a lock, so it is never woken after it has left.
    threads: Mutex<[Option<ThreadId>; 2]>,
    parked_threads: OnceLock<Box<ParkedThreads>>,
}

/// Where parked copy threads wait for the verdict.
#[derive(Debug, Default)]
struct ParkedThreads {
    state: Mutex<ParkState>,
    /// Signalled when a copy thread parks, and when the verdict comes.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ParkState {
    /// Each parked direction's bytes read but not written yet.
    held: [Option<Vec<u8>>; 2],
    /// The idle limits the copy threads run under, left by the first to park (the new process
    /// carries them on).
    timeouts: Option<Timeouts>,
    verdict: ParkVerdict,
}

/// What a parked copy thread is told.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ParkVerdict {
    /// Not yet: stay parked.
    #[default]
    Wait,
    /// The upgrade did not happen: carry on, writing the held bytes first.
    Resume,
    /// Another process owns the connection now: return without touching the sockets.
    Release,
}

/// The connection now belongs to another process: its copy threads returned without touching
/// the sockets, and nothing more is to be done with it here (no log line, no shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released;

/// Where one direction of a parked connection stands, and where the new process starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spot {
    /// Its copy thread is parked holding these bytes, read and not written: written first.
    Holding(Vec<u8>),
    /// It had ended already, this way, this many milliseconds after the start.
    Disposition(End, u64),
}

/// A connection whose copy threads are all at their safe point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parked {
    /// Each direction, client to upstream first: at least one is holding.
    pub(crate) spots: [Spot; 2],
    /// The idle limits they run under.
    pub(crate) timeouts: Timeouts,
}

/// Why a direction left its safe point without going on.
pub(super) enum Left {
    /// Released to another process.
    Released,
    /// Writing the held bytes failed.
    Failed(ChunkError),
}

/// The copy loop's safe point, taken at the top of each turn when an upgrade asks or bytes are
/// held from an interrupted write: parks if asked, then writes what `direction` holds, in order,
/// whichever process writes them, counting each byte written with `count`. Cold and apart from
/// the copy loop, so its frame is not on an idle copy thread's stack.
#[cold]
#[inline(never)]
pub(super) fn safe_point(
    park: &Park,
    (direction, timeouts): (Direction, Timeouts),
    dst: &Socket,
    watch: &dyn Watch,
    count: &dyn Fn(u64),
    mut held: Vec<u8>,
) -> Result<(), Left> {
    loop {
        if park.asked() {
            held = park.wait(direction, held, timeouts)?;
        }
        if held.is_empty() {
            return Ok(());
        }
        match chunk::write_all(dst, &held, watch) {
            Ok(()) => {
                count(held.len() as u64);
                return Ok(());
            }
            Err(ChunkError::Interrupted(stop)) => {
                count((held.len() - stop.held.len()) as u64);
                held = stop.held;
            }
            Err(err) => return Err(Left::Failed(err)),
        }
    }
}

/// The upgrade's side: ask the copy threads to stop, wake them, see where they stopped, then
/// release them or let them carry on.
impl Park {
    fn parked_threads(&self) -> &ParkedThreads {
        self.parked_threads.get_or_init(Box::default)
    }

    /// Asks both copy threads to stop at their next safe point.
    pub(crate) fn ask(&self) {
        lock(&self.parked_threads().state).verdict = ParkVerdict::Wait;
        self.asked.store(true, Ordering::SeqCst);
    }

    /// Wakes every copy thread that is inside its loop and not parked yet, out of the call it
    /// is blocked in. Repeated until they have parked: a thread about to block misses a signal
    /// that comes just before.
    pub(crate) fn wake(&self) {
        let threads = lock(&self.threads);
        let state = lock(&self.parked_threads().state);
        for (thread, held) in threads.iter().zip(&state.held) {
            if let (Some(thread), None) = (thread, held) {
                // Under the lock: the thread cannot leave its loop (and end) meanwhile.
                let _ = thread.wake();
            }
        }
    }

    /// Where the copy threads stopped, once every direction is either parked or ended (`ends`,
    /// at `ended_ms` after the start; at least one parked); `None` until then.
    pub(super) fn spots(&self, ends: [Option<End>; 2], ended_ms: u64) -> Option<Parked> {
        let state = lock(&self.parked_threads().state);
        let spots = Direction::BOTH.map(|d| match (&state.held[d as usize], ends[d as usize]) {
            (Some(held), _) => Some(Spot::Holding(held.clone())),
            (None, Some(end)) => Some(Spot::Disposition(end, ended_ms)),
            (None, None) => None,
        });
        match (spots, state.timeouts) {
            ([Some(a), Some(b)], Some(timeouts)) => Some(Parked {
                spots: [a, b],
                timeouts,
            }),
            _ => None,
        }
    }

    /// The upgrade is over for this connection: parked threads return at once (`release`) or
    /// carry on; threads not parked yet carry on without stopping.
    pub(crate) fn end(&self, release: bool) {
        let Some(meeting) = self.parked_threads.get() else {
            return;
        };
        let mut state = lock(&meeting.state);
        state.verdict = if release {
            ParkVerdict::Release
        } else {
            ParkVerdict::Resume
        };
        self.asked.store(false, Ordering::SeqCst);
        drop(state);
        meeting.changed.notify_all();
    }
}

/// The copy threads' side.
impl Park {
    /// True while an upgrade wants the copy threads stopped.
    pub(super) fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Registers the calling thread as `direction`'s copy thread, so an upgrade can wake it;
    /// dropping the guard (on every path) unregisters it.
    pub(super) fn enter(&self, direction: Direction) -> Inside<'_> {
        lock(&self.threads)[direction as usize] = Some(ThreadId::current());
        Inside {
            park: self,
            direction,
        }
    }

    /// Stops `direction`, which runs under `timeouts`, holding `held` (read, not written) until
    /// the upgrade decides; gives the held bytes back to write, or says it was released.
    fn wait(
        &self,
        direction: Direction,
        held: Vec<u8>,
        timeouts: Timeouts,
    ) -> Result<Vec<u8>, Left> {
        let meeting = self.parked_threads();
        let mut state = lock(&meeting.state);
        state.held[direction as usize] = Some(held);
        state.timeouts = Some(timeouts);
        meeting.changed.notify_all();
        while state.verdict == ParkVerdict::Wait && self.asked() {
            state = wait(&meeting.changed, state);
        }
        let held = state.held[direction as usize].take().unwrap_or_default();
        match state.verdict {
            ParkVerdict::Release => Err(Left::Released),
            ParkVerdict::Wait | ParkVerdict::Resume => Ok(held),
        }
    }
}

/// A copy thread inside its loop (see [`Park::enter`]).
#[derive(Debug)]
pub(super) struct Inside<'a> {
    park: &'a Park,
    direction: Direction,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        lock(&self.park.threads)[self.direction as usize] = None;
    }
}

#[cfg(test)]
mod tests {
    //! The safe point: copy threads blocked in `recv` or in a write stop where they are,
    //! holding what they read and did not write, and then either carry on or return.

    use super::*;
    use crate::relay::connection::Connection;
    use crate::relay::outcome::Outcome;
    use crate::relay::pump::relay;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;
    use std::time::Instant;

    /// A relayed connection over loopback: the test holds the client's and the upstream's far
    /// ends; the relay runs on threads of its own and reports on `done`.
    struct Relaying {
        conn: Arc<Connection>,
        client: TcpStream,
        upstream: TcpStream,
        done: mpsc::Receiver<Result<Outcome, Released>>,
    }

    fn relayed() -> Relaying {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (client_side, peer) = listener.accept().unwrap();
        let upstream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (upstream_far, _) = listener.accept().unwrap();
        let conn = Arc::new(Connection::new(1, peer.into(), client_side.into()));
        conn.attach_upstream(upstream.into());
        let (tx, done) = mpsc::channel();
        let relay_conn = Arc::clone(&conn);
        std::thread::spawn(move || {
            relay(
                &relay_conn,
                Timeouts::default(),
                [None, None],
                |task| std::thread::Builder::new().spawn(task).map(drop),
                move |relayed| tx.send(relayed).unwrap(),
            )
        });
        Relaying {
            conn,
            client,
            upstream: upstream_far,
            done,
        }
    }

    /// Asks for a park and wakes the threads until both directions have stopped.
    fn park(conn: &Connection) -> [Spot; 2] {
        conn.park.ask();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(parked) = conn.parked() {
                return parked.spots;
            }
            assert!(Instant::now() < deadline, "the copy threads did not park");
            conn.park.wake();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn echo_once(r: &mut Relaying, message: &[u8]) {
        r.client.write_all(message).unwrap();
        let mut got = vec![0; message.len()];
        r.upstream.read_exact(&mut got).unwrap();
        assert_eq!(got, message);
    }

    #[test]
    fn idle_threads_park_in_recv_and_carry_on_when_resumed() {
        let mut r = relayed();
        echo_once(&mut r, b"before");
        let spots = park(&r.conn);
        assert_eq!(
            spots,
            [Spot::Holding(Vec::new()), Spot::Holding(Vec::new())]
        );
        r.conn.park.end(false);
        echo_once(&mut r, b"after");
        drop(r.client);
        drop(r.upstream);
        r.done
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(r.conn.bytes(Direction::ClientToUpstream), 11);
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
        let spots = park(&r.conn);
        let Spot::Holding(pending) = &spots[0] else {
            panic!("{spots:?}")
        };
        r.conn.park.end(true);
        assert_eq!(
            r.done.recv_timeout(Duration::from_secs(10)).unwrap(),
            Err(Released)
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
