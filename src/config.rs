//! The validated configuration: listeners, their routes and the process-wide limits, built from the command line.

use std::net::IpAddr;
use std::time::Duration;

use crate::addr::HostPort;
use crate::cli::{self, Args};
use crate::error::Error;

/// Everything tcp-router needs to serve; built from the command line (and later a config file).
#[derive(Debug, Clone)]
pub struct Config {
    /// One entry per listen address.
    pub listeners: Vec<ListenerConfig>,
    /// Cap on connections served at once across all listeners; `None` derives it from the process limits.
    pub max_connections: Option<usize>,
    /// How long a graceful stop waits for active connections before cutting them.
    pub drain_timeout: Duration,
}

/// One listen address and what to do with its clients.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The address to bind.
    pub listen: HostPort,
    /// Where clients go; the first route is the default.
    pub routes: Vec<Route>,
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
}

impl Config {
    /// Builds the configuration from the command line alone.
    pub fn from_args(args: &Args) -> Result<Config, Error> {
        let (listen, upstreams) =
            cli::listen_and_upstreams(args).map_err(|e| Error::Config(vec![e]))?;
        let route = Route {
            upstreams,
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
            fin_timeout: args.fin_timeout,
            src: None,
        };
        if args.max_connections == Some(0) {
            return Err(Error::Config(vec![
                "invalid --max-connections '0': must be at least 1".to_string(),
            ]));
        }
        Ok(Config {
            listeners: vec![ListenerConfig {
                listen,
                routes: vec![route],
            }],
            max_connections: args.max_connections,
            drain_timeout: args.drain_timeout,
        })
    }
}

impl Route {
    /// A route to `upstreams` with the default timeouts (5s connect, no idle limit, 5m fin limit).
    pub fn new(upstreams: Vec<HostPort>) -> Route {
        Route {
            upstreams,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: None,
            fin_timeout: Some(Duration::from_secs(300)),
            src: None,
        }
    }
}
