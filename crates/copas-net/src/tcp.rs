//! `TcpStream`: a TCP connection whose calls suspend the task instead of blocking
//! the thread, with buffered input framed by LuaSocket's receive patterns and buffered
//! output flushed by the loop.
//!
//! Invariants:
//! - Input: the stream owns its [`ReadBuffer`]; bytes leave it only through the receive
//!   calls and `Read`/`BufRead`. An error (timeout, EOF mid-line) never discards bytes.
//! - Output: `send` appends to the write buffer shared with the reactor, which holds at
//!   most `write_limit` bytes; bytes leave it only when the kernel took them. A write error
//!   found in the background is kept and returned by the stream's next call; bytes that can
//!   no longer be delivered are reported, never dropped silently.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use copas_core::cooperate;
use socket2::{Domain, Protocol, Socket, Type};

use crate::buffer::{Line, ReadBuffer};
use crate::reactor::{BackgroundFlush, Direction};
use crate::source::{recv_into, Source};

/// Default limit on the length of a line for [`TcpStream::receive_line`]: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default limit on what [`TcpStream::receive_to_end`] collects: 64 MiB.
pub const DEFAULT_MAX_TO_END: usize = 64 * 1024 * 1024;
/// Default size of the write buffer: 64 KiB. Past it, `send` writes to the socket and
/// suspends while the peer does not read.
pub const DEFAULT_WRITE_BUFFER: usize = 64 * 1024;
/// How long a dropped stream keeps trying to deliver its buffered output when it has no
/// write timeout: 30 s.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(30);

/// How much one read asks the kernel for.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct StreamShared {
    source: Source<std::net::TcpStream>,
    wbuf: RefCell<BytesMut>,
    /// In the reactor's flush queue.
    queued: Cell<bool>,
    /// An error found while writing in the background, for the next call.
    error: RefCell<Option<io::Error>>,
    write_timeout: Cell<Option<Duration>>,
    write_limit: Cell<usize>,
    this: Weak<StreamShared>,
}

impl StreamShared {
    fn new(stream: std::net::TcpStream) -> io::Result<Rc<StreamShared>> {
        stream.set_nonblocking(true)?;
        let source = Source::new(stream)?;
        Ok(Rc::new_cyclic(|this| StreamShared {
            source,
            wbuf: RefCell::new(BytesMut::new()),
            queued: Cell::new(false),
            error: RefCell::new(None),
            write_timeout: Cell::new(None),
            write_limit: Cell::new(DEFAULT_WRITE_BUFFER),
            this: this.clone(),
        }))
    }

    fn io(&self) -> &std::net::TcpStream {
        self.source.get_ref()
    }

    fn take_error(&self) -> io::Result<()> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_deadline(&self) -> Option<Instant> {
        self.write_timeout
            .get()
            .and_then(|d| Instant::now().checked_add(d))
    }

