//! Behaviour of the scheduler that users rely on: cancellation of a task that ignores it,
//! recurring timers that never overlap, deadlock reports, reports of detached tasks'
//! errors and of tasks that never ran, wait reasons.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use copas_core::sync::Mutex;
use copas_core::{hooks, JoinHandle, Problem, Runtime, TaskPanic, Timer, WaitOn};

/// Runs `f` on a fresh thread (so a fresh runtime), with a generous bound against hangs.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let v = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("test body hung or panicked");
    t.join().unwrap();
    v
}

fn collect_reports() -> Rc<RefCell<Vec<TaskPanic>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    Runtime::current().set_error_handler(move |p| s.borrow_mut().push(p.clone()));
    seen
}

struct SetOnDrop(Rc<Cell<bool>>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn a_cancelled_task_that_ignores_the_error_is_unwound_and_cannot_monopolise_the_loop() {
    on_thread(|| {
        let spins = Rc::new(Cell::new(0u64));
        let dropped = Rc::new(Cell::new(false));
        let log = Rc::new(RefCell::new(Vec::new()));
        let (s, d, l) = (spins.clone(), dropped.clone(), log.clone());
        let spinner = copas_core::spawn(move || {
            let _flag = SetOnDrop(d);
            loop {
                s.set(s.get() + 1);
                let _ = copas_core::sleep(Duration::from_millis(1));
                l.borrow_mut().push("spin");
            }
        });
        let l = log.clone();
        let ticker = copas_core::spawn(move || {
            for _ in 0..5 {
                copas_core::sleep(Duration::from_millis(2)).unwrap();
                l.borrow_mut().push("tick");
            }
        });
        let canceller = copas_core::spawn(move || {
            copas_core::sleep(Duration::from_millis(3)).unwrap();
            spinner.cancel();
            spinner
        });
        copas_core::run().unwrap();
        let spinner = canceller.join().unwrap();
        ticker.join().unwrap();
        assert!(dropped.get(), "the spinner's destructors did not run");
        assert!(spinner.join().unwrap_err().is_cancelled());
        // After the cancel the spinner ran at most once more (the call that failed)...
        let log = log.borrow();
        let last_spin = log.iter().rposition(|e| *e == "spin").unwrap();
        let ticks_after = log[last_spin..].iter().filter(|e| **e == "tick").count();
        // ...and the ticker kept running after the spinner's last turn.
        assert!(ticks_after >= 1, "ticker stalled: {log:?}");
        assert!(
            spins.get() < 100,
            "the spinner looped {} times",
            spins.get()
        );
    });
}

#[test]
fn a_cancelled_task_spinning_on_yield_now_is_unwound() {
    on_thread(|| {
        let h = copas_core::spawn(|| loop {
            let _ = copas_core::yield_now();
        });
        let other = copas_core::spawn(|| {
            copas_core::yield_now().unwrap();
            7
        });
        let rt = Runtime::current();
        rt.step(Some(Duration::ZERO)).unwrap();
        h.cancel();
        copas_core::run().unwrap();
        assert!(h.join().unwrap_err().is_cancelled());
        assert_eq!(other.join().unwrap(), 7);
    });
}

#[test]
fn a_recurring_timer_never_overlaps_itself_and_rearms_after_its_callback() {
    on_thread(|| {
        let running = Rc::new(Cell::new(0u32));
        let max = Rc::new(Cell::new(0u32));
        let runs = Rc::new(Cell::new(0u32));
        let (r, m, n) = (running.clone(), max.clone(), runs.clone());
        let t = Timer::interval(Duration::from_millis(5), move |t| {
            r.set(r.get() + 1);
            m.set(m.get().max(r.get()));
            // Longer than the period.
            copas_core::sleep(Duration::from_millis(20)).unwrap();
            assert!(
                t.is_armed(),
                "a recurring timer counts as armed while it runs"
            );
            r.set(r.get() - 1);
            n.set(n.get() + 1);
            if n.get() == 3 {
                assert!(
                    t.cancel(),
                    "a recurring timer's running callback counts as armed"
                );
                assert!(!t.is_armed(), "cancelled from inside its callback");
            }
        });
        copas_core::run().unwrap();
        assert_eq!(runs.get(), 3);
        assert_eq!(max.get(), 1, "the callback ran concurrently with itself");
        assert!(!t.is_armed());
    });
}

#[test]
fn arming_from_inside_the_callback_waits_for_it_to_return() {
    on_thread(|| {
        let running = Rc::new(Cell::new(false));
        let overlap = Rc::new(Cell::new(false));
        let runs = Rc::new(Cell::new(0u32));
        let (r, o, n) = (running.clone(), overlap.clone(), runs.clone());
        let _t = Timer::after(Duration::ZERO, move |t| {
            if r.replace(true) {
                o.set(true);
            }
            n.set(n.get() + 1);
            if n.get() < 3 {
                t.arm(Duration::ZERO); // the next firing comes while this one still runs
            }
            copas_core::sleep(Duration::from_millis(5)).unwrap();
            r.set(false);
        });
        copas_core::run().unwrap();
        assert_eq!(runs.get(), 3);
        assert!(!overlap.get());
    });
}

#[test]
fn a_mutex_deadlock_makes_run_fail_naming_the_tasks_and_their_waits() {
    on_thread(|| {
        let reports = collect_reports();
        let a = Rc::new(Mutex::new(()));
        let b = Rc::new(Mutex::new(()));
        let (a1, b1, a2, b2) = (a.clone(), b.clone(), a.clone(), b.clone());
        let _t1 = copas_core::Builder::new()
            .name("first".into())
            .spawn(move || {
                let _ga = a1.lock().unwrap();
                copas_core::yield_now().unwrap();
                let _gb = b1.lock();
            })
            .unwrap();
        let _t2 = copas_core::Builder::new()
            .name("second".into())
            .spawn(move || {
                let _gb = b2.lock().unwrap();
                copas_core::yield_now().unwrap();
                let _ga = a2.lock();
            })
            .unwrap();
        let err = copas_core::run().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Deadlock);
        let msg = err.to_string();
        assert!(msg.contains("deadlock"), "{msg}");
        assert!(msg.contains("'first'") && msg.contains("'second'"), "{msg}");
        assert!(msg.contains("mutex"), "{msg}");
        let reports = reports.borrow();
        assert_eq!(reports.len(), 2, "{reports:?}");
        for r in reports.iter() {
            assert_eq!(r.problem(), &Problem::Deadlocked(WaitOn::Mutex));
        }
    });
}

