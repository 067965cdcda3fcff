//! The admin endpoint's life: bound at start (or handed over by a live upgrade), its accept
//! thread started (`intake`), and moved, given a new allow list or removed by a reload (it
//! follows the server's reconfiguration as a `serve::Follower`).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, RwLock};
use std::thread;

use crate::config::{Admin, Config, Pattern};
use crate::error::Error;
use crate::serve::status::Shared;
use crate::serve::Follower;
use crate::sys::{net, resolve};

use super::intake;

/// The endpoint: running (or not), and what a reconfiguration got ready.
#[derive(Debug)]
pub(crate) struct AdminEndpoint {
    shared: Arc<Shared>,
    running: Option<Serving>,
    prepared: Option<Prepared>,
}

/// A bound endpoint and its accept thread.
#[derive(Debug)]
struct Serving {
    config: Admin,
    addr: SocketAddr,
    /// Who may ask; replaced in place when only the list changes.
    allow: Arc<RwLock<Vec<Pattern>>>,
    /// Its end of the stop socket pair: dropping it wakes the accept thread, which then exits.
    #[allow(dead_code, reason = "held for its Drop, which stops the accept thread")]
    stop: UnixStream,
    /// The listening socket, for a live upgrade to hand over.
    socket: TcpListener,
}

/// What a reconfiguration will do to the endpoint.
#[derive(Debug)]
enum Prepared {
    /// Same address: keep the socket, take the new allow list.
    Keep(Vec<Pattern>),
    /// A new address (bound already), or an endpoint where there was none.
    Start(Admin, TcpListener),
    /// The new configuration has no endpoint: stop it.
    Stop,
}

impl AdminEndpoint {
    /// Binds the endpoint of `config`, if it has one (or takes `socket`, already bound and
    /// listening: taken over in a live upgrade), and starts serving it.
    pub(crate) fn start_with(
        config: &Config,
        shared: Arc<Shared>,
        socket: Option<TcpListener>,
    ) -> Result<AdminEndpoint, Error> {
        let mut endpoint = AdminEndpoint {
            shared,
            running: None,
            prepared: None,
        };
        if let Some(admin) = &config.admin {
            let socket = match socket {
                Some(socket) => socket,
                None => bind(admin)?,
            };
            endpoint.run(admin.clone(), socket)?;
        }
        Ok(endpoint)
    }

    /// The address the endpoint is bound to, if it runs.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }

    fn run(&mut self, config: Admin, socket: TcpListener) -> Result<(), Error> {
        let addr = socket.local_addr().map_err(|source| Error::Setup {
            what: "read the admin endpoint's address",
            source,
        })?;
        let (stop, stopped) = UnixStream::pair().map_err(|source| Error::Setup {
            what: "create the admin endpoint's stop socket pair",
            source,
        })?;
        // Kept for a live upgrade to hand over; the accept thread has its own.
        let kept = socket.try_clone().map_err(|source| Error::Setup {
            what: "duplicate the admin endpoint's socket",
            source,
        })?;
        let allow = Arc::new(RwLock::new(config.allow.clone()));
        let shared = Arc::clone(&self.shared);
        let thread_allow = Arc::clone(&allow);
        thread::Builder::new()
            .name("tcp-router-admin".into())
            .spawn(move || intake::run(socket, stopped, shared, thread_allow))
            .map_err(|source| Error::Setup {
                what: "start the admin endpoint's thread",
                source,
            })?;
        if !addr.ip().is_loopback() {
            log::warn!(
                "admin endpoint on {addr} is reachable from other machines; bind it to a loopback \
                 address or restrict it with --admin-allow"
            );
        }
        log::info!("admin endpoint on http://{addr}/ (metrics at /metrics)");
        self.running = Some(Serving {
            config,
            addr,
            allow,
            stop,
            socket: kept,
        });
        Ok(())
    }
}

impl Follower for AdminEndpoint {
    fn prepare(&mut self, config: &Config) -> Result<(), Error> {
        let current = self.running.as_ref().map(|r| &r.config);
        self.prepared = match (current, &config.admin) {
            (None, None) => None,
            (Some(_), None) => Some(Prepared::Stop),
            (Some(now), Some(next)) if now.listen == next.listen => {
                Some(Prepared::Keep(next.allow.clone()))
            }
            (_, Some(next)) => Some(Prepared::Start(next.clone(), bind(next)?)),
        };
        Ok(())
    }

    fn commit(&mut self) {
        match self.prepared.take() {
            None => {}
            Some(Prepared::Keep(allow)) => {
                if let Some(running) = &mut self.running {
                    running.config.allow = allow.clone();
                    *running
                        .allow
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = allow;
                }
            }
            Some(Prepared::Stop) => {
                if let Some(old) = self.running.take() {
                    log::info!("reload: closing the admin endpoint on {}", old.addr);
                }
            }
            Some(Prepared::Start(config, socket)) => {
                if let Some(old) = self.running.take() {
                    log::info!("reload: moving the admin endpoint from {}", old.addr);
                }
                if let Err(err) = self.run(config, socket) {
                    log::error!("reload: the admin endpoint could not start: {err}");
                }
            }
        }
    }

    fn abandon(&mut self) {
        self.prepared = None;
    }

    fn listening(&self) -> Option<&TcpListener> {
        self.running.as_ref().map(|running| &running.socket)
    }
}

/// Binds the endpoint's address; an address in use is an error like a listener's.
fn bind(admin: &Admin) -> Result<TcpListener, Error> {
    let addrs =
        resolve::resolve(&admin.listen.host.to_string(), admin.listen.port).map_err(|source| {
            Error::ResolveListen {
                addr: admin.listen.to_string(),
                source,
            }
        })?;
    let addr = addrs
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], admin.listen.port)));
    net::bind_listener(addr, false).map_err(|source| Error::Bind { addr, source })
}
