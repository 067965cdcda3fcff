//! UDP sockets where std lacks a call: binding a listen socket with the options a listener takes,
//! an upstream socket connected from a source address, receiving a datagram with its real length
//! (`MSG_TRUNC`, so a datagram larger than the buffer is seen, not silently cut), waking a
//! thread blocked in a receive on a socket of its own (`shutdown`), and waiting for a datagram
//! on a listen socket another process may share (a [`Wake`] pipe, which leaves the socket be).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{RecvFlags, Shutdown};
use rustix::pipe::PipeFlags;
use socket2::{Domain, Protocol, Socket, Type};

/// The largest UDP payload: a datagram never needs a larger buffer than this.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Binds a UDP listen socket on `addr` (SO_REUSEPORT if asked: several processes may serve it).
/// Blocking: its receiving thread waits in `recv_from`.
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A UDP socket connected to `upstream`, bound to `src` if given (any port): the kernel then
/// delivers to it only the upstream's datagrams, and the upstream sees one source port per flow.
pub(crate) fn connect(upstream: SocketAddr, src: Option<IpAddr>) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(upstream),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if let Some(src) = src {
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    socket.connect(&upstream.into())?;
    Ok(socket.into())
}

/// One datagram received: how many bytes of it are in the buffer, how long it really was, and
/// who sent it (for an unconnected socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    /// Bytes written into the buffer.
    pub(crate) len: usize,
    /// The datagram's length on the wire: more than `len` when the buffer was too small.
    pub(crate) full: usize,
    /// The sender, when the socket reports one.
    pub(crate) from: Option<SocketAddr>,
}

impl Datagram {
    /// True when the datagram did not fit the buffer, so what is in it is cut.
    pub(crate) fn truncated(&self) -> bool {
        self.full > self.len
    }
}

/// Receives one datagram into `buf`, from anyone, with its real length (waiting for it).
#[cfg(test)]
pub(crate) fn receive_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let (len, full, from) = rustix::net::recvfrom(socket, buf, RecvFlags::TRUNC)?;
    let from = from.and_then(|addr| SocketAddr::try_from(addr).ok());
    Ok(Datagram { len, full, from })
}

/// Receives one datagram into `buf`, from anyone, with its real length, without waiting:
/// `WouldBlock` when none is queued (another process sharing the socket may have taken it).
pub(crate) fn try_receive_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let flags = RecvFlags::TRUNC | RecvFlags::DONTWAIT;
    let (len, full, from) = rustix::net::recvfrom(socket, buf, flags)?;
    let from = from.and_then(|addr| SocketAddr::try_from(addr).ok());
    Ok(Datagram { len, full, from })
}

/// Wakes a thread waiting in [`wait`] without touching the socket it waits on: a listen socket
/// handed to a new process by a live upgrade is the same socket in both, and a `shutdown` would
/// end the new process's receives too. A pipe; a wake-up stays until the waiter takes it.
#[derive(Debug)]
pub(crate) struct Wake {
    read: OwnedFd,
    write: OwnedFd,
}

impl Wake {
    pub(crate) fn new() -> io::Result<Wake> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Wake { read, write })
    }

    /// Wakes the waiter (now, or at its next wait).
    pub(crate) fn wake(&self) {
        let _ = rustix::io::write(&self.write, &[1]);
    }

    /// Takes every wake-up given so far.
    fn take(&self) {
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(&self.read, &mut buf), Ok(n) if n > 0) {}
    }
}

