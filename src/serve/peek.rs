//! Reads a client's first bytes until a reader decides (Complete or error), the byte cap is
//! reached, or the deadline passes. Everything read is kept, to be sent upstream unchanged.

use socket2::Socket;
use std::fmt;
use std::io::{self, Read};
use std::time::Instant;

use crate::proto::{http, tls, Parsed};
use crate::sys::net;

use super::clients::Evicted;

/// Most bytes read while deciding; more without a decision closes the client. The readers answer
/// within their own caps (the largest ClientHello, the longest HTTP head), so at this many bytes
/// every one of them has decided.
pub(crate) const PEEK_CAP: usize = max(tls::MAX_HELLO_BYTES, http::MAX_HEAD_BYTES);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Why no decision could be made.
#[derive(Debug)]
pub(crate) enum PeekError<E> {
    /// The client sent nothing decisive before the deadline.
    Timeout,
    /// The client closed before the reader could decide.
    Closed,
    /// The cap was reached without a decision.
    TooLarge,
    /// Reading failed.
    Io(io::Error),
    /// The reader refused the bytes.
    Invalid(E),
    /// A live upgrade held the connection where it was: what was read is in the buffer.
    Held,
    /// The connection lost its place in the peek phase (see `clients::Peeking`).
    Evicted(Evicted),
}

impl<E: fmt::Display> fmt::Display for PeekError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeekError::Timeout => f.write_str("peek-timeout"),
            PeekError::Closed => f.write_str("closed-before-deciding"),
            PeekError::TooLarge => write!(f, "too-large (over {PEEK_CAP} bytes)"),
            PeekError::Io(err) => write!(f, "read-error ({err})"),
            PeekError::Invalid(err) => write!(f, "invalid ({err})"),
            PeekError::Held => f.write_str("upgraded"),
            PeekError::Evicted(_) => f.write_str("evicted"),
        }
    }
}

/// Appends to `buf` what the client sends until `decide` returns Complete or an error, reading
/// only what is needed and never more than [`PEEK_CAP`] bytes in all. A wait interrupted by a
/// signal while `upgrading` says so ends with [`PeekError::Held`] (see `sys::wake`).
pub(crate) fn read_until<T, E>(
    stream: &Socket,
    buf: &mut Vec<u8>,
    deadline: Instant,
    upgrading: &dyn Fn() -> bool,
    decide: impl Fn(&[u8]) -> Result<Parsed<T>, E>,
) -> Result<T, PeekError<E>> {
    loop {
        if !buf.is_empty() {
            match decide(buf) {
                Ok(Parsed::Complete(value)) => return Ok(value),
                Ok(Parsed::Partial) => {}
                Err(err) => return Err(PeekError::Invalid(err)),
            }
        }
        if buf.len() >= PEEK_CAP {
            return Err(PeekError::TooLarge);
        }
        wait_readable(stream, deadline, upgrading)?;
        let start = buf.len();
        buf.resize(PEEK_CAP, 0);
        let read = (&*stream).read(&mut buf[start..]);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Err(PeekError::Closed),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(PeekError::Io(err)),
        }
    }
}

fn wait_readable<E>(
    stream: &Socket,
    deadline: Instant,
    upgrading: &dyn Fn() -> bool,
) -> Result<(), PeekError<E>> {
    loop {
        if upgrading() {
            return Err(PeekError::Held);
        }
        match net::wait_once(stream, net::PollFlags::IN, deadline) {
            Ok(Some(true)) => return Ok(()),
            Ok(Some(false)) => return Err(PeekError::Timeout),
            // Interrupted: an upgrade asking, or another signal.
            Ok(None) => {}
            Err(err) => return Err(PeekError::Io(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::net::TcpStream;
    use std::time::Duration;

    fn pair() -> (TcpStream, Socket) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0.into())
    }

    /// Complete once a newline has arrived.
    fn line(buf: &[u8]) -> Result<Parsed<usize>, &'static str> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => Ok(Parsed::Complete(i)),
            None if buf.starts_with(b"!") => Err("bang"),
            None => Ok(Parsed::Partial),
        }
    }

    #[test]
    fn keeps_every_byte_read() {
        let (mut client, server) = pair();
        client.write_all(b"hel").unwrap();
        let writer = std::thread::spawn(move || {
            client.write_all(b"lo\nrest").unwrap();
            client
        });
        let mut buf = Vec::new();
        let at = read_until(
            &server,
            &mut buf,
            Instant::now() + Duration::from_secs(10),
            &|| false,
            line,
        )
        .unwrap();
        assert_eq!(at, 5);
        assert!(buf.starts_with(b"hello\n"));
        drop(writer.join());
    }

    #[test]
    fn silent_clients_time_out_and_closers_are_noticed() {
        let (client, server) = pair();
        let mut buf = Vec::new();
        let err = read_until(
            &server,
            &mut buf,
            Instant::now() + Duration::from_millis(20),
            &|| false,
            line,
        )
        .unwrap_err();
        assert!(matches!(err, PeekError::Timeout));
        drop(client);
        let err = read_until(
            &server,
            &mut buf,
            Instant::now() + Duration::from_secs(10),
            &|| false,
            line,
        )
        .unwrap_err();
        assert!(matches!(err, PeekError::Closed));
    }

    #[test]
    fn reader_errors_and_the_cap_stop_reading() {
        let (mut client, server) = pair();
        client.write_all(b"!").unwrap();
        let mut buf = Vec::new();
        let err = read_until(
            &server,
            &mut buf,
            Instant::now() + Duration::from_secs(10),
            &|| false,
            line,
        )
        .unwrap_err();
        assert!(matches!(err, PeekError::Invalid("bang")));
        let (mut client, server) = pair();
        let big = vec![b'a'; PEEK_CAP + 10];
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&big);
            client
        });
        let mut buf = Vec::new();
        let err = read_until(
            &server,
            &mut buf,
            Instant::now() + Duration::from_secs(10),
            &|| false,
            line,
        )
        .unwrap_err();
        assert!(matches!(err, PeekError::TooLarge));
        assert_eq!(buf.len(), PEEK_CAP);
        drop(writer.join());
    }
}
