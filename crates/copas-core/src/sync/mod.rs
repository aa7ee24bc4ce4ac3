//! Synchronisation between the tasks of one runtime (Copas `lock`, `semaphore`, `queue`),
//! one file per primitive.
//!
//! All primitives are strictly FIFO: whoever waits first is served first, and a release
//! hands the resource directly to the waiter at the head of the line, so a task arriving
//! later cannot overtake it. A zero timeout never queues the caller. Waits fail with a
//! [`SyncError`] when they time out, when the primitive is closed, or when the waiting
//! task is cancelled.
//!
//! These primitives are `!Send`: share them between tasks with `Rc`. The exception is
//! [`channel`], whose ends are `Send` and work between threads and tasks in any mix.

mod channel;
mod mutex;
mod queue;
mod semaphore;

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

pub use channel::{
    channel, Receiver, RecvError, RecvTimeoutError, SendError, Sender, TryRecvError, TrySendError,
};

use crate::wait::WaitOn;

pub use mutex::{Mutex, MutexGuard};
pub use queue::Queue;
pub use semaphore::{Semaphore, SemaphorePermit};

/// Why a synchronisation call did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncError {
    /// The timeout passed first.
    TimedOut,
    /// The primitive was closed.
    Closed,
    /// A `try_` call found the resource taken.
    WouldBlock,
    /// The task tried to lock a mutex it already holds.
    Deadlock,
    /// The request can never be met (more permits than the semaphore's maximum, or
    /// adding permits past it).
    TooMany,
    /// The waiting task was cancelled.
    Cancelled,
    /// Blocking was attempted while the thread is panicking, or outside a task where the
    /// loop cannot be driven.
    CannotBlock,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncError::TimedOut => "timed out",
            SyncError::Closed => "closed",
            SyncError::WouldBlock => "resource taken",
            SyncError::Deadlock => "the task already holds this lock",
            SyncError::TooMany => "more permits than the semaphore's maximum",
            SyncError::Cancelled => "task cancelled",
            SyncError::CannotBlock => "cannot block here",
        })
    }
}

impl std::error::Error for SyncError {}

impl From<SyncError> for io::Error {
    fn from(e: SyncError) -> io::Error {
        let kind = match e {
            SyncError::TimedOut => io::ErrorKind::TimedOut,
            SyncError::Closed => io::ErrorKind::BrokenPipe,
            SyncError::WouldBlock => io::ErrorKind::WouldBlock,
            SyncError::Deadlock => io::ErrorKind::Deadlock,
            SyncError::TooMany => io::ErrorKind::InvalidInput,
            SyncError::Cancelled => return crate::Cancelled.into(),
            SyncError::CannotBlock => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

/// Turns the result of a suspension into a `SyncError`.
pub(crate) fn wait(on: WaitOn, deadline: Option<Instant>) -> Result<(), SyncError> {
    crate::suspend::suspend(on, deadline).map_err(|e| {
        if e.kind() == io::ErrorKind::TimedOut {
            SyncError::TimedOut
        } else if crate::is_cancelled(&e) {
            SyncError::Cancelled
        } else {
            SyncError::CannotBlock
        }
    })
}

pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}
