//! Reads the target host of a plain HTTP/1.x request from the first bytes
//! of a connection, without buffering or rewriting the request.
//!
//! Rules chosen here:
//! - Request line: `METHOD SP request-target SP HTTP/1.<digit>` ended by
//!   CRLF or a bare LF. Anything else there is `NotHttp`, decided at the
//!   first byte that cannot belong to such a line (so a TLS record or binary
//!   data fails at byte 0, while `GE` is `Partial`).
//! - An absolute-form target (`http://host[:port]/...`, scheme `http` or
//!   `https` in any case) decides the host as soon as the request line is
//!   complete: RFC 9112 section 3.2.2 says the Host header is then ignored.
//!   Authority-form (CONNECT) and origin-form targets use the Host header.
//! - The first `Host` header (name in any case) decides; later headers are
//!   not read. The header counts as complete once the first byte of the
//!   next line has arrived and shows no obsolete line folding.
//! - After a valid request line every syntax error is `Malformed`: header
//!   names must be tokens followed directly by `:`, values may hold no
//!   control bytes other than tab, CR must be followed by LF, and lines may
//!   not start with whitespace (obsolete folding, which RFC 9112 lets a
//!   server reject).
//! - Host values: optional whitespace is trimmed; an empty value means no
//!   host (`Complete(None)`); a port (`:` and up to five digits, at most
//!   65535, possibly empty as RFC 3986 allows) is stripped; `[v6]` literals
//!   are returned without brackets in canonical text form; names follow the
//!   shared rule of `proto::name` (lowercase, no trailing dot); anything
//!   else is `Malformed`.
//! - The decision must come within the first [`MAX_HEAD_BYTES`] bytes.

use std::fmt;
use std::net::Ipv6Addr;

use super::cursor::{Parsed, Reader};
use super::name;

/// The caller's read cap: if the host is not decided within this many bytes
/// the answer is `TooLarge`, so `parse_host` never returns `Partial` for a
/// buffer this long. 16 KiB is above common server limits for one line.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Longest method accepted; registered methods are at most 17 bytes, and a
/// short limit lets non-HTTP text fail early.
const MAX_METHOD_LEN: usize = 24;

/// Why a buffer is not an HTTP/1.x request with a usable host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The bytes cannot start an HTTP/1.x request line.
    NotHttp,
    /// A valid request line is followed by invalid headers, or the host is
    /// invalid; the text says what.
    Malformed(&'static str),
    /// No decision within [`MAX_HEAD_BYTES`] bytes.
    TooLarge,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::NotHttp => f.write_str("not an HTTP/1.x request"),
            HttpError::Malformed(why) => write!(f, "malformed HTTP request: {why}"),
            HttpError::TooLarge => write!(f, "HTTP request head exceeds {MAX_HEAD_BYTES} bytes"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The answer to an HTTP client whose Host no route takes, on a listener without a default
/// route: `421 Misdirected Request` (RFC 9110, 15.5.20: this server is not able to answer for that
/// authority), with no body, and the connection closed. TLS clients get an `unrecognized_name`
/// alert in the same place; an empty reply would leave a browser or curl guessing.
pub fn misdirected_response() -> &'static [u8] {
    b"HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
}

/// Finds the target host of the HTTP/1.x request at the start of `buf`
/// (everything received so far).
///
/// Returns `Complete(Some(host))` once the host is known, `Complete(None)`
/// when the headers end without a Host header (or with an empty one), and
/// `Partial` while more bytes are needed. An answer other than `Partial`
/// never changes as more bytes arrive.
pub fn parse_host(buf: &[u8]) -> Result<Parsed<Option<String>>, HttpError> {
    // Bytes past the cap are never looked at, so prefixes stay consistent.
    let window = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);
    match parse_head(window)? {
        Parsed::Partial if buf.len() >= MAX_HEAD_BYTES => Err(HttpError::TooLarge),
        status => Ok(status),
    }
}

/// Request line, then headers until the host is decided.
fn parse_head(buf: &[u8]) -> Result<Parsed<Option<String>>, HttpError> {
    let mut r = Reader::new(buf);
    let Some(target) = request_line(&mut r)? else {
        return Ok(Parsed::Partial);
    };
    if let Some(authority) = absolute_form_authority(target) {
        if authority.is_empty() || authority.contains(&b'@') {
            return Err(HttpError::Malformed(
                "request target has no usable authority",
            ));
        }
        return host_value(authority).map(Parsed::Complete);
    }
    headers(&mut r)
}

