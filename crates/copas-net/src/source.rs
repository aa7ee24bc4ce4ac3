//! Registration of descriptors with the reactor: added when a [`Source`] is created,
//! deleted before the descriptor closes. Also the one read into uninitialised buffer
//! memory. With `epoll.rs` (Linux), the only module of copas-net with `unsafe`.
//!
//! Invariant: a `Source` owns its I/O object, and its `Drop` deletes the descriptor from
//! the poller before the object (and so the descriptor) is dropped, which is what
//! `Poller::add` requires.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use polling::{Event, PollMode};

use crate::reactor::{Direction, Reactor};

/// A non-blocking descriptor registered with the current thread's reactor.
pub(crate) struct Source<T: AsFd> {
    /// # Invariant
    /// Registered with `reactor`'s poller under `key` until `drop` deletes it.
    io: T,
    key: usize,
    reactor: Rc<Reactor>,
}

impl<T: AsFd> Source<T> {
    /// Registers `io`, which must already be in non-blocking mode.
    pub(crate) fn new(io: T) -> io::Result<Source<T>> {
        let reactor = Reactor::current()?;
        let key = reactor.insert_slot();
        #[cfg(target_os = "linux")]
        if let Some(ep) = reactor.epoll() {
            let added = ep.borrow().add(
                io.as_fd().as_raw_fd(),
                key as u64,
                crate::epoll::SOCKET_INTEREST,
            );
            if let Err(e) = added {
                reactor.remove_slot(key);
                return Err(e);
            }
            return Ok(Source { io, key, reactor });
        }
        let (interest, mode) = match reactor.mode() {
            PollMode::Oneshot => (Event::none(key), PollMode::Oneshot),
            mode => (Event::all(key), mode),
        };
        // SAFETY: the descriptor is owned by `io`, which this `Source` owns from here on;
        // `Drop for Source` deletes it from the poller before `io` is dropped and closes it.
        let added = unsafe {
            reactor
                .poller()
                .add_with_mode(io.as_fd().as_raw_fd(), interest, mode)
        };
        if let Err(e) = added {
            reactor.remove_slot(key);
            return Err(e);
        }
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

    /// Suspends until the descriptor may be ready in `dir`; see [`Reactor::wait`].
    pub(crate) fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        self.reactor.wait(self.key, self.io.as_fd(), dir, deadline)
    }

    /// Runs `op` until it does not return `WouldBlock`, waiting for readiness in `dir` in
    /// between. `Interrupted` is retried.
    pub(crate) fn do_io<R>(
        &self,
        dir: Direction,
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

impl<T: AsFd> Drop for Source<T> {
    fn drop(&mut self) {
        // Deleting can only fail if the descriptor was never added or is already closed;
        // neither can happen to a live Source, and there is nothing to do about it here.
        #[cfg(target_os = "linux")]
        if let Some(ep) = self.reactor.epoll() {
            let _ = ep.borrow().delete(self.io.as_fd().as_raw_fd());
            self.reactor.remove_slot(self.key);
            return;
        }
        let _ = self.reactor.poller().delete(self.io.as_fd());
        self.reactor.remove_slot(self.key);
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
