//! How many bytes a TCP socket still holds that its peer has not acknowledged (the FIN included),
//! asked of the kernel's `sock_diag` netlink interface: `SIOCOUTQ` and `TCP_INFO` have no safe
//! wrapper, and for a socket already shut down for writing, poll says writable at once whatever
//! it still holds. One request names the socket by its two addresses; the answer's `wqueue` is
//! that count.
//!
//! Used only when a reset is about to be passed on (see `relay::finish`), never while bytes move.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use socket2::SockRef;

use rustix::net::{netlink, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// `nlmsghdr`: length, type, flags, sequence number, port id.
const HEADER: usize = 16;
/// `inet_diag_req_v2` after the header.
const REQUEST: usize = 56;
/// `SOCK_DIAG_BY_FAMILY`: the request's type, and its answer's.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`: the kernel's answer when it found no such socket (or refused).
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`: one socket, not a dump.
const NLM_F_REQUEST: u16 = 1;
/// Where `wqueue` sits in the answer: after the header, family, state, timer and retransmits
/// (4 bytes), the socket id (48), `expires` and `rqueue`.
const WQUEUE_AT: usize = HEADER + 4 + 48 + 4 + 4;

/// Bytes `stream` has written (or a FIN it has sent) that its peer has not acknowledged yet.
/// `Ok(0)` also for a socket that is closed (the kernel no longer finds it), and for a socket
/// that is not TCP (a Unix socket's bytes are in its peer's queue once written).
pub(crate) fn unacknowledged(stream: &impl AsFd) -> io::Result<u32> {
    let socket = SockRef::from(stream);
    let (Some(local), Some(remote)) = (
        socket.local_addr()?.as_socket(),
        socket.peer_addr()?.as_socket(),
    ) else {
        return Ok(0);
    };
    let request = request(local, remote);
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::send(&socket, &request, SendFlags::empty())?;
    let mut answer = [0u8; 512];
    // The kernel answers within the send: the answer is queued already.
    let (n, _) = rustix::net::recv(&socket, &mut answer, RecvFlags::DONTWAIT)?;
    parse(&answer[..n])
}

/// The request for the TCP socket from `local` to `remote`, in any state.
fn request(local: SocketAddr, remote: SocketAddr) -> [u8; HEADER + REQUEST] {
    let mut out = [0u8; HEADER + REQUEST];
    out[0..4].copy_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    out[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    let family = match local.ip() {
        IpAddr::V4(_) => rustix::net::AddressFamily::INET,
        IpAddr::V6(_) => rustix::net::AddressFamily::INET6,
    };
    out[16] = family.as_raw() as u8;
    out[17] = 6; // IPPROTO_TCP
    out[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    let id = &mut out[24..];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    put_address(&mut id[4..20], local.ip());
    put_address(&mut id[20..36], remote.ip());
    // id[36..40]: any interface; the cookie: none (INET_DIAG_NOCOOKIE).
    id[40..48].fill(0xff);
    out
}

/// An address as `inet_diag_sockid` holds it: network order, an IPv4 address in the first four
/// bytes.
fn put_address(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
}

/// The answer's `wqueue`; an error answer as the error it carries (`ENOENT`, the socket is gone:
/// nothing is queued).
fn parse(answer: &[u8]) -> io::Result<u32> {
    let field = |at: usize| -> io::Result<[u8; 4]> {
        answer
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    };
    let kind = answer
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    match kind {
        SOCK_DIAG_BY_FAMILY => Ok(u32::from_ne_bytes(field(WQUEUE_AT)?)),
        NLMSG_ERROR => match -i32::from_ne_bytes(field(HEADER)?) {
            0 | 2 => Ok(0),
            errno => Err(io::Error::from_raw_os_error(errno)),
        },
        _ => Err(io::Error::from(io::ErrorKind::InvalidData)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;
    use std::net::{Shutdown, TcpListener};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn the_request_names_the_socket_by_both_addresses() {
        let local: SocketAddr = "127.0.0.1:4660".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:80".parse().unwrap();
        let request = request(local, remote);
        assert_eq!(&request[0..4], &72u32.to_ne_bytes());
        assert_eq!((request[16], request[17]), (2, 6));
        assert_eq!(&request[24..28], &[0x12, 0x34, 0, 80]);
        assert_eq!(&request[28..32], &[127, 0, 0, 1]);
        assert_eq!(&request[44..48], &[10, 1, 2, 3]);
        assert_eq!(&request[64..72], &[0xff; 8]);
    }

    #[test]
    fn an_error_answer_for_a_gone_socket_means_nothing_queued() {
        let mut answer = [0u8; HEADER + 4];
        answer[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        answer[HEADER..].copy_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(parse(&answer).unwrap(), 0);
        answer[HEADER..].copy_from_slice(&(-1i32).to_ne_bytes());
        assert!(parse(&answer).is_err());
        assert!(parse(&answer[..3]).is_err());
    }

    /// A socket whose peer reads nothing holds what does not fit in the peer's window, also
    /// after its FIN.
    #[test]
    fn a_shut_down_socket_still_shows_what_its_peer_has_not_taken() {
        let (mut a, _b) = pair();
        assert_eq!(unacknowledged(&a).expect("the kernel answers sock_diag"), 0);
        a.set_nonblocking(true).unwrap();
        let chunk = [7u8; 65536];
        while a.write(&chunk).is_ok() {}
        a.shutdown(Shutdown::Write).unwrap();
        assert!(unacknowledged(&a).unwrap() > 0);
    }
}
