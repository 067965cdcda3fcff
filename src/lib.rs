//! tcp-router: a small, fast, dependable TCP forwarder and router.
//!
//! It accepts TCP connections on listen addresses and relays them, byte for byte, to upstreams
//! chosen by configuration, by the name a client asks for (TLS SNI, HTTP Host, ALPN) and by
//! upstream health; with exact half-close and reset propagation, failover, limits and a graceful
//! drain. Blocking and thread-per-connection: no async runtime.
//!
//! # Embedding
//!
//! Five lines forward a port from another program:
//!
//! ```no_run
//! use tcp_router::Forwarder;
//!
//! fn main() -> Result<(), tcp_router::Error> {
//!     let forwarder = Forwarder::new("127.0.0.1:11000", "127.0.0.1:6379")?;
//!     forwarder.serve()?; // blocks until a Handle stops it
//!     Ok(())
//! }
//! ```
//!
//! [`Forwarder::builder`] sets the options that matter (timeouts, caps, several upstreams, name
//! routes, PROXY protocol, allow/deny); [`Forwarder::spawn`] runs it on its own thread and
//! [`Running::stop_within`] drains it and returns the [`DrainReport`]. A whole [`Config`] (what
//! the binary builds from its command line and a rinetd-style file) goes through
//! [`Forwarder::from_config`]. Embedding touches no process-wide state; the binary's process
//! concerns are opt-in calls in [`process`].
//!
//! # Layout
//!
//! Each part is a folder; `docs/design.md` draws how a connection flows through them and states
//! the rules their imports keep (checked by `tests/architecture.rs`).
//!
//! - [`config`]: the configuration as pure data: addresses, durations, patterns, per-route
//!   settings, the rinetd-compatible file parser, validation.
//! - [`proto`]: the pure wire-format readers (TLS ClientHello, HTTP Host, PROXY v1/v2).
//! - `route`: the decisions: allow/deny, which route a name takes, which upstream first.
//! - `serve`: the accept loop, reload, drain, a connection's life, peek, pool, permits.
//! - `relay`: the two copy threads, with copy and splice.
//! - `log`: the per-connection line and rinetd's log formats.
//! - `sys`: what std lacks: socket options, limits, scheduling.
//! - `admin`: the admin endpoint (metrics, readiness, live connections, status page).
//! - `forwarder`, [`check()`], `error`: the public entry points.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod admin;
mod check;
pub mod config;
mod error;
mod forwarder;
mod handoff;
mod log;
pub mod proto;
mod relay;
mod route;
mod serve;
mod sys;
#[cfg(test)]
mod test_support;

pub use check::check;
pub use config::{Config, HostPort, Listener, Route};
pub use error::Error;
pub use forwarder::{Address, Builder, Forwarder, Running};
pub use serve::{DrainReport, Handle, Status};

/// The live upgrade: a running process hands its listeners and every established connection to a
/// new one (see docs/operations.md). The binary drives it on SIGUSR2; the calls are here for a
/// program that embeds tcp-router and wants the same.
pub mod upgrade {
    pub use crate::handoff::{Channel, Rendezvous, CHANNEL_ENV, VERSION, VERSION_ENV};
    pub use crate::serve::{HandedOff, TakenOver};

    /// For the fuzz target `handoff_wire`, not an API: decodes `bytes` as a hand-off message
    /// and, if they are one, checks that it encodes to bytes that decode to it again (panics if
    /// not). True if `bytes` were a message.
    #[doc(hidden)]
    pub fn decode_round_trip(bytes: &[u8]) -> bool {
        crate::handoff::wire::decode_round_trip(bytes)
    }
}

/// Process-wide settings, for the binary or an embedding program that opts in: the library
/// itself never calls these.
pub mod process {
    pub use crate::sys::limits::{open_files_limit, raise_open_files_limit, thread_limit};
    pub use crate::sys::sched::{apply as apply_scheduler, Applied, Scheduler};
}
