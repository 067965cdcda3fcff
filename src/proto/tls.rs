//! Reads the TLS ClientHello that opens a connection (without terminating
//! TLS) to learn the requested server name (SNI), the offered ALPN protocols
//! and whether Encrypted Client Hello is in use.
//!
//! Rules chosen here:
//! - Records: content type 22 (handshake), version 0x0300..=0x0304, length
//!   1..=2^14. The ClientHello may be fragmented over any number of
//!   consecutive handshake records; a record of another type before it is
//!   complete is `Malformed`. The first three bytes decide `NotTls`; every
//!   later problem is `Malformed`.
//! - Size: the ClientHello body may declare up to [`MAX_HELLO_LEN`] bytes
//!   (more is `TooLarge`), and the whole hello, record headers included, must
//!   arrive within the first [`MAX_HELLO_BYTES`] bytes of the stream. So a
//!   caller that reads up to `MAX_HELLO_BYTES` bytes always gets an answer
//!   other than `Partial`.
//! - Bytes after the ClientHello (in its last record or later) are ignored,
//!   but the record that holds the hello's last byte must have arrived whole:
//!   until it has, the answer is `Partial`.
//! - Duplicate extensions, or two `host_name` entries, are `Malformed`: a
//!   router and a backend could otherwise disagree on the name.
//! - An invalid host name in `server_name` is `Malformed`.
//! - SSLv2-compatible hellos are recognised from their first three bytes.

use std::borrow::Cow;
use std::fmt;

use super::cursor::{Parsed, Reader};
use super::name;

/// Largest ClientHello body (the handshake message's declared 24-bit length)
/// accepted. 16 KiB leaves ample room for post-quantum key shares (an
/// X25519MLKEM768 share alone is 1,216 bytes).
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// The caller's read cap: a ClientHello must be complete within this many
/// bytes from the start of the stream. It is [`MAX_HELLO_LEN`] plus the
/// 4-byte handshake header plus room for the headers of hundreds of records
/// (at least two are needed, since one record carries at most 2^14 bytes).
/// `parse_client_hello` never returns `Partial` for a buffer this long.
pub const MAX_HELLO_BYTES: usize = 20 * 1024;

/// Largest TLSPlaintext fragment (RFC 8446 section 5.1, RFC 5246 6.2.1).
const MAX_RECORD_LEN: usize = 1 << 14;

/// Record header: content type, version (2 bytes), length (2 bytes).
const RECORD_HEADER_LEN: usize = 5;

/// Record content type of handshake messages.
const CONTENT_HANDSHAKE: u8 = 22;

/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// Maximum `legacy_session_id` length (RFC 8446 section 4.1.2).
const MAX_SESSION_ID_LEN: usize = 32;

/// Extension carrying the server name (RFC 6066 section 3).
const EXT_SERVER_NAME: u16 = 0;

/// Extension carrying the ALPN protocol list (RFC 7301).
const EXT_ALPN: u16 = 16;

/// Extension `encrypted_client_hello` (draft-ietf-tls-esni, RFC 9849).
const EXT_ECH: u16 = 0xfe0d;

/// `NameType` of a DNS host name in the server_name list.
const NAME_TYPE_HOST: u8 = 0;

/// Smallest SSLv2 CLIENT-HELLO body: type, version, and three 2-byte lengths.
const MIN_SSLV2_HELLO_LEN: u16 = 9;

/// SSLv2 message type of CLIENT-HELLO.
const SSLV2_CLIENT_HELLO: u8 = 1;

/// What the router learns from a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension: lowercased, without a
    /// trailing dot, made only of letters, digits, `-`, `_` and `.`.
    /// With ECH this is the public (outer) name. `None` if absent.
    pub server_name: Option<String>,
    /// The ALPN protocol names in the client's order (non-UTF-8 bytes are
    /// replaced by U+FFFD, so GREASE entries still show up). Empty if absent.
    pub alpn: Vec<String>,
    /// True when the `encrypted_client_hello` extension (0xfe0d) is present.
    pub ech: bool,
}

/// Why a buffer is not an acceptable ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsError {
    /// The stream does not start with a TLS handshake record or SSLv2 hello.
    NotTls,
    /// The stream started as TLS but breaks the protocol; the text says where.
    Malformed(&'static str),
    /// The hello exceeds [`MAX_HELLO_LEN`] or [`MAX_HELLO_BYTES`].
    TooLarge,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotTls => f.write_str("not a TLS ClientHello"),
            TlsError::Malformed(why) => write!(f, "malformed TLS ClientHello: {why}"),
            TlsError::TooLarge => write!(
                f,
                "TLS ClientHello larger than {MAX_HELLO_LEN} bytes \
                 or not complete within {MAX_HELLO_BYTES} bytes"
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// Parses the ClientHello at the start of `buf`, which holds everything
/// received from the client so far.
///
/// Returns `Ok(Parsed::Partial)` while every byte is consistent with a valid
/// hello but more are needed; the answer for a prefix that is not `Partial`
/// never changes as more bytes arrive.
pub fn parse_client_hello(buf: &[u8]) -> Result<Parsed<ClientHello>, TlsError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Partial);
    };
    if first & 0x80 != 0 {
        return parse_sslv2(buf);
    }
    if first != CONTENT_HANDSHAKE {
        return Err(TlsError::NotTls);
    }
    // Bytes past the cap are never looked at, so the answer is the same for
    // every buffer that shares the first MAX_HELLO_BYTES bytes.
    let window = buf.get(..MAX_HELLO_BYTES).unwrap_or(buf);
    match reassemble(window)? {
        Some(message) => parse_hello(&message).map(Parsed::Complete),
        None if buf.len() >= MAX_HELLO_BYTES => Err(TlsError::TooLarge),
        None => Ok(Parsed::Partial),
    }
}

