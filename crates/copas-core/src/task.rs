//! Task identities, spawning, and join handles.
//!
//! A task is identified by its slot in the runtime's task slab plus a serial number that is
//! never reused, so a stale [`TaskId`] (of a finished task whose slot was reused) matches
//! nothing.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::ThreadId;

use crate::runtime::{self, Remote, Runtime};

/// The identity of a task, unique for the life of its runtime.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub(crate) index: usize,
    pub(crate) serial: u64,
}

impl TaskId {
    /// The pseudo-task that stands for code running outside any task (the thread's own
    /// stack) while it drives the loop from a blocking call.
    pub(crate) const MAIN: TaskId = TaskId {
        index: usize::MAX,
        serial: 0,
    };

    pub(crate) fn is_main(self) -> bool {
        self.index == usize::MAX
    }

    /// A number unique among this runtime's tasks (never reused).
    pub fn as_u64(self) -> u64 {
        self.serial
    }

    #[cfg(test)]
    pub(crate) fn test_id(n: u64) -> TaskId {
        TaskId {
            index: n as usize,
            serial: n + 1,
        }
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_main() {
            f.write_str("TaskId(main)")
        } else {
            write!(f, "TaskId({})", self.serial)
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.serial)
    }
}

/// A handle to a task: its id, its name, and a way to wake it from [`park`](crate::park).
///
/// Like [`std::thread::Thread`], it is `Send + Sync`: [`Task::unpark`] works from any thread.
#[derive(Clone)]
pub struct Task {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) thread: ThreadId,
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
        if std::thread::current().id() == self.thread {
            if let Some(rt) = Runtime::try_current() {
                if Arc::ptr_eq(&rt.shared().remote, &self.remote) {
                    return rt.shared().unpark_local(self.id);
                }
            }
            false
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

/// Why [`JoinHandle::join`] has no value to give.
pub enum JoinError {
    /// The task panicked; this is the panic's payload.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The task was cancelled before it could finish, or the runtime shut down.
    Cancelled,
}

impl JoinError {
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// The panic message, when the task panicked with a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(p) => payload_str(p.as_ref()),
            JoinError::Cancelled => None,
        }
    }

    /// Resumes the task's panic on the current thread (as `std::panic::resume_unwind`).
    ///
    /// # Panics
    /// Always panics: with the task's payload, or with a message if it was cancelled.
    #[track_caller]
    pub fn into_panic(self) -> ! {
        match self {
            JoinError::Panicked(p) => std::panic::resume_unwind(p),
            JoinError::Cancelled => panic!("copas: joined task was cancelled"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message().unwrap_or("<non-string payload>"))
                .finish(),
            JoinError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
            JoinError::Cancelled => f.write_str("task cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        match e {
            JoinError::Cancelled => crate::Cancelled.into(),
            other => io::Error::other(other.to_string()),
        }
    }
}

pub(crate) fn payload_str(p: &(dyn Any + Send)) -> Option<&str> {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
}

/// What an error handler is told about a task that panicked.
#[derive(Debug, Clone)]
pub struct TaskPanic {
    pub(crate) task: TaskId,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) message: String,
    pub(crate) peer: Option<SocketAddr>,
    /// Not a panic: the task was spawned but its thread exited without ever running it.
    pub(crate) lost: bool,
}

impl TaskPanic {
    /// Whether this reports a task that never ran (its thread exited without running the
    /// loop after spawning it) rather than a panic.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// The task that panicked.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// Its name, if it had one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The panic message (`"<non-string payload>"` when the payload was not a string).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For a connection handler, the address of the peer it was serving.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl fmt::Display for TaskPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "task '{n}' ({})", self.task)?,
            None => write!(f, "task {}", self.task)?,
        }
        if let Some(peer) = self.peer {
            write!(f, " serving {peer}")?;
        }
        if self.lost {
            write!(f, " never ran: {}", self.message)
        } else {
            write!(f, " panicked: {}", self.message)
        }
    }
}

/// A function told about every task panic (Copas `seterrorhandler`).
pub type ErrorHandler = Rc<dyn Fn(&TaskPanic)>;

pub(crate) struct JoinState<T> {
    pub(crate) result: RefCell<Option<Result<T, JoinError>>>,
    pub(crate) waiter: Cell<Option<TaskId>>,
}

/// An owned permission to wait for a task's result (Copas `addthread`'s coroutine, and its
/// `future`). Dropping it detaches the task: it goes on running.
///
/// It is tied to the runtime's thread:
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(copas_core::spawn(|| 1));
/// ```
pub struct JoinHandle<T> {
    pub(crate) task: Task,
    pub(crate) state: Rc<JoinState<T>>,
    pub(crate) runtime: Runtime,
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
            let me = runtime::current_task_id().unwrap_or(TaskId::MAIN);
            self.state.waiter.set(Some(me));
            let r = runtime::suspend_on(&self.runtime, None);
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
        &self.task
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.task.id
    }

    /// Cancels the task (Copas `removethread`): its current or next blocking call returns
    /// an error for which [`is_cancelled`](crate::is_cancelled) holds, and so does every
    /// later one, so the task winds down through its own error paths and its destructors
    /// run. A task that has not started yet never runs. Cancelling a finished task does
    /// nothing. Returns whether the task was still running.
    pub fn cancel(&self) -> bool {
        self.runtime.shared().cancel(self.task.id)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("task", &self.task)
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
        let rt = Runtime::try_current().ok_or_else(runtime::gone)?;
        let shared = rt.shared();
        let size = self
            .stack_size
            .unwrap_or_else(|| shared.default_stack_size());
        let state = Rc::new(JoinState {
            result: RefCell::new(None),
            waiter: Cell::new(None),
        });
        let spec = runtime::TaskSpec {
            name: self.name.clone(),
            stack_size: size,
            error_handler: self.error_handler,
            peer: self.peer,
            lingering: self.lingering,
        };
        let id = shared.spawn_task(spec, state.clone(), f)?;
        let task = shared.task_handle(id, self.name);
        Ok(JoinHandle {
            task,
            state,
            runtime: rt.clone(),
        })
    }
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
