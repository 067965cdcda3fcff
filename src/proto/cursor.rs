//! Shared building blocks for the protocol readers: the incremental-parse
//! [`Status`], a bounds-checked byte cursor and host name normalisation.

/// Outcome of an incremental parse over the bytes received so far.
///
/// Running out of input is never an error: the caller reads more and calls
/// the parser again with the longer buffer (the same model as `httparse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The value is fully determined by the bytes seen; more bytes won't change it.
    Complete(T),
    /// Every byte so far is consistent with a valid input, but more are needed.
    Partial,
}

/// A bounds-checked cursor over a byte slice, in the style of the codec
/// `Reader` of rustls.
///
/// Every read returns `None` instead of panicking when the slice is too short;
/// a failed read leaves the cursor where it was.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    /// The bytes not yet consumed.
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Creates a cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Consumes exactly `n` bytes, or nothing if fewer remain.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&first, tail) = self.buf.split_first()?;
        self.buf = tail;
        Some(first)
    }

    /// Reads a big-endian (network order) `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    /// Reads a big-endian 24-bit integer, as used by TLS handshake lengths.
    pub(crate) fn u24(&mut self) -> Option<u32> {
        let b = self.take(3)?;
        Some(u32::from_be_bytes([0, *b.first()?, *b.get(1)?, *b.get(2)?]))
    }

    /// Consumes `len` bytes and returns them as a cursor of their own, for a
    /// length-prefixed sub-vector whose length the caller has already read.
    pub(crate) fn sub(&mut self, len: usize) -> Option<Reader<'a>> {
        self.take(len).map(Reader::new)
    }

    /// Consumes and returns everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Number of bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte has been consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Longest host name accepted, in bytes, without the optional trailing dot
/// (the DNS limit of 255 octets on the wire leaves 253 in text form).
const MAX_HOST_LEN: usize = 253;

/// Longest DNS label accepted (RFC 1035 section 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Validates a host name and returns its canonical routing form.
///
/// The rule shared by the TLS and HTTP readers: one trailing dot is removed,
/// the result is lowercased and must be 1..=253 bytes of dot-separated labels
/// of 1..=63 bytes, each made of ASCII letters, digits, `-` and `_`
/// (underscores occur in real names even though they are not valid in
/// LDH host names). IPv4 literals pass as ordinary names. Anything else
/// (empty labels, spaces, `:`, non-ASCII) yields `None`.
pub(crate) fn normalize_host(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return None;
    }
    let labels_ok = name.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return None;
    }
    // All bytes are ASCII (checked above), so this conversion cannot fail.
    String::from_utf8(name.to_ascii_lowercase()).ok()
}

/// Deterministic pseudo-random numbers for the property tests (no crates).
#[cfg(test)]
pub(crate) mod test_rng {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_big_endian_and_stops_at_end() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0203));
        assert_eq!(r.u24(), Some(0x04_0506));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u16(), None, "short read fails");
        assert_eq!(r.remaining(), 1, "failed read consumes nothing");
        assert_eq!(r.rest(), &[7]);
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(r.u24(), None);
        assert_eq!(r.take(0), Some(&[][..]));
        assert_eq!(r.take(1), None);
    }

    #[test]
    fn reader_sub_is_bounded() {
        let mut r = Reader::new(&[2, 0xaa, 0xbb, 0xcc]);
        let n = r.u8().unwrap() as usize;
        let mut sub = r.sub(n).unwrap();
        assert_eq!(sub.u16(), Some(0xaabb));
        assert_eq!(sub.u8(), None, "sub-reader ends at its length");
        assert_eq!(r.remaining(), 1);
        assert!(r.sub(2).is_none());
        assert!(r.sub(usize::MAX).is_none());
    }

    #[test]
    fn normalize_host_rules() {
        assert_eq!(normalize_host(b"Example.COM."), Some("example.com".into()));
        assert_eq!(
            normalize_host(b"_dmarc.x-y.z9"),
            Some("_dmarc.x-y.z9".into())
        );
        assert_eq!(normalize_host(b"10.0.0.1"), Some("10.0.0.1".into()));
        for bad in [
            &b""[..],
            b".",
            b"a..b",
            b".a",
            b"a..",
            b"a b",
            b"a:80",
            b"caf\xc3\xa9",
            b"a\0",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
        let label = "a".repeat(63);
        assert!(normalize_host(label.as_bytes()).is_some());
        assert!(normalize_host(format!("{label}a").as_bytes()).is_none());
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(normalize_host(long.as_bytes()).is_none());
        assert!(normalize_host(&long.as_bytes()[2..]).is_some(), "253 bytes");
    }

    #[test]
    fn xorshift_is_deterministic() {
        let mut a = test_rng::XorShift::new(7);
        let mut b = test_rng::XorShift::new(7);
        assert_eq!(a.bytes(16), b.bytes(16));
        assert!(a.below(3) < 3);
        let m = a.mutate(b"hello");
        assert!(m.len() <= 9);
    }
}