/// A TLS fatal `unrecognized_name` alert record, to send before closing a
/// connection whose server name has no route.
///
/// The record version is 0x0303: RFC 8446 requires it on every TLS 1.3
/// record other than an initial ClientHello, and TLS 1.0-1.2 clients only
/// check the major version before a version is negotiated. The level is
/// fatal (2) because RFC 6066 advises against the warning level.
pub fn unrecognized_name_alert() -> [u8; 7] {
    const ALERT: u8 = 21;
    const FATAL: u8 = 2;
    const UNRECOGNIZED_NAME: u8 = 112;
    [ALERT, 0x03, 0x03, 0x00, 0x02, FATAL, UNRECOGNIZED_NAME]
}

/// Recognises an SSLv2-compatible CLIENT-HELLO (2-byte header with the high
/// bit set, then message type 1). It carries no extensions, so there is
/// nothing to extract: the answer is complete after three bytes.
fn parse_sslv2(buf: &[u8]) -> Result<Parsed<ClientHello>, TlsError> {
    let mut r = Reader::new(buf);
    let (Some(hi), Some(lo)) = (r.u8(), r.u8()) else {
        return Ok(Parsed::Partial);
    };
    if u16::from_be_bytes([hi & 0x7f, lo]) < MIN_SSLV2_HELLO_LEN {
        return Err(TlsError::NotTls);
    }
    match r.u8() {
        None => Ok(Parsed::Partial),
        Some(SSLV2_CLIENT_HELLO) => Ok(Parsed::Complete(ClientHello::default())),
        Some(_) => Err(TlsError::NotTls),
    }
}

/// Collects handshake bytes from consecutive records until the first
/// handshake message is complete, and returns that message (header included,
/// possibly followed by unrelated bytes). `None` means more bytes are needed.
///
/// The common single-record hello is borrowed; only fragmented ones are
/// copied.
fn reassemble(wire: &[u8]) -> Result<Option<Cow<'_, [u8]>>, TlsError> {
    let mut r = Reader::new(wire);
    let mut handshake: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut first = true;
    loop {
        let header = r.take(r.remaining().min(RECORD_HEADER_LEN)).unwrap_or(&[]);
        let Some(len) = record_header(header, first)? else {
            return Ok(None);
        };
        let fragment = r.take(r.remaining().min(len)).unwrap_or(&[]);
        let complete_record = fragment.len() == len;
        if first {
            handshake = Cow::Borrowed(fragment);
            first = false;
        } else {
            handshake.to_mut().extend_from_slice(fragment);
        }
        if message_complete(&handshake)? {
            // The record that holds the message's end must be whole too: a record header that
            // announces more bytes than have arrived is waited for, not trusted, since what a
            // backend sees is the record.
            return Ok(complete_record.then_some(handshake));
        }
        // Each pass consumes a 5-byte header and a non-empty fragment, so the
        // loop ends; an incomplete record means the input ran out.
        if !complete_record {
            return Ok(None);
        }
    }
}

/// Checks as much of a record header as has arrived and returns the record
/// length once all five bytes are there. A mismatch in the first record means
/// the stream is not TLS at all; in a later one it is a broken hello.
fn record_header(header: &[u8], first: bool) -> Result<Option<usize>, TlsError> {
    let fail = |why| {
        if first {
            TlsError::NotTls
        } else {
            TlsError::Malformed(why)
        }
    };
    if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(fail("non-handshake record before the ClientHello ended"));
    }
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(fail("record version is not 3.x"));
    }
    if header.get(2).is_some_and(|&minor| minor > 4) {
        return Err(fail("record version above 3.4"));
    }
    let (Some(&hi), Some(&lo)) = (header.get(3), header.get(4)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        // RFC 8446 5.1 and RFC 5246 6.2.1 forbid empty handshake fragments.
        return Err(TlsError::Malformed("empty handshake record"));
    }
    if len > MAX_RECORD_LEN {
        return Err(TlsError::Malformed("record longer than 2^14 bytes"));
    }
    Ok(Some(len))
}

