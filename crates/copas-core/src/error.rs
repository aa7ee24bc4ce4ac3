//! Errors that the scheduler itself produces.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::io;

/// The error of a blocking call made by a task that was cancelled
/// ([`JoinHandle::cancel`](crate::JoinHandle::cancel), [`cancel_all`](crate::cancel_all)).
///
/// Inside an [`io::Error`] it has kind [`io::ErrorKind::Other`]; test for it with
/// [`is_cancelled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task cancelled")
    }
}

impl Error for Cancelled {}

impl From<Cancelled> for io::Error {
    fn from(c: Cancelled) -> io::Error {
        io::Error::other(c)
    }
}

/// Whether `err` says that the calling task was cancelled.
///
/// # Examples
/// ```
/// let err: std::io::Error = copas_core::Cancelled.into();
/// assert!(copas_core::is_cancelled(&err));
/// ```
pub fn is_cancelled(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<Cancelled>())
}

/// The error of a blocking call made while the thread is unwinding from a panic: suspending
/// then would let other tasks run in the panicking state.
pub(crate) fn panicking() -> io::Error {
    io::Error::other("copas: cannot block while the thread is panicking")
}

/// The payload that unwinds a task's stack when the runtime shuts down. Caught at the
/// task's root; never reaches the panic hook (it is raised with `resume_unwind`).
pub(crate) struct Unwinding;

/// The text of a panic payload, when it is a string.
pub(crate) fn payload_str(p: &(dyn Any + Send)) -> Option<&str> {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
}
