//! The configuration as data: listeners, their routes, and the settings that apply to the whole
//! server. Built by the config-file loader, by the binary from its command line, or in code.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::proxy::Version;

use super::acl::{Pattern, Rule};
use super::addr::HostPort;
use super::health::{CheckKind, HealthCheck, OnDown};
use super::names::NamePattern;
use super::protocol::Protocol;
use super::range::{HostPorts, ListenRange};
use super::settings::{Balance, Settings};

/// Built-in default for `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Built-in default for a UDP route's `idle_timeout` (rinetd's `[timeout=N]`): 72 seconds, as
/// rinetd's. A flow with no datagram either way for this long ends.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(72);

/// Built-in default for a UDP listener's `max_flows`: far above what ordinary use holds at once
/// (a DNS forwarder's clients each hold one flow for `idle_timeout`), and small enough that a
/// flood of source addresses costs a bounded number of sockets and threads.
pub const DEFAULT_MAX_FLOWS: usize = 4096;

/// Built-in default for `client_ipv6_prefix`: a /64 is one client, since one host usually has a
/// whole /64 to pick addresses from.
pub const DEFAULT_CLIENT_IPV6_PREFIX: u8 = 64;

/// Everything tcp-router needs to serve: its listeners and the settings that apply to all of them.
///
/// ```
/// use tcp_router::{Config, Listener, Route};
///
/// let mut config = Config::default();
/// let mut listener = Listener::new("127.0.0.1:11000".parse()?);
/// listener.routes.push(Route::new(vec!["127.0.0.1:6379".parse()?]));
/// config.listeners.push(listener);
/// assert!(config.validate().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// One entry per listen address.
    pub listeners: Vec<Listener>,
    /// Cap on connections served at once across all listeners; `None` derives it from the
    /// open-files and thread limits.
    pub max_connections: Option<usize>,
    /// How long a graceful stop waits for active connections before cutting them.
    pub drain_timeout: Duration,
    /// How long a graceful stop goes on accepting after readiness (`/ready`) turns to 503, so a
    /// load balancer in front stops sending first; zero stops accepting at once.
    pub shutdown_grace: Duration,
    /// Allow/deny rules for every listener, checked before a route's own.
    pub acl: Vec<Rule>,
    /// rinetd's `logfile` (and `logcommon`).
    pub logfile: Option<LogFile>,
    /// Cap on one client's connections across all listeners (a client is an IPv4 address, or an
    /// IPv6 network of `client_ipv6_prefix` bits; after a PROXY header, the client it names);
    /// `None` is three quarters of the connection cap, so no client can take every slot.
    pub max_connections_per_client: Option<usize>,
    /// How many leading bits of an IPv6 address make one client (64: a /64 is one client).
    pub client_ipv6_prefix: u8,
    /// Cap on one listener's connections still sending what routing reads (a PROXY header, a
    /// ClientHello, an HTTP head); `None` is a quarter of the connection cap, so slow or silent
    /// clients of one listener leave slots for the others.
    pub max_peeking: Option<usize>,
    /// rinetd's `pidlogfile`: where the binary writes its process id. The library never writes it.
    pub pid_file: Option<PathBuf>,
    /// The admin endpoint (metrics, readiness, live connections, a status page); off when `None`.
    pub admin: Option<Admin>,
    /// Whether bulk transfers may move socket → pipe → socket with `splice(2)` (Linux, where the
    /// kernel allows it; default true). False copies every byte through a buffer. It applies to
    /// the whole process, from the start of a forwarder that says false on, and a reload does not
    /// turn it back on. The binary sets it false when `TCP_ROUTER_NO_SPLICE` is set.
    pub splice: bool,
}

/// The admin endpoint: where it listens, and who may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admin {
    /// The address to bind (`--admin`, or `admin ADDR PORT` in the file).
    pub listen: HostPort,
    /// Clients allowed to ask (`--admin-allow`, `admin_allow`); everyone when empty. Others get 403.
    pub allow: Vec<Pattern>,
    /// Where it was configured, for messages.
    pub origin: String,
}

