//! Mutex, Semaphore and Queue between tasks, including Lua Copas's own test scenarios.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::guard;
use copas::sync::{Mutex, Queue, Semaphore, SyncError};

/// Copas `lock.lua`: 750 tasks contend for one lock. The first 250 wait without a timeout
/// and get it in FIFO order; the next 250 give up after a short timeout while the lock is
/// still held; the last 250 are still waiting when the lock is closed.
#[test]
fn mutex_750_contenders_fifo_timeout_closed() {
    guard(|| {
        let m = Rc::new(Mutex::new(()));
        let order = Rc::new(RefCell::new(Vec::new()));
        let timed_out = Rc::new(RefCell::new(0));
        let closed = Rc::new(RefCell::new(0));
        let m0 = m.clone();
        copas::spawn(move || {
            let _g = m0.lock().unwrap();
            copas::sleep(Duration::from_millis(100)).unwrap();
        });
        for i in 0..750 {
            let (m, order, timed_out, closed) =
                (m.clone(), order.clone(), timed_out.clone(), closed.clone());
            copas::spawn(move || {
                let r = if (250..500).contains(&i) {
                    m.lock_timeout(Duration::from_millis(20))
                } else {
                    m.lock()
                };
                match r {
                    Ok(_g) => {
                        order.borrow_mut().push(i);
                        copas::yield_now().unwrap();
                        if i == 249 {
                            m.close();
                        }
                    }
                    Err(SyncError::TimedOut) => *timed_out.borrow_mut() += 1,
                    Err(SyncError::Closed) => *closed.borrow_mut() += 1,
                    Err(e) => panic!("task {i}: unexpected {e:?}"),
                }
            });
        }
        copas::run().unwrap();
        assert_eq!(*order.borrow(), (0..250).collect::<Vec<_>>());
        assert_eq!(*timed_out.borrow(), 250);
        assert_eq!(*closed.borrow(), 250);
        assert_eq!(m.waiters(), 0);
        assert!(!m.is_locked());
    });
}

#[test]
fn mutex_relock_by_holder_is_deadlock_error() {
    guard(|| {
        let h = copas::spawn(|| {
            let m = Mutex::new(1);
            let _g = m.lock().unwrap();
            let again = m.lock().map(|_| ()).unwrap_err();
            let io: std::io::Error = again.into();
            (again, io.kind())
        });
        let (e, kind) = h.join().unwrap();
        assert_eq!(e, SyncError::Deadlock);
        assert_eq!(kind, std::io::ErrorKind::Deadlock);
    });
}

/// Copas #201: `lock:get(0)` queued the caller and poisoned the lock.
#[test]
fn mutex_zero_timeout_never_queues() {
    guard(|| {
        let m = Rc::new(Mutex::new(0));
        let m1 = m.clone();
        let holder = copas::spawn(move || {
            let mut g = m1.lock().unwrap();
            copas::sleep(Duration::from_millis(10)).unwrap();
            *g += 1;
        });
        let m2 = m.clone();
        let prober = copas::spawn(move || {
            copas::yield_now().unwrap(); // the holder has it now
            let r = m2.lock_timeout(Duration::ZERO).map(|_| ());
            let queued = m2.waiters();
            let try_r = m2.try_lock().map(|_| ());
            (r, queued, try_r)
        });
        copas::run().unwrap();
        holder.join().unwrap();
        let (r, queued, try_r) = prober.join().unwrap();
        assert_eq!(r, Err(SyncError::TimedOut));
        assert_eq!(queued, 0);
        assert_eq!(try_r, Err(SyncError::WouldBlock));
        // Not poisoned: free and lockable.
        assert_eq!(*m.try_lock().unwrap(), 1);
    });
}

#[test]
fn mutex_timeout_is_not_before_deadline() {
    guard(|| {
        let m = Rc::new(Mutex::new(()));
        let m1 = m.clone();
        copas::spawn(move || {
            let _g = m1.lock().unwrap();
            copas::sleep(Duration::from_millis(60)).unwrap();
        });
        let m2 = m.clone();
        let h = copas::spawn(move || {
            copas::yield_now().unwrap();
            let start = Instant::now();
            let r = m2.lock_timeout(Duration::from_millis(25)).map(|_| ());
            (r, start.elapsed())
        });
        copas::run().unwrap();
        let (r, waited) = h.join().unwrap();
        assert_eq!(r, Err(SyncError::TimedOut));
        assert!(
            waited >= Duration::from_millis(25),
            "gave up after {waited:?}"
        );
    });
}

