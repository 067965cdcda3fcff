//! Waking one blocked thread out of a system call, so a copy thread blocked in `recv` or in a
//! blocking write can be brought to a safe point (for a live upgrade).
//!
//! A thread is woken by a signal sent to it alone (`pthread_kill` with SIGURG, which nothing else
//! here uses and whose default action is to ignore it). The handler does nothing; what matters is
//! that the system call it interrupts returns `EINTR`. signal-hook installs handlers with
//! `SA_RESTART`, under which Linux restarts a socket call transparently, except (signal(7)) a
//! receive on a socket with a receive timeout and a send on a socket with a send timeout: those
//! return `EINTR`. The copy loop always gives its sockets both timeouts (see the relay's
//! `pump`), so the signal always reaches it. A signal can still arrive just before the thread
//! enters the call; the caller repeats it until the thread says it has stopped.

use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::Signal;

/// The signal that wakes a thread.
const WAKE: Signal = Signal::SIGURG;

/// A thread that can be woken, as `pthread_self` names it. Kept as an integer: `pthread_t` is
/// an integer under glibc but a pointer under musl, which would make the connection that holds
/// it neither `Send` nor `Sync`; and never zero, so an `Option` of it costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadId(NonZeroUsize);

impl ThreadId {
    /// The calling thread.
    pub(crate) fn current() -> ThreadId {
        let raw = pthread_self() as usize;
        // A running thread's id is never 0 under glibc or musl (it is its control block).
        ThreadId(NonZeroUsize::new(raw).unwrap_or(NonZeroUsize::MIN))
    }

    /// Interrupts the system call the thread is blocked in, if any. The caller must know the
    /// thread is still running (it has not returned from the code that registered it).
    pub(crate) fn wake(self) -> io::Result<()> {
        install()?;
        pthread_kill(self.0.get() as Pthread, WAKE).map_err(io::Error::from)
    }
}

/// Installs the (empty) handler once, before the first wake-up: an ignored signal would not
/// interrupt anything.
pub(crate) fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), io::ErrorKind>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        signal_hook::flag::register(WAKE as i32, Arc::new(AtomicBool::new(false)))
            .map(drop)
            .map_err(|err| err.kind())
    });
    installed.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_wake_interrupts_a_receive_that_has_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(3600)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            tx.send(ThreadId::current()).unwrap();
            let mut byte = [0u8; 1];
            rustix::net::recv(&client, &mut byte, rustix::net::RecvFlags::empty())
        });
        let id = rx.recv().unwrap();
        // The thread may not have entered recv yet: wake it until it returns.
        while !reader.is_finished() {
            id.wake().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reader.join().unwrap().unwrap_err(), rustix::io::Errno::INTR);
    }
}
