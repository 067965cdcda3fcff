//! Addresses as users write them: `host:port`, `[v6]:port`, bare hosts and ports (numbers or service names).
//!
//! Pure: a host name is kept as written and resolved where it is used (`sys::resolve`), and a
//! port given as a service name is looked up by the function the parser is given
//! ([`Services`]).

use super::text::printable;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::proto::name;

/// A host as written: an IP literal, a name resolved when it is used, or a Unix-domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (or `localhost`), resolved at each use so DNS changes are followed.
    Name(String),
    /// A Unix-domain stream socket (`unix:/path`, `unix:@name`); its [`HostPort`] has no port
    /// (0).
    Unix(SocketPath),
}

/// A Unix-domain socket's name: a file in the file system, or a Linux abstract name (no file;
/// gone when its last socket closes). Written `unix:/absolute/path` or `unix:@name`.
///
/// ```
/// use tcp_router::config::{Host, HostPort, SocketPath};
///
/// let upstream: HostPort = "unix:/run/redis/redis.sock".parse().unwrap();
/// assert_eq!(upstream.host, Host::Unix(SocketPath::Path("/run/redis/redis.sock".into())));
/// assert_eq!(upstream.to_string(), "unix:/run/redis/redis.sock");
/// let err = "unix:run/redis.sock".parse::<HostPort>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid address 'unix:run/redis.sock': a socket path must be absolute (unix:/PATH) or an abstract name (unix:@NAME)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketPath {
    /// A socket file at an absolute path.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (written after `@`).
    Abstract(String),
}

/// An address a socket is bound or connected to, once any name is resolved: an IP address and
/// port, or a Unix-domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A Unix-domain socket.
    Unix(SocketPath),
}

impl Endpoint {
    /// Its IP address and port, unless it is a Unix-domain socket.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Ip(addr) => Some(*addr),
            Endpoint::Unix(_) => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Ip(addr) => addr.fmt(f),
            Endpoint::Unix(path) => path.fmt(f),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = AddrError;

    /// Reads an IP address and port (`127.0.0.1:6379`, `[::1]:80`) or a Unix socket
    /// (`unix:/run/app.sock`, `unix:@app`); names are not resolved here, so they are refused.
    fn from_str(text: &str) -> Result<Endpoint, AddrError> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            return SocketPath::parse(path)
                .map(Endpoint::Unix)
                .map_err(|why| addr_error(text, why));
        }
        text.parse()
            .map(Endpoint::Ip)
            .map_err(|_| addr_error(text, "expected IP:PORT or unix:PATH"))
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Ip(addr)
    }
}

/// The most bytes a socket path or an abstract name may have: `sun_path` is 108 bytes, with
/// room for the path's terminating NUL (or the abstract name's leading one).
pub const MAX_SOCKET_PATH: usize = 107;

/// How a Unix-domain socket is written: `unix:` then its path or `@` and its name.
pub const UNIX_PREFIX: &str = "unix:";

impl SocketPath {
    /// Reads what follows `unix:`; the error is the reason alone.
    pub(crate) fn parse(text: &str) -> Result<SocketPath, String> {
        let (name, path) = match text.strip_prefix('@') {
            Some(name) => (name, SocketPath::Abstract(name.to_string())),
            None => (text, SocketPath::Path(PathBuf::from(text))),
        };
        if name.is_empty() {
            return Err("the socket path is empty: write unix:/PATH or unix:@NAME".into());
        }
        if matches!(path, SocketPath::Path(_)) && !text.starts_with('/') {
            return Err(
                "a socket path must be absolute (unix:/PATH) or an abstract name (unix:@NAME)"
                    .into(),
            );
        }
        if name.chars().any(char::is_control) {
            return Err(
                "a socket path may not hold a control character (a NUL byte, a newline...)".into(),
            );
        }
        if name.len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the socket path is {} bytes, longer than the {MAX_SOCKET_PATH} bytes a Unix socket path may have",
                name.len()
            ));
        }
        Ok(path)
    }
}

