//! The run queue: the tasks waiting for their turn, FIFO, linked through their records
//! (no allocation, no borrow flags, no `Option<Rc>` moves on the links).
//!
//! Invariants:
//! - A record is in the queue at most once, exactly while its state is `Queued` (the
//!   scheduler's rule, see `slot.rs`). Its `next` link is null exactly when it is not in
//!   the queue, and [`END`] when it is the last one, so a record that is dropped or reused
//!   links nothing, and pushing a record that is queued already is refused here (the
//!   state rule makes that never happen, but the counts below do not depend on it).
//! - The queue holds one strong count on each queued record, taken by [`push_back`]
//!   (`Rc::into_raw`) and handed back by [`pop_front`] (`Rc::from_raw`), so the records
//!   stay alive while queued and every pointer in `head`, `tail` and the links is valid.
//!   `head` and `tail` are null exactly when the queue is empty.
//! - Dropping the queue hands back every count, one record at a time (no recursion).
//!
//! [`push_back`]: RunQueue::push_back
//! [`pop_front`]: RunQueue::pop_front

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr;
use std::rc::Rc;

use crate::slot::TaskCell;

/// The `next` link of the last queued record: not null, and never a record's address
/// (no record lives at the dangling address of its alignment).
const END: *const TaskCell = ptr::dangling();

pub(crate) struct RunQueue {
    head: Cell<*const TaskCell>,
    tail: Cell<*const TaskCell>,
    len: Cell<usize>,
}

impl Default for RunQueue {
    fn default() -> RunQueue {
        RunQueue {
            head: Cell::new(ptr::null()),
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

    /// Appends `cell`; a record that is queued already stays where it is.
    #[inline]
    pub(crate) fn push_back(&self, cell: Rc<TaskCell>) {
        if !cell.next.get().is_null() {
            debug_assert!(false, "copas: a task was queued twice");
            return;
        }
        cell.next.set(END);
        let p = Rc::into_raw(cell);
        let last = self.tail.replace(p);
        if last.is_null() {
            self.head.set(p);
        } else {
            // SAFETY: by the invariant, a non-null `tail` points at the last queued record,
            // which the queue's own strong count keeps alive; only a `Cell` is written.
            unsafe { (*last).next.set(p) };
        }
        self.len.set(self.len.get() + 1);
    }

    #[inline]
    pub(crate) fn pop_front(&self) -> Option<Rc<TaskCell>> {
        let first = self.head.get();
        if first.is_null() {
            return None;
        }
        // SAFETY: by the invariant, a non-null `head` came from `Rc::into_raw` in
        // `push_back` and its count is still the queue's; taking it back here, once, as the
        // record leaves the queue.
        let first = unsafe { Rc::from_raw(first) };
        let next = first.next.replace(ptr::null());
        if next == END {
            self.tail.set(ptr::null());
            self.head.set(ptr::null());
        } else {
            self.head.set(next);
        }
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
