//! Shared building blocks for the protocol readers: an incremental parse's outcome
//! ([`Parsed`]) and a bounds-checked byte cursor.

/// Outcome of an incremental parse over the bytes received so far.
///
/// Running out of input is never an error: the caller reads more and calls
/// the parser again with the longer buffer (the same model as `httparse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<T> {
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

/// For tests of a reader: every prefix of `input` is `Partial` or `parse`'s final answer, and
/// once an answer appears it never changes. Returns the final answer.
#[cfg(test)]
pub(crate) fn settled<T: PartialEq + std::fmt::Debug>(
    input: &[u8],
    parse: impl Fn(&[u8]) -> Parsed<T>,
) -> Parsed<T> {
    let whole = parse(input);
    let mut decided = false;
    for end in 0..=input.len() {
        match parse(&input[..end]) {
            Parsed::Partial => assert!(!decided, "{input:?}: Partial after an answer"),
            got => {
                assert_eq!(got, whole, "{input:?} cut at {end}");
                decided = true;
            }
        }
    }
    whole
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
}
