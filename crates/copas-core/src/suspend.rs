//! Suspension and wake-ups: how a blocking call parks its task, and how anything makes a
//! task runnable again.
//!
//! Invariants:
//! - A suspended task is resumed only after a wake-up (which may be spurious: callers
//!   re-check their condition); its wait timer is disarmed when it resumes.
//! - Cancellation: the first blocking call after [`JoinHandle::cancel`] (or the one it
//!   interrupts) fails with [`Cancelled`](crate::Cancelled); any suspension after that
//!   one — a blocking call, a yield, [`cooperate`](crate::cooperate) running out of budget
//!   — unwinds the task's stack instead, so a task that ignores the error cannot keep the
//!   loop busy. Unwinding runs destructors and makes `join` report `Cancelled`.
//! - While the thread is panicking, nothing suspends (blocking calls fail).
//!
//! [`JoinHandle::cancel`]: crate::JoinHandle::cancel

use std::io;
use std::panic;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::context::{self, Resume};
use crate::error::{self, Unwinding};
use crate::id::TaskId;
use crate::runtime::{Runtime, Shared};
use crate::slot::{flag, State, TaskCell};
use crate::timer_queue::TimerAction;
use crate::wait::WaitOn;

impl Shared {
    /// Makes a suspended task runnable. Waking a queued task does nothing; waking the
    /// running task queues it for the next pass (that is how `yield_now` works). Stale
    /// ids are ignored.
    pub(crate) fn wake(&self, id: TaskId) {
        if id.is_main() {
            self.main_woken.set(true);
            return;
        }
        if let Some(cell) = self.tasks.get(id) {
            // As `wake_cell`, but the looked-up count itself goes into the queue.
            match cell.state.get() {
                State::Queued | State::Done => {}
                State::Running | State::Suspended => {
                    cell.state.set(State::Queued);
                    self.run_queue.push_back(cell);
                }
            }
        }
    }

    #[inline]
    pub(crate) fn wake_cell(&self, cell: &Rc<TaskCell>) {
        match cell.state.get() {
            State::Queued | State::Done => {}
            State::Running | State::Suspended => {
                cell.state.set(State::Queued);
                self.run_queue.push_back(cell.clone());
            }
        }
    }

    pub(crate) fn unpark_local(&self, id: TaskId) -> bool {
        let Some(cell) = self.tasks.get(id) else {
            return false;
        };
        cell.token.set(true);
        let was_parked = cell.parked.get();
        if was_parked {
            self.wake_cell(&cell);
        }
        was_parked
    }

    pub(crate) fn cancel(&self, id: TaskId) -> bool {
        let Some(cell) = self.tasks.get(id) else {
            return false;
        };
        cell.raise(flag::CANCELLED);
        if cell.state.get() == State::Suspended {
            self.wake_cell(&cell);
        }
        true
    }

    /// Cancels every task and drops every `Timer` callback (Copas `cancelall`).
    /// With `spare_lingering`, tasks delivering dropped streams' output are left to finish
    /// (they end by their own deadline).
    pub(crate) fn cancel_all(&self, spare_lingering: bool) {
        let callbacks = self.timers.borrow_mut().remove_callbacks();
        drop(callbacks);
        for cell in self.tasks.all() {
            if spare_lingering && cell.lingering {
                continue;
            }
            cell.raise(flag::CANCELLED);
            if cell.state.get() == State::Suspended {
                self.wake_cell(&cell);
            }
        }
    }

    pub(crate) fn exit(&self) {
        self.exiting.set(true);
        for cell in self.tasks.all() {
            if cell.exit_waiter.replace(false) {
                self.wake_cell(&cell);
            }
        }
    }

    pub(crate) fn is_exiting(&self) -> bool {
        self.exiting.get()
    }
}

/// The error of a call that needs the runtime while the thread exits and tears it down.
pub(crate) fn gone() -> io::Error {
    io::Error::other("copas: the runtime is not available while the thread exits")
}

/// Suspends the current task until it is woken (`Ok`), its `deadline` passes
/// (`TimedOut`), or it is cancelled (an error for which `is_cancelled` holds). Outside a
/// task, drives the loop until the caller (the main pseudo-task) is woken.
pub(crate) fn suspend(wait: WaitOn, deadline: Option<Instant>) -> io::Result<()> {
    if let Some(r) = context::with_current(|cell, shared| wait_task(shared, cell, wait, deadline)) {
        return r;
    }
    // While the thread exits, destructors of unwound tasks may still try to block.
    let rt = Runtime::try_current().ok_or_else(gone)?;
    suspend_main_on(rt.shared(), deadline)
}

/// As [`suspend`], on the given runtime (the current thread's).
pub(crate) fn suspend_on(rt: &Runtime, wait: WaitOn, deadline: Option<Instant>) -> io::Result<()> {
    if let Some(r) = context::with_current(|cell, shared| wait_task(shared, cell, wait, deadline)) {
        return r;
    }
    suspend_main_on(rt.shared(), deadline)
}

