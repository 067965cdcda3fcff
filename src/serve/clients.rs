//! Limits that keep one client (or one listener's slow clients) from taking every connection slot:
//! how many connections one client may hold (process-wide and per route), and how many of a
//! listener's connections may be choosing a route at once. Each is a count with an RAII slot that
//! gives its place back when dropped, on every path.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One client, as the limits count it: an IPv4 address, or an IPv6 network.
pub(crate) type ClientKey = IpAddr;

/// The client an address belongs to: IPv4 (and IPv4-mapped IPv6) as is, IPv6 cut to its
/// first `v6_prefix` bits.
pub(crate) fn client_key(ip: IpAddr, v6_prefix: u8) -> ClientKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// Connections per client, up to a limit.
#[derive(Debug)]
pub(crate) struct PerClient {
    limit: usize,
    v6_prefix: u8,
    counts: Mutex<HashMap<ClientKey, usize>>,
}

/// One client's connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    counts: Arc<PerClient>,
    key: ClientKey,
}

impl PerClient {
    /// At most `limit` connections per client, IPv6 clients grouped by `v6_prefix` bits.
    pub(crate) fn new(limit: usize, v6_prefix: u8) -> Arc<PerClient> {
        Arc::new(PerClient {
            limit,
            v6_prefix,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Counts one more connection of `ip`'s client, or `None` if it already has the limit.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = client_key(ip, self.v6_prefix);
        let mut counts = self.lock();
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: Arc::clone(self),
            key,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A listener's connections that are still sending what routing reads.
#[derive(Debug)]
pub(crate) struct Peeking {
    limit: usize,
    now: AtomicUsize,
}

/// One connection in the peek phase, counted until dropped.
#[derive(Debug)]
pub(crate) struct PeekSlot(Arc<Peeking>);

impl Peeking {
    /// At most `limit` connections at once.
    pub(crate) fn new(limit: usize) -> Arc<Peeking> {
        Arc::new(Peeking {
            limit,
            now: AtomicUsize::new(0),
        })
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A place in the peek phase, or `None` if the listener has the limit peeking already.
    pub(crate) fn take(self: &Arc<Self>) -> Option<PeekSlot> {
        self.now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                (now < self.limit).then_some(now + 1)
            })
            .ok()
            .map(|_| PeekSlot(Arc::clone(self)))
    }
}

impl Drop for PeekSlot {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_prefix() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 128),
            ip("2001:db8:1:2:aaaa::1")
        );
        assert_eq!(client_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn a_client_gets_its_limit_and_its_places_back() {
        let counts = PerClient::new(2, 64);
        let a = counts.take(ip("192.0.2.1")).unwrap();
        let _b = counts.take(ip("192.0.2.1")).unwrap();
        assert!(counts.take(ip("192.0.2.1")).is_none());
        assert!(
            counts.take(ip("192.0.2.2")).is_some(),
            "another client is counted apart"
        );
        // Two addresses of one /64 are one client.
        let _c = counts.take(ip("2001:db8::1")).unwrap();
        let _d = counts.take(ip("2001:db8::2")).unwrap();
        assert!(counts.take(ip("2001:db8::3")).is_none());
        drop(a);
        assert!(counts.take(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn the_peek_phase_is_capped_and_given_back() {
        let peeking = Peeking::new(1);
        let first = peeking.take().unwrap();
        assert!(peeking.take().is_none());
        drop(first);
        assert!(peeking.take().is_some());
    }
}
