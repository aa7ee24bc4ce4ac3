//! The copas scheduler: tasks on their own stacks, a run queue, exact timers, wake-ups and
//! synchronisation primitives. It knows nothing of sockets; `copas-net` plugs its readiness
//! loop in through the [`Driver`] trait.
//!
//! Each task is a plain closure running on its own stack (a [`corosensei`] coroutine). A
//! blocking call — [`sleep`], [`JoinHandle::join`], [`park`], or a socket call from
//! copas-net — suspends the task and lets the loop run another; the loop resumes it when
//! it can go on. Nothing here is `async`.
//!
//! ```
//! use std::time::Duration;
//!
//! let a = copas_core::spawn(|| {
//!     copas_core::sleep(Duration::from_millis(2)).unwrap();
//!     "slow"
//! });
//! let b = copas_core::spawn(|| "fast");
//! copas_core::run().unwrap();
//! assert_eq!(a.join().unwrap(), "slow");
//! assert_eq!(b.join().unwrap(), "fast");
//! ```
//!
//! # Threads
//! There is one [`Runtime`] per thread, created on first use. Tasks never move between
//! threads, so they may hold `Rc`s and `RefCell`s; the runtime's types are `!Send`. The
//! only thread-safe handle is [`Task`], whose [`Task::unpark`] works from anywhere.
//!
//! # Panics
//! A panic inside a task is caught at the task's root, reported to the error handler
//! ([`Runtime::set_error_handler`], [`Builder::error_handler`]) and kept for
//! [`JoinHandle::join`]; the loop and the other tasks go on. A blocking call made while the
//! thread is panicking (from a destructor during unwinding) fails instead of suspending.
//!
//! When the thread ends, the runtime unwinds every unfinished task so its destructors run.
//! Build with `panic = "unwind"` (the default): tasks' stacks are unwound at shutdown.
#![warn(missing_docs, missing_debug_implementations)]

mod context;
mod driver;
mod embed;
mod error;
mod overflow;
mod remote_seam;
mod runtime;
mod stack;
pub mod sync;
mod task;
mod time;

pub use driver::{Driver, Notify};
pub use embed::{
    block_on, resolve, set_max_unblock_threads, unblock, RemoteJoinHandle, RuntimeThread,
    DEFAULT_MAX_UNBLOCK_THREADS,
};
pub use error::{is_cancelled, Cancelled};
pub use remote_seam::Handle;
pub use runtime::{
    cancel_all, cooperate, current, exit, is_exiting, is_finished, park, park_timeout, run,
    shutdown, try_current, wait_for_exit, wake_on_exit, with_timeout, yield_now, Runtime, Stats,
};
pub use stack::DEFAULT_STACK_SIZE;
pub use task::{spawn, Builder, ErrorHandler, JoinError, JoinHandle, Task, TaskId, TaskPanic};
pub use time::{sleep, sleep_until, Timer};

/// Low-level hooks for I/O drivers (copas-net): suspend the current task with a deadline
/// and wake tasks by id. Not needed by applications.
pub mod hooks {
    use std::io;
    use std::time::Instant;

    use crate::{Runtime, TaskId};

    pub use crate::remote_seam::{keep_alive, KeepAlive};

    /// The id of the task running now; `None` outside a task.
    pub fn current_task_id() -> Option<TaskId> {
        crate::runtime::current_task_id()
    }

    /// The id under which the caller waits: its task id, or a pseudo id for code running
    /// outside any task (which drives the loop while it waits).
    pub fn waiter_id() -> TaskId {
        crate::runtime::current_task_id().unwrap_or(TaskId::MAIN)
    }

    /// Suspends the caller until [`wake`] names it (`Ok`), `deadline` passes
    /// ([`io::ErrorKind::TimedOut`]) or its task is cancelled
    /// ([`is_cancelled`](crate::is_cancelled)). Wake-ups may be spurious: callers re-check
    /// their condition.
    ///
    /// # Errors
    /// As above; also fails during a panic, and outside a task when the loop is already
    /// running or nothing could ever wake the caller.
    pub fn suspend(deadline: Option<Instant>) -> io::Result<()> {
        crate::runtime::suspend(deadline)
    }

    /// As [`suspend`], on the given runtime (the current thread's), which saves looking it
    /// up.
    ///
    /// # Errors
    /// As [`suspend`].
    pub fn suspend_on(rt: &Runtime, deadline: Option<Instant>) -> io::Result<()> {
        crate::runtime::suspend_on(rt, deadline)
    }

    /// Makes the task `id` runnable (if it is suspended); stale ids are ignored.
    pub fn wake(rt: &Runtime, id: TaskId) {
        rt.shared().wake(id);
    }
}
