//! The timer queue: a deadline-ordered set of entries.
//!
//! Invariant: an entry fires at the first loop step whose clock reads at or after its
//! deadline, never before; entries with equal deadlines fire in the order they were armed,
//! because the key is `(deadline, sequence number)`. Depends only on `id`.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::id::TaskId;

/// Identifies one armed timer entry; used to disarm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerKey {
    pub(crate) deadline: Instant,
    seq: u64,
}

/// What an expired timer does.
pub(crate) enum TimerAction {
    /// Wake a suspended task and tell it its deadline passed.
    Wake(TaskId),
    /// Run a callback (used by [`crate::Timer`]); it spawns whatever it needs.
    Call(Box<dyn FnOnce()>),
}

/// A deadline-ordered set of timer entries.
#[derive(Default)]
pub(crate) struct TimerQueue {
    entries: BTreeMap<TimerKey, TimerAction>,
    next_seq: u64,
}

impl TimerQueue {
    pub(crate) fn insert(&mut self, deadline: Instant, action: TimerAction) -> TimerKey {
        let key = TimerKey {
            deadline,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.entries.insert(key, action);
        key
    }

    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<TimerAction> {
        self.entries.remove(&key)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|k| k.deadline)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, TimerAction)> {
        let first = self.entries.first_entry()?;
        if first.key().deadline <= now {
            Some(first.remove_entry())
        } else {
            None
        }
    }

    /// Removes the `Call` entries (the `Timer`s), leaving tasks' deadlines armed.
    pub(crate) fn remove_callbacks(&mut self) -> Vec<TimerAction> {
        let keys: Vec<TimerKey> = self
            .entries
            .iter()
            .filter(|(_, a)| matches!(a, TimerAction::Call(_)))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.entries.remove(&k))
            .collect()
    }

    pub(crate) fn contains(&self, key: TimerKey) -> bool {
        self.entries.contains_key(&key)
    }

    pub(crate) fn clear(&mut self) -> Vec<TimerAction> {
        std::mem::take(&mut self.entries).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let mut q = TimerQueue::default();
        let t0 = Instant::now();
        let ids: Vec<TaskId> = (0..4).map(TaskId::test_id).collect();
        q.insert(t0 + Duration::from_millis(20), TimerAction::Wake(ids[0]));
        q.insert(t0 + Duration::from_millis(10), TimerAction::Wake(ids[1]));
        q.insert(t0 + Duration::from_millis(10), TimerAction::Wake(ids[2]));
        let k = q.insert(t0 + Duration::from_millis(5), TimerAction::Wake(ids[3]));
        assert!(q.remove(k).is_some());
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(q.pop_due(t0 + Duration::from_millis(9)).is_none());
        let mut order = Vec::new();
        while let Some((_, TimerAction::Wake(id))) = q.pop_due(t0 + Duration::from_millis(20)) {
            order.push(id);
        }
        assert_eq!(order, vec![ids[1], ids[2], ids[0]]);
        assert!(q.is_empty());
    }

    #[test]
    fn due_exactly_at_deadline() {
        let mut q = TimerQueue::default();
        let t = Instant::now();
        q.insert(t, TimerAction::Wake(TaskId::test_id(1)));
        assert!(q.pop_due(t).is_some());
    }
}
