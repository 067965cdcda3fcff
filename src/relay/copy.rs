//! Moves one chunk of bytes from one socket to another, holding a large buffer only while bytes
//! move.
//!
//! A copy thread waits in a blocking `recv` into a small buffer on its own stack
//! ([`wait_and_move`]): one system call per message instead of a poll and a read, and no heap
//! memory held by an idle connection. When that small read comes back full, more is probably
//! queued, and the thread drains it with [`move_chunk`]: through a pooled pipe with splice, or
//! through a 64 KiB buffer borrowed from a shared free list for one read and the writes that
//! follow.

use socket2::Socket;

use rustix::net::RecvFlags;

use super::chunk::{self, ChunkError, Moved, Watch};
use super::splice;

/// Size of the stack buffer a copy thread waits with: a Redis command or reply, a small HTTP
/// request, a TLS record header and most small messages fit; a bigger one fills it and the rest
/// is drained at once through the 64 KiB path (two more system calls). Small so the copy loop's
/// frames stay in the thread's first stack page under musl: at 1.5 KiB each copy thread kept
/// two (docs/performance.md, "At the shape's floor: one stack page, and the connection path").
pub(crate) const WAIT_BUFFER_SIZE: usize = 512;

/// Reads what `src` has (without blocking) and writes all of it to `dst` (blocking, so a slow
/// reader slows the sender down instead of growing memory). The bytes go through a pooled pipe
/// with splice when that pays (see the `splice` module), through a buffer otherwise.
pub(crate) fn move_chunk(
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let result = splice::move_chunk(src, dst, watch)
        .unwrap_or_else(|| chunk::move_through_buffer(src, dst, watch));
    splice::note(&result);
    result
}

/// Waits until `src` has bytes (blocking, up to the socket's receive timeout), then moves what fits
/// in [`WAIT_BUFFER_SIZE`] bytes to `dst`. `Moved::WouldBlock` means the receive timeout passed.
pub(crate) fn wait_and_move(
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Result<Moved, ChunkError> {
    let mut buffer = [0u8; WAIT_BUFFER_SIZE];
    let result = chunk::move_through(&mut buffer, RecvFlags::empty(), src, dst, watch);
    splice::note(&result);
    result
}
