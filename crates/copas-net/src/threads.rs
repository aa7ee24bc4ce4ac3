//! One runtime per core: [`Threads`] starts N threads, each with its own copas runtime,
//! running the same setup (typically a server on a listener of its own, all bound to one
//! address with `SO_REUSEPORT`), and returns a [`ThreadGroup`] to stop, inspect and join
//! them.
//!
//! Invariants:
//! - Tasks never migrate: each thread's tasks, sockets and timers stay on its runtime;
//!   the group only talks to the runtimes through their thread-safe
//!   [`Handle`](copas_core::Handle)s.
//! - A thread serves until its runtime is told to exit; the first exit seen by any thread
//!   is passed on to all of them, once (`exiting`).
//! - A panic stays on its thread: it is caught at the thread's root, reported, and kept
//!   for [`ThreadGroup::join`]; the other threads go on.

use std::any::Any;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use copas_core::{Handle, Runtime, Stats, Task};

use crate::listener::TcpListener;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long [`GroupHandle::stats`] waits for a thread to answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a group of threads, each running its own copas runtime with the same setup.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use copas_net::{ServerBuilder, TcpStream, Threads};
///
/// fn echo(mut conn: TcpStream) -> std::io::Result<()> {
///     while let Some(line) = conn.receive_line()? {
///         conn.send(&line)?;
///         conn.send(b"\n")?;
///     }
///     Ok(())
/// }
///
/// let group = Threads::new(2).name("echo").start(|t| {
///     // Each thread binds its own listener on the same address (SO_REUSEPORT); port 0
///     // is one free port for the whole group.
///     ServerBuilder::new().name("echo").serve(t.listener("127.0.0.1:0")?, echo)?;
///     Ok(())
/// })?;
/// let addr = group.local_addr().unwrap();
///
/// let mut conn = std::net::TcpStream::connect(addr)?;
/// conn.write_all(b"hello\n")?;
/// let mut reply = String::new();
/// BufReader::new(conn).read_line(&mut reply)?; // the connection closes here
/// assert_eq!(reply, "hello\n");
///
/// group.exit(); // or copas::exit() in any task of the group
/// group.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "Threads does nothing until .start() is called"]
pub struct Threads {
    count: usize,
    name: String,
    stack_size: Option<usize>,
}

impl Threads {
    /// A group of `count` threads, named `"copas-0"`, `"copas-1"`, ….
    pub fn new(count: usize) -> Threads {
        Threads {
            count,
            name: "copas".to_owned(),
            stack_size: None,
        }
    }

