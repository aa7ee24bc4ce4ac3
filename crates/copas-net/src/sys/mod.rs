//! The operating-system backend of the reactor: the one place that chooses between
//! platforms. Linux gets epoll directly (`epoll`); every other Unix gets `polling`
//! (`poll`). Both export the same `Backend`, whose contract is:
//!
//! - `Backend::new()` makes the poller; `Backend::PRECISE` says whether its events tell
//!   exactly when a descriptor became ready and when its peer closed, so that a read
//!   known to find nothing may be skipped.
//! - `add(fd, key)` registers a descriptor for both directions (edge-triggered where the
//!   platform can, oneshot otherwise); `delete(fd)` removes it. The caller deletes every
//!   descriptor it added before the descriptor closes.
//! - `rearm(fd, key, read, write)` renews the interest of a oneshot registration before a
//!   task waits (a no-op for edge-triggered backends).
//! - `wait(timeout, on_event)` blocks for events and calls `on_event(key, readiness)` for
//!   each; it returns how many events `on_event` accepted, counting a cross-thread
//!   notification as one.
//! - `notifier()` returns a thread-safe function that interrupts `wait`.
//!
//! [`unix`] holds the few raw descriptor calls (flags, identity, a zero-timeout poll)
//! that are the same on every Unix.

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(target_os = "linux")]
pub(crate) use epoll::Backend;

#[cfg(not(target_os = "linux"))]
mod poll;
#[cfg(not(target_os = "linux"))]
pub(crate) use poll::Backend;

pub(crate) mod unix;

/// What one event says about a descriptor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// `Some(closed)` when the backend is precise: whether the peer shut down its side or
    /// the connection failed (reads must then go on until they return 0 or the error).
    /// `None` when the backend cannot tell.
    pub(crate) read_closed: Option<bool>,
}
