//! Framing on the read buffer: LuaSocket's receive patterns (`*l`, a byte count, `*a`,
//! partial) as pure functions on a `BytesMut`, so they are unit-tested without sockets.
//!
//! Invariant: `scanned <= buf.len()`, and `buf[..scanned]` holds no `\n`; line searches
//! resume there, so a long line arriving in many pieces is scanned once, not once per piece.
//!
//! The receive loops themselves ("frame from the buffer, else [`Fill::fill`], and decide
//! what end of stream means") are written once here, generic over [`Fill`], for the TCP
//! and Unix streams, TLS and child-process pipes.

use std::io;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

/// Received bytes not yet handed to the application.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    pub(crate) buf: BytesMut,
    scanned: usize,
}

/// The outcome of looking for a line: `T` is the line ([`ReadBuffer::take_line`]) or
/// nothing, when it was appended to the caller's buffer ([`ReadBuffer::take_line_into`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<T = Bytes> {
    /// A complete line, without its `\n` and a `\r` before it.
    Complete(T),
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
        match self.find_line(max) {
            Line::Complete((content, nl)) => {
                // The whole buffer is one line (the usual case): hand over the allocation
                // itself, which avoids making it shared.
                let mut line = if nl + 1 == self.buf.len() {
                    std::mem::take(&mut self.buf)
                } else {
                    self.buf.split_to(nl + 1)
                };
                line.truncate(content);
                self.scanned = 0;
                Line::Complete(line.freeze())
            }
            Line::Incomplete => Line::Incomplete,
            Line::TooLong => Line::TooLong,
        }
    }

    /// As [`take_line`](Self::take_line), but appends the line to `out` instead of
    /// returning it, so that no allocation changes hands (and none is made when `out` has
    /// room). Nothing is appended unless the result is `Complete`.
    pub(crate) fn take_line_into(&mut self, max: usize, out: &mut Vec<u8>) -> Line<()> {
        match self.find_line(max) {
            Line::Complete((content, nl)) => {
                out.extend_from_slice(&self.buf[..content]);
                if nl + 1 == self.buf.len() {
                    // Empty now: `clear` keeps the allocation and its whole capacity
                    // (advancing would leave the consumed front unusable).
                    self.buf.clear();
                } else {
                    bytes::Buf::advance(&mut self.buf, nl + 1);
                }
                self.scanned = 0;
                Line::Complete(())
            }
            Line::Incomplete => Line::Incomplete,
            Line::TooLong => Line::TooLong,
        }
    }

    /// Looks for a complete line: `Complete((content, nl))` gives the length of its
    /// content (without `\r\n`) and the index of its `\n`; the buffer is unchanged except
    /// for the resume point of the search.
    #[inline]
    fn find_line(&mut self, max: usize) -> Line<(usize, usize)> {
        if self.buf.is_empty() {
            // The usual state between lines: nothing to search.
            return Line::Incomplete;
        }
        match line_at(&self.buf, self.scanned) {
            Some((content, nl)) => {
                if content > max {
                    self.scanned = nl;
                    return Line::TooLong;
                }
                Line::Complete((content, nl))
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
        // `advance` moves the start of the view; `split_to` would build a second handle
        // on the allocation (and allocate its shared header) only to drop it.
        bytes::Buf::advance(&mut self.buf, n);
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

/// A reader with a [`ReadBuffer`] that it can refill from its source.
pub(crate) trait Fill {
    /// The buffer the receive patterns frame from.
    fn rbuf(&mut self) -> &mut ReadBuffer;

    /// Reads more input into [`rbuf`](Fill::rbuf), waiting until `deadline`; 0 means the
    /// peer closed its side (and every later call returns 0 too).
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize>;

    /// As [`fill`](Fill::fill), but a reader that reads into a scratch buffer first may
    /// offer what one read brought to `land` while its own buffer is empty: `land` takes
    /// a prefix (copying it out) and returns its length, and only the rest is buffered.
    /// Returns the bytes read, taken or not. The default offers nothing.
    #[inline]
    fn fill_landing(
        &mut self,
        deadline: Option<Instant>,
        land: &mut impl FnMut(&[u8]) -> usize,
    ) -> io::Result<usize> {
        let _ = land;
        self.fill(deadline)
    }
}

/// What a line cut short by end of stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastLine {
    /// `UnexpectedEof` (sockets: a protocol line always ends in `\n`).
    Error,
    /// A line like any other (pipes: a program's last line often has no newline).
    Line,
}

/// LuaSocket's `*l`: one line without its `\n` (and a `\r` before it); `None` at a clean
/// end of stream between lines.
///
/// # Errors
/// `InvalidData` for a line longer than `max_line` bytes; `UnexpectedEof` when the stream
/// ends in the middle of a line and `last` is [`LastLine::Error`]; what `fill` returns.
#[inline]
pub(crate) fn receive_line<F: Fill>(
    src: &mut F,
    max_line: usize,
    last: LastLine,
    deadline: Option<Instant>,
) -> io::Result<Option<Bytes>> {
    loop {
        match src.rbuf().take_line(max_line) {
            Line::Complete(line) => return Ok(Some(line)),
            Line::TooLong => return Err(line_too_long(max_line)),
            Line::Incomplete => {}
        }
        if src.fill(deadline)? == 0 {
            let rbuf = src.rbuf();
            return if rbuf.is_empty() {
                Ok(None)
            } else if last == LastLine::Line {
                Ok(Some(rbuf.take_all()))
            } else {
                Err(eof_mid_line())
            };
        }
    }
}

/// As [`receive_line`], but appends the line to `out` and returns `true`, or returns
/// `false` at a clean end of stream between lines (nothing appended). A line that a single
/// read brings whole while nothing is buffered goes from the reader's scratch buffer
/// straight to `out` ([`Fill::fill_landing`]), so the reader's buffer is never allocated.
///
/// # Errors
/// As [`receive_line`]; nothing is appended to `out` on error.
#[inline]
pub(crate) fn receive_line_into<F: Fill>(
    src: &mut F,
    out: &mut Vec<u8>,
    max_line: usize,
    last: LastLine,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        match src.rbuf().take_line_into(max_line, out) {
            Line::Complete(()) => return Ok(true),
            Line::TooLong => return Err(line_too_long(max_line)),
            Line::Incomplete => {}
        }
        let mut landed = false;
        let mut land = |data: &[u8]| -> usize {
            let Some((content, nl)) = line_at(data, 0) else {
                return 0;
            };
            if content > max_line {
                return 0; // buffered; `take_line_into` reports it
            }
            out.extend_from_slice(&data[..content]);
            landed = true;
            nl + 1
        };
        let n = src.fill_landing(deadline, &mut land)?;
        if landed {
            return Ok(true);
        }
        if n == 0 {
            let rbuf = src.rbuf();
            return if rbuf.is_empty() {
                Ok(false)
            } else if last == LastLine::Line {
                let n = rbuf.len();
                out.extend_from_slice(rbuf.as_slice());
                rbuf.consume(n);
                Ok(true)
            } else {
                Err(eof_mid_line())
            };
        }
    }
}

/// The first line in `data` whose `\n` is at or after `from`: the length of its content
/// (without the `\n` and a `\r` before it) and the index of its `\n`.
#[inline]
fn line_at(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = from + memchr::memchr(b'\n', &data[from..])?;
    let content = if nl > 0 && data[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((content, nl))
}

#[cold]
fn eof_mid_line() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "copas: connection closed in the middle of a line",
    )
}

