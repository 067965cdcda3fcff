//! Serving: the accept loop and everything a connection goes through before and around the
//! relay.
//!
//! - `server`: the accept loop on one thread over every listener, a connection slot taken before
//!   each `accept`, clients handed to pool workers, reconfiguration and the graceful stop
//!   ([`Handle`], [`DrainReport`]); `bound`: binding listeners and switching them on reload;
//!   `backoff`: what a failing `accept` costs.
//! - `conn`: one client's life on a pool worker: PROXY header, allow/deny, `peek` for a route by
//!   name, `connect` upstream with failover, replay, relay, log.
//! - `listener`: a listener's run-time state (routes with their upstreams' health).
//! - `pool`: the worker threads; `permits`: connection slots and the default cap; `registry`:
//!   live connections, for the drain.
//!
//! This is the one part that imports all the others; none of them imports it.

mod backoff;
mod bound;
mod clients;
mod closer;
mod conn;
mod connect;
mod handoff;
pub(crate) mod listener;
pub(crate) mod metrics;
mod peek;
mod permits;
mod pool;
pub(crate) mod registry;
mod server;
pub(crate) mod status;

pub use handoff::{HandedOff, TakenOver};
pub use server::{DrainReport, Handle, Status};
pub(crate) use server::{Follower, Server};
