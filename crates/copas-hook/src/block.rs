//! The decision every hook makes — run the real call, or make it cooperative — and the
//! loops that turn a blocking call into non-blocking tries and waits on the reactor.
//!
//! A call is made cooperative only when all of these hold: [`crate::install`] was
//! called, the caller is inside a copas task, the task is not in a
//! [`crate::passthrough`] scope, the thread is not panicking, and the fd is a socket the
//! user left blocking. Everything else runs the real function unchanged, except calls
//! outside tasks on a listener the hooks made non-blocking themselves (for a task's
//! `accept`), which are given their blocking behaviour back with the real `poll`.
//!
//! # Invariant
//! Every path that returns -1 has set errno to the value the caller must see; paths that
//! return a count leave errno alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use copas_net::Interest;
use libc::{c_int, ssize_t};

use crate::fdtab::{self, Facts, Slot};
use crate::sys::{self, errno, set_errno};
use crate::wait::{self, Failure};

/// Set once by [`crate::install`]; hooks pass everything through until then.
pub(crate) static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The tasks of this thread inside a `passthrough` scope (usually none).
    static PASSTHROUGH: Cell<usize> = const { Cell::new(0) };
    /// The task id (as u64) that entered each scope, innermost last.
    static PASSING: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether hooks are installed (a relaxed load: the flag only ever goes from false to true).
pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Whether a hooked call made now may suspend the caller: in a task, not in a
/// passthrough scope, not panicking.
pub(crate) fn in_task() -> bool {
    let Some(id) = copas_core::hooks::current_task_id() else {
        return false;
    };
    if std::thread::panicking() {
        return false;
    }
    if PASSTHROUGH.with(Cell::get) == 0 {
        return true;
    }
    !PASSING
        .try_with(|p| p.borrow().contains(&id.as_u64()))
        .unwrap_or(true)
}

/// Runs `f` with the hooks passing every call of the current task straight through.
pub(crate) fn passthrough<R>(f: impl FnOnce() -> R) -> R {
    struct Scope(Option<u64>);
    impl Drop for Scope {
        fn drop(&mut self) {
            if let Some(id) = self.0 {
                let _ = PASSING.try_with(|p| {
                    let mut p = p.borrow_mut();
                    if let Some(i) = p.iter().rposition(|&x| x == id) {
                        p.remove(i);
                    }
                });
                PASSTHROUGH.with(|n| n.set(n.get() - 1));
            }
        }
    }
    let id = copas_core::hooks::current_task_id().map(|t| t.as_u64());
    let _scope = Scope(id.filter(|&id| {
        PASSING
            .try_with(|p| p.borrow_mut().push(id))
            .map(|()| PASSTHROUGH.with(|n| n.set(n.get() + 1)))
            .is_ok()
    }));
    f()
}

