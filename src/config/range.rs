//! Port ranges: `HOST:FIRST-LAST` on `route` lines and on the command line, one listener per port.
//!
//! A range is written where a listen address or an upstream is (`route 0.0.0.0:9000-9099
//! 10.0.0.1:9000-9099`) and read into [`HostPorts`]; [`HostPort`] stays one port, since that is
//! what a socket binds or connects to. When the configuration is built, a listener written for a
//! range becomes one [`Listener`](crate::Listener) per port
//! ([`Listener::for_range`](crate::Listener::for_range)): listen port `FIRST + i`
//! forwards to each upstream range's port `FIRST + i`, or to an upstream's single port. Every
//! listener of a range keeps the range it came from ([`ListenRange`]), so `--check` shows one
//! line for it, the metrics count it under one label, and a reload compares it port by port.

use std::fmt;

use super::addr::{
    addr_error, parse_host, split_host_port, AddrError, HostPort, Services, UNIX_PREFIX,
};
use super::text::printable;

/// The most ports one range may have: beyond it a line is refused. Each port is a listening
/// socket with an accept loop of its own, and a range is one line that is easy to mistype
/// (`9000-19000`); 4096 covers the ranges forwarders are asked for (a game server's or a passive
/// FTP range's hundreds), and a larger set is written as several ranges.
pub const MAX_RANGE_PORTS: usize = 4096;

/// An inclusive run of consecutive ports, `9000-9099`: never port 0, never reversed, at most
/// [`MAX_RANGE_PORTS`] long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The range `first..=last`, or why it cannot be one (a lowercase phrase).
    ///
    /// ```
    /// use tcp_router::config::PortRange;
    ///
    /// let range = PortRange::new(9000, 9099)?;
    /// assert_eq!((range.len(), range.port(5), range.to_string()), (100, 9005, "9000-9099".into()));
    /// assert_eq!(PortRange::new(9100, 9000).unwrap_err(), "the range 9100-9000 is reversed: write the lower port first");
    /// # Ok::<(), String>(())
    /// ```
    pub fn new(first: u16, last: u16) -> Result<PortRange, String> {
        if first == 0 {
            return Err("port 0 cannot be part of a range".into());
        }
        if last < first {
            return Err(format!(
                "the range {first}-{last} is reversed: write the lower port first"
            ));
        }
        let len = usize::from(last - first) + 1;
        if len > MAX_RANGE_PORTS {
            return Err(format!(
                "the range {first}-{last} has {len} ports, more than {MAX_RANGE_PORTS}: split it over several lines"
            ));
        }
        Ok(PortRange { first, last })
    }

    /// The first port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The last port (included).
    pub fn last(&self) -> u16 {
        self.last
    }

    /// How many ports: at least 1.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// The port `offset` places after the first, kept within the range.
    pub fn port(&self, offset: usize) -> u16 {
        let offset = u16::try_from(offset).unwrap_or(u16::MAX);
        self.first.saturating_add(offset).min(self.last)
    }

    /// The ports, first to last.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// An address where a range may be written: one port (`10.0.0.1:8080`) or a range of them
/// (`0.0.0.0:9000-9099`, `[::1]:9000-9099`). Its text is how the range is named in `--check`, in
/// the metrics' labels and in messages.
///
/// ```
/// use tcp_router::config::HostPorts;
///
/// let listen: HostPorts = "0.0.0.0:9000-9099".parse()?;
/// assert_eq!(listen.len(), 100);
/// assert_eq!(listen.at(5).to_string(), "0.0.0.0:9005");
/// let one: HostPorts = "10.0.0.1:8080".parse()?;
/// assert_eq!((one.len(), one.at(5).to_string()), (1, "10.0.0.1:8080".into()));
/// let err = "0.0.0.0:9000-70000".parse::<HostPorts>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid address '0.0.0.0:9000-70000': the range 9000-70000 goes past port 65535");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPorts {
    /// The host and the first port (the only one without a range).
    pub first: HostPort,
    /// The ports when written as a range; `None` for one port.
    pub range: Option<PortRange>,
}

