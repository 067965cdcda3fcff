//! What both data paths share: the result of moving one chunk, the copy loop's view of its
//! connection, the pooled copy buffers, and the buffer path itself (one `recv`, then every
//! `write` it takes). The splice path (`splice`) falls back to it chunk by chunk.

use socket2::Socket;
use std::io::{self, Write};
use std::sync::Mutex;

use rustix::net::RecvFlags;

/// Size of one copy buffer: large enough for bulk transfers to move in few system calls.
pub(crate) const BUFFER_SIZE: usize = 64 * 1024;

/// Free buffers kept for reuse; more are freed, so a burst does not pin memory forever.
const MAX_FREE_BUFFERS: usize = 64;

static FREE_BUFFERS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// What moving one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moved {
    /// `n` bytes were read and all written; `full` says the read filled what was asked (the
    /// buffer, or the pipe on the splice path), so more is probably waiting and the caller may
    /// read again at once, without waiting for data.
    Bytes {
        /// Bytes moved.
        n: usize,
        /// The read filled the whole buffer or pipe.
        full: bool,
    },
    /// Nothing to read yet (a non-blocking read), or the receive timeout passed (a blocking one).
    WouldBlock,
    /// The source reached end of stream.
    Eof,
    /// A wait for bytes was interrupted because an upgrade asked the copy threads to park:
    /// nothing was read.
    Interrupted,
}

/// Why a chunk could not be moved.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The destination accepted nothing until the connection's deadline passed.
    Stalled,
    /// A write was interrupted because an upgrade asked the copy threads to park.
    Interrupted(Interruption),
}

/// Where a chunk stopped when its write was interrupted for a park: how many of its bytes
/// reached the destination, and the rest, in order, which nobody has written yet.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Interruption {
    /// Bytes of the chunk written.
    pub(crate) moved: usize,
    /// Bytes of the chunk read but not written.
    pub(crate) held: Vec<u8>,
}

impl ChunkError {
    /// For a chunk of `n` bytes: a write interrupted holding some bytes moved the rest.
    pub(crate) fn of_chunk(self, n: usize) -> ChunkError {
        match self {
            ChunkError::Interrupted(stop) => ChunkError::Interrupted(Interruption {
                moved: n - stop.held.len(),
                held: stop.held,
            }),
            other => other,
        }
    }
}

/// Lets the copy loop report progress and ask whether it may keep waiting on a stalled write.
pub(crate) trait Watch {
    /// Bytes moved: the connection is not idle.
    fn progress(&self);
    /// Still within the connection's idle limits?
    fn may_wait(&self) -> bool;
    /// Has an upgrade asked the copy threads to park? An interrupted wait then stops for the
    /// safe point instead of trying again.
    fn park_asked(&self) -> bool {
        false
    }
}

/// Moves one chunk through a buffer borrowed from the free list: the path for every chunk that
/// splice does not take.
pub(crate) fn move_through_buffer(
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let mut buffer = take_buffer();
    let result = move_through(&mut buffer, RecvFlags::DONTWAIT, src, dst, watch);
    give_back(buffer);
    result
}

/// Reads once into `buffer` (with `flags`), then writes all of it to `dst`. Inlined into the
/// copy loop: an idle copy thread waits in it, and every frame counts (see "One stack page per
/// idle thread" in the relay's module doc).
#[inline(always)]
pub(crate) fn move_through(
    buffer: &mut [u8],
    flags: RecvFlags,
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let n = loop {
        match rustix::net::recv(src, &mut *buffer, flags) {
            Ok((0, _)) => return Ok(Moved::Eof),
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::AGAIN) => return Ok(Moved::WouldBlock),
            Err(rustix::io::Errno::INTR) if watch.park_asked() => return Ok(Moved::Interrupted),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(ChunkError::Read(errno.into())),
        }
    };
    watch.progress();
    write_all(dst, &buffer[..n], watch).map_err(|err| err.of_chunk(n))?;
    Ok(Moved::Bytes {
        n,
        full: n == buffer.len(),
    })
}

/// Writes all of `data`, waiting as long as the connection's idle limits allow. The socket's send
/// timeout (set by the copy loop from its tick) makes a stalled write return now and then, so the
/// deadline is checked without a timer thread. Interrupted for a park, it stops with what is
/// left of `data` ([`ChunkError::Interrupted`], `moved` 0).
pub(crate) fn write_all(
    dst: &Socket,
    mut data: &[u8],
    watch: &dyn Watch,
) -> Result<(), ChunkError> {
    while !data.is_empty() {
        match (&*dst).write(data) {
            Ok(0) => return Err(ChunkError::Write(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                data = &data[n..];
                watch.progress();
            }
            Err(err) if interrupted_for_park(&err, watch) => {
                return Err(ChunkError::Interrupted(Interruption {
                    moved: 0,
                    held: data.to_vec(),
                }))
            }
            Err(err) => retry_write(err, watch)?,
        }
    }
    Ok(())
}

/// An interrupted write while an upgrade asks the copy threads to park: stop for the safe point.
pub(crate) fn interrupted_for_park(err: &io::Error, watch: &dyn Watch) -> bool {
    err.kind() == io::ErrorKind::Interrupted && watch.park_asked()
}

/// What a failed blocking write (or splice out of a pipe) means: `Ok` to try again after a signal,
/// or after the send timeout's tick while the connection is within its idle limits; otherwise why
/// the chunk cannot be moved. Both data paths use it, so they treat a tick alike.
pub(crate) fn retry_write(err: io::Error, watch: &dyn Watch) -> Result<(), ChunkError> {
    match err.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if watch.may_wait() => Ok(()),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Err(ChunkError::Stalled),
        _ => Err(ChunkError::Write(err)),
    }
}

/// Borrows a buffer of [`BUFFER_SIZE`] bytes; give it back with [`give_back`].
pub(crate) fn take_buffer() -> Box<[u8]> {
    let reused = FREE_BUFFERS.lock().ok().and_then(|mut free| free.pop());
    reused.unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice())
}

/// Returns a buffer to the free list, or frees it if the list is full.
pub(crate) fn give_back(buffer: Box<[u8]>) {
    if let Ok(mut free) = FREE_BUFFERS.lock() {
        if free.len() < MAX_FREE_BUFFERS {
            free.push(buffer);
        }
    }
}
