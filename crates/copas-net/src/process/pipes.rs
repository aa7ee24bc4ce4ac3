//! The parent's ends of a child's standard streams: [`ChildStdin`], [`ChildStdout`],
//! [`ChildStderr`]. Each is an [`Fd`] (non-blocking, registered with the thread's reactor),
//! so reading and writing suspend the task, never the thread.
//!
//! Invariant: the readers' bytes leave their buffer only through the receive calls and
//! `Read`/`BufRead`; an error (timeout, end of stream mid-line) never discards bytes.

use std::fmt;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sys;
use crate::buffer::{self, Fill, LastLine, ReadBuffer};
use crate::fd::Fd;
use crate::shared::deadline_after;
use crate::{DEFAULT_MAX_LINE, DEFAULT_MAX_TO_END};

/// How much one read asks the pipe for (Linux's default pipe buffer is 64 KiB).
const READ_CHUNK: usize = 64 * 1024;

/// The writing end of a child's standard input. Dropping it closes the pipe: the child
/// then reads end of file.
///
/// `Write::write` suspends the task until the pipe accepts at least one byte and keeps
/// std's contract on partial writes; `write_all` writes everything. Nothing is buffered
/// here, so `flush` has nothing to do.
pub struct ChildStdin {
    fd: Fd<std::process::ChildStdin>,
}

impl ChildStdin {
    pub(super) fn new(io: std::process::ChildStdin) -> io::Result<ChildStdin> {
        Ok(ChildStdin { fd: Fd::new(io)? })
    }

    /// Bounds each write: past it, a write that wrote nothing fails with `TimedOut`.
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.fd.set_write_timeout(timeout)
    }

    /// Closes the pipe (as dropping it does): the child reads end of file.
    pub fn close(self) {
        drop(self);
    }
}

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fd.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.fd.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A buffered reader over one of the child's output pipes.
struct PipeReader<T: AsFd> {
    fd: Fd<T>,
    rbuf: ReadBuffer,
    eof: bool,
    read_timeout: Option<Duration>,
    max_line: usize,
    max_to_end: usize,
}

impl<T: AsFd> PipeReader<T> {
    fn new(io: T) -> io::Result<PipeReader<T>> {
        Ok(PipeReader {
            fd: Fd::new(io)?,
            rbuf: ReadBuffer::default(),
            eof: false,
            read_timeout: None,
            max_line: DEFAULT_MAX_LINE,
            max_to_end: DEFAULT_MAX_TO_END,
        })
    }

    fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
        let deadline = deadline_after(self.read_timeout);
        // The last line of a program's output often has no newline.
        buffer::receive_line(self, self.max_line, LastLine::Line, deadline)
    }

    fn receive_line_into(&mut self, line: &mut Vec<u8>) -> io::Result<bool> {
        let deadline = deadline_after(self.read_timeout);
        buffer::receive_line_into(self, line, self.max_line, LastLine::Line, deadline)
    }

    fn receive_exact(&mut self, n: usize) -> io::Result<Bytes> {
        let deadline = deadline_after(self.read_timeout);
        buffer::receive_exact(self, n, "the pipe", deadline)
    }

    fn receive_to_end(&mut self) -> io::Result<Bytes> {
        let deadline = deadline_after(self.read_timeout);
        buffer::receive_to_end(self, self.max_to_end, deadline)
    }

    fn receive_some(&mut self, max: usize) -> io::Result<Bytes> {
        let timeout = self.read_timeout;
        buffer::receive_some(self, max, || deadline_after(timeout))
    }

    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.rbuf.is_empty() {
            let deadline = deadline_after(self.read_timeout);
            self.fill(deadline)?;
        }
        Ok(self.rbuf.as_slice())
    }

    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.rbuf.consume(n);
        Ok(n)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        crate::shared::check_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }
}

impl<T: AsFd> Fill for PipeReader<T> {
    #[inline]
    fn rbuf(&mut self) -> &mut ReadBuffer {
        &mut self.rbuf
    }

