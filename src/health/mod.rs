//! Upstream health: the members of each route's upstreams (every address a name resolves to),
//! their states, the active checks that move them, and the few blocking threads that run checks
//! and resolve names in the background, off every connection's path.

pub(crate) mod checker;
pub(crate) mod marks;
pub(crate) mod member;
pub(crate) mod probe;
pub(crate) mod roster;
pub(crate) mod target;
