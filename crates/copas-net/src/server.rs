//! Servers (Copas `addserver`): a task accepts connections on a listener and runs the
//! handler for each in a task of its own.
//!
//! Invariants: the accept task drains the backlog at most [`ACCEPT_BATCH`] connections per
//! turn, then yields, so a flood of connections cannot starve the handlers; at most
//! `max_connections` handlers are alive, and beyond that the accept task stops accepting
//! (the kernel's backlog holds the rest) until one ends.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use copas_core::{Builder, JoinHandle, Task};

use crate::listener::TcpListener;
use crate::reactor::Interest;
use crate::tcp::TcpStream;

/// How many connections the accept task takes before it lets other tasks run.
pub const ACCEPT_BATCH: usize = 64;

/// What can be turned into a listening socket for [`add_server`].
pub trait IntoListener {
    /// Binds (for addresses, with `backlog` pending connections) or converts (for
    /// listeners, which keep their own backlog).
    ///
    /// # Errors
    /// The bind error.
    fn into_listener(self, backlog: u32) -> io::Result<TcpListener>;
}

impl IntoListener for TcpListener {
    fn into_listener(self, _backlog: u32) -> io::Result<TcpListener> {
        Ok(self)
    }
}

impl IntoListener for std::net::TcpListener {
    fn into_listener(self, _backlog: u32) -> io::Result<TcpListener> {
        TcpListener::from_std(self)
    }
}

impl IntoListener for SocketAddr {
    fn into_listener(self, backlog: u32) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(self, backlog)
    }
}

impl IntoListener for &str {
    fn into_listener(self, backlog: u32) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(self, backlog)
    }
}

impl IntoListener for String {
    fn into_listener(self, backlog: u32) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(self.as_str(), backlog)
    }
}

type ErrorHook = Rc<dyn Fn(&str, Option<SocketAddr>, &io::Error)>;

/// Options for a server (name, per-connection timeouts, connection limit).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let server = copas_net::ServerBuilder::new()
///     .name("echo")
///     .read_timeout(Duration::from_secs(30))
///     .max_connections(1000)
///     .serve("127.0.0.1:0", |mut conn| {
///         while let Some(line) = conn.receive_line()? {
///             conn.send(&line)?;
///         }
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(server.name(), "echo");
/// server.stop();
/// ```
#[must_use = "a ServerBuilder does nothing until .serve() is called"]
pub struct ServerBuilder {
    name: String,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    max_connections: usize,
    max_line: Option<usize>,
    backlog: u32,
    on_error: Option<ErrorHook>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("name", &self.name)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// Defaults: named `"server"`, no timeouts, no connection limit.
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            name: "server".to_owned(),
            read_timeout: None,
            write_timeout: None,
            max_connections: usize::MAX,
            max_line: None,
            backlog: crate::listener::DEFAULT_BACKLOG,
            on_error: None,
        }
    }

    /// The server's name: its handler tasks carry it, and error reports show it.
    pub fn name(mut self, name: impl Into<String>) -> ServerBuilder {
        self.name = name.into();
        self
    }

    /// The read timeout given to every accepted connection.
    pub fn read_timeout(mut self, d: Duration) -> ServerBuilder {
        self.read_timeout = Some(d);
        self
    }

    /// The write timeout given to every accepted connection.
    pub fn write_timeout(mut self, d: Duration) -> ServerBuilder {
        self.write_timeout = Some(d);
        self
    }

    /// The most connections served at once; beyond it the server stops accepting until one
    /// ends, and new clients wait in the kernel's backlog.
    ///
    /// # Panics
    /// Panics if `n` is zero.
    #[track_caller]
    pub fn max_connections(mut self, n: usize) -> ServerBuilder {
        assert!(n > 0, "copas: max_connections must be at least 1");
        self.max_connections = n;
        self
    }

    /// The listen backlog used when [`serve`](ServerBuilder::serve) binds an address
    /// (default [`DEFAULT_BACKLOG`](crate::DEFAULT_BACKLOG)); a listener passed in keeps its
    /// own.
    pub fn backlog(mut self, n: u32) -> ServerBuilder {
        self.backlog = n;
        self
    }

    /// The line length limit of every accepted connection.
    pub fn max_line_length(mut self, n: usize) -> ServerBuilder {
        self.max_line = Some(n);
        self
    }

    /// Called with the server name, the peer and the error when a handler returns an
    /// error, or accepting fails. The default prints to stderr, except for the routine
    /// ends of a connection (reset, broken pipe, aborted, unexpected EOF) and
    /// cancellation.
    pub fn on_error(
        mut self,
        f: impl Fn(&str, Option<SocketAddr>, &io::Error) + 'static,
    ) -> ServerBuilder {
        self.on_error = Some(Rc::new(f));
        self
    }

    /// Makes a TLS server: each connection runs the server handshake with `config` (under
    /// a handshake timeout) before its handler gets a
    /// [`TlsStream`](crate::tls::TlsStream). Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls(self, config: std::sync::Arc<rustls::ServerConfig>) -> crate::tls::TlsServerBuilder {
        crate::tls::TlsServerBuilder::new(self, config)
    }

    /// The line limit given to accepted connections, if set.
    #[cfg(feature = "tls")]
    pub(crate) fn line_limit(&self) -> Option<usize> {
        self.max_line
    }

    /// Starts serving: binds or takes the listener and spawns the accept task. Each
    /// accepted connection runs `handler` in a task of its own.
    ///
    /// # Errors
    /// When binding or registering the listener fails; `InvalidInput` for a zero timeout.
    pub fn serve<L, H>(self, listener: L, handler: H) -> io::Result<Server>
    where
        L: IntoListener,
        H: Fn(TcpStream) -> io::Result<()> + 'static,
    {
        for t in [self.read_timeout, self.write_timeout]
            .into_iter()
            .flatten()
        {
            if t.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "copas: a zero timeout is not allowed",
                ));
            }
        }
        let listener = listener.into_listener(self.backlog)?;
        let local_addr = listener.local_addr()?;
        let inner = Rc::new(ServerInner {
            name: self.name.clone(),
            local_addr,
            stopped: Cell::new(false),
            live: Cell::new(0),
            accepted: Cell::new(0),
            max_connections: self.max_connections,
            accept_task: RefCell::new(None),
            accept_waiting_for_slot: Cell::new(false),
            listener: RefCell::new(Some(listener)),
        });
        let config = Rc::new(ConnConfig {
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            max_line: self.max_line,
            on_error: self.on_error.unwrap_or_else(|| Rc::new(default_error_hook)),
            handler: Rc::new(handler),
        });
        let task_inner = inner.clone();
        let handle = Builder::new()
            .name(format!("{}:accept", self.name))
            .spawn(move || accept_loop(&task_inner, &config))?;
        *inner.accept_task.borrow_mut() = Some(handle.task().clone());
        let server = Server {
            inner,
            accept: Rc::new(RefCell::new(Some(handle))),
        };
        Ok(server)
    }
}

