//! What a suspended task waits on ([`WaitOn`]), for deadlock reports and diagnostics.
//!
//! Invariant: a task's wait record is written when it suspends and describes that
//! suspension until it is resumed; the record is a plain field write (no allocation for the
//! scheduler's and the sync primitives' own reasons). Depends only on `id`.

use std::fmt;
use std::time::Instant;

use crate::id::TaskId;

/// What a suspended task is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitOn {
    /// Nothing: the task is runnable or running.
    Nothing,
    /// [`sleep`](crate::sleep) or [`sleep_until`](crate::sleep_until), until the deadline.
    Sleep {
        /// When the sleep ends.
        until: Instant,
    },
    /// A [`sync::Mutex`](crate::sync::Mutex).
    Mutex,
    /// A [`sync::Semaphore`](crate::sync::Semaphore).
    Semaphore,
    /// A pop from a [`sync::Queue`](crate::sync::Queue): waiting for work, which may
    /// never come. Like [`Park`](WaitOn::Park), a legal idle (a Copas queue worker
    /// waits so): never reported as a deadlock.
    Queue,
    /// [`Queue::finish`](crate::sync::Queue::finish), waiting for the queue to drain.
    QueueDrain,
    /// [`JoinHandle::join`](crate::JoinHandle::join) on the task named.
    Join(TaskId),
    /// [`park`](crate::park), until [`Task::unpark`](crate::Task::unpark).
    Park,
    /// [`wait_for_exit`](crate::wait_for_exit).
    Exit,
    /// A readable socket; the text names it (a peer address or a description).
    Read(String),
    /// A writable socket or flushed output; the text names it.
    Write(String),
    /// Another thread's work ([`hooks::keep_alive`](crate::hooks::keep_alive) users).
    Unblock,
    /// A channel.
    Channel,
    /// A future or another computation that will complete it.
    Future,
    /// I/O or anything else a driver suspends on without saying what
    /// ([`hooks::suspend`](crate::hooks::suspend)).
    Io,
    /// Something else, named.
    Other(&'static str),
}

impl WaitOn {
    /// Whether waiting on this forever is a legal idle (nothing to do until someone
    /// sends work or an unpark) rather than a deadlock: [`Park`](WaitOn::Park),
    /// [`Exit`](WaitOn::Exit) and [`Queue`](WaitOn::Queue).
    pub fn is_idle(&self) -> bool {
        matches!(self, WaitOn::Park | WaitOn::Exit | WaitOn::Queue)
    }
}

impl fmt::Display for WaitOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitOn::Nothing => f.write_str("nothing"),
            WaitOn::Sleep { until } => {
                let left = until.saturating_duration_since(Instant::now());
                write!(f, "sleep ({left:?} left)")
            }
            WaitOn::Mutex => f.write_str("a mutex"),
            WaitOn::Semaphore => f.write_str("a semaphore"),
            WaitOn::Queue => f.write_str("a queue's next item"),
            WaitOn::QueueDrain => f.write_str("a queue to drain"),
            WaitOn::Join(id) => write!(f, "join of task {id}"),
            WaitOn::Park => f.write_str("park (an unpark)"),
            WaitOn::Exit => f.write_str("exit"),
            WaitOn::Read(what) => write!(f, "read from {what}"),
            WaitOn::Write(what) => write!(f, "write to {what}"),
            WaitOn::Unblock => f.write_str("another thread"),
            WaitOn::Channel => f.write_str("a channel"),
            WaitOn::Future => f.write_str("a future"),
            WaitOn::Io => f.write_str("I/O"),
            WaitOn::Other(what) => f.write_str(what),
        }
    }
}
