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
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use copas_core::{Builder, JoinHandle, Task};

use crate::listener::TcpListener;
use crate::reactor::Interest;
use crate::source::Waiter;
use crate::stream::{Stream, StreamSocket};
use crate::unix::UnixListener;

/// How many connections the accept task takes before it lets other tasks run.
pub const ACCEPT_BATCH: usize = 64;

/// What can be turned into a listening socket for [`add_server`]: for TCP a
/// `std::net::TcpListener`, a [`TcpListener`], a `SocketAddr` or an address string; for
/// Unix domain sockets a path (`&Path`, `PathBuf`, `&PathBuf`), a
/// `std::os::unix::net::SocketAddr` (a pathname or an abstract address), a
/// `std::os::unix::net::UnixListener` or a [`UnixListener`]. The type decides the kind of
/// socket: strings are always TCP addresses, never taken for paths (one that looks like a
/// path fails with `InvalidInput` and a hint to pass a `Path`).
///
/// A path is bound with [`UnixListener::bind_replacing_stale`]: a socket file that a
/// dead process left behind (nobody listens on it) is replaced, anything else at the path
/// makes binding fail with `AddrInUse`. To fail on any existing file instead, pass
/// [`UnixListener::bind`]'s listener. The server removes the socket file it created when
/// it stops.
pub trait IntoListener {
    /// The listening socket: [`TcpListener`] or [`UnixListener`].
    type Listener: Listener;

    /// Binds (for addresses and paths, with `backlog` pending connections) or converts
    /// (for listeners, which keep their own backlog).
    ///
    /// # Errors
    /// The bind error.
    fn into_listener(self, backlog: u32) -> io::Result<Self::Listener>;
}

/// A listening socket a server accepts on: [`TcpListener`] or [`UnixListener`]. Sealed.
pub trait Listener: sealed::Accept {
    /// The socket of an accepted connection; handlers get a [`Stream`] of it.
    type Socket: StreamSocket;

    /// The address listened on, as [`Server::local_addr`] reports it.
    ///
    /// # Errors
    /// The OS error.
    fn listen_addr(&self) -> io::Result<<Self::Socket as StreamSocket>::Addr>;
}

pub(crate) mod sealed {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::OwnedFd;

    use crate::source::Waiter;

    /// What the accept loop needs from a listener, whatever its kind.
    #[allow(unreachable_pub)]
    pub trait Accept: 'static {
        /// One accept that never waits: the new socket and, for TCP, the peer.
        fn try_accept_fd(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)>;
        /// A wait for the next connection that does not borrow the listener.
        fn accept_waiter(&self) -> Waiter;
    }
}

impl sealed::Accept for TcpListener {
    fn try_accept_fd(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
        self.try_accept().map(|(s, peer)| (s.into(), Some(peer)))
    }

    fn accept_waiter(&self) -> Waiter {
        self.waiter()
    }
}

impl Listener for TcpListener {
    type Socket = std::net::TcpStream;

    fn listen_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr()
    }
}

impl sealed::Accept for UnixListener {
    fn try_accept_fd(&self) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
        self.try_accept().map(|s| (s, None))
    }

    fn accept_waiter(&self) -> Waiter {
        self.waiter()
    }
}

impl Listener for UnixListener {
    type Socket = std::os::unix::net::UnixStream;

    fn listen_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.local_addr()
    }
}

/// `IntoListener` for `$t`, made into a `$l` by `$make(value, backlog)`.
macro_rules! into_listener {
    ($($t:ty => $l:ty, $make:expr;)*) => {$(
        impl IntoListener for $t {
            type Listener = $l;

            fn into_listener(self, backlog: u32) -> io::Result<$l> {
                ($make)(self, backlog)
            }
        }
    )*};
}

// Listeners keep their own backlog; addresses and paths are bound with the builder's.
into_listener! {
    TcpListener => TcpListener, |l, _| Ok(l);
    std::net::TcpListener => TcpListener, |l, _| TcpListener::from_std(l);
    UnixListener => UnixListener, |l, _| Ok(l);
    std::os::unix::net::UnixListener => UnixListener, |l, _| UnixListener::from_std(l);
    SocketAddr => TcpListener, TcpListener::bind_with_backlog;
    &str => TcpListener, bind_str;
    String => TcpListener, |a: String, b| bind_str(&a, b);
    &Path => UnixListener, UnixListener::bind_replacing_stale_with_backlog;
    PathBuf => UnixListener, UnixListener::bind_replacing_stale_with_backlog;
    &PathBuf => UnixListener, UnixListener::bind_replacing_stale_with_backlog;
}

/// Binds a TCP address string; one that is not `HOST:PORT` but looks like a path gets a
/// hint instead of std's "invalid socket address".
fn bind_str(addr: &str, backlog: u32) -> io::Result<TcpListener> {
    TcpListener::bind_with_backlog(addr, backlog).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidInput && addr.contains('/') && !addr.contains(':') {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "copas: '{addr}' is not HOST:PORT; for a Unix socket pass a path \
                     (std::path::Path::new(\"{addr}\"))"
                ),
            )
        } else {
            e
        }
    })
}

/// A pathname address is bound as a path (replacing a stale file); an abstract one
/// as it is.
impl IntoListener for std::os::unix::net::SocketAddr {
    type Listener = UnixListener;