#[cold]
fn line_too_long(max_line: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("copas: line longer than {max_line} bytes"),
    )
}

/// A byte count: exactly `n` bytes.
///
/// # Errors
/// `UnexpectedEof` ("copas: `closed` closed after k of n bytes", the k bytes stay
/// buffered) when the stream ends first; what `fill` returns.
#[inline]
pub(crate) fn receive_exact<F: Fill>(
    src: &mut F,
    n: usize,
    closed: &str,
    deadline: Option<Instant>,
) -> io::Result<Bytes> {
    loop {
        if let Some(data) = src.rbuf().take_exact(n) {
            return Ok(data);
        }
        if src.fill(deadline)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "copas: {closed} closed after {} of {n} bytes",
                    src.rbuf().len()
                ),
            ));
        }
    }
}

/// `*a`: everything until end of stream.
///
/// # Errors
/// `InvalidData` when more than `max_to_end` bytes arrive first (they stay buffered);
/// what `fill` returns.
pub(crate) fn receive_to_end<F: Fill>(
    src: &mut F,
    max_to_end: usize,
    deadline: Option<Instant>,
) -> io::Result<Bytes> {
    while src.fill(deadline)? > 0 {
        if src.rbuf().len() > max_to_end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("copas: more than {max_to_end} bytes before end of stream"),
            ));
        }
    }
    Ok(src.rbuf().take_all())
}

