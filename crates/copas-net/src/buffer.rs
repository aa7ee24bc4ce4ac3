//! Framing on the read buffer: LuaSocket's receive patterns (`*l`, a byte count, `*a`,
//! partial) as pure functions on a `BytesMut`, so they are unit-tested without sockets.
//!
//! Invariant: `scanned <= buf.len()`, and `buf[..scanned]` holds no `\n`; line searches
//! resume there, so a long line arriving in many pieces is scanned once, not once per piece.

use bytes::{Bytes, BytesMut};

/// Received bytes not yet handed to the application.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    pub(crate) buf: BytesMut,
    scanned: usize,
}

/// The outcome of looking for a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line, without its `\n` and a `\r` before it.
    Complete(Bytes),
    /// No `\n` yet.
    Incomplete,
    /// The line is longer than the limit (the bytes stay buffered).
    TooLong,
}

impl ReadBuffer {
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Takes one line if a complete one is buffered. A line is too long when its content
    /// (without `\r\n`) exceeds `max` bytes, also before its `\n` has arrived.
    pub(crate) fn take_line(&mut self, max: usize) -> Line {
        let start = self.scanned;
        match self.buf[start..].iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let nl = start + pos;
                let content = if nl > 0 && self.buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                if content > max {
                    self.scanned = nl;
                    return Line::TooLong;
                }
                let mut line = self.buf.split_to(nl + 1);
                line.truncate(content);
                self.scanned = 0;
                Line::Complete(line.freeze())
            }
            None => {
                self.scanned = self.buf.len();
                // A trailing '\r' may still be followed by '\n': it does not count yet.
                let content = match self.buf.last() {
                    Some(b'\r') => self.buf.len() - 1,
                    _ => self.buf.len(),
                };
                if content > max {
                    Line::TooLong
                } else {
                    Line::Incomplete
                }
            }
        }
    }

    /// Takes exactly `n` bytes if that many are buffered.
    pub(crate) fn take_exact(&mut self, n: usize) -> Option<Bytes> {
        if self.buf.len() >= n {
            Some(self.take(n))
        } else {
            None
        }
    }

    /// Takes up to `max` bytes (all that is buffered if less).
    pub(crate) fn take_some(&mut self, max: usize) -> Bytes {
        let n = max.min(self.buf.len());
        self.take(n)
    }

    /// Takes everything.
    pub(crate) fn take_all(&mut self) -> Bytes {
        self.scanned = 0;
        self.buf.split().freeze()
    }

    /// Discards `n` bytes from the front (for `BufRead::consume`).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        let _ = self.buf.split_to(n);
        self.scanned = self.scanned.saturating_sub(n);
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.scanned = self.scanned.saturating_sub(n);
        self.buf.split_to(n).freeze()
    }

    /// Drops the allocation when nothing is buffered, so an idle connection holds no
    /// read buffer.
    pub(crate) fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(data: &[u8]) -> ReadBuffer {
        ReadBuffer {
            buf: BytesMut::from(data),
            scanned: 0,
        }
    }

    #[test]
    fn lines_strip_lf_and_crlf() {
        let mut b = rb(b"one\r\ntwo\nthree");
        assert_eq!(b.take_line(100), Line::Complete(Bytes::from_static(b"one")));
        assert_eq!(b.take_line(100), Line::Complete(Bytes::from_static(b"two")));
        assert_eq!(b.take_line(100), Line::Incomplete);
        assert_eq!(b.as_slice(), b"three");
    }

    #[test]
    fn only_the_last_cr_is_stripped() {
        let mut b = rb(b"a\r\r\n\r\n");
        assert_eq!(b.take_line(100), Line::Complete(Bytes::from_static(b"a\r")));
        assert_eq!(b.take_line(100), Line::Complete(Bytes::new()));
    }

    #[test]
    fn line_arriving_in_pieces_is_found() {
        let mut b = rb(b"");
        for piece in [&b"he"[..], b"ll", b"o\r", b"\nrest"] {
            b.buf.extend_from_slice(piece);
            let got = b.take_line(100);
            if piece == b"\nrest" {
                assert_eq!(got, Line::Complete(Bytes::from_static(b"hello")));
            } else {
                assert_eq!(got, Line::Incomplete);
            }
        }
        assert_eq!(b.as_slice(), b"rest");
    }

    #[test]
    fn line_limit_is_exact() {
        let mut b = rb(b"12345\r\n");
        assert_eq!(b.take_line(5), Line::Complete(Bytes::from_static(b"12345")));
        let mut b = rb(b"123456\n");
        assert_eq!(b.take_line(5), Line::TooLong);
        // Before the newline arrives: 5 bytes plus a pending '\r' is still fine.
        let mut b = rb(b"12345\r");
        assert_eq!(b.take_line(5), Line::Incomplete);
        let mut b = rb(b"123456");
        assert_eq!(b.take_line(5), Line::TooLong);
        // Stays too long when asked again, without growing.
        assert_eq!(b.take_line(5), Line::TooLong);
        assert_eq!(b.len(), 6);
    }

    #[test]
    fn exact_some_all_and_consume() {
        let mut b = rb(b"abcdef");
        assert_eq!(b.take_exact(7), None);
        assert_eq!(b.take_exact(2).as_deref(), Some(&b"ab"[..]));
        assert_eq!(&b.take_some(3)[..], b"cde");
        assert_eq!(&b.take_some(10)[..], b"f");
        assert!(b.is_empty());
        let mut b = rb(b"xy\nz");
        assert_eq!(b.take_line(10), Line::Complete(Bytes::from_static(b"xy")));
        b.consume(1);
        assert!(b.is_empty());
        let mut b = rb(b"abc");
        assert_eq!(b.take_line(10), Line::Incomplete);
        b.consume(2);
        b.buf.extend_from_slice(b"\n");
        assert_eq!(b.take_line(10), Line::Complete(Bytes::from_static(b"c")));
        assert_eq!(&rb(b"all of it").take_all()[..], b"all of it");
    }

    /// The naive reference: split at the first '\n' by scanning everything every time.
    fn naive_line(data: &[u8], max: usize) -> Option<Result<Vec<u8>, ()>> {
        let nl = data.iter().position(|&b| b == b'\n')?;
        let mut line = data[..nl].to_vec();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(if line.len() > max { Err(()) } else { Ok(line) })
    }

    #[test]
    fn matches_naive_reference_for_all_splits() {
        let input: &[u8] = b"ab\r\n\ncd\r\r\nlonglongline\nx\n";
        for split in 0..=input.len() {
            let mut b = rb(&input[..split]);
            let mut out = Vec::new();
            let mut fed = split;
            let mut rest = input.to_vec();
            loop {
                match b.take_line(8) {
                    Line::Complete(l) => {
                        let expect = naive_line(&rest, 8).unwrap().unwrap();
                        assert_eq!(&l[..], &expect[..]);
                        let cut = rest.iter().position(|&c| c == b'\n').unwrap() + 1;
                        rest.drain(..cut);
                        out.push(l);
                    }
                    Line::Incomplete if fed < input.len() => {
                        b.buf.extend_from_slice(&input[fed..fed + 1]);
                        fed += 1;
                    }
                    Line::Incomplete => break,
                    Line::TooLong => {
                        assert!(matches!(naive_line(&rest, 8), Some(Err(())) | None));
                        break;
                    }
                }
            }
            assert_eq!(out.len(), 3, "split at {split}");
        }
    }
}
