//! How one direction ends, and what its end does to the sockets: a half-close, a timeout, or a
//! reset passed on after the last words.
//!
//! # Drain, deliver, then reset
//!
//! A peer that resets (a server closing with the client's input unread, as Redis does after a
//! protocol error) usually sent something just before: over a direct connection the other side
//! reads those bytes and then the reset, because the kernel delivers queued data before it
//! reports the reset. Through the relay the same must hold, so a reset is passed on to a socket
//! only once nothing more will be written to it:
//! - The direction that reads from the peer that reset has read all it sent (a read returns queued
//!   bytes before the reset) and written it on. It waits until the other side has acknowledged
//!   those bytes (`sys::net::abort_once_sent`), then resets that socket.
//! - The direction that met the reset on a write cannot deliver what it holds, and must not touch
//!   the socket it reads either: the other direction is still writing the peer's last words into
//!   it. It waits for the other direction to end and leaves the reset to it; if that direction had
//!   already ended with a half-close, it passes the reset on itself, once the bytes before the FIN
//!   (and the FIN) have been acknowledged.
//!
//! Both waits end at [`RESET_LINGER`] at the latest, after which both sockets are reset whatever
//! is still queued: a peer that never reads cannot hold a connection open.

use std::io;
use std::net::Shutdown;

use socket2::Socket;
use std::time::{Duration, Instant};

use crate::sys::net;

use super::chunk::ChunkError;
use super::connection::{Connection, Stop};
use super::outcome::{Direction, End};

/// The longest a reset waits for the last words before it to leave (docs/operations.md,
/// "Resets").
pub(crate) const RESET_LINGER: Duration = Duration::from_secs(2);

/// Which of a direction's two sockets its end came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The socket it reads: its peer ended or failed.
    Source,
    /// The socket it writes: its peer failed, or stopped reading until the limits ran out.
    Destination,
}

/// How a failed chunk ends its direction, and on which side.
pub(super) fn chunk_end(err: ChunkError) -> (End, Side) {
    match err {
        ChunkError::Stalled => (End::Timeout, Side::Destination),
        ChunkError::Read(err) => (failure(&err), Side::Source),
        ChunkError::Write(err) => (failure(&err), Side::Destination),
        // Not an end: the copy loop takes its safe point before this.
        ChunkError::Interrupted(_) => (End::Error(io::ErrorKind::Interrupted), Side::Destination),
    }
}

/// What a read of zero bytes means. Linux hands a received reset to one system call only: if the
/// thread writing to this socket took it, the read here sees end of stream, and passing that on as
/// a half-close would turn the peer's reset into a clean FIN. A reset leaves the socket closed (no
/// peer address), a FIN does not; once this side has sent its own FIN the socket may close
/// normally, so a missing peer means a reset only if no half-close came before the look. Once
/// half-closed, the look (a system call) is skipped; otherwise the mark is read again after it,
/// because the other direction may half-close while it runs and the socket then close normally.
pub(super) fn end_of_stream(conn: &Connection, src: &Socket) -> End {
    if conn.is_half_closed() {
        return End::Eof;
    }
    let no_peer = matches!(src.peer_addr(), Err(err) if err.kind() == io::ErrorKind::NotConnected);
    if no_peer && !conn.is_half_closed() {
        End::Reset
    } else {
        End::Eof
    }
}

pub(super) fn failure(err: &io::Error) -> End {
    if net::is_reset(err) {
        End::Reset
    } else {
        End::Error(err.kind())
    }
}

/// Applies the end of `direction` (which came from `side`) to the sockets, records it, and says
/// how it ended. If something else stopped the connection first (a cut, a timeout or a failure
/// in the other direction), that is what this direction reports.
pub(super) fn finish(
    conn: &Connection,
    direction: Direction,
    (src, dst): (&Socket, &Socket),
    end: End,
    side: Side,
) -> End {
    match end {
        End::Eof if !conn.is_stopped() => {
            // Half-close: the destination's peer sees end of stream, the other direction goes on.
            // Marked first, so the other direction, whose peer may answer this FIN with its own
            // (which closes the socket), reads that as the end of stream it is.
            conn.mark_half_closed();
            let _ = dst.shutdown(Shutdown::Write);
            conn.set_end(direction, End::Eof);
            return End::Eof;
        }
        End::Timeout if conn.set_stop(Stop::TimedOut) => {
            conn.shutdown_both();
            conn.set_end(direction, End::Timeout);
            return End::Timeout;
        }
        End::Reset | End::Error(_) if conn.set_stop(Stop::Aborted) => {
            conn.set_end(direction, end);
            pass_reset_on(conn, direction, (src, dst), side);
            return end;
        }
        _ => {}
    }
    let stop = conn.stop();
    let reported = match stop {
        Stop::TimedOut => End::Timeout,
        Stop::Running => end,
        Stop::Cut | Stop::Aborted => End::Shutdown,
    };
    conn.set_end(direction, reported);
    if stop == Stop::Aborted {
        pass_reset_on(conn, direction, (src, dst), side);
    }
    reported
}

/// The sockets' part of a failure, once `direction` has recorded its end (see the module doc).
fn pass_reset_on(
    conn: &Connection,
    direction: Direction,
    (src, dst): (&Socket, &Socket),
    side: Side,
) {
    let deadline = Instant::now() + RESET_LINGER;
    match side {
        Side::Source => {
            net::abort_once_sent(dst, deadline);
            net::abort(src);
        }
        Side::Destination => match conn.wait_for_end(direction.other(), deadline) {
            Some(End::Eof) => {
                net::abort_once_sent(src, deadline);
                net::abort(dst);
            }
            Some(_) => net::abort(dst),
            None => conn.abort_both(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_are_classified_as_resets_or_errors() {
        use io::ErrorKind::*;
        for kind in [ConnectionReset, ConnectionAborted, BrokenPipe, NotConnected] {
            assert_eq!(failure(&io::Error::from(kind)), End::Reset, "{kind:?}");
        }
        for kind in [TimedOut, PermissionDenied, OutOfMemory] {
            assert_eq!(
                failure(&io::Error::from(kind)),
                End::Error(kind),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_failed_read_ends_on_the_source_and_a_failed_write_on_the_destination() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            chunk_end(ChunkError::Read(reset())),
            (End::Reset, Side::Source)
        );
        assert_eq!(
            chunk_end(ChunkError::Write(reset())),
            (End::Reset, Side::Destination)
        );
        assert_eq!(
            chunk_end(ChunkError::Stalled),
            (End::Timeout, Side::Destination)
        );
    }
}
