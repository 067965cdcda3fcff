//! Routes at run time: a configured route plus the state it keeps (round-robin cursor, upstream
//! health), shared by every connection that takes it.

use crate::config;
use crate::relay::Timeouts;
use crate::upstream::{ConnectOptions, Upstreams};

/// A route ready to serve.
#[derive(Debug)]
pub struct RouteState {
    /// The route as configured.
    pub config: config::Route,
    /// Its upstreams and their health.
    pub upstreams: Upstreams,
}

impl RouteState {
    /// Builds the run-time state of a configured route.
    pub fn new(config: config::Route) -> RouteState {
        RouteState {
            upstreams: Upstreams::new(&config.upstreams),
            config,
        }
    }

    /// Connect options for this route's upstreams.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            timeout: self.config.connect_timeout,
            src: self.config.src,
        }
    }

    /// Idle limits for this route's connections.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            idle: self.config.idle_timeout,
            fin: self.config.fin_timeout,
        }
    }

    /// The upstreams as one readable list, for logs.
    pub fn describe_upstreams(&self) -> String {
        let names: Vec<String> = self.upstreams.addrs().map(|a| a.to_string()).collect();
        names.join(", ")
    }
}
