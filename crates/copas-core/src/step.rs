//! One step of the loop: take what other threads sent, fire due timers, poll the driver
//! when needed, then resume every task that was runnable when the pass began.
//!
//! Invariants:
//! - Tasks woken during a pass run in the next pass (FIFO, no starvation): a pass resumes
//!   exactly the tasks that were queued when it began.
//! - While tasks are runnable the driver is polled at least every [`POLL_EVERY`] passes,
//!   so tasks that yield to each other switch at memory speed yet I/O is still looked at.
//!   [`run`](crate::Runtime::run) lets one step make up to that many passes in a row
//!   (each still preceded by the remote queue and the timers, each counted in
//!   `Stats::steps`), so the step's fixed costs are paid once per poll, not per pass.
//! - A task's coroutine is out of its record only while `resume` runs it.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;

use crate::context::{self, Resume, Running};
use crate::runtime::Shared;
use crate::slot::{flag, State, TaskCell};
use crate::timer_queue::TimerAction;

/// While tasks are runnable, at most this many steps in a row skip polling the driver.
const POLL_EVERY: u32 = 16;

struct StepGuard<'a>(&'a std::cell::Cell<bool>);

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn earliest_duration(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Shared {
    /// One step of the loop; see [`Runtime::step`](crate::Runtime::step).
    pub(crate) fn step(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.step_passes(timeout, false)
    }

    /// One step; with `more`, passes follow one another until the driver is due to be
    /// polled, a timer or shutdown deadline needs the full step, or nothing is runnable.
    #[inline]
    pub(crate) fn step_passes(&self, timeout: Option<Duration>, more: bool) -> io::Result<bool> {
        if self.stepping.get() || context::in_coroutine() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "copas: the loop cannot be stepped from inside a task or re-entrantly",
            ));
        }
        self.stepping.set(true);
        let _guard = StepGuard(&self.stepping);
        self.steps.set(self.steps.get() + 1);

        let mut busy = self.take_remote();
        busy |= self.fire_timers();

        let runnable = !self.run_queue.is_empty() || self.main_woken.get();
        // While tasks are runnable, the driver is polled (a system call) only every few
        // steps.
        let skip_poll = runnable && self.busy_steps.get() < POLL_EVERY;
        let driver = if skip_poll {
            self.busy_steps.set(self.busy_steps.get() + 1);
            None
        } else {
            let wait = if runnable {
                Some(Duration::ZERO)
            } else {
                let now = Instant::now();
                let next_timer = self
                    .timers
                    .borrow()
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(now));
                let shutdown = self
                    .shutdown_deadline
                    .get()
                    .map(|d| d.saturating_duration_since(now));
                earliest_duration(earliest_duration(next_timer, timeout), shutdown)
            };
            let driver = self.driver.borrow().clone();
            // With no timeout and nothing that could ever end the wait: no wait at all.
            if wait.is_some() || self.alive() {
                self.busy_steps.set(0);
                driver.before_park();
                let mut woke = 0usize;
                driver.park(wait, &mut |id| {
                    woke += 1;
                    self.wake(id);
                })?;
                self.last_now.set(Some(Instant::now()));
                busy |= woke > 0;
                busy |= self.take_remote();
                busy |= self.fire_timers();
            }
            Some(driver)
        };
        if let Some(d) = self.shutdown_deadline.get() {
            if Instant::now() >= d {
                self.shutdown_deadline.set(None);
                self.cancel_all(true);
                busy = true;
            }
        }
        busy |= self.run_passes(more);
        // Output written during the pass leaves now, not at the next step, which a
        // program driving `step` may take much later.
        match driver {
            Some(d) => d.before_park(),
            None => self.driver.borrow().before_park(),
        }
        Ok(busy)
    }

    /// Applies what other threads sent: unparks, spawns, an exit request.
    #[inline]
    fn take_remote(&self) -> bool {
        if !self.remote.is_pending() {
            return false;
        }
        self.take_remote_slow()
    }

    #[cold]
    #[inline(never)]
    fn take_remote_slow(&self) -> bool {
        let Some(inbox) = self.remote.take() else {
            return false;
        };
        for id in inbox.unparks {
            if id.is_main() {
                // Code blocked outside any task (block_on, a channel) woken from afar.
                self.wake(id);
            } else {
                self.unpark_local(id);
            }
        }
        for f in inbox.spawns {
            if let Err(e) = crate::Builder::new().name("remote spawn".into()).spawn(f) {
                eprintln!("copas: cannot start a task sent from another thread: {e}");
            }
        }
        if inbox.exit {
            self.exit();
        }
        for reply in inbox.dumps {
            let _ = reply.send(self.dump_text()); // diag: Handle::dump
        }
        true
    }

    #[inline(always)]
    fn fire_timers(&self) -> bool {
        if self.timers.borrow().is_empty() {
            return false;
        }
        self.fire_timers_slow()
    }

    #[inline(never)]
    fn fire_timers_slow(&self) -> bool {
        let now = Instant::now();
        self.last_now.set(Some(now));
        let mut any = false;
        loop {
            let due = self.timers.borrow_mut().pop_due(now);
            let Some((_, action)) = due else { break };
            any = true;
            match action {
                TimerAction::Wake(id) => {
                    if let Some(c) = self.tasks.get(id) {
                        c.raise(flag::TIMED_OUT);
                        self.wake_cell(&c);
                    } else if id.is_main() {
                        self.wake(id);
                    }
                }
                TimerAction::Call(f) => f(),
            }
        }
        any
    }

    /// Resumes every task that was runnable when the pass began. (Not re-entrant: the
    /// loop cannot be stepped from inside a task.)
    pub(crate) fn run_pass(&self) -> bool {
        self.run_passes(false)
    }

    /// One pass; with `more`, further passes while the next one would be a step that
    /// skips the poll: they are made here, in the same loop, without the step's own
    /// bookkeeping (each is still preceded by the remote queue and the timers, and
    /// counted as a step). Output is flushed by the caller, before the next poll.
    fn run_passes(&self, more: bool) -> bool {
        let mut any = false;
        loop {
            // The queue fills up again during the pass, at its back: this pass takes only
            // the tasks in front of those.
            let n = self.run_queue.len();
            for _ in 0..n {
                let next = self.run_queue.pop_front();
                let Some(cell) = next else { break };
                self.resume(cell);
            }
            any |= n > 0;
            if !more
                || self.busy_steps.get() >= POLL_EVERY
                || self.shutdown_deadline.get().is_some()
                || self.run_queue.is_empty()
            {
                return any;
            }
            self.busy_steps.set(self.busy_steps.get() + 1);
            self.steps.set(self.steps.get() + 1);
            self.take_remote();
            self.fire_timers();
        }
    }

    #[inline]
    fn resume(&self, cell: Rc<TaskCell>) {
        if cell.state.get() != State::Queued {
            return;
        }
        let Ok(mut slot) = cell.coro.try_borrow_mut() else {
            return;
        };
        let Some(coro) = slot.as_mut() else {
            return;
        };
        cell.state.set(State::Running);
        // A task cancelled before it started never runs: it starts by unwinding.
        let input = if cell.has(flag::UNWINDING | flag::CANCELLED)
            && (cell.has(flag::UNWINDING) || !coro.started())
        {
            Resume::Unwind
        } else {
            Resume::Run
        };
        self.watch.enter(cell.id.serial); // diag: blocked-loop watchdog
        let result = {
            #[cfg(feature = "tracing")]
            let span = cell.span.borrow(); // diag: the task's span while it runs
            #[cfg(feature = "tracing")]
            let _entered = span.enter();
            let _running = Running::enter(&cell, self);
            coro.resume(input)
        };
        if let Some(ran) = self.watch.leave() {
            self.report_blocked(&cell, ran); // diag: blocked-loop warning (cold)
        }
        match result {
            CoroutineResult::Yield(()) => {
                if cell.state.get() == State::Running {
                    cell.state.set(State::Suspended);
                }
            }
            CoroutineResult::Return(()) => {
                // The finished coroutine gives up its stack where it lies, straight to the
                // pool (no copies of the coroutine or the stack kept across other calls).
                if let Some(coro) = slot.take() {
                    self.stacks.borrow_mut().give(coro.into_stack());
                }
                drop(slot);
                cell.state.set(State::Done);
                let removed = self.tasks.remove(cell.id);
                drop(removed);
                self.records.recycle(cell);
            }
        }
    }
}
