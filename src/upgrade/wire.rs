//! The hand-off's messages and their encoding: plain values in, bytes out, and back, with every
//! malformed input an error (never a panic). Each message is one packet of the channel, starting
//! with [`MAGIC`] and a kind byte; the two first messages carry the sender's [`VERSION`], so two
//! versions that cannot understand each other say so before anything moves.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The hand-off protocol's version. Raised whenever a message changes.
pub const VERSION: u32 = 3;

/// The oldest version an old process still hands off to (a new process of that version gets
/// everything but what later versions added: version 1 carries no upstream health, versions 1
/// and 2 no UDP listen sockets and no Unix socket's address).
pub const OLDEST_VERSION: u32 = 1;

/// The first version whose offer may carry UDP listen sockets ([`Role::Udp`]), and whose
/// addresses may be Unix sockets' ([`SocketName::Unix`]).
pub(crate) const UDP_SINCE: u32 = 3;

/// The first bytes of every message.
pub(crate) const MAGIC: &[u8; 4] = b"TRHO";

/// The most bytes a direction may carry (a copy buffer or a pipe, with room to spare).
pub(crate) const MAX_PENDING: usize = 256 * 1024;

/// One message of the hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// New to old, first: who it is and which version it speaks.
    Hello { version: u32, pid: u32 },
    /// Old to new: its version, the next connection id, and the listening sockets (attached, in
    /// this order: the TCP listeners, the UDP ones from version 3 on, the admin endpoint's).
    Offer {
        version: u32,
        next_id: u64,
        listeners: Vec<Offered>,
    },
    /// New to old: it has its listeners and configuration and can take the connections.
    Ready,
    /// Either way: cannot go on, and why.
    Refuse { reason: String },
    /// Old to new: one connection; its client and upstream sockets are attached, in this order.
    Conn(Box<ConnState>),
    /// Old to new: one connection still choosing its route; its client socket is attached.
    Setup(Box<SetupState>),
    /// Old to new (version 2 on), before the connections: what it knows of one upstream's
    /// members.
    Health(Box<HealthState>),
    /// Old to new: that was every connection; start.
    Commit { connections: u32 },
    /// New to old: started; the old process must not touch anything it handed over.
    Started,
}

/// What a listening socket was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A listener of the configuration.
    Listener,
    /// The admin endpoint.
    Admin,
    /// A UDP listener of the configuration (version 3 on).
    Udp,
}

/// A listening socket offered, by its role and bound address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offered {
    pub(crate) role: Role,
    pub(crate) addr: SocketName,
    /// Handed in already bound (by the service manager) rather than bound by tcp-router: the
    /// new process keeps it whatever a reload says, as the old one did.
    pub(crate) handed_in: bool,
}

/// A connection's state, as the new process needs it to carry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnState {
    pub(crate) id: u64,
    /// The client socket's peer (a Unix socket's, usually unnamed: the new process asks the
    /// socket for its credentials).
    pub(crate) peer: SocketName,
    /// The client as tcp-router acts on it (after a PROXY header).
    pub(crate) client: SocketName,
    /// The bound address of the listener that accepted it.
    pub(crate) listener: SocketName,
    /// That listener's address as configured (its metrics label), for a connection whose
    /// listener a reload removed.
    pub(crate) listen: String,
    /// Its route's label, when its listener has several.
    pub(crate) route: Option<String>,
    /// The upstream as configured and as connected.
    pub(crate) upstream_name: String,
    pub(crate) upstream_addr: SocketName,
    /// What the client asked for (`sni=…`, `host=…`), for the log line.
    pub(crate) name: Option<String>,
    pub(crate) elapsed_ms: u64,
    pub(crate) activity_ms: u64,
    pub(crate) half_closed_ms: Option<u64>,
    /// Bytes moved each way, client to upstream first (peeked bytes included).
    pub(crate) traffic: [u64; 2],
    pub(crate) idle_timeout_ms: Option<u64>,
    pub(crate) fin_timeout_ms: Option<u64>,
    /// Each direction, client to upstream first.
    pub(crate) directions: [DirectionState; 2],
}

/// A connection that had not chosen its route yet: the new process serves it from the start,
/// reading first what the old one had read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetupState {
    pub(crate) id: u64,
    /// The client socket's peer.
    pub(crate) peer: SocketName,
    /// The bound address of the listener that accepted it.
    pub(crate) listener: SocketName,
    pub(crate) elapsed_ms: u64,
    /// The client's bytes read so far (a PROXY header included).
    pub(crate) read: Vec<u8>,
}