/// How a hooked call on an fd runs.
pub(crate) enum Mode {
    /// The real function, unchanged.
    Real,
    /// Non-blocking tries and waits on the reactor (inside a task, on a socket the user
    /// left blocking).
    Cooperative(&'static Slot, Facts),
    /// Outside a task, on an fd the hooks made non-blocking: tries and real `poll`.
    Emulated(&'static Slot),
}

/// Decides how a data or connection call on `fd` runs.
pub(crate) fn mode(fd: c_int) -> Mode {
    if !installed() {
        return Mode::Real;
    }
    if in_task() {
        let Some(slot) = fdtab::slot(fd) else {
            return Mode::Real;
        };
        let facts = slot.facts(fd);
        return if facts.cooperative() {
            Mode::Cooperative(slot, facts)
        } else {
            Mode::Real
        };
    }
    match fdtab::existing_slot(fd).and_then(|s| Some((s, s.peek()?))) {
        Some((slot, facts)) if facts.own_nonblocking() && !facts.user_nonblocking() => {
            Mode::Emulated(slot)
        }
        _ => Mode::Real,
    }
}

/// The deadline of a call on a socket with this timeout.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The errno a failed wait gives the blocking caller.
pub(crate) fn failure_errno(f: Failure, own: Option<Instant>, timed_out: c_int) -> c_int {
    match f {
        Failure::Closed => libc::EBADF,
        // The socket's own timeout is `EAGAIN` (as the kernel reports SO_RCVTIMEO);
        // a `with_timeout` scope's is `ETIMEDOUT`, which std maps to `TimedOut`.
        Failure::TimedOut if own.is_some_and(|d| Instant::now() >= d) => timed_out,
        Failure::TimedOut => libc::ETIMEDOUT,
        Failure::Cancelled => libc::ECANCELED,
        Failure::Os(e) => e,
    }
}

fn would_block(e: c_int) -> bool {
    e == libc::EAGAIN || e == libc::EWOULDBLOCK
}

/// Runs a transfer of `len` bytes cooperatively. `attempt(done)` makes one non-blocking
/// try for the bytes from `done` on. With `all`, it goes on until `len` bytes have moved
/// (a blocking `send` on a stream socket, or `MSG_WAITALL`), returning a short count only
/// when an error, the end of the stream or the timeout stops it after some progress — as
/// the kernel does; without `all`, the first success is returned.
pub(crate) fn transfer(
    fd: c_int,
    slot: &Slot,
    facts: Facts,
    dir: Interest,
    len: usize,
    all: bool,
    mut attempt: impl FnMut(usize) -> ssize_t,
) -> ssize_t {
    let own = deadline(match dir {
        Interest::Read => slot.read_timeout(),
        Interest::Write => slot.write_timeout(),
    });
    let mut done = 0usize;
    loop {
        let r = attempt(done);
        if r > 0 {
            done += r.unsigned_abs();
            if !all || done >= len {
                return count(done);
            }
            continue;
        }
        if r == 0 {
            // End of stream (reads) or nothing to send.
            return count(done);
        }
        let e = errno();
        if !would_block(e) {
            if done > 0 {
                return count(done);
            }
            return -1;
        }
        if let Err(f) = wait::wait(fd, slot, facts.generation(), dir, own) {
            if done > 0 {
                return count(done);
            }
            set_errno(failure_errno(f, own, libc::EAGAIN));
            return -1;
        }
    }
}

fn count(n: usize) -> ssize_t {
    ssize_t::try_from(n).unwrap_or(ssize_t::MAX)
}

/// Runs a call that is not a transfer (`accept`) cooperatively: tries until it does not
/// report `EAGAIN`, waiting for `dir` in between.
pub(crate) fn retry(
    fd: c_int,
    slot: &Slot,
    facts: Facts,
    dir: Interest,
    mut attempt: impl FnMut() -> c_int,
) -> c_int {
    let own = deadline(match dir {
        Interest::Read => slot.read_timeout(),
        Interest::Write => slot.write_timeout(),
    });
    loop {
        let r = attempt();
        if r >= 0 || !would_block(errno()) {
            return r;
        }
        if let Err(f) = wait::wait(fd, slot, facts.generation(), dir, own) {
            set_errno(failure_errno(f, own, libc::EAGAIN));
            return -1;
        }
    }
}

/// Gives a call on an fd the hooks made non-blocking its blocking behaviour back, for a
/// caller outside any task: tries, and waits with the real `poll` (with the socket's
/// timeout) in between.
pub(crate) fn emulate<R: Copy + PartialOrd + Default>(
    fd: c_int,
    slot: &Slot,
    dir: Interest,
    mut attempt: impl FnMut() -> R,
) -> R {
    let own = deadline(match dir {
        Interest::Read => slot.read_timeout(),
        Interest::Write => slot.write_timeout(),
    });
    loop {
        let r = attempt();
        if r >= R::default() || !would_block(errno()) {
            return r;
        }
        let ms = match own {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    set_errno(libc::EAGAIN);
                    return r;
                }
                // Round up so the wait never ends before the deadline.
                c_int::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX)
            }
        };
        let events = match dir {
            Interest::Read => libc::POLLIN,
            Interest::Write => libc::POLLOUT,
        };
        if sys::poll_one(fd, events, ms) < 0 {
            // EINTR: a blocking call is interrupted by the signal too.
            return r;
        }
    }
}
