//! The run queue, the task slab, and one step of the loop.
//!
//! Key invariants:
//! - A task is in exactly one of the states of [`State`]; it is in the run queue exactly
//!   when its state is `Queued`.
//! - No `RefCell` borrow of the task slab, run queue or timers is held while a coroutine
//!   runs or while a task, closure or timer entry is dropped: destructors call back in.
//! - Tasks woken during a pass over the run queue run in the next pass (FIFO, no starvation).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corosensei::stack::Stack;
use corosensei::{Coroutine, CoroutineResult};
use slab::Slab;

use crate::context::{self, Resume};
use crate::driver::{Driver, Notify, ThreadParker};
use crate::error::{self, Unwinding};
use crate::overflow;
use crate::stack::{StackPool, TaskStack};
use crate::task::{payload_str, ErrorHandler, JoinError, JoinState, Task, TaskId, TaskPanic};
use crate::time::{TimerAction, TimerKey, TimerQueue};

type Coro = Coroutine<Resume, (), (), TaskStack>;

/// While tasks are runnable, at most this many steps in a row skip polling the driver.
const POLL_EVERY: u32 = 16;

/// How many operations a task may complete without suspending before
/// [`cooperate`](crate::cooperate) makes it yield.
const BUDGET: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the run queue.
    Queued,
    /// Executing right now.
    Running,
    /// Suspended, waiting for a wake-up.
    Suspended,
}

struct Slot {
    serial: u64,
    coro: Option<Coro>,
    name: Option<Arc<str>>,
    state: State,
    stack_size: usize,
    /// The stack's guard page, for stack-overflow reports.
    guard: (usize, usize),
    /// Cancelled: every blocking call fails.
    cancelled: bool,
    /// Shutting down: every blocking call unwinds the stack.
    unwinding: bool,
    /// Its wait timer fired (cleared when it suspends again).
    timed_out: bool,
    /// Suspended in `park`.
    parked: bool,
    /// An unpark arrived: the next `park` returns at once.
    token: bool,
    /// Waiting in `wait_for_exit`.
    exit_waiter: bool,
    /// Delivers a dropped stream's output within its own deadline: a graceful shutdown
    /// does not cancel it.
    lingering: bool,
    /// The deadline of the innermost `with_timeout` scope.
    scope_deadline: Option<Instant>,
}

/// What `Builder::spawn` hands to the runtime.
pub(crate) struct TaskSpec {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) stack_size: usize,
    pub(crate) error_handler: Option<ErrorHandler>,
    pub(crate) peer: Option<std::net::SocketAddr>,
    pub(crate) lingering: bool,
}

/// Wake-ups from other threads.
pub(crate) struct Remote {
    queue: Mutex<Vec<TaskId>>,
    pending: AtomicBool,
    notify: Mutex<Notify>,
}

