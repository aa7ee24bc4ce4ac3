//! `Queue<T>`: a FIFO of items between tasks, with worker tasks (Copas `copas.queue`).
//!
//! Invariants: items wait in `items` only while no popper waits; a push with a popper
//! waiting hands the item straight to the first popper (its slot is filled before it
//! wakes), so poppers are served in arrival order and a later `pop` cannot overtake them.
//! After `close`, pushes fail and pops drain what is left, then fail with `Closed`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{deadline_after, wait, SyncError};
use crate::hooks;
use crate::wait::WaitOn;
use crate::{Builder, JoinHandle, Runtime, TaskId};

struct Popper<T> {
    id: TaskId,
    slot: Rc<RefCell<Option<T>>>,
}

struct Inner<T> {
    items: RefCell<VecDeque<T>>,
    poppers: RefCell<VecDeque<Popper<T>>>,
    closed: Cell<bool>,
    /// Workers started and not yet ended.
    workers: Cell<usize>,
    /// Workers in the middle of an item.
    busy: Cell<usize>,
    worker_serial: Cell<usize>,
    /// Tasks waiting in `finish`.
    finishers: RefCell<Vec<TaskId>>,
    name: String,
    runtime: Runtime,
}

/// A FIFO queue between the tasks of one runtime. Cloning gives another handle to the same
/// queue.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use copas_core::sync::Queue;
///
/// let q: Queue<u32> = Queue::new();
/// let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
/// let s = seen.clone();
/// q.add_worker(move |item| s.borrow_mut().push(item));
/// for i in 1..=3 {
///     q.push(i).unwrap();
/// }
/// let q2 = q.clone();
/// let done = copas_core::spawn(move || q2.finish(Duration::from_secs(5)));
/// copas_core::run().unwrap();
/// assert!(done.join().unwrap());
/// assert_eq!(*seen.borrow(), vec![1, 2, 3]);
/// ```
pub struct Queue<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("len", &self.inner.items.borrow().len())
            .field("closed", &self.inner.closed.get())
            .field("workers", &self.inner.workers.get())
            .finish()
    }
}

impl<T: 'static> Default for Queue<T> {
    fn default() -> Self {
        Queue::new()
    }
}

