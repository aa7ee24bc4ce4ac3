//! A pool of coroutine stacks, so that spawning a task rarely maps memory.
//!
//! Invariant: every stack in the pool has exactly `default_size` usable bytes and belongs to
//! no coroutine. Stacks of other sizes are not pooled; they are unmapped when their task ends.

use std::io;

use corosensei::stack::DefaultStack;

/// The default usable size of a task's stack: 128 KiB of address space. Only the pages a
/// task actually touches take memory.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// How many idle stacks the pool keeps at most; the rest are unmapped.
const MAX_POOLED: usize = 4096;

pub(crate) struct StackPool {
    default_size: usize,
    free: Vec<DefaultStack>,
}

impl StackPool {
    pub(crate) fn new() -> Self {
        StackPool {
            default_size: DEFAULT_STACK_SIZE,
            free: Vec::new(),
        }
    }

    pub(crate) fn default_size(&self) -> usize {
        self.default_size
    }

    pub(crate) fn set_default_size(&mut self, size: usize) {
        if size != self.default_size {
            self.default_size = size;
            self.free.clear();
        }
    }

    /// A stack of `size` usable bytes: from the pool when the size is the default one.
    pub(crate) fn take(&mut self, size: usize) -> io::Result<DefaultStack> {
        if size == self.default_size {
            if let Some(stack) = self.free.pop() {
                return Ok(stack);
            }
        }
        DefaultStack::new(size)
    }

    /// Gives back the stack of a finished coroutine that was created with `size`.
    pub(crate) fn give(&mut self, stack: DefaultStack, size: usize) {
        if size == self.default_size && self.free.len() < MAX_POOLED {
            self.free.push(stack);
        }
    }

    pub(crate) fn pooled(&self) -> usize {
        self.free.len()
    }
}
