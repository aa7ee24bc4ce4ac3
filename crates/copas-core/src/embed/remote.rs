//! [`Handle::spawn`]: run a closure as a task on another thread's runtime, and
//! [`RemoteJoinHandle`] to wait for its result from any thread or task.
//!
//! Key invariant: the result travels in a oneshot whose sender lives in the remote task;
//! if the closure is dropped before it runs (the runtime went away), the sender is dropped
//! with it and the joiner sees [`JoinError::Cancelled`].

use std::fmt;

use super::oneshot;
use crate::{Handle, JoinError};

impl Handle {
    /// Runs `f` as a task on this handle's runtime, from any thread, and returns a handle
    /// to wait for its result from any thread or task.
    ///
    /// The task is spawned at the runtime's next loop step, which this call wakes; the
    /// runtime's [`run`](crate::run) does not end before it has run. A panic in `f` is
    /// reported by that runtime's error handler and given to the joiner.
    ///
    /// # Examples
    /// ```
    /// let rt = copas_core::Runtime::spawn_thread("remote")?;
    /// let handles: Vec<_> = (0..4)
    ///     .map(|i| {
    ///         let h = rt.handle();
    ///         std::thread::spawn(move || h.spawn(move || i * 10).join().unwrap())
    ///     })
    ///     .collect();
    /// let sum: i32 = handles.into_iter().map(|t| t.join().unwrap()).sum();
    /// assert_eq!(sum, 60);
    /// rt.handle().exit();
    /// rt.join()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> RemoteJoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // The closure runs as a task that spawns `f` as a task of its own and joins it, so
        // `f` gets the runtime's panic reporting and its shutdown unwinding unchanged.
        let job = Box::new(move || {
            let h = crate::spawn(f);
            tx.send(h.join());
        });
        // Err (the runtime is gone): the job and its sender are dropped, which the joiner
        // sees as `Cancelled`.
        let _ = self.spawn_boxed(job);
        RemoteJoinHandle { rx }
    }
}

/// An owned permission to wait for a task started with [`Handle::spawn`]. Unlike
/// [`JoinHandle`](crate::JoinHandle) it is `Send`: join it from any thread or task.
/// Dropping it detaches the task.
pub struct RemoteJoinHandle<T> {
    rx: oneshot::Receiver<Result<T, JoinError>>,
}

impl<T> RemoteJoinHandle<T> {
    /// Waits for the task and returns its value. On a plain thread this blocks the
    /// thread (driving its own copas loop, if it has work); in a copas task of any runtime
    /// it suspends the task.
    ///
    /// # Errors
    /// [`JoinError::Panicked`] if the task panicked; [`JoinError::Cancelled`] if it was
    /// cancelled, if its runtime went away before running it, or if the *calling* task is
    /// cancelled or its [`with_timeout`](crate::with_timeout) scope ends while it waits
    /// (the remote task goes on).
    pub fn join(self) -> Result<T, JoinError> {
        match super::block_on(self.rx) {
            Ok(Ok(r)) => r,
            Ok(Err(oneshot::Lost)) | Err(_) => Err(JoinError::Cancelled),
        }
    }

    /// The result if the task has finished, without waiting; the handle is given back
    /// otherwise.
    ///
    /// # Errors
    /// `Err(self)` while the task is still running.
    pub fn try_join(self) -> Result<Result<T, JoinError>, Self> {
        match self.rx.try_take() {
            Some(Ok(r)) => Ok(r),
            Some(Err(oneshot::Lost)) => Ok(Err(JoinError::Cancelled)),
            None => Err(self),
        }
    }

    /// Whether the task has finished (or can no longer run).
    pub fn is_finished(&self) -> bool {
        self.rx.is_done()
    }
}

impl<T> fmt::Debug for RemoteJoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
