//! The server: its listeners bound (or taken over from the old process), and the accept loop,
//! which takes control requests between accepts until a stop or a live upgrade. What one round
//! does is in `accept`, a reload in `reload`, the graceful stop in `drain`; the `Handle` that
//! sends the requests is in `handle`.
//!
//! Listeners are served by one loop over all of them rather than a thread each: one thread can
//! stop accepting everywhere at once when `--max-connections` are busy, take stop and reload
//! requests between accepts without waking blocked threads, and add or remove listeners on reload
//! without starting or stopping threads.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use socket2::Socket;

use crate::config::{Config, Endpoint, SocketPath, Transport};
use crate::error::Error;
use crate::sys::unix::SocketFile;
use crate::sys::{clock, limits};
use crate::upgrade::Channel;

use super::backoff::ErrorBackoff;
use super::bound::Listening;
use super::clients;
use super::closer::Closer;
use super::configured::{client_limits, listener_states, open_log_file, Follower};
use super::drain::{self, wait_empty_beating, DrainReport, CUT_GRACE};
use super::handle::{stopping, Control, Handle};
use super::job::{Context, Job};
use super::listener::Rosters;
use super::metrics::Metrics;
use super::on_down;
use super::permits::{self, Permits};
use super::pool::Pool;
use super::status::Shared;
use super::udp::{Udp, UdpStart};
use super::upgrade;
use crate::upgrade::{HandedOff, TakenOver};

