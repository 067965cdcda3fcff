//! The settings a route can be given, each declared once here: its default, its `key=value`
//! parser, and how a value given on the command line or on a `route` line is merged over the
//! defaults (route key > command line > built-in default).

use super::text::printable;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::proto::proxy::Version;

use super::acl::{parse_patterns, Pattern};
use super::addr::parse_ip;
use super::duration::{check_duration, format_duration, parse_duration, parse_optional_duration};
use super::health::{
    CheckKind, OnDown, StatusRange, DEFAULT_CHECK_INTERVAL, DEFAULT_FALL, DEFAULT_RESOLVE_INTERVAL,
    DEFAULT_RISE,
};

/// The largest connection cap accepted, process-wide or per listener: far above what a
/// thread-per-connection process can hold (two threads each), and small enough that the slots
/// themselves cost little.
pub const MAX_CONNECTIONS_CAP: usize = 1 << 20;

/// Built-in default for `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Built-in default for `fin_timeout`: longer than common servers' response timeouts, so a slow
/// answer to a half-closed request is not cut, yet dead half-closed connections are reaped.
pub const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Built-in default for `peek_timeout`.
pub const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// Built-in default for `max_fails`: one failed connect marks an upstream down.
pub const DEFAULT_MAX_FAILS: usize = 1;
/// Built-in default for `fail_timeout`: how long an upstream marked down is skipped.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(5);

/// In which order a route's clients try its upstreams (`balance=`, haproxy's keyword).
///
/// ```
/// use tcp_router::config::Balance;
///
/// assert_eq!("first".parse::<Balance>(), Ok(Balance::First));
/// assert_eq!(Balance::default().to_string(), "roundrobin");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Each client starts one upstream further along the list (`roundrobin`).
    #[default]
    RoundRobin,
    /// Every client tries the upstreams in the order written (`first`): a primary with ordered
    /// standbys.
    First,
    /// Each client goes to the upstream with the fewest open connections for its weight
    /// (`leastconn`).
    LeastConn,
    /// Each client goes to the same upstream while it is up, picked by hashing the client's
    /// address (`source`): client affinity.
    Source,
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "roundrobin",
            Balance::First => "first",
            Balance::LeastConn => "leastconn",
            Balance::Source => "source",
        })
    }
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(text: &str) -> Result<Balance, String> {
        match text {
            "roundrobin" => Ok(Balance::RoundRobin),
            "first" => Ok(Balance::First),
            "leastconn" => Ok(Balance::LeastConn),
            "source" => Ok(Balance::Source),
            _ => Err("expected roundrobin, first, leastconn or source".into()),
        }
    }
}

