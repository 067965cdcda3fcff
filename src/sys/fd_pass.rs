//! A private channel to another process that carries messages with sockets attached: a Unix
//! `SOCK_SEQPACKET` socket (each send is one message, so a message and the descriptors sent with
//! it arrive together, never merged or split) with the descriptors passed as `SCM_RIGHTS`.
//!
//! The live upgrade's old process listens on a path in a directory only its user can enter; the
//! new one connects; the old one checks, from the kernel's `SO_PEERCRED`, that the peer is the
//! process it started.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// The largest message: a connection's state with the bytes it holds each way (at most a copy
/// buffer or a pipe each) fits with room to spare.
pub(crate) const MAX_MESSAGE: usize = 512 * 1024;

/// The most descriptors one message carries (the kernel's own limit is 253).
pub(crate) const MAX_FDS: usize = 64;

/// A connected channel.
#[derive(Debug)]
pub(crate) struct SeqPacket {
    fd: OwnedFd,
}

/// A channel's listening end, bound to a path.
#[derive(Debug)]
pub(crate) struct SeqPacketListener {
    fd: OwnedFd,
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

impl SeqPacketListener {
    /// Listens on `path` (which must not exist yet).
    pub(crate) fn bind(path: &Path) -> io::Result<SeqPacketListener> {
        let fd = seqpacket()?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 1)?;
        Ok(SeqPacketListener { fd })
    }

    /// Waits up to `timeout` for a peer; returns it with its process id, or `None` on timeout.
    pub(crate) fn accept(&self, timeout: Duration) -> io::Result<Option<(SeqPacket, u32)>> {
        if !wait_readable(self.fd.as_fd(), Some(timeout))? {
            return Ok(None);
        }
        let fd = rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC)?;
        let pid = rustix::net::sockopt::socket_peercred(&fd)?
            .pid
            .as_raw_nonzero();
        Ok(Some((SeqPacket::tuned(fd)?, pid.get() as u32)))
    }
}

impl SeqPacket {
    /// Connects to the listener at `path`.
    pub(crate) fn connect(path: &Path) -> io::Result<SeqPacket> {
        let fd = seqpacket()?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        SeqPacket::tuned(fd)
    }

    /// The process id and user id of the peer, as the kernel recorded them when it connected
    /// or listened (`SO_PEERCRED`).
    pub(crate) fn peer(&self) -> io::Result<(u32, u32)> {
        let cred = rustix::net::sockopt::socket_peercred(&self.fd)?;
        Ok((cred.pid.as_raw_nonzero().get() as u32, cred.uid.as_raw()))
    }

    /// Both ends of a channel within this process (for tests).
    #[cfg(test)]
    pub(crate) fn pair() -> io::Result<(SeqPacket, SeqPacket)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((SeqPacket::tuned(a)?, SeqPacket::tuned(b)?))
    }

    fn tuned(fd: OwnedFd) -> io::Result<SeqPacket> {
        // Room for the largest message in one packet.
        rustix::net::sockopt::set_socket_send_buffer_size(&fd, 2 * MAX_MESSAGE)?;
        Ok(SeqPacket { fd })
    }

    /// Sends one message with `fds` attached (the descriptors are duplicated into the peer;
    /// ours stay open).
    pub(crate) fn send(&self, message: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if message.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "hand-off message too large",
            ));
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for the descriptors"));
        }
        let sent = rustix::net::sendmsg(
            &self.fd,
            &[IoSlice::new(message)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "hand-off message sent in part",
            ));
        }
        Ok(())
    }

    /// Receives one message and the descriptors sent with it, waiting up to `timeout` (`None`:
    /// for ever). `Ok(None)` means the peer closed the channel.
    pub(crate) fn recv(
        &self,
        timeout: Option<Duration>,
    ) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        if !wait_readable(self.fd.as_fd(), timeout)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no hand-off message in time",
            ));
        }
        let mut message = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            match rustix::net::recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(&mut message)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        for part in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = part {
                fds.extend(received);
            }
        }
        if received
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "hand-off message truncated",
            ));
        }
        if received.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        message.truncate(received.bytes);
        Ok(Some((message, fds)))
    }
}

/// Waits until `fd` is readable (or closed); false if `timeout` passed first.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let timespec = timeout.map(|t| Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, timespec.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_message_arrives_whole_with_its_sockets() {
        let (a, b) = SeqPacket::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        a.send(b"first", &[listener.as_fd()]).unwrap();
        a.send(b"second", &[]).unwrap();
        let (message, mut fds) = b.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
        assert_eq!(message, b"first");
        assert_eq!(fds.len(), 1);
        let passed = TcpListener::from(fds.pop().unwrap());
        assert_eq!(passed.local_addr().unwrap(), addr);
        let _client = TcpStream::connect(addr).unwrap();
        assert!(passed.accept().is_ok(), "the passed socket accepts");
        let (message, fds) = b.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
        assert_eq!((message.as_slice(), fds.len()), (&b"second"[..], 0));
        drop(a);
        assert!(b.recv(Some(Duration::from_secs(5))).unwrap().is_none());
    }

    #[test]
    fn a_listener_names_the_peer_process() {
        let dir = crate::test_support::temp_dir("fd-pass");
        let path = dir.join("channel");
        let listener = SeqPacketListener::bind(&path).unwrap();
        assert!(listener
            .accept(Duration::from_millis(10))
            .unwrap()
            .is_none());
        let _peer = SeqPacket::connect(&path).unwrap();
        let (_channel, pid) = listener.accept(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(pid, std::process::id());
    }
}
