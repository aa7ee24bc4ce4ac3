//! The write side of a stream: [`StreamShared`] owns the socket (shared by both halves)
//! and the write buffer that the reactor flushes in the background.
//!
//! Invariant: the write buffer holds at most `write_limit` bytes after `send` or `write`
//! returns; bytes leave it only when the kernel took them, and bytes that can no longer be
//! delivered are reported (by the next call, or on stderr when the stream is dropped).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use copas_core::cooperate;

use super::{StreamSocket, DEFAULT_LINGER, DEFAULT_WRITE_BUFFER, KEEP_WRITE_BUFFER};
use crate::reactor::{BackgroundFlush, Interest};
use crate::shared::deadline_after;
use crate::source::Source;

pub(crate) struct StreamShared<S: StreamSocket> {
    pub(crate) source: Source<S>,
    wbuf: RefCell<BytesMut>,
    /// In the reactor's flush queue.
    queued: Cell<bool>,
    /// An error found while writing in the background, for the next call.
    pub(super) error: RefCell<Option<io::Error>>,
    pub(super) write_timeout: Cell<Option<Duration>>,
    pub(super) write_limit: Cell<usize>,
    /// Shut down for reading / writing by either half (a waiter on the other half is
    /// woken and fails with `NotConnected`).
    pub(super) read_closed: Cell<bool>,
    pub(super) write_closed: Cell<bool>,
    /// A name for reports (`set_name`).
    pub(super) name: RefCell<Option<Rc<str>>>,
    /// Whether the reactor holds this stream as waiting for writability (mirrors its
    /// slot, so that the common case needs no reactor call).
    flusher_set: Cell<bool>,
    this: Weak<StreamShared<S>>,
}

impl<S: StreamSocket> StreamShared<S> {
    pub(super) fn new(stream: S) -> io::Result<Rc<StreamShared<S>>> {
        stream.nonblocking(true)?;
        let source = Source::new(stream)?;
        Ok(Rc::new_cyclic(|this| StreamShared {
            source,
            wbuf: RefCell::new(BytesMut::new()),
            queued: Cell::new(false),
            error: RefCell::new(None),
            write_timeout: Cell::new(None),
            write_limit: Cell::new(DEFAULT_WRITE_BUFFER),
            read_closed: Cell::new(false),
            write_closed: Cell::new(false),
            name: RefCell::new(None),
            flusher_set: Cell::new(false),
            this: this.clone(),
        }))
    }

    pub(super) fn io(&self) -> &S {
        self.source.get_ref()
    }

    pub(super) fn take_error(&self) -> io::Result<()> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_deadline(&self) -> Option<Instant> {
        deadline_after(self.write_timeout.get())
    }

