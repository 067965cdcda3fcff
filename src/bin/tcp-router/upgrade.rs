//! The live upgrade, the binary's part: SIGUSR2 starts the binary from its path on disk with the
//! same arguments and environment, and hands it everything (the library's
//! [`Handle::hand_off`]); a process started that way takes everything over
//! ([`Forwarder::take_over`]) instead of binding. See docs/operations.md, "Upgrading".

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tcp_router::upgrade::{Channel, Rendezvous, CHANNEL_ENV};
use tcp_router::{Error, Handle};

use crate::environment;
use crate::notify::Notifier;

/// How long the new process may take to start and connect.
const START: Duration = Duration::from_secs(30);

/// How long a new process that failed is given to exit by itself before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Starts new processes on SIGUSR2, one at a time.
#[derive(Debug)]
pub(crate) struct Upgrader {
    /// The binary's path as this process was started from it, so a newer file installed there
    /// is what starts (`/proc/self/exe` would name the old, deleted file).
    exe: PathBuf,
    /// The arguments after the program name.
    args: Vec<OsString>,
    notifier: Option<Arc<Notifier>>,
    /// The watchdog interval the service manager asked for, passed on to the new process.
    watchdog: Option<Duration>,
    handle: Handle,
    busy: AtomicBool,
    /// Set once everything was handed over: the pid file is the new process's now.
    handed_over: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Upgrader {
    /// Records how this process was started. Call it at start, before the binary may change.
    pub(crate) fn new(
        handle: Handle,
        notifier: Option<Arc<Notifier>>,
        watchdog: Option<Duration>,
    ) -> Arc<Upgrader> {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from);
        let exe = std::env::current_exe()
            .ok()
            .map(strip_deleted)
            .or(argv0)
            .unwrap_or_else(|| PathBuf::from("tcp-router"));
        Arc::new(Upgrader {
            exe,
            args: argv.collect(),
            notifier,
            watchdog,
            handle,
            busy: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    /// SIGUSR2: starts an upgrade on a thread of its own, unless one is under way.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.busy.swap(true, Ordering::SeqCst) {
            log::warn!("SIGUSR2: an upgrade is already under way; ignored");
            return;
        }
        let upgrader = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("tcp-router-upgrade".into())
            .spawn(move || upgrader.run());
        match spawned {
            Ok(thread) => {
                if let Ok(mut slot) = self.thread.lock() {
                    *slot = Some(thread);
                }
            }
            Err(err) => {
                log::error!(
                    "upgrade failed: cannot start its thread: {err}; still serving everything"
                );
                self.busy.store(false, Ordering::SeqCst);
            }
        }
    }

    /// True once everything was handed over (the process is about to exit).
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }

    /// Waits for an upgrade under way to finish (before the process exits).
    pub(crate) fn finish(&self) {
        let thread = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn run(&self) {
        log::info!("upgrade: starting {}", self.exe.display());
        match self.hand_off() {
            Ok(()) => self.handed_over.store(true, Ordering::SeqCst),
            Err(why) => {
                // The accept loop has logged a refused hand-off already.
                if let Some(why) = why {
                    log::error!("upgrade failed: {why}; still serving everything");
                }
                self.busy.store(false, Ordering::SeqCst);
            }
        }
    }

    /// `Err(None)`: failed, and already logged.
    fn hand_off(&self) -> Result<(), Option<String>> {
        let rendezvous = Rendezvous::new(&environment::runtime_dir())
            .map_err(|err| format!("cannot create the hand-off socket: {err}"))?;
        let mut command = Command::new(&self.exe);
        command.args(&self.args).env(CHANNEL_ENV, rendezvous.path());
        // What this process took out of its environment at start, the new one needs too
        // (without WATCHDOG_PID, which would name this process).
        if let Some(notifier) = &self.notifier {
            command.env("NOTIFY_SOCKET", notifier.target());
        }
        if let Some(watchdog) = self.watchdog {
            command.env("WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", self.exe.display()))?;
        let channel = match wait_for(&rendezvous, &mut child, &self.handle) {
            Ok(channel) => channel,
            Err(why) => {
                stop(&mut child);
                return Err(Some(why));
            }
        };
        match self.handle.hand_off(channel) {
            Ok(handed) => {
                // The channel's peer is the process started here (the rendezvous accepts no
                // other); its credentials name it, and the child's id is the same process.
                let pid = handed.pid.unwrap_or_else(|| child.id());
                if let Some(notifier) = &self.notifier {
                    notifier.main_pid(pid);
                }
                log::info!(
                    "upgrade: handed over to pid {pid}: {} listening socket(s), {} connection(s); exiting",
                    handed.listeners,
                    handed.connections
                );
                if self.handle.status().stopping {
                    pass_stop_on(pid);
                }
                // Closing the channel tells the new process it is on its own.
                drop(handed);
                Ok(())
            }
            Err(err) => {
                stop(&mut child);
                Err(match err {
                    Error::Upgrade(_) => None,
                    other => Some(other.to_string()),
                })
            }
        }
    }
}

/// Waits for the new process to connect, or to exit first, or for a stop request.
fn wait_for(
    rendezvous: &Rendezvous,
    child: &mut Child,
    handle: &Handle,
) -> Result<Channel, String> {
    let deadline = Instant::now() + START;
    loop {
        if handle.status().stopping {
            return Err("a stop was requested meanwhile".into());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the new process exited ({status}) before taking over"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("the new process did not connect within {START:?}"));
        }
        match rendezvous.accept(Duration::from_millis(100)) {
            Ok(Some(channel)) if channel.peer_pid() == Some(child.id()) => return Ok(channel),
            Ok(Some(channel)) => log::warn!(
                "upgrade: pid {:?} connected to the hand-off socket, not the new process; ignored",
                channel.peer_pid()
            ),
            Ok(None) => {}
            Err(err) => return Err(format!("cannot accept on the hand-off socket: {err}")),
        }
    }
}

/// Lets a new process that will not take over exit (it has been refused), or kills it.
fn stop(child: &mut Child) {
    let deadline = Instant::now() + EXIT_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A stop was asked for while the upgrade ran: the process that has everything now stops.
fn pass_stop_on(pid: u32) {
    log::info!("upgrade: a stop was requested meanwhile; passing SIGTERM on to pid {pid}");
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(err) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        log::warn!("upgrade: cannot signal pid {pid}: {err}");
    }
}

/// Linux names a replaced binary `PATH (deleted)`; the path is what to start.
fn strip_deleted(exe: PathBuf) -> PathBuf {
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// Connects to the old process waiting at `path`, which must be this process's parent (it
/// started this one and waits for it): anything else listening there is refused. The channel
/// claims the hand-off version `TCP_ROUTER_HANDOFF_VERSION` names, if it names one.
pub(crate) fn connect(path: &std::path::Path) -> Result<Channel, Error> {
    let channel = Channel::connect(path).map_err(|err| {
        Error::Upgrade(format!(
            "cannot reach the old process at {}: {err}",
            path.display()
        ))
    })?;
    let channel = match environment::upgrade_version() {
        Some(version) => channel.claiming_version(version),
        None => channel,
    };
    let parent = std::os::unix::process::parent_id();
    match channel.peer_pid() {
        Some(pid) if pid == parent => Ok(channel),
        peer => Err(Error::Upgrade(format!(
            "the process listening at {} is pid {}, not this process's parent (pid {parent}); \
             refusing to take over from it",
            path.display(),
            peer.map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
        ))),
    }
}
