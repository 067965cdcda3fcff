//! Addresses as the hand-off carries them ([`SocketName`]) and as the server keeps them
//! ([`Endpoint`]): the one conversion, both ways.

use crate::config::{Endpoint, SocketPath};
use crate::sys::unix::{peer_credentials, Peer};
use crate::upgrade::wire::SocketName;

/// `endpoint` for the wire.
pub(super) fn carried(endpoint: &Endpoint) -> SocketName {
    match endpoint {
        Endpoint::Ip(addr) => SocketName::Ip(*addr),
        Endpoint::Unix(path) => SocketName::Unix(path.sun_path()),
    }
}

/// A client for the wire: a local one as an unnamed Unix socket (the new process asks the socket
/// itself for its credentials, see [`taken_peer`]).
pub(super) fn carried_peer(peer: Peer) -> SocketName {
    match peer {
        Peer::Ip(addr) => SocketName::Ip(addr),
        Peer::Local(_) => SocketName::Unix(Vec::new()),
    }
}

/// The client the wire named, on `socket`: an IP address, or the local process the socket's
/// credentials name.
pub(super) fn taken_peer(name: &SocketName, socket: &socket2::Socket) -> std::io::Result<Peer> {
    match name {
        SocketName::Ip(addr) => Ok(Peer::Ip(*addr)),
        SocketName::Unix(_) => peer_credentials(socket).map(Peer::Local),
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