/// Waits until `socket` (when given) has a datagram queued or `wake` was woken; true if woken
/// (the wake-up taken). A signal ends the wait with neither.
pub(crate) fn wait(socket: Option<&UdpSocket>, wake: &Wake) -> io::Result<bool> {
    let mut fds = vec![PollFd::new(&wake.read, PollFlags::IN)];
    if let Some(socket) = socket {
        fds.push(PollFd::new(socket, PollFlags::IN));
    }
    match rustix::event::poll(&mut fds, None) {
        Ok(_) if !fds[0].revents().is_empty() => {
            wake.take();
            Ok(true)
        }
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// Receives one datagram into `buf` on a connected socket, with its real length.
pub(crate) fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let (len, full) = rustix::net::recv(socket, buf, RecvFlags::TRUNC)?;
    Ok(Datagram {
        len,
        full,
        from: None,
    })
}

/// Sets how long a receive waits (`None`: forever; a zero wait is taken as the shortest).
pub(crate) fn set_receive_timeout(socket: &UdpSocket, timeout: Option<Duration>) {
    let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
    let _ = socket.set_read_timeout(timeout);
}

/// Wakes every thread blocked in a receive on `socket` (the receive returns at once, now and
/// from then on); sends fail from then on. An unconnected socket reports `ENOTCONN` but is woken
/// all the same, which is what this is for.
pub(crate) fn wake_receivers(socket: &UdpSocket) {
    let _ = rustix::net::shutdown(socket, Shutdown::Both);
}

/// True for the error of a send too large for the path (`EMSGSIZE`).
pub(crate) fn is_too_large(err: &io::Error) -> bool {
    err.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error())
}

/// True for the errors a receive returns when its timeout passed.
pub(crate) fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_larger_than_the_buffer_is_seen_with_its_real_length() {
        let listen = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listen.local_addr().unwrap();
        let client = connect(addr, None).unwrap();
        client.send(&[7u8; 300]).unwrap();
        let mut small = [0u8; 100];
        let got = receive_from(&listen, &mut small).unwrap();
        assert_eq!((got.len, got.full), (100, 300));
        assert!(got.truncated());
        assert_eq!(got.from, Some(client.local_addr().unwrap()));
        client.send(b"").unwrap();
        let empty = receive_from(&listen, &mut small).unwrap();
        assert_eq!((empty.len, empty.full, empty.truncated()), (0, 0, false));
    }

    #[test]
    fn a_wait_ends_with_a_datagram_or_a_wake_up_and_the_socket_still_receives() {
        let listen = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let wake = Wake::new().unwrap();
        wake.wake();
        assert!(
            wait(Some(&listen), &wake).unwrap(),
            "a wake-up given before the wait"
        );
        let mut buf = [0u8; 16];
        let nothing = try_receive_from(&listen, &mut buf).unwrap_err();
        assert!(is_timeout(&nothing), "{nothing}");
        let client = connect(listen.local_addr().unwrap(), None).unwrap();
        client.send(b"hello").unwrap();
        assert!(
            !wait(Some(&listen), &wake).unwrap(),
            "a datagram, not a wake-up"
        );
        assert_eq!(try_receive_from(&listen, &mut buf).unwrap().len, 5);
        let wake = std::sync::Arc::new(wake);
        let waiting = std::sync::Arc::clone(&wake);
        let waiter = std::thread::spawn(move || wait(None, &waiting).unwrap());
        wake.wake();
        assert!(waiter.join().unwrap(), "woken from another thread");
    }

    #[test]
    fn waking_a_socket_ends_a_blocked_receive_at_once_connected_or_not() {
        let listen = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let connected = connect(listen.local_addr().unwrap(), None).unwrap();
        for socket in [listen, connected] {
            // The timeout only bounds the test should the wake-up not reach the receive.
            set_receive_timeout(&socket, Some(Duration::from_secs(30)));
            let socket = std::sync::Arc::new(socket);
            let blocked = std::sync::Arc::clone(&socket);
            let started = std::time::Instant::now();
            let waiter = std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                receive_from(&blocked, &mut buf).map(|d| d.len)
            });
            // Wakes it whether it is blocked already or not: the shutdown stays.
            wake_receivers(&socket);
            let got = waiter.join().unwrap();
            assert!(matches!(got, Ok(0)), "{got:?}");
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    }
}
