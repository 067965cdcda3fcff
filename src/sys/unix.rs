//! Unix-domain stream sockets: connecting to one by the bytes of its `sun_path` (a file's path,
//! or a NUL then an abstract name), and who the peer of an accepted one is (`SO_PEERCRED`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

/// The address whose `sun_path` is `name`: a path, or a NUL byte then an abstract name.
pub(crate) fn address(name: &[u8]) -> io::Result<SockAddr> {
    SockAddr::unix(OsStr::from_bytes(name))
}

/// Connects to the Unix stream socket `name` within `timeout` (a listener whose backlog is full
/// makes connect wait; Linux bounds that wait by the send timeout, which the socket keeps until
/// the relay sets its own).
pub(crate) fn connect(name: &[u8], timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    match socket.connect(&address(name)?) {
        Ok(()) => Ok(socket),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out (the socket's backlog is full)",
        )),
        Err(err) => Err(err),
    }
}

/// Who is at the other end of a connected Unix socket, as the kernel recorded it at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Credentials {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The peer's credentials (`SO_PEERCRED`).
pub(crate) fn peer_credentials(socket: impl AsFd) -> io::Result<Credentials> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok(Credentials {
        pid: cred.pid.as_raw_nonzero().get() as u32,
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_connected_peer_has_this_process_as_its_credentials() {
        let dir = std::env::temp_dir().join(format!("tcp-router-unix-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("a.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let client = connect(path.as_os_str().as_bytes(), Duration::from_secs(1)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let cred = peer_credentials(&accepted).unwrap();
        assert_eq!(cred.pid, std::process::id());
        assert_eq!(cred.uid, rustix::process::getuid().as_raw());
        drop(client);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_abstract_name_is_reached_without_a_file() {
        let name = format!("\0tcp-router-test-{}", std::process::id());
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&address(name.as_bytes()).unwrap()).unwrap();
        listener.listen(1).unwrap();
        assert!(connect(name.as_bytes(), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn nobody_listening_is_refused() {
        let err = connect(b"/nonexistent/tcp-router.sock", Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