    /// As many threads as [`std::thread::available_parallelism`] says (1 if unknown).
    pub fn per_core() -> Threads {
        Threads::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// The threads' name prefix: thread `i` is named `"{name}-{i}"`.
    pub fn name(mut self, name: impl Into<String>) -> Threads {
        self.name = name.into();
        self
    }

    /// The stack size of each thread itself (not of its tasks; see
    /// [`Runtime::set_default_stack_size`] for those). Default: std's.
    pub fn stack_size(mut self, size: usize) -> Threads {
        self.stack_size = Some(size);
        self
    }

    /// Starts the threads. Each creates its runtime, runs `setup` on it (outside any task:
    /// start servers, spawn tasks; do not call [`run`](copas_core::run) there, the group
    /// runs the loop), then runs its loop until the group is told to exit.
    /// `start` returns once every thread has finished its setup (it blocks the calling
    /// thread until then, so keep setups short).
    ///
    /// If a setup returns an error, the group is stopped and joined, and `start` returns
    /// that error (the first one, naming the thread). A setup that panics ends only its
    /// own thread: the panic is reported on stderr and by [`ThreadGroup::join`], and the
    /// others go on.
    ///
    /// # Errors
    /// `InvalidInput` for zero threads; the error of spawning a thread; the first setup
    /// error (its kind kept); `Other` when every setup panicked.
    pub fn start<F>(self, setup: F) -> io::Result<ThreadGroup>
    where
        F: Fn(&ThreadContext) -> io::Result<()> + Send + Sync + 'static,
    {
        if self.count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "copas: a thread group needs at least one thread",
            ));
        }
        let shared = Arc::new(GroupShared {
            name: self.name.clone(),
            handles: Mutex::new(vec![None; self.count]),
            exiting: AtomicBool::new(false),
            binds: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        });
        let setup = Arc::new(setup);
        let (setup_tx, setup_rx) = mpsc::channel::<(usize, SetupOutcome)>();
        let done = Arc::new(Gather::new(self.count));
        let mut threads = Vec::with_capacity(self.count);
        for index in 0..self.count {
            let ctx = ThreadContext {
                index,
                count: self.count,
                name: format!("{}-{index}", self.name),
                group: GroupHandle {
                    shared: shared.clone(),
                },
            };
            let mut builder = std::thread::Builder::new().name(ctx.name.clone());
            if let Some(size) = self.stack_size {
                builder = builder.stack_size(size);
            }
            let setup = setup.clone();
            let setup_tx = setup_tx.clone();
            let done_slot = SlotGuard::new(done.clone(), index);
            let spawned = builder.spawn(move || {
                let done_slot = done_slot;
                thread_main(&ctx, &*setup, &setup_tx);
                done_slot.put(());
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The failed thread's slot was settled as its closure dropped; the
                    // threads never started settle none.
                    for never in index + 1..self.count {
                        done.settle(never, None);
                    }
                    let group = ThreadGroup {
                        handle: GroupHandle { shared },
                        threads,
                        done,
                    };
                    group.exit();
                    let _ = group.join();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("copas: cannot start thread '{}-{index}': {e}", self.name),
                    ));
                }
            }
        }
        drop(setup_tx);
        let group = ThreadGroup {
            handle: GroupHandle { shared },
            threads,
            done,
        };
        let mut first_error = None;
        let mut panicked = 0;
        // One message per thread; the senders live as long as the threads, so count.
        for _ in 0..self.count {
            let Ok((index, outcome)) = setup_rx.recv() else {
                break;
            };
            match outcome {
                SetupOutcome::Ready => {}
                SetupOutcome::Failed(e) => {
                    first_error.get_or_insert((index, e));
                }
                SetupOutcome::Panicked => panicked += 1,
            }
        }
        if let Some((index, e)) = first_error {
            group.exit();
            let _ = group.join();
            return Err(io::Error::new(
                e.kind(),
                format!("copas: thread '{}-{index}': {e}", self.name),
            ));
        }
        if panicked == self.count {
            let message = group.handle.failures_text();
            let _ = group.join();
            return Err(io::Error::other(format!(
                "copas: every thread of group '{}' panicked in its setup: {message}",
                self.name
            )));
        }
        Ok(group)
    }
}

enum SetupOutcome {
    Ready,
    Failed(io::Error),
    Panicked,
}

/// The body of one thread of the group.
fn thread_main<F>(ctx: &ThreadContext, setup: &F, setup_tx: &mpsc::Sender<(usize, SetupOutcome)>)
where
    F: Fn(&ThreadContext) -> io::Result<()>,
{
    let shared = &ctx.group.shared;
    let rt = Runtime::current();
    lock(&shared.handles)[ctx.index] = Some(rt.handle());
    // An exit asked for before this thread was registered must still reach it.
    if shared.exiting.load(Ordering::Acquire) {
        rt.handle().exit();
    }
    match panic::catch_unwind(AssertUnwindSafe(|| setup(ctx))) {
        Ok(Ok(())) => {
            let _ = setup_tx.send((ctx.index, SetupOutcome::Ready));
        }
        Ok(Err(e)) => {
            let _ = setup_tx.send((ctx.index, SetupOutcome::Failed(e)));
            return;
        }
        Err(payload) => {
            shared.fail(
                ctx,
                Failure::Panicked(payload_text(payload.as_ref())),
                "setup",
            );
            let _ = setup_tx.send((ctx.index, SetupOutcome::Panicked));
            return;
        }
    }
    match panic::catch_unwind(AssertUnwindSafe(|| serve(&rt, shared))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => shared.fail(ctx, Failure::Error(e), "loop"),
        Err(payload) => shared.fail(
            ctx,
            Failure::Panicked(payload_text(payload.as_ref())),
            "loop",
        ),
    }
}

