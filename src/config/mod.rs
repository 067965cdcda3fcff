//! The configuration: what the operator wrote, parsed and checked, as plain data.
//!
//! - [`Config`], [`Listener`] and [`Route`] (in `model`): the data itself.
//! - [`Settings`] and [`Overrides`] (in `settings`): every per-route setting, declared once with
//!   its default, its `key=value` parser and the merge of given values over defaults.
//! - `file`: the rinetd-compatible file parser, text in, rules out (no DNS, no sockets);
//!   `load`: rules into listeners; `validate`: the checks of the whole.
//! - The values the other parts are made of: addresses ([`HostPort`], in `addr`), durations
//!   (`duration`), port ranges ([`HostPorts`], in `range`), allow/deny patterns ([`Pattern`], in `acl`) and name patterns
//!   ([`NamePattern`], in `names`), protocol routes ([`Protocol`], in `protocol`).
//!
//! Architecture invariant: configuration is pure data. Nothing here imports a run-time part of
//! the crate (no route state, sockets, threads, logging, command line or scheduler); it uses only
//! the wire formats' value types (`proto`) and the crate's [`Error`](crate::Error). Reading the
//! config file is the one I/O it does.

pub(crate) mod acl;
pub(crate) mod addr;
pub(crate) mod duration;
pub(crate) mod file;
mod health;
pub(crate) use health::{escape_truncated, unescape};
mod load;
pub use health::{
    CheckKind, HealthCheck, OnDown, StatusRange, Step, DEFAULT_CHECK_INTERVAL, DEFAULT_FALL,
    DEFAULT_RESOLVE_INTERVAL, DEFAULT_RISE,
};
pub use load::MAX_CONFIG_FILE_SIZE;
mod model;
pub(crate) mod names;
mod protocol;
pub(crate) mod range;
mod settings;
mod text;
mod validate;

pub(crate) use acl::listed;
pub use acl::{parse_patterns, Action, Pattern, PatternError, Rule};
pub use addr::{
    split_weight, AddrError, Endpoint, Host, HostPort, SocketPath, MAX_SOCKET_PATH, MAX_WEIGHT,
    UNIX_PREFIX,
};
pub use duration::{
    check_duration, format_duration, parse_duration, parse_optional_duration, DurationError,
    MAX_DURATION,
};
pub use model::{
    Admin, Config, Listener, LogFile, Route, Transport, DEFAULT_CLIENT_IPV6_PREFIX,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_FLOWS, DEFAULT_UDP_IDLE_TIMEOUT,
};
pub use names::{NamePattern, NamePatternError};
pub use protocol::{BytePattern, Protocol, DEFAULT_WAIT};
pub use range::{HostPorts, ListenRange, PortRange, MAX_RANGE_PORTS};
pub use settings::{
    check_count, parse_check_host, parse_check_port, parse_count, Balance, Overrides, Settings,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FAIL_TIMEOUT, DEFAULT_FIN_TIMEOUT, DEFAULT_MAX_FAILS,
    DEFAULT_PEEK_TIMEOUT, DEFAULT_SOCKET_MODE, MAX_CONNECTIONS_CAP,
};