/// What the old process knows of one upstream of one route: its members' states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthState {
    /// The listener as configured (its metrics label).
    pub(crate) listen: String,
    /// The route's label.
    pub(crate) route: String,
    /// The upstream as written.
    pub(crate) upstream: String,
    /// Its members.
    pub(crate) members: Vec<MemberState>,
}

/// A socket's address as the hand-off carries it: an IP address and port, or (version 3 on) a
/// Unix-domain socket's `sun_path` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketName {
    Ip(SocketAddr),
    Unix(Vec<u8>),
}

/// A Unix socket's name in an address: its family byte (beside 4 and 6).
const UNIX_FAMILY: u8 = 1;

/// The longest `sun_path` a Unix socket's name may have.
const MAX_SUN_PATH: usize = 108;

/// One member's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberState {
    pub(crate) addr: SocketName,
    /// 0 unknown, 1 up, 2 down, 3 cooling.
    pub(crate) condition: u8,
    /// When it entered that state, in nanoseconds since the Unix epoch.
    pub(crate) since_ns: u64,
    pub(crate) successes: u32,
    pub(crate) failures: u32,
    pub(crate) connect_failures: u32,
    /// How long a cooling member is still skipped.
    pub(crate) cooling_left_ms: Option<u64>,
    /// The last check: when (ns since the Unix epoch), how long it took (ms), and why it failed
    /// if it did.
    pub(crate) last_check: Option<(u64, u64, Option<String>)>,
}

/// Where one direction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirectionState {
    /// Running; these bytes were read and not yet written, and go first.
    Open { pending: Vec<u8> },
    /// Disposition, this way (the relay's end code), this long after the start.
    Disposition { end: u8, ms: u64 },
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed hand-off message: {}", self.0)
    }
}

const HELLO: u8 = 1;
const OFFER: u8 = 2;
const READY: u8 = 3;
const REFUSE: u8 = 4;
const CONN: u8 = 5;
const COMMIT: u8 = 6;
const STARTED: u8 = 7;
const SETUP: u8 = 8;
const HEALTH: u8 = 9;

/// The most members one upstream's health message may carry.
const MAX_MEMBERS: usize = 1024;

impl Message {
    /// The message as bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = WireWriter(MAGIC.to_vec());
        match self {
            Message::Hello { version, pid } => {
                out.u8(HELLO);
                out.u32(*version);
                out.u32(*pid);
            }
            Message::Offer {
                version,
                next_id,
                listeners,
            } => {
                out.u8(OFFER);
                out.u32(*version);
                out.u64(*next_id);
                out.u32(listeners.len() as u32);
                for offered in listeners {
                    out.u8(match offered.role {
                        Role::Listener => 0,
                        Role::Admin => 1,
                        Role::Udp => 2,
                    });
                    out.u8(u8::from(offered.handed_in));
                    out.name(&offered.addr);
                }
            }
            Message::Ready => out.u8(READY),
            Message::Refuse { reason } => {
                out.u8(REFUSE);
                out.bytes(clip(reason, MAX_TEXT).as_bytes());
            }
            Message::Conn(state) => {
                out.u8(CONN);
                out.conn(state);
            }
            Message::Setup(state) => {
                out.u8(SETUP);
                out.u64(state.id);
                out.name(&state.peer);
                out.name(&state.listener);
                out.u64(state.elapsed_ms);
                out.bytes(&state.read);
            }
            Message::Health(state) => {
                out.u8(HEALTH);
                out.health(state);
            }
            Message::Commit { connections } => {
                out.u8(COMMIT);
                out.u32(*connections);
            }
            Message::Started => out.u8(STARTED),
        }
        out.0
    }

    /// Reads one message; anything else than exactly one well-formed message is an error.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
        let mut r = WireReader(bytes);
        if r.take(4)? != MAGIC {
            return Err(Malformed("not a hand-off message"));
        }
        let message = match r.u8()? {
            HELLO => Message::Hello {
                version: r.u32()?,
                pid: r.u32()?,
            },
            OFFER => {
                let version = r.u32()?;
                if version != VERSION {
                    // Nothing after the version is ours to read.
                    return Ok(Message::Offer {
                        version,
                        next_id: 0,
                        listeners: Vec::new(),
                    });
                }
                let next_id = r.u64()?;
                let count = r.u32()? as usize;
                if count > crate::sys::fd_pass::MAX_FDS {
                    return Err(Malformed("too many listeners"));
                }
                let mut listeners = Vec::with_capacity(count);
                for _ in 0..count {
                    let role = match r.u8()? {
                        0 => Role::Listener,
                        1 => Role::Admin,
                        2 => Role::Udp,
                        _ => return Err(Malformed("unknown socket role")),
                    };
                    let handed_in = r.flag()?;
                    listeners.push(Offered {
                        role,
                        addr: r.name()?,
                        handed_in,
                    });
                }
                Message::Offer {
                    version,
                    next_id,
                    listeners,
                }
            }
            READY => Message::Ready,
            REFUSE => Message::Refuse {
                reason: r.string()?,
            },
            CONN => Message::Conn(Box::new(r.conn()?)),
            SETUP => Message::Setup(Box::new(SetupState {
                id: r.u64()?,
                peer: r.name()?,
                listener: r.name()?,
                elapsed_ms: r.u64()?,
                read: r.bytes(MAX_PENDING)?.to_vec(),
            })),
            HEALTH => Message::Health(Box::new(r.health()?)),
            COMMIT => Message::Commit {
                connections: r.u32()?,
            },
            STARTED => Message::Started,
            _ => return Err(Malformed("unknown message kind")),
        };
        if !r.0.is_empty() {
            return Err(Malformed("bytes after the message"));
        }
        Ok(message)
    }

    /// The message's name, for errors: "expected Ready, got Conn".
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Offer { .. } => "offer",
            Message::Ready => "ready",
            Message::Refuse { .. } => "refusal",
            Message::Conn(_) => "connection",
            Message::Setup(_) => "connection setting up",
            Message::Health(_) => "upstream health",
            Message::Commit { .. } => "commit",
            Message::Started => "started",
        }
    }
}