impl Remote {
    pub(crate) fn push(&self, id: TaskId) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        self.pending.store(true, Ordering::Release);
        let notify = self
            .notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        notify();
    }

    /// Interrupts the loop's wait (for the remote seam).
    pub(crate) fn notify(&self) {
        let notify = self
            .notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        notify();
    }

    fn take(&self) -> Vec<TaskId> {
        // A plain load first: this runs every step, and a read-modify-write would cost a
        // locked instruction each time although remote wake-ups are rare.
        if !self.pending.load(Ordering::Acquire) || !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Counters describing a runtime at one moment (Copas `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live tasks, in any state.
    pub tasks: usize,
    /// Tasks executing right now: 1 when asked from inside a task, else 0.
    pub running: usize,
    /// Tasks waiting in the run queue.
    pub runnable: usize,
    /// Suspended tasks with a timer armed (sleeping, or blocked with a deadline).
    pub sleeping: usize,
    /// Tasks in `park` (Copas `pauseforever`).
    pub parked: usize,
    /// Armed timer entries, including those of `Timer`s.
    pub timers: usize,
    /// Loop steps taken so far.
    pub steps: u64,
    /// Idle stacks kept for reuse.
    pub pooled_stacks: usize,
    /// Sockets and listeners registered with the I/O driver.
    pub sockets: usize,
}

pub(crate) struct Shared {
    tasks: RefCell<Slab<Slot>>,
    run_queue: RefCell<VecDeque<TaskId>>,
    spare_queue: RefCell<VecDeque<TaskId>>,
    timers: RefCell<TimerQueue>,
    driver: RefCell<Rc<dyn Driver>>,
    driver_any: RefCell<Option<Rc<dyn Any>>>,
    pub(crate) remote: Arc<Remote>,
    /// Remote spawns, remote exit and keep-alive guards (`remote_seam.rs`).
    pub(crate) seam: crate::remote_seam::SeamLocal,
    stacks: RefCell<StackPool>,
    error_handler: RefCell<Option<ErrorHandler>>,
    next_serial: Cell<u64>,
    main_woken: Cell<bool>,
    stepping: Cell<bool>,
    exiting: Cell<bool>,
    shutting_down: Cell<bool>,
    steps: Cell<u64>,
    sleeping: Cell<usize>,
    /// `with_timeout` scope of code running outside any task.
    main_scope_deadline: Cell<Option<Instant>>,
    /// Steps in a row that skipped polling the driver because tasks were runnable.
    busy_steps: Cell<u32>,
    /// The thread the runtime belongs to.
    thread: std::thread::ThreadId,
    /// When a graceful shutdown cancels what is left (see [`shutdown`]). It bounds the
    /// loop's waits but does not keep the loop alive.
    shutdown_deadline: Cell<Option<Instant>>,
}

/// A copas runtime: the scheduler of one thread.
///
/// There is one per thread, created on first use; [`Runtime::current`] returns it and the
/// free functions ([`spawn`](crate::spawn), [`run`], [`sleep`](crate::sleep), …) act on
/// it. Use it directly to embed copas in a program with its own main loop
/// ([`Runtime::step`]) or to configure it.
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(copas_core::Runtime::current());
/// ```
#[derive(Clone)]
pub struct Runtime {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("stats", &self.stats())
            .finish()
    }
}

struct Holder(RefCell<Option<Runtime>>);

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(rt) = self.0.borrow_mut().take() {
            rt.shared.shutdown();
        }
    }
}

thread_local! {
    static RUNTIME: Holder = const { Holder(RefCell::new(None)) };
    static CURRENT_TASK: Cell<Option<TaskId>> = const { Cell::new(None) };
    /// Operations the running task may still complete before `cooperate` yields; reset
    /// each time a task is resumed (so: each time it suspended).
    static BUDGET_LEFT: Cell<u32> = const { Cell::new(BUDGET) };
}

/// The id of the task running on this thread, if any.
pub(crate) fn current_task_id() -> Option<TaskId> {
    CURRENT_TASK.with(Cell::get)
}

impl Runtime {
    /// The current thread's runtime, created on first use.
    ///
    /// # Panics
    /// Panics when called while the thread is being torn down (from a thread-local's
    /// destructor).
    #[track_caller]
    pub fn current() -> Runtime {
        match Runtime::try_current() {
            Some(rt) => rt,
            None => panic!("copas: the runtime is not available while the thread exits"),
        }
    }

