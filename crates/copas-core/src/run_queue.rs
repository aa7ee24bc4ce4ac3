//! The run queue: the tasks waiting for their turn, FIFO, linked through their records
//! (no allocation, no borrow flags).
//!
//! Invariants:
//! - A record is in the queue at most once, exactly while its state is `Queued` (the
//!   scheduler's rule, see `slot.rs`); its `next` link is `None` whenever it is not in
//!   the queue, so a record that is dropped or reused links nothing.
//! - The queue holds one strong count on each queued record (through `head` and the
//!   links), so the records stay alive while queued; `tail` is null exactly when the
//!   queue is empty, else it points at the last queued record (kept alive by that count).
//! - Dropping the queue unlinks the records one by one (no recursion through the links).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr;
use std::rc::Rc;

use crate::slot::TaskCell;

pub(crate) struct RunQueue {
    head: Cell<Option<Rc<TaskCell>>>,
    tail: Cell<*const TaskCell>,
    len: Cell<usize>,
}

impl Default for RunQueue {
    fn default() -> RunQueue {
        RunQueue {
            head: Cell::new(None),
            tail: Cell::new(ptr::null()),
            len: Cell::new(0),
        }
    }
}

impl RunQueue {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// Appends `cell`, which must not be queued already.
    #[inline]
    pub(crate) fn push_back(&self, cell: Rc<TaskCell>) {
        let last = self.tail.replace(Rc::as_ptr(&cell));
        if last.is_null() {
            self.head.set(Some(cell));
        } else {
            // SAFETY: by the invariant, a non-null `tail` points at the last queued record,
            // which the queue's own strong count keeps alive; only `Cell`s are touched.
            unsafe { (*last).next.set(Some(cell)) };
        }
        self.len.set(self.len.get() + 1);
    }

    #[inline]
    pub(crate) fn pop_front(&self) -> Option<Rc<TaskCell>> {
        let first = self.head.take()?;
        let next = first.next.take();
        if next.is_none() {
            self.tail.set(ptr::null());
        }
        self.head.set(next);
        self.len.set(self.len.get() - 1);
        Some(first)
    }
}

impl Drop for RunQueue {
    fn drop(&mut self) {
        while let Some(cell) = self.pop_front() {
            drop(cell);
        }
    }
}
