//! The embeddable API: a [`Forwarder`] bound to its listen addresses, built from two addresses, a
//! [`Builder`], an already-bound `TcpListener`, or a whole [`Config`]; served on the calling
//! thread or on its own, and stopped through a [`Handle`].
//!
//! Nothing here touches process-wide state: no signal handlers, no scheduling policy, no
//! resource limits, no pid file, no `process::exit`. Those are the binary's (see
//! [`crate::process`] for the opt-in calls it makes).
//!
//! Also here, the two public parsers that need the system, since the configuration itself does
//! no I/O: [`Config::from_file`] reads the file, and `HostPort`'s `FromStr` looks a port given by
//! name up in /etc/services.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use socket2::Socket;
use std::path::Path;
use std::str::FromStr;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::admin;
use crate::config::{
    Action, AddrError, Config, HostPort, HostPorts, Listener, NamePattern, Pattern, Route, Rule,
    Settings, MAX_CONFIG_FILE_SIZE,
};
use crate::error::Error;
use crate::proto::proxy::Version;
use crate::serve::{DrainReport, Handle, Server};
use crate::sys::{file, services};
use crate::upgrade::Channel;
use crate::upgrade::TakenOver;

/// What `config` sets for the whole process, as a forwarder starts: splice off, if it says so
/// (for good: the relay's switch is process-wide, as a kernel's refusal of splice is).
fn apply_process_wide(config: &Config) {
    if !config.splice {
        #[cfg(target_os = "linux")]
        crate::relay::splice::turn_off();
    }
}

/// Something that names a `host:port`: a string such as `"127.0.0.1:6379"`, `"[::1]:80"` or
/// `"db.internal:5432"`, a [`SocketAddr`], or a [`HostPort`].
pub trait Address {
    /// The address, or why the text is not one.
    fn to_host_port(&self) -> Result<HostPort, String>;
}

impl Address for str {
    fn to_host_port(&self) -> Result<HostPort, String> {
        self.parse::<HostPort>().map_err(|e| e.to_string())
    }
}

impl Address for String {
    fn to_host_port(&self) -> Result<HostPort, String> {
        self.as_str().to_host_port()
    }
}

impl Address for SocketAddr {
    fn to_host_port(&self) -> Result<HostPort, String> {
        Ok(HostPort::from(*self))
    }
}

impl Address for HostPort {
    fn to_host_port(&self) -> Result<HostPort, String> {
        Ok(self.clone())
    }
}

impl<T: Address + ?Sized> Address for &T {
    fn to_host_port(&self) -> Result<HostPort, String> {
        (**self).to_host_port()
    }
}

/// A TCP forwarder with its listeners bound: clients may connect from the moment it exists (the
/// kernel queues them), and are served once [`serve`](Forwarder::serve) or
/// [`spawn`](Forwarder::spawn) runs it.
///
/// The tutorial's forward, 127.0.0.1:11000 to a Redis server on 127.0.0.1:6379, blocking until
/// stopped:
///
/// ```no_run
/// use tcp_router::Forwarder;
///
/// Forwarder::new("127.0.0.1:11000", "127.0.0.1:6379")?.serve()?;
/// # Ok::<(), tcp_router::Error>(())
/// ```
///
/// On its own thread, stopped by the program when it chooses:
///
/// ```
/// use std::time::Duration;
/// use tcp_router::Forwarder;
///
/// let forwarder = Forwarder::builder("127.0.0.1:0")
///     .upstream("127.0.0.1:6379")
///     .connect_timeout(Duration::from_secs(2))
///     .bind()?;
/// println!("forwarding {} to 127.0.0.1:6379", forwarder.local_addr());
/// let running = forwarder.spawn()?;
/// let report = running.stop_within(Duration::from_secs(5))?;
/// assert_eq!(report.cut, 0);
/// # Ok::<(), tcp_router::Error>(())
/// ```
#[derive(Debug)]
pub struct Forwarder {
    server: Server,
    admin_addr: Option<SocketAddr>,
}

impl Forwarder {
    /// Binds `listen` and forwards every client to `upstream`, with the default settings.
    pub fn new(listen: impl Address, upstream: impl Address) -> Result<Forwarder, Error> {
        Forwarder::builder(listen).upstream(upstream).bind()
    }

    /// Starts a [`Builder`] for a forwarder listening on `listen` (port 0: any free port).
    pub fn builder(listen: impl Address) -> Builder {
        let mut builder = Builder::empty();
        match listen.to_host_port() {
            Ok(listen) => builder.listen = Some(listen),
            Err(e) => builder.errors.push(format!("listen address: {e}")),
        }
        builder
    }

