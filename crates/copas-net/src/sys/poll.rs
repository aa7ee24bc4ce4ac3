//! The portable backend: a `polling::Poller` (kqueue, event ports, epoll), edge-triggered
//! where the platform supports it and oneshot otherwise (re-armed before each wait).
//!
//! Invariant: every descriptor added here is deleted before it closes (the reactor's
//! `register`/`deregister`, called by `Source` and `Registration`, pair up).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use copas_core::Notify;
use polling::{Event, Events, PollMode, Poller};

use super::Readiness;

pub(crate) struct Backend {
    poller: Arc<Poller>,
    mode: PollMode,
    events: RefCell<Events>,
}

impl Backend {
    /// `polling` does not report the peer's half-close, so no read may be skipped.
    pub(crate) const PRECISE: bool = false;

    pub(crate) fn new() -> io::Result<Backend> {
        let poller = Poller::new()?;
        let mode = if poller.supports_edge() {
            PollMode::Edge
        } else {
            PollMode::Oneshot
        };
        Ok(Backend {
            poller: Arc::new(poller),
            mode,
            events: RefCell::new(Events::new()),
        })
    }

    pub(crate) fn add(&self, fd: RawFd, key: usize) -> io::Result<()> {
        let interest = match self.mode {
            PollMode::Oneshot => Event::none(key),
            _ => Event::all(key),
        };
        // SAFETY: polling requires the descriptor to be deleted before it is closed; the
        // reactor's callers (`Source`, `Registration`) delete it in their drop or close,
        // before the descriptor they own or borrow is closed. Breaking that rule leaves at
        // most a stale kernel registration, whose events carry a dead key and are ignored.
        unsafe { self.poller.add_with_mode(fd, interest, self.mode) }
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: the descriptor is open: the caller deletes it before closing it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.poller.delete(fd)
    }

    pub(crate) fn needs_rearm(&self) -> bool {
        self.mode == PollMode::Oneshot
    }

    pub(crate) fn rearm(&self, fd: RawFd, key: usize, read: bool, write: bool) -> io::Result<()> {
        if self.mode != PollMode::Oneshot {
            return Ok(());
        }
        // SAFETY: the descriptor is open and registered: the caller waits on it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.poller
            .modify_with_mode(fd, Event::new(key, read, write), PollMode::Oneshot)
    }

    pub(crate) fn wait(
        &self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(usize, Readiness) -> bool,
    ) -> io::Result<usize> {
        let mut events = self.events.borrow_mut();
        events.clear();
        self.poller.wait(&mut events, timeout)?;
        let mut handled = 0;
        for ev in events.iter() {
            let r = Readiness {
                readable: ev.readable,
                writable: ev.writable,
                read_closed: None,
            };
            handled += usize::from(on_event(ev.key, r));
        }
        Ok(handled)
    }

    pub(crate) fn notifier(&self) -> Notify {
        let poller = self.poller.clone();
        Arc::new(move || {
            let _ = poller.notify();
        })
    }
}
