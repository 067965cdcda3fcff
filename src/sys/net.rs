//! Socket set-up the standard library does not offer: listener options, upstream connects with a
//! source address and a timeout, TCP tuning, send and receive timeouts, waiting on one socket with
//! a deadline, and abortive close.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::socket::sockopt;
pub(crate) use rustix::event::PollFlags;
use rustix::event::{PollFd, Timespec};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Listen backlog. Clients wait here while `--max-connections` are busy; the kernel caps it at
/// net.core.somaxconn (4096 on current kernels).
const BACKLOG: i32 = 4096;

/// TCP keepalive: probe after 60s of silence, every 15s, give up after 4 unanswered probes, so a
/// peer that vanished without a FIN or RST is noticed in about two minutes instead of never.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 4;

/// Binds a listening socket with SO_REUSEADDR (so a restart does not fail on TIME_WAIT), set
/// non-blocking for the accept loop's poll. TCP_NODELAY and keepalive are set here once: Linux
/// copies them to every accepted socket, which saves five system calls per client.
pub(crate) fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    tune_socket(&SockRef::from(&socket));
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Connects to `addr` within `timeout`, from `src` if given. With a fixed source address,
/// IP_BIND_ADDRESS_NO_PORT lets the kernel pick the port at connect time, per destination, so a
/// fixed source does not exhaust the ephemeral ports.
///
/// The connect is blocking, bounded by SO_SNDTIMEO (Linux applies the send timeout to connect):
/// two system calls where the non-blocking way takes seven (O_NONBLOCK on and off, a poll,
/// SO_ERROR). The socket keeps that send timeout; the relay sets its own before copying.
pub(crate) fn connect(
    addr: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<Socket> {
    let deadline = super::clock::deadline_in(timeout);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(src) = src {
        // Linux reads this IPPROTO_IP option on IPv6 sockets too. If it cannot be set, the bind
        // still works; it just reserves a port per connection.
        let _ = nix::sys::socket::setsockopt(&socket, sockopt::IpBindAddressNoPort, &true);
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    socket.set_write_timeout(Some(kernel_timeout(timeout)))?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        // The send timeout passed with the handshake still in progress.
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {
            return Err(timed_out());
        }
        // A signal arrived (connect is never restarted while a send timeout is set); the
        // handshake goes on in the background.
        Err(err) if err.kind() == io::ErrorKind::Interrupted => wait_connected(&socket, deadline)?,
        Err(err) => return Err(err),
    }
    Ok(socket)
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
}

/// Waits for an interrupted connect to finish, until `deadline`.
fn wait_connected(socket: &Socket, deadline: Instant) -> io::Result<()> {
    if !wait_until(socket, PollFlags::OUT, deadline)? {
        return Err(timed_out());
    }
    match socket.take_error()? {
        Some(err) => Err(err),
        None => socket.peer_addr().map(drop),
    }
}

/// Gives a listener bound elsewhere (by an embedding program, or a service manager) the options
/// [`bind_listener`] sets, so the sockets it accepts inherit them.
pub(crate) fn tune_listener(listener: &impl AsFd) {
    tune_socket(&SockRef::from(listener));
}

/// TCP_NODELAY (the proxy must add no Nagle delay to small request/response writes) and keepalive.
/// Failures are ignored: an option that cannot be set does not make the connection unusable.
pub(crate) fn tune(stream: &impl AsFd) {
    tune_socket(&SockRef::from(stream));
}

fn tune_socket(socket: &SockRef<'_>) {
    let _ = socket.set_tcp_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let _ = socket.set_tcp_keepalive(&keepalive);
}

/// Bounds how long one blocking write may wait, so a writer stuck on a peer that reads nothing can
/// look at the idle deadline. `None` waits forever.
pub(crate) fn set_send_timeout(stream: &impl AsFd, timeout: Option<Duration>) {
    let _ = SockRef::from(stream).set_write_timeout(timeout.map(kernel_timeout));
}

/// Bounds how long one blocking read may wait, for the same reason. `None` waits forever.
pub(crate) fn set_receive_timeout(stream: &impl AsFd, timeout: Option<Duration>) {
    let _ = SockRef::from(stream).set_read_timeout(timeout.map(kernel_timeout));
}

/// A socket timeout the kernel takes as meant: zero would mean "no timeout" (and std refuses it).
fn kernel_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}

