//! The timer queue, and the sleeping functions built on it.
//!
//! Timers are exact: an entry fires at the first loop step whose clock reads at or after
//! its deadline, never before. Entries with equal deadlines fire in the order they were
//! armed, because the key is `(deadline, sequence number)`.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use crate::runtime::{self, Runtime};
use crate::task::TaskId;

/// Identifies one armed timer entry; used to disarm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerKey {
    deadline: Instant,
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

/// Puts the current task to sleep for at least `dur` (Copas `pause`).
///
/// Other tasks run meanwhile. A zero duration yields like [`yield_now`](crate::yield_now).
/// Called outside a task, it drives the runtime until the time has passed.
///
/// # Errors
/// Fails when the task is cancelled while it sleeps (see [`crate::is_cancelled`]), when
/// an enclosing [`with_timeout`](crate::with_timeout) scope ends first (`TimedOut`), or
/// when called during a panic.
///
/// # Examples
/// ```
/// use std::time::{Duration, Instant};
/// let start = Instant::now();
/// copas_core::spawn(|| copas_core::sleep(Duration::from_millis(5)).unwrap());
/// copas_core::run().unwrap();
/// assert!(start.elapsed() >= Duration::from_millis(5));
/// ```
pub fn sleep(dur: Duration) -> io::Result<()> {
    match Instant::now().checked_add(dur) {
        Some(deadline) => sleep_until(deadline),
        // Far beyond any clock: sleep until cancelled.
        None => loop {
            runtime::suspend(None)?;
        },
    }
}

/// Puts the current task to sleep until `deadline`; returns at once if it has passed,
/// after yielding once.
///
/// # Errors
/// As for [`sleep`].
pub fn sleep_until(deadline: Instant) -> io::Result<()> {
    if Instant::now() >= deadline {
        return crate::yield_now();
    }
    loop {
        match runtime::suspend(Some(deadline)) {
            // A `with_timeout` scope may end before the sleep does: that is an error.
            Err(e) if e.kind() == io::ErrorKind::TimedOut && Instant::now() >= deadline => {
                return Ok(())
            }
            Err(e) => return Err(e),
            // Woken early by someone else (a stray unpark): keep sleeping.
            Ok(()) if Instant::now() >= deadline => return Ok(()),
            Ok(()) => {}
        }
    }
}

/// A one-shot or recurring callback run by the loop (Copas `copas.timer`).
///
/// Each firing runs the callback in a fresh task, so it may block (sleep, do I/O); a panic
/// goes to the runtime's error handler and a recurring timer keeps running. A recurring
/// timer's firings are scheduled from its first deadline in whole periods, so they do not
/// drift by the callback's run time; a firing that is more than one period late is skipped
/// rather than run in a burst.
///
/// Dropping the `Timer` does not cancel it; call [`Timer::cancel`].
#[derive(Debug, Clone)]
pub struct Timer {
    inner: std::rc::Rc<TimerInner>,
}

struct TimerInner {
    armed: std::cell::Cell<Option<TimerKey>>,
    /// Bumped by `cancel` and `arm`: a callback task spawned before then, that has not
    /// started yet, does not run (its firing was still pending when it was replaced).
    epoch: std::cell::Cell<u64>,
    /// Callback tasks of the current epoch spawned but not started yet.
    starting: std::cell::Cell<usize>,
    period: std::cell::Cell<Option<Duration>>,
    callback: std::rc::Rc<dyn Fn(&Timer)>,
    runtime: Runtime,
    name: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for TimerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("armed", &self.armed.get().map(|k| k.deadline))
            .field("period", &self.period.get())
            .finish()
    }
}

impl Timer {
    /// Runs `f` once, `delay` from now.
    ///
    /// # Examples
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// let fired = Rc::new(Cell::new(false));
    /// let f = fired.clone();
    /// copas_core::Timer::after(Duration::from_millis(1), move |_| f.set(true));
    /// copas_core::run().unwrap();
    /// assert!(fired.get());
    /// ```
    pub fn after(delay: Duration, f: impl Fn(&Timer) + 'static) -> Timer {
        let t = Timer::new(None, f);
        t.arm(delay);
        t
    }

    /// Runs `f` every `period`, the first time one period from now.
    ///
    /// # Panics
    /// Panics if `period` is zero.
    #[track_caller]
    pub fn interval(period: Duration, f: impl Fn(&Timer) + 'static) -> Timer {
        assert!(
            !period.is_zero(),
            "copas: Timer::interval with a zero period"
        );
        let t = Timer::new(Some(period), f);
        t.arm(period);
        t
    }

