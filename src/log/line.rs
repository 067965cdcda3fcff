//! The one line logged per connection: who, where to, how many bytes each way, and how it ended.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Endpoint, HostPort};
use crate::relay::Outcome;
use crate::sys::unix::Peer;

/// The per-connection log line: a view of the connection's record at its end.
#[derive(Debug, Clone)]
pub(crate) struct Line<'a> {
    /// Connection sequence number.
    pub(crate) id: u64,
    /// The client: its address, or a local process's credentials.
    pub(crate) client: Peer,
    /// The listener that accepted it.
    pub(crate) listener: Endpoint,
    /// The upstream used, as configured and as resolved, if any.
    pub(crate) upstream: Option<(&'a HostPort, &'a Endpoint)>,
    /// The route taken (its label), when the listener has several.
    pub(crate) route: Option<String>,
    /// What the client asked for, when read: `sni=NAME`, `host=NAME`, with how it matched.
    pub(crate) name: Option<&'a str>,
    /// Bytes moved each way, client to upstream first.
    pub(crate) bytes: [u64; 2],
    /// Time from accept to close.
    pub(crate) duration: Duration,
    /// How the relay went, or why there was none.
    pub(crate) result: Result<&'a Outcome, &'a str>,
    /// Why tcp-router reset a relayed connection (`upstream-down`), if it did.
    pub(crate) reset_because: Option<&'a str>,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closed #{} client={} listener={} upstream=",
            self.id, self.client, self.listener
        )?;
        match &self.upstream {
            Some((name, addr)) => write_upstream(f, name, addr)?,
            None => f.write_str("none")?,
        }
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        if let Some(route) = &self.route {
            write!(f, " route={route}")?;
        }
        match &self.result {
            Ok(outcome) => write!(
                f,
                " sent={} received={} duration={} first={} client_to_upstream={} upstream_to_client={}",
                self.bytes[0],
                self.bytes[1],
                Seconds(self.duration),
                first_to_end(outcome),
                outcome.sent.end,
                outcome.received.end,
            )
            .and_then(|()| match self.reset_because {
                Some(why) => write!(f, " result={why}"),
                None => Ok(()),
            }),
            Err(reason) => write!(
                f,
                " sent=0 received=0 duration={} result={reason}",
                Seconds(self.duration)
            ),
        }
    }
}

/// The line logged at a UDP flow's end, in the TCP line's words: who, where to, bytes each way
/// (and datagrams), how long, and why it ended (`idle`, `evicted`, `stopped`, `error`).
#[derive(Debug, Clone)]
pub(crate) struct FlowLine<'a> {
    /// The flow's sequence number on its listener.
    pub(crate) id: u64,
    /// The client's address.
    pub(crate) client: SocketAddr,
    /// The UDP listener's bound address.
    pub(crate) listener: SocketAddr,
    /// The upstream, as configured and as resolved.
    pub(crate) upstream: (&'a HostPort, SocketAddr),
    /// Datagrams relayed each way, client to upstream first.
    pub(crate) datagrams: [u64; 2],
    /// Their bytes, client to upstream first.
    pub(crate) bytes: [u64; 2],
    /// Time from the first datagram to the end.
    pub(crate) duration: Duration,
    /// Why it ended.
    pub(crate) result: &'a str,
}

impl fmt::Display for FlowLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closed udp flow #{} client={} listener={}/udp upstream=",
            self.id, self.client, self.listener
        )?;
        write_upstream(f, self.upstream.0, &self.upstream.1)?;
        write!(
            f,
            " sent={} received={} datagrams_sent={} datagrams_received={} duration={} result={}",
            self.bytes[0],
            self.bytes[1],
            self.datagrams[0],
            self.datagrams[1],
            Seconds(self.duration),
            self.result
        )
    }
}

/// An upstream as configured, with the address it resolved to when that differs: `name(addr)`.
fn write_upstream(
    f: &mut fmt::Formatter<'_>,
    name: &HostPort,
    addr: &dyn fmt::Display,
) -> fmt::Result {
    if name.to_string() != addr.to_string() {
        write!(f, "{name}({addr})")
    } else {
        write!(f, "{addr}")
    }
}

/// A duration as seconds with three decimals (`1.500s`), rounded to the millisecond. Integer
/// arithmetic rather than `{:.3}` of an f64, the deepest code a log line would run (see "One
/// stack page per idle thread" in the relay's module doc).
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = (self.0.as_micros() + 500) / 1000;
        write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// Which side's direction ended first: `client` if the client stopped sending (or failed) first.
fn first_to_end(outcome: &Outcome) -> &'static str {
    if outcome.client_ended_first() {
        "client"
    } else {
        "upstream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{End, Flow};

    #[test]
    fn line_names_every_field() {
        let flow = |end, ms| Flow {
            end,
            ended: Duration::from_millis(ms),
        };
        let outcome = Outcome {
            sent: flow(End::Eof, 10),
            received: flow(End::Reset, 20),
        };
        let upstream: HostPort = "localhost:6379".parse().unwrap();
        let resolved: Endpoint = "127.0.0.1:6379".parse().unwrap();
        let line = Line {
            id: 7,
            client: Peer::Ip("127.0.0.1:40000".parse().unwrap()),
            listener: "127.0.0.1:11000".parse().unwrap(),
            upstream: Some((&upstream, &resolved)),
            route: None,
            name: None,
            bytes: [14, 7],
            duration: Duration::from_millis(1500),
            result: Ok(&outcome),
            reset_because: None,
        };
        assert_eq!(
            line.to_string(),
            "closed #7 client=127.0.0.1:40000 listener=127.0.0.1:11000 \
             upstream=localhost:6379(127.0.0.1:6379) sent=14 received=7 duration=1.500s \
             first=client client_to_upstream=eof upstream_to_client=reset"
        );
    }

    #[test]
    fn a_flow_line_names_every_field() {
        let upstream: HostPort = "127.0.0.1:53".parse().unwrap();
        let line = FlowLine {
            id: 3,
            client: "127.0.0.1:40000".parse().unwrap(),
            listener: "127.0.0.1:5353".parse().unwrap(),
            upstream: (&upstream, "127.0.0.1:53".parse().unwrap()),
            datagrams: [2, 1],
            bytes: [80, 120],
            duration: Duration::from_millis(72_000),
            result: "idle",
        };
        assert_eq!(
            line.to_string(),
            "closed udp flow #3 client=127.0.0.1:40000 listener=127.0.0.1:5353/udp \
             upstream=127.0.0.1:53 sent=80 received=120 datagrams_sent=2 datagrams_received=1 \
             duration=72.000s result=idle"
        );
    }

    #[test]
    fn seconds_are_rounded_to_the_millisecond() {
        for (micros, text) in [
            (0, "0.000s"),
            (499, "0.000s"),
            (500, "0.001s"),
            (6_400, "0.006s"),
            (1_500_000, "1.500s"),
            (61_999_600, "62.000s"),
        ] {
            assert_eq!(Seconds(Duration::from_micros(micros)).to_string(), text);
        }
    }
}