#[test]
fn parked_tasks_and_queue_workers_are_legal_idles() {
    on_thread(|| {
        let reports = collect_reports();
        let parked = copas_core::spawn(copas_core::park);
        let m = Rc::new(Mutex::new(()));
        let g = m.clone();
        // Waits on a mutex held by a parked task: an unpark could still release it.
        let holder = copas_core::spawn(move || {
            let _g = g.lock().unwrap();
            copas_core::park()
        });
        let m2 = m.clone();
        let waiter = copas_core::spawn(move || m2.lock().map(drop));
        copas_core::run().unwrap();
        let q: copas_core::sync::Queue<u8> = copas_core::sync::Queue::new();
        let _w = q.add_worker(|_| {});
        assert!(reports.borrow().is_empty());
        assert!(!parked.is_finished() && !holder.is_finished() && !waiter.is_finished());
        parked.task().unpark();
        holder.task().unpark();
        copas_core::run().unwrap();
        assert!(waiter.join().unwrap().is_ok());
        q.close();
        copas_core::run().unwrap();
        assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
    });
}

#[test]
fn a_detached_tasks_error_is_reported_and_a_joined_ones_is_not() {
    on_thread(|| {
        let reports = collect_reports();
        drop(copas_core::spawn(|| -> io::Result<()> {
            copas_core::yield_now()?;
            Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame"))
        }));
        let joined = copas_core::spawn(|| -> io::Result<()> { Err(io::Error::other("seen")) });
        drop(copas_core::spawn(|| -> Result<(), String> { Ok(()) }));
        copas_core::run().unwrap();
        assert!(joined.join().unwrap().is_err());
        let reports = reports.borrow();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].problem(), &Problem::Failed);
        assert_eq!(reports[0].message(), "bad frame");
        assert!(reports[0].to_string().contains("nobody joins it"));
    });
}

#[test]
fn tasks_that_never_ran_are_reported_when_the_runtime_is_dropped() {
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        Runtime::current().set_error_handler(move |p| {
            s.lock()
                .unwrap()
                .push((p.name().map(str::to_owned), p.problem().clone()));
        });
        let _h = copas_core::Builder::new()
            .name("forgotten".into())
            .spawn(|| ())
            .unwrap();
    })
    .join()
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        vec![(Some("forgotten".to_owned()), Problem::NeverRan)]
    );
}

#[test]
fn wait_reasons_name_what_each_task_waits_on() {
    on_thread(|| {
        let rt = Runtime::current();
        let m = Rc::new(Mutex::new(()));
        let guard_holder = m.clone();
        let holder = copas_core::spawn(move || {
            let _g = guard_holder.lock().unwrap();
            copas_core::sleep(Duration::from_secs(60))
        });
        let m2 = m.clone();
        let locker = copas_core::spawn(move || m2.lock().map(drop));
        let hid = holder.id();
        let joiner: JoinHandle<()> = copas_core::spawn(move || {
            let _ = holder.join();
        });
        for _ in 0..3 {
            rt.step(Some(Duration::ZERO)).unwrap();
        }
        assert!(matches!(rt.wait_of(hid), Some(WaitOn::Sleep { .. })));
        assert_eq!(rt.wait_of(locker.id()), Some(WaitOn::Mutex));
        assert_eq!(rt.wait_of(joiner.id()), Some(WaitOn::Join(hid)));
        copas_core::cancel_all();
        copas_core::run().unwrap();
        assert_eq!(rt.wait_of(hid), None);
    });
}

#[test]
fn suspend_for_records_the_reason_and_wake_ends_it() {
    on_thread(|| {
        let rt = Runtime::current();
        let h = copas_core::spawn(|| {
            let rt = Runtime::current();
            hooks::suspend_for(&rt, WaitOn::Read("10.0.0.1:80".into()), None)
        });
        rt.step(Some(Duration::ZERO)).unwrap();
        assert_eq!(rt.wait_of(h.id()), Some(WaitOn::Read("10.0.0.1:80".into())));
        hooks::wake(&rt, h.id());
        rt.step(Some(Duration::ZERO)).unwrap();
        assert!(h.join().unwrap().is_ok());
    });
}
