//! The accept loop: every listener polled on the main thread, a connection slot taken before each
//! `accept`, clients handed to pool workers, and the graceful stop.
//!
//! Listeners are served by one loop over all of them rather than a thread each: one thread can
//! stop accepting everywhere at once when `--max-connections` are busy, take stop and reload
//! requests between accepts without waking blocked threads, and add or remove listeners on reload
//! without starting or stopping threads.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, RecvTimeoutError, Sender};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::config::{format_duration, Config};
use crate::error::Error;
use crate::handoff::Channel;
use crate::log::rinetd::LogSink;
use crate::sys::{clock, limits};

use super::admit::admit;
use super::backoff::{self, ErrorBackoff};
use super::bound::{self, Listening};
use super::clients::{self, Evicted, PerClient};
use super::closer::Closer;
use super::conn;
use super::job::{Context, Job};
use super::listener::{Limits, ListenerState};
use super::metrics::{Ended, Metrics};
use super::permits::{self, Permit, Permits};
use super::pool::Pool;
use super::status::{Shared, HEARTBEAT};
use super::upgrade::{self, HandedOff, TakenOver};

/// How long to wait for cut connections to log their last line before exiting anyway.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// Requests the accept loop takes from its [`Handle`]s.
#[derive(Debug)]
enum Control {
    /// Stop accepting, drain (for this long, or the configured drain timeout), return.
    Stop(Option<Duration>),
    /// Serve this configuration from now on; the result goes back on the channel.
    Reconfigure(Box<Config>, Sender<Result<(), Error>>),
    /// Hand everything to the new process at the other end of the channel (the live upgrade).
    HandOff(Box<Channel>, Sender<Result<HandedOff, Error>>),
}

/// Why the accept loop ended.
#[derive(Debug)]
enum Exit {
    /// A stop request, with its drain timeout if it gave one.
    Stop(Option<Duration>),
    /// Everything was handed to a new process.
    HandedOff,
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
    tx: Sender<Control>,
    wake: Arc<UnixStream>,
    shared: Arc<Shared>,
}

