//! Active health checks as configured (`check=` and its companions): what to send, what to
//! expect, how often, and how many results in a row change an upstream's state. Pure data and
//! its parser; running a check is `health::probe`'s.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::text::printable;

/// Built-in default for `check_interval`: haproxy's `inter`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Built-in default for `rise`: checks passed in a row that bring a down upstream up.
pub const DEFAULT_RISE: usize = 2;
/// Built-in default for `fall`: checks failed in a row that bring an up upstream down.
pub const DEFAULT_FALL: usize = 3;
/// Built-in default for `resolve_interval`: how often upstream names are resolved again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// A route's active check: run against each address of each of its upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// What one check does (`check=`).
    pub kind: CheckKind,
    /// The port checks go to, on each member's address (`check_port=`); `None` is the
    /// upstream's own port.
    pub port: Option<u16>,
    /// The `Host` an HTTP check sends (`check_host=`); `None` is the upstream's host as written.
    pub host: Option<String>,
    /// Time between two checks of one member (`check_interval=`).
    pub interval: Duration,
    /// Time one check may take, connect included (`check_timeout=`); `None`: see
    /// [`HealthCheck::timeout_with`].
    pub timeout: Option<Duration>,
    /// Checks passed in a row that bring a down member up (`rise=`).
    pub rise: usize,
    /// Checks failed in a row that bring an up member down (`fall=`).
    pub fall: usize,
}

impl HealthCheck {
    /// A check of `kind` with the built-in defaults: every 2 s, 2 passes to rise, 3 failures to
    /// fall, on the upstream's own port.
    pub fn new(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            port: None,
            host: None,
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: None,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }

    /// The time one check may take on a route whose connect timeout is `connect_timeout`: as
    /// given, else the connect timeout but no longer than the interval (haproxy's `inter`), so a
    /// check that gets no answer (a black hole, or a reply that never holds what an `expect`
    /// wants) has failed before the next one is due.
    pub fn timeout_with(&self, connect_timeout: Duration) -> Duration {
        self.timeout
            .unwrap_or_else(|| connect_timeout.min(self.interval))
    }
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckKind {
    /// A TCP connect within the timeout (`check=connect`).
    Connect,
    /// Send and expect steps, in order (`check=send:PING\r\n,expect:+PONG`).
    Script(Vec<Step>),
    /// `GET path` over HTTP/1.1, passing when the status is in `status` (`check=http:/primary`).
    Http {
        /// The request target, starting with `/`.
        path: String,
        /// The statuses that pass (`check_status=`).
        status: StatusRange,
    },
}

/// One step of a send/expect check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Bytes to send.
    Send(Vec<u8>),
    /// Bytes that must arrive (anywhere in what arrives after the previous expect).
    Expect(Vec<u8>),
}

/// HTTP statuses that pass an HTTP check, inclusive (`200`, `2xx`, `200-399`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusRange {
    /// Lowest status that passes.
    pub low: u16,
    /// Highest status that passes.
    pub high: u16,
}

/// What happens to connections open to a member when its checks mark it down (`on_down=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDown {
    /// They go on (`keep`, the default).
    #[default]
    Keep,
    /// Both sides are reset at once (`close`): clients leave a demoted primary.
    Close,
}

/// Shortest `check_interval`: checks more often than ten times a second per member would load
/// the upstreams more than they tell.
pub(crate) const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);

impl Default for StatusRange {
    /// `2xx`: what an HTTP check passes on unless `check_status` says otherwise.
    fn default() -> StatusRange {
        StatusRange {
            low: 200,
            high: 299,
        }
    }
}

impl StatusRange {
    /// Whether `code` passes.
    ///
    /// ```
    /// use tcp_router::config::StatusRange;
    ///
    /// let ok: StatusRange = "200-399".parse().unwrap();
    /// assert!(ok.contains(302) && !ok.contains(404));
    /// assert!(StatusRange::default().contains(204));
    /// ```
    pub fn contains(&self, code: u16) -> bool {
        (self.low..=self.high).contains(&code)
    }
}

