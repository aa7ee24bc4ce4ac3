//! [`Runtime::spawn_thread`]: a copas runtime on a named std thread of its own, whose
//! loop serves servers and remote spawns until it is told to exit; and [`resolve`], name
//! resolution off the loop.
//!
//! Key invariant: the thread's loop holds a keep-alive guard until the runtime is
//! exiting ([`Handle::exit`] or [`exit`](crate::exit) from one of its tasks), so it never
//! ends merely because it is idle; after that it finishes the remaining work as
//! [`run`](crate::run) would.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;

use super::oneshot;
use crate::{hooks, Handle, Runtime};

/// A copas runtime running on a std thread of its own ([`Runtime::spawn_thread`]).
///
/// Dropping it detaches the thread; its loop goes on until it is told to exit.
pub struct RuntimeThread {
    handle: Handle,
    name: String,
    thread: std::thread::JoinHandle<io::Result<()>>,
    done: oneshot::Receiver<()>,
}

impl fmt::Debug for RuntimeThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeThread")
            .field("name", &self.name)
            .field("finished", &self.thread.is_finished())
            .finish()
    }
}

impl Runtime {
    /// Starts a runtime on a new std thread named `name`: the one-call way to add copas to
    /// a threaded program. Give it work through [`RuntimeThread::handle`]
    /// ([`Handle::spawn`]); it serves servers started by that work, and remote spawns,
    /// until [`Handle::exit`] or [`exit`](crate::exit) from one of its tasks, then finishes
    /// the remaining work and ends.
    ///
    /// # Errors
    /// The error of `std::thread::Builder::spawn`.
    ///
    /// # Examples
    /// ```
    /// let rt = copas_core::Runtime::spawn_thread("copas")?;
    /// let answer = rt.handle().spawn(|| 6 * 7);
    /// assert_eq!(answer.join().unwrap(), 42);
    /// rt.handle().exit();
    /// rt.join()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_thread(name: impl Into<String>) -> io::Result<RuntimeThread> {
        let name = name.into();
        let (handle_tx, handle_rx) = mpsc::sync_channel(1);
        let (done_tx, done) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                // Dropped when the loop ends, even by a panic: wakes `join`.
                let _done = done_tx;
                let rt = Runtime::current();
                let _ = handle_tx.send(rt.handle());
                serve(&rt)
            })?;
        let handle = handle_rx.recv().map_err(|_| {
            io::Error::other(format!("copas: runtime thread '{name}' ended at its start"))
        })?;
        Ok(RuntimeThread {
            handle,
            name,
            thread,
            done,
        })
    }
}

fn serve(rt: &Runtime) -> io::Result<()> {
    let keep = hooks::keep_alive();
    while !crate::is_exiting() {
        rt.step(None)?;
    }
    drop(keep);
    while !rt.is_finished() {
        rt.step(None)?;
    }
    Ok(())
}

impl RuntimeThread {
    /// A handle to the thread's runtime.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the thread's loop to end. In a copas task this suspends the task; on a
    /// plain thread it blocks.
    ///
    /// # Errors
    /// The loop's polling error; an error naming the thread if it panicked; the
    /// cancellation error if the calling task is cancelled while it waits (the thread
    /// goes on, detached).
    pub fn join(self) -> io::Result<()> {
        // The done signal first: it can be awaited without blocking a loop.
        let _ = super::block_on(self.done)?;
        match self.thread.join() {
            Ok(r) => r,
            Err(payload) => {
                let msg = crate::error::payload_str(payload.as_ref())
                    .unwrap_or("<non-string payload>")
                    .to_owned();
                Err(io::Error::other(format!(
                    "copas: runtime thread '{}' panicked: {msg}",
                    self.name
                )))
            }
        }
    }
}

/// Resolves `host_port` (`"example.com:80"`, `"[::1]:80"`, `"127.0.0.1:80"`) to socket
/// addresses without blocking the loop: a literal IP address is parsed in place; a host
/// name is looked up by the system resolver on an [`unblock`](crate::unblock) worker while
/// the task is suspended.
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] for a string that is not `HOST:PORT`, the resolver's
/// error, [`io::ErrorKind::NotFound`] when the name has no address, and the errors of
/// [`unblock`](crate::unblock) (cancellation, `TimedOut`).
///
/// # Examples
/// ```
/// let addrs = copas_core::resolve("127.0.0.1:7000")?;
/// assert_eq!(addrs, vec!["127.0.0.1:7000".parse().unwrap()]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn resolve(host_port: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let owned = host_port.to_owned();
    let addrs: Vec<SocketAddr> =
        super::unblock(move || owned.to_socket_addrs().map(Iterator::collect))??;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("copas: {host_port} has no address"),
        ));
    }
    Ok(addrs)
}
