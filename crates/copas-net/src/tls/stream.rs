//! `TlsStream`: a rustls connection over a [`TcpStream`], with the same calls as the TCP
//! stream.
//!
//! Layering: plaintext input is framed by the stream's own [`ReadBuffer`] (as in TCP);
//! records come from the TCP stream's input buffer (`fill_buf`/`consume`) into rustls.
//! Plaintext output is encrypted by rustls as it is sent and the records are handed to the
//! TCP stream's write buffer, which the loop flushes in the background and which blocks
//! the task once full; so the memory per connection is bounded by rustls's buffer limit
//! (the write buffer size) plus the TCP write buffer.
//!
//! Invariants:
//! - Records pass to the TCP stream in pieces no larger than its write buffer, so a TCP
//!   `send` either takes a piece whole or fails without taking any of it: after a timeout
//!   the record stream stays intact and a later call goes on where this one stopped.
//! - rustls's received-plaintext buffer is drained into `rbuf` before more records are
//!   read, so it never reaches its limit.
//! - After a TLS protocol error every call fails with a copy of that error.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};

use crate::addr::ToSocketAddrs;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::buffer::{self, Fill, LastLine, ReadBuffer};
use crate::shared::{check_timeout, deadline_after};
use crate::{TcpStream, DEFAULT_MAX_LINE, DEFAULT_MAX_TO_END, DEFAULT_WRITE_BUFFER};

/// How long a handshake may take by default (servers and [`TlsStream::connect`]): 10 s.
/// A peer that has not completed it by then is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Plaintext is moved out of rustls in pieces of at least this size.
const PLAIN_CHUNK: usize = 4 * 1024;

/// A TLS connection for use inside copas tasks, client or server side.
///
/// It has the calls of [`TcpStream`]: the `receive_*` framing, buffered
/// [`send`](TlsStream::send), [`flush`](TlsStream::flush), [`close`](TlsStream::close),
/// read and write timeouts, and [`Read`], [`BufRead`] and [`Write`]. The handshake is
/// complete when a `TlsStream` is returned (by [`connect`](TlsStream::connect),
/// [`wrap_client`](TlsStream::wrap_client), [`wrap_server`](TlsStream::wrap_server) or a
/// TLS server); a failed or timed-out handshake is an error, never a plaintext
/// connection.
///
/// Each `send` is encrypted at once into one or more TLS records (at most 16 KiB of
/// plaintext each), which leave with the TCP stream's output when the loop next waits.
/// Sending a message in one call instead of several small ones saves record overhead.
///
/// # End of stream
/// [`close`](TlsStream::close) (and `shutdown(Write)`) sends a `close_notify` alert.
/// A peer that closes its TCP connection without sending one may have had its data cut
/// off by an attacker: every call that would report the end of the stream (a receive at
/// EOF, `read` returning 0) fails with `UnexpectedEof` instead. Dropping a stream without
/// `close` delivers its buffered output but sends no `close_notify`, so the peer sees the
/// same truncation; call `close` when the conversation is complete.
///
/// # No `split`
/// A rustls connection is one state machine for both directions: reading can make
/// records that must be written (alerts, key update replies), and writing uses state that
/// reading changes. Two tasks would need a lock around the connection and another around
/// the TCP write side, taken by the reader too, so the halves would not be independent
/// the way [`TcpStream::split`]'s are. Serve a connection from one task, and hand output
/// from other tasks to it through a [`Queue`](copas_core::sync::Queue).
pub struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    rbuf: ReadBuffer,
    /// Plaintext bytes rustls holds (from the last `process_new_packets`, minus reads).
    plain_avail: usize,
    /// `close_notify` received and every byte before it taken out of rustls.
    eof: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    max_line: usize,
    max_to_end: usize,
    /// The TCP stream's write buffer size, and rustls's buffer limit.
    write_limit: usize,
    read_closed: bool,
    /// `close_notify` queued (close or shutdown for writing).
    write_closed: bool,
    /// A TLS protocol error: every later call fails with it.
    failed: Option<(io::ErrorKind, Rc<str>)>,
    /// The name a client connected to.
    client_name: Option<Rc<str>>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("side", &self.side())
            .field("name", &self.tcp.name())
            .field("peer", &self.tcp.peer_addr().ok())
            .field("server_name", &self.server_name())
            .field("alpn", &self.alpn_protocol().map(String::from_utf8_lossy))
            .field("version", &self.conn.protocol_version())
            .field("buffered_in", &self.rbuf.len())
            .field("buffered_out", &self.tcp.pending_output())
            .finish()
    }
}