impl Admin {
    /// An admin endpoint on `listen`, open to every client that can reach it.
    pub fn new(listen: HostPort) -> Admin {
        Admin {
            listen,
            allow: Vec::new(),
            origin: "code".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: Vec::new(),
            max_connections: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown_grace: Duration::ZERO,
            acl: Vec::new(),
            logfile: None,
            pid_file: None,
            admin: None,
            max_connections_per_client: None,
            client_ipv6_prefix: DEFAULT_CLIENT_IPV6_PREFIX,
            max_peeking: None,
            splice: true,
        }
    }
}

/// rinetd's per-connection log file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogFile {
    /// Where to append.
    pub path: PathBuf,
    /// Common log format (`logcommon`) instead of rinetd's tab-separated fields.
    pub common: bool,
}

impl LogFile {
    /// A log file at `path` in rinetd's tab-separated format.
    pub fn new(path: impl Into<PathBuf>) -> LogFile {
        LogFile {
            path: path.into(),
            common: false,
        }
    }
}

/// What a listener carries: TCP connections (the default) or UDP datagrams. A TCP and a UDP
/// listener on the same address and port are two listeners, independent of each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    /// TCP connections, relayed byte for byte.
    #[default]
    Tcp,
    /// UDP datagrams, relayed one by one in flows (one per client address).
    Udp,
}

impl Transport {
    /// How a listen address marks it when written: nothing for TCP, `/udp` for UDP.
    pub fn suffix(self) -> &'static str {
        match self {
            Transport::Tcp => "",
            Transport::Udp => "/udp",
        }
    }
}

/// One listen address and what to do with its clients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Listener {
    /// The address to bind (port 0: any free port).
    pub listen: HostPort,
    /// TCP (the default) or UDP.
    pub transport: Transport,
    /// UDP only: cap on the flows (client addresses) served at once; when full, the flow idle
    /// longest is evicted for the new client. `None` is [`DEFAULT_MAX_FLOWS`].
    pub max_flows: Option<usize>,
    /// Where clients go: at most one route without a name pattern (the default), any number with.
    pub routes: Vec<Route>,
    /// Read a PROXY protocol header from each client first (a trusted load balancer in front).
    pub accept_proxy: bool,
    /// Who may send that header: a client from anywhere else is refused at accept, before a
    /// byte is read. Empty: anyone (warned at start).
    pub accept_proxy_from: Vec<Pattern>,
    /// Bind with SO_REUSEPORT: several processes may serve this address, the kernel spreading
    /// new connections among them (and a new version can start beside the old one).
    pub reuse_port: bool,
    /// Deadline for reading a ClientHello, HTTP head or PROXY header.
    pub peek_timeout: Duration,
    /// Cap on this listener's connections (clients beyond it wait in its backlog).
    pub max_connections: Option<usize>,
    /// A Unix socket's file: its mode (`socket_mode`).
    pub socket_mode: u32,
    /// A Unix socket's file: its owner, a name or number (`socket_owner`); `None`: the process's.
    pub socket_owner: Option<String>,
    /// A Unix socket's file: its group, a name or number (`socket_group`); `None`: the process's.
    pub socket_group: Option<String>,
    /// Where it was configured, for messages: `command line`, `FILE:LINE`, or `code`.
    pub origin: String,
    /// The range of ports this listener is one of, if it was written as one
    /// ([`Listener::for_range`]); shared by the range's listeners, which share its label.
    pub range: Option<Arc<ListenRange>>,
}

impl Listener {
    /// A listener on `listen` without routes, with the built-in defaults.
    pub fn new(listen: HostPort) -> Listener {
        Listener::with(listen, &Settings::default(), "code".into())
    }

    /// A listener on `listen` without routes, taking its listener-wide settings from `settings`.
    pub fn with(listen: HostPort, settings: &Settings, origin: String) -> Listener {
        Listener {
            listen,
            transport: Transport::Tcp,
            max_flows: None,
            routes: Vec::new(),
            accept_proxy: settings.accept_proxy,
            accept_proxy_from: settings.accept_proxy_from.clone(),
            reuse_port: settings.reuse_port,
            peek_timeout: settings.peek_timeout,
            max_connections: settings.max_connections,
            socket_mode: settings.socket_mode,
            socket_owner: settings.socket_owner.clone(),
            socket_group: settings.socket_group.clone(),
            origin,
            range: None,
        }
    }
}