/// Copas `semaphore.lua`: waiters are released in FIFO order, and a large request at the
/// head holds back a smaller one behind it.
#[test]
fn semaphore_fifo_and_large_request_at_head() {
    guard(|| {
        let sem = Rc::new(Semaphore::new(10, 0));
        let order = Rc::new(RefCell::new(Vec::new()));
        for (i, n) in [(0, 3), (1, 5), (2, 1), (3, 2)] {
            let (sem, order) = (sem.clone(), order.clone());
            copas::spawn(move || {
                let p = sem.acquire(n).unwrap();
                order.borrow_mut().push(i);
                p.forget();
            });
        }
        let s = sem.clone();
        let o = order.clone();
        let feeder = copas::spawn(move || {
            copas::yield_now().unwrap(); // everyone queued
            assert_eq!(s.waiters(), 4);
            s.add_permits(4).unwrap(); // 3 for #0; #1 needs 5 and blocks #2 and #3
            copas::yield_now().unwrap();
            copas::yield_now().unwrap();
            let after_first = o.borrow().clone();
            s.add_permits(4).unwrap(); // 5 for #1
            copas::yield_now().unwrap();
            copas::yield_now().unwrap();
            let after_second = o.borrow().clone();
            s.add_permits(3).unwrap(); // 1 for #2, 2 for #3
            (after_first, after_second)
        });
        copas::run().unwrap();
        let (after_first, after_second) = feeder.join().unwrap();
        assert_eq!(after_first, vec![0]);
        assert_eq!(after_second, vec![0, 1]);
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3]);
        assert_eq!(sem.available_permits(), 0);
    });
}

#[test]
fn semaphore_limits_timeouts_and_close() {
    guard(|| {
        let sem = Rc::new(Semaphore::new(3, 3));
        assert_eq!(sem.try_acquire(4).unwrap_err(), SyncError::TooMany);
        {
            let p = sem.try_acquire(2).unwrap();
            assert_eq!(p.count(), 2);
            assert_eq!(sem.available_permits(), 1);
        }
        assert_eq!(sem.available_permits(), 3, "a dropped permit gives back");
        assert_eq!(sem.add_permits(1).unwrap_err(), SyncError::TooMany);
        assert_eq!(sem.available_permits(), 3, "capped at the maximum");
        sem.try_acquire(3).unwrap().forget();
        assert_eq!(
            sem.acquire_timeout(1, Duration::ZERO).unwrap_err(),
            SyncError::TimedOut
        );
        assert_eq!(sem.waiters(), 0);
        let s = sem.clone();
        let h = copas::spawn(move || {
            let start = Instant::now();
            let r = s
                .acquire_timeout(1, Duration::from_millis(15))
                .map(|p| p.count());
            (r, start.elapsed())
        });
        let s = sem.clone();
        let closed = copas::spawn(move || s.acquire(2).map(|p| p.count()));
        let (r, waited) = h.join().unwrap();
        assert_eq!(r, Err(SyncError::TimedOut));
        assert!(waited >= Duration::from_millis(15));
        sem.close();
        assert_eq!(closed.join().unwrap(), Err(SyncError::Closed));
        assert_eq!(sem.try_acquire(1).unwrap_err(), SyncError::Closed);
    });
}

/// Copas `queue.lua`: two workers, three items of equal length; the event order is exact.
#[test]
fn queue_two_workers_three_items_exact_interleaving() {
    guard(|| {
        let log = Rc::new(RefCell::new(Vec::<String>::new()));
        let q: Queue<u32> = Queue::with_name("jobs");
        for _ in 0..2 {
            let log = log.clone();
            q.add_worker(move |item| {
                log.borrow_mut().push(format!("start item {item}"));
                copas::sleep(Duration::from_millis(40)).unwrap();
                log.borrow_mut().push(format!("end item {item}"));
            });
        }
        log.borrow_mut().push("start queue".into());
        for i in 1..=3 {
            q.push(i).unwrap();
        }
        let (q2, log2) = (q.clone(), log.clone());
        let fin = copas::spawn(move || {
            copas::sleep(Duration::from_millis(60)).unwrap();
            log2.borrow_mut().push("start finish".into());
            let ok = q2.finish(Duration::from_secs(10));
            log2.borrow_mut().push(format!("finished {ok}"));
        });
        copas::run().unwrap();
        fin.join().unwrap();
        assert_eq!(
            *log.borrow(),
            [
                "start queue",
                "start item 1",
                "start item 2",
                "end item 1",
                "start item 3",
                "end item 2",
                "start finish",
                "end item 3",
                "finished true",
            ]
        );
        assert_eq!(q.workers(), 0);
        assert_eq!(q.push(9), Err(SyncError::Closed));
    });
}

