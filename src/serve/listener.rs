//! Routes at run time: each listener's routes with their state (round-robin cursor, upstream
//! health), and the name router that picks one by TLS server name, HTTP Host or ALPN.

use std::sync::Arc;

use crate::acl;
use crate::config::{self, ListenerConfig};
use crate::conn_log::LogSink;
use crate::names::{MatchKind, NameTable};
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

    /// A short name for logs: the pattern that selects it, or `default`.
    pub fn label(&self) -> String {
        let c = &self.config;
        let name = match (&c.sni, &c.host) {
            (Some(p), _) => format!("sni={p}"),
            (None, Some(p)) => format!("host={p}"),
            (None, None) => String::new(),
        };
        match (&c.alpn, name.is_empty()) {
            (Some(a), true) => format!("alpn={a}"),
            (Some(a), false) => format!("{name},alpn={a}"),
            (None, true) => "default".to_string(),
            (None, false) => name,
        }
    }
}

/// Picks a listener's route from what the client sent first.
#[derive(Debug, Clone)]
pub struct NameRouter {
    /// Routes with `sni=` or `alpn=` (and the default), for TLS clients; `None` if there are none.
    tls: Option<NameTable<usize>>,
    /// Routes with `host=` (and the default), for plain HTTP clients; `None` if there are none.
    http: Option<NameTable<usize>>,
    /// The route without any pattern.
    default: Option<usize>,
}

impl NameRouter {
    /// Builds (and so validates) the router of one listener; an error names its origin.
    pub fn build(listener: &ListenerConfig) -> Result<NameRouter, String> {
        let routes = &listener.routes;
        let mut default = None;
        for (i, route) in routes.iter().enumerate() {
            if !route.routes_by_name() {
                if let Some(first) = default {
                    let first: &config::Route = &routes[first];
                    return Err(format!(
                        "{}: a second default route for {} (the first is at {}); give one of them sni=, host= or alpn=",
                        route.origin, listener.listen, first.origin
                    ));
                }
                default = Some(i);
            }
        }
        let table = |select: &dyn Fn(&config::Route) -> bool, by_host: bool| {
            if !routes.iter().any(select) {
                return Ok(None);
            }
            let entries = routes.iter().enumerate().filter_map(|(i, r)| {
                if select(r) {
                    let pattern = if by_host {
                        r.host.clone()
                    } else {
                        r.sni.clone()
                    };
                    Some((pattern, r.alpn.clone(), i))
                } else if Some(i) == default {
                    Some((None, None, i))
                } else {
                    None
                }
            });
            NameTable::new(entries).map(Some).map_err(|e| {
                format!(
                    "{}: routes on {}: {}",
                    listener.origin, listener.listen, e.message
                )
            })
        };
        let tls = table(
            &|r| r.host.is_none() && (r.sni.is_some() || r.alpn.is_some()),
            false,
        )?;
        let http = table(&|r| r.host.is_some(), true)?;
        Ok(NameRouter { tls, http, default })
    }

    /// True if clients must be read before a route can be chosen.
    pub fn reads_first(&self) -> bool {
        self.tls.is_some() || self.http.is_some()
    }

    /// True if TLS clients are routed by name.
    pub fn routes_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True if HTTP clients are routed by Host.
    pub fn routes_http(&self) -> bool {
        self.http.is_some()
    }

    /// The route for a TLS client that sent `name` and offered `alpn`.
    pub fn for_tls(&self, name: Option<&str>, alpn: &[String]) -> Option<(usize, MatchKind)> {
        match &self.tls {
            Some(table) => table.lookup(name, alpn).map(|(i, kind)| (*i, kind)),
            None => self.fallback(),
        }
    }

    /// The route for an HTTP client that sent Host `name`.
    pub fn for_http(&self, name: Option<&str>) -> Option<(usize, MatchKind)> {
        match &self.http {
            Some(table) => table.lookup(name, &[]).map(|(i, kind)| (*i, kind)),
            None => self.fallback(),
        }
    }

    /// The route for a client that is neither TLS nor HTTP (or sent nothing usable).
    pub fn fallback(&self) -> Option<(usize, MatchKind)> {
        self.default.map(|i| (i, MatchKind::Default))
    }

