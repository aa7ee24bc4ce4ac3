//! Reports about tasks that nobody else would hear of: panics, errors of detached tasks,
//! deadlocks, tasks that never ran. They go to the task's own error handler, else the
//! runtime's, else stderr (Copas `seterrorhandler`).
//!
//! Invariant: a report never unwinds into the scheduler: a panicking handler is caught and
//! noted on stderr. Depends on `id` and `wait` only.

use std::fmt;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{payload_str, Unwinding};
use crate::id::TaskId;
use crate::wait::WaitOn;

/// What went wrong with a task, in a [`TaskPanic`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The task panicked ([`TaskPanic::message`] is the panic message). Reported whether
    /// or not anyone joins the task.
    Panicked,
    /// The task was detached (its [`JoinHandle`](crate::JoinHandle) dropped) and returned
    /// an `Err` that nobody can see; the message is the error's `Display`.
    Failed,
    /// The loop ran out of work while this task waited on something nothing can wake.
    Deadlocked(WaitOn),
    /// The task was spawned but its thread's runtime was dropped before the loop ever ran
    /// it.
    NeverRan,
    /// A closure handed over by [`Handle::spawn_boxed`](crate::Handle::spawn_boxed) was
    /// accepted but its runtime was dropped before it could run.
    RemoteSpawnLost,
}

/// What an error handler is told about a task: a panic (the common case, hence the
/// name), a detached task's error, a deadlock, or a task that never ran. See
/// [`TaskPanic::problem`].
#[derive(Debug, Clone)]
pub struct TaskPanic {
    pub(crate) task: TaskId,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) message: String,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) problem: Problem,
}

impl TaskPanic {
    /// The task concerned.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// Its name, if it had one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The panic message (`"<non-string payload>"` when the payload was not a string), the
    /// error's text, or a description of the deadlock.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For a connection handler, the address of the peer it was serving.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// What kind of report this is.
    pub fn problem(&self) -> &Problem {
        &self.problem
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
        match self.problem {
            Problem::Panicked => write!(f, " panicked: {}", self.message),
            Problem::Failed => write!(f, " failed, and nobody joins it: {}", self.message),
            Problem::Deadlocked(_) => write!(f, " is deadlocked: {}", self.message),
            Problem::NeverRan => write!(f, " never ran: {}", self.message),
            Problem::RemoteSpawnLost => write!(f, " was lost: {}", self.message),
        }
    }
}

/// A function told about every task panic and the other [`Problem`]s (Copas
/// `seterrorhandler`).
pub type ErrorHandler = Rc<dyn Fn(&TaskPanic)>;

/// Hands `info` to `handler` (or prints it), never letting a panic out.
pub(crate) fn deliver(handler: Option<ErrorHandler>, info: &TaskPanic) {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match handler {
        Some(h) => h(info),
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

/// "3 ms" style, for reports.
pub(crate) fn short_duration(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1} s", d.as_secs_f64())
    } else if d.as_millis() >= 1 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} µs", d.as_micros())
    }
}
