//! The cross-thread side of a runtime: wake-ups ([`Task::unpark`](crate::Task::unpark)),
//! exit requests and spawns sent from other threads, and the [`Handle`] that sends them.
//!
//! Invariants:
//! - `pending` is set after something is queued and cleared only by the runtime's thread
//!   when it takes the whole queue, so a queued item is never missed: the loop counts as
//!   alive while `pending` is set, and the notifier interrupts its wait.
//! - `open` turns false, under the queue's lock, when the runtime is dropped; after that
//!   nothing more is accepted, so an accepted spawn either runs or is reported lost.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::driver::Notify;
use crate::id::TaskId;

/// A closure sent to run as a task on another thread's runtime.
pub(crate) type RemoteSpawn = Box<dyn FnOnce() + Send + 'static>;

/// What other threads queued.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) unparks: Vec<TaskId>,
    pub(crate) spawns: Vec<RemoteSpawn>,
    pub(crate) exit: bool,
    /// Dump requests ([`Handle::dump`]): each gets the text.
    pub(crate) dumps: Vec<std::sync::mpsc::Sender<String>>,
    open: bool,
}

pub(crate) struct Remote {
    inbox: Mutex<Inbox>,
    pending: AtomicBool,
    notify: Mutex<Notify>,
    pub(crate) thread: ThreadId,
    /// What the loop publishes for the blocked-loop watchdog.
    pub(crate) watch: Arc<crate::watchdog::Watch>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Remote {
    pub(crate) fn new(notify: Notify) -> Remote {
        Remote {
            inbox: Mutex::new(Inbox {
                open: true,
                ..Inbox::default()
            }),
            pending: AtomicBool::new(false),
            notify: Mutex::new(notify),
            thread: std::thread::current().id(),
            watch: crate::watchdog::Watch::new(),
        }
    }

    /// Queues with `f` unless the runtime is gone; wakes the loop.
    fn send(&self, f: impl FnOnce(&mut Inbox)) -> bool {
        {
            let mut inbox = lock(&self.inbox);
            if !inbox.open {
                return false;
            }
            f(&mut inbox);
            self.pending.store(true, Ordering::Release);
        }
        let notify = lock(&self.notify).clone();
        notify();
        true
    }

    /// Queues a dump request; false if the runtime is gone.
    pub(crate) fn send_dump(&self, reply: std::sync::mpsc::Sender<String>) -> bool {
        self.send(|i| i.dumps.push(reply))
    }

    pub(crate) fn push(&self, id: TaskId) {
        self.send(|i| i.unparks.push(id));
    }

    pub(crate) fn set_notify(&self, notify: Notify) {
        *lock(&self.notify) = notify;
        // Something queued may have gone to the old notifier: look again.
        self.pending.store(true, Ordering::Release);
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Everything queued, if anything (on the runtime's thread).
    pub(crate) fn take(&self) -> Option<Inbox> {
        // A plain load first: this runs every step, and a read-modify-write would cost a
        // locked instruction each time although remote traffic is rare.
        if !self.pending.load(Ordering::Acquire) || !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        let mut inbox = lock(&self.inbox);
        Some(Inbox {
            unparks: std::mem::take(&mut inbox.unparks),
            spawns: std::mem::take(&mut inbox.spawns),
            exit: std::mem::take(&mut inbox.exit),
            dumps: std::mem::take(&mut inbox.dumps),
            open: inbox.open,
        })
    }

    /// Refuses everything from now on and gives back the spawns never run.
    pub(crate) fn close(&self) -> Vec<RemoteSpawn> {
        let mut inbox = lock(&self.inbox);
        inbox.open = false;
        inbox.dumps.clear();
        std::mem::take(&mut inbox.spawns)
    }
}

/// A thread-safe handle to one thread's runtime: ask it to exit, or hand it work, from
/// any thread. Get one with [`Runtime::handle`](crate::Runtime::handle).
///
/// # Examples
/// ```
/// let handle = copas_core::Runtime::current().handle();
/// assert!(handle.is_current());
/// let h = copas_core::spawn(|| copas_core::wait_for_exit());
/// std::thread::spawn(move || handle.exit());
/// copas_core::run().unwrap();
/// h.join().unwrap().unwrap();
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) remote: Arc<Remote>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("thread", &self.remote.thread)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Asks the runtime to exit (Copas `exit`), as [`exit`](crate::exit) does on its own
    /// thread: at its next step its [`wait_for_exit`](crate::wait_for_exit) callers wake
    /// and servers stop accepting. Wakes the loop if it is waiting. Does nothing if the
    /// runtime is gone.
    pub fn exit(&self) {
        self.remote.send(|i| i.exit = true);
    }

    /// Wakes the code blocked outside any task on that runtime's thread (the MAIN pseudo
    /// task: `block_on` or a channel call made there); false if the runtime is gone.
    /// Unlike a remote spawn, a wake-up that arrives after the thread stopped waiting is
    /// simply dropped: there is nothing left to report.
    pub(crate) fn wake_main(&self) -> bool {
        self.remote.send(|i| i.unparks.push(crate::TaskId::MAIN))
    }

    /// Whether this is the handle of the current thread's runtime.
    pub fn is_current(&self) -> bool {
        std::thread::current().id() == self.remote.thread
            && crate::runtime::with_existing(|shared| Arc::ptr_eq(&shared.remote, &self.remote))
                .unwrap_or(false)
    }

    /// Queues `f` to be spawned as a task by the runtime's loop at its next step. The
    /// runtime's `run` does not end while an accepted closure has not run.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] if the runtime is gone (its thread ended).
    #[doc(hidden)]
    pub fn spawn_boxed(&self, f: Box<dyn FnOnce() + Send + 'static>) -> io::Result<()> {
        let mut f = Some(f);
        if self.remote.send(|i| i.spawns.extend(f.take())) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "copas: cannot spawn on that runtime: its thread has ended",
            ))
        }
    }
}
