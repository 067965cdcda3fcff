//! The accept loop's public face: [`Handle`], which controls a running forwarder from any thread
//! by sending it a `Control` request and a wake-up byte, and the [`Status`] it reports.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::error::Error;
use crate::upgrade::Channel;

use super::status::Shared;
use crate::upgrade::HandedOff;

/// Requests the accept loop takes from its [`Handle`]s.
#[derive(Debug)]
pub(super) enum Control {
    /// Stop accepting, drain (for this long, or the configured drain timeout), return.
    Stop(Option<Duration>),
    /// Serve this configuration from now on; the result goes back on the channel.
    Reconfigure(Box<Config>, Sender<Result<(), Error>>),
    /// Hand everything to the new process at the other end of the channel (the live upgrade).
    HandOff(Box<Channel>, Sender<Result<HandedOff, Error>>),
}

/// Controls a running forwarder from any thread: stop it gracefully, or give it a new
/// configuration. Cheap to clone; a handle whose forwarder has returned does nothing.
///
/// ```
/// use std::time::Duration;
/// use tcp_router::Forwarder;
///
/// let forwarder = Forwarder::new("127.0.0.1:0", "127.0.0.1:6379")?;
/// let handle = forwarder.handle();
/// let running = forwarder.spawn()?;
/// handle.stop_within(Duration::from_secs(1));
/// let report = running.join()?;
/// assert_eq!(report.active, 0);
/// # Ok::<(), tcp_router::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    /// Where requests go; the accept loop takes them between accepts.
    pub(super) tx: Sender<Control>,
    /// Wakes the accept loop out of its poll when a request is sent.
    pub(super) wake: Arc<UnixStream>,
    pub(super) shared: Arc<Shared>,
}

impl Handle {
    /// Asks the forwarder to stop: accept nothing more, let active connections finish for the
    /// configured drain timeout, cut the rest, return its [`DrainReport`](crate::DrainReport).
    pub fn stop(&self) {
        self.shared.set_stopping();
        self.send(Control::Stop(None));
    }

    /// Like [`Handle::stop`], with `drain` instead of the configured drain timeout.
    pub fn stop_within(&self, drain: Duration) {
        self.shared.set_stopping();
        self.send(Control::Stop(Some(drain)));
    }

    /// Serves `config` from now on, as SIGHUP does for the binary: listeners on unchanged
    /// addresses keep their sockets and take the new routes for new connections, new addresses
    /// are bound, removed ones close; established connections keep their settings. Returns once
    /// the accept loop has switched, or why it did not: if the configuration is invalid or a new
    /// address cannot be bound, nothing changes (and the reason is also logged at error level).
    pub fn reconfigure(&self, config: Config) -> Result<(), Error> {
        // Checked here, on the caller's thread: a large configuration's check never holds up the
        // accept loop, nor a stop request queued behind it.
        if let Err(err) = config.validate() {
            self.shared.metrics.reloaded(false);
            log_refused(&err);
            return Err(err);
        }
        if self.shared.is_stopping() {
            log::warn!("reload refused: stopping");
            return Err(stopping());
        }
        let (reply, result) = crossbeam_channel::bounded(1);
        self.send(Control::Reconfigure(Box::new(config), reply));
        result.recv().unwrap_or_else(|_| {
            Err(Error::Setup {
                what: "reconfigure (the forwarder has stopped)",
                source: io::Error::from(io::ErrorKind::NotConnected),
            })
        })
    }

    /// Counts a reload refused before it reached the forwarder (the caller could not read or
    /// parse the new configuration) as [`Handle::reconfigure`] counts one it refuses, in
    /// `tcp_router_reloads_total` but not `tcp_router_reloads_succeeded_total`, and logs `why` at
    /// error level, one line each of its [`lines`](Error::lines); the running configuration
    /// stays.
    pub fn reload_refused(&self, why: &Error) {
        self.shared.metrics.reloaded(false);
        log_refused(why);
    }

    /// What the forwarder is doing now: for a service manager's status line, a watchdog, or a
    /// health check of an embedding program.
    pub fn status(&self) -> Status {
        let listeners = self.shared.listeners();
        Status {
            stopping: self.shared.is_stopping(),
            listeners: listeners.len(),
            active: self.shared.registry.len(),
            since_heartbeat: self.shared.since_heartbeat(),
        }
    }

    /// Hands every listener and established connection to the new process at the other end of
    /// `channel` (started with [`upgrade::CHANNEL_ENV`](crate::upgrade::CHANNEL_ENV) naming a
    /// [`Rendezvous`](crate::upgrade::Rendezvous), and running
    /// [`Forwarder::take_over`](crate::Forwarder::take_over)). Returns once the new process has
    /// started; the forwarder then returns from serving, with nothing left to drain. On `Err`
    /// nothing changed: the forwarder goes on serving everything it served.
    pub fn hand_off(&self, channel: Channel) -> Result<HandedOff, Error> {
        let (reply, result) = crossbeam_channel::bounded(1);
        self.send(Control::HandOff(Box::new(channel), reply));
        result.recv().unwrap_or_else(|_| {
            Err(Error::Upgrade(
                "the forwarder stopped before the hand-off".into(),
            ))
        })
    }

