//! Limits that keep one client (or one listener's slow clients) from taking every connection slot:
//! how many connections one client may hold (process-wide and per route), and how many of a
//! listener's connections may be choosing a route at once. Each is a count with an RAII slot that
//! gives its place back when dropped, on every path.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, Shutdown};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::relay::Connection;
use crate::sys::net;
use crate::sys::sync::lock;

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
        lock(&self.counts)
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

/// The most one client may hold of a cap: three quarters, and never the whole of a cap above 1.
pub(crate) fn client_share(cap: usize) -> usize {
    if cap <= 1 {
        1
    } else {
        cap - (cap / 4).max(1)
    }
}

/// A listener's peek budget under a cap: a quarter of it, at least 1, so that the other three
/// quarters always leave room to accept the client that takes a silent one's place.
pub(crate) fn peek_budget(cap: usize) -> usize {
    (cap / 4).max(1)
}

/// One client's share of a peek budget: half of it, at least 1.
pub(crate) fn peek_share(budget: usize) -> usize {
    (budget / 2).max(1)
}

/// Why a connection lost its place in the peek phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evicted {
    /// The budget was full and a newcomer came: the longest-waiting connection of the clients
    /// holding the most gave way (a silent one, where one could).
    ForNewcomer = 1,
    /// A graceful stop began: nothing of a connection still choosing its route is in flight.
    Stopping = 2,
}

impl Evicted {
    fn from_u8(value: u8) -> Option<Evicted> {
        match value {
            1 => Some(Evicted::ForNewcomer),
            2 => Some(Evicted::Stopping),
            _ => None,
        }
    }
}

/// Why a place in the peek phase was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeekRefusal {
    /// Nobody's place could be taken (a budget of 0).
    Full(usize),
    /// The client holds its share already.
    Share(usize),
}

/// A listener's connections that are still sending what routing reads: at most `limit` at once
/// and `per_client` of one client. When the budget is full a newcomer takes the place of the
/// longest-waiting connection of the clients holding the most, if they hold at least as many as
/// the newcomer's client, a silent one first (nginx and haproxy refuse instead; sozu's
/// `evict_on_queue_full` drops the oldest of its accept queue).
#[derive(Debug)]
pub(crate) struct Peeking {
    limit: usize,
    per_client: usize,
    v6_prefix: u8,
    table: Mutex<PeekTable>,
}

/// Who waits in the peek phase, in arrival order.
#[derive(Debug, Default)]
struct PeekTable {
    next: u64,
    /// By arrival: the first is the longest waiting.
    waiting: BTreeMap<u64, Waiting>,
    /// Places held per client.
    held: HashMap<ClientKey, usize>,
}

#[derive(Debug)]
struct Waiting {
    key: ClientKey,
    evicted: Arc<AtomicU8>,
    /// Its socket, shut down for reading to wake its worker when it is evicted.
    conn: Arc<Connection>,
}

/// One connection in the peek phase, counted until dropped.
#[derive(Debug)]
pub(crate) struct PeekSlot {
    peeking: Arc<Peeking>,
    seq: u64,
    evicted: Arc<AtomicU8>,
}

impl Peeking {
    /// At most `limit` connections at once, `per_client` of one client (IPv6 clients grouped by
    /// `v6_prefix` bits).
    pub(crate) fn new(limit: usize, per_client: usize, v6_prefix: u8) -> Arc<Peeking> {
        Arc::new(Peeking {
            limit,
            per_client,
            v6_prefix,
            table: Mutex::new(PeekTable::default()),
        })
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// One client's share.
    pub(crate) fn per_client(&self) -> usize {
        self.per_client
    }

    /// A place in the peek phase for `conn` from `ip`; if the budget is full, in the place of
    /// the connection [`PeekTable::victim`] names.
    pub(crate) fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        conn: &Arc<Connection>,
    ) -> Result<PeekSlot, PeekRefusal> {
        let key = client_key(ip, self.v6_prefix);
        let mut table = self.lock();
        let holds = table.held.get(&key).copied().unwrap_or(0);
        if holds >= self.per_client {
            return Err(PeekRefusal::Share(self.per_client));
        }
        if table.waiting.len() >= self.limit {
            let victim = table.victim(holds).ok_or(PeekRefusal::Full(self.limit))?;
            table.evict(victim, Evicted::ForNewcomer);
        }
        let seq = table.next;
        table.next += 1;
        let evicted = Arc::new(AtomicU8::new(0));
        table.waiting.insert(
            seq,
            Waiting {
                key,
                evicted: Arc::clone(&evicted),
                conn: Arc::clone(conn),
            },
        );
        *table.held.entry(key).or_insert(0) += 1;
        Ok(PeekSlot {
            peeking: Arc::clone(self),
            seq,
            evicted,
        })
    }

