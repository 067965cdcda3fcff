//! From a config file to listeners: rules sharing a listen address become one listener, each rule
//! one of its routes, with the file's settings laid over the defaults (route key > command line >
//! built-in default).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::addr::HostPort;
use super::addr::Services;
use super::duration::format_duration;
use super::file::{self, RuleDef};
use super::model::{Admin, Config, Listener, LogFile, Route, Transport, DEFAULT_UDP_IDLE_TIMEOUT};
use super::range::HostPorts;
use super::settings::Settings;

impl Config {
    /// Parses `text`, the config file at `path` (named in messages), looking ports given by name
    /// up in `services`; settings a route does not give come from `defaults`. Every problem found
    /// is one line of the error, `FILE:LINE: message`. [`Config::from_file`] reads the file and
    /// calls this.
    pub(crate) fn from_text(
        path: &Path,
        text: &str,
        defaults: &Settings,
        services: Services,
    ) -> Result<Config, Vec<String>> {
        let file = file::parse(path, text, services)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let listeners = group_into_listeners(path, &file.rules, defaults)?;
        Ok(Config {
            listeners,
            acl: file.global_acl,
            logfile: file.logfile.map(|path| LogFile {
                path,
                common: file.logcommon,
            }),
            pid_file: file.pidlogfile,
            admin: file.admin.map(|(listen, line)| Admin {
                listen,
                allow: file.admin_allow,
                origin: format!("{}:{line}", path.display()),
            }),
            ..Config::default()
        })
    }
}

/// The largest config file read: 16 MiB, some hundred times a file of 20,000 routes. A larger
/// one is refused before it is read.
pub const MAX_CONFIG_FILE_SIZE: u64 = 16 << 20;

/// The most listeners port ranges may add up to in one configuration: every port of `0-65535`
/// once. Beyond it, a file of many ranges (each at most
/// [`MAX_RANGE_PORTS`](super::range::MAX_RANGE_PORTS)) is refused before
/// its listeners are built.
pub(crate) const MAX_RANGED_LISTENERS: usize = 65_536;

