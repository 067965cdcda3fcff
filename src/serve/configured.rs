//! What the server builds from a configuration, at start and at each reload: the listeners'
//! run-time states, the per-client limits, rinetd's log file; and the [`Follower`]s, which follow
//! the configuration beside the listeners.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use crate::config::{Config, Transport};
use crate::error::Error;
use crate::log::rinetd::LogSink;

use super::clients::{self, PerClient};
use super::listener::{Limits, ListenerState, Rosters};
use super::metrics::Metrics;

/// Something beside the listeners that follows the configuration, such as the admin endpoint.
/// On a reconfiguration it is first asked to get ready (binding what it needs, changing nothing
/// yet), so a reload that cannot bind changes nothing; once the listeners have switched too it
/// is told to switch, or else to drop what it got ready.
pub(crate) trait Follower: Send + std::fmt::Debug {
    /// Gets ready to serve `config`, or says why it cannot.
    fn prepare(&mut self, config: &Config) -> Result<(), Error>;
    /// Switches to what [`Follower::prepare`] got ready.
    fn commit(&mut self);
    /// Drops what [`Follower::prepare`] got ready.
    fn abandon(&mut self);
    /// Its listening socket, for a live upgrade to hand over.
    fn listening(&self) -> Option<&TcpListener> {
        None
    }
}

/// Builds the run-time state of every TCP listener of `config` (the UDP ones are `udp`'s). The
/// ports of a range share one peek budget, as they share one label: the range counts as one
/// listener reading first.
pub(super) fn listener_states(
    config: &Config,
    metrics: &Metrics,
    limits: &Limits,
    rosters: &Rosters<'_>,
) -> Vec<ListenerState> {
    let global_acl = Arc::new(config.acl.clone());
    let mut peeking_of_range = HashMap::new();
    config
        .listeners
        .iter()
        .filter(|listener| listener.transport == Transport::Tcp)
        .map(|listener| {
            let mut state = ListenerState::new(
                listener.clone(),
                Arc::clone(&global_acl),
                metrics,
                limits,
                rosters,
            );
            if let Some(range) = &listener.range {
                let shared = peeking_of_range
                    .entry(Arc::as_ptr(range))
                    .or_insert_with(|| Arc::clone(&state.peeking));
                state.peeking = Arc::clone(shared);
            }
            state
        })
        .collect()
}

/// The per-client and peek-phase limits of `config` under a connection cap of `max`: as
/// configured, else one client may hold three quarters of the cap (of each listener's own cap
/// too, where lower), and a quarter of a listener's cap may be choosing a route at once (the
/// process cap's quarter split among the listeners that read first), half of that one client's
/// (see `clients` and `Limits`).
pub(super) fn client_limits(config: &Config, max: usize) -> (Arc<PerClient>, Limits) {
    let limits = Limits::new(config, max);
    let per_client = config
        .max_connections_per_client
        .unwrap_or_else(|| clients::client_share(max));
    (PerClient::new(per_client, limits.v6_prefix), limits)
}