/// For the fuzz target `handoff_wire`, not an API (built only under `cfg(fuzzing)`, as `cargo
/// fuzz` builds): decodes `bytes` and, if they are a message, asserts that it encodes to bytes
/// that decode to it again. True if `bytes` were a message; a panic is a bug.
#[cfg(any(test, fuzzing))]
#[cfg_attr(
    test,
    allow(unreachable_pub, reason = "public for the fuzz target only")
)]
pub fn decode_round_trip(bytes: &[u8]) -> bool {
    let Ok(message) = Message::decode(bytes) else {
        return false;
    };
    let again = Message::decode(&message.encode());
    assert_eq!(
        again.as_ref(),
        Ok(&message),
        "the {} does not read back as written",
        message.name()
    );
    true
}

/// The longest text field a message may carry.
const MAX_TEXT: usize = 4096;

/// `text` cut to at most `max` bytes, at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

struct WireWriter(Vec<u8>);

impl WireWriter {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.bytes(v.as_bytes());
            }
            None => self.u8(0),
        }
    }
    fn addr(&mut self, addr: SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.0.extend_from_slice(&addr.port().to_be_bytes());
    }
    fn name(&mut self, name: &SocketName) {
        match name {
            SocketName::Ip(addr) => self.addr(*addr),
            SocketName::Unix(path) => {
                self.u8(UNIX_FAMILY);
                self.bytes(&path[..path.len().min(MAX_SUN_PATH)]);
            }
        }
    }
    fn health(&mut self, h: &HealthState) {
        self.bytes(clip(&h.listen, MAX_TEXT).as_bytes());
        self.bytes(clip(&h.route, MAX_TEXT).as_bytes());
        self.bytes(clip(&h.upstream, MAX_TEXT).as_bytes());
        let members = &h.members[..h.members.len().min(MAX_MEMBERS)];
        self.u32(members.len() as u32);
        for m in members {
            self.name(&m.addr);
            self.u8(m.condition);
            self.u64(m.since_ns);
            self.u32(m.successes);
            self.u32(m.failures);
            self.u32(m.connect_failures);
            self.opt_u64(m.cooling_left_ms);
            match &m.last_check {
                None => self.u8(0),
                Some((at, took, failure)) => {
                    self.u8(1);
                    self.u64(*at);
                    self.u64(*took);
                    self.opt_str(failure.as_deref().map(|why| clip(why, MAX_TEXT)));
                }
            }
        }
    }
    fn conn(&mut self, c: &ConnState) {
        self.u64(c.id);
        self.name(&c.peer);
        self.name(&c.client);
        self.name(&c.listener);
        self.bytes(c.listen.as_bytes());
        self.opt_str(c.route.as_deref());
        self.bytes(c.upstream_name.as_bytes());
        self.name(&c.upstream_addr);
        self.opt_str(c.name.as_deref());
        self.u64(c.elapsed_ms);
        self.u64(c.activity_ms);
        self.opt_u64(c.half_closed_ms);
        self.u64(c.traffic[0]);
        self.u64(c.traffic[1]);
        self.opt_u64(c.idle_timeout_ms);
        self.opt_u64(c.fin_timeout_ms);
        for direction in &c.directions {
            match direction {
                DirectionState::Open { pending } => {
                    self.u8(0);
                    self.bytes(pending);
                }
                DirectionState::Disposition { end, ms } => {
                    self.u8(1);
                    self.u8(*end);
                    self.u64(*ms);
                }
            }
        }
    }
}

