//! [`Stream`]: a read half and a write half of one connection.
//!
//! Invariant: both halves share one [`StreamShared`]; the
//! stream's calls forward to the half that owns the concern.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::halves::WriteHalf;
use super::read::ReadHalf;
use super::write::StreamShared;
use super::{StreamSocket, DEFAULT_MAX_LINE, DEFAULT_MAX_TO_END};
use crate::buffer::ReadBuffer;

/// A connection for use inside copas tasks (Copas `wrap`): [`TcpStream`](crate::TcpStream)
/// is `Stream<std::net::TcpStream>` and [`UnixStream`](crate::UnixStream) is
/// `Stream<std::os::unix::net::UnixStream>`; both have every call below, and a handler
/// generic over [`StreamSocket`] serves either.
///
/// Every call that would block suspends the calling task instead, and the loop runs other
/// tasks meanwhile. Input is buffered and framed with the `receive_*` calls, which mirror
/// LuaSocket's patterns; output is buffered by [`send`](Stream::send) and leaves when the
/// loop next waits, on [`flush`](Stream::flush), on [`close`](Stream::close), on drop,
/// or as soon as the buffer is full.
///
/// The stream implements [`Read`], [`BufRead`] and [`Write`], so existing blocking code runs
/// unchanged on it inside a task. [`split`](Stream::split) gives a read half and a write
/// half that two tasks can use at once.
///
/// Dropping a stream whose output the kernel has not taken yet does not lose it: a task of
/// its own goes on delivering it for up to the write timeout (default
/// [`DEFAULT_LINGER`](crate::DEFAULT_LINGER)); what cannot be delivered then is reported on stderr.
///
/// # Examples
/// A connected pair of Unix sockets; `receive_line` outside any task runs the loop while
/// it waits.
/// ```
/// let (mut a, mut b) = copas_net::UnixStream::pair().unwrap();
/// copas_core::spawn(move || {
///     a.send(b"ping\n")?;
///     a.flush()
/// });
/// assert_eq!(b.receive_line().unwrap().unwrap(), &b"ping"[..]);
/// ```
pub struct Stream<S: StreamSocket> {
    pub(super) read: ReadHalf<S>,
    pub(super) write: WriteHalf<S>,
}

impl<S: StreamSocket> fmt::Debug for Stream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(S::KIND)
            .field("name", &self.name())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("buffered_in", &self.read.rbuf.len())
            .field("buffered_out", &self.write.shared.pending())
            .finish()
    }
}

