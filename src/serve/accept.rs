//! Accepting: the accept loop's wait on every listener at once, the connection slot taken before
//! each `accept`, and the accepted client registered and handed to a set-up worker.

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, RecvTimeoutError};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use socket2::Socket;

use crate::config::Endpoint;
use crate::error::Error;
use crate::sys::unix::Peer;

use super::admit::admit;
use super::backoff;
use super::conn;
use super::job::Job;
use super::metrics::Disposition;
use super::permits::{Permit, Permits};
use super::server::Server;
use super::status::HEARTBEAT;

impl Server {
    /// A free connection slot, waiting for one (up to a heartbeat) if all are busy; `None` if
    /// none came, or a control request did (it is put back for the loop to handle in order).
    pub(super) fn take_permit(&mut self) -> Option<Permit> {
        if let Some(permit) = self.permits.try_take() {
            return Some(permit);
        }
        log::debug!(
            "all {} connection slots busy; accepting resumes when one ends",
            self.permits.capacity()
        );
        self.shared.set_paused(true);
        let taken = select! {
            // Cannot fail: `self.permits` owns a sender, so the channel stays connected.
            recv(self.permits.receiver()) -> token => token.ok().map(|()| self.permits.permit()),
            recv(self.control_rx) -> control => {
                if let Ok(control) = control {
                    let _ = self.handle.tx.send(control);
                }
                None
            }
            default(HEARTBEAT) => None,
        };
        self.shared.set_paused(false);
        taken
    }

    /// Waits until a listener has a client or a control request arrives, or a heartbeat (or
    /// `until`, if sooner) passes.
    pub(super) fn poll_listeners(&mut self, until: Option<Instant>) -> Result<(), Error> {
        let mut fds = Vec::with_capacity(self.listening.len() + 1);
        fds.push(PollFd::new(&self.wake_rx, PollFlags::IN));
        let mut indices = Vec::with_capacity(self.listening.len());
        for (index, listening) in self.listening.iter().enumerate() {
            // A listener at its own cap is not polled: its clients wait in its backlog.
            if listening.limit.as_ref().is_some_and(Permits::is_paused) {
                continue;
            }
            fds.push(PollFd::new(&listening.socket, PollFlags::IN));
            indices.push(index);
        }
        let mut wait = HEARTBEAT;
        if let Some(until) = until {
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        let timeout = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(errno) => {
                return Err(Error::Setup {
                    what: "poll the listeners",
                    source: errno.into(),
                })
            }
        }
        let readable: Vec<usize> = fds
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, fd)| !fd.revents().is_empty())
            .map(|(i, _)| indices[i - 1])
            .collect();
        if !fds[0].revents().is_empty() {
            self.drain_wake_socket();
        }
        self.ready.extend(readable);
        Ok(())
    }

    fn drain_wake_socket(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
    }

    /// Accepts one client from the first ready listener and hands it to a worker.
    pub(super) fn accept_one(&mut self, permit: Permit) {
        let Some(index) = self.ready.pop_front() else {
            return;
        };
        let listening = &self.listening[index];
        let listener_permit = match &listening.limit {
            Some(limit) => match limit.take_or_pause() {
                Some(local) => Some(local),
                // At its own cap: clients wait in its backlog; it is polled again when a slot frees.
                None => return,
            },
            None => None,
        };
        let accepted = (listening.socket.accept())
            .and_then(|(stream, addr)| Ok((Peer::of(&stream, &addr)?, stream)));
        match accepted {
            Ok((peer, stream)) => {
                self.accept_errors.reset();
                // More clients may be queued: keep this listener in the rotation.
                self.ready.push_back(index);
                self.dispatch(index, stream, peer, permit, listener_permit);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if backoff::is_transient(&err) => {}
            Err(err) => {
                let addr = listening.addr.clone();
                drop(permit);
                self.back_off(&addr, err);
            }
        }
    }

    fn dispatch(
        &self,
        index: usize,
        stream: Socket,
        peer: Peer,
        permit: Permit,
        listener_permit: Option<Permit>,
    ) {
        let listening = &self.listening[index];
        listening
            .state
            .stats
            .accepted
            .fetch_add(1, Ordering::Relaxed);
        // On Linux an accepted socket does not inherit O_NONBLOCK from the listener, so it is
        // blocking, as the relay's backpressure needs.
        let registration = self.shared.registry.register(
            peer,
            stream,
            Arc::clone(&listening.state),
            listening.addr.clone(),
        );
        let admission = admit(&self.context.per_client, &registration.record);
        let slots = (permit, listener_permit);
        let job = Job::new(&self.context, registration, slots, admission);
        let unrouted = Arc::clone(&listening.state.unrouted);
        if let Err(err) = self
            .pool
            .execute(Box::new(move || conn::serve(job, Vec::new())))
        {
            // Thread creation failed (RLIMIT_NPROC, memory): this client is closed; the rest go on.
            unrouted.ended(Disposition::Error);
            log::warn!("client {peer}: cannot start a worker thread: {err}; closing the client");
        }
    }

    /// Logs an accept failure (rate-limited) and waits before accepting again; a stop request ends
    /// the wait early.
    fn back_off(&mut self, addr: &Endpoint, err: io::Error) {
        self.shared.metrics.accept_failed(&err);
        let delay = self.accept_errors.failed(addr, &err);
        match self.control_rx.recv_timeout(delay) {
            Ok(control) => {
                // Put it back so the loop handles it in order.
                let _ = self.handle.tx.send(control);
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpStream;

    use crate::config::{Config, Listener, Route};
    use crate::serve::handle::Control;
    use crate::serve::server::Server;

    fn server_with_one_slot() -> Server {
        let config = Config {
            max_connections: Some(1),
            ..Config::default()
        };
        Server::bind(&config, Vec::new()).unwrap()
    }

    #[test]
    fn a_request_that_comes_while_every_slot_is_busy_is_put_back_for_the_loop() {
        let mut server = server_with_one_slot();
        let held = server.permits.try_take().expect("the one slot");
        server.handle.stop();
        assert!(server.take_permit().is_none());
        assert!(matches!(
            server.control_rx.try_recv(),
            Ok(Control::Stop(None))
        ));
        assert!(!server.shared.is_paused(), "no longer waiting");
        drop(held);
        assert!(server.take_permit().is_some(), "the freed slot");
    }

    #[test]
    fn a_wake_up_with_no_listener_ready_leaves_nothing_to_accept() {
        let mut server = server_with_one_slot();
        server.handle.stop();
        server.poll_listeners(None).unwrap();
        assert!(server.ready.is_empty());
        assert!(server.control_rx.try_recv().is_ok(), "the request waits");
        let mut byte = [0u8; 1];
        assert!(
            (&server.wake_rx).read(&mut byte).is_err(),
            "the wake-up read"
        );
    }

    #[test]
    fn a_listener_with_a_client_waiting_is_ready_after_the_poll() {
        let mut listener = Listener::new("127.0.0.1:0".parse().unwrap());
        listener.routes = vec![Route::new(vec!["127.0.0.1:1".parse().unwrap()])];
        let config = Config {
            listeners: vec![Listener::new("127.0.0.1:0".parse().unwrap()), listener],
            ..Config::default()
        };
        let mut server = Server::bind(&config, Vec::new()).unwrap();
        let _client = TcpStream::connect(server.local_addrs()[1]).unwrap();
        server.poll_listeners(None).unwrap();
        assert_eq!(server.ready, [1]);
    }
}
