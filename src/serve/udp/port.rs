//! One UDP listener at run time: its socket, the settings new flows take (replaced by a reload,
//! the socket and the flows kept), its flows; the thread that receives every datagram sent to it
//! and hands each to its client's flow, setting one up for a new client; and each flow's reply
//! thread, which relays the upstream's datagrams back until the flow ends.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{Host, Listener, Route, Rule, DEFAULT_MAX_FLOWS, DEFAULT_UDP_IDLE_TIMEOUT};
use crate::log::rinetd::{LogRecord, LogResult, LogSink};
use crate::route::access;
use crate::serve::metrics::{UdpDrop, UdpStats};
use crate::sys::datagram::{self, Wake, MAX_DATAGRAM};
use crate::sys::resolve;
use crate::sys::sync::lock;

use super::flow::{Ending, RinetdLog, UdpFlow};
use super::quiet::OncePerMinute;
use super::table::FlowTable;

/// After a live upgrade, how long a flow of the old process must have moved nothing before it
/// ends (its replies in flight have arrived and been relayed), and the longest the old process
/// waits for that.
const LINGER_QUIET: Duration = Duration::from_millis(500);
const LINGER_MOST: Duration = Duration::from_secs(2);

/// The receiving thread's states.
const RUNNING: u8 = 0;
/// Reads nothing: a live upgrade is handing the socket over (datagrams wait in its queue).
const PAUSED: u8 = 1;
const STOPPING: u8 = 2;

/// What a new flow is set up with: the listener as configured, the global allow/deny rules and
/// rinetd's log file.
#[derive(Debug)]
pub(super) struct FlowSetup {
    pub(super) config: Listener,
    pub(super) global_acl: Arc<Vec<Rule>>,
    pub(super) log_file: Option<Arc<LogSink>>,
    /// Which upstream the next flow takes (round-robin, one step per flow).
    next: AtomicUsize,
}

impl FlowSetup {
    pub(super) fn new(
        config: Listener,
        global_acl: Arc<Vec<Rule>>,
        log_file: Option<Arc<LogSink>>,
    ) -> FlowSetup {
        FlowSetup {
            config,
            global_acl,
            log_file,
            next: AtomicUsize::new(0),
        }
    }

    /// The listener's one route (a UDP listener has exactly one; validated).
    fn route(&self) -> Option<&Route> {
        self.config.routes.first()
    }

    /// The cap on flows at once.
    pub(super) fn max_flows(&self) -> usize {
        self.config.max_flows.unwrap_or(DEFAULT_MAX_FLOWS)
    }
}

/// A UDP listener, shared by its receiving thread and its flows' reply threads.
#[derive(Debug)]
pub(super) struct UdpPort {
    pub(super) socket: UdpSocket,
    /// The bound address.
    pub(super) addr: SocketAddr,
    /// The listener as written (`ADDR:PORT/udp`): its metrics label.
    pub(super) key: String,
    setup: Mutex<Arc<FlowSetup>>,
    pub(super) table: FlowTable,
    pub(super) stats: Arc<UdpStats>,
    /// [`RUNNING`], [`PAUSED`] or [`STOPPING`]; the receiving thread looks at it when woken.
    state: AtomicU8,
    wake: Wake,
    /// Why the flows end when it stops (the first reason given).
    stop_as: OnceLock<Ending>,
    denied: OncePerMinute,
    /// When the cap was last warned about (the same once-a-minute rule, keyed by nothing).
    full_warned: OncePerMinute,
    next_id: AtomicU64,
}

impl UdpPort {
    pub(super) fn new(
        socket: UdpSocket,
        setup: FlowSetup,
        stats: Arc<UdpStats>,
    ) -> std::io::Result<UdpPort> {
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(UdpPort {
            socket,
            addr,
            key: setup.config.key(),
            table: FlowTable::new(setup.max_flows()),
            setup: Mutex::new(Arc::new(setup)),
            stats,
            state: AtomicU8::new(RUNNING),
            wake: Wake::new()?,
            stop_as: OnceLock::new(),
            denied: OncePerMinute::new(Instant::now()),
            full_warned: OncePerMinute::new(Instant::now()),
            next_id: AtomicU64::new(1),
        })
    }

    /// What new flows take from now on; flows set up before keep theirs.
    pub(super) fn reconfigure(&self, setup: FlowSetup) {
        self.table.set_cap(setup.max_flows());
        *lock(&self.setup) = Arc::new(setup);
    }

    pub(super) fn setup(&self) -> Arc<FlowSetup> {
        Arc::clone(&lock(&self.setup))
    }

    /// Asks the receiving thread to stop and end every flow for `why` (the first reason given
    /// wins). The socket is left as it is: after a live upgrade, it is the new process's too.
    pub(super) fn stop(&self, why: Ending) {
        let _ = self.stop_as.set(why);
        self.set_state(STOPPING);
    }