    fn into_listener(self, backlog: u32) -> io::Result<UnixListener> {
        match self.as_pathname() {
            Some(p) => UnixListener::bind_replacing_stale_with_backlog(p, backlog),
            None => UnixListener::bind_addr(&self, backlog),
        }
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

    /// The listen backlog used when [`serve`](ServerBuilder::serve) binds an address or path
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

    /// Called with the server name, the peer (`None` when accepting failed, and for Unix
    /// servers, whose peers are mostly unnamed) and the error when a handler returns an
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
    pub fn serve<L, H>(
        self,
        listener: L,
        handler: H,
    ) -> io::Result<Server<<L::Listener as Listener>::Socket>>
    where
        L: IntoListener,
        H: Fn(Stream<<L::Listener as Listener>::Socket>) -> io::Result<()> + 'static,
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
        let local_addr = listener.listen_addr()?;
        let inner = Rc::new(ServerInner {
            name: self.name.clone(),
            local_addr,
            stopped: Cell::new(false),
            live: Cell::new(0),
            accepted: Cell::new(0),
            max_connections: self.max_connections,
            accept_task: RefCell::new(None),
            accept_waiting_for_slot: Cell::new(false),
            listener: RefCell::new(Some(Box::new(listener))),
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

struct ConnConfig<S: StreamSocket> {
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    max_line: Option<usize>,
    on_error: ErrorHook,
    handler: Rc<dyn Fn(Stream<S>) -> io::Result<()>>,
}

struct ServerInner<S: StreamSocket> {
    name: String,
    local_addr: S::Addr,
    stopped: Cell<bool>,
    live: Cell<usize>,
    accepted: Cell<u64>,
    max_connections: usize,
    accept_task: RefCell<Option<Task>>,
    accept_waiting_for_slot: Cell<bool>,
    /// The listening socket until the server stops; `stop` drops it at once, which closes
    /// it (a connect right after is refused) and fails the accept task's wait.
    listener: RefCell<Option<Box<dyn sealed::Accept>>>,
}

impl<S: StreamSocket> ServerInner<S> {
    /// Closes the listener (idempotent).
    fn close_listener(&self) {
        if let Ok(mut l) = self.listener.try_borrow_mut() {
            drop(l.take());
        }
    }
}

/// A running server (returned by [`add_server`]); [`Server::stop`] is Copas `removeserver`.
/// Dropping the handle does not stop the server. `Server` is a TCP server;
/// `Server<std::os::unix::net::UnixStream>` a Unix one.
pub struct Server<S: StreamSocket = std::net::TcpStream> {
    inner: Rc<ServerInner<S>>,
    accept: Rc<RefCell<Option<JoinHandle<()>>>>,
}

impl<S: StreamSocket> Clone for Server<S> {
    fn clone(&self) -> Self {
        Server {
            inner: self.inner.clone(),
            accept: self.accept.clone(),
        }
    }
}

impl<S: StreamSocket> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.name)
            .field("local_addr", &self.inner.local_addr)
            .field("connections", &self.inner.live.get())
            .field("stopped", &self.inner.stopped.get())
            .finish()
    }
}

impl<S: StreamSocket> Server<S> {
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

    /// The address the server listens on (useful after binding port 0): a
    /// `std::net::SocketAddr`, or for a Unix server a `std::os::unix::net::SocketAddr`.
    pub fn local_addr(&self) -> S::Addr {
        self.inner.local_addr.clone()
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
/// address to bind such as `"127.0.0.1:7000"`; or, for a Unix domain socket, a path
/// (`Path`, `PathBuf`), a Unix `SocketAddr` or a [`UnixListener`] (see [`IntoListener`]
/// for the stale-file policy).
///
/// A handler takes a [`TcpStream`](crate::TcpStream) or a
/// [`UnixStream`](crate::UnixStream); one written for any [`Stream<S>`](Stream) serves
/// both kinds (see [`StreamSocket`]).
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
pub fn add_server<L, H>(
    listener: L,
    handler: H,
) -> io::Result<Server<<L::Listener as Listener>::Socket>>
where
    L: IntoListener,
    H: Fn(Stream<<L::Listener as Listener>::Socket>) -> io::Result<()> + 'static,
{
    ServerBuilder::new().serve(listener, handler)
}

/// Ends a connection's accounting when its handler task ends, however it ends.
struct LiveGuard<S: StreamSocket>(Rc<ServerInner<S>>);

impl<S: StreamSocket> Drop for LiveGuard<S> {
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

fn accept_loop<S: StreamSocket>(inner: &Rc<ServerInner<S>>, config: &Rc<ConnConfig<S>>) {
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
            let r = copas_core::hooks::suspend_for(
                &copas_core::Runtime::current(),
                copas_core::WaitOn::Other("a free connection slot (max_connections)"),
                None,
            );
            inner.accept_waiting_for_slot.set(false);
            if r.is_err() {
                break;
            }
            continue;
        }
        // The borrow ends before anything below can run user code or suspend.
        let accepted = match inner.listener.borrow().as_ref() {
            Some(l) => l.try_accept_fd(),
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
                let Some(waiter) = inner.listener.borrow().as_ref().map(|l| l.accept_waiter())
                else {
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
                crate::trace::accept_failed(&inner.name, &e);
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

fn start_connection<S: StreamSocket>(
    inner: &Rc<ServerInner<S>>,
    config: &Rc<ConnConfig<S>>,
    stream: OwnedFd,
    peer: Option<SocketAddr>,
) {
    let mut conn = match Stream::from_std(S::from(stream)) {
        Ok(c) => c,
        Err(e) => {
            (config.on_error)(&inner.name, peer, &e);
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
    let mut builder = Builder::new().name(inner.name.clone());
    if let Some(peer) = peer {
        builder = builder.peer_addr(peer);
    }
    let spawned = builder.spawn(move || {
        let guard = guard;
        if let Err(e) = (config2.handler)(conn) {
            (config2.on_error)(&guard.0.name, peer, &e);
        }
    });
    match spawned {
        Ok(h) => drop(h),
        Err(e) => (config.on_error)(&inner.name, peer, &e),
    }
}
