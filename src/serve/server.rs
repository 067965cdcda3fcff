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
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, RecvTimeoutError, Sender};
use rustix::event::{poll, PollFd, PollFlags};

use crate::config::{Config, ListenerConfig};
use crate::conn::{self, Job};
use crate::conn_log::LogSink;
use crate::error::Error;
use crate::limits::{self, Permit, Permits};
use crate::pool::Pool;
use crate::registry::Registry;
use crate::route::ListenerState;

/// How long to wait for cut connections to log their last line before exiting anyway.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// Back-off after a failing `accept` (EMFILE and the like): doubles from the first value up to the
/// second, and resets after a success. Without it, a full fd table turns the loop into a busy spin,
/// since the pending client keeps the listener readable.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Requests the accept loop takes from signals and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop accepting, drain, exit.
    Stop,
    /// Re-read the configuration.
    Reload,
}

/// Sends [`Control`] requests to a running server and wakes its poll.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: Sender<Control>,
    wake: Arc<UnixStream>,
}

impl Handle {
    /// Asks the server to stop: accept nothing more, drain, return.
    pub fn stop(&self) {
        self.send(Control::Stop);
    }

    /// Asks the server to re-read its configuration.
    pub fn reload(&self) {
        self.send(Control::Reload);
    }

    fn send(&self, control: Control) {
        let _ = self.tx.send(control);
        // A full wake socket already has a wake-up pending; that is enough.
        let _ = (&*self.wake).write(&[1]);
    }
}

/// How a graceful stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Connections alive when the stop began.
    pub active: usize,
    /// Of those, how many finished on their own within the drain timeout.
    pub finished: usize,
    /// How many were cut when the drain timeout passed.
    pub cut: usize,
}

/// Produces a fresh configuration on reload (re-reading the config file).
pub type Reloader = Box<dyn FnMut() -> Result<Config, Error> + Send>;

/// A bound listener and what its clients get.
#[derive(Debug)]
struct Listening {
    socket: TcpListener,
    /// The bound address (with the real port when configured with port 0).
    addr: SocketAddr,
    /// The configuration new clients get; replaced on reload, the socket kept.
    state: Arc<ListenerState>,
    /// The listener's own cap (`max_connections=` on its route), if any.
    limit: Option<Permits>,
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    listening: Vec<Listening>,
    permits: Permits,
    registry: Arc<Registry>,
    pool: Pool,
    control_rx: Receiver<Control>,
    wake_rx: UnixStream,
    handle: Handle,
    drain_timeout: Duration,
    reloader: Option<Reloader>,
    /// Listener indices that poll reported readable and that may have more clients queued.
    ready: VecDeque<usize>,
    accept_errors: ErrorBackoff,
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
    /// Binds every listener of `config`. Nothing is accepted until [`Server::run`], but clients can
    /// connect at once: the kernel queues them.
    pub fn bind(config: &Config) -> Result<Server, Error> {
        let max = config.max_connections.unwrap_or_else(|| {
            limits::default_max_connections(limits::open_files_limit(), limits::thread_limit())
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
        let states = listener_states(config)?;
        let mut listening = Vec::with_capacity(states.len());
        for state in states {
            listening.push(bind_one(state, &wake_tx)?);
        }
        let (tx, control_rx) = unbounded();
        Ok(Server {
            listening,
            permits: Permits::new(max),
            registry: Arc::new(Registry::default()),
            pool: Pool::default(),
            control_rx,
            wake_rx,
            handle: Handle { tx, wake: wake_tx },
            drain_timeout: config.drain_timeout,
            reloader: None,
            ready: VecDeque::new(),
            accept_errors: ErrorBackoff::default(),
        })
    }

    /// The bound addresses, in configuration order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listening.iter().map(|l| l.addr).collect()
    }

    /// A handle to stop or reload the server from another thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Sets what produces a new configuration on reload.
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.permits.capacity()
    }

    /// Accepts and serves clients until stopped, then drains.
    pub fn run(mut self) -> Result<DrainReport, Error> {
        for listening in &self.listening {
            log_listening(listening);
        }
        self.accept_loop()?;
        Ok(self.drain())
    }