    /// Stops reading the socket (a live upgrade hands it over); datagrams queue meanwhile. The
    /// flows carry on relaying replies.
    pub(super) fn pause(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, PAUSED, Ordering::SeqCst, Ordering::SeqCst);
        self.wake.wake();
    }

    /// Reads the socket again after a [`UdpPort::pause`] (the upgrade did not happen).
    pub(super) fn resume(&self) {
        let _ = self
            .state
            .compare_exchange(PAUSED, RUNNING, Ordering::SeqCst, Ordering::SeqCst);
        self.wake.wake();
    }

    fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
        self.wake.wake();
    }

    /// The receiving thread: every datagram to its client's flow, until stopped; then every
    /// flow ends, each logged by its own thread, which this waits for. Handed over by a live
    /// upgrade, the flows first get the time their replies in flight need.
    pub(super) fn receive(self: Arc<UdpPort>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let socket = match self.state.load(Ordering::SeqCst) {
                RUNNING => Some(&self.socket),
                PAUSED => None,
                _ => break,
            };
            match datagram::wait(socket, &self.wake) {
                Ok(false) if socket.is_some() => self.receive_queued(&mut buf),
                Ok(_) => {}
                Err(err) => {
                    log::warn!(
                        "udp listener {}: waiting for datagrams failed: {err}",
                        self.key
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let why = self.stop_as.get().copied().unwrap_or(Ending::Stopped);
        if why == Ending::Upgraded {
            self.table.linger(LINGER_QUIET, LINGER_MOST);
        }
        self.table.end_all(why);
    }

    /// Receives and forwards the datagrams queued, a bounded batch, so a pause or a stop is seen
    /// between batches.
    fn receive_queued(self: &Arc<UdpPort>, buf: &mut [u8]) {
        for _ in 0..64 {
            match datagram::try_receive_from(&self.socket, buf) {
                Ok(got) if got.truncated() => self.stats.dropped(UdpDrop::Oversize),
                Ok(got) => {
                    if let Some(client) = got.from {
                        self.forward(client, &buf[..got.len]);
                    }
                }
                Err(err) if datagram::is_timeout(&err) => return,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("udp listener {}: receive failed: {err}", self.key);
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
            }
            if self.state.load(Ordering::SeqCst) != RUNNING {
                return;
            }
        }
    }

    /// Sends a client's datagram on its flow, setting one up if it has none.
    fn forward(self: &Arc<UdpPort>, client: SocketAddr, payload: &[u8]) {
        if let Some(flow) = self.table.touch(client) {
            flow.send_upstream(&self.stats, payload);
            return;
        }
        let setup = self.setup();
        let Some(route) = setup.route() else {
            return;
        };
        if let Err(refusal) = access::check(&setup.global_acl, &route.acl, client.ip()) {
            self.stats.dropped(UdpDrop::Denied);
            if self.denied.should_log(client.ip(), Instant::now()) {
                log::info!(
                    "udp listener {}: client {client} refused by {refusal} (its datagrams are \
                     dropped; logged once a minute)",
                    self.key
                );
                log_refusal(&setup, route, client, LogResult::refused(&refusal));
            }
            return;
        }
        match self.start_flow(&setup, route, client) {
            Ok(flow) => flow.send_upstream(&self.stats, payload),
            Err(why) => {
                self.stats.dropped(UdpDrop::SendFailed);
                log::debug!("udp listener {}: no flow for {client}: {why}", self.key);
            }
        }
    }

    /// Sets up `client`'s flow: the next upstream, a socket connected to it (an address at once;
    /// a name is resolved and connected by the flow's own thread, so a slow resolver holds up
    /// that client alone), its reply thread; the flow idle longest is evicted first if the table
    /// is full.
    fn start_flow(
        self: &Arc<UdpPort>,
        setup: &FlowSetup,
        route: &Route,
        client: SocketAddr,
    ) -> Result<Arc<UdpFlow>, String> {
        if route.upstreams.is_empty() {
            return Err("the route has no upstream".into());
        }
        let index = setup.next.fetch_add(1, Ordering::Relaxed) % route.upstreams.len();
        let upstream = &route.upstreams[index];
        let socket = match &upstream.host {
            Host::Ip(ip) => Some(
                datagram::connect(SocketAddr::new(*ip, upstream.port), route.src)
                    .map_err(|err| format!("cannot connect to {upstream}: {err}"))?,
            ),
            _ => None,
        };
        if let Some(evicted) = self.table.make_room() {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            if self.full_warned.should_log(self.addr.ip(), Instant::now()) {
                log::warn!(
                    "udp listener {}: {} flows open, its max_flows: the flow idle longest makes \
                     room for each new client (flow #{} of {} first; its line says evicted; \
                     warned once a minute)",
                    self.key,
                    self.table.cap(),
                    evicted.id,
                    evicted.client
                );
            }
        }
        let flow = Arc::new(UdpFlow::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            client,
            upstream.clone(),
            route.idle_timeout.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT),
            setup.log_file.as_ref().map(|sink| RinetdLog {
                sink: Arc::clone(sink),
                listen: setup.config.listen.clone(),
            }),
        ));
        if let Some(socket) = socket {
            flow.connected(socket, &self.stats);
        }
        let (port, replies, src) = (Arc::clone(self), Arc::clone(&flow), route.src);
        // Counted active before its thread runs, which gives the place back at its end.
        self.stats.flows_active.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("udp-flow".into())
            .spawn(move || port.relay_replies(replies, src));
        let thread = spawned.map_err(|err| {
            self.stats.flows_active.fetch_sub(1, Ordering::Relaxed);
            format!("cannot start its thread: {err}")
        })?;
        self.stats.flows.fetch_add(1, Ordering::Relaxed);
        self.table.insert(Arc::clone(&flow), thread);
        Ok(flow)
    }

    /// Resolves and connects a flow whose upstream is a name (on the flow's own thread); the
    /// flow ends as `error` if that fails.
    fn connect_by_name(&self, flow: &Arc<UdpFlow>, src: Option<IpAddr>) -> Result<(), Ending> {
        let upstream = &flow.upstream_name;
        let connected = resolve::resolve(&upstream.host.to_string(), upstream.port)
            .map_err(|err| format!("cannot resolve {upstream}: {err}"))
            .and_then(|addrs| {
                let addr = addrs.first().copied();
                addr.ok_or_else(|| format!("{upstream} resolves to no address"))
            })
            .and_then(|addr| {
                datagram::connect(addr, src)
                    .map_err(|err| format!("cannot connect to {upstream} ({addr}): {err}"))
            });
        match connected {
            Ok(socket) => {
                flow.connected(socket, &self.stats);
                Ok(())
            }
            Err(why) => {
                log::debug!("udp flow #{} of {}: {why}", flow.id, flow.client);
                flow.not_connected(&self.stats);
                self.table.remove(flow, Ending::Error);
                Err(flow.ending().unwrap_or(Ending::Error))
            }
        }
    }

    /// A flow's reply thread: relays each of the upstream's datagrams to the client, from the
    /// listen socket, until the flow is ended (idle, evicted, stopped), then logs it.
    fn relay_replies(self: Arc<UdpPort>, flow: Arc<UdpFlow>, src: Option<IpAddr>) {
        let ending = match flow.upstream() {
            Some(_) => self.relay_connected(&flow),
            None => match self.connect_by_name(&flow, src) {
                Ok(()) => self.relay_connected(&flow),
                Err(ending) => ending,
            },
        };
        self.stats.flows_active.fetch_sub(1, Ordering::Relaxed);
        flow.log_end(self.addr, ending);
    }

    /// Relays the replies of a connected flow until it ends; returns why.
    fn relay_connected(&self, flow: &Arc<UdpFlow>) -> Ending {
        let Some(upstream) = flow.upstream() else {
            return Ending::Error;
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            if let Some(ending) = flow.ending() {
                break ending;
            }
            let idle = flow.idle_for();
            if idle >= flow.idle_timeout {
                if self.table.end_if_idle(flow) {
                    break Ending::Idle;
                }
                continue;
            }
            datagram::set_receive_timeout(upstream, Some(flow.idle_timeout - idle));
            match datagram::receive(upstream, &mut buf) {
                // A receive woken by `UdpFlow::end` returns at once, with nothing.
                Ok(_) if flow.ending().is_some() => {}
                Ok(got) if got.truncated() => self.stats.dropped(UdpDrop::Oversize),
                Ok(got) => flow.send_to_client(&self.socket, &self.stats, &buf[..got.len]),
                Err(err) if datagram::is_timeout(&err) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                // An ICMP port unreachable from the upstream: its next datagram may be answered.
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(err) => {
                    log::debug!("udp flow #{} upstream failed: {err}", flow.id);
                    self.table.remove(flow, Ending::Error);
                }
            }
        }
    }
}

/// A refused client's line in rinetd's log file, if configured (as often as the refusal is
/// logged: once a minute per client).
fn log_refusal(setup: &FlowSetup, route: &Route, client: SocketAddr, result: LogResult) {
    let Some(sink) = &setup.log_file else {
        return;
    };
    let upstream = route.upstreams.first();
    sink.write(&LogRecord {
        time: std::time::SystemTime::now(),
        client: client.ip(),
        bind_host: &setup.config.listen.host.to_string(),
        bind_port: setup.config.listen.port,
        connect_host: &upstream.map_or(String::new(), |u| u.host.to_string()),
        connect_port: upstream.map_or(0, |u| u.port),
        bytes_in: 0,
        bytes_out: 0,
        result,
    });
}
