//! The copas readiness loop and its sockets: a [`Reactor`] (epoll on Linux, `polling`
//! elsewhere) that plugs into
//! copas-core's scheduler, buffered [`TcpStream`]s whose calls suspend the task instead of
//! blocking the thread, [`TcpListener`], servers ([`add_server`]), UDP, and readiness for
//! any other descriptor ([`Fd`] for one copas owns, [`Registration`] for a raw one),
//! child processes ([`process`]), and one runtime per core ([`Threads`]).
//!
//! ```
//! use copas_net::TcpStream;
//!
//! // An echo server on a free port...
//! let server = copas_net::add_server("127.0.0.1:0", |mut conn: TcpStream| {
//!     while let Some(line) = conn.receive_line()? {
//!         conn.send(&line)?;
//!         conn.send(b"\n")?;
//!     }
//!     Ok(())
//! })
//! .unwrap();
//! let addr = server.local_addr();
//!
//! // ...and a client task in the same thread.
//! let client = copas_core::spawn(move || {
//!     let mut s = TcpStream::connect(addr)?;
//!     s.send(b"hello\r\n")?;
//!     let reply = s.receive_line()?;
//!     server.stop();
//!     std::io::Result::Ok(reply)
//! });
//! copas_core::run().unwrap();
//! assert_eq!(client.join().unwrap().unwrap().unwrap(), &b"hello"[..]);
//! ```
//!
//! # Threads
//! The reactor, like the runtime, belongs to one thread; sockets are `!Send`. To use more
//! cores, [`Threads`] runs one runtime per thread, each with its own `SO_REUSEPORT`
//! listener on one address ([`ThreadContext::listener`]); see its docs for exit,
//! shutdown, panics and per-thread stats.
#![warn(missing_docs, missing_debug_implementations)]

mod buffer;
mod fd;
mod listener;
pub mod process;
mod reactor;
mod registration;
mod server;
mod shared;
mod source;
mod sys;
mod tcp;
mod threads;
#[cfg(feature = "tls")]
pub mod tls;
mod udp;

pub use bytes::Bytes;
pub use fd::Fd;
pub use listener::{TcpListener, DEFAULT_BACKLOG};
pub use reactor::{Interest, Reactor};
pub use registration::Registration;
pub use server::{add_server, IntoListener, Server, ServerBuilder, ACCEPT_BATCH};
pub use tcp::{
    ReadHalf, ReuniteError, TcpStream, WriteHalf, DEFAULT_LINGER, DEFAULT_MAX_LINE,
    DEFAULT_MAX_TO_END, DEFAULT_WRITE_BUFFER,
};
pub use threads::{GroupError, GroupHandle, ThreadContext, ThreadFailure, ThreadGroup, Threads};
pub use udp::{add_udp_server, UdpServer, UdpSocket, MAX_DATAGRAM};

/// Not public API: a thin wrapper over the read buffer's framing so that the fuzz target
/// in `fuzz/` can drive it. It may change or vanish in any release.
#[doc(hidden)]
pub mod __fuzz {
    use bytes::Bytes;

    use crate::buffer::{self, ReadBuffer};

    /// What [`FramingBuffer::take_line`] found.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Line {
        /// A complete line, without its `\n` and a `\r` before it.
        Complete(Bytes),
        /// No `\n` yet.
        Incomplete,
        /// Longer than the limit (the bytes stay buffered).
        TooLong,
    }

    /// The receive buffer of a `TcpStream`, without the socket.
    #[derive(Debug, Default)]
    pub struct FramingBuffer(ReadBuffer);

    impl FramingBuffer {
        /// Appends received bytes.
        pub fn push(&mut self, data: &[u8]) {
            self.0.buf.extend_from_slice(data);
        }

        /// As `receive_line` with limit `max`, without waiting.
        pub fn take_line(&mut self, max: usize) -> Line {
            match self.0.take_line(max) {
                buffer::Line::Complete(l) => Line::Complete(l),
                buffer::Line::Incomplete => Line::Incomplete,
                buffer::Line::TooLong => Line::TooLong,
            }
        }

        /// As `receive_exact`, without waiting: `None` if fewer than `n` bytes are here.
        pub fn take_exact(&mut self, n: usize) -> Option<Bytes> {
            self.0.take_exact(n)
        }

        /// As `receive_some`, without waiting.
        pub fn take_some(&mut self, max: usize) -> Bytes {
            self.0.take_some(max)
        }

        /// As `BufRead::consume`.
        pub fn consume(&mut self, n: usize) {
            self.0.consume(n);
        }

        /// The bytes buffered.
        pub fn buffered(&self) -> &[u8] {
            self.0.as_slice()
        }
    }
}
