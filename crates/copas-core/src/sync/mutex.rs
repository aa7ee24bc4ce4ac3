//! `Mutex<T>`: a lock held across suspensions (Copas `copas.lock`).
//!
//! Invariant: `owner` is the task whose guard exists, or `None`; on unlock the lock is
//! handed to the first waiter (`owner` set to it before it wakes), so the head of the line
//! cannot be overtaken. A waiter that gives up removes itself, and if the lock was handed to
//! it in the meantime it passes the lock on.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use super::{deadline_after, wait, SyncError};
use crate::hooks;
use crate::wait::WaitOn;
use crate::{Runtime, TaskId};

/// A mutual-exclusion lock for tasks: [`lock`](Mutex::lock) suspends the task (not the
/// thread) until the lock is free. Share it with `Rc<Mutex<T>>`.
///
/// # Examples
/// ```
/// use std::rc::Rc;
/// use copas_core::sync::Mutex;
///
/// let m = Rc::new(Mutex::new(0));
/// for _ in 0..3 {
///     let m = m.clone();
///     copas_core::spawn(move || {
///         let mut n = m.lock().unwrap();
///         copas_core::yield_now().unwrap(); // still held across the suspension
///         *n += 1;
///     });
/// }
/// copas_core::run().unwrap();
/// assert_eq!(*m.try_lock().unwrap(), 3);
/// ```
pub struct Mutex<T> {
    value: RefCell<T>,
    owner: Cell<Option<TaskId>>,
    waiters: RefCell<VecDeque<TaskId>>,
    closed: Cell<bool>,
    runtime: Runtime,
}

impl<T: fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("locked", &self.owner.get().is_some())
            .field("waiters", &self.waiters.borrow().len())
            .field("closed", &self.closed.get())
            .finish_non_exhaustive()
    }
}

impl<T> Mutex<T> {
    /// A new, unlocked mutex holding `value`.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            value: RefCell::new(value),
            owner: Cell::new(None),
            waiters: RefCell::new(VecDeque::new()),
            closed: Cell::new(false),
            runtime: Runtime::current(),
        }
    }

    /// Locks, waiting as long as it takes.
    ///
    /// # Errors
    /// [`SyncError::Deadlock`] if the caller holds it already, [`SyncError::Closed`],
    /// [`SyncError::Cancelled`].
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, SyncError> {
        self.lock_inner(None)
    }

    /// Locks, waiting at most `timeout`. A zero timeout never queues the caller.
    ///
    /// # Errors
    /// As [`lock`](Mutex::lock), plus [`SyncError::TimedOut`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, SyncError> {
        if timeout.is_zero() {
            return self.try_lock().map_err(|e| match e {
                SyncError::WouldBlock => SyncError::TimedOut,
                e => e,
            });
        }
        self.lock_inner(Some(timeout))
    }

    /// Locks if the lock is free right now.
    ///
    /// # Errors
    /// [`SyncError::WouldBlock`] if it is held, [`SyncError::Deadlock`] if by the caller,
    /// [`SyncError::Closed`].
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, SyncError> {
        let me = hooks::waiter_id();
        if self.closed.get() {
            return Err(SyncError::Closed);
        }
        match self.owner.get() {
            Some(o) if o == me => Err(SyncError::Deadlock),
            Some(_) => Err(SyncError::WouldBlock),
            None => Ok(self.guard(me)),
        }
    }

    fn lock_inner(&self, timeout: Option<Duration>) -> Result<MutexGuard<'_, T>, SyncError> {
        let me = hooks::waiter_id();
        match self.try_lock() {
            Err(SyncError::WouldBlock) => {}
            other => return other,
        }
        let deadline = timeout.and_then(deadline_after);
        self.waiters.borrow_mut().push_back(me);
        loop {
            let r = wait(WaitOn::Mutex, deadline);
            if self.owner.get() == Some(me) {
                // Handed over to us, possibly just as we timed out: take it.
                return Ok(self.guard(me));
            }
            if self.closed.get() {
                self.remove_waiter(me);
                return Err(SyncError::Closed);
            }
            if let Err(e) = r {
                self.remove_waiter(me);
                return Err(e);
            }
        }
    }

    fn guard(&self, me: TaskId) -> MutexGuard<'_, T> {
        self.owner.set(Some(me));
        MutexGuard {
            mutex: self,
            value: Some(self.value.borrow_mut()),
        }
    }

    fn remove_waiter(&self, me: TaskId) {
        self.waiters.borrow_mut().retain(|w| *w != me);
    }

    /// Hands the lock to the first waiter, or frees it.
    fn unlock(&self) {
        let next = self.waiters.borrow_mut().pop_front();
        self.owner.set(next);
        if let Some(id) = next {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Closes the mutex: every waiter and every later `lock` fails with
    /// [`SyncError::Closed`]. A guard that exists stays valid.
    pub fn close(&self) {
        self.closed.set(true);
        let waiters: Vec<TaskId> = self.waiters.borrow_mut().drain(..).collect();
        for id in waiters {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Whether [`close`](Mutex::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Whether a task holds the lock.
    pub fn is_locked(&self) -> bool {
        self.owner.get().is_some()
    }

    /// How many tasks wait for the lock.
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Consumes the mutex, returning the value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

/// Access to a locked [`Mutex`]'s value; unlocks (handing over to the next waiter) on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    /// # Invariant
    /// `Some` until drop.
    value: Option<RefMut<'a, T>>,
}

impl<T: fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
            .as_deref()
            .expect("guard value present until drop")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
            .as_deref_mut()
            .expect("guard value present until drop")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // Release the value's borrow before the next owner can run.
        self.value = None;
        self.mutex.unlock();
    }
}
