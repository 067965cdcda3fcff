//! The server's UDP listeners: bound at start, switched by a reload (an unchanged listener keeps
//! its socket and its flows and takes the new settings for new flows; an added one is bound
//! before anything changes, so a reload that cannot bind changes nothing; a removed one stops,
//! its flows logged as `removed`), and stopped with the server (flows logged as `stopped`). In a
//! live upgrade the old process pauses its listeners (datagrams queue in the sockets), offers
//! the sockets, and once the new process has started, ends its flows as `upgraded` after their
//! replies in flight; the new process starts reading the sockets only then.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{format_duration, Config, Listener, Transport, DEFAULT_UDP_IDLE_TIMEOUT};
use crate::error::Error;
use crate::log::rinetd::LogSink;
use crate::serve::bound::resolve_listen;
use crate::serve::metrics::Metrics;
use crate::sys::datagram;

use super::board::UdpBoard;
use super::flow::Ending;
use super::port::{FlowSetup, UdpPort};

/// A UDP listener served: its state and its receiving thread.
#[derive(Debug)]
struct UdpRunning {
    port: Arc<UdpPort>,
    thread: Option<JoinHandle<()>>,
}

impl UdpRunning {
    /// Waits for its threads, once asked to stop (each flow is logged).
    fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a reload got ready for one UDP listener of the new configuration.
#[derive(Debug)]
enum UdpPlan {
    /// Served already (the running listener at this index): new settings for new flows.
    Keep(usize, Box<FlowSetup>),
    /// Bound now, started at commit.
    Start(Arc<UdpPort>),
}

/// Every UDP listener of the server.
#[derive(Debug, Default)]
pub(crate) struct Udp {
    running: Vec<UdpRunning>,
    prepared: Vec<UdpPlan>,
    /// Where the admin endpoint sees the listeners served.
    board: Arc<UdpBoard>,
}

/// What a UDP listener is started with: the counters, rinetd's log file, and the sockets a live
/// upgrade handed over, one per UDP listener of the configuration (`None`: bound here).
#[derive(Debug)]
pub(crate) struct UdpStart<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) log_file: Option<Arc<LogSink>>,
    pub(crate) offered: Vec<Option<UdpSocket>>,
}

impl Udp {
    /// Every UDP listener of the server, shown on `board`; none yet.
    pub(crate) fn new(board: Arc<UdpBoard>) -> Udp {
        Udp {
            running: Vec::new(),
            prepared: Vec::new(),
            board,
        }
    }

    /// Gets ready to serve `config`'s UDP listeners: binds the new ones (or takes the sockets
    /// offered), changing nothing yet.
    pub(crate) fn prepare(&mut self, config: &Config, start: UdpStart<'_>) -> Result<(), Error> {
        let global_acl = Arc::new(config.acl.clone());
        let mut offered = start.offered.into_iter();
        let mut plans = Vec::new();
        for listener in udp_listeners(config) {
            let setup = FlowSetup::new(
                listener.clone(),
                Arc::clone(&global_acl),
                start.log_file.clone(),
            );
            let socket = offered.next().flatten();
            let kept = self
                .running
                .iter()
                .position(|r| r.port.setup().config.key() == listener.key());
            plans.push(match (kept, socket) {
                (Some(index), _) => UdpPlan::Keep(index, Box::new(setup)),
                (None, socket) => {
                    let socket = match socket {
                        Some(socket) => socket,
                        None => bind(listener)?,
                    };
                    let stats = start.metrics.udp(&listener.key());
                    let port =
                        UdpPort::new(socket, setup, stats).map_err(|source| Error::Setup {
                            what: "create a UDP listener's wake-up pipe",
                            source,
                        })?;
                    UdpPlan::Start(Arc::new(port))
                }
            });
        }
        self.prepared = plans;
        Ok(())
    }

    /// Switches to what [`Udp::prepare`] got ready: kept listeners take their new settings,
    /// new ones start, the others stop.
    pub(crate) fn commit(&mut self) {
        let mut old: Vec<Option<UdpRunning>> = self.running.drain(..).map(Some).collect();
        for plan in std::mem::take(&mut self.prepared) {
            let running = match plan {
                UdpPlan::Keep(index, setup) => old[index]
                    .take()
                    .inspect(|running| running.port.reconfigure(*setup)),
                UdpPlan::Start(port) => Some(start(port)),
            };
            if let Some(running) = running {
                self.running.push(running);
            }
        }
        let removed: Vec<UdpRunning> = old.into_iter().flatten().collect();
        for running in &removed {
            log::info!("reload: closing udp listener {}", running.port.key);
            running.port.stop(Ending::Removed);
        }
        removed.into_iter().for_each(UdpRunning::join);
        (self.board).publish(self.running.iter().map(|r| Arc::clone(&r.port)).collect());
    }