impl Handle {
    /// Asks the forwarder to stop: accept nothing more, let active connections finish for the
    /// configured drain timeout, cut the rest, return its [`DrainReport`].
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
    /// error level, one line each; the running configuration stays.
    pub fn reload_refused(&self, why: &dyn std::fmt::Display) {
        self.shared.metrics.reloaded(false);
        for line in why.to_string().lines() {
            log::error!("reload refused, the running configuration stays: {line}");
        }
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

/// How a graceful stop went: how many connections were active when it began, how many finished
/// within the drain timeout, and how many had to be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections alive when the stop began.
    pub active: usize,
    /// Of those, how many finished on their own within the drain timeout.
    pub finished: usize,
    /// How many were cut when the drain timeout passed.
    pub cut: usize,
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub(crate) struct Server {
    listening: Vec<Listening>,
    permits: Permits,
    /// Counters, live connections and state, shared with the admin endpoint.
    shared: Arc<Shared>,
    /// Where each accepted client is set up (PROXY header, peek, route, upstream connect).
    pool: Pool,
    /// What every connection accepted under the current configuration shares with the server.
    context: Arc<Context>,
    control_rx: Receiver<Control>,
    wake_rx: UnixStream,
    handle: Handle,
    drain_timeout: Duration,
    /// After a stop request, how long to go on accepting (readiness already says no).
    shutdown_grace: Duration,
    /// Listener indices that poll reported readable and that may have more clients queued.
    ready: VecDeque<usize>,
    accept_errors: ErrorBackoff,
    /// What follows the configuration besides the listeners.
    followers: Vec<Box<dyn Follower>>,
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
    /// Binds every listener of `config` (validated), or adopts the socket given for it in
    /// `sockets` (by listener index). Nothing is accepted until [`Server::run`], but clients can
    /// connect at once: the kernel queues them.
    pub(crate) fn bind(
        config: &Config,
        mut sockets: Vec<Option<TcpListener>>,
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
        sockets.resize_with(config.listeners.len(), || None);
        let (per_client, limits) = client_limits(config, max);
        let budget = limits.peek_budget(max);
        log::info!(
            "per client at most {} connections; per listener at most {budget} choosing a route \
             at once, {} per client (a listener with a lower cap of its own says its shares)",
            per_client.limit(),
            clients::peek_share(budget)
        );
        let states = listener_states(config, &shared.metrics, &limits);
        let mut listening = Vec::with_capacity(config.listeners.len());
        for (state, socket) in states.into_iter().zip(sockets) {
            listening.push(Listening::bind(state, socket, &wake_tx)?);
        }
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
        };
        server.publish_listeners();
        Ok(server)
    }

    /// The live upgrade's new side (see `handoff`): takes the listening sockets the old process
    /// at the other end of `channel` offers, binds what it did not offer, then takes its
    /// connections and starts them. Also returns the admin endpoint's socket, if offered.
    pub(crate) fn take_over(
        config: &Config,
        channel: Channel,
    ) -> Result<(Server, TakenOver, Option<TcpListener>), Error> {
        let offer = upgrade::receive_offer(&channel)?;
        let listeners = offer.listeners.len() + usize::from(offer.admin.is_some());
        let assigned = upgrade::assign(config, offer.listeners);
        let handed_in: Vec<bool> = assigned
            .iter()
            .map(|o| o.as_ref().is_some_and(|o| o.handed_in))
            .collect();
        let sockets = assigned.into_iter().map(|o| o.map(|o| o.socket)).collect();
        let mut server = match Server::bind(config, sockets) {
            Ok(server) => server,
            Err(err) => {
                let reason = err
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = channel.send(&upgrade::refusal(reason), &[]);
                return Err(err);
            }
        };
        // Bound by the old process is as good as bound here; only the service manager's
        // sockets stay beyond a reload's reach.
        for (listening, handed_in) in server.listening.iter_mut().zip(handed_in) {
            listening.handed_in = handed_in;
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
    fn publish_listeners(&self) {
        let views = self
            .listening
            .iter()
            .map(|l| (l.addr, Arc::clone(&l.state)))
            .collect();
        self.shared.set_listeners(views);
    }

    /// The bound addresses, in configuration order (useful with port 0).
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listening.iter().map(|l| l.addr).collect()
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
        if self.listening.is_empty() {
            log::warn!("no listener configured: nothing is served until a reload adds one");
        }
        match self.accept_loop()? {
            Exit::Stop(drain) => {
                let drain = drain.unwrap_or(self.drain_timeout);
                Ok(self.drain(drain))
            }
            Exit::HandedOff => {
                // The released copy threads leave at once; wait for them so none is cut short.
                wait_empty_beating(&self.shared, CUT_GRACE);
                Ok(DrainReport::default())
            }
        }
    }

    /// The live upgrade's old side (see `handoff`): runs on the accept loop, which accepts
    /// nothing meanwhile.
    fn hand_off(&mut self, channel: Channel) -> Result<HandedOff, Error> {
        let listeners: Vec<(SocketAddr, BorrowedFd<'_>, bool)> = self
            .listening
            .iter()
            .map(|l| (l.addr, l.socket.as_fd(), l.handed_in))
            .collect();
        let admin = self
            .followers
            .iter()
            .find_map(|f| f.listening())
            .and_then(|socket| Some((socket.local_addr().ok()?, socket.as_fd())));
        upgrade::hand_off(channel, &listeners, admin, &self.shared)
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

    /// Switches to `config`, validated already by [`Handle::reconfigure`].
    fn reconfigure(&mut self, config: &Config) -> Result<(), Error> {
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
        let states = listener_states(config, &self.shared.metrics, &limits);
        if let Err(err) = bound::switch(&mut self.listening, states, &self.handle.wake) {
            self.followers.iter_mut().for_each(|f| f.abandon());
            return Err(err);
        }
        self.followers.iter_mut().for_each(|f| f.commit());
        self.publish_listeners();
        self.context = Arc::new(Context {
            closer: self.context.closer.clone(),
            copy_pool: self.context.copy_pool.clone(),
            log_file,
            per_client,
        });
        self.shutdown_grace = config.shutdown_grace;
        // Connections accepted from now on are counted afresh (a new per-client table in the
        // new context); those before keep their places.
        for listening in &self.listening {
            listening.log();
        }
        self.ready.clear();
        Ok(())
    }

    /// A free connection slot, waiting for one (up to a heartbeat) if all are busy; `None` if
    /// none came, or a control request did (it is put back for the loop to handle in order).
    fn take_permit(&mut self) -> Option<Permit> {
        if let Some(permit) = self.permits.try_take() {
            return Some(permit);
        }
        log::debug!(
            "all {} connection slots busy; accepting resumes when one ends",
            self.permits.capacity()
        );
        self.shared.set_paused(true);
        let taken = select! {
            // Cannot fail: `self.permits` owns a sender, so the channel stays connected.
            recv(self.permits.receiver()) -> token => token.ok().map(|()| self.permits.permit()),
            recv(self.control_rx) -> control => {
                if let Ok(control) = control {
                    let _ = self.handle.tx.send(control);
                }
                None
            }
            default(HEARTBEAT) => None,
        };
        self.shared.set_paused(false);
        taken
    }

    /// Waits until a listener has a client or a control request arrives, or a heartbeat (or
    /// `until`, if sooner) passes.
    fn poll_listeners(&mut self, until: Option<Instant>) -> Result<(), Error> {
        let mut fds = Vec::with_capacity(self.listening.len() + 1);
        fds.push(PollFd::new(&self.wake_rx, PollFlags::IN));
        let mut indices = Vec::with_capacity(self.listening.len());
        for (index, listening) in self.listening.iter().enumerate() {
            // A listener at its own cap is not polled: its clients wait in its backlog.
            if listening.limit.as_ref().is_some_and(Permits::is_paused) {
                continue;
            }
            fds.push(PollFd::new(&listening.socket, PollFlags::IN));
            indices.push(index);
        }
        let mut wait = HEARTBEAT;
        if let Some(until) = until {
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        let timeout = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(errno) => {
                return Err(Error::Setup {
                    what: "poll the listeners",
                    source: errno.into(),
                })
            }
        }
        let readable: Vec<usize> = fds
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, fd)| !fd.revents().is_empty())
            .map(|(i, _)| indices[i - 1])
            .collect();
        if !fds[0].revents().is_empty() {
            self.drain_wake_socket();
        }
        self.ready.extend(readable);
        Ok(())
    }

    fn drain_wake_socket(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
    }

    /// Accepts one client from the first ready listener and hands it to a worker.
    fn accept_one(&mut self, permit: Permit) {
        let Some(index) = self.ready.pop_front() else {
            return;
        };
        let listening = &self.listening[index];
        let listener_permit = match &listening.limit {
            Some(limit) => match limit.take_or_pause() {
                Some(local) => Some(local),
                // At its own cap: clients wait in its backlog; it is polled again when a slot frees.
                None => return,
            },
            None => None,
        };
        match listening.socket.accept() {
            Ok((stream, peer)) => {
                self.accept_errors.reset();
                // More clients may be queued: keep this listener in the rotation.
                self.ready.push_back(index);
                self.dispatch(index, stream, peer, permit, listener_permit);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if backoff::is_transient(&err) => {}
            Err(err) => {
                let addr = listening.addr;
                drop(permit);
                self.back_off(addr, err);
            }
        }
    }

    fn dispatch(
        &self,
        index: usize,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        permit: Permit,
        listener_permit: Option<Permit>,
    ) {
        let listening = &self.listening[index];
        listening
            .state
            .stats
            .accepted
            .fetch_add(1, Ordering::Relaxed);
        // On Linux an accepted socket does not inherit O_NONBLOCK from the listener, so it is
        // blocking, as the relay's backpressure needs.
        let registration = self.shared.registry.register(
            peer,
            stream,
            Arc::clone(&listening.state),
            listening.addr,
        );
        let admission = admit(&self.context.per_client, &registration.record);
        let slots = (permit, listener_permit);
        let job = Job::new(&self.context, registration, slots, admission);
        let unrouted = Arc::clone(&listening.state.unrouted);
        if let Err(err) = self
            .pool
            .execute(Box::new(move || conn::serve(job, Vec::new())))
        {
            // Thread creation failed (RLIMIT_NPROC, memory): this client is closed; the rest go on.
            unrouted.ended(Ended::Error);
            log::warn!("client {peer}: cannot start a worker thread: {err}; closing the client");
        }
    }

    /// Logs an accept failure (rate-limited) and waits before accepting again; a stop request ends
    /// the wait early.
    fn back_off(&mut self, addr: SocketAddr, err: io::Error) {
        self.shared.metrics.accept_failed(&err);
        let delay = self.accept_errors.failed(addr, &err);
        match self.control_rx.recv_timeout(delay) {
            Ok(control) => {
                // Put it back so the loop handles it in order.
                let _ = self.handle.tx.send(control);
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
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
            ..
        } = self;
        drop(listening);
        shared.set_listeners(Vec::new());
        let registry = &shared.registry;
        let active = registry.len();
        let started = Instant::now();
        log::info!(
            "stopping: accepting no more clients; {active} active connection(s), waiting up to {}",
            format_duration(drain_timeout)
        );
        let silent = evict_peeking(&shared);
        if silent > 0 {
            log::info!(
                "stopping: {silent} connection(s) still choosing a route closed at once (nothing \
                 of theirs is in flight)"
            );
        }
        let mut report = DrainReport {
            active,
            finished: active,
            cut: 0,
        };
        if !wait_empty_beating(&shared, drain_timeout) {
            report.cut = registry.cut_all();
            report.finished = active.saturating_sub(report.cut);
            wait_empty_beating(&shared, CUT_GRACE);
        }
        log::info!(
            "stopped: {} connection(s) finished, {} cut; drained in {} (drain timeout {})",
            report.finished,
            report.cut,
            format_duration(Duration::from_millis(started.elapsed().as_millis() as u64)),
            format_duration(drain_timeout)
        );
        report
    }
}

/// Waits until every connection has ended or `timeout` passes (true if all ended), in heartbeats:
/// the process is busy draining, not stuck, and `/health` should say so.
fn wait_empty_beating(shared: &Shared, timeout: Duration) -> bool {
    let deadline = clock::deadline_in(timeout);
    loop {
        shared.beat();
        let left = deadline.saturating_duration_since(Instant::now());
        if shared.registry.wait_empty(left.min(HEARTBEAT)) {
            return true;
        }
        if left <= HEARTBEAT {
            return false;
        }
    }
}

/// Closes every connection still in the peek phase (silent, or sending what routing reads): a
/// graceful stop waits only for established connections. Returns how many.
fn evict_peeking(shared: &Shared) -> usize {
    shared
        .registry
        .snapshot()
        .iter()
        .map(|live| live.listener.peeking.evict_all(Evicted::Stopping))
        .sum()
}

/// Builds the run-time state of every listener of `config`.
fn listener_states(config: &Config, metrics: &Metrics, limits: &Limits) -> Vec<ListenerState> {
    let global_acl = Arc::new(config.acl.clone());
    config
        .listeners
        .iter()
        .map(|listener| {
            ListenerState::new(listener.clone(), Arc::clone(&global_acl), metrics, limits)
        })
        .collect()
}

/// The per-client and peek-phase limits of `config` under a connection cap of `max`: as
/// configured, else one client may hold three quarters of the cap (of each listener's own cap
/// too, where lower), and a quarter of a listener's cap may be choosing a route at once (the
/// process cap's quarter split among the listeners that read first), half of that one client's
/// (see `clients` and `Limits`).
fn client_limits(config: &Config, max: usize) -> (Arc<PerClient>, Limits) {
    let limits = Limits::new(config, max);
    let per_client = config
        .max_connections_per_client
        .unwrap_or_else(|| clients::client_share(max));
    (PerClient::new(per_client, limits.v6_prefix), limits)
}

/// Logs why a reload was refused, one line per reason.
fn log_refused(err: &Error) {
    for line in err.to_string().lines() {
        log::error!("reload refused, the running configuration stays: {line}");
    }
}

/// The answer to a reload asked for during a graceful stop.
fn stopping() -> Error {
    Error::Setup {
        what: "reconfigure (the forwarder is stopping)",
        source: io::Error::from(io::ErrorKind::Interrupted),
    }
}

/// Opens rinetd's log file, if `config` has one.
fn open_log_file(config: &Config) -> Result<Option<Arc<LogSink>>, Error> {
    let Some(logfile) = &config.logfile else {
        return Ok(None);
    };
    let sink = LogSink::open(logfile).map_err(|source| Error::LogFile {
        path: logfile.path.clone(),
        source,
    })?;
    Ok(Some(Arc::new(sink)))
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