impl Listener {
    /// The listeners of a range: `self` is the listener as written (its `listen` is ignored),
    /// `listen` the listen range, `members` each route's upstreams then backups as written, one
    /// for each of them (each checked with [`HostPorts::fits`]). Port `first + i` of the range
    /// goes to port `first + i` of each upstream range and to each single port. Without a range,
    /// the one listener on `listen`.
    ///
    /// ```
    /// use tcp_router::config::HostPorts;
    /// use tcp_router::{Listener, Route};
    ///
    /// let mut written = Listener::new("0.0.0.0:0".parse()?);
    /// written.routes.push(Route::new(vec!["10.0.0.1:7000".parse()?]));
    /// let members = vec![vec!["10.0.0.1:7000-7099".parse::<HostPorts>()?]];
    /// let listeners = written.for_range("0.0.0.0:9000-9099".parse()?, members)?;
    /// assert_eq!(listeners.len(), 100);
    /// assert_eq!(listeners[5].listen.to_string(), "0.0.0.0:9005");
    /// assert_eq!(listeners[5].routes[0].upstreams[0].to_string(), "10.0.0.1:7005");
    /// assert_eq!(listeners[5].label(), "0.0.0.0:9000-9099");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_range(
        mut self,
        listen: HostPorts,
        members: Vec<Vec<HostPorts>>,
    ) -> Result<Vec<Listener>, String> {
        let counts = self
            .routes
            .iter()
            .map(|r| r.upstreams.len() + r.backups.len());
        if !counts.eq(members.iter().map(Vec::len)) {
            return Err(format!(
                "the members given for the range {listen} are not one per upstream and backup of each of its routes"
            ));
        }
        for member in members.iter().flatten() {
            member.fits(&listen)?;
        }
        let at = |offset: usize| {
            move |(route, list): (&Route, &Vec<HostPorts>)| {
                let mut route = route.clone();
                let primaries = route.upstreams.len();
                route.upstreams = list[..primaries].iter().map(|m| m.at(offset)).collect();
                route.backups = list[primaries..].iter().map(|m| m.at(offset)).collect();
                route
            }
        };
        if listen.range.is_none() {
            self.listen = listen.first;
            self.routes = self.routes.iter().zip(&members).map(at(0)).collect();
            return Ok(vec![self]);
        }
        let range = Arc::new(ListenRange {
            listen: listen.clone(),
            members: members.clone(),
        });
        Ok((0..listen.len())
            .map(|offset| {
                let mut listener = self.clone();
                listener.listen = listen.at(offset);
                listener.routes = self.routes.iter().zip(&members).map(at(offset)).collect();
                listener.range = Some(Arc::clone(&range));
                listener
            })
            .collect())
    }

    /// How the listener is named in `--check`, the metrics and `/connections`: its range as
    /// written (`0.0.0.0:9000-9099`) if it is one port of a range, else its listen address.
    pub fn label(&self) -> String {
        match &self.range {
            Some(range) => range.listen.to_string(),
            None => self.listen.to_string(),
        }
    }

    /// The listen address as written, with `/udp` for a UDP listener: what tells two listeners
    /// apart, and names one in messages.
    pub fn key(&self) -> String {
        format!("{}{}", self.listen, self.transport.suffix())
    }
}

