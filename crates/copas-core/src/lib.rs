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
//! threads, so they may hold `Rc`s and `RefCell`s; the runtime's types are `!Send`. What
//! crosses threads: [`Handle`] ([`Runtime::handle`]: spawn on that runtime, make it exit),
//! [`RuntimeThread`] ([`Runtime::spawn_thread`]), [`sync::channel`], [`unblock`] (a pool of
//! workers for blocking calls), [`block_on`] (whose `Waker` is `Send + Sync`) and
//! [`Task::unpark`].
//!
//! # Cancellation, deadlocks, lost errors
//! [`JoinHandle::cancel`] makes the task's next blocking call fail with [`Cancelled`];
//! if the task suspends again after that, its stack is unwound (destructors run, `join`
//! reports [`JoinError::Cancelled`]), so a task that ignores the error cannot spin.
//! [`run`] returns an [`io::ErrorKind::Deadlock`](std::io::ErrorKind::Deadlock) error
//! naming the tasks when it ends with tasks that nothing can wake (see [`Runtime::run`]).
//! Panics, `Err`s of detached tasks, deadlocked tasks and tasks that never ran are
//! reported to the error handler ([`TaskPanic`], [`Problem`]).
//!
//! # Diagnostics
//! A task that runs over 100 ms without suspending blocks every other task; it is reported
//! ([`Problem::Blocked`], [`Runtime::set_block_warning`], `COPAS_BLOCK_WARNING=off`).
//! [`Runtime::dump`] (or [`Handle::dump`] from another thread, or [`dump_on_sigusr1`])
//! lists every task with what it waits on and how much stack it used; [`Stats`] has the
//! stack pool's deepest use. Feature `tracing` adds spans per task and events.
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

mod api;
mod context;
mod diag;
mod driver;
mod embed;
mod error;
mod id;
mod join;
mod overflow;
mod remote;
mod report;
mod run_queue;
mod runtime;
mod signal;
mod slot;
mod stack;
mod step;
mod suspend;
pub mod sync;
mod task;
mod time;
mod timer_queue;
mod wait;
mod watchdog;

pub use api::{
    cancel_all, cooperate, current, exit, is_exiting, is_finished, park, park_timeout, run,
    shutdown, try_current, wait_for_exit, wake_on_exit, yield_now,
};
pub use diag::{FdDescriber, DUMP_TIMEOUT};
pub use driver::{Driver, Notify};
pub use embed::{
    block_on, resolve, set_max_unblock_threads, unblock, RemoteJoinHandle, RuntimeThread,
    DEFAULT_MAX_UNBLOCK_THREADS,
};
pub use error::{is_cancelled, Cancelled};
pub use id::TaskId;
pub use join::JoinError;
pub use remote::Handle;
pub use report::{ErrorHandler, Problem, TaskPanic};
pub use runtime::{Runtime, Stats};
pub use signal::dump_on_sigusr1;
pub use stack::DEFAULT_STACK_SIZE;
pub use suspend::with_timeout;
pub use task::{spawn, Builder, JoinHandle, Task};
pub use time::{sleep, sleep_until, Timer};
pub use wait::WaitOn;
pub use watchdog::DEFAULT_BLOCK_WARNING;

/// Low-level hooks for I/O drivers (copas-net) and embedders: suspend the current task
/// with a deadline and a wait reason, wake tasks by id, keep the loop alive for work
/// another thread will finish. Not needed by applications.
pub mod hooks {
    use std::io;
    use std::marker::PhantomData;
    use std::rc::Rc;
    use std::time::Instant;

    use crate::{Runtime, TaskId, WaitOn};

    /// The id of the task running now; `None` outside a task.
    #[inline]
    pub fn current_task_id() -> Option<TaskId> {
        crate::context::with_current(|cell, _| cell.id)
    }

    /// The id under which the caller waits: its task id, or a pseudo id for code running
    /// outside any task (which drives the loop while it waits).
    #[inline]
    pub fn waiter_id() -> TaskId {
        current_task_id().unwrap_or(TaskId::MAIN)
    }

    /// Suspends the caller until [`wake`] names it (`Ok`), `deadline` passes
    /// ([`io::ErrorKind::TimedOut`]) or its task is cancelled
    /// ([`is_cancelled`](crate::is_cancelled)). Wake-ups may be spurious: callers re-check
    /// their condition. The wait is recorded as [`WaitOn::Io`]; see [`suspend_for`].
    ///
    /// # Errors
    /// As above; also fails during a panic, and outside a task when the loop is already
    /// running or nothing could ever wake the caller.
    #[inline]
    pub fn suspend(deadline: Option<Instant>) -> io::Result<()> {
        crate::suspend::suspend(WaitOn::Io, deadline)
    }

    /// As [`suspend`], on the given runtime (the current thread's), which saves looking it
    /// up.
    ///
    /// # Errors
    /// As [`suspend`].
    #[inline]
    pub fn suspend_on(rt: &Runtime, deadline: Option<Instant>) -> io::Result<()> {
        crate::suspend::suspend_on(rt, WaitOn::Io, deadline)
    }

    /// As [`suspend_on`], recording `on` as what the task waits for (shown by deadlock
    /// reports and [`Runtime::wait_of`]).
    ///
    /// # Errors
    /// As [`suspend`].
    #[inline]
    pub fn suspend_for(rt: &Runtime, on: WaitOn, deadline: Option<Instant>) -> io::Result<()> {
        crate::suspend::suspend_on(rt, on, deadline)
    }

    /// Installs the words dumps use for a descriptor a task waits on
    /// ([`WaitOn::Fd`]); copas-net installs one that names the peer.
    pub fn set_fd_describer(rt: &Runtime, f: crate::FdDescriber) {
        rt.shared().fd_describer.set(Some(f));
    }

    /// Makes the task `id` runnable (if it is suspended); stale ids are ignored.
    #[inline]
    pub fn wake(rt: &Runtime, id: TaskId) {
        rt.shared().wake(id);
    }

    /// Keeps the current thread's loop from finishing while the guard lives: for a task
    /// waiting on something another thread will complete (and then wake it with
    /// [`Task::unpark`](crate::Task::unpark)). While it lives, an idle loop waits instead
    /// of returning from [`run`](crate::run).
    ///
    /// # Examples
    /// ```
    /// let task = copas_core::spawn(|| {
    ///     let _alive = copas_core::hooks::keep_alive();
    ///     let me = copas_core::current();
    ///     std::thread::spawn(move || {
    ///         me.unpark();
    ///     });
    ///     copas_core::park()
    /// });
    /// copas_core::run().unwrap();
    /// task.join().unwrap().unwrap();
    /// ```
    pub fn keep_alive() -> KeepAlive {
        let rt = Runtime::current();
        let shared = rt.shared();
        shared.keep_alive.set(shared.keep_alive.get() + 1);
        KeepAlive {
            runtime: rt,
            _not_send: PhantomData,
        }
    }

    /// See [`keep_alive`].
    #[must_use = "the loop may finish as soon as the guard is dropped"]
    #[derive(Debug)]
    pub struct KeepAlive {
        runtime: Runtime,
        _not_send: PhantomData<Rc<()>>,
    }

    impl Drop for KeepAlive {
        fn drop(&mut self) {
            let shared = self.runtime.shared();
            shared.keep_alive.set(shared.keep_alive.get() - 1);
        }
    }
}
