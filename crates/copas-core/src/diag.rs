//! Diagnostics: the task dump ([`Runtime::dump`], [`Handle::dump`]), the blocked-loop
//! warning's configuration and its report, and the words every report uses for what a
//! task waits on.
//!
//! Invariant: nothing here runs on the hot path. A dump reads the task records (`Cell`s)
//! and asks the kernel which stack pages are resident; it is built on the loop's thread,
//! never while a task runs except the caller's own.

use std::fmt::Write as _;
use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::remote::Handle;
use crate::report::{short_duration, Problem};
use crate::runtime::{Runtime, Shared};
use crate::slot::{State, TaskCell};
use crate::stack::resident_depth;
use crate::wait::WaitOn;

/// Turns a descriptor a task waits on into words for dumps ("read on 127.0.0.1:5123"):
/// installed by the I/O driver with [`hooks::set_fd_describer`](crate::hooks::set_fd_describer).
/// `None` falls back to "read on fd N".
pub type FdDescriber = fn(fd: i32, write: bool) -> Option<String>;

/// How long [`Handle::dump`] waits for the loop to answer.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

fn kib(bytes: usize) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

impl Shared {
    /// What a wait is, in the words of dumps and deadlock reports.
    pub(crate) fn describe_wait(&self, wait: &WaitOn) -> String {
        match wait {
            WaitOn::Fd { fd, write } => {
                match self.fd_describer.get().and_then(|f| f(*fd, *write)) {
                    Some(s) => s,
                    None => wait.to_string(),
                }
            }
            other => other.to_string(),
        }
    }

    /// "waits on mutex for 3 ms": what a suspended task waits on and for how long.
    pub(crate) fn waits_on(&self, cell: &TaskCell, now: Instant) -> String {
        let mut s = self.describe_wait(&cell.wait_on());
        if let Some(since) = cell.since.get() {
            let _ = write!(
                s,
                " for {}",
                short_duration(now.saturating_duration_since(since))
            );
        }
        s
    }

    fn dump_line(&self, out: &mut String, cell: &TaskCell, now: Instant, page: usize) {
        let _ = write!(out, "  {}", cell.id);
        if let Some(n) = &cell.name {
            let _ = write!(out, " '{n}'");
        }
        if let Some(peer) = cell.peer {
            let _ = write!(out, " (serving {peer})");
        }
        match cell.state.get() {
            State::Queued => out.push_str(" runnable"),
            State::Running => out.push_str(" running (it asked for this dump)"),
            State::Done => out.push_str(" finishing"),
            State::Suspended if cell.waiting.get() => {
                let _ = write!(out, " waits on {}", self.waits_on(cell, now));
            }
            State::Suspended => out.push_str(" suspended"),
        }
        let (lo, hi) = cell.overflow_info.stack_range();
        let used = resident_depth(lo, hi, page);
        let _ = writeln!(
            out,
            "; stack {} of {} used",
            kib(used),
            kib(cell.overflow_info.stack_size())
        );
    }

    /// The text of [`Runtime::dump`].
    pub(crate) fn dump_text(&self) -> String {
        let now = Instant::now();
        let mut cells = self.tasks.all();
        cells.sort_by_key(|c| c.id.serial);
        let (page, pooled, deepest) = {
            let stacks = self.stacks.borrow();
            (stacks.page(), stacks.pooled(), stacks.high_water())
        };
        let timers = self.timers.borrow().len();
        let sockets = self.driver.borrow().sources();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "copas: thread '{}': {} task{} ({} runnable), {} timer{}, {} socket{}, step {}; stack pool: {} idle, deepest use {}",
            std::thread::current().name().unwrap_or("<unnamed>"),
            cells.len(),
            if cells.len() == 1 { "" } else { "s" },
            self.run_queue.len(),
            timers,
            if timers == 1 { "" } else { "s" },
            sockets,
            if sockets == 1 { "" } else { "s" },
            self.steps.get(),
            pooled,
            kib(deepest),
        );
        for c in &cells {
            self.dump_line(&mut out, c, now, page);
        }
        out
    }

    /// The watchdog flagged `cell`: it ran `ran` without suspending.
    #[cold]
    pub(crate) fn report_blocked(&self, cell: &TaskCell, ran: Duration) {
        let message = format!("ran {} without yielding", short_duration(ran));
        self.report(cell, Problem::Blocked { ran }, message);
    }
}

