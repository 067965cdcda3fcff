//! The crate-level error: what can stop tcp-router from starting or reloading.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// How many lines of an [`Error::Config`] its `Display` shows; the rest are counted in one last
/// line, so a file of 100,000 bad lines is not 100,000 lines on stderr (or in the log, when a
/// reload is refused). The error itself keeps every line.
pub const MAX_ERRORS_SHOWN: usize = 100;

/// What can stop tcp-router from starting or reloading; each variant carries the value involved.
///
/// `Display` is one lowercase phrase naming the value (`cannot listen on 127.0.0.1:80`) and does
/// not repeat its cause, which [`source`](std::error::Error::source) returns; [`Error::Config`]
/// displays one line per problem, the first [`MAX_ERRORS_SHOWN`] of them, then how many more.
///
/// ```
/// use tcp_router::{Error, Forwarder};
///
/// match Forwarder::new("127.0.0.1:0", "not an address") {
///     Err(Error::Config(lines)) => assert!(lines[0].contains("'not an address'")),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A listen address could not be bound (in use, not permitted, not local).
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// Why the kernel refused.
        source: io::Error,
    },
    /// A Unix socket could not be listened on (its directory missing or not writable, another
    /// process listening there, a file that is not a socket at its path).
    BindSocket {
        /// The socket, as written (`unix:/run/app.sock`).
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A listen address written as a name did not resolve.
    ResolveListen {
        /// The address as written.
        addr: String,
        /// Why resolution failed.
        source: io::Error,
    },
    /// The configuration is invalid; each message is one complete line (with `FILE:LINE:` when from a file).
    Config(Vec<String>),
    /// rinetd's log file (`logfile`) cannot be opened for appending.
    LogFile {
        /// The path as configured.
        path: std::path::PathBuf,
        /// Why opening it failed (missing directory, permissions).
        source: io::Error,
    },
    /// A system call needed to start or keep serving failed (poll, a socket pair, a thread).
    Setup {
        /// What was being done, as a phrase after "cannot": `poll the listeners`.
        what: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// A live upgrade's hand-off did not happen; the text says why (one line).
    Upgrade(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Error::BindSocket { path, .. } => write!(f, "cannot listen on {path}"),
            Error::ResolveListen { addr, .. } => {
                write!(f, "cannot resolve listen address '{addr}'")
            }
            Error::Config(_) => f.write_str(&self.lines().join("\n")),
            Error::Setup { what, .. } => write!(f, "cannot {what}"),
            Error::LogFile { path, .. } => write!(f, "cannot open log file '{}'", path.display()),
            Error::Upgrade(why) => f.write_str(why),
        }
    }
}

impl Error {
    /// What `Display` shows, line by line, for a log or a terminal that prefixes each: one line
    /// per configuration problem (the first [`MAX_ERRORS_SHOWN`], then how many more), one line
    /// for any other error.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Error::Config(errors) => {
                let mut lines: Vec<String> =
                    errors.iter().take(MAX_ERRORS_SHOWN).cloned().collect();
                let more = errors.len().saturating_sub(MAX_ERRORS_SHOWN);
                if more > 0 {
                    lines.push(format!("... and {more} more error(s) not shown"));
                }
                lines
            }
            other => vec![other.to_string()],
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Bind { source, .. }
            | Error::BindSocket { source, .. }
            | Error::ResolveListen { source, .. }
            | Error::Setup { source, .. }
            | Error::LogFile { source, .. } => Some(source),
            Error::Config(_) | Error::Upgrade(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_error_shows_one_line_per_problem() {
        let err = Error::Config(vec!["a.conf:1: one".into(), "a.conf:2: two".into()]);
        assert_eq!(err.lines(), ["a.conf:1: one", "a.conf:2: two"]);
        assert_eq!(err.to_string(), "a.conf:1: one\na.conf:2: two");
    }

    #[test]
    fn past_the_limit_the_rest_of_the_problems_are_counted_in_one_line() {
        let problems: Vec<String> = (0..MAX_ERRORS_SHOWN + 3).map(|i| format!("e{i}")).collect();
        let err = Error::Config(problems.clone());
        let lines = err.lines();
        assert_eq!(lines.len(), MAX_ERRORS_SHOWN + 1);
        assert_eq!(lines[..MAX_ERRORS_SHOWN], problems[..MAX_ERRORS_SHOWN]);
        assert_eq!(lines[MAX_ERRORS_SHOWN], "... and 3 more error(s) not shown");
        assert_eq!(err.to_string(), lines.join("\n"));
        let Error::Config(kept) = err else {
            unreachable!()
        };
        assert_eq!(
            kept.len(),
            MAX_ERRORS_SHOWN + 3,
            "the error keeps every problem"
        );
    }

    #[test]
    fn any_other_error_is_one_line() {
        let err = Error::Setup {
            what: "poll the listeners",
            source: io::Error::from(io::ErrorKind::Interrupted),
        };
        assert_eq!(err.lines(), ["cannot poll the listeners"]);
    }
}