/// Where a client goes, and how its connection is treated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Route {
    /// The primary upstreams, tried in the order of `balance`, with failover.
    pub upstreams: Vec<HostPort>,
    /// Backup upstreams (`backup=`): tried only when no primary accepted the client.
    pub backups: Vec<HostPort>,
    /// The weight of each upstream then each backup, in order (`*W`, 1 to 256); empty: all 1.
    /// [`Route::weight`] reads it.
    pub weights: Vec<u32>,
    /// The order in which clients try the upstreams (`balance=`).
    pub balance: Balance,
    /// Consecutive failed connects that mark an upstream down (`max_fails=`, at least 1).
    pub max_fails: usize,
    /// How long an upstream marked down is skipped (`fail_timeout=`).
    pub fail_timeout: Duration,
    /// The active check of every member (`check=` and its companions); `None`: passive health
    /// only (`max_fails`, `fail_timeout`).
    pub check: Option<HealthCheck>,
    /// What happens to the connections of a member its checks mark down (`on_down=`).
    pub on_down: OnDown,
    /// How often upstream names are resolved again in the background (`resolve_interval=`).
    pub resolve_interval: Duration,
    /// Time allowed for one upstream's connect attempt.
    pub connect_timeout: Duration,
    /// Close after this long with no bytes moving either way; `None` is off.
    pub idle_timeout: Option<Duration>,
    /// Close a half-closed connection after this long with no bytes moving; `None` is off.
    pub fin_timeout: Option<Duration>,
    /// Local address for upstream connections (rinetd's `src=`).
    pub src: Option<IpAddr>,
    /// Allow/deny rules of this route, checked after the global ones.
    pub acl: Vec<Rule>,
    /// TLS server-name pattern (`sni=`).
    pub sni: Option<NamePattern>,
    /// HTTP Host pattern (`host=`).
    pub host: Option<NamePattern>,
    /// ALPN protocol the client must offer (`alpn=`).
    pub alpn: Option<String>,
    /// The protocol this route takes (`proto=`, `prefix=`); never set with a name pattern.
    pub protocol: Option<Protocol>,
    /// PROXY protocol header to send upstream.
    pub proxy_protocol: Option<Version>,
    /// Cap on one client's connections to this route, besides the process-wide one.
    pub max_connections_per_client: Option<usize>,
    /// Where it was configured, for messages.
    pub origin: String,
}

impl Route {
    /// A default route (no name pattern) to `upstreams`, with the built-in defaults.
    pub fn new(upstreams: Vec<HostPort>) -> Route {
        Route::with(upstreams, &Settings::default(), "code".into())
    }

    /// A default route to `upstreams`, taking its per-route settings from `settings`.
    pub fn with(upstreams: Vec<HostPort>, settings: &Settings, origin: String) -> Route {
        Route {
            upstreams,
            backups: Vec::new(),
            weights: Vec::new(),
            balance: settings.balance,
            max_fails: settings.max_fails,
            fail_timeout: settings.fail_timeout,
            check: health_check(settings),
            on_down: settings.on_down,
            resolve_interval: settings.resolve_interval,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            fin_timeout: settings.fin_timeout,
            src: settings.src,
            acl: Vec::new(),
            sni: None,
            host: None,
            alpn: None,
            protocol: None,
            proxy_protocol: settings.proxy_protocol,
            max_connections_per_client: settings.max_connections_per_client,
            origin,
        }
    }

    /// The weight of upstream `index`, counting the upstreams then the backups: 1 unless
    /// [`Route::weights`] says otherwise.
    ///
    /// ```
    /// use tcp_router::Route;
    ///
    /// let mut route = Route::new(vec!["127.0.0.1:1".parse()?, "127.0.0.1:2".parse()?]);
    /// assert_eq!(route.weight(1), 1);
    /// route.weights = vec![3, 1];
    /// assert_eq!(route.weight(0), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn weight(&self, index: usize) -> u32 {
        self.weights.get(index).copied().unwrap_or(1)
    }

    /// True if this route is chosen by what the client sends first (a name or ALPN pattern, a
    /// protocol or a prefix) rather than being a default.
    pub fn routes_by_name(&self) -> bool {
        self.sni.is_some() || self.host.is_some() || self.alpn.is_some() || self.protocol.is_some()
    }

    /// A short name for logs and `--check`: the pattern that selects it (`sni=*.example.com`,
    /// `host=a.example`, `sni=a.example,alpn=h2`, `proto=ssh`, `prefix=\x05`), or `default`.
    pub fn label(&self) -> String {
        if let Some(protocol) = &self.protocol {
            return protocol.to_string();
        }
        let name = match (&self.sni, &self.host) {
            (Some(p), _) => format!("sni={p}"),
            (None, Some(p)) => format!("host={p}"),
            (None, None) => String::new(),
        };
        match (&self.alpn, name.is_empty()) {
            (Some(a), true) => format!("alpn={a}"),
            (Some(a), false) => format!("{name},alpn={a}"),
            (None, true) => "default".to_string(),
            (None, false) => name,
        }
    }
}

