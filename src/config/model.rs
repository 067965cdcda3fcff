//! The validated configuration: listeners, their routes and the process-wide settings, built from
//! the command line and the config file with the precedence route key > command line > default.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::acl::{self, Action};
use crate::addr::HostPort;
use crate::cli::{self, Args, NameRouteArg};
use crate::config_file::{self, RuleDef};
use crate::error::Error;
use crate::names::NamePattern;
use crate::proxy_protocol::Version;
use crate::route::NameRouter;

/// Built-in default for `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Built-in default for `fin_timeout`: longer than common servers' response timeouts, so a slow
/// answer to a half-closed request is not cut, yet dead half-closed connections are reaped.
pub const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Built-in default for `peek_timeout`.
pub const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything tcp-router needs to serve.
#[derive(Debug, Clone)]
pub struct Config {
    /// One entry per listen address.
    pub listeners: Vec<ListenerConfig>,
    /// Cap on connections served at once across all listeners; `None` derives it from the limits.
    pub max_connections: Option<usize>,
    /// How long a graceful stop waits for active connections before cutting them.
    pub drain_timeout: Duration,
    /// Allow/deny rules for every listener (the file's global rules, then `--allow`/`--deny`).
    pub global_acl: Vec<acl::Rule>,
    /// rinetd's `logfile` (and `logcommon`).
    pub logfile: Option<LogFile>,
    /// Where to write the process id (`pidlogfile` or `--pid-file`).
    pub pid_file: Option<PathBuf>,
    /// The config file, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// The threads' scheduling policy.
    pub scheduler: crate::sched::Scheduler,
}

/// rinetd's per-connection log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// Where to append.
    pub path: PathBuf,
    /// Common log format (`logcommon`) instead of rinetd's tab-separated fields.
    pub common: bool,
}

/// One listen address and what to do with its clients.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The address to bind.
    pub listen: HostPort,
    /// Where clients go: at most one route without a name pattern (the default), any number with.
    pub routes: Vec<Route>,
    /// Read a PROXY protocol header from each client first (a trusted load balancer in front).
    pub accept_proxy: bool,
    /// Deadline for reading a ClientHello, HTTP head or PROXY header.
    pub peek_timeout: Duration,
    /// Cap on this listener's connections (clients beyond it wait in its backlog).
    pub max_connections: Option<usize>,
    /// Where it was configured, for messages: `command line` or `FILE:LINE`.
    pub origin: String,
}

/// Where a client goes, and how the connection is treated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upstreams tried round-robin, with failover.
    pub upstreams: Vec<HostPort>,
    /// Time allowed for one upstream's connect attempt.
    pub connect_timeout: Duration,
    /// Close after this long with no bytes moving either way; `None` is off.
    pub idle_timeout: Option<Duration>,
    /// Close a half-closed connection after this long with no bytes moving; `None` is off.
    pub fin_timeout: Option<Duration>,
    /// Local address for upstream connections (rinetd's `src=`).
    pub src: Option<IpAddr>,
    /// Allow/deny rules of this route, checked after the global ones.
    pub acl: Vec<acl::Rule>,
    /// TLS server-name pattern (`sni=`).
    pub sni: Option<NamePattern>,
    /// HTTP Host pattern (`host=`).
    pub host: Option<NamePattern>,
    /// ALPN protocol the client must offer (`alpn=`).
    pub alpn: Option<String>,
    /// PROXY protocol header to send upstream.
    pub proxy_protocol: Option<Version>,
    /// Where it was configured, for messages.
    pub origin: String,
}

/// Settings from the command line that routes and listeners inherit unless they set their own.
#[derive(Debug, Clone)]
struct Defaults {
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    fin_timeout: Option<Duration>,
    peek_timeout: Duration,
    proxy_protocol: Option<Version>,
    accept_proxy: bool,
}

impl Defaults {
    fn from_args(args: &Args) -> Defaults {
        Defaults {
            connect_timeout: args.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: args.idle_timeout.unwrap_or(None),
            fin_timeout: args.fin_timeout.unwrap_or(Some(DEFAULT_FIN_TIMEOUT)),
            peek_timeout: args.peek_timeout.unwrap_or(DEFAULT_PEEK_TIMEOUT),
            proxy_protocol: args.proxy_protocol,
            accept_proxy: args.accept_proxy,
        }
    }

