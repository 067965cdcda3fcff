//! What the standard library lacks, and the I/O the pure parts leave to it: deadlines that never
//! overflow ([`clock`]); socket options and timeouts, abortive close, waiting on one socket with a
//! deadline ([`net`]); host names to addresses ([`resolve`]) and service names to ports
//! ([`services`]); a bounded read of the config file ([`mod@file`]); what a socket still holds
//! unacknowledged ([`diag`]); the process's open-files and thread limits ([`limits`], with the
//! cgroup's `pids.max` from [`cgroup`]); the threads' scheduling policy ([`sched`]); waking one
//! blocked thread ([`wake`]); passing sockets to another process ([`fd_pass`]); UDP sockets and
//! datagrams received with their real length ([`datagram`]); Unix-domain sockets and their
//! peers' credentials ([`unix`]).
//!
//! Architecture invariant: nothing here imports anything of the crate. Everything goes through
//! safe wrappers (socket2, rustix, nix), so the crate keeps `#![forbid(unsafe_code)]`.

pub(crate) mod cgroup;
pub(crate) mod clock;
pub(crate) mod datagram;
pub(crate) mod diag;
pub(crate) mod fd_pass;
pub(crate) mod file;
pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod resolve;
pub(crate) mod sched;
pub(crate) mod services;
pub(crate) mod sync;
pub(crate) mod unix;
pub(crate) mod wake;