/// Looks at the handshake bytes gathered so far: rejects anything but a
/// ClientHello, enforces the size cap as soon as the length is known, and
/// says whether the whole message is there.
fn message_complete(handshake: &[u8]) -> Result<bool, TlsError> {
    let mut r = Reader::new(handshake);
    match r.u8() {
        None => return Ok(false),
        Some(HANDSHAKE_CLIENT_HELLO) => {}
        Some(_) => {
            return Err(TlsError::Malformed(
                "first handshake message is not a ClientHello",
            ));
        }
    }
    let Some(len) = r.u24() else {
        return Ok(false);
    };
    let len = usize::try_from(len).map_err(|_| TlsError::TooLarge)?;
    if len > MAX_HELLO_LEN {
        return Err(TlsError::TooLarge);
    }
    Ok(r.remaining() >= len)
}

/// Shorthand for the error of a truncated or overlong field.
fn malformed(why: &'static str) -> TlsError {
    TlsError::Malformed(why)
}

/// Parses a complete ClientHello handshake message (RFC 8446 4.1.2,
/// RFC 5246 7.4.1.2) and extracts what the router needs.
fn parse_hello(message: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader::new(message);
    r.u8().ok_or(malformed("truncated handshake header"))?;
    let len = r.u24().ok_or(malformed("truncated handshake header"))?;
    let len = usize::try_from(len).map_err(|_| TlsError::TooLarge)?;
    let mut body = r.sub(len).ok_or(malformed("truncated ClientHello"))?;

    let version = body.u16().ok_or(malformed("truncated legacy_version"))?;
    if version >> 8 != 3 {
        return Err(malformed("legacy_version is not 3.x"));
    }
    body.take(32).ok_or(malformed("truncated random"))?;
    let session_id_len = usize::from(body.u8().ok_or(malformed("truncated session id"))?);
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(malformed("session id longer than 32 bytes"));
    }
    body.take(session_id_len)
        .ok_or(malformed("truncated session id"))?;
    skip_cipher_suites(&mut body)?;
    let compression_len = usize::from(
        body.u8()
            .ok_or(malformed("truncated compression methods"))?,
    );
    if compression_len == 0 {
        return Err(malformed("no compression method"));
    }
    body.take(compression_len)
        .ok_or(malformed("truncated compression methods"))?;
    if body.is_empty() {
        // SSL 3.0 and early TLS hellos may end here, without extensions.
        return Ok(ClientHello::default());
    }
    let ext_len = usize::from(body.u16().ok_or(malformed("truncated extensions length"))?);
    let extensions = body
        .sub(ext_len)
        .ok_or(malformed("extensions overrun the ClientHello"))?;
    if !body.is_empty() {
        return Err(malformed("bytes after the extensions"));
    }
    parse_extensions(extensions)
}

/// Skips the cipher suite list: a non-empty, even-length vector.
fn skip_cipher_suites(body: &mut Reader<'_>) -> Result<(), TlsError> {
    let len = usize::from(body.u16().ok_or(malformed("truncated cipher suites"))?);
    if len == 0 || len % 2 != 0 {
        return Err(malformed("cipher suite list empty or of odd length"));
    }
    body.take(len).ok_or(malformed("truncated cipher suites"))?;
    Ok(())
}

/// Walks the extension list, reading server_name, ALPN and ECH and skipping
/// everything else (GREASE included).
fn parse_extensions(mut exts: Reader<'_>) -> Result<ClientHello, TlsError> {
    let mut hello = ClientHello::default();
    let mut seen = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16().ok_or(malformed("truncated extension header"))?;
        let len = usize::from(exts.u16().ok_or(malformed("truncated extension header"))?);
        let data = exts
            .sub(len)
            .ok_or(malformed("extension overruns the list"))?;
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            EXT_ECH => hello.ech = true,
            _ => {}
        }
    }
    // RFC 8446 4.2: at most one extension of each type. Sorting keeps this
    // O(n log n) even for a hello made of thousands of empty extensions.
    seen.sort_unstable();
    if seen.windows(2).any(|pair| matches!(pair, [a, b] if a == b)) {
        return Err(malformed("duplicate extension"));
    }
    Ok(hello)
}

/// Parses the server_name extension (RFC 6066 section 3) and returns its
/// normalised host name. Entries of other name types are skipped, assuming
/// the 2-byte length every deployed implementation uses for them.
fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, TlsError> {
    let list_len = usize::from(data.u16().ok_or(malformed("truncated server_name list"))?);
    let mut list = data
        .sub(list_len)
        .ok_or(malformed("server_name list overruns extension"))?;
    if !data.is_empty() || list.is_empty() {
        return Err(malformed(
            "server_name extension length mismatch or empty list",
        ));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8().ok_or(malformed("truncated server_name entry"))?;
        let len = usize::from(list.u16().ok_or(malformed("truncated server_name entry"))?);
        let name = list
            .take(len)
            .ok_or(malformed("server name overruns list"))?;
        if name_type != NAME_TYPE_HOST {
            continue;
        }
        if host.is_some() {
            return Err(malformed("more than one host_name in server_name"));
        }
        host =
            Some(name::canonical_bytes(name).ok_or(malformed("invalid host name in server_name"))?);
    }
    Ok(host)
}

