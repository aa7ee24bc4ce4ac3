//! The runtime: its per-thread state ([`Shared`]) and the public [`Runtime`] type.
//!
//! Invariants:
//! - One `Shared` per thread, held by a thread-local; it is dropped (and every unfinished
//!   task unwound) when the thread exits.
//! - No `RefCell` borrow of the task table, run queue or timers is held while a coroutine
//!   runs or while a task, closure or timer entry is dropped: destructors call back in.
//! - The loop is alive while anything could still make progress: a runnable task, a
//!   timer, something queued by another thread, a [`KeepAlive`](crate::hooks::KeepAlive)
//!   guard, or a driver waiter.
//!
//! The loop itself is in `step.rs`, suspension and wake-ups in `suspend.rs`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::driver::{Driver, ThreadParker};
use crate::id::TaskId;
use crate::join::JoinPool;
use crate::overflow;
use crate::remote::{Handle, Remote};
use crate::report::{self, ErrorHandler, Problem, TaskPanic};
use crate::run_queue::RunQueue;
use crate::slot::{flag, RecordPool, State, TaskCell, TaskTable};
use crate::stack::StackPool;
use crate::timer_queue::{TimerAction, TimerKey, TimerQueue};
use crate::wait::WaitOn;

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
    /// Tasks suspended with a deadline (sleeping, or waiting with a timeout).
    pub sleeping: usize,
    /// Tasks in [`park`](crate::park).
    pub parked: usize,
    /// Armed timer entries (task deadlines and [`Timer`](crate::Timer)s).
    pub timers: usize,
    /// Loop steps taken so far.
    pub steps: u64,
    /// Task stacks kept for reuse.
    pub pooled_stacks: usize,
    /// I/O sources registered with the driver.
    pub sockets: usize,
    /// The deepest stack use, in bytes, of any task on a pooled stack (the default stack
    /// size), from resident pages (`mincore`, one call per 64 stacks): compare it with
    /// [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE) to size stacks.
    pub stack_high_water: usize,
}

/// The state of one thread's runtime.
pub(crate) struct Shared {
    pub(crate) tasks: TaskTable,
    /// Finished tasks' records, for reuse.
    pub(crate) records: RecordPool,
    /// Finished, dropped handles' join states, for reuse.
    pub(crate) join_states: JoinPool,
    pub(crate) run_queue: RunQueue,
    pub(crate) timers: RefCell<TimerQueue>,
    pub(crate) driver: RefCell<Rc<dyn Driver>>,
    pub(crate) driver_installed: Cell<bool>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) stacks: RefCell<StackPool>,
    pub(crate) error_handler: RefCell<Option<ErrorHandler>>,
    pub(crate) next_serial: Cell<u64>,
    pub(crate) main_woken: Cell<bool>,
    pub(crate) stepping: Cell<bool>,
    pub(crate) exiting: Cell<bool>,
    pub(crate) shutting_down: Cell<bool>,
    pub(crate) steps: Cell<u64>,
    pub(crate) sleeping: Cell<usize>,
    /// Live `KeepAlive` guards.
    pub(crate) keep_alive: Cell<usize>,
    /// The clock at the loop's latest poll (at first, the runtime's creation): the cheap
    /// "since" of wait records.
    pub(crate) last_now: Cell<Option<Instant>>,
    /// `with_timeout` scope of code running outside any task.
    pub(crate) main_scope_deadline: Cell<Option<Instant>>,
    /// Steps in a row that skipped polling the driver because tasks were runnable.
    pub(crate) busy_steps: Cell<u32>,
    /// When a graceful shutdown cancels what is left (see [`shutdown`](crate::shutdown)).
    /// It bounds the loop's waits but does not keep the loop alive.
    pub(crate) shutdown_deadline: Cell<Option<Instant>>,
    /// The driver's words for a descriptor a task waits on (`diag.rs`).
    pub(crate) fd_describer: Cell<Option<crate::diag::FdDescriber>>,
    /// The blocked-loop watchdog's record (also in `remote`, for `Handle::dump`); here
    /// to save the loop one pointer load per switch.
    pub(crate) watch: Arc<crate::watchdog::Watch>,
}

