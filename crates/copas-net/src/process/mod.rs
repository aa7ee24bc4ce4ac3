//! Child processes whose pipes and exit suspend the task, not the thread (anchors:
//! async-process, `tokio::process`, with blocking-style calls).
//!
//! [`Command`] wraps [`std::process::Command`]. A spawned [`Child`] has its piped
//! standard streams as [`ChildStdin`], [`ChildStdout`] and [`ChildStderr`], which are
//! registered with the thread's reactor: a read of an empty pipe or a write to a full one
//! suspends the task and the other tasks run meanwhile. [`Child::wait`] suspends the task
//! until the child exits.
//!
//! ```
//! use std::io::Write;
//! use copas_net::process::{Command, Stdio};
//!
//! let task = copas_core::spawn(|| -> std::io::Result<_> {
//!     let mut child = Command::new("sort")
//!         .stdin(Stdio::piped())
//!         .stdout(Stdio::piped())
//!         .spawn()?;
//!     let mut stdin = child.stdin.take().unwrap();
//!     stdin.write_all(b"pear\napple\nfig\n")?;
//!     drop(stdin); // end of file for `sort`
//!     let mut stdout = child.stdout.take().unwrap();
//!     let mut lines = Vec::new();
//!     while let Some(line) = stdout.receive_line()? {
//!         lines.push(String::from_utf8_lossy(&line).into_owned());
//!     }
//!     let status = child.wait()?;
//!     Ok((lines, status.success()))
//! });
//! let ticker = copas_core::spawn(|| copas_core::yield_now()); // runs while `sort` works
//! copas_core::run().unwrap();
//! let (lines, ok) = task.join().unwrap().unwrap();
//! assert_eq!(lines, ["apple", "fig", "pear"]);
//! assert!(ok);
//! # ticker.join().unwrap().unwrap();
//! ```
//!
//! # Waiting for exit
//! On Linux 5.3 and later, a child gets a pidfd (`pidfd_open`) registered with the
//! reactor: `wait` sleeps until the kernel says the child exited, then reaps it with
//! `waitpid(WNOHANG)`. Elsewhere, or where `pidfd_open` fails (older kernels, seccomp
//! filters), `wait` polls the child with `waitpid(WNOHANG)` on a timer that backs off from
//! 1 ms to 50 ms, so an exit is noticed up to 50 ms late; the loop is never blocked.
//! No `SIGCHLD` handler is installed.
//!
//! # Dropping a running child
//! As with std, dropping a [`Child`] does not kill the process (unless
//! [`Command::kill_on_drop`] was set). If it still runs, it is handed to a background
//! thread, `copas-reaper` (one per process, started the first time it is needed), which
//! waits for its exit (on its pidfd, else by polling with back-off up to 1 s) and reaps
//! it, so no zombie is left. A child that already exited is reaped by the drop itself.
//!
//! # Threads
//! A `Child` and its pipes belong to the thread that spawned them (`!Send`), like sockets.

mod pipes;
mod reaper;
mod sys;

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

pub use pipes::{ChildStderr, ChildStdin, ChildStdout};
pub use std::process::{ExitStatus, Output, Stdio};

use crate::registration::Registration;

/// A builder for a child process: [`std::process::Command`]'s builder methods, and
/// [`spawn`](Self::spawn), [`output`](Self::output) and [`status`](Self::status) that
/// suspend the task instead of blocking the thread.
///
/// # Examples
/// ```
/// let out = copas_core::spawn(|| {
///     copas_net::process::Command::new("echo").arg("hello").output()
/// });
/// copas_core::run().unwrap();
/// let out = out.join().unwrap().unwrap();
/// assert_eq!(out.stdout, b"hello\n");
/// assert!(out.status.success());
/// ```
pub struct Command {
    inner: std::process::Command,
    kill_on_drop: bool,
}