#[test]
fn queue_pop_order_timeout_and_close_drains() {
    guard(|| {
        let q: Queue<&'static str> = Queue::new();
        let got = Rc::new(RefCell::new(Vec::new()));
        for i in 0..3 {
            let (q, got) = (q.clone(), got.clone());
            copas::spawn(move || {
                let item = q.pop().unwrap();
                got.borrow_mut().push((i, item));
            });
        }
        let q1 = q.clone();
        let pusher = copas::spawn(move || {
            copas::yield_now().unwrap(); // all three poppers wait, in order
            for s in ["a", "b", "c"] {
                q1.push(s).unwrap();
            }
            let start = Instant::now();
            let r = q1.pop_timeout(Duration::from_millis(10));
            (r, start.elapsed())
        });
        copas::run().unwrap();
        assert_eq!(*got.borrow(), vec![(0, "a"), (1, "b"), (2, "c")]);
        let (r, waited) = pusher.join().unwrap();
        assert_eq!(r, Err(SyncError::TimedOut));
        assert!(waited >= Duration::from_millis(10));

        q.push("x").unwrap();
        q.push("y").unwrap();
        q.close();
        assert!(q.is_closed());
        assert_eq!(q.push("z"), Err(SyncError::Closed));
        assert_eq!(q.try_pop(), Ok("x"));
        assert_eq!(q.pop(), Ok("y"));
        assert_eq!(q.pop(), Err(SyncError::Closed));
    });
}

/// `finish` without workers times out while items are left (Copas `finish(1)` → timeout),
/// and idle workers do not keep the loop alive.
#[test]
fn queue_finish_without_workers_times_out_and_idle_workers_let_loop_end() {
    guard(|| {
        let q: Queue<u8> = Queue::new();
        q.push(1).unwrap();
        let q2 = q.clone();
        let h = copas::spawn(move || {
            let start = Instant::now();
            (q2.finish(Duration::from_millis(30)), start.elapsed())
        });
        copas::run().unwrap();
        let (ok, waited) = h.join().unwrap();
        assert!(!ok);
        assert!(waited >= Duration::from_millis(30));

        let idle: Queue<u8> = Queue::new();
        let worker = idle.add_worker(|_| {});
        copas::run().unwrap(); // returns although the worker waits for items
        assert!(!worker.is_finished());
        idle.close();
        copas::run().unwrap();
        assert!(worker.is_finished());
        assert_eq!(idle.workers(), 0);
    });
}

#[test]
fn worker_panic_is_reported_and_finish_still_completes() {
    guard(|| {
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        copas::Runtime::current().set_error_handler(move |p| {
            r.borrow_mut()
                .push((p.name().unwrap_or("").to_owned(), p.message().to_owned()))
        });
        let q: Queue<u32> = Queue::with_name("q");
        let done = Rc::new(RefCell::new(Vec::new()));
        let d = done.clone();
        q.add_worker(move |i| {
            if i == 2 {
                panic!("bad item {i}");
            }
            d.borrow_mut().push(i);
        });
        let d = done.clone();
        q.add_worker(move |i| d.borrow_mut().push(i));
        for i in 1..=4 {
            q.push(i).unwrap();
        }
        let q2 = q.clone();
        let fin = copas::spawn(move || q2.finish(Duration::from_secs(10)));
        copas::run().unwrap();
        assert!(fin.join().unwrap());
        let mut d = done.borrow().clone();
        d.sort();
        assert_eq!(d, vec![1, 3, 4]);
        assert_eq!(
            *reports.borrow(),
            vec![("q:worker_1".to_owned(), "bad item 2".to_owned())]
        );
    });
}
