//! The cross-thread side: `Handle::exit`, `Handle::spawn_boxed`, `hooks::keep_alive`,
//! `Task::unpark` from other threads.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use copas_core::{hooks, Runtime};

#[test]
fn handle_exit_from_another_thread_wakes_wait_for_exit() {
    let rt = Runtime::current();
    let handle = rt.handle();
    assert!(handle.is_current());
    let waiter = copas_core::spawn(copas_core::wait_for_exit);
    // Keeps the loop waiting until the other thread's exit arrives.
    let keeper = copas_core::spawn(move || {
        let _alive = hooks::keep_alive();
        copas_core::wait_for_exit()
    });
    let t = std::thread::spawn(move || {
        assert!(!handle.is_current());
        std::thread::sleep(Duration::from_millis(20));
        handle.exit();
    });
    copas_core::run().unwrap();
    t.join().unwrap();
    waiter.join().unwrap().unwrap();
    keeper.join().unwrap().unwrap();
}

#[test]
fn spawn_boxed_runs_on_the_runtimes_thread_and_keeps_run_going() {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let rt = Runtime::current();
        tx.send(rt.handle()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let _alive = hooks::keep_alive();
        // Wait (driving the loop) until both remote closures ran.
        let r = ran.clone();
        let me = std::thread::current().id();
        RAN.with(|c| c.set(Some((r, me))));
        while ran.load(Ordering::SeqCst) < 2 {
            rt.step(Some(Duration::from_millis(100))).unwrap();
        }
        ran.load(Ordering::SeqCst)
    });
    let handle = rx.recv().unwrap();
    for _ in 0..2 {
        handle
            .spawn_boxed(Box::new(|| {
                RAN.with(|c| {
                    let (ran, thread) = c.take().expect("runs on the runtime's thread");
                    assert_eq!(std::thread::current().id(), thread);
                    assert!(copas_core::hooks::current_task_id().is_some());
                    ran.fetch_add(1, Ordering::SeqCst);
                    c.set(Some((ran, thread)));
                });
            }))
            .unwrap();
    }
    assert_eq!(worker.join().unwrap(), 2);
    // The runtime is gone with its thread.
    let err = handle.spawn_boxed(Box::new(|| {})).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    handle.exit(); // does nothing, does not panic
}

thread_local! {
    static RAN: std::cell::Cell<Option<(Arc<AtomicUsize>, std::thread::ThreadId)>> =
        const { std::cell::Cell::new(None) };
}

#[test]
fn keep_alive_holds_run_until_another_thread_unparks() {
    let h = copas_core::spawn(|| {
        let _alive = hooks::keep_alive();
        let me = copas_core::current();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            me.unpark();
        });
        copas_core::park().map(|()| "unparked")
    });
    copas_core::run().unwrap();
    assert_eq!(h.join().unwrap().unwrap(), "unparked");
}

#[test]
fn an_accepted_remote_spawn_whose_runtime_ends_first_is_reported_lost() {
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let t = std::thread::spawn(move || {
        Runtime::current().set_error_handler(move |p| {
            s.lock().unwrap().push(p.problem().clone());
        });
        tx.send(Runtime::current().handle()).unwrap();
        // The loop never runs: the thread ends once the closure was accepted.
        go_rx.recv().unwrap();
    });
    let handle = rx.recv().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    handle
        .spawn_boxed(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    go_tx.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![copas_core::Problem::RemoteSpawnLost]
    );
}