/// Why the accept loop ended.
#[derive(Debug)]
enum Exit {
    /// A stop request, with its drain timeout if it gave one.
    Stop(Option<Duration>),
    /// Everything was handed to a new process.
    HandedOff,
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub(crate) struct Server {
    pub(super) listening: Vec<Listening>,
    pub(super) permits: Permits,
    /// Counters, live connections and state, shared with the admin endpoint.
    pub(super) shared: Arc<Shared>,
    /// Where each accepted client is set up (PROXY header, peek, route, upstream connect).
    pub(super) pool: Pool,
    /// What every connection accepted under the current configuration shares with the server.
    pub(super) context: Arc<Context>,
    pub(super) control_rx: Receiver<Control>,
    pub(super) wake_rx: UnixStream,
    pub(super) handle: Handle,
    pub(super) drain_timeout: Duration,
    /// After a stop request, how long to go on accepting (readiness already says no).
    pub(super) shutdown_grace: Duration,
    /// Listener indices that poll reported readable and that may have more clients queued.
    pub(super) ready: VecDeque<usize>,
    pub(super) accept_errors: ErrorBackoff,
    /// What follows the configuration besides the listeners.
    pub(super) followers: Vec<Box<dyn Follower>>,
    /// The UDP listeners and their flows.
    pub(super) udp: Udp,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listening", &self.listening)
            .field("permits", &self.permits)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds every listener of `config` (validated), or takes the socket handed in for it in
    /// `sockets` (by listener index). Nothing is accepted until [`Server::run`], but clients can
    /// connect at once: the kernel queues them.
    pub(crate) fn bind(config: &Config, sockets: Vec<Option<Socket>>) -> Result<Server, Error> {
        let mut server = Server::bind_taking(config, sockets, Vec::new())?;
        server.udp.commit();
        Ok(server)
    }

    /// Like [`Server::bind`], with the UDP listen sockets a live upgrade handed over (one per UDP
    /// listener of `config`, `None`: bound here); the UDP listeners are ready, and start reading
    /// at `self.udp.commit()`.
    fn bind_taking(
        config: &Config,
        mut sockets: Vec<Option<Socket>>,
        udp_sockets: Vec<Option<UdpSocket>>,
    ) -> Result<Server, Error> {
        let max = config.max_connections.unwrap_or_else(|| {
            permits::default_max_connections(limits::open_files_limit(), limits::thread_limit())
        });
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(|source| Error::Setup {
            what: "create the wake-up socket pair",
            source,
        })?;
        for end in [&wake_tx, &wake_rx] {
            end.set_nonblocking(true).map_err(|source| Error::Setup {
                what: "make the wake-up socket non-blocking",
                source,
            })?;
        }
        let wake_tx = Arc::new(wake_tx);
        let log_file = open_log_file(config)?;
        let permits = Permits::new(max);
        let shared = Arc::new(Shared::new(Metrics::default(), permits.clone()));
        shared.checker.on_change(on_down::hook(&shared.registry));
        sockets.resize_with(config.listeners.len(), || None);
        // Sockets are handed in for TCP listeners only; the UDP ones are bound by `Udp`.
        let sockets = (config.listeners.iter().zip(sockets))
            .filter(|(listener, _)| listener.transport == Transport::Tcp)
            .map(|(_, socket)| socket);
        let (per_client, limits) = client_limits(config, max);
        let budget = limits.peek_budget(max);
        log::info!(
            "per client at most {} connections; per listener at most {budget} choosing a route \
             at once, {} per client (a listener with a lower cap of its own says its shares)",
            per_client.limit(),
            clients::peek_share(budget)
        );
        let rosters = Rosters::new(&shared.checker, &[]);
        let states = listener_states(config, &shared.metrics, &limits, &rosters);
        let mut listening = Vec::with_capacity(config.listeners.len());
        for (state, socket) in states.into_iter().zip(sockets) {
            listening.push(Listening::bind(state, socket, &wake_tx)?);
        }
        let mut udp = Udp::new(Arc::clone(&shared.udp));
        let udp_start = UdpStart {
            metrics: &shared.metrics,
            log_file: log_file.clone(),
            offered: udp_sockets,
        };
        udp.prepare(config, udp_start)?;
        let (tx, control_rx) = unbounded();
        let handle = Handle {
            tx,
            wake: wake_tx,
            shared: Arc::clone(&shared),
        };
        let server = Server {
            listening,
            permits,
            shared,
            pool: Pool::default(),
            context: Arc::new(Context {
                closer: start_closer(),
                copy_pool: Pool::default(),
                log_file,
                per_client,
            }),
            control_rx,
            wake_rx,
            handle,
            drain_timeout: config.drain_timeout,
            shutdown_grace: config.shutdown_grace,
            ready: VecDeque::new(),
            accept_errors: ErrorBackoff::default(),
            followers: Vec::new(),
            udp,
        };
        server.publish_listeners();
        Ok(server)
    }

    /// The live upgrade's new side (see `upgrade`): takes the listening sockets the old process
    /// at the other end of `channel` offers, binds what it did not offer, then takes its
    /// connections and starts them. Also returns the admin endpoint's socket, if offered.
    pub(crate) fn take_over(
        config: &Config,
        channel: Channel,
    ) -> Result<(Server, TakenOver, Option<TcpListener>), Error> {
        let offer = upgrade::receive_offer(&channel)?;
        let listeners =
            offer.listeners.len() + offer.udp.len() + usize::from(offer.admin.is_some());
        let assigned = upgrade::assign(config, offer.listeners);
        let udp_sockets = upgrade::assign_udp(config, offer.udp);
        let handed_in: Vec<bool> = (config.listeners.iter().zip(&assigned))
            .filter(|(listener, _)| listener.transport == Transport::Tcp)
            .map(|(_, o)| o.as_ref().is_some_and(|o| o.handed_in))
            .collect();
        let sockets = assigned.into_iter().map(|o| o.map(|o| o.socket)).collect();
        let mut server = match Server::bind_taking(config, sockets, udp_sockets) {
            Ok(server) => server,
            Err(err) => {
                let reason = err.lines().into_iter().next().unwrap_or_default();
                let _ = channel.send(&upgrade::refusal(reason), &[]);
                return Err(err);
            }
        };
        // Bound by the old process is as good as bound here; only the service manager's
        // sockets stay beyond a reload's reach.
        for (listening, handed_in) in server.listening.iter_mut().zip(handed_in) {
            listening.handed_in = handed_in;
            if let (false, Endpoint::Unix(SocketPath::Path(path))) = (handed_in, &listening.addr) {
                listening.file = SocketFile::adopt(path);
            }
        }
        server.shared.registry.continue_after(offer.next_id);
        let taker = upgrade::Taker {
            listening: &server.listening,
            shared: &server.shared,
            pool: &server.pool,
            context: &server.context,
            gone: Default::default(),
        };
        let taken = upgrade::take_connections(&taker, channel, listeners)?;
        // The old process reads its UDP sockets no more: this one does from now on.
        server.udp.commit();
        Ok((server, taken, offer.admin))
    }

    /// Adds something that follows every reconfiguration (see [`Follower`]).
    pub(crate) fn follow(&mut self, follower: Box<dyn Follower>) {
        self.followers.push(follower);
    }

    /// The state shared with watchers (the admin endpoint).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Tells watchers which listeners are served now.
    pub(super) fn publish_listeners(&self) {
        let views = self
            .listening
            .iter()
            .map(|l| (l.addr.clone(), Arc::clone(&l.state)))
            .collect();
        self.shared.set_listeners(views);
    }

    /// The bound addresses of the IP listeners, in configuration order (useful with port 0).
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listening.iter().filter_map(|l| l.addr.ip()).collect()
    }