/// A copas runtime: the scheduler of one thread.
///
/// There is one per thread, created on first use; [`Runtime::current`] returns it and the
/// free functions ([`spawn`](crate::spawn), [`run`](crate::run), [`sleep`](crate::sleep),
/// …) act on it. Use it directly to embed copas in a program with its own main loop
/// ([`Runtime::step`]) or to configure it.
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(copas_core::Runtime::current());
/// ```
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Rc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The thread's runtime, made on first use. A `OnceCell`, not a `RefCell`: the hot lookup
/// (every spawn, every call made outside a task) is one load and a test.
struct Holder(std::cell::OnceCell<Runtime>);

impl Drop for Holder {
    fn drop(&mut self) {
        // The thread-local is marked destroyed before this runs: from here on,
        // `try_current` and `with_existing` find no runtime.
        let rt = self.0.take();
        if let Some(rt) = rt {
            rt.shared.shutdown();
        }
    }
}

thread_local! {
    static RUNTIME: Holder = const { Holder(std::cell::OnceCell::new()) };
}

/// Runs `f` on this thread's runtime if it has one (without creating it).
pub(crate) fn with_existing<R>(f: impl FnOnce(&Shared) -> R) -> Option<R> {
    RUNTIME
        .try_with(|h| h.0.get().map(|rt| rt.shared.clone()))
        .ok()
        .flatten()
        .map(|s| f(&s))
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
                h.0.get_or_init(|| Runtime {
                    shared: Rc::new(Shared::new()),
                })
                .clone()
            })
            .ok()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// A thread-safe handle to this runtime ([`Handle::exit`] from other threads).
    pub fn handle(&self) -> Handle {
        Handle {
            remote: self.shared.remote.clone(),
        }
    }

    /// Installs the I/O driver (copas-net's reactor does this on first use). Possible only
    /// once per runtime; before that, the runtime sleeps until its next timer when idle.
    ///
    /// # Errors
    /// [`io::ErrorKind::AlreadyExists`] if a driver is installed already.
    pub fn set_driver<D: Driver + 'static>(&self, driver: Rc<D>) -> io::Result<()> {
        if self.shared.driver_installed.get() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "copas: a driver is installed already",
            ));
        }
        self.shared.remote.set_notify(driver.notifier());
        *self.shared.driver.borrow_mut() = driver;
        self.shared.driver_installed.set(true);
        Ok(())
    }

    /// The installed driver, if it is a `D`.
    pub fn driver<D: Any>(&self) -> Option<Rc<D>> {
        if !self.shared.driver_installed.get() {
            return None;
        }
        let any: Rc<dyn Any> = self.shared.driver.borrow().clone();
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
    /// no timer, nothing waiting for I/O, no server, nothing queued from another thread
    /// and no [`KeepAlive`](crate::hooks::KeepAlive) guard.
    ///
    /// When the work runs out the runtime calls [`exit`](crate::exit) itself, so that
    /// [`wait_for_exit`](crate::wait_for_exit) callers can clean up, and returns once that
    /// is done too.
    ///
    /// Tasks in [`park`](crate::park), [`wait_for_exit`](crate::wait_for_exit) or a
    /// [`Queue`](crate::sync::Queue) pop are legal idles (as Copas's `pauseforever` and
    /// queue workers; see [`WaitOn::is_idle`]): they do not keep the loop going, and are
    /// not an error. But if the loop ends while no task is parked (an unpark from another
    /// thread could still release everything) and some task still waits on something
    /// nothing can ever wake — a
    /// [`sync::Mutex`](crate::sync::Mutex) held by another waiting task, a join of such a
    /// task — that is a deadlock: each such task is reported to the error handler
    /// ([`Problem::Deadlocked`](crate::Problem::Deadlocked), naming what it waits on) and
    /// `run` returns an error of kind [`io::ErrorKind::Deadlock`] that names them. The
    /// tasks stay suspended (a later `run` reports them again); they are unwound when the
    /// thread's runtime is dropped.
    ///
    /// # Errors
    /// A polling error from the driver; `Deadlock` as above; `Unsupported` when called
    /// from inside a task.
    pub fn run(&self) -> io::Result<()> {
        if self.shared.stepping.get() || crate::context::in_coroutine() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "copas: run cannot be called from inside a task or re-entrantly",
            ));
        }
        let shared = &*self.shared;
        shared.exiting.set(false);
        let outcome = loop {
            if !shared.alive() {
                if shared.exiting.get() {
                    break Ok(());
                }
                shared.exit();
                if !shared.alive() {
                    break Ok(());
                }
            }
            if let Err(e) = shared.step_passes(None, true) {
                break Err(e);
            }
        };
        // The exit belonged to this run: work started afterwards (a server driven by
        // `step`) must not see it.
        shared.exiting.set(false);
        shared.shutdown_deadline.set(None);
        outcome?;
        shared.check_deadlock()
    }

    /// Whether the loop has nothing left to do (Copas `finished`).
    pub fn is_finished(&self) -> bool {
        !self.shared.alive()
    }

    /// Sets the handler told about task panics and the other [`Problem`]s of tasks that
    /// have no handler of their own
    /// ([`Builder::error_handler`](crate::Builder::error_handler)). The default prints the
    /// report to stderr.
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
        let s = &self.shared;
        Stats {
            tasks: s.tasks.len(),
            running: s.tasks.count(|c| c.state.get() == State::Running),
            runnable: s.run_queue.len(),
            sleeping: s.sleeping.get(),
            parked: s.tasks.count(|c| c.parked.get()),
            timers: s.timers.borrow().len(),
            steps: s.steps.get(),
            pooled_stacks: s.stacks.borrow().pooled(),
            sockets: s.driver.borrow().sources(),
            stack_high_water: s.stacks.borrow().high_water(),
        }
    }

    /// What the task `id` waits on right now: `None` if it is not a live task of this
    /// runtime, [`WaitOn::Nothing`] if it is runnable or running.
    pub fn wait_of(&self, id: TaskId) -> Option<WaitOn> {
        self.shared.tasks.with(id, |c| match c.state.get() {
            State::Suspended => c.wait_on(),
            _ => WaitOn::Nothing,
        })
    }
}

