//! The server's UDP listeners: bound at start, switched by a reload (an unchanged listener keeps
//! its socket and its flows and takes the new settings for new flows; an added one is bound
//! before anything changes, so a reload that cannot bind changes nothing; a removed one stops,
//! its flows logged as `removed`), and stopped with the server (flows logged as `stopped`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{format_duration, Config, Listener, Transport, DEFAULT_UDP_IDLE_TIMEOUT};
use crate::error::Error;
use crate::serve::bound::resolve_listen;
use crate::serve::metrics::Metrics;
use crate::sys::datagram;

use super::flow::Ending;
use super::port::{FlowSetup, UdpPort};

/// A UDP listener served: its state and its receiving thread.
#[derive(Debug)]
struct UdpRunning {
    port: Arc<UdpPort>,
    thread: Option<JoinHandle<()>>,
}

impl UdpRunning {
    /// Stops it: every flow ends for `why` and is logged; returns once its threads have.
    fn stop(mut self, why: Ending) {
        self.port.stop(why);
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
}

impl Udp {
    /// Binds and starts every UDP listener of `config`.
    pub(crate) fn start(config: &Config, metrics: &Metrics) -> Result<Udp, Error> {
        let mut udp = Udp::default();
        udp.prepare(config, metrics)?;
        udp.commit();
        Ok(udp)
    }

    /// Gets ready to serve `config`'s UDP listeners: binds the new ones, changing nothing yet.
    pub(crate) fn prepare(&mut self, config: &Config, metrics: &Metrics) -> Result<(), Error> {
        let global_acl = Arc::new(config.acl.clone());
        let mut plans = Vec::new();
        for listener in udp_listeners(config) {
            let setup = FlowSetup::new(listener.clone(), Arc::clone(&global_acl));
            let kept = self
                .running
                .iter()
                .position(|r| r.port.setup().config.key() == listener.key());
            plans.push(match kept {
                Some(index) => UdpPlan::Keep(index, Box::new(setup)),
                None => {
                    let socket = bind(listener)?;
                    let stats = metrics.udp(&listener.key());
                    UdpPlan::Start(Arc::new(UdpPort::new(socket, setup, stats)))
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
        for removed in old.into_iter().flatten() {
            log::info!("reload: closing udp listener {}", removed.port.key);
            removed.stop(Ending::Removed);
        }
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

    /// Stops every UDP listener: their flows end, each logged as `stopped`.
    pub(crate) fn stop(&mut self) {
        for running in self.running.drain(..) {
            running.stop(Ending::Stopped);
        }
    }

    /// The bound addresses, in configuration order.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.running.iter().map(|r| r.port.addr).collect()
    }

    /// The listeners as written (`ADDR:PORT/udp`), for messages.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.running.iter().map(|r| r.port.key.clone()).collect()
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
        let mut udp = Udp::start(&udp_config("127.0.0.1:0", echo(), None), &metrics).unwrap();
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
        let udp = Udp::start(&udp_config("127.0.0.1:0", echo(), Some(2)), &metrics).unwrap();
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
        let mut udp = Udp::start(&config, &metrics).unwrap();
        let addr = udp.local_addrs()[0];
        let c = client();
        assert_eq!(ask(&c, addr, b"before"), b"before");
        udp.prepare(&config, &metrics).unwrap();
        udp.commit();
        assert_eq!(udp.local_addrs(), [addr]);
        assert_eq!(ask(&c, addr, b"after"), b"after");
        let stats = metrics.udp("127.0.0.1:0/udp");
        assert_eq!(stats.flows.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
