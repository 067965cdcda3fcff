//! What each side of a live upgrade reports when it is done.

use std::time::Duration;

use super::channel::Channel;

/// What an old process handed over.
#[derive(Debug)]
pub struct HandedOff {
    /// The new process's id, as the channel's peer credentials gave it (`None` if they did not).
    pub pid: Option<u32>,
    /// Listening sockets handed over (the admin endpoint's included).
    pub listeners: usize,
    /// Established connections handed over.
    pub connections: usize,
    /// Held until dropped: the new process waits for it to close before it tells the service
    /// manager it is the main process.
    #[allow(dead_code, reason = "held for its Drop, which closes the channel")]
    pub(crate) channel: Channel,
}

/// What a new process took over.
#[derive(Debug)]
pub struct TakenOver {
    /// Listening sockets taken over (the admin endpoint's included).
    pub listeners: usize,
    /// Established connections taken over.
    pub connections: usize,
    pub(crate) channel: Channel,
}

impl TakenOver {
    /// Waits (up to `timeout`) until the old process has let go of everything and closed the
    /// channel; after that it has told the service manager who the main process is.
    pub fn wait_released(self, timeout: Duration) {
        let (done, wait) = crossbeam_channel::bounded(1);
        let channel = self.channel;
        let waiter = std::thread::Builder::new()
            .name("tcp-router-upgrade".into())
            .spawn(move || {
                channel.wait_closed();
                let _ = done.send(());
            });
        if waiter.is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}
