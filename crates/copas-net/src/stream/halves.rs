//! The public halves of a split stream: [`WriteHalf`], [`ReadHalf`]'s own calls
//! (timeouts, shutdown, `reunite`), and [`ReuniteError`].
//!
//! Invariant: the two halves of one stream share one [`StreamShared`]; `reunite` accepts
//! only halves that do.

use std::fmt;
use std::io::{self, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use super::buffered::Stream;
use super::read::ReadHalf;
use super::write::StreamShared;
use super::StreamSocket;
use crate::shared::check_timeout;

/// The sending half of a [`Stream`] ([`TcpStream`](crate::TcpStream) by default,
/// [`UnixStream`](crate::UnixStream) as `WriteHalf<std::os::unix::net::UnixStream>`), from
/// [`Stream::split`]. Dropping it with output still buffered delivers that output from a
/// task of its own, as dropping a stream does.
pub struct WriteHalf<S: StreamSocket = std::net::TcpStream> {
    pub(super) shared: Rc<StreamShared<S>>,
}

impl<S: StreamSocket> fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("peer", &self.shared.io().peer_addr().ok())
            .field("buffered_in", &self.rbuf.len())
            .finish()
    }
}

impl<S: StreamSocket> fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf")
            .field("peer", &self.shared.io().peer_addr().ok())
            .field("buffered_out", &self.shared.pending())
            .finish()
    }
}

/// The halves given to [`ReadHalf::reunite`] came from different streams.
pub struct ReuniteError<S: StreamSocket = std::net::TcpStream>(pub ReadHalf<S>, pub WriteHalf<S>);

impl<S: StreamSocket> fmt::Debug for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReuniteError")
            .field(&self.0)
            .field(&self.1)
            .finish()
    }
}

impl<S: StreamSocket> fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of different streams")
    }
}

impl<S: StreamSocket> std::error::Error for ReuniteError<S> {}

impl<S: StreamSocket> ReadHalf<S> {
    /// As [`Stream::set_read_timeout`].
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
    pub fn reunite(self, write: WriteHalf<S>) -> Result<Stream<S>, ReuniteError<S>> {
        if Rc::ptr_eq(&self.shared, &write.shared) {
            Ok(Stream { read: self, write })
        } else {
            Err(ReuniteError(self, write))
        }
    }
}

impl<S: StreamSocket> WriteHalf<S> {
    /// As [`Stream::send`].
    ///
    /// # Errors
    /// As [`Stream::send`].
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.shared.send(data)
    }

    /// As [`Stream::flush`].
    ///
    /// # Errors
    /// As [`Stream::send`].
    pub fn flush(&mut self) -> io::Result<()> {
        self.shared.flush()
    }

    /// Flushes, then closes the connection in both directions; a task blocked on the
    /// read half is woken and fails with `NotConnected`.
    ///
    /// # Errors
    /// As [`Stream::close`].
    pub fn close(self) -> io::Result<()> {
        self.shared.close()
    }

    /// As [`Stream::shutdown`]; a task blocked on the read half is woken when the read
    /// direction is shut down.
    ///
    /// # Errors
    /// As [`Stream::shutdown`].
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.shared.shutdown(how, true)
    }

    /// As [`Stream::set_write_timeout`].
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.shared.write_timeout.set(timeout);
        Ok(())
    }

    /// As [`Stream::set_write_buffer_size`].
    pub fn set_write_buffer_size(&mut self, size: usize) {
        self.shared.write_limit.set(size.max(1));
    }

    /// As [`Stream::pending_output`].
    pub fn pending_output(&self) -> usize {
        self.shared.pending()
    }
}

impl<S: StreamSocket> Drop for WriteHalf<S> {
    fn drop(&mut self) {
        StreamShared::linger(&self.shared);
    }
}

/// std's contract: `write` returns `Ok(n)` once any byte is accepted (a partial write
/// under a full socket), and fails (`TimedOut`, `NotConnected`, …) only when none was;
/// `write_all` may therefore fail part-way, after `n` bytes reached the stream.
impl<S: StreamSocket> Write for WriteHalf<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write_some(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        WriteHalf::flush(self)
    }
}