impl HostPorts {
    /// One port, no range.
    pub fn single(address: HostPort) -> HostPorts {
        HostPorts {
            first: address,
            range: None,
        }
    }

    /// How many ports: 1 without a range.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.range.map_or(1, |r| r.len())
    }

    /// The address of the port `offset` places into the range; the one port without a range.
    pub fn at(&self, offset: usize) -> HostPort {
        match self.range {
            Some(range) => HostPort {
                host: self.first.host.clone(),
                port: range.port(offset),
            },
            None => self.first.clone(),
        }
    }

    /// Reads `HOST:PORT` or `HOST:FIRST-LAST` (IPv6 in brackets); a single port may be a service
    /// name looked up in `services`, a range is two numbers. (`FromStr`, in `forwarder.rs`,
    /// passes /etc/services.)
    pub(crate) fn parse_with(text: &str, services: Services) -> Result<HostPorts, AddrError> {
        if text.starts_with(UNIX_PREFIX) {
            return HostPort::parse_with(text, services).map(HostPorts::single);
        }
        let (host, port) = split_host_port(text)?;
        let ports = port.strip_suffix("/tcp").unwrap_or(port);
        if !is_range(ports) {
            return HostPort::parse_with(text, services).map(HostPorts::single);
        }
        let host = parse_host(host).map_err(|e| addr_error(text, e.reason))?;
        let range = parse_range(ports).map_err(|why| addr_error(text, why))?;
        Ok(HostPorts {
            first: HostPort {
                host,
                port: range.first,
            },
            range: Some(range),
        })
    }

    /// Whether this member (an upstream or a backup) can go with the listen address `listen`: a
    /// range of the same length, or one port. The error is a lowercase phrase naming both.
    pub fn fits(&self, listen: &HostPorts) -> Result<(), String> {
        match (self.range, listen.range) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(format!(
                "upstream range {self} needs a listen range of {} ports (the listen address {listen} is one port)",
                self.len()
            )),
            (Some(_), Some(_)) if self.len() == listen.len() => Ok(()),
            (Some(_), Some(_)) => Err(format!(
                "upstream range {self} has {} ports but the listen range {listen} has {}: give a range of the same length, or one port for all",
                self.len(),
                listen.len()
            )),
        }
    }
}

impl fmt::Display for HostPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.range {
            None => self.first.fmt(f),
            Some(range) => {
                let first = self.first.to_string();
                let host = first.rsplit_once(':').map_or(first.as_str(), |(h, _)| h);
                write!(f, "{host}:{range}")
            }
        }
    }
}

/// Whether a port field is written as a range: digits, a dash, digits (either side may be
/// missing, to be refused with the reason). Service names with a dash (`netbios-ns`) are not.
fn is_range(text: &str) -> bool {
    text.split_once('-').is_some_and(|(a, b)| {
        (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit()) && !(a.is_empty() && b.is_empty())
    })
}

/// Reads `FIRST-LAST`; the error is the reason alone.
fn parse_range(text: &str) -> Result<PortRange, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, ""));
    if first.is_empty() || last.is_empty() {
        return Err(format!(
            "invalid port range '{}': expected FIRST-LAST, as in 9000-9099",
            printable(text)
        ));
    }
    match (first.parse::<u16>(), last.parse::<u16>()) {
        (Ok(first), Ok(last)) => PortRange::new(first, last),
        _ => Err(format!("the range {text} goes past port 65535")),
    }
}

/// `ip` with the ports of `range`, as an address is written: `10.0.0.1:9000-9099`,
/// `[::1]:9000-9099`.
pub(crate) fn ip_with_ports(ip: std::net::IpAddr, range: PortRange) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => format!("{ip}:{range}"),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{range}"),
    }
}

