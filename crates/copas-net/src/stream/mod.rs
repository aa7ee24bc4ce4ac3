//! [`Stream`]: a connected stream socket (TCP or Unix) whose calls suspend the task
//! instead of blocking the thread, with buffered input framed by LuaSocket's receive
//! patterns and buffered output flushed by the loop. The code is generic over the socket
//! ([`StreamSocket`]), so [`TcpStream`](crate::TcpStream) and
//! [`UnixStream`](crate::UnixStream) share every line of it. Split by concern:
//!
//! - [`read`]: the read side (`ReadHalf`'s buffer, the receive patterns, `Read`/`BufRead`);
//! - [`write`](mod@write): the write side (`StreamShared`: the socket, the write buffer
//!   flushed by the reactor, shutdown, linger);
//! - [`buffered`]: `Stream`, which is a read half plus a write half;
//! - [`halves`]: the public halves' own API (`split`'s products, `reunite`, `Write`).
//!
//! What only one kind of socket has (connecting, `TCP_NODELAY`, abstract addresses) lives
//! in `tcp.rs` and `unix/`.
//!
//! Invariants:
//! - Input: the read half owns its [`ReadBuffer`](crate::buffer::ReadBuffer); bytes leave
//!   it only through the receive calls and `Read`/`BufRead`. An error (timeout, EOF
//!   mid-line) never discards bytes.
//! - Output: `send` appends to the write buffer shared with the reactor, which holds at
//!   most `write_limit` bytes; bytes leave it only when the kernel took them. A write error
//!   found in the background is kept and returned by the stream's next call; bytes that can
//!   no longer be delivered are reported, never dropped silently.
//! - `Write::write` follows std's contract: it returns `Ok(n)` once any byte of the
//!   caller's buffer is accepted (buffered or sent), and `Err` only when none was.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

mod buffered;
mod halves;
mod read;
mod write;

pub use buffered::Stream;
pub use halves::{ReuniteError, WriteHalf};
pub use read::ReadHalf;

/// Default limit on the length of a line for [`Stream::receive_line`]: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default limit on what [`Stream::receive_to_end`] collects: 64 MiB.
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

/// A connected stream socket that a [`Stream`] buffers: `std::net::TcpStream`
/// ([`TcpStream`](crate::TcpStream)) or `std::os::unix::net::UnixStream`
/// ([`UnixStream`](crate::UnixStream)). Sealed: copas implements it for those two.
///
/// A handler written for `Stream<S>` with `S: StreamSocket` serves both:
///
/// ```
/// use copas_net::{Stream, StreamSocket};
///
/// fn echo<S: StreamSocket>(mut conn: Stream<S>) -> std::io::Result<()> {
///     while let Some(line) = conn.receive_line()? {
///         conn.send(&line)?;
///         conn.send(b"\n")?;
///     }
///     Ok(())
/// }
/// let tcp = copas_net::add_server("127.0.0.1:0", echo).unwrap();
/// let dir = std::env::temp_dir().join(format!("copas-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let unix = copas_net::add_server(dir.join("echo.sock"), echo).unwrap();
/// tcp.stop();
/// unix.stop();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub trait StreamSocket: sealed::Socket {
    /// The socket's address type: `std::net::SocketAddr` or
    /// `std::os::unix::net::SocketAddr`.
    type Addr: fmt::Debug + Clone + 'static;

    /// The local address (std's `local_addr`).
    ///
    /// # Errors
    /// The OS error.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// The peer's address (std's `peer_addr`).
    ///
    /// # Errors
    /// The OS error (e.g. `NotConnected`).
    fn peer_addr(&self) -> io::Result<Self::Addr>;
}

pub(crate) mod sealed {
    use super::{io, AsFd, OwnedFd, Shutdown};

    /// The operations the generic stream code needs from a socket; not nameable outside
    /// the crate, so only copas implements [`StreamSocket`](super::StreamSocket).
    #[allow(unreachable_pub)]
    pub trait Socket: AsFd + From<OwnedFd> + Sized + 'static {
        /// The public type's name, for `Debug`.
        const KIND: &'static str;
        /// One `read(2)`.
        fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
        /// One `write(2)`.
        fn write_some(&self, buf: &[u8]) -> io::Result<usize>;
        /// `shutdown(2)`.
        fn shut(&self, how: Shutdown) -> io::Result<()>;
        /// `O_NONBLOCK` on or off.
        fn nonblocking(&self, on: bool) -> io::Result<()>;
        /// The peer, in words, for the report of lost output.
        fn describe_peer(&self) -> String;
    }
}

/// Implements the socket operations for a std stream type whose `&T` is `Read`; `$write`
/// is its one write (`|socket, buf| -> io::Result<usize>`).
macro_rules! socket_ops {
    ($t:ty, $kind:literal, $write:expr) => {
        impl $crate::stream::sealed::Socket for $t {
            const KIND: &'static str = $kind;

            #[inline]
            fn read_some(&self, buf: &mut [u8]) -> ::std::io::Result<usize> {
                ::std::io::Read::read(&mut &*self, buf)
            }

            #[inline]
            fn write_some(&self, buf: &[u8]) -> ::std::io::Result<usize> {
                ($write)(self, buf)
            }

            fn shut(&self, how: ::std::net::Shutdown) -> ::std::io::Result<()> {
                <$t>::shutdown(self, how)
            }

            fn nonblocking(&self, on: bool) -> ::std::io::Result<()> {
                <$t>::set_nonblocking(self, on)
            }

            fn describe_peer(&self) -> String {
                $crate::stream::StreamSocket::peer_addr(self).map_or_else(
                    |_| "a closed peer".to_owned(),
                    |a| $crate::stream::DescribeAddr::describe(&a),
                )
            }
        }
    };
}
pub(crate) use socket_ops;

/// An address in words, for reports.
pub(crate) trait DescribeAddr {
    fn describe(&self) -> String;
}

impl DescribeAddr for std::net::SocketAddr {
    fn describe(&self) -> String {
        self.to_string()
    }
}
