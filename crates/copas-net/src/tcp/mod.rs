//! `TcpStream`: a TCP connection whose calls suspend the task instead of blocking
//! the thread, with buffered input framed by LuaSocket's receive patterns and buffered
//! output flushed by the loop. Split by concern:
//!
//! - [`read`]: the read side (`ReadHalf`'s buffer, the receive patterns, `Read`/`BufRead`);
//! - [`write`](mod@write): the write side (`StreamShared`: the socket, the write buffer flushed by the
//!   reactor, shutdown, linger);
//! - [`stream`]: `TcpStream`, which is a read half plus a write half, and connecting;
//! - [`halves`]: the public halves' own API (`split`'s products, `reunite`, `Write`).
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

use std::time::Duration;

mod halves;
mod read;
mod stream;
mod write;

pub use halves::{ReuniteError, WriteHalf};
pub use read::ReadHalf;
pub use stream::TcpStream;

/// Default limit on the length of a line for [`TcpStream::receive_line`](crate::TcpStream::receive_line): 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default limit on what [`TcpStream::receive_to_end`](crate::TcpStream::receive_to_end) collects: 64 MiB.
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