    /// Logs every UDP listener as served, as the TCP ones are at start and after a reload.
    pub(crate) fn log(&self) {
        for running in &self.running {
            log_listening(&running.port);
        }
    }

    /// Drops what [`Udp::prepare`] got ready (closing the sockets it bound).
    pub(crate) fn abandon(&mut self) {
        self.prepared.clear();
    }

    /// Stops every UDP listener: their flows end, each logged as `stopped` (or as `upgraded`
    /// after a live upgrade handed them over); returns once their threads have.
    pub(crate) fn stop(&mut self) {
        self.board.publish(Vec::new());
        for running in &self.running {
            running.port.stop(Ending::Stopped);
        }
        self.running.drain(..).for_each(UdpRunning::join);
    }

    /// A live upgrade begins: the listeners stop reading their sockets (datagrams queue there
    /// for the new process), the flows carry on; returns each socket with its bound address,
    /// to offer.
    pub(crate) fn pause(&self) -> Vec<(SocketAddr, BorrowedFd<'_>)> {
        (self.running.iter())
            .map(|r| {
                r.port.pause();
                (r.port.addr, r.port.socket.as_fd())
            })
            .collect()
    }

    /// The upgrade did not happen: the listeners read their sockets again.
    pub(crate) fn resume(&self) {
        self.running.iter().for_each(|r| r.port.resume());
    }

    /// The new process has the sockets: the flows here end, as `upgraded`, once their replies
    /// in flight have come (at the latest when the server is dropped).
    pub(crate) fn handed_over(&self) {
        self.running
            .iter()
            .for_each(|r| r.port.stop(Ending::Upgraded));
    }

    /// The bound addresses, in configuration order.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.running.iter().map(|r| r.port.addr).collect()
    }
}

impl Drop for Udp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The UDP listeners of `config`.
fn udp_listeners(config: &Config) -> impl Iterator<Item = &Listener> {
    (config.listeners.iter()).filter(|l| l.transport == Transport::Udp)
}

/// Starts `port`'s receiving thread.
fn start(port: Arc<UdpPort>) -> UdpRunning {
    let receiving = Arc::clone(&port);
    let thread = std::thread::Builder::new()
        .name("udp-receive".into())
        .spawn(move || receiving.receive());
    let thread = match thread {
        Ok(thread) => Some(thread),
        Err(err) => {
            log::error!("udp listener {}: cannot start its thread: {err}", port.key);
            None
        }
    };
    UdpRunning { port, thread }
}

/// Resolves and binds a UDP listen address.
fn bind(listener: &Listener) -> Result<std::net::UdpSocket, Error> {
    let addr = resolve_listen(&listener.listen, listener.key())?;
    datagram::bind(addr, listener.reuse_port).map_err(|source| Error::Bind { addr, source })
}

