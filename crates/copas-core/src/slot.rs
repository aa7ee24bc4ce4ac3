//! The record of one task ([`TaskCell`]) and the table of live tasks ([`TaskTable`]).
//!
//! Invariants:
//! - A task is in exactly one [`State`]; it is in the run queue exactly when its state is
//!   `Queued` (so at most once).
//! - The record's fields are `Cell`s: they are read and written without borrows, so a
//!   destructor or a wake-up from anywhere may touch them at any time. The coroutine's
//!   `RefCell` is borrowed only while the scheduler resumes it.
//! - The table holds one `Rc` to each live record, under its id's index; a lookup checks
//!   the serial, so stale ids match nothing. No borrow of the table is held while a
//!   coroutine runs or a record is dropped.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use corosensei::Coroutine;
use slab::Slab;

use crate::context::Resume;
use crate::id::TaskId;
use crate::overflow::TaskInfo;
use crate::report::ErrorHandler;
use crate::stack::TaskStack;
use crate::wait::WaitOn;

pub(crate) type Coro = Coroutine<Resume, (), (), TaskStack>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// In the run queue.
    Queued,
    /// Executing right now.
    Running,
    /// Suspended, waiting for a wake-up.
    Suspended,
    /// Finished; the record is about to be dropped.
    Done,
}

/// Everything the scheduler knows about one task.
pub(crate) struct TaskCell {
    pub(crate) id: TaskId,
    /// Borrowed mutably only by the scheduler while it resumes the task (never
    /// re-entrantly: the loop cannot be stepped from inside a task).
    pub(crate) coro: RefCell<Option<Coro>>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) state: Cell<State>,
    /// Stack size and guard page, for stack-overflow reports.
    pub(crate) overflow_info: TaskInfo,
    pub(crate) error_handler: Option<ErrorHandler>,
    pub(crate) peer: Option<SocketAddr>,
    /// Cancelled: the next blocking call fails with the cancellation error.
    pub(crate) cancelled: Cell<bool>,
    /// A blocking call already reported the cancellation: the next suspension unwinds.
    pub(crate) cancel_seen: Cell<bool>,
    /// Shutting down: every blocking call unwinds the stack.
    pub(crate) unwinding: Cell<bool>,
    /// Its wait timer fired (cleared when it suspends again).
    pub(crate) timed_out: Cell<bool>,
    /// Suspended in `park`.
    pub(crate) parked: Cell<bool>,
    /// An unpark arrived: the next `park` returns at once.
    pub(crate) token: Cell<bool>,
    /// Waiting in `wait_for_exit` (or woken by `exit`, see `wake_on_exit`).
    pub(crate) exit_waiter: Cell<bool>,
    /// Delivers a dropped stream's output within its own deadline: a graceful shutdown
    /// does not cancel it.
    pub(crate) lingering: bool,
    /// The deadline of the innermost `with_timeout` scope.
    pub(crate) scope_deadline: Cell<Option<Instant>>,
    /// What it waits on while suspended (meaningful while `waiting`; a yield writes
    /// nothing).
    pub(crate) wait: Cell<WaitOn>,
    pub(crate) waiting: Cell<bool>,
    /// The loop's clock when it suspended (read at the latest poll, so it may be early).
    pub(crate) since: Cell<Option<Instant>>,
}

impl TaskCell {
    /// A copy of the wait record.
    pub(crate) fn wait_on(&self) -> WaitOn {
        if !self.waiting.get() {
            return WaitOn::Nothing;
        }
        let w = self.wait.replace(WaitOn::Nothing);
        let copy = w.clone();
        self.wait.set(w);
        copy
    }
}

/// The live tasks of one runtime.
#[derive(Default)]
pub(crate) struct TaskTable {
    slab: RefCell<Slab<Rc<TaskCell>>>,
}

impl TaskTable {
    /// The index the next inserted task gets.
    pub(crate) fn vacant_key(&self) -> usize {
        self.slab.borrow().vacant_key()
    }

    pub(crate) fn insert(&self, cell: Rc<TaskCell>) {
        let key = self.slab.borrow_mut().insert(cell);
        debug_assert_eq!(key, self.slab.borrow()[key].id.index);
    }

    /// The live task `id`, if the id is not stale.
    #[inline]
    pub(crate) fn get(&self, id: TaskId) -> Option<Rc<TaskCell>> {
        let slab = self.slab.borrow();
        let cell = slab.get(id.index)?;
        (cell.id.serial == id.serial).then(|| cell.clone())
    }

    /// Runs `f` on the live task `id` without taking a count on it.
    #[inline]
    pub(crate) fn with<R>(&self, id: TaskId, f: impl FnOnce(&TaskCell) -> R) -> Option<R> {
        let slab = self.slab.borrow();
        let cell = slab.get(id.index)?;
        (cell.id.serial == id.serial).then(|| f(cell))
    }

    /// Removes the task `id` and gives back its record (to be dropped by the caller, after
    /// the table's borrow ended).
    pub(crate) fn remove(&self, id: TaskId) -> Option<Rc<TaskCell>> {
        let mut slab = self.slab.borrow_mut();
        match slab.get(id.index) {
            Some(c) if c.id.serial == id.serial => Some(slab.remove(id.index)),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.borrow().len()
    }

    /// A snapshot of every live record.
    pub(crate) fn all(&self) -> Vec<Rc<TaskCell>> {
        self.slab.borrow().iter().map(|(_, c)| c.clone()).collect()
    }

    pub(crate) fn count(&self, f: impl Fn(&TaskCell) -> bool) -> usize {
        self.slab.borrow().iter().filter(|(_, c)| f(c)).count()
    }

    /// Takes every record out (the table is empty afterwards).
    pub(crate) fn drain(&self) -> Vec<Rc<TaskCell>> {
        self.slab.borrow_mut().drain().collect()
    }
}
