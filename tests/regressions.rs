//! One test per bug fixed, named after what broke.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use copas::Timer;

use common::guard;

/// `JoinHandle::cancel` promises that a task cancelled before its first turn never runs;
/// it ran anyway, and its join reported the value instead of `Cancelled`.
#[test]
fn task_cancelled_before_it_started_ran_anyway() {
    guard(|| {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let h = copas::spawn(move || r.set(true));
        assert!(h.cancel());
        copas::run().unwrap();
        assert!(!ran.get(), "the cancelled task ran");
        assert!(h.join().unwrap_err().is_cancelled());
    });
}

/// When the loop came late to a recurring timer (a busy program between `step`s), the
/// next firing was started before the callback that cancels the timer had run, so a
/// timer cancelled from its own callback after N firings fired N + 1 times.
#[test]
fn interval_fired_again_after_being_cancelled_from_its_callback_when_the_loop_was_late() {
    guard(|| {
        let rt = copas::Runtime::current();
        let period = Duration::from_millis(2);
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        let t = Timer::interval(period, move |t| {
            c.set(c.get() + 1);
            t.cancel();
        });
        // The program does its own slow work between steps: each step comes more than a
        // period after the one before. (The sleep makes the loop late; it synchronises
        // nothing.)
        while t.is_armed() || !rt.is_finished() {
            rt.step(Some(period)).unwrap();
            std::thread::sleep(period * 3);
        }
        assert_eq!(count.get(), 1, "fired again after cancel()");
    });
}

/// A timer cancelled by a task whose sleep ended before the timer's deadline must not
/// fire, even when the loop reaches both deadlines in the same step.
#[test]
fn timer_fired_after_cancel_when_both_deadlines_passed_in_one_step() {
    guard(|| {
        let rt = copas::Runtime::current();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        let t = Timer::after(Duration::from_millis(10), move |_| f.set(true));
        let _canceller = copas::spawn(move || {
            copas::sleep(Duration::from_millis(5)).unwrap();
            assert!(t.cancel());
        });
        // Start the sleeper, then come back only after both deadlines have passed.
        rt.step(Some(Duration::ZERO)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        copas::run().unwrap();
        assert!(!fired.get(), "the timer fired after it was cancelled");
    });
}