/// Every setting a route (or the listener it is on) can be given, with its value in force.
///
/// [`Settings::default`] holds the built-in defaults; [`Settings::merge`] lays what one place
/// gave (an [`Overrides`]) over them.
///
/// ```
/// use std::time::Duration;
/// use tcp_router::config::{Overrides, Settings};
///
/// let mut given = Overrides::default();
/// given.set("idle_timeout", "10m").unwrap();
/// let settings = Settings::default().merge(&given);
/// assert_eq!(settings.idle_timeout, Some(Duration::from_secs(600)));
/// assert_eq!(settings.connect_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Time allowed for one upstream's connect attempt (`connect_timeout`).
    pub connect_timeout: Duration,
    /// Close after this long with no bytes moving either way; `None` is off (`idle_timeout`).
    pub idle_timeout: Option<Duration>,
    /// Close a half-closed connection after this long with no bytes moving; `None` is off
    /// (`fin_timeout`).
    pub fin_timeout: Option<Duration>,
    /// Local address for upstream connections (`src`, rinetd's `[src=]`).
    pub src: Option<IpAddr>,
    /// PROXY protocol header to send upstream (`proxy_protocol`).
    pub proxy_protocol: Option<Version>,
    /// Listener-wide: deadline for reading a ClientHello, HTTP head or PROXY header
    /// (`peek_timeout`).
    pub peek_timeout: Duration,
    /// Listener-wide: read a PROXY header from each client first (`accept_proxy`).
    pub accept_proxy: bool,
    /// Listener-wide: the senders trusted to send a PROXY header (`accept_proxy_from`); anyone
    /// else is refused at accept. Empty: every sender is trusted (warned at start).
    pub accept_proxy_from: Vec<Pattern>,
    /// Listener-wide: bind with SO_REUSEPORT, so several processes can serve the address
    /// (`reuse_port`).
    pub reuse_port: bool,
    /// Listener-wide: cap on the listener's connections (`max_connections`).
    pub max_connections: Option<usize>,
    /// Listener-wide, a Unix socket's: the mode of its file (`socket_mode`, octal).
    pub socket_mode: u32,
    /// Listener-wide, a Unix socket's: its file's owner, a user name or number
    /// (`socket_owner`); `None`: the process's user.
    pub socket_owner: Option<String>,
    /// Listener-wide, a Unix socket's: its file's group, a name or number (`socket_group`);
    /// `None`: the process's group.
    pub socket_group: Option<String>,
    /// Cap on one client's connections to this route (`max_connections_per_client`).
    pub max_connections_per_client: Option<usize>,
    /// Consecutive failed connects that mark an upstream down (`max_fails`, nginx's name).
    pub max_fails: usize,
    /// How long an upstream marked down is skipped (`fail_timeout`, nginx's name).
    pub fail_timeout: Duration,
    /// The order in which clients try the upstreams (`balance`).
    pub balance: Balance,
    /// The active check run against each member (`check`); `None`: no active checks.
    pub check: Option<CheckKind>,
    /// The port checks go to (`check_port`); `None`: each upstream's own.
    pub check_port: Option<u16>,
    /// The `Host` an HTTP check sends (`check_host`); `None`: the upstream's host as written.
    pub check_host: Option<String>,
    /// The statuses that pass an HTTP check (`check_status`).
    pub check_status: StatusRange,
    /// Time between two checks of one member (`check_interval`).
    pub check_interval: Duration,
    /// Time one check may take (`check_timeout`); `None`: the connect timeout.
    pub check_timeout: Option<Duration>,
    /// Checks passed in a row that bring a down member up (`rise`).
    pub rise: usize,
    /// Checks failed in a row that bring an up member down (`fall`).
    pub fall: usize,
    /// What happens to the connections of a member its checks mark down (`on_down`).
    pub on_down: OnDown,
    /// How often upstream names are resolved again in the background (`resolve_interval`).
    pub resolve_interval: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: None,
            fin_timeout: Some(DEFAULT_FIN_TIMEOUT),
            src: None,
            proxy_protocol: None,
            peek_timeout: DEFAULT_PEEK_TIMEOUT,
            accept_proxy: false,
            accept_proxy_from: Vec::new(),
            reuse_port: false,
            max_connections: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_owner: None,
            socket_group: None,
            max_connections_per_client: None,
            max_fails: DEFAULT_MAX_FAILS,
            fail_timeout: DEFAULT_FAIL_TIMEOUT,
            balance: Balance::RoundRobin,
            check: None,
            check_port: None,
            check_host: None,
            check_status: StatusRange::default(),
            check_interval: DEFAULT_CHECK_INTERVAL,
            check_timeout: None,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            on_down: OnDown::Keep,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
        }
    }
}

