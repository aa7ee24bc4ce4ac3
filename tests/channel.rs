//! `copas::sync::channel` between threads and tasks in every mix, with its drop,
//! cancellation, timeout and FIFO semantics. Real threads; orderings, not timings.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::guard;
use copas::sync::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

const N: u64 = 2000;

fn produce(tx: Sender<u64>) {
    for i in 0..N {
        tx.send(i).unwrap();
    }
}

/// Receives until the channel is disconnected, checking FIFO order.
fn consume(rx: Receiver<u64>) -> u64 {
    let mut next = 0;
    loop {
        match rx.recv() {
            Ok(v) => {
                assert_eq!(v, next, "FIFO order");
                next += 1;
            }
            Err(e) => {
                assert!(e.is_disconnected(), "{e}");
                return next;
            }
        }
    }
}

#[test]
fn both_ends_are_send_and_the_errors_are_errors() {
    fn send<T: Send>() {}
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    send::<Sender<u8>>();
    send::<Receiver<u8>>();
    error::<copas::sync::SendError<u8>>();
    error::<TrySendError<u8>>();
    error::<copas::sync::RecvError>();
    error::<TryRecvError>();
    error::<RecvTimeoutError>();
}

#[test]
fn thread_to_task() {
    guard(|| {
        let (tx, rx) = channel(4);
        let t = thread::spawn(move || produce(tx));
        let h = copas::spawn(move || consume(rx));
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), N);
        t.join().unwrap();
    });
}

#[test]
fn task_to_thread() {
    guard(|| {
        let (tx, rx) = channel(4);
        let t = thread::spawn(move || consume(rx));
        copas::spawn(move || produce(tx));
        copas::run().unwrap();
        assert_eq!(t.join().unwrap(), N);
    });
}

#[test]
fn task_to_task_on_one_runtime() {
    guard(|| {
        let (tx, rx) = channel(3);
        let h = copas::spawn(move || consume(rx));
        copas::spawn(move || produce(tx));
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), N);
    });
}

#[test]
fn task_to_task_across_runtimes() {
    let a = copas::Runtime::spawn_thread("chan-a").unwrap();
    let b = copas::Runtime::spawn_thread("chan-b").unwrap();
    let (tx, rx) = channel(2);
    let got = b.handle().spawn(move || consume(rx));
    a.handle().spawn(move || produce(tx)).join().unwrap();
    assert_eq!(got.join().unwrap(), N);
    a.handle().exit();
    b.handle().exit();
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn thread_to_thread_and_outside_a_task() {
    let (tx, rx) = channel(1);
    let t = thread::spawn(move || produce(tx));
    assert_eq!(consume(rx), N);
    t.join().unwrap();
}

#[test]
fn outside_a_task_a_send_drives_the_loop_its_receiver_task_is_on() {
    guard(|| {
        // Main (outside any task) fills the channel beyond its capacity; the receiver is
        // a task of this very thread, so the sends can only finish by driving the loop.
        let (tx, rx) = channel(2);
        let h = copas::spawn(move || consume(rx));
        produce(tx);
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), N);
    });
}

