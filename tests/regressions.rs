//! One test per bug fixed, named after what broke.

mod common;

use std::cell::Cell;
use std::process::Command;
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

/// `run()` left the runtime "exiting" after it returned, so a server started afterwards
/// and driven by `step` (or by a blocking call outside any task) stopped accepting at
/// its first turn, and its clients were refused.
#[test]
fn server_started_after_run_returned_stopped_at_once() {
    guard(|| {
        copas::run().unwrap();
        assert!(!copas::is_exiting(), "still exiting after run() returned");
        let rt = copas::Runtime::current();
        let server = copas::add_server("127.0.0.1:0", common::echo_lines).unwrap();
        let addr = server.local_addr();
        let client = copas::spawn(move || -> std::io::Result<Vec<u8>> {
            let mut s = copas::TcpStream::connect(addr)?;
            common::exchange(&mut s, b"still serving")
        });
        while !client.is_finished() {
            rt.step(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(client.join().unwrap().unwrap(), b"still serving");
        assert!(!server.is_stopped());
        server.stop();
        copas::run().unwrap();
    });
}

/// Runs the test `name` of this binary in a child process (where it calls `body`), for
/// bugs whose symptom is an abort that would take every other test down with it.
#[track_caller]
fn isolated(name: &str, body: fn()) {
    const CHILD: &str = "COPAS_REGRESSION_CHILD";
    if std::env::var_os(CHILD).is_some() {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its child process ({}):\n{}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stream with unsent output, dropped while the thread's runtime was being torn down
/// (a task blocked writing to a peer that does not read, when the thread ends), tried to
/// spawn its linger task on the runtime that was going away: a panic inside a destructor
/// during unwinding, so the process aborted.
#[test]
fn stream_with_unsent_output_dropped_while_the_thread_exits_aborted() {
    isolated(
        "stream_with_unsent_output_dropped_while_the_thread_exits_aborted",
        || {
            let (peer_tx, peer_rx) = std::sync::mpsc::channel();
            guard(move || {
                let rt = copas::Runtime::current();
                let (mut conn, peer) = common::pair();
                peer_tx.send(peer).unwrap();
                conn.set_write_buffer_size(64 << 20);
                let _blocked = copas::spawn(move || {
                    // More than the kernel takes: flush() blocks, output stays buffered.
                    conn.send(&vec![b'x'; 32 << 20])?;
                    conn.flush()
                });
                common::settle(&rt);
                assert!(rt.stats().tasks == 1, "the writer is blocked");
                // The thread ends here, with the writer suspended in flush().
            });
            drop(peer_rx.recv().unwrap());
        },
    );
}

/// A blocking call from a destructor that runs while the runtime is torn down (a task
/// unwound at thread exit) must fail, as during any unwinding; it panicked in
/// `Runtime::current()` instead, inside a destructor during unwinding: an abort.
#[test]
fn blocking_call_in_a_destructor_at_thread_exit_aborted() {
    isolated(
        "blocking_call_in_a_destructor_at_thread_exit_aborted",
        || {
            struct SleepOnDrop(std::sync::mpsc::Sender<bool>);
            impl Drop for SleepOnDrop {
                fn drop(&mut self) {
                    let failed = copas::sleep(Duration::from_millis(1)).is_err();
                    let _ = self.0.send(failed);
                }
            }
            let (tx, rx) = std::sync::mpsc::channel();
            guard(move || {
                let _parked = copas::spawn(move || {
                    let _guard = SleepOnDrop(tx);
                    copas::park()
                });
                copas::run().unwrap();
                // The thread ends with the task parked; shutdown unwinds it.
            });
            assert_eq!(
                rx.recv().ok(),
                Some(true),
                "the sleep in the destructor did not fail"
            );
        },
    );
}

/// `exit()` woke the UDP server's task, but its receive retried the wait: `run` never
/// returned.
#[test]
fn udp_server_ignored_exit() {
    guard(|| {
        let server = copas::add_udp_server("127.0.0.1:0", |_s, _d, _f| Ok(())).unwrap();
        Timer::after(Duration::from_millis(5), |_| copas::exit());
        copas::run().unwrap();
        assert!(server.is_stopped());
    });
}

/// A server at its connection limit waited in `park`, which swallowed `exit()`'s wake-up:
/// its listener stayed open until a handler ended.
#[test]
fn server_at_its_connection_limit_ignored_exit() {
    guard(|| {
        let server = copas::ServerBuilder::new()
            .max_connections(1)
            .serve("127.0.0.1:0", |mut c| {
                c.receive_line()?; // until the client says something
                c.send(b"bye\n")
            })
            .unwrap();
        let addr = server.local_addr();
        let s2 = server.clone();
        let client = copas::spawn(move || -> std::io::Result<bool> {
            let mut c = copas::TcpStream::connect(addr)?;
            while s2.connections() < 1 {
                copas::sleep(Duration::from_millis(1))?;
            }
            copas::exit();
            // The listener closes although the one handler is still running.
            while !s2.is_stopped() {
                copas::sleep(Duration::from_millis(1))?;
            }
            let refused = copas::TcpStream::connect(addr).is_err();
            c.send(b"done\n")?;
            c.receive_line()?;
            Ok(refused)
        });
        copas::run().unwrap();
        assert!(
            client.join().unwrap().unwrap(),
            "listener still open after exit"
        );
    });
}

/// `shutdown(grace)` cancelled the tasks delivering dropped streams' output when the grace
/// period ended, losing bytes a client was still reading.
#[test]
fn graceful_shutdown_cancelled_lingering_output() {
    guard(|| {
        const TOTAL: usize = 4 << 20;
        let accepted = Rc::new(Cell::new(0usize));
        let acc = accepted.clone();
        let server = copas::add_server("127.0.0.1:0", move |mut c| {
            c.receive_line()?;
            let chunk = vec![b'z'; 64 * 1024];
            c.set_write_timeout(Some(Duration::from_millis(10)))?;
            for _ in 0..TOTAL / chunk.len() {
                c.send(&chunk)?;
                acc.set(acc.get() + chunk.len());
                if let Err(e) = c.flush() {
                    // The peer stopped reading and the socket is full: drop the stream
                    // with output buffered, so a linger task is delivering it when the
                    // grace period ends.
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
                    break;
                }
            }
            assert!(c.pending_output() > 0);
            c.set_write_timeout(None)?;
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let reader = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
            s.write_all(b"go\n").unwrap();
            std::thread::sleep(Duration::from_millis(200)); // past the grace period
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all.len()
        });
        copas::spawn(move || {
            while server.accepted() < 1 {
                copas::sleep(Duration::from_millis(1)).unwrap();
            }
            copas::sleep(Duration::from_millis(20)).unwrap();
            copas::shutdown(Duration::from_millis(50));
        });
        copas::run().unwrap();
        let got = reader.join().unwrap();
        assert!(accepted.get() > 0);
        assert_eq!(got, accepted.get(), "every accepted byte arrives");
    });
}

/// After `cancel_all` dropped a `Timer`'s pending firing, the timer still said it was
/// armed.
#[test]
fn timer_claimed_armed_after_cancel_all() {
    guard(|| {
        let t = Timer::after(Duration::from_secs(3600), |_| {});
        assert!(t.is_armed());
        copas::cancel_all();
        assert!(!t.is_armed());
        assert_eq!(t.deadline(), None);
        assert!(!t.cancel());
        copas::run().unwrap();
    });
}