/// The thread's loop: it serves until its runtime is exiting (from anywhere), passes the
/// exit on to the group, and then finishes the remaining work as `run` would.
fn serve(rt: &Runtime, shared: &GroupShared) -> io::Result<()> {
    let keep = copas_core::hooks::keep_alive();
    while !copas_core::is_exiting() {
        rt.step(None)?;
    }
    shared.exit_all();
    drop(keep);
    while !rt.is_finished() {
        rt.step(None)?;
    }
    Ok(())
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

struct GroupShared {
    name: String,
    handles: Mutex<Vec<Option<Handle>>>,
    exiting: AtomicBool,
    /// The addresses asked of [`ThreadContext::listener`] and what the first bind got.
    binds: Mutex<Vec<(Vec<SocketAddr>, SocketAddr)>>,
    failures: Mutex<Vec<ThreadFailure>>,
}

impl GroupShared {
    fn handles(&self) -> Vec<Option<Handle>> {
        lock(&self.handles).clone()
    }

    fn exit_all(&self) {
        // Set before reading the handles, so that a thread registering its handle
        // afterwards sees the flag (see `thread_main`).
        if self.exiting.swap(true, Ordering::AcqRel) {
            return;
        }
        for h in self.handles().into_iter().flatten() {
            h.exit();
        }
    }

    fn fail(&self, ctx: &ThreadContext, failure: Failure, during: &'static str) {
        let f = ThreadFailure {
            index: ctx.index,
            name: ctx.name.clone(),
            during,
            failure,
        };
        eprintln!("{f}; the other threads go on");
        lock(&self.failures).push(f);
    }
}

/// What a thread's setup gets: which thread it is, and a way to bind its listener.
pub struct ThreadContext {
    index: usize,
    count: usize,
    name: String,
    group: GroupHandle,
}

impl fmt::Debug for ThreadContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadContext")
            .field("index", &self.index)
            .field("count", &self.count)
            .field("name", &self.name)
            .finish()
    }
}

impl ThreadContext {
    /// This thread's index in the group, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many threads the group has.
    pub fn threads(&self) -> usize {
        self.count
    }

    /// This thread's name (`"{name}-{index}"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle to the whole group, for the thread's tasks (it is `Send` and `Clone`).
    pub fn group(&self) -> GroupHandle {
        self.group.clone()
    }

    /// Binds this thread's listener on `addr` with `SO_REUSEPORT`
    /// ([`TcpListener::bind_reuse_port`]), registered with this thread's reactor.
    ///
    /// Every thread binds the same address: the first thread to ask for `addr` binds it,
    /// and the others bind the address it got, so port 0 means one free port for the
    /// whole group. The kernel spreads connections over the threads' listeners.
    ///
    /// # Errors
    /// The bind error; `InvalidInput` if `addr` resolves to nothing.
    pub fn listener(&self, addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let asked: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        // Held across the bind, so that two threads asking at once agree on the port.
        let mut binds = lock(&self.group.shared.binds);
        if let Some((_, got)) = binds.iter().find(|(a, _)| *a == asked) {
            return TcpListener::bind_reuse_port(*got);
        }
        let listener = TcpListener::bind_reuse_port(&asked[..])?;
        binds.push((asked, listener.local_addr()?));
        Ok(listener)
    }
}

/// A thread-safe handle to a running [`ThreadGroup`]: exit, shut down or query it from
/// any thread or task (including the group's own tasks).
#[derive(Clone)]
pub struct GroupHandle {
    shared: Arc<GroupShared>,
}

impl fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupHandle")
            .field("name", &self.shared.name)
            .field("exiting", &self.shared.exiting.load(Ordering::Relaxed))
            .finish()
    }
}

impl GroupHandle {
    /// Asks every thread to exit (Copas `exit` on each runtime): their servers stop
    /// accepting, [`wait_for_exit`](copas_core::wait_for_exit) callers wake, and each
    /// thread ends once its remaining work is done. Calling
    /// [`copas::exit()`](copas_core::exit) in any task of the group does the same.
    pub fn exit(&self) {
        self.shared.exit_all();
    }

    /// Shuts every thread down gracefully, as [`shutdown`](copas_core::shutdown) does on
    /// one runtime: exit now, then what is still running after `grace` is cancelled.
    /// (A [`copas::shutdown(grace)`](copas_core::shutdown) called in one of the group's
    /// tasks bounds only its own thread; the others get a plain exit. Call this from the
    /// task, through [`ThreadContext::group`], to bound them all.)
    pub fn shutdown(&self, grace: Duration) {
        for h in self.shared.handles().into_iter().flatten() {
            // A thread that has ended already has nothing to shut down.
            let _ = h.spawn_boxed(Box::new(move || copas_core::shutdown(grace)));
        }
        self.shared.exit_all();
    }