    /// Counts `slot` for the client at `ip` from now on (the client a PROXY header names), or
    /// says that client holds its share already.
    pub(crate) fn move_to(&self, slot: &PeekSlot, ip: IpAddr) -> Result<(), PeekRefusal> {
        let key = client_key(ip, self.v6_prefix);
        let mut table = self.lock();
        let Some(old) = table.waiting.get(&slot.seq).map(|w| w.key) else {
            return Ok(());
        };
        if old == key {
            return Ok(());
        }
        if table.held.get(&key).copied().unwrap_or(0) >= self.per_client {
            return Err(PeekRefusal::Share(self.per_client));
        }
        table.forget(old);
        *table.held.entry(key).or_insert(0) += 1;
        if let Some(waiting) = table.waiting.get_mut(&slot.seq) {
            waiting.key = key;
        }
        Ok(())
    }

    /// Evicts every connection in the peek phase (a graceful stop); returns how many.
    pub(crate) fn evict_all(&self, why: Evicted) -> usize {
        let mut table = self.lock();
        let all: Vec<u64> = table.waiting.keys().copied().collect();
        for seq in &all {
            table.evict(*seq, why);
        }
        all.len()
    }

    fn lock(&self) -> MutexGuard<'_, PeekTable> {
        lock(&self.table)
    }
}

impl PeekTable {
    /// Whose place a newcomer whose client holds `holds` places takes: a silent connection
    /// (one that has sent nothing yet) if any qualifies, else any; of those, the longest-waiting
    /// one of the clients holding the most, if they hold at least as many as the newcomer's (its
    /// own client among them). A client that mixes silent and prompt connections (a browser, a
    /// NAT) is then not locked out by a flood from more addresses than the phase has places:
    /// what goes is silent, and among equals the oldest. `None` only in an empty phase (a budget
    /// of 0).
    fn victim(&self, holds: usize) -> Option<u64> {
        // Silent for longer than a client needs to speak first (the largest holders' oldest);
        // then, under a churn so fast that none is, the oldest silent one of a client holding at
        // least as many; then any, the largest holders' oldest.
        let passes = [
            Pass {
                silent: true,
                min_age: SPEAKING_TIME,
                largest: true,
            },
            Pass {
                silent: true,
                min_age: Duration::ZERO,
                largest: false,
            },
        ];
        for pass in passes {
            // A silent one whose bytes wait unread (its worker has not read them yet) has spoken.
            while let Some(seq) = self.oldest(holds, pass) {
                let waiting = &self.waiting[&seq];
                if !net::has_unread(&waiting.conn.client) {
                    return Some(seq);
                }
                waiting.evicted.fetch_or(SPOKE, Ordering::Relaxed);
            }
        }
        let any = Pass {
            silent: false,
            min_age: Duration::ZERO,
            largest: true,
        };
        self.oldest(holds, any)
    }

    /// The longest-waiting connection that `pass` admits, of a client holding at least `holds`
    /// places (of the clients holding the most, if `pass.largest`).
    fn oldest(&self, holds: usize, pass: Pass) -> Option<u64> {
        let mut best: Option<(usize, u64)> = None;
        // In arrival order, so the first of the largest holders found is the longest waiting.
        for (seq, waiting) in &self.waiting {
            if pass.silent && waiting.evicted.load(Ordering::Relaxed) & SPOKE != 0 {
                continue;
            }
            if waiting.conn.started.elapsed() < pass.min_age {
                continue;
            }
            let count = self.held.get(&waiting.key).copied().unwrap_or(0);
            if count < holds {
                continue;
            }
            if !pass.largest {
                return Some(*seq);
            }
            if best.is_none_or(|(most, _)| count > most) {
                best = Some((count, *seq));
            }
        }
        best.map(|(_, seq)| seq)
    }

