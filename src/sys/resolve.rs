//! Host names to socket addresses, through the system's resolver (`getaddrinfo`, by way of std),
//! at each call: nothing is cached, so DNS changes are followed.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// The addresses of `host` at `port`: an IP literal is returned as it is, without a lookup; a
/// name (or `localhost`) is looked up now. A name that resolves to no address is an error.
pub(crate) fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("'{host}' resolved to no address"),
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_literals_without_dns() {
        let addrs = resolve("::1", 9).unwrap();
        assert_eq!(addrs, vec!["[::1]:9".parse().unwrap()]);
        let addrs = resolve("127.0.0.1", 80).unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap()]);
    }
}
