//! `UdpSocket`: datagrams whose calls suspend the task instead of blocking the thread,
//! and the UDP form of a server.
//!
//! Datagrams are not buffered by copas: each call is one `recvfrom`/`sendto`, tried first,
//! with the task suspended only on `WouldBlock`. One task may wait to receive and another
//! to send at the same time.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::addr::ToSocketAddrs;
use std::rc::Rc;
use std::time::Duration;

use copas_core::{cooperate, Builder, JoinHandle};

use crate::reactor::Interest;
use crate::shared::{check_timeout, deadline_after, each_addr};
use crate::source::Source;

/// The largest UDP payload: what a [`UdpServer`]'s receive buffer holds.
pub const MAX_DATAGRAM: usize = 65_535;

/// A UDP socket for use inside copas tasks (Copas's UDP `receivefrom` / `sendto`).
///
/// # Examples
/// ```
/// use copas_net::UdpSocket;
///
/// let a = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let b = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let b_addr = b.local_addr().unwrap();
/// let h = copas_core::spawn(move || {
///     let mut buf = [0u8; 64];
///     let (n, from) = b.recv_from(&mut buf)?;
///     std::io::Result::Ok((buf[..n].to_vec(), from))
/// });
/// a.send_to(b"ping", b_addr).unwrap();
/// let (data, from) = h.join().unwrap().unwrap();
/// assert_eq!(data, b"ping");
/// assert_eq!(from, a.local_addr().unwrap());
/// ```
pub struct UdpSocket {
    source: Source<std::net::UdpSocket>,
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
    name: std::cell::RefCell<Option<Rc<str>>>,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("name", &self.name())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    /// Binds a socket to the first address `addr` resolves to that works.
    ///
    /// # Errors
    /// The bind error of the last address tried.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        each_addr(addr, std::net::UdpSocket::bind).and_then(UdpSocket::from_std)
    }

    /// Wraps a `std::net::UdpSocket`, switching it to non-blocking mode.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        Ok(UdpSocket {
            source: Source::new(socket)?,
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
            name: std::cell::RefCell::new(None),
        })
    }

    fn io<R>(
        &self,
        dir: Interest,
        op: impl FnMut(&std::net::UdpSocket) -> io::Result<R>,
    ) -> io::Result<R> {
        let timeout = match dir {
            Interest::Read => self.read_timeout.get(),
            Interest::Write => self.write_timeout.get(),
        };
        let r = self.source.do_io(dir, deadline_after(timeout), op)?;
        cooperate();
        Ok(r)
    }

    /// Receives one datagram into `buf`; returns its length and sender. A datagram
    /// longer than `buf` is truncated (as with `std`).
    ///
    /// # Errors
    /// `TimedOut` after the read timeout; `ResourceBusy` if another task is already
    /// waiting to receive on this socket; a cancellation error; the OS error.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io(Interest::Read, |s| s.recv_from(buf))
    }

    /// Sends one datagram to `addr`; returns the bytes sent.
    ///
    /// # Errors
    /// `TimedOut` after the write timeout, a cancellation error, `InvalidInput` if `addr`
    /// resolves to nothing, or the OS error (e.g. the datagram is too large).
    pub fn send_to(&self, buf: &[u8], addr: impl ToSocketAddrs) -> io::Result<usize> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "copas: the address resolved to nothing",
            )
        })?;
        self.io(Interest::Write, |s| s.send_to(buf, addr))
    }

    /// Sets the default peer for [`send`](UdpSocket::send) and [`recv`](UdpSocket::recv)
    /// and filters incoming datagrams to it. A host name is resolved off the loop
    /// ([`ToSocketAddrs`](crate::ToSocketAddrs)).
    ///
    /// # Errors
    /// The resolver's error, or the OS error.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let addrs = addr.to_socket_addrs()?;
        self.source.get_ref().connect(addrs.as_slice())
    }

    /// Receives one datagram from the connected peer.
    ///
    /// # Errors
    /// As [`recv_from`](UdpSocket::recv_from); `ConnectionRefused` when an earlier
    /// datagram was refused by the peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io(Interest::Read, |s| s.recv(buf))
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    /// As [`send_to`](UdpSocket::send_to); the OS error if not connected
    /// (`EDESTADDRREQ` on Linux).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io(Interest::Write, |s| s.send(buf))
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    /// `NotConnected` if not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().peer_addr()
    }

    /// Sets the deadline of each receive call (`None`: no limit).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.read_timeout.set(timeout);
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout.get()
    }

    /// Sets the deadline of each send call (`None`: no limit).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.write_timeout.set(timeout);
        Ok(())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout.get()
    }

    /// Names the socket; the name appears in `Debug` output.
    pub fn set_name(&self, name: impl Into<String>) {
        let name: String = name.into();
        *self.name.borrow_mut() = Some(name.into());
    }

    /// The socket's name, if it was given one.
    pub fn name(&self) -> Option<Rc<str>> {
        self.name.borrow().clone()
    }

    /// Sets `SO_BROADCAST`.
    ///
    /// # Errors
    /// The OS error.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.source.get_ref().set_broadcast(on)
    }
}