    fn route(&self, upstreams: Vec<HostPort>, origin: String) -> Route {
        Route {
            upstreams,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            fin_timeout: self.fin_timeout,
            src: None,
            acl: Vec::new(),
            sni: None,
            host: None,
            alpn: None,
            proxy_protocol: self.proxy_protocol,
            origin,
        }
    }
}

impl Config {
    /// Builds and validates the configuration from the command line and, if given, the config
    /// file. Every problem found is reported, each on its own line.
    pub fn load(args: &Args) -> Result<Config, Error> {
        let defaults = Defaults::from_args(args);
        let mut errors = Vec::new();
        let mut listeners = Vec::new();
        match cli_listener(args, &defaults) {
            Ok(Some(listener)) => listeners.push(listener),
            Ok(None) => {}
            Err(err) => errors.push(err),
        }
        let mut config = Config {
            listeners: Vec::new(),
            max_connections: args.max_connections,
            drain_timeout: args.drain_timeout,
            global_acl: Vec::new(),
            logfile: None,
            pid_file: args.pid_file.clone(),
            config_file: args.config.clone(),
            scheduler: args.scheduler,
        };
        if let Some(path) = &args.config {
            match read_file(path, &defaults) {
                Ok(file) => {
                    listeners.extend(file.listeners);
                    config.global_acl = file.global_acl;
                    config.logfile = file.logfile;
                    if config.pid_file.is_none() {
                        config.pid_file = file.pid_file;
                    }
                }
                Err(mut file_errors) => errors.append(&mut file_errors),
            }
        }
        config.global_acl.extend(cli_acl(args));
        if args.max_connections == Some(0) {
            errors.push("invalid --max-connections '0': must be at least 1".to_string());
        }
        errors.extend(duplicate_listeners(&listeners));
        for listener in &listeners {
            if let Err(err) = NameRouter::build(listener) {
                errors.push(err);
            }
        }
        if !errors.is_empty() {
            return Err(Error::Config(errors));
        }
        config.listeners = listeners;
        Ok(config)
    }
}

impl Route {
    /// A route to `upstreams` with the built-in defaults (as a command line without options gives).
    pub fn new(upstreams: Vec<HostPort>) -> Route {
        Defaults {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: None,
            fin_timeout: Some(DEFAULT_FIN_TIMEOUT),
            peek_timeout: DEFAULT_PEEK_TIMEOUT,
            proxy_protocol: None,
            accept_proxy: false,
        }
        .route(upstreams, "command line".into())
    }

    /// True if this route is chosen by a name or ALPN pattern rather than being a default.
    pub fn routes_by_name(&self) -> bool {
        self.sni.is_some() || self.host.is_some() || self.alpn.is_some()
    }
}

impl ListenerConfig {
    /// A listener on `listen` with one default route (as a command line without options gives).
    pub fn new(listen: HostPort, route: Route) -> ListenerConfig {
        ListenerConfig {
            listen,
            routes: vec![route],
            accept_proxy: false,
            peek_timeout: DEFAULT_PEEK_TIMEOUT,
            max_connections: None,
            origin: "command line".into(),
        }
    }
}

/// The listener given by the positional arguments and `--sni`/`--host`, if any.
fn cli_listener(args: &Args, defaults: &Defaults) -> Result<Option<ListenerConfig>, String> {
    let Some((listen, upstreams)) = cli::listen_and_upstreams(args)? else {
        return Ok(None);
    };
    let mut routes = Vec::new();
    if !upstreams.is_empty() {
        routes.push(defaults.route(upstreams, "command line".into()));
    }
    for (flag, list) in [("--sni", &args.sni), ("--host", &args.host)] {
        for NameRouteArg { pattern, upstreams } in list {
            let parsed: NamePattern = pattern
                .parse()
                .map_err(|e| format!("invalid {flag} pattern: {e}"))?;
            let mut route = defaults.route(upstreams.clone(), format!("{flag} {pattern}"));
            if flag == "--sni" {
                route.sni = Some(parsed);
            } else {
                route.host = Some(parsed);
            }
            routes.push(route);
        }
    }
    Ok(Some(ListenerConfig {
        listen,
        routes,
        accept_proxy: defaults.accept_proxy,
        peek_timeout: defaults.peek_timeout,
        max_connections: None,
        origin: "command line".into(),
    }))
}