/// The active check `settings` describe, if `check` is given: its kind (an HTTP check with the
/// statuses of `check_status`) with the companions' values.
fn health_check(settings: &Settings) -> Option<HealthCheck> {
    let kind = match settings.check.clone()? {
        CheckKind::Http { path, .. } => CheckKind::Http {
            path,
            status: settings.check_status,
        },
        kind => kind,
    };
    Some(HealthCheck {
        kind,
        port: settings.check_port,
        host: settings.check_host.clone(),
        interval: settings.check_interval,
        timeout: settings.check_timeout,
        rise: settings.rise,
        fall: settings.fall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, StatusRange};

    #[test]
    fn a_route_takes_its_check_from_the_settings() {
        let mut given = Overrides::default();
        for (key, value) in [
            ("check", "http:/primary"),
            ("check_status", "200"),
            ("check_port", "8008"),
            ("rise", "1"),
            ("on_down", "close"),
        ] {
            given.set(key, value).unwrap();
        }
        let settings = Settings::default().merge(&given);
        let route = Route::with(
            vec!["127.0.0.1:5432".parse().unwrap()],
            &settings,
            "code".into(),
        );
        let check = route.check.expect("a check");
        assert_eq!(
            check.kind,
            CheckKind::Http {
                path: "/primary".into(),
                status: StatusRange {
                    low: 200,
                    high: 200
                }
            }
        );
        assert_eq!((check.port, check.rise, check.fall), (Some(8008), 1, 3));
        assert_eq!(check.timeout, None);
        assert_eq!(route.on_down, OnDown::Close);
        assert_eq!(Route::new(Vec::new()).check, None);
    }

    fn hps(text: &str) -> Result<HostPorts, String> {
        HostPorts::parse_with(text, |_| None).map_err(|e| e.reason)
    }

    #[test]
    fn a_range_becomes_one_listener_per_port_each_with_its_upstream_port() {
        let mut written = Listener::new("0.0.0.0:0".parse().unwrap());
        let mut route = Route::new(vec!["10.0.0.1:1".parse().unwrap()]);
        route.backups = vec!["10.0.0.2:1".parse().unwrap()];
        written.routes.push(route);
        let members = vec![vec![
            hps("10.0.0.1:7000-7002").unwrap(),
            hps("10.0.0.2:8080").unwrap(),
        ]];
        let listeners = written
            .for_range(hps("[::1]:9000-9002").unwrap(), members)
            .unwrap();
        let shown: Vec<String> = listeners
            .iter()
            .map(|l| {
                let r = &l.routes[0];
                format!(
                    "{} {} {} {}",
                    l.label(),
                    l.listen,
                    r.upstreams[0],
                    r.backups[0]
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "[::1]:9000-9002 [::1]:9000 10.0.0.1:7000 10.0.0.2:8080",
                "[::1]:9000-9002 [::1]:9001 10.0.0.1:7001 10.0.0.2:8080",
                "[::1]:9000-9002 [::1]:9002 10.0.0.1:7002 10.0.0.2:8080",
            ]
        );
        assert!(Arc::ptr_eq(
            listeners[0].range.as_ref().unwrap(),
            listeners[2].range.as_ref().unwrap()
        ));
    }

    #[test]
    fn one_port_is_one_listener_without_a_range() {
        let mut written = Listener::new("0.0.0.0:0".parse().unwrap());
        written
            .routes
            .push(Route::new(vec!["10.0.0.1:1".parse().unwrap()]));
        let listeners = written
            .for_range(
                hps("127.0.0.1:80").unwrap(),
                vec![vec![hps("10.0.0.1:81").unwrap()]],
            )
            .unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].label(), "127.0.0.1:80");
        assert!(listeners[0].range.is_none());
        assert_eq!(
            listeners[0].routes[0].upstreams[0].to_string(),
            "10.0.0.1:81"
        );
    }

    #[test]
    fn weights_default_to_one() {
        let mut route = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        assert_eq!(route.weight(0), 1);
        assert_eq!(route.weight(5), 1);
        route.weights = vec![256];
        assert_eq!(route.weight(0), 256);
    }
}
