//! The read side of a stream: [`ReadHalf`] owns the input buffer and implements the
//! receive patterns, `Read` and `BufRead`.
//!
//! Invariant: bytes leave the buffer only through the receive calls and `Read`/`BufRead`;
//! an error (timeout, EOF mid-line) never discards bytes.

use std::io::{self, BufRead, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use copas_core::cooperate;

use super::write::{shut_down, StreamShared};
use super::{StreamSocket, DIRECT_READ, READ_CHUNK};
use crate::buffer::{self, Fill, LastLine, ReadBuffer};
use crate::reactor::Interest;
use crate::shared::deadline_after;
use crate::source::recv_into;

/// The receiving half of a [`Stream`](crate::Stream) ([`TcpStream`](crate::TcpStream) by
/// default, [`UnixStream`](crate::UnixStream) as `ReadHalf<std::os::unix::net::UnixStream>`),
/// from [`Stream::split`](crate::Stream::split).
pub struct ReadHalf<S: StreamSocket = std::net::TcpStream> {
    pub(super) rbuf: ReadBuffer,
    pub(super) eof: bool,
    /// The last read found the kernel's buffer empty (`WouldBlock`, or fewer bytes than
    /// asked for, which for a stream socket means the same, see epoll(7)): where the
    /// reactor tracks readiness precisely, the next read waits for it first instead of
    /// making a system call that would only say `EAGAIN`.
    pub(super) drained: bool,
    pub(super) read_timeout: Option<Duration>,
    pub(super) max_line: usize,
    pub(super) max_to_end: usize,
    pub(super) shared: Rc<StreamShared<S>>,
}

impl<S: StreamSocket> ReadHalf<S> {
    fn read_deadline(&self) -> Option<Instant> {
        deadline_after(self.read_timeout)
    }

    /// One read: straight into the buffer when it has room, else into the reactor's
    /// scratch buffer and copied, so the buffer only ever holds what was received. Returns
    /// the bytes read and the bytes asked for.
    ///
    /// A read into the scratch buffer while the buffer is empty offers its bytes to `land`
    /// first ([`Fill::fill_landing`]); only what `land` leaves is buffered.
    #[inline]
    fn recv_once(&mut self, land: &mut impl FnMut(&[u8]) -> usize) -> io::Result<(usize, usize)> {
        let buf = &mut self.rbuf.buf;
        let spare = buf.capacity() - buf.len();
        if spare >= DIRECT_READ {
            let asked = spare.min(READ_CHUNK);
            return recv_into(self.shared.io(), buf, asked).map(|n| (n, asked));
        }
        let io = self.shared.io();
        self.shared
            .source
            .reactor()
            .with_scratch(READ_CHUNK, |scratch| {
                let n = io.read_some(scratch)?;
                let taken = if n > 0 && buf.is_empty() {
                    land(&scratch[..n]).min(n)
                } else {
                    0
                };
                if taken < n {
                    buf.extend_from_slice(&scratch[taken..n]);
                }
                Ok((n, scratch.len()))
            })
    }

    fn wait_readable(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.rbuf.release_if_empty();
        self.shared.source.wait(Interest::Read, deadline)?;
        if self.shared.read_closed.get() {
            return Err(shut_down("reading"));
        }
        Ok(())
    }

    /// As [`Stream::receive_line`](crate::Stream::receive_line).
    ///
    /// # Errors
    /// As [`Stream::receive_line`](crate::Stream::receive_line).
    pub fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
        let deadline = self.read_deadline();
        buffer::receive_line(self, self.max_line, LastLine::Error, deadline)
    }

    /// As [`Stream::receive_line_into`](crate::Stream::receive_line_into).
    ///
    /// # Errors
    /// As [`Stream::receive_line_into`](crate::Stream::receive_line_into).
    pub fn receive_line_into(&mut self, line: &mut Vec<u8>) -> io::Result<bool> {
        let deadline = self.read_deadline();
        buffer::receive_line_into(self, line, self.max_line, LastLine::Error, deadline)
    }

    /// As [`Stream::receive_exact`](crate::Stream::receive_exact).
    ///
    /// # Errors
    /// As [`Stream::receive_exact`](crate::Stream::receive_exact).
    pub fn receive_exact(&mut self, n: usize) -> io::Result<Bytes> {
        let deadline = self.read_deadline();
        buffer::receive_exact(self, n, "connection", deadline)
    }

    /// As [`Stream::receive_to_end`](crate::Stream::receive_to_end).
    ///
    /// # Errors
    /// As [`Stream::receive_to_end`](crate::Stream::receive_to_end).
    pub fn receive_to_end(&mut self) -> io::Result<Bytes> {
        let deadline = self.read_deadline();
        buffer::receive_to_end(self, self.max_to_end, deadline)
    }

    /// As [`Stream::receive_some`](crate::Stream::receive_some).
    ///
    /// # Errors
    /// As [`Stream::receive_some`](crate::Stream::receive_some).
    pub fn receive_some(&mut self, max: usize) -> io::Result<Bytes> {
        let timeout = self.read_timeout;
        buffer::receive_some(self, max, || deadline_after(timeout))
    }

    /// Bytes received but not yet taken.
    pub fn buffered(&self) -> &[u8] {
        self.rbuf.as_slice()
    }

    /// As [`Stream::receive_more`](crate::Stream::receive_more).
    ///
    /// # Errors
    /// As [`Stream::receive_more`](crate::Stream::receive_more).
    pub fn receive_more(&mut self) -> io::Result<usize> {
        let deadline = self.read_deadline();
        self.fill(deadline)
    }
}

impl<S: StreamSocket> Fill for ReadHalf<S> {
    #[inline]
    fn rbuf(&mut self) -> &mut ReadBuffer {
        &mut self.rbuf
    }

    /// Reads more input into the buffer; 0 means the peer closed its side. Inlined into
    /// the receive loops, as it was before they were shared (the echo hot path).
    #[inline]
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        self.fill_landing(deadline, &mut |_| 0)
    }

    #[inline]
    fn fill_landing(
        &mut self,
        deadline: Option<Instant>,
        land: &mut impl FnMut(&[u8]) -> usize,
    ) -> io::Result<usize> {
        self.shared.take_error()?;
        if self.shared.read_closed.get() {
            return Err(shut_down("reading"));
        }
        if self.eof {
            return Ok(0);
        }
        loop {
            if std::mem::take(&mut self.drained) && self.shared.source.may_skip_read() {
                self.wait_readable(deadline)?;
            }
            match self.recv_once(land) {
                Ok((0, _)) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok((n, asked)) => {
                    self.drained = n < asked;
                    cooperate();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_readable(deadline)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: StreamSocket> Read for ReadHalf<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<S: StreamSocket> BufRead for ReadHalf<S> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.rbuf.is_empty() {
            let deadline = self.read_deadline();
            self.fill(deadline)?;
        }
        Ok(self.rbuf.as_slice())
    }

    fn consume(&mut self, amt: usize) {
        self.rbuf.consume(amt);
    }
}