/// Settings given in one place (the command line, or one `route` line); `None` = not given there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Overrides {
    /// `connect_timeout=DUR`.
    pub connect_timeout: Option<Duration>,
    /// `idle_timeout=DUR|off`; `Some(None)` = off.
    pub idle_timeout: Option<Option<Duration>>,
    /// `fin_timeout=DUR|off`; `Some(None)` = off.
    pub fin_timeout: Option<Option<Duration>>,
    /// `src=IP`.
    pub src: Option<IpAddr>,
    /// `proxy_protocol=v1|v2`.
    pub proxy_protocol: Option<Version>,
    /// `peek_timeout=DUR`.
    pub peek_timeout: Option<Duration>,
    /// `accept_proxy=true|false`.
    pub accept_proxy: Option<bool>,
    /// `accept_proxy_from=PATTERN[,PATTERN...]`; giving it sets `accept_proxy` too, unless that is
    /// given.
    pub accept_proxy_from: Option<Vec<Pattern>>,
    /// `reuse_port=true|false`.
    pub reuse_port: Option<bool>,
    /// `max_connections=N`.
    pub max_connections: Option<usize>,
    /// `socket_mode=0660`.
    pub socket_mode: Option<u32>,
    /// `socket_owner=USER|UID`.
    pub socket_owner: Option<String>,
    /// `socket_group=GROUP|GID`.
    pub socket_group: Option<String>,
    /// `max_connections_per_client=N`.
    pub max_connections_per_client: Option<usize>,
    /// `max_fails=N`.
    pub max_fails: Option<usize>,
    /// `fail_timeout=DUR`.
    pub fail_timeout: Option<Duration>,
    /// `balance=roundrobin|first|leastconn|source`.
    pub balance: Option<Balance>,
    /// `check=connect|http:PATH|send:TEXT,expect:TEXT...`.
    pub check: Option<CheckKind>,
    /// `check_port=PORT`.
    pub check_port: Option<u16>,
    /// `check_host=NAME`.
    pub check_host: Option<String>,
    /// `check_status=200|2xx|200-399`.
    pub check_status: Option<StatusRange>,
    /// `check_interval=DUR`.
    pub check_interval: Option<Duration>,
    /// `check_timeout=DUR`.
    pub check_timeout: Option<Duration>,
    /// `rise=N`.
    pub rise: Option<usize>,
    /// `fall=N`.
    pub fall: Option<usize>,
    /// `on_down=keep|close`.
    pub on_down: Option<OnDown>,
    /// `resolve_interval=DUR`.
    pub resolve_interval: Option<Duration>,
}

impl Overrides {
    /// The keys [`Overrides::set`] takes, in the order the docs list them.
    pub const KEYS: [&'static str; 27] = [
        "connect_timeout",
        "idle_timeout",
        "fin_timeout",
        "peek_timeout",
        "max_connections",
        "max_connections_per_client",
        "src",
        "proxy_protocol",
        "accept_proxy",
        "accept_proxy_from",
        "reuse_port",
        "socket_mode",
        "socket_owner",
        "socket_group",
        "balance",
        "max_fails",
        "fail_timeout",
        "check",
        "check_port",
        "check_host",
        "check_status",
        "check_interval",
        "check_timeout",
        "rise",
        "fall",
        "on_down",
        "resolve_interval",
    ];

    /// Sets one setting from its `key` and textual `value`, as a `route` line writes them. The
    /// error is one lowercase line naming the key, the value and what was expected.
    ///
    /// ```
    /// use tcp_router::config::Overrides;
    ///
    /// let mut given = Overrides::default();
    /// assert!(given.set("proxy_protocol", "v2").is_ok());
    /// assert_eq!(
    ///     given.set("max_connections", "0").unwrap_err(),
    ///     "invalid max_connections '0': must be at least 1"
    /// );
    /// ```
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let shown = printable(value);
        let invalid = |why: String| format!("invalid {key} '{shown}': {why}");
        match key {
            "connect_timeout" => self.connect_timeout = Some(positive_duration(key, value)?),
            "peek_timeout" => self.peek_timeout = Some(positive_duration(key, value)?),
            "idle_timeout" => self.idle_timeout = Some(duration_or_off(key, value)?),
            "fin_timeout" => self.fin_timeout = Some(duration_or_off(key, value)?),
            "max_connections" => self.max_connections = Some(parse_count(value).map_err(invalid)?),
            "max_connections_per_client" => {
                self.max_connections_per_client = Some(parse_count(value).map_err(invalid)?)
            }
            "src" => self.src = Some(parse_ip(value).map_err(invalid)?),
            "proxy_protocol" => {
                let version = value.parse::<Version>();
                self.proxy_protocol =
                    Some(version.map_err(|_| invalid("expected v1 or v2".into()))?)
            }
            "accept_proxy" => {
                self.accept_proxy = Some(boolean(value).map_err(|w| invalid(w.into()))?)
            }
            "accept_proxy_from" => {
                self.accept_proxy_from = Some(parse_patterns(value).map_err(invalid)?);
                self.accept_proxy.get_or_insert(true);
            }
            "reuse_port" => self.reuse_port = Some(boolean(value).map_err(|w| invalid(w.into()))?),
            "socket_mode" => self.socket_mode = Some(parse_mode(value).map_err(invalid)?),
            "socket_owner" => self.socket_owner = Some(parse_account(value).map_err(invalid)?),
            "socket_group" => self.socket_group = Some(parse_account(value).map_err(invalid)?),
            "balance" => self.balance = Some(value.parse().map_err(invalid)?),
            "max_fails" => self.max_fails = Some(parse_count(value).map_err(invalid)?),
            "fail_timeout" => self.fail_timeout = Some(positive_duration(key, value)?),
            "check" => self.check = Some(value.parse().map_err(invalid)?),
            "check_port" => self.check_port = Some(parse_check_port(value).map_err(invalid)?),
            "check_host" => self.check_host = Some(parse_check_host(value).map_err(invalid)?),
            "check_status" => self.check_status = Some(value.parse().map_err(invalid)?),
            "check_interval" => self.check_interval = Some(positive_duration(key, value)?),
            "check_timeout" => self.check_timeout = Some(positive_duration(key, value)?),
            "rise" => self.rise = Some(parse_count(value).map_err(invalid)?),
            "fall" => self.fall = Some(parse_count(value).map_err(invalid)?),
            "on_down" => self.on_down = Some(value.parse().map_err(invalid)?),
            "resolve_interval" => self.resolve_interval = Some(positive_duration(key, value)?),
            _ => return Err(format!("unknown key '{key}'")),
        }
        Ok(())
    }
}