/// Pieces of TLS records for the TCP stream, each no larger than its write buffer, so
/// that each TCP `send` takes a piece whole or not at all.
struct TcpOut<'a> {
    tcp: &'a mut TcpStream,
    limit: usize,
}

impl Write for TcpOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.limit);
        self.tcp.send(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The time left until `deadline` as a TCP timeout; `TimedOut` once it has passed.
fn remaining(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(t) => match t.checked_duration_since(Instant::now()) {
            Some(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "copas: TLS operation timed out",
            )),
        },
    }
}

fn shut_down(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("copas: the TLS stream is shut down for {what}"),
    )
}

fn missing_close_notify() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "copas: the peer closed the connection without a TLS close_notify (the data may be \
         truncated)",
    )
}

fn parse_server_name(name: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copas: '{name}' is not a valid DNS name or IP address for TLS"),
        )
    })
}

fn handshake_timeout_deadline(timeout: Duration) -> io::Result<Option<Instant>> {
    check_timeout(Some(timeout))?;
    Ok(Instant::now().checked_add(timeout))
}

impl TlsStream {
    fn new(tcp: TcpStream, conn: Connection) -> TlsStream {
        let mut s = TlsStream {
            read_timeout: tcp.read_timeout(),
            write_timeout: tcp.write_timeout(),
            tcp,
            conn,
            rbuf: ReadBuffer::default(),
            plain_avail: 0,
            eof: false,
            max_line: DEFAULT_MAX_LINE,
            max_to_end: DEFAULT_MAX_TO_END,
            write_limit: DEFAULT_WRITE_BUFFER,
            read_closed: false,
            write_closed: false,
            failed: None,
            client_name: None,
        };
        s.set_write_buffer_size(DEFAULT_WRITE_BUFFER);
        s
    }

