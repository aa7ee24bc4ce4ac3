//! Unix domain stream sockets: [`UnixStream`] (the buffered [`Stream`] over a
//! `std::os::unix::net::UnixStream`, plus connecting by path, by abstract name and
//! `pair`) and, in [`listener`], [`UnixListener`] with its stale-file policy.
//!
//! Invariant: everything a Unix stream shares with a TCP stream is the generic code in
//! `stream/`; this module only adds. A Unix `connect` never waits for readiness: on
//! Linux it completes at once or fails with `EAGAIN` when the listener's backlog is full,
//! which is retried after a short sleep (the task sleeps, not the thread).

use std::io;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::stream::{socket_ops, DescribeAddr, Stream, StreamSocket};

mod listener;

pub use listener::UnixListener;

/// A Unix domain stream connection for use inside copas tasks: a [`Stream`] over a
/// `std::os::unix::net::UnixStream`. Its calls are [`Stream`]'s (the same as
/// [`TcpStream`](crate::TcpStream)'s), plus connecting by path
/// ([`connect`](Stream::<std::os::unix::net::UnixStream>::connect)), by Linux abstract
/// name ([`connect_abstract`](Stream::<std::os::unix::net::UnixStream>::connect_abstract))
/// and [`pair`](Stream::<std::os::unix::net::UnixStream>::pair). Addresses are
/// `std::os::unix::net::SocketAddr`; a connecting client's is usually unnamed.
///
/// # Examples
/// ```
/// use copas_net::UnixStream;
///
/// let dir = std::env::temp_dir().join(format!("copas-unix-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("echo.sock");
/// let server = copas_net::add_server(path.clone(), |mut conn: UnixStream| {
///     while let Some(line) = conn.receive_line()? {
///         conn.send(&line)?;
///         conn.send(b"\n")?;
///     }
///     Ok(())
/// })
/// .unwrap();
/// let client = copas_core::spawn(move || {
///     let mut s = UnixStream::connect(&path)?;
///     s.send(b"hello\n")?;
///     let echo = s.receive_line()?;
///     server.stop(); // also removes the socket file
///     std::io::Result::Ok(echo)
/// });
/// copas_core::run().unwrap();
/// assert_eq!(client.join().unwrap().unwrap().unwrap(), &b"hello"[..]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub type UnixStream = Stream<std::os::unix::net::UnixStream>;

// std's Unix write is `write(2)`, which raises SIGPIPE when the peer has gone (fatal in a
// program that did not ignore it, such as one embedding copas from C); `send` with
// `MSG_NOSIGNAL` reports `BrokenPipe` instead, as std's TCP write does.
socket_ops!(
    std::os::unix::net::UnixStream,
    "UnixStream",
    |s: &std::os::unix::net::UnixStream, buf: &[u8]| {
        socket2::SockRef::from(s).send_with_flags(buf, NO_SIGPIPE)
    }
);

#[cfg(any(target_os = "linux", target_os = "android"))]
const NO_SIGPIPE: libc::c_int = libc::MSG_NOSIGNAL;
// Elsewhere there may be no such flag: there SIGPIPE must be ignored (Rust's `main` does).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NO_SIGPIPE: libc::c_int = 0;

impl StreamSocket for std::os::unix::net::UnixStream {
    type Addr = SocketAddr;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        std::os::unix::net::UnixStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        std::os::unix::net::UnixStream::peer_addr(self)
    }
}

impl DescribeAddr for SocketAddr {
    fn describe(&self) -> String {
        if let Some(p) = self.as_pathname() {
            return p.display().to_string();
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Some(name) = self.as_abstract_name() {
                return format!("@{}", String::from_utf8_lossy(name));
            }
        }
        "an unnamed Unix socket".to_owned()
    }
}

/// The longest a connect sleeps between attempts while the listener's backlog is full.
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(50);

impl Stream<std::os::unix::net::UnixStream> {
    /// Connects to the socket at `path`. The connection is set up at once, or refused;
    /// while the listener's backlog is full the task retries, sleeping between attempts
    /// (bound the wait with [`with_timeout`](copas_core::with_timeout)).
    ///
    /// # Errors
    /// `NotFound` when nothing is at `path`, `ConnectionRefused` when nobody listens on
    /// it (a stale socket file), `InvalidInput` for a path longer than `sun_path`, a
    /// cancellation or timeout error, or the OS error.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        connect_to(&SockAddr::unix(path)?)
    }

    /// Connects to `addr` (a pathname or, on Linux, an abstract address), as
    /// [`connect`](Stream::<std::os::unix::net::UnixStream>::connect).
    ///
    /// # Errors
    /// `InvalidInput` for an unnamed address; as `connect`.
    pub fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        connect_to(&sock_addr(addr)?)
    }

    /// Connects to the Linux abstract address `name` (no file; the name vanishes with the
    /// listener), as [`connect`](Stream::<std::os::unix::net::UnixStream>::connect).
    ///
    /// # Errors
    /// `InvalidInput` for a name longer than `sun_path` allows (107 bytes); as `connect`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn connect_abstract(name: impl AsRef<[u8]>) -> io::Result<UnixStream> {
        connect_to(&abstract_addr(name.as_ref())?)
    }

    /// A connected pair of unnamed sockets (`socketpair(2)`), both registered with this
    /// thread's loop.
    ///
    /// # Errors
    /// The OS error.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }
}

fn connect_to(addr: &SockAddr) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let mut pause = Duration::from_millis(1);
    loop {
        match socket.connect(addr) {
            Ok(()) => break,
            // The backlog is full: no readiness event announces room, so try again soon.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                copas_core::sleep(pause)?;
                pause = (pause * 2).min(CONNECT_RETRY_MAX);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    UnixStream::from_std(std::os::fd::OwnedFd::from(socket).into())
}

/// `addr` as socket2's address (a pathname or an abstract name).
pub(crate) fn sock_addr(addr: &SocketAddr) -> io::Result<SockAddr> {
    if let Some(p) = addr.as_pathname() {
        return SockAddr::unix(p);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = addr.as_abstract_name() {
            return abstract_addr(name);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "copas: an unnamed Unix socket address cannot be bound or connected to",
    ))
}

/// The abstract address `name`: a leading NUL byte, then the name (not NUL-terminated).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn abstract_addr(name: &[u8]) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name);
    SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
}