    /// The current thread's runtime, created on first use; `None` while the thread exits.
    pub fn try_current() -> Option<Runtime> {
        RUNTIME
            .try_with(|h| {
                h.0.borrow_mut()
                    .get_or_insert_with(|| Runtime {
                        shared: Rc::new(Shared::new()),
                    })
                    .clone()
            })
            .ok()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Installs the I/O driver (copas-net's reactor does this on first use). Possible only
    /// once per runtime; before that, the runtime sleeps until its next timer when idle.
    ///
    /// # Errors
    /// [`io::ErrorKind::AlreadyExists`] if a driver is installed already.
    pub fn set_driver<D: Driver + 'static>(&self, driver: Rc<D>) -> io::Result<()> {
        if self.shared.driver_any.borrow().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "copas: a driver is installed already",
            ));
        }
        *self
            .shared
            .remote
            .notify
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = driver.notifier();
        *self.shared.driver_any.borrow_mut() = Some(driver.clone() as Rc<dyn Any>);
        *self.shared.driver.borrow_mut() = driver;
        // A remote wake-up may have gone to the old notifier.
        self.shared.remote.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// The installed driver, if it is a `D`.
    pub fn driver<D: Any>(&self) -> Option<Rc<D>> {
        let any = self.shared.driver_any.borrow().clone()?;
        any.downcast::<D>().ok()
    }

    /// Runs one iteration of the loop (Copas `step`): if no task is runnable, waits for
    /// I/O or a timer for at most `timeout` (`None`: as long as it takes, but never when
    /// nothing could ever end the wait); then resumes every task that is runnable, once,
    /// and flushes the output they buffered.
    ///
    /// Returns whether anything happened (a task ran or an event or timer fired); `false`
    /// means the wait timed out idle.
    ///
    /// # Errors
    /// The driver's polling error; [`io::ErrorKind::Unsupported`] when called from inside
    /// a task or re-entrantly.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let rt = copas_core::Runtime::current();
    /// let h = copas_core::spawn(|| 1 + 1);
    /// while !rt.is_finished() {
    ///     // ... the program's own work here ...
    ///     rt.step(Some(Duration::from_millis(10))).unwrap();
    /// }
    /// assert_eq!(h.join().unwrap(), 2);
    /// ```
    pub fn step(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.shared.step(timeout)
    }

    /// Runs the loop until there is nothing left to do (Copas `loop`): no runnable task,
    /// no timer, nothing waiting for I/O and no server. Tasks that are parked forever or
    /// waiting in [`wait_for_exit`](crate::wait_for_exit) do not keep it going.
    ///
    /// When the work runs out the runtime calls [`exit`](crate::exit) itself, so that
    /// `wait_for_exit` callers can clean up, and returns once that is done too.
    ///
    /// # Errors
    /// A polling error from the driver, or `Unsupported` when called from inside a task.
    pub fn run(&self) -> io::Result<()> {
        if self.shared.stepping.get() || context::in_coroutine() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "copas: run cannot be called from inside a task or re-entrantly",
            ));
        }
        self.shared.exiting.set(false);
        loop {
            if !self.shared.alive() {
                if self.shared.exiting.get() {
                    break;
                }
                self.shared.exit();
                if !self.shared.alive() {
                    break;
                }
            }
            self.shared.step(None)?;
        }
        // The exit belonged to this run: work started afterwards (a server driven by
        // `step`) must not see it.
        self.shared.exiting.set(false);
        self.shared.shutdown_deadline.set(None);
        Ok(())
    }

    /// Whether the loop has nothing left to do (Copas `finished`).
    pub fn is_finished(&self) -> bool {
        !self.shared.alive()
    }

    /// Sets the handler told about task panics that have no handler of their own
    /// ([`Builder::error_handler`](crate::Builder::error_handler)). The default prints the
    /// task's name and the message to stderr.
    pub fn set_error_handler(&self, f: impl Fn(&TaskPanic) + 'static) {
        *self.shared.error_handler.borrow_mut() = Some(Rc::new(f));
    }

    /// Puts back the default error handler.
    pub fn reset_error_handler(&self) {
        *self.shared.error_handler.borrow_mut() = None;
    }

    /// Sets the stack size of tasks spawned without an explicit one. Only stacks of this
    /// size are pooled.
    ///
    /// # Panics
    /// Panics if `size` is below 16 KiB, too small for a panic to unwind safely.
    #[track_caller]
    pub fn set_default_stack_size(&self, size: usize) {
        assert!(size >= 16 * 1024, "copas: stack size below 16 KiB");
        self.shared.stacks.borrow_mut().set_default_size(size);
    }

    /// Counters for monitoring (Copas `status`).
    pub fn stats(&self) -> Stats {
        let tasks = self.shared.tasks.borrow();
        Stats {
            tasks: tasks.len(),
            running: tasks
                .iter()
                .filter(|(_, s)| s.state == State::Running)
                .count(),
            runnable: self.shared.run_queue.borrow().len(),
            sleeping: self.shared.sleeping.get(),
            parked: tasks.iter().filter(|(_, s)| s.parked).count(),
            timers: self.shared.timers.borrow().len(),
            steps: self.shared.steps.get(),
            pooled_stacks: self.shared.stacks.borrow().pooled(),
            sockets: self.shared.driver.borrow().sources(),
        }
    }
}