    fn accept_loop(&mut self) -> Result<(), Error> {
        loop {
            while let Ok(control) = self.control_rx.try_recv() {
                if self.apply(control) {
                    return Ok(());
                }
            }
            if self.ready.is_empty() {
                self.poll_listeners()?;
                continue;
            }
            let Some(permit) = self.take_permit() else {
                return Ok(());
            };
            self.accept_one(permit);
        }
    }

    /// Applies a control request; true means stop.
    fn apply(&mut self, control: Control) -> bool {
        match control {
            Control::Stop => true,
            Control::Reload => {
                self.reload();
                false
            }
        }
    }

    fn reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            log::warn!("reload requested, but there is no config file to re-read; ignored");
            return;
        };
        let applied = reloader().and_then(|config| self.switch_to(&config));
        match applied {
            Ok(()) => log::info!(
                "reloaded: {} listener(s); established connections keep their old settings",
                self.listening.len()
            ),
            Err(err) => {
                for line in err.to_string().lines() {
                    log::error!("reload refused, the running configuration stays: {line}");
                }
            }
        }
    }

    /// Switches to `config`: listeners whose address is unchanged keep their socket (no re-bind,
    /// no refused clients) and take the new settings for new connections; new ones are bound;
    /// removed ones close. Nothing changes unless every new listener could be bound.
    fn switch_to(&mut self, config: &Config) -> Result<(), Error> {
        let states = listener_states(config)?;
        let kept = |state: &ListenerState, old: &[Listening]| {
            old.iter()
                .position(|l| l.state.config.listen == state.config.listen)
        };
        // First bind every new address; if one fails, nothing has changed yet.
        let mut fresh = Vec::new();
        for state in &states {
            if kept(state, &self.listening).is_none() {
                let listen = &state.config.listen;
                fresh.push(Some(bind_socket(listen)?));
            } else {
                fresh.push(None);
            }
        }
        let mut old: Vec<Option<Listening>> = std::mem::take(&mut self.listening)
            .into_iter()
            .map(Some)
            .collect();
        let mut next = Vec::with_capacity(states.len());
        for (state, fresh) in states.into_iter().zip(fresh) {
            let position = old.iter().position(|l| {
                l.as_ref()
                    .is_some_and(|l| l.state.config.listen == state.config.listen)
            });
            let listening = match (fresh, position.and_then(|i| old[i].take())) {
                (Some((socket, addr)), _) => Listening {
                    socket,
                    addr,
                    limit: listener_limit(&state, &self.handle.wake),
                    state: Arc::new(state),
                },
                (None, Some(mut kept)) => {
                    if kept.state.config.max_connections != state.config.max_connections {
                        kept.limit = listener_limit(&state, &self.handle.wake);
                    }
                    kept.state = Arc::new(state);
                    kept
                }
                (None, None) => unreachable!("BUG: a listener is neither kept nor bound"),
            };
            next.push(listening);
        }
        for removed in old.into_iter().flatten() {
            log::info!("reload: closing listener {}", removed.addr);
        }
        for listening in &next {
            log_listening(listening);
        }
        self.listening = next;
        self.ready.clear();
        Ok(())
    }

    /// A free connection slot, waiting for one if all are busy; `None` if a stop came meanwhile.
    fn take_permit(&mut self) -> Option<Permit> {
        loop {
            if let Some(permit) = self.permits.try_take() {
                return Some(permit);
            }
            log::debug!(
                "all {} connection slots busy; accepting resumes when one ends",
                self.permits.capacity()
            );
            select! {
                recv(self.permits.receiver()) -> token => {
                    // Cannot fail: `self.permits` owns a sender, so the channel stays connected.
                    if token.is_ok() {
                        return Some(self.permits.permit());
                    }
                }
                recv(self.control_rx) -> control => {
                    if let Ok(control) = control {
                        if self.apply(control) {
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Waits until a listener has a client or a control request arrives.
    fn poll_listeners(&mut self) -> Result<(), Error> {
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
        match poll(&mut fds, None) {
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
            Err(err) if is_transient(&err) => {}
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
        // On Linux an accepted socket does not inherit O_NONBLOCK from the listener, so it is
        // blocking, as the relay's backpressure needs.
        let job = Job {
            entry: self.registry.register(peer, stream),
            permit,
            listener_permit,
            listener_addr: listening.addr,
            listener: Arc::clone(&listening.state),
            pool: self.pool.clone(),
        };
        if let Err(err) = self.pool.execute(Box::new(move || conn::handle(job))) {
            log::warn!("client {peer}: cannot start a worker thread: {err}; closing the client");
        }
    }

    /// Logs an accept failure (rate-limited) and waits before accepting again; a stop request ends
    /// the wait early.
    fn back_off(&mut self, addr: SocketAddr, err: io::Error) {
        let delay = self.accept_errors.failed(addr, &err);
        match self.control_rx.recv_timeout(delay) {
            Ok(control) => {
                // Put it back so the loop handles it in order.
                let _ = self.handle.tx.send(control);
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }

    /// Stops accepting (closing the listeners), waits for live connections up to the drain
    /// timeout, then cuts the rest.
    fn drain(self) -> DrainReport {
        let Server {
            listening,
            registry,
            drain_timeout,
            ..
        } = self;
        drop(listening);
        let active = registry.len();
        log::info!(
            "stopping: accepting no more clients; {active} active connection(s), waiting up to {:?}",
            drain_timeout
        );
        let mut report = DrainReport {
            active,
            finished: active,
            cut: 0,
        };
        if !registry.wait_empty(drain_timeout) {
            report.cut = registry.cut_all();
            report.finished = active.saturating_sub(report.cut);
            registry.wait_empty(CUT_GRACE);
        }
        log::info!(
            "stopped: {} connection(s) finished, {} cut after the {:?} drain timeout",
            report.finished,
            report.cut,
            drain_timeout
        );
        report
    }
}

/// Builds the run-time state of every listener of `config`, opening the log file if any.
fn listener_states(config: &Config) -> Result<Vec<ListenerState>, Error> {
    let global_acl = Arc::new(config.global_acl.clone());
    let log_file = match &config.logfile {
        Some(logfile) => Some(Arc::new(LogSink::open(logfile).map_err(|source| {
            Error::LogFile {
                path: logfile.path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    config
        .listeners
        .iter()
        .map(|listener: &ListenerConfig| {
            ListenerState::new(listener.clone(), Arc::clone(&global_acl), log_file.clone())
                .map_err(|e| Error::Config(vec![e]))
        })
        .collect()
}

fn bind_one(state: ListenerState, wake: &Arc<UnixStream>) -> Result<Listening, Error> {
    let (socket, addr) = bind_socket(&state.config.listen)?;
    Ok(Listening {
        socket,
        addr,
        limit: listener_limit(&state, wake),
        state: Arc::new(state),
    })
}

/// Resolves and binds a listen address; returns the socket and the address actually bound.
fn bind_socket(listen: &crate::addr::HostPort) -> Result<(TcpListener, SocketAddr), Error> {
    let addr = listen.resolve().map_err(|source| Error::ResolveListen {
        addr: listen.to_string(),
        source,
    })?[0];
    let socket = crate::net::bind_listener(addr).map_err(|source| Error::Bind { addr, source })?;
    let addr = socket.local_addr().unwrap_or(addr);
    Ok((socket, addr))
}

fn listener_limit(state: &ListenerState, wake: &Arc<UnixStream>) -> Option<Permits> {
    state
        .config
        .max_connections
        .map(|max| Permits::with_waker(max, Arc::clone(wake)))
}

fn log_listening(listening: &Listening) {
    let cap = listening
        .limit
        .as_ref()
        .map(|l| format!(" (max {} connections)", l.capacity()))
        .unwrap_or_default();
    log::info!(
        "listening on {} -> {}{cap}",
        listening.addr,
        listening.state.describe()
    );
}

/// Errors that concern one client only (it went away before we accepted it): retry at once.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::PROTO.raw_os_error())
}

/// Rate-limited logging and growing delays for accept failures.
#[derive(Debug, Default)]
struct ErrorBackoff {
    delay: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl ErrorBackoff {
    /// Records a failure; logs at most once a second; returns how long to wait.
    fn failed(&mut self, addr: SocketAddr, err: &io::Error) -> Duration {
        let delay = self
            .delay
            .map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
        self.delay = Some(delay);
        let due = self
            .last_log
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if due {
            log::warn!(
                "accept on {addr} failed: {err} ({} more since the last report); retrying in {delay:?}",
                self.suppressed
            );
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        delay
    }

    fn reset(&mut self) {
        self.delay = None;
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