/// RFC 9110 `tchar`: the bytes of a method or header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in a request target (visible ASCII).
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// Bytes allowed in a header value: visible ASCII, space, tab and obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b' ' || b == b'\t' || b.is_ascii_graphic() || b >= 0x80
}

/// Consumes the longest run of bytes matching `ok` and returns it with the
/// byte that ended it (left unconsumed), or `None` if the input ran out.
fn run<'a>(r: &mut Reader<'a>, ok: fn(u8) -> bool) -> (&'a [u8], Option<u8>) {
    let rest = r.clone().rest();
    let len = rest.iter().position(|&b| !ok(b)).unwrap_or(rest.len());
    let taken = r.take(len).unwrap_or(&[]);
    (taken, rest.get(len).copied())
}

/// Consumes `expected` or as much of it as has arrived. `Ok(false)` means the
/// input ended while matching; a mismatch is `err`.
fn literal(r: &mut Reader<'_>, expected: &[u8], err: HttpError) -> Result<bool, HttpError> {
    for &want in expected {
        match r.u8() {
            None => return Ok(false),
            Some(got) if got == want => {}
            Some(_) => return Err(err),
        }
    }
    Ok(true)
}

/// Consumes a line ending (CRLF or bare LF). `Ok(false)` means more bytes
/// are needed.
fn line_end(r: &mut Reader<'_>, err: HttpError) -> Result<bool, HttpError> {
    match r.u8() {
        None => Ok(false),
        Some(b'\n') => Ok(true),
        Some(b'\r') => literal(r, b"\n", err),
        Some(_) => Err(err),
    }
}

/// Parses the request line and returns the request target, or `None` if
/// the line is not complete yet. Every failure here is `NotHttp`.
fn request_line<'a>(r: &mut Reader<'a>) -> Result<Option<&'a [u8]>, HttpError> {
    let (method, next) = run(r, is_tchar);
    if method.len() > MAX_METHOD_LEN {
        return Err(HttpError::NotHttp);
    }
    match next {
        None => return Ok(None),
        Some(b' ') if !method.is_empty() => {}
        Some(_) => return Err(HttpError::NotHttp),
    }
    r.u8();
    let (target, next) = run(r, is_target_byte);
    match next {
        None => return Ok(None),
        Some(b' ') if !target.is_empty() => {}
        Some(_) => return Err(HttpError::NotHttp),
    }
    r.u8();
    if !literal(r, b"HTTP/1.", HttpError::NotHttp)? {
        return Ok(None);
    }
    match r.u8() {
        None => return Ok(None),
        Some(minor) if minor.is_ascii_digit() => {}
        Some(_) => return Err(HttpError::NotHttp),
    }
    Ok(line_end(r, HttpError::NotHttp)?.then_some(target))
}

/// Returns the authority of an absolute-form `http`/`https` target.
fn absolute_form_authority(target: &[u8]) -> Option<&[u8]> {
    let scheme_end = target.iter().position(|&b| b == b':')?;
    let (scheme, rest) = target.split_at(scheme_end);
    let is_http = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    let after = rest.strip_prefix(b"://")?;
    if !is_http {
        return None;
    }
    let end = after
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    after.get(..end)
}

/// Reads header lines until the Host header or the end of the headers.
fn headers(r: &mut Reader<'_>) -> Result<Parsed<Option<String>>, HttpError> {
    const BAD_END: HttpError = HttpError::Malformed("CR not followed by LF");
    loop {
        match r.clone().u8() {
            None => return Ok(Parsed::Partial),
            Some(b'\r' | b'\n') => {
                // The empty line: headers ended without a Host header.
                return Ok(if line_end(r, BAD_END)? {
                    Parsed::Complete(None)
                } else {
                    Parsed::Partial
                });
            }
            Some(b' ' | b'\t') => return Err(HttpError::Malformed("line starts with whitespace")),
            Some(_) => {}
        }
        let Some((name, value)) = header_line(r)? else {
            return Ok(Parsed::Partial);
        };
        if name.eq_ignore_ascii_case(b"host") {
            // Wait for the next line's first byte to rule out a folded value.
            return match r.clone().u8() {
                None => Ok(Parsed::Partial),
                Some(b' ' | b'\t') => Err(HttpError::Malformed("line starts with whitespace")),
                Some(_) => host_value(value).map(Parsed::Complete),
            };
        }
    }
}