impl SocketPath {
    /// The socket `sun_path` names (what [`SocketPath::sun_path`] gives), if it is one that
    /// `unix:` reads.
    pub fn from_sun_path(sun_path: &[u8]) -> Option<SocketPath> {
        let text = match sun_path.split_first() {
            Some((0, name)) => format!("@{}", std::str::from_utf8(name).ok()?),
            _ => std::str::from_utf8(sun_path).ok()?.to_string(),
        };
        SocketPath::parse(&text).ok()
    }

    /// The bytes of its `sun_path`: the file's path, or a NUL byte then the abstract name.
    pub fn sun_path(&self) -> Vec<u8> {
        match self {
            SocketPath::Path(path) => path.as_os_str().as_encoded_bytes().to_vec(),
            SocketPath::Abstract(name) => [&[0u8], name.as_bytes()].concat(),
        }
    }
}

impl fmt::Display for SocketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketPath::Path(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
            SocketPath::Abstract(name) => write!(f, "{UNIX_PREFIX}@{name}"),
        }
    }
}

/// A host and a port, e.g. `127.0.0.1:6379`, `[::1]:80`, `app1:http`.
///
/// ```
/// use tcp_router::config::{Host, HostPort};
///
/// let upstream: HostPort = "[::1]:6379".parse().unwrap();
/// assert_eq!(upstream.to_string(), "[::1]:6379");
/// let named: HostPort = "Redis.internal:6379".parse().unwrap();
/// assert_eq!(named.host, Host::Name("redis.internal".into()));
/// let err = "::1:80".parse::<HostPort>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid address '::1:80': an IPv6 address needs brackets, as in [::1]:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Where to connect or bind.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

/// Why an address, host or port was refused; carries the text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    /// The text that failed to parse.
    pub original: String,
    /// What is wrong with it, as a lowercase phrase.
    pub reason: String,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let original = printable(&self.original);
        write!(
            f,
            "invalid address '{original}': {}",
            printable(&self.reason)
        )
    }
}

impl std::error::Error for AddrError {}

pub(crate) fn addr_error(original: &str, reason: impl Into<String>) -> AddrError {
    AddrError {
        original: original.to_string(),
        reason: reason.into(),
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
            Host::Unix(path) => path.fmt(f),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Unix(path) => path.fmt(f),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Looks a TCP service name up (`http` → 80): `sys::services::tcp_port` reads /etc/services.
/// The parsers are given it, so they do no I/O of their own.
pub(crate) type Services = fn(&str) -> Option<u16>;

impl HostPort {
    /// Reads `host:port`; an IPv6 host must be in brackets (`[::1]:80`); a port given by name is
    /// looked up in `services`. (`HostPort`'s `FromStr`, in `forwarder.rs`, passes /etc/services.)
    pub(crate) fn parse_with(text: &str, services: Services) -> Result<HostPort, AddrError> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            return HostPort::unix(text, path);
        }
        let (host, port) = split_host_port(text)?;
        let host = parse_host(host).map_err(|e| addr_error(text, e.reason))?;
        let port = parse_port(port, services).map_err(|e| addr_error(text, e.reason))?;
        Ok(HostPort { host, port })
    }
}

impl HostPort {
    /// A Unix-domain socket from `path`, what follows `unix:` in `text`.
    pub(crate) fn unix(text: &str, path: &str) -> Result<HostPort, AddrError> {
        let path = SocketPath::parse(path).map_err(|why| addr_error(text, why))?;
        Ok(HostPort {
            host: Host::Unix(path),
            port: 0,
        })
    }

    /// True for an IP address or name with port 0, which cannot be connected to (a Unix socket
    /// has no port).
    pub(crate) fn lacks_port(&self) -> bool {
        self.port == 0 && !matches!(self.host, Host::Unix(_))
    }

    /// The Unix-domain socket it names, if it names one.
    pub fn socket_path(&self) -> Option<&SocketPath> {
        match &self.host {
            Host::Unix(path) => Some(path),
            _ => None,
        }
    }
}

