//! The little HTTP/1.1 the admin endpoint speaks: a request head read as a pure function over the
//! bytes received so far, and responses that always close the connection.

use std::fmt::Write as _;

use crate::proto::Parsed;

/// The largest request head accepted; more is answered 431 without reading on.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;

/// A request, as far as the endpoint cares: method, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
}

/// Why a request head cannot be served, as a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// 400: not an HTTP/1.x request line.
    Malformed,
    /// 431: the head is over [`MAX_REQUEST`] bytes.
    TooLarge,
}

/// Reads the request head at the start of `buf`: `Partial` until the blank line that ends it has
/// arrived. Only the request line is interpreted; header lines are skipped.
pub(crate) fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, RequestError> {
    let window = &buf[..buf.len().min(MAX_REQUEST)];
    let Some(end) = find(window, b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| find(window, b"\n\n").map(|i| i + 2))
    else {
        return if buf.len() >= MAX_REQUEST {
            Err(RequestError::TooLarge)
        } else if looks_like_http_so_far(window) {
            Ok(Parsed::Partial)
        } else {
            Err(RequestError::Malformed)
        };
    };
    let head = std::str::from_utf8(&window[..end]).map_err(|_| RequestError::Malformed)?;
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !version.starts_with("HTTP/1.")
    {
        return Err(RequestError::Malformed);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Parsed::Complete(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
    }))
}

/// True while the bytes could still begin a request line (a method in capitals, then a space).
fn looks_like_http_so_far(buf: &[u8]) -> bool {
    let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    buf[..method_end].iter().all(u8::is_ascii_uppercase) && method_end <= 16
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of `key` in a query string (`limit=50&x=1`), if given.
pub(crate) fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A response: status, content type and body; every response closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// Extra header lines, each without its CRLF.
    pub(crate) headers: Vec<String>,
}

impl Response {
    /// A response with `body` of `content_type`.
    pub(crate) fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text response of one line.
    pub(crate) fn text(status: u16, line: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{line}\n"))
    }

    /// Every answering thread is busy: `429` with `Retry-After`, which says "ask again" where a
    /// `503` would say "unhealthy".
    pub(crate) fn busy() -> Response {
        let mut response = Response::text(429, "too many admin clients; try again");
        response.headers.push("Retry-After: 1".into());
        response
    }

    /// The bytes to send: the head, and the body unless the request was `HEAD`.
    pub(crate) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut head = String::new();
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for header in &self.headers {
            let _ = write!(head, "{header}\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, query: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
        }
    }

    #[test]
    fn a_request_line_is_read_once_the_head_is_complete() {
        let head = b"GET /connections?limit=5 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request(head),
            Ok(Parsed::Complete(request("GET", "/connections", "limit=5")))
        );
        for n in 0..head.len() - 1 {
            assert_eq!(parse_request(&head[..n]), Ok(Parsed::Partial), "prefix {n}");
        }
        assert_eq!(
            parse_request(b"HEAD / HTTP/1.0\n\n"),
            Ok(Parsed::Complete(request("HEAD", "/", "")))
        );
    }

    #[test]
    fn what_is_not_http_or_too_large_is_refused() {
        assert_eq!(parse_request(b"\x16\x03\x01"), Err(RequestError::Malformed));
        assert_eq!(
            parse_request(b"GET nopath HTTP/1.1\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        assert_eq!(
            parse_request(b"GET / SPDY/3\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert_eq!(parse_request(&big), Err(RequestError::TooLarge));
    }

    #[test]
    fn query_values_are_found_by_key() {
        assert_eq!(query_value("limit=5&x=1", "limit"), Some("5"));
        assert_eq!(query_value("x=1", "limit"), None);
        assert_eq!(query_value("", "limit"), None);
    }

    #[test]
    fn responses_close_and_head_has_no_body() {
        let response = Response::text(503, "stopping");
        let full = String::from_utf8(response.to_bytes(false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(full.contains("Connection: close\r\n"));
        assert!(full.contains("Content-Length: 9\r\n"));
        assert!(full.ends_with("\r\n\r\nstopping\n"));
        let head = String::from_utf8(response.to_bytes(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        assert!(head.contains("Content-Length: 9\r\n"));
    }
}
