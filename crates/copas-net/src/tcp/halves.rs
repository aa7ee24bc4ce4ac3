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

use super::read::ReadHalf;
use super::stream::TcpStream;
use super::write::StreamShared;
use crate::shared::check_timeout;

/// The sending half of a [`TcpStream`] (from [`TcpStream::split`]). Dropping it with
/// output still buffered delivers that output from a task of its own, as dropping a
/// stream does.
pub struct WriteHalf {
    pub(super) shared: Rc<StreamShared>,
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("peer", &self.shared.io().peer_addr().ok())
            .field("buffered_in", &self.rbuf.len())
            .finish()
    }
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf")
            .field("peer", &self.shared.io().peer_addr().ok())
            .field("buffered_out", &self.shared.pending())
            .finish()
    }
}

/// The halves given to [`ReadHalf::reunite`] came from different streams.
#[derive(Debug)]
pub struct ReuniteError(pub ReadHalf, pub WriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of different streams")
    }
}

impl std::error::Error for ReuniteError {}

impl ReadHalf {
    /// As [`TcpStream::set_read_timeout`].
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
    pub fn reunite(self, write: WriteHalf) -> Result<TcpStream, ReuniteError> {
        if Rc::ptr_eq(&self.shared, &write.shared) {
            Ok(TcpStream { read: self, write })
        } else {
            Err(ReuniteError(self, write))
        }
    }
}

impl WriteHalf {
    /// As [`TcpStream::send`].
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.shared.send(data)
    }

    /// As [`TcpStream::flush`].
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    pub fn flush(&mut self) -> io::Result<()> {
        self.shared.flush()
    }

    /// Flushes, then closes the connection in both directions; a task blocked on the
    /// read half is woken and fails with `NotConnected`.
    ///
    /// # Errors
    /// As [`TcpStream::close`].
    pub fn close(self) -> io::Result<()> {
        self.shared.close()
    }

    /// As [`TcpStream::shutdown`]; a task blocked on the read half is woken when the read
    /// direction is shut down.
    ///
    /// # Errors
    /// As [`TcpStream::shutdown`].
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.shared.shutdown(how, true)
    }

    /// As [`TcpStream::set_write_timeout`].
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.shared.write_timeout.set(timeout);
        Ok(())
    }

    /// As [`TcpStream::set_write_buffer_size`].
    pub fn set_write_buffer_size(&mut self, size: usize) {
        self.shared.write_limit.set(size.max(1));
    }

    /// As [`TcpStream::pending_output`].
    pub fn pending_output(&self) -> usize {
        self.shared.pending()
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        StreamShared::linger(&self.shared);
    }
}

/// std's contract: `write` returns `Ok(n)` once any byte is accepted (a partial write
/// under a full socket), and fails (`TimedOut`, `NotConnected`, …) only when none was;
/// `write_all` may therefore fail part-way, after `n` bytes reached the stream.
impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write_some(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        WriteHalf::flush(self)
    }
}
