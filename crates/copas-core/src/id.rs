//! Task identities.
//!
//! Invariant: a [`TaskId`] is a task's slot in its runtime's task table plus a serial
//! number that is never reused, so a stale id (of a finished task whose slot was reused)
//! matches nothing. This module depends on nothing else in the crate.

use std::fmt;

/// The identity of a task, unique for the life of its runtime.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub(crate) index: usize,
    pub(crate) serial: u64,
}

impl TaskId {
    /// The pseudo-task that stands for code running outside any task (the thread's own
    /// stack) while it drives the loop from a blocking call.
    pub(crate) const MAIN: TaskId = TaskId {
        index: usize::MAX,
        serial: 0,
    };

    pub(crate) fn is_main(self) -> bool {
        self.index == usize::MAX
    }

    /// A number unique among this runtime's tasks (never reused).
    pub fn as_u64(self) -> u64 {
        self.serial
    }

    #[cfg(test)]
    pub(crate) fn test_id(n: u64) -> TaskId {
        TaskId {
            index: n as usize,
            serial: n + 1,
        }
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_main() {
            f.write_str("TaskId(main)")
        } else {
            write!(f, "TaskId({})", self.serial)
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_main() {
            f.write_str("main")
        } else {
            write!(f, "#{}", self.serial)
        }
    }
}
