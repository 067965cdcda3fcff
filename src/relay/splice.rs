//! Linux fast path for the copy loop's `move_chunk`: bulk bytes go socket -> pipe -> socket with
//! `splice(2)` and never enter user space.
//!
//! The shape follows the standard library's `kernel_copy`: probe at first use, use the fast path
//! while it works, fall back to the plain path when the kernel refuses, and remember the refusal
//! so the probe is not paid again. Here the probe is the first real chunk: if the kernel answers
//! `ENOSYS`, `EPERM`, `EINVAL` or `EOPNOTSUPP` before splice has ever moved a byte in this
//! process, splice is off for good and the buffer path's `recv`/`write` path takes over. After
//! that, the same answers only send that one chunk down the plain path. Any other error is a read
//! or write failure of the connection, exactly as on the plain path.
//!
//! Only bulk transfers use it: a copy thread splices its next chunk only if its last chunk was at
//! least 16 KiB. A small request or answer takes the buffer path, whose two system calls (recv,
//! write) are fewer than splice's three (FIONREAD, two splices) and whose copy is too small to
//! matter.
//!
//! A pipe is borrowed from a shared free list only while bytes move, as the copy buffers are, and
//! goes back only when it is empty. The number of pipes alive is capped (see
//! [`pipe_budget`], which also keeps their descriptors out of the connection cap);
//! when none is free and the cap is reached, the chunk takes the buffer path. Nothing ever waits
//! for a pipe.
//!
//! [`turn_off`] turns the fast path off for good, when the configuration says so
//! (`Config::splice`; the binary sets it from `TCP_ROUTER_NO_SPLICE`).
//!
//! Advantages:
//! - No copy of the payload through user space: less proxy CPU per byte on bulk transfers (see
//!   docs/performance.md, "Bulk: splice and pipe size"), and no buffer memory while bytes move.
//! - The same blocking, one-chunk-at-a-time shape as the buffer path: flow control, byte counts,
//!   half-close, resets and idle limits are untouched.
//!
//! Drawbacks:
//! - Two descriptors per pipe in use, which must come out of the open-files budget.
//! - One more system call per chunk (FIONREAD: a splice from a blocking socket would wait for
//!   data), paid off only on big chunks, hence the bulk-only rule.
//! - Up to 256 KiB (the pipe size) in flight per direction instead of 64 KiB (a copy buffer):
//!   kernel memory held while a slow reader stalls the write.
//! - Pipe buffers count against the per-user `fs.pipe-user-pages-soft` budget (64 MiB by
//!   default; not enforced for root). Past it, the kernel refuses to grow pipes and hands out tiny
//!   ones that would be slower than a buffer; such a pipe is refused and the pool's cap lowered
//!   to what the kernel allows.
//! - Splice to a socket does not pass `MSG_NOSIGNAL`, so writing to a closed peer raises SIGPIPE.
//!   Rust programs ignore SIGPIPE by default (then the error is `EPIPE`, a reset, as on the
//!   buffer path); a program embedding this library that restores the default action would be
//!   killed instead.
//! - A splice from a socket stops at TCP urgent data, and then returns 0 as if at end of stream
//!   while poll says readable. FIONREAD counts only the bytes before the mark, so such a chunk
//!   goes to the buffer path, whose `recv` steps over the urgent byte.

use socket2::Socket;
use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::io::Errno;
use rustix::pipe::{fcntl_getpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};

use super::chunk::{self, ChunkError, Moved, Watch};
use crate::sys::limits;
use crate::sys::sync::lock;

/// Most pipes the splice pool keeps alive (free and in use): 2,048 descriptors. A pipe is held
/// only while a chunk moves, so this bounds chunks moving (or stalled on a slow reader) at once,
/// not connections; past it, chunks take the buffer path.
pub(crate) const MAX_PIPES: u64 = 1024;

/// Each pipe is two descriptors, one per end.
pub(crate) const FDS_PER_PIPE: u64 = 2;

/// Pipes the splice pool may have alive under `open_files`: [`MAX_PIPES`], but never more than
/// a quarter of the descriptors, so a small limit (1,024 is common) still leaves most of them to
/// connections.
pub(crate) fn pipe_budget(open_files: u64) -> u64 {
    MAX_PIPES.min(open_files / (4 * FDS_PER_PIPE))
}

