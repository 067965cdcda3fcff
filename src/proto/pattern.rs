//! Matches a client's first bytes against a regular expression (`regex=` routes), for the
//! protocols a literal prefix cannot tell apart (a version byte that varies, a length field, a
//! greeting with a choice of words).
//!
//! Rules chosen here:
//! - The expression sees exactly the first `min_bytes` bytes (`min_bytes=` on the route line):
//!   `Partial` until that many have arrived, then `Complete(true)` or `Complete(false)` by
//!   whether the expression matches somewhere in them (`^` anchors it at the first byte). Bytes
//!   past the window are never read, so how a client splits its bytes never changes the answer.
//! - The expression is over bytes, not text: `.` is any byte but `\n`, `\xHH` is one byte
//!   (`\xFF` is 0xFF, not U+00FF), `\w`, `\d` and `\s` are ASCII, and `(?i)` folds ASCII only.
//! - The window is at most [`MAX_WINDOW_BYTES`], within the peek cap, and a compiled expression
//!   at most [`MAX_PROGRAM_BYTES`] of memory: a configuration cannot make a peek costly.

use regex::bytes::{Regex, RegexBuilder};

use super::cursor::Parsed;

/// The most first bytes a `regex=` route may look at (`min_bytes=`): a ClientHello's worth
/// (`tls::MAX_HELLO_BYTES`), so the peek cap always leaves room for them.
pub const MAX_WINDOW_BYTES: usize = super::tls::MAX_HELLO_BYTES;

/// The longest expression a configuration may give, in bytes of text.
pub const MAX_SOURCE_BYTES: usize = 1024;

/// The most memory one compiled expression (and its lazy DFA) may take.
pub const MAX_PROGRAM_BYTES: usize = 256 * 1024;

/// Deepest nesting of groups and repetitions an expression may have.
const NEST_LIMIT: u32 = 64;

/// Compiles `source` as a byte expression (see the module docs), within the size limits. The
/// error is one line, naming what is wrong.
///
/// ```
/// use tcp_router::proto::pattern;
///
/// let socks5 = pattern::compile(r"^\x05[\x01-\x09]").unwrap();
/// assert!(socks5.is_match(b"\x05\x02\x00\x02"));
/// assert!(pattern::compile("(unclosed").unwrap_err().contains("unclosed group"));
/// ```
pub fn compile(source: &str) -> Result<Regex, String> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(format!(
            "{} bytes of expression (at most {MAX_SOURCE_BYTES})",
            source.len()
        ));
    }
    RegexBuilder::new(source)
        .unicode(false)
        .size_limit(MAX_PROGRAM_BYTES)
        .dfa_size_limit(MAX_PROGRAM_BYTES)
        .nest_limit(NEST_LIMIT)
        .build()
        .map_err(|err| one_line(&err.to_string()))
}

/// The regex crate's multi-line error (the pattern, a caret, the message) as one line: the last
/// line, which says what is wrong.
fn one_line(text: &str) -> String {
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    let message = last.unwrap_or(text).trim();
    message
        .strip_prefix("error: ")
        .unwrap_or(message)
        .to_string()
}

/// Whether the first `window` bytes of `buf` (everything received so far) match `regex`:
/// `Partial` until `buf` holds `window` bytes.
///
/// ```
/// use tcp_router::proto::{pattern, Parsed};
///
/// let xmpp = pattern::compile(r"^<\?xml|^<stream:stream").unwrap();
/// assert_eq!(pattern::matches(&xmpp, 5, b"<?xm"), Parsed::Partial);
/// assert_eq!(pattern::matches(&xmpp, 5, b"<?xml version"), Parsed::Complete(true));
/// assert_eq!(pattern::matches(&xmpp, 5, b"GET / HTTP/1.1"), Parsed::Complete(false));
/// ```
pub fn matches(regex: &Regex, window: usize, buf: &[u8]) -> Parsed<bool> {
    match buf.get(..window) {
        Some(first) => Parsed::Complete(regex.is_match(first)),
        None => Parsed::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of `input` is `Partial` or the final answer, and once an answer appears it
    /// never changes. Returns the final answer.
    fn check_splits(source: &str, window: usize, input: &[u8]) -> Parsed<bool> {
        let regex = compile(source).unwrap();
        crate::proto::cursor::settled(input, |buf| matches(&regex, window, buf))
    }

    #[test]
    fn the_answer_comes_at_the_window_and_never_changes() {
        // An OpenVPN-over-TCP client: a two-byte length, then P_CONTROL_HARD_RESET_CLIENT_V2 or
        // _V3 (opcode 7 or 10, key id 0) in the high bits of the third byte.
        let openvpn = b"\x00\x0e\x38\x12\x34\x56\x78\x9a\xbc\xde\xf0\x00\x00\x00\x00\x00";
        let source = r"^\x00[\x0e-\xff][\x38\x50]";
        assert_eq!(check_splits(source, 3, openvpn), Parsed::Complete(true));
        assert_eq!(
            check_splits(source, 3, b"\x00\x0e\x20"),
            Parsed::Complete(false)
        );
        let regex = compile(source).unwrap();
        assert_eq!(matches(&regex, 3, &openvpn[..2]), Parsed::Partial);
    }

    #[test]
    fn bytes_past_the_window_are_never_read() {
        assert_eq!(
            check_splits("needle", 8, b"haystack needle"),
            Parsed::Complete(false)
        );
        assert_eq!(
            check_splits("needle", 15, b"haystack needle"),
            Parsed::Complete(true)
        );
        assert_eq!(check_splits("x$", 2, b"axb"), Parsed::Complete(true));
    }

    #[test]
    fn expressions_are_over_bytes_not_text() {
        let high = compile(r"^\xff\x00.").unwrap();
        assert_eq!(matches(&high, 3, b"\xff\x00\x80"), Parsed::Complete(true));
        assert_eq!(
            matches(&high, 3, "\u{ff}\x00".as_bytes()),
            Parsed::Complete(false)
        );
        let folded = compile(r"(?i)^ehlo\s").unwrap();
        assert_eq!(matches(&folded, 5, b"EhLo x"), Parsed::Complete(true));
        assert_eq!(
            matches(&folded, 5, b"\x00\x00\x00\x00\x00"),
            Parsed::Complete(false)
        );
    }

    #[test]
    fn bad_and_oversized_expressions_are_refused_in_one_line() {
        for (source, says) in [
            ("(unclosed", "unclosed group"),
            ("a{2,1}", "invalid repetition count range"),
            (r"\p{Greek}", "Unicode not allowed"),
            ("((a{1000}){1000}){1000}", "exceeds size limit"),
        ] {
            let err = compile(source).unwrap_err();
            assert!(err.contains(says), "{source}: {err}");
            assert!(!err.contains('\n'), "{source}: {err}");
        }
        let long = "a".repeat(MAX_SOURCE_BYTES + 1);
        assert_eq!(
            compile(&long).unwrap_err(),
            "1025 bytes of expression (at most 1024)"
        );
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(compile(&deep).unwrap_err().contains("nest"));
    }
}
