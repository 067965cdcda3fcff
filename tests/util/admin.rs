//! The admin endpoint's client: where the binary says it listens, plain HTTP/1.1 requests on
//! one connection each, JSON answers and the Prometheus text exposition parsed, and polling
//! either until it says what the test waits for.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Shutdown;
use std::net::SocketAddr;

use serde_json::Value;

use super::{connect, poll_within, read_until_closed, Process, PATIENCE};

/// The log line's words before the admin endpoint's address.
const ADMIN_LINE: &str = "admin endpoint on http://";

impl Process {
    /// The admin endpoint's address, from its `admin endpoint on http://ADDR/` line (logged
    /// before the listeners', so among the lines [`Process::start`] has seen already).
    pub fn admin_addr(&mut self) -> SocketAddr {
        let line = self.line_with(ADMIN_LINE);
        line.split(ADMIN_LINE)
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }
}

/// The binary with `--admin 127.0.0.1:0` and `args`; returns it and the endpoint's address.
pub fn start_with_admin(args: &[&str]) -> (Process, SocketAddr) {
    let mut all = vec!["--admin", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut router = Process::start(&all);
    let admin = router.admin_addr();
    (router, admin)
}

/// An HTTP response as received: status, head (status line and headers) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// Parses a whole response: head, blank line, body.
    pub fn parse(raw: &[u8]) -> Reply {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8(raw[..end].to_vec()).expect("head is UTF-8");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        Reply {
            status,
            head,
            body: raw[end + 4..].to_vec(),
        }
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The body as text, which it must be.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }

    /// The body as JSON, which it must be.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{}", self.text()))
    }
}

/// Sends `request` as is on a new connection to `admin`, ends the connection's sending side and
/// reads the whole answer.
pub fn exchange(admin: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = connect(admin);
    stream.write_all(request).unwrap();
    let _ = stream.shutdown(Shutdown::Write);
    Reply::parse(&read_until_closed(&mut stream))
}

/// `METHOD path` on a new connection; the body must be as long as Content-Length says (HEAD
/// aside).
pub fn request(admin: SocketAddr, method: &str, path: &str) -> Reply {
    let reply = exchange(
        admin,
        format!("{method} {path} HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: tests\r\n\r\n")
            .as_bytes(),
    );
    if method != "HEAD" {
        let length: usize = reply
            .header("Content-Length")
            .and_then(|l| l.parse().ok())
            .expect("a Content-Length");
        assert_eq!(length, reply.body.len(), "{method} {path}: {}", reply.head);
    }
    reply
}

/// `GET path`; see [`request`].
pub fn get(admin: SocketAddr, path: &str) -> Reply {
    request(admin, "GET", path)
}

/// `GET path` as JSON, which must be served with status 200.
pub fn get_json(admin: SocketAddr, path: &str) -> Value {
    let reply = get(admin, path);
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    reply.json()
}

/// Polls `GET path` (JSON) until `done` holds for it; fails naming `what` after [`PATIENCE`],
/// with the last answer.
pub fn json_until(
    admin: SocketAddr,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    poll_within(PATIENCE, || {
        let value = get_json(admin, path);
        if done(&value) {
            return Some(value);
        }
        last = value;
        None
    })
    .unwrap_or_else(|| panic!("gave up waiting: {what}; last {path}:\n{last:#}"))
}

/// One sample of the text exposition.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// `GET /metrics`, parsed.
pub struct Metrics {
    pub text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text exposition; fails the test on a sample line it cannot read.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
            .collect();
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Every sample of `name` whose labels include `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample of `name` whose labels include `labels`, as a whole number.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {name} with {labels:?}, found {found:?}\n{}",
            self.text
        );
        whole(found[0].value)
    }

    /// The sum over every sample of `name` whose labels include `labels`, as a whole number.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels).map(|s| whole(s.value)).sum()
    }

    /// The sum of `name` over all its labels, for a value that need not be a count (a time);
    /// `None` if there is no sample of it.
    pub fn total(&self, name: &str) -> Option<f64> {
        let values: Vec<f64> = self.matching(name, &[]).map(|s| s.value).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Every series, as name and labels, without values.
    pub fn series(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    }
}

/// `value` as a count, which it must be.
fn whole(value: f64) -> u64 {
    assert!(
        value >= 0.0 && value.fract() == 0.0,
        "{value} is not a count"
    );
    value as u64
}

/// `name{key="value",...} value`, with the text format's escapes in label values.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        loop {
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = inner[start..].find('=')? + start;
            let key = inner[start..eq].to_string();
            while chars.next()?.0 < eq + 1 {}
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
    }
    let value = rest.trim().split(' ').next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `GET /metrics`, which must be served as the text format, version 0.0.4.
pub fn metrics(admin: SocketAddr) -> Metrics {
    let reply = get(admin, "/metrics");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Metrics::parse(reply.text())
}

/// Polls `/metrics` until `done` holds; fails naming `what` after [`PATIENCE`], with the last
/// exposition.
pub fn metrics_until(admin: SocketAddr, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = String::new();
    poll_within(PATIENCE, || {
        let m = metrics(admin);
        if done(&m) {
            return Some(m);
        }
        last = m.text;
        None
    })
    .unwrap_or_else(|| panic!("gave up waiting: {what}; last /metrics:\n{last}"))
}
