//! UDP forwarding, all of it: the server keeps one [`Udp`] beside its TCP listeners and calls it
//! at start, at each reload, at the graceful stop and before a live upgrade.
//!
//! One thread per UDP listen socket receives datagrams (`port`). Each client address gets a
//! flow (`flow`): an upstream socket of its own, connected, and a thread that relays the
//! upstream's replies back to the client from the listen socket's address, until no datagram
//! has moved either way for the route's idle timeout. A datagram is never split or merged, and
//! a flow's datagrams keep their order each way: one thread sends each direction. The flows of
//! a listener are capped (`table`): a new client beyond the cap evicts the flow idle longest.
//! Allow/deny rules are checked when a flow is set up; a refused client's datagrams are dropped
//! and counted, and logged at most once a minute (`quiet`). `listeners` binds, switches on
//! reload and stops them, and hands them to a new process in a live upgrade (the socket, not
//! the flows: the new process sets up its own). `board` shows the flows to the admin endpoint.

mod board;
mod flow;
mod listeners;
mod port;
mod quiet;
mod table;

pub(crate) use board::{FlowView, UdpBoard};
pub(crate) use listeners::{Udp, UdpStart};
