//! Why a connection was closed without a relay, and how each reason is logged and counted.

use crate::log::rinetd::LogResult;
use crate::relay::Outcome;
use crate::route::access::Refusal;

use super::clients::{Evicted, PeekRefusal};
use super::metrics;

/// The metrics' word for how a connection ended.
pub(super) fn metrics_result(result: &Result<Outcome, Refused>) -> metrics::Disposition {
    match result {
        Ok(_) => metrics::Disposition::Forwarded,
        Err(Refused::Acl(_)) => metrics::Disposition::Refused,
        Err(Refused::NoUpstream) => metrics::Disposition::NoUpstream,
        Err(Refused::NoRoute) => metrics::Disposition::NoRoute,
        Err(Refused::Peek { timeout: true, .. }) => metrics::Disposition::PeekTimeout,
        Err(Refused::Peek { .. }) => metrics::Disposition::Error,
        Err(Refused::BadProxyHeader(_) | Refused::UntrustedProxy) => {
            metrics::Disposition::ProxyHeader
        }
        Err(Refused::Stopped | Refused::Upgraded) => metrics::Disposition::Stopped,
        Err(Refused::ClientLimit(_)) => metrics::Disposition::ClientLimit,
        Err(Refused::PeekLimit(_)) => metrics::Disposition::PeekLimit,
        Err(Refused::Evicted(Evicted::ForNewcomer)) => metrics::Disposition::PeekEvicted,
        Err(Refused::Evicted(Evicted::Stopping)) => metrics::Disposition::Stopped,
    }
}

/// rinetd's word for how a connection ended: which side closed first, or why it was refused.
pub(super) fn rinetd_result(result: &Result<Outcome, Refused>) -> LogResult {
    match result {
        Ok(outcome) if outcome.client_ended_first() => LogResult::DoneRemoteClosed,
        Ok(_) => LogResult::DoneLocalClosed,
        Err(Refused::Acl(refusal)) => LogResult::refused(refusal),
        Err(Refused::NoUpstream) => LogResult::LocalConnectFailed,
        Err(
            Refused::BadProxyHeader(_)
            | Refused::UntrustedProxy
            | Refused::NoRoute
            | Refused::Peek { .. }
            | Refused::Stopped
            | Refused::Upgraded
            | Refused::ClientLimit(_)
            | Refused::PeekLimit(_)
            | Refused::Evicted(_),
        ) => LogResult::UnknownError,
    }
}

/// Why a client was closed without a relay; the text goes in the log line's `result=`.
#[derive(Debug)]
pub(crate) enum Refused {
    BadProxyHeader(String),
    /// The listener reads PROXY headers only from senders it trusts, and this is not one.
    UntrustedProxy,
    Acl(Refusal),
    NoRoute,
    /// Reading what routing needs failed: timed out, or for another reason.
    Peek {
        why: String,
        timeout: bool,
    },
    NoUpstream,
    Stopped,
    /// A live upgrade moved it to the new process, which logs it.
    Upgraded,
    /// The client has this many connections already.
    ClientLimit(usize),
    /// The listener's peek phase is full, or the client holds its share of it.
    PeekLimit(PeekRefusal),
    /// It lost its place in the peek phase: to a newcomer, or to a graceful stop.
    Evicted(Evicted),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::BadProxyHeader(why) => write!(f, "refused-no-proxy-header ({why})"),
            Refused::UntrustedProxy => {
                f.write_str("refused-untrusted-proxy (not a trusted PROXY header sender)")
            }
            Refused::Acl(refusal) => write!(f, "refused ({refusal})"),
            Refused::NoRoute => f.write_str("no-route"),
            Refused::Peek { why, .. } => write!(f, "{why}"),
            Refused::NoUpstream => f.write_str("no-upstream"),
            Refused::Stopped => f.write_str("stopped"),
            Refused::Upgraded => f.write_str("upgraded"),
            Refused::ClientLimit(n) => {
                write!(f, "refused-client-limit (the client has {n} connections)")
            }
            Refused::PeekLimit(PeekRefusal::Full(n)) => write!(
                f,
                "refused-peek-limit ({n} connections of this listener are choosing a route)"
            ),
            Refused::PeekLimit(PeekRefusal::Share(n)) => write!(
                f,
                "refused-peek-limit (the client has {n} connections choosing a route)"
            ),
            Refused::Evicted(Evicted::ForNewcomer) => f.write_str(
                "evicted-peek-full (the listener's peek phase was full; this client held the most)",
            ),
            Refused::Evicted(Evicted::Stopping) => {
                f.write_str("stopped (still choosing a route when the graceful stop began)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{End, Flow};
    use std::time::Duration;

    fn outcome(sent_ms: u64, received_ms: u64) -> Outcome {
        let flow = |ms| Flow {
            end: End::Eof,
            ended: Duration::from_millis(ms),
        };
        Outcome {
            sent: flow(sent_ms),
            received: flow(received_ms),
        }
    }

    #[test]
    fn rinetd_results_say_who_closed_first_or_why_there_was_no_relay() {
        assert_eq!(
            rinetd_result(&Ok(outcome(1, 2))),
            LogResult::DoneRemoteClosed
        );
        assert_eq!(
            rinetd_result(&Ok(outcome(2, 1))),
            LogResult::DoneLocalClosed
        );
        assert_eq!(
            rinetd_result(&Err(Refused::NoUpstream)),
            LogResult::LocalConnectFailed
        );
        assert_eq!(
            rinetd_result(&Err(Refused::NoRoute)),
            LogResult::UnknownError
        );
        assert_eq!(
            rinetd_result(&Err(Refused::Peek {
                why: "peek-timeout".into(),
                timeout: true
            })),
            LogResult::UnknownError
        );
    }

    #[test]
    fn refusals_read_as_the_log_line_words() {
        assert_eq!(Refused::NoRoute.to_string(), "no-route");
        assert_eq!(Refused::NoUpstream.to_string(), "no-upstream");
        assert_eq!(Refused::Stopped.to_string(), "stopped");
        assert_eq!(
            Refused::BadProxyHeader("peek-timeout".into()).to_string(),
            "refused-no-proxy-header (peek-timeout)"
        );
    }
}
