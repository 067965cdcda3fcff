//! Active health checks as configured (`check=` and its companions): what to send, what to
//! expect, how often, and how many results in a row change an upstream's state. Pure data and
//! its parser; running a check is `health::probe`'s.

use std::time::Duration;

/// Built-in default for `check_interval`: haproxy's `inter`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Built-in default for `rise`: checks passed in a row that bring a down upstream up.
pub const DEFAULT_RISE: usize = 2;
/// Built-in default for `fall`: checks failed in a row that bring an up upstream down.
pub const DEFAULT_FALL: usize = 3;
/// Built-in default for `resolve_interval`: how often upstream names are resolved again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// A route's active check: run against each address of each of its upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// What one check does (`check=`).
    pub kind: CheckKind,
    /// The port checks go to, on each member's address (`check_port=`); `None` is the
    /// upstream's own port.
    pub port: Option<u16>,
    /// The `Host` an HTTP check sends (`check_host=`); `None` is the upstream's host as written.
    pub host: Option<String>,
    /// Time between two checks of one member (`check_interval=`).
    pub interval: Duration,
    /// Time one check may take, connect included (`check_timeout=`); `None` is the route's
    /// connect timeout.
    pub timeout: Option<Duration>,
    /// Checks passed in a row that bring a down member up (`rise=`).
    pub rise: usize,
    /// Checks failed in a row that bring an up member down (`fall=`).
    pub fall: usize,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckKind {
    /// A TCP connect within the timeout (`check=connect`).
    Connect,
    /// Send and expect steps, in order (`check=send:PING\r\n,expect:+PONG`).
    Script(Vec<Step>),
    /// `GET path` over HTTP/1.1, passing when the status is in `status` (`check=http:/primary`).
    Http {
        /// The request target, starting with `/`.
        path: String,
        /// The statuses that pass (`check_status=`).
        status: StatusRange,
    },
}

/// One step of a send/expect check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Bytes to send.
    Send(Vec<u8>),
    /// Bytes that must arrive (anywhere in what arrives after the previous expect).
    Expect(Vec<u8>),
}

/// HTTP statuses that pass an HTTP check, inclusive (`200`, `2xx`, `200-399`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusRange {
    /// Lowest status that passes.
    pub low: u16,
    /// Highest status that passes.
    pub high: u16,
}

/// What happens to connections open to a member when its checks mark it down (`on_down=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDown {
    /// They go on (`keep`, the default).
    #[default]
    Keep,
    /// Both sides are reset at once (`close`): clients leave a demoted primary.
    Close,
}

impl std::fmt::Display for OnDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnDown::Keep => "keep",
            OnDown::Close => "close",
        })
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckKind::Connect => f.write_str("connect"),
            CheckKind::Script(_) => f.write_str("script"),
            CheckKind::Http { path, .. } => write!(f, "http:{path}"),
        }
    }
}
