//! What the admin endpoint sees of the UDP listeners: the ports served now, and a view of each
//! of their flows for `/connections`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::sync::lock;

use super::port::UdpPort;

/// The UDP listeners served now, as the last commit left them.
#[derive(Debug, Default)]
pub(crate) struct UdpBoard {
    ports: Mutex<Vec<Arc<UdpPort>>>,
}

/// One flow as `/connections` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowView {
    /// Its sequence number on its listener.
    pub(crate) id: u64,
    /// The listener as written (its metrics label).
    pub(crate) listener: String,
    /// The listener's bound address.
    pub(crate) listener_address: SocketAddr,
    pub(crate) client: SocketAddr,
    /// The upstream as configured and as connected.
    pub(crate) upstream_name: String,
    pub(crate) upstream_address: SocketAddr,
    /// Datagrams and bytes relayed, client to upstream first.
    pub(crate) datagrams: [u64; 2],
    pub(crate) bytes: [u64; 2],
    pub(crate) age: Duration,
    pub(crate) idle: Duration,
}

impl UdpBoard {
    pub(super) fn publish(&self, ports: Vec<Arc<UdpPort>>) {
        *lock(&self.ports) = ports;
    }

    /// Every open flow, by listener in configuration order, then oldest first.
    pub(crate) fn flows(&self) -> Vec<FlowView> {
        let ports = lock(&self.ports).clone();
        let mut views = Vec::new();
        for port in ports {
            let label = port.setup().config.label();
            let mut flows = port.table.flows();
            flows.sort_by_key(|flow| std::cmp::Reverse(flow.started.elapsed()));
            views.extend(flows.iter().map(|flow| FlowView {
                id: flow.id,
                listener: label.clone(),
                listener_address: port.addr,
                client: flow.client,
                upstream_name: flow.upstream_name.to_string(),
                upstream_address: flow.upstream_addr(),
                datagrams: flow.datagrams(),
                bytes: flow.bytes(),
                age: flow.started.elapsed(),
                idle: flow.idle_for(),
            }));
        }
        views
    }
}