struct StepGuard<'a>(&'a Cell<bool>);

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Shared {
    fn new() -> Shared {
        overflow::init_thread();
        let parker = Rc::new(ThreadParker::new());
        let remote = Arc::new(Remote {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            notify: Mutex::new(parker.notifier()),
        });
        Shared {
            tasks: RefCell::new(Slab::new()),
            run_queue: RefCell::new(VecDeque::new()),
            spare_queue: RefCell::new(VecDeque::new()),
            timers: RefCell::new(TimerQueue::default()),
            seam: crate::remote_seam::SeamLocal::new(remote.clone()),
            remote,
            driver: RefCell::new(parker),
            driver_any: RefCell::new(None),
            stacks: RefCell::new(StackPool::new()),
            error_handler: RefCell::new(None),
            next_serial: Cell::new(1),
            main_woken: Cell::new(false),
            stepping: Cell::new(false),
            exiting: Cell::new(false),
            shutting_down: Cell::new(false),
            steps: Cell::new(0),
            sleeping: Cell::new(0),
            main_scope_deadline: Cell::new(None),
            busy_steps: Cell::new(0),
            thread: std::thread::current().id(),
            shutdown_deadline: Cell::new(None),
        }
    }

    pub(crate) fn default_stack_size(&self) -> usize {
        self.stacks.borrow().default_size()
    }

    pub(crate) fn insert_timer(&self, deadline: Instant, action: TimerAction) -> TimerKey {
        self.timers.borrow_mut().insert(deadline, action)
    }

    pub(crate) fn remove_timer(&self, key: TimerKey) -> Option<TimerAction> {
        self.timers.borrow_mut().remove(key)
    }

    pub(crate) fn has_timer(&self, key: TimerKey) -> bool {
        self.timers.borrow().contains(key)
    }

    pub(crate) fn task_handle(&self, id: TaskId, name: Option<Arc<str>>) -> Task {
        Task {
            id,
            name,
            remote: self.remote.clone(),
            thread: self.thread,
        }
    }

    pub(crate) fn current_task(&self) -> Option<Task> {
        let id = current_task_id()?;
        let name = self
            .tasks
            .borrow()
            .get(id.index)
            .and_then(|s| s.name.clone());
        Some(self.task_handle(id, name))
    }

    /// Whether anything can still make progress.
    fn alive(&self) -> bool {
        !self.run_queue.borrow().is_empty()
            || !self.timers.borrow().is_empty()
            || self.remote.pending.load(Ordering::Acquire)
            || self.driver.borrow().has_waiters()
            || self.seam.alive()
    }

    pub(crate) fn spawn_task<F, T>(
        self: &Shared,
        spec: TaskSpec,
        state: Rc<JoinState<T>>,
        f: F,
    ) -> io::Result<TaskId>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let stack = self.stacks.borrow_mut().take(spec.stack_size)?;
        let guard = overflow::guard_range(stack.limit().get());
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = TaskId {
            index: entry.key(),
            serial,
        };
        let name = spec.name.clone();
        let stack_size = spec.stack_size;
        let lingering = spec.lingering;
        let coro = Coro::with_stack(stack, move |y, first: Resume| {
            context::enter(y);
            task_main(id, spec, state, f, first);
        });
        entry.insert(Slot {
            serial,
            coro: Some(coro),
            name,
            state: State::Queued,
            stack_size,
            guard,
            cancelled: false,
            unwinding: false,
            timed_out: false,
            parked: false,
            token: false,
            exit_waiter: false,
            lingering,
            scope_deadline: None,
        });
        drop(tasks);
        self.run_queue.borrow_mut().push_back(id);
        Ok(id)
    }

    /// Makes a suspended task runnable. Waking a queued task does nothing; waking the
    /// running task queues it for the next pass (that is how `yield_now` works).
    pub(crate) fn wake(&self, id: TaskId) {
        if id.is_main() {
            self.main_woken.set(true);
            return;
        }
        let mut tasks = self.tasks.borrow_mut();
        let Some(slot) = tasks.get_mut(id.index) else {
            return;
        };
        if slot.serial != id.serial {
            return;
        }
        match slot.state {
            State::Queued => {}
            State::Running | State::Suspended => {
                slot.state = State::Queued;
                drop(tasks);
                self.run_queue.borrow_mut().push_back(id);
            }
        }
    }

    pub(crate) fn unpark_local(&self, id: TaskId) -> bool {
        let was_parked = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(id.index) {
                Some(slot) if slot.serial == id.serial => {
                    slot.token = true;
                    slot.parked
                }
                _ => return false,
            }
        };
        if was_parked {
            self.wake(id);
        }
        was_parked
    }

    pub(crate) fn cancel(&self, id: TaskId) -> bool {
        {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(id.index) {
                Some(slot) if slot.serial == id.serial => {
                    slot.cancelled = true;
                    if slot.state != State::Suspended {
                        return true;
                    }
                }
                _ => return false,
            }
        }
        self.wake(id);
        true
    }

    /// Cancels every task and drops every `Timer` callback (Copas `cancelall`).
    /// With `spare_lingering`, tasks delivering dropped streams' output are left to finish
    /// (they end by their own deadline).
    pub(crate) fn cancel_all(&self, spare_lingering: bool) {
        let callbacks = self.timers.borrow_mut().remove_callbacks();
        drop(callbacks);
        let ids: Vec<TaskId> = self
            .tasks
            .borrow_mut()
            .iter_mut()
            .filter(|(_, slot)| !(spare_lingering && slot.lingering))
            .map(|(index, slot)| {
                slot.cancelled = true;
                TaskId {
                    index,
                    serial: slot.serial,
                }
            })
            .collect();
        for id in ids {
            self.wake(id);
        }
    }

    pub(crate) fn exit(&self) {
        self.exiting.set(true);
        let waiters: Vec<TaskId> = self
            .tasks
            .borrow_mut()
            .iter_mut()
            .filter(|(_, s)| s.exit_waiter)
            .map(|(index, slot)| {
                slot.exit_waiter = false;
                TaskId {
                    index,
                    serial: slot.serial,
                }
            })
            .collect();
        for id in waiters {
            self.wake(id);
        }
    }

    pub(crate) fn is_exiting(&self) -> bool {
        self.exiting.get()
    }

    fn set_flag(&self, id: TaskId, f: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.tasks.borrow_mut().get_mut(id.index) {
            if slot.serial == id.serial {
                f(slot);
            }
        }
    }

    pub(crate) fn set_exit_waiter(&self, id: TaskId, on: bool) {
        self.set_flag(id, |s| s.exit_waiter = on);
    }

    pub(crate) fn set_parked(&self, id: TaskId, on: bool) {
        self.set_flag(id, |s| s.parked = on);
    }

    pub(crate) fn take_token(&self, id: TaskId) -> bool {
        let mut t = false;
        self.set_flag(id, |s| t = std::mem::take(&mut s.token));
        t
    }

    /// One step of the loop; see [`Runtime::step`].
    fn step(&self, timeout: Option<Duration>) -> io::Result<bool> {
        if self.stepping.get() || context::in_coroutine() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "copas: the loop cannot be stepped from inside a task or re-entrantly",
            ));
        }
        self.stepping.set(true);
        let _guard = StepGuard(&self.stepping);
        self.steps.set(self.steps.get() + 1);

        let mut busy = self.take_remote();
        busy |= self.fire_timers();

        let driver = self.driver.borrow().clone();
        let runnable = !self.run_queue.borrow().is_empty() || self.main_woken.get();
        let wait = if runnable {
            Some(Duration::ZERO)
        } else {
            let next_timer = self
                .timers
                .borrow()
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let shutdown = self
                .shutdown_deadline
                .get()
                .map(|d| d.saturating_duration_since(Instant::now()));
            earliest_duration(earliest_duration(next_timer, timeout), shutdown)
        };
        // While tasks are runnable, the driver is polled (a system call) only every few
        // steps, so tasks that yield to each other switch at memory speed yet I/O is
        // still looked at often.
        let skip_poll = runnable && self.busy_steps.get() < POLL_EVERY;
        if skip_poll {
            self.busy_steps.set(self.busy_steps.get() + 1);
        } else if wait.is_some() || self.alive() {
            // (With no timeout and nothing that could ever end the wait: no wait at all.)
            self.busy_steps.set(0);
            driver.before_park();
            let mut woke = 0usize;
            driver.park(wait, &mut |id| {
                woke += 1;
                self.wake(id);
            })?;
            busy |= woke > 0;
            busy |= self.take_remote();
            busy |= self.fire_timers();
        }
        if self
            .shutdown_deadline
            .get()
            .is_some_and(|d| Instant::now() >= d)
        {
            self.shutdown_deadline.set(None);
            self.cancel_all(true);
            busy = true;
        }
        busy |= self.run_pass();
        // Output written during the pass leaves now, not at the next step, which a
        // program driving `step` may take much later.
        driver.before_park();
        Ok(busy)
    }

    fn take_remote(&self) -> bool {
        let ids = self.remote.take();
        let any = !ids.is_empty();
        for id in ids {
            self.unpark_local(id);
        }
        self.seam.take(self) || any
    }

    fn fire_timers(&self) -> bool {
        if self.timers.borrow().is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut any = false;
        loop {
            let due = self.timers.borrow_mut().pop_due(now);
            let Some((_, action)) = due else { break };
            any = true;
            match action {
                TimerAction::Wake(id) => {
                    self.set_flag(id, |s| s.timed_out = true);
                    self.wake(id);
                }
                TimerAction::Call(f) => f(),
            }
        }
        any
    }

    /// Resumes every task that was runnable when the pass began.
    fn run_pass(&self) -> bool {
        let mut batch = std::mem::take(&mut *self.spare_queue.borrow_mut());
        std::mem::swap(&mut batch, &mut *self.run_queue.borrow_mut());
        let any = !batch.is_empty();
        while let Some(id) = batch.pop_front() {
            self.resume(id);
        }
        *self.spare_queue.borrow_mut() = batch;
        any
    }

    fn resume(&self, id: TaskId) {
        let (mut coro, input) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(id.index) else {
                return;
            };
            if slot.serial != id.serial || slot.state != State::Queued {
                return;
            }
            let Some(coro) = slot.coro.take() else {
                return;
            };
            slot.state = State::Running;
            overflow::enter(
                slot.guard,
                slot.name.as_deref(),
                slot.stack_size,
                slot.serial,
            );
            // A task cancelled before it started never runs: it starts by unwinding.
            let input = if slot.unwinding || (slot.cancelled && !coro.started()) {
                Resume::Unwind
            } else {
                Resume::Run
            };
            (coro, input)
        };
        let prev = CURRENT_TASK.with(|c| c.replace(Some(id)));
        BUDGET_LEFT.with(|b| b.set(BUDGET));
        let result = coro.resume(input);
        overflow::leave();
        context::leave();
        CURRENT_TASK.with(|c| c.set(prev));
        match result {
            CoroutineResult::Yield(()) => {
                let mut tasks = self.tasks.borrow_mut();
                let slot = &mut tasks[id.index];
                slot.coro = Some(coro);
                if slot.state == State::Running {
                    slot.state = State::Suspended;
                }
            }
            CoroutineResult::Return(()) => {
                let slot = self.tasks.borrow_mut().remove(id.index);
                let stack = coro.into_stack();
                self.stacks.borrow_mut().give(stack);
                drop(slot);
            }
        }
    }

    /// Names, through the error handler, the tasks that were spawned but never ran: the
    /// thread exits without having run its loop since (`copas::spawn` from a thread that
    /// never calls `run`).
    fn report_lost(&self) {
        let thread = std::thread::current();
        let lost: Vec<TaskPanic> = self
            .tasks
            .borrow()
            .iter()
            .filter(|(_, s)| !s.cancelled && s.coro.as_ref().is_some_and(|c| !c.started()))
            .map(|(index, s)| TaskPanic {
                task: TaskId {
                    index,
                    serial: s.serial,
                },
                name: s.name.clone(),
                message: format!(
                    "it was spawned on thread '{}', which exited without running its loop",
                    thread.name().unwrap_or("<unnamed>")
                ),
                peer: None,
                lost: true,
            })
            .collect();
        let handler = self.error_handler.borrow().clone();
        for info in lost {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| match &handler {
                Some(h) => h(&info),
                None => eprintln!("copas: {info}"),
            }));
        }
    }

    /// Unwinds every task; used when the thread's runtime is dropped.
    fn shutdown(&self) {
        self.shutting_down.set(true);
        self.seam.close();
        self.report_lost();
        // Bounded: a task that catches the unwind and spawns new tasks forever would
        // otherwise keep this going.
        for _ in 0..64 {
            let ids: Vec<TaskId> = self
                .tasks
                .borrow_mut()
                .iter_mut()
                .map(|(index, slot)| {
                    slot.unwinding = true;
                    slot.cancelled = true;
                    TaskId {
                        index,
                        serial: slot.serial,
                    }
                })
                .collect();
            if ids.is_empty() {
                break;
            }
            for id in ids {
                self.wake(id);
            }
            self.run_pass();
        }
        let timers = self.timers.borrow_mut().clear();
        drop(timers);
        let rest: Vec<Slot> = self.tasks.borrow_mut().drain().collect();
        // Coroutines still unfinished are force-unwound by corosensei as they drop.
        drop(rest);
    }
}