    /// Connects to `addr` and runs the client handshake under
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], verifying the server as `config` says (with
    /// [`client_config`](crate::tls::client_config): its chain against the Mozilla roots,
    /// its certificate against `server_name`). `server_name` is a DNS name or an IP
    /// address; it is also sent as SNI (for DNS names).
    ///
    /// # Errors
    /// `InvalidInput` for a bad `server_name`; the connection errors of
    /// [`TcpStream::connect`]; `InvalidData` when the handshake fails (the message says
    /// why, e.g. `invalid peer certificate: UnknownIssuer`; the source error is the
    /// [`rustls::Error`]); `TimedOut`; `UnexpectedEof` when the server closes during the
    /// handshake.
    pub fn connect(
        addr: impl ToSocketAddrs,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> io::Result<TlsStream> {
        let name = parse_server_name(server_name)?;
        let tcp = TcpStream::connect(addr)?;
        Self::client_handshake(
            tcp,
            name,
            config,
            Instant::now().checked_add(DEFAULT_HANDSHAKE_TIMEOUT),
        )
    }

    /// As [`connect`](TlsStream::connect), with `timeout` bounding the TCP connect and
    /// the handshake together.
    ///
    /// # Errors
    /// As [`connect`](TlsStream::connect); `InvalidInput` for a zero timeout.
    pub fn connect_timeout(
        addr: &SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> io::Result<TlsStream> {
        let name = parse_server_name(server_name)?;
        let deadline = handshake_timeout_deadline(timeout)?;
        let tcp = TcpStream::connect_timeout(addr, timeout)?;
        Self::client_handshake(tcp, name, config, deadline)
    }

    /// Runs the client handshake on a connected TCP stream (for protocols that switch to
    /// TLS, like STARTTLS), which must have no unread input buffered. The TLS stream
    /// keeps the TCP stream's read and write timeouts.
    ///
    /// # Errors
    /// As [`connect`](TlsStream::connect); `InvalidInput` for a zero timeout.
    pub fn wrap_client(
        tcp: TcpStream,
        server_name: &str,
        config: Arc<ClientConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<TlsStream> {
        let name = parse_server_name(server_name)?;
        let deadline = handshake_timeout_deadline(handshake_timeout)?;
        Self::client_handshake(tcp, name, config, deadline)
    }

    /// Runs the server handshake on an accepted TCP stream (Copas `wrap` with TLS
    /// parameters). The TLS stream keeps the TCP stream's read and write timeouts.
    ///
    /// # Errors
    /// `InvalidData` when the handshake fails (a client that sends no TLS, a protocol
    /// error, a client certificate the configuration refuses); `TimedOut` when it is not
    /// complete within `handshake_timeout`; `UnexpectedEof` when the client closes first;
    /// `InvalidInput` for a zero timeout.
    pub fn wrap_server(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<TlsStream> {
        let deadline = handshake_timeout_deadline(handshake_timeout)?;
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        let mut s = TlsStream::new(tcp, conn.into());
        s.handshake(deadline)?;
        Ok(s)
    }

    fn client_handshake(
        tcp: TcpStream,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
        deadline: Option<Instant>,
    ) -> io::Result<TlsStream> {
        let shown: Rc<str> = Rc::from(&*name.to_str());
        let conn = ClientConnection::new(config, name).map_err(tls_error)?;
        let mut s = TlsStream::new(tcp, conn.into());
        s.client_name = Some(shown);
        s.handshake(deadline)?;
        Ok(s)
    }

    fn side(&self) -> &'static str {
        match self.conn {
            Connection::Client(_) => "client",
            Connection::Server(_) => "server",
        }
    }

    fn handshake(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let r = self.handshake_inner(deadline);
        r.map_err(|e| {
            let peer = self
                .tcp
                .peer_addr()
                .map_or_else(|_| "the peer".to_owned(), |a| a.to_string());
            let kind = e.kind();
            let what = match kind {
                io::ErrorKind::TimedOut => "did not complete in time".to_owned(),
                io::ErrorKind::UnexpectedEof => "ended: the peer closed the connection".to_owned(),
                _ => format!("failed: {e}"),
            };
            let msg = format!("copas: TLS handshake with {peer} {what}");
            match e.into_inner() {
                Some(inner) if inner.is::<rustls::Error>() => {
                    io::Error::new(kind, HandshakeError { msg, source: inner })
                }
                _ => io::Error::new(kind, msg),
            }
        })
    }

    fn handshake_inner(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.push_tls(deadline)?;
            if !self.conn.is_handshaking() {
                break;
            }
            if !self.conn.wants_read() {
                return Err(io::Error::other(
                    "copas: the TLS handshake neither reads nor writes",
                ));
            }
            let n = self.read_tls(deadline)?;
            self.process()?;
            if n == 0 && self.conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // The last flight (the client's Finished, the server's session tickets) leaves
        // with the next output or when the loop next waits.
        self.push_tls(deadline)
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.to_string())),
            None => Ok(()),
        }
    }

    /// Hands every record rustls has ready to the TCP stream, waiting while its buffer is
    /// full.
    fn push_tls(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        while self.conn.wants_write() {
            let timeout = remaining(deadline)?;
            self.tcp.set_write_timeout(timeout)?;
            let mut out = TcpOut {
                tcp: &mut self.tcp,
                limit: self.write_limit,
            };
            self.conn.write_tls(&mut out)?;
        }
        Ok(())
    }

    /// Hands every record rustls has ready to the TCP stream without waiting (for alerts
    /// after an error and on drop): the TCP buffer may pass its limit by what rustls held,
    /// which its own limit bounds.
    fn push_tls_now(&mut self) {
        self.tcp.set_write_buffer_size(usize::MAX / 2);
        let _ = self.tcp.set_write_timeout(None);
        while self.conn.wants_write() {
            let mut out = TcpOut {
                tcp: &mut self.tcp,
                limit: usize::MAX,
            };
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        self.tcp.set_write_buffer_size(self.write_limit);
    }

    /// Moves received records from the TCP stream into rustls; 0 at TCP EOF.
    fn read_tls(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        let timeout = remaining(deadline)?;
        self.tcp.set_read_timeout(timeout)?;
        let data = self.tcp.fill_buf()?;
        let mut rd = data;
        let n = self.conn.read_tls(&mut rd)?;
        self.tcp.consume(n);
        Ok(n)
    }

    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain_avail = state.plaintext_bytes_to_read();
                Ok(())
            }
            Err(e) => {
                // rustls queued an alert for the peer.
                self.push_tls_now();
                let err = tls_error(e);
                self.failed = Some((err.kind(), err.to_string().into()));
                Err(err)
            }
        }
    }

    /// Moves decrypted input into `rbuf`: `Ok(n > 0)` bytes, `Ok(0)` at a clean end,
    /// `WouldBlock` when rustls needs more records.
    fn take_plaintext(&mut self) -> io::Result<usize> {
        let want = self.plain_avail.max(PLAIN_CHUNK);
        let buf = &mut self.rbuf.buf;
        let old = buf.len();
        buf.resize(old + want, 0);
        let r = self.conn.reader().read(&mut buf[old..]);
        let n = *r.as_ref().unwrap_or(&0);
        buf.truncate(old + n);
        self.plain_avail = self.plain_avail.saturating_sub(n);
        match r {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(missing_close_notify()),
            r => r,
        }
    }

    fn read_deadline(&self) -> Option<Instant> {
        deadline_after(self.read_timeout)
    }

    /// As [`TcpStream::receive_line`]. A peer that closes without `close_notify` gives
    /// `UnexpectedEof`, also between lines.
    ///
    /// # Errors
    /// As [`TcpStream::receive_line`]; `InvalidData` for a TLS protocol error (the
    /// connection is then unusable).
    pub fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
        let deadline = self.read_deadline();
        buffer::receive_line(self, self.max_line, LastLine::Error, deadline)
    }

    /// As [`TcpStream::receive_line_into`]: appends the line to `line` (`false` at a clean
    /// end of stream), so a reused `Vec` makes no allocation per line.
    ///
    /// # Errors
    /// As [`receive_line`](Self::receive_line); nothing is appended on error.
    pub fn receive_line_into(&mut self, line: &mut Vec<u8>) -> io::Result<bool> {
        let deadline = self.read_deadline();
        buffer::receive_line_into(self, line, self.max_line, LastLine::Error, deadline)
    }

    /// As [`TcpStream::receive_exact`].
    ///
    /// # Errors
    /// As [`TcpStream::receive_exact`]; `InvalidData` for a TLS protocol error.
    pub fn receive_exact(&mut self, n: usize) -> io::Result<Bytes> {
        let deadline = self.read_deadline();
        buffer::receive_exact(self, n, "connection", deadline)
    }

    /// As [`TcpStream::receive_to_end`]: everything until the peer's `close_notify`. A
    /// peer that closes without one gives `UnexpectedEof` (what arrived stays
    /// [`buffered`](TlsStream::buffered)).
    ///
    /// # Errors
    /// As [`TcpStream::receive_to_end`]; `UnexpectedEof`; `InvalidData` for a TLS protocol
    /// error.
    pub fn receive_to_end(&mut self) -> io::Result<Bytes> {
        let deadline = self.read_deadline();
        buffer::receive_to_end(self, self.max_to_end, deadline)
    }

    /// As [`TcpStream::receive_some`]: an empty result is a clean end (`close_notify`).
    ///
    /// # Errors
    /// As [`TcpStream::receive_some`]; `UnexpectedEof` when the peer closed without
    /// `close_notify`; `InvalidData` for a TLS protocol error.
    pub fn receive_some(&mut self, max: usize) -> io::Result<Bytes> {
        let timeout = self.read_timeout;
        buffer::receive_some(self, max, || deadline_after(timeout))
    }

    /// As [`TcpStream::receive_more`].
    ///
    /// # Errors
    /// As [`receive_some`](TlsStream::receive_some).
    pub fn receive_more(&mut self) -> io::Result<usize> {
        let deadline = self.read_deadline();
        self.fill(deadline)
    }

    /// Plaintext received but not yet taken.
    pub fn buffered(&self) -> &[u8] {
        self.rbuf.as_slice()
    }

    fn check_write(&self) -> io::Result<()> {
        self.check()?;
        if self.write_closed {
            return Err(shut_down("writing"));
        }
        Ok(())
    }

    /// Encrypts `data` and buffers the records for sending, as [`TcpStream::send`]: they
    /// leave when the loop next waits, on [`flush`](TlsStream::flush), or at once when the
    /// buffer would pass its limit, the task then suspending while the peer does not read.
    ///
    /// # Errors
    /// As [`TcpStream::send`]; `NotConnected` after `close_notify` was sent. On error, a
    /// prefix of `data` may have been sent.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.check_write()?;
        let deadline = deadline_after(self.write_timeout);
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.conn.writer().write(rest)?;
            rest = &rest[n..];
            self.push_tls(deadline)?;
        }
        Ok(())
    }

    /// Sends all buffered output now, suspending while the peer does not read.
    ///
    /// # Errors
    /// As [`send`](TlsStream::send).
    pub fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        let deadline = deadline_after(self.write_timeout);
        self.push_tls(deadline)?;
        self.tcp.set_write_timeout(remaining(deadline)?)?;
        self.tcp.flush()
    }

    /// Sends `close_notify` after the buffered output, flushes, and closes the
    /// connection in both directions (as [`TcpStream::close`], the OS error of the final
    /// shutdown, such as `NotConnected` after the peer has gone, is not reported).
    ///
    /// # Errors
    /// The flush error (output that could not be sent is also reported lost when the TCP
    /// stream goes), or the stored TLS error.
    pub fn close(mut self) -> io::Result<()> {
        let r = self.send_close_notify();
        self.read_closed = true;
        if r.is_ok() {
            let _ = self.tcp.shutdown(Shutdown::Both);
        }
        r
    }

    /// Queues `close_notify` (once) and flushes everything.
    fn send_close_notify(&mut self) -> io::Result<()> {
        self.check()?;
        if !self.write_closed {
            self.write_closed = true;
            self.conn.send_close_notify();
        }
        let deadline = deadline_after(self.write_timeout);
        self.push_tls(deadline)?;
        self.tcp.set_write_timeout(remaining(deadline)?)?;
        self.tcp.flush()
    }

    /// Shuts down a direction. Writing: sends `close_notify` after the buffered output,
    /// flushes, and shuts the TCP stream down for writing; later sends fail with
    /// `NotConnected`. Reading: later receives fail with `NotConnected`.
    ///
    /// # Errors
    /// The flush error or the OS error.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Write {
            self.read_closed = true;
        }
        if how == Shutdown::Read {
            return self.tcp.shutdown(Shutdown::Read);
        }
        self.send_close_notify()?;
        self.tcp.shutdown(how)
    }

    /// The negotiated ALPN protocol, if the peers agreed on one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The server name: on the server side the SNI name the client sent (`None` if it
    /// sent none, as clients connecting to an IP address do); on the client side the
    /// name given to `connect`.
    pub fn server_name(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(c) => c.server_name(),
            Connection::Client(_) => self.client_name.as_deref(),
        }
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The negotiated cipher suite.
    pub fn negotiated_cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The certificates the peer presented (its own first), if any.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The TCP stream under the TLS connection (for its addresses and socket options;
    /// reading or writing it directly would corrupt the TLS stream, so only shared
    /// access is given).
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// The remote address.
    ///
    /// # Errors
    /// The OS error.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Names the stream (shown in `Debug` and in reports of lost output).
    pub fn set_name(&self, name: impl Into<String>) {
        self.tcp.set_name(name);
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// The OS error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }

    /// As [`TcpStream::set_read_timeout`]: the deadline of each receive call.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// As [`TcpStream::set_write_timeout`]: the deadline of each call that waits to write,
    /// and how long a dropped stream keeps delivering its output.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.write_timeout = timeout;
        self.tcp.set_write_timeout(timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Sets the longest line [`receive_line`](TlsStream::receive_line) accepts.
    pub fn set_max_line_length(&mut self, max: usize) {
        self.max_line = max;
    }

    /// Sets the most [`receive_to_end`](TlsStream::receive_to_end) collects.
    pub fn set_max_receive_to_end(&mut self, max: usize) {
        self.max_to_end = max;
    }

    /// Sets the size of the write buffer (at least 1 KiB; default 64 KiB): the TCP
    /// stream's buffer of records and rustls's own limit both take it, so buffered output
    /// stays within about twice this size.
    pub fn set_write_buffer_size(&mut self, size: usize) {
        let size = size.max(1024);
        self.write_limit = size;
        self.tcp.set_write_buffer_size(size);
        self.conn.set_buffer_limit(Some(size));
    }

    /// Encrypted bytes accepted by `send` and not yet taken by the kernel.
    pub fn pending_output(&self) -> usize {
        self.tcp.pending_output()
    }
}

/// The error of a failed handshake: what failed, with whom, and the rustls error as its
/// source.
#[derive(Debug)]
struct HandshakeError {
    msg: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A rustls error as an `io::Error` (`InvalidData`) whose inner error is the
/// [`rustls::Error`].
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // Deliver what rustls still holds (no close_notify: see the type's docs); the TCP
        // stream lingers with it for the write timeout.
        if self.failed.is_none() {
            self.push_tls_now();
        }
        let _ = self.tcp.set_write_timeout(self.write_timeout);
    }
}

impl Fill for TlsStream {
    #[inline]
    fn rbuf(&mut self) -> &mut ReadBuffer {
        &mut self.rbuf
    }

    /// Reads more plaintext into the buffer; 0 means the peer closed cleanly
    /// (`close_notify`).
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        self.check()?;
        if self.read_closed {
            return Err(shut_down("reading"));
        }
        if self.eof {
            return Ok(0);
        }
        loop {
            match self.take_plaintext() {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Anything reading made rustls want to say (a key update reply) goes first.
            self.push_tls(deadline)?;
            self.read_tls(deadline)?;
            self.process()?;
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for TlsStream {
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

impl Write for TlsStream {
    /// Encrypts and buffers up to the write buffer's size of `buf`, and returns how much
    /// it took: `Ok(n)` with `n < buf.len()` when the buffer is full and the peer slow,
    /// an error only when none of `buf` was taken (std's contract; `write_all` retries
    /// the rest).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_write()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = deadline_after(self.write_timeout);
        // Earlier output first: an error here has taken nothing of `buf`.
        self.push_tls(deadline)?;
        let n = self.conn.writer().write(buf)?;
        // The records stay queued in rustls if this fails; the next call (or the drop)
        // goes on with them, and reports the error if it persists.
        let _ = self.push_tls(deadline);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        TlsStream::flush(self)
    }
}