/// A Unix listener's file mode when none is given: its owner and group may connect, nobody else.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// A file mode in octal, as chmod takes it: `660`, `0660`, `0o660`; permission bits only.
fn parse_mode(value: &str) -> Result<u32, String> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() && digits.len() <= 4 => Ok(mode),
        _ => Err("expected a file mode in octal, from 0000 to 0777, as in 0660".into()),
    }
}

/// A user or group, by name or number: what `chown` takes, looked up when the socket is bound.
fn parse_account(value: &str) -> Result<String, String> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if value.is_empty() || value.len() > 32 || !value.chars().all(fits) || value.starts_with('-') {
        return Err("expected a user or group name, or a number".into());
    }
    Ok(value.to_string())
}

impl Settings {
    /// These settings with everything `given` laid over them: the one place where a value from
    /// the command line or a route line replaces a default.
    pub fn merge(&self, given: &Overrides) -> Settings {
        Settings {
            connect_timeout: given.connect_timeout.unwrap_or(self.connect_timeout),
            idle_timeout: given.idle_timeout.unwrap_or(self.idle_timeout),
            fin_timeout: given.fin_timeout.unwrap_or(self.fin_timeout),
            src: given.src.or(self.src),
            proxy_protocol: given.proxy_protocol.or(self.proxy_protocol),
            peek_timeout: given.peek_timeout.unwrap_or(self.peek_timeout),
            accept_proxy: given.accept_proxy.unwrap_or(self.accept_proxy),
            accept_proxy_from: (given.accept_proxy_from.as_ref())
                .unwrap_or(&self.accept_proxy_from)
                .clone(),
            reuse_port: given.reuse_port.unwrap_or(self.reuse_port),
            max_connections: given.max_connections.or(self.max_connections),
            socket_mode: given.socket_mode.unwrap_or(self.socket_mode),
            socket_owner: (given.socket_owner.as_ref())
                .or(self.socket_owner.as_ref())
                .cloned(),
            socket_group: (given.socket_group.as_ref())
                .or(self.socket_group.as_ref())
                .cloned(),
            max_connections_per_client: given
                .max_connections_per_client
                .or(self.max_connections_per_client),
            max_fails: given.max_fails.unwrap_or(self.max_fails),
            fail_timeout: given.fail_timeout.unwrap_or(self.fail_timeout),
            balance: given.balance.unwrap_or(self.balance),
            check: given.check.as_ref().or(self.check.as_ref()).cloned(),
            check_port: given.check_port.or(self.check_port),
            check_host: given
                .check_host
                .as_ref()
                .or(self.check_host.as_ref())
                .cloned(),
            check_status: given.check_status.unwrap_or(self.check_status),
            check_interval: given.check_interval.unwrap_or(self.check_interval),
            check_timeout: given.check_timeout.or(self.check_timeout),
            rise: given.rise.unwrap_or(self.rise),
            fall: given.fall.unwrap_or(self.fall),
            on_down: given.on_down.unwrap_or(self.on_down),
            resolve_interval: given.resolve_interval.unwrap_or(self.resolve_interval),
        }
    }
}

