//! The thread-local link to the task that is running right now: its record (which holds
//! its coroutine's yielder and its stack-overflow facts) and its runtime, so that a
//! blocking call finds both with one thread-local read and no lookup.
//!
//! `unsafe` in copas-core lives here, in `stack.rs` (stack memory), in `run_queue.rs` (the
//! queue's links) and in `overflow.rs` (the stack-overflow signal handler).
//!
//! Invariant: the `task` pointer of [`Ctx`] is null (no task runs on this thread) or
//! describes the coroutine executing on this thread at this moment:
//! - `task` comes from [`Rc::as_ptr`] of the task's record, and the scheduler holds a
//!   strong count on that record for as long as the resumption lasts ([`Running`]
//!   borrows it). The record's `yielder` is null until the coroutine starts and then
//!   points at the coroutine's [`Yielder`], which lives on the coroutine's own stack for
//!   the whole life of the coroutine ([`enter`] stores it).
//! - `shared` (meaningful only while `task` is not null) points at the runtime state
//!   whose method is resuming the task; that method holds `&Shared` for as long as the
//!   resumption lasts.
//!
//! [`Running::enter`] sets both before `resume`, and dropping the [`Running`] guard sets
//! `task` back to null. Resumptions do not nest: the loop cannot be stepped from inside a
//! task, so there is no outer context to put back.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr;
use std::rc::Rc;

use corosensei::Yielder;

use crate::overflow::TaskInfo;
use crate::runtime::Shared;
use crate::slot::TaskCell;

/// What the scheduler tells a coroutine when it resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Go on from the suspension point.
    Run,
    /// The task must end: unwind the stack to its root.
    Unwind,
}

pub(crate) type TaskYielder = Yielder<Resume, ()>;

/// How many operations a task may complete without suspending before
/// [`cooperate`](crate::cooperate) makes it yield.
pub(crate) const BUDGET: u32 = 128;

struct Ctx {
    task: Cell<*const TaskCell>,
    shared: Cell<*const Shared>,
    /// Operations the running task may still complete before `cooperate` yields; reset
    /// each time a task is resumed.
    budget: Cell<u32>,
}

thread_local! {
    static CTX: Ctx = const {
        Ctx {
            task: Cell::new(ptr::null()),
            shared: Cell::new(ptr::null()),
            budget: Cell::new(BUDGET),
        }
    };
}

/// Records `y` as the running coroutine's yielder. Called by the coroutine itself when it
/// starts.
pub(crate) fn enter(y: &TaskYielder) {
    let t = CTX.with(|c| c.task.get());
    assert!(!t.is_null(), "copas: a task started outside the scheduler");
    // SAFETY: by the invariant, a non-null `task` is the record of the coroutine running
    // now (this one), kept alive by the scheduler during the resumption; only a `Cell` is
    // written.
    unsafe { (*t).yielder.set(y as *const TaskYielder) };
}

/// The scheduler's side of one resumption: while it lives, the context names `task`
/// and `shared`.
pub(crate) struct Running<'a> {
    _task: &'a Rc<TaskCell>,
    _shared: &'a Shared,
}

impl<'a> Running<'a> {
    #[inline(always)]
    pub(crate) fn enter(task: &'a Rc<TaskCell>, shared: &'a Shared) -> Running<'a> {
        CTX.with(|c| {
            debug_assert!(c.task.get().is_null(), "copas: nested resumption");
            c.budget.set(BUDGET);
            c.task.set(Rc::as_ptr(task));
            c.shared.set(shared as *const Shared);
        });
        Running {
            _task: task,
            _shared: shared,
        }
    }
}

impl Drop for Running<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        CTX.with(|c| c.task.set(ptr::null()));
    }
}

/// Whether code is running inside a copas coroutine.
pub(crate) fn in_coroutine() -> bool {
    CTX.with(|c| !c.task.get().is_null())
}

/// The stack-overflow facts of the task running on this thread (null if none), for the
/// signal handler: it reads only this constant-initialised thread-local.
pub(crate) fn running_info() -> *const TaskInfo {
    let t = CTX.with(|c| c.task.get());
    if t.is_null() {
        return ptr::null();
    }
    // SAFETY: by the invariant, a non-null `task` is the running task's record, alive for
    // the resumption; only the field's address is computed here.
    unsafe { &raw const (*t).overflow_info }
}

/// Runs `f` with the running task's record and runtime; `None` outside a task.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Rc<TaskCell>, &Shared) -> R) -> Option<R> {
    let (t, s) = CTX.with(|c| (c.task.get(), c.shared.get()));
    if t.is_null() {
        return None;
    }
    // SAFETY: by the invariant, a non-null `task` comes from `Rc::as_ptr` of a record that
    // the scheduler keeps alive (it holds an `Rc` to it) while this task runs, and we are
    // inside this task now. Wrapped in `ManuallyDrop`, the rebuilt `Rc` lends the
    // scheduler's strong count for the duration of `f` and never decrements it.
    let task = std::mem::ManuallyDrop::new(unsafe { Rc::from_raw(t) });
    // SAFETY: by the invariant, while `task` is not null, `shared` is the runtime state
    // whose method is resuming this task, borrowed for the whole resumption; `f` cannot
    // keep the reference.
    let shared = unsafe { &*s };
    Some(f(&task, shared))
}

/// Spends one unit of the running task's budget; returns whether it ran out (and refills
/// it).
#[inline]
pub(crate) fn spend_budget() -> bool {
    CTX.with(|c| {
        let left = c.budget.get().saturating_sub(1);
        if left == 0 {
            c.budget.set(BUDGET);
            true
        } else {
            c.budget.set(left);
            false
        }
    })
}

/// Suspends the running coroutine and returns what the scheduler resumed it with.
///
/// # Panics
/// Panics when called outside a coroutine; callers check [`in_coroutine`] first.
#[inline(always)]
pub(crate) fn suspend() -> Resume {
    let t = CTX.with(|c| c.task.get());
    assert!(!t.is_null(), "copas: suspend outside a task");
    // SAFETY: by the invariant, a non-null `task` is the record of the coroutine running
    // right now, alive for the resumption.
    let y = unsafe { (*t).yielder.get() };
    assert!(!y.is_null(), "copas: suspend outside a task");
    // SAFETY: `y` is the yielder of the coroutine running right now (its record's, stored
    // when it started), which is this very call's coroutine; it lives on that coroutine's
    // stack until the coroutine finishes, so it is valid for this call. When the scheduler
    // resumes us, its guard has set the context to this task again.
    unsafe { (*y).suspend(()) }
}
