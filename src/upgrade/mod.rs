//! The live upgrade: a running process hands its listeners and every established connection to a
//! new one (see docs/operations.md). The binary drives it on SIGUSR2; the calls are here for a
//! program that embeds tcp-router and wants the same.
//!
//! This part is the channel the two processes talk over (`channel`: how they find each other;
//! `wire`: the versioned messages) and what each side reports (`report`). What moves, and in
//! which order, is `serve::upgrade`'s; where the copy threads stop is `relay::park`.

mod channel;
mod report;
pub(crate) mod wire;

pub(crate) use channel::upgrade_error;
pub use channel::{Channel, Rendezvous, CHANNEL_ENV, VERSION_ENV};
pub use report::{HandedOff, TakenOver};
#[cfg(fuzzing)]
#[doc(hidden)]
pub use wire::decode_round_trip;
pub use wire::{OLDEST_VERSION, VERSION};
