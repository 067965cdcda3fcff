//! Socket activation: listening sockets the service manager passes in (`LISTEN_FDS` from fd 3 on,
//! for this process when `LISTEN_PID` says so, named by `LISTEN_FDNAMES`), each used for the
//! listener whose address it is bound to instead of binding. The variables are read (and removed
//! from the environment) at start, by [`Environment::take`].

use std::net::ToSocketAddrs;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr as UnixAddr;

use socket2::SockRef;
use tcp_router::config::{Endpoint, SocketPath};
use tcp_router::{Config, HostPort};

use crate::environment::Environment;

/// The first descriptor the service manager passes.
const FIRST_FD: usize = 3;

/// A listening socket the service manager passed.
#[derive(Debug)]
pub(crate) struct Passed {
    /// Its descriptor number and name, for messages: `fd 3 (web)`.
    label: String,
    listener: OwnedFd,
    addr: Endpoint,
}

/// Takes the sockets passed to this process, if any; every one must be a listening TCP or Unix
/// stream socket.
pub(crate) fn take(environment: &mut Environment) -> Result<Vec<Passed>, Vec<String>> {
    let fds = &mut environment.listen_fds;
    let names = &environment.listen_fd_names;
    if environment.listen_fds_for_another {
        log::debug!("LISTEN_FDS is set for another process (LISTEN_PID); ignored");
    }
    let mut passed = Vec::new();
    let mut errors = Vec::new();
    for index in 0..fds.len() {
        let label = match names.get(index).filter(|n| !n.is_empty()) {
            Some(name) => format!("fd {} ({name})", FIRST_FD + index),
            None => format!("fd {}", FIRST_FD + index),
        };
        match take_one(fds, index, &label) {
            Ok(one) => passed.push(one),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(passed)
    } else {
        Err(errors)
    }
}

fn take_one(fds: &mut listenfd::ListenFd, index: usize, label: &str) -> Result<Passed, String> {
    let cannot_read = |e: std::io::Error| {
        format!("{label} from the service manager: cannot read its address: {e}")
    };
    let (listener, addr) = match fds.take_tcp_listener(index) {
        Ok(Some(listener)) => {
            let addr = listener.local_addr().map_err(cannot_read)?;
            (OwnedFd::from(listener), Endpoint::Ip(addr))
        }
        Ok(None) => return Err(format!("{label} from the service manager was already taken")),
        Err(tcp) => match fds.take_unix_listener(index) {
            Ok(Some(listener)) => {
                let addr = unix_endpoint(&listener.local_addr().map_err(cannot_read)?)
                    .ok_or_else(|| format!("{label} from the service manager is a Unix socket with no name a unix: address can write"))?;
                (OwnedFd::from(listener), addr)
            }
            _ => {
                return Err(format!(
                    "{label} from the service manager is not a TCP or Unix stream socket ({tcp}); pass ListenStream= sockets"
                ))
            }
        },
    };
    if !SockRef::from(&listener).is_listener().unwrap_or(false) {
        return Err(format!(
            "{label} from the service manager is a stream socket but not listening (Accept=yes is not supported)"
        ));
    }
    Ok(Passed {
        label: label.to_string(),
        listener,
        addr,
    })
}

/// A Unix listener's address as a listen address is written: its path or its abstract name.
fn unix_endpoint(addr: &UnixAddr) -> Option<Endpoint> {
    let sun_path = match (addr.as_pathname(), addr.as_abstract_name()) {
        (Some(path), _) => path.as_os_str().as_encoded_bytes().to_vec(),
        (None, Some(name)) => [&[0], name].concat(),
        (None, None) => return None,
    };
    SocketPath::from_sun_path(&sun_path).map(Endpoint::Unix)
}

/// The passed socket for each listener of `config`, by the address it is bound to; a listener
/// passed nothing binds as usual. A passed socket that no listener's address matches is an
/// error: it would be served by nobody.
pub(crate) fn assign(
    config: &Config,
    passed: Vec<Passed>,
) -> Result<Vec<Option<OwnedFd>>, Vec<String>> {
    let mut left: Vec<Option<Passed>> = passed.into_iter().map(Some).collect();
    let mut sockets = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        // The service manager passes stream listeners; a UDP listener binds its own.
        if listener.transport != tcp_router::config::Transport::Tcp {
            sockets.push(None);
            continue;
        }
        let addrs = endpoints(&listener.listen);
        let found = left
            .iter_mut()
            .find(|p| p.as_ref().is_some_and(|p| addrs.contains(&p.addr)))
            .and_then(Option::take);
        match found {
            Some(p) => {
                log::info!(
                    "listener {}: using {} from the service manager",
                    listener.listen,
                    p.label
                );
                sockets.push(Some(p.listener));
            }
            None => {
                if !left.is_empty() {
                    log::info!(
                        "listener {}: not passed by the service manager; binding it",
                        listener.listen
                    );
                }
                sockets.push(None);
            }
        }
    }
    let unmatched: Vec<String> = left
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} from the service manager is bound to {}, which is no listener's address in the configuration",
                p.label, p.addr
            )
        })
        .collect();
    if unmatched.is_empty() {
        Ok(sockets)
    } else {
        Err(unmatched)
    }
}

/// The addresses `listen` names (a host name looked up now, a Unix socket itself); none if it
/// cannot be resolved.
fn endpoints(listen: &HostPort) -> Vec<Endpoint> {
    if let Some(path) = listen.socket_path() {
        return vec![Endpoint::Unix(path.clone())];
    }
    (listen.host.to_string().as_str(), listen.port)
        .to_socket_addrs()
        .map(|addrs| addrs.map(Endpoint::Ip).collect())
        .unwrap_or_default()
}
