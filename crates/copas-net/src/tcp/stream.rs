//! [`TcpStream`]: a read half and a write half of one connection, and connecting.
//!
//! Invariant: both halves share one [`StreamShared`]; the
//! stream's calls forward to the half that owns the concern.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use super::halves::WriteHalf;
use super::read::ReadHalf;
use super::write::StreamShared;
use super::{DEFAULT_MAX_LINE, DEFAULT_MAX_TO_END};
use crate::buffer::ReadBuffer;
use crate::reactor::Interest;
use crate::shared::each_addr;

/// A TCP connection for use inside copas tasks (Copas `wrap`).
///
/// Every call that would block suspends the calling task instead, and the loop runs other
/// tasks meanwhile. Input is buffered and framed with the `receive_*` calls, which mirror
/// LuaSocket's patterns; output is buffered by [`send`](TcpStream::send) and leaves when the
/// loop next waits, on [`flush`](TcpStream::flush), on [`close`](TcpStream::close), on drop,
/// or as soon as the buffer is full.
///
/// The stream implements [`Read`], [`BufRead`] and [`Write`], so existing blocking code runs
/// unchanged on it inside a task. [`split`](TcpStream::split) gives a read half and a write
/// half that two tasks can use at once.
///
/// Dropping a stream whose output the kernel has not taken yet does not lose it: a task of
/// its own goes on delivering it for up to the write timeout (default
/// [`DEFAULT_LINGER`](crate::DEFAULT_LINGER)); what cannot be delivered then is reported on stderr.
///
/// # Examples
/// ```
/// use copas_net::TcpStream;
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap();
/// let server = copas_net::add_server(listener, |mut conn: TcpStream| {
///     while let Some(line) = conn.receive_line()? {
///         conn.send(&line)?;
///         conn.send(b"\n")?;
///     }
///     Ok(())
/// })
/// .unwrap();
/// let client = copas_core::spawn(move || {
///     let mut s = TcpStream::connect(addr)?;
///     s.send(b"hello\n")?;
///     let echo = s.receive_line()?;
///     server.stop();
///     std::io::Result::Ok(echo)
/// });
/// copas_core::run().unwrap();
/// assert_eq!(client.join().unwrap().unwrap().unwrap(), &b"hello"[..]);
/// ```
pub struct TcpStream {
    pub(super) read: ReadHalf,
    pub(super) write: WriteHalf,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("name", &self.name())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("buffered_in", &self.read.rbuf.len())
            .field("buffered_out", &self.write.shared.pending())
            .finish()
    }
}

impl TcpStream {
    /// Wraps a connected `std::net::TcpStream` (Copas `wrap`), switching it to
    /// non-blocking mode and registering it with the loop.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        let shared = StreamShared::new(stream)?;
        Ok(TcpStream {
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

    /// Opens a connection, suspending the task (not the thread) while it is being set up.
    /// Each address `addr` resolves to is tried in turn. Name resolution itself blocks.
    ///
    /// # Errors
    /// The error of the last address tried (`ConnectionRefused`, …), or `InvalidInput` if
    /// `addr` resolves to nothing.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| connect_addr(a, None))
    }

    /// Opens a connection to `addr`, failing with `TimedOut` if it is not set up within
    /// `timeout`.
    ///
    /// # Errors
    /// `TimedOut`, or the connection error.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        connect_addr(*addr, Instant::now().checked_add(timeout))
    }

    /// Splits the stream into a read half and a write half that two tasks can use at
    /// once (one reading, one writing). Shutting down or closing through one half wakes a
    /// task blocked on the other, whose call then fails with `NotConnected`.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }

    /// Receives one line (LuaSocket `*l`): the bytes up to `\n`, without the `\n` and a
    /// `\r` just before it. The bytes are not checked for UTF-8. `Ok(None)` means the peer
    /// closed the connection cleanly, with nothing buffered.
    ///
    /// # Errors
    /// - [`io::ErrorKind::InvalidData`] if the line is longer than the limit
    ///   ([`set_max_line_length`](TcpStream::set_max_line_length), default 64 KiB); the
    ///   connection should then be closed.
    /// - [`io::ErrorKind::UnexpectedEof`] if the peer closed in the middle of a line; the
    ///   partial line stays buffered ([`receive_to_end`](TcpStream::receive_to_end) or
    ///   [`buffered`](TcpStream::buffered) get it).
    /// - [`io::ErrorKind::TimedOut`] once the read timeout passed; what arrived stays
    ///   buffered.
    /// - `NotConnected` after a shutdown for reading; a cancellation error; the OS error
    ///   (`ConnectionReset`, …).
    pub fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
        self.read.receive_line()
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
    /// ([`set_max_receive_to_end`](TcpStream::set_max_receive_to_end), default 64 MiB)
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
    /// [`buffered`](TcpStream::buffered) and [`consume`](BufRead::consume) (`fill_buf`
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
    /// [`flush`](TcpStream::flush), or right away if the buffer would pass its limit; in
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
    /// As [`send`](TcpStream::send).
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
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
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
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.write.shared.io().local_addr()
    }

    /// Sets `TCP_NODELAY`. Output is already coalesced by the write buffer, so small
    /// responses do not need Nagle's algorithm.
    ///
    /// # Errors
    /// The OS error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.write.shared.io().set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// The OS error.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.write.shared.io().nodelay()
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

    /// Sets the longest line [`receive_line`](TcpStream::receive_line) accepts.
    pub fn set_max_line_length(&mut self, max: usize) {
        self.read.max_line = max;
    }

    /// Sets the most [`receive_to_end`](TcpStream::receive_to_end) collects.
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

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl BufRead for TcpStream {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.read.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.read.consume(amt);
    }
}

/// std's contract, as [`WriteHalf`]'s: a partial write is `Ok(n)`; `Err` means no byte
/// was accepted.
impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write.flush()
    }
}

fn connect_addr(addr: SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    let pending = match socket.connect(&addr.into()) {
        Ok(()) => false,
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock =>
        {
            true
        }
        Err(e) => return Err(e),
    };
    let stream = TcpStream::from_std(socket.into())?;
    if pending {
        let shared = &stream.write.shared;
        loop {
            shared.source.wait(Interest::Write, deadline)?;
            if let Some(e) = shared.io().take_error()? {
                return Err(e);
            }
            match shared.io().peer_addr() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(stream)
}
