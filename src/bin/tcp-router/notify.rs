//! Readiness and state notification to the service manager (`NOTIFY_SOCKET`, a path or an
//! abstract `@name`), as sd_notify(3) describes: plain datagrams, no libsystemd.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tcp_router::{Handle, Status};

/// How often the status line is refreshed (when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET` as it was given, for a new process started by a live upgrade.
    target: String,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` named at start (see `Environment::take`), if it was set.
    pub(crate) fn connect_to(target: Option<&OsStr>) -> Option<Arc<Notifier>> {
        let target = target?;
        let target = target.to_string_lossy().into_owned();
        match connect(&target) {
            Ok(socket) => Some(Arc::new(Notifier {
                socket,
                target: target.clone(),
            })),
            Err(err) => {
                log::warn!("NOTIFY_SOCKET={target}: cannot connect: {err}; not notifying");
                None
            }
        }
    }

    /// Sends one datagram of `KEY=value` lines; a failure is logged, never fatal.
    pub(crate) fn send(&self, lines: &[String]) {
        let mut message = lines.join("\n");
        message.push('\n');
        if let Err(err) = self.socket.send(message.as_bytes()) {
            log::debug!("cannot notify the service manager: {err}");
        }
    }

    /// `READY=1` with the status line.
    pub(crate) fn ready(&self, status: &Status) {
        self.send(&["READY=1".into(), status_line(status)]);
    }

    /// `RELOADING=1` with the time it began, as systemd wants it.
    pub(crate) fn reloading(&self) {
        self.send(&[
            "RELOADING=1".into(),
            format!("MONOTONIC_USEC={}", monotonic_usec()),
        ]);
    }

    /// After a reload: `READY=1`, with the status line or why the reload was refused.
    pub(crate) fn reloaded(&self, refused: Option<&str>, status: &Status) {
        let line = match refused {
            Some(why) => format!("STATUS=reload refused, the running configuration stays: {why}"),
            None => status_line(status),
        };
        self.send(&["READY=1".into(), line]);
    }

    /// `NOTIFY_SOCKET` for a process this one starts (a live upgrade's new process).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// After a live upgrade handed everything over: `pid` is the main process now.
    pub(crate) fn main_pid(&self, pid: u32) {
        self.send(&[format!("MAINPID={pid}")]);
    }

    /// A live upgrade's new process, once the old one has let go: this is the main process,
    /// and ready.
    pub(crate) fn taken_over(&self, status: &Status) {
        self.send(&[
            format!("MAINPID={}", std::process::id()),
            "READY=1".into(),
            status_line(status),
        ]);
    }

    /// `STOPPING=1`: a graceful stop has begun.
    pub(crate) fn stopping(&self) {
        self.send(&["STOPPING=1".into(), "STATUS=stopping: draining".into()]);
    }
}

fn connect(target: &str) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?,
        None => socket.connect(target)?,
    }
    Ok(socket)
}

fn status_line(status: &Status) -> String {
    format!(
        "STATUS=serving {} listener(s), {} active connection(s)",
        status.listeners, status.active
    )
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd's MONOTONIC_USEC uses.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is set), from the values read at start (see `Environment::take`).
pub(crate) fn watchdog(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec = usec?.trim().parse::<u64>().ok();
    let for_us = pid.is_none_or(|pid| pid.trim().parse::<u32>().ok() == Some(std::process::id()));
    usec.filter(|usec| *usec > 0 && for_us)
        .map(Duration::from_micros)
}

/// Keeps the service manager informed while serving: the status line when it changes (every few
/// seconds at most), and with a watchdog, `WATCHDOG=1` at half its interval, but only while the
/// accept loop is going round, so a wedged loop stops the pings and systemd restarts it.
pub(crate) fn keep_informed(notifier: Arc<Notifier>, handle: Handle, watchdog: Option<Duration>) {
    let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let spawned = thread::Builder::new()
        .name("tcp-router-notify".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut last_status = String::new();
            let mut since_status = STATUS_EVERY;
            loop {
                let status = handle.status();
                if status.stopping && status.listeners == 0 && status.active == 0 {
                    return;
                }
                let mut lines = Vec::new();
                if let Some(watchdog) = watchdog {
                    if status.since_heartbeat < watchdog / 2 {
                        lines.push("WATCHDOG=1".to_string());
                    }
                }
                since_status += tick;
                let line = status_line(&status);
                if !status.stopping && since_status >= STATUS_EVERY && line != last_status {
                    lines.push(line.clone());
                    last_status = line;
                    since_status = Duration::ZERO;
                }
                if !lines.is_empty() {
                    notifier.send(&lines);
                }
                thread::sleep(tick);
            }
        });
    if let Err(err) = spawned {
        log::warn!(
            "cannot start the notification thread: {err}; systemd gets no status or watchdog pings"
        );
    }
}
