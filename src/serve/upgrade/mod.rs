//! The live upgrade, both sides: the old process hands off (offers its listeners, brings every
//! connection to a safe point, sends each one's sockets and record), the new one takes over
//! (takes them and carries on). `hand_off` and `take_over` are the two sides, `report` what
//! each returns; `hold` is where a connection still choosing its route waits meanwhile (the
//! relay's copy threads wait at `relay::park`).
//!
//! The order is what makes it safe:
//! 1. Hello (new → old, with its version) and offer (old → new: the listening sockets, TCP and
//!    UDP). From the moment it takes the request the old process accepts nothing and reads no
//!    datagram; clients wait in the kernel's accept queues and datagrams in the UDP sockets'
//!    receive queues, which both processes now share.
//! 2. Ready (new → old): the new process has validated its configuration and taken or bound
//!    every listener, but accepts nothing yet.
//! 3. The old process holds the connections still choosing a route where they are (waiting for
//!    a ClientHello, a Host header or a PROXY header: `hold`, with the bytes read so far) and
//!    waits for those dialing their upstream to begin relaying. Then it asks every connection's
//!    copy threads to park (`relay::park`): a thread blocked in `recv` or in a write is woken
//!    with a signal and stops where it is, holding the bytes it had read and not written.
//! 4. One message per connection (its sockets attached), then commit; the new process answers
//!    started before it touches any of them, and only then does the old one let its threads go
//!    (they return without touching the sockets) and close its copies. A connection that was
//!    choosing its route is served from the start by the new process, reading first what the
//!    old one had read. The new process reads its UDP sockets from then on, setting up flows of
//!    its own; the old one's flows relay the replies still in flight, then end.
//!
//! Until started, every failure leaves the old process as it was: its parked threads carry on
//! (writing what they held first), its listeners are polled again.

mod addresses;
mod hand_off;
mod health;
mod hold;
mod steps;
mod take_over;

pub(super) use hand_off::{hand_off, Offering};
pub(crate) use hold::{Hold, HoldVerdict};
pub(super) use steps::refusal;
use steps::{unexpected, QUIESCE, START, STEP};
pub(super) use take_over::{assign, assign_udp, receive_offer, take_connections, Taker};
