//! [`TcpStream`]: the buffered [`Stream`] over a TCP socket, and what only TCP has:
//! connecting to an address, `TCP_NODELAY`.
//!
//! Invariant: everything a TCP stream shares with a Unix stream (framing, buffering,
//! halves, linger) is the generic code in `stream/`; this file only adds.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::ToSocketAddrs;
use crate::reactor::Interest;
use crate::shared::each_addr;
use crate::stream::{socket_ops, Stream, StreamSocket};

/// A TCP connection for use inside copas tasks (Copas `wrap`): a [`Stream`] over a
/// `std::net::TcpStream`. Its calls are [`Stream`]'s, plus connecting and `TCP_NODELAY`.
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
pub type TcpStream = Stream<std::net::TcpStream>;

// std's TCP write is a `send` with `MSG_NOSIGNAL`.
socket_ops!(
    std::net::TcpStream,
    "TcpStream",
    |s: &std::net::TcpStream, buf: &[u8]| std::io::Write::write(&mut &*s, buf)
);

impl StreamSocket for std::net::TcpStream {
    type Addr = SocketAddr;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        std::net::TcpStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        std::net::TcpStream::peer_addr(self)
    }
}

impl Stream<std::net::TcpStream> {
    /// Opens a connection, suspending the task (not the thread) while it is being set up.
    /// Each address `addr` resolves to is tried in turn. A host name is resolved on the
    /// [`unblock`](copas_core::unblock) pool, so it does not block the loop either
    /// ([`ToSocketAddrs`](crate::ToSocketAddrs)).
    ///
    /// # Errors
    /// The error of the last address tried (`ConnectionRefused`, …), or `InvalidInput` if
    /// `addr` resolves to nothing.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| connect_addr(a, None))
    }

    /// Opens a connection to `addr`, failing with `TimedOut` if it is not set up within
    /// `timeout`. Unlike std's, it takes a host name too: the lookup (off the loop, see
    /// [`connect`](TcpStream::connect)) and every address tried share the one deadline.
    ///
    /// # Errors
    /// `TimedOut`, the resolver's error, or the connection error of the last address
    /// tried.
    pub fn connect_timeout(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<TcpStream> {
        let deadline = Instant::now().checked_add(timeout);
        let addrs = copas_core::with_timeout(timeout, || addr.to_socket_addrs())?;
        each_addr(addrs.as_slice(), |a| connect_addr(a, deadline))
    }

    /// Sets `TCP_NODELAY`. Output is already coalesced by the write buffer, so small
    /// responses do not need Nagle's algorithm.
    ///
    /// # Errors
    /// The OS error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.source().get_ref().set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// The OS error.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.source().get_ref().nodelay()
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
        let source = stream.source();
        loop {
            source.wait(Interest::Write, deadline)?;
            if let Some(e) = source.get_ref().take_error()? {
                return Err(e);
            }
            match source.get_ref().peer_addr() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(stream)
}