struct WireReader<'a>(&'a [u8]);

impl<'a> WireReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("message cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn flag(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("bad option flag")),
        }
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, Malformed> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(Malformed("field too long"));
        }
        self.take(len)
    }
    fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes(MAX_TEXT)?.to_vec()).map_err(|_| Malformed("text not UTF-8"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, Malformed> {
        Ok(if self.flag()? {
            Some(self.string()?)
        } else {
            None
        })
    }
    fn addr(&mut self) -> Result<SocketAddr, Malformed> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(Malformed("bad address family")),
        };
        let port = u16::from_be_bytes(self.array()?);
        Ok(SocketAddr::new(ip, port))
    }
    fn name(&mut self) -> Result<SocketName, Malformed> {
        if self.0.first() == Some(&UNIX_FAMILY) {
            self.u8()?;
            return Ok(SocketName::Unix(self.bytes(MAX_SUN_PATH)?.to_vec()));
        }
        self.addr().map(SocketName::Ip)
    }
    fn direction(&mut self) -> Result<DirectionState, Malformed> {
        Ok(match self.u8()? {
            0 => DirectionState::Open {
                pending: self.bytes(MAX_PENDING)?.to_vec(),
            },
            1 => DirectionState::Disposition {
                end: self.u8()?,
                ms: self.u64()?,
            },
            _ => return Err(Malformed("bad direction state")),
        })
    }
    fn health(&mut self) -> Result<HealthState, Malformed> {
        let listen = self.string()?;
        let route = self.string()?;
        let upstream = self.string()?;
        let count = self.u32()? as usize;
        if count > MAX_MEMBERS {
            return Err(Malformed("too many members"));
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let addr = self.name()?;
            let condition = self.u8()?;
            if condition > 3 {
                return Err(Malformed("unknown member condition"));
            }
            members.push(MemberState {
                addr,
                condition,
                since_ns: self.u64()?,
                successes: self.u32()?,
                failures: self.u32()?,
                connect_failures: self.u32()?,
                cooling_left_ms: self.opt_u64()?,
                last_check: match self.flag()? {
                    false => None,
                    true => Some((self.u64()?, self.u64()?, self.opt_string()?)),
                },
            });
        }
        Ok(HealthState {
            listen,
            route,
            upstream,
            members,
        })
    }
    fn conn(&mut self) -> Result<ConnState, Malformed> {
        Ok(ConnState {
            id: self.u64()?,
            peer: self.name()?,
            client: self.name()?,
            listener: self.name()?,
            listen: self.string()?,
            route: self.opt_string()?,
            upstream_name: self.string()?,
            upstream_addr: self.name()?,
            name: self.opt_string()?,
            elapsed_ms: self.u64()?,
            activity_ms: self.u64()?,
            half_closed_ms: self.opt_u64()?,
            traffic: [self.u64()?, self.u64()?],
            idle_timeout_ms: self.opt_u64()?,
            fin_timeout_ms: self.opt_u64()?,
            directions: [self.direction()?, self.direction()?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> SocketName {
        SocketName::Ip(text.parse().unwrap())
    }
    use crate::test_support::XorShift as Rng;

    fn conn_state(rng: &mut Rng) -> ConnState {
        let pending: Vec<u8> = (0..rng.below(3000)).map(|_| rng.byte()).collect();
        ConnState {
            id: rng.next_u64(),
            peer: ip("127.0.0.1:40000"),
            client: ip("[::1]:40001"),
            listener: match rng.below(2) {
                0 => SocketName::Unix(b"/run/tcp-router/api.sock".to_vec()),
                _ => ip("127.0.0.1:11000"),
            },
            listen: "localhost:11000".into(),
            route: (rng.below(2) == 0).then(|| "sni=a.example".to_string()),
            upstream_name: "localhost:6379".into(),
            upstream_addr: match rng.below(3) {
                0 => SocketName::Unix(b"/run/redis/redis.sock".to_vec()),
                1 => SocketName::Unix(b"\0redis".to_vec()),
                _ => SocketName::Ip("127.0.0.1:6379".parse().unwrap()),
            },
            name: Some("sni=a.example match=exact".into()),
            elapsed_ms: rng.next_u64(),
            activity_ms: rng.next_u64(),
            half_closed_ms: (rng.below(2) == 0).then(|| rng.next_u64()),
            traffic: [rng.next_u64(), rng.next_u64()],
            idle_timeout_ms: None,
            fin_timeout_ms: Some(300_000),
            directions: [
                DirectionState::Open { pending },
                DirectionState::Disposition { end: 1, ms: 42 },
            ],
        }
    }

    fn every_kind(rng: &mut Rng) -> Vec<Message> {
        vec![
            Message::Hello {
                version: VERSION,
                pid: 4242,
            },
            Message::Offer {
                version: VERSION,
                next_id: 17,
                listeners: vec![
                    Offered {
                        role: Role::Listener,
                        addr: ip("0.0.0.0:11000"),
                        handed_in: true,
                    },
                    Offered {
                        role: Role::Udp,
                        addr: ip("127.0.0.1:5353"),
                        handed_in: false,
                    },
                    Offered {
                        role: Role::Admin,
                        addr: SocketName::Unix(b"\0tcp-router".to_vec()),
                        handed_in: false,
                    },
                ],
            },
            Message::Ready,
            Message::Refuse {
                reason: "bad config".into(),
            },
            Message::Conn(Box::new(conn_state(rng))),
            Message::Setup(Box::new(SetupState {
                id: 9,
                peer: SocketName::Unix(Vec::new()),
                listener: ip("127.0.0.1:443"),
                elapsed_ms: 1500,
                read: b"\x16\x03\x01\x00".to_vec(),
            })),
            Message::Health(Box::new(HealthState {
                listen: "0.0.0.0:6379".into(),
                route: "default".into(),
                upstream: "db.example:6379".into(),
                members: vec![
                    MemberState {
                        addr: SocketName::Ip("10.0.0.2:6379".parse().unwrap()),
                        condition: 2,
                        since_ns: rng.next_u64(),
                        successes: 0,
                        failures: 3,
                        connect_failures: 1,
                        cooling_left_ms: None,
                        last_check: Some((rng.next_u64(), 12, Some("expected 'master'".into()))),
                    },
                    MemberState {
                        addr: SocketName::Unix(b"/run/redis/redis.sock".to_vec()),
                        condition: 3,
                        since_ns: 5,
                        successes: 2,
                        failures: 0,
                        connect_failures: 0,
                        cooling_left_ms: Some(rng.next_u64()),
                        last_check: Some((7, 12, None)),
                    },
                ],
            })),
            Message::Commit { connections: 3 },
            Message::Started,
        ]
    }

    #[test]
    fn every_message_reads_back_as_written() {
        let mut rng = Rng::new(12);
        for _ in 0..50 {
            for message in every_kind(&mut rng) {
                let bytes = message.encode();
                assert_eq!(Message::decode(&bytes), Ok(message));
            }
        }
    }

    #[test]
    fn the_fuzz_targets_check_passes_for_every_kind_and_refuses_garbage() {
        let mut rng = Rng::new(15);
        for message in every_kind(&mut rng) {
            assert!(decode_round_trip(&message.encode()), "{message:?}");
        }
        assert!(!decode_round_trip(b""));
        assert!(!decode_round_trip(b"TRHO\xff"));
    }

    #[test]
    fn every_cut_or_extended_message_is_an_error_not_a_panic() {
        let mut rng = Rng::new(13);
        for message in every_kind(&mut rng) {
            let bytes = message.encode();
            for len in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..len]).is_err(),
                    "{message:?} cut at {len}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Message::decode(&longer).is_err());
        }
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic() {
        let mut rng = Rng::new(14);
        for _ in 0..20_000 {
            let mut bytes = MAGIC.to_vec();
            bytes.extend((0..rng.below(80)).map(|_| rng.byte()));
            let _ = Message::decode(&bytes);
        }
    }

    #[test]
    fn a_long_reason_arrives_cut_at_a_character_not_refused() {
        let reason = "é".repeat(3000);
        let bytes = Message::Refuse { reason }.encode();
        match Message::decode(&bytes) {
            Ok(Message::Refuse { reason }) => {
                assert!(reason.len() <= MAX_TEXT && reason.len() > MAX_TEXT - 2);
                assert!(reason.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_offer_of_another_version_still_reads_its_version() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(OFFER);
        bytes.extend_from_slice(&999u32.to_be_bytes());
        bytes.extend_from_slice(b"whatever a later version sends");
        match Message::decode(&bytes) {
            Ok(Message::Offer { version, .. }) => assert_eq!(version, 999),
            other => panic!("{other:?}"),
        }
    }
}