/// A header line split into name and (untrimmed) value.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Parses one `name: value` line; `None` if it is not complete yet.
fn header_line<'a>(r: &mut Reader<'a>) -> Result<Option<Field<'a>>, HttpError> {
    let (name, next) = run(r, is_tchar);
    match next {
        None => return Ok(None),
        Some(b':') if !name.is_empty() => {}
        Some(_) => return Err(HttpError::Malformed("invalid byte in header name")),
    }
    r.u8();
    let (value, next) = run(r, is_value_byte);
    match next {
        None => return Ok(None),
        Some(b'\r' | b'\n') => {}
        Some(_) => return Err(HttpError::Malformed("control byte in header value")),
    }
    let complete = line_end(r, HttpError::Malformed("CR not followed by LF"))?;
    Ok(complete.then_some((name, value)))
}

/// Turns a Host value (or absolute-form authority) into the routing name.
fn host_value(raw: &[u8]) -> Result<Option<String>, HttpError> {
    const BAD_HOST: HttpError = HttpError::Malformed("invalid Host value");
    let value = raw.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(bracketed) = value.strip_prefix(b"[") {
        let close = bracketed.iter().position(|&b| b == b']').ok_or(BAD_HOST)?;
        let (literal, after) = bracketed.split_at(close);
        check_port(after.strip_prefix(b"]").unwrap_or(after))?;
        let addr: Ipv6Addr = std::str::from_utf8(literal)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or(BAD_HOST)?;
        return Ok(Some(addr.to_string()));
    }
    let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
    let (name, port) = value.split_at(colon);
    check_port(port)?;
    name::canonical_bytes(name).map(Some).ok_or(BAD_HOST)
}

