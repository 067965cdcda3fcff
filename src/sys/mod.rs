//! What the standard library lacks: deadlines that never overflow ([`clock`]); socket options and timeouts, abortive close, waiting on one
//! socket with a deadline ([`net`]); the process's open-files and thread limits ([`limits`]); the
//! threads' scheduling policy ([`sched`]); waking one blocked thread ([`wake`]); passing sockets
//! to another process ([`fd_pass`]).
//!
//! Architecture invariant: nothing here imports anything of the crate. Everything goes through
//! safe wrappers (socket2, rustix, nix), so the crate keeps `#![forbid(unsafe_code)]`.

pub(crate) mod clock;
pub(crate) mod fd_pass;
pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod sched;
pub(crate) mod wake;