/// Opens rinetd's log file, if `config` has one.
pub(super) fn open_log_file(config: &Config) -> Result<Option<Arc<LogSink>>, Error> {
    let Some(logfile) = &config.logfile else {
        return Ok(None);
    };
    let sink = LogSink::open(logfile).map_err(|source| Error::LogFile {
        path: logfile.path.clone(),
        source,
    })?;
    Ok(Some(Arc::new(sink)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Listener, LogFile, Route};
    use crate::test_support::temp_dir;

    #[test]
    fn the_ports_of_a_range_share_the_member_of_an_upstream_port_they_all_go_to() {
        let mut written = Listener::new("127.0.0.1:0".parse().unwrap());
        let mut route = Route::new(vec!["127.0.0.1:7000".parse().unwrap()]);
        route.check = Some(crate::config::HealthCheck::new(
            crate::config::CheckKind::Connect,
        ));
        written.routes.push(route);
        let members = vec![vec!["127.0.0.1:7000".parse().unwrap()]];
        let listeners = written
            .for_range("127.0.0.1:40000-40002".parse().unwrap(), members)
            .unwrap();
        let config = Config {
            listeners,
            ..Config::default()
        };
        let (_, limits) = client_limits(&config, 64);
        let states = listener_states(&config, &Metrics::default(), &limits, &Rosters::fresh());
        let target =
            |state: &ListenerState| Arc::clone(&state.routes[0].roster.entries()[0].target);
        assert_eq!(states.len(), 3);
        assert!(Arc::ptr_eq(&target(&states[0]), &target(&states[2])));
    }

    fn listener(port: u16) -> Listener {
        let mut listener = Listener::new(format!("127.0.0.1:{port}").parse().unwrap());
        listener.routes = vec![Route::new(vec!["127.0.0.1:1".parse().unwrap()])];
        listener
    }

    #[test]
    fn one_client_may_hold_three_quarters_of_the_cap_unless_configured() {
        let config = Config::default();
        let (per_client, limits) = client_limits(&config, 100);
        assert_eq!(per_client.limit(), 75);
        assert_eq!(limits.max_connections, 100);
        assert_eq!(limits.max_per_client, None);
        assert_eq!(limits.v6_prefix, config.client_ipv6_prefix);

        let config = Config {
            max_connections_per_client: Some(3),
            ..Config::default()
        };
        let (per_client, limits) = client_limits(&config, 100);
        assert_eq!(per_client.limit(), 3);
        assert_eq!(limits.max_per_client, Some(3));
    }

    #[test]
    fn only_listeners_that_read_before_routing_share_the_peek_phase() {
        let mut proxied = listener(2);
        proxied.accept_proxy = true;
        let config = Config {
            listeners: vec![listener(1), proxied, listener(3)],
            max_peeking: Some(7),
            ..Config::default()
        };
        let (_, limits) = client_limits(&config, 100);
        assert_eq!(limits.peek_sharers, 1);
        assert_eq!(limits.max_peeking, Some(7));
    }

    #[test]
    fn each_listener_gets_its_state_in_configuration_order() {
        let config = Config {
            listeners: vec![listener(1), listener(2)],
            ..Config::default()
        };
        let (_, limits) = client_limits(&config, 100);
        let states = listener_states(&config, &Metrics::default(), &limits, &Rosters::fresh());
        let ports: Vec<String> = states.iter().map(|s| s.config.listen.to_string()).collect();
        assert_eq!(ports, ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn the_ports_of_a_range_share_one_peek_budget_and_count_once_among_those_that_read_first() {
        let mut written = listener(0);
        written.accept_proxy = true;
        let members = vec![vec!["127.0.0.1:1".parse().unwrap()]];
        let ports = written
            .for_range("127.0.0.1:9000-9003".parse().unwrap(), members)
            .unwrap();
        let config = Config {
            listeners: ports.into_iter().chain([listener(3)]).collect(),
            ..Config::default()
        };
        let (_, limits) = client_limits(&config, 100);
        assert_eq!(limits.peek_sharers, 1);
        let states = listener_states(&config, &Metrics::default(), &limits, &Rosters::fresh());
        assert!(Arc::ptr_eq(&states[0].peeking, &states[3].peeking));
        assert!(!Arc::ptr_eq(&states[0].peeking, &states[4].peeking));
    }

    #[test]
    fn rinetds_log_file_is_opened_only_when_configured_and_its_failure_names_the_path() {
        assert!(open_log_file(&Config::default()).unwrap().is_none());
        let dir = temp_dir("configured-log");
        let path = dir.join("rinetd.log");
        let config = Config {
            logfile: Some(LogFile::new(&path)),
            ..Config::default()
        };
        assert!(open_log_file(&config).unwrap().is_some());
        let missing = dir.join("missing/rinetd.log");
        let config = Config {
            logfile: Some(LogFile::new(&missing)),
            ..Config::default()
        };
        match open_log_file(&config) {
            Err(Error::LogFile { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected a log file error, got {other:?}"),
        }
    }
}