/// Accepts an empty suffix or `:` followed by at most five digits that
/// form a number up to 65535.
fn check_port(suffix: &[u8]) -> Result<(), HttpError> {
    const BAD_PORT: HttpError = HttpError::Malformed("invalid port in Host value");
    let Some(digits) = suffix.strip_prefix(b":") else {
        return if suffix.is_empty() {
            Ok(())
        } else {
            Err(BAD_PORT)
        };
    };
    if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(BAD_PORT);
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    if value > u32::from(u16::MAX) {
        return Err(BAD_PORT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::XorShift;

    fn host(input: &[u8]) -> Result<Parsed<Option<String>>, HttpError> {
        parse_host(input)
    }

    fn found(name: &str) -> Result<Parsed<Option<String>>, HttpError> {
        Ok(Parsed::Complete(Some(name.to_string())))
    }

    const NONE: Result<Parsed<Option<String>>, HttpError> = Ok(Parsed::Complete(None));

    fn malformed(why: &'static str) -> Result<Parsed<Option<String>>, HttpError> {
        Err(HttpError::Malformed(why))
    }

    /// Every prefix is `Partial` or already the final answer, and once an
    /// answer appears it never changes. Returns the final answer.
    fn check_splits(input: &[u8]) -> Result<Parsed<Option<String>>, HttpError> {
        let full = host(input);
        let mut decided = false;
        for end in 0..=input.len() {
            let got = host(&input[..end]);
            if got == Ok(Parsed::Partial) {
                assert!(!decided, "{input:?}: Partial after an answer at {end}");
            } else {
                assert_eq!(got, full, "{input:?} cut at {end}");
                decided = true;
            }
        }
        full
    }

    #[test]
    fn simple_request() {
        let req = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        assert_eq!(check_splits(req), found("example.com"));
    }

    #[test]
    fn splits_give_partial_then_the_same_answer() {
        let req =
            b"POST /a?b=c HTTP/1.1\r\nUser-Agent: x/1\r\nHOST:  Foo.Example:8443 \r\n\r\nbody";
        assert_eq!(check_splits(req), found("foo.example"));
        // The answer comes once the byte after the Host line is there.
        let at = req.iter().position(|&b| b == b'8').unwrap() + b"8443 \r\n".len();
        assert_eq!(host(&req[..at]), Ok(Parsed::Partial));
        assert_eq!(host(&req[..at + 1]), found("foo.example"));
    }

    #[test]
    fn host_name_in_any_case_and_whitespace() {
        for line in [
            "Host: example.com",
            "host: example.com",
            "HOST: example.com",
            "hOsT: EXAMPLE.com.",
            "Host:example.com",
            "Host: \t example.com \t ",
        ] {
            let req = format!("GET / HTTP/1.1\r\n{line}\r\n\r\n");
            assert_eq!(check_splits(req.as_bytes()), found("example.com"), "{line}");
        }
    }

    #[test]
    fn ports_and_literals() {
        for (value, want) in [
            ("example.com:8080", "example.com"),
            ("example.com:", "example.com"),
            ("Example.COM.:80", "example.com"),
            ("[::1]:80", "::1"),
            ("[::1]", "::1"),
            ("[2001:DB8:0:0::1]:443", "2001:db8::1"),
            ("192.168.0.11:80", "192.168.0.11"),
            ("a_b.example:0", "a_b.example"),
            ("x:65535", "x"),
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
            assert_eq!(check_splits(req.as_bytes()), found(want), "{value}");
        }
        for value in ["x:65536", "x:8a", "x:123456", "x:80:80", "[::1]80"] {
            let req = format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
            assert!(
                matches!(host(req.as_bytes()), Err(HttpError::Malformed(_))),
                "{value}"
            );
        }
        for value in [
            ":80",
            "[::1",
            "[fe80::1%25eth0]",
            "[1.2.3.4]",
            "a b",
            "a..b",
            "caf\u{e9}",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
            assert_eq!(
                host(req.as_bytes()),
                malformed("invalid Host value"),
                "{value}"
            );
        }
    }

    #[test]
    fn missing_or_empty_host() {
        assert_eq!(check_splits(b"GET / HTTP/1.0\r\n\r\n"), NONE);
        assert_eq!(check_splits(b"GET / HTTP/1.0\r\nAccept: x\r\n\r\n"), NONE);
        assert_eq!(check_splits(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), NONE);
        assert_eq!(
            check_splits(b"GET / HTTP/1.1\r\nHost: \t \r\nX: y\r\n\r\n"),
            NONE
        );
        assert_eq!(check_splits(b"GET / HTTP/1.1\r\nHostname: a\r\n\r\n"), NONE);
    }

    #[test]
    fn bare_lf_line_endings() {
        assert_eq!(check_splits(b"GET / HTTP/1.1\nHost: a.b\n\n"), found("a.b"));
        assert_eq!(
            check_splits(b"GET / HTTP/1.1\nX: 1\r\nHost: a.b\n\r\n"),
            found("a.b")
        );
        assert_eq!(check_splits(b"GET / HTTP/1.0\n\n"), NONE);
    }

    #[test]
    fn first_host_header_wins() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(check_splits(req), found("a"));
    }

    #[test]
    fn absolute_form_target() {
        let req = b"GET http://Example.com:8080/path HTTP/1.1\r\nHost: other\r\n\r\n";
        assert_eq!(check_splits(req), found("example.com"));
        let req = b"GET HTTPS://a.b?x=1 HTTP/1.1\r\n";
        assert_eq!(check_splits(req), found("a.b"));
        let req = b"GET http://[::1]:8080 HTTP/1.1\r\n";
        assert_eq!(check_splits(req), found("::1"));
        for target in ["http://user@a/", "http:///x", "http://?x"] {
            let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                host(req.as_bytes()),
                malformed("request target has no usable authority"),
                "{target}"
            );
        }
        // Other schemes and forms fall back to the Host header.
        let req = b"GET ftp://x/ HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(check_splits(req), found("h"));
        let req = b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\n";
        assert_eq!(check_splits(req), found("x.example"));
        let req = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(check_splits(req), found("h"));
    }

    #[test]
    fn not_http() {
        for input in [
            &b"\x16\x03\x01\x02\x00\x01"[..],
            b"\x00\x01\x02",
            b" GET / HTTP/1.1\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET /\r\n",
            b"GET / HTTP/2.0\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / http/1.1\r\n",
            b"GET / HTTP/1.x\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.1\rX",
            b"GET /\x7f HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        ] {
            assert_eq!(host(input), Err(HttpError::NotHttp), "{input:?}");
        }
        // TLS fails on its very first byte.
        assert_eq!(host(b"\x16"), Err(HttpError::NotHttp));
        for prefix in [
            &b""[..],
            b"G",
            b"GE",
            b"GET",
            b"GET ",
            b"GET /",
            b"GET / HTTP/1",
        ] {
            assert_eq!(host(prefix), Ok(Parsed::Partial), "{prefix:?}");
        }
    }

    #[test]
    fn malformed_header_lines() {
        for (headers, why) in [
            ("Host : a\r\n", "invalid byte in header name"),
            ("X\x01: y\r\nHost: a\r\n", "invalid byte in header name"),
            ("no colon here\r\n", "invalid byte in header name"),
            (": value\r\n", "invalid byte in header name"),
            ("X: a\x01b\r\n", "control byte in header value"),
            ("Host: a\rb\r\n", "CR not followed by LF"),
            ("X: a\r\r\n", "CR not followed by LF"),
            ("X: a\rX", "CR not followed by LF"),
            ("Host: a\r\n b\r\n\r\n", "line starts with whitespace"),
            (
                "X: a\r\n\tb\r\nHost: c\r\n\r\n",
                "line starts with whitespace",
            ),
            (" Host: a\r\n", "line starts with whitespace"),
            ("\rX", "CR not followed by LF"),
            ("Host: exa mple.com\r\n\r\n", "invalid Host value"),
        ] {
            let req = format!("GET / HTTP/1.1\r\n{headers}");
            assert_eq!(host(req.as_bytes()), malformed(why), "{headers:?}");
        }
    }

    #[test]
    fn cap_on_head_size() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        while req.len() < MAX_HEAD_BYTES + 100 {
            req.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(host(&req[..MAX_HEAD_BYTES - 1]), Ok(Parsed::Partial));
        assert_eq!(host(&req[..MAX_HEAD_BYTES]), Err(HttpError::TooLarge));
        req.extend_from_slice(b"Host: a\r\n\r\n");
        assert_eq!(host(&req), Err(HttpError::TooLarge));
        let mut long_target = b"GET /".to_vec();
        long_target.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(host(&long_target), Err(HttpError::TooLarge));
    }

    #[test]
    fn errors_display() {
        assert_eq!(HttpError::NotHttp.to_string(), "not an HTTP/1.x request");
        assert_eq!(
            HttpError::Malformed("x").to_string(),
            "malformed HTTP request: x"
        );
        assert!(HttpError::TooLarge.to_string().contains("16384"));
    }

    fn check_consistent(input: &[u8], cut: usize) {
        let full = host(input);
        let prefix = host(&input[..cut.min(input.len())]);
        if prefix != Ok(Parsed::Partial) {
            assert_eq!(prefix, full, "{input:?} cut at {cut}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift::new(0x5eed_0003);
        // Mostly header-ish bytes so the parser gets past the first checks.
        let alphabet = b"GET /HTTP1.:\r\n \tHosthost[]:0123456789abc\x00\x80";
        for i in 0..20_000 {
            let len = rng.below(80);
            let mut input: Vec<u8> = if i % 2 == 0 {
                rng.bytes(len)
            } else {
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            };
            if i % 4 == 1 {
                input.splice(0..0, b"GET / HTTP/1.1\r\n".iter().copied());
            }
            let cut = rng.below(input.len() + 1);
            check_consistent(&input, cut);
        }
    }

    #[test]
    fn mutated_requests_never_panic() {
        let mut rng = XorShift::new(0x5eed_0004);
        let seeds: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nHost: example.com:80\r\nAccept: */*\r\n\r\n",
            b"GET http://[::1]:8080/x HTTP/1.1\r\n\r\n",
            b"POST /x HTTP/1.0\nUser-Agent: a\nHost: [2001:db8::1]\n\n",
            b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
        ];
        for i in 0..20_000 {
            let input = rng.mutate(seeds[i % seeds.len()]);
            let cut = rng.below(input.len() + 1);
            check_consistent(&input, cut);
        }
    }
}
