//! [`Registration`]: readiness of a raw descriptor that copas does not own.
//!
//! Invariant: while `closed` is false the descriptor is registered with the reactor under
//! `key`; `close` (also run by `Drop`) deregisters it exactly once. The kernel-side
//! registration is deleted only when the number still names the file that was registered
//! (same device and inode), so a registration whose descriptor was closed behind its back
//! can never delete another file's registration that reused the number.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use crate::reactor::{Interest, Reactor};
use crate::sys::unix;

/// Readiness notifications for a raw descriptor that copas does not own: a socket, pipe,
/// tty or eventfd opened by other code (a C library, an inherited descriptor).
///
/// [`wait`](Self::wait) suspends the current task until the descriptor is readable or
/// writable; the other tasks run meanwhile. Outside a task it drives the loop until then.
/// Most code wants [`Fd`](crate::Fd), which owns the descriptor and wraps `Read`/`Write`;
/// `Registration` is for code that must keep doing its own I/O on a number.
///
/// # The owner's rule
/// The code that owns the descriptor calls [`close`](Self::close) (or drops the
/// `Registration`) **before** it closes the descriptor. Until then the number must stay
/// open. Breaking the rule is not undefined behaviour, but waits on the old registration
/// may then hang until their deadline; copas still guarantees that a registration made
/// later for a reused number never receives, or loses, the old one's wake-ups.
///
/// `new` does not change the descriptor's flags: do I/O on it in non-blocking mode
/// (`O_NONBLOCK`), or a read may block the whole thread.
///
/// A `Registration` belongs to the thread that made it (`!Send`). Several tasks may wait
/// on one registration, in either direction, at the same time.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use copas_net::{Interest, Registration};
///
/// let (mut a, mut b) = UnixStream::pair().unwrap();
/// a.set_nonblocking(true).unwrap();
/// let reader = copas_core::spawn(move || {
///     let reg = Registration::new(a.as_raw_fd())?;
///     let mut buf = [0; 16];
///     loop {
///         match a.read(&mut buf) {
///             Ok(n) => break Ok::<_, std::io::Error>(buf[..n].to_vec()),
///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
///                 reg.wait(Interest::Read, None)?
///             }
///             Err(e) => break Err(e),
///         }
///     }
///     // `reg` drops here, before `a` closes.
/// });
/// copas_core::spawn(move || b.write_all(b"ping"));
/// copas_core::run().unwrap();
/// assert_eq!(reader.join().unwrap().unwrap(), b"ping");
/// ```
///
/// It cannot move to another thread:
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let reg = copas_net::Registration::new(0).unwrap();
/// send(reg);
/// ```
pub struct Registration {
    fd: RawFd,
    key: usize,
    /// Device and inode of the file registered.
    identity: (u64, u64),
    closed: Cell<bool>,
    reactor: Rc<Reactor>,
}

impl Registration {
    /// Registers `fd` with the current thread's reactor, for both directions. The
    /// descriptor's flags are not changed.
    ///
    /// # Errors
    /// `fd` is not open (`EBADF`); the platform cannot poll it (Linux's epoll refuses
    /// regular files and directories with `EPERM`); it is already registered with this
    /// thread's reactor (`AlreadyExists`); the reactor cannot be created.
    pub fn new(fd: RawFd) -> io::Result<Registration> {
        let identity =
            unix::identity(fd).map_err(|e| explain(e, fd, "is not an open descriptor"))?;
        let reactor = Reactor::current()?;
        let key = reactor
            .register(fd, true)
            .map_err(|e| explain(e, fd, "cannot be registered for readiness"))?;
        Ok(Registration {
            fd,
            key,
            identity,
            closed: Cell::new(false),
            reactor,
        })
    }

    /// Suspends the current task until the descriptor is ready for `interest` (or in
    /// error, or at end of stream), the `deadline` passes, or the task is cancelled.
    /// Returns at once when it is ready already. Outside a task, runs the loop (other
    /// tasks included) until then.
    ///
    /// Readiness is a hint: another task, or another process sharing the descriptor, may
    /// consume it first. Do the operation, and on `WouldBlock` wait again.
    ///
    /// # Errors
    /// [`TimedOut`](io::ErrorKind::TimedOut) at the deadline; the cancellation error
    /// ([`copas_core::is_cancelled`]) when the task is cancelled;
    /// [`NotConnected`](io::ErrorKind::NotConnected) when the registration is closed
    /// before or during the wait.
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        self.wait_inner(interest, deadline, true)
    }

    /// As [`wait`](Self::wait), without first polling the descriptor's readiness: for
    /// callers that have just seen `WouldBlock`.
    pub(crate) fn wait_inner(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        check: bool,
    ) -> io::Result<()> {
        if self.closed.get() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "copas: the descriptor's registration was closed",
            ));
        }
        self.reactor.wait(self.key, interest, deadline, check)
    }

    /// Deregisters the descriptor at once. Every task waiting on it wakes with
    /// [`NotConnected`](io::ErrorKind::NotConnected), and later waits fail the same way.
    /// The descriptor itself is left open. Closing twice does nothing.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        // Delete the kernel's registration only if the number still names our file: if the
        // owner closed it early, the number may belong to another file by now.
        let same = unix::identity(self.fd).is_ok_and(|id| id == self.identity);
        self.reactor.deregister(self.key, self.fd, same);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

fn explain(e: io::Error, fd: RawFd, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("copas: descriptor {fd} {what}: {e}"))
}

impl AsRawFd for Registration {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("fd", &self.fd)
            .field("closed", &self.closed.get())
            .finish()
    }
}