impl Overrides {
    /// The check settings given here that the check in force (`check`, given here or merged
    /// from a default) cannot take: any of them without a check (`'rise=2' needs check=`), and
    /// `check_status` without an HTTP check. One line each, naming the key and its value.
    ///
    /// ```
    /// use tcp_router::config::Overrides;
    ///
    /// let mut given = Overrides::default();
    /// given.set("rise", "2").unwrap();
    /// assert_eq!(given.check_problems(None), ["'rise=2' needs check="]);
    /// ```
    pub fn check_problems(&self, check: Option<&CheckKind>) -> Vec<String> {
        let given = self.check_companions();
        match check {
            None => given
                .into_iter()
                .map(|(key, value)| format!("'{key}={value}' needs check="))
                .collect(),
            Some(CheckKind::Http { .. }) => Vec::new(),
            Some(_) => given
                .into_iter()
                .filter(|(key, _)| *key == "check_status")
                .map(|(key, value)| {
                    format!("'{key}={value}' needs an http check (check=http:PATH)")
                })
                .collect(),
        }
    }

    /// The settings that only a check uses, as `(key, value)`, where given.
    fn check_companions(&self) -> Vec<(&'static str, String)> {
        let duration = |d: Option<Duration>| d.map(format_duration);
        [
            ("check_port", self.check_port.map(|p| p.to_string())),
            (
                "check_host",
                self.check_host.as_deref().map(|h| printable(h).into()),
            ),
            ("check_status", self.check_status.map(|s| s.to_string())),
            ("check_interval", duration(self.check_interval)),
            ("check_timeout", duration(self.check_timeout)),
            ("rise", self.rise.map(|n| n.to_string())),
            ("fall", self.fall.map(|n| n.to_string())),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect()
    }
}

/// `check_port`: a port number from 1 to 65535 (the checks go to the members' addresses). The
/// error is the reason alone.
pub fn parse_check_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err("expected a port number from 1 to 65535".into()),
    }
}

/// `check_host`: what an HTTP check's `Host` header says; visible ASCII, as a header value must
/// be, and at most 255 bytes (a host name, optionally with `:port`). The error is the reason
/// alone.
pub fn parse_check_host(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("expected a host name (visible ASCII, at most 255 bytes)".into());
    }
    Ok(value.to_string())
}

/// A duration that must not be zero (a zero connect or peek deadline would refuse everyone).
pub(crate) fn positive_duration(key: &str, value: &str) -> Result<Duration, String> {
    let d = parse_duration(value).map_err(|e| format!("{key}: {e}"))?;
    check_duration(d, false).map_err(|why| format!("invalid {key} '{}': {why}", printable(value)))
}

/// A duration or `off` (zero is off too), within [`MAX_DURATION`](super::duration::MAX_DURATION).
pub(crate) fn duration_or_off(key: &str, value: &str) -> Result<Option<Duration>, String> {
    let d = parse_optional_duration(value).map_err(|e| format!("{key}: {e}, or off"))?;
    match d.map(|d| check_duration(d, false)).transpose() {
        Ok(d) => Ok(d),
        Err(why) => Err(format!("invalid {key} '{}': {why}", printable(value))),
    }
}

/// `true` or `false`.
fn boolean(value: &str) -> Result<bool, &'static str> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false"),
    }
}

/// A connection count as written (`max_connections=N`, `--max-connections N`): a whole number
/// from 1 to [`MAX_CONNECTIONS_CAP`]. The error is the reason alone; the caller names the key.
///
/// ```
/// use tcp_router::config::parse_count;
///
/// assert_eq!(parse_count("10"), Ok(10));
/// assert_eq!(parse_count("-1"), Err("expected a whole number".to_string()));
/// assert_eq!(parse_count("0"), Err("must be at least 1".to_string()));
/// assert_eq!(parse_count("99999999999"), Err("must be at most 1048576".to_string()));
/// ```
pub fn parse_count(value: &str) -> Result<usize, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".into());
    }
    // Past the cap is past the cap, however many digits: no "number too large" of its own.
    let n = value.parse::<usize>().unwrap_or(usize::MAX);
    check_count(n)
}