fn task_main<F, T>(id: TaskId, spec: TaskSpec, state: Rc<JoinState<T>>, f: F, first: Resume)
where
    F: FnOnce() -> T,
{
    let outcome = if first == Resume::Unwind {
        drop(f);
        Err(JoinError::Cancelled)
    } else {
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Ok(v),
            Err(payload) if payload.is::<Unwinding>() => Err(JoinError::Cancelled),
            Err(payload) => {
                report_panic(id, &spec, payload.as_ref());
                Err(JoinError::Panicked(payload))
            }
        }
    };
    *state.result.borrow_mut() = Some(outcome);
    if let Some(w) = state.waiter.take() {
        if let Some(rt) = Runtime::try_current() {
            rt.shared.wake(w);
        }
    }
}

fn report_panic(id: TaskId, spec: &TaskSpec, payload: &(dyn Any + Send)) {
    let info = TaskPanic {
        task: id,
        name: spec.name.clone(),
        message: payload_str(payload)
            .unwrap_or("<non-string payload>")
            .to_owned(),
        peer: spec.peer,
        lost: false,
    };
    let handler = spec
        .error_handler
        .clone()
        .or_else(|| Runtime::try_current().and_then(|rt| rt.shared.error_handler.borrow().clone()));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match handler {
        Some(h) => h(&info),
        None => eprintln!("copas: {info}"),
    }));
    if let Err(p) = outcome {
        if !p.is::<Unwinding>() {
            eprintln!(
                "copas: the error handler panicked ({}) while reporting: {info}",
                payload_str(p.as_ref()).unwrap_or("<non-string payload>")
            );
        }
    }
}