impl FromStr for StatusRange {
    type Err = String;

    /// `200` (one status), `2xx` (a class) or `200-399` (inclusive), within 100 to 599. The
    /// error is the reason alone; the caller names the value.
    fn from_str(text: &str) -> Result<StatusRange, String> {
        const EXPECTED: &str = "expected a status (200), a class (2xx) or a range (200-399)";
        let status = |part: &str| -> Result<u16, String> {
            if part.len() != 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EXPECTED.into());
            }
            match part.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => Ok(code),
                _ => Err(format!("status {part} is not from 100 to 599")),
            }
        };
        let (low, high) = match (text.strip_suffix("xx"), text.split_once('-')) {
            (Some(class), None) if class.len() == 1 => {
                let low = status(&format!("{class}00"))?;
                (low, low + 99)
            }
            (None, Some((low, high))) => (status(low)?, status(high)?),
            (None, None) => (status(text)?, status(text)?),
            _ => return Err(EXPECTED.into()),
        };
        if low > high {
            return Err(format!("{low} is above {high}"));
        }
        Ok(StatusRange { low, high })
    }
}

impl fmt::Display for StatusRange {
    /// The shortest form that reads back the same: `200`, `2xx` or `200-399`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (low, high) = (self.low, self.high);
        if low == high {
            write!(f, "{low}")
        } else if low % 100 == 0 && high == low + 99 {
            write!(f, "{}xx", low / 100)
        } else {
            write!(f, "{low}-{high}")
        }
    }
}

impl FromStr for OnDown {
    type Err = String;

    /// `keep` or `close`; the error is the reason alone.
    fn from_str(text: &str) -> Result<OnDown, String> {
        match text {
            "keep" => Ok(OnDown::Keep),
            "close" => Ok(OnDown::Close),
            _ => Err("expected keep or close".into()),
        }
    }
}

impl fmt::Display for OnDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnDown::Keep => "keep",
            OnDown::Close => "close",
        })
    }
}

/// What a `check=` value can be, for errors.
const CHECK_FORMS: &str = "expected connect, http:PATH or send:TEXT,expect:TEXT[,...]";

/// The escapes TEXT takes, for errors.
const ESCAPES: &str = "use \\r, \\n, \\t, \\\\ or \\xHH";

impl FromStr for CheckKind {
    type Err = String;

    /// Parses a `check=` value: `connect`, `http:PATH`, or `send:TEXT` and `expect:TEXT` steps
    /// separated by commas, TEXT taking the escapes `\r \n \t \\ \xHH`. An HTTP check's statuses
    /// are the default (`2xx`); `check_status` sets them. The error is one line, the reason
    /// alone (the caller names the value), quoting the part at fault.
    ///
    /// ```
    /// use tcp_router::config::{CheckKind, Step};
    ///
    /// let redis: CheckKind = r"send:PING\r\n,expect:+PONG".parse().unwrap();
    /// assert_eq!(
    ///     redis,
    ///     CheckKind::Script(vec![Step::Send(b"PING\r\n".to_vec()), Step::Expect(b"+PONG".to_vec())])
    /// );
    /// assert_eq!(redis.to_string(), r"send:PING\r\n,expect:+PONG");
    /// assert_eq!(
    ///     r"send:PING\q".parse::<CheckKind>().unwrap_err(),
    ///     r"unknown escape \q (use \r, \n, \t, \\ or \xHH)"
    /// );
    /// ```
    fn from_str(value: &str) -> Result<CheckKind, String> {
        if value == "connect" {
            return Ok(CheckKind::Connect);
        }
        if let Some(path) = value.strip_prefix("http:") {
            return http_path(path).map(|path| CheckKind::Http {
                path,
                status: StatusRange::default(),
            });
        }
        if !value.starts_with("send:") && !value.starts_with("expect:") {
            return Err(CHECK_FORMS.into());
        }
        value
            .split(',')
            .map(step)
            .collect::<Result<_, _>>()
            .map(CheckKind::Script)
    }
}

