//! [`block_on`]: waits for a `Future` in a task (suspending it) or outside any task
//! (driving the loop), with a `Send + Sync` waker.
//!
//! Key invariant: a waiter never sleeps through a wake-up. Inside a task the waker
//! unparks the task, and an unpark that arrives before `park` makes `park` return at once.
//! Outside a task the waker sets `woken` before it interrupts the loop, and the waiter
//! clears `woken` before each poll and polls again, without waiting, if it is set after.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::{hooks, Handle, Runtime, Task, TaskId};

/// Runs `fut` to completion and returns its output: the bridge from copas to
/// runtime-agnostic async code (oneshot channels, `async-channel`, `flume`, the
/// `blocking` crate's tasks).
///
/// Inside a task it suspends the task until the future is done, and the loop serves the
/// other tasks meanwhile. Outside any task it drives the current thread's loop while it
/// waits, as [`JoinHandle::join`](crate::JoinHandle::join) does. The future need not be
/// `Send`; its [`Waker`] is `Send + Sync` and wakes the caller from any thread.
///
/// While the caller waits, the loop is kept alive ([`run`](crate::run) does not return):
/// the wake-up may come from another thread, which the loop cannot see.
///
/// # Errors
/// The cancellation error ([`is_cancelled`](crate::is_cancelled)) if the calling task is
/// cancelled, [`io::ErrorKind::TimedOut`] when a [`with_timeout`](crate::with_timeout)
/// scope ends; the future is dropped unfinished then. Also the errors of a blocking call
/// made while the thread panics, or outside a task while the loop is already running (in
/// a [`Timer`](crate::Timer) callback).
///
/// # Examples
/// ```
/// use std::sync::mpsc;
/// use std::task::Poll;
///
/// // A future completed by another thread.
/// let (tx, rx) = mpsc::channel::<std::task::Waker>();
/// let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
/// let d = done.clone();
/// let t = std::thread::spawn(move || {
///     let waker = rx.recv().unwrap();
///     d.store(true, std::sync::atomic::Ordering::SeqCst);
///     waker.wake();
/// });
/// let task = copas_core::spawn(move || {
///     let mut sent = false;
///     copas_core::block_on(std::future::poll_fn(|cx| {
///         if done.load(std::sync::atomic::Ordering::SeqCst) {
///             return Poll::Ready(42);
///         }
///         if !sent {
///             tx.send(cx.waker().clone()).unwrap();
///             sent = true;
///         }
///         Poll::Pending
///     }))
/// });
/// copas_core::run()?;
/// assert_eq!(task.join().unwrap()?, 42);
/// t.join().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
    let mut fut = pin!(fut);
    match crate::try_current() {
        Some(task) => in_task(task, fut.as_mut()),
        None => outside_task(fut.as_mut()),
    }
}

struct TaskWaker(Task);

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn in_task<F: Future + ?Sized>(
    task: Task,
    mut fut: std::pin::Pin<&mut F>,
) -> io::Result<F::Output> {
    let waker = Waker::from(Arc::new(TaskWaker(task)));
    let mut cx = Context::from_waker(&waker);
    // Taken at the first `Pending` only: a future that is ready at once costs nothing.
    let mut keep = None;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Ok(v);
        }
        keep.get_or_insert_with(hooks::keep_alive);
        crate::park()?;
    }
}

/// Wakes the code blocked outside any task (the MAIN pseudo-task) on one runtime.
struct MainWaker {
    woken: AtomicBool,
    handle: Handle,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.woken.swap(true, Ordering::AcqRel) {
            return; // a wake-up is on its way already
        }
        if self.handle.is_current() {
            // From a task of this runtime (or from the waiter itself, during its poll).
            if let Some(rt) = Runtime::try_current() {
                hooks::wake(&rt, TaskId::MAIN);
            }
        } else {
            // false: the runtime is gone, and with it the waiter.
            let _ = self.handle.wake_main();
        }
    }
}

fn outside_task<F: Future + ?Sized>(mut fut: std::pin::Pin<&mut F>) -> io::Result<F::Output> {
    let rt = Runtime::try_current().ok_or_else(crate::suspend::gone)?;
    let state = Arc::new(MainWaker {
        woken: AtomicBool::new(false),
        handle: rt.handle(),
    });
    let waker = Waker::from(state.clone());
    let mut cx = Context::from_waker(&waker);
    let mut keep = None;
    loop {
        state.woken.store(false, Ordering::Release);
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Ok(v);
        }
        if state.woken.load(Ordering::Acquire) {
            continue;
        }
        keep.get_or_insert_with(hooks::keep_alive);
        hooks::suspend_on(&rt, None)?;
    }
}