    /// Takes `seq` out of the table and wakes its worker, which sees why.
    fn evict(&mut self, seq: u64, why: Evicted) {
        let Some(waiting) = self.waiting.remove(&seq) else {
            return;
        };
        self.forget(waiting.key);
        waiting.evicted.fetch_or(why as u8, Ordering::SeqCst);
        // Its worker waits to read: a read shut down returns at once.
        let _ = waiting.conn.client.shutdown(Shutdown::Read);
    }

    fn forget(&mut self, key: ClientKey) {
        if let Some(count) = self.held.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(&key);
            }
        }
    }
}

/// Which connections one look for a victim admits, and how it ranks them.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// Only those that have sent nothing yet.
    silent: bool,
    /// Only those accepted at least this long ago.
    min_age: Duration,
    /// The oldest of the clients holding the most, not the oldest of all.
    largest: bool,
}

/// How long a client just accepted is given to send its first bytes before its silence makes it
/// the first to give way: a round trip on most paths.
const SPEAKING_TIME: Duration = Duration::from_millis(250);

/// Marks, beside an eviction's cause, that the connection has sent something: it is no longer
/// silent, and gives way only when no silent connection can.
const SPOKE: u8 = 0x80;

/// A connection's mark that it has sent something, for its worker to set (see [`SPOKE`]).
#[derive(Debug, Clone)]
pub(crate) struct Spoke(Arc<AtomicU8>);

impl Spoke {
    /// The client has sent bytes.
    pub(crate) fn mark(&self) {
        self.0.fetch_or(SPOKE, Ordering::Relaxed);
    }
}

impl PeekSlot {
    /// Why this connection lost its place, if it did.
    pub(crate) fn evicted(&self) -> Option<Evicted> {
        Evicted::from_u8(self.evicted.load(Ordering::SeqCst) & !SPOKE)
    }

    /// Where its worker marks that the client has sent something.
    pub(crate) fn spoke(&self) -> Spoke {
        Spoke(Arc::clone(&self.evicted))
    }

    /// The listener's peek phase this place belongs to.
    pub(crate) fn peeking(&self) -> &Peeking {
        &self.peeking
    }

    /// Leaves the peek phase (routing has read what it needs); `Some` if the connection was
    /// evicted before it could, and its socket is shut down for reading.
    pub(crate) fn release(self) -> Option<Evicted> {
        // Out of the table first: from then on nothing can evict it, so the mark read after is
        // final.
        self.leave();
        self.evicted()
    }

    fn leave(&self) {
        let mut table = self.peeking.lock();
        if let Some(waiting) = table.waiting.remove(&self.seq) {
            table.forget(waiting.key);
        }
    }
}

