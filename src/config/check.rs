//! `--check`: validate the whole configuration, resolving every name, and print what would run;
//! with `--explain NAME`, which route a name takes on each listener that routes by name.

use std::fmt::Write;

use crate::acl;
use crate::addr::{Host, HostPort};
use crate::cli::Args;
use crate::config::Config;
use crate::duration::format_duration;
use crate::route::ListenerState;

/// Checks the configuration: `Ok(summary)` to print on stdout, or every problem found, one line
/// each (`FILE:LINE: message` for the config file).
pub fn check(args: &Args) -> Result<String, Vec<String>> {
    let config = Config::load(args).map_err(|err| {
        err.to_string()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    })?;
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
    let mut out = summary(&config);
    if let Some(name) = &args.explain {
        out.push_str(&explain(&config, name));
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
    if !config.global_acl.is_empty() {
        let _ = writeln!(out, "global rules: {}", rules(&config.global_acl));
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
        if listener.accept_proxy {
            extras.push("accept_proxy".to_string());
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
            let state = crate::route::RouteState::new(route.clone());
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
                state.label(),
                upstreams.join(", "),
                route.origin,
                keys.join(" ")
            );
        }
    }
    out
}

fn rules(list: &[acl::Rule]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn explain(config: &Config, name: &str) -> String {
    let mut out = String::new();
    let mut any = false;
    for listener in &config.listeners {
        let Ok(state) = ListenerState::new(listener.clone(), Default::default(), None) else {
            continue;
        };
        if !state.router.reads_first() {
            continue;
        }
        any = true;
        let _ = writeln!(out, "explain '{name}' on {}:", listener.listen);
        for line in state.router.explain(name, &state.labels()) {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !any {
        let _ = writeln!(out, "explain '{name}': no listener routes by name");
    }
    out
}
