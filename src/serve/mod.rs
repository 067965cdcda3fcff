//! Serving: the accept loop and everything a connection goes through before and around the
//! relay.
//!
//! - `server`: the accept loop on one thread over every listener; `accept`: a connection slot
//!   taken before each `accept`, clients handed to pool workers; `handle`: the [`Handle`] that
//!   stops or reconfigures it; `reload`: reconfiguration, with `configured`, what a
//!   configuration builds; `drain`: the graceful stop ([`DrainReport`]); `bound`: binding
//!   listeners and switching them on reload; `backoff`: what a failing `accept` costs.
//! - `admit`: a client's places under the limits, taken at accept; `job`: what a worker needs to
//!   serve one connection; `record`: everything known about it.
//! - `conn`: one connection's life: `setup` (read the PROXY header, authorize, `peek` for a
//!   route by name, `dial` the upstream with failover, send the preface), the relay, `close`
//!   (log lines, counters, release; `refused` says why a client got no relay).
//! - `upgrade`: the live upgrade's two sides (hand off, take over) and the set-up worker's hold.
//! - `udp`: UDP forwarding, all of it (its listeners, their flows), beside the TCP listeners.
//! - `listener`: a listener's run-time state (routes with their upstreams' health).
//! - `pool`: the worker threads; `permits`: connection slots and the default cap; `registry`:
//!   live connections, for the drain.
//!
//! This is the one part that imports all the others; none of them imports it.

mod accept;
mod admit;
mod backoff;
mod bound;
mod clients;
mod close;
mod closer;
mod configured;
mod conn;
mod dial;
mod drain;
mod handle;
mod job;
pub(crate) mod listener;
pub(crate) mod metrics;
mod on_down;
mod peek;
mod permits;
mod pool;
pub(crate) mod record;
mod refused;
pub(crate) mod registry;
mod reload;
mod server;
mod setup;
pub(crate) mod status;
pub(crate) mod udp;
mod upgrade;

pub(crate) use configured::Follower;
pub use drain::DrainReport;
pub use handle::{Handle, Status};
pub(crate) use server::Server;
