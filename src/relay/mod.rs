//! The relay: two blocking copy threads per connection, one per direction, with exact half-close,
//! reset propagation and idle limits. It is given a [`Connection`] (the client socket and, once
//! connected, the upstream's) and plain values ([`Timeouts`]), and reports an [`Outcome`]; it
//! knows nothing of routes, names or configuration.
//!
//! - `pump`: the two copy threads; `park`: their safe point for a live upgrade; `finish`: how a direction ends and what its end does to the
//!   sockets (the rules below); `connection`: the state they share; `outcome`: what they report.
//! - `copy`: one chunk at a time, waiting in a small stack buffer, then draining bulk bytes
//!   through `splice` (Linux, pooled pipes; probed, used, and on refusal turned off for good)
//!   or through a pooled 64 KiB buffer (`chunk`, which both paths share).
//!
//! # The rules
//!
//! After tokio's `copy_bidirectional`, in threads:
//! - End of stream from A: shut down the write half of B (the peer of B sees a FIN) and keep
//!   copying B to A. The connection is done when both directions are done.
//! - A reset or error on either socket: reset the other side too (an RST, not a FIN, so the peer
//!   learns that the stream did not end cleanly), but only after the last words: every byte the
//!   failed peer sent before its reset is read and written on, and has left the other socket,
//!   first (bounded by [`RESET_LINGER`](finish::RESET_LINGER); see `finish`).
//! - No bytes moving in either direction for the idle limit (or, once half-closed, for the fin
//!   limit): close both sides with a FIN and report `timeout`. A blocked read or write wakes on
//!   the socket's own receive or send timeout (the shortest limit, "the tick"), so no timer
//!   thread is needed.
//!
//! # The safe point
//!
//! A live upgrade moves a connection to another process only while neither copy thread is
//! inside a read or a write. `park` is the one place the relay meets it: the copy loop calls
//! `park::safe_point` at the top of a turn when asked, and the upgrade asks, wakes, looks and
//! releases through `park`'s methods on [`Connection`].
//!
//! # One stack page per idle thread
//!
//! An idle connection costs, besides its kernel state, the stack pages its two threads have
//! touched, and a thread keeps every page it has ever touched. The copy loop's frames are made
//! to fit in the page below the thread's block (musl's is small; glibc's thread block and static
//! TLS fill its top page, so there it is two pages, as for any C program):
//! - Neither direction runs on the thread that set the connection up: `serve` hands both to a
//!   pool of copy threads that run nothing else (see [`relay`]), so the set-up's deep frames
//!   (PROXY header, peek, upstream connect, DNS) never touch a copy thread's stack.
//! - The wait buffer is [`WAIT_BUFFER_SIZE`](copy::WAIT_BUFFER_SIZE) (512 bytes) on the stack;
//!   the 64 KiB buffer and the splice pipe are borrowed only while bytes move, so an idle
//!   connection holds no heap buffer either.
//! - The copy threads do not log: the thread that ends second hands a logged connection to
//!   `serve`'s closing thread, which formats its line (the deepest code a connection runs) and
//!   releases it.
//!
//! `tests/memory.rs` bounds what an idle connection costs, so a second page on a copy thread
//! (under musl) fails it, also after a burst of connections has come and gone; the figures are
//! in docs/performance.md, "An idle connection, line by line", and why every part must keep to
//! it in docs/design.md, "Cross-cutting concerns".

mod chunk;
mod connection;
pub(crate) mod copy;
mod finish;
mod outcome;
mod park;
mod pump;
pub(crate) mod splice;

pub(crate) use connection::{Connection, Past, Traffic};
#[cfg(test)]
pub(crate) use outcome::Flow;
pub(crate) use outcome::{Direction, End, Outcome, Timeouts};
pub(crate) use park::{Parked, Released, Spot};
pub(crate) use pump::{relay, Relayed};
