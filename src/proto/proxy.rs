//! The haproxy PROXY protocol, versions 1 (text) and 2 (binary), for TCP
//! over IPv4 and IPv6: writing a header in front of an upstream connection
//! and reading one at the start of an accepted connection.
//!
//! Follows haproxy's `doc/proxy-protocol.txt` (2020/03/05). Choices made
//! where the spec leaves room:
//! - v1: the line must end in CRLF within 107 bytes; a lone CR or LF is
//!   `Malformed`. Fields are separated by exactly one space. IPv4 octets and
//!   ports must not have leading zeros. IPv6 text is what `inet_pton`
//!   accepts (hex groups, one `::`, optionally a dotted IPv4 tail, as
//!   haproxy's own `inet_ntop` emits for mapped addresses), without zone.
//!   `UNKNOWN` must be followed by CRLF or a space; the rest of its line is
//!   ignored. The family of both addresses must match `TCP4`/`TCP6`.
//! - v2: a signature followed by a version other than 2 is `Malformed`, not
//!   `NotProxy`. For LOCAL the family byte and the address block are ignored.
//!   For PROXY, families above AF_UNIX or protocols above DGRAM are
//!   `Malformed`; TCP over IPv4/IPv6 needs an address block of at least 12 or
//!   36 bytes; every other valid combination gives `Unknown`. Bytes after
//!   the addresses (TLVs) are skipped unread, whatever their length.
//! - Errors are reported as soon as the bytes seen so far cannot start a
//!   valid header.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::cursor::{Parsed, Reader};

/// The 12-byte v2 signature (section 2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2 in the high nibble of the 13th byte.
const V2_VERSION: u8 = 0x2;

/// v2 command LOCAL: health checks and other connections made by the proxy.
const V2_CMD_LOCAL: u8 = 0x0;

/// v2 command PROXY: the connection is relayed for a client.
const V2_CMD_PROXY: u8 = 0x1;

/// v2 family/protocol byte for TCP over IPv4.
const V2_TCP4: u8 = 0x11;

/// v2 family/protocol byte for TCP over IPv6.
const V2_TCP6: u8 = 0x21;

/// Highest v2 address family defined (AF_UNIX).
const V2_MAX_FAMILY: u8 = 0x3;

/// Highest v2 transport protocol defined (DGRAM).
const V2_MAX_PROTOCOL: u8 = 0x2;

/// Fixed part of a v2 header: signature, version/command, family, length.
const V2_HEADER_LEN: usize = 16;

/// Address block length for TCP over IPv4: two addresses and two ports.
const V2_TCP4_LEN: u16 = 2 * 4 + 2 * 2;

/// Address block length for TCP over IPv6.
const V2_TCP6_LEN: u16 = 2 * 16 + 2 * 2;

/// The v1 line starts with these bytes.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Longest v1 line including CRLF (section 2.1, the UNKNOWN worst case).
const V1_MAX_LEN: usize = 107;

/// Which PROXY protocol version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The human-readable text line.
    V1,
    /// The binary header.
    V2,
}

/// Error for a string that names no PROXY protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseVersionError {
    /// The text that names no version, as given.
    pub value: String,
}

impl fmt::Display for ParseVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown PROXY protocol version {:?} (expected \"v1\" or \"v2\")",
            self.value
        )
    }
}

impl std::error::Error for ParseVersionError {}

impl FromStr for Version {
    type Err = ParseVersionError;

    /// Accepts exactly `v1` or `v2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            _ => Err(ParseVersionError {
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// A PROXY protocol header read from a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// v2 LOCAL: the proxy itself made the connection (a health check); use
    /// the real connection endpoints.
    Local,
    /// v1 UNKNOWN, or a v2 PROXY header for something other than TCP over
    /// IPv4/IPv6 (AF_UNSPEC, AF_UNIX, UDP); use the real endpoints.
    Unknown,
    /// A relayed TCP connection: the client's address and the address it
    /// connected to.
    Tcp {
        /// The original client.
        src: SocketAddr,
        /// The address the client connected to.
        dst: SocketAddr,
    },
}