impl<T: 'static> Queue<T> {
    /// An empty, open queue named `"queue"`.
    pub fn new() -> Queue<T> {
        Queue::with_name("queue")
    }

    /// An empty, open queue; its workers are named `"<name>:worker_<n>"`.
    pub fn with_name(name: impl Into<String>) -> Queue<T> {
        Queue {
            inner: Rc::new(Inner {
                items: RefCell::new(VecDeque::new()),
                poppers: RefCell::new(VecDeque::new()),
                closed: Cell::new(false),
                workers: Cell::new(0),
                busy: Cell::new(0),
                worker_serial: Cell::new(0),
                finishers: RefCell::new(Vec::new()),
                name: name.into(),
                runtime: Runtime::current(),
            }),
        }
    }

    /// Adds an item at the back; it goes straight to the first waiting popper if there is
    /// one.
    ///
    /// # Errors
    /// [`SyncError::Closed`] after [`close`](Queue::close); the item is dropped.
    pub fn push(&self, item: T) -> Result<(), SyncError> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(SyncError::Closed);
        }
        let popper = inner.poppers.borrow_mut().pop_front();
        match popper {
            Some(p) => {
                *p.slot.borrow_mut() = Some(item);
                hooks::wake(&inner.runtime, p.id);
            }
            None => inner.items.borrow_mut().push_back(item),
        }
        Ok(())
    }

    /// Takes the item at the front, waiting as long as it takes.
    ///
    /// # Errors
    /// [`SyncError::Closed`] once the queue is closed and empty; [`SyncError::Cancelled`].
    pub fn pop(&self) -> Result<T, SyncError> {
        self.pop_inner(None)
    }

    /// Takes the item at the front, waiting at most `timeout` (zero: never waits).
    ///
    /// # Errors
    /// As [`pop`](Queue::pop), plus [`SyncError::TimedOut`].
    pub fn pop_timeout(&self, timeout: Duration) -> Result<T, SyncError> {
        if timeout.is_zero() {
            return self.try_pop().map_err(|e| match e {
                SyncError::WouldBlock => SyncError::TimedOut,
                e => e,
            });
        }
        self.pop_inner(deadline_after(timeout))
    }

    /// Takes the item at the front if there is one.
    ///
    /// # Errors
    /// [`SyncError::WouldBlock`] when empty, [`SyncError::Closed`] when closed and empty.
    pub fn try_pop(&self) -> Result<T, SyncError> {
        let item = self.inner.items.borrow_mut().pop_front();
        match item {
            Some(item) => {
                self.after_pop();
                Ok(item)
            }
            None if self.inner.closed.get() => Err(SyncError::Closed),
            None => Err(SyncError::WouldBlock),
        }
    }

    fn pop_inner(&self, deadline: Option<Instant>) -> Result<T, SyncError> {
        match self.try_pop() {
            Err(SyncError::WouldBlock) => {}
            other => return other,
        }
        let inner = &*self.inner;
        let me = hooks::waiter_id();
        let slot = Rc::new(RefCell::new(None));
        inner.poppers.borrow_mut().push_back(Popper {
            id: me,
            slot: slot.clone(),
        });
        loop {
            let r = wait(WaitOn::Queue, deadline);
            if let Some(item) = slot.borrow_mut().take() {
                self.after_pop();
                return Ok(item);
            }
            let failure = match r {
                Err(e) => Some(e),
                Ok(()) if inner.closed.get() => Some(SyncError::Closed),
                Ok(()) => None,
            };
            if let Some(e) = failure {
                inner
                    .poppers
                    .borrow_mut()
                    .retain(|p| !Rc::ptr_eq(&p.slot, &slot));
                return Err(e);
            }
        }
    }

    fn after_pop(&self) {
        if self.inner.items.borrow().is_empty() {
            self.wake_finishers();
        }
    }

    fn wake_finishers(&self) {
        let ids: Vec<TaskId> = self.inner.finishers.borrow_mut().drain(..).collect();
        for id in ids {
            hooks::wake(&self.inner.runtime, id);
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.inner.items.borrow().len()
    }

    /// Whether no item waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue: pushes fail from now on, pops drain what is left and then fail,
    /// and workers end once the queue is empty.
    pub fn close(&self) {
        let inner = &*self.inner;
        inner.closed.set(true);
        let poppers: Vec<TaskId> = inner.poppers.borrow_mut().drain(..).map(|p| p.id).collect();
        for id in poppers {
            hooks::wake(&inner.runtime, id);
        }
        self.wake_finishers();
    }

    /// Whether [`close`](Queue::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Workers that have not ended.
    pub fn workers(&self) -> usize {
        self.inner.workers.get()
    }

    /// Starts a worker task that pops items and runs `f` on each, until the queue is
    /// closed and drained (Copas `queue:add_worker`). A panic in `f` is reported to the
    /// error handler and ends that worker.
    ///
    /// # Panics
    /// Panics if the worker's stack cannot be allocated.
    #[track_caller]
    pub fn add_worker(&self, f: impl Fn(T) + 'static) -> JoinHandle<()> {
        let inner = &*self.inner;
        let n = inner.worker_serial.get() + 1;
        inner.worker_serial.set(n);
        inner.workers.set(inner.workers.get() + 1);
        let q = self.clone();
        let spawned = Builder::new()
            .name(format!("{}:worker_{n}", inner.name))
            .spawn(move || {
                let _end = WorkerEnd(q.clone());
                while let Ok(item) = q.pop() {
                    q.inner.busy.set(q.inner.busy.get() + 1);
                    let _busy = Busy(&q);
                    f(item);
                }
            });
        match spawned {
            Ok(h) => h,
            Err(e) => {
                inner.workers.set(inner.workers.get() - 1);
                panic!("copas: cannot start a queue worker: {e}")
            }
        }
    }

    /// Closes the queue and waits, at most `timeout`, until it is drained and every worker
    /// has finished its last item (Copas `queue:finish`). Returns whether that happened in
    /// time. Without workers, it waits for other tasks to pop the items.
    pub fn finish(&self, timeout: Duration) -> bool {
        self.close();
        let deadline = deadline_after(timeout);
        let me = hooks::waiter_id();
        loop {
            if self.is_empty() && self.inner.busy.get() == 0 && self.inner.workers.get() == 0 {
                return true;
            }
            self.inner.finishers.borrow_mut().push(me);
            let r = wait(WaitOn::QueueDrain, deadline);
            self.inner.finishers.borrow_mut().retain(|id| *id != me);
            if r.is_err() {
                return self.is_empty()
                    && self.inner.busy.get() == 0
                    && self.inner.workers.get() == 0;
            }
        }
    }
}

/// Counts a worker's item as done, also when `f` panics.
struct Busy<'a, T: 'static>(&'a Queue<T>);

impl<T: 'static> Drop for Busy<'_, T> {
    fn drop(&mut self) {
        let inner = &self.0.inner;
        inner.busy.set(inner.busy.get() - 1);
        self.0.wake_finishers();
    }
}

/// Counts a worker as ended, however it ends.
struct WorkerEnd<T: 'static>(Queue<T>);

impl<T: 'static> Drop for WorkerEnd<T> {
    fn drop(&mut self) {
        let inner = &self.0.inner;
        inner.workers.set(inner.workers.get() - 1);
        self.0.wake_finishers();
    }
}
