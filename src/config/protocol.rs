//! Protocol routes as configured: `proto=ssh|tls|http` (a route that takes a whole protocol),
//! `prefix=TEXT` (a route for the clients whose first bytes start with TEXT) and `proto=silent`
//! with `wait=` (a route for clients that send nothing: the server speaks first). Pure data and
//! its parser; matching is `route::router`'s, with the readers of `proto`.

/// How long a client may say nothing before the `proto=silent` route takes it, unless `wait=`
/// says: sslh's `on-timeout`, which is 2 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

use std::fmt;
use std::time::Duration;

use crate::proto::prefix::MAX_PATTERN_BYTES;

use super::health::{escape, unescape};

/// What a protocol route takes, besides the name routes (`sni=`, `host=`, `alpn=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `proto=ssh`: a client that starts with an SSH identification string (`SSH-`).
    Ssh,
    /// `proto=tls`: any TLS ClientHello, with or without SNI; name routes of the listener come
    /// first.
    Tls,
    /// `proto=http`: any HTTP/1.x request head; `host=` routes of the listener come first.
    Http,
    /// `prefix=TEXT`: a client whose first bytes are these.
    Prefix(Vec<u8>),
    /// `proto=silent`: a client that has sent nothing `wait` after it connected (`wait=`, else
    /// [`DEFAULT_WAIT`]), connected at once so that the server's banner reaches it.
    Silent {
        /// How long the client may say nothing before this route takes it.
        wait: Duration,
    },
}

/// The values `proto=` takes, for errors.
const PROTOCOLS: &str = "ssh, tls, http or silent";

impl Protocol {
    /// Parses the value of `proto=` (`key` "proto") or `prefix=` (`key` "prefix"). A prefix
    /// takes the escapes of a `check=` TEXT (`\r \n \t \\ \xHH`; a space is `\x20`), is at least
    /// one byte and at most [`MAX_PATTERN_BYTES`]. The error is one line, naming the value.
    ///
    /// ```
    /// use tcp_router::config::Protocol;
    ///
    /// assert_eq!(Protocol::parse("proto", "ssh"), Ok(Protocol::Ssh));
    /// assert_eq!(Protocol::parse("prefix", r"\x05\x01"), Ok(Protocol::Prefix(vec![5, 1])));
    /// assert_eq!(Protocol::Prefix(b"<?xml ".to_vec()).to_string(), r"prefix=<?xml\x20");
    /// ```
    pub fn parse(key: &str, value: &str) -> Result<Protocol, String> {
        if key == "proto" {
            return match value {
                "ssh" => Ok(Protocol::Ssh),
                "tls" => Ok(Protocol::Tls),
                "http" => Ok(Protocol::Http),
                "silent" => Ok(Protocol::Silent { wait: DEFAULT_WAIT }),
                _ => Err(format!(
                    "invalid proto '{}' (expected {PROTOCOLS})",
                    value.escape_default()
                )),
            };
        }
        let bytes = unescape(value).map_err(|why| format!("invalid prefix: {why}"))?;
        if bytes.is_empty() || bytes.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "invalid prefix: {} bytes (a prefix is 1 to {MAX_PATTERN_BYTES} bytes)",
                bytes.len()
            ));
        }
        Ok(Protocol::Prefix(bytes))
    }

    /// The bytes every client this route takes starts with, for the check that no route hides
    /// another: `SSH-` for SSH, the pattern for a prefix; TLS and HTTP have their own readers.
    pub(crate) fn leading_bytes(&self) -> Option<&[u8]> {
        match self {
            Protocol::Ssh => Some(crate::proto::ssh::IDENTIFICATION_START),
            Protocol::Prefix(bytes) => Some(bytes),
            Protocol::Tls | Protocol::Http | Protocol::Silent { .. } => None,
        }
    }

    /// The key that gives it on a route line: `proto` or `prefix`.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Protocol::Prefix(_) => "prefix",
            _ => "proto",
        }
    }

    /// The name logs and metrics give a connection this route took: `ssh`, `tls`, `http`,
    /// `prefix` or `silent` (a bounded set).
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Tls => "tls",
            Protocol::Http => "http",
            Protocol::Prefix(_) => "prefix",
            Protocol::Silent { .. } => "silent",
        }
    }
}

impl fmt::Display for Protocol {
    /// As written on a route line: `proto=ssh`, or `prefix=TEXT` with TEXT escaped so that it
    /// reads back equal (a space as `\x20`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Prefix(bytes) => write!(f, "prefix={}", escape(bytes, b" ")),
            other => write!(f, "{}={}", other.key(), other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_prefixes_parse_and_read_back() {
        for text in [
            "proto=ssh",
            "proto=tls",
            "proto=http",
            r"prefix=\x00\x0e8",
            r"prefix=<stream:stream\x20",
        ] {
            let (key, value) = text.split_once('=').unwrap();
            let parsed = Protocol::parse(key, value).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            Protocol::parse("prefix", r"PING\r\n"),
            Ok(Protocol::Prefix(b"PING\r\n".to_vec()))
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        assert_eq!(
            Protocol::parse("proto", "SSH"),
            Err("invalid proto 'SSH' (expected ssh, tls, http or silent)".into())
        );
        assert_eq!(
            Protocol::parse("prefix", r"\q"),
            Err(r"invalid prefix: unknown escape \q (use \r, \n, \t, \\ or \xHH)".into())
        );
        assert_eq!(
            Protocol::parse("prefix", &"a".repeat(256)),
            Err("invalid prefix: 256 bytes (a prefix is 1 to 255 bytes)".into())
        );
    }
}