    fn new(period: Option<Duration>, f: impl Fn(&Timer) + 'static) -> Timer {
        Timer {
            inner: std::rc::Rc::new(TimerInner {
                armed: std::cell::Cell::new(None),
                epoch: std::cell::Cell::new(0),
                starting: std::cell::Cell::new(0),
                period: std::cell::Cell::new(period),
                callback: std::rc::Rc::new(f),
                runtime: Runtime::current(),
                name: None,
            }),
        }
    }

    /// (Re-)arms the timer to fire `delay` from now, replacing any pending firing. A
    /// recurring timer goes on with its period from there. Works from inside the callback.
    pub fn arm(&self, delay: Duration) {
        self.drop_spawned();
        let deadline = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        self.arm_at(deadline);
    }

    fn arm_at(&self, deadline: Instant) {
        self.disarm();
        let me = self.clone();
        let key = self.inner.runtime.shared().insert_timer(
            deadline,
            TimerAction::Call(Box::new(move || me.fire(deadline))),
        );
        self.inner.armed.set(Some(key));
    }

    fn disarm(&self) {
        if let Some(key) = self.inner.armed.take() {
            // Take the entry out first and drop it after the borrow ends: it holds a
            // clone of this timer.
            let entry = self.inner.runtime.shared().remove_timer(key);
            drop(entry);
        }
    }

    /// Stops the timer: a pending firing is dropped (also one whose callback task has
    /// been spawned but has not started), so a recurring timer stops recurring until
    /// [`arm`](Timer::arm) starts it again. A callback that is already running finishes.
    /// Returns whether a firing was pending.
    pub fn cancel(&self) -> bool {
        let was = self.is_armed();
        self.drop_spawned();
        self.disarm();
        was
    }

    /// Whether a firing is pending ([`cancel_all`](crate::cancel_all) drops pending
    /// firings too).
    pub fn is_armed(&self) -> bool {
        self.armed_key().is_some() || self.inner.starting.get() > 0
    }

    /// The key of the pending firing, if its entry is still in the timer queue.
    fn armed_key(&self) -> Option<TimerKey> {
        self.inner
            .armed
            .get()
            .filter(|k| self.inner.runtime.shared().has_timer(*k))
    }

    /// Makes the callback tasks spawned by earlier firings that have not started yet skip
    /// the callback: the loop may start a firing's task in the same step as, but after,
    /// the task that cancels the timer.
    fn drop_spawned(&self) {
        self.inner.epoch.set(self.inner.epoch.get() + 1);
        self.inner.starting.set(0);
    }

    /// The next deadline, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.armed_key().map(|k| k.deadline)
    }

    fn fire(&self, deadline: Instant) {
        self.inner.armed.set(None);
        if let Some(period) = self.inner.period.get() {
            // Next firing counted from this one's deadline, not from now: no drift. Skip
            // the periods that are already past instead of firing a burst.
            let now = Instant::now();
            let mut next = deadline.checked_add(period).unwrap_or_else(far_future);
            if next <= now {
                let behind = now.duration_since(deadline).as_nanos() / period.as_nanos();
                let skip = u32::try_from(behind).unwrap_or(u32::MAX);
                next = deadline
                    .checked_add(period.saturating_mul(skip.saturating_add(1)))
                    .unwrap_or_else(far_future);
            }
            self.arm_at(next);
        }
        let firing = Firing::new(self.clone());
        let cb = self.inner.callback.clone();
        let mut builder = crate::Builder::new();
        if let Some(name) = &self.inner.name {
            builder = builder.name(name.to_string());
        } else {
            builder = builder.name("timer".to_string());
        }
        if let Err(e) = builder.spawn(move || {
            let current = firing.is_current();
            let me = firing.timer.clone();
            drop(firing);
            if current {
                cb(&me);
            }
        }) {
            eprintln!("copas: cannot start a timer callback: {e}");
        }
    }
}

/// A firing whose callback task has been spawned but has not started: `cancel` and `arm`
/// still drop it. Counted in `TimerInner::starting` while it exists and is current.
struct Firing {
    timer: Timer,
    epoch: u64,
}

impl Firing {
    fn new(timer: Timer) -> Firing {
        let inner = &timer.inner;
        inner.starting.set(inner.starting.get() + 1);
        Firing {
            epoch: inner.epoch.get(),
            timer,
        }
    }

    /// Whether neither `cancel` nor `arm` came since the firing.
    fn is_current(&self) -> bool {
        self.timer.inner.epoch.get() == self.epoch
    }
}

impl Drop for Firing {
    fn drop(&mut self) {
        if self.is_current() {
            let inner = &self.timer.inner;
            inner.starting.set(inner.starting.get() - 1);
        }
    }
}

fn far_future() -> Instant {
    // About 30 years: beyond any real deadline, far from overflow.
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

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