    /// Writes buffered output until it is gone or the socket would block.
    fn write_buffered(&self) -> io::Result<()> {
        let mut wbuf = self.wbuf.borrow_mut();
        while !wbuf.is_empty() {
            match self.io().write(&wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _ = wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Keep no large allocation around on an idle connection.
        if wbuf.capacity() > DEFAULT_WRITE_BUFFER {
            *wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Writes all buffered output, suspending while the socket is full.
    fn flush_blocking(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.take_error()?;
        loop {
            match self.write_buffered() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.source.wait(Direction::Write, deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.source.reactor().set_flusher(self.source.key(), None);
        Ok(())
    }

    fn queue_flush(&self) {
        if !self.queued.replace(true) {
            if let Some(me) = self.this.upgrade() {
                self.source.reactor().queue_flush(me);
            }
        }
    }

    fn pending(&self) -> usize {
        self.wbuf.borrow().len()
    }
}

impl BackgroundFlush for StreamShared {
    fn flush_background(&self) -> bool {
        self.queued.set(false);
        let reactor = self.source.reactor();
        if self.error.borrow().is_some() {
            reactor.set_flusher(self.source.key(), None);
            return false;
        }
        match self.write_buffered() {
            Ok(()) => {
                reactor.set_flusher(self.source.key(), None);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let me: Weak<dyn BackgroundFlush> = self.this.clone();
                reactor.set_flusher(self.source.key(), Some(me));
                true
            }
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                reactor.set_flusher(self.source.key(), None);
                false
            }
        }
    }
}

impl Drop for StreamShared {
    fn drop(&mut self) {
        let lost = self.wbuf.get_mut().len();
        if lost > 0 {
            let peer = self
                .io()
                .peer_addr()
                .map_or_else(|_| "a closed peer".to_owned(), |a| a.to_string());
            let why = match self.error.get_mut() {
                Some(e) => e.to_string(),
                None => "the stream was dropped before it could be flushed".to_owned(),
            };
            eprintln!("copas: {lost} bytes of buffered output to {peer} were lost: {why}");
        }
    }
}

/// A TCP connection for use inside copas tasks (Copas `wrap`).
///
/// Every call that would block suspends the calling task instead, and the loop runs other
/// tasks meanwhile. Input is buffered and framed with the `receive_*` calls, which mirror
/// LuaSocket's patterns; output is buffered by [`send`](TcpStream::send) and leaves when the
/// loop next waits, on [`flush`](TcpStream::flush), on [`close`](TcpStream::close), on drop,
/// or as soon as the buffer is full.
///
/// The stream implements [`Read`], [`BufRead`] and [`Write`], so existing blocking code runs
/// unchanged on it inside a task.
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
    rbuf: ReadBuffer,
    eof: bool,
    read_timeout: Option<Duration>,
    max_line: usize,
    max_to_end: usize,
    shared: Rc<StreamShared>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("buffered_in", &self.rbuf.len())
            .field("buffered_out", &self.shared.pending())
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
        Ok(TcpStream {
            rbuf: ReadBuffer::default(),
            eof: false,
            read_timeout: None,
            max_line: DEFAULT_MAX_LINE,
            max_to_end: DEFAULT_MAX_TO_END,
            shared: StreamShared::new(stream)?,
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

    fn read_deadline(&self) -> Option<Instant> {
        self.read_timeout
            .and_then(|d| Instant::now().checked_add(d))
    }

    /// Reads more input into the buffer; 0 means the peer closed its side.
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        self.shared.take_error()?;
        if self.eof {
            return Ok(0);
        }
        loop {
            match recv_into(self.shared.io(), &mut self.rbuf.buf, READ_CHUNK) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    cooperate();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rbuf.release_if_empty();
                    self.shared.source.wait(Direction::Read, deadline)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
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
    /// - A cancellation error, or the OS error (`ConnectionReset`, …).
    pub fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
        let deadline = self.read_deadline();
        loop {
            match self.rbuf.take_line(self.max_line) {
                Line::Complete(line) => return Ok(Some(line)),
                Line::TooLong => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("copas: line longer than {} bytes", self.max_line),
                    ))
                }
                Line::Incomplete => {}
            }
            if self.fill(deadline)? == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "copas: connection closed in the middle of a line",
                    ))
                };
            }
        }
    }

    /// Receives exactly `n` bytes (LuaSocket's numeric pattern).
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the peer closes first (what arrived stays
    /// buffered); `TimedOut`; a cancellation error; the OS error.
    pub fn receive_exact(&mut self, n: usize) -> io::Result<Bytes> {
        let deadline = self.read_deadline();
        loop {
            if let Some(data) = self.rbuf.take_exact(n) {
                return Ok(data);
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "copas: connection closed after {} of {n} bytes",
                        self.rbuf.len()
                    ),
                ));
            }
        }
    }

    /// Receives everything until the peer closes its side (LuaSocket `*a`).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] if more than the limit
    /// ([`set_max_receive_to_end`](TcpStream::set_max_receive_to_end), default 64 MiB)
    /// arrives (it stays buffered); `TimedOut` (what arrived stays buffered); a
    /// cancellation error; the OS error.
    pub fn receive_to_end(&mut self) -> io::Result<Bytes> {
        let deadline = self.read_deadline();
        while self.fill(deadline)? > 0 {
            if self.rbuf.len() > self.max_to_end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "copas: more than {} bytes before end of stream",
                        self.max_to_end
                    ),
                ));
            }
        }
        Ok(self.rbuf.take_all())
    }

    /// Receives what is available, at most `max` bytes, waiting only if nothing is
    /// buffered (LuaSocket's partial receive). An empty result means end of stream.
    ///
    /// # Errors
    /// `TimedOut`, a cancellation error, or the OS error.
    pub fn receive_some(&mut self, max: usize) -> io::Result<Bytes> {
        if self.rbuf.is_empty() && max > 0 {
            let deadline = self.read_deadline();
            self.fill(deadline)?;
        }
        Ok(self.rbuf.take_some(max))
    }

    /// Bytes received but not yet taken.
    pub fn buffered(&self) -> &[u8] {
        self.rbuf.as_slice()
    }

    /// Buffers `data` for sending. It leaves when the loop next waits, on
    /// [`flush`](TcpStream::flush), or right away if the buffer would pass its limit; in
    /// that case the task suspends while the peer does not read, so memory stays bounded.
    ///
    /// # Errors
    /// A write error found earlier in the background; `TimedOut` once the write timeout
    /// passed; a cancellation error; the OS error. On error, a prefix of `data` may have
    /// been sent.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let shared = &*self.shared;
        shared.take_error()?;
        let limit = shared.write_limit.get();
        {
            let mut wbuf = shared.wbuf.borrow_mut();
            if wbuf.len() + data.len() <= limit {
                wbuf.extend_from_slice(data);
                drop(wbuf);
                shared.queue_flush();
                cooperate();
                return Ok(());
            }
        }
        let deadline = shared.write_deadline();
        shared.flush_blocking(deadline)?;
        let mut rest = data;
        while rest.len() > limit {
            let n = shared
                .source
                .do_io(Direction::Write, deadline, |s| (&*s).write(rest))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        shared.wbuf.borrow_mut().extend_from_slice(rest);
        shared.queue_flush();
        Ok(())
    }

    /// Sends all buffered output now, suspending while the peer does not read.
    ///
    /// # Errors
    /// As [`send`](TcpStream::send).
    pub fn flush(&mut self) -> io::Result<()> {
        let deadline = self.shared.write_deadline();
        self.shared.flush_blocking(deadline)
    }

    /// Flushes, then closes the connection.
    ///
    /// # Errors
    /// The flush error; the bytes that could not be sent are then discarded (this error
    /// is their report).
    pub fn close(self) -> io::Result<()> {
        let r = self.shared.flush_blocking(self.shared.write_deadline());
        if r.is_err() {
            self.shared.wbuf.borrow_mut().clear();
        }
        r
    }

    /// Shuts down the read, write or both halves. Buffered output is flushed before the
    /// write half is shut down.
    ///
    /// # Errors
    /// The flush error, or the OS error.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.flush()?;
        }
        self.shared.io().shutdown(how)
    }

    /// The remote address.
    ///
    /// # Errors
    /// The OS error (e.g. `NotConnected`).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.io().peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.io().local_addr()
    }

    /// Sets `TCP_NODELAY`. Output is already coalesced by the write buffer, so small
    /// responses do not need Nagle's algorithm.
    ///
    /// # Errors
    /// The OS error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.shared.io().set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// The OS error.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.shared.io().nodelay()
    }

    /// Sets the deadline of each receive call, counted from the call's start (`None`: no
    /// limit). A call that passes it fails with `TimedOut` and keeps what it received.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Sets the deadline of each call that waits to write (`send` past the buffer,
    /// `flush`, `close`), and how long a dropped stream keeps trying to deliver its output.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.shared.write_timeout.set(timeout);
        Ok(())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.shared.write_timeout.get()
    }

    /// Sets the longest line [`receive_line`](TcpStream::receive_line) accepts.
    pub fn set_max_line_length(&mut self, max: usize) {
        self.max_line = max;
    }

    /// Sets the most [`receive_to_end`](TcpStream::receive_to_end) collects.
    pub fn set_max_receive_to_end(&mut self, max: usize) {
        self.max_to_end = max;
    }

    /// Sets the size of the write buffer (at least 1 byte).
    pub fn set_write_buffer_size(&mut self, size: usize) {
        self.shared.write_limit.set(size.max(1));
    }

    /// Bytes accepted by `send` and not yet taken by the kernel.
    pub fn pending_output(&self) -> usize {
        self.shared.pending()
    }
}