    /// Starts a [`Builder`] for a forwarder that accepts on `listener`, already bound (and
    /// listening) by the caller.
    pub fn from_listener(listener: TcpListener) -> Builder {
        let mut builder = Builder::empty();
        match listener.local_addr() {
            Ok(addr) => {
                builder.listen = Some(HostPort::from(addr));
                builder.socket = Some(listener);
            }
            Err(e) => builder
                .errors
                .push(format!("cannot read the given listener's address: {e}")),
        }
        builder
    }

    /// Validates `config` and binds every listener in it.
    ///
    /// ```
    /// use tcp_router::{Config, Forwarder, Listener, Route};
    ///
    /// let mut listener = Listener::new("127.0.0.1:0".parse()?);
    /// listener.routes.push(Route::new(vec!["127.0.0.1:6379".parse()?]));
    /// let mut config = Config::default();
    /// config.listeners.push(listener);
    /// let forwarder = Forwarder::from_config(&config)?;
    /// assert_eq!(forwarder.local_addrs().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_config(config: &Config) -> Result<Forwarder, Error> {
        Forwarder::from_config_with::<TcpListener>(config, Vec::new())
    }

    /// Like [`Forwarder::from_config`], taking `sockets[i]` (when `Some`: handed in by a
    /// service manager, or already bound by the caller) for listener `i` instead of binding its
    /// address: a listening TCP socket (a `TcpListener`), or a Unix stream one (a
    /// `UnixListener`) for a `unix:` listener.
    pub fn from_config_with<S: Into<OwnedFd>>(
        config: &Config,
        sockets: Vec<Option<S>>,
    ) -> Result<Forwarder, Error> {
        config.validate()?;
        apply_process_wide(config);
        let sockets = (sockets.into_iter())
            .map(|s| s.map(|s| Socket::from(s.into())))
            .collect();
        let mut server = Server::bind(config, sockets)?;
        let endpoint = admin::AdminEndpoint::start_with(config, server.shared(), None)?;
        let admin_addr = endpoint.local_addr();
        server.follow(Box::new(endpoint));
        Ok(Forwarder { server, admin_addr })
    }

    /// The live upgrade's new side: takes every listener and established connection from the
    /// old process at the other end of `channel` (see [`Handle::hand_off`]), binds the
    /// listeners of `config` it did not offer, and starts the connections at once. Accepting
    /// begins with [`Forwarder::serve`]. On `Err` the old process keeps serving everything.
    pub fn take_over(config: &Config, channel: Channel) -> Result<(Forwarder, TakenOver), Error> {
        config.validate()?;
        apply_process_wide(config);
        let (mut server, taken, admin_socket) = Server::take_over(config, channel)?;
        let endpoint = admin::AdminEndpoint::start_with(config, server.shared(), admin_socket)?;
        let admin_addr = endpoint.local_addr();
        server.follow(Box::new(endpoint));
        Ok((Forwarder { server, admin_addr }, taken))
    }

    /// The address of the first listener, as bound (with the real port when given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Every TCP listener's address, in configuration order (a Unix socket listener is at its
    /// path, and not listed here).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server.local_addrs()
    }

    /// Every UDP listener's address as bound, in configuration order (a UDP listener is one
    /// whose [`Listener::transport`](crate::Listener::transport) is UDP; [`Forwarder::local_addrs`]
    /// lists the TCP ones).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.server.udp_addrs()
    }

    /// The admin endpoint's address as bound, if the configuration has one (as it was at start).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The cap on connections served at once: as configured, or derived from the process's
    /// open-files and thread limits.
    pub fn max_connections(&self) -> usize {
        self.server.max_connections()
    }

    /// A handle to stop or reconfigure the forwarder from another thread.
    pub fn handle(&self) -> Handle {
        self.server.handle()
    }

    /// Serves on the calling thread until a [`Handle`] stops it, then drains: active
    /// connections get the drain timeout to finish, the rest are cut.
    pub fn serve(self) -> Result<DrainReport, Error> {
        self.server.run()
    }

    /// Serves on a thread of its own; the [`Running`] forwarder stops it and reports.
    pub fn spawn(self) -> Result<Running, Error> {
        let handle = self.handle();
        let thread = thread::Builder::new()
            .name("tcp-router".into())
            .spawn(move || self.serve())
            .map_err(|source| Error::Setup {
                what: "start the forwarder's thread",
                source,
            })?;
        Ok(Running { handle, thread })
    }
}

/// A forwarder serving on its own thread (from [`Forwarder::spawn`]).
#[derive(Debug)]
pub struct Running {
    handle: Handle,
    thread: JoinHandle<Result<DrainReport, Error>>,
}

impl Running {
    /// A handle to the forwarder, for other threads.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the forwarder gracefully with the configured drain timeout and waits for it.
    pub fn stop(self) -> Result<DrainReport, Error> {
        self.handle.stop();
        self.join()
    }

