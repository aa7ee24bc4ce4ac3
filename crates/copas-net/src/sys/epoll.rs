//! Linux's epoll used directly for the hot path of the reactor.
//!
//! `polling` stays the portable backend and the cross-thread notifier, but on Linux its
//! `wait` costs five system calls (it re-arms a timerfd and its notifier every time:
//! `timerfd_settime`, two `epoll_ctl`, `epoll_wait`, a `read`), and its events do not
//! carry `EPOLLRDHUP`, which copas needs to skip the read that would only return
//! `EAGAIN`. Here one `epoll_wait` per loop step does the job; `polling`'s own epoll
//! descriptor is registered in ours so that its notifier still wakes the loop.
//!
//! Invariant: every descriptor added here is deleted before it closes (the reactor's
//! `register`/`deregister`, called by `Source` and `Registration`, pair up).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use copas_core::Notify;
use polling::{Events, Poller};

use super::Readiness;

/// Interest of every descriptor: edge-triggered reads, writes and the peer's half-close.
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// The key of polling's own descriptor in our epoll set.
const NOTIFY_KEY: u64 = u64::MAX;

/// The Linux backend: our epoll set for the descriptors, with `polling`'s poller (whose
/// own epoll descriptor is a member of the set) kept for its cross-thread notifier.
pub(crate) struct Backend {
    epoll: RefCell<Epoll>,
    poller: Arc<Poller>,
    events: RefCell<Events>,
}

impl Backend {
    /// Events report readiness edges and the peer's half-close exactly.
    pub(crate) const PRECISE: bool = true;

    pub(crate) fn new() -> io::Result<Backend> {
        let poller = Poller::new()?;
        let epoll = Epoll::new()?;
        // polling's epoll descriptor becomes readable when its notifier fires.
        epoll.ctl(
            libc::EPOLL_CTL_ADD,
            poller.as_raw_fd(),
            NOTIFY_KEY,
            libc::EPOLLIN as u32,
        )?;
        Ok(Backend {
            epoll: RefCell::new(epoll),
            poller: Arc::new(poller),
            events: RefCell::new(Events::new()),
        })
    }

    pub(crate) fn add(&self, fd: RawFd, key: usize) -> io::Result<()> {
        self.epoll
            .borrow()
            .ctl(libc::EPOLL_CTL_ADD, fd, key as u64, INTEREST)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.epoll.borrow().ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Edge-triggered registrations need no re-arming.
    pub(crate) fn rearm(
        &self,
        _fd: RawFd,
        _key: usize,
        _read: bool,
        _write: bool,
    ) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn needs_rearm(&self) -> bool {
        false
    }

    pub(crate) fn wait(
        &self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(usize, Readiness) -> bool,
    ) -> io::Result<usize> {
        let mut handled = 0;
        let mut notified = false;
        {
            let mut ep = self.epoll.borrow_mut();
            for ev in ep.wait(timeout)? {
                if ev.u64 == NOTIFY_KEY {
                    notified = true;
                    continue;
                }
                handled += usize::from(on_event(ev.u64 as usize, readiness(ev)));
            }
        }
        if notified {
            // Let polling consume its notification and re-arm its notifier.
            let mut events = self.events.borrow_mut();
            events.clear();
            self.poller.wait(&mut events, Some(Duration::ZERO))?;
            handled += 1;
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

struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Vec::with_capacity(1024),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, key: u64, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: key,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events (`None`: no timeout). The timeout is rounded up to whole
    /// milliseconds, so the loop never wakes before a deadline.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<&[libc::epoll_event]> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        self.events.clear();
        let cap = libc::c_int::try_from(self.events.capacity()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the buffer has room for `cap` events; the kernel writes at most that many
        // and returns how many it wrote.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), cap, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_wait initialised the first `n` (<= capacity) entries.
        unsafe { self.events.set_len(n as usize) };
        Ok(&self.events)
    }
}

/// Decodes one event.
fn readiness(ev: &libc::epoll_event) -> Readiness {
    let flags = ev.events as libc::c_int;
    let err = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
    Readiness {
        readable: err || flags & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP) != 0,
        writable: err || flags & libc::EPOLLOUT != 0,
        read_closed: Some(err || flags & libc::EPOLLRDHUP != 0),
    }
}
