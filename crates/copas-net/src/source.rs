//! Sockets owned by copas, registered with the reactor: a [`Source`] registers its
//! descriptor when created and deregisters it before the descriptor closes. Also the one
//! read into uninitialised buffer memory, the only `unsafe` here.
//!
//! Invariant: a `Source` owns its I/O object, and its `Drop` deregisters the descriptor
//! before the object (and so the descriptor) is dropped.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use crate::reactor::{Interest, Reactor};

/// A non-blocking descriptor registered with the current thread's reactor, at most one
/// waiting task per direction.
pub(crate) struct Source<T: AsFd> {
    /// # Invariant
    /// Registered with `reactor` under `key` until `drop` deregisters it.
    io: T,
    key: usize,
    reactor: Rc<Reactor>,
}

impl<T: AsFd> Source<T> {
    /// Registers `io`, which must already be in non-blocking mode.
    pub(crate) fn new(io: T) -> io::Result<Source<T>> {
        let reactor = Reactor::current()?;
        let key = reactor.register(io.as_fd().as_raw_fd(), false)?;
        Ok(Source { io, key, reactor })
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }

    pub(crate) fn reactor(&self) -> &Rc<Reactor> {
        &self.reactor
    }

    /// Whether a read may be skipped after one that drained the kernel's buffer; see
    /// [`Reactor::may_skip_read`].
    pub(crate) fn may_skip_read(&self) -> bool {
        self.reactor.may_skip_read(self.key)
    }

    /// Suspends until the descriptor may be ready for `dir`; see [`Reactor::wait`]. The
    /// caller has just seen `WouldBlock`, so the current readiness is not polled again.
    pub(crate) fn wait(&self, dir: Interest, deadline: Option<Instant>) -> io::Result<()> {
        self.reactor.wait(self.key, dir, deadline, false)
    }

    /// A handle to wait on this source that does not borrow it, for a task that waits
    /// while another may drop the source (its wait then fails with `NotConnected`).
    pub(crate) fn waiter(&self) -> Waiter {
        Waiter {
            reactor: self.reactor.clone(),
            key: self.key,
        }
    }

    /// Runs `op` until it does not return `WouldBlock`, waiting for readiness in `dir` in
    /// between. `Interrupted` is retried.
    pub(crate) fn do_io<R>(
        &self,
        dir: Interest,
        deadline: Option<Instant>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(dir, deadline)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// See [`Source::waiter`]. Waiting checks the key's generation first, so a waiter
/// outliving its source only ever fails.
pub(crate) struct Waiter {
    reactor: Rc<Reactor>,
    key: usize,
}

impl Waiter {
    /// As [`Source::wait`]; `NotConnected` once the source is gone.
    pub(crate) fn wait(&self, dir: Interest, deadline: Option<Instant>) -> io::Result<()> {
        self.reactor.wait(self.key, dir, deadline, false)
    }
}

impl<T: AsFd> Drop for Source<T> {
    fn drop(&mut self) {
        self.reactor
            .deregister(self.key, self.io.as_fd().as_raw_fd(), true);
    }
}

/// Reads once from `fd` into the spare capacity of `buf` (at most `max` bytes, reserving
/// that much first), without zeroing the memory. Returns the byte count; 0 is end of
/// stream.
pub(crate) fn recv_into(fd: &impl AsFd, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is valid, writable memory of at least `len` bytes owned by `buf`;
    // recv writes at most `len` bytes into it and never reads it.
    let n = unsafe { libc::recv(fd.as_fd().as_raw_fd(), spare.as_mut_ptr().cast(), len, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (n <= len).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
