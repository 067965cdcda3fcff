//! tcp-router: a small, fast, dependable TCP forwarder and router.
//!
//! It accepts TCP connections on listen addresses and relays them, byte for byte, to upstreams
//! chosen by configuration, by the name a client asks for (TLS SNI, HTTP Host, ALPN) and by
//! upstream health; with exact half-close and reset propagation, failover, limits and a graceful
//! drain. Blocking and thread-per-connection: no async runtime. Linux only.
//!
//! # Forwarding a port
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
//! # Options, a thread of its own, a drain
//!
//! [`Forwarder::builder`] takes the options, and [`Builder::bind`] checks them all (each
//! problem one line of the [`Error`]) and binds; [`Forwarder::spawn`] serves on a thread of its
//! own, and [`Running::stop_within`] drains it and returns the [`DrainReport`]:
//!
//! ```
//! use std::time::Duration;
//! use tcp_router::{Forwarder, Version};
//!
//! let forwarder = Forwarder::builder("127.0.0.1:0")
//!     .sni_route("a.example.com", ["127.0.0.1:8443"])
//!     .upstream("127.0.0.1:6379")
//!     .connect_timeout(Duration::from_secs(2))
//!     .proxy_protocol(Version::V2)
//!     .allow("127.0.0.0/8")
//!     .bind()?;
//! let running = forwarder.spawn()?;
//! let report = running.stop_within(Duration::from_secs(5))?;
//! assert_eq!(report.cut, 0);
//! # Ok::<(), tcp_router::Error>(())
//! ```
//!
//! A whole [`Config`] (what the binary builds from its command line and a rinetd-style file,
//! see [`config`]) goes through [`Forwarder::from_config`]; a socket the program bound itself
//! through [`Forwarder::from_listener`]. [`Handle`] stops or reconfigures a running forwarder
//! from any thread, and [`check()`] is the binary's `--check`.
//!
//! # What it leaves to the program
//!
//! Embedding touches no process-wide state: no signal handlers, resource limits, scheduling
//! policy or `process::exit`; the binary's own are opt-in calls in [`process`].
//!
//! The library logs through the [`log`](https://docs.rs/log) facade (one line per connection at
//! info, every error at error) and says nothing until the program installs a logger; with the
//! `env_logger` crate, for example, `env_logger::init();` at the start of `main` and
//! `RUST_LOG=info` in the environment.
//!
//! Working on tcp-router itself: `docs/design.md` in its repository draws how a connection
//! flows through the modules and states the rules they keep.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

// Linux only, said once: splice, the sock_diag netlink answer and Linux's socket options are
// used without a fallback for other systems.
#[cfg(not(target_os = "linux"))]
compile_error!("tcp-router runs on Linux only");

mod admin;
mod check;
pub mod config;
mod error;
mod forwarder;
mod health;
mod log;
pub mod proto;
mod relay;
mod route;
mod serve;
mod sys;
#[cfg(test)]
mod test_support;
pub mod upgrade;

/// The crate README's code, compiled as a doctest so the crate's page cannot show an example that
/// does not build.
#[cfg(doctest)]
#[doc = include_str!("../README.crates-io.md")]
struct CrateReadme;

pub use check::{check, explain_bytes, probe, Probed};
pub use config::{Config, HostPort, Listener, Route};
pub use error::{Error, MAX_ERRORS_SHOWN};
pub use forwarder::{Address, Builder, Forwarder, Running};
pub use proto::proxy::Version;
pub use serve::{DrainReport, Handle, Status};

/// Process-wide settings, for the binary or an embedding program that opts in: the library
/// itself never calls these.
pub mod process {
    pub use crate::sys::limits::{open_files_limit, raise_open_files_limit, thread_limit};
    pub use crate::sys::sched::{apply as apply_scheduler, Applied, Scheduler};
}
