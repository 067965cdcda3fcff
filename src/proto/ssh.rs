//! Recognizes an SSH client by its identification string (RFC 4253 section 4.2), which it sends
//! first: `SSH-protoversion-softwareversion SP comments CR LF`, at most 255 bytes.
//!
//! Rules chosen here:
//! - The decision comes as soon as the bytes can only be SSH or cannot be: `SSH-` is
//!   `Complete`, any byte that departs from `SSH-` is [`NotSsh`], and a prefix of `SSH-` is
//!   `Partial`, so a client that trickles its identification one byte at a time still routes.
//!   The rest of the line is the server's to judge; nothing past the fourth byte is read.
//! - RFC 4253 lets a *server* send other lines before its identification, never a client, so a
//!   client's first byte decides.
//! - The answer is the same for every buffer that starts with the same bytes: an answer other
//!   than `Partial` never changes as more bytes arrive.

use std::fmt;

use super::cursor::Parsed;

/// What every SSH identification string starts with.
pub const IDENTIFICATION_START: &[u8] = b"SSH-";

/// The longest identification string RFC 4253 allows, CR LF included. The reader decides within
/// its first four bytes; this is the bound a caller can cap a read of the whole line at.
pub const MAX_IDENTIFICATION_BYTES: usize = 255;

/// The bytes cannot start an SSH identification string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSsh;

impl fmt::Display for NotSsh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an SSH identification string")
    }
}

impl std::error::Error for NotSsh {}

/// Decides whether `buf` (everything received so far) starts an SSH client's identification
/// string: `Complete(())` once it starts with `SSH-`, `Partial` while it is a shorter prefix of
/// `SSH-` (empty included), [`NotSsh`] otherwise.
///
/// ```
/// use tcp_router::proto::{ssh, Parsed};
///
/// assert_eq!(ssh::parse_identification(b"SSH-2.0-OpenSSH_9.2\r\n"), Ok(Parsed::Complete(())));
/// assert_eq!(ssh::parse_identification(b"SS"), Ok(Parsed::Partial));
/// assert_eq!(ssh::parse_identification(b"GET / HTTP/1.1"), Err(ssh::NotSsh));
/// ```
pub fn parse_identification(buf: &[u8]) -> Result<Parsed<()>, NotSsh> {
    let seen = buf.len().min(IDENTIFICATION_START.len());
    if buf[..seen] != IDENTIFICATION_START[..seen] {
        return Err(NotSsh);
    }
    Ok(if seen == IDENTIFICATION_START.len() {
        Parsed::Complete(())
    } else {
        Parsed::Partial
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Banners of real clients, as they send them.
    const BANNERS: [&[u8]; 4] = [
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
        b"SSH-2.0-PuTTY_Release_0.81\r\n",
        b"SSH-2.0-Go\r\n",
        b"SSH-1.99-libssh_0.10.6\r\n",
    ];

    #[test]
    fn every_prefix_of_a_banner_is_partial_until_ssh_dash_then_complete() {
        for banner in BANNERS {
            for end in 0..=banner.len() {
                let want = if end < 4 {
                    Ok(Parsed::Partial)
                } else {
                    Ok(Parsed::Complete(()))
                };
                assert_eq!(
                    parse_identification(&banner[..end]),
                    want,
                    "{banner:?} cut at {end}"
                );
            }
        }
    }

    #[test]
    fn the_first_byte_that_departs_from_ssh_dash_decides() {
        assert_eq!(parse_identification(b"G"), Err(NotSsh));
        assert_eq!(parse_identification(b"SSH_2.0"), Err(NotSsh));
        assert_eq!(parse_identification(b"ssh-2.0"), Err(NotSsh));
        assert_eq!(parse_identification(b"\x16\x03\x01"), Err(NotSsh));
        assert_eq!(parse_identification(b"SSX"), Err(NotSsh));
    }

    #[test]
    fn every_split_gives_the_same_answer_as_the_whole() {
        let inputs: [&[u8]; 3] = [BANNERS[0], b"SSH", b"SSQ-2.0\r\n"];
        for input in inputs {
            let whole = parse_identification(input);
            let mut decided = false;
            for end in 0..=input.len() {
                match parse_identification(&input[..end]) {
                    Ok(Parsed::Partial) => assert!(!decided, "{input:?}: Partial after an answer"),
                    got => {
                        assert_eq!(got, whole, "{input:?} cut at {end}");
                        decided = true;
                    }
                }
            }
        }
    }

    #[test]
    fn the_reader_decides_well_within_the_longest_identification() {
        let long = [b"SSH-2.0-".as_slice(), &[b'x'; 300]].concat();
        assert_eq!(
            parse_identification(&long[..MAX_IDENTIFICATION_BYTES]),
            Ok(Parsed::Complete(()))
        );
    }
}
