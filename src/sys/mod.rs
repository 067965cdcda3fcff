//! What the standard library lacks: deadlines that never overflow ([`clock`]); socket options
//! and timeouts, abortive close, waiting on one socket with a deadline ([`net`]); what a socket
//! still holds unacknowledged ([`diag`]); the process's open-files and thread limits
//! ([`limits`], with the cgroup's `pids.max` from [`cgroup`]); the threads' scheduling policy
//! ([`sched`]); waking one blocked thread ([`wake`]); passing sockets to another process
//! ([`fd_pass`]).
//!
//! Architecture invariant: nothing here imports anything of the crate. Everything goes through
//! safe wrappers (socket2, rustix, nix), so the crate keeps `#![forbid(unsafe_code)]`.

pub(crate) mod cgroup;
pub(crate) mod clock;
pub(crate) mod diag;
pub(crate) mod fd_pass;
pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod sched;
pub(crate) mod wake;
