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
//! - A finished task's record is kept for reuse ([`RecordPool`]) only when nothing else
//!   holds it (`Rc::get_mut` succeeds): a reused record is indistinguishable from a new
//!   one, and no id, handle or destructor can still see the old task through it. (The
//!   wait record, its start time and the scope deadline are not reset: they are read only
//!   while `waiting` is set or `flag::SCOPE` is raised, and both are cleared.)

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use corosensei::Coroutine;
use slab::Slab;

use crate::context::{Resume, TaskYielder};
use crate::id::TaskId;
use crate::overflow::TaskInfo;
use crate::report::ErrorHandler;
use crate::stack::TaskStack;
use crate::wait::WaitOn;

pub(crate) type Coro = Coroutine<Resume, (), (), TaskStack>;

/// The bits of [`TaskCell::flags`].
pub(crate) mod flag {
    /// Cancelled: the next blocking call fails with the cancellation error.
    pub(crate) const CANCELLED: u8 = 1;
    /// A blocking call already reported the cancellation: the next suspension unwinds.
    pub(crate) const CANCEL_SEEN: u8 = 2;
    /// Shutting down: every blocking call unwinds the stack.
    pub(crate) const UNWINDING: u8 = 4;
    /// Its wait timer fired (cleared when it suspends again).
    pub(crate) const TIMED_OUT: u8 = 8;
    /// A `with_timeout` scope is open (`scope_deadline` is `Some`).
    pub(crate) const SCOPE: u8 = 16;
}

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
    /// The coroutine's yielder: null until the coroutine starts, then a pointer into its
    /// own stack (see `context.rs`).
    pub(crate) yielder: Cell<*const TaskYielder>,
    /// Borrowed mutably only by the scheduler while it resumes the task (never
    /// re-entrantly: the loop cannot be stepped from inside a task).
    pub(crate) coro: RefCell<Option<Coro>>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) state: Cell<State>,
    /// Stack size and guard page, for stack-overflow reports.
    pub(crate) overflow_info: TaskInfo,
    pub(crate) error_handler: Option<ErrorHandler>,
    pub(crate) peer: Option<SocketAddr>,
    /// The [`flag`] bits: cancellation, unwinding, a fired wait timer, a timeout scope.
    /// One word, so that a switch checks them all with one load and one test.
    pub(crate) flags: Cell<u8>,
    /// Suspended in `park`.
    pub(crate) parked: Cell<bool>,
    /// An unpark arrived: the next `park` returns at once.
    pub(crate) token: Cell<bool>,
    /// Waiting in `wait_for_exit` (or woken by `exit`, see `wake_on_exit`).
    pub(crate) exit_waiter: Cell<bool>,
    /// Delivers a dropped stream's output within its own deadline: a graceful shutdown
    /// does not cancel it.
    pub(crate) lingering: bool,
    /// The deadline of the innermost `with_timeout` scope (written only through
    /// [`TaskCell::set_scope_deadline`], which keeps [`flag::SCOPE`] in step).
    scope_deadline: Cell<Option<Instant>>,
    /// What it waits on while suspended (meaningful while `waiting`; a yield writes
    /// nothing).
    pub(crate) wait: Cell<WaitOn>,
    pub(crate) waiting: Cell<bool>,
    /// The loop's clock when it suspended (read at the latest poll, so it may be early).
    pub(crate) since: Cell<Option<Instant>>,
    /// The next task in the run queue (see `run_queue.rs`); null when not queued or last.
    pub(crate) next: Cell<*const TaskCell>,
    /// diag: the task's span (feature `tracing`), entered while the task runs; replaced by
    /// `Span::none()` when the thread's runtime is torn down (see `Shared::shutdown`).
    #[cfg(feature = "tracing")]
    pub(crate) span: RefCell<tracing::Span>,
}

/// What a new task's record is made of.
pub(crate) struct NewTask {
    pub(crate) id: TaskId,
    pub(crate) coro: Coro,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) overflow_info: TaskInfo,
    pub(crate) error_handler: Option<ErrorHandler>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) lingering: bool,
    /// diag: the task's span (feature `tracing`).
    #[cfg(feature = "tracing")]
    pub(crate) span: tracing::Span,
}