impl Drop for PeekSlot {
    fn drop(&mut self) {
        self.leave();
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

    /// An accepted connection, with the client's end (kept open while it matters).
    fn accepted() -> (Arc<Connection>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        (
            Arc::new(Connection::new(1, peer.into(), server.into())),
            client,
        )
    }

    /// A connection accepted a second ago (older than [`SPEAKING_TIME`]), with the client's end.
    fn accepted_long_ago() -> (Arc<Connection>, std::net::TcpStream) {
        let (young, client) = accepted();
        let server = young.client.try_clone().unwrap();
        let past = crate::relay::Past {
            elapsed_ms: 1000,
            ..Default::default()
        };
        (
            Arc::new(Connection::taken(2, young.peer, server, past)),
            client,
        )
    }

    /// A connection accepted a second ago.
    fn conn() -> Arc<Connection> {
        accepted_long_ago().0
    }

    /// A connection accepted just now.
    fn young() -> Arc<Connection> {
        accepted().0
    }

    #[test]
    fn shares_are_three_quarters_a_quarter_and_a_half() {
        assert_eq!(
            [1, 2, 4, 10, 100].map(client_share),
            [1, 1, 3, 8, 75],
            "never the whole of a cap above 1"
        );
        assert_eq!([1, 3, 10, 100].map(peek_budget), [1, 1, 2, 25]);
        assert_eq!([1, 2, 25].map(peek_share), [1, 1, 12]);
    }

    #[test]
    fn the_peek_phase_is_capped_and_given_back() {
        let peeking = Peeking::new(1, 1, 64);
        let first = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        assert_eq!(
            peeking.take(ip("192.0.2.1"), &conn()).unwrap_err(),
            PeekRefusal::Share(1)
        );
        drop(first);
        assert!(peeking.take(ip("192.0.2.1"), &conn()).is_ok());
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_largest_holders_longest_waiting() {
        let peeking = Peeking::new(4, 3, 64);
        let pairs: Vec<_> = (0..6).map(|_| accepted_long_ago()).collect();
        let conns: Vec<_> = pairs.iter().map(|(conn, _)| Arc::clone(conn)).collect();
        let a1 = peeking.take(ip("192.0.2.1"), &conns[0]).unwrap();
        let b1 = peeking.take(ip("192.0.2.2"), &conns[1]).unwrap();
        let a2 = peeking.take(ip("192.0.2.1"), &conns[2]).unwrap();
        let a3 = peeking.take(ip("192.0.2.1"), &conns[3]).unwrap();
        // Full: the newcomer holds nothing, 192.0.2.1 holds three; its first one goes.
        let c1 = peeking.take(ip("192.0.2.3"), &conns[4]).unwrap();
        assert_eq!(a1.evicted(), Some(Evicted::ForNewcomer));
        assert_eq!([&b1, &a2, &a3, &c1].map(PeekSlot::evicted), [None; 4]);
        // Its worker's read returns at once.
        let mut byte = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut &conns[0].client, &mut byte).unwrap(),
            0
        );
        // Now .1 holds two, .2 and .3 one each: a newcomer from .2 evicts .1's next.
        let _b2 = peeking.take(ip("192.0.2.2"), &conns[5]).unwrap();
        assert_eq!(a2.evicted(), Some(Evicted::ForNewcomer));
        drop(a1);
        assert_eq!(
            peeking.lock().waiting.len(),
            4,
            "an evicted slot frees nothing twice"
        );
    }

    /// A newcomer whose client holds as much as anyone (a browser or a NAT mixing silent and
    /// prompt connections, in a flood from more addresses than there are places) is not refused:
    /// the longest-waiting connection of the largest holders, its own client's or another's, gives
    /// way; the share still bounds the client.
    #[test]
    fn a_newcomer_holding_as_much_as_anyone_takes_the_oldest_place_of_the_largest_holders() {
        let peeking = Peeking::new(4, 3, 64);
        let a1 = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        let b1 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        let a2 = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        let b2 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        // Full, both hold two: the oldest of them, .1's first, gives way to .2's newcomer.
        let b3 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        assert_eq!(a1.evicted(), Some(Evicted::ForNewcomer));
        assert_eq!([&b1, &a2, &b2, &b3].map(PeekSlot::evicted), [None; 4]);
        // .1 holds one, .2 three: .1's newcomer takes .2's oldest.
        let a3 = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        assert_eq!(b1.evicted(), Some(Evicted::ForNewcomer));
        // Both hold two: the oldest of all, .1's, gives way to .2's newcomer.
        let b4 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        assert_eq!(a2.evicted(), Some(Evicted::ForNewcomer));
        assert_eq!([&b2, &b3, &a3, &b4].map(PeekSlot::evicted), [None; 4]);
        // .2 holds three, its share: the share still bounds it.
        assert_eq!(
            peeking.take(ip("192.0.2.2"), &conn()).unwrap_err(),
            PeekRefusal::Share(3)
        );
    }

    /// A client just accepted has a round trip to speak before its silence counts: an older
    /// silent connection gives way first, even one of a client holding fewer places.
    #[test]
    fn a_connection_just_accepted_is_not_the_first_to_give_way() {
        let peeking = Peeking::new(3, 3, 64);
        let a1 = peeking.take(ip("192.0.2.1"), &young()).unwrap();
        let a2 = peeking.take(ip("192.0.2.1"), &young()).unwrap();
        let b1 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        let _c1 = peeking.take(ip("192.0.2.3"), &young()).unwrap();
        assert_eq!(
            [a1.evicted(), a2.evicted(), b1.evicted()],
            [None, None, Some(Evicted::ForNewcomer)]
        );
    }

