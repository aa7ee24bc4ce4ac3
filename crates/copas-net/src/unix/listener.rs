//! [`UnixListener`]: a listening Unix socket whose `accept` suspends the task, and the
//! policy for the socket file.
//!
//! The file policy:
//! - [`UnixListener::bind`] behaves as std: if anything exists at the path it fails with
//!   `AddrInUse`.
//! - [`UnixListener::bind_replacing_stale`] (what [`add_server`](crate::add_server) uses
//!   for a path) removes a file left behind by a process that died: only when the file is
//!   a socket and connecting to it is refused, that is, nobody listens on it. A socket
//!   someone listens on, or a file that is not a socket, is left alone (`AddrInUse`).
//! - A listener that created its file removes it when it is dropped (a server's when the
//!   server stops), if the path still names that same socket (device and inode), so a
//!   successor's socket is never removed. [`UnixListener::set_remove_on_drop`] turns it
//!   off. Listeners made by `from_std` never remove anything.
//!
//! Invariant: `file` is `Some` only for a path this listener bound itself, with the
//! identity the file had right after `bind`.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use socket2::{Domain, SockAddr, Socket, Type};

use super::UnixStream;
use crate::listener::DEFAULT_BACKLOG;
use crate::reactor::Interest;
use crate::source::{Source, Waiter};

/// A listening Unix domain socket for use inside copas tasks. Most servers use
/// [`add_server`](crate::add_server) with a path instead, which accepts in a task of its
/// own. See the module's file policy in [`bind`](UnixListener::bind) and
/// [`bind_replacing_stale`](UnixListener::bind_replacing_stale).
pub struct UnixListener {
    source: Source<std::os::unix::net::UnixListener>,
    /// The socket file this listener created: its path, device and inode.
    file: Option<(PathBuf, u64, u64)>,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("local", &self.local_addr().ok())
            .field("removes_file", &self.file.as_ref().map(|f| &f.0))
            .finish()
    }
}

