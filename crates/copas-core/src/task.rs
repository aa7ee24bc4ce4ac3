//! Spawning ([`Builder`], [`spawn`]) and the handles to tasks ([`Task`],
//! [`JoinHandle`]).
//!
//! Invariant: a task's record and coroutine are built here and handed to the runtime
//! whole; the task's root ([`task_root`]) is the only writer of its join state's result.

use std::any::Any;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;

use crate::context::{self, Resume};
use crate::error::{payload_str, Unwinding};
use crate::id::TaskId;
use crate::join::{JoinError, JoinState};
use corosensei::stack::Stack;

use crate::overflow;
use crate::remote::Remote;
use crate::report::{ErrorHandler, Problem, TaskPanic};
use crate::runtime::{self, Runtime, Shared};
use crate::slot::{Coro, NewTask};
use crate::suspend::{self, gone};

/// A handle to a task: its id, its name, and a way to wake it from [`park`](crate::park).
///
/// Like [`std::thread::Thread`], it is `Send + Sync`: [`Task::unpark`] works from any thread.
#[derive(Clone)]
pub struct Task {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) remote: Arc<Remote>,
}

impl Task {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Wakes the task if it is in [`park`](crate::park), or makes its next `park` return
    /// at once (Copas `wakeup`). Returns whether the task was parked right then (always
    /// `true` from another thread, where that cannot be known without a race).
    pub fn unpark(&self) -> bool {
        if std::thread::current().id() == self.remote.thread {
            runtime::with_existing(|shared| {
                Arc::ptr_eq(&shared.remote, &self.remote) && shared.unpark_local(self.id)
            })
            .unwrap_or(false)
        } else {
            self.remote.push(self.id);
            true
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// An owned permission to wait for a task's result (Copas `addthread`'s coroutine, and its
/// `future`). Dropping it detaches the task: it goes on running, and if it then ends with
/// an `Err` nobody can see, the error is reported to the error handler
/// ([`Problem::Failed`](crate::Problem::Failed)) for the result types
/// `Result<(), E>` with `E` one of [`io::Error`], `String`, `&'static str`,
/// `Box<dyn Error>`, `Box<dyn Error + Send + Sync>`,
/// [`SyncError`](crate::sync::SyncError) and [`JoinError`]. (Panics are reported whether
/// the task is detached or not.)
///
/// It is tied to the runtime's thread:
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(copas_core::spawn(|| 1));
/// ```
pub struct JoinHandle<T> {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Arc<str>>,
    /// Built on first use: it holds an `Arc` whose counting would cost every spawn.
    pub(crate) task: std::cell::OnceCell<Task>,
    pub(crate) state: Rc<JoinState<T>>,
    pub(crate) runtime: Runtime,
    /// Gives the state to the runtime's pool once the task has finished (made where
    /// `T: 'static` is known, which `Drop` cannot require).
    pub(crate) recycle: fn(&Shared, &Rc<JoinState<T>>),
}

impl<T> JoinHandle<T> {
    /// Waits for the task to finish and returns its value (Copas `future:get`).
    ///
    /// Inside a task this suspends the caller. Outside any task it drives the runtime until
    /// the joined task is done.
    ///
    /// # Errors
    /// [`JoinError::Panicked`] if the task panicked, [`JoinError::Cancelled`] if it was
    /// cancelled. If the *calling* task is cancelled while it waits, the result is
    /// `Cancelled` too (and the joined task goes on).
    ///
    /// # Panics
    /// Outside a task, panics if the runtime runs out of work while the task is still
    /// unfinished (it is parked forever): that wait could never end.
    ///
    /// # Examples
    /// ```
    /// let h = copas_core::spawn(|| 6 * 7);
    /// assert_eq!(h.join().unwrap(), 42);
    /// ```
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        loop {
            if let Some(r) = self.state.result.borrow_mut().take() {
                return r;
            }
            let r = suspend::suspend_join(&self.runtime, self.id, &self.state.waiter);
            self.state.waiter.set(None);
            match r {
                Ok(()) => {}
                Err(e) if crate::is_cancelled(&e) => return Err(JoinError::Cancelled),
                Err(e) => {
                    if let Some(r) = self.state.result.borrow_mut().take() {
                        return r;
                    }
                    panic!("copas: JoinHandle::join cannot finish: {e}")
                }
            }
        }
    }

    /// The result if the task has finished, without waiting; the handle is given back
    /// otherwise.
    ///
    /// # Errors
    /// `Err(self)` while the task is still running.
    pub fn try_join(self) -> Result<Result<T, JoinError>, Self> {
        let r = self.state.result.borrow_mut().take();
        match r {
            Some(r) => Ok(r),
            None => Err(self),
        }
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.state.result.borrow().is_some()
    }

    /// The task this handle is for.
    pub fn task(&self) -> &Task {
        self.task.get_or_init(|| Task {
            id: self.id,
            name: self.name.clone(),
            remote: self.runtime.shared().remote.clone(),
        })
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Cancels the task (Copas `removethread`). Its current or next blocking call fails
    /// with an error for which [`is_cancelled`](crate::is_cancelled) holds, so the task can
    /// wind down through its own error paths. Any suspension after that one (a second
    /// blocking call, a yield, [`cooperate`](crate::cooperate) at the end of its budget)
    /// unwinds the task's stack instead, as Copas drops a removed coroutine: its
    /// destructors run, and [`join`](JoinHandle::join) reports
    /// [`JoinError::Cancelled`] (unless it returned first). So a task that ignores the
    /// error and loops cannot keep the thread busy. A task that has not started yet never
    /// runs. Cancelling a finished task does nothing. Returns whether the task was still
    /// running.
    pub fn cancel(&self) -> bool {
        self.runtime.shared().cancel(self.id)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.state.detached.set(true);
        (self.recycle)(self.runtime.shared(), &self.state);
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Task configuration (as [`std::thread::Builder`]).
///
/// # Examples
/// ```
/// let h = copas_core::Builder::new()
///     .name("worker".into())
///     .stack_size(64 * 1024)
///     .spawn(|| copas_core::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
/// ```
#[derive(Default)]
#[must_use = "a Builder does nothing until .spawn() is called"]
pub struct Builder {
    name: Option<Arc<str>>,
    stack_size: Option<usize>,
    error_handler: Option<ErrorHandler>,
    peer: Option<SocketAddr>,
    lingering: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("stack_size", &self.stack_size)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder with default settings: no name, the runtime's default stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the task; the name appears in panic reports and [`Task::name`].
    pub fn name(mut self, name: String) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// The usable size of the task's stack in bytes (default
    /// [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE)). Only stacks of the default
    /// size are pooled and reused.
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// A handler for this task's panic, used instead of the runtime's.
    pub fn error_handler(mut self, f: impl Fn(&TaskPanic) + 'static) -> Builder {
        self.error_handler = Some(Rc::new(f));
        self
    }

    /// The peer address the task serves, reported with its panics (set by servers).
    pub fn peer_addr(mut self, addr: SocketAddr) -> Builder {
        self.peer = Some(addr);
        self
    }

    /// Marks the task as one that only delivers a dropped stream's buffered output within
    /// its own deadline: a graceful [`shutdown`](crate::shutdown) lets it finish instead of
    /// cancelling it. For I/O drivers.
    #[doc(hidden)]
    pub fn lingering(mut self) -> Builder {
        self.lingering = true;
        self
    }

    /// Spawns the task on the current thread's runtime. It first runs in the next loop step.
    ///
    /// # Errors
    /// When the stack cannot be allocated (the error from `mmap`), or while the thread
    /// exits and its runtime is being torn down (a destructor run by the shutdown).
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let rt = Runtime::try_current().ok_or_else(gone)?;
        let shared = rt.shared();
        let state = shared.join_states.make::<T>();
        let (stack, size) = {
            let mut stacks = shared.stacks.borrow_mut();
            let size = self.stack_size.unwrap_or(stacks.default_size());
            (stacks.take(size)?, size)
        };
        let guard = overflow::guard_range(stack.limit().get());
        let id = shared.next_id();
        let root_state = state.clone();
        let coro = Coro::with_stack(stack, move |y, first: Resume| {
            context::enter(y);
            task_root(id, root_state, f, first);
        });
        // The record keeps the name alive for `overflow_info`, which points into its heap
        // allocation.
        let name = self.name.clone();
        #[cfg(feature = "tracing")]
        let span = crate::diag::task_span(id, name.as_deref(), self.peer); // diag
        let overflow_info = overflow::TaskInfo::new(guard, name.as_deref(), size, id.serial);
        let cell = shared.records.make(NewTask {
            id,
            coro,
            name,
            overflow_info,
            error_handler: self.error_handler,
            peer: self.peer,
            lingering: self.lingering,
            #[cfg(feature = "tracing")]
            span, // diag
        });
        shared.insert_task(cell);
        Ok(JoinHandle {
            id,
            name: self.name,
            task: std::cell::OnceCell::new(),
            state,
            runtime: rt,
            recycle: |shared, state| shared.join_states.recycle(state),
        })
    }
}

/// The root of every task's stack: runs the closure, keeps its outcome for `join`, wakes
/// the joiner, and reports what nobody will see.
fn task_root<F, T>(id: TaskId, state: Rc<JoinState<T>>, f: F, first: Resume)
where
    F: FnOnce() -> T,
    T: 'static,
{
    let outcome = if first == Resume::Unwind {
        drop(f);
        Err(JoinError::Cancelled)
    } else {
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Ok(v),
            Err(payload) if payload.is::<Unwinding>() => Err(JoinError::Cancelled),
            Err(payload) => {
                let message = payload_str(payload.as_ref())
                    .unwrap_or("<non-string payload>")
                    .to_owned();
                report_about(id, Problem::Panicked, message);
                Err(JoinError::Panicked(payload))
            }
        }
    };
    #[cfg(feature = "tracing")]
    if matches!(outcome, Err(JoinError::Cancelled))
        && context::with_current(|c, _| !c.has(crate::slot::flag::UNWINDING)).unwrap_or(false)
    {
        tracing::debug!("copas: task unwound: cancelled"); // diag
    }
    if state.detached.get() {
        if let Ok(v) = &outcome {
            if let Some(message) = detached_error(v) {
                report_about(id, Problem::Failed, message);
            }
        }
    }
    *state.result.borrow_mut() = Some(outcome);
    if let Some(w) = state.waiter.take() {
        context::with_current(|_, shared| shared.wake(w));
    }
}

fn report_about(id: TaskId, problem: Problem, message: String) {
    let Some(rt) = Runtime::try_current() else {
        eprintln!("copas: task {id}: {message}");
        return;
    };
    match rt.shared().tasks.get(id) {
        Some(cell) => rt.shared().report(&cell, problem, message),
        None => eprintln!("copas: task {id}: {message}"),
    }
}

/// The text of a detached task's error, if its result is one of the `Result` types
/// recognised: `Result<(), E>` for `E` = [`io::Error`], `String`, `&'static str`,
/// `Box<dyn Error>`, `Box<dyn Error + Send + Sync>`, [`SyncError`](crate::sync::SyncError)
/// and [`JoinError`](crate::JoinError).
pub(crate) fn detached_error(value: &dyn Any) -> Option<String> {
    fn err<E: 'static>(v: &dyn Any, show: impl Fn(&E) -> String) -> Option<Option<String>> {
        v.downcast_ref::<Result<(), E>>()
            .map(|r| r.as_ref().err().map(&show))
    }
    type DynErr = Box<dyn std::error::Error>;
    type DynErrSend = Box<dyn std::error::Error + Send + Sync>;
    err::<io::Error>(value, ToString::to_string)
        .or_else(|| err::<String>(value, Clone::clone))
        .or_else(|| err::<&'static str>(value, |s| (*s).to_owned()))
        .or_else(|| err::<DynErr>(value, ToString::to_string))
        .or_else(|| err::<DynErrSend>(value, ToString::to_string))
        .or_else(|| err::<crate::sync::SyncError>(value, ToString::to_string))
        .or_else(|| err::<crate::JoinError>(value, ToString::to_string))
        .flatten()
}

/// Spawns a task running `f` on the current thread's runtime (Copas `addthread`).
///
/// The task first runs in the next loop step. Its result, or its panic, is kept for
/// [`JoinHandle::join`].
///
/// # Panics
/// Panics if the stack cannot be allocated; [`Builder::spawn`] returns the error instead.
///
/// # Examples
/// ```
/// let h = copas_core::spawn(|| "done");
/// copas_core::run().unwrap();
/// assert_eq!(h.join().unwrap(), "done");
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    match Builder::new().spawn(f) {
        Ok(h) => h,
        Err(e) => panic!("copas: failed to spawn a task: {e}"),
    }
}