#[test]
fn many_senders_on_threads_and_tasks_to_one_receiver() {
    guard(|| {
        let (tx, rx) = channel::<u64>(8);
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let tx = tx.clone();
            threads.push(thread::spawn(move || {
                for i in 0..500 {
                    tx.send(t * 10_000 + i).unwrap();
                }
            }));
        }
        for t in 4..8u64 {
            let tx = tx.clone();
            copas::spawn(move || {
                for i in 0..500 {
                    tx.send(t * 10_000 + i).unwrap();
                }
            });
        }
        drop(tx);
        let h = copas::spawn(move || {
            let mut last = [None::<u64>; 8];
            let mut n = 0;
            while let Ok(v) = rx.recv() {
                let (src, i) = ((v / 10_000) as usize, v % 10_000);
                assert!(last[src].is_none_or(|p| p < i), "per-sender FIFO");
                last[src] = Some(i);
                n += 1;
            }
            n
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), 4000);
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn dropping_the_receiver_fails_sends_and_gives_the_value_back() {
    guard(|| {
        let (tx, rx) = channel::<String>(1);
        tx.send("queued".into()).unwrap();
        // A task waits for room; then the receiver goes away.
        let waiting = {
            let tx = tx.clone();
            copas::spawn(move || tx.send("waiting".into()))
        };
        copas::spawn(move || {
            copas::yield_now().unwrap();
            drop(rx);
        });
        copas::run().unwrap();
        let err = waiting.join().unwrap().unwrap_err();
        assert!(err.is_disconnected());
        assert_eq!(err.into_inner(), "waiting");
        let err = tx.send("late".into()).unwrap_err();
        assert!(err.is_disconnected() && !err.is_cancelled());
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::BrokenPipe
        );
        assert_eq!(
            tx.try_send("try".into()),
            Err(TrySendError::Disconnected("try".into()))
        );
        assert!(tx.is_disconnected());
    });
}

#[test]
fn the_receiver_drains_what_is_queued_before_reporting_disconnect() {
    let (tx, rx) = channel(4);
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert_eq!(tx.try_send(3), Ok(()));
    drop(tx);
    assert!(rx.is_disconnected());
    assert_eq!(rx.recv().unwrap(), 1);
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
    assert!(rx.recv().unwrap_err().is_disconnected());
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(1)),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn try_send_and_try_recv_never_wait() {
    let (tx, rx) = channel(1);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.try_send(1).unwrap();
    assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    assert_eq!(tx.len(), 1);
    assert_eq!(tx.capacity(), 1);
    assert_eq!(rx.try_recv(), Ok(1));
    assert!(rx.is_empty());
}

#[test]
fn recv_timeout_times_out_on_a_thread_and_in_a_task() {
    let (tx, rx) = channel::<u8>(1);
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    ));
    guard(move || {
        let h = copas::spawn(move || {
            let first = rx.recv_timeout(Duration::from_millis(5));
            let second = rx.recv_timeout(Duration::from_secs(30));
            (first, second)
        });
        copas::spawn(move || {
            copas::sleep(Duration::from_millis(20)).unwrap();
            tx.send(9).unwrap();
        });
        copas::run().unwrap();
        let (first, second) = h.join().unwrap();
        assert!(matches!(first, Err(RecvTimeoutError::Timeout)));
        assert_eq!(second.unwrap(), 9);
    });
}

#[test]
fn a_cancelled_send_returns_at_once_with_its_value_and_a_cancelled_recv_too() {
    guard(|| {
        let (tx, rx) = channel::<&'static str>(1);
        tx.send("fills it").unwrap();
        let sender = copas::spawn(move || tx.send("blocked"));
        let (_keep_tx, rx2) = channel::<u8>(1);
        let receiver = copas::spawn(move || rx2.recv());
        let sender = Rc::new(RefCell::new(Some(sender)));
        let receiver = Rc::new(RefCell::new(Some(receiver)));
        let (s, r) = (sender.clone(), receiver.clone());
        copas::spawn(move || {
            copas::yield_now().unwrap();
            assert!(s.borrow().as_ref().unwrap().cancel());
            assert!(r.borrow().as_ref().unwrap().cancel());
        });
        copas::run().unwrap();
        let sender = sender.borrow_mut().take().unwrap();
        let receiver = receiver.borrow_mut().take().unwrap();
        let err = sender.join().unwrap().unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        assert_eq!(err.into_inner(), "blocked");
        assert!(receiver.join().unwrap().unwrap_err().is_cancelled());
        // The cancelled send left nothing behind: only the first value is there, and
        // then the channel is disconnected (the sending task has ended).
        assert_eq!(rx.try_recv(), Ok("fills it"));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn waiting_senders_are_served_in_the_order_they_came() {
    guard(|| {
        let (tx, rx) = channel::<u32>(1);
        tx.send(0).unwrap();
        for i in 1..=5 {
            let tx = tx.clone();
            copas::spawn(move || tx.send(i).unwrap());
        }
        drop(tx);
        let h = copas::spawn(move || {
            // Let all five queue up behind the full channel first.
            copas::yield_now().unwrap();
            let mut got = Vec::new();
            while let Ok(v) = rx.recv() {
                got.push(v);
            }
            got
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    });
}

#[test]
fn a_task_waiting_on_a_thread_keeps_its_loop_alive() {
    guard(|| {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (tx, rx) = channel::<&'static str>(1);
        let t = thread::spawn(move || {
            // Sends only once the task is surely waiting and the loop otherwise idle.
            go_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(20));
            tx.send("late").unwrap();
        });
        let h = copas::spawn(move || {
            go_tx.send(()).unwrap();
            rx.recv()
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap().unwrap(), "late");
        t.join().unwrap();
    });
}

#[test]
#[should_panic(expected = "capacity must be at least 1")]
fn a_zero_capacity_is_refused() {
    let _ = channel::<u8>(0);
}