/// Partial: up to `max` bytes, what is buffered or else what one read brings (empty at end
/// of stream, or for `max == 0`).
///
/// # Errors
/// What `fill` returns.
#[inline]
pub(crate) fn receive_some<F: Fill>(
    src: &mut F,
    max: usize,
    deadline: impl FnOnce() -> Option<Instant>,
) -> io::Result<Bytes> {
    if src.rbuf().is_empty() && max > 0 {
        src.fill(deadline())?;
    }
    Ok(src.rbuf().take_some(max))
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

    /// Differential property tests: the buffer against a naive reference that keeps a
    /// plain `Vec` and searches it from the start on every call, fed an arbitrary byte
    /// stream in arbitrary pieces between arbitrary receive calls.
    mod differential {
        use super::*;
        use proptest::prelude::*;

        /// The naive reference implementation of the framing.
        #[derive(Debug, Default)]
        struct Reference {
            data: Vec<u8>,
        }

        impl Reference {
            fn take_line(&mut self, max: usize) -> Line {
                match self.data.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let mut content = &self.data[..nl];
                        if let [rest @ .., b'\r'] = content {
                            content = rest;
                        }
                        if content.len() > max {
                            return Line::TooLong;
                        }
                        let line = Bytes::copy_from_slice(content);
                        self.data.drain(..=nl);
                        Line::Complete(line)
                    }
                    None => {
                        // A trailing '\r' may be the start of "\r\n": not content yet.
                        let pending = self.data.len() - usize::from(self.data.ends_with(b"\r"));
                        if pending > max {
                            Line::TooLong
                        } else {
                            Line::Incomplete
                        }
                    }
                }
            }

            fn take_exact(&mut self, n: usize) -> Option<Bytes> {
                (self.data.len() >= n).then(|| self.data.drain(..n).collect::<Vec<u8>>().into())
            }

            fn take_some(&mut self, max: usize) -> Bytes {
                let n = max.min(self.data.len());
                self.data.drain(..n).collect::<Vec<u8>>().into()
            }

            fn consume(&mut self, n: usize) {
                let n = n.min(self.data.len());
                self.data.drain(..n);
            }
        }

        #[derive(Debug, Clone)]
        enum Op {
            /// Feeds the next `n` bytes of the stream (fewer at its end).
            Feed(usize),
            Line(usize),
            LineInto(usize),
            Exact(usize),
            Some(usize),
            Consume(usize),
            All,
            Release,
        }

        /// Lines of up to 40 bytes with every kind of ending (`\n`, `\r\n`, a lone
        /// `\r`, none), so that limits are met exactly, exceeded by one, and a `\r` often
        /// ends what has arrived so far.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![
                6 => b'a'..=b'e',
                1 => Just(b'\r'),
                1 => any::<u8>(),
            ];
            let end = prop_oneof![
                Just(&b"\n"[..]),
                Just(&b"\r\n"[..]),
                Just(&b"\r"[..]),
                Just(&b""[..]),
            ];
            let line = (proptest::collection::vec(byte, 0..40), end).prop_map(|(mut l, end)| {
                l.extend_from_slice(end);
                l
            });
            proptest::collection::vec(line, 0..24).prop_map(|ls| ls.concat())
        }

        fn limit() -> impl Strategy<Value = usize> {
            prop_oneof![8 => 0..48usize, 1 => Just(usize::MAX)]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0..64usize).prop_map(Op::Feed),
                6 => limit().prop_map(Op::Line),
                3 => limit().prop_map(Op::LineInto),
                2 => limit().prop_map(Op::Exact),
                2 => limit().prop_map(Op::Some),
                1 => limit().prop_map(Op::Consume),
                1 => Just(Op::All),
                1 => Just(Op::Release),
            ]
        }

        fn check_same(b: &ReadBuffer, r: &Reference) -> Result<(), TestCaseError> {
            prop_assert_eq!(b.as_slice(), &r.data[..]);
            prop_assert_eq!(b.len(), r.data.len());
            prop_assert_eq!(b.is_empty(), r.data.is_empty());
            prop_assert!(b.scanned <= b.buf.len());
            prop_assert!(!b.buf[..b.scanned].contains(&b'\n'));
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn framing_matches_the_naive_reference(
                input in stream(),
                ops in proptest::collection::vec(op(), 0..96),
            ) {
                let mut b = ReadBuffer::default();
                let mut r = Reference::default();
                let mut fed = 0;
                for op in ops {
                    match op {
                        Op::Feed(n) => {
                            let piece = &input[fed..(fed + n).min(input.len())];
                            fed += piece.len();
                            b.buf.extend_from_slice(piece);
                            r.data.extend_from_slice(piece);
                        }
                        Op::Line(max) => prop_assert_eq!(b.take_line(max), r.take_line(max)),
                        Op::LineInto(max) => {
                            // Appends to what `out` holds, and only a complete line.
                            let mut out = b"prefix".to_vec();
                            let got = match b.take_line_into(max, &mut out) {
                                Line::Complete(()) => {
                                    prop_assert!(out.starts_with(b"prefix"));
                                    Line::Complete(Bytes::copy_from_slice(&out[6..]))
                                }
                                Line::Incomplete => Line::Incomplete,
                                Line::TooLong => Line::TooLong,
                            };
                            if !matches!(got, Line::Complete(_)) {
                                prop_assert_eq!(&out[..], b"prefix");
                            }
                            prop_assert_eq!(got, r.take_line(max));
                        }
                        Op::Exact(n) => prop_assert_eq!(b.take_exact(n), r.take_exact(n)),
                        Op::Some(n) => prop_assert_eq!(b.take_some(n), r.take_some(n)),
                        Op::Consume(n) => {
                            b.consume(n);
                            r.consume(n);
                        }
                        Op::All => {
                            let all = Bytes::from(std::mem::take(&mut r.data));
                            prop_assert_eq!(b.take_all(), all);
                        }
                        Op::Release => b.release_if_empty(),
                    }
                    check_same(&b, &r)?;
                }
                // The rest of the stream, then every line left: still the same.
                b.buf.extend_from_slice(&input[fed..]);
                r.data.extend_from_slice(&input[fed..]);
                loop {
                    let line = b.take_line(usize::MAX);
                    prop_assert_eq!(&line, &r.take_line(usize::MAX));
                    check_same(&b, &r)?;
                    if line == Line::Incomplete {
                        break;
                    }
                }
            }
        }
    }
}