/// An HTTP check's request target: `/` first, then visible ASCII only (it goes on the request
/// line as written; percent-encode anything else).
fn http_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("the path '{}' must start with /", printable(path)));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the path may not hold '{}' (visible ASCII only; percent-encode the rest)",
            c.escape_default()
        ));
    }
    Ok(path.to_string())
}

/// One `send:TEXT` or `expect:TEXT` of a script.
fn step(item: &str) -> Result<Step, String> {
    let (make, text): (fn(Vec<u8>) -> Step, &str) =
        match (item.strip_prefix("send:"), item.strip_prefix("expect:")) {
            (Some(text), _) => (Step::Send, text),
            (_, Some(text)) => (Step::Expect, text),
            _ if item.is_empty() => return Err("an empty step (two commas in a row?)".into()),
            _ => {
                return Err(format!(
                    "'{}' is not a step: expected send:TEXT or expect:TEXT",
                    printable(item)
                ))
            }
        };
    if text.is_empty() {
        return Err(format!("'{}' has no TEXT", printable(item)));
    }
    unescape(text).map(make)
}

/// TEXT with its escapes resolved.
pub(crate) fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let (&kind, after) = rest
            .split_first()
            .ok_or_else(|| format!("a lone \\ at the end ({ESCAPES})"))?;
        rest = after;
        out.push(match kind {
            b'r' => b'\r',
            b'n' => b'\n',
            b't' => b'\t',
            b'\\' => b'\\',
            b'x' => {
                let hex = rest.get(..2).and_then(|digits| {
                    let digits = std::str::from_utf8(digits).ok()?;
                    u8::from_str_radix(digits, 16).ok()
                });
                let Some(value) = hex else {
                    let shown: String = String::from_utf8_lossy(&rest[..rest.len().min(2)]).into();
                    return Err(format!(
                        "incomplete escape \\x{} (\\xHH takes two hex digits)",
                        printable(&shown)
                    ));
                };
                rest = &rest[2..];
                value
            }
            _ => {
                let shown =
                    String::from_utf8_lossy(&text.as_bytes()[text.len() - rest.len() - 1..]);
                let c = shown.chars().next().unwrap_or('?');
                return Err(format!(
                    "unknown escape \\{} ({ESCAPES})",
                    c.escape_default()
                ));
            }
        });
    }
    Ok(out)
}

/// `bytes` as one printable line: `\r`, `\n`, `\t` and `\\` named, every other byte outside
/// printable ASCII (and those in `also`) as `\xHH`. What TEXT in a `check=` value reads back, and
/// how messages quote what an upstream sent.
pub(crate) fn escape(bytes: &[u8], also: &[u8]) -> String {
    bytes.iter().map(|&b| escape_byte(b, also)).collect()
}

/// One byte as [`escape`] writes it.
fn escape_byte(byte: u8, also: &[u8]) -> String {
    match byte {
        b'\r' => "\\r".into(),
        b'\n' => "\\n".into(),
        b'\t' => "\\t".into(),
        b'\\' => "\\\\".into(),
        b if (b.is_ascii_graphic() || b == b' ') && !also.contains(&b) => char::from(b).to_string(),
        b => format!("\\x{b:02x}"),
    }
}