    /// Stops the forwarder, giving active connections `drain` to finish, and waits for it.
    pub fn stop_within(self, drain: Duration) -> Result<DrainReport, Error> {
        self.handle.stop_within(drain);
        self.join()
    }

    /// Waits until the forwarder stops (through a [`Handle`]) and returns its drain report.
    pub fn join(self) -> Result<DrainReport, Error> {
        self.thread.join().unwrap_or_else(|_| {
            Err(Error::Setup {
                what: "finish serving (the forwarder's thread panicked)",
                source: std::io::Error::other("panic"),
            })
        })
    }
}

/// Options for a one-listener [`Forwarder`]; every method takes and returns the builder, and
/// [`bind`](Builder::bind) reports every invalid value at once.
///
/// An SNI router: TLS clients for `a.example.com` go to one backend, any other name under
/// `example.org` to another, everything else (other names, clients without SNI, plain TCP) to a
/// default; nothing is decrypted.
///
/// ```
/// use std::time::Duration;
/// use tcp_router::Forwarder;
///
/// let forwarder = Forwarder::builder("127.0.0.1:0")
///     .sni_route("a.example.com", ["127.0.0.1:8443"])
///     .sni_route("*.example.org", ["127.0.0.1:9443", "127.0.0.1:9444"])
///     .upstream("127.0.0.1:10443")
///     .peek_timeout(Duration::from_secs(3))
///     .allow("127.0.0.0/8")
///     .bind()?;
/// # drop(forwarder);
/// # Ok::<(), tcp_router::Error>(())
/// ```
#[derive(Debug)]
pub struct Builder {
    listen: Option<HostPort>,
    socket: Option<TcpListener>,
    settings: Settings,
    upstreams: Vec<HostPort>,
    /// Name routes: `(sni?, pattern, upstreams)`.
    named: Vec<(bool, NamePattern, Vec<HostPort>)>,
    config: Config,
    errors: Vec<String>,
}

impl Builder {
    fn empty() -> Builder {
        Builder {
            listen: None,
            socket: None,
            settings: Settings::default(),
            upstreams: Vec::new(),
            named: Vec::new(),
            config: Config::default(),
            errors: Vec::new(),
        }
    }

    /// Adds an upstream of the default route (the route of clients no name route takes). Several
    /// are tried round-robin, failing over to the next when one does not answer.
    pub fn upstream(mut self, upstream: impl Address) -> Builder {
        match upstream.to_host_port() {
            Ok(upstream) => self.upstreams.push(upstream),
            Err(e) => self.errors.push(format!("upstream: {e}")),
        }
        self
    }

    /// Routes TLS clients whose server name (SNI) matches `pattern` (`a.example.com`,
    /// `*.example.com`) to `upstreams`.
    pub fn sni_route<A: Address>(
        self,
        pattern: &str,
        upstreams: impl IntoIterator<Item = A>,
    ) -> Builder {
        self.named_route(true, pattern, upstreams)
    }

    /// Routes plain HTTP/1.x clients whose Host header matches `pattern` to `upstreams`.
    pub fn host_route<A: Address>(
        self,
        pattern: &str,
        upstreams: impl IntoIterator<Item = A>,
    ) -> Builder {
        self.named_route(false, pattern, upstreams)
    }

