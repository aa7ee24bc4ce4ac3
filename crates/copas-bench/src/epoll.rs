//! A minimal, safe wrapper over Linux `epoll`, `timerfd` and raw `read`/`write`, shared by
//! the lower-bound servers and the load generator. With `serve_may` (which spawns may
//! coroutines), this is the only module of copas-bench with `unsafe`.
//!
//! Invariant: an [`Epoll`] owns its descriptor (an `OwnedFd`), and every descriptor passed
//! in is borrowed for the duration of the call only; the kernel drops a closed descriptor
//! from the interest list by itself, so callers may close registered sockets freely.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readable.
pub(crate) const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up (always reported by the kernel).
pub(crate) const ERR_HUP: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// One readiness event: the token given at registration and the event bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub(crate) token: u64,
    pub(crate) events: u32,
}

/// An epoll instance (level-triggered registrations).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Epoll {
    /// A new epoll instance whose `wait` reports at most `capacity` events at a time.
    pub(crate) fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a fresh
        // descriptor that nothing else owns.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are valid for the call (owned / borrowed); `ev` is a
        // valid epoll_event that the kernel only reads.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) })?;
        Ok(())
    }

    /// Registers `fd` for `events` under `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes the events `fd` is registered for.
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Waits up to `timeout_ms` (-1: forever); returns how many events arrived, which
    /// [`event`](Epoll::event) then reads.
    pub(crate) fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        let cap = libc::c_int::try_from(self.buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `buf` has room for `cap` events and the kernel writes at most that many.
        let n = unsafe {
            libc::epoll_wait(self.fd.as_raw_fd(), self.buf.as_mut_ptr(), cap, timeout_ms)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    /// The `i`-th event of the last [`wait`](Epoll::wait).
    pub(crate) fn event(&self, i: usize) -> Ready {
        let e = self.buf[i];
        Ready {
            token: e.u64,
            events: e.events,
        }
    }
}

/// One `read(2)` on `fd`; 0 is end of stream.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid writable memory of `buf.len()` bytes for the whole call; a
    // stale or closed `fd` only makes the call fail with EBADF.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `write(2)` on `fd`.
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid readable memory of `buf.len()` bytes for the whole call; a
    // stale or closed `fd` only makes the call fail with EBADF.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The kernel's clock tick (for `/proc/PID/stat` times).
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A monotonic `timerfd`: readable once the relative time given to [`TimerFd::set`] has
/// passed. The open-loop load generator sleeps on it (inside its epoll set) to send at
/// sub-millisecond scheduled times, which `epoll_wait`'s millisecond timeout cannot.
#[derive(Debug)]
pub(crate) struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    /// A new, disarmed, non-blocking timer.
    pub(crate) fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a fresh
        // descriptor that nothing else owns.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(TimerFd { fd })
    }

    /// Arms the timer to fire once after `after` (at least 1 ns later).
    pub(crate) fn set(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: `fd` is a valid timerfd; `spec` is a valid itimerspec the kernel only
        // reads; the old-value pointer may be null.
        cvt(unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
        Ok(())
    }

    /// Consumes a pending expiry, if any.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        // Nothing to do on EAGAIN (not expired) or any other error: the next `set`
        // re-arms the timer either way.
        let _ = read(self.fd.as_raw_fd(), &mut buf);
    }
}

impl AsFd for TimerFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Sets this thread's timer slack to 1 ns (default 50 µs), so that timed waits of the
/// open-loop load generator wake on time.
pub(crate) fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and no pointers; it only
    // changes the calling thread's timer slack. A failure leaves the default slack.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}
