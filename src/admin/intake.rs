//! The admin endpoint's accept thread: it checks the allow list the moment a client is accepted
//! (a refused peer is sent `403` and closed, and never holds a thread or reads a byte of its
//! request), and reads the request heads of every waiting client at once, non-blocking, in one
//! poll loop. A client that sends slowly or not at all costs a socket and a buffer here, never an
//! answering thread, so probes get through however many wait.
//!
//! A complete request is answered on a thread of its own (see `client`), at most [`MAX_ANSWERING`]
//! at once. When they are all busy, `/health` and `/ready` are answered here (their answers are a
//! few bytes and fit any socket buffer); anything else gets `429` with `Retry-After`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::config::{listed, Pattern};
use crate::proto::Parsed;
use crate::serve::status::Shared;

use super::client::{self, DEADLINE, LINGER, LINGER_BYTES};
use super::http::{self, Request, RequestError, Response};

/// Requests answered at once, each on a thread: room for a scraper, a status page and probes
/// together with a wide margin. A thread keeps its place until the client has closed (or its
/// linger is over), and a client that asks again at once may find its last thread not yet
/// gone, so 20 clients asking in a loop can hold about twice their number.
pub(super) const MAX_ANSWERING: usize = 64;

/// Clients whose request head is still arriving; when more come, the one that has waited
/// longest is sent `408` and closed.
const MAX_WAITING: usize = 256;

/// Clients answered on this thread and lingering (see [`LINGER`]); when more come, the oldest is
/// closed at once.
const MAX_CLOSING: usize = 256;

/// Clients accepted in one go before the waiting ones are looked at again.
const ACCEPT_BATCH: usize = 64;

/// A client whose request head is still arriving.
struct Arriving {
    stream: TcpStream,
    peer: SocketAddr,
    head: Vec<u8>,
    deadline: Instant,
}

/// A client answered here, read from (and the bytes dropped) for a moment before it is closed,
/// so that closing with unread bytes does not reset the answer away.
struct Closing {
    stream: TcpStream,
    until: Instant,
    read: usize,
}

/// The accept thread's state.
struct Intake {
    shared: Arc<Shared>,
    allow: Arc<RwLock<Vec<Pattern>>>,
    answering: Arc<AtomicUsize>,
    waiting: VecDeque<Arriving>,
    closing: VecDeque<Closing>,
}

/// Accepts and reads admin clients until the stop socket is written to or closed.
pub(super) fn run(
    socket: TcpListener,
    stopped: UnixStream,
    shared: Arc<Shared>,
    allow: Arc<RwLock<Vec<Pattern>>>,
) {
    let mut intake = Intake {
        shared,
        allow,
        answering: Arc::new(AtomicUsize::new(0)),
        waiting: VecDeque::new(),
        closing: VecDeque::new(),
    };
    loop {
        let (listener_ready, stop, waiting_ready, closing_ready) =
            match intake.wait(&socket, &stopped) {
                Ok(ready) => ready,
                Err(errno) => {
                    log::error!("admin endpoint: poll failed: {errno}; the endpoint stops");
                    return;
                }
            };
        if stop {
            return;
        }
        intake.read_waiting(&waiting_ready);
        intake.drain_closing(&closing_ready);
        intake.expire(Instant::now());
        if listener_ready {
            intake.accept(&socket);
        }
    }
}

/// Which sockets a poll found ready: the listener, the stop socket, then each waiting and each
/// closing client in order.
type Ready = (bool, bool, Vec<bool>, Vec<bool>);