    fn send(&self, control: Control) {
        let _ = self.tx.send(control);
        // A full wake socket already has a wake-up pending; that is enough.
        let _ = (&*self.wake).write(&[1]);
    }
}

/// What a forwarder is doing, from [`Handle::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// A graceful stop has begun.
    pub stopping: bool,
    /// Listeners being served (0 once the drain has begun).
    pub listeners: usize,
    /// Connections open now.
    pub active: usize,
    /// How long since the accept loop last went round; it does so at least once a second while
    /// it runs, so a large value means it is stuck (or has finished).
    pub since_heartbeat: Duration,
}

/// Logs why a reload was refused, one line per reason.
pub(super) fn log_refused(err: &Error) {
    for line in err.lines() {
        log::error!("reload refused, the running configuration stays: {line}");
    }
}

/// The answer to a reload asked for during a graceful stop.
pub(super) fn stopping() -> Error {
    Error::Setup {
        what: "reconfigure (the forwarder is stopping)",
        source: io::Error::from(io::ErrorKind::Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::Ordering;

    use crossbeam_channel::{unbounded, Receiver};

    use super::*;
    use crate::serve::metrics::Metrics;
    use crate::serve::permits::Permits;

    /// A handle, the accept loop's end of its channel, and the wake socket's other end.
    fn handle() -> (Handle, Receiver<Control>, UnixStream) {
        let (wake, woken) = UnixStream::pair().unwrap();
        woken.set_nonblocking(true).unwrap();
        let (tx, rx) = unbounded();
        let shared = Arc::new(Shared::new(Metrics::default(), Permits::new(4)));
        let handle = Handle {
            tx,
            wake: Arc::new(wake),
            shared,
        };
        (handle, rx, woken)
    }

    /// The bytes waiting on the wake socket.
    fn wake_ups(woken: &UnixStream) -> usize {
        let mut buf = [0u8; 16];
        let mut n = 0;
        while let Ok(read @ 1..) = (&*woken).read(&mut buf) {
            n += read;
        }
        n
    }

    #[test]
    fn a_stop_request_is_on_the_channel_before_the_loop_is_woken() {
        let (handle, rx, woken) = handle();
        handle.stop();
        assert_eq!(wake_ups(&woken), 1);
        assert!(matches!(rx.try_recv(), Ok(Control::Stop(None))));
        assert!(handle.status().stopping, "stopping from the call on");
    }

    #[test]
    fn a_stop_within_a_time_carries_that_drain_timeout() {
        let (handle, rx, woken) = handle();
        handle.stop_within(Duration::from_millis(1_500));
        assert_eq!(wake_ups(&woken), 1);
        match rx.try_recv() {
            Ok(Control::Stop(drain)) => assert_eq!(drain, Some(Duration::from_millis(1_500))),
            other => panic!("expected a stop, got {other:?}"),
        }
    }

    #[test]
    fn a_reload_asked_while_stopping_is_refused_without_reaching_the_loop() {
        let (handle, rx, _woken) = handle();
        handle.stop();
        rx.try_recv().unwrap();
        let err = handle.reconfigure(Config::default()).unwrap_err();
        assert!(
            err.to_string().contains("the forwarder is stopping"),
            "{err}"
        );
        assert!(rx.try_recv().is_err(), "nothing sent");
    }

    #[test]
    fn an_invalid_configuration_is_refused_on_the_callers_thread_and_counted() {
        let (handle, rx, _woken) = handle();
        let config = Config {
            max_connections: Some(0),
            ..Config::default()
        };
        assert!(
            config.validate().is_err(),
            "the test needs an invalid configuration"
        );
        assert!(handle.reconfigure(config).is_err());
        assert!(rx.try_recv().is_err(), "nothing sent");
        let metrics = &handle.shared.metrics;
        assert_eq!(metrics.reloads.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.reloads_ok.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reload_sent_to_a_forwarder_that_has_returned_says_so() {
        let (handle, rx, _woken) = handle();
        drop(rx);
        let err = handle.reconfigure(Config::default()).unwrap_err();
        assert!(
            err.to_string().contains("the forwarder has stopped"),
            "{err}"
        );
    }

    #[test]
    fn the_status_of_an_idle_forwarder_counts_nothing() {
        let (handle, _rx, _woken) = handle();
        let status = handle.status();
        assert!(!status.stopping);
        assert_eq!((status.listeners, status.active), (0, 0));
    }
}