impl Runtime {
    /// One line per live task — id, name, peer served, state, what it waits on in plain
    /// words ("read on 127.0.0.1:5123", "sleep until +1.2 s", "mutex", "join #4", "park",
    /// ...) and for how long, its stack's size and how much of it was used — after a
    /// header line with the runtime's counters and the stack pool's deepest use.
    ///
    /// The stack figure counts resident pages (`mincore`): it is exact to the page for a
    /// stack used by one task, and for a pooled stack reused by several tasks it is the
    /// deepest any of them went since the stack's memory was last released. "For how
    /// long" counts from the loop's clock at its latest poll before the wait began.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let rt = copas_core::Runtime::current();
    /// let _sleeper = copas_core::Builder::new()
    ///     .name("sleeper".into())
    ///     .spawn(|| copas_core::sleep(Duration::from_millis(50)))
    ///     .unwrap();
    /// rt.step(Some(Duration::ZERO)).unwrap();
    /// let dump = rt.dump();
    /// assert!(dump.contains("'sleeper' waits on sleep until +"), "{dump}");
    /// ```
    pub fn dump(&self) -> String {
        self.shared.dump_text()
    }

    /// Sets the blocked-loop warning's threshold: a task that runs longer than this
    /// without suspending is reported once, through the error handler
    /// ([`Problem::Blocked`]), when it suspends; if it still runs after 1 s (or four
    /// thresholds), the watchdog thread also prints a line to stderr naming its id.
    /// `None` switches the warning off. The default is 100 ms, or what the environment
    /// variable `COPAS_BLOCK_WARNING` says when the runtime is created (`off`, or a number
    /// of milliseconds).
    pub fn set_block_warning(&self, threshold: Option<Duration>) {
        self.shared
            .remote
            .watch
            .set_threshold(threshold.filter(|t| !t.is_zero()));
    }

    /// The blocked-loop warning's threshold; `None` when it is off.
    pub fn block_warning(&self) -> Option<Duration> {
        self.shared.remote.watch.threshold()
    }
}

impl Handle {
    /// [`Runtime::dump`] of this handle's runtime, from any thread: the loop answers at its
    /// next step (an idle loop is woken). Waits at most [`DUMP_TIMEOUT`].
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] when the runtime is gone;
    /// [`io::ErrorKind::TimedOut`] when the loop does not answer in time — a task blocks
    /// it (the error names the task and how long it has run, if the watchdog saw it) or
    /// the thread is not running the loop. Called on the runtime's own thread it answers
    /// at once.
    pub fn dump(&self) -> io::Result<String> {
        self.dump_timeout(DUMP_TIMEOUT)
    }

    /// As [`dump`](Handle::dump), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`dump`](Handle::dump).
    pub fn dump_timeout(&self, timeout: Duration) -> io::Result<String> {
        if self.is_current() {
            return Ok(Runtime::current().dump());
        }
        let (tx, rx) = mpsc::channel();
        if !self.remote.send_dump(tx) {
            return Err(gone());
        }
        match rx.recv_timeout(timeout) {
            Ok(text) => Ok(text),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let why = match self.remote.watch.running_long() {
                    Some((serial, ran)) => format!(
                        "task #{serial} has been running for {} without yielding",
                        short_duration(ran)
                    ),
                    None => "a task may be blocking it, or its thread is not running the loop"
                        .to_owned(),
                };
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "copas: the loop did not answer the dump request within {}: {why}",
                        short_duration(timeout)
                    ),
                ))
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "copas: cannot dump that runtime: its thread has ended",
    )
}

/// The span of a new task: `connection` for a task serving a peer (a server's handler),
/// else `task`; fields `task.id`, `task.name`, `peer`.
#[cfg(feature = "tracing")]
pub(crate) fn task_span(
    id: crate::id::TaskId,
    name: Option<&str>,
    peer: Option<std::net::SocketAddr>,
) -> tracing::Span {
    match peer {
        Some(peer) => tracing::info_span!(
            parent: None,
            "connection",
            task.id = id.as_u64(),
            task.name = name,
            peer = %peer
        ),
        None => tracing::info_span!(parent: None, "task", task.id = id.as_u64(), task.name = name),
    }
}

/// The event for a report: a warning for the blocked-loop warning, an error otherwise.
#[cfg(feature = "tracing")]
pub(crate) fn report_event(info: &crate::report::TaskPanic) {
    let kind = match info.problem() {
        Problem::Panicked => "panicked",
        Problem::Failed => "failed",
        Problem::Deadlocked(_) => "deadlocked",
        Problem::NeverRan => "never ran",
        Problem::RemoteSpawnLost => "remote spawn lost",
        Problem::Blocked { ran } => {
            tracing::warn!(
                task.id = info.task().as_u64(),
                task.name = info.name(),
                peer = info.peer_addr().map(tracing::field::display),
                ran_ms = ran.as_millis() as u64,
                "copas: {info}"
            );
            return;
        }
    };
    tracing::error!(
        task.id = info.task().as_u64(),
        task.name = info.name(),
        peer = info.peer_addr().map(tracing::field::display),
        problem = kind,
        "copas: {info}"
    );
}
