//! Task and loop life cycle: cancellation, exit and wait_for_exit, cancel_all, parking
//! forever, shutdown unwinding, with_timeout, per-task error handlers, stats.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::guard;

struct SetOnDrop(Rc<Cell<bool>>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn cancel_sleeping_task_fails_its_call_and_runs_destructors() {
    guard(|| {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let first = Rc::new(Cell::new(None));
        let f = first.clone();
        let sleeper = copas::spawn(move || {
            let _flag = SetOnDrop(d);
            f.set(Some(copas::sleep(Duration::from_secs(3600))));
            // The task ignores the error and goes on: its next suspension unwinds it.
            let _ = copas::yield_now();
            unreachable!("a cancelled task that ignored the error was resumed");
        });
        let rt = copas::Runtime::current();
        rt.step(Some(Duration::ZERO)).unwrap(); // the sleeper is asleep now
        assert!(sleeper.cancel());
        let steps_before = rt.stats().steps;
        while !sleeper.is_finished() {
            rt.step(Some(Duration::from_secs(1))).unwrap();
        }
        let steps = rt.stats().steps - steps_before;
        assert!(steps <= 2, "took effect after {steps} steps");
        assert!(dropped.get());
        assert!(sleeper.join().unwrap_err().is_cancelled());
        let first = first.take().expect("the sleep returned");
        assert!(copas::is_cancelled(&first.unwrap_err()));
        assert!(copas::is_finished());
    });
}

#[test]
fn cancel_before_start_never_runs_and_join_says_cancelled() {
    guard(|| {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let h = copas::spawn(move || r.set(true));
        // Cancelled before its first step: it never runs.
        assert!(h.cancel());
        copas::run().unwrap();
        assert!(!ran.get());
        assert!(h.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn cancel_task_blocked_on_socket_closes_it() {
    guard(|| {
        let (conn, mut peer) = common::pair();
        let reader = copas::spawn(move || {
            let mut conn = conn;
            conn.receive_line()
        });
        copas::Runtime::current()
            .step(Some(Duration::ZERO))
            .unwrap();
        reader.cancel();
        let r = reader.join().unwrap();
        assert!(copas::is_cancelled(&r.unwrap_err()));
        // The task's socket was dropped: the peer sees end of stream.
        peer.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(io::Read::read(&mut peer, &mut buf).unwrap(), 0);
    });
}

#[test]
fn parked_forever_does_not_keep_run_alive_and_unpark_resumes_it() {
    guard(|| {
        let h = copas::spawn(|| {
            copas::park().unwrap();
            "woken"
        });
        copas::run().unwrap(); // returns: the parked task cannot make progress alone
        assert!(!h.is_finished());
        assert_eq!(copas::Runtime::current().stats().parked, 1);
        assert!(h.task().unpark());
        assert_eq!(h.join().unwrap(), "woken");
    });
}

#[test]
fn unpark_from_another_thread_wakes_loop() {
    guard(|| {
        let h = copas::spawn(copas::park);
        // Keep the loop alive with a long timer while the other thread unparks.
        let keepalive = copas::Timer::after(Duration::from_secs(3600), |_| {});
        let task = h.task().clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            task.unpark();
        });
        while !h.is_finished() {
            copas::Runtime::current().step(None).unwrap();
        }
        keepalive.cancel();
        t.join().unwrap();
        h.join().unwrap().unwrap();
    });
}

/// Copas `exittest.lua` (7)/(8): an explicit exit releases wait_for_exit, whose waiter
/// schedules more work that still completes before `run` returns; waiting does not keep
/// the loop alive.
#[test]
fn exit_releases_wait_for_exit_and_cleanup_completes() {
    guard(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        copas::spawn(move || {
            copas::wait_for_exit().unwrap();
            l.borrow_mut().push("exit seen");
            let l2 = l.clone();
            copas::spawn(move || {
                copas::sleep(Duration::from_millis(20)).unwrap();
                l2.borrow_mut().push("cleanup done");
            });
        });
        let l = log.clone();
        copas::spawn(move || {
            for _ in 0..3 {
                copas::sleep(Duration::from_millis(5)).unwrap();
            }
            l.borrow_mut().push("exit");
            copas::exit();
            assert!(copas::is_exiting());
        });
        copas::run().unwrap();
        assert_eq!(*log.borrow(), ["exit", "exit seen", "cleanup done"]);
    });
}

#[test]
fn run_exits_by_itself_and_wakes_exit_waiters() {
    guard(|| {
        let saw = Rc::new(Cell::new(false));
        let s = saw.clone();
        copas::spawn(move || {
            copas::wait_for_exit().unwrap();
            s.set(true);
        });
        copas::spawn(|| copas::sleep(Duration::from_millis(5)).unwrap());
        copas::run().unwrap();
        assert!(saw.get());
        // A later run starts afresh.
        let h = copas::spawn(copas::is_exiting);
        copas::run().unwrap();
        assert!(!h.join().unwrap());
    });
}

/// Copas `cancelall.lua`: a server, a long sleeper and a client blocked in receive are all
/// cancelled; run returns, and a second run works.
#[test]
fn cancel_all_ends_everything_and_a_new_run_works() {
    guard(|| {
        let server = copas::add_server("127.0.0.1:0", |mut c| {
            c.receive_line()?;
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let sleeper = copas::spawn(|| copas::sleep(Duration::from_secs(3600)));
        let client = copas::spawn(move || {
            let mut s = copas::TcpStream::connect(addr)?;
            s.receive_line()
        });
        copas::Timer::after(Duration::from_millis(20), |_| copas::cancel_all());
        copas::run().unwrap();
        assert!(copas::is_cancelled(&sleeper.join().unwrap().unwrap_err()));
        assert!(copas::is_cancelled(&client.join().unwrap().unwrap_err()));
        assert!(server.is_stopped());
        assert!(copas::is_finished());
        let h = copas::spawn(|| {
            copas::sleep(Duration::from_millis(5))?;
            Ok::<_, io::Error>(7)
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap().unwrap(), 7);
    });
}

#[test]
fn exit_stops_servers_so_run_returns() {
    guard(|| {
        let server = copas::add_server("127.0.0.1:0", |_c| Ok(())).unwrap();
        copas::Timer::after(Duration::from_millis(5), |_| copas::exit());
        copas::run().unwrap();
        assert!(server.is_stopped());
    });
}

#[test]
fn thread_exit_unwinds_suspended_tasks() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    std::thread::spawn(move || {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        copas::spawn(move || {
            let _f = Flag(d);
            let _ = copas::park();
        });
        copas::run().unwrap();
        // The thread ends with the task parked: the runtime unwinds it.
    })
    .join()
    .unwrap();
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn with_timeout_fails_every_blocking_call_after_the_deadline() {
    guard(|| {
        let (conn, mut peer) = common::pair();
        let h = copas::spawn(move || {
            let mut conn = conn;
            let start = Instant::now();
            copas::with_timeout(Duration::from_millis(30), || {
                let first = conn.receive_line().map(|l| l.map(|b| b.to_vec()));
                let second = conn.receive_line().map(|_| ());
                let sleep = copas::sleep(Duration::from_secs(1));
                (first, second, sleep, start.elapsed())
            })
        });
        peer.write_all(b"early\n").unwrap();
        let (first, second, sleep, elapsed) = h.join().unwrap();
        assert_eq!(first.unwrap().unwrap(), b"early");
        assert_eq!(second.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(sleep.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(elapsed >= Duration::from_millis(30));
        // Outside the scope, calls work again.
        let h = copas::spawn(|| copas::sleep(Duration::from_millis(1)));
        h.join().unwrap().unwrap();
    });
}

#[test]
fn per_task_error_handler_and_runtime_handler() {
    guard(|| {
        let own = Rc::new(RefCell::new(Vec::new()));
        let o = own.clone();
        let global = Rc::new(RefCell::new(Vec::new()));
        let g = global.clone();
        copas::Runtime::current().set_error_handler(move |p| g.borrow_mut().push(p.to_string()));
        let a = copas::Builder::new()
            .name("alpha".into())
            .error_handler(move |p| {
                o.borrow_mut()
                    .push((p.name().map(str::to_owned), p.message().to_owned()))
            })
            .spawn(|| panic!("alpha broke"))
            .unwrap();
        let b = copas::Builder::new()
            .name("beta".into())
            .spawn(|| -> () { panic!("beta broke") })
            .unwrap();
        let c = copas::spawn(|| 5);
        copas::run().unwrap();
        assert_eq!(a.join().unwrap_err().panic_message(), Some("alpha broke"));
        assert!(b.join().unwrap_err().is_panic());
        assert_eq!(c.join().unwrap(), 5);
        assert_eq!(
            *own.borrow(),
            vec![(Some("alpha".to_owned()), "alpha broke".to_owned())]
        );
        assert_eq!(global.borrow().len(), 1);
        assert!(global.borrow()[0].contains("'beta'"));
        assert!(global.borrow()[0].contains("beta broke"));
    });
}

#[test]
fn a_panicking_error_handler_does_not_kill_the_loop() {
    guard(|| {
        copas::Runtime::current().set_error_handler(|_| panic!("handler itself broke"));
        let bad = copas::spawn(|| -> () { panic!("task broke") });
        let good = copas::spawn(|| {
            copas::sleep(Duration::from_millis(2)).unwrap();
            1
        });
        copas::run().unwrap();
        assert!(bad.join().unwrap_err().is_panic());
        assert_eq!(good.join().unwrap(), 1);
        copas::Runtime::current().set_error_handler(|_| {});
    });
}

#[test]
fn stats_count_tasks_by_state() {
    guard(|| {
        let rt = copas::Runtime::current();
        let sleeper = copas::spawn(|| copas::sleep(Duration::from_secs(3600)));
        let parked = copas::spawn(copas::park);
        let t = copas::Timer::after(Duration::from_secs(3600), |_| {});
        assert_eq!(rt.stats().runnable, 2);
        rt.step(Some(Duration::ZERO)).unwrap();
        let s = rt.stats();
        assert_eq!(s.tasks, 2);
        assert_eq!(s.runnable, 0);
        assert_eq!(s.sleeping, 1);
        assert_eq!(s.parked, 1);
        assert_eq!(s.timers, 2);
        assert!(s.steps >= 1);
        sleeper.cancel();
        parked.cancel();
        t.cancel();
        copas::run().unwrap();
        assert_eq!(rt.stats().tasks, 0);
        assert_eq!(rt.stats().timers, 0);
    });
}

#[test]
fn recurring_timer_rearmed_from_its_callback_does_not_leak() {
    guard(|| {
        let fired = Rc::new(Cell::new(0));
        let f = fired.clone();
        copas::Timer::after(Duration::from_millis(1), move |t| {
            f.set(f.get() + 1);
            if f.get() < 5 {
                t.arm(Duration::from_millis(1));
            }
        });
        copas::run().unwrap();
        assert_eq!(fired.get(), 5);
        let s = copas::Runtime::current().stats();
        assert_eq!((s.tasks, s.timers), (0, 0));
    });
}

#[test]
fn panicking_recurring_timer_keeps_running() {
    guard(|| {
        let seen = Rc::new(Cell::new(0));
        copas::Runtime::current().set_error_handler({
            let s = seen.clone();
            move |_| s.set(s.get() + 1)
        });
        let fired = Rc::new(Cell::new(0));
        let f = fired.clone();
        copas::Timer::interval(Duration::from_millis(2), move |t| {
            f.set(f.get() + 1);
            if f.get() == 4 {
                t.cancel();
            }
            panic!("tick {}", f.get());
        });
        copas::run().unwrap();
        assert_eq!(fired.get(), 4);
        assert_eq!(seen.get(), 4);
    });
}

#[test]
fn stats_count_sockets_and_the_running_task() {
    guard(|| {
        let rt = copas::Runtime::current();
        let server = copas::add_server("127.0.0.1:0", |_c| Ok(())).unwrap();
        let (conn, _peer) = common::pair();
        assert_eq!(rt.stats().sockets, 2); // the listener and the stream
        assert_eq!(rt.stats().running, 0);
        let inside = copas::spawn(|| copas::Runtime::current().stats().running);
        assert_eq!(inside.join().unwrap(), 1);
        drop(conn);
        server.stop();
        copas::run().unwrap();
        assert_eq!(rt.stats().sockets, 0);
    });
}

#[test]
fn sockets_carry_names() {
    guard(|| {
        let (conn, _peer) = common::pair();
        assert!(conn.name().is_none());
        conn.set_name("upstream");
        assert_eq!(conn.name().as_deref(), Some("upstream"));
        assert!(format!("{conn:?}").contains("upstream"));
        let udp = copas::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_name("dns");
        assert_eq!(udp.name().as_deref(), Some("dns"));
    });
}

/// Copas wakes every 0.1 s when idle; copas for Rust blocks in the poller until something
/// happens: one poll for the whole wait.
#[test]
fn idle_loop_makes_no_periodic_wakeups() {
    guard(|| {
        let server = copas::add_server("127.0.0.1:0", |_c| Ok(())).unwrap();
        let rt = copas::Runtime::current();
        rt.step(Some(Duration::ZERO)).unwrap(); // the accept task is waiting now
        let reactor = copas::Reactor::current().unwrap();
        let polls = reactor.polls();
        let start = Instant::now();
        let busy = rt.step(Some(Duration::from_millis(300))).unwrap();
        assert!(!busy, "nothing happened");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(reactor.polls() - polls, 1, "one wait, no periodic wake-ups");
        server.stop();
        copas::run().unwrap();
    });
}