/// The pipe size asked of the kernel, and so the most one chunk moves. A bigger pipe costs less
/// CPU per byte (measured on loopback: docs/performance.md, "Bulk: splice and pipe size"); 256 KiB
/// keeps most of 1 MiB's gain at a quarter of its cost in memory held per stalled direction and in
/// the per-user pipe budget (256 such pipes fill the default 64 MiB). Real networks may gain more
/// than loopback (not measured): a pipe holds one fragment per page slot, and with a 1500-byte MTU
/// a fragment is often a single packet, so a 16-slot (64 KiB) pipe could take only ~23 KB a
/// splice.
const PIPE_SIZE: usize = 256 * 1024;

/// The smallest pipe worth using: a pipe smaller than a copy buffer moves less per system call
/// than the buffer path does. The kernel only makes such pipes when the user's pipe budget is
/// exhausted.
const MIN_PIPE_SIZE: usize = chunk::BUFFER_SIZE;

/// A chunk at least this big means a bulk transfer: the next chunk is worth a splice.
const BULK_CHUNK: usize = 16 * 1024;

/// Free pipes kept for reuse; more are closed, so a burst does not pin descriptors and pipe
/// budget forever (the same rule as the copy buffers).
const MAX_FREE_PIPES: usize = 64;

/// Splice has not been tried yet.
const UNKNOWN: u8 = 0;
/// Splice has moved bytes in this process.
const WORKS: u8 = 1;
/// The kernel refused splice before it moved anything, or the configuration turned it off.
const UNAVAILABLE: u8 = 2;

static SPLICE: AtomicU8 = AtomicU8::new(UNKNOWN);

static POOL: OnceLock<PipePool> = OnceLock::new();

thread_local! {
    /// The last chunk this copy thread moved was at least [`BULK_CHUNK`] bytes. A copy thread
    /// serves one direction of one connection at a time; a stale value left by a previous
    /// connection only picks the path of one chunk, never its result.
    static BULK: Cell<bool> = const { Cell::new(false) };
}

