//! The copas readiness loop and its sockets: a [`Reactor`] on `polling` that plugs into
//! copas-core's scheduler, buffered [`TcpStream`]s whose calls suspend the task instead of
//! blocking the thread, [`TcpListener`], and servers ([`add_server`]).
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
//! The reactor, like the runtime, belongs to one thread; sockets are `!Send`. Run one
//! runtime per thread to use more cores.
#![warn(missing_docs, missing_debug_implementations)]

mod buffer;
mod listener;
mod reactor;
mod server;
mod source;
mod tcp;
mod udp;

pub use bytes::Bytes;
pub use listener::TcpListener;
pub use reactor::Reactor;
pub use server::{add_server, IntoListener, Server, ServerBuilder, ACCEPT_BATCH};
pub use tcp::{
    ReadHalf, ReuniteError, TcpStream, WriteHalf, DEFAULT_LINGER, DEFAULT_MAX_LINE,
    DEFAULT_MAX_TO_END, DEFAULT_WRITE_BUFFER,
};
pub use udp::{add_udp_server, UdpServer, UdpSocket, MAX_DATAGRAM};
