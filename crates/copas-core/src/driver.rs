//! The seam between the scheduler and I/O.
//!
//! copas-core knows nothing of sockets. When no task can run, the runtime asks its driver to
//! block the thread until some I/O may be ready or a timeout passes, and the driver names the
//! tasks to wake. copas-net's reactor implements [`Driver`] (on epoll on Linux, `polling`
//! elsewhere); without one, the
//! runtime sleeps until the next timer (see [`Runtime::set_driver`](crate::Runtime::set_driver)).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::id::TaskId;

/// A wake-up from another thread: interrupts a driver blocked in [`Driver::park`].
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// The runtime's view of an I/O readiness loop.
///
/// All methods are called on the runtime's thread, never while a task runs, and never
/// re-entrantly.
pub trait Driver: std::any::Any {
    /// Blocks until I/O may be ready, [`Driver::notifier`] is called, or `timeout` passes
    /// (`None`: no timeout; `Some(Duration::ZERO)`: just poll). Calls `wake` for each task
    /// whose I/O became ready. Returns how many events were handled.
    ///
    /// # Errors
    /// An error from the operating system's poller; the runtime passes it to the caller of
    /// `step`.
    fn park(&self, timeout: Option<Duration>, wake: &mut dyn FnMut(TaskId)) -> io::Result<usize>;

    /// Called before each `park` and after each pass over the runnable tasks: the place to
    /// flush output buffered by the tasks.
    fn before_park(&self) {}

    /// Whether anything registered with the driver can still wake a task (a task waiting
    /// for I/O, a server). When neither the driver nor the timers nor the run queue have
    /// work, the loop is finished.
    fn has_waiters(&self) -> bool;

    /// A thread-safe function that makes a concurrent or later `park` return soon.
    fn notifier(&self) -> Notify;

    /// How many I/O sources (sockets, listeners) are registered, for
    /// [`Stats::sockets`](crate::Stats::sockets).
    fn sources(&self) -> usize {
        0
    }
}

/// The driver used when none is installed: it only sleeps until the next timer, and wakes
/// early for cross-thread unparks.
#[derive(Debug)]
pub(crate) struct ThreadParker {
    thread: std::thread::Thread,
}

impl ThreadParker {
    pub(crate) fn new() -> Self {
        ThreadParker {
            thread: std::thread::current(),
        }
    }
}

impl Driver for ThreadParker {
    fn park(&self, timeout: Option<Duration>, _wake: &mut dyn FnMut(TaskId)) -> io::Result<usize> {
        match timeout {
            Some(d) if d.is_zero() => {}
            Some(d) => std::thread::park_timeout(d),
            None => std::thread::park(),
        }
        Ok(0)
    }

    fn has_waiters(&self) -> bool {
        false
    }

    fn notifier(&self) -> Notify {
        let thread = self.thread.clone();
        Arc::new(move || thread.unpark())
    }
}
