//! tcp-router: a small, fast, dependable TCP forwarder and router.
//!
//! Blocking and thread-per-connection: the main thread polls every listener and accepts, handing
//! each client through a bounded channel to a pool worker; the worker connects upstream, and the
//! bytes move through two blocking copy threads, one per direction.
//!
//! # Layout
//!
//! - [`cli`]: command-line arguments as typed; [`config`]: the validated configuration;
//!   [`check`]: `--check` and `--explain`.
//! - [`config_file`]: the rinetd-compatible config file parser; [`acl`]: allow/deny rules.
//! - [`names`]: the name-routing table (SNI and Host patterns).
//! - [`rinetd_log`]: rinetd's logfile line formats.
//! - [`sni`], [`http_host`], [`proxy_protocol`]: pure readers over `&[u8]` ([`parse`] holds
//!   their shared cursor and `Status`).
//! - [`addr`], [`duration`]: parsers for addresses, ports and durations.
//! - [`server`]: the accept loop, connection slots, control requests and the graceful stop.
//! - [`limits`]: open-files limit, the default connection cap, connection permits.
//! - [`pool`]: reusable worker threads with panic containment.
//! - [`conn`]: one client's life: connect upstream, relay, log.
//! - [`route`], [`upstream`]: routes at run time; round-robin, failover and cool-down.
//! - [`relay`], [`copy`]: the two copy threads, half-close and reset rules, idle limits.
//! - [`peek`]: reads a client's first bytes for routing, keeping them for replay.
//! - `splice` (Linux): the zero-copy data path through pooled pipes, with its fallback.
//! - [`registry`]: live connections, for the drain.
//! - [`net`]: socket options the standard library lacks.
//! - [`conn_log`]: the per-connection log line.
//! - [`signals`]: SIGINT/SIGTERM/SIGHUP handling; [`sched`]: the threads' scheduling policy.
//! - [`error`]: start-up errors and their one-line display.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod acl;
pub mod addr;
pub mod check;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod conn_log;
pub mod copy;
pub mod duration;
pub mod error;
pub mod http_host;
pub mod limits;
pub mod names;
pub mod net;
pub mod parse;
pub mod peek;
pub mod pool;
pub mod proxy_protocol;
pub mod registry;
pub mod relay;
pub mod rinetd_log;
pub mod route;
pub mod sched;
pub mod server;
pub mod signals;
pub mod sni;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod upstream;

pub use config::Config;
pub use error::Error;
pub use server::{DrainReport, Handle, Server};

/// Runs tcp-router as the binary does: raise the open-files limit, bind, write the pid file,
/// install signal handlers, serve until SIGINT or SIGTERM, drain. `reloader` produces the new
/// configuration on SIGHUP.
pub fn run(config: Config, reloader: Option<server::Reloader>) -> Result<DrainReport, Error> {
    // First, while this is the only thread: threads inherit the policy when they are created.
    let scheduler = sched::apply(config.scheduler);
    let open_files = limits::raise_open_files_limit();
    let mut server = Server::bind(&config)?;
    log::info!(
        "max connections: {} ({}; open-files limit {open_files}, thread limit {}); scheduler: {scheduler}",
        server.max_connections(),
        if config.max_connections.is_some() {
            "set by --max-connections"
        } else {
            "derived from the limits"
        },
        limits::thread_limit()
    );
    if let Some(reloader) = reloader {
        server.set_reloader(reloader);
    }
    let _pid_file = match &config.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    signals::install(server.handle()).map_err(|source| Error::Setup {
        what: "install signal handlers",
        source,
    })?;
    server.run()
}

/// The pid file, removed when dropped (at exit).
#[derive(Debug)]
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> Result<PidFile, Error> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            Error::PidFile {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
