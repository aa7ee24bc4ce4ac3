//! `Semaphore`: counted permits with a maximum (Copas `copas.semaphore`).
//!
//! Invariant: `permits <= max`; waiters are served strictly in arrival order, so a large
//! request at the head holds back smaller ones behind it (no starvation of large requests).
//! A waiter is granted by moving permits to it before it wakes (`granted` set).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::{deadline_after, wait, SyncError};
use crate::hooks;
use crate::wait::WaitOn;
use crate::{Runtime, TaskId};

struct Waiter {
    id: TaskId,
    n: usize,
    granted: Rc<Cell<bool>>,
}

/// A counting semaphore for tasks. Share it with `Rc<Semaphore>`.
///
/// # Examples
/// ```
/// use std::rc::Rc;
/// use copas_core::sync::Semaphore;
///
/// let sem = Rc::new(Semaphore::new(2, 0)); // max 2, none available
/// let s = sem.clone();
/// let h = copas_core::spawn(move || s.acquire(2).map(|p| p.forget()));
/// sem.add_permits(2).unwrap();
/// copas_core::run().unwrap();
/// assert!(h.join().unwrap().is_ok());
/// assert_eq!(sem.available_permits(), 0);
/// ```
pub struct Semaphore {
    max: usize,
    permits: Cell<usize>,
    waiters: RefCell<VecDeque<Waiter>>,
    closed: Cell<bool>,
    runtime: Runtime,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("max", &self.max)
            .field("permits", &self.permits.get())
            .field("waiters", &self.waiters.borrow().len())
            .field("closed", &self.closed.get())
            .finish()
    }
}

impl Semaphore {
    /// A semaphore holding at most `max` permits, `initial` of them available now
    /// (capped at `max`).
    pub fn new(max: usize, initial: usize) -> Semaphore {
        Semaphore {
            max,
            permits: Cell::new(initial.min(max)),
            waiters: RefCell::new(VecDeque::new()),
            closed: Cell::new(false),
            runtime: Runtime::current(),
        }
    }

    /// Takes `n` permits, waiting as long as it takes.
    ///
    /// # Errors
    /// [`SyncError::TooMany`] if `n` exceeds the maximum, [`SyncError::Closed`],
    /// [`SyncError::Cancelled`].
    pub fn acquire(&self, n: usize) -> Result<SemaphorePermit<'_>, SyncError> {
        self.acquire_inner(n, None)
    }

    /// Takes `n` permits, waiting at most `timeout`. A zero timeout never queues.
    ///
    /// # Errors
    /// As [`acquire`](Semaphore::acquire), plus [`SyncError::TimedOut`].
    pub fn acquire_timeout(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<SemaphorePermit<'_>, SyncError> {
        if timeout.is_zero() {
            return self.try_acquire(n).map_err(|e| match e {
                SyncError::WouldBlock => SyncError::TimedOut,
                e => e,
            });
        }
        self.acquire_inner(n, Some(timeout))
    }

    /// Takes `n` permits if they are available now and nobody waits before the caller.
    ///
    /// # Errors
    /// [`SyncError::WouldBlock`], [`SyncError::TooMany`], [`SyncError::Closed`].
    pub fn try_acquire(&self, n: usize) -> Result<SemaphorePermit<'_>, SyncError> {
        if self.closed.get() {
            return Err(SyncError::Closed);
        }
        if n > self.max {
            return Err(SyncError::TooMany);
        }
        if self.waiters.borrow().is_empty() && self.permits.get() >= n {
            self.permits.set(self.permits.get() - n);
            return Ok(self.permit(n));
        }
        Err(SyncError::WouldBlock)
    }

    fn acquire_inner(
        &self,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<SemaphorePermit<'_>, SyncError> {
        match self.try_acquire(n) {
            Err(SyncError::WouldBlock) => {}
            other => return other,
        }
        let me = hooks::waiter_id();
        let deadline = timeout.and_then(deadline_after);
        let granted = Rc::new(Cell::new(false));
        self.waiters.borrow_mut().push_back(Waiter {
            id: me,
            n,
            granted: granted.clone(),
        });
        loop {
            let r = wait(WaitOn::Semaphore, deadline);
            if granted.get() {
                return Ok(self.permit(n));
            }
            if self.closed.get() {
                self.remove(&granted);
                return Err(SyncError::Closed);
            }
            if let Err(e) = r {
                self.remove(&granted);
                // Leaving the head of the line may let smaller requests through.
                self.grant();
                return Err(e);
            }
        }
    }

    fn permit(&self, n: usize) -> SemaphorePermit<'_> {
        SemaphorePermit { sem: self, n }
    }

    fn remove(&self, granted: &Rc<Cell<bool>>) {
        self.waiters
            .borrow_mut()
            .retain(|w| !Rc::ptr_eq(&w.granted, granted));
    }

    /// Serves waiters from the head while the permits suffice.
    fn grant(&self) {
        let mut woken = Vec::new();
        {
            let mut waiters = self.waiters.borrow_mut();
            while let Some(front) = waiters.front() {
                if front.n > self.permits.get() {
                    break;
                }
                let w = waiters.pop_front().expect("front exists");
                self.permits.set(self.permits.get() - w.n);
                w.granted.set(true);
                woken.push(w.id);
            }
        }
        for id in woken {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Adds `n` permits and serves waiters. The count is capped at the maximum.
    ///
    /// # Errors
    /// [`SyncError::TooMany`] if the count would pass the maximum (the count is then set
    /// to the maximum); [`SyncError::Closed`].
    pub fn add_permits(&self, n: usize) -> Result<(), SyncError> {
        if self.closed.get() {
            return Err(SyncError::Closed);
        }
        let total = self.permits.get().saturating_add(n);
        let capped = total.min(self.max);
        self.permits.set(capped);
        self.grant();
        if total > self.max {
            Err(SyncError::TooMany)
        } else {
            Ok(())
        }
    }

    /// Permits available now.
    pub fn available_permits(&self) -> usize {
        self.permits.get()
    }

    /// The maximum number of permits.
    pub fn max_permits(&self) -> usize {
        self.max
    }

    /// How many tasks wait.
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Closes the semaphore: waiters and later acquisitions fail with
    /// [`SyncError::Closed`].
    pub fn close(&self) {
        self.closed.set(true);
        let ids: Vec<TaskId> = self.waiters.borrow().iter().map(|w| w.id).collect();
        for id in ids {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Whether [`close`](Semaphore::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// Permits taken from a [`Semaphore`]; given back on drop unless
/// [`forget`](SemaphorePermit::forget) is called.
#[must_use = "the permits are given back as soon as this is dropped"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
    n: usize,
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("n", &self.n)
            .finish()
    }
}

impl SemaphorePermit<'_> {
    /// How many permits this holds.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Keeps the permits taken: they return only through
    /// [`Semaphore::add_permits`] (Copas `take` without a matching `give`).
    pub fn forget(mut self) {
        self.n = 0;
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        if self.n > 0 && !self.sem.closed.get() {
            let total = (self.sem.permits.get() + self.n).min(self.sem.max);
            self.sem.permits.set(total);
            self.sem.grant();
        }
    }
}