impl UnixListener {
    /// Binds a listener to `path` with a backlog of [`DEFAULT_BACKLOG`]. As std, it fails
    /// with `AddrInUse` if anything exists at `path` (for a stale socket file, see
    /// [`bind_replacing_stale`](UnixListener::bind_replacing_stale)). The listener removes
    /// the file it created when dropped.
    ///
    /// # Errors
    /// `AddrInUse`, `NotFound` (no such directory), `PermissionDenied`, `InvalidInput` (a
    /// path longer than `sun_path`), or another OS error.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        UnixListener::bind_with_backlog(path, DEFAULT_BACKLOG)
    }

    /// As [`bind`](UnixListener::bind), with a backlog of `backlog` pending connections.
    ///
    /// # Errors
    /// As [`bind`](UnixListener::bind).
    pub fn bind_with_backlog(path: impl AsRef<Path>, backlog: u32) -> io::Result<UnixListener> {
        let path = path.as_ref();
        let mut listener = listen(&SockAddr::unix(path)?, backlog)?;
        let meta = std::fs::symlink_metadata(path)?;
        listener.file = Some((path.to_owned(), meta.dev(), meta.ino()));
        Ok(listener)
    }

    /// Binds to `path`, first removing a stale socket file there: one that is a socket
    /// nobody listens on (connecting to it is refused), as a process that died leaves
    /// behind. A socket someone listens on, or a file that is not a socket, is left
    /// alone and the call fails with `AddrInUse`. Backlog [`DEFAULT_BACKLOG`].
    ///
    /// Two processes starting at the same moment on the same stale path may both decide
    /// it is stale; run such processes under a lock if that can happen.
    ///
    /// # Errors
    /// `AddrInUse` as said; otherwise as [`bind`](UnixListener::bind).
    pub fn bind_replacing_stale(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        UnixListener::bind_replacing_stale_with_backlog(path, DEFAULT_BACKLOG)
    }

    /// As [`bind_replacing_stale`](UnixListener::bind_replacing_stale), with a backlog of
    /// `backlog`.
    ///
    /// # Errors
    /// As [`bind_replacing_stale`](UnixListener::bind_replacing_stale).
    pub fn bind_replacing_stale_with_backlog(
        path: impl AsRef<Path>,
        backlog: u32,
    ) -> io::Result<UnixListener> {
        let path = path.as_ref();
        remove_if_stale(path)?;
        UnixListener::bind_with_backlog(path, backlog)
    }

    /// Binds to the Linux abstract address `name`: no file is created, and the name is
    /// released when the listener closes, so nothing is ever stale. Backlog
    /// [`DEFAULT_BACKLOG`].
    ///
    /// # Errors
    /// `AddrInUse` if someone listens on `name`; `InvalidInput` for a name longer than
    /// 107 bytes; another OS error.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn bind_abstract(name: impl AsRef<[u8]>) -> io::Result<UnixListener> {
        listen(&super::abstract_addr(name.as_ref())?, DEFAULT_BACKLOG)
    }

    /// Binds to `addr`: a pathname (as [`bind`](UnixListener::bind)) or an abstract
    /// address, with a backlog of `backlog`.
    ///
    /// # Errors
    /// `InvalidInput` for an unnamed address; as `bind` or `bind_abstract`.
    pub fn bind_addr(addr: &SocketAddr, backlog: u32) -> io::Result<UnixListener> {
        match addr.as_pathname() {
            Some(p) => UnixListener::bind_with_backlog(p, backlog),
            None => listen(&super::sock_addr(addr)?, backlog),
        }
    }

    /// Wraps a `std::os::unix::net::UnixListener`. It never removes its socket file.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        Ok(UnixListener {
            source: Source::new(listener)?,
            file: None,
        })
    }

    /// Whether dropping the listener removes its socket file (the default for a path it
    /// bound itself). `true` on a `from_std` listener bound to a path makes it remove
    /// the socket now at that path; abstract addresses have no file.
    pub fn set_remove_on_drop(&mut self, remove: bool) {
        if !remove {
            self.file = None;
        } else if self.file.is_none() {
            if let Some(path) = self
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_owned))
            {
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    self.file = Some((path, meta.dev(), meta.ino()));
                }
            }
        }
    }

    /// Accepts a connection, suspending the task until one arrives.
    ///
    /// # Errors
    /// A cancellation error, or the OS error (e.g. `EMFILE` when out of descriptors).
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, peer) = self.source.do_io(
            Interest::Read,
            None::<Instant>,
            std::os::unix::net::UnixListener::accept,
        )?;
        Ok((UnixStream::from_std(s)?, peer))
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// One accept attempt that never waits (`WouldBlock` when none is pending).
    pub(crate) fn try_accept(&self) -> io::Result<OwnedFd> {
        self.source.get_ref().accept().map(|(s, _)| s.into())
    }

    /// See [`TcpListener`](crate::TcpListener)'s: a wait that does not borrow.
    pub(crate) fn waiter(&self) -> Waiter {
        self.source.waiter()
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = self.file.take() {
            // Only the socket this listener made: a successor may have replaced it.
            if std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_socket() && m.dev() == dev && m.ino() == ino)
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// A non-blocking listening socket bound to `addr`.
fn listen(addr: &SockAddr, backlog: u32) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(addr)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    UnixListener::from_std(OwnedFd::from(socket).into())
}

/// Removes `path` if it is a socket file nobody listens on; see
/// [`UnixListener::bind_replacing_stale`].
fn remove_if_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "copas: {} exists and is not a socket; it is left alone",
                path.display()
            ),
        ));
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        // Connected, or the backlog is full: someone listens.
        Ok(()) => Err(listening(path)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(listening(path)),
        Err(e) => Err(e),
    }
}

fn listening(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "copas: another process listens on {}; it is left alone",
            path.display()
        ),
    )
}