    /// Under a churn so fast that no silent connection is older than [`SPEAKING_TIME`], the
    /// oldest silent one goes, not the newest of the client holding the most.
    #[test]
    fn under_a_fast_churn_the_oldest_silent_connection_goes() {
        let peeking = Peeking::new(3, 3, 64);
        let b1 = peeking.take(ip("192.0.2.2"), &young()).unwrap();
        let a1 = peeking.take(ip("192.0.2.1"), &young()).unwrap();
        let a2 = peeking.take(ip("192.0.2.1"), &young()).unwrap();
        let _c1 = peeking.take(ip("192.0.2.3"), &young()).unwrap();
        assert_eq!(
            [b1.evicted(), a1.evicted(), a2.evicted()],
            [Some(Evicted::ForNewcomer), None, None]
        );
    }

    /// A connection whose bytes wait unread counts as having spoken, though its worker has not
    /// read them yet.
    #[test]
    fn bytes_waiting_unread_count_as_spoken() {
        let peeking = Peeking::new(2, 2, 64);
        let (talker, mut talker_client) = accepted_long_ago();
        let a1 = peeking.take(ip("192.0.2.1"), &talker).unwrap();
        let a2 = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        std::io::Write::write_all(&mut talker_client, b"\x16\x03\x01").unwrap();
        crate::sys::net::wait_until(&talker.client, crate::sys::net::PollFlags::IN, {
            std::time::Instant::now() + std::time::Duration::from_secs(10)
        })
        .unwrap();
        let _b1 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        assert_eq!(
            [a1.evicted(), a2.evicted()],
            [None, Some(Evicted::ForNewcomer)]
        );
    }

    /// A connection that has sent part of its hello is not evicted while a silent one can be,
    /// even a younger one of a client holding fewer.
    #[test]
    fn a_silent_connection_gives_way_before_one_that_has_spoken() {
        let peeking = Peeking::new(3, 2, 64);
        let a1 = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        let a2 = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        let b1 = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        a1.spoke().mark();
        a2.spoke().mark();
        let c1 = peeking.take(ip("192.0.2.3"), &conn()).unwrap();
        assert_eq!(b1.evicted(), Some(Evicted::ForNewcomer));
        assert_eq!([a1.evicted(), a2.evicted()], [None, None]);
        // No silent one left: the largest holder's oldest, spoken or not.
        c1.spoke().mark();
        let _c2 = peeking.take(ip("192.0.2.4"), &conn()).unwrap();
        assert_eq!(a1.evicted(), Some(Evicted::ForNewcomer));
    }

    #[test]
    fn many_single_clients_give_way_oldest_first() {
        let peeking = Peeking::new(3, 1, 64);
        let slots: Vec<_> = (1..=3)
            .map(|i| peeking.take(ip(&format!("192.0.2.{i}")), &conn()).unwrap())
            .collect();
        let _new = peeking.take(ip("192.0.2.9"), &conn()).unwrap();
        assert_eq!(
            slots.iter().map(PeekSlot::evicted).collect::<Vec<_>>(),
            [Some(Evicted::ForNewcomer), None, None]
        );
    }

    #[test]
    fn a_proxy_header_moves_the_place_to_the_client_it_names() {
        let peeking = Peeking::new(8, 1, 64);
        let front = peeking.take(ip("10.0.0.1"), &conn()).unwrap();
        peeking.move_to(&front, ip("192.0.2.1")).unwrap();
        // The front holds nothing now; the named client holds its share.
        let second = peeking.take(ip("10.0.0.1"), &conn()).unwrap();
        assert_eq!(
            peeking.move_to(&second, ip("192.0.2.1")).unwrap_err(),
            PeekRefusal::Share(1)
        );
    }

    #[test]
    fn a_stop_evicts_every_connection_still_peeking() {
        let peeking = Peeking::new(8, 8, 64);
        let a = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        let b = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        assert_eq!(peeking.evict_all(Evicted::Stopping), 2);
        assert_eq!([a.evicted(), b.evicted()], [Some(Evicted::Stopping); 2]);
        assert_eq!(peeking.evict_all(Evicted::Stopping), 0);
    }

    #[test]
    fn a_place_released_cannot_be_evicted_and_says_if_it_was() {
        let peeking = Peeking::new(1, 1, 64);
        let first = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        assert_eq!(first.release(), None);
        let second = peeking.take(ip("192.0.2.1"), &conn()).unwrap();
        let _third = peeking.take(ip("192.0.2.2"), &conn()).unwrap();
        assert_eq!(second.release(), Some(Evicted::ForNewcomer));
    }
}
