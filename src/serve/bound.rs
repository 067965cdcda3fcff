//! The bound listeners: binding them at start, and on reload keeping the sockets of unchanged
//! addresses (no re-bind, no refused client), binding new ones first and closing removed ones
//! last, so a reload that cannot bind changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use socket2::Socket;

use crate::config::range::ip_with_ports;
use crate::config::{Endpoint, HostPort, Listener, SocketPath};
use crate::error::Error;
use crate::sys::unix::{self, FileAccess, SocketFile};
use crate::sys::{net, resolve};

use super::listener::ListenerState;
use super::permits::Permits;

/// A bound listener and what its clients get.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(crate) socket: Socket,
    /// The bound address (with the real port when configured with port 0), or the Unix socket.
    pub(crate) addr: Endpoint,
    /// A Unix socket's file, removed when the listener closes (unless a live upgrade's new
    /// process serves it then).
    pub(crate) file: Option<SocketFile>,
    /// The configuration new clients get; replaced on reload, the socket kept.
    pub(crate) state: Arc<ListenerState>,
    /// The listener's own cap (`max_connections=` on its route), if any.
    pub(crate) limit: Option<Permits>,
    /// Handed in already bound (by the service manager, or an embedding program) rather than
    /// bound here: a reload may give it new routes but not close it.
    pub(crate) handed_in: bool,
}

impl Listening {
    /// Binds `state`'s address, or takes `socket` (already bound and listening) for it.
    pub(crate) fn bind(
        state: ListenerState,
        socket: Option<Socket>,
        wake: &Arc<UnixStream>,
    ) -> Result<Listening, Error> {
        let handed_in = socket.is_some();
        let (socket, addr, file) = match socket {
            Some(socket) => take_handed_in(socket)?,
            None => bind_socket(&state.config)?,
        };
        Ok(Listening {
            socket,
            addr,
            file,
            limit: limit(&state, wake),
            state: Arc::new(state),
            handed_in,
        })
    }

    /// Logs the address and its routes, as at start and after a reload; a range once, on its
    /// first port's turn, with its ports as written.
    pub(crate) fn log(&self) {
        let config = &self.state.config;
        let shown = match &config.range {
            Some(range) if config.listen.port != range.listen.first.port => return,
            Some(range) => match (range.listen.range, self.addr.ip()) {
                (Some(ports), Some(addr)) => format!(
                    "{} ({} ports)",
                    ip_with_ports(addr.ip(), ports),
                    ports.len()
                ),
                _ => self.addr.to_string(),
            },
            None => self.addr.to_string(),
        };
        let mut limits: Vec<String> = self
            .limit
            .as_ref()
            .map(|l| format!("max {} connections", l.capacity()))
            .into_iter()
            .collect();
        let shares = self.state.describe_limits();
        if !shares.is_empty() {
            limits.push(shares);
        }
        let cap = if limits.is_empty() {
            String::new()
        } else {
            format!(" ({})", limits.join("; "))
        };
        log::info!("listening on {shown} -> {}{cap}", self.state.describe());
        if config.accept_proxy && config.accept_proxy_from.is_empty() {
            log::warn!(
                "listener {} takes a PROXY header from any sender, so any client can choose the \
                 address allow/deny and the limits see; name the load balancers with \
                 --accept-proxy-from (accept_proxy_from=)",
                shown
            );
        }
    }
}

/// Switches `current` to `states`: listeners whose address is unchanged keep their socket and
/// take the new settings for new connections; new ones are bound; removed ones close. Nothing
/// changes unless every new listener could be bound. Addresses are compared port by port, so a
/// range that grows or shrinks binds or closes only the ports added or removed; looked up in a
/// map, so a reload of thousands of ports takes no quadratic time.
pub(crate) fn switch(
    current: &mut Vec<Listening>,
    states: Vec<ListenerState>,
    wake: &Arc<UnixStream>,
) -> Result<(), Error> {
    let wanted: HashSet<&HostPort> = states.iter().map(|s| &s.config.listen).collect();
    if let Some(kept) = current
        .iter()
        .find(|l| l.handed_in && !wanted.contains(&l.state.config.listen))
    {
        return Err(Error::Config(vec![format!(
            "listener {} was handed in already bound (by the service manager); a reload cannot \
             remove it: keep it in the configuration, or restart",
            kept.addr
        )]));
    }
    let bound: HashMap<HostPort, usize> = (current.iter().enumerate())
        .map(|(i, l)| (l.state.config.listen.clone(), i))
        .collect();
    // First bind every new address; if one fails, nothing has changed yet.
    let mut fresh = Vec::with_capacity(states.len());
    for state in &states {
        if bound.contains_key(&state.config.listen) {
            fresh.push(None);
        } else {
            fresh.push(Some(bind_socket(&state.config)?));
        }
    }
    let mut old: Vec<Option<Listening>> = std::mem::take(current).into_iter().map(Some).collect();
    for (state, fresh) in states.into_iter().zip(fresh) {
        let kept = (bound.get(&state.config.listen)).and_then(|&i| old[i].take());
        current.push(match (fresh, kept) {
            (Some((socket, addr, file)), _) => Listening {
                socket,
                addr,
                file,
                limit: limit(&state, wake),
                state: Arc::new(state),
                handed_in: false,
            },
            (None, Some(mut kept)) => {
                if kept.state.config.max_connections != state.config.max_connections {
                    kept.limit = limit(&state, wake);
                }
                reaccess(&kept.state.config, &state.config);
                kept.state = Arc::new(state);
                kept
            }
            (None, None) => unreachable!("BUG: a listener is neither kept nor bound"),
        });
    }
    log_removed(old.into_iter().flatten());
    Ok(())
}

