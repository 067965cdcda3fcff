//! A UDP listener's flows, by client address, under a cap: a new client beyond it evicts the
//! flow idle longest, so a flood of source addresses costs a bounded number of sockets and
//! threads, never the process's memory. The flows' reply threads are kept to be joined at stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sys::sync::lock;

use super::flow::{Ending, UdpFlow};

/// A flow and its reply thread.
#[derive(Debug)]
struct FlowEntry {
    flow: Arc<UdpFlow>,
    thread: Option<JoinHandle<()>>,
}

/// The flows of one UDP listener.
#[derive(Debug)]
pub(super) struct FlowTable {
    flows: Mutex<HashMap<SocketAddr, FlowEntry>>,
    /// The cap (`max_flows`); a reload may change it.
    cap: AtomicUsize,
}

impl FlowTable {
    pub(super) fn new(cap: usize) -> FlowTable {
        FlowTable {
            flows: Mutex::default(),
            cap: AtomicUsize::new(cap.max(1)),
        }
    }

    /// Sets the cap for new flows; flows beyond it stay until they end.
    pub(super) fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Ordering::Relaxed);
    }

    pub(super) fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// The flow of `client`, marked as having moved a datagram now (under the table's lock, so
    /// an idle end cannot race it), if it has one.
    pub(super) fn touch(&self, client: SocketAddr) -> Option<Arc<UdpFlow>> {
        let flows = lock(&self.flows);
        let entry = flows.get(&client)?;
        entry.flow.touch();
        Some(Arc::clone(&entry.flow))
    }

    /// Makes room for one more flow: when the table is at its cap, ends the flow idle longest
    /// and returns it (evicted).
    pub(super) fn make_room(&self) -> Option<Arc<UdpFlow>> {
        let mut flows = lock(&self.flows);
        if flows.len() < self.cap() {
            return None;
        }
        let oldest = flows
            .iter()
            .min_by_key(|(_, entry)| entry.flow.last_activity())
            .map(|(client, _)| *client)?;
        let entry = flows.remove(&oldest)?;
        entry.flow.end(Ending::Evicted);
        Some(entry.flow)
    }

    /// Adds `flow`, whose reply thread is `thread`, with its first datagram counted as moved.
    pub(super) fn insert(&self, flow: Arc<UdpFlow>, thread: JoinHandle<()>) {
        let mut flows = lock(&self.flows);
        flow.touch();
        flows.insert(
            flow.client,
            FlowEntry {
                flow,
                thread: Some(thread),
            },
        );
    }

    /// Ends `flow` as idle if it still is (checked under the lock: a datagram from its client
    /// may have just arrived). True if it ended.
    pub(super) fn end_if_idle(&self, flow: &Arc<UdpFlow>) -> bool {
        let mut flows = lock(&self.flows);
        if flow.idle_for() < flow.idle_timeout {
            return false;
        }
        if flows
            .get(&flow.client)
            .is_some_and(|e| Arc::ptr_eq(&e.flow, flow))
        {
            flows.remove(&flow.client);
        }
        flow.end(Ending::Idle);
        true
    }

    /// Takes `flow` out of the table, ended for `why`.
    pub(super) fn remove(&self, flow: &Arc<UdpFlow>, why: Ending) {
        let mut flows = lock(&self.flows);
        if flows
            .get(&flow.client)
            .is_some_and(|e| Arc::ptr_eq(&e.flow, flow))
        {
            flows.remove(&flow.client);
        }
        flow.end(why);
    }

    /// Ends every flow for `why`, and waits for their reply threads (each logs its flow).
    pub(super) fn end_all(&self, why: Ending) {
        let entries: Vec<FlowEntry> = lock(&self.flows).drain().map(|(_, e)| e).collect();
        for entry in &entries {
            entry.flow.end(why);
        }
        for mut entry in entries {
            if let Some(thread) = entry.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Waits until every flow has moved nothing for `quiet` (the replies it was waiting for
    /// have come), or `most` has passed.
    pub(super) fn linger(&self, quiet: Duration, most: Duration) {
        let deadline = Instant::now() + most;
        while Instant::now() < deadline
            && lock(&self.flows)
                .values()
                .any(|e| e.flow.idle_for() < quiet)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The flows open now.
    pub(super) fn flows(&self) -> Vec<Arc<UdpFlow>> {
        lock(&self.flows)
            .values()
            .map(|e| Arc::clone(&e.flow))
            .collect()
    }

    /// How many flows are open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.flows).len()
    }
}