    fn named_route<A: Address>(
        mut self,
        sni: bool,
        pattern: &str,
        upstreams: impl IntoIterator<Item = A>,
    ) -> Builder {
        let mut list = Vec::new();
        for upstream in upstreams {
            match upstream.to_host_port() {
                Ok(upstream) => list.push(upstream),
                Err(e) => self.errors.push(format!("upstream of {pattern}: {e}")),
            }
        }
        match pattern.parse::<NamePattern>() {
            Ok(pattern) => self.named.push((sni, pattern, list)),
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Time allowed for each upstream's connect before the next is tried (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Builder {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Closes a connection after this long with no bytes moving either way (default: never;
    /// `None` or zero: never, as `off` and `0` say in a config file).
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Builder {
        self.settings.idle_timeout = timeout.into().filter(|d| !d.is_zero());
        self
    }

    /// Closes a half-closed connection after this long with no bytes moving (default 5 min;
    /// `None` or zero: never).
    pub fn fin_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Builder {
        self.settings.fin_timeout = timeout.into().filter(|d| !d.is_zero());
        self
    }

    /// How long a client may take to send what name routing reads (default 5 s).
    pub fn peek_timeout(mut self, timeout: Duration) -> Builder {
        self.settings.peek_timeout = timeout;
        self
    }

    /// Most connections served at once; more wait in the kernel's backlog (default: derived from
    /// the open-files and thread limits).
    pub fn max_connections(mut self, max: usize) -> Builder {
        self.config.max_connections = Some(max);
        self
    }

    /// How long a graceful stop lets active connections finish (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Builder {
        self.config.drain_timeout = timeout;
        self
    }

    /// Whether bulk transfers may move through `splice(2)` (default true, where the kernel
    /// allows it); false copies every byte through a buffer, for the whole process (see
    /// [`Config::splice`]).
    pub fn splice(mut self, splice: bool) -> Builder {
        self.config.splice = splice;
        self
    }

    /// Serves the admin endpoint (metrics, readiness, live connections, a status page) on
    /// `listen`; bind it to a loopback address unless others must reach it.
    pub fn admin(mut self, listen: impl Address) -> Builder {
        match listen.to_host_port() {
            Ok(listen) => self.config.admin = Some(crate::config::Admin::new(listen)),
            Err(e) => self.errors.push(format!("admin address: {e}")),
        }
        self
    }

    /// Sends a PROXY protocol header of `version` to upstreams, so they see the client's address.
    pub fn proxy_protocol(mut self, version: Version) -> Builder {
        self.settings.proxy_protocol = Some(version);
        self
    }

    /// Expects a PROXY protocol header from each client (a trusted load balancer in front), and
    /// refuses clients without one.
    pub fn accept_proxy(mut self, accept: bool) -> Builder {
        self.settings.accept_proxy = accept;
        self
    }

    /// Lets in clients matching `pattern` (a CIDR block or a rinetd wildcard); once there is an
    /// allow rule, clients matching none are refused.
    pub fn allow(self, pattern: &str) -> Builder {
        self.rule(Action::Allow, pattern)
    }

    /// Refuses clients matching `pattern` (a CIDR block or a rinetd wildcard).
    pub fn deny(self, pattern: &str) -> Builder {
        self.rule(Action::Deny, pattern)
    }

    fn rule(mut self, action: Action, pattern: &str) -> Builder {
        match pattern.parse::<Pattern>() {
            Ok(pattern) => self.config.acl.push(Rule { action, pattern }),
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// The configuration these options make (one listener), for inspection or to extend.
    pub fn into_config(self) -> Result<Config, Error> {
        self.split().map(|(config, _)| config)
    }

    /// Validates the options and binds the listener (or takes the given one).
    pub fn bind(self) -> Result<Forwarder, Error> {
        let (config, socket) = self.split()?;
        Forwarder::from_config_with(&config, vec![socket])
    }

    fn split(mut self) -> Result<(Config, Option<TcpListener>), Error> {
        if self.upstreams.is_empty() && self.named.is_empty() {
            self.errors
                .push("no upstream: add one with upstream(), sni_route() or host_route()".into());
        }
        let Some(listen) = self.listen.take() else {
            return Err(Error::Config(self.errors));
        };
        if !self.errors.is_empty() {
            return Err(Error::Config(self.errors));
        }
        let mut listener = Listener::with(listen, &self.settings, "code".into());
        let route =
            |upstreams: Vec<HostPort>| Route::with(upstreams, &self.settings, "code".into());
        for (sni, pattern, upstreams) in self.named {
            let mut named = route(upstreams);
            named.origin = format!("{} {pattern}", if sni { "sni_route" } else { "host_route" });
            if sni {
                named.sni = Some(pattern);
            } else {
                named.host = Some(pattern);
            }
            listener.routes.push(named);
        }
        if !self.upstreams.is_empty() {
            listener.routes.push(route(self.upstreams));
        }
        self.config.listeners.push(listener);
        Ok((self.config, self.socket))
    }
}

impl FromStr for HostPort {
    type Err = AddrError;

    /// Reads `host:port`; an IPv6 host must be in brackets (`[::1]:80`); a port may be a TCP
    /// service name from /etc/services (`app1:http`).
    fn from_str(text: &str) -> Result<HostPort, AddrError> {
        HostPort::parse_with(text, services::tcp_port)
    }
}

impl FromStr for HostPorts {
    type Err = AddrError;

    /// Reads `host:port` as [`HostPort`] does, or a range `host:first-last` (`0.0.0.0:9000-9099`).
    fn from_str(text: &str) -> Result<HostPorts, AddrError> {
        HostPorts::parse_with(text, services::tcp_port)
    }
}

impl Config {
    /// Reads and parses the config file at `path`; settings a route does not give come from
    /// `defaults`. Every problem found is one line of the error, `FILE:LINE: message`. The result
    /// is not validated as a whole yet: the caller may add to it first, then call
    /// [`Config::validate`].
    pub fn from_file(path: &Path, defaults: &Settings) -> Result<Config, Vec<String>> {
        let text = file::read_text(path, MAX_CONFIG_FILE_SIZE).map_err(|why| {
            vec![format!(
                "cannot read config file '{}': {why}",
                path.display()
            )]
        })?;
        Config::from_text(path, &text, defaults, services::tcp_port)
    }
}
