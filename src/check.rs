//! `--check`: validate the whole configuration, resolving every name, and print what would run;
//! with `--explain NAME`, which route a name takes on each listener that routes by name.

use std::fmt::Write;

use crate::config::acl::Rule;
use crate::config::addr::{Host, HostPort};
use crate::config::duration::format_duration;
use crate::config::Config;
use crate::route::router::Router;

/// Checks a validated configuration as `--check` does, resolving every host name in it:
/// `Ok(summary)` to print, or every problem found, one line each. With `explain`, the summary
/// ends with which route that name (an SNI or Host name) takes on each listener that routes by
/// name.
///
/// ```
/// use tcp_router::{check, Config, Listener, Route};
///
/// let mut listener = Listener::new("127.0.0.1:11000".parse()?);
/// listener.routes.push(Route::new(vec!["127.0.0.1:6379".parse()?]));
/// let mut config = Config::default();
/// config.listeners.push(listener);
/// let summary = check(&config, None).unwrap();
/// assert!(summary.starts_with("configuration OK: 1 listener(s), 1 route(s)"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(config: &Config, explain: Option<&str>) -> Result<String, Vec<String>> {
    let mut errors = Vec::new();
    for listener in &config.listeners {
        resolve(&listener.listen, &listener.origin, &mut errors);
        for route in &listener.routes {
            for upstream in &route.upstreams {
                resolve(upstream, &route.origin, &mut errors);
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = summary(config);
    if let Some(name) = explain {
        out.push_str(&explain_name(config, name));
    }
    Ok(out)
}

fn resolve(addr: &HostPort, origin: &str, errors: &mut Vec<String>) {
    if let Host::Name(_) = addr.host {
        if let Err(err) = addr.resolve() {
            errors.push(format!("{origin}: cannot resolve '{addr}': {err}"));
        }
    }
}

fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "configuration OK: {} listener(s), {} route(s)",
        config.listeners.len(),
        config
            .listeners
            .iter()
            .map(|l| l.routes.len())
            .sum::<usize>()
    );
    if !config.acl.is_empty() {
        let _ = writeln!(out, "global rules: {}", rules(&config.acl));
    }
    if let Some(log) = &config.logfile {
        let format = if log.common { "common" } else { "rinetd" };
        let _ = writeln!(out, "log file: {} ({format} format)", log.path.display());
    }
    if let Some(pid) = &config.pid_file {
        let _ = writeln!(out, "pid file: {}", pid.display());
    }
    for listener in &config.listeners {
        let mut extras = Vec::new();
        if listener.accept_proxy && listener.accept_proxy_from.is_empty() {
            extras.push("accept_proxy (from any sender)".to_string());
        } else if listener.accept_proxy {
            let trusted: Vec<String> = listener
                .accept_proxy_from
                .iter()
                .map(ToString::to_string)
                .collect();
            extras.push(format!("accept_proxy_from={}", trusted.join(",")));
        }
        if listener.reuse_port {
            extras.push("reuse_port".to_string());
        }
        if let Some(max) = listener.max_connections {
            extras.push(format!("max_connections={max}"));
        }
        let extras = if extras.is_empty() {
            String::new()
        } else {
            format!(" [{}]", extras.join(" "))
        };
        let _ = writeln!(
            out,
            "listen {} ({}){extras}",
            listener.listen, listener.origin
        );
        for route in &listener.routes {
            let upstreams: Vec<String> = route.upstreams.iter().map(ToString::to_string).collect();
            let mut keys = vec![format!(
                "connect_timeout={}",
                format_duration(route.connect_timeout)
            )];
            keys.push(format!(
                "idle_timeout={}",
                route.idle_timeout.map_or("off".into(), format_duration)
            ));
            keys.push(format!(
                "fin_timeout={}",
                route.fin_timeout.map_or("off".into(), format_duration)
            ));
            if let Some(src) = route.src {
                keys.push(format!("src={src}"));
            }
            if let Some(version) = route.proxy_protocol {
                keys.push(format!("proxy_protocol={version}"));
            }
            if !route.acl.is_empty() {
                keys.push(format!("rules: {}", rules(&route.acl)));
            }
            let _ = writeln!(
                out,
                "  route {} -> {} ({}) {}",
                route.label(),
                upstreams.join(", "),
                route.origin,
                keys.join(" ")
            );
        }
    }
    out
}

fn rules(list: &[Rule]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn explain_name(config: &Config, name: &str) -> String {
    let mut out = String::new();
    let mut any = false;
    for listener in &config.listeners {
        let router = Router::new(&listener.routes);
        if !router.reads_first() {
            continue;
        }
        any = true;
        let labels: Vec<String> = listener.routes.iter().map(|r| r.label()).collect();
        let _ = writeln!(out, "explain '{name}' on {}:", listener.listen);
        for line in router.explain(name, &labels) {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !any {
        let _ = writeln!(out, "explain '{name}': no listener routes by name");
    }
    out
}
