//! Unix-domain stream sockets: listening on one (its file's mode and owner set before anyone can
//! connect, a stale file from an earlier run replaced, the file removed when the listener goes),
//! connecting to one by the bytes of its `sun_path` (a file's path, or a NUL then an abstract
//! name), and who the peer of an accepted one is (`SO_PEERCRED`).

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

/// Listen backlog, as for TCP listeners.
const BACKLOG: i32 = 4096;

/// Who may connect to a listener's socket file: its mode, and its owner and group (numbers or
/// names; `None` leaves the process's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileAccess {
    pub(crate) mode: u32,
    pub(crate) owner: Option<String>,
    pub(crate) group: Option<String>,
}

/// A listener's socket file, removed when this is dropped if the file at its path is still the
/// one bound here (a file another process put there since is left alone).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
    keep: bool,
}

impl SocketFile {
    /// The socket file at `path` as it is now, bound by another process (a live upgrade's old
    /// one) and now this process's to remove when its listener goes.
    pub(crate) fn adopt(path: &Path) -> Option<SocketFile> {
        let meta = fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            keep: false,
        })
    }

    /// Leaves the file in place when dropped: another process (a live upgrade's new one) serves
    /// it now.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let same = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
        if same {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Why a socket file's path cannot be listened on, beyond what `bind` says.
#[derive(Debug)]
pub(crate) enum Occupied {
    /// Something that is not a socket is at the path.
    NotASocket,
    /// A process listens on the socket there.
    Listening,
}

impl fmt::Display for Occupied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Occupied::NotASocket => "exists and is not a socket",
            Occupied::Listening => "another process is listening on it",
        })
    }
}

impl std::error::Error for Occupied {}

/// Listens on the Unix stream socket `name` (non-blocking, for the accept loop's poll). For a
/// file: a socket file nobody listens on (left by a run that ended without removing it) is
/// replaced, anything else at the path is refused; the file gets `access` before `listen`, so
/// nobody connects while it has the umask's mode. Returns the socket and, for a file, the guard
/// that removes it.
pub(crate) fn bind_listener(
    name: &[u8],
    access: &FileAccess,
) -> io::Result<(Socket, Option<SocketFile>)> {
    let path = (name.first() != Some(&0)).then(|| Path::new(OsStr::from_bytes(name)));
    if let Some(path) = path {
        clear_stale(path)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&address(name)?)?;
    let file = match path {
        Some(path) => Some(restrict(path, access)?),
        None => None,
    };
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok((socket, file))
}

/// Removes a socket file nobody listens on; refuses anything else at `path`.
fn clear_stale(path: &Path) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            Occupied::NotASocket,
        ));
    }
    match connect(path.as_os_str().as_bytes(), Duration::from_secs(1)) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            Occupied::Listening,
        )),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Gives the file just bound its owner, group and mode; the guard that removes it.
fn restrict(path: &Path, access: &FileAccess) -> io::Result<SocketFile> {
    let file = {
        let meta = fs::symlink_metadata(path)?;
        SocketFile {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            keep: false,
        }
    };
    set_access(path, access)?;
    Ok(file)
}

/// Gives the socket file at `path` its owner, group and mode (at bind, and when a reload changes
/// them).
pub(crate) fn set_access(path: &Path, access: &FileAccess) -> io::Result<()> {
    let owner = access.owner.as_deref().map(user_id).transpose()?;
    let group = access.group.as_deref().map(group_id).transpose()?;
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::lchown(path, owner, group)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(access.mode))
}

/// A user by number or name.
fn user_id(user: &str) -> io::Result<u32> {
    account_id("user", user, |name| {
        nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw()))
    })
}

/// A group by number or name.
fn group_id(group: &str) -> io::Result<u32> {
    account_id("group", group, |name| {
        nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
    })
}

