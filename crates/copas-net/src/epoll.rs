//! Linux's epoll used directly for the hot path of the reactor.
//!
//! `polling` stays the portable backend and the cross-thread notifier, but on Linux its
//! `wait` costs five system calls (it re-arms a timerfd and its notifier every time:
//! `timerfd_settime`, two `epoll_ctl`, `epoll_wait`, a `read`), and its events do not
//! carry `EPOLLRDHUP`, which copas needs to skip the read that would only return
//! `EAGAIN`. Here one `epoll_wait` per loop step does the job; `polling`'s own epoll
//! descriptor is registered in ours so that its notifier still wakes the loop.
//!
//! Invariant: every descriptor added here is deleted by `Source`'s drop before it closes
//! (the registration is made and removed through [`crate::source`]).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Interest of every socket: edge-triggered reads, writes and the peer's half-close.
pub(crate) const SOCKET_INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// What an event says about a descriptor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    pub(crate) key: u64,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer shut down its side, or the connection failed: reads must go on until they
    /// return 0 or the error.
    pub(crate) read_closed: bool,
}

pub(crate) struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
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

    pub(crate) fn add(&self, fd: RawFd, key: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, interest)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events (`None`: no timeout). The timeout is rounded up to whole
    /// milliseconds, so the loop never wakes before a deadline.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<&[libc::epoll_event]> {
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
pub(crate) fn readiness(ev: &libc::epoll_event) -> Readiness {
    let flags = ev.events as libc::c_int;
    let err = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
    Readiness {
        key: ev.u64,
        readable: err || flags & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP) != 0,
        writable: err || flags & libc::EPOLLOUT != 0,
        read_closed: err || flags & libc::EPOLLRDHUP != 0,
    }
}
