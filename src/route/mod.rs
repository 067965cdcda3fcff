//! Where a client goes: who may connect (allow/deny in rinetd's order, [`access`]), which route a
//! name takes (exact, then the longest wildcard, then the default, with ALPN as tie-break:
//! [`names`] and a listener's [`router`]), and which upstream of the route is tried first
//! ([`balance`]: round-robin, failover, cool-down).
//!
//! Architecture invariant: decisions only. Nothing here touches a socket or a thread; it reads
//! the configuration's values and answers with indices and reasons, so all of it is unit-tested
//! without I/O.

pub(crate) mod access;
pub(crate) mod balance;
pub(crate) mod names;
pub(crate) mod router;
