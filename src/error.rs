//! The crate-level error for start-up and configuration, and a helper that prints a source chain on one line.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// What can stop tcp-router from starting or reloading; each variant carries the value involved.
#[derive(Debug)]
pub enum Error {
    /// A listen address could not be bound (in use, not permitted, not local).
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// Why the kernel refused.
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
    /// The log file (`logfile`) cannot be opened.
    LogFile {
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The pid file cannot be written.
    PidFile {
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A system call needed at start-up failed (poll, socketpair, signals).
    Setup {
        /// What we were doing.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Error::ResolveListen { addr, .. } => {
                write!(f, "cannot resolve listen address '{addr}'")
            }
            Error::Config(lines) => f.write_str(&lines.join("\n")),
            Error::Setup { what, .. } => write!(f, "cannot {what}"),
            Error::LogFile { path, .. } => write!(f, "cannot open log file '{}'", path.display()),
            Error::PidFile { path, .. } => write!(f, "cannot write pid file '{}'", path.display()),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Bind { source, .. }
            | Error::ResolveListen { source, .. }
            | Error::Setup { source, .. }
            | Error::LogFile { source, .. }
            | Error::PidFile { source, .. } => Some(source),
            Error::Config(_) => None,
        }
    }
}

impl Error {
    /// The exit code a script can rely on: 2 for configuration errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::ResolveListen { .. } => 2,
            Error::Bind { .. }
            | Error::Setup { .. }
            | Error::LogFile { .. }
            | Error::PidFile { .. } => 1,
        }
    }
}

/// Displays an error followed by each of its sources, separated by `: `, on one line.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_each_cause_once() {
        let err = Error::Bind {
            addr: "127.0.0.1:80".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            Chain(&err).to_string(),
            "cannot listen on 127.0.0.1:80: permission denied"
        );
    }
}