/// Resets the connection now: the peer gets an RST, queued data is dropped, and every thread
/// blocked on this socket wakes. `connect(AF_UNSPEC)` does this without closing the descriptor,
/// which the other copy thread may still be using. A Unix stream socket has no reset: it is shut
/// down both ways instead (its peer reads what was written, then end of stream; a write then
/// fails), which wakes the blocked threads all the same.
pub(crate) fn abort(stream: &impl AsFd) {
    if rustix::net::connect_unspec(stream).is_err() {
        let _ = rustix::net::shutdown(stream, rustix::net::Shutdown::Both);
    }
}

/// Resets the connection once the peer has acknowledged every byte written to `stream` (and a FIN
/// sent before), or at `deadline` whatever is still queued. The wait is on an event while bytes
/// are still unsent (with `TCP_NOTSENT_LOWAT` at 1 the socket polls writable only once nothing
/// written is unsent), then on the kernel's count of unacknowledged bytes (`sys::diag`), looked at
/// again after 1, 2, 4, ... 50 ms; where the kernel does not answer that, the poll alone decides.
pub(crate) fn abort_once_sent(stream: &impl AsFd, deadline: Instant) {
    if SockRef::from(stream).set_tcp_notsent_lowat(1).is_ok() {
        let _ = wait_until(stream, PollFlags::OUT, deadline);
    }
    let mut pause = Duration::from_millis(1);
    while matches!(super::diag::unacknowledged(stream), Ok(n) if n > 0) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    abort(stream);
}

/// Whether `stream` has received bytes not read yet (`FIONREAD`); false if it cannot say.
pub(crate) fn has_unread(stream: &impl AsFd) -> bool {
    rustix::io::ioctl_fionread(stream).is_ok_and(|n| n > 0)
}

/// Waits until `fd` is ready for `events` (readable: data, end of stream or an error to collect;
/// writable: a connect finished), or `deadline` passes (`Ok(false)`). Signals do not end the wait.
pub(crate) fn wait_until(fd: impl AsFd, events: PollFlags, deadline: Instant) -> io::Result<bool> {
    loop {
        if let Some(ready) = wait_once(&fd, events, deadline)? {
            return Ok(ready);
        }
    }
}

/// Like [`wait_until`], but a signal ends the wait: `Ok(None)` when it interrupted it, so the
/// caller can look at why (poll is never restarted after a signal handler, signal(7)).
pub(crate) fn wait_once(
    fd: impl AsFd,
    events: PollFlags,
    deadline: Instant,
) -> io::Result<Option<bool>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Some(false));
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let mut fds = [PollFd::new(&fd, events)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => return Ok(Some(true)),
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// True for errors that mean the peer reset or the connection is otherwise gone.
pub(crate) fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// The accept path relies on this: options set on the listener reach accepted sockets.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("{err}"),
            }
        };
        assert!(accepted.nodelay().unwrap());
        let socket = SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
    }

    #[test]
    fn connect_gives_up_after_its_timeout() {
        // A listener that never accepts: once its queue is full, the kernel drops further SYNs
        // and a connect can only time out.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        let short = Duration::from_millis(300);
        let err = loop {
            match connect(addr, None, short) {
                Ok(stream) if queued.len() < 16 => queued.push(stream),
                Ok(_) => panic!("the listen queue never filled"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    }

    #[test]
    fn connect_reports_a_refusal_at_once() {
        // Bound but never listening: connects are refused, and no other socket can take the port
        // while this one holds it.
        let holder = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        holder
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let addr = holder.local_addr().unwrap().as_socket().unwrap();
        let err = connect(addr, None, Duration::from_secs(30)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn connected_socket_keeps_the_connect_timeout_as_send_timeout() {
        // The send timeout used for the connect stays on the socket until the relay sets its own;
        // it must be the connect timeout, not something shorter.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = connect(listener.local_addr().unwrap(), None, Duration::from_secs(7)).unwrap();
        assert_eq!(
            stream.write_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn tune_sets_nodelay_on_upstream_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!stream.nodelay().unwrap());
        tune(&stream);
        assert!(stream.nodelay().unwrap());
    }
}
