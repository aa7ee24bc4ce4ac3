//! `TcpListener`: a listening socket whose `accept` suspends the task.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use crate::reactor::Interest;
use crate::shared::each_addr;
use crate::source::{Source, Waiter};
use crate::tcp::TcpStream;

/// A listening TCP socket for use inside copas tasks. Most servers use
/// [`add_server`](crate::add_server) instead, which accepts in a task of its own.
pub struct TcpListener {
    source: Source<std::net::TcpListener>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local_addr().ok())
            .finish()
    }
}

/// The listen backlog of [`TcpListener::bind`]: 1024 pending connections (std's `bind`
/// uses 128, which drops connections when a few hundred clients arrive at once; the
/// kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;

impl TcpListener {
    /// Binds a listener to the first address `addr` resolves to that works, with
    /// `SO_REUSEADDR` (as std) and a backlog of [`DEFAULT_BACKLOG`].
    ///
    /// # Errors
    /// The bind error of the last address tried.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(addr, DEFAULT_BACKLOG)
    }

    /// As [`bind`](TcpListener::bind), with a backlog of `backlog` pending connections.
    ///
    /// # Errors
    /// The bind error of the last address tried.
    pub fn bind_with_backlog(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
        TcpListener::bind_opts(addr, backlog, false)
    }

    /// As [`bind`](TcpListener::bind), with `SO_REUSEPORT` set as well, so that several
    /// listeners (one per thread, see [`Threads`](crate::Threads)) can bind the same
    /// address, each of them with `SO_REUSEPORT`. Linux spreads incoming connections over
    /// them by a hash of the connection's addresses and ports; other systems differ (some
    /// give every connection to one listener).
    ///
    /// # Errors
    /// The bind error of the last address tried (`AddrInUse` when a listener without
    /// `SO_REUSEPORT`, or of another user, holds the address).
    pub fn bind_reuse_port(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        TcpListener::bind_opts(addr, DEFAULT_BACKLOG, true)
    }

    fn bind_opts(
        addr: impl ToSocketAddrs,
        backlog: u32,
        reuse_port: bool,
    ) -> io::Result<TcpListener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        each_addr(addr, |a| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(a),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            if reuse_port {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&a.into())?;
            socket.listen(backlog)?;
            Ok(std::net::TcpListener::from(socket))
        })
        .and_then(TcpListener::from_std)
    }

    /// Wraps a `std::net::TcpListener` (Copas `wrap` on a server socket).
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            source: Source::new(listener)?,
        })
    }

    /// Accepts a connection, suspending the task until one arrives.
    ///
    /// # Errors
    /// A cancellation error, or the OS error (e.g. `EMFILE` when out of descriptors).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = self.accept_std(None)?;
        Ok((TcpStream::from_std(s)?, peer))
    }

    /// Accepts with the `std` type, without registering the new socket.
    pub(crate) fn accept_std(
        &self,
        deadline: Option<Instant>,
    ) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        self.source
            .do_io(Interest::Read, deadline, std::net::TcpListener::accept)
    }

    /// One accept attempt that never waits (`WouldBlock` when none is pending).
    pub(crate) fn try_accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        self.source.get_ref().accept()
    }

    /// A handle that waits for a pending connection without borrowing the listener, so
    /// that the listener may be closed meanwhile (the wait then fails).
    pub(crate) fn waiter(&self) -> Waiter {
        self.source.waiter()
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }
}