impl Command {
    /// A command to run `program`, with std's defaults (inherited environment,
    /// directory and standard streams for `spawn` and `status`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env(key, val);
        self
    }

    /// Sets environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.inner.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env_remove(key);
        self
    }

    /// Clears the child's environment.
    pub fn env_clear(&mut self) -> &mut Command {
        self.inner.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.inner.current_dir(dir);
        self
    }

    /// The child's standard input ([`Stdio::piped`] gives [`Child::stdin`]).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdin(cfg);
        self
    }

    /// The child's standard output ([`Stdio::piped`] gives [`Child::stdout`]).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdout(cfg);
        self
    }

    /// The child's standard error ([`Stdio::piped`] gives [`Child::stderr`]).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stderr(cfg);
        self
    }

    /// Whether dropping the [`Child`] while the process runs kills it (`SIGKILL`). Off by
    /// default, as in std; either way the process is reaped in the background, see
    /// [Dropping a running child](self#dropping-a-running-child).
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Command {
        self.kill_on_drop = kill;
        self
    }

    /// The std command, for the options not wrapped here (`CommandExt::process_group`,
    /// `pre_exec`, …).
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.inner
    }

    /// Starts the child. Its piped streams are made non-blocking and registered with the
    /// current thread's reactor.
    ///
    /// # Errors
    /// std's spawn error (`NotFound` for a missing program, …), or the error of
    /// registering a pipe.
    pub fn spawn(&mut self) -> io::Result<Child> {
        let mut child = self.inner.spawn()?;
        let taken = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let exit = ExitWatch::new(child.id());
        let mut out = Child {
            stdin: None,
            stdout: None,
            stderr: None,
            inner: Some(child),
            exit: Some(exit),
            kill_on_drop: self.kill_on_drop,
        };
        // On an error the child is dropped, and with it the process is reaped.
        out.stdin = taken.0.map(ChildStdin::new).transpose()?;
        out.stdout = taken.1.map(ChildStdout::new).transpose()?;
        out.stderr = taken.2.map(ChildStderr::new).transpose()?;
        Ok(out)
    }

    /// Runs the child to completion and collects its standard output and error, as
    /// [`std::process::Command::output`] does, suspending the task meanwhile.
    ///
    /// Unlike std, this sets the command's standard input to null and its output and
    /// error to piped (replacing earlier settings), since `Stdio` settings cannot be read
    /// back; the command keeps them for later spawns.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn) and [`Child::wait_with_output`].
    pub fn output(&mut self) -> io::Result<Output> {
        self.inner
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn()?.wait_with_output()
    }

    /// Runs the child to completion with inherited standard streams and returns its exit
    /// status, suspending the task meanwhile.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn) and [`Child::wait`].
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait()
    }
}

