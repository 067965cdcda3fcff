//! Protocol routes as configured: `proto=ssh|tls|http` (a route that takes a whole protocol),
//! `prefix=TEXT` (a route for the clients whose first bytes start with TEXT), `regex=PATTERN`
//! with `min_bytes=N` (a route for the clients whose first N bytes match PATTERN) and
//! `proto=silent` with `wait=` (a route for clients that send nothing: the server speaks first).
//! Pure data and its parser; matching is `route::router`'s, with the readers of `proto`.

/// How long a client may say nothing before the `proto=silent` route takes it, unless `wait=`
/// says: sslh's `on-timeout`, which is 2 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use regex::bytes::Regex;

use crate::proto::pattern::{self, MAX_WINDOW_BYTES};
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
    /// `regex=PATTERN` with `min_bytes=N`: a client whose first N bytes match PATTERN.
    Regex(BytePattern),
    /// `proto=silent`: a client that has sent nothing `wait` after it connected (`wait=`, else
    /// [`DEFAULT_WAIT`]), connected at once so that the server's banner reaches it.
    Silent {
        /// How long the client may say nothing before this route takes it.
        wait: Duration,
    },
}

/// A `regex=` route's expression and how many first bytes it sees (`min_bytes=`). Compared,
/// ordered and hashed by its text and window, so two routes written alike are duplicates.
#[derive(Debug, Clone)]
pub struct BytePattern {
    /// The expression as written.
    source: String,
    /// The expression compiled, over bytes (`proto::pattern`).
    regex: Regex,
    /// How many first bytes it sees; 0 until `min_bytes=` gives it (a route line needs both).
    min_bytes: usize,
}

impl BytePattern {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many first bytes the expression sees: the route decides once that many arrived.
    pub fn min_bytes(&self) -> usize {
        self.min_bytes
    }

    /// Whether `buf` (everything received so far) takes this route: `Partial` until
    /// `min_bytes` bytes have arrived.
    pub(crate) fn matches(&self, buf: &[u8]) -> crate::proto::Parsed<bool> {
        pattern::matches(&self.regex, self.min_bytes, buf)
    }

    /// This pattern seeing the first `value` bytes (`min_bytes=`: 1 to [`MAX_WINDOW_BYTES`]).
    pub(crate) fn with_min_bytes(&self, value: &str) -> Result<BytePattern, String> {
        let n = value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_WINDOW_BYTES).contains(n))
            .ok_or_else(|| {
                format!(
                    "invalid min_bytes '{}': expected a whole number from 1 to {MAX_WINDOW_BYTES}",
                    super::text::printable(value)
                )
            })?;
        Ok(BytePattern {
            min_bytes: n,
            ..self.clone()
        })
    }

    fn key(&self) -> (&str, usize) {
        (&self.source, self.min_bytes)
    }
}

impl PartialEq for BytePattern {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for BytePattern {}

impl Hash for BytePattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for BytePattern {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BytePattern {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The values `proto=` takes, for errors.
const PROTOCOLS: &str = "ssh, tls, http or silent";

impl Protocol {
    /// Parses the value of `proto=` (`key` "proto"), `prefix=` (`key` "prefix") or `regex=`
    /// (`key` "regex"). A prefix takes the escapes of a `check=` TEXT (`\r \n \t \\ \xHH`; a
    /// space is `\x20`), is at least one byte and at most [`MAX_PATTERN_BYTES`]. A regex is an
    /// expression over bytes (`proto::pattern`), whose window `min_bytes=` gives
    /// (`BytePattern::with_min_bytes`). The error is one line, naming the value.
    ///
    /// ```
    /// use tcp_router::config::Protocol;
    ///
    /// assert_eq!(Protocol::parse("proto", "ssh"), Ok(Protocol::Ssh));
    /// assert_eq!(Protocol::parse("prefix", r"\x05\x01"), Ok(Protocol::Prefix(vec![5, 1])));
    /// assert_eq!(Protocol::Prefix(b"<?xml ".to_vec()).to_string(), r"prefix=<?xml\x20");
    /// assert!(Protocol::parse("regex", "(").unwrap_err().starts_with("invalid regex '(': "));
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
        if key == "regex" {
            let regex = pattern::compile(value).map_err(|why| {
                format!("invalid regex '{}': {why}", super::text::printable(value))
            })?;
            return Ok(Protocol::Regex(BytePattern {
                source: value.to_string(),
                regex,
                min_bytes: 0,
            }));
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
            Protocol::Tls | Protocol::Http | Protocol::Regex(_) | Protocol::Silent { .. } => None,
        }
    }

    /// True for the routes tried on the first bytes in the order written (step 2 of the
    /// precedence rule): `proto=ssh`, `prefix=` and `regex=`.
    pub(crate) fn by_first_bytes(&self) -> bool {
        matches!(
            self,
            Protocol::Ssh | Protocol::Prefix(_) | Protocol::Regex(_)
        )
    }

    /// The key that gives it on a route line: `proto`, `prefix` or `regex`.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Protocol::Prefix(_) => "prefix",
            Protocol::Regex(_) => "regex",
            _ => "proto",
        }
    }

    /// The name logs and metrics give a connection this route took: `ssh`, `tls`, `http`,
    /// `prefix`, `regex` or `silent` (a bounded set).
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Tls => "tls",
            Protocol::Http => "http",
            Protocol::Prefix(_) => "prefix",
            Protocol::Regex(_) => "regex",
            Protocol::Silent { .. } => "silent",
        }
    }
}

impl fmt::Display for Protocol {
    /// As written on a route line: `proto=ssh`, `prefix=TEXT` with TEXT escaped so that it
    /// reads back equal (a space as `\x20`), `regex=PATTERN,min_bytes=N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Prefix(bytes) => write!(f, "prefix={}", escape(bytes, b" ")),
            Protocol::Regex(p) => write!(f, "regex={},min_bytes={}", p.source, p.min_bytes),
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
        assert_eq!(
            Protocol::parse("regex", "a{2,1}"),
            Err("invalid regex 'a{2,1}': invalid repetition count range, the start must be <= the end".into())
        );
    }

    #[test]
    fn a_regex_reads_back_with_its_window_and_compares_by_text_and_window() {
        let Ok(Protocol::Regex(unset)) = Protocol::parse("regex", r"^\x05[\x01-\x09]") else {
            panic!("a regex route");
        };
        let sees = unset.with_min_bytes("2").unwrap();
        assert_eq!(
            Protocol::Regex(sees.clone()).to_string(),
            r"regex=^\x05[\x01-\x09],min_bytes=2"
        );
        assert_eq!(sees.matches(b"\x05"), crate::proto::Parsed::Partial);
        assert_eq!(
            sees.matches(b"\x05\x02"),
            crate::proto::Parsed::Complete(true)
        );
        assert_ne!(sees, unset.with_min_bytes("3").unwrap());
        assert_eq!(sees, unset.with_min_bytes("2").unwrap());
        for bad in ["0", "x", "20481"] {
            assert_eq!(
                unset.with_min_bytes(bad),
                Err(format!(
                    "invalid min_bytes '{bad}': expected a whole number from 1 to 20480"
                ))
            );
        }
    }
}