/// Moves one chunk from `src` to `dst` through a pooled pipe, with the same results as the buffer
/// path. `None` means "not done, use the buffer path for this chunk": splice is unavailable, the
/// transfer is not bulk, no pipe is free, or this socket cannot splice right now. Nothing has been
/// read from `src` then.
pub(crate) fn move_chunk(
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Option<Result<Moved, ChunkError>> {
    if !BULK.get() || !enabled() {
        return None;
    }
    let pool =
        POOL.get_or_init(|| PipePool::new(pipe_budget(limits::open_files_limit()), PIPE_SIZE));
    move_with(pool, src, dst, watch)
}

/// Records, for this copy thread, what the chunk just moved (by either path) says about the next.
pub(crate) fn note(result: &Result<Moved, ChunkError>) {
    BULK.set(matches!(result, Ok(Moved::Bytes { n, .. }) if *n >= BULK_CHUNK));
}

/// [`move_chunk`] with a given pool, whatever the last chunk was.
fn move_with(
    pool: &PipePool,
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Option<Result<Moved, ChunkError>> {
    // A splice from a blocking socket waits for data whatever SPLICE_F_NONBLOCK says (that flag
    // is for the pipe), and the caller does not wait for data first (it reads again at once after
    // a full chunk). So look first. Nothing queued means end of stream, an error, urgent data at
    // the head or really nothing yet, and the buffer path's recv(MSG_DONTWAIT) tells those apart.
    // With bytes queued a splice returns at once, since only this thread reads `src`, and it
    // stops at urgent data (FIONREAD counts only the bytes before it).
    match rustix::io::ioctl_fionread(src) {
        Ok(queued) if queued > 0 => {}
        _ => return None,
    }
    let mut lease = pool.take()?;
    move_through(&mut lease, src, dst, watch)
}

/// True once splice has moved bytes in this process (and so is in use for bulk chunks).
pub(crate) fn in_use() -> bool {
    SPLICE.load(Ordering::Relaxed) == WORKS
}

fn enabled() -> bool {
    SPLICE.load(Ordering::Relaxed) != UNAVAILABLE
}

/// Turns splice off for good in this process: every chunk takes the buffer path from now on.
pub(crate) fn turn_off() {
    SPLICE.store(UNAVAILABLE, Ordering::Relaxed);
}

/// Errors that mean "this kernel, sandbox or socket does not do splice", not "the connection
/// failed".
fn unsupported(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::OPNOTSUPP
    )
}

/// Splices what `src` has into the leased (empty) pipe, then all of it out to `dst`.
fn move_through(
    lease: &mut Lease<'_>,
    src: &Socket,
    dst: &Socket,
    watch: &dyn Watch,
) -> Option<Result<Moved, ChunkError>> {
    let pipe = lease.pipe();
    let asked = pipe.capacity;
    // NONBLOCK: never wait for room in the pipe (it is empty, so this is only a safeguard).
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let n = loop {
        match splice(src, None, &pipe.write, None, asked, flags) {
            Ok(n) if n > 0 => break n,
            // 0 is end of stream, or urgent data at the head on a blocking socket; EAGAIN is
            // nothing there. The probe in move_with makes these rare; recv tells them apart.
            Ok(_) | Err(Errno::AGAIN) => return None,
            Err(Errno::INTR) => continue,
            Err(errno) if unsupported(errno) => {
                if SPLICE
                    .compare_exchange(UNKNOWN, UNAVAILABLE, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    log::info!("splice refused ({errno}): moving bytes through buffers");
                }
                return None;
            }
            Err(errno) => return Some(Err(ChunkError::Read(errno.into()))),
        }
    };
    lease.filled = n;
    if SPLICE.load(Ordering::Relaxed) == UNKNOWN {
        SPLICE.store(WORKS, Ordering::Relaxed);
        log::debug!("splice works: moving bytes socket -> pipe -> socket");
    }
    watch.progress();
    Some(
        drain(lease, dst, watch)
            .map_err(|err| err.of_chunk(n))
            .map(|()| Moved::Bytes {
                n,
                // A full pipe means more is probably queued: the caller reads again without waiting
                // (the FIONREAD probe makes that safe), which saves CPU per byte (docs/performance.md,
                // "Bulk: splice and pipe size").
                full: n == asked,
            }),
    )
}

/// Writes everything in the leased pipe to `dst`, waiting as long as the connection's idle limits
/// allow, like [`chunk::write_all`].
fn drain(lease: &mut Lease<'_>, dst: &Socket, watch: &dyn Watch) -> Result<(), ChunkError> {
    while lease.filled > 0 {
        // Blocking: the socket's send timeout makes a stalled splice return now and then, as a
        // stalled write does, so the deadline is checked. The pipe holds `filled` bytes, so the
        // pipe side never blocks.
        match splice(
            &lease.pipe().read,
            None,
            dst,
            None,
            lease.filled,
            SpliceFlags::MOVE,
        ) {
            Ok(0) => return Err(ChunkError::Write(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                lease.filled -= n;
                watch.progress();
            }
            // Not a property of the connection: the bytes are already in the pipe, so finish
            // the chunk through a buffer instead of failing a healthy connection.
            Err(errno) if unsupported(errno) => return salvage(lease, dst, watch),
            Err(errno) if chunk::interrupted_for_park(&errno.into(), watch) => {
                return Err(ChunkError::Interrupted(chunk::Interruption {
                    moved: 0,
                    held: take_out(lease, Vec::new())?,
                }))
            }
            Err(errno) => chunk::retry_write(errno.into(), watch)?,
        }
    }
    Ok(())
}

/// Empties the pipe through a copy buffer and the plain write path.
fn salvage(lease: &mut Lease<'_>, dst: &Socket, watch: &dyn Watch) -> Result<(), ChunkError> {
    let mut buffer = chunk::take_buffer();
    let result = (|| {
        while lease.filled > 0 {
            let want = lease.filled.min(buffer.len());
            let n = match rustix::io::read(&lease.pipe().read, &mut buffer[..want]) {
                Ok(0) => return Err(ChunkError::Write(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(ChunkError::Write(errno.into())),
            };
            // Counted out of the pipe before the write: if the write fails the bytes are lost
            // either way, and an emptied pipe may go back to the pool.
            lease.filled -= n;
            match chunk::write_all(dst, &buffer[..n], watch) {
                // Interrupted: what this buffer holds comes first, then what is left in the pipe.
                Err(ChunkError::Interrupted(stop)) => {
                    return Err(ChunkError::Interrupted(chunk::Interruption {
                        moved: 0,
                        held: take_out(lease, stop.held)?,
                    }))
                }
                other => other?,
            }
        }
        Ok(())
    })();
    chunk::give_back(buffer);
    result
}

/// Reads what is left in the leased pipe into the end of `out`, for a connection being handed
/// over (its bytes go with it, in order); the pipe is empty afterwards.
fn take_out(lease: &mut Lease<'_>, mut out: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
    let start = out.len();
    out.resize(start + lease.filled, 0);
    let mut at = start;
    while lease.filled > 0 {
        match rustix::io::read(&lease.pipe().read, &mut out[at..]) {
            Ok(0) => return Err(ChunkError::Write(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                at += n;
                lease.filled -= n;
            }
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ChunkError::Write(errno.into())),
        }
    }
    Ok(out)
}

/// A pipe and how much it holds.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
        // Best effort: past fs.pipe-max-size or the user's pipe budget the kernel says no, and
        // the pipe keeps its default size.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, size);
        let capacity = fcntl_getpipe_size(&write)?;
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// Pipes not in use, and how many exist in all.
#[derive(Debug)]
struct PipePool {
    free: Mutex<Vec<Pipe>>,
    /// Pipes alive: free ones plus leased ones.
    alive: AtomicUsize,
    /// Most pipes alive at once. Lowered if the kernel starts handing out undersized pipes.
    cap: AtomicUsize,
    /// The size asked for each new pipe.
    pipe_size: usize,
}

impl PipePool {
    fn new(cap: u64, pipe_size: usize) -> PipePool {
        PipePool {
            pipe_size,
            free: Mutex::new(Vec::new()),
            alive: AtomicUsize::new(0),
            cap: AtomicUsize::new(usize::try_from(cap).unwrap_or(usize::MAX)),
        }
    }

    /// A free pipe, or a new one if the cap allows; `None` (never a wait) otherwise.
    fn take(&self) -> Option<Lease<'_>> {
        let reused = lock(&self.free).pop();
        let pipe = match reused {
            Some(pipe) => pipe,
            None => self.create()?,
        };
        Some(Lease {
            pool: self,
            pipe: Some(pipe),
            filled: 0,
        })
    }

    fn create(&self) -> Option<Pipe> {
        let cap = self.cap.load(Ordering::Relaxed);
        let before = self
            .alive
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        match Pipe::new(self.pipe_size) {
            Ok(pipe) if pipe.capacity >= MIN_PIPE_SIZE => return Some(pipe),
            Ok(pipe) => {
                // Over the user's pipe budget: more pipes would be as small. Stop at what we have.
                if self.cap.fetch_min(before, Ordering::Relaxed) > before {
                    log::info!(
                        "the kernel gives only {} byte pipes (fs.pipe-user-pages-soft reached): \
                         splice limited to {before} pipes, more chunks go through buffers",
                        pipe.capacity
                    );
                }
            }
            // EMFILE and the like: this chunk takes the buffer path, the next one tries again.
            Err(err) => log::trace!("cannot create a pipe for splice: {err}"),
        }
        self.alive.fetch_sub(1, Ordering::SeqCst);
        None
    }

    fn give_back(&self, pipe: Pipe) {
        let mut free = lock(&self.free);
        if free.len() < MAX_FREE_PIPES {
            free.push(pipe);
        } else {
            drop(free);
            self.discard(pipe);
        }
    }

    fn discard(&self, pipe: Pipe) {
        drop(pipe);
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A pipe borrowed from the pool for one chunk. Dropping it gives the pipe back if it is empty,
/// and closes it otherwise, so no pipe ever carries one connection's bytes into another's.
#[derive(Debug)]
struct Lease<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
    /// Bytes spliced into the pipe and not yet out of it.
    filled: usize,
}

impl Lease<'_> {
    fn pipe(&self) -> &Pipe {
        self.pipe
            .as_ref()
            .expect("BUG: a lease holds its pipe until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else { return };
        if self.filled == 0 {
            // The count is exact (splice reports what it moved), so this only checks the
            // bookkeeping, in test builds.
            debug_assert_eq!(rustix::io::ioctl_fionread(&pipe.read).ok(), Some(0));
            self.pool.give_back(pipe);
        } else {
            self.pool.discard(pipe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::copy;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::net::{Shutdown, TcpListener};

    /// Never stalls, never objects.
    struct Patient;

    impl Watch for Patient {
        fn progress(&self) {}
        fn may_wait(&self) -> bool {
            true
        }
    }

    /// Two connected loopback pairs: bytes written to `a_peer` arrive on `a`; bytes written to
    /// `b` arrive on `b_peer`. The chunk under test moves `a` -> `b`.
    struct Pairs {
        a_peer: TcpStream,
        a: Socket,
        b: Socket,
        b_peer: TcpStream,
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (far, _) = listener.accept().unwrap();
        (near, far)
    }

    fn pairs() -> Pairs {
        let (a_peer, a) = pair();
        let (b, b_peer) = pair();
        Pairs {
            a_peer,
            a: a.into(),
            b: b.into(),
            b_peer,
        }
    }

    fn wait_readable(stream: &impl std::os::fd::AsFd) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        assert!(
            crate::sys::net::wait_until(stream, crate::sys::net::PollFlags::IN, deadline).unwrap()
        );
    }

    fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        stream.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn a_chunk_moves_over_a_loopback_pair_and_the_pipe_goes_back() {
        let mut p = pairs();
        let pool = PipePool::new(4, PIPE_SIZE);
        p.a_peer.write_all(b"through the pipe").unwrap();
        wait_readable(&p.a);
        let moved = move_with(&pool, &p.a, &p.b, &Patient);
        assert!(
            matches!(moved, Some(Ok(Moved::Bytes { n: 16, full: false }))),
            "{moved:?}"
        );
        assert_eq!(read_exactly(&mut p.b_peer, 16), b"through the pipe");
        // Back in the pool, empty: the next lease reuses it instead of making another.
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        assert_eq!(pool.alive.load(Ordering::SeqCst), 1);
        drop(pool.take().unwrap());
        assert_eq!(pool.alive.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn nothing_queued_is_left_to_the_buffer_path_without_blocking() {
        let p = pairs();
        let pool = PipePool::new(4, PIPE_SIZE);
        // Nothing yet: a splice would sleep here; the probe sends it to recv, which says so.
        assert!(move_with(&pool, &p.a, &p.b, &Patient).is_none());
        BULK.set(true);
        assert!(matches!(
            copy::move_chunk(&p.a, &p.b, &Patient),
            Ok(Moved::WouldBlock)
        ));
        // End of stream: the same.
        p.a_peer.shutdown(Shutdown::Write).unwrap();
        wait_readable(&p.a);
        assert!(move_with(&pool, &p.a, &p.b, &Patient).is_none());
        BULK.set(true);
        assert!(matches!(
            copy::move_chunk(&p.a, &p.b, &Patient),
            Ok(Moved::Eof)
        ));
        assert_eq!(pool.alive.load(Ordering::SeqCst), 0, "no pipe was needed");
    }

    #[test]
    fn urgent_data_does_not_stall_or_end_the_stream() {
        let mut p = pairs();
        let out_of_band = socket2::SockRef::from(&p.a_peer);
        (&p.a_peer).write_all(b"abc").unwrap();
        out_of_band.send_out_of_band(b"!").unwrap();
        (&p.a_peer).write_all(b"def").unwrap();
        p.a_peer.shutdown(Shutdown::Write).unwrap();
        // As the relay does in a bulk transfer: poll, move, until end of stream. The urgent byte
        // is dropped by recv (no SO_OOBINLINE), as on the buffer path; the rest arrives in order.
        let mut moved = 0;
        for _ in 0..100 {
            wait_readable(&p.a);
            BULK.set(true);
            match copy::move_chunk(&p.a, &p.b, &Patient).unwrap() {
                Moved::Bytes { n, .. } => moved += n,
                Moved::WouldBlock => {}
                Moved::Eof => break,
                Moved::Interrupted => unreachable!("nothing asked for a park"),
            }
        }
        assert_eq!(moved, 6);
        assert_eq!(read_exactly(&mut p.b_peer, 6), b"abcdef");
    }

    #[test]
    fn only_bulk_transfers_splice() {
        let mut p = pairs();
        (&p.a_peer).write_all(&[7; 100]).unwrap();
        wait_readable(&p.a);
        note(&Ok(Moved::Bytes {
            n: 100,
            full: false,
        }));
        assert!(
            move_chunk(&p.a, &p.b, &Patient).is_none(),
            "small: buffer path"
        );
        note(&Ok(Moved::Bytes {
            n: BULK_CHUNK,
            full: false,
        }));
        if enabled() {
            let moved = move_chunk(&p.a, &p.b, &Patient);
            assert!(
                matches!(moved, Some(Ok(Moved::Bytes { n: 100, .. }))),
                "{moved:?}"
            );
        } else {
            assert!(copy::move_chunk(&p.a, &p.b, &Patient).is_ok());
        }
        assert_eq!(read_exactly(&mut p.b_peer, 100), [7; 100]);
        note(&Ok(Moved::WouldBlock));
        assert!(!BULK.get());
    }

    #[test]
    fn a_big_chunk_fills_what_was_asked() {
        let mut p = pairs();
        // Default-sized pipes: a loopback socket's initial receive buffer holds less than 256 KiB.
        let pool = PipePool::new(1, 64 * 1024);
        let capacity = pool.take().unwrap().pipe().capacity as u64;
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut a_peer = p.a_peer.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || a_peer.write_all(&data).unwrap())
        };
        // Let a pipe's worth queue up, so the first chunk must fill the pipe.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rustix::io::ioctl_fionread(&p.a).unwrap() < capacity {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never got ahead"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut got = Vec::new();
        let mut first = true;
        let mut buf = vec![0; 1 << 16];
        while got.len() < data.len() {
            wait_readable(&p.a);
            let Some(moved) = move_with(&pool, &p.a, &p.b, &Patient) else {
                continue;
            };
            let Ok(Moved::Bytes { n, full }) = moved else {
                panic!("{moved:?}");
            };
            if first {
                assert!(full && n as u64 == capacity, "{n} bytes, full: {full}");
                first = false;
            }
            let mut left = n;
            while left > 0 {
                let k = p.b_peer.read(&mut buf[..left.min(1 << 16)]).unwrap();
                got.extend_from_slice(&buf[..k]);
                left -= k;
            }
        }
        writer.join().unwrap();
        assert!(got == data, "bytes differ");
    }

    #[test]
    fn the_pool_cap_sends_chunks_to_the_buffer_path() {
        let pool = PipePool::new(1, PIPE_SIZE);
        let held = pool.take().unwrap();
        assert!(pool.take().is_none(), "the cap is 1 pipe");
        assert_eq!(pool.alive.load(Ordering::SeqCst), 1);
        // With the pool exhausted the chunk still moves, through a buffer.
        let mut p = pairs();
        p.a_peer.write_all(b"by buffer").unwrap();
        wait_readable(&p.a);
        assert!(pool.take().is_none());
        let moved = copy::move_chunk(&p.a, &p.b, &Patient).unwrap();
        assert!(matches!(moved, Moved::Bytes { n: 9, .. }));
        assert_eq!(read_exactly(&mut p.b_peer, 9), b"by buffer");
        drop(held);
        assert!(pool.take().is_some(), "a returned pipe is reusable");
    }

    #[test]
    fn a_pipe_with_bytes_left_is_closed_not_pooled() {
        let pool = PipePool::new(2, PIPE_SIZE);
        let mut lease = pool.take().unwrap();
        rustix::io::write(&lease.pipe().write, b"leftover").unwrap();
        lease.filled = 8;
        drop(lease);
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        assert_eq!(pool.alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn salvage_empties_the_pipe_through_a_buffer() {
        let mut p = pairs();
        let pool = PipePool::new(1, PIPE_SIZE);
        let mut lease = pool.take().unwrap();
        rustix::io::write(&lease.pipe().write, b"stranded bytes").unwrap();
        lease.filled = 14;
        salvage(&mut lease, &p.b, &Patient).unwrap();
        assert_eq!(lease.filled, 0);
        drop(lease);
        assert_eq!(read_exactly(&mut p.b_peer, 14), b"stranded bytes");
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }

    /// An upgrade asking the copy threads to park: an interrupted write stops.
    struct Parking;

    impl Watch for Parking {
        fn progress(&self) {}
        fn may_wait(&self) -> bool {
            true
        }
        fn park_asked(&self) -> bool {
            true
        }
    }

    /// The numbered stream the tests below send: byte `i` is `i % 251`.
    fn numbered(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_parked_drain_hands_over_what_the_pipe_holds_in_order() {
        let mut p = pairs();
        let pool = PipePool::new(1, PIPE_SIZE);
        // Nobody reads b_peer yet, so the drain blocks; a send timeout makes a signal interrupt
        // it (see sys::wake), as the copy loop's sockets always have one.
        crate::sys::net::set_send_timeout(&p.b, Some(std::time::Duration::from_secs(3600)));
        let mut a_peer = p.a_peer.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < 64 << 20 {
                if a_peer.write_all(&numbered(sent, 1 << 16)).is_err() {
                    break;
                }
                sent += 1 << 16;
            }
        });
        // Wakes this thread out of the blocked splice until it has parked.
        let me = crate::sys::wake::ThreadId::current();
        let parked_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = {
            let parked_flag = std::sync::Arc::clone(&parked_flag);
            std::thread::spawn(move || {
                while !parked_flag.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let _ = me.wake();
                }
            })
        };
        let mut moved = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let parked = loop {
            assert!(std::time::Instant::now() < deadline, "never parked");
            wait_readable(&p.a);
            BULK.set(true);
            match move_with(&pool, &p.a, &p.b, &Parking) {
                Some(Ok(Moved::Bytes { n, .. })) => moved += n,
                Some(Ok(_)) | None => {}
                Some(Err(ChunkError::Interrupted(parked))) => break parked,
                Some(Err(err)) => panic!("{err:?}"),
            }
        };
        parked_flag.store(true, Ordering::SeqCst);
        waker.join().unwrap();
        moved += parked.moved;
        assert!(
            !parked.held.is_empty(),
            "the pipe held bytes when it parked"
        );
        // What reached b, then what the pipe held, is the stream's beginning, in order.
        let mut got = read_exactly(&mut p.b_peer, moved);
        got.extend_from_slice(&parked.held);
        assert!(
            got == numbered(0, got.len()),
            "bytes lost, repeated or reordered"
        );
        assert_eq!(
            pool.free.lock().unwrap().len(),
            1,
            "the emptied pipe went back"
        );
        crate::sys::net::abort(&p.a);
        drop(p);
        let _ = writer.join();
    }

    /// Gives up on the first stalled tick, as a connection past its idle limit does.
    struct Impatient(std::sync::atomic::AtomicUsize);

    impl Watch for Impatient {
        fn progress(&self) {}
        fn may_wait(&self) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            false
        }
    }

    #[test]
    fn a_stalled_write_ends_at_the_idle_limit_and_drops_its_pipe() {
        let p = pairs();
        let pool = PipePool::new(1, PIPE_SIZE);
        // Nobody reads b_peer; the send timeout makes the blocked splice come back to ask.
        crate::sys::net::set_send_timeout(&p.b, Some(std::time::Duration::from_millis(20)));
        let mut a_peer = p.a_peer.try_clone().unwrap();
        std::thread::spawn(move || {
            let block = vec![1u8; 1 << 16];
            while a_peer.write_all(&block).is_ok() {}
        });
        let watch = Impatient(0.into());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let end = loop {
            assert!(std::time::Instant::now() < deadline, "never stalled");
            wait_readable(&p.a);
            match move_with(&pool, &p.a, &p.b, &watch) {
                Some(Ok(_)) | None => continue,
                Some(Err(err)) => break err,
            }
        };
        assert!(matches!(end, ChunkError::Stalled), "{end:?}");
        assert_eq!(watch.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            pool.alive.load(Ordering::SeqCst),
            0,
            "the pipe still held bytes"
        );
        crate::sys::net::abort(&p.a);
    }

    #[test]
    fn a_write_to_a_reset_peer_is_a_write_failure() {
        let p = pairs();
        let pool = PipePool::new(1, PIPE_SIZE);
        crate::sys::net::abort(&p.b);
        p.a_peer.try_clone().unwrap().write_all(b"x").unwrap();
        wait_readable(&p.a);
        match move_with(&pool, &p.a, &p.b, &Patient) {
            Some(Err(ChunkError::Write(err))) => assert!(crate::sys::net::is_reset(&err), "{err}"),
            other => panic!("expected a write failure, got {other:?}"),
        }
        assert_eq!(
            pool.alive.load(Ordering::SeqCst),
            0,
            "the dirty pipe was closed"
        );
    }
}