fn check_timeout(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "copas: a zero timeout is not allowed; use None for no timeout",
        ));
    }
    Ok(())
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.pending() == 0 || shared.error.borrow().is_some() {
            return;
        }
        if shared.write_buffered().is_ok() || shared.pending() == 0 {
            return;
        }
        // The kernel's buffer is full: deliver the rest from a task of its own, for at most
        // the write timeout (or the default linger time).
        let shared = shared.clone();
        let linger = shared.write_timeout.get().unwrap_or(DEFAULT_LINGER);
        let spawned = copas_core::Builder::new()
            .name("copas-linger".to_owned())
            .spawn(move || {
                let deadline = Instant::now().checked_add(linger);
                if let Err(e) = shared.flush_blocking(deadline) {
                    *shared.error.borrow_mut() = Some(e);
                }
            });
        // If no task can be spawned, StreamShared's drop reports the loss.
        drop(spawned);
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for TcpStream {
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

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        TcpStream::flush(self)
    }
}

pub(crate) fn each_addr<T>(
    addr: impl ToSocketAddrs,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "copas: the address resolved to nothing",
        )
    }))
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
        loop {
            stream.shared.source.wait(Direction::Write, deadline)?;
            if let Some(e) = stream.shared.io().take_error()? {
                return Err(e);
            }
            match stream.shared.io().peer_addr() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(stream)
}