/// Why `n` cannot be a connection cap, if it cannot: the bounds [`parse_count`] applies, for
/// counts given as numbers (the builder, [`Config`](crate::Config) fields).
pub fn check_count(n: usize) -> Result<usize, String> {
    match n {
        0 => Err("must be at least 1".into()),
        n if n > MAX_CONNECTIONS_CAP => Err(format!("must be at most {MAX_CONNECTIONS_CAP}")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_values_win_over_defaults_and_off_is_a_value() {
        let mut given = Overrides::default();
        given.set("fin_timeout", "off").unwrap();
        given.set("connect_timeout", "250ms").unwrap();
        let merged = Settings::default().merge(&given);
        assert_eq!(merged.fin_timeout, None);
        assert_eq!(merged.connect_timeout, Duration::from_millis(250));
        assert_eq!(merged.peek_timeout, DEFAULT_PEEK_TIMEOUT);
        assert_eq!(
            Settings::default().merge(&Overrides::default()),
            Settings::default()
        );
    }

    #[test]
    fn every_key_parses() {
        let mut given = Overrides::default();
        for (key, value) in Overrides::KEYS.iter().zip([
            "1s",
            "off",
            "2m",
            "3s",
            "10",
            "4",
            "::1",
            "v1",
            "true",
            "10.0.0.0/8,192.0.2.7",
            "true",
            "0600",
            "www-data",
            "1000",
            "first",
            "3",
            "10s",
            "send:PING\\r\\n,expect:+PONG",
            "8080",
            "db.example",
            "200-399",
            "500ms",
            "1s",
            "2",
            "4",
            "close",
            "1m",
        ]) {
            given
                .set(key, value)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        assert_eq!(given.max_connections, Some(10));
        assert_eq!(given.src, Some("::1".parse().unwrap()));
        assert_eq!(given.proxy_protocol, Some(Version::V1));
        assert_eq!(given.accept_proxy_from.as_ref().map(Vec::len), Some(2));
        assert_eq!(given.balance, Some(Balance::First));
        assert_eq!(given.socket_mode, Some(0o600));
        assert_eq!(given.socket_owner.as_deref(), Some("www-data"));
        assert_eq!(given.max_fails, Some(3));
        assert_eq!(given.fail_timeout, Some(Duration::from_secs(10)));
        assert_eq!(
            given.check.as_ref().map(ToString::to_string).as_deref(),
            Some("send:PING\\r\\n,expect:+PONG")
        );
        assert_eq!(given.check_port, Some(8080));
        assert_eq!(given.check_host.as_deref(), Some("db.example"));
        assert_eq!(
            given.check_status,
            Some(StatusRange {
                low: 200,
                high: 399
            })
        );
        assert_eq!(given.check_interval, Some(Duration::from_millis(500)));
        assert_eq!(given.check_timeout, Some(Duration::from_secs(1)));
        assert_eq!((given.rise, given.fall), (Some(2), Some(4)));
        assert_eq!(given.on_down, Some(OnDown::Close));
        assert_eq!(given.resolve_interval, Some(Duration::from_secs(60)));
        let merged = Settings::default().merge(&given);
        assert_eq!(merged.check, given.check);
        assert_eq!((merged.rise, merged.fall), (2, 4));
        assert_eq!(merged.check_timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn check_settings_default_to_the_documented_values() {
        let settings = Settings::default();
        assert_eq!(settings.check, None);
        assert_eq!(settings.check_interval, Duration::from_secs(2));
        assert_eq!((settings.rise, settings.fall), (2, 3));
        assert_eq!(settings.check_status, StatusRange::default());
        assert_eq!(settings.on_down, OnDown::Keep);
        assert_eq!(settings.resolve_interval, Duration::from_secs(30));
    }

    #[test]
    fn check_companions_without_a_check_are_named_with_their_values() {
        let mut given = Overrides::default();
        given.set("rise", "2").unwrap();
        given.set("check_timeout", "1500ms").unwrap();
        given.set("check_status", "200").unwrap();
        assert_eq!(
            given.check_problems(None),
            [
                "'check_status=200' needs check=",
                "'check_timeout=1500ms' needs check=",
                "'rise=2' needs check=",
            ]
        );
        let connect = CheckKind::Connect;
        assert_eq!(
            given.check_problems(Some(&connect)),
            ["'check_status=200' needs an http check (check=http:PATH)"]
        );
        let http = "http:/".parse::<CheckKind>().unwrap();
        assert!(given.check_problems(Some(&http)).is_empty());
        assert!(Overrides::default().check_problems(None).is_empty());
    }

    #[test]
    fn a_trusted_list_turns_accept_proxy_on_unless_it_is_given() {
        let mut given = Overrides::default();
        given.set("accept_proxy_from", "10.0.0.0/8").unwrap();
        assert_eq!(given.accept_proxy, Some(true));
        let mut off = Overrides::default();
        off.set("accept_proxy", "false").unwrap();
        off.set("accept_proxy_from", "10.0.0.0/8").unwrap();
        assert_eq!(off.accept_proxy, Some(false));
        let err = Overrides::default()
            .set("accept_proxy_from", "10.0.0.0/8,")
            .unwrap_err();
        assert!(
            err.starts_with("invalid accept_proxy_from '10.0.0.0/8,': "),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let err = |key: &str, value: &str| Overrides::default().set(key, value).unwrap_err();
        assert_eq!(
            err("connect_timeout", "0"),
            "invalid connect_timeout '0': must be greater than zero"
        );
        assert!(err("idle_timeout", "soon").starts_with("idle_timeout: invalid duration 'soon'"));
        assert!(err("idle_timeout", "soon").ends_with(", or off"));
        assert_eq!(
            err("max_connections", "-1"),
            "invalid max_connections '-1': expected a whole number"
        );
        assert_eq!(
            err("proxy_protocol", "v3"),
            "invalid proxy_protocol 'v3': expected v1 or v2"
        );
        assert_eq!(
            err("accept_proxy", "yes"),
            "invalid accept_proxy 'yes': expected true or false"
        );
        assert!(err("src", "example.com").contains("host names are not allowed"));
        assert_eq!(err("colour", "red"), "unknown key 'colour'");
        assert_eq!(
            err("balance", "random"),
            "invalid balance 'random': expected roundrobin, first, leastconn or source"
        );
        assert_eq!(
            err("check", r"send:PING\q"),
            r"invalid check 'send:PING\q': unknown escape \q (use \r, \n, \t, \\ or \xHH)"
        );
        assert_eq!(
            err("check_port", "0"),
            "invalid check_port '0': expected a port number from 1 to 65535"
        );
        assert_eq!(
            err("check_host", "a\u{7f}"),
            "invalid check_host 'a\\u{7f}': expected a host name (visible ASCII, at most 255 bytes)"
        );
        assert_eq!(
            err("check_status", "600"),
            "invalid check_status '600': status 600 is not from 100 to 599"
        );
        assert_eq!(err("rise", "0"), "invalid rise '0': must be at least 1");
        assert_eq!(
            err("fall", "x"),
            "invalid fall 'x': expected a whole number"
        );
        assert_eq!(
            err("on_down", "drop"),
            "invalid on_down 'drop': expected keep or close"
        );
        assert_eq!(
            err("check_interval", "0"),
            "invalid check_interval '0': must be greater than zero"
        );
        assert!(err("resolve_interval", "soon").starts_with("resolve_interval: invalid duration"));
        assert_eq!(
            err("max_fails", "0"),
            "invalid max_fails '0': must be at least 1"
        );
        assert_eq!(
            err("fail_timeout", "0"),
            "invalid fail_timeout '0': must be greater than zero"
        );
        assert_eq!(
            err("connect_timeout", "8761h"),
            "invalid connect_timeout '8761h': must be at most 8760h (365 days)"
        );
        assert_eq!(
            err("idle_timeout", "5000000000000000h"),
            "invalid idle_timeout '5000000000000000h': must be at most 8760h (365 days)"
        );
        assert_eq!(
            err("max_connections", "99999999999999999999999"),
            "invalid max_connections '99999999999999999999999': must be at most 1048576"
        );
    }
}
