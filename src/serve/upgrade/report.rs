//! What each side of a live upgrade reports, and how long each of its steps may take.

use std::time::Duration;

use crate::error::Error;
use crate::handoff::wire::Message;
use crate::handoff::{upgrade_error, Channel};

/// How long each side waits for the other's next message while nothing slow is expected.
pub(super) const STEP: Duration = Duration::from_secs(10);

/// How long the new process may take to start and be ready (configuration, binding).
pub(super) const START: Duration = Duration::from_secs(30);

/// How long connections may take to reach a safe point (those connecting upstream finish that
/// first; the connect timeouts bound it).
pub(super) const QUIESCE: Duration = Duration::from_secs(15);

/// What an old process handed over.
#[derive(Debug)]
pub struct HandedOff {
    /// The new process's id, as the channel's peer credentials gave it (`None` if they did not).
    pub pid: Option<u32>,
    /// Listening sockets handed over (the admin endpoint's included).
    pub listeners: usize,
    /// Established connections handed over.
    pub connections: usize,
    /// Held until dropped: the new process waits for it to close before it tells the service
    /// manager it is the main process.
    #[allow(dead_code, reason = "held for its Drop, which closes the channel")]
    pub(super) channel: Channel,
}

/// What a new process took over.
#[derive(Debug)]
pub struct TakenOver {
    /// Listening sockets taken over (the admin endpoint's included).
    pub listeners: usize,
    /// Established connections taken over.
    pub connections: usize,
    pub(super) channel: Channel,
}

impl TakenOver {
    /// Waits (up to `timeout`) until the old process has let go of everything and closed the
    /// channel; after that it has told the service manager who the main process is.
    pub fn wait_released(self, timeout: Duration) {
        let (done, wait) = crossbeam_channel::bounded(1);
        let channel = self.channel;
        let waiter = std::thread::Builder::new()
            .name("tcp-router-upgrade".into())
            .spawn(move || {
                channel.wait_closed();
                let _ = done.send(());
            });
        if waiter.is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

/// A refusal to send the other side.
pub(crate) fn refusal(reason: String) -> Message {
    Message::Refuse { reason }
}

/// The error for a message that is not the one the step expects.
pub(super) fn unexpected(wanted: &str, got: &Message) -> Error {
    upgrade_error(format!(
        "expected the {wanted} message, got the {}",
        got.name()
    ))
}