impl Intake {
    /// Waits until a socket is ready or the nearest deadline passes.
    fn wait(&self, socket: &TcpListener, stopped: &UnixStream) -> Result<Ready, rustix::io::Errno> {
        let mut fds = vec![
            PollFd::new(socket, PollFlags::IN),
            PollFd::new(stopped, PollFlags::IN),
        ];
        fds.extend(
            self.waiting
                .iter()
                .map(|w| PollFd::new(&w.stream, PollFlags::IN)),
        );
        fds.extend(
            self.closing
                .iter()
                .map(|c| PollFd::new(&c.stream, PollFlags::IN)),
        );
        let nearest = (self.waiting.iter().map(|w| w.deadline))
            .chain(self.closing.iter().map(|c| c.until))
            .min();
        let timeout = nearest.map(|at| {
            // Rounded up to the next millisecond, so a deadline is never polled for just before
            // it passes.
            let left = at.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
            Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {
                return Ok((false, false, Vec::new(), Vec::new()));
            }
            Err(errno) => return Err(errno),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        let (head, clients) = ready.split_at(2);
        let (waiting, closing) = clients.split_at(self.waiting.len());
        Ok((head[0], head[1], waiting.to_vec(), closing.to_vec()))
    }

    /// Accepts the clients in the backlog: a refused one is answered `403` at once, the others
    /// wait here for their request.
    fn accept(&mut self, socket: &TcpListener) {
        for _ in 0..ACCEPT_BATCH {
            match socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("admin endpoint: accept failed: {err}");
                    // A full fd table keeps the socket readable: do not spin on it.
                    thread::sleep(Duration::from_millis(50));
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if !self.allowed(peer) {
            log::debug!("admin endpoint: {peer} is not allowed");
            self.answer_here(stream, &Response::text(403, "forbidden"), false);
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            if let Some(oldest) = self.waiting.pop_front() {
                self.answer_here(oldest.stream, &timeout(), false);
            }
        }
        self.waiting.push_back(Arriving {
            stream,
            peer,
            head: Vec::with_capacity(1024),
            deadline: Instant::now() + DEADLINE,
        });
    }

    fn allowed(&self, peer: SocketAddr) -> bool {
        let allow = self
            .allow
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        listed(&allow, peer.ip())
    }

    /// Reads what the ready waiting clients sent; a complete request is answered, a bad one
    /// refused.
    fn read_waiting(&mut self, ready: &[bool]) {
        let mut still = VecDeque::with_capacity(self.waiting.len());
        let waiting = std::mem::take(&mut self.waiting);
        for (index, mut client) in waiting.into_iter().enumerate() {
            if !ready.get(index).copied().unwrap_or(false) {
                still.push_back(client);
                continue;
            }
            let closed = read_more(&client.stream, &mut client.head);
            match http::parse_request(&client.head) {
                Ok(Parsed::Complete(request)) => self.dispatch(client, request),
                Ok(Parsed::Partial) if !closed => still.push_back(client),
                Ok(Parsed::Partial) => {
                    let response = Response::text(400, "closed before a whole request");
                    self.answer_here(client.stream, &response, false);
                }
                Err(RequestError::Malformed) => {
                    self.answer_here(client.stream, &Response::text(400, "bad request"), false);
                }
                Err(RequestError::TooLarge) => {
                    let response = Response::text(431, "request head too large");
                    self.answer_here(client.stream, &response, false);
                }
            }
        }
        self.waiting = still;
    }

    /// Answers a complete request on a thread of its own, or, with every thread busy, here:
    /// the probes as usual, anything else `429`.
    fn dispatch(&mut self, client: Arriving, request: Request) {
        let head_only = request.method == "HEAD";
        let Arriving { stream, peer, .. } = client;
        let Some(slot) = client::AnswerSlot::take(&self.answering, MAX_ANSWERING) else {
            let response = if matches!(request.path.as_str(), "/health" | "/ready") {
                client::answer(&request, &self.shared)
            } else {
                Response::busy()
            };
            self.answer_here(stream, &response, head_only);
            return;
        };
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("tcp-router-admin-client".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                client::respond(stream, &request, &shared);
            });
        if let Err(err) = spawned {
            log::warn!("admin endpoint: cannot start a thread for {peer}: {err}");
        }
    }

    /// Sends `response` without waiting (a short answer to a fresh socket fits its buffer), and
    /// lingers on the client here for a moment.
    fn answer_here(&mut self, stream: TcpStream, response: &Response, head_only: bool) {
        let _ = (&stream).write(&response.to_bytes(head_only));
        let _ = stream.shutdown(Shutdown::Write);
        if self.closing.len() >= MAX_CLOSING {
            self.closing.pop_front();
        }
        self.closing.push_back(Closing {
            stream,
            until: Instant::now() + LINGER,
            read: 0,
        });
    }

    /// Reads and drops what the lingering clients sent; closes those that closed or sent too much.
    fn drain_closing(&mut self, ready: &[bool]) {
        let mut index = 0;
        self.closing.retain_mut(|client| {
            let is_ready = ready.get(index).copied().unwrap_or(false);
            index += 1;
            if !is_ready {
                return true;
            }
            let mut sink = [0u8; 1024];
            loop {
                match (&client.stream).read(&mut sink) {
                    Ok(0) => return false,
                    Ok(n) => {
                        client.read += n;
                        if client.read >= LINGER_BYTES {
                            return false;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        });
    }

    /// Sends `408` to clients whose request did not arrive in time, and closes lingering ones
    /// whose moment is over.
    fn expire(&mut self, now: Instant) {
        self.closing.retain(|client| client.until > now);
        while self.waiting.front().is_some_and(|w| w.deadline <= now) {
            if let Some(late) = self.waiting.pop_front() {
                self.answer_here(late.stream, &timeout(), false);
            }
        }
    }
}

fn timeout() -> Response {
    Response::text(408, "request timeout")
}

/// Reads what has arrived (up to just over [`http::MAX_REQUEST`] in all); true if the client
/// closed its end or failed.
fn read_more(stream: &TcpStream, head: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 1024];
    while head.len() <= http::MAX_REQUEST {
        match (&*stream).read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}