/// Suspends the current task until it is woken (`Ok`), its `deadline` passes
/// (`TimedOut`), or it is cancelled (an error for which `is_cancelled` holds).
pub(crate) fn suspend(deadline: Option<Instant>) -> io::Result<()> {
    // While the thread exits, destructors of unwound tasks may still try to block.
    let rt = Runtime::try_current().ok_or_else(gone)?;
    suspend_on(&rt, deadline)
}

/// The error of a call that needs the runtime while the thread exits and tears it down.
pub(crate) fn gone() -> io::Error {
    io::Error::other("copas: the runtime is not available while the thread exits")
}

pub(crate) fn suspend_on(rt: &Runtime, deadline: Option<Instant>) -> io::Result<()> {
    suspend_inner(rt, deadline, false)
}

/// Suspends as [`suspend_on`]; with `requeue`, the task is put back in the run queue
/// first (a yield), once it is known that it will really suspend.
fn suspend_inner(rt: &Runtime, deadline: Option<Instant>, requeue: bool) -> io::Result<()> {
    let shared = &*rt.shared;
    if std::thread::panicking() {
        return Err(error::panicking());
    }
    let Some(id) = current_task_id().filter(|_| context::in_coroutine()) else {
        let deadline = earliest(deadline, shared.main_scope_deadline.get());
        return suspend_main(shared, deadline);
    };
    let deadline = {
        let mut tasks = shared.tasks.borrow_mut();
        let slot = &mut tasks[id.index];
        if slot.unwinding {
            drop(tasks);
            panic::resume_unwind(Box::new(Unwinding));
        }
        if slot.cancelled {
            return Err(crate::Cancelled.into());
        }
        let deadline = earliest(deadline, slot.scope_deadline);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        slot.timed_out = false;
        deadline
    };
    if requeue {
        shared.wake(id);
    }
    let timer = deadline.map(|d| {
        shared.sleeping.set(shared.sleeping.get() + 1);
        shared.insert_timer(d, TimerAction::Wake(id))
    });
    let resumed = context::suspend();
    if let Some(key) = timer {
        shared.sleeping.set(shared.sleeping.get() - 1);
        shared.remove_timer(key);
    }
    let (cancelled, timed_out) = {
        let tasks = shared.tasks.borrow();
        let slot = &tasks[id.index];
        (slot.cancelled, slot.timed_out)
    };
    if resumed == Resume::Unwind {
        panic::resume_unwind(Box::new(Unwinding));
    }
    if cancelled {
        Err(crate::Cancelled.into())
    } else if timed_out {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(())
    }
}

