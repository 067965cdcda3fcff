//! One UDP listener at run time: its socket, the settings new flows take (replaced by a reload,
//! the socket and the flows kept), its flows; the thread that receives every datagram sent to it
//! and hands each to its client's flow, setting one up for a new client; and each flow's reply
//! thread, which relays the upstream's datagrams back until the flow ends.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Listener, Route, Rule, DEFAULT_MAX_FLOWS, DEFAULT_UDP_IDLE_TIMEOUT};
use crate::route::access;
use crate::serve::metrics::{UdpDrop, UdpStats};
use crate::sys::datagram::{self, MAX_DATAGRAM};
use crate::sys::resolve;
use crate::sys::sync::lock;

use super::flow::{Ending, UdpFlow};
use super::quiet::OncePerMinute;
use super::table::FlowTable;

/// How often the receiving thread looks whether it is to stop, should the wake-up not reach it.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// What a new flow is set up with: the listener as configured and the global allow/deny rules.
#[derive(Debug)]
pub(super) struct FlowSetup {
    pub(super) config: Listener,
    pub(super) global_acl: Arc<Vec<Rule>>,
    /// Which upstream the next flow takes (round-robin, one step per flow).
    next: AtomicUsize,
}

impl FlowSetup {
    pub(super) fn new(config: Listener, global_acl: Arc<Vec<Rule>>) -> FlowSetup {
        FlowSetup {
            config,
            global_acl,
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
    /// Set when the listener is to stop; the flows end with `stop_as`.
    stopping: AtomicBool,
    stop_as: Mutex<Ending>,
    denied: OncePerMinute,
    /// When the cap was last warned about (the same once-a-minute rule, keyed by nothing).
    full_warned: OncePerMinute,
    next_id: AtomicU64,
}

impl UdpPort {
    pub(super) fn new(socket: UdpSocket, setup: FlowSetup, stats: Arc<UdpStats>) -> UdpPort {
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        datagram::set_receive_timeout(&socket, Some(STOP_CHECK));
        UdpPort {
            socket,
            addr,
            key: setup.config.key(),
            table: FlowTable::new(setup.max_flows()),
            setup: Mutex::new(Arc::new(setup)),
            stats,
            stopping: AtomicBool::new(false),
            stop_as: Mutex::new(Ending::Stopped),
            denied: OncePerMinute::new(Instant::now()),
            full_warned: OncePerMinute::new(Instant::now()),
            next_id: AtomicU64::new(1),
        }
    }

    /// What new flows take from now on; flows set up before keep theirs.
    pub(super) fn reconfigure(&self, setup: FlowSetup) {
        self.table.set_cap(setup.max_flows());
        *lock(&self.setup) = Arc::new(setup);
    }

    pub(super) fn setup(&self) -> Arc<FlowSetup> {
        Arc::clone(&lock(&self.setup))
    }

    /// Asks the receiving thread to stop and end every flow for `why`.
    pub(super) fn stop(&self, why: Ending) {
        *lock(&self.stop_as) = why;
        self.stopping.store(true, Ordering::SeqCst);
        datagram::wake_receivers(&self.socket);
    }

    /// The receiving thread: every datagram to its client's flow, until stopped; then every
    /// flow ends, each logged by its own thread, which this waits for.
    pub(super) fn receive(self: Arc<UdpPort>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stopping.load(Ordering::SeqCst) {
            match datagram::receive_from(&self.socket, &mut buf) {
                _ if self.stopping.load(Ordering::SeqCst) => break,
                Ok(got) if got.truncated() => self.stats.dropped(UdpDrop::Oversize),
                Ok(got) => {
                    if let Some(client) = got.from {
                        self.forward(client, &buf[..got.len]);
                    }
                }
                Err(err) if datagram::is_timeout(&err) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("udp listener {}: receive failed: {err}", self.key);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let why = *lock(&self.stop_as);
        self.table.end_all(why);
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

    /// Sets up `client`'s flow: the next upstream, a socket connected to it, its reply thread;
    /// the flow idle longest is evicted first if the table is full.
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
        let addr = resolve::resolve(&upstream.host.to_string(), upstream.port)
            .map_err(|err| format!("cannot resolve {upstream}: {err}"))?
            .first()
            .copied()
            .ok_or_else(|| format!("{upstream} resolves to no address"))?;
        let socket = datagram::connect(addr, route.src)
            .map_err(|err| format!("cannot connect to {upstream}: {err}"))?;
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
            socket,
            upstream.clone(),
            route.idle_timeout.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT),
        ));
        let (port, replies) = (Arc::clone(self), Arc::clone(&flow));
        // Counted active before its thread runs, which gives the place back at its end.
        self.stats.flows_active.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("udp-flow".into())
            .spawn(move || port.relay_replies(replies));
        let thread = spawned.map_err(|err| {
            self.stats.flows_active.fetch_sub(1, Ordering::Relaxed);
            format!("cannot start its thread: {err}")
        })?;
        self.stats.flows.fetch_add(1, Ordering::Relaxed);
        self.table.insert(Arc::clone(&flow), thread);
        Ok(flow)
    }

    /// A flow's reply thread: relays each of the upstream's datagrams to the client, from the
    /// listen socket, until the flow is ended (idle, evicted, stopped), then logs it.
    fn relay_replies(self: Arc<UdpPort>, flow: Arc<UdpFlow>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let ending = loop {
            if let Some(ending) = flow.ending() {
                break ending;
            }
            let idle = flow.idle_for();
            if idle >= flow.idle_timeout {
                if self.table.end_if_idle(&flow) {
                    break Ending::Idle;
                }
                continue;
            }
            datagram::set_receive_timeout(&flow.upstream, Some(flow.idle_timeout - idle));
            match datagram::receive(&flow.upstream, &mut buf) {
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
                    self.table.remove(&flow, Ending::Error);
                }
            }
        };
        self.stats.flows_active.fetch_sub(1, Ordering::Relaxed);
        flow.log_end(self.addr, ending);
    }
}
