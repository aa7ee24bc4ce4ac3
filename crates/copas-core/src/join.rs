//! A task's outcome: [`JoinError`], and the state a task and its [`JoinHandle`] share.
//!
//! Invariant: `result` is written once, by the task's root when it ends; `waiter` names
//! the one task (or the main pseudo-task) suspended in `join`, if any; `detached` is set
//! when the handle is dropped, after which nobody can read `result`.
//!
//! [`JoinHandle`]: crate::JoinHandle

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;

use crate::error::payload_str;
use crate::id::TaskId;

/// Why [`JoinHandle::join`](crate::JoinHandle::join) has no value to give.
pub enum JoinError {
    /// The task panicked; this is the panic's payload.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The task was cancelled before it could finish, or the runtime shut down.
    Cancelled,
}

impl JoinError {
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// The panic message, when the task panicked with a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(p) => payload_str(p.as_ref()),
            JoinError::Cancelled => None,
        }
    }

    /// Resumes the task's panic on the current thread (as `std::panic::resume_unwind`).
    ///
    /// # Panics
    /// Always panics: with the task's payload, or with a message if it was cancelled.
    #[track_caller]
    pub fn into_panic(self) -> ! {
        match self {
            JoinError::Panicked(p) => std::panic::resume_unwind(p),
            JoinError::Cancelled => panic!("copas: joined task was cancelled"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message().unwrap_or("<non-string payload>"))
                .finish(),
            JoinError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
            JoinError::Cancelled => f.write_str("task cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        match e {
            JoinError::Cancelled => crate::Cancelled.into(),
            other => io::Error::other(other.to_string()),
        }
    }
}

pub(crate) struct JoinState<T> {
    pub(crate) result: RefCell<Option<Result<T, JoinError>>>,
    pub(crate) waiter: Cell<Option<TaskId>>,
    pub(crate) detached: Cell<bool>,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> JoinState<T> {
        JoinState {
            result: RefCell::new(None),
            waiter: Cell::new(None),
            detached: Cell::new(false),
        }
    }
}