impl<S: StreamSocket> Stream<S> {
    /// Wraps a connected std stream (`std::net::TcpStream` or
    /// `std::os::unix::net::UnixStream`; Copas `wrap`), switching it to non-blocking mode
    /// and registering it with the loop.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn from_std(stream: S) -> io::Result<Stream<S>> {
        let shared = StreamShared::new(stream)?;
        Ok(Stream {
            read: ReadHalf {
                rbuf: ReadBuffer::default(),
                eof: false,
                drained: false,
                read_timeout: None,
                max_line: DEFAULT_MAX_LINE,
                max_to_end: DEFAULT_MAX_TO_END,
                shared: shared.clone(),
            },
            write: WriteHalf { shared },
        })
    }

    /// The registered socket, for what only one kind of stream has (`tcp.rs`, `unix/`).
    pub(crate) fn source(&self) -> &crate::source::Source<S> {
        &self.write.shared.source
    }

    /// Splits the stream into a read half and a write half that two tasks can use at
    /// once (one reading, one writing). Shutting down or closing through one half wakes a
    /// task blocked on the other, whose call then fails with `NotConnected`.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        (self.read, self.write)
    }

    /// Receives one line (LuaSocket `*l`): the bytes up to `\n`, without the `\n` and a
    /// `\r` just before it. The bytes are not checked for UTF-8. `Ok(None)` means the peer
    /// closed the connection cleanly, with nothing buffered.
    ///
    /// # Errors
    /// - [`io::ErrorKind::InvalidData`] if the line is longer than the limit
    ///   ([`set_max_line_length`](Stream::set_max_line_length), default 64 KiB); the
    ///   connection should then be closed.
    /// - [`io::ErrorKind::UnexpectedEof`] if the peer closed in the middle of a line; the
    ///   partial line stays buffered ([`receive_to_end`](Stream::receive_to_end) or
    ///   [`buffered`](Stream::buffered) get it).
    /// - [`io::ErrorKind::TimedOut`] once the read timeout passed; what arrived stays
    ///   buffered.
    /// - `NotConnected` after a shutdown for reading; a cancellation error; the OS error
    ///   (`ConnectionReset`, …).
    pub fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
        self.read.receive_line()
    }

    /// Receives one line as [`receive_line`](Stream::receive_line) does, but appends it
    /// (without its `\n` and a `\r` before it) to `line` instead of returning a new
    /// buffer: `Ok(true)` when a line was appended, `Ok(false)` when the peer closed the
    /// connection cleanly with nothing buffered. Like [`BufRead::read_until`], it appends;
    /// clear `line` between calls. A handler that reuses one `Vec` makes no allocation per
    /// line, where `receive_line` makes one for each (the connection's own buffer is
    /// released whenever it empties, so that an idle connection holds none).
    ///
    /// ```
    /// let (mut a, mut b) = copas_net::UnixStream::pair().unwrap();
    /// copas_core::spawn(move || {
    ///     a.send(b"one\r\ntwo\n")?;
    ///     a.close()
    /// });
    /// let mut line = Vec::new();
    /// let mut lines = Vec::new();
    /// while b.receive_line_into(&mut line).unwrap() {
    ///     lines.push(String::from_utf8(line.clone()).unwrap());
    ///     line.clear();
    /// }
    /// assert_eq!(lines, ["one", "two"]);
    /// ```
    ///
    /// # Errors
    /// As [`receive_line`](Stream::receive_line); on error nothing is appended, and what
    /// arrived stays buffered.
    pub fn receive_line_into(&mut self, line: &mut Vec<u8>) -> io::Result<bool> {
        self.read.receive_line_into(line)
    }

    /// Receives exactly `n` bytes (LuaSocket's numeric pattern).
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the peer closes first (what arrived stays
    /// buffered); `TimedOut`; a cancellation error; the OS error.
    pub fn receive_exact(&mut self, n: usize) -> io::Result<Bytes> {
        self.read.receive_exact(n)
    }

    /// Receives everything until the peer closes its side (LuaSocket `*a`).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] if more than the limit
    /// ([`set_max_receive_to_end`](Stream::set_max_receive_to_end), default 64 MiB)
    /// arrives (it stays buffered); `TimedOut` (what arrived stays buffered); a
    /// cancellation error; the OS error.
    pub fn receive_to_end(&mut self) -> io::Result<Bytes> {
        self.read.receive_to_end()
    }

    /// Receives what is available, at most `max` bytes, waiting only if nothing is
    /// buffered (LuaSocket's partial receive). An empty result means end of stream (or
    /// `max == 0`, which returns at once).
    ///
    /// # Errors
    /// `TimedOut`, a cancellation error, or the OS error.
    pub fn receive_some(&mut self, max: usize) -> io::Result<Bytes> {
        self.read.receive_some(max)
    }

    /// Bytes received but not yet taken.
    pub fn buffered(&self) -> &[u8] {
        self.read.buffered()
    }

    /// Waits for more input and appends it to what is buffered, for parsers that work on
    /// [`buffered`](Stream::buffered) and [`consume`](BufRead::consume) (`fill_buf`
    /// only reads when nothing is buffered). Returns how many bytes arrived; 0 means end
    /// of stream. Each call adds at most 16 KiB, so the caller bounds what it lets
    /// accumulate.
    ///
    /// # Errors
    /// `TimedOut` after the read timeout, a cancellation error, or the OS error.
    pub fn receive_more(&mut self) -> io::Result<usize> {
        self.read.receive_more()
    }

    /// Buffers `data` for sending. It leaves when the loop next waits, on
    /// [`flush`](Stream::flush), or right away if the buffer would pass its limit; in
    /// that case the task suspends while the peer does not read, so memory stays bounded.
    ///
    /// # Errors
    /// A write error found earlier in the background; `TimedOut` once the write timeout
    /// passed; `NotConnected` after a shutdown for writing; a cancellation error; the OS
    /// error. On error, a prefix of `data` may have been sent.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.write.send(data)
    }

    /// Sends all buffered output now, suspending while the peer does not read.
    ///
    /// # Errors
    /// As [`send`](Stream::send).
    pub fn flush(&mut self) -> io::Result<()> {
        self.write.flush()
    }

    /// Flushes, then closes the connection.
    ///
    /// # Errors
    /// The flush error; the bytes that could not be sent are then discarded (this error
    /// is their report).
    pub fn close(self) -> io::Result<()> {
        self.write.close()
    }

    /// Shuts down the read, write or both halves. Buffered output is flushed before the
    /// write half is shut down. Later calls in a shut-down direction fail with
    /// `NotConnected`.
    ///
    /// # Errors
    /// The flush error, or the OS error.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.write.shared.shutdown(how, true)
    }

    /// The remote address.
    ///
    /// # Errors
    /// The OS error (e.g. `NotConnected`).
    pub fn peer_addr(&self) -> io::Result<S::Addr> {
        self.write.shared.io().peer_addr()
    }

    /// Names the stream (shared by its halves); the name appears in `Debug` output and in
    /// the report of output lost when the stream is dropped.
    pub fn set_name(&self, name: impl Into<String>) {
        let name: String = name.into();
        *self.write.shared.name.borrow_mut() = Some(name.into());
    }

    /// The stream's name, if it was given one.
    pub fn name(&self) -> Option<Rc<str>> {
        self.write.shared.name.borrow().clone()
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<S::Addr> {
        self.write.shared.io().local_addr()
    }

    /// Sets the deadline of each receive call, counted from the call's start (`None`: no
    /// limit). A call that passes it fails with `TimedOut` and keeps what it received.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read.set_read_timeout(timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read.read_timeout
    }

    /// Sets the deadline of each call that waits to write (`send` past the buffer,
    /// `flush`, `close`), and how long a dropped stream keeps trying to deliver its output.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.write.set_write_timeout(timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write.shared.write_timeout.get()
    }

    /// Sets the longest line [`receive_line`](Stream::receive_line) accepts.
    pub fn set_max_line_length(&mut self, max: usize) {
        self.read.max_line = max;
    }

    /// Sets the most [`receive_to_end`](Stream::receive_to_end) collects.
    pub fn set_max_receive_to_end(&mut self, max: usize) {
        self.read.max_to_end = max;
    }

    /// Sets the size of the write buffer (at least 1 byte).
    pub fn set_write_buffer_size(&mut self, size: usize) {
        self.write.set_write_buffer_size(size);
    }

    /// Bytes accepted by `send` and not yet taken by the kernel.
    pub fn pending_output(&self) -> usize {
        self.write.pending_output()
    }
}

impl<S: StreamSocket> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl<S: StreamSocket> BufRead for Stream<S> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.read.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.read.consume(amt);
    }
}

/// std's contract, as [`WriteHalf`]'s: a partial write is `Ok(n)`; `Err` means no byte
/// was accepted.
impl<S: StreamSocket> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write.flush()
    }
}