impl From<Endpoint> for HostPort {
    fn from(endpoint: Endpoint) -> Self {
        match endpoint {
            Endpoint::Ip(addr) => HostPort::from(addr),
            Endpoint::Unix(path) => HostPort {
                host: Host::Unix(path),
                port: 0,
            },
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

pub(crate) fn split_host_port(text: &str) -> Result<(&str, &str), AddrError> {
    // Forms people type first that are not HOST:PORT, each with a hint that fits it.
    if let Some((scheme, rest)) = text.split_once("://") {
        let hint = rest.split(['/', '?']).next().unwrap_or(rest);
        return Err(addr_error(
            text,
            format!("a URL scheme ('{scheme}://') is not part of an address: write HOST:PORT, as in '{hint}' (tcp-router forwards TCP and reads no URL)"),
        ));
    }
    if text.contains(',') {
        return Err(addr_error(
            text,
            "one address per argument: give several upstreams as separate arguments (LISTEN UPSTREAM UPSTREAM...); only --sni/--host take a comma-separated list",
        ));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| addr_error(text, "missing ']' after the IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| addr_error(text, "expected ':PORT' after ']'"))?;
        return Ok((host, port));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| addr_error(text, "expected HOST:PORT (IPv6 as [ADDR]:PORT)"))?;
    if host.contains(':') {
        return Err(addr_error(
            text,
            "an IPv6 address needs brackets, as in [::1]:80",
        ));
    }
    Ok((host, port))
}

/// Reads a host: an IPv4 literal, an IPv6 literal with or without brackets, or a DNS name.
pub(crate) fn parse_host(text: &str) -> Result<Host, AddrError> {
    let bare = strip_brackets(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if bare.is_empty() {
        return Err(addr_error(text, "the host is empty"));
    }
    if bare.contains(':') {
        return Err(addr_error(text, "not a valid IPv6 address"));
    }
    if looks_like_ipv4(bare) {
        return Err(addr_error(text, "not a valid IPv4 address"));
    }
    match name::canonical(bare) {
        Ok(canonical) => Ok(Host::Name(canonical)),
        Err(why) => Err(addr_error(
            text,
            format!("not an IP address or a host name ({why})"),
        )),
    }
}

/// Removes one pair of brackets enclosing the whole text, if present: `[::1]` → `::1`. The one
/// place brackets around an address are understood (addresses, `src=`, allow/deny patterns).
pub(crate) fn strip_brackets(text: &str) -> &str {
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text)
}

/// An IP address, brackets allowed around IPv6; names are refused, since nothing in the
/// configuration is resolved while it is parsed. The error is the reason alone.
pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let bare = strip_brackets(text);
    bare.parse().map_err(|_| {
        if bare.is_empty() {
            "an ip address is required".to_string()
        } else {
            "not an ip address (host names are not allowed here)".to_string()
        }
    })
}

fn looks_like_ipv4(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Reads a port: a number 0–65535 or a TCP service name, looked up in `services`; a `/tcp` suffix
/// is accepted.
pub(crate) fn parse_port(text: &str, services: Services) -> Result<u16, AddrError> {
    let (name, proto) = match text.split_once('/') {
        Some((name, proto)) => (name, Some(proto)),
        None => (text, None),
    };
    match proto {
        None | Some("tcp") => {}
        Some("udp") => {
            return Err(addr_error(
                text,
                "UDP is forwarded by a rule of the config file (a listen address ending in /udp), \
                 not here",
            ))
        }
        Some(other) => return Err(addr_error(text, format!("unknown protocol '{other}'"))),
    }
    if name.is_empty() {
        return Err(addr_error(text, "the port is empty"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse::<u16>()
            .map_err(|_| addr_error(text, "port out of range (0-65535)"));
    }
    services(name).ok_or_else(|| {
        addr_error(
            text,
            "not a port number or a TCP service name from /etc/services",
        )
    })
}

/// The largest weight an upstream takes (`*W`): a member with it gets 256 times the share of
/// one weighing 1.
pub const MAX_WEIGHT: u32 = 256;

/// Splits an upstream as written in a list (`10.0.0.1:80*3`) into the address and its weight,
/// 1 without a `*W` suffix. The error is one line naming the entry.
///
/// ```
/// use tcp_router::config::split_weight;
///
/// assert_eq!(split_weight("10.0.0.1:80*3"), Ok(("10.0.0.1:80", 3)));
/// assert_eq!(split_weight("[::1]:80"), Ok(("[::1]:80", 1)));
/// assert_eq!(
///     split_weight("10.0.0.1:80*0").unwrap_err(),
///     "invalid weight '*0' in '10.0.0.1:80*0': expected a whole number from 1 to 256"
/// );
/// ```
pub fn split_weight(text: &str) -> Result<(&str, u32), String> {
    let Some((address, weight)) = text.rsplit_once('*') else {
        return Ok((text, 1));
    };
    match weight.parse::<u32>() {
        Ok(w) if (1..=MAX_WEIGHT).contains(&w) && weight.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((address, w))
        }
        _ => Err(format!(
            "invalid weight '*{}' in '{}': expected a whole number from 1 to {MAX_WEIGHT}",
            printable(weight),
            printable(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(text: &str) -> HostPort {
        text.parse().unwrap()
    }

    #[test]
    fn a_socket_path_round_trips_and_never_holds_a_control_character() {
        for text in ["unix:/run/app.sock", "unix:@app", "unix:/tmp/a b"] {
            let path = hp(text);
            assert_eq!(path.to_string(), text);
            let name = path.socket_path().unwrap();
            assert_eq!(
                SocketPath::from_sun_path(&name.sun_path()).as_ref(),
                Some(name)
            );
        }
        for text in ["unix:/tmp/a\n\nb", "unix:@a\0b", "unix:/tmp/\x1b[31m"] {
            let err = text.parse::<HostPort>().unwrap_err().to_string();
            assert!(err.contains("control character"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn ipv4_and_bracketed_ipv6() {
        assert_eq!(hp("127.0.0.1:6379").to_string(), "127.0.0.1:6379");
        assert_eq!(hp("[::1]:80").to_string(), "[::1]:80");
        assert_eq!(hp("[::]:8080").host, Host::Ip("::".parse().unwrap()));
    }

    #[test]
    fn names_are_kept_for_later_resolution() {
        assert_eq!(hp("App1:80").host, Host::Name("app1".into()));
        assert_eq!(hp("localhost:0").port, 0);
    }

    #[test]
    fn errors_name_the_value_and_reason() {
        let cases = [
            ("127.0.0.1", "expected HOST:PORT"),
            ("::1:80", "needs brackets"),
            ("[::1:80", "missing ']'"),
            ("[::1]80", "expected ':PORT'"),
            ("127.0.0.1:65536", "out of range"),
            ("127.0.0.1:", "port is empty"),
            (":80", "host is empty"),
            ("300.1.1.1:80", "not a valid IPv4"),
            ("bad host:80", "not an IP address or a host name"),
            ("127.0.0.1:nosuchservice", "service name"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<HostPort>().unwrap_err().to_string();
            assert!(err.contains(&format!("'{text}'")), "{err}");
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn a_scheme_or_a_comma_gets_a_hint_that_fits() {
        let err = |text: &str| text.parse::<HostPort>().unwrap_err().reason;
        assert_eq!(
            err("http://host:80/path"),
            "a URL scheme ('http://') is not part of an address: write HOST:PORT, as in 'host:80' (tcp-router forwards TCP and reads no URL)"
        );
        assert!(err("tcp://127.0.0.1:1").contains("as in '127.0.0.1:1'"));
        assert!(err("a:1,b:2").starts_with("one address per argument"));
        for text in ["http://host:80", "a:1,b:2"] {
            assert!(!err(text).contains("brackets"), "{text}");
        }
    }

    #[test]
    fn ports_take_numbers_service_names_and_tcp_suffix() {
        let services: Services = |name| (name == "http").then_some(80);
        assert_eq!(parse_port("8080", services), Ok(8080));
        assert_eq!(parse_port("80/tcp", services), Ok(80));
        assert_eq!(parse_port("http", services), Ok(80));
        assert_eq!(parse_port("http/tcp", services), Ok(80));
        assert!(parse_port("gopher", services)
            .unwrap_err()
            .reason
            .contains("service name"));
        assert!(parse_port("53/udp", services)
            .unwrap_err()
            .reason
            .contains("UDP"));
    }

    #[test]
    fn bare_hosts_accept_ipv6_with_or_without_brackets() {
        assert_eq!(parse_host("::1"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            parse_host("[fe80::1]"),
            Ok(Host::Ip("fe80::1".parse().unwrap()))
        );
        assert!(parse_host("fe80::zz").is_err());
    }
}
