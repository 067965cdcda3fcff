//! What the unit tests share: one deterministic pseudo-random generator for the property checks
//! (a failure is reproducible from its seed), and one way to make a scratch directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory under the system's temporary directory, unique to this process and
/// call, removed (with what is in it) when dropped; `what` names it for whoever finds one left
/// by a killed test.
pub(crate) fn temp_dir(what: &str) -> TempDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("tcp-router-unit-{}-{what}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    TempDir(dir)
}

/// A scratch directory, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A path inside the directory.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Marsaglia's xorshift64: tiny, fast and reproducible across runs.
pub(crate) struct XorShift(u64);

impl XorShift {
    /// Creates a generator; a zero seed would get stuck, so it is replaced.
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n` must be non-zero); the modulo bias is
    /// irrelevant for fuzz-style tests.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random byte.
    pub(crate) fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// `len` random bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// Applies 1..=4 random edits (flip, overwrite, insert, delete,
    /// truncate) to a copy of `input`.
    pub(crate) fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=self.below(4) {
            self.mutate_once(&mut out);
        }
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>) {
        let pos = self.below(out.len() + 1);
        match self.below(5) {
            0 if pos < out.len() => out[pos] ^= 1 << self.below(8),
            1 if pos < out.len() => out[pos] = self.byte(),
            2 => out.insert(pos, self.byte()),
            3 if pos < out.len() => {
                out.remove(pos);
            }
            4 => out.truncate(pos),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        assert_eq!(a.bytes(16), b.bytes(16));
        assert!(a.below(3) < 3);
        let m = a.mutate(b"hello");
        assert!(m.len() <= 9);
    }
}
