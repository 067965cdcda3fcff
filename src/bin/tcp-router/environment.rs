//! Every environment variable the binary reads, read here: the library reads none, and takes
//! what they switch as configuration or arguments.
//!
//! - At start ([`Environment::take`]): what the service manager passed (`LISTEN_FDS`,
//!   `LISTEN_PID`, `LISTEN_FDNAMES`, `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`) and where
//!   an old process waits for this one (`TCP_ROUTER_UPGRADE`). These are meant for this process
//!   alone, so they are removed: nothing it starts inherits them.
//! - When needed, left in place: `TCP_ROUTER_NO_SPLICE` (`Config::splice`),
//!   `TCP_ROUTER_HANDOFF_VERSION` (the hand-off version a new process claims, for tests) and
//!   `XDG_RUNTIME_DIR` (where the live upgrade's rendezvous directory goes).

use std::ffi::OsString;
use std::path::PathBuf;

use tcp_router::upgrade::{CHANNEL_ENV, VERSION_ENV};

/// The variable that turns splice off when set to anything but "" or "0".
pub(crate) const NO_SPLICE_ENV: &str = "TCP_ROUTER_NO_SPLICE";

/// What this process's environment said at start, for this process alone.
pub(crate) struct Environment {
    /// The sockets the service manager passed to this process (none if `LISTEN_PID` names
    /// another), as listenfd found them.
    pub(crate) listen_fds: listenfd::ListenFd,
    /// `LISTEN_FDNAMES`, split at `:`.
    pub(crate) listen_fd_names: Vec<String>,
    /// `LISTEN_FDS` was set for another process (`LISTEN_PID`).
    pub(crate) listen_fds_for_another: bool,
    /// `NOTIFY_SOCKET`: where the service manager hears about this process.
    pub(crate) notify_socket: Option<OsString>,
    /// `WATCHDOG_USEC` and `WATCHDOG_PID`, as given.
    pub(crate) watchdog_usec: Option<String>,
    pub(crate) watchdog_pid: Option<String>,
    /// `TCP_ROUTER_UPGRADE`: where the old process waits, if a live upgrade started this one.
    pub(crate) predecessor: Option<PathBuf>,
}

impl Environment {
    /// Reads the variables meant for this process alone and removes them from the environment.
    ///
    /// Every change the binary makes to its environment is made here (listenfd's `from_env`
    /// removes `LISTEN_FDS` and `LISTEN_PID` too). Call it first in `run`, before any thread is
    /// started: a thread reading the environment (`getaddrinfo` does) while another changes it
    /// is undefined behaviour in C, which is why Rust 2024 makes `remove_var` unsafe.
    pub(crate) fn take() -> Environment {
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            == Some(std::process::id());
        let listen_fd_names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|names| names.split(':').map(String::from).collect())
            .unwrap_or_default();
        let present = std::env::var_os("LISTEN_FDS").is_some();
        // listenfd reads LISTEN_FDS and removes it and LISTEN_PID; the names are ours to remove.
        let listen_fds = if for_us {
            listenfd::ListenFd::from_env()
        } else {
            listenfd::ListenFd::empty()
        };
        let notify_socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let predecessor = std::env::var_os(CHANNEL_ENV).map(PathBuf::from);
        for name in [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            CHANNEL_ENV,
        ] {
            std::env::remove_var(name);
        }
        Environment {
            listen_fds,
            listen_fd_names,
            listen_fds_for_another: present && !for_us,
            notify_socket,
            watchdog_usec,
            watchdog_pid,
            predecessor,
        }
    }
}

/// Splice is turned off: `TCP_ROUTER_NO_SPLICE` is set to anything but "" or "0".
pub(crate) fn no_splice() -> bool {
    std::env::var_os(NO_SPLICE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The upgrade protocol's version a new process claims, if `TCP_ROUTER_HANDOFF_VERSION` names
/// one (the variable keeps its name: tests and scripts already use it).
pub(crate) fn upgrade_version() -> Option<u32> {
    std::env::var(VERSION_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Where the live upgrade's rendezvous directory goes: `$XDG_RUNTIME_DIR` if it is a
/// directory, else the temporary directory.
pub(crate) fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
