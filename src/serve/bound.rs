//! The bound listeners: binding them at start, and on reload keeping the sockets of unchanged
//! addresses (no re-bind, no refused client), binding new ones first and closing removed ones
//! last, so a reload that cannot bind changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::config::range::ip_with_ports;
use crate::config::HostPort;
use crate::error::Error;
use crate::sys::{net, resolve};

use super::listener::ListenerState;
use super::permits::Permits;

/// A bound listener and what its clients get.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(crate) socket: TcpListener,
    /// The bound address (with the real port when configured with port 0).
    pub(crate) addr: SocketAddr,
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
        socket: Option<TcpListener>,
        wake: &Arc<UnixStream>,
    ) -> Result<Listening, Error> {
        let handed_in = socket.is_some();
        let (socket, addr) = match socket {
            Some(socket) => take_handed_in(socket)?,
            None => bind_socket(&state.config.listen, state.config.reuse_port)?,
        };
        Ok(Listening {
            socket,
            addr,
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
            Some(range) => match range.listen.range {
                Some(ports) => format!(
                    "{} ({} ports)",
                    ip_with_ports(self.addr.ip(), ports),
                    ports.len()
                ),
                None => self.addr.to_string(),
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
            fresh.push(Some(bind_socket(
                &state.config.listen,
                state.config.reuse_port,
            )?));
        }
    }
    let mut old: Vec<Option<Listening>> = std::mem::take(current).into_iter().map(Some).collect();
    for (state, fresh) in states.into_iter().zip(fresh) {
        let kept = (bound.get(&state.config.listen)).and_then(|&i| old[i].take());
        current.push(match (fresh, kept) {
            (Some((socket, addr)), _) => Listening {
                socket,
                addr,
                limit: limit(&state, wake),
                state: Arc::new(state),
                handed_in: false,
            },
            (None, Some(mut kept)) => {
                if kept.state.config.max_connections != state.config.max_connections {
                    kept.limit = limit(&state, wake);
                }
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

/// Resolves and binds a listen address; returns the socket and the address actually bound.
fn bind_socket(listen: &HostPort, reuse_port: bool) -> Result<(TcpListener, SocketAddr), Error> {
    let addr = resolve_listen(listen, listen.to_string())?;
    let socket =
        net::bind_listener(addr, reuse_port).map_err(|source| Error::Bind { addr, source })?;
    let addr = socket.local_addr().unwrap_or(addr);
    Ok((socket, addr))
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
fn take_handed_in(socket: TcpListener) -> Result<(TcpListener, SocketAddr), Error> {
    let addr = socket.local_addr().map_err(|source| Error::Setup {
        what: "read the address of a given listener",
        source,
    })?;
    net::tune_listener(&socket);
    socket
        .set_nonblocking(true)
        .map_err(|source| Error::Setup {
            what: "make a given listener non-blocking",
            source,
        })?;
    Ok((socket, addr))
}

fn limit(state: &ListenerState, wake: &Arc<UnixStream>) -> Option<Permits> {
    state
        .config
        .max_connections
        .map(|max| Permits::with_waker(max, Arc::clone(wake)))
}
