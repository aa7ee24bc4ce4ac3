//! `poll` inside a task: wait on the reactor for any of several fds.
//!
//! One fd waited on for one direction is registered directly. Anything else (several
//! fds, or one fd for both directions) is gathered into a private epoll instance,
//! level-triggered, which is itself readable exactly when one of its fds is ready: the
//! task waits on that one descriptor. After every wake-up the real `poll` is run with a
//! zero timeout to fill in `revents`, so the result is the kernel's, never a guess.

use std::time::{Duration, Instant};

use copas_net::Interest;
use libc::{c_int, pollfd};

use crate::block;
use crate::fdtab;
use crate::sys::{self, set_errno};
use crate::wait::{self, Failure};

const READS: libc::c_short =
    libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM | libc::POLLRDBAND | libc::POLLRDHUP;
const WRITES: libc::c_short = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND;

/// A private epoll instance, closed on drop.
struct Epoll(c_int);

impl Drop for Epoll {
    fn drop(&mut self) {
        let slot = fdtab::existing_slot(self.0);
        if let Some(slot) = slot {
            slot.close_begin();
        }
        wait::forget_local(self.0);
        sys::close_quietly(self.0);
        if let Some(slot) = slot {
            slot.close_end();
        }
    }
}

/// Polls `fds` for up to `timeout_ms` (negative: no limit) without blocking the thread.
pub(crate) fn poll(fds: &mut [pollfd], timeout_ms: c_int) -> c_int {
    let ready = sys::poll_now(fds);
    if ready != 0 {
        return ready;
    }
    let own = u64::try_from(timeout_ms)
        .ok()
        .and_then(|ms| block::deadline(Some(Duration::from_millis(ms))));
    let live: Vec<usize> = (0..fds.len()).filter(|&i| fds[i].fd >= 0).collect();
    if live.is_empty() {
        return sleep_instead(own);
    }
    let mut epoll: Option<Epoll> = None;
    let single = match live[..] {
        [i] => match (fds[i].events & READS != 0, fds[i].events & WRITES != 0) {
            (true, false) => Some((fds[i].fd, Interest::Read)),
            (false, true) => Some((fds[i].fd, Interest::Write)),
            _ => None,
        },
        _ => None,
    };
    let mut target = single;
    loop {
        let (fd, interest) = match target {
            Some(t) => t,
            None => match gather(fds, &live) {
                Ok(ep) => {
                    let t = (ep.0, Interest::Read);
                    epoll = Some(ep);
                    target = Some(t);
                    t
                }
                Err(e) => {
                    set_errno(e);
                    return -1;
                }
            },
        };
        let Some(slot) = fdtab::slot(fd) else {
            return sleep_instead(own);
        };
        match wait::wait(fd, slot, slot.generation(), interest, own) {
            Ok(()) | Err(Failure::Closed) => {}
            // One fd that cannot be registered alone (copas itself watches it, say):
            // go through an epoll instance of our own instead.
            Err(Failure::Os(_)) if epoll.is_none() => {
                target = None;
                continue;
            }
            Err(Failure::TimedOut) if own.is_some_and(|d| Instant::now() >= d) => return 0,
            Err(f) => {
                set_errno(block::failure_errno(f, own, 0));
                return -1;
            }
        }
        let ready = sys::poll_now(fds);
        if ready != 0 {
            return ready;
        }
        if own.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
    }
}

/// An epoll instance watching every live fd of `fds` for its events.
fn gather(fds: &[pollfd], live: &[usize]) -> Result<Epoll, c_int> {
    let ep = Epoll(sys::epoll_create()?);
    for &i in live {
        // poll's and epoll's event bits are the same on Linux. An fd epoll refuses (a
        // regular file) is always ready, which the zero-timeout poll has reported.
        let _ = sys::epoll_add(ep.0, fds[i].fd, fds[i].events as u16 as u32);
    }
    Ok(ep)
}

/// `poll` with no fds: a sleep.
fn sleep_instead(own: Option<Instant>) -> c_int {
    let r = match own {
        Some(d) => copas_core::sleep_until(d),
        None => copas_core::sleep(Duration::MAX),
    };
    match r {
        Ok(()) => 0,
        Err(e) if copas_core::is_cancelled(&e) => {
            set_errno(libc::ECANCELED);
            -1
        }
        Err(_) => {
            set_errno(libc::ETIMEDOUT);
            -1
        }
    }
}
