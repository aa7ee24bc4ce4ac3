//! [`Fd`]: any descriptor that can be non-blocking (pipe, tty, eventfd, socketpair,
//! inherited descriptor), with I/O that suspends the task instead of blocking the thread.
//!
//! Invariant: `reg` is declared before `io`, so the registration is dropped (and the
//! descriptor deregistered) before `io` closes the descriptor; `into_inner` deregisters
//! before it hands `io` back.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::reactor::Interest;
use crate::registration::Registration;
use crate::shared::{check_timeout, deadline_after};
use crate::sys::unix;

/// A descriptor owned by copas for readiness: its reads and writes suspend the current
/// task until the descriptor is ready, and the other tasks run meanwhile. The model is
/// async-io's `Async<T>`, with blocking-style calls instead of futures.
///
/// `Fd::new` puts the descriptor in non-blocking mode. `Fd<T>` implements [`Read`] and
/// [`Write`] when `T` does, and so does `&Fd<T>` when `&T` does (pipes, `File`,
/// `UnixStream`), so that one task can read while another writes. Any other operation
/// goes through [`read_with`](Self::read_with) / [`write_with`](Self::write_with), which
/// retry a closure until it stops returning `WouldBlock`.
///
/// `Write::write` keeps std's contract: it returns after the first write the descriptor
/// accepts, which may be partial (`Ok(n)`); it fails only before any byte was written.
///
/// ```
/// use std::io::{Read, Write};
/// use copas_net::Fd;
///
/// let (r, w) = std::io::pipe().unwrap();
/// let (mut r, mut w) = (Fd::new(r).unwrap(), Fd::new(w).unwrap());
/// let reader = copas_core::spawn(move || {
///     let mut text = String::new();
///     r.read_to_string(&mut text)?; // suspends; the writer runs meanwhile
///     std::io::Result::Ok(text)
/// });
/// copas_core::spawn(move || w.write_all(b"through a pipe")); // EOF when `w` drops
/// copas_core::run().unwrap();
/// assert_eq!(reader.join().unwrap().unwrap(), "through a pipe");
/// ```
///
/// Like the loop it is registered with, an `Fd` stays on its thread:
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let (r, _w) = std::io::pipe().unwrap();
/// send(copas_net::Fd::new(r).unwrap());
/// ```
pub struct Fd<T: AsFd> {
    reg: Registration,
    io: T,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl<T: AsFd> Fd<T> {
    /// Takes `io`, sets `O_NONBLOCK` on its descriptor and registers it with the current
    /// thread's reactor.
    ///
    /// The flag belongs to the open file description, so it also applies to every
    /// duplicate of the descriptor (for example a shared terminal, or the other end of a
    /// `dup`), and it stays set after [`into_inner`](Self::into_inner).
    ///
    /// # Errors
    /// The flag cannot be set, or the descriptor cannot be polled (Linux's epoll refuses
    /// regular files and directories), or it is already registered with this thread.
    pub fn new(io: T) -> io::Result<Fd<T>> {
        let fd = io.as_fd().as_raw_fd();
        unix::set_nonblocking(fd)?;
        Ok(Fd {
            reg: Registration::new(fd)?,
            io,
            read_timeout: None,
            write_timeout: None,
        })
    }

    /// The inner I/O object.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The inner I/O object, mutably. Do not replace or close its descriptor: it is
    /// registered until the `Fd` is dropped or taken apart.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Deregisters the descriptor and returns the inner I/O object. Nothing is restored:
    /// the descriptor stays in non-blocking mode (clear `O_NONBLOCK` yourself if the next
    /// user expects blocking I/O).
    pub fn into_inner(self) -> T {
        let Fd { reg, io, .. } = self;
        drop(reg); // deregisters, before `io` can be closed
        io
    }

    /// Suspends until the descriptor is readable (or at end of stream, or in error), or
    /// the deadline passes. Returns at once when it is readable already. See
    /// [`Registration::wait`].
    ///
    /// # Errors
    /// `TimedOut` at the deadline, or the cancellation error.
    pub fn readable(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.reg.wait(Interest::Read, deadline)
    }

    /// Suspends until the descriptor is writable (or in error), or the deadline passes.
    /// Returns at once when it is writable already.
    ///
    /// # Errors
    /// As [`readable`](Self::readable).
    pub fn writable(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.reg.wait(Interest::Write, deadline)
    }

    /// Runs `op` until it returns something other than `WouldBlock`, waiting for
    /// readability in between (`Interrupted` is retried). The read timeout, if set,
    /// bounds the whole call.
    ///
    /// # Errors
    /// `op`'s error, `TimedOut` when the read timeout passes first, or the cancellation
    /// error.
    pub fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        let deadline = deadline_after(self.read_timeout);
        retry(&self.reg, Interest::Read, deadline, || op(&self.io))
    }

    /// As [`read_with`](Self::read_with), with mutable access to the inner object.
    ///
    /// # Errors
    /// As [`read_with`](Self::read_with).
    pub fn read_with_mut<R>(
        &mut self,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        let deadline = deadline_after(self.read_timeout);
        let io = &mut self.io;
        retry(&self.reg, Interest::Read, deadline, || op(io))
    }

    /// Runs `op` until it returns something other than `WouldBlock`, waiting for
    /// writability in between (`Interrupted` is retried). The write timeout, if set,
    /// bounds the whole call.
    ///
    /// # Errors
    /// `op`'s error, `TimedOut` when the write timeout passes first, or the cancellation
    /// error.
    pub fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        let deadline = deadline_after(self.write_timeout);
        retry(&self.reg, Interest::Write, deadline, || op(&self.io))
    }

    /// As [`write_with`](Self::write_with), with mutable access to the inner object.
    ///
    /// # Errors
    /// As [`write_with`](Self::write_with).
    pub fn write_with_mut<R>(
        &mut self,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        let deadline = deadline_after(self.write_timeout);
        let io = &mut self.io;
        retry(&self.reg, Interest::Write, deadline, || op(io))
    }

    /// Bounds each read (`Read::read`, `read_with`): past it the call fails with
    /// `TimedOut`. `None` (the default) waits forever.
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`, as std's sockets.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Bounds each write (`Write::write`, `write_with`): past it, a call that wrote
    /// nothing fails with `TimedOut`. `None` (the default) waits forever.
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.write_timeout = timeout;
        Ok(())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }
}

/// Runs `op` until it does not return `WouldBlock`, waiting for `interest` in between.
fn retry<R>(
    reg: &Registration,
    interest: Interest,
    deadline: Option<Instant>,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                reg.wait_inner(interest, deadline, false)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl<T: AsFd + Read> Read for Fd<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with_mut(|io| io.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_with_mut(|io| io.read_vectored(bufs))
    }
}

impl<T: AsFd + Write> Write for Fd<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with_mut(|io| io.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with_mut(|io| io.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_with_mut(|io| io.flush())
    }
}

impl<T: AsFd> Read for &Fd<T>
where
    for<'a> &'a T: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|mut io| io.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_with(|mut io| io.read_vectored(bufs))
    }
}

impl<T: AsFd> Write for &Fd<T>
where
    for<'a> &'a T: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|mut io| io.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(|mut io| io.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_with(|mut io| io.flush())
    }
}

impl<T: AsFd> AsFd for Fd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl<T: AsFd> AsRawFd for Fd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_fd().as_raw_fd()
    }
}

impl<T: AsFd + fmt::Debug> fmt::Debug for Fd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fd")
            .field("io", &self.io)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}
