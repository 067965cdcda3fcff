//! Reconfiguration on the accept loop: a reload switches the listeners and what follows them
//! all together, or changes nothing.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;

use super::bound;
use super::configured::{client_limits, listener_states, open_log_file};
use super::handle::log_refused;
use super::job::Context;
use super::listener::Rosters;
use super::server::Server;
use super::udp::UdpStart;

impl Server {
    /// Switches to `config`, validated already by [`Handle::reconfigure`](super::Handle::reconfigure).
    pub(super) fn reconfigure(&mut self, config: &Config) -> Result<(), Error> {
        let applied = self.switch_to(config);
        self.shared.metrics.reloaded(applied.is_ok());
        match &applied {
            Ok(()) => log::info!(
                "reloaded: {} listener(s); established connections keep their old settings",
                self.listening.len()
            ),
            Err(err) => log_refused(err),
        }
        applied
    }

    /// Switches to `config`: listeners whose address is unchanged keep their socket (no re-bind,
    /// no refused clients) and take the new settings for new connections; new ones are bound;
    /// removed ones close. Nothing changes unless every new listener could be bound.
    fn switch_to(&mut self, config: &Config) -> Result<(), Error> {
        let log_file = open_log_file(config)?;
        for (i, follower) in self.followers.iter_mut().enumerate() {
            if let Err(err) = follower.prepare(config) {
                self.followers[..i].iter_mut().for_each(|f| f.abandon());
                return Err(err);
            }
        }
        let (per_client, limits) = client_limits(config, self.permits.capacity());
        let previous = self.shared.listeners();
        let rosters = Rosters::new(&self.shared.checker, &previous);
        let states = listener_states(config, &self.shared.metrics, &limits, &rosters);
        let udp_start = UdpStart {
            metrics: &self.shared.metrics,
            log_file: log_file.clone(),
            offered: Vec::new(),
        };
        if let Err(err) = self.udp.prepare(config, udp_start) {
            self.followers.iter_mut().for_each(|f| f.abandon());
            return Err(err);
        }
        if let Err(err) = bound::switch(&mut self.listening, states, &self.handle.wake) {
            self.followers.iter_mut().for_each(|f| f.abandon());
            self.udp.abandon();
            return Err(err);
        }
        self.followers.iter_mut().for_each(|f| f.commit());
        self.udp.commit();
        self.publish_listeners();
        self.shutdown_grace = config.shutdown_grace;
        // Connections accepted from now on are counted afresh, in a new per-client table; those
        // before keep their places (and their context).
        self.context = Arc::new(Context {
            closer: self.context.closer.clone(),
            copy_pool: self.context.copy_pool.clone(),
            log_file,
            per_client,
        });
        for listening in &self.listening {
            listening.log();
        }
        self.udp.log();
        self.ready.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    use crate::config::{Config, Listener, Route};
    use crate::error::Error;
    use crate::serve::configured::Follower;
    use crate::serve::server::Server;

    /// A follower that writes down what it is told, and refuses to prepare if `refuse`.
    #[derive(Debug)]
    struct Recorder {
        name: &'static str,
        refuse: bool,
        told: Arc<Mutex<Vec<String>>>,
    }

    impl Follower for Recorder {
        fn prepare(&mut self, _config: &Config) -> Result<(), Error> {
            self.note("prepare");
            if self.refuse {
                return Err(Error::Upgrade("refused".into()));
            }
            Ok(())
        }
        fn commit(&mut self) {
            self.note("commit");
        }
        fn abandon(&mut self) {
            self.note("abandon");
        }
    }

    impl Recorder {
        fn note(&self, what: &str) {
            self.told
                .lock()
                .unwrap()
                .push(format!("{} {what}", self.name));
        }
    }

    fn listening_on(addr: &str) -> Listener {
        let mut listener = Listener::new(addr.parse().unwrap());
        listener.routes = vec![Route::new(vec!["127.0.0.1:1".parse().unwrap()])];
        listener
    }

    fn config(listeners: Vec<Listener>) -> Config {
        Config {
            listeners,
            ..Config::default()
        }
    }

    /// A server on one loopback port, followed by recorders named `a`, `b`… refusing as told.
    fn server(refusing: &[bool]) -> (Server, Arc<Mutex<Vec<String>>>) {
        let mut server =
            Server::bind(&config(vec![listening_on("127.0.0.1:0")]), Vec::new()).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        for (name, refuse) in ["a", "b"].into_iter().zip(refusing) {
            server.follow(Box::new(Recorder {
                name,
                refuse: *refuse,
                told: Arc::clone(&told),
            }));
        }
        (server, told)
    }

    #[test]
    fn a_reload_switches_the_listeners_and_then_every_follower() {
        let (mut server, told) = server(&[false, false]);
        let kept = server.local_addrs()[0];
        let reload = config(vec![
            listening_on("127.0.0.1:0"),
            listening_on("127.0.0.2:0"),
        ]);
        server.reconfigure(&reload).unwrap();
        assert_eq!(server.local_addrs().len(), 2);
        assert_eq!(
            server.local_addrs()[0],
            kept,
            "the unchanged address keeps its socket"
        );
        assert_eq!(server.local_addrs()[1].ip().to_string(), "127.0.0.2");
        assert_eq!(
            *told.lock().unwrap(),
            ["a prepare", "b prepare", "a commit", "b commit"]
        );
        assert_eq!(server.shared.metrics.reloads_ok.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_follower_that_cannot_prepare_leaves_everything_as_it_was() {
        let (mut server, told) = server(&[false, true]);
        let before = server.local_addrs();
        let reload = config(vec![listening_on("127.0.0.1:0")]);
        assert!(server.reconfigure(&reload).is_err());
        assert_eq!(server.local_addrs(), before);
        assert_eq!(
            *told.lock().unwrap(),
            ["a prepare", "b prepare", "a abandon"]
        );
    }

    #[test]
    fn a_listener_that_cannot_bind_leaves_everything_as_it_was() {
        let (mut server, told) = server(&[false]);
        let before = server.local_addrs();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let reload = config(vec![listening_on(&taken.local_addr().unwrap().to_string())]);
        assert!(server.reconfigure(&reload).is_err());
        assert_eq!(server.local_addrs(), before);
        assert_eq!(*told.lock().unwrap(), ["a prepare", "a abandon"]);
        let metrics = &server.shared.metrics;
        assert_eq!(metrics.reloads.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.reloads_ok.load(Ordering::Relaxed), 0);
    }
}