/// Logs a UDP listener as served, as the TCP ones are at start and after a reload.
fn log_listening(port: &UdpPort) {
    let setup = port.setup();
    let route = setup.config.routes.first();
    let upstreams: Vec<String> = route
        .map(|r| r.upstreams.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let timeout = route
        .and_then(|r| r.idle_timeout)
        .unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT);
    log::info!(
        "listening on {}/udp -> {} (idle timeout {}, max {} flows)",
        port.addr,
        upstreams.join(", "),
        format_duration(timeout),
        setup.max_flows()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Route, Transport};
    use std::net::UdpSocket;
    use std::time::Duration;

    /// A UDP echo server on loopback, answering every datagram until dropped's socket closes.
    fn echo() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        addr
    }

    fn udp_config(listen: &str, upstream: SocketAddr, max_flows: Option<usize>) -> Config {
        let mut listener = Listener::new(listen.parse().unwrap());
        listener.transport = Transport::Udp;
        listener.max_flows = max_flows;
        let mut route = Route::new(vec![upstream.into()]);
        route.idle_timeout = Some(Duration::from_secs(30));
        listener.routes.push(route);
        Config {
            listeners: vec![listener],
            ..Config::default()
        }
    }

    fn starting(metrics: &Metrics, offered: Vec<Option<UdpSocket>>) -> UdpStart<'_> {
        UdpStart {
            metrics,
            log_file: None,
            offered,
        }
    }

    /// Binds (or takes `offered`) and starts every UDP listener of `config`.
    fn start_with(config: &Config, metrics: &Metrics, offered: Vec<Option<UdpSocket>>) -> Udp {
        let mut udp = Udp::default();
        udp.prepare(config, starting(metrics, offered)).unwrap();
        udp.commit();
        udp
    }

    fn start(config: &Config, metrics: &Metrics) -> Result<Udp, Error> {
        Ok(start_with(config, metrics, Vec::new()))
    }

    fn client() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    fn ask(socket: &UdpSocket, to: SocketAddr, text: &[u8]) -> Vec<u8> {
        socket.send_to(text, to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, to, "the reply comes from the listen socket's address");
        buf[..n].to_vec()
    }

    #[test]
    fn datagrams_go_both_ways_one_flow_per_client() {
        let metrics = Metrics::default();
        let mut udp = start(&udp_config("127.0.0.1:0", echo(), None), &metrics).unwrap();
        let addr = udp.local_addrs()[0];
        let (a, b) = (client(), client());
        assert_eq!(ask(&a, addr, b"one"), b"one");
        assert_eq!(ask(&b, addr, b"two"), b"two");
        assert_eq!(ask(&a, addr, b""), b"", "an empty datagram is a datagram");
        let stats = metrics.udp("127.0.0.1:0/udp");
        assert_eq!(stats.flows.load(std::sync::atomic::Ordering::Relaxed), 2);
        udp.stop();
        assert_eq!(
            stats
                .flows_active
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn a_full_table_evicts_the_flow_idle_longest() {
        let metrics = Metrics::default();
        let udp = start(&udp_config("127.0.0.1:0", echo(), Some(2)), &metrics).unwrap();
        let addr = udp.local_addrs()[0];
        let clients = [client(), client(), client()];
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(ask(c, addr, &[i as u8]), [i as u8]);
        }
        let stats = metrics.udp("127.0.0.1:0/udp");
        assert_eq!(stats.evicted.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(udp.running[0].port.table.len(), 2);
    }

    #[test]
    fn a_reload_keeps_an_unchanged_listener_and_its_flows() {
        let metrics = Metrics::default();
        let upstream = echo();
        let config = udp_config("127.0.0.1:0", upstream, None);
        let mut udp = start(&config, &metrics).unwrap();
        let addr = udp.local_addrs()[0];
        let c = client();
        assert_eq!(ask(&c, addr, b"before"), b"before");
        udp.prepare(&config, starting(&metrics, Vec::new()))
            .unwrap();
        udp.commit();
        assert_eq!(udp.local_addrs(), [addr]);
        assert_eq!(ask(&c, addr, b"after"), b"after");
        let stats = metrics.udp("127.0.0.1:0/udp");
        assert_eq!(stats.flows.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// An upstream given as a name is resolved on the flow's own thread; what the client sends
    /// meanwhile waits in the flow and goes in order.
    #[test]
    fn a_name_upstream_is_resolved_by_the_flow_and_a_burst_keeps_its_order() {
        // Both families: `localhost` may name ::1 first.
        let echo_socket = UdpSocket::bind("[::]:0")
            .or_else(|_| UdpSocket::bind("127.0.0.1:0"))
            .unwrap();
        let port = echo_socket.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo_socket.recv_from(&mut buf) {
                let _ = echo_socket.send_to(&buf[..n], from);
            }
        });
        let mut config = udp_config("127.0.0.1:0", echo(), None);
        config.listeners[0].routes[0].upstreams =
            vec![format!("localhost:{port}").parse().unwrap()];
        let metrics = Metrics::default();
        let udp = start(&config, &metrics).unwrap();
        let addr = udp.local_addrs()[0];
        let c = client();
        for n in 0..5u8 {
            c.send_to(&[n; 3], addr).unwrap();
        }
        let mut buf = [0u8; 64];
        for n in 0..5u8 {
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..len], from), (&[n; 3][..], addr));
        }
    }

    /// A live upgrade's steps on one process standing for both: a paused listener reads
    /// nothing, so what a client sends meanwhile waits in the socket; a second `Udp` given the
    /// same socket answers it; the first one's flows end as `upgraded` and its stop leaves the
    /// socket working for the second.
    #[test]
    fn a_paused_listener_leaves_datagrams_queued_for_the_sockets_next_owner() {
        let metrics = Metrics::default();
        let config = udp_config("127.0.0.1:0", echo(), None);
        let mut old = start(&config, &metrics).unwrap();
        let addr = old.local_addrs()[0];
        let c = client();
        assert_eq!(ask(&c, addr, b"before"), b"before");
        let socket = {
            let offered = old.pause();
            assert_eq!(offered.len(), 1);
            assert_eq!(offered[0].0, addr);
            UdpSocket::from(offered[0].1.try_clone_to_owned().unwrap())
        };
        c.send_to(b"during", addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(
            c.recv_from(&mut buf).is_err(),
            "a paused listener reads nothing"
        );
        let mut new = start_with(&config, &metrics, vec![Some(socket)]);
        assert_eq!(new.local_addrs(), [addr]);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"during"[..], addr),
            "the queued datagram"
        );
        old.handed_over();
        old.stop();
        assert_eq!(ask(&c, addr, b"after"), b"after");
        new.stop();
    }
}
