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
use crate::reactor::{BackgroundFlush, Interest};
use crate::shared::{check_timeout, each_addr};
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

/// The most one read asks the kernel for (less when reading straight into a buffer with
/// less room).
const READ_CHUNK: usize = 16 * 1024;

/// A write buffer at most this large is kept for reuse once it has been sent.
const KEEP_WRITE_BUFFER: usize = 4 * 1024;

/// Spare room in a stream's buffer from which reads go straight into it.
const DIRECT_READ: usize = 4 * 1024;

pub(crate) struct StreamShared {
    source: Source<std::net::TcpStream>,
    wbuf: RefCell<BytesMut>,
    /// In the reactor's flush queue.
    queued: Cell<bool>,
    /// An error found while writing in the background, for the next call.
    error: RefCell<Option<io::Error>>,
    write_timeout: Cell<Option<Duration>>,
    write_limit: Cell<usize>,
    /// Shut down for reading / writing by either half (a waiter on the other half is
    /// woken and fails with `NotConnected`).
    read_closed: Cell<bool>,
    write_closed: Cell<bool>,
    /// A name for reports (`set_name`).
    name: RefCell<Option<Rc<str>>>,
    /// Whether the reactor holds this stream as waiting for writability (mirrors its
    /// slot, so that the common case needs no reactor call).
    flusher_set: Cell<bool>,
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
            read_closed: Cell::new(false),
            write_closed: Cell::new(false),
            name: RefCell::new(None),
            flusher_set: Cell::new(false),
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
                // Advancing (not splitting) keeps the buffer unshared: no allocation.
                Ok(n) if n < wbuf.len() => bytes::Buf::advance(&mut *wbuf, n),
                Ok(_) => {
                    // All sent: reuse a small buffer, drop a large one (an idle connection
                    // should hold little).
                    if wbuf.capacity() > KEEP_WRITE_BUFFER {
                        *wbuf = BytesMut::new();
                    } else {
                        wbuf.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all buffered output, suspending while the socket is full.
    fn flush_blocking(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.take_error()?;
        loop {
            if self.write_closed.get() && self.pending() > 0 {
                return Err(shut_down("writing"));
            }
            match self.write_buffered() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.source.wait(Interest::Write, deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.set_flusher(false);
        Ok(())
    }

    /// Tells the reactor whether this stream's output waits for writability.
    fn set_flusher(&self, waiting: bool) {
        if self.flusher_set.replace(waiting) == waiting {
            return;
        }
        let me: Option<Weak<dyn BackgroundFlush>> = if waiting {
            Some(self.this.clone())
        } else {
            None
        };
        self.source.reactor().set_flusher(self.source.key(), me);
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

    fn send(&self, data: &[u8]) -> io::Result<()> {
        self.take_error()?;
        if self.write_closed.get() {
            return Err(shut_down("writing"));
        }
        let limit = self.write_limit.get();
        {
            let mut wbuf = self.wbuf.borrow_mut();
            if wbuf.len() + data.len() <= limit {
                wbuf.extend_from_slice(data);
                drop(wbuf);
                self.queue_flush();
                cooperate();
                return Ok(());
            }
        }
        let deadline = self.write_deadline();
        self.flush_blocking(deadline)?;
        let mut rest = data;
        while rest.len() > limit {
            let n = self
                .source
                .do_io(Interest::Write, deadline, |s| (&*s).write(rest))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        self.wbuf.borrow_mut().extend_from_slice(rest);
        self.queue_flush();
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.flush_blocking(self.write_deadline())
    }

    fn close(&self) -> io::Result<()> {
        let r = self.flush();
        if r.is_err() {
            self.wbuf.borrow_mut().clear();
        }
        self.mark_closed(Shutdown::Both);
        let _ = self.io().shutdown(Shutdown::Both);
        r
    }

    /// Shuts down a direction; `flush` says whether buffered output is sent first (the
    /// write half does so; the read half cannot wait for writability, since the write
    /// half may be waiting already, and discards it).
    fn shutdown(&self, how: Shutdown, flush: bool) -> io::Result<()> {
        if how != Shutdown::Read && flush {
            self.flush()?;
        }
        self.mark_closed(how);
        self.io().shutdown(how)
    }

    /// Records the shut-down directions and wakes both halves' waiters, which then fail.
    fn mark_closed(&self, how: Shutdown) {
        if how != Shutdown::Write {
            self.read_closed.set(true);
        }
        if how != Shutdown::Read {
            self.write_closed.set(true);
        }
        self.source.reactor().wake_waiters(self.source.key());
    }

    /// Hands output still buffered when the write side's owner goes away to a task of its
    /// own, which delivers it within the write timeout (or the default linger time).
    fn linger(this: &Rc<StreamShared>) {
        if this.pending() == 0 || this.error.borrow().is_some() || this.write_closed.get() {
            return;
        }
        if this.write_buffered().is_ok() || this.pending() == 0 {
            return;
        }
        let shared = this.clone();
        let linger = shared.write_timeout.get().unwrap_or(DEFAULT_LINGER);
        let spawned = copas_core::Builder::new()
            .name("copas-linger".to_owned())
            .lingering()
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

fn shut_down(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("copas: the socket is shut down for {what}"),
    )
}

impl BackgroundFlush for StreamShared {
    fn flush_background(&self) -> bool {
        self.queued.set(false);
        if self.error.borrow().is_some() {
            self.set_flusher(false);
            return false;
        }
        match self.write_buffered() {
            Ok(()) => {
                self.set_flusher(false);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.set_flusher(true);
                true
            }
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                self.set_flusher(false);
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
            let peer = match self.name.get_mut() {
                Some(name) => format!("{peer} ('{name}')"),
                None => peer,
            };
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
/// unchanged on it inside a task. [`split`](TcpStream::split) gives a read half and a write
/// half that two tasks can use at once.
///
/// Dropping a stream whose output the kernel has not taken yet does not lose it: a task of
/// its own goes on delivering it for up to the write timeout (default
/// [`DEFAULT_LINGER`]); what cannot be delivered then is reported on stderr.
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
    read: ReadHalf,
    write: WriteHalf,
}

/// The receiving half of a [`TcpStream`] (from [`TcpStream::split`]).
pub struct ReadHalf {
    rbuf: ReadBuffer,
    eof: bool,
    /// The last read found the kernel's buffer empty (`WouldBlock`, or fewer bytes than
    /// asked for, which for a stream socket means the same, see epoll(7)): where the
    /// reactor tracks readiness precisely, the next read waits for it first instead of
    /// making a system call that would only say `EAGAIN`.
    drained: bool,
    read_timeout: Option<Duration>,
    max_line: usize,
    max_to_end: usize,
    shared: Rc<StreamShared>,
}

/// The sending half of a [`TcpStream`] (from [`TcpStream::split`]). Dropping it with
/// output still buffered delivers that output from a task of its own, as dropping a
/// stream does.
pub struct WriteHalf {
    shared: Rc<StreamShared>,
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

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("peer", &self.shared.io().peer_addr().ok())
            .field("buffered_in", &self.rbuf.len())
            .finish()
    }
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf")
            .field("peer", &self.shared.io().peer_addr().ok())
            .field("buffered_out", &self.shared.pending())
            .finish()
    }
}

/// The halves given to [`ReadHalf::reunite`] came from different streams.
#[derive(Debug)]
pub struct ReuniteError(pub ReadHalf, pub WriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of different streams")
    }
}

impl std::error::Error for ReuniteError {}

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

impl ReadHalf {
    fn read_deadline(&self) -> Option<Instant> {
        self.read_timeout
            .and_then(|d| Instant::now().checked_add(d))
    }

    /// Reads more input into the buffer; 0 means the peer closed its side.
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
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
            match self.recv_once() {
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

    /// One read: straight into the buffer when it has room, else into the reactor's
    /// scratch buffer and copied, so the buffer only ever holds what was received. Returns
    /// the bytes read and the bytes asked for.
    fn recv_once(&mut self) -> io::Result<(usize, usize)> {
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
                let n = (&*io).read(scratch)?;
                buf.extend_from_slice(&scratch[..n]);
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

    /// As [`TcpStream::receive_line`].
    ///
    /// # Errors
    /// As [`TcpStream::receive_line`].
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

    /// As [`TcpStream::receive_exact`].
    ///
    /// # Errors
    /// As [`TcpStream::receive_exact`].
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

    /// As [`TcpStream::receive_to_end`].
    ///
    /// # Errors
    /// As [`TcpStream::receive_to_end`].
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

    /// As [`TcpStream::receive_some`].
    ///
    /// # Errors
    /// As [`TcpStream::receive_some`].
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

    /// As [`TcpStream::receive_more`].
    ///
    /// # Errors
    /// As [`TcpStream::receive_more`].
    pub fn receive_more(&mut self) -> io::Result<usize> {
        let deadline = self.read_deadline();
        self.fill(deadline)
    }

    /// As [`TcpStream::set_read_timeout`].
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// Shuts down a direction without flushing: the write half may be waiting to write,
    /// so output still buffered is discarded (and reported) when the write direction is
    /// shut down from here. A task blocked on the write half is woken and fails.
    ///
    /// # Errors
    /// The OS error.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.shared.shutdown(how, false)
    }

    /// Puts the halves of one stream back together.
    ///
    /// # Errors
    /// [`ReuniteError`] (holding both halves) if they belong to different streams.
    pub fn reunite(self, write: WriteHalf) -> Result<TcpStream, ReuniteError> {
        if Rc::ptr_eq(&self.shared, &write.shared) {
            Ok(TcpStream { read: self, write })
        } else {
            Err(ReuniteError(self, write))
        }
    }
}

impl WriteHalf {
    /// As [`TcpStream::send`].
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.shared.send(data)
    }

    /// As [`TcpStream::flush`].
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    pub fn flush(&mut self) -> io::Result<()> {
        self.shared.flush()
    }

    /// Flushes, then closes the connection in both directions; a task blocked on the
    /// read half is woken and fails with `NotConnected`.
    ///
    /// # Errors
    /// As [`TcpStream::close`].
    pub fn close(self) -> io::Result<()> {
        self.shared.close()
    }

    /// As [`TcpStream::shutdown`]; a task blocked on the read half is woken when the read
    /// direction is shut down.
    ///
    /// # Errors
    /// As [`TcpStream::shutdown`].
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.shared.shutdown(how, true)
    }

    /// As [`TcpStream::set_write_timeout`].
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.shared.write_timeout.set(timeout);
        Ok(())
    }

    /// As [`TcpStream::set_write_buffer_size`].
    pub fn set_write_buffer_size(&mut self, size: usize) {
        self.shared.write_limit.set(size.max(1));
    }

    /// As [`TcpStream::pending_output`].
    pub fn pending_output(&self) -> usize {
        self.shared.pending()
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        StreamShared::linger(&self.shared);
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ReadHalf {
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

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        WriteHalf::flush(self)
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
