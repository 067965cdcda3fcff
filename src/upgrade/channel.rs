//! The live upgrade's channel: how an old process and the new one it started find each other,
//! and send the messages of `wire` with sockets attached.
//!
//! The old process listens on a Unix socket in a directory of its own (mode 0700, in a directory
//! the caller names: the binary's is `$XDG_RUNTIME_DIR` or the temporary directory), names it
//! to the new process in [`CHANNEL_ENV`], and accepts only the process it started (by
//! `SO_PEERCRED`). The new process connects only through a directory of its own user with mode
//! 0700, to a peer of its own user, and learns the peer's process id (to check it is its
//! parent): a directory another user owns or could enter, or substituted beneath it, is
//! refused.

use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::sys::fd_pass;

use super::wire::{Message, VERSION};

/// The environment variable that tells a new process where its predecessor waits.
pub const CHANNEL_ENV: &str = "TCP_ROUTER_UPGRADE";

/// For tests of a version mismatch: the hand-off version the binary claims to speak when it
/// takes over (see [`Channel::claiming_version`]).
pub const VERSION_ENV: &str = "TCP_ROUTER_HANDOFF_VERSION";

/// A connected hand-off channel, to the old process or to the new one.
#[derive(Debug)]
pub struct Channel {
    inner: fd_pass::SeqPacket,
    /// The peer's process id, when this end accepted it.
    peer_pid: Option<u32>,
    /// The hand-off version this end says it speaks: [`VERSION`] unless a test claims another.
    version: u32,
}

/// Where an old process waits for the new one: a private directory with the channel's socket,
/// removed when dropped.
///
/// ```
/// use std::time::Duration;
/// use tcp_router::upgrade::{Channel, Rendezvous};
///
/// let rendezvous = Rendezvous::new(&std::env::temp_dir())?;
/// let _new = Channel::connect(rendezvous.path())?;
/// let old = rendezvous.accept(Duration::from_secs(5))?.expect("connected");
/// assert_eq!(old.peer_pid(), Some(std::process::id()));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Rendezvous {
    dir: PathBuf,
    path: PathBuf,
    listener: fd_pass::SeqPacketListener,
}

impl Rendezvous {
    /// Creates a private directory in `base` and starts listening there.
    pub fn new(base: &Path) -> io::Result<Rendezvous> {
        let dir = base.join(format!(
            "tcp-router-upgrade-{}-{}",
            std::process::id(),
            nonce()
        ));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("channel");
        match fd_pass::SeqPacketListener::bind(&path) {
            Ok(listener) => Ok(Rendezvous {
                dir,
                path,
                listener,
            }),
            Err(err) => {
                let _ = fs::remove_dir(&dir);
                Err(err)
            }
        }
    }

    /// The socket's path, for [`CHANNEL_ENV`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for a process to connect; `None` if none did.
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<Channel>> {
        Ok(self.listener.accept(timeout)?.map(|(inner, pid)| Channel {
            inner,
            peer_pid: Some(pid),
            version: VERSION,
        }))
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A few random-enough bits for a directory name that no one can guess in advance (the
/// directory's mode is what protects it; this only avoids collisions).
fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
}

impl Channel {
    /// Connects to the old process waiting at `path`, whose directory must be this user's own
    /// with mode 0700, and whose listener must run as this user; the peer's process id is then
    /// [`Channel::peer_pid`].
    pub fn connect(path: &Path) -> io::Result<Channel> {
        let uid = rustix::process::geteuid().as_raw();
        check_private_dir(path.parent().unwrap_or(Path::new(".")), uid)?;
        let inner = fd_pass::SeqPacket::connect(path)?;
        let (pid, peer_uid) = inner.peer()?;
        if peer_uid != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the process listening there runs as uid {peer_uid}, not {uid}"),
            ));
        }
        Ok(Channel {
            inner,
            peer_pid: Some(pid),
            version: VERSION,
        })
    }

    /// Says hello with hand-off `version` instead of [`VERSION`] when this end takes over: for
    /// tests of how a mismatch is refused (the binary's [`VERSION_ENV`]).
    pub fn claiming_version(mut self, version: u32) -> Channel {
        self.version = version;
        self
    }

    /// The hand-off version this end says it speaks.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    /// The peer's process id (from `SO_PEERCRED`).
    pub fn peer_pid(&self) -> Option<u32> {
        self.peer_pid
    }

    /// Both ends of a channel, for tests.
    #[cfg(test)]
    pub(crate) fn pair() -> (Channel, Channel) {
        let (a, b) = fd_pass::SeqPacket::pair().expect("a socket pair");
        (
            Channel {
                inner: a,
                peer_pid: None,
                version: VERSION,
            },
            Channel {
                inner: b,
                peer_pid: None,
                version: VERSION,
            },
        )
    }

    /// Sends `message` with `fds` attached.
    pub(crate) fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.inner
            .send(&message.encode(), fds)
            .map_err(|err| upgrade_error(format!("cannot send the {}: {err}", message.name())))
    }

    /// Receives the next message and its descriptors, waiting up to `timeout`.
    pub(crate) fn recv(&self, timeout: Duration) -> Result<(Message, Vec<OwnedFd>), Error> {
        match self.inner.recv(Some(timeout)) {
            Ok(Some((bytes, fds))) => Message::decode(&bytes)
                .map(|message| (message, fds))
                .map_err(|err| upgrade_error(err.to_string())),
            Ok(None) => Err(upgrade_error("the other process closed the channel".into())),
            Err(err) if err.kind() == io::ErrorKind::TimedOut => Err(upgrade_error(format!(
                "the other process sent nothing for {timeout:?}"
            ))),
            Err(err) => Err(upgrade_error(format!("cannot receive: {err}"))),
        }
    }

    /// Waits until the other end closes the channel (anything it still sends is ignored).
    pub fn wait_closed(&self) {
        while let Ok(Some(_)) = self.inner.recv(None) {}
    }
}

/// Refuses a rendezvous directory that is not this user's own (`uid`) with mode 0700: another
/// user who could enter it, or who owns it, could put a listener of their own there.
fn check_private_dir(dir: &Path, uid: u32) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    let mode = meta.mode() & 0o7777;
    let why = if !meta.file_type().is_dir() {
        Some("not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!("owned by uid {}", meta.uid()))
    } else if mode != 0o700 {
        Some(format!("mode {mode:04o}"))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the rendezvous directory {} is {why}; expected a directory of uid {uid} with \
                 mode 0700",
                dir.display()
            ),
        )),
    }
}

pub(crate) fn upgrade_error(why: String) -> Error {
    Error::Upgrade(why)
}
