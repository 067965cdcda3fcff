//! One admin client's answer, on a thread of its own: written within a deadline per write, then
//! the client is read from for a moment and closed. Its request was read by the accept thread
//! (`intake`), so a slow or hostile client holds a thread only while it is slow to read.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::serve::status::Shared;

use super::http::{self, Request, Response};
use super::{json, metrics};

/// How long a client may take to send its request, and each write of the answer may wait.
pub(super) const DEADLINE: Duration = Duration::from_secs(5);

/// How long, and how much, an answered client may still send before it is closed.
pub(super) const LINGER: Duration = Duration::from_millis(100);
pub(super) const LINGER_BYTES: usize = 64 * 1024;

/// A stalled accept loop: `/health` turns 503 when its heartbeat is older than this.
const HEALTH_STALE: Duration = Duration::from_secs(5);

/// The status page, self-contained: no external scripts, fonts or styles.
const PAGE: &str = include_str!("page.html");

/// One answering thread's place among a few; given back when dropped.
pub(super) struct AnswerSlot(Arc<AtomicUsize>);

impl AnswerSlot {
    /// A place among `max`, if one is free.
    pub(super) fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<AnswerSlot> {
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(AnswerSlot(Arc::clone(count)))
    }
}

impl Drop for AnswerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers `request` on `stream`, then lingers and closes.
pub(super) fn respond(stream: TcpStream, request: &Request, shared: &Shared) {
    // Non-blocking while the accept thread read the request; blocking, with a deadline, here.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let response = answer(request, shared);
    let _ = (&stream).write_all(&response.to_bytes(request.method == "HEAD"));
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

/// The answer to a well-formed request.
pub(super) fn answer(request: &Request, shared: &Shared) -> Response {
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
