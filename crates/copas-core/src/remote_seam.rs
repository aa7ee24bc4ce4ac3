//! The cross-thread seam of a runtime: [`Handle`] (remote spawns and a remote `exit`) and
//! [`KeepAlive`] guards.
//!
//! Key invariants:
//! - A closure accepted by [`Handle::spawn_boxed`] is either spawned as a task by the
//!   runtime's next loop step, or dropped when the runtime shuts down; while it waits in
//!   the queue the runtime's loop is not finished (`pending` is set until the queue is
//!   drained).
//! - After the runtime has shut down (`closed`), no closure is accepted.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use crate::runtime::{Remote, Runtime, Shared};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Inbox {
    jobs: VecDeque<Job>,
    exit: bool,
    closed: bool,
}

/// The thread-safe half: what other threads hand to the runtime.
pub(crate) struct SeamShared {
    inbox: Mutex<Inbox>,
    /// Set when the inbox has something; cleared by the loop before draining it.
    pending: AtomicBool,
    remote: Arc<Remote>,
    thread: ThreadId,
}

/// The runtime's side: the shared inbox and the count of live [`KeepAlive`] guards.
pub(crate) struct SeamLocal {
    shared: Arc<SeamShared>,
    keep_alive: Cell<usize>,
}

impl SeamLocal {
    pub(crate) fn new(remote: Arc<Remote>) -> SeamLocal {
        SeamLocal {
            shared: Arc::new(SeamShared {
                inbox: Mutex::new(Inbox::default()),
                pending: AtomicBool::new(false),
                remote,
                thread: std::thread::current().id(),
            }),
            keep_alive: Cell::new(0),
        }
    }

    /// Whether the seam keeps the loop going: a queued remote spawn or exit, or a live
    /// keep-alive guard.
    pub(crate) fn alive(&self) -> bool {
        self.keep_alive.get() > 0 || self.shared.pending.load(Ordering::Acquire)
    }

    /// Spawns the queued closures as tasks and applies a remote exit. Returns whether
    /// there was anything.
    pub(crate) fn take(&self, rt: &Shared) -> bool {
        let s = &self.shared;
        if !s.pending.load(Ordering::Acquire) || !s.pending.swap(false, Ordering::Acquire) {
            return false;
        }
        let (jobs, exit) = {
            let mut inbox = s.inbox.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut inbox.jobs),
                std::mem::take(&mut inbox.exit),
            )
        };
        for job in jobs {
            // A failed spawn (no memory for a stack) drops the closure, which its
            // submitter sees as a cancelled task.
            drop(crate::Builder::new().spawn(job));
        }
        if exit {
            rt.exit();
        }
        true
    }

    /// The runtime is going away: refuse new closures and drop the queued ones.
    pub(crate) fn close(&self) {
        let jobs = {
            let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
            inbox.closed = true;
            std::mem::take(&mut inbox.jobs)
        };
        drop(jobs);
    }
}

/// A thread-safe handle to a runtime: spawn work on it and make it exit from any thread.
///
/// Get one with [`Runtime::handle`] or [`RuntimeThread::handle`](crate::RuntimeThread::handle).
/// It is `Send + Sync + Clone`, unlike [`Runtime`].
///
/// # Examples
/// ```
/// let rt = copas_core::Runtime::spawn_thread("worker")?;
/// let on_it = rt.handle().spawn(|| std::thread::current().name().map(str::to_owned));
/// assert_eq!(on_it.join().unwrap().as_deref(), Some("worker"));
/// rt.handle().exit();
/// rt.join()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<SeamShared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("thread", &self.shared.thread)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Copas `exit` on that runtime, from any thread: servers stop accepting,
    /// [`wait_for_exit`](crate::wait_for_exit) callers wake, and a loop run by
    /// [`RuntimeThread`](crate::RuntimeThread) ends once the remaining work is done. Wakes
    /// the loop if it is waiting.
    pub fn exit(&self) {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.exit = true;
        drop(inbox);
        self.notify();
    }

    /// Whether this is a handle to the current thread's runtime.
    pub fn is_current(&self) -> bool {
        std::thread::current().id() == self.shared.thread
            && Runtime::try_current()
                .is_some_and(|rt| Arc::ptr_eq(&rt.shared().seam.shared, &self.shared))
    }

    /// Queues `f` to be spawned as a task by the runtime's next loop step. While it is
    /// queued, the runtime's `run` does not end.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] when the runtime is gone (its thread exited).
    #[doc(hidden)]
    pub fn spawn_boxed(&self, f: Box<dyn FnOnce() + Send + 'static>) -> io::Result<()> {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox.closed {
            drop(inbox);
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "copas: the runtime of this handle is gone",
            ));
        }
        inbox.jobs.push_back(f);
        drop(inbox);
        self.notify();
        Ok(())
    }

    fn notify(&self) {
        self.shared.pending.store(true, Ordering::Release);
        self.shared.remote.notify();
    }
}

impl Runtime {
    /// A thread-safe [`Handle`] to this runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared().seam.shared.clone(),
        }
    }
}

/// While it lives, the current thread's runtime is not finished: [`run`](crate::run)
/// goes on and [`Runtime::step`] waits for a wake-up instead of returning at once. For
/// code that waits for a wake-up from another thread. `!Send`.
#[must_use = "the loop is kept alive only while the guard lives"]
pub struct KeepAlive {
    rt: Option<Runtime>,
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive").finish_non_exhaustive()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(rt) = &self.rt {
            let c = &rt.shared().seam.keep_alive;
            c.set(c.get().saturating_sub(1));
        }
    }
}

/// Keeps the current thread's runtime's loop from finishing while the guard lives.
pub fn keep_alive() -> KeepAlive {
    let rt = Runtime::try_current();
    if let Some(rt) = &rt {
        let c = &rt.shared().seam.keep_alive;
        c.set(c.get() + 1);
    }
    KeepAlive { rt }
}
