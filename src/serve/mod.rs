//! Serving: the accept loop and everything a connection goes through before and around the
//! relay.
//!
//! - `server`: the accept loop on one thread over every listener; `accept`: a connection slot
//!   taken before each `accept`, clients handed to pool workers; `handle`: the [`Handle`] that
//!   stops or reconfigures it; `reload`: reconfiguration, with `configured`, what a
//!   configuration builds; `drain`: the graceful stop ([`DrainReport`]); `bound`: binding
//!   listeners and switching them on reload; `backoff`: what a failing `accept` costs.
//! - `conn`: one client's life on a pool worker: PROXY header, allow/deny, `peek` for a route by
//!   name, `connect` upstream with failover, replay, relay, log.
//! - `listener`: a listener's run-time state (routes with their upstreams' health).
//! - `pool`: the worker threads; `permits`: connection slots and the default cap; `registry`:
//!   live connections, for the drain.
//!
//! This is the one part that imports all the others; none of them imports it.

mod accept;
mod backoff;
mod bound;
mod clients;
mod closer;
mod configured;
mod conn;
mod connect;
mod drain;
mod handle;
mod handoff;
pub(crate) mod listener;
pub(crate) mod metrics;
mod peek;
mod permits;
mod pool;
pub(crate) mod registry;
mod reload;
mod server;
pub(crate) mod status;

pub(crate) use configured::Follower;
pub use drain::DrainReport;
pub use handle::{Handle, Status};
pub use handoff::{HandedOff, TakenOver};
pub(crate) use server::Server;