/// An account's number: `text` itself if it is one, else what `lookup` finds for the name.
fn account_id(
    what: &str,
    text: &str,
    lookup: impl Fn(&str) -> nix::Result<Option<u32>>,
) -> io::Result<u32> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    lookup(text)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {what} named '{text}'")))
}

/// The address whose `sun_path` is `name`: a path, or a NUL byte then an abstract name.
pub(crate) fn address(name: &[u8]) -> io::Result<SockAddr> {
    SockAddr::unix(OsStr::from_bytes(name))
}

/// The bytes of `addr`'s `sun_path` (a path, or a NUL byte then an abstract name); `None` for an
/// address that is not a Unix socket's, or an unnamed one.
pub(crate) fn sun_path(addr: &SockAddr) -> Option<Vec<u8>> {
    match (addr.as_pathname(), addr.as_abstract_namespace()) {
        (Some(path), _) => Some(path.as_os_str().as_bytes().to_vec()),
        (None, Some(name)) => Some([&[0], name].concat()),
        (None, None) => None,
    }
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

/// A client: an IP address and port, or a process on this machine (a Unix socket's peer, known
/// by its credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    Ip(SocketAddr),
    Local(Credentials),
}

impl Peer {
    /// The client accepted on `socket`, whose peer's address is `addr`: an IP peer by its
    /// address, a Unix one by its credentials.
    pub(crate) fn of(socket: &Socket, addr: &SockAddr) -> io::Result<Peer> {
        match addr.as_socket() {
            Some(ip) => Ok(Peer::Ip(ip)),
            None => peer_credentials(socket).map(Peer::Local),
        }
    }

    /// What the per-client limits and affinity count it as: its IP address (IPv4-mapped IPv6 as
    /// IPv4), or for a local process its user, as an address of the discard-only prefix 100::/64
    /// (RFC 6666) that no real client has: `100::UID`.
    pub(crate) fn key(&self) -> IpAddr {
        match self {
            Peer::Ip(addr) => addr.ip().to_canonical(),
            Peer::Local(c) => IpAddr::V6(Ipv6Addr::new(
                0x100,
                0,
                0,
                0,
                0,
                0,
                (c.uid >> 16) as u16,
                c.uid as u16,
            )),
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer::Ip(addr)
    }
}

impl fmt::Display for Peer {
    /// `127.0.0.1:40000`, or `unix:pid=1234,uid=1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => addr.fmt(f),
            Peer::Local(c) => write!(f, "unix:pid={},uid={}", c.pid, c.uid),
        }
    }
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

    fn private_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcp-router-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        dir
    }

    fn access(mode: u32) -> FileAccess {
        FileAccess {
            mode,
            owner: None,
            group: None,
        }
    }

    #[test]
    fn a_listener_file_gets_its_mode_and_goes_with_its_guard() {
        let dir = private_dir("mode");
        let path = dir.join("l.sock");
        let name = path.as_os_str().as_bytes();
        let (socket, file) = bind_listener(name, &access(0o600)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(socket);
        drop(file);
        assert!(!path.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_file_is_replaced_but_a_live_one_or_another_file_is_refused() {
        let dir = private_dir("stale");
        let path = dir.join("l.sock");
        let name = path.as_os_str().as_bytes();
        let (live, mut file) = bind_listener(name, &access(0o660)).unwrap();
        let err = bind_listener(name, &access(0o660)).unwrap_err();
        assert_eq!(err.to_string(), "another process is listening on it");
        file.as_mut().unwrap().keep();
        drop((live, file));
        assert!(path.exists(), "kept");
        let (_again, _file) = bind_listener(name, &access(0o660)).unwrap();
        let other = dir.join("plain");
        fs::write(&other, b"x").unwrap();
        let err = bind_listener(other.as_os_str().as_bytes(), &access(0o660)).unwrap_err();
        assert_eq!(err.to_string(), "exists and is not a socket");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn nobody_listening_is_refused() {
        let err = connect(b"/nonexistent/tcp-router.sock", Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
