//! Sleeping, and [`Timer`]: callbacks run by the loop, built on the timer queue.
//!
//! Invariant: a [`Timer`] has at most one firing in flight — an armed queue entry, or a
//! callback task spawned or running — so its callback never runs concurrently with
//! itself; a recurring timer arms its next firing only when its callback task ends.

use std::io;
use std::time::{Duration, Instant};

use crate::runtime::Runtime;
use crate::suspend;
use crate::timer_queue::{TimerAction, TimerKey};
use crate::wait::WaitOn;

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
            suspend::suspend(WaitOn::Other("sleep forever"), None)?;
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
        match suspend::suspend(WaitOn::Sleep { until: deadline }, Some(deadline)) {
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
/// goes to the runtime's error handler and a recurring timer keeps running.
///
/// A callback never runs concurrently with itself. A recurring timer arms its next firing
/// when the callback returns (as a Copas recurring timer re-arms after its callback), at
/// the first whole period after its previous deadline that is still ahead: a callback
/// shorter than the period does not make the timer drift, and one that runs longer than
/// the period skips the firings it overran instead of overlapping them or running them in
/// a burst. (A 50 ms interval whose callback takes 200 ms runs it at 50, 300, 550 ms…)
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
    /// The callback of the current epoch is running.
    running: std::cell::Cell<bool>,
    /// The epoch the running callback started in: it re-arms only if still current.
    running_epoch: std::cell::Cell<u64>,
    /// A callback task waiting for the running one to end.
    next: std::cell::RefCell<Option<crate::Task>>,
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
                running: std::cell::Cell::new(false),
                running_epoch: std::cell::Cell::new(0),
                next: std::cell::RefCell::new(None),
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
    /// firings too). A recurring timer whose callback is running counts as armed: it
    /// re-arms when the callback returns.
    pub fn is_armed(&self) -> bool {
        self.armed_key().is_some()
            || self.inner.starting.get() > 0
            || (self.inner.running.get()
                && self.inner.period.get().is_some()
                && self.inner.running_epoch.get() == self.inner.epoch.get())
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
        let firing = Firing::new(self.clone());
        let cb = self.inner.callback.clone();
        let name = self.inner.name.as_deref().unwrap_or("timer").to_owned();
        if let Err(e) = crate::Builder::new().name(name).spawn(move || {
            if !firing.is_current() {
                return;
            }
            let me = firing.timer.clone();
            // A callback started by an `arm` from inside the previous one waits for it.
            while me.inner.running.get() {
                me.inner.next.replace(Some(crate::current()));
                if crate::park().is_err() {
                    return;
                }
            }
            if !firing.is_current() {
                return;
            }
            firing.started();
            // Re-arms when the callback ends, also if it panics.
            let _rearm = Rearm {
                timer: me.clone(),
                epoch: me.inner.epoch.get(),
                deadline,
            };
            cb(&me);
        }) {
            eprintln!("copas: cannot start a timer callback: {e}");
        }
    }

    /// The first whole period after `deadline` that is still ahead.
    fn next_after(deadline: Instant, period: Duration) -> Instant {
        let now = Instant::now();
        let mut next = deadline.checked_add(period).unwrap_or_else(far_future);
        if next <= now {
            let behind = now.duration_since(deadline).as_nanos() / period.as_nanos();
            let skip = u32::try_from(behind).unwrap_or(u32::MAX);
            next = deadline
                .checked_add(period.saturating_mul(skip.saturating_add(1)))
                .unwrap_or_else(far_future);
        }
        next
    }
}

/// Arms a recurring timer's next firing when its callback task ends — unless `cancel`,
/// `arm` or a cancellation of the task came in between.
struct Rearm {
    timer: Timer,
    epoch: u64,
    deadline: Instant,
}

impl Drop for Rearm {
    fn drop(&mut self) {
        let inner = &self.timer.inner;
        inner.running.set(false);
        if let Some(next) = inner.next.take() {
            next.unpark();
        }
        let cancelled =
            crate::context::with_current(|cell, _| cell.has(crate::slot::flag::CANCELLED))
                .unwrap_or(true);
        if cancelled || inner.epoch.get() != self.epoch || inner.armed.get().is_some() {
            return;
        }
        if let Some(period) = inner.period.get() {
            self.timer.arm_at(Timer::next_after(self.deadline, period));
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
    /// The callback starts: the firing is no longer pending but running.
    fn started(self) {
        if self.is_current() {
            let inner = &self.timer.inner;
            inner.running.set(true);
            inner.running_epoch.set(inner.epoch.get());
        }
    }

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
