//! The scheduler without sockets: run, spawn, join, sleep order, park/unpark (also across
//! threads), yield fairness, cancellation, exit, and driving the loop by steps.

mod common;

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::guard;

#[test]
fn run_returns_when_the_work_is_done() {
    guard(|| {
        // Nothing to do at all: returns at once.
        copas::run().unwrap();
        assert!(copas::is_finished());

        let done = Rc::new(Cell::new(0));
        let handles: Vec<_> = (0..10u64)
            .map(|i| {
                let done = done.clone();
                copas::spawn(move || {
                    copas::sleep(Duration::from_millis(i)).unwrap();
                    copas::yield_now().unwrap();
                    done.set(done.get() + 1);
                    i * 2
                })
            })
            .collect();
        assert_eq!(done.get(), 0, "tasks first run in the loop, not at spawn");
        copas::run().unwrap();
        assert_eq!(done.get(), 10);
        assert!(copas::is_finished());
        let stats = copas::Runtime::current().stats();
        assert_eq!((stats.tasks, stats.runnable, stats.timers), (0, 0, 0));
        for (i, h) in handles.into_iter().enumerate() {
            assert!(h.is_finished());
            assert_eq!(h.join().unwrap(), i as u64 * 2);
        }
    });
}

#[test]
fn sleepers_wake_in_deadline_order_and_never_early() {
    guard(|| {
        let start = Instant::now();
        let woken = Rc::new(RefCell::new(Vec::new()));
        // Spawned out of order; equal deadlines come up in the order they were armed, and
        // close ones (10, 11, 12 ms) catch a timer fired early along with an earlier one.
        let delays_ms = [40u64, 10, 30, 0, 12, 20, 50, 10, 5, 11];
        for (i, &ms) in delays_ms.iter().enumerate() {
            let woken = woken.clone();
            let _ = copas::spawn(move || {
                let asked = Instant::now();
                copas::sleep(Duration::from_millis(ms)).unwrap();
                let slept = asked.elapsed();
                assert!(
                    slept >= Duration::from_millis(ms),
                    "sleeper {i} woke after {slept:?}, before its {ms} ms"
                );
                woken.borrow_mut().push((ms, i));
            });
        }
        copas::run().unwrap();
        let woken = woken.borrow();
        let mut expected: Vec<(u64, usize)> = delays_ms
            .iter()
            .enumerate()
            .map(|(i, &ms)| (ms, i))
            .collect();
        expected.sort();
        assert_eq!(*woken, expected);
        assert!(start.elapsed() >= Duration::from_millis(50));
    });
}

#[test]
fn equal_deadlines_wake_in_arming_order() {
    guard(|| {
        let deadline = Instant::now() + Duration::from_millis(20);
        let order = Rc::new(RefCell::new(Vec::new()));
        for i in 0..6 {
            let order = order.clone();
            let _ = copas::spawn(move || {
                copas::sleep_until(deadline).unwrap();
                assert!(Instant::now() >= deadline, "sleeper {i} woke early");
                order.borrow_mut().push(i);
            });
        }
        copas::run().unwrap();
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4, 5]);
    });
}