/// Says which listeners a reload closes: each one alone, the ports of a range as one line per
/// range.
fn log_removed(removed: impl Iterator<Item = Listening>) {
    let mut ranges: BTreeMap<String, usize> = BTreeMap::new();
    for listening in removed {
        match &listening.state.config.range {
            Some(range) => *ranges.entry(range.listen.to_string()).or_default() += 1,
            None => log::info!("reload: closing listener {}", listening.addr),
        }
    }
    for (range, ports) in ranges {
        log::info!("reload: closing {ports} port(s) of range {range}");
    }
}

/// A bound listener: its socket, the address actually bound, and a Unix socket's file.
type Bound = (Socket, Endpoint, Option<SocketFile>);

/// Resolves and binds a listen address, or binds a Unix socket with its file's access.
fn bind_socket(listener: &Listener) -> Result<Bound, Error> {
    let listen = &listener.listen;
    if let Some(path) = listen.socket_path() {
        return bind_unix(path, listener);
    }
    let addr = resolve_listen(listen, listen.to_string())?;
    let socket = net::bind_listener(addr, listener.reuse_port)
        .map_err(|source| Error::Bind { addr, source })?;
    let addr = socket.local_addr().unwrap_or(addr);
    Ok((socket.into(), Endpoint::Ip(addr), None))
}

/// Who may connect to `listener`'s socket file, as configured.
fn file_access(listener: &Listener) -> FileAccess {
    FileAccess {
        mode: listener.socket_mode,
        owner: listener.socket_owner.clone(),
        group: listener.socket_group.clone(),
    }
}

/// A kept Unix listener's file takes the mode and owner a reload gives it (a failure is logged:
/// the listener goes on with the file as it was).
fn reaccess(old: &Listener, new: &Listener) {
    let Some(SocketPath::Path(path)) = new.listen.socket_path() else {
        return;
    };
    let access = file_access(new);
    if access != file_access(old) {
        if let Err(err) = unix::set_access(path, &access) {
            log::warn!(
                "reload: {}: cannot set its file's mode and owner: {err}",
                new.listen
            );
        }
    }
}

/// Binds the Unix socket `path`, its file (if it has one) with the listener's mode and owner.
fn bind_unix(path: &SocketPath, listener: &Listener) -> Result<Bound, Error> {
    let access = file_access(listener);
    let (socket, file) =
        unix::bind_listener(&path.sun_path(), &access).map_err(|source| Error::BindSocket {
            path: path.to_string(),
            source,
        })?;
    Ok((socket, Endpoint::Unix(path.clone()), file))
}

/// The address to bind for `listen` (its first, resolved now); `shown` names it in the error.
pub(crate) fn resolve_listen(listen: &HostPort, shown: String) -> Result<SocketAddr, Error> {
    let addrs = resolve::resolve(&listen.host.to_string(), listen.port).map_err(|source| {
        Error::ResolveListen {
            addr: shown,
            source,
        }
    })?;
    // `resolve` never returns an empty list; the fallback only keeps this free of a panic path.
    Ok(addrs
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], listen.port))))
}

/// Takes a socket an embedding program (or the service manager) bound: the accept loop polls,
/// so it must not block.
fn take_handed_in(socket: Socket) -> Result<Bound, Error> {
    let addr = socket.local_addr().map_err(|source| Error::Setup {
        what: "read the address of a given listener",
        source,
    })?;
    let unix = || unix::sun_path(&addr).and_then(|name| SocketPath::from_sun_path(&name));
    let addr = match (addr.as_socket(), unix()) {
        (Some(ip), _) => Endpoint::Ip(ip),
        (None, Some(path)) => Endpoint::Unix(path),
        (None, None) => {
            return Err(Error::Setup {
                what: "use a given listener: it is neither an IP socket nor a named Unix socket",
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })
        }
    };
    net::tune_listener(&socket);
    socket
        .set_nonblocking(true)
        .map_err(|source| Error::Setup {
            what: "make a given listener non-blocking",
            source,
        })?;
    Ok((socket, addr, None))
}

fn limit(state: &ListenerState, wake: &Arc<UnixStream>) -> Option<Permits> {
    state
        .config
        .max_connections
        .map(|max| Permits::with_waker(max, Arc::clone(wake)))
}
