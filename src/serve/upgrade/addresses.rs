//! Addresses as the hand-off carries them ([`SocketName`]) and as the server keeps them
//! ([`Endpoint`]): the one conversion, both ways.

use crate::config::{Endpoint, SocketPath};
use crate::upgrade::wire::SocketName;

/// `endpoint` for the wire.
pub(super) fn carried(endpoint: &Endpoint) -> SocketName {
    match endpoint {
        Endpoint::Ip(addr) => SocketName::Ip(*addr),
        Endpoint::Unix(path) => SocketName::Unix(path.sun_path()),
    }
}

/// The endpoint the wire named; `None` for a Unix socket's name that is no path or name
/// tcp-router could have written.
pub(super) fn taken(name: &SocketName) -> Option<Endpoint> {
    match name {
        SocketName::Ip(addr) => Some(Endpoint::Ip(*addr)),
        SocketName::Unix(bytes) => SocketPath::from_sun_path(bytes).map(Endpoint::Unix),
    }
}