#[test]
fn sleep_outside_a_task_drives_the_loop_and_is_never_early() {
    guard(|| {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let _ = copas::spawn(move || r.set(true));
        let start = Instant::now();
        copas::sleep(Duration::from_millis(15)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert!(ran.get(), "the task ran while the main thread slept");
    });
}

#[test]
fn join_reports_a_panic_with_its_message() {
    guard(|| {
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        copas::Runtime::current().set_error_handler(move |p| {
            r.borrow_mut().push((
                p.name().map(str::to_owned),
                p.message().to_owned(),
                p.task(),
            ))
        });
        let str_panic = copas::Builder::new()
            .name("doomed".into())
            .spawn(|| -> u32 { panic!("kaboom") })
            .unwrap();
        let doomed_id = str_panic.id();
        let string_panic = copas::spawn(|| -> u32 {
            let n = 7;
            panic!("formatted {n}")
        });
        let fine = copas::spawn(|| 5u32);
        copas::run().unwrap();

        let e = str_panic.join().unwrap_err();
        assert!(e.is_panic() && !e.is_cancelled());
        assert_eq!(e.panic_message(), Some("kaboom"));
        assert_eq!(e.to_string(), "task panicked: kaboom");
        let e = string_panic.join().unwrap_err();
        assert!(e.is_panic());
        assert_eq!(e.panic_message(), Some("formatted 7"));
        assert_eq!(fine.join().unwrap(), 5);

        let reports = reports.borrow();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!(reports[0].0.as_deref(), Some("doomed"));
        assert_eq!(reports[0].1, "kaboom");
        assert_eq!(reports[0].2, doomed_id);
        assert_eq!(reports[1].0, None);
        assert_eq!(reports[1].1, "formatted 7");
    });
}

#[test]
fn join_inside_a_task_waits_and_sees_panics() {
    guard(|| {
        copas::Runtime::current().set_error_handler(|_| {});
        let outer = copas::spawn(|| {
            let slow = copas::spawn(|| {
                copas::sleep(Duration::from_millis(5)).unwrap();
                "slow value"
            });
            let bad = copas::spawn(|| -> u8 { panic!("inner failure") });
            let v = slow.join().unwrap();
            let e = bad.join().unwrap_err();
            (v, e.panic_message().map(str::to_owned))
        });
        let (v, msg) = outer.join().unwrap();
        assert_eq!(v, "slow value");
        assert_eq!(msg.as_deref(), Some("inner failure"));
    });
}

#[test]
fn into_panic_resumes_the_tasks_panic() {
    guard(|| {
        copas::Runtime::current().set_error_handler(|_| {});
        let h = copas::spawn(|| -> u8 { panic!("carried over") });
        let e = h.join().unwrap_err();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            e.into_panic();
        }));
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"carried over"));
    });
}

#[test]
fn spawn_from_inside_a_task() {
    guard(|| {
        let order = Rc::new(RefCell::new(Vec::new()));
        let o = order.clone();
        let root = copas::spawn(move || {
            o.borrow_mut().push("root");
            let o2 = o.clone();
            let child = copas::spawn(move || {
                o2.borrow_mut().push("child");
                let o3 = o2.clone();
                let grandchild = copas::spawn(move || {
                    o3.borrow_mut().push("grandchild");
                    3
                });
                grandchild.join().unwrap() + 2
            });
            // The child first runs in a later pass: the parent goes on first.
            o.borrow_mut().push("root after spawn");
            child.join().unwrap() + 1
        });
        copas::run().unwrap();
        assert_eq!(root.join().unwrap(), 6);
        assert_eq!(
            *order.borrow(),
            vec!["root", "root after spawn", "child", "grandchild"]
        );
    });
}

#[test]
fn yield_now_makes_two_tasks_alternate() {
    guard(|| {
        let trace = Rc::new(RefCell::new(Vec::new()));
        for name in ['a', 'b'] {
            let trace = trace.clone();
            let _ = copas::spawn(move || {
                for i in 0..5 {
                    trace.borrow_mut().push(format!("{name}{i}"));
                    copas::yield_now().unwrap();
                }
            });
        }
        copas::run().unwrap();
        let expected: Vec<String> = (0..5)
            .flat_map(|i| [format!("a{i}"), format!("b{i}")])
            .collect();
        assert_eq!(*trace.borrow(), expected);
    });
}

#[test]
fn cooperate_lets_others_run_in_a_long_busy_loop() {
    guard(|| {
        let other_ran = Rc::new(Cell::new(false));
        let seen = other_ran.clone();
        let busy = copas::spawn(move || {
            // Never blocks; only cooperate() can give the other task a turn.
            for _ in 0..10_000 {
                copas::cooperate();
                if seen.get() {
                    return true;
                }
            }
            false
        });
        let flag = other_ran.clone();
        let _ = copas::spawn(move || flag.set(true));
        copas::run().unwrap();
        assert!(
            busy.join().unwrap(),
            "the busy task never let the other one run"
        );
    });
}

#[test]
fn park_and_unpark_on_the_same_thread() {
    guard(|| {
        let trace = Rc::new(RefCell::new(Vec::new()));
        let t = trace.clone();
        let sleeper = copas::spawn(move || {
            t.borrow_mut().push("parking");
            copas::park().unwrap();
            t.borrow_mut().push("unparked");
        });
        let task = sleeper.task().clone();
        let t = trace.clone();
        let _waker = copas::spawn(move || {
            // The sleeper ran first and is parked now.
            t.borrow_mut().push("waking");
            assert!(task.unpark(), "the task was parked");
            t.borrow_mut().push("woke");
        });
        copas::run().unwrap();
        assert!(sleeper.is_finished());
        assert_eq!(
            *trace.borrow(),
            vec!["parking", "waking", "woke", "unparked"]
        );

        // An unpark that comes first makes the next park return at once.
        let early = copas::spawn(|| {
            assert!(!copas::current().unpark(), "a running task is not parked");
            copas::park().unwrap();
            copas::park_timeout(Duration::from_millis(5))
                .unwrap_err()
                .kind()
        });
        copas::run().unwrap();
        assert_eq!(early.join().unwrap(), io::ErrorKind::TimedOut);
    });
}

