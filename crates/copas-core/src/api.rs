//! The free functions that act on the current thread's runtime (Copas's module-level
//! API): yielding, parking, running the loop, exiting, cancelling.
//!
//! Invariant: each is a thin front for the runtime's own methods; none holds state.

use std::io;
use std::time::{Duration, Instant};

use crate::context;
use crate::runtime::Runtime;
use crate::suspend::{self, gone};
use crate::task::Task;
use crate::wait::WaitOn;

/// Counts one operation that completed without suspending, and yields once the task's
/// budget is spent, so a task that always finds its data ready cannot starve the others.
///
/// The operation itself has succeeded, so this never fails: a cancellation or an expired
/// [`with_timeout`](crate::with_timeout) scope shows at the task's next real wait. (A
/// cancelled task that already ignored its cancellation error is unwound here.)
#[inline]
pub fn cooperate() {
    suspend::cooperate();
}

/// Lets every other runnable task run once before the caller goes on (Copas `pause()`
/// with no delay).
///
/// # Errors
/// Fails if the task is cancelled, or during a panic. Outside a task it runs one step of
/// the loop.
pub fn yield_now() -> io::Result<()> {
    suspend::yield_now()
}

/// Blocks the current task until [`Task::unpark`] is called for it (Copas
/// `pauseforever` / `wakeup`). If an unpark came before, returns at once. A parked task
/// does not keep [`run`] going.
///
/// # Errors
/// Fails if the task is cancelled or during a panic; [`io::ErrorKind::Unsupported`]
/// outside a task.
pub fn park() -> io::Result<()> {
    park_inner(None)
}

/// As [`park`], but returns `TimedOut` once `dur` has passed.
///
/// # Errors
/// As [`park`], plus [`io::ErrorKind::TimedOut`].
pub fn park_timeout(dur: Duration) -> io::Result<()> {
    park_inner(Instant::now().checked_add(dur))
}

fn park_inner(deadline: Option<Instant>) -> io::Result<()> {
    let Some(cell) = context::with_current(|cell, _| cell.clone()) else {
        Runtime::try_current().ok_or_else(gone)?;
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copas: park outside a task",
        ));
    };
    loop {
        if cell.token.replace(false) {
            return Ok(());
        }
        cell.parked.set(true);
        let r = suspend::suspend(WaitOn::Park, deadline);
        cell.parked.set(false);
        if cell.token.replace(false) {
            return Ok(());
        }
        r?;
    }
}

/// The task running now.
///
/// # Panics
/// Panics outside a task; see [`try_current`].
#[track_caller]
pub fn current() -> Task {
    match try_current() {
        Some(t) => t,
        None => panic!("copas: current() called outside a task"),
    }
}

/// The task running now, or `None` outside any task.
pub fn try_current() -> Option<Task> {
    context::with_current(|cell, shared| Task {
        id: cell.id,
        name: cell.name.clone(),
        remote: shared.remote.clone(),
    })
}

/// Runs the current thread's runtime until there is nothing left to do (Copas `loop`); see
/// [`Runtime::run`].
///
/// # Errors
/// As [`Runtime::run`].
pub fn run() -> io::Result<()> {
    Runtime::current().run()
}

/// Whether the current thread's runtime has nothing left to do (Copas `finished`).
pub fn is_finished() -> bool {
    Runtime::current().is_finished()
}

/// Asks the loop to end (Copas `exit`): wakes every task in [`wait_for_exit`] and tells
/// servers to stop accepting; [`run`] returns once the remaining work is done. From
/// another thread, use [`Handle::exit`](crate::Handle::exit).
pub fn exit() {
    Runtime::current().shared().exit();
}

/// Whether [`exit`] was called during this [`run`] (Copas `exiting`).
pub fn is_exiting() -> bool {
    Runtime::current().shared().is_exiting()
}

/// Blocks the current task until [`exit`] is called, or the loop runs out of work and
/// exits by itself (Copas `waitforexit`). Waiting here does not keep the loop going.
///
/// # Errors
/// Fails if the task is cancelled or during a panic; `Unsupported` outside a task.
pub fn wait_for_exit() -> io::Result<()> {
    let rt = Runtime::try_current().ok_or_else(gone)?;
    let Some(cell) = context::with_current(|cell, _| cell.clone()) else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copas: wait_for_exit outside a task",
        ));
    };
    while !rt.shared().is_exiting() {
        cell.exit_waiter.set(true);
        let r = suspend::suspend_on(&rt, WaitOn::Exit, None);
        cell.exit_waiter.set(false);
        r?;
    }
    Ok(())
}

/// Registers the current task to be woken (once) by [`exit`], without suspending it; it
/// then suspends on something else (a server waiting for connections does this).
#[doc(hidden)]
pub fn wake_on_exit() {
    context::with_current(|cell, _| cell.exit_waiter.set(true));
}

/// Shuts down gracefully: [`exit`] now — servers stop accepting and
/// [`wait_for_exit`] callers wake — then lets running tasks finish and buffered output
/// drain for up to `grace`, and after that cancels every task that is left
/// ([`cancel_all`]). [`run`] returns as soon as nothing is left, which may be well
/// before `grace` has passed; the grace period itself does not keep the loop alive.
///
/// Output still buffered by streams dropped when their tasks are cancelled keeps being
/// delivered for up to the streams' write timeout (or linger time), so no accepted byte
/// is dropped silently.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let h = copas_core::spawn(|| copas_core::sleep(Duration::from_secs(3600)));
/// copas_core::spawn(|| copas_core::shutdown(Duration::from_millis(10)));
/// copas_core::run().unwrap(); // returns after about 10 ms, not an hour
/// assert!(copas_core::is_cancelled(&h.join().unwrap().unwrap_err()));
/// ```
pub fn shutdown(grace: Duration) {
    let rt = Runtime::current();
    let shared = rt.shared();
    shared.exit();
    shared
        .shutdown_deadline
        .set(Instant::now().checked_add(grace));
    if grace.is_zero() {
        shared.cancel_all(true);
    }
}

/// Cancels every task of the current thread's runtime (Copas `cancelall`): see
/// [`JoinHandle::cancel`](crate::JoinHandle::cancel) for what that does to a task; also
/// drops every [`Timer`](crate::Timer)'s pending firing and calls [`exit`]. A later
/// [`run`] works as usual.
pub fn cancel_all() {
    let rt = Runtime::current();
    rt.shared().cancel_all(false);
    rt.shared().exit();
}