    /// Reads more into the buffer; 0 means end of stream (the child closed the pipe).
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        loop {
            let buf = &mut self.rbuf.buf;
            match sys::read_into(self.fd.as_fd(), buf, READ_CHUNK) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    copas_core::cooperate();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rbuf.release_if_empty();
                    self.fd.readable(deadline)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

macro_rules! reader {
    ($(#[$doc:meta])* $name:ident, $std:ty, $what:literal) => {
        $(#[$doc])*
        pub struct $name {
            inner: PipeReader<$std>,
        }

        impl $name {
            pub(super) fn new(io: $std) -> io::Result<$name> {
                Ok($name {
                    inner: PipeReader::new(io)?,
                })
            }

            #[doc = concat!("Receives one line of the child's ", $what, ", without its `\\n` (and a `\\r` before it); `None` at end of stream. A last line without a newline is returned as it is.")]
            ///
            /// # Errors
            /// `InvalidData` for a line longer than the limit
            /// ([`set_max_line_length`](Self::set_max_line_length), default
            /// [`DEFAULT_MAX_LINE`](crate::DEFAULT_MAX_LINE)); the bytes stay buffered.
            /// `TimedOut` past the read timeout; the cancellation error; the OS error.
            pub fn receive_line(&mut self) -> io::Result<Option<Bytes>> {
                self.inner.receive_line()
            }

            /// As [`receive_line`](Self::receive_line), but appends the line to `line`
            /// and returns `true`, or `false` at end of stream (nothing appended): a
            /// reused `Vec` makes no allocation per line.
            ///
            /// # Errors
            /// As [`receive_line`](Self::receive_line); nothing is appended on error.
            pub fn receive_line_into(&mut self, line: &mut Vec<u8>) -> io::Result<bool> {
                self.inner.receive_line_into(line)
            }

            /// Receives exactly `n` bytes.
            ///
            /// # Errors
            /// `UnexpectedEof` if the pipe closes first (what arrived stays buffered);
            /// otherwise as [`receive_line`](Self::receive_line).
            pub fn receive_exact(&mut self, n: usize) -> io::Result<Bytes> {
                self.inner.receive_exact(n)
            }

            /// Receives everything until the child closes the pipe (usually: until it
            /// exits).
            ///
            /// # Errors
            /// `InvalidData` past [`DEFAULT_MAX_TO_END`](crate::DEFAULT_MAX_TO_END)
            /// bytes (see [`set_max_to_end`](Self::set_max_to_end)); otherwise as
            /// [`receive_line`](Self::receive_line).
            pub fn receive_to_end(&mut self) -> io::Result<Bytes> {
                self.inner.receive_to_end()
            }

            /// Receives what is there, up to `max` bytes, waiting only if nothing is
            /// buffered; empty at end of stream.
            ///
            /// # Errors
            /// As [`receive_line`](Self::receive_line).
            pub fn receive_some(&mut self, max: usize) -> io::Result<Bytes> {
                self.inner.receive_some(max)
            }

            /// Bytes received but not yet taken.
            pub fn buffered(&self) -> &[u8] {
                self.inner.rbuf.as_slice()
            }

            /// Bounds each receive call: past it the call fails with `TimedOut` (and
            /// nothing received is lost). `None`, the default, waits forever.
            ///
            /// # Errors
            /// `InvalidInput` for `Some(Duration::ZERO)`.
            pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
                self.inner.set_read_timeout(timeout)
            }

            /// The longest line [`receive_line`](Self::receive_line) accepts.
            pub fn set_max_line_length(&mut self, n: usize) {
                self.inner.max_line = n;
            }

            /// The most bytes [`receive_to_end`](Self::receive_to_end) collects.
            pub fn set_max_to_end(&mut self, n: usize) {
                self.inner.max_to_end = n;
            }
        }

        impl Read for $name {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.inner.read(buf)
            }
        }

        impl BufRead for $name {
            fn fill_buf(&mut self) -> io::Result<&[u8]> {
                self.inner.fill_buf()
            }

            fn consume(&mut self, amt: usize) {
                self.inner.rbuf.consume(amt);
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.fd.as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.fd.as_raw_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.inner.fd.as_raw_fd())
                    .field("buffered", &self.inner.rbuf.len())
                    .field("eof", &self.inner.eof)
                    .finish()
            }
        }
    };
}

reader!(
    /// The reading end of a child's standard output, buffered: the receive calls of
    /// [`TcpStream`](crate::TcpStream) (`receive_line`, `receive_exact`, `receive_to_end`,
    /// `receive_some`), `Read` and `BufRead`, all suspending the task while the pipe is
    /// empty.
    ChildStdout,
    std::process::ChildStdout,
    "standard output"
);

reader!(
    /// The reading end of a child's standard error; the same calls as [`ChildStdout`].
    ChildStderr,
    std::process::ChildStderr,
    "standard error"
);

impl AsFd for ChildStdin {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ChildStdin {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for ChildStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStdin")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}