/// Why the start of a connection is not a valid PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The bytes start neither `PROXY` nor the v2 signature.
    NotProxy,
    /// A v1 line or v2 header that breaks the spec; the text says where.
    Malformed(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol header"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Builds the header announcing a relayed TCP connection from `src` to `dst`.
///
/// Both protocol versions carry one address family for both ends, so when
/// the families differ the IPv4 address is sent as an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`). No v2 TLVs are added.
///
/// ```
/// use tcp_router::proto::proxy::{encode, parse, ProxyHeader, Version};
/// use tcp_router::proto::Parsed;
///
/// let (src, dst) = ("192.0.2.7:40000".parse().unwrap(), "198.51.100.1:443".parse().unwrap());
/// let v1 = encode(Version::V1, src, dst);
/// assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n");
/// let v2 = encode(Version::V2, src, dst);
/// assert_eq!(parse(&v2), Ok(Parsed::Complete((ProxyHeader::Tcp { src, dst }, v2.len()))));
/// ```
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let addrs = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => AddrPair::V4(s, d),
        (s, d) => AddrPair::V6(mapped(s), mapped(d)),
    };
    match version {
        Version::V1 => encode_v1(&addrs, src.port(), dst.port()),
        Version::V2 => encode_v2(&addrs, src.port(), dst.port()),
    }
}

/// Builds the header a connection the proxy makes for itself starts with (a health check): v2
/// LOCAL, or v1 `PROXY UNKNOWN`. The receiver then uses the connection's own endpoints.
///
/// ```
/// use tcp_router::proto::proxy::{encode_local, Version};
///
/// assert_eq!(encode_local(Version::V1), b"PROXY UNKNOWN\r\n");
/// assert_eq!(encode_local(Version::V2).len(), 16);
/// ```
pub fn encode_local(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            // AF_UNSPEC, no address block.
            out.extend_from_slice(&[V2_VERSION << 4 | V2_CMD_LOCAL, 0x00, 0x00, 0x00]);
            out
        }
    }
}

/// `AF_UNIX` stream, v2's family and protocol byte for Unix-domain sockets.
const V2_UNIX_STREAM: u8 = 0x31;

/// Each of v2's `AF_UNIX` addresses: a `sun_path`, padded with NUL bytes.
const V2_UNIX_PATH: usize = 108;

/// Builds the header for a connection between Unix-domain sockets: v2 `AF_UNIX` with both
/// `sun_path`s (at most 108 bytes each: an abstract name starts with a NUL byte, an unnamed
/// client's is empty), v1 `PROXY UNKNOWN` (v1 has no Unix addresses).
///
/// ```
/// use tcp_router::proto::proxy::{encode_unix, Version};
///
/// assert_eq!(encode_unix(Version::V1, b"", b"/run/app.sock"), b"PROXY UNKNOWN\r\n");
/// let v2 = encode_unix(Version::V2, b"", b"/run/app.sock");
/// assert_eq!(&v2[12..16], &[0x21, 0x31, 0x00, 216]);
/// assert_eq!(&v2[16 + 108..16 + 108 + 13], b"/run/app.sock");
/// ```
pub fn encode_unix(version: Version, src: &[u8], dst: &[u8]) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.push(V2_VERSION << 4 | V2_CMD_PROXY);
            out.push(V2_UNIX_STREAM);
            out.extend_from_slice(&(2 * V2_UNIX_PATH as u16).to_be_bytes());
            for path in [src, dst] {
                let path = &path[..path.len().min(V2_UNIX_PATH)];
                out.extend_from_slice(path);
                out.resize(out.len() + V2_UNIX_PATH - path.len(), 0);
            }
            out
        }
    }
}

/// Builds the header for a connection whose two ends are not of one family (a client named by
/// an accepted PROXY header, on a Unix listener): v2 with `AF_UNSPEC` and no addresses, v1
/// `PROXY UNKNOWN`; the receiver then knows the connection was proxied but not from where.
///
/// ```
/// use tcp_router::proto::proxy::{encode_unspecified, Version};
///
/// assert_eq!(encode_unspecified(Version::V1), b"PROXY UNKNOWN\r\n");
/// assert_eq!(&encode_unspecified(Version::V2)[12..16], &[0x21, 0x00, 0x00, 0x00]);
/// ```
pub fn encode_unspecified(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.extend_from_slice(&[V2_VERSION << 4 | V2_CMD_PROXY, 0x00, 0x00, 0x00]);
            out
        }
    }
}

/// Both addresses of a header, in one family.
enum AddrPair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// The IPv6 form of an address (IPv4-mapped for IPv4).
fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn encode_v1(addrs: &AddrPair, src_port: u16, dst_port: u16) -> Vec<u8> {
    let line = match addrs {
        AddrPair::V4(s, d) => format!("PROXY TCP4 {s} {d} {src_port} {dst_port}\r\n"),
        AddrPair::V6(s, d) => format!(
            "PROXY TCP6 {} {} {src_port} {dst_port}\r\n",
            v6_hex(s),
            v6_hex(d)
        ),
    };
    line.into_bytes()
}