#[test]
fn park_outside_a_task_is_unsupported() {
    guard(|| {
        assert_eq!(
            copas::park().unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
        assert!(copas::try_current().is_none());
    });
}

#[test]
fn a_parked_task_does_not_keep_run_going() {
    guard(|| {
        let parked = copas::spawn(copas::park);
        copas::run().unwrap();
        assert!(!parked.is_finished());
        assert_eq!(copas::Runtime::current().stats().parked, 1);
        // Woken from outside any task, it finishes in the next run.
        assert!(parked.task().unpark());
        copas::run().unwrap();
        parked.join().unwrap().unwrap();
    });
}

/// Runs a task parked with a long hang-guard timeout and unparks it from another thread
/// once it is parked; it must return `Ok`, not `TimedOut`.
fn unpark_from_another_thread(with_reactor: bool) {
    if with_reactor {
        // Any socket installs the polling reactor as the driver.
        let _l = copas::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(copas::Runtime::current()
            .driver::<copas::Reactor>()
            .is_some());
    }
    let (parked_tx, parked_rx) = mpsc::channel::<copas::Task>();
    let h = copas::spawn(move || {
        parked_tx.send(copas::current()).unwrap();
        let r = copas::park_timeout(common::HANG_GUARD);
        (r.map_err(|e| e.kind()), Instant::now())
    });
    let unparker = thread::spawn(move || {
        let task = parked_rx.recv().unwrap();
        let at = Instant::now();
        assert!(task.unpark());
        at
    });
    copas::run().unwrap();
    let (r, woke_at) = h.join().unwrap();
    let unparked_at = unparker.join().unwrap();
    assert_eq!(r, Ok(()));
    assert!(woke_at >= unparked_at);
}

#[test]
fn unpark_from_another_thread_without_a_reactor() {
    guard(|| unpark_from_another_thread(false));
}

#[test]
fn unpark_from_another_thread_with_the_reactor() {
    guard(|| unpark_from_another_thread(true));
}

#[test]
fn unparks_from_many_threads_all_arrive() {
    guard(|| {
        const THREADS: usize = 8;
        const ROUNDS: usize = 50;
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        let h = copas::spawn(move || {
            for _ in 0..THREADS * ROUNDS {
                copas::park_timeout(common::HANG_GUARD).unwrap();
                ack_tx.send(()).unwrap();
            }
        });
        let task = h.task().clone();
        // Unparks coalesce into one token, so the threads take turns: one unpark, then
        // wait for the task's acknowledgement of exactly that wake-up.
        let turn = Arc::new(Mutex::new(ack_rx));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (task, turn) = (task.clone(), turn.clone());
                thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let ack = turn.lock().unwrap();
                        assert!(task.unpark());
                        ack.recv().unwrap();
                    }
                })
            })
            .collect();
        copas::run().unwrap();
        h.join().unwrap();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn cancel_makes_blocking_calls_fail_and_unstarted_tasks_never_run() {
    guard(|| {
        let sleeper = copas::spawn(|| {
            let e = copas::sleep(Duration::from_secs(3600)).unwrap_err();
            assert!(copas::is_cancelled(&e), "{e}");
            // It may wind down without suspending again, and return.
            "wound down"
        });
        // Let the sleeper start sleeping, then cancel it.
        let rt = copas::Runtime::current();
        rt.step(Some(Duration::ZERO)).unwrap();
        assert!(sleeper.cancel());
        copas::run().unwrap();
        assert_eq!(sleeper.join().unwrap(), "wound down");

        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let unstarted = copas::spawn(move || r.set(true));
        assert!(unstarted.cancel());
        copas::run().unwrap();
        assert!(!ran.get(), "a task cancelled before it started ran anyway");
        assert!(unstarted.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn cancelling_a_finished_task_does_nothing() {
    guard(|| {
        let h = copas::spawn(|| 1);
        copas::run().unwrap();
        assert!(!h.cancel());
        assert_eq!(h.join().unwrap(), 1);
    });
}

#[test]
fn step_inside_a_task_is_unsupported() {
    guard(|| {
        let h = copas::spawn(|| {
            copas::Runtime::current()
                .step(Some(Duration::ZERO))
                .unwrap_err()
                .kind()
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), io::ErrorKind::Unsupported);
    });
}

#[test]
fn program_drives_step_from_its_own_loop() {
    guard(|| {
        let rt = copas::Runtime::current();
        // The program's own loop hands work to a task through a queue and an unpark.
        let inbox = Rc::new(RefCell::new(Vec::<u32>::new()));
        let outbox = Rc::new(RefCell::new(Vec::<u32>::new()));
        let (i, o) = (inbox.clone(), outbox.clone());
        let worker = copas::spawn(move || loop {
            let job = i.borrow_mut().pop();
            match job {
                Some(0) => return "stopped",
                Some(n) => {
                    copas::sleep(Duration::from_millis(1)).unwrap();
                    o.borrow_mut().push(n * n);
                }
                None => copas::park().unwrap(),
            }
        });
        let mut own_iterations = 0;
        let mut next_job = 1;
        while !worker.is_finished() {
            own_iterations += 1;
            if inbox.borrow().is_empty() && outbox.borrow().len() == next_job as usize - 1 {
                inbox
                    .borrow_mut()
                    .push(if next_job > 5 { 0 } else { next_job });
                next_job += 1;
                worker.task().unpark();
            }
            rt.step(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(worker.join().unwrap(), "stopped");
        assert_eq!(*outbox.borrow(), vec![1, 4, 9, 16, 25]);
        assert!(own_iterations >= 6, "{own_iterations}");
        assert!(rt.is_finished());
    });
}

#[test]
fn exit_wakes_wait_for_exit_and_run_returns() {
    guard(|| {
        let trace = Rc::new(RefCell::new(Vec::new()));
        let t = trace.clone();
        let cleaner = copas::spawn(move || {
            copas::wait_for_exit().unwrap();
            assert!(copas::is_exiting());
            t.borrow_mut().push("cleaned up");
        });
        let t = trace.clone();
        let _worker = copas::spawn(move || {
            copas::sleep(Duration::from_millis(2)).unwrap();
            t.borrow_mut().push("worked");
        });
        // The worker runs out of work; run() then exits by itself and waits for cleanup.
        copas::run().unwrap();
        assert!(cleaner.is_finished());
        assert_eq!(*trace.borrow(), vec!["worked", "cleaned up"]);

        // An explicit exit() from a task does the same before the work runs out.
        let t = trace.clone();
        let _cleaner = copas::spawn(move || {
            copas::wait_for_exit().unwrap();
            t.borrow_mut().push("second cleanup");
        });
        let _exiter = copas::spawn(copas::exit);
        copas::run().unwrap();
        assert_eq!(trace.borrow().last(), Some(&"second cleanup"));
    });
}

#[test]
fn cancel_all_winds_every_task_down() {
    guard(|| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                copas::spawn(|| {
                    let e = copas::sleep(Duration::from_secs(3600)).unwrap_err();
                    copas::is_cancelled(&e)
                })
            })
            .collect();
        let _stopper = copas::spawn(|| {
            copas::yield_now().unwrap();
            copas::cancel_all();
        });
        copas::run().unwrap();
        for h in handles {
            assert!(h.join().unwrap());
        }
        // A later run works as usual.
        let h = copas::spawn(|| copas::sleep(Duration::from_millis(1)).is_ok());
        copas::run().unwrap();
        assert!(h.join().unwrap());
    });
}

#[test]
fn task_names_and_ids() {
    guard(|| {
        let h = copas::Builder::new()
            .name("named".into())
            .stack_size(64 * 1024)
            .spawn(|| {
                let me = copas::current();
                (me.name().map(str::to_owned), me.id())
            })
            .unwrap();
        let anon = copas::spawn(|| copas::current().name().map(str::to_owned));
        let id = h.id();
        assert_eq!(h.task().name(), Some("named"));
        copas::run().unwrap();
        let (name, seen_id) = h.join().unwrap();
        assert_eq!(name.as_deref(), Some("named"));
        assert_eq!(seen_id, id);
        assert_eq!(anon.join().unwrap(), None);
        assert_ne!(id.as_u64(), 0);
    });
}