    /// Writes buffered output until it is gone or the socket would block.
    fn write_buffered(&self) -> io::Result<()> {
        let mut wbuf = self.wbuf.borrow_mut();
        while !wbuf.is_empty() {
            match self.io().write_some(&wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // Advancing (not splitting) keeps the buffer unshared: no allocation.
                Ok(n) if n < wbuf.len() => bytes::Buf::advance(&mut *wbuf, n),
                Ok(_) => {
                    // All sent: reuse a small buffer, drop a large one (an idle connection
                    // should hold little).
                    if wbuf.capacity() > KEEP_WRITE_BUFFER {
                        *wbuf = BytesMut::new();
                    } else {
                        wbuf.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all buffered output, suspending while the socket is full.
    fn flush_blocking(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.take_error()?;
        loop {
            if self.write_closed.get() && self.pending() > 0 {
                return Err(shut_down("writing"));
            }
            match self.write_buffered() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.source.wait(Interest::Write, deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.set_flusher(false);
        if self.queued.get() && self.source.reactor().unqueue_flush(self.source.key()) {
            self.queued.set(false);
        }
        Ok(())
    }

    /// Tells the reactor whether this stream's output waits for writability.
    fn set_flusher(&self, waiting: bool) {
        if self.flusher_set.replace(waiting) == waiting {
            return;
        }
        let me: Option<Weak<dyn BackgroundFlush>> = if waiting {
            Some(self.this.clone())
        } else {
            None
        };
        self.source.reactor().set_flusher(self.source.key(), me);
    }

    fn queue_flush(&self) {
        if !self.queued.replace(true) {
            if let Some(me) = self.this.upgrade() {
                self.source.reactor().queue_flush(me);
            }
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.wbuf.borrow().len()
    }

    /// The start of `send` and `write_some`: a stored error or a write side shut down
    /// fails the call; data that fits within the limit is buffered (`true`).
    #[inline]
    fn buffer_if_fits(&self, data: &[u8]) -> io::Result<bool> {
        self.take_error()?;
        if self.write_closed.get() {
            return Err(shut_down("writing"));
        }
        let mut wbuf = self.wbuf.borrow_mut();
        if wbuf.len() + data.len() > self.write_limit.get() {
            return Ok(false);
        }
        wbuf.extend_from_slice(data);
        drop(wbuf);
        self.queue_flush();
        cooperate();
        Ok(true)
    }

    pub(super) fn send(&self, data: &[u8]) -> io::Result<()> {
        if self.buffer_if_fits(data)? {
            return Ok(());
        }
        let limit = self.write_limit.get();
        let deadline = self.write_deadline();
        self.flush_blocking(deadline)?;
        let mut rest = data;
        while rest.len() > limit {
            let n = self
                .source
                .do_io(Interest::Write, deadline, |s| s.write_some(rest))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        self.wbuf.borrow_mut().extend_from_slice(rest);
        self.queue_flush();
        Ok(())
    }

    /// `Write::write` with std's contract: returns `Ok(n)` as soon as any of `data` was
    /// accepted (into the buffer, or by the kernel), and fails only when none was. Data
    /// that fits the buffer is buffered whole; past it, buffered output is sent first and
    /// then `data` goes straight to the socket, returning at the first write the socket
    /// would block on after taking some of it.
    pub(super) fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        if self.buffer_if_fits(data)? {
            return Ok(data.len());
        }
        let limit = self.write_limit.get();
        if data.is_empty() {
            return Ok(0);
        }
        let deadline = self.write_deadline();
        // Nothing of `data` is accepted yet: an error here (a timeout) is the call's error.
        self.flush_blocking(deadline)?;
        let mut sent = 0;
        while data.len() - sent > limit {
            match self.io().write_some(&data[sent..]) {
                Ok(0) if sent == 0 => return Err(io::ErrorKind::WriteZero.into()),
                Ok(0) => return Ok(sent),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The kernel took some and is full, or failed after taking some: report
                // the partial write; the next call waits, or meets the error again.
                Err(_) if sent > 0 => return Ok(sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.source.wait(Interest::Write, deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        // What is left fits the (now empty) buffer.
        self.wbuf.borrow_mut().extend_from_slice(&data[sent..]);
        self.queue_flush();
        Ok(data.len())
    }

    pub(super) fn flush(&self) -> io::Result<()> {
        self.flush_blocking(self.write_deadline())
    }

    pub(super) fn close(&self) -> io::Result<()> {
        let r = self.flush();
        if r.is_err() {
            self.wbuf.borrow_mut().clear();
        }
        self.mark_closed(Shutdown::Both);
        let _ = self.io().shut(Shutdown::Both);
        r
    }

    /// Shuts down a direction; `flush` says whether buffered output is sent first (the
    /// write half does so; the read half cannot wait for writability, since the write
    /// half may be waiting already, and discards it).
    pub(super) fn shutdown(&self, how: Shutdown, flush: bool) -> io::Result<()> {
        if how != Shutdown::Read && flush {
            self.flush()?;
        }
        self.mark_closed(how);
        self.io().shut(how)
    }

    /// Records the shut-down directions and wakes both halves' waiters, which then fail.
    fn mark_closed(&self, how: Shutdown) {
        if how != Shutdown::Write {
            self.read_closed.set(true);
        }
        if how != Shutdown::Read {
            self.write_closed.set(true);
        }
        self.source.reactor().wake_waiters(self.source.key());
    }

    /// Hands output still buffered when the write side's owner goes away to a task of its
    /// own, which delivers it within the write timeout (or the default linger time).
    pub(super) fn linger(this: &Rc<StreamShared<S>>) {
        if this.pending() == 0 || this.error.borrow().is_some() || this.write_closed.get() {
            return;
        }
        if this.write_buffered().is_ok() || this.pending() == 0 {
            return;
        }
        let shared = this.clone();
        let linger = shared.write_timeout.get().unwrap_or(DEFAULT_LINGER);
        let spawned = copas_core::Builder::new()
            .name("copas-linger".to_owned())
            .lingering()
            .spawn(move || {
                let deadline = Instant::now().checked_add(linger);
                if let Err(e) = shared.flush_blocking(deadline) {
                    *shared.error.borrow_mut() = Some(e);
                }
            });
        // If no task can be spawned, StreamShared's drop reports the loss.
        drop(spawned);
    }
}

pub(super) fn shut_down(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("copas: the socket is shut down for {what}"),
    )
}

impl<S: StreamSocket> BackgroundFlush for StreamShared<S> {
    fn key(&self) -> usize {
        self.source.key()
    }

    fn flush_background(&self) -> bool {
        self.queued.set(false);
        if self.error.borrow().is_some() {
            self.set_flusher(false);
            return false;
        }
        match self.write_buffered() {
            Ok(()) => {
                self.set_flusher(false);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.set_flusher(true);
                true
            }
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                self.set_flusher(false);
                false
            }
        }
    }
}

impl<S: StreamSocket> Drop for StreamShared<S> {
    fn drop(&mut self) {
        let lost = self.wbuf.get_mut().len();
        if lost > 0 {
            let peer = self.io().describe_peer();
            let peer = match self.name.get_mut() {
                Some(name) => format!("{peer} ('{name}')"),
                None => peer,
            };
            let why = match self.error.get_mut() {
                Some(e) => e.to_string(),
                None => "the stream was dropped before it could be flushed".to_owned(),
            };
            eprintln!("copas: {lost} bytes of buffered output to {peer} were lost: {why}");
        }
    }
}
