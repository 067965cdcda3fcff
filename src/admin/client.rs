//! One admin client: its request read within a deadline and a size cap, answered, and closed. A
//! slow or hostile client holds one admin thread (of a few) for the deadline at most.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Pattern;
use crate::proto::Status;
use crate::serve::status::Shared;

use super::http::{self, Refusal, Request, Response};
use super::{json, metrics, MAX_CLIENTS};

/// How long a client may take to send its request, and each write of the answer may wait.
const DEADLINE: Duration = Duration::from_secs(5);

/// How long, and how much, an answered client may still send before it is closed.
const LINGER: Duration = Duration::from_millis(100);
const LINGER_BYTES: usize = 64 * 1024;

/// A stalled accept loop: `/health` turns 503 when its heartbeat is older than this.
const HEALTH_STALE: Duration = Duration::from_secs(5);

/// The status page, self-contained: no external scripts, fonts or styles.
const PAGE: &str = include_str!("page.html");

/// Serves `stream` on a thread of its own, or answers 503 at once when [`MAX_CLIENTS`] are busy.
pub(super) fn start(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    allow: &Arc<RwLock<Vec<Pattern>>>,
    active: &Arc<AtomicUsize>,
) {
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        active.fetch_sub(1, Ordering::SeqCst);
        let busy = Response::text(503, "too many admin clients; try again");
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write(&busy.to_bytes(false));
        return;
    }
    let slot = Slot(Arc::clone(active));
    let shared = Arc::clone(shared);
    let allow = Arc::clone(allow);
    let spawned = thread::Builder::new()
        .name("tcp-router-admin-client".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _slot = slot;
            serve(stream, peer, &shared, &allow);
        });
    if let Err(err) = spawned {
        log::warn!("admin endpoint: cannot start a thread for {peer}: {err}");
    }
}

/// One admin client's place among the [`MAX_CLIENTS`]; given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared, allow: &RwLock<Vec<Pattern>>) {
    // Accepted from a non-blocking listener; Linux does not pass O_NONBLOCK on, but be sure.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let (response, head_only) = match read_request(&stream) {
        Ok(request) if !allowed(allow, peer) => {
            log::debug!(
                "admin endpoint: {peer} is not allowed ({} {})",
                request.method,
                request.path
            );
            (Response::text(403, "forbidden"), request.method == "HEAD")
        }
        Ok(request) => (answer(&request, shared), request.method == "HEAD"),
        Err(refused) => (refused, false),
    };
    let _ = (&stream).write_all(&response.to_bytes(head_only));
    let _ = stream.shutdown(Shutdown::Write);
    linger(&stream);
}

/// Reads what the client still sends for a moment (at most [`LINGER`] and [`LINGER_BYTES`]), so
/// that closing with unread bytes does not reset the answer away before the client reads it; a
/// client that keeps sending is simply closed after that.
fn linger(stream: &TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 512];
    let mut read = 0;
    while read < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

fn allowed(allow: &RwLock<Vec<Pattern>>, peer: SocketAddr) -> bool {
    let allow = allow
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    allow.is_empty() || allow.iter().any(|p| p.matches(peer.ip()))
}

/// Reads the request head within [`DEADLINE`] and [`http::MAX_REQUEST`] bytes; the error is the
/// response to send.
fn read_request(stream: &TcpStream) -> Result<Request, Response> {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match http::parse_request(&buf) {
            Ok(Status::Complete(request)) => return Ok(request),
            Ok(Status::Partial) => {}
            Err(Refusal::Malformed) => return Err(Response::text(400, "bad request")),
            Err(Refusal::TooLarge) => return Err(Response::text(431, "request head too large")),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Response::text(408, "request timeout"));
        }
        let _ = stream.set_read_timeout(Some(left));
        match (&*stream).read(&mut chunk) {
            Ok(0) => return Err(Response::text(400, "closed before a whole request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Response::text(408, "request timeout"))
            }
            Err(_) => return Err(Response::text(400, "read error")),
        }
    }
}

/// The answer to a well-formed request.
fn answer(request: &Request, shared: &Shared) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        let mut response = Response::text(405, "only GET and HEAD");
        response.headers.push("Allow: GET, HEAD".into());
        return response;
    }
    match request.path.as_str() {
        "/" => Response::new(200, "text/html; charset=utf-8", PAGE),
        "/metrics" => Response::new(200, metrics::CONTENT_TYPE, metrics::render(shared)),
        "/ready" if shared.is_stopping() => Response::text(503, "stopping"),
        "/ready" => Response::text(200, "ready"),
        "/health" => health(shared),
        "/connections" => match limit(&request.query) {
            Ok(limit) => json_response(&json::connections(shared, limit)),
            Err(why) => Response::text(400, &why),
        },
        "/routes" => json_response(&json::routes(shared)),
        _ => Response::text(
            404,
            "not found; try /, /metrics, /ready, /health, /connections, /routes",
        ),
    }
}

fn health(shared: &Shared) -> Response {
    let since = shared.since_heartbeat();
    if since > HEALTH_STALE {
        Response::text(
            503,
            &format!(
                "the accept loop has not gone round for {} s",
                since.as_secs()
            ),
        )
    } else {
        Response::text(200, "ok")
    }
}

/// `?limit=N`, if given.
fn limit(query: &str) -> Result<Option<usize>, String> {
    match http::query_value(query, "limit") {
        None => Ok(None),
        Some(text) => text
            .parse::<usize>()
            .map(Some)
            .map_err(|_| format!("invalid limit '{text}': expected a whole number")),
    }
}

fn json_response(value: &serde_json::Value) -> Response {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    Response::new(200, "application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_numbers() {
        assert_eq!(limit(""), Ok(None));
        assert_eq!(limit("limit=3"), Ok(Some(3)));
        assert!(limit("limit=-1").unwrap_err().contains("'-1'"));
    }
}