impl Shared {
    fn new() -> Shared {
        overflow::init_thread(crate::context::running_info);
        let parker = Rc::new(ThreadParker::new());
        let remote = Arc::new(Remote::new(parker.notifier()));
        Shared {
            watch: remote.watch.clone(),
            tasks: TaskTable::default(),
            records: RecordPool::default(),
            join_states: JoinPool::default(),
            run_queue: RunQueue::default(),
            timers: RefCell::new(TimerQueue::default()),
            remote,
            driver: RefCell::new(parker),
            driver_installed: Cell::new(false),
            stacks: RefCell::new(StackPool::new()),
            error_handler: RefCell::new(None),
            next_serial: Cell::new(1),
            main_woken: Cell::new(false),
            stepping: Cell::new(false),
            exiting: Cell::new(false),
            shutting_down: Cell::new(false),
            steps: Cell::new(0),
            sleeping: Cell::new(0),
            keep_alive: Cell::new(0),
            last_now: Cell::new(Some(Instant::now())),
            main_scope_deadline: Cell::new(None),
            busy_steps: Cell::new(0),
            shutdown_deadline: Cell::new(None),
            fd_describer: Cell::new(None),
        }
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

    /// Whether anything can still make progress.
    #[inline]
    pub(crate) fn alive(&self) -> bool {
        !self.run_queue.is_empty()
            || !self.timers.borrow().is_empty()
            || self.remote.is_pending()
            || self.keep_alive.get() > 0
            || self.driver.borrow().has_waiters()
    }

    /// A new task's id (its index in the table and a fresh serial).
    pub(crate) fn next_id(&self) -> TaskId {
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        TaskId {
            index: self.tasks.vacant_key(),
            serial,
        }
    }

    /// Adds a task built by `Builder::spawn` and queues it for its first run.
    pub(crate) fn insert_task(&self, cell: Rc<TaskCell>) {
        self.tasks.insert(cell.clone());
        self.run_queue.push_back(cell);
    }

    /// The handler for reports about `cell` (its own, else the runtime's).
    pub(crate) fn handler_for(&self, cell: Option<&TaskCell>) -> Option<ErrorHandler> {
        cell.and_then(|c| c.error_handler.clone())
            .or_else(|| self.error_handler.borrow().clone())
    }

    pub(crate) fn report(&self, cell: &TaskCell, problem: Problem, message: String) {
        let info = TaskPanic {
            task: cell.id,
            name: cell.name.clone(),
            message,
            peer: cell.peer,
            problem,
        };
        #[cfg(feature = "tracing")]
        if !self.shutting_down.get() {
            crate::diag::report_event(&info);
        }
        report::deliver(self.handler_for(Some(cell)), &info);
    }

    /// After `run` found no more work: reports the tasks nothing can wake, if any.
    fn check_deadlock(&self) -> io::Result<()> {
        let all = self.tasks.all();
        if all.is_empty() || all.iter().any(|c| c.parked.get()) {
            return Ok(());
        }
        let stuck: Vec<&Rc<TaskCell>> = all
            .iter()
            .filter(|c| {
                c.state.get() == State::Suspended && !c.exit_waiter.get() && !c.wait_on().is_idle()
            })
            .collect();
        if stuck.is_empty() {
            return Ok(());
        }
        let mut names = Vec::new();
        let now = Instant::now();
        for c in &stuck {
            let wait = c.wait_on();
            let what = format!("waits on {}", self.waits_on(c, now));
            let who = match &c.name {
                Some(n) => format!("task '{n}' ({})", c.id),
                None => format!("task {}", c.id),
            };
            names.push(format!("{who} {what}"));
            self.report(c, Problem::Deadlocked(wait), what);
        }
        Err(io::Error::new(
            io::ErrorKind::Deadlock,
            format!(
                "copas: all tasks are asleep - deadlock! {}",
                names.join("; ")
            ),
        ))
    }

    /// Unwinds every task; used when the thread's runtime is dropped.
    fn shutdown(&self) {
        self.shutting_down.set(true);
        // This runs while the thread's thread-locals are destroyed, and a subscriber may
        // not survive that (tracing-subscriber's registry panics): the tasks still alive
        // leave their spans unclosed rather than closing them now, and emit no events.
        #[cfg(feature = "tracing")]
        for c in self.tasks.all() {
            std::mem::forget(c.span.replace(tracing::Span::none()));
        }
        for spawn in self.remote.close() {
            let info = TaskPanic {
                task: TaskId::MAIN,
                name: Some("remote spawn".into()),
                message: "its runtime's thread ended before the closure could run".into(),
                peer: None,
                problem: Problem::RemoteSpawnLost,
            };
            report::deliver(self.handler_for(None), &info);
            drop(spawn);
        }
        for c in self.tasks.all() {
            let never_ran = c.coro.borrow().as_ref().is_some_and(|co| !co.started());
            if never_ran && !c.has(flag::CANCELLED) {
                self.report(
                    &c,
                    Problem::NeverRan,
                    "the thread's runtime was dropped before its loop ran the task".into(),
                );
            }
        }
        // Bounded: a task that catches the unwind and spawns new tasks forever would
        // otherwise keep this going.
        for _ in 0..64 {
            let all = self.tasks.all();
            if all.is_empty() {
                break;
            }
            for c in &all {
                c.raise(flag::UNWINDING | flag::CANCELLED);
                self.wake_cell(c);
            }
            drop(all);
            self.run_pass();
        }
        let timers = self.timers.borrow_mut().clear();
        drop(timers);
        // Coroutines still unfinished are force-unwound by corosensei as they drop.
        for c in self.tasks.drain() {
            let coro = c.coro.borrow_mut().take();
            drop(coro);
        }
    }
}