impl From<std::process::Command> for Command {
    fn from(inner: std::process::Command) -> Command {
        Command {
            inner,
            kill_on_drop: false,
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("command", &self.inner)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}

/// How `wait` learns that the child exited.
enum ExitWatch {
    /// Linux: the pidfd, readable once the child has exited. The registration is
    /// declared first so it is dropped before the descriptor closes.
    #[cfg(target_os = "linux")]
    Pidfd {
        reg: Registration,
        fd: std::os::fd::OwnedFd,
    },
    /// Elsewhere (or without pidfd support): `waitpid(WNOHANG)` on a backing-off timer.
    Poll,
}

impl ExitWatch {
    #[cfg(target_os = "linux")]
    fn new(pid: u32) -> ExitWatch {
        use std::os::fd::AsRawFd;
        match sys::pidfd_open(pid) {
            Ok(fd) => match Registration::new(fd.as_raw_fd()) {
                Ok(reg) => ExitWatch::Pidfd { reg, fd },
                Err(_) => ExitWatch::Poll,
            },
            Err(_) => ExitWatch::Poll,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_pid: u32) -> ExitWatch {
        ExitWatch::Poll
    }

    /// The pidfd, deregistered, for the reaper thread.
    fn into_pidfd(self) -> Option<std::os::fd::OwnedFd> {
        match self {
            #[cfg(target_os = "linux")]
            ExitWatch::Pidfd { reg, fd } => {
                reg.close();
                drop(reg);
                Some(fd)
            }
            ExitWatch::Poll => None,
        }
    }
}

/// The first and the longest interval between polls where there is no pidfd.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);

/// A running (or exited) child process, from [`Command::spawn`].
///
/// Its piped standard streams are public fields, as in std: take them out to read and
/// write in separate tasks. Dropping a `Child` whose process still runs neither waits nor
/// (unless [`Command::kill_on_drop`]) kills it; it is reaped in the background.
///
/// A `Child` belongs to the thread that spawned it:
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(copas_net::process::Command::new("true").spawn().unwrap());
/// ```
pub struct Child {
    /// The child's standard input, if it was piped.
    pub stdin: Option<ChildStdin>,
    /// The child's standard output, if it was piped.
    pub stdout: Option<ChildStdout>,
    /// The child's standard error, if it was piped.
    pub stderr: Option<ChildStderr>,
    /// `Some` until `drop` hands it to the reaper.
    inner: Option<std::process::Child>,
    /// `Some` until `drop`.
    exit: Option<ExitWatch>,
    kill_on_drop: bool,
}

impl Child {
    fn std(&mut self) -> &mut std::process::Child {
        match self.inner.as_mut() {
            Some(c) => c,
            None => unreachable!("the std child is taken only by drop"),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        match self.inner.as_ref() {
            Some(c) => c.id(),
            None => unreachable!("the std child is taken only by drop"),
        }
    }

    /// Sends `SIGKILL` to the child (std's [`kill`](std::process::Child::kill)); does not
    /// wait for it to die: call [`wait`](Self::wait) for that. Killing a child that has
    /// exited already does nothing.
    ///
    /// # Errors
    /// The OS error of `kill`.
    pub fn kill(&mut self) -> io::Result<()> {
        self.std().kill()
    }

    /// The exit status if the child has exited (reaping it), `None` if it still runs.
    /// Never waits.
    ///
    /// # Errors
    /// The OS error of `waitpid`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.std().try_wait()
    }

    /// Closes the child's standard input (as std does, so that a child reading it to the
    /// end can finish), then suspends the task until the child exits, and returns its
    /// status. The other tasks run meanwhile; outside a task, the loop runs until then.
    ///
    /// Output pipes are left open: a child that fills a pipe nobody reads never exits, so
    /// read them (in other tasks) or use [`wait_with_output`](Self::wait_with_output).
    ///
    /// # Errors
    /// The cancellation error; an expired [`with_timeout`](copas_core::with_timeout)
    /// scope (`TimedOut`); the OS error of `waitpid`.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        match self.wait_until(None)? {
            Some(status) => Ok(status),
            None => unreachable!("a wait without deadline returns only with a status"),
        }
    }

    /// As [`wait`](Self::wait), but gives up after `timeout`: `Ok(None)` if the child
    /// still runs then (it is not killed).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        drop(self.stdin.take());
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        let mut interval = POLL_FIRST;
        loop {
            if let Some(status) = self.std().try_wait()? {
                return Ok(Some(status));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            #[cfg(target_os = "linux")]
            let pidfd = match self.exit.as_ref() {
                Some(ExitWatch::Pidfd { reg, .. }) => Some(reg),
                _ => None,
            };
            #[cfg(not(target_os = "linux"))]
            let pidfd: Option<&Registration> = None;
            let waited = match pidfd {
                Some(reg) => reg.wait(crate::reactor::Interest::Read, deadline),
                None => {
                    let mut nap = interval;
                    interval = (interval * 2).min(POLL_MAX);
                    if let Some(d) = deadline {
                        nap = nap.min(d.saturating_duration_since(Instant::now()));
                    }
                    copas_core::sleep(nap)
                }
            };
            match waited {
                Ok(()) => {}
                // Our own deadline: the loop's check above reports it; an outer
                // `with_timeout` scope's is an error for the caller.
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        && deadline.is_some_and(|d| Instant::now() >= d) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes standard input, reads standard output and error to their ends (at the same
    /// time, in two tasks, so neither pipe can fill up and stall the child), waits for
    /// the exit, and returns all three, like std's
    /// [`wait_with_output`](std::process::Child::wait_with_output).
    ///
    /// # Errors
    /// A read error from either pipe (`InvalidData` past
    /// [`DEFAULT_MAX_TO_END`](crate::DEFAULT_MAX_TO_END) bytes on one of them), the task
    /// for standard error cannot be started, or as [`wait`](Self::wait).
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let stderr_task = match self.stderr.take() {
            Some(mut err) => Some(
                copas_core::Builder::new()
                    .name("child stderr".into())
                    .spawn(move || err.receive_to_end())?,
            ),
            None => None,
        };
        let stdout = match self.stdout.take() {
            Some(mut out) => out.receive_to_end(),
            None => Ok(bytes::Bytes::new()),
        };
        // Joined even when stdout failed, so that the task does not outlive the call;
        // cancelled then, since a child stuck on a full stdout pipe never closes stderr.
        let stderr = match stderr_task {
            Some(task) => {
                if stdout.is_err() {
                    task.cancel();
                }
                match task.join() {
                    Ok(r) => r,
                    Err(e) => Err(io::Error::other(format!(
                        "copas: reading the child's standard error failed: {e}"
                    ))),
                }
            }
            None => Ok(bytes::Bytes::new()),
        };
        let (stdout, stderr) = (stdout?, stderr?);
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout: stdout.into(),
            stderr: stderr.into(),
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let (Some(mut child), Some(exit)) = (self.inner.take(), self.exit.take()) else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if self.kill_on_drop {
            let _ = child.kill();
        }
        reaper::adopt(reaper::Orphan {
            child,
            pidfd: exit.into_pidfd(),
        });
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.inner.as_ref().map(std::process::Child::id))
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child watched by polling, as off Linux, whatever this platform has.
    fn polled(script: &str) -> Child {
        let inner = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        Child {
            stdin: None,
            stdout: None,
            stderr: None,
            inner: Some(inner),
            exit: Some(ExitWatch::Poll),
            kill_on_drop: false,
        }
    }

    #[test]
    fn the_polling_fallback_waits_and_times_out() {
        let h = copas_core::spawn(|| -> io::Result<_> {
            let mut child = polled("sleep 0.2; exit 5");
            let early = child.wait_timeout(Duration::from_millis(20))?;
            let status = child.wait()?;
            Ok((early, status))
        });
        copas_core::run().unwrap();
        let (early, status) = h.join().unwrap().unwrap();
        assert!(early.is_none());
        assert_eq!(status.code(), Some(5));
    }

    #[cfg(target_os = "linux")] // looks in /proc
    #[test]
    fn a_dropped_polled_child_is_reaped_by_the_reaper() {
        let child = polled("sleep 0.1");
        let pid = child.id();
        drop(child);
        let end = Instant::now() + Duration::from_secs(20);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < end, "process {pid} was not reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
