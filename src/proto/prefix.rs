//! Matches a client's first bytes against a literal byte pattern (`prefix=` routes), for the
//! protocols that have no reader of their own (OpenVPN over TCP, XMPP, SOCKS5, ...).
//!
//! The answer is `Complete(true)` once the bytes start with the pattern, `Complete(false)` at
//! the first byte that departs from it, and `Partial` while the bytes are a shorter prefix of
//! it; like every reader here, an answer other than `Partial` never changes as bytes arrive.

use super::cursor::Parsed;

/// The longest pattern a configuration may give: the bytes wait at most this long for a
/// decision, well within the peek cap.
pub const MAX_PATTERN_BYTES: usize = 255;

/// Whether `buf` (everything received so far) starts with `pattern`.
///
/// ```
/// use tcp_router::proto::{prefix, Parsed};
///
/// assert_eq!(prefix::matches(b"\x05\x01", b"\x05\x01\x00"), Parsed::Complete(true));
/// assert_eq!(prefix::matches(b"<?xml", b"<?x"), Parsed::Partial);
/// assert_eq!(prefix::matches(b"<?xml", b"<!x"), Parsed::Complete(false));
/// ```
pub fn matches(pattern: &[u8], buf: &[u8]) -> Parsed<bool> {
    let seen = buf.len().min(pattern.len());
    if buf[..seen] != pattern[..seen] {
        Parsed::Complete(false)
    } else if seen == pattern.len() {
        Parsed::Complete(true)
    } else {
        Parsed::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of `input` is `Partial` or the final answer, and once an answer appears it
    /// never changes. Returns the final answer.
    fn check_splits(pattern: &[u8], input: &[u8]) -> Parsed<bool> {
        crate::proto::cursor::settled(input, |buf| matches(pattern, buf))
    }

    #[test]
    fn bytes_that_start_with_the_pattern_match_at_its_last_byte() {
        // An OpenVPN-over-TCP client's first packet: length, then P_CONTROL_HARD_RESET_CLIENT_V2.
        let openvpn = b"\x00\x0e\x38\x12\x34\x56\x78\x9a\xbc\xde\xf0\x00\x00\x00\x00\x00";
        assert_eq!(
            check_splits(b"\x00\x0e\x38", openvpn),
            Parsed::Complete(true)
        );
        assert_eq!(matches(b"\x00\x0e\x38", &openvpn[..2]), Parsed::Partial);
        assert_eq!(
            matches(b"\x00\x0e\x38", &openvpn[..3]),
            Parsed::Complete(true)
        );
    }

    #[test]
    fn the_first_departing_byte_decides_no_match() {
        let xmpp = b"<?xml version='1.0'?><stream:stream to='a.example'";
        assert_eq!(check_splits(b"<stream", xmpp), Parsed::Complete(false));
        assert_eq!(matches(b"<stream", b"<?"), Parsed::Complete(false));
        assert_eq!(matches(b"<stream", b"<"), Parsed::Partial);
    }

    #[test]
    fn nothing_read_is_partial_and_an_empty_pattern_matches_anything() {
        assert_eq!(matches(b"\x05", b""), Parsed::Partial);
        assert_eq!(matches(b"", b""), Parsed::Complete(true));
        assert_eq!(
            check_splits(b"\x05\x01", b"\x05\x01\x00"),
            Parsed::Complete(true)
        );
    }
}
