//! What the standard library lacks: socket options and timeouts, abortive close, waiting on one
//! socket with a deadline ([`net`]); the process's open-files and thread limits ([`limits`]); the
//! threads' scheduling policy ([`sched`]).
//!
//! Architecture invariant: nothing here imports anything of the crate. Everything goes through
//! safe wrappers (socket2, rustix, nix), so the crate keeps `#![forbid(unsafe_code)]`.

pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod sched;