    /// The bound addresses of the UDP listeners, in configuration order.
    pub(crate) fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.local_addrs()
    }

    /// A handle to stop or reconfigure the server from another thread.
    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The connection cap in force.
    pub(crate) fn max_connections(&self) -> usize {
        self.permits.capacity()
    }

    /// Accepts and serves clients until stopped, then drains (or, handed over, returns at once).
    pub(crate) fn run(mut self) -> Result<DrainReport, Error> {
        for listening in &self.listening {
            listening.log();
        }
        self.udp.log();
        if self.listening.is_empty() && self.udp.local_addrs().is_empty() {
            log::warn!("no listener configured: nothing is served until a reload adds one");
        }
        let checker = self.shared.checker.clone();
        let exit = self.accept_loop();
        if matches!(exit, Ok(Exit::HandedOff) | Err(_)) {
            checker.stop();
        }
        let report = match exit? {
            Exit::Stop(drain) => {
                let drain = drain.unwrap_or(self.drain_timeout);
                self.drain(drain)
            }
            Exit::HandedOff => {
                // The released copy threads leave at once; wait for them so none is cut short.
                wait_empty_beating(&self.shared, CUT_GRACE);
                DrainReport::default()
            }
        };
        checker.stop();
        Ok(report)
    }

    /// The live upgrade's old side (see `upgrade`): runs on the accept loop, which accepts
    /// nothing meanwhile.
    fn hand_off(&mut self, channel: Channel) -> Result<HandedOff, Error> {
        let offering = upgrade::Offering {
            streams: (self.listening.iter())
                .map(|l| (l.addr.clone(), l.socket.as_fd(), l.handed_in))
                .collect(),
            // From here on datagrams wait in the sockets, for whichever process goes on.
            udp: self.udp.pause(),
            admin: (self.followers.iter())
                .find_map(|f| f.listening())
                .and_then(|socket| Some((socket.local_addr().ok()?, socket.as_fd()))),
        };
        let handed = upgrade::hand_off(channel, &offering, &self.shared);
        match &handed {
            Ok(_) => {
                self.udp.handed_over();
                // The new process serves the Unix sockets' files now: they stay.
                for file in self.listening.iter_mut().filter_map(|l| l.file.as_mut()) {
                    file.keep();
                }
            }
            Err(_) => self.udp.resume(),
        }
        handed
    }

    /// Accepts until a stop request (and its grace period) is over, or everything was handed
    /// over.
    fn accept_loop(&mut self) -> Result<Exit, Error> {
        let mut stop: Option<(Instant, Option<Duration>)> = None;
        loop {
            self.shared.beat();
            while let Ok(control) = self.control_rx.try_recv() {
                let drain = match self.apply(control) {
                    None => continue,
                    Some(Exit::HandedOff) => return Ok(Exit::HandedOff),
                    Some(Exit::Stop(drain)) => drain,
                };
                {
                    if stop.is_some() || self.shutdown_grace.is_zero() {
                        return Ok(Exit::Stop(drain));
                    }
                    log::info!(
                        "stopping: not ready; accepting for {:?} more before draining",
                        self.shutdown_grace
                    );
                    stop = Some((clock::deadline_in(self.shutdown_grace), drain));
                }
            }
            if let Some((deadline, drain)) = stop {
                if Instant::now() >= deadline {
                    return Ok(Exit::Stop(drain));
                }
            }
            if self.ready.is_empty() {
                self.poll_listeners(stop.map(|(deadline, _)| deadline))?;
                continue;
            }
            if let Some(permit) = self.take_permit() {
                self.accept_one(permit);
            }
        }
    }

    /// Applies a control request; `Some` means the accept loop ends.
    fn apply(&mut self, control: Control) -> Option<Exit> {
        match control {
            Control::Stop(drain) => Some(Exit::Stop(drain)),
            Control::Reconfigure(_, reply) if self.shared.is_stopping() => {
                log::warn!("reload refused: stopping");
                let _ = reply.send(Err(stopping()));
                None
            }
            Control::Reconfigure(config, reply) => {
                let _ = reply.send(self.reconfigure(&config));
                None
            }
            Control::HandOff(channel, reply) => {
                let result = self.hand_off(*channel);
                let handed = result.is_ok();
                if let Err(err) = &result {
                    log::error!("upgrade failed: {err}; still serving everything");
                    // Clients queued meanwhile are accepted now.
                    self.ready.extend(0..self.listening.len());
                }
                let _ = reply.send(result);
                handed.then_some(Exit::HandedOff)
            }
        }
    }

    /// Stops accepting (closing the listeners), waits for live connections up to `drain_timeout`,
    /// then cuts the rest.
    fn drain(self, drain_timeout: Duration) -> DrainReport {
        // The followers (the admin endpoint) live until the drain is over: readiness says 503
        // through all of it.
        let Server {
            listening,
            shared,
            followers: _followers,
            mut udp,
            ..
        } = self;
        // A flow has nothing in flight to wait for: the UDP listeners stop first, at once.
        udp.stop();
        drain::drain(listening, &shared, drain_timeout)
    }
}

/// Checks at compile time that what crosses threads can.
#[allow(dead_code, reason = "compile-time assertion only")]
fn assert_send_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Handle>();
    sync::<Handle>();
    send::<Server>();
    send::<Job>();
}

/// The closing thread, or `None` (connections then end on their copy threads) if it cannot start.
fn start_closer() -> Option<Closer> {
    Closer::start()
        .map_err(|err| {
            log::warn!("cannot start the closing thread: {err}; copy threads log instead")
        })
        .ok()
}