    /// Each thread's [`Stats`], in thread order: `None` for a thread that has ended (or
    /// has not answered within 5 seconds, which means one of its tasks keeps it busy
    /// without yielding). Each thread answers from its own loop; in a task this suspends
    /// the task meanwhile, elsewhere it blocks.
    ///
    /// The query runs as a task on each other thread, which the numbers leave out; the
    /// caller's own thread, if it is one of the group's, is read directly. Two setups
    /// that ask for each other's numbers at once both get `None` after the timeout,
    /// since neither loop runs before its setup returns.
    pub fn stats(&self) -> Vec<Option<Stats>> {
        let handles = self.shared.handles();
        let gather = Arc::new(Gather::new(handles.len()));
        for (i, h) in handles.into_iter().enumerate() {
            let slot = SlotGuard::new(gather.clone(), i);
            if h.as_ref().is_some_and(Handle::is_current) {
                // The caller's own thread cannot answer while the caller waits outside a
                // task (in a setup): read its numbers directly.
                slot.put(Runtime::current().stats());
            } else if let Some(h) = h {
                // On an error the closure, and with it the guard, is dropped: `None`.
                let _ = h.spawn_boxed(Box::new(move || {
                    let mut s = Runtime::current().stats();
                    s.tasks = s.tasks.saturating_sub(1);
                    s.running = s.running.saturating_sub(1);
                    slot.put(s);
                }));
            }
        }
        gather.wait(Instant::now().checked_add(STATS_TIMEOUT))
    }

    /// How many threads the group has.
    pub fn threads(&self) -> usize {
        lock(&self.shared.handles).len()
    }

    /// Whether the group has been told to exit.
    pub fn is_exiting(&self) -> bool {
        self.shared.exiting.load(Ordering::Acquire)
    }

    fn failures_text(&self) -> String {
        lock(&self.shared.failures)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A running group of threads, from [`Threads::start`]. Dropping it detaches the threads,
/// which go on until they are told to exit.
#[must_use = "dropping a ThreadGroup detaches its threads; call join()"]
pub struct ThreadGroup {
    handle: GroupHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: Arc<Gather<()>>,
}

impl fmt::Debug for ThreadGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadGroup")
            .field("name", &self.handle.shared.name)
            .field("threads", &self.threads.len())
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

impl ThreadGroup {
    /// A thread-safe handle to the group.
    pub fn handle(&self) -> GroupHandle {
        self.handle.clone()
    }

    /// See [`GroupHandle::exit`].
    pub fn exit(&self) {
        self.handle.exit();
    }

    /// See [`GroupHandle::shutdown`].
    pub fn shutdown(&self, grace: Duration) {
        self.handle.shutdown(grace);
    }

    /// See [`GroupHandle::stats`].
    pub fn stats(&self) -> Vec<Option<Stats>> {
        self.handle.stats()
    }

    /// The address of the first listener bound through [`ThreadContext::listener`] (the
    /// port chosen, for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addrs().first().copied()
    }

    /// The addresses bound through [`ThreadContext::listener`], in the order first bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.handle.shared.binds)
            .iter()
            .map(|(_, got)| *got)
            .collect()
    }

    /// Waits until every thread has ended. In a copas task this suspends the task; on a
    /// plain thread it blocks. (Never call it from one of the group's own tasks: that
    /// thread could not end while its task waits.)
    ///
    /// # Errors
    /// A [`GroupError`] listing every thread that panicked (in its setup, a destructor or
    /// its loop, not in a task: task panics are reported and handled by their runtime) or
    /// whose loop failed.
    pub fn join(self) -> Result<(), GroupError> {
        self.done.wait(None);
        for t in self.threads {
            // The thread's body catches its panics, so this can fail only in a
            // thread-local destructor (the runtime's teardown).
            if let Err(payload) = t.join() {
                let name = self.handle.shared.name.clone();
                lock(&self.handle.shared.failures).push(ThreadFailure {
                    index: usize::MAX,
                    name: format!("{name} (a thread)"),
                    during: "teardown",
                    failure: Failure::Panicked(payload_text(payload.as_ref())),
                });
            }
        }
        let failures = std::mem::take(&mut *lock(&self.handle.shared.failures));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(GroupError { failures })
        }
    }
}