/// The wait of [`JoinHandle::join`](crate::JoinHandle::join) for task `id`: names the
/// caller (its task, or MAIN outside a task) in `waiter`, then suspends as
/// [`suspend_on`] with no deadline, looking the running task up once for both.
pub(crate) fn suspend_join(
    rt: &Runtime,
    id: TaskId,
    waiter: &std::cell::Cell<Option<TaskId>>,
) -> io::Result<()> {
    if let Some(r) = context::with_current(|cell, shared| {
        waiter.set(Some(cell.id));
        wait_task(shared, cell, WaitOn::Join(id), None)
    }) {
        return r;
    }
    waiter.set(Some(TaskId::MAIN));
    suspend_main_on(rt.shared(), None)
}

fn suspend_main_on(shared: &Shared, deadline: Option<Instant>) -> io::Result<()> {
    if std::thread::panicking() {
        return Err(error::panicking());
    }
    let deadline = earliest(deadline, shared.main_scope_deadline.get());
    suspend_main(shared, deadline)
}

/// A wait of the running task `cell` on `wait`. With no deadline and no flag raised
/// (no cancellation, no unwinding, no timeout scope) it is [`suspend_task`] with no timer
/// to arm or disarm and one test of the flag word on each side of the switch; anything
/// else takes the general path, which checks in the same order.
#[inline(always)]
fn wait_task(
    shared: &Shared,
    cell: &Rc<TaskCell>,
    wait: WaitOn,
    deadline: Option<Instant>,
) -> io::Result<()> {
    const BEFORE: u8 = flag::CANCELLED | flag::CANCEL_SEEN | flag::UNWINDING | flag::SCOPE;
    if deadline.is_some()
        || cell.has(BEFORE)
        || matches!(wait, WaitOn::Nothing)
        || std::thread::panicking()
    {
        return suspend_task(shared, cell, wait, deadline, false);
    }
    cell.lower(flag::TIMED_OUT);
    cell.wait.set(wait);
    cell.since.set(shared.last_now.get());
    cell.waiting.set(true);
    let resumed = context::suspend();
    cell.waiting.set(false);
    let _ended = cell.wait.replace(WaitOn::Nothing);
    if resumed == Resume::Unwind {
        panic::resume_unwind(Box::new(Unwinding));
    }
    if cell.has(flag::CANCELLED | flag::TIMED_OUT) {
        return interrupted(cell);
    }
    Ok(())
}

/// Suspends the running task `cell`; with `requeue`, the task is put back in the run
/// queue first (a yield), once it is known that it will really suspend.
#[inline]
pub(crate) fn suspend_task(
    shared: &Shared,
    cell: &Rc<TaskCell>,
    wait: WaitOn,
    deadline: Option<Instant>,
    requeue: bool,
) -> io::Result<()> {
    if std::thread::panicking() {
        return Err(error::panicking());
    }
    if cell.has(flag::UNWINDING | flag::CANCEL_SEEN) {
        panic::resume_unwind(Box::new(Unwinding));
    }
    if cell.has(flag::CANCELLED) {
        return interrupted(cell);
    }
    let deadline = earliest(deadline, cell.scope_deadline());
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(io::ErrorKind::TimedOut.into());
    }
    cell.lower(flag::TIMED_OUT);
    if requeue {
        shared.wake_cell(cell);
    }
    let timer = deadline.map(|d| {
        shared.sleeping.set(shared.sleeping.get() + 1);
        shared.insert_timer(d, TimerAction::Wake(cell.id))
    });
    // A yield records nothing: the task is runnable.
    let waiting = !matches!(wait, WaitOn::Nothing);
    if waiting {
        cell.wait.set(wait);
        cell.since.set(shared.last_now.get());
        cell.waiting.set(true);
    }
    let resumed = context::suspend();
    #[cfg(feature = "tracing")]
    let mut slept = false; // diag: a sleep's deadline is no timeout
    if waiting {
        cell.waiting.set(false);
        let _ended = cell.wait.replace(WaitOn::Nothing);
        #[cfg(feature = "tracing")]
        {
            slept = matches!(_ended, WaitOn::Sleep { .. });
        }
    }
    if let Some(key) = timer {
        shared.sleeping.set(shared.sleeping.get() - 1);
        shared.remove_timer(key);
    }
    if resumed == Resume::Unwind {
        panic::resume_unwind(Box::new(Unwinding));
    }
    if cell.has(flag::CANCELLED | flag::TIMED_OUT) {
        #[cfg(feature = "tracing")]
        if !slept && !cell.has(flag::CANCELLED) {
            tracing::debug!("copas: a wait timed out"); // diag
        }
        return interrupted(cell);
    }
    Ok(())
}

