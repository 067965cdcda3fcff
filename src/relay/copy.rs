//! Moves one chunk of bytes from one socket to another, holding a large buffer only while bytes
//! move.
//!
//! A copy thread waits in a blocking `recv` into a small buffer on its own stack
//! ([`wait_and_move`]): one system call per message instead of a poll and a read, and no heap
//! memory held by an idle connection. When that small read comes back full, more is probably
//! queued, and the thread drains it with [`move_chunk`]: through a pooled pipe with splice, or
//! through a 64 KiB buffer borrowed from a shared free list for one read and the writes that
//! follow.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Mutex;

use rustix::net::RecvFlags;

/// Size of one copy buffer: large enough for bulk transfers to move in few system calls.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// Size of the stack buffer a copy thread waits with: a typical request or reply fits (a Redis
/// command, an HTTP request head, a TLS handshake message), yet it adds at most one page to the
/// thread's stack.
pub const WAIT_BUFFER_SIZE: usize = 2048;

/// Free buffers kept for reuse; more are freed, so a burst does not pin memory forever.
const MAX_FREE_BUFFERS: usize = 64;

static FREE_BUFFERS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// What one call of [`move_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// `n` bytes were read and all written; `full` says the read filled what was asked (the
    /// buffer, or the pipe on the splice path), so more is probably waiting and the caller may
    /// read again before polling.
    Bytes {
        /// Bytes moved.
        n: usize,
        /// The read filled the whole buffer or pipe.
        full: bool,
    },
    /// Nothing to read yet ([`move_chunk`]), or the receive timeout passed ([`wait_and_move`]).
    WouldBlock,
    /// The source reached end of stream.
    Eof,
}

/// Why a chunk could not be moved.
#[derive(Debug)]
pub enum ChunkError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The destination accepted nothing until the connection's deadline passed.
    Stalled,
}

/// Lets the copy loop report progress and ask whether it may keep waiting on a stalled write.
pub trait Watch {
    /// Bytes moved: the connection is not idle.
    fn progress(&self);
    /// Still within the connection's idle limits?
    fn may_wait(&self) -> bool;
}

/// Reads what `src` has (without blocking) and writes all of it to `dst` (blocking, so a slow
/// reader slows the sender down instead of growing memory). On Linux the bytes go through a
/// pooled pipe with splice when that pays (see the `splice` module), through a buffer otherwise.
pub fn move_chunk(
    src: &TcpStream,
    dst: &TcpStream,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    #[cfg(target_os = "linux")]
    let result = crate::splice::move_chunk(src, dst, watch)
        .unwrap_or_else(|| move_through_buffer(src, dst, watch));
    #[cfg(not(target_os = "linux"))]
    let result = move_through_buffer(src, dst, watch);
    #[cfg(target_os = "linux")]
    crate::splice::note(&result);
    result
}

/// [`move_chunk`] through a buffer borrowed from the free list.
fn move_through_buffer(
    src: &TcpStream,
    dst: &TcpStream,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let mut buffer = take_buffer();
    let result = move_through(&mut buffer, RecvFlags::DONTWAIT, src, dst, watch);
    give_back(buffer);
    result
}

/// Waits until `src` has bytes (blocking, up to the socket's receive timeout), then moves what fits
/// in [`WAIT_BUFFER_SIZE`] bytes to `dst`. `Moved::WouldBlock` means the receive timeout passed.
pub fn wait_and_move(
    src: &TcpStream,
    dst: &TcpStream,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let mut buffer = [0u8; WAIT_BUFFER_SIZE];
    let result = move_through(&mut buffer, RecvFlags::empty(), src, dst, watch);
    #[cfg(target_os = "linux")]
    crate::splice::note(&result);
    result
}

fn move_through(
    buffer: &mut [u8],
    flags: RecvFlags,
    src: &TcpStream,
    dst: &TcpStream,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let n = loop {
        match rustix::net::recv(src, &mut *buffer, flags) {
            Ok((0, _)) => return Ok(Moved::Eof),
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::AGAIN) => return Ok(Moved::WouldBlock),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(ChunkError::Read(errno.into())),
        }
    };
    watch.progress();
    write_all(dst, &buffer[..n], watch)?;
    Ok(Moved::Bytes {
        n,
        full: n == buffer.len(),
    })
}

/// Writes all of `data`, waiting as long as the connection's idle limits allow. The socket's send
/// timeout (see [`crate::net::set_send_timeout`]) makes a stalled write return now and then, so the
/// deadline is checked without a timer thread.
pub fn write_all(dst: &TcpStream, mut data: &[u8], watch: &dyn Watch) -> Result<(), ChunkError> {
    while !data.is_empty() {
        match (&*dst).write(data) {
            Ok(0) => return Err(ChunkError::Write(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                data = &data[n..];
                watch.progress();
            }
            Err(err) => retry_write(err, watch)?,
        }
    }
    Ok(())
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