fn cli_acl(args: &Args) -> Vec<acl::Rule> {
    let allow = args.allow.iter().map(|p| (Action::Allow, p));
    let deny = args.deny.iter().map(|p| (Action::Deny, p));
    allow
        .chain(deny)
        .map(|(action, pattern)| acl::Rule {
            action,
            pattern: pattern.clone(),
        })
        .collect()
}

/// What a config file contributes.
struct FromFile {
    listeners: Vec<ListenerConfig>,
    global_acl: Vec<acl::Rule>,
    logfile: Option<LogFile>,
    pid_file: Option<PathBuf>,
}

fn read_file(path: &Path, defaults: &Defaults) -> Result<FromFile, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read config file '{}': {e}", path.display())])?;
    let file = config_file::parse(path, &text)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let mut errors = Vec::new();
    // Rules sharing a listen address become one listener, in the order of first appearance.
    let mut by_listen: BTreeMap<String, usize> = BTreeMap::new();
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for rule in &file.rules {
        let origin = format!("{}:{}", path.display(), rule.line);
        let key = rule.listen.to_string();
        let index = *by_listen.entry(key).or_insert_with(|| {
            listeners.push(listener_from_rule(rule, defaults, &origin));
            listeners.len() - 1
        });
        let listener = &mut listeners[index];
        if let Err(err) = merge_listener_keys(listener, rule, &origin) {
            errors.push(err);
        }
        listener
            .routes
            .push(route_from_rule(rule, defaults, origin));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(FromFile {
        listeners,
        global_acl: file.global_acl,
        logfile: file.logfile.map(|path| LogFile {
            path,
            common: file.logcommon,
        }),
        pid_file: file.pidlogfile,
    })
}

fn listener_from_rule(rule: &RuleDef, defaults: &Defaults, origin: &str) -> ListenerConfig {
    ListenerConfig {
        listen: rule.listen.clone(),
        routes: Vec::new(),
        accept_proxy: rule.options.accept_proxy.unwrap_or(defaults.accept_proxy),
        peek_timeout: rule.options.peek_timeout.unwrap_or(defaults.peek_timeout),
        max_connections: rule.options.max_connections,
        origin: origin.to_string(),
    }
}

/// Listener-wide keys given on several routes of one listener must agree.
fn merge_listener_keys(
    listener: &mut ListenerConfig,
    rule: &RuleDef,
    origin: &str,
) -> Result<(), String> {
    if let Some(max) = rule.options.max_connections {
        match listener.max_connections {
            Some(existing) if existing != max => {
                return Err(format!(
                    "{origin}: max_connections={max} differs from max_connections={existing} given for {} at {}; \
                     it caps the whole listener, so routes sharing it must agree",
                    listener.listen, listener.origin
                ))
            }
            _ => listener.max_connections = Some(max),
        }
    }
    Ok(())
}

fn route_from_rule(rule: &RuleDef, defaults: &Defaults, origin: String) -> Route {
    let o = &rule.options;
    Route {
        upstreams: rule.upstreams.clone(),
        connect_timeout: o.connect_timeout.unwrap_or(defaults.connect_timeout),
        idle_timeout: o.idle_timeout.unwrap_or(defaults.idle_timeout),
        fin_timeout: o.fin_timeout.unwrap_or(defaults.fin_timeout),
        src: o.src,
        acl: rule.acl.clone(),
        sni: o.sni.clone(),
        host: o.host.clone(),
        alpn: o.alpn.clone(),
        proxy_protocol: o.proxy_protocol.or(defaults.proxy_protocol),
        origin,
    }
}

/// Two listeners on the same address (for example the command line's and a file's).
fn duplicate_listeners(listeners: &[ListenerConfig]) -> Vec<String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut errors = Vec::new();
    for listener in listeners {
        let key = listener.listen.to_string();
        if let Some(first) = seen.insert(key.clone(), &listener.origin) {
            errors.push(format!(
                "{}: listen address {key} is already used at {first}",
                listener.origin
            ));
        }
    }
    errors
}