/// Yields the running task, or (outside one) runs a step; see
/// [`yield_now`](crate::yield_now).
pub(crate) fn yield_now() -> io::Result<()> {
    if let Some(r) = context::with_current(yield_task) {
        return r;
    }
    let rt = Runtime::try_current().ok_or_else(gone)?;
    rt.shared().step(Some(Duration::ZERO)).map(drop)
}

/// A yield of the running task `cell`. With no flag raised (no cancellation, no
/// unwinding, no fired timer, no timeout scope) it is [`suspend_task`] with nothing to
/// check, arm or record: one test of the flag word before the switch and one after.
/// Anything else takes the general path, which checks in the same order.
#[inline(always)]
fn yield_task(cell: &Rc<TaskCell>, shared: &Shared) -> io::Result<()> {
    const BEFORE: u8 =
        flag::CANCELLED | flag::CANCEL_SEEN | flag::UNWINDING | flag::TIMED_OUT | flag::SCOPE;
    if cell.has(BEFORE) || std::thread::panicking() {
        return suspend_task(shared, cell, WaitOn::Nothing, None, true);
    }
    shared.wake_cell(cell);
    if context::suspend() == Resume::Unwind {
        panic::resume_unwind(Box::new(Unwinding));
    }
    if cell.has(flag::CANCELLED | flag::TIMED_OUT) {
        return interrupted(cell);
    }
    Ok(())
}

/// A suspension ends (or, cancelled, never starts) with an error: the cancellation
/// (first seen now) wins over a fired wait timer.
#[cold]
fn interrupted(cell: &TaskCell) -> io::Result<()> {
    if cell.has(flag::CANCELLED) {
        cell.raise(flag::CANCEL_SEEN);
        #[cfg(feature = "tracing")]
        tracing::debug!("copas: task cancelled"); // diag
        Err(crate::Cancelled.into())
    } else {
        Err(io::ErrorKind::TimedOut.into())
    }
}

/// The budget check behind [`cooperate`](crate::cooperate).
#[inline]
pub(crate) fn cooperate() {
    // The fast path is one thread-local decrement: this runs on every socket operation.
    if context::spend_budget() {
        cooperate_slow();
    }
}

/// The budget ran out: let the other runnable tasks run.
#[cold]
#[inline(never)]
fn cooperate_slow() {
    context::with_current(|cell, shared| {
        if std::thread::panicking() {
            return;
        }
        if cell.has(flag::UNWINDING | flag::CANCEL_SEEN) {
            panic::resume_unwind(Box::new(Unwinding));
        }
        shared.wake_cell(cell);
        if context::suspend() == Resume::Unwind {
            panic::resume_unwind(Box::new(Unwinding));
        }
    });
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Blocking outside any task: drive the loop until the caller is woken.
fn suspend_main(shared: &Shared, deadline: Option<Instant>) -> io::Result<()> {
    if shared.stepping.get() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copas: cannot block outside a task while the loop is running",
        ));
    }
    shared.main_woken.set(false);
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        shared.step(timeout)?;
        if shared.main_woken.replace(false) {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if deadline.is_none() && !shared.alive() {
            return Err(io::Error::other(
                "copas: nothing left to run could wake this blocking call",
            ));
        }
    }
}

/// Runs `f` so that every blocking copas call inside it fails with
/// [`io::ErrorKind::TimedOut`] once `timeout` has passed (Copas `copas.timeout`). Scopes
/// nest: an inner scope cannot extend an outer one. Calls that need not wait are not
/// affected.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let h = copas_core::spawn(|| {
///     copas_core::with_timeout(Duration::from_millis(5), || {
///         let slept = copas_core::sleep(Duration::from_secs(60));
///         (slept, copas_core::park()) // the scope is over: the next wait fails at once
///     })
/// });
/// let (slept, parked) = h.join().unwrap();
/// assert_eq!(slept.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(parked.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// ```
pub fn with_timeout<R>(timeout: Duration, f: impl FnOnce() -> R) -> R {
    let new = Instant::now().checked_add(timeout);
    let cell = context::with_current(|cell, _| cell.clone());
    let rt = Runtime::current();
    let prev = match &cell {
        Some(c) => c.scope_deadline(),
        None => rt.shared().main_scope_deadline.get(),
    };
    let set = |d: Option<Instant>| match &cell {
        Some(c) => c.set_scope_deadline(d),
        None => rt.shared().main_scope_deadline.set(d),
    };
    set(earliest(prev, new));
    struct Restore<F: Fn(Option<Instant>)>(F, Option<Instant>);
    impl<F: Fn(Option<Instant>)> Drop for Restore<F> {
        fn drop(&mut self) {
            (self.0)(self.1);
        }
    }
    let _restore = Restore(set, prev);
    f()
}