/// Formats an IPv6 address as hex groups with the longest run of two or
/// more zero groups compressed to `::` (RFC 5952), but never with the dotted
/// IPv4 tail that `Ipv6Addr`'s `Display` uses for mapped addresses, because
/// the v1 spec asks for hexadecimal groups only.
fn v6_hex(addr: &Ipv6Addr) -> String {
    let groups = addr.segments();
    // (start, len) of the longest zero run; the first wins a tie.
    let mut best = (0, 0);
    let mut start = 0;
    for (i, &g) in groups.iter().enumerate() {
        if g != 0 {
            start = i + 1;
        } else if i + 1 - start > best.1 {
            best = (start, i + 1 - start);
        }
    }
    let hex = |part: &[u16]| {
        part.iter()
            .map(|g| format!("{g:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return hex(&groups);
    }
    let head = groups.get(..best.0).unwrap_or(&[]);
    let tail = groups.get(best.0 + best.1..).unwrap_or(&[]);
    format!("{}::{}", hex(head), hex(tail))
}

fn encode_v2(addrs: &AddrPair, src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_HEADER_LEN + usize::from(V2_TCP6_LEN));
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_VERSION << 4 | V2_CMD_PROXY);
    match addrs {
        AddrPair::V4(s, d) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&V2_TCP4_LEN.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        AddrPair::V6(s, d) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&V2_TCP6_LEN.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&src_port.to_be_bytes());
    out.extend_from_slice(&dst_port.to_be_bytes());
    out
}