fn earliest_duration(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
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
    let rt = Runtime::current();
    let new = Instant::now().checked_add(timeout);
    let id = current_task_id().filter(|_| context::in_coroutine());
    let prev = match id {
        Some(id) => rt.shared.tasks.borrow()[id.index].scope_deadline,
        None => rt.shared.main_scope_deadline.get(),
    };
    let set = |d: Option<Instant>| match id {
        Some(id) => rt.shared.set_flag(id, |s| s.scope_deadline = d),
        None => rt.shared.main_scope_deadline.set(d),
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

/// Counts one operation that completed without suspending, and yields once the task's
/// budget is spent, so a task that always finds its data ready cannot starve the others.
///
/// The operation itself has succeeded, so this never fails: a cancellation or an expired
/// [`with_timeout`] scope shows at the task's next real wait.
pub fn cooperate() {
    // The fast path is one thread-local decrement: this runs on every socket operation.
    let spent = BUDGET_LEFT.with(|b| {
        let left = b.get().saturating_sub(1);
        b.set(left);
        left == 0
    });
    if !spent {
        return;
    }
    BUDGET_LEFT.with(|b| b.set(BUDGET));
    let Some(id) = current_task_id().filter(|_| context::in_coroutine()) else {
        return;
    };
    let Some(rt) = Runtime::try_current() else {
        return;
    };
    if !std::thread::panicking() {
        rt.shared.wake(id);
        if context::suspend() == Resume::Unwind {
            panic::resume_unwind(Box::new(Unwinding));
        }
    }
}

/// Lets every other runnable task run once before the caller goes on (Copas `pause()`
/// with no delay).
///
/// # Errors
/// Fails if the task is cancelled, or during a panic. Outside a task it runs one step of
/// the loop.
pub fn yield_now() -> io::Result<()> {
    let rt = Runtime::try_current().ok_or_else(gone)?;
    match current_task_id().filter(|_| context::in_coroutine()) {
        Some(_) => suspend_inner(&rt, None, true),
        None => rt.shared.step(Some(Duration::ZERO)).map(drop),
    }
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
    let rt = Runtime::try_current().ok_or_else(gone)?;
    let Some(id) = current_task_id().filter(|_| context::in_coroutine()) else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copas: park outside a task",
        ));
    };
    loop {
        if rt.shared.take_token(id) {
            return Ok(());
        }
        rt.shared.set_parked(id, true);
        let r = suspend_on(&rt, deadline);
        rt.shared.set_parked(id, false);
        if rt.shared.take_token(id) {
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
    Runtime::try_current()?.shared.current_task()
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
/// servers to stop accepting; [`run`] returns once the remaining work is done.
pub fn exit() {
    Runtime::current().shared.exit();
}

/// Whether [`exit`] was called during this [`run`] (Copas `exiting`).
pub fn is_exiting() -> bool {
    Runtime::current().shared.is_exiting()
}

/// Blocks the current task until [`exit`] is called, or the loop runs out of work and
/// exits by itself (Copas `waitforexit`). Waiting here does not keep the loop going.
///
/// # Errors
/// Fails if the task is cancelled or during a panic; `Unsupported` outside a task.
pub fn wait_for_exit() -> io::Result<()> {
    let rt = Runtime::try_current().ok_or_else(gone)?;
    let Some(id) = current_task_id().filter(|_| context::in_coroutine()) else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copas: wait_for_exit outside a task",
        ));
    };
    while !rt.shared.is_exiting() {
        rt.shared.set_exit_waiter(id, true);
        let r = suspend_on(&rt, None);
        rt.shared.set_exit_waiter(id, false);
        r?;
    }
    Ok(())
}

/// Registers the current task to be woken (once) by [`exit`], without suspending it; it
/// then suspends on something else (a server waiting for connections does this).
#[doc(hidden)]
pub fn wake_on_exit() {
    if let Some(id) = current_task_id() {
        Runtime::current().shared.set_exit_waiter(id, true);
    }
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
    rt.shared.exit();
    let deadline = Instant::now().checked_add(grace);
    rt.shared.shutdown_deadline.set(deadline);
    if grace.is_zero() {
        rt.shared.cancel_all(true);
    }
}

/// Cancels every task of the current thread's runtime (Copas `cancelall`): their blocking
/// calls fail with a cancellation error so they wind down, and [`exit`] is called. A later
/// [`run`] works as usual.
pub fn cancel_all() {
    let rt = Runtime::current();
    rt.shared.cancel_all(false);
    rt.shared.exit();
}
