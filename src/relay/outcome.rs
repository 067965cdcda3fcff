//! What the relay reports: how each direction ended and how many bytes it moved, and the idle
//! limits it was given.

use std::fmt;
use std::io;
use std::time::Duration;

/// How one direction of a connection ended: a clean end of stream (`Eof`, passed on as a
/// half-close), a reset (passed on as a reset), the idle or fin limit (`Timeout`), another socket
/// error (passed on as a reset), tcp-router ending it (`Shutdown`: a graceful stop cut it, or the
/// other direction failed), or a bug (`Panic`: the copy thread panicked and the connection was
/// reset). Displayed as the log line's words: `eof`, `reset`, `timeout`, `error(KIND)`,
/// `shutdown`, `panic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Eof,
    Reset,
    Timeout,
    Error(io::ErrorKind),
    Shutdown,
    Panic,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("eof"),
            End::Reset => f.write_str("reset"),
            End::Timeout => f.write_str("timeout"),
            End::Error(kind) => write!(f, "error({kind})"),
            End::Shutdown => f.write_str("shutdown"),
            End::Panic => f.write_str("panic"),
        }
    }
}

/// One direction's result. Its bytes are counted in the connection (`Connection::bytes`), once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flow {
    /// How it ended.
    pub(crate) end: End,
    /// When it ended, since the connection was accepted.
    pub(crate) ended: Duration,
}

/// Both directions' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Client to upstream.
    pub(crate) sent: Flow,
    /// Upstream to client.
    pub(crate) received: Flow,
}

impl Outcome {
    /// True if the client-to-upstream direction ended first (the client closed or failed first);
    /// the one rule behind the log line's `first=` and rinetd's `done-remote-closed`.
    pub(crate) fn client_ended_first(&self) -> bool {
        self.sent.ended <= self.received.ended
    }
}

/// Idle limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Timeouts {
    /// No bytes moving either way for this long closes the connection.
    pub(crate) idle: Option<Duration>,
    /// Once one direction has ended, no bytes moving for this long closes the connection.
    pub(crate) fin: Option<Duration>,
}

/// Which way bytes move: from the client to the upstream, or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    ClientToUpstream = 0,
    UpstreamToClient = 1,
}

impl Direction {
    /// Both directions, client to upstream first.
    pub(crate) const BOTH: [Direction; 2] =
        [Direction::ClientToUpstream, Direction::UpstreamToClient];

    /// The direction the other way.
    pub(crate) fn other(self) -> Direction {
        match self {
            Direction::ClientToUpstream => Direction::UpstreamToClient,
            Direction::UpstreamToClient => Direction::ClientToUpstream,
        }
    }

    /// The metric label: `client_to_upstream` or `upstream_to_client`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }
}

impl End {
    /// Every kind of end, as the metrics count them (an error of any kind is one).
    pub(crate) const KINDS: [&'static str; 6] =
        ["eof", "reset", "timeout", "error", "shutdown", "panic"];

    /// The index of this end's kind in [`End::KINDS`].
    pub(crate) fn kind_index(self) -> usize {
        match self {
            End::Eof => 0,
            End::Reset => 1,
            End::Timeout => 2,
            End::Error(_) => 3,
            End::Shutdown => 4,
            End::Panic => 5,
        }
    }

    /// A non-zero code for an atomic, losing only an error's kind.
    pub(crate) fn code(self) -> u8 {
        self.kind_index() as u8 + 1
    }

    /// The end a [`End::code`] stands for; `None` for 0 (not ended).
    pub(crate) fn from_code(code: u8) -> Option<End> {
        Some(match code {
            1 => End::Eof,
            2 => End::Reset,
            3 => End::Timeout,
            4 => End::Error(io::ErrorKind::Other),
            5 => End::Shutdown,
            6 => End::Panic,
            _ => return None,
        })
    }

    /// The kind's name: the log line's word without an error's detail.
    pub(crate) fn kind(self) -> &'static str {
        End::KINDS[self.kind_index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_names_match_the_log_vocabulary() {
        let names: Vec<String> = [
            End::Eof,
            End::Reset,
            End::Timeout,
            End::Shutdown,
            End::Panic,
        ]
        .iter()
        .map(End::to_string)
        .collect();
        assert_eq!(names, ["eof", "reset", "timeout", "shutdown", "panic"]);
        assert_eq!(
            End::Error(io::ErrorKind::TimedOut).to_string(),
            "error(timed out)"
        );
    }

    #[test]
    fn ends_survive_their_code() {
        for end in [
            End::Eof,
            End::Reset,
            End::Timeout,
            End::Shutdown,
            End::Panic,
        ] {
            assert_eq!(End::from_code(end.code()), Some(end));
        }
        assert_eq!(
            End::from_code(End::Error(io::ErrorKind::TimedOut).code()).map(End::kind),
            Some("error")
        );
        assert_eq!(End::from_code(0), None);
    }

    #[test]
    fn the_direction_that_ended_first_is_the_one_with_the_earlier_time() {
        let flow = |ms| Flow {
            end: End::Eof,
            ended: Duration::from_millis(ms),
        };
        assert!(Outcome {
            sent: flow(1),
            received: flow(2)
        }
        .client_ended_first());
        assert!(!Outcome {
            sent: flow(2),
            received: flow(1)
        }
        .client_ended_first());
        assert!(Outcome {
            sent: flow(1),
            received: flow(1)
        }
        .client_ended_first());
    }
}
