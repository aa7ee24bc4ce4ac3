//! The thread-local link to the task that is running right now: its coroutine's yielder,
//! its record and its runtime, so that a blocking call finds all three with one
//! thread-local read and no lookup.
//!
//! `unsafe` in copas-core lives here, in `stack.rs` (stack memory) and in `overflow.rs`
//! (the stack-overflow signal handler).
//!
//! Invariant: the three pointers of [`Ctx`] are either all null (no task runs on this
//! thread) or describe the coroutine executing on this thread at this moment:
//! - `yielder` points at that coroutine's [`Yielder`], which lives on the coroutine's own
//!   stack for the whole life of the coroutine. The coroutine stores it when it starts;
//!   [`suspend`] restores it after every resumption.
//! - `task` comes from [`Rc::as_ptr`] of the task's record, and the scheduler holds that
//!   `Rc` on its own stack for as long as the resumption lasts ([`Running`] borrows it).
//! - `shared` points at the runtime state whose method is resuming the task; that method
//!   holds `&Shared` for as long as the resumption lasts.
//!
//! [`Running::enter`] sets them before `resume`, and dropping the [`Running`] guard puts
//! back what was there before (null, except during nested shutdown passes).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr;
use std::rc::Rc;

use corosensei::Yielder;

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
    yielder: Cell<*const TaskYielder>,
    task: Cell<*const TaskCell>,
    shared: Cell<*const Shared>,
    /// Operations the running task may still complete before `cooperate` yields; reset
    /// each time a task is resumed.
    budget: Cell<u32>,
}

thread_local! {
    static CTX: Ctx = const {
        Ctx {
            yielder: Cell::new(ptr::null()),
            task: Cell::new(ptr::null()),
            shared: Cell::new(ptr::null()),
            budget: Cell::new(BUDGET),
        }
    };
}

/// Records `y` as the running coroutine's yielder. Called by the coroutine itself when it
/// starts.
pub(crate) fn enter(y: &TaskYielder) {
    CTX.with(|c| c.yielder.set(y as *const TaskYielder));
}

/// The scheduler's side of one resumption: while it lives, the context names `task`
/// and `shared`.
pub(crate) struct Running<'a> {
    _task: &'a Rc<TaskCell>,
    _shared: &'a Shared,
    prev: (*const TaskYielder, *const TaskCell, *const Shared),
}

impl<'a> Running<'a> {
    pub(crate) fn enter(task: &'a Rc<TaskCell>, shared: &'a Shared) -> Running<'a> {
        let prev = CTX.with(|c| {
            c.budget.set(BUDGET);
            (
                c.yielder.get(),
                c.task.replace(Rc::as_ptr(task)),
                c.shared.replace(shared as *const Shared),
            )
        });
        Running {
            _task: task,
            _shared: shared,
            prev,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let (y, t, s) = self.prev;
        CTX.with(|c| {
            c.yielder.set(y);
            c.task.set(t);
            c.shared.set(s);
        });
    }
}

/// Whether code is running inside a copas coroutine.
pub(crate) fn in_coroutine() -> bool {
    CTX.with(|c| !c.yielder.get().is_null())
}

/// Runs `f` with the running task's record and runtime; `None` outside a task.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Rc<TaskCell>, &Shared) -> R) -> Option<R> {
    let (t, s) = CTX.with(|c| {
        if c.yielder.get().is_null() {
            (ptr::null(), ptr::null())
        } else {
            (c.task.get(), c.shared.get())
        }
    });
    if t.is_null() || s.is_null() {
        return None;
    }
    // SAFETY: by the invariant, a non-null `task` comes from `Rc::as_ptr` of a record that
    // the scheduler keeps alive (it holds an `Rc` to it) while this task runs, and we are
    // inside this task now. Wrapped in `ManuallyDrop`, the rebuilt `Rc` lends the
    // scheduler's strong count for the duration of `f` and never decrements it.
    let task = std::mem::ManuallyDrop::new(unsafe { Rc::from_raw(t) });
    // SAFETY: by the invariant, `shared` is the runtime state whose method is resuming
    // this task, borrowed for the whole resumption; `f` cannot keep the reference.
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
pub(crate) fn suspend() -> Resume {
    let y = CTX.with(|c| c.yielder.get());
    assert!(!y.is_null(), "copas: suspend outside a task");
    // SAFETY: by the invariant, a non-null pointer is the yielder of the coroutine running
    // right now, which is this very call's coroutine; the yielder lives on that
    // coroutine's stack until the coroutine finishes, so it is valid for this call.
    let resumed = unsafe { (*y).suspend(()) };
    // Other coroutines ran in between and the scheduler's guard put back the outer
    // context: we are the running coroutine again, so restore our yielder (the task and
    // runtime pointers were set by `Running::enter` before this resumption).
    CTX.with(|c| c.yielder.set(y));
    resumed
}