/// A running UDP server (from [`add_udp_server`]).
#[derive(Clone)]
pub struct UdpServer {
    local_addr: SocketAddr,
    task: Rc<JoinHandle<()>>,
    stopped: Rc<Cell<bool>>,
}

impl fmt::Debug for UdpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpServer")
            .field("local_addr", &self.local_addr)
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl UdpServer {
    /// Stops receiving and closes the socket.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.task.cancel();
    }

    /// Whether the server stopped (by [`stop`](UdpServer::stop), the loop's exit, or a
    /// receive error other than an ICMP refusal).
    pub fn is_stopped(&self) -> bool {
        self.stopped.get() || self.task.is_finished()
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Serves datagrams (Copas's UDP form of `addserver`): a task receives on `socket` and
/// calls `handler(&socket, datagram, sender)` for each, in order. The handler may reply
/// with [`UdpSocket::send_to`]. An error returned by the handler is printed to stderr and
/// serving goes on; a panic is reported to the error handler and ends the server.
///
/// # Errors
/// When binding or registering the socket fails.
///
/// # Examples
/// ```
/// let server = copas_net::add_udp_server("127.0.0.1:0", |sock, data, from| {
///     sock.send_to(data, from).map(drop) // echo
/// })
/// .unwrap();
/// let addr = server.local_addr();
/// let client = copas_core::spawn(move || {
///     let s = copas_net::UdpSocket::bind("127.0.0.1:0")?;
///     s.send_to(b"hi", addr)?;
///     let mut buf = [0u8; 16];
///     let (n, _) = s.recv_from(&mut buf)?;
///     server.stop();
///     std::io::Result::Ok(buf[..n].to_vec())
/// });
/// copas_core::run().unwrap();
/// assert_eq!(client.join().unwrap().unwrap(), b"hi");
/// ```
pub fn add_udp_server<A, H>(addr: A, mut handler: H) -> io::Result<UdpServer>
where
    A: ToSocketAddrs,
    H: FnMut(&UdpSocket, &[u8], SocketAddr) -> io::Result<()> + 'static,
{
    let socket = UdpSocket::bind(addr)?;
    let local_addr = socket.local_addr()?;
    let stopped = Rc::new(Cell::new(false));
    let stop = stopped.clone();
    let task = Builder::new()
        .name(format!("udp:{local_addr}"))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !stop.get() && !copas_core::is_exiting() {
                match socket.source.get_ref().recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if let Err(e) = handler(&socket, &buf[..n], from) {
                            eprintln!("copas: udp server {local_addr}: datagram from {from}: {e}");
                        }
                        cooperate();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // One wait, not a retrying loop: a wake-up by `exit` must reach
                        // the check above.
                        copas_core::wake_on_exit();
                        if socket.source.wait(Interest::Read, None).is_err() {
                            break;
                        }
                    }
                    // ICMP errors for earlier replies surface here; they end nothing.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
            }
            stop.set(true);
        })?;
    Ok(UdpServer {
        local_addr,
        task: Rc::new(task),
        stopped,
    })
}