    /// Which route `name` takes, for TLS and for HTTP clients, in words.
    pub fn explain(&self, name: &str, labels: &[String]) -> Vec<String> {
        let mut lines = Vec::new();
        let describe = |found: Option<(usize, MatchKind)>| match found {
            Some((i, kind)) => format!("route {} ({kind})", labels[i]),
            None => "no route: the client is refused".to_string(),
        };
        if self.tls.is_some() {
            lines.push(format!(
                "TLS with SNI '{name}': {}",
                describe(self.for_tls(Some(name), &[]))
            ));
        }
        if self.http.is_some() {
            lines.push(format!(
                "HTTP with Host '{name}': {}",
                describe(self.for_http(Some(name)))
            ));
        }
        lines
    }
}

/// A listener's configuration at run time; swapped as a whole on reload.
#[derive(Debug)]
pub struct ListenerState {
    /// The listener as configured.
    pub config: ListenerConfig,
    /// Its routes, in configuration order.
    pub routes: Vec<Arc<RouteState>>,
    /// Picks a route by name.
    pub router: NameRouter,
    /// Allow/deny rules for every listener.
    pub global_acl: Arc<Vec<acl::Rule>>,
    /// rinetd-style log file, if configured.
    pub log_file: Option<Arc<LogSink>>,
}

impl ListenerState {
    /// Builds the run-time state; the configuration was validated when loaded.
    pub fn new(
        config: ListenerConfig,
        global_acl: Arc<Vec<acl::Rule>>,
        log_file: Option<Arc<LogSink>>,
    ) -> Result<ListenerState, String> {
        let router = NameRouter::build(&config)?;
        let routes = config
            .routes
            .iter()
            .cloned()
            .map(|r| Arc::new(RouteState::new(r)))
            .collect();
        Ok(ListenerState {
            config,
            routes,
            router,
            global_acl,
            log_file,
        })
    }

    /// Labels of the routes, in order, for logs and `--explain`.
    pub fn labels(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.label()).collect()
    }

    /// One line per route: `label -> upstreams`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                if self.routes.len() == 1 && !r.config.routes_by_name() {
                    r.describe_upstreams()
                } else {
                    format!("[{}] {}", r.label(), r.describe_upstreams())
                }
            })
            .collect();
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;

    fn listener(routes: Vec<Route>) -> ListenerConfig {
        let mut l = ListenerConfig::new("127.0.0.1:443".parse().unwrap(), routes[0].clone());
        l.routes = routes;
        l
    }

    fn route(sni: Option<&str>, host: Option<&str>, alpn: Option<&str>) -> Route {
        let mut r = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        r.sni = sni.map(|p| p.parse().unwrap());
        r.host = host.map(|p| p.parse().unwrap());
        r.alpn = alpn.map(String::from);
        r
    }

    #[test]
    fn tls_and_http_share_the_default() {
        let router = NameRouter::build(&listener(vec![
            route(None, None, None),
            route(Some("a.example.com"), None, None),
            route(None, Some("b.example.com"), None),
            route(Some("a.example.com"), None, Some("acme-tls/1")),
        ]))
        .unwrap();
        assert!(router.reads_first());
        assert_eq!(router.for_tls(Some("A.example.com."), &[]).unwrap().0, 1);
        let acme = ["acme-tls/1".to_string()];
        assert_eq!(router.for_tls(Some("a.example.com"), &acme).unwrap().0, 3);
        assert_eq!(router.for_tls(Some("b.example.com"), &[]).unwrap().0, 0);
        assert_eq!(router.for_http(Some("b.example.com")).unwrap().0, 2);
        assert_eq!(router.for_http(None).unwrap().0, 0);
        assert_eq!(router.fallback().unwrap().0, 0);
    }

    #[test]
    fn no_default_means_no_route() {
        let router =
            NameRouter::build(&listener(vec![route(Some("*.example.com"), None, None)])).unwrap();
        assert!(router.for_tls(Some("example.com"), &[]).is_none());
        assert!(router.for_tls(Some("x.example.com"), &[]).is_some());
        assert!(router.fallback().is_none());
    }

    #[test]
    fn two_defaults_are_an_error() {
        let err = NameRouter::build(&listener(vec![
            route(None, None, None),
            route(None, None, None),
        ]))
        .unwrap_err();
        assert!(err.contains("second default route"), "{err}");
    }

    #[test]
    fn a_plain_listener_reads_nothing_first() {
        let router = NameRouter::build(&listener(vec![route(None, None, None)])).unwrap();
        assert!(!router.reads_first());
    }
}