/// Parses the ALPN extension (RFC 7301 section 3.1): a non-empty list of
/// non-empty protocol names.
fn parse_alpn(mut data: Reader<'_>) -> Result<Vec<String>, TlsError> {
    let list_len = usize::from(data.u16().ok_or(malformed("truncated ALPN list"))?);
    let mut list = data
        .sub(list_len)
        .ok_or(malformed("ALPN list overruns extension"))?;
    if !data.is_empty() || list.is_empty() {
        return Err(malformed("ALPN extension length mismatch or empty list"));
    }
    let mut names = Vec::new();
    while !list.is_empty() {
        let len = usize::from(list.u8().ok_or(malformed("truncated ALPN name"))?);
        if len == 0 {
            return Err(malformed("empty ALPN protocol name"));
        }
        let name = list.take(len).ok_or(malformed("ALPN name overruns list"))?;
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::XorShift;

    /// A ClientHello sent by `openssl s_client -connect 127.0.0.1:PORT
    /// -servername example.com -alpn h2,http/1.1` (OpenSSL 3.0.19), captured
    /// on loopback with a plain TCP listener.
    const OPENSSL_HELLO: &[u8] = &[
        0x16, 0x03, 0x01, 0x01, 0x4a, 0x01, 0x00, 0x01, 0x46, 0x03, 0x03, 0xe9, 0x3a, 0x31, 0xac,
        0x6f, 0x5f, 0x2e, 0xb3, 0x8b, 0xf3, 0x16, 0xa8, 0x0f, 0x0e, 0xf9, 0xb1, 0x2d, 0x15, 0xba,
        0xe7, 0x3f, 0x7a, 0xc1, 0x52, 0x42, 0x73, 0x13, 0xd4, 0xa6, 0xbb, 0xed, 0xcd, 0x20, 0x87,
        0xc5, 0x28, 0x57, 0xc5, 0x74, 0x1d, 0xa0, 0xae, 0x79, 0xa9, 0xd1, 0xc1, 0xc6, 0xfb, 0x8c,
        0xe8, 0x16, 0xa1, 0x60, 0x52, 0x29, 0x15, 0xef, 0xaa, 0xee, 0xc9, 0x5b, 0x1b, 0xd5, 0x41,
        0x36, 0x00, 0x3e, 0x13, 0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f,
        0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0,
        0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39,
        0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00,
        0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0e,
        0x00, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x00,
        0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d,
        0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01,
        0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c, 0x02, 0x68,
        0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x16, 0x00, 0x00, 0x00,
        0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03,
        0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08,
        0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02,
        0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02,
        0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00,
        0x1d, 0x00, 0x20, 0x4c, 0x71, 0xb7, 0xe2, 0x04, 0x5d, 0x90, 0xca, 0xe3, 0x54, 0xcc, 0x70,
        0x57, 0x6f, 0x21, 0xa4, 0x5f, 0xab, 0x2d, 0xcf, 0x5b, 0xb6, 0x53, 0x9d, 0x19, 0x55, 0x09,
        0x7f, 0x90, 0x8f, 0x27, 0x34,
    ];

    /// Byte writer for test hellos that remembers where the length fields
    /// the reader checks are, so tests can tamper with each of them.
    #[derive(Default)]
    struct Writer {
        out: Vec<u8>,
        /// (offset, width) of every length prefix the reader validates.
        lens: Vec<(usize, usize)>,
    }

    impl Writer {
        fn u8(&mut self, v: u8) {
            self.out.push(v);
        }

        fn u16(&mut self, v: u16) {
            self.out.extend_from_slice(&v.to_be_bytes());
        }

        fn bytes(&mut self, b: &[u8]) {
            self.out.extend_from_slice(b);
        }

        /// Writes a vector with a `width`-byte length prefix filled in after
        /// `body` ran; `checked` marks lengths the reader validates.
        fn vec(&mut self, width: usize, checked: bool, body: impl FnOnce(&mut Writer)) {
            let at = self.out.len();
            self.out.resize(at + width, 0);
            body(self);
            let n = u32::try_from(self.out.len() - at - width).unwrap();
            let be = n.to_be_bytes();
            self.out[at..at + width].copy_from_slice(&be[4 - width..]);
            if checked {
                self.lens.push((at, width));
            }
        }
    }

    /// Extensions the test builder knows how to write.
    #[derive(Clone)]
    enum Ext {
        Sni(&'static str),
        Alpn(&'static [&'static str]),
        SupportedVersions,
        /// X25519MLKEM768-sized share of this many bytes plus an X25519 one.
        KeyShare(usize),
        Grease(u16),
        Ech,
        Raw(u16, Vec<u8>),
    }

    impl Ext {
        fn write(&self, w: &mut Writer) {
            match self {
                Ext::Sni(name) => {
                    w.u16(EXT_SERVER_NAME);
                    w.vec(2, true, |w| {
                        w.vec(2, true, |w| {
                            w.u8(NAME_TYPE_HOST);
                            w.vec(2, true, |w| w.bytes(name.as_bytes()));
                        })
                    });
                }
                Ext::Alpn(names) => {
                    w.u16(EXT_ALPN);
                    w.vec(2, true, |w| {
                        w.vec(2, true, |w| {
                            for name in names.iter() {
                                w.vec(1, true, |w| w.bytes(name.as_bytes()));
                            }
                        })
                    });
                }
                Ext::SupportedVersions => {
                    w.u16(43);
                    w.vec(2, true, |w| {
                        w.vec(1, false, |w| w.bytes(&[0x7a, 0x7a, 3, 4, 3, 3]))
                    });
                }
                Ext::KeyShare(size) => {
                    w.u16(51);
                    w.vec(2, true, |w| {
                        w.vec(2, false, |w| {
                            w.u16(0x11ec);
                            w.vec(2, false, |w| w.bytes(&vec![0x33; *size]));
                            w.u16(0x001d);
                            w.vec(2, false, |w| w.bytes(&[0x44; 32]));
                        })
                    });
                }
                Ext::Grease(kind) => {
                    w.u16(*kind);
                    w.vec(2, true, |w| w.u8(0));
                }
                Ext::Ech => {
                    w.u16(EXT_ECH);
                    w.vec(2, true, |w| w.bytes(&[0x55; 186]));
                }
                Ext::Raw(kind, data) => {
                    w.u16(*kind);
                    w.vec(2, true, |w| w.bytes(data));
                }
            }
        }
    }

    /// Builds a ClientHello handshake message (header included).
    fn message(exts: &[Ext]) -> Writer {
        let mut w = Writer::default();
        w.u8(HANDSHAKE_CLIENT_HELLO);
        // The handshake length frames the message; it is tampered with
        // separately because changing it changes what is complete.
        w.vec(3, false, |w| {
            w.u16(0x0303);
            w.bytes(&[0x11; 32]);
            w.vec(1, true, |w| w.bytes(&[0x22; 32]));
            w.vec(2, true, |w| {
                w.bytes(&[0x0a, 0x0a, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f])
            });
            w.vec(1, true, |w| w.u8(0));
            w.vec(2, true, |w| exts.iter().for_each(|e| e.write(w)));
        });
        w
    }

    /// Wraps `msg` in handshake records, cutting it at the given offsets.
    fn records(msg: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&msg.len())) {
            let piece = &msg[start..end];
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&u16::try_from(piece.len()).unwrap().to_be_bytes());
            out.extend_from_slice(piece);
            start = end;
        }
        out
    }

    /// The extensions of a modern browser-like hello (about 1,700 bytes).
    fn big_exts() -> Vec<Ext> {
        vec![
            Ext::Grease(0x0a0a),
            Ext::Sni("Example.COM."),
            Ext::SupportedVersions,
            Ext::Alpn(&["h2", "http/1.1"]),
            Ext::KeyShare(1216),
            Ext::Ech,
            Ext::Grease(0xfafa),
        ]
    }

    fn big_expected() -> ClientHello {
        ClientHello {
            server_name: Some("example.com".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            ech: true,
        }
    }

    fn small_msg() -> Vec<u8> {
        message(&[Ext::Sni("a.io"), Ext::Alpn(&["h2"])]).out
    }

    #[test]
    fn a_record_that_announces_more_than_arrived_is_waited_for() {
        // One record holding the hello and 40 bytes after it (another handshake message, say).
        let msg = small_msg();
        let mut body = msg.clone();
        body.extend_from_slice(&[0x0b; 40]);
        let wire = records(&body, &[]);
        let hello_end = 5 + msg.len();
        for n in hello_end..wire.len() {
            assert_eq!(
                parse_client_hello(&wire[..n]),
                Ok(Parsed::Partial),
                "{n} of {}",
                wire.len()
            );
        }
        let Ok(Parsed::Complete(hello)) = parse_client_hello(&wire) else {
            panic!("the whole record decides");
        };
        assert_eq!(hello.server_name.as_deref(), Some("a.io"));
    }

    #[test]
    fn a_fragmented_hello_waits_for_its_last_record() {
        let msg = small_msg();
        let mut body = msg.clone();
        body.extend_from_slice(&[0x0b; 8]);
        // The hello's second half, and the extra bytes, in a second record.
        let wire = records(&body, &[msg.len() / 2]);
        assert_eq!(
            parse_client_hello(&wire[..wire.len() - 1]),
            Ok(Parsed::Partial)
        );
        assert!(matches!(parse_client_hello(&wire), Ok(Parsed::Complete(_))));
    }

    fn small_expected() -> ClientHello {
        ClientHello {
            server_name: Some("a.io".into()),
            alpn: vec!["h2".into()],
            ech: false,
        }
    }

    fn complete(buf: &[u8]) -> ClientHello {
        match parse_client_hello(buf) {
            Ok(Parsed::Complete(hello)) => hello,
            other => panic!("expected a complete hello, got {other:?}"),
        }
    }

    fn assert_prefixes_partial(wire: &[u8]) {
        for end in 0..wire.len() {
            assert_eq!(
                parse_client_hello(&wire[..end]),
                Ok(Parsed::Partial),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn parses_sni_alpn_ech_with_large_key_share() {
        let msg = message(&big_exts()).out;
        assert!(msg.len() > 1500, "hello is {} bytes", msg.len());
        let wire = records(&msg, &[]);
        assert_eq!(complete(&wire), big_expected());
        // Trailing bytes (the next record, payload) are ignored.
        let mut longer = wire.clone();
        longer.extend_from_slice(b"\x14\x03\x03\x00\x01\x01garbage");
        assert_eq!(complete(&longer), big_expected());
    }

    #[test]
    fn every_prefix_is_partial() {
        let msg = message(&big_exts()).out;
        assert_prefixes_partial(&records(&msg, &[]));
        assert_prefixes_partial(&records(&msg, &[1, 4, 700]));
        assert_prefixes_partial(OPENSSL_HELLO);
    }

    #[test]
    fn every_split_into_two_records_parses_the_same() {
        let msg = message(&big_exts()).out;
        for cut in 1..msg.len() {
            assert_eq!(
                complete(&records(&msg, &[cut])),
                big_expected(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_split_into_three_records_parses_the_same() {
        let msg = small_msg();
        for a in 1..msg.len() {
            for b in a + 1..msg.len() {
                assert_eq!(complete(&records(&msg, &[a, b])), small_expected());
            }
        }
        let big = message(&big_exts()).out;
        for a in (1..big.len()).step_by(37) {
            for b in (a + 1..big.len()).step_by(53) {
                assert_eq!(complete(&records(&big, &[a, b])), big_expected());
            }
        }
    }

    #[test]
    fn one_byte_records_parse() {
        let msg = small_msg();
        let cuts: Vec<usize> = (1..msg.len()).collect();
        let wire = records(&msg, &cuts);
        assert_eq!(complete(&wire), small_expected());
        assert_prefixes_partial(&wire);
    }

    #[test]
    fn record_versions_0300_to_0304_are_accepted() {
        for minor in 0..=4 {
            let mut wire = records(&small_msg(), &[10]);
            wire[2] = minor;
            let second = 5 + 10 + 2;
            wire[second] = minor;
            assert_eq!(complete(&wire), small_expected(), "3.{minor}");
        }
    }

    #[test]
    fn captured_openssl_hello() {
        let hello = complete(OPENSSL_HELLO);
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
        assert!(!hello.ech);
    }

    #[test]
    fn hello_without_extensions_or_names() {
        let mut w = Writer::default();
        w.u8(HANDSHAKE_CLIENT_HELLO);
        w.vec(3, false, |w| {
            w.u16(0x0300);
            w.bytes(&[0; 32]);
            w.u8(0);
            w.vec(2, false, |w| w.u16(0x000a));
            w.bytes(&[1, 0]);
        });
        assert_eq!(complete(&records(&w.out, &[])), ClientHello::default());
        let only_grease = message(&[Ext::Grease(0x1a1a), Ext::Raw(0xff01, vec![0])]).out;
        assert_eq!(
            complete(&records(&only_grease, &[])),
            ClientHello::default()
        );
    }

    #[test]
    fn server_name_entries_of_other_types_are_skipped() {
        let mut data = vec![0, 0, 0, 0];
        data.extend_from_slice(&[7, 0, 2, b'x', b'y']);
        data.extend_from_slice(&[0, 0, 3, b'a', b'.', b'B']);
        let list_len = u16::try_from(data.len() - 4).unwrap().to_be_bytes();
        data[2..4].copy_from_slice(&list_len);
        let msg = message(&[Ext::Raw(EXT_SERVER_NAME, data[2..].to_vec())]).out;
        assert_eq!(
            complete(&records(&msg, &[])).server_name.as_deref(),
            Some("a.b")
        );
    }

    #[test]
    fn largest_hello_fits_the_read_cap() {
        let base = message(&[Ext::Sni("a.io"), Ext::Raw(21, vec![])]).out;
        let pad = MAX_HELLO_LEN + 4 - base.len();
        let msg = message(&[Ext::Sni("a.io"), Ext::Raw(21, vec![0; pad])]).out;
        assert_eq!(msg.len(), MAX_HELLO_LEN + 4);
        let wire = records(&msg, &[MAX_RECORD_LEN]);
        assert!(wire.len() <= MAX_HELLO_BYTES);
        assert_eq!(complete(&wire).server_name.as_deref(), Some("a.io"));

        let too_big = message(&[Ext::Sni("a.io"), Ext::Raw(21, vec![0; pad + 1])]).out;
        let wire = records(&too_big, &[MAX_RECORD_LEN]);
        assert_eq!(parse_client_hello(&wire[..9]), Err(TlsError::TooLarge));
    }

    #[test]
    fn too_many_records_hit_the_read_cap() {
        let msg = message(&[Ext::Sni("a.io"), Ext::Raw(21, vec![0; 4000])]).out;
        let cuts: Vec<usize> = (1..msg.len()).collect();
        let wire = records(&msg, &cuts);
        assert!(wire.len() > MAX_HELLO_BYTES);
        assert_eq!(
            parse_client_hello(&wire[..MAX_HELLO_BYTES - 1]),
            Ok(Parsed::Partial)
        );
        assert_eq!(
            parse_client_hello(&wire[..MAX_HELLO_BYTES]),
            Err(TlsError::TooLarge)
        );
        assert_eq!(parse_client_hello(&wire), Err(TlsError::TooLarge));
    }

    #[test]
    fn sslv2_compatible_hello() {
        // SSLv2 CLIENT-HELLO header offering TLS 1.0, 3 cipher specs,
        // no session id, 16-byte challenge.
        let mut v2 = vec![
            0x80, 0x1f, 0x01, 0x03, 0x01, 0x00, 0x09, 0x00, 0x00, 0x00, 0x10,
        ];
        v2.extend_from_slice(&[0x00, 0x00, 0x2f, 0x00, 0x00, 0x35, 0x01, 0x00, 0x80]);
        v2.extend_from_slice(&[0xab; 16]);
        assert_eq!(complete(&v2), ClientHello::default());
        assert_eq!(parse_client_hello(&v2[..1]), Ok(Parsed::Partial));
        assert_eq!(parse_client_hello(&v2[..2]), Ok(Parsed::Partial));
        assert_eq!(complete(&v2[..3]), ClientHello::default());
        assert_eq!(
            parse_client_hello(&[0x80, 0x1f, 0x04]),
            Err(TlsError::NotTls)
        );
        assert_eq!(parse_client_hello(&[0x80, 0x02]), Err(TlsError::NotTls));
    }

    #[test]
    fn not_tls() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"G",
            b"\x00",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x16\x02",
            b"\x16\x03\x05",
            b"\x17\x03\x03\x00\x10",
            b"\x15\x03\x03\x00\x02\x02\x28",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(
                parse_client_hello(input),
                Err(TlsError::NotTls),
                "{input:?}"
            );
        }
        assert_eq!(parse_client_hello(b""), Ok(Parsed::Partial));
    }

    #[test]
    fn broken_record_layer_is_malformed() {
        let msg = small_msg();
        let two = records(&msg, &[10]);
        let second = 5 + 10;
        // Second record: alert content type, major version 2, version 3.5.
        for (at, value) in [(second, 0x15), (second + 1, 2), (second + 2, 5)] {
            let mut bad = two.clone();
            bad[at] = value;
            assert!(
                matches!(parse_client_hello(&bad), Err(TlsError::Malformed(_))),
                "{at}"
            );
            // Detected as soon as the offending byte arrives.
            assert!(matches!(
                parse_client_hello(&bad[..=at]),
                Err(TlsError::Malformed(_))
            ));
        }
        let empty = [CONTENT_HANDSHAKE, 3, 1, 0, 0];
        assert_eq!(
            parse_client_hello(&empty),
            Err(malformed("empty handshake record"))
        );
        let huge = [CONTENT_HANDSHAKE, 3, 1, 0x40, 0x01];
        assert_eq!(
            parse_client_hello(&huge),
            Err(malformed("record longer than 2^14 bytes"))
        );
        let server_hello = [CONTENT_HANDSHAKE, 3, 3, 0, 4, 2];
        assert!(matches!(
            parse_client_hello(&server_hello),
            Err(TlsError::Malformed(_))
        ));
        let huge_hello = [CONTENT_HANDSHAKE, 3, 1, 0, 4, 1, 0, 0x40, 0x01];
        assert_eq!(parse_client_hello(&huge_hello), Err(TlsError::TooLarge));
        let max_hello = [CONTENT_HANDSHAKE, 3, 1, 0, 4, 1, 0, 0x40, 0x00];
        assert_eq!(parse_client_hello(&max_hello), Ok(Parsed::Partial));
    }

    #[test]
    fn handshake_length_off_by_one() {
        let mut msg = message(&big_exts()).out;
        let len = u32::from_be_bytes([0, msg[1], msg[2], msg[3]]);
        let set = |msg: &mut Vec<u8>, v: u32| msg[1..4].copy_from_slice(&v.to_be_bytes()[1..]);
        set(&mut msg, len + 1);
        assert_eq!(parse_client_hello(&records(&msg, &[])), Ok(Parsed::Partial));
        set(&mut msg, len - 1);
        let got = parse_client_hello(&records(&msg, &[]));
        assert!(matches!(got, Err(TlsError::Malformed(_))), "{got:?}");
    }

    #[test]
    fn every_inner_length_off_by_one_is_malformed() {
        let w = message(&big_exts());
        assert!(w.lens.len() > 15);
        for &(at, width) in &w.lens {
            let mut be = [0u8; 4];
            be[4 - width..].copy_from_slice(&w.out[at..at + width]);
            let len = u32::from_be_bytes(be);
            for delta in [1i64, -1, 1000, -(i64::from(len))] {
                let Ok(new) = u32::try_from(i64::from(len) + delta) else {
                    continue;
                };
                if new == len || new >= 1 << (8 * width) {
                    continue;
                }
                let mut msg = w.out.clone();
                msg[at..at + width].copy_from_slice(&new.to_be_bytes()[4 - width..]);
                let got = parse_client_hello(&records(&msg, &[]));
                assert!(
                    matches!(got, Err(TlsError::Malformed(_))),
                    "length at {at} set to {new}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_bodies() {
        let cases: Vec<(&str, Vec<Ext>)> = vec![
            (
                "duplicate extension",
                vec![Ext::Sni("a"), Ext::Alpn(&["h2"]), Ext::Sni("b")],
            ),
            (
                "duplicate extension",
                vec![Ext::Grease(0x2a2a), Ext::Grease(0x2a2a)],
            ),
            (
                "invalid host name in server_name",
                vec![Ext::Sni("exa mple.com")],
            ),
            ("invalid host name in server_name", vec![Ext::Sni("")]),
            ("invalid host name in server_name", vec![Ext::Sni("a..b")]),
            ("invalid host name in server_name", vec![Ext::Sni("::1")]),
            ("empty ALPN protocol name", vec![Ext::Alpn(&["h2", ""])]),
            (
                "ALPN extension length mismatch or empty list",
                vec![Ext::Alpn(&[])],
            ),
            (
                "server_name extension length mismatch or empty list",
                vec![Ext::Raw(EXT_SERVER_NAME, vec![0, 0])],
            ),
            (
                "more than one host_name in server_name",
                vec![Ext::Raw(
                    EXT_SERVER_NAME,
                    vec![0, 8, 0, 0, 1, b'a', 0, 0, 1, b'b'],
                )],
            ),
        ];
        for (why, exts) in cases {
            let msg = message(&exts).out;
            assert_eq!(parse_client_hello(&records(&msg, &[])), Err(malformed(why)));
        }
    }

    #[test]
    fn malformed_fixed_fields() {
        let msg = small_msg();
        let body = 4;
        let session_id = body + 2 + 32;
        let patch = |at: usize, value: u8| {
            let mut m = msg.clone();
            m[at] = value;
            parse_client_hello(&records(&m, &[]))
        };
        assert_eq!(patch(body, 2), Err(malformed("legacy_version is not 3.x")));
        assert_eq!(
            patch(session_id, 33),
            Err(malformed("session id longer than 32 bytes"))
        );
        let suites = session_id + 1 + 32;
        assert_eq!(
            patch(suites + 1, 7),
            Err(malformed("cipher suite list empty or of odd length"))
        );
        assert_eq!(
            patch(suites + 1, 0),
            Err(malformed("cipher suite list empty or of odd length"))
        );
        let compression = suites + 2 + 8;
        assert_eq!(
            patch(compression, 0),
            Err(malformed("no compression method"))
        );
        // A spare byte after the extensions, inside the declared body.
        let mut m = msg.clone();
        m.push(0);
        let len = u32::try_from(m.len() - 4).unwrap().to_be_bytes();
        m[1..4].copy_from_slice(&len[1..]);
        assert_eq!(
            parse_client_hello(&records(&m, &[])),
            Err(malformed("bytes after the extensions"))
        );
    }

    #[test]
    fn alert_bytes() {
        assert_eq!(
            unrecognized_name_alert(),
            [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]
        );
    }

    #[test]
    fn errors_display() {
        assert_eq!(TlsError::NotTls.to_string(), "not a TLS ClientHello");
        assert!(malformed("x").to_string().ends_with(": x"));
        assert!(TlsError::TooLarge.to_string().contains("16384"));
    }

    /// Checks one input: no panic, and any answer other than `Partial` for a
    /// prefix is the answer for the whole input.
    fn check_consistent(input: &[u8], cut: usize) {
        let full = parse_client_hello(input);
        let prefix = parse_client_hello(&input[..cut.min(input.len())]);
        if prefix != Ok(Parsed::Partial) {
            assert_eq!(prefix, full, "input {input:?} cut at {cut}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift::new(0x5eed_0001);
        for i in 0..20_000 {
            let len = rng.below(64);
            let mut input = rng.bytes(len);
            // Half of the inputs get a plausible record header, to go deeper.
            if i % 2 == 0 {
                let head = [CONTENT_HANDSHAKE, 3, rng.below(5) as u8, 0, rng.byte(), 1];
                input.splice(0..0, head);
            }
            let cut = rng.below(input.len() + 1);
            check_consistent(&input, cut);
        }
    }

    #[test]
    fn mutated_hellos_never_panic() {
        let mut rng = XorShift::new(0x5eed_0002);
        let seeds = [
            records(&small_msg(), &[]),
            records(&small_msg(), &[3, 40]),
            records(&message(&big_exts()).out, &[]),
            OPENSSL_HELLO.to_vec(),
        ];
        for i in 0..20_000 {
            let input = rng.mutate(&seeds[i % seeds.len()]);
            let cut = rng.below(input.len() + 1);
            check_consistent(&input, cut);
        }
    }
}
