//! How long each step of a live upgrade may take, and the messages both sides send alike.

use std::time::Duration;

use crate::error::Error;
use crate::upgrade::upgrade_error;
use crate::upgrade::wire::Message;

/// How long each side waits for the other's next message while nothing slow is expected.
pub(super) const STEP: Duration = Duration::from_secs(10);

/// How long the new process may take to start and be ready (configuration, binding).
pub(super) const START: Duration = Duration::from_secs(30);

/// How long connections may take to reach a safe point (those connecting upstream finish that
/// first; the connect timeouts bound it).
pub(super) const QUIESCE: Duration = Duration::from_secs(15);

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
