//! The thread-local link to the coroutine that is running right now.
//!
//! `unsafe` in copas-core lives here, in `stack.rs` (stack memory) and in `overflow.rs`
//! (the stack-overflow signal handler). The invariant: `YIELDER` is either null or points at the [`Yielder`] of
//! the coroutine that is executing on this thread at this moment. A coroutine stores its own
//! yielder when it starts and again every time it is resumed after a suspension; the
//! scheduler clears the pointer each time `resume` returns. A `Yielder` lives on its
//! coroutine's stack for the whole life of the coroutine, so while the coroutine runs the
//! pointer is valid.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr;

use corosensei::Yielder;

/// What the scheduler tells a coroutine when it resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Go on from the suspension point.
    Run,
    /// The runtime is shutting down: unwind the stack to its root.
    Unwind,
}

pub(crate) type TaskYielder = Yielder<Resume, ()>;

thread_local! {
    /// # Invariant
    /// Null, or the yielder of the coroutine executing on this thread right now.
    static YIELDER: Cell<*const TaskYielder> = const { Cell::new(ptr::null()) };
}

/// Records `y` as the running coroutine's yielder. Called by the coroutine itself, at its
/// start and after every resumption.
pub(crate) fn enter(y: &TaskYielder) {
    YIELDER.with(|c| c.set(y as *const TaskYielder));
}

/// Forgets the yielder; called by the scheduler once `resume` has returned.
pub(crate) fn leave() {
    YIELDER.with(|c| c.set(ptr::null()));
}

/// Whether code is running inside a copas coroutine.
pub(crate) fn in_coroutine() -> bool {
    YIELDER.with(|c| !c.get().is_null())
}

/// Suspends the running coroutine and returns what the scheduler resumed it with.
///
/// # Panics
/// Panics when called outside a coroutine; callers check [`in_coroutine`] first.
pub(crate) fn suspend() -> Resume {
    let y = YIELDER.with(Cell::get);
    assert!(!y.is_null(), "copas: suspend outside a task");
    // SAFETY: by the invariant on `YIELDER`, a non-null pointer is the yielder of the
    // coroutine running right now, which is this very call's coroutine; the yielder lives on
    // that coroutine's stack until the coroutine finishes, so it is valid for this call.
    let resumed = unsafe { (*y).suspend(()) };
    // Other coroutines ran in between and the scheduler cleared the pointer: we are the
    // running coroutine again, so restore it.
    YIELDER.with(|c| c.set(y));
    resumed
}
