//! Signals: SIGINT and SIGTERM stop gracefully (a second one exits at once), SIGHUP reloads,
//! SIGUSR2 upgrades (starts the binary on disk and hands everything to it).
//!
//! The signal thread only reads signals and starts work elsewhere, so it answers the next one at
//! once whatever runs: a reload (reading and checking a large file takes seconds) runs on a
//! thread of its own, the upgrade on another, the drain on the accept loop.
//!
//! signal-hook rather than ctrlc: ctrlc's `termination` feature hands SIGINT, SIGTERM and SIGHUP to
//! one handler, so it cannot tell "stop" from "reload". signal-hook's iterator runs a plain thread
//! that receives each signal by number, outside the signal handler, so the work it starts (a
//! drain, a config re-read) runs in ordinary code.

use std::io;
use std::thread;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;
use tcp_router::{Config, Error, Handle};

use crate::notify::Notifier;
use crate::upgrade::Upgrader;

/// Re-reads the configuration on SIGHUP; `None` when there is no file to re-read.
pub(crate) type Reload = Box<dyn Fn() -> Option<Result<Config, Error>> + Send>;

/// Starts the signal thread, which forwards signals to `handle` and tells the service manager
/// (through `notifier`, if any) what they start.
pub(crate) fn install(
    handle: Handle,
    reload: Reload,
    notifier: Option<Arc<Notifier>>,
    upgrader: Arc<Upgrader>,
) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])?;
    let stopping = Arc::new(AtomicBool::new(false));
    let reloads = start_reloader(
        handle.clone(),
        reload,
        notifier.clone(),
        Arc::clone(&stopping),
    )?;
    thread::Builder::new()
        .name("tcp-router-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let stopped = stopping.load(Ordering::SeqCst);
                match signal {
                    SIGUSR2 if stopped => log::warn!("SIGUSR2: stopping already; not upgrading"),
                    SIGUSR2 => {
                        log::info!("SIGUSR2: upgrading to the binary on disk");
                        upgrader.start();
                    }
                    SIGHUP if stopped => log::warn!("SIGHUP: stopping already; not reloading"),
                    SIGHUP => {
                        // One reload waiting is enough: it reads the file as it is then.
                        if reloads.try_send(()).is_err() {
                            log::info!("SIGHUP: a reload is under way; one more follows it");
                        }
                    }
                    _ if stopped => {
                        log::warn!("{}: second stop signal, exiting now", name(signal));
                        std::process::exit(128 + signal);
                    }
                    _ => {
                        log::info!(
                            "{}: stopping gracefully (send again to exit at once)",
                            name(signal)
                        );
                        stopping.store(true, Ordering::SeqCst);
                        if let Some(notifier) = &notifier {
                            notifier.stopping();
                        }
                        handle.stop();
                    }
                }
            }
        })?;
    Ok(())
}

/// Starts the thread that reloads, one SIGHUP at a time; returns where to ask for one (room for
/// one waiting).
fn start_reloader(
    handle: Handle,
    reload: Reload,
    notifier: Option<Arc<Notifier>>,
    stopping: Arc<AtomicBool>,
) -> io::Result<SyncSender<()>> {
    let (tx, rx) = sync_channel::<()>(1);
    thread::Builder::new()
        .name("tcp-router-reload".into())
        .spawn(move || {
            for () in rx {
                if stopping.load(Ordering::SeqCst) {
                    log::warn!("SIGHUP: stopping already; not reloading");
                    continue;
                }
                log::info!("SIGHUP: reloading the configuration");
                if let Some(notifier) = &notifier {
                    notifier.reloading();
                }
                let refused = reconfigure(&handle, &reload);
                // A stop that came meanwhile has told the service manager already.
                if let Some(notifier) = notifier
                    .as_ref()
                    .filter(|_| !stopping.load(Ordering::SeqCst))
                {
                    notifier.reloaded(refused.as_deref(), &handle.status());
                }
            }
        })?;
    Ok(tx)
}

/// Re-reads and applies the configuration; `Some(reason)` if it was refused (the first line of
/// it), after logging every line.
fn reconfigure(handle: &Handle, reload: &Reload) -> Option<String> {
    match reload() {
        None => {
            handle.reload_refused(&Error::Config(vec![
                "SIGHUP, but there is no config file to re-read (--config)".into(),
            ]));
            Some("no config file to re-read".into())
        }
        // The accept loop logs the outcome.
        Some(Ok(config)) => handle.reconfigure(config).err().map(|err| first_line(&err)),
        Some(Err(err)) => {
            handle.reload_refused(&err);
            Some(first_line(&err))
        }
    }
}

fn first_line(err: &Error) -> String {
    err.lines().into_iter().next().unwrap_or_default()
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}