/// Rules sharing a listen address or range (as written) become one listener, in the order of
/// first appearance; each rule is one of its routes. A listener written for a range then becomes
/// one per port ([`Listener::for_range`]).
fn group_into_listeners(
    path: &Path,
    rules: &[RuleDef],
    defaults: &Settings,
) -> Result<Vec<Listener>, Vec<String>> {
    let mut errors = Vec::new();
    let mut by_listen: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups: Vec<(Listener, Vec<&RuleDef>)> = Vec::new();
    for rule in rules {
        let origin = format!("{}:{}", path.display(), rule.line);
        let settings = defaults.merge(&rule.settings);
        let key = format!("{}{}", rule.listen, rule.transport.suffix());
        let index = *by_listen.entry(key).or_insert_with(|| {
            let mut listener = Listener::with(rule.listen.first.clone(), &settings, origin.clone());
            if rule.transport == Transport::Udp {
                udp_listener(&mut listener, rule);
            }
            groups.push((listener, Vec::new()));
            groups.len() - 1
        });
        let (listener, members) = &mut groups[index];
        if let Some(first) = members.first() {
            errors.extend(disagreements(listener, first, rule, &origin));
        }
        members.push(rule);
        let orphans = rule.settings.check_problems(settings.check.as_ref());
        errors.extend(orphans.into_iter().map(|why| format!("{origin}: {why}")));
        let mut route = route(rule, &settings, origin);
        if rule.transport == Transport::Udp {
            udp_route(&mut route);
        }
        listener.routes.push(route);
    }
    let ranged: usize = (groups.iter())
        .filter_map(|(_, rules)| rules[0].listen.range.map(|r| r.len()))
        .sum();
    if ranged > MAX_RANGED_LISTENERS {
        errors.push(format!(
            "{}: the port ranges add up to {ranged} listeners, more than {MAX_RANGED_LISTENERS}",
            path.display()
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut listeners = Vec::with_capacity(groups.len());
    for (listener, rules) in groups {
        let members: Vec<Vec<HostPorts>> = (rules.iter())
            .map(|rule| {
                rule.upstreams
                    .iter()
                    .chain(&rule.backups)
                    .cloned()
                    .collect()
            })
            .collect();
        let origin = listener.origin.clone();
        let expanded = listener
            .for_range(rules[0].listen.clone(), members)
            .map_err(|why| vec![format!("{origin}: {why}")])?;
        listeners.extend(expanded);
    }
    Ok(listeners)
}

/// The route of `rule`, its upstreams and backups on their first ports (a range's listeners
/// then take theirs).
fn route(rule: &RuleDef, settings: &Settings, origin: String) -> Route {
    let first =
        |list: &[HostPorts]| -> Vec<HostPort> { list.iter().map(|m| m.first.clone()).collect() };
    let mut route = Route::with(first(&rule.upstreams), settings, origin);
    route.acl = rule.acl.clone();
    route.backups = first(&rule.backups);
    let weights = rule.weights.iter().chain(&rule.backup_weights);
    if weights.clone().any(|&w| w != 1) {
        route.weights = weights.copied().collect();
    }
    route.sni = rule.sni.clone();
    route.host = rule.host.clone();
    route.alpn = rule.alpn.clone();
    route.protocol = rule.protocol.clone();
    route
}

/// A UDP listener: what the rule gives it, and none of what only TCP clients get (the command
/// line's defaults apply to every route, and a PROXY header or a peek has no datagram to read).
fn udp_listener(listener: &mut Listener, rule: &RuleDef) {
    listener.transport = Transport::Udp;
    listener.max_flows = rule.max_flows;
    listener.accept_proxy = false;
    listener.accept_proxy_from = Vec::new();
    listener.max_connections = None;
}

/// A UDP route: an idle timeout always (72 seconds, rinetd's, unless given), and none of the
/// TCP-only settings the command line's defaults may have given.
fn udp_route(route: &mut Route) {
    route.idle_timeout = Some(route.idle_timeout.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT));
    route.fin_timeout = None;
    route.proxy_protocol = None;
    route.check = None;
    route.max_connections_per_client = None;
}

/// The one place where routes sharing a listener must agree on what applies to the whole
/// listener: the PROXY header and the peek happen before a route is chosen, and the connection
/// cap counts the listener's clients. `max_connections` may be given on one route only (the
/// listener takes it); `accept_proxy` unset means false; `peek_timeout` must be given alike.
fn disagreements(
    listener: &mut Listener,
    first: &RuleDef,
    b: &RuleDef,
    origin: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let (given, other) = (&first.settings, &b.settings);
    if let Some(max) = other.max_connections {
        match listener.max_connections {
            Some(existing) if existing != max => out.push(format!(
                "{origin}: max_connections={max} differs from max_connections={existing} given for {} at {}; \
                 it caps the whole listener, so routes sharing it must agree",
                b.listen, listener.origin
            )),
            _ => listener.max_connections = Some(max),
        }
    }
    let (pa, pb) = (
        given.accept_proxy.unwrap_or(false),
        other.accept_proxy.unwrap_or(false),
    );
    if pa != pb {
        out.push(format!(
            "{origin}: accept_proxy={pb} disagrees with line {} (accept_proxy={pa}) on listener {}; \
             routes sharing a listener must agree because the proxy header is read before routing",
            first.line, b.listen
        ));
    }
    if given.accept_proxy_from != other.accept_proxy_from {
        out.push(format!(
            "{origin}: accept_proxy_from disagrees with line {} on listener {}; routes sharing a \
             listener must give the same list because the proxy header is read before routing",
            first.line, b.listen
        ));
    }
    let (ra, rb) = (
        given.reuse_port.unwrap_or(false),
        other.reuse_port.unwrap_or(false),
    );
    if ra != rb {
        out.push(format!(
            "{origin}: reuse_port={rb} disagrees with line {} (reuse_port={ra}) on listener {}; \
             it is how the listener is bound, so routes sharing it must agree",
            first.line, b.listen
        ));
    }
    if given.peek_timeout != other.peek_timeout {
        let show = |d: Option<Duration>| d.map_or_else(|| "unset".to_string(), format_duration);
        out.push(format!(
            "{origin}: peek_timeout ({}) disagrees with line {} ({}) on listener {}; set it the same on every route of a listener",
            show(other.peek_timeout),
            first.line,
            show(given.peek_timeout),
            b.listen
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CheckKind, Overrides};

    /// Loads `text` as a config file and validates it; the error lines without the file name.
    fn load(text: &str) -> Result<Config, Vec<String>> {
        let dir = crate::test_support::temp_dir("load");
        let path = dir.join("t.conf");
        std::fs::write(&path, text).unwrap();
        let prefix = format!("{}:", path.display());
        let strip = |lines: Vec<String>| -> Vec<String> {
            lines
                .into_iter()
                .map(|l| l.strip_prefix(&prefix).unwrap_or(&l).to_string())
                .collect()
        };
        let config = Config::from_file(&path, &Settings::default()).map_err(strip)?;
        config.validate().map_err(|e| strip(e.lines()))?;
        Ok(config)
    }

    fn err1(text: &str) -> String {
        let errors = load(text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    #[test]
    fn a_udp_rule_is_a_udp_listener_of_its_own_with_rinetds_timeout_by_default() {
        let config = load(
            "0.0.0.0 53 127.0.0.1 5353\n\
             0.0.0.0 53/udp 127.0.0.1 5353/udp\n\
             route 0.0.0.0:54/udp 127.0.0.1:5354 idle_timeout=5s max_flows=7\n",
        )
        .unwrap();
        let kinds: Vec<(String, Transport)> = (config.listeners.iter())
            .map(|l| (l.key(), l.transport))
            .collect();
        assert_eq!(
            kinds,
            [
                ("0.0.0.0:53".to_string(), Transport::Tcp),
                ("0.0.0.0:53/udp".to_string(), Transport::Udp),
                ("0.0.0.0:54/udp".to_string(), Transport::Udp),
            ]
        );
        let rinetd = &config.listeners[1];
        assert_eq!(
            rinetd.routes[0].idle_timeout,
            Some(DEFAULT_UDP_IDLE_TIMEOUT)
        );
        assert_eq!(rinetd.max_flows, None);
        let route = &config.listeners[2];
        assert_eq!(route.routes[0].idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(route.max_flows, Some(7));
    }

    #[test]
    fn a_udp_route_takes_none_of_the_tcp_defaults_the_command_line_gives() {
        let mut given = Overrides::default();
        for (key, value) in [
            ("proxy_protocol", "v2"),
            ("accept_proxy", "true"),
            ("check", "connect"),
        ] {
            given.set(key, value).unwrap();
        }
        let defaults = Settings::default().merge(&given);
        let dir = crate::test_support::temp_dir("load-udp");
        let path = dir.join("t.conf");
        std::fs::write(&path, "route 127.0.0.1:53/udp 127.0.0.1:5353\n").unwrap();
        let config = Config::from_file(&path, &defaults).unwrap();
        config.validate().unwrap();
        let listener = &config.listeners[0];
        assert!(!listener.accept_proxy);
        assert_eq!(listener.routes[0].proxy_protocol, None);
        assert!(listener.routes[0].check.is_none());
    }

    #[test]
    fn a_route_gets_its_weights_and_check_and_companions_need_a_check() {
        let config = load(
            "route 127.0.0.1:80 127.0.0.1:81*2,127.0.0.1:82 backup=127.0.0.1:83 check=http:/ \
             check_status=200-399 fall=5\n\
             route 127.0.0.1:90 127.0.0.1:91,127.0.0.1:92\n",
        )
        .unwrap();
        let weighted = &config.listeners[0].routes[0];
        assert_eq!(weighted.weights, [2, 1, 1]);
        assert_eq!(weighted.weight(0), 2);
        let check = weighted.check.as_ref().unwrap();
        assert_eq!(check.kind.to_string(), "http:/");
        assert_eq!(check.fall, 5);
        let plain = &config.listeners[1].routes[0];
        assert!(plain.weights.is_empty() && plain.check.is_none());
        assert_eq!(
            err1("route 127.0.0.1:80 127.0.0.1:81 rise=2"),
            "1: 'rise=2' needs check="
        );
        assert_eq!(
            err1("route 127.0.0.1:80 127.0.0.1:81 check=connect check_status=5xx"),
            "1: 'check_status=5xx' needs an http check (check=http:PATH)"
        );
        let mut defaults = Overrides::default();
        defaults.set("check", "connect").unwrap();
        let dir = crate::test_support::temp_dir("check-default");
        let path = dir.join("t.conf");
        std::fs::write(&path, "route 127.0.0.1:80 127.0.0.1:81 rise=2\n").unwrap();
        let config = Config::from_file(&path, &Settings::default().merge(&defaults)).unwrap();
        let check = config.listeners[0].routes[0].check.as_ref().unwrap();
        assert_eq!((&check.kind, check.rise), (&CheckKind::Connect, 2));
    }

    #[test]
    fn only_regular_files_within_the_size_limit_are_read() {
        let err =
            |path: &str| Config::from_file(Path::new(path), &Settings::default()).unwrap_err();
        assert_eq!(
            err("/dev/zero"),
            ["cannot read config file '/dev/zero': not a regular file"]
        );
        let dir = crate::test_support::temp_dir("size");
        let big = dir.join("big.conf");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_CONFIG_FILE_SIZE + 1).unwrap();
        assert_eq!(
            err(big.to_str().unwrap()),
            [format!(
                "cannot read config file '{}': larger than 16 MiB",
                big.display()
            )]
        );
        let fits = dir.join("fits.conf");
        std::fs::write(&fits, "route 127.0.0.1:0 127.0.0.1:1\n").unwrap();
        assert!(Config::from_file(&fits, &Settings::default()).is_ok());
    }

    /// Checking is n log n in routes: 20,000 `sni=` routes on one listener took 2.2 s in
    /// release (0.9 s of it the duplicate-route check, the rest the file's listener check, both
    /// quadratic) and take milliseconds now. The bound is generous, for a debug build on a busy
    /// machine; the quadratic version took longer than it even in release.
    #[test]
    fn twenty_thousand_name_routes_are_checked_in_well_under_a_second() {
        let text: String = (0..20_000)
            .map(|i| {
                format!(
                    "route 127.0.0.1:443 127.0.0.1:{} sni=h{i}.example\n",
                    1 + i % 60_000
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let config = load(&text).unwrap();
        let took = started.elapsed();
        assert_eq!(config.listeners[0].routes.len(), 20_000);
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[test]
    fn rules_sharing_an_address_are_one_listener() {
        let config = load(
            "route 0.0.0.0:443 192.0.2.1:443 sni=a.example max_connections=7\n\
             route 0.0.0.0:443 192.0.2.2:443\n\
             127.0.0.1 80 192.0.2.3 80\n",
        )
        .unwrap();
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].routes.len(), 2);
        assert_eq!(config.listeners[0].max_connections, Some(7));
        assert_eq!(config.listeners[0].routes[0].label(), "sni=a.example");
        assert_eq!(config.listeners[0].routes[1].label(), "default");
    }

    #[test]
    fn route_keys_win_over_the_defaults_given() {
        let dir = crate::test_support::temp_dir("defaults");
        let path = dir.join("t.conf");
        std::fs::write(
            &path,
            "route 127.0.0.1:1 127.0.0.1:2 idle_timeout=1m\nroute 127.0.0.1:3 127.0.0.1:4\n",
        )
        .unwrap();
        let defaults = Settings {
            idle_timeout: Some(Duration::from_secs(5)),
            ..Settings::default()
        };
        let config = Config::from_file(&path, &defaults).unwrap();
        assert_eq!(
            config.listeners[0].routes[0].idle_timeout,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            config.listeners[1].routes[0].idle_timeout,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn listener_settings_must_agree() {
        assert_eq!(
            err1("route 0.0.0.0:443 192.0.2.1:443 sni=a.example accept_proxy=true\nroute 0.0.0.0:443 192.0.2.2:443"),
            "2: accept_proxy=false disagrees with line 1 (accept_proxy=true) on listener 0.0.0.0:443; \
             routes sharing a listener must agree because the proxy header is read before routing"
        );
        assert!(load("route 0.0.0.0:443 192.0.2.1:443 sni=a.example accept_proxy=false\nroute 0.0.0.0:443 192.0.2.2:443").is_ok());
        assert_eq!(
            err1("route 0.0.0.0:443 192.0.2.1:443 sni=a.example peek_timeout=2s\nroute 0.0.0.0:443 192.0.2.2:443"),
            "2: peek_timeout (unset) disagrees with line 1 (2s) on listener 0.0.0.0:443; \
             set it the same on every route of a listener"
        );
        assert!(err1("route 0.0.0.0:443 192.0.2.1:443 sni=a.example max_connections=1\nroute 0.0.0.0:443 192.0.2.2:443 max_connections=2")
            .starts_with("2: max_connections=2 differs from max_connections=1"));
        assert_eq!(
            err1("route 0.0.0.0:443 192.0.2.1:443 sni=a.example accept_proxy_from=10.0.0.5\nroute 0.0.0.0:443 192.0.2.2:443 accept_proxy_from=10.0.0.6"),
            "2: accept_proxy_from disagrees with line 1 on listener 0.0.0.0:443; routes sharing a \
             listener must give the same list because the proxy header is read before routing"
        );
    }

    #[test]
    fn a_range_rule_becomes_a_listener_per_port_sharing_its_routes() {
        let config = load(
            "route 127.0.0.1:9000-9002 10.0.0.1:7000-7002 sni=a.example max_connections=5\n\
             route 127.0.0.1:9000-9002 10.0.0.2:8080 backup=10.0.0.3:6000-6002\n\
             route 127.0.0.1:80 10.0.0.9:80\n",
        )
        .unwrap();
        assert_eq!(config.listeners.len(), 4);
        let port = &config.listeners[2];
        assert_eq!(port.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(port.label(), "127.0.0.1:9000-9002");
        assert_eq!(port.max_connections, Some(5));
        assert_eq!(port.routes[0].upstreams[0].to_string(), "10.0.0.1:7002");
        assert_eq!(port.routes[1].upstreams[0].to_string(), "10.0.0.2:8080");
        assert_eq!(port.routes[1].backups[0].to_string(), "10.0.0.3:6002");
        let range = port.range.as_ref().unwrap();
        assert_eq!(
            range.member(1, 1).unwrap().to_string(),
            "10.0.0.3:6000-6002"
        );
        assert!(config.listeners[3].range.is_none());
    }

    #[test]
    fn ranges_adding_up_to_more_than_the_cap_are_refused_before_they_are_built() {
        let text: String = (1..=17)
            .map(|i| format!("route 127.0.0.{i}:1000-5095 10.0.0.1:80\n"))
            .collect();
        let errors = load(&text).unwrap_err();
        assert_eq!(
            errors,
            [" the port ranges add up to 69632 listeners, more than 65536"]
        );
    }

    #[test]
    fn duplicate_routes_on_one_listener() {
        assert_eq!(
            err1("route 0.0.0.0:80 192.0.2.1:80\nroute 0.0.0.0:80 192.0.2.2:80"),
            "2: duplicate route on 0.0.0.0:80: line 1 already has one with no sni/host/alpn"
        );
        assert_eq!(
            err1("route [::]:443 192.0.2.1:443 sni=A.example\n\nroute [::]:443 192.0.2.2:443 sni=a.example."),
            "3: duplicate route on [::]:443: line 1 already has one with sni=a.example"
        );
        assert_eq!(
            err1("route [::]:443 192.0.2.1:443 alpn=h2\nroute [::]:443 192.0.2.2:443 alpn=h2"),
            "2: duplicate route on [::]:443: line 1 already has one with alpn=h2"
        );
        // The same name for TLS and for HTTP is two routes, not a duplicate.
        assert!(load(
            "route [::]:80 192.0.2.1:443 sni=a.example\nroute [::]:80 192.0.2.2:80 host=a.example"
        )
        .is_ok());
        // Different listen addresses never collide.
        assert!(load("route 127.0.0.1:80 192.0.2.1:80\nroute 127.0.0.2:80 192.0.2.1:80").is_ok());
    }
}