/// Why a rinetd-style port field that looks like a range is refused: rinetd has no ranges.
pub(crate) fn rinetd_range(text: &str) -> Option<String> {
    is_range(text).then(|| {
        format!(
            "invalid port '{}': rinetd lines take one port; write a range on a route line, as in 'route 0.0.0.0:9000-9099 10.0.0.1:9000-9099'",
            printable(text)
        )
    })
}

/// The range a listener was written with, shared by every listener of it: its listen range and
/// its routes' upstreams as written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenRange {
    /// The listen range, as written: its text (`0.0.0.0:9000-9099`) is each of its listeners'
    /// label.
    pub listen: HostPorts,
    /// For each route (by index), its upstreams then its backups as written.
    pub members: Vec<Vec<HostPorts>>,
}

impl ListenRange {
    /// The label of member `index` (upstreams then backups) of route `route`: its range as
    /// written, or `None` if the route has no such member.
    pub fn member(&self, route: usize, index: usize) -> Option<&HostPorts> {
        self.members.get(route)?.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(name: &str) -> Option<u16> {
        (name == "netbios-ns").then_some(137)
    }

    fn parse(text: &str) -> Result<HostPorts, String> {
        HostPorts::parse_with(text, services).map_err(|e| e.reason)
    }

    #[test]
    fn ranges_and_single_ports_read_and_print_as_written() {
        for text in [
            "0.0.0.0:9000-9099",
            "[::1]:1-4096",
            "app.example:65000-65535",
            "10.0.0.1:80",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(parse("10.0.0.1:9000-9000").unwrap().len(), 1);
        assert_eq!(parse("10.0.0.1:9000-9009/tcp").unwrap().len(), 10);
        assert_eq!(parse("10.0.0.1:netbios-ns").unwrap().first.port, 137);
    }

    #[test]
    fn a_bad_range_is_refused_with_its_reason() {
        let cases = [
            (
                "0.0.0.0:9100-9000",
                "the range 9100-9000 is reversed: write the lower port first",
            ),
            (
                "0.0.0.0:65000-65536",
                "the range 65000-65536 goes past port 65535",
            ),
            ("0.0.0.0:0-10", "port 0 cannot be part of a range"),
            (
                "0.0.0.0:9000-",
                "invalid port range '9000-': expected FIRST-LAST, as in 9000-9099",
            ),
            (
                "0.0.0.0:-9000",
                "invalid port range '-9000': expected FIRST-LAST, as in 9000-9099",
            ),
            (
                "0.0.0.0:1000-5096",
                "the range 1000-5096 has 4097 ports, more than 4096: split it over several lines",
            ),
        ];
        for (text, reason) in cases {
            assert_eq!(parse(text).unwrap_err(), reason, "{text}");
        }
        assert!(parse("0.0.0.0:1000-5095").is_ok());
        assert!(parse("bad host:1-2")
            .unwrap_err()
            .contains("not an IP address"));
    }

    #[test]
    fn an_upstream_range_must_match_the_listen_range_or_be_one_port() {
        let listen = parse("0.0.0.0:9000-9099").unwrap();
        assert!(parse("10.0.0.1:7000-7099").unwrap().fits(&listen).is_ok());
        assert!(parse("10.0.0.1:8080").unwrap().fits(&listen).is_ok());
        assert_eq!(
            parse("10.0.0.1:7000-7009").unwrap().fits(&listen).unwrap_err(),
            "upstream range 10.0.0.1:7000-7009 has 10 ports but the listen range 0.0.0.0:9000-9099 has 100: give a range of the same length, or one port for all"
        );
        let single = parse("0.0.0.0:9000").unwrap();
        assert!(parse("10.0.0.1:7000-7009")
            .unwrap()
            .fits(&single)
            .unwrap_err()
            .contains("needs a listen range of 10 ports"));
    }

    #[test]
    fn rinetd_ports_that_look_like_ranges_get_the_route_syntax() {
        assert!(rinetd_range("9000-9099")
            .unwrap()
            .contains("route 0.0.0.0:9000-9099"));
        assert_eq!(rinetd_range("9000"), None);
        assert_eq!(rinetd_range("netbios-ns"), None);
    }
}