/// The records of finished tasks, kept so that a spawn need not allocate one.
#[derive(Default)]
pub(crate) struct RecordPool {
    free: RefCell<Vec<Rc<TaskCell>>>,
}

/// Records kept for reuse at most.
const POOL_RECORDS: usize = 256;

impl RecordPool {
    /// A record for `t`: a pooled one, filled in place, or a new one.
    pub(crate) fn make(&self, t: NewTask) -> Rc<TaskCell> {
        let spare = self.free.borrow_mut().pop();
        if let Some(mut rc) = spare {
            if let Some(c) = Rc::get_mut(&mut rc) {
                c.id = t.id;
                *c.coro.get_mut() = Some(t.coro);
                c.name = t.name;
                c.overflow_info = t.overflow_info;
                c.error_handler = t.error_handler;
                c.peer = t.peer;
                c.lingering = t.lingering;
                #[cfg(feature = "tracing")]
                {
                    *c.span.get_mut() = t.span; // diag
                }
                return rc;
            }
        }
        Rc::new(TaskCell {
            id: t.id,
            yielder: Cell::new(std::ptr::null()),
            coro: RefCell::new(Some(t.coro)),
            name: t.name,
            state: Cell::new(State::Queued),
            overflow_info: t.overflow_info,
            error_handler: t.error_handler,
            peer: t.peer,
            flags: Cell::new(0),
            parked: Cell::new(false),
            token: Cell::new(false),
            exit_waiter: Cell::new(false),
            lingering: t.lingering,
            scope_deadline: Cell::new(None),
            wait: Cell::new(WaitOn::Nothing),
            waiting: Cell::new(false),
            since: Cell::new(None),
            next: Cell::new(std::ptr::null()),
            #[cfg(feature = "tracing")]
            span: RefCell::new(t.span), // diag
        })
    }

    /// Keeps the finished task's record for reuse if nothing else holds it (else it is
    /// dropped with its last holder). Its name and error handler are dropped here, outside
    /// any borrow; the caller holds no borrow either.
    pub(crate) fn recycle(&self, mut rc: Rc<TaskCell>) {
        let Some(c) = Rc::get_mut(&mut rc) else {
            return;
        };
        if self.free.borrow().len() >= POOL_RECORDS {
            return;
        }
        // Back to the state of a new record (what `make` does not overwrite). The wait
        // record is `Nothing` already (each suspension clears it when it ends, and a task
        // finishes running); `since` and `scope_deadline` mean nothing while `waiting` is
        // false and `flag::SCOPE` is lowered, so they are left as they are.
        debug_assert!(!c.waiting.get(), "copas: a finished task still waits");
        let coro = c.coro.get_mut().take();
        let name = c.name.take();
        let handler = c.error_handler.take();
        c.yielder.set(std::ptr::null());
        c.state.set(State::Queued);
        c.flags.set(0);
        c.parked.set(false);
        c.token.set(false);
        c.exit_waiter.set(false);
        #[cfg(feature = "tracing")]
        let span = std::mem::replace(c.span.get_mut(), tracing::Span::none()); // diag
        #[cfg(not(feature = "tracing"))]
        let span = ();
        // These may run user destructors, which may spawn: the pool is not borrowed now.
        drop((coro, name, handler, span));
        self.free.borrow_mut().push(rc);
    }
}

impl TaskCell {
    /// Whether any of the `bits` (of [`flag`]) is set.
    #[inline(always)]
    pub(crate) fn has(&self, bits: u8) -> bool {
        self.flags.get() & bits != 0
    }

    #[inline(always)]
    pub(crate) fn raise(&self, bits: u8) {
        self.flags.set(self.flags.get() | bits);
    }

    #[inline(always)]
    pub(crate) fn lower(&self, bits: u8) {
        self.flags.set(self.flags.get() & !bits);
    }

    /// The deadline of the innermost `with_timeout` scope.
    #[inline]
    pub(crate) fn scope_deadline(&self) -> Option<Instant> {
        if self.has(flag::SCOPE) {
            self.scope_deadline.get()
        } else {
            None
        }
    }

    pub(crate) fn set_scope_deadline(&self, d: Option<Instant>) {
        self.scope_deadline.set(d);
        if d.is_some() {
            self.raise(flag::SCOPE);
        } else {
            self.lower(flag::SCOPE);
        }
    }

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