fn default_error_hook(name: &str, peer: Option<SocketAddr>, e: &io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    ) || copas_core::is_cancelled(e)
    {
        return;
    }
    match peer {
        Some(p) => eprintln!("copas: server '{name}': connection from {p}: {e}"),
        None => eprintln!("copas: server '{name}': {e}"),
    }
}

struct ConnConfig {
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    max_line: Option<usize>,
    on_error: ErrorHook,
    handler: Rc<dyn Fn(TcpStream) -> io::Result<()>>,
}

struct ServerInner {
    name: String,
    local_addr: SocketAddr,
    stopped: Cell<bool>,
    live: Cell<usize>,
    accepted: Cell<u64>,
    max_connections: usize,
    accept_task: RefCell<Option<Task>>,
    accept_waiting_for_slot: Cell<bool>,
    /// The listening socket until the server stops; `stop` drops it at once, which closes
    /// it (a connect right after is refused) and fails the accept task's wait.
    listener: RefCell<Option<TcpListener>>,
}

impl ServerInner {
    /// Closes the listener (idempotent).
    fn close_listener(&self) {
        if let Ok(mut l) = self.listener.try_borrow_mut() {
            drop(l.take());
        }
    }
}

/// A running server (returned by [`add_server`]); [`Server::stop`] is Copas `removeserver`.
/// Dropping the handle does not stop the server.
#[derive(Clone)]
pub struct Server {
    inner: Rc<ServerInner>,
    accept: Rc<RefCell<Option<JoinHandle<()>>>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.name)
            .field("local_addr", &self.inner.local_addr)
            .field("connections", &self.inner.live.get())
            .field("stopped", &self.inner.stopped.get())
            .finish()
    }
}

impl Server {
    /// Stops accepting and closes the listener at once (Copas `removeserver`): a connect
    /// made after `stop` returns is refused, and connections still in the backlog are
    /// reset. Connections being served go on until their handlers end.
    pub fn stop(&self) {
        self.inner.stopped.set(true);
        self.inner.close_listener();
        if let Some(h) = self.accept.borrow().as_ref() {
            h.cancel();
        }
    }