/// `bytes` escaped as [`escape`] does, cut to at most `max` characters with `...` after when it
/// is longer: what a failed check quotes of an upstream's answer.
pub(crate) fn escape_truncated(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes {
        let piece = escape_byte(b, &[]);
        if out.len() + piece.len() > max {
            out.push_str("...");
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// What TEXT escapes besides non-printables: `,` separates steps, and a space separates a
/// route line's fields.
const TEXT_SPECIALS: &[u8] = b", ";

impl fmt::Display for CheckKind {
    /// The `check=` value that parses back to this check (the status of an HTTP check is
    /// `check_status`'s, not part of it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Connect => f.write_str("connect"),
            CheckKind::Http { path, .. } => write!(f, "http:{path}"),
            CheckKind::Script(steps) => {
                for (i, step) in steps.iter().enumerate() {
                    let (name, text) = match step {
                        Step::Send(text) => ("send", text),
                        Step::Expect(text) => ("expect", text),
                    };
                    let comma = if i == 0 { "" } else { "," };
                    write!(f, "{comma}{name}:{}", escape(text, TEXT_SPECIALS))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<CheckKind, String> {
        value.parse()
    }

    fn script(steps: &[(&str, &[u8])]) -> CheckKind {
        let step = |(kind, text): &(&str, &[u8])| match *kind {
            "send" => Step::Send(text.to_vec()),
            _ => Step::Expect(text.to_vec()),
        };
        CheckKind::Script(steps.iter().map(step).collect())
    }

    #[test]
    fn connect_http_and_scripts_parse() {
        assert_eq!(parse("connect"), Ok(CheckKind::Connect));
        assert_eq!(
            parse("http:/health?full=1"),
            Ok(CheckKind::Http {
                path: "/health?full=1".into(),
                status: StatusRange::default()
            })
        );
        assert_eq!(
            parse(r"send:PING\r\n,expect:+PONG,send:ROLE\r\n,expect:master"),
            Ok(script(&[
                ("send", b"PING\r\n"),
                ("expect", b"+PONG"),
                ("send", b"ROLE\r\n"),
                ("expect", b"master"),
            ]))
        );
        assert_eq!(parse("expect:SSH-"), Ok(script(&[("expect", b"SSH-")])));
    }

    #[test]
    fn every_escape_reads_as_its_byte() {
        assert_eq!(
            parse(r"send:a\r\n\t\\\x2c\x20\x00\xFFz"),
            Ok(script(&[("send", b"a\r\n\t\\, \0\xffz")]))
        );
        assert_eq!(parse("send:é"), Ok(script(&[("send", "é".as_bytes())])));
    }

    #[test]
    fn bad_values_say_what_is_wrong_in_one_line() {
        let err = |value: &str| parse(value).unwrap_err();
        assert_eq!(
            err(r"send:PING\q"),
            r"unknown escape \q (use \r, \n, \t, \\ or \xHH)"
        );
        assert_eq!(
            err("send:PING\\"),
            r"a lone \ at the end (use \r, \n, \t, \\ or \xHH)"
        );
        assert_eq!(
            err(r"send:\x4"),
            r"incomplete escape \x4 (\xHH takes two hex digits)"
        );
        assert_eq!(
            err(r"send:\xzz"),
            r"incomplete escape \xzz (\xHH takes two hex digits)"
        );
        assert_eq!(err("send:"), "'send:' has no TEXT");
        assert_eq!(
            err("send:a,,expect:b"),
            "an empty step (two commas in a row?)"
        );
        assert_eq!(
            err("send:a,wait:1s"),
            "'wait:1s' is not a step: expected send:TEXT or expect:TEXT"
        );
        assert_eq!(err("tcp"), CHECK_FORMS);
        assert_eq!(err(""), CHECK_FORMS);
        assert_eq!(err("http:health"), "the path 'health' must start with /");
        assert_eq!(
            err("http:/a b"),
            "the path may not hold ' ' (visible ASCII only; percent-encode the rest)"
        );
        assert_eq!(
            err("http:/a\nb"),
            "the path may not hold '\\n' (visible ASCII only; percent-encode the rest)"
        );
        assert!(err("send:\\\u{1b}").lines().count() == 1);
    }

    #[test]
    fn display_gives_back_the_value_with_escapes() {
        let value = r"send:PING\r\n,expect:+PONG";
        assert_eq!(parse(value).unwrap().to_string(), value);
        assert_eq!(
            script(&[("send", b"a, b\\\x7f\xc3\xa9")]).to_string(),
            r"send:a\x2c\x20b\\\x7f\xc3\xa9"
        );
        assert_eq!(parse("http:/x").unwrap().to_string(), "http:/x");
        assert_eq!(CheckKind::Connect.to_string(), "connect");
    }

    /// A random check of every kind: scripts of 1 to 6 steps of 1 to 12 arbitrary bytes.
    fn random_check(next: &mut impl FnMut() -> u64) -> CheckKind {
        let text = |next: &mut dyn FnMut() -> u64| -> Vec<u8> {
            (0..1 + next() % 12).map(|_| next() as u8).collect()
        };
        match next() % 4 {
            0 => CheckKind::Connect,
            1 => CheckKind::Http {
                path: std::iter::once('/')
                    .chain((0..next() % 10).map(|_| char::from(b'!' + (next() % 94) as u8)))
                    .collect(),
                status: StatusRange::default(),
            },
            _ => CheckKind::Script(
                (0..1 + next() % 6)
                    .map(|_| match next() % 2 {
                        0 => Step::Send(text(next)),
                        _ => Step::Expect(text(next)),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn every_check_reads_back_from_its_display() {
        let mut rng = crate::test_support::XorShift::new(0x2400_C0DE);
        let mut next = move || rng.next_u64();
        for _ in 0..20_000 {
            let check = random_check(&mut next);
            let shown = check.to_string();
            assert!(!shown.contains([' ', '\n']), "{shown}");
            assert_eq!(parse(&shown), Ok(check), "{shown}");
        }
    }

    #[test]
    fn status_ranges_parse_and_read_back() {
        let range = |text: &str| text.parse::<StatusRange>();
        assert_eq!(
            range("200"),
            Ok(StatusRange {
                low: 200,
                high: 200
            })
        );
        assert_eq!(
            range("2xx"),
            Ok(StatusRange {
                low: 200,
                high: 299
            })
        );
        assert_eq!(
            range("200-399"),
            Ok(StatusRange {
                low: 200,
                high: 399
            })
        );
        for text in ["200", "2xx", "5xx", "200-399", "100-599"] {
            assert_eq!(range(text).unwrap().to_string(), text);
        }
        assert_eq!(range("300-399").unwrap().to_string(), "3xx");
        assert_eq!(StatusRange::default().to_string(), "2xx");
        let expected = "expected a status (200), a class (2xx) or a range (200-399)";
        for bad in [
            "", "20", "2000", "2x", "xx", "ok", "200-", "-200", "+200", "2xx-3xx",
        ] {
            assert_eq!(range(bad), Err(expected.into()), "{bad:?}");
        }
        assert_eq!(
            range("600"),
            Err("status 600 is not from 100 to 599".into())
        );
        assert_eq!(
            range("0xx"),
            Err("status 000 is not from 100 to 599".into())
        );
        assert_eq!(range("399-200"), Err("399 is above 200".into()));
    }

    #[test]
    fn a_status_range_contains_its_ends_only() {
        let range = StatusRange {
            low: 200,
            high: 399,
        };
        assert!(range.contains(200) && range.contains(399));
        assert!(!range.contains(199) && !range.contains(400));
    }

    #[test]
    fn on_down_is_keep_or_close() {
        assert_eq!("close".parse(), Ok(OnDown::Close));
        assert_eq!(
            "keep".parse::<OnDown>().map(|o| o.to_string()),
            Ok("keep".into())
        );
        assert_eq!(OnDown::default(), OnDown::Keep);
        assert_eq!(
            "drop".parse::<OnDown>(),
            Err("expected keep or close".into())
        );
    }

    #[test]
    fn answers_are_quoted_escaped_and_cut() {
        assert_eq!(
            escape_truncated(b"*3\r\n$5\r\nslave", 64),
            "*3\\r\\n$5\\r\\nslave"
        );
        assert_eq!(
            escape_truncated(&[b'a'; 70], 64),
            format!("{}...", "a".repeat(64))
        );
        assert_eq!(escape_truncated(&[0; 20], 10), "\\x00\\x00...");
        assert_eq!(escape(b"a, b", &[]), "a, b");
        assert_eq!(escape(b"a, b", b", "), "a\\x2c\\x20b");
    }
}