/// Reads a v1 or v2 header at the start of `buf` (everything received so
/// far) and returns it with the number of bytes it occupies; the bytes after
/// those belong to the client.
///
/// `Partial` means every byte so far fits a valid header; an answer other
/// than `Partial` never changes as more bytes arrive.
pub fn parse(buf: &[u8]) -> Result<Parsed<(ProxyHeader, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(Parsed::Partial),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Shorthand for a `Malformed` error.
fn malformed(why: &'static str) -> ProxyError {
    ProxyError::Malformed(why)
}

/// Where the v1 line ends, as far as the bytes seen tell.
enum LineEnd {
    /// CRLF found at this offset from the start of the buffer.
    Found(usize),
    /// No complete CRLF yet; this many bytes are line content so far.
    NotYet(usize),
    /// The line can never end validly; the content before this offset is
    /// still checked first, so the earliest problem is the one reported.
    Invalid(usize, &'static str),
}

/// Parses a v1 line (section 2.1).
fn parse_v1(buf: &[u8]) -> Result<Parsed<(ProxyHeader, usize)>, ProxyError> {
    // "PROXY" identifies v1 (section 2.2); a broken rest is `Malformed`.
    let magic = buf.len().min(5);
    if buf.get(..magic) != V1_PREFIX.get(..magic) {
        return Err(ProxyError::NotProxy);
    }
    if buf.get(5).is_some_and(|&b| b != b' ') {
        return Err(malformed("no space after PROXY"));
    }
    let content = |end: usize| buf.get(V1_PREFIX.len()..end).unwrap_or(&[]);
    match v1_line_end(buf) {
        LineEnd::Found(at) => {
            let header = v1_fields(content(at), true)?;
            let header = header.ok_or(malformed("incomplete line"))?;
            Ok(Parsed::Complete((header, at + 2)))
        }
        LineEnd::NotYet(end) => {
            v1_fields(content(end), false)?;
            Ok(Parsed::Partial)
        }
        LineEnd::Invalid(end, why) => {
            v1_fields(content(end), false)?;
            Err(malformed(why))
        }
    }
}

/// Finds the CRLF within the first 107 bytes, rejecting a lone CR or LF.
fn v1_line_end(buf: &[u8]) -> LineEnd {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let full = window.len() == V1_MAX_LEN;
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if window.get(at) == Some(&b'\n') => LineEnd::Invalid(at, "LF without CR"),
        Some(at) => match window.get(at + 1) {
            Some(b'\n') => LineEnd::Found(at),
            Some(_) => LineEnd::Invalid(at, "CR without LF"),
            None if full => LineEnd::Invalid(at, "no CRLF within 107 bytes"),
            None => LineEnd::NotYet(at),
        },
        None if full => LineEnd::Invalid(window.len(), "no CRLF within 107 bytes"),
        None => LineEnd::NotYet(window.len()),
    }
}

/// Address family announced by a v1 line.
#[derive(Clone, Copy)]
enum V1Family {
    Tcp4,
    Tcp6,
}

/// The protocol names a v1 line may announce.
const V1_PROTOCOLS: [&[u8]; 3] = [b"UNKNOWN", b"TCP4", b"TCP6"];

/// Checks the fields of a v1 line after `PROXY `, left to right. With
/// `complete` the line is whole and the header is returned. Otherwise it is
/// a prefix whose last field may be unfinished: it is checked as far as it
/// goes and `None` is returned when it could still become valid. Both modes
/// report the leftmost problem, so the error for a prefix is the error for
/// the whole line.
fn v1_fields(line: &[u8], complete: bool) -> Result<Option<ProxyHeader>, ProxyError> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // Index of the field that may be unfinished, if any.
    let open = (!complete).then(|| fields.len().saturating_sub(1));
    let proto = fields.first().copied().unwrap_or(&[]);
    let family = match proto {
        b"UNKNOWN" => return Ok(complete.then_some(ProxyHeader::Unknown)),
        b"TCP4" => V1Family::Tcp4,
        b"TCP6" => V1Family::Tcp6,
        p if open == Some(0) && V1_PROTOCOLS.iter().any(|k| k.starts_with(p)) => {
            return Ok(None);
        }
        _ => return Err(malformed("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    for (i, &text) in fields.iter().enumerate().skip(1).take(4) {
        let unfinished = open == Some(i);
        match (i, unfinished) {
            (1 | 2, true) => v1_ip_prefix(family, text)?,
            (1 | 2, false) => {
                v1_ip(family, text)?;
            }
            (_, prefix) => {
                v1_port(text, prefix)?;
            }
        }
    }
    if fields.len() > 5 {
        return Err(malformed("extra field after the ports"));
    }
    if !complete {
        return Ok(None);
    }
    let [_, src, dst, src_port, dst_port] = fields.as_slice() else {
        return Err(malformed("missing field"));
    };
    Ok(Some(ProxyHeader::Tcp {
        src: SocketAddr::new(v1_ip(family, src)?, v1_port(src_port, false)?),
        dst: SocketAddr::new(v1_ip(family, dst)?, v1_port(dst_port, false)?),
    }))
}

/// Parses a complete v1 address of the announced family.
fn v1_ip(family: V1Family, text: &[u8]) -> Result<IpAddr, ProxyError> {
    match family {
        V1Family::Tcp4 => v4_strict(text)
            .map(IpAddr::V4)
            .ok_or(malformed("invalid IPv4 address")),
        V1Family::Tcp6 => v6_text(text)
            .map(IpAddr::V6)
            .ok_or(malformed("invalid IPv6 address")),
    }
}

/// Checks that `text` can still grow into a valid address of the family.
fn v1_ip_prefix(family: V1Family, text: &[u8]) -> Result<(), ProxyError> {
    match family {
        V1Family::Tcp4 => {
            // Every dot-terminated part must be a valid octet; the last one
            // may also be empty (any prefix of a valid octet is one itself).
            let parts: Vec<&[u8]> = text.split(|&b| b == b'.').collect();
            let ok = parts.len() <= 4
                && parts.iter().enumerate().all(|(i, part)| {
                    octet(part).is_some() || (part.is_empty() && i + 1 == parts.len())
                });
            if ok {
                Ok(())
            } else {
                Err(malformed("invalid IPv4 address"))
            }
        }
        V1Family::Tcp6 => {
            // "ffff:...:ffff:255.255.255.255" is the longest textual form;
            // finer errors wait until the field is complete.
            let ok = text.len() <= 45
                && text
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if ok {
                Ok(())
            } else {
                Err(malformed("invalid IPv6 address"))
            }
        }
    }
}

/// One decimal IPv4 octet: 0..=255 without leading zeros.
fn octet(text: &[u8]) -> Option<u8> {
    decimal(text, 3).and_then(|v| u8::try_from(v).ok())
}

/// A decimal number of 1..=`max_digits` digits without leading zeros.
fn decimal(text: &[u8], max_digits: usize) -> Option<u32> {
    let ok = !text.is_empty()
        && text.len() <= max_digits
        && text.iter().all(u8::is_ascii_digit)
        && (text.len() == 1 || text.first() != Some(&b'0'));
    ok.then(|| {
        text.iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    })
}

/// A dotted-quad IPv4 address: four octets without leading zeros.
fn v4_strict(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for slot in &mut octets {
        *slot = octet(parts.next()?)?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// An IPv6 address in the text forms `inet_pton` accepts; no zone index.
fn v6_text(text: &[u8]) -> Option<Ipv6Addr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A v1 port: 0..=65535 without leading zeros. With `prefix`, `text` only
/// has to be able to grow into one (any prefix of a valid port is valid or
/// empty).
fn v1_port(text: &[u8], prefix: bool) -> Result<u16, ProxyError> {
    if prefix && text.is_empty() {
        return Ok(0);
    }
    decimal(text, 5)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or(malformed("invalid port"))
}

/// Parses a v2 header (section 2.2), checking each byte as it arrives.
fn parse_v2(buf: &[u8]) -> Result<Parsed<(ProxyHeader, usize)>, ProxyError> {
    let mut r = Reader::new(buf);
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if r.take(sig_len) != V2_SIGNATURE.get(..sig_len) {
        return Err(ProxyError::NotProxy);
    }
    let Some(ver_cmd) = r.u8() else {
        return Ok(Parsed::Partial);
    };
    let command = v2_command(ver_cmd)?;
    let Some(family) = r.u8() else {
        return Ok(Parsed::Partial);
    };
    // LOCAL ignores the family byte entirely (section 2.2).
    let proxied = command == V2_CMD_PROXY;
    if proxied {
        v2_family(family)?;
    }
    let Some(len) = r.u16() else {
        return Ok(Parsed::Partial);
    };
    let len = usize::from(len);
    if proxied {
        v2_check_len(family, len)?;
    }
    let Some(mut block) = r.sub(len) else {
        return Ok(Parsed::Partial);
    };
    let header = if proxied {
        v2_addresses(family, &mut block)
    } else {
        ProxyHeader::Local
    };
    Ok(Parsed::Complete((header, V2_HEADER_LEN + len)))
}

/// Checks the version (must be 2) and returns the command (LOCAL or PROXY).
fn v2_command(ver_cmd: u8) -> Result<u8, ProxyError> {
    if ver_cmd >> 4 != V2_VERSION {
        return Err(malformed("v2 signature with a version other than 2"));
    }
    match ver_cmd & 0x0f {
        command @ (V2_CMD_LOCAL | V2_CMD_PROXY) => Ok(command),
        _ => Err(malformed("unknown v2 command")),
    }
}

/// Rejects undefined address families and transport protocols.
fn v2_family(family: u8) -> Result<(), ProxyError> {
    if family >> 4 > V2_MAX_FAMILY || family & 0x0f > V2_MAX_PROTOCOL {
        return Err(malformed("unknown v2 address family or protocol"));
    }
    Ok(())
}

/// Rejects an address block too short for the TCP family it announces.
fn v2_check_len(family: u8, len: usize) -> Result<(), ProxyError> {
    let needed = match family {
        V2_TCP4 => usize::from(V2_TCP4_LEN),
        V2_TCP6 => usize::from(V2_TCP6_LEN),
        _ => 0,
    };
    if len < needed {
        return Err(malformed("v2 address block too short for its family"));
    }
    Ok(())
}

/// Reads the addresses of a PROXY command; anything but TCP over IPv4/IPv6
/// is reported as `Unknown`. The block length was checked beforehand.
fn v2_addresses(family: u8, block: &mut Reader<'_>) -> ProxyHeader {
    let addrs = match family {
        V2_TCP4 => block
            .take(8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| {
                let [a, b, c, d, e, f, g, h] = b;
                (IpAddr::from([a, b, c, d]), IpAddr::from([e, f, g, h]))
            }),
        V2_TCP6 => {
            let src = block.take(16).and_then(|b| <[u8; 16]>::try_from(b).ok());
            let dst = block.take(16).and_then(|b| <[u8; 16]>::try_from(b).ok());
            src.zip(dst)
                .map(|(s, d)| (IpAddr::from(s), IpAddr::from(d)))
        }
        _ => None,
    };
    match (addrs, block.u16(), block.u16()) {
        (Some((s, d)), Some(sp), Some(dp)) => ProxyHeader::Tcp {
            src: SocketAddr::new(s, sp),
            dst: SocketAddr::new(d, dp),
        },
        _ => ProxyHeader::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::XorShift;

    type Answer = Result<Parsed<(ProxyHeader, usize)>, ProxyError>;

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn tcp(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Tcp {
            src: sa(src),
            dst: sa(dst),
        }
    }

    fn bad(why: &'static str) -> Answer {
        Err(ProxyError::Malformed(why))
    }

    /// Parses `stream`; every prefix shorter than the header it starts with
    /// must be `Partial`, and every longer one must give the same answer.
    fn parse_whole(stream: &[u8]) -> Answer {
        let full = parse(stream);
        let used = match full {
            Ok(Parsed::Complete((_, used))) => used,
            _ => stream.len(),
        };
        for end in 0..stream.len() {
            let want = if end < used {
                Ok(Parsed::Partial)
            } else {
                full
            };
            assert_eq!(parse(&stream[..end]), want, "{stream:?} cut at {end}");
        }
        full
    }

    /// The v2 header for TCP over IPv4 from 192.168.0.1:56324 to
    /// 192.168.0.11:443, laid out by hand from section 2.2.
    const V2_SPEC_EXAMPLE: [u8; 28] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
        0x21, // version 2, PROXY
        0x11, // AF_INET, STREAM
        0x00, 0x0C, // 12 address bytes
        192, 168, 0, 1, // source address
        192, 168, 0, 11, // destination address
        0xDC, 0x04, // source port 56324
        0x01, 0xBB, // destination port 443
    ];

    #[test]
    fn spec_v1_example() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let mut stream = line.to_vec();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
        let want = tcp("192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(
            parse_whole(&stream),
            Ok(Parsed::Complete((want, line.len())))
        );
        let encoded = encode(Version::V1, sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        assert_eq!(encoded, line);
    }

    #[test]
    fn spec_v2_layout() {
        let encoded = encode(Version::V2, sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        assert_eq!(encoded, V2_SPEC_EXAMPLE);
        let want = tcp("192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(
            parse_whole(&V2_SPEC_EXAMPLE),
            Ok(Parsed::Complete((want, 28)))
        );
        let v6 = encode(Version::V2, sa("[2001:db8::1]:1"), sa("[::1]:65535"));
        assert_eq!(v6.len(), 16 + 36);
        assert_eq!(&v6[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&v6[48..52], &[0, 1, 0xff, 0xff]);
    }

    #[test]
    fn spec_maximum_lines() {
        let v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(v4.len(), 56);
        let want = tcp("255.255.255.255:65535", "255.255.255.255:65535");
        assert_eq!(parse_whole(v4), Ok(Parsed::Complete((want, 56))));
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let v6 = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
        assert_eq!(v6.len(), 104);
        let addr = format!("[{f}]:65535");
        let want = tcp(&addr, &addr);
        assert_eq!(
            parse_whole(v6.as_bytes()),
            Ok(Parsed::Complete((want, 104)))
        );
        let unknown = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
        assert_eq!(unknown.len(), 107);
        let got = parse_whole(unknown.as_bytes());
        assert_eq!(got, Ok(Parsed::Complete((ProxyHeader::Unknown, 107))));
        assert_eq!(
            parse_whole(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Complete((ProxyHeader::Unknown, 15)))
        );
    }

    #[test]
    fn round_trips() {
        let pairs = [
            ("1.2.3.4:5", "6.7.8.9:10"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
            ("[::]:0", "[::1]:443"),
            ("[2001:db8:0:1:0:0:0:1]:1234", "[fe80::abcd]:80"),
            ("[1:0:0:2:0:0:0:3]:1", "[0:1:0:0:0:0:0:0]:2"),
            ("[1:2:3:4:5:6:7:8]:1", "[1:0:3:0:5:0:7:0]:2"),
            ("[::ffff:10.0.0.1]:9", "[::ffff:0.0.0.0]:9"),
        ];
        for (src, dst) in pairs {
            for version in [Version::V1, Version::V2] {
                let bytes = encode(version, sa(src), sa(dst));
                let want = Ok(Parsed::Complete((tcp(src, dst), bytes.len())));
                assert_eq!(parse_whole(&bytes), want, "{version} {src} {dst}");
            }
        }
    }

    #[test]
    fn mixed_families_use_ipv4_mapped_addresses() {
        let (src, dst) = (sa("10.0.0.1:1000"), sa("[2001:db8::2]:443"));
        let v1 = encode(Version::V1, src, dst);
        assert_eq!(v1, b"PROXY TCP6 ::ffff:a00:1 2001:db8::2 1000 443\r\n");
        let want = tcp("[::ffff:10.0.0.1]:1000", "[2001:db8::2]:443");
        assert_eq!(parse(&v1), Ok(Parsed::Complete((want, v1.len()))));
        let v2 = encode(Version::V2, src, dst);
        assert_eq!(parse(&v2), Ok(Parsed::Complete((want, v2.len()))));
    }

    #[test]
    fn v1_accepts_inet_pton_forms() {
        let line = b"PROXY TCP6 ::FFFF:1.2.3.4 0:0:0:0:0:0:0:1 1 2\r\n";
        let want = tcp("[::ffff:1.2.3.4]:1", "[::1]:2");
        assert_eq!(parse_whole(line), Ok(Parsed::Complete((want, line.len()))));
        let line = b"PROXY UNKNOWN whatever the sender puts here\r\npayload";
        assert_eq!(
            parse_whole(line),
            Ok(Parsed::Complete((ProxyHeader::Unknown, 45)))
        );
    }

    #[test]
    fn a_local_header_reads_back_as_local_or_unknown() {
        let v2 = encode_local(Version::V2);
        assert_eq!(
            parse_whole(&v2),
            Ok(Parsed::Complete((ProxyHeader::Local, v2.len())))
        );
        let v1 = encode_local(Version::V1);
        assert_eq!(
            parse_whole(&v1),
            Ok(Parsed::Complete((ProxyHeader::Unknown, v1.len())))
        );
    }

    #[test]
    fn v2_local_unknown_and_tlvs() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse_whole(&local),
            Ok(Parsed::Complete((ProxyHeader::Local, 16)))
        );
        // LOCAL with addresses and an undefined family: all ignored.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0xff, 0x00, 0x03, 1, 2, 3, 9]);
        assert_eq!(
            parse_whole(&local),
            Ok(Parsed::Complete((ProxyHeader::Local, 19)))
        );
        for (family, len) in [
            (0x00u8, 0u16),
            (0x12, 12),
            (0x22, 36),
            (0x31, 216),
            (0x32, 216),
            (0x01, 0),
        ] {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[0x21, family]);
            h.extend_from_slice(&len.to_be_bytes());
            h.resize(16 + usize::from(len), 7);
            let want = Ok(Parsed::Complete((ProxyHeader::Unknown, h.len())));
            assert_eq!(parse_whole(&h), want, "family {family:#x}");
        }
        // A TCP4 header with 1,000 bytes of TLVs after the addresses.
        let mut h = V2_SPEC_EXAMPLE.to_vec();
        h[14..16].copy_from_slice(&(12u16 + 1000).to_be_bytes());
        h.extend((0..1000).map(|i| i as u8));
        h.extend_from_slice(b"client data");
        let want = tcp("192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(parse_whole(&h), Ok(Parsed::Complete((want, 28 + 1000))));
        // The largest declared length is waited for too.
        let mut h = V2_SPEC_EXAMPLE.to_vec();
        h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        h.resize(16 + 65535, 0);
        assert_eq!(parse(&h[..h.len() - 1]), Ok(Parsed::Partial));
        assert_eq!(parse(&h), Ok(Parsed::Complete((want, 16 + 65535))));
    }

    #[test]
    fn not_proxy() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"proxy TCP4",
            b"PROXX",
            b"\r\n\r\n\x00\r\nQUIX",
            b"\r\r",
            b"\x00",
        ] {
            assert_eq!(parse(input), Err(ProxyError::NotProxy), "{input:?}");
        }
        // Detected at the first byte that differs.
        assert_eq!(parse(b"PR"), Ok(Parsed::Partial));
        assert_eq!(parse(b"PRX"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v1_malformed() {
        let cases: &[(&[u8], &str)] = &[
            (b"PROXY\r\n", "no space after PROXY"),
            (b"PROXYTCP4", "no space after PROXY"),
            (b"PROXY TCP5 ", "protocol is not TCP4, TCP6 or UNKNOWN"),
            (
                b"PROXY UNKNOWNX\r\n",
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ),
            (b"PROXY  TCP4", "protocol is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY tcp4 ", "protocol is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "invalid port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536", "invalid port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n", "invalid port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", "invalid port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "invalid port"),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
                "invalid IPv4 address",
            ),
            (
                b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
                "invalid IPv4 address",
            ),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "invalid IPv4 address"),
            (
                b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
                "invalid IPv4 address",
            ),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", "invalid IPv4 address"),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "invalid IPv6 address"),
            (
                b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
                "invalid IPv6 address",
            ),
            (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", "invalid IPv6 address"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "missing field"),
            (b"PROXY TCP4\r\n", "missing field"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                "extra field after the ports",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                "extra field after the ports",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR without LF"),
            (b"PROXY UNKNOWN\n", "LF without CR"),
            (b"PROXY UNKNOWN \r\r\n", "CR without LF"),
        ];
        for &(input, why) in cases {
            assert_eq!(
                parse(input),
                bad(why),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = format!("PROXY UNKNOWN {}", "x".repeat(92));
        assert_eq!(long.len(), 106);
        assert_eq!(parse(long.as_bytes()), Ok(Parsed::Partial));
        let longer = format!("{long}\r");
        assert_eq!(parse(longer.as_bytes()), bad("no CRLF within 107 bytes"));
        let longer = format!("{long}x");
        assert_eq!(parse(longer.as_bytes()), bad("no CRLF within 107 bytes"));
    }

    #[test]
    fn v1_errors_are_found_early() {
        // Each is rejected before the line is complete.
        for (input, why) in [
            (&b"PROXY TCP4 256"[..], "invalid IPv4 address"),
            (b"PROXY TCP4 1.2.3.4.", "invalid IPv4 address"),
            (b"PROXY TCP4 00", "invalid IPv4 address"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999", "invalid port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65535 65536", "invalid port"),
            (b"PROXY TCP6 g", "invalid IPv6 address"),
            (b"PROXY TCPX", "protocol is not TCP4, TCP6 or UNKNOWN"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
                "extra field after the ports",
            ),
        ] {
            assert_eq!(
                parse(input),
                bad(why),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn v2_malformed() {
        let patch = |at: usize, value: u8| {
            let mut h = V2_SPEC_EXAMPLE.to_vec();
            h[at] = value;
            // Rejected as soon as the offending byte is in.
            let early = parse(&h[..=at]);
            assert_eq!(early, parse(&h), "byte {at} = {value:#x}");
            early
        };
        assert_eq!(
            patch(12, 0x11),
            bad("v2 signature with a version other than 2")
        );
        assert_eq!(
            patch(12, 0x31),
            bad("v2 signature with a version other than 2")
        );
        assert_eq!(patch(12, 0x22), bad("unknown v2 command"));
        assert_eq!(
            patch(13, 0x41),
            bad("unknown v2 address family or protocol")
        );
        assert_eq!(
            patch(13, 0x13),
            bad("unknown v2 address family or protocol")
        );
        assert_eq!(
            patch(15, 11),
            bad("v2 address block too short for its family")
        );
        let mut h = V2_SPEC_EXAMPLE.to_vec();
        h[13] = V2_TCP6;
        assert_eq!(parse(&h), bad("v2 address block too short for its family"));
        assert_eq!(patch(11, b'X'), Err(ProxyError::NotProxy));
    }

    #[test]
    fn version_from_str() {
        assert_eq!("v1".parse(), Ok(Version::V1));
        assert_eq!("v2".parse(), Ok(Version::V2));
        let err = "v3".parse::<Version>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown PROXY protocol version \"v3\" (expected \"v1\" or \"v2\")"
        );
        assert!("V1".parse::<Version>().is_err());
        assert_eq!(Version::V2.to_string(), "v2");
    }

    #[test]
    fn v6_hex_compresses_longest_zero_run() {
        for (addr, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
            ("::ffff:1.2.3.4", "::ffff:102:304"),
        ] {
            assert_eq!(v6_hex(&addr.parse().unwrap()), want);
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(ProxyError::NotProxy.to_string(), "no PROXY protocol header");
        assert_eq!(
            ProxyError::Malformed("x").to_string(),
            "malformed PROXY protocol header: x"
        );
    }

    fn check_consistent(input: &[u8], cut: usize) {
        let full = parse(input);
        if let Ok(Parsed::Complete((_, used))) = full {
            assert!(used <= input.len());
        }
        let prefix = parse(&input[..cut.min(input.len())]);
        if prefix != Ok(Parsed::Partial) {
            assert_eq!(prefix, full, "{input:?} cut at {cut}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift::new(0x5eed_0005);
        let alphabet = b"PROXY TCP46UNKNOW0123456789.:abcdef\r\n";
        for i in 0..20_000 {
            let len = rng.below(120);
            let mut input: Vec<u8> = match i % 3 {
                0 => rng.bytes(len),
                _ => (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect(),
            };
            let head: &[u8] = match i % 3 {
                1 => b"PROXY ",
                2 => &V2_SIGNATURE,
                _ => &[],
            };
            input.splice(0..0, head.iter().copied());
            let cut = rng.below(input.len() + 1);
            check_consistent(&input, cut);
        }
    }

    #[test]
    fn mutated_headers_never_panic() {
        let mut rng = XorShift::new(0x5eed_0006);
        let seeds = [
            encode(Version::V1, sa("192.168.0.1:56324"), sa("192.168.0.11:443")),
            encode(
                Version::V1,
                sa("[2001:db8::1]:1"),
                sa("[::ffff:1.2.3.4]:65535"),
            ),
            b"PROXY UNKNOWN\r\n".to_vec(),
            V2_SPEC_EXAMPLE.to_vec(),
            encode(Version::V2, sa("[2001:db8::1]:1"), sa("[::1]:2")),
        ];
        for i in 0..20_000 {
            let input = rng.mutate(&seeds[i % seeds.len()]);
            let cut = rng.below(input.len() + 1);
            check_consistent(&input, cut);
        }
    }
}