    /// Whether [`stop`](Server::stop) was called or the loop exited.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
            || self
                .accept
                .borrow()
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Connections being served right now.
    pub fn connections(&self) -> usize {
        self.inner.live.get()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.get()
    }
}

/// Serves connections on `listener`, running `handler` for each in its own task (Copas
/// `addserver`). `listener` is a `std::net::TcpListener`, a [`TcpListener`], or an
/// address to bind such as `"127.0.0.1:7000"`.
///
/// # Errors
/// When binding or registering the listener fails.
///
/// # Examples
/// ```
/// let server = copas_net::add_server("127.0.0.1:0", |mut conn| {
///     let greeting = conn.receive_line()?;
///     conn.send(b"hello\n")
/// })
/// .unwrap();
/// println!("listening on {}", server.local_addr());
/// server.stop();
/// copas_core::run().unwrap();
/// ```
pub fn add_server<L, H>(listener: L, handler: H) -> io::Result<Server>
where
    L: IntoListener,
    H: Fn(TcpStream) -> io::Result<()> + 'static,
{
    ServerBuilder::new().serve(listener, handler)
}

/// Ends a connection's accounting when its handler task ends, however it ends.
struct LiveGuard(Rc<ServerInner>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let inner = &self.0;
        inner.live.set(inner.live.get() - 1);
        if inner.accept_waiting_for_slot.get() {
            if let (Some(t), Some(rt)) = (
                inner.accept_task.borrow().as_ref(),
                copas_core::Runtime::try_current(),
            ) {
                copas_core::hooks::wake(&rt, t.id());
            }
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn accept_loop(inner: &Rc<ServerInner>, config: &Rc<ConnConfig>) {
    let mut batch = 0usize;
    let mut failing = false;
    let mut backoff = Duration::from_millis(10);
    loop {
        if inner.stopped.get() || copas_core::is_exiting() {
            break;
        }
        if inner.live.get() >= inner.max_connections {
            // Woken when a connection ends or the loop exits; the loop re-checks both.
            inner.accept_waiting_for_slot.set(true);
            copas_core::wake_on_exit();
            let r = copas_core::hooks::suspend(None);
            inner.accept_waiting_for_slot.set(false);
            if r.is_err() {
                break;
            }
            continue;
        }
        // The borrow ends before anything below can run user code or suspend.
        let accepted = match inner.listener.borrow().as_ref() {
            Some(l) => l.try_accept(),
            None => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failing {
                    failing = false;
                    backoff = Duration::from_millis(10);
                    eprintln!("copas: server '{}': accepting again", inner.name);
                }
                start_connection(inner, config, stream, peer);
                batch += 1;
                if batch >= ACCEPT_BATCH {
                    batch = 0;
                    if copas_core::yield_now().is_err() {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                batch = 0;
                copas_core::wake_on_exit();
                let Some(waiter) = inner.listener.borrow().as_ref().map(TcpListener::waiter) else {
                    break;
                };
                // Fails at once when `stop` closes the listener meanwhile.
                if waiter.wait(Interest::Read, None).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                // Out of descriptors (or another persistent failure): report once, then
                // back off instead of spinning, and retry.
                if !failing {
                    failing = true;
                    (config.on_error)(&inner.name, None, &e);
                    if is_out_of_descriptors(&e) {
                        eprintln!(
                            "copas: server '{}': out of descriptors, retrying with back-off",
                            inner.name
                        );
                    }
                }
                if copas_core::sleep(backoff).is_err() {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    inner.stopped.set(true);
    inner.close_listener();
}

fn start_connection(
    inner: &Rc<ServerInner>,
    config: &Rc<ConnConfig>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
) {
    let mut conn = match TcpStream::from_std(stream) {
        Ok(c) => c,
        Err(e) => {
            (config.on_error)(&inner.name, Some(peer), &e);
            return;
        }
    };
    // `serve` rejected zero timeouts, the only values these setters refuse.
    let _ = conn.set_read_timeout(config.read_timeout);
    let _ = conn.set_write_timeout(config.write_timeout);
    if let Some(n) = config.max_line {
        conn.set_max_line_length(n);
    }
    inner.live.set(inner.live.get() + 1);
    inner.accepted.set(inner.accepted.get() + 1);
    let guard = LiveGuard(inner.clone());
    let config2 = config.clone();
    let spawned = Builder::new()
        .name(inner.name.clone())
        .peer_addr(peer)
        .spawn(move || {
            let guard = guard;
            if let Err(e) = (config2.handler)(conn) {
                (config2.on_error)(&guard.0.name, Some(peer), &e);
            }
        });
    match spawned {
        Ok(h) => drop(h),
        Err(e) => (config.on_error)(&inner.name, Some(peer), &e),
    }
}