/// What went wrong on one thread of a group.
#[derive(Debug)]
enum Failure {
    Panicked(String),
    Error(io::Error),
}

/// One thread's failure, as listed by [`GroupError`].
#[derive(Debug)]
pub struct ThreadFailure {
    index: usize,
    name: String,
    during: &'static str,
    failure: Failure,
}

impl ThreadFailure {
    /// The thread's index in the group.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the thread panicked (otherwise its loop returned an error).
    pub fn is_panic(&self) -> bool {
        matches!(self.failure, Failure::Panicked(_))
    }
}

impl fmt::Display for ThreadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Panicked(msg) => write!(
                f,
                "copas: thread '{}' panicked in its {}: {msg}",
                self.name, self.during
            ),
            Failure::Error(e) => write!(
                f,
                "copas: thread '{}' failed in its {}: {e}",
                self.name, self.during
            ),
        }
    }
}

/// The error of [`ThreadGroup::join`]: the threads that panicked or failed.
#[derive(Debug)]
pub struct GroupError {
    failures: Vec<ThreadFailure>,
}

impl GroupError {
    /// The failed threads, in the order they failed.
    pub fn failures(&self) -> &[ThreadFailure] {
        &self.failures
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

impl std::error::Error for GroupError {}

impl From<GroupError> for io::Error {
    fn from(e: GroupError) -> io::Error {
        io::Error::other(e)
    }
}

/// Answers from several threads, waited for by one caller: a copas task (woken with
/// [`Task::unpark`]) or a plain thread (woken by the condition variable).
struct Gather<T> {
    state: Mutex<GatherState<T>>,
    cv: Condvar,
}

struct GatherState<T> {
    slots: Vec<Option<T>>,
    pending: usize,
    waiter: Option<Task>,
}

impl<T> Gather<T> {
    fn new(n: usize) -> Gather<T> {
        Gather {
            state: Mutex::new(GatherState {
                slots: (0..n).map(|_| None).collect(),
                pending: n,
                waiter: None,
            }),
            cv: Condvar::new(),
        }
    }

    /// Fills slot `i` (`None`: it will never be filled).
    fn settle(&self, i: usize, value: Option<T>) {
        let mut s = lock(&self.state);
        s.slots[i] = value;
        s.pending -= 1;
        if s.pending == 0 {
            self.cv.notify_all();
            if let Some(t) = s.waiter.take() {
                t.unpark();
            }
        }
    }

    /// Waits until every slot is settled or `deadline` passes; returns the slots.
    fn wait(&self, deadline: Option<Instant>) -> Vec<Option<T>> {
        if let Some(me) = copas_core::try_current() {
            let _alive = copas_core::hooks::keep_alive();
            loop {
                {
                    let mut s = lock(&self.state);
                    if s.pending == 0 {
                        break;
                    }
                    s.waiter = Some(me.clone());
                }
                let r = match deadline {
                    None => copas_core::park(),
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => copas_core::park_timeout(left),
                        _ => break,
                    },
                };
                // Cancelled: give back what is there.
                if r.as_ref()
                    .is_err_and(|e| e.kind() != io::ErrorKind::TimedOut)
                {
                    break;
                }
            }
            let mut s = lock(&self.state);
            s.waiter = None;
            return std::mem::take(&mut s.slots);
        }
        let mut s = lock(&self.state);
        while s.pending > 0 {
            s = match deadline {
                None => self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        self.cv
                            .wait_timeout(s, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    _ => break,
                },
            };
        }
        std::mem::take(&mut s.slots)
    }
}

/// Settles its slot when dropped without being filled, so that a closure dropped unrun
/// (its runtime went away) does not leave the waiter hanging.
struct SlotGuard<T> {
    gather: Arc<Gather<T>>,
    index: usize,
    done: bool,
}

impl<T> SlotGuard<T> {
    fn new(gather: Arc<Gather<T>>, index: usize) -> SlotGuard<T> {
        SlotGuard {
            gather,
            index,
            done: false,
        }
    }

    fn put(mut self, value: T) {
        self.done = true;
        self.gather.settle(self.index, Some(value));
    }
}

impl<T> Drop for SlotGuard<T> {
    fn drop(&mut self) {
        if !self.done {
            self.gather.settle(self.index, None);
        }
    }
}
