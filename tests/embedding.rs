//! Embedding: `unblock`, `block_on`, `Handle` and remote spawns, `Runtime::spawn_thread`,
//! `resolve`, and the `legacy` example in both of its modes. Real threads and sockets;
//! every wait is an ordering (a gate opened by the other side), never a timing bound.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream as StdStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{guard, HANG_GUARD};

#[test]
fn the_ticker_keeps_ticking_while_64_unblock_calls_block_their_workers() {
    guard(|| {
        // Each call blocks its worker until the ticker, a task on the loop, has ticked
        // five times and opens the gates: if `unblock` blocked the loop this would hang.
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate_rx));
        let ticks = Rc::new(Cell::new(0u32));
        let mut calls = Vec::new();
        for i in 0..64 {
            let gate = gate.clone();
            let ticks = ticks.clone();
            calls.push(copas::spawn(move || {
                let r = copas::unblock(move || {
                    gate.lock().unwrap().recv().unwrap();
                    i * 2
                });
                (r.unwrap(), ticks.get())
            }));
        }
        let t = ticks.clone();
        copas::spawn(move || {
            for _ in 0..5 {
                copas::sleep(Duration::from_millis(1)).unwrap();
                t.set(t.get() + 1);
            }
            for _ in 0..64 {
                gate_tx.send(()).unwrap();
            }
        });
        copas::run().unwrap();
        for (i, h) in calls.into_iter().enumerate() {
            let (v, ticks_seen) = h.join().unwrap();
            assert_eq!(v, i * 2);
            assert_eq!(
                ticks_seen, 5,
                "every call returned after the ticker's ticks"
            );
        }
    });
}

#[test]
fn unblock_runs_concurrently_on_up_to_64_workers() {
    guard(|| {
        // All 64 calls must be blocked at once for the barrier to open.
        let barrier = Arc::new(std::sync::Barrier::new(64));
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let b = barrier.clone();
                copas::spawn(move || copas::unblock(move || b.wait().is_leader()))
            })
            .collect();
        copas::run().unwrap();
        let leaders = calls
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .filter(|&l| l)
            .count();
        assert_eq!(leaders, 1);
    });
}

/// Sends on `tx` when dropped: tells the test that `unblock`'s result was dropped.
struct Tell(mpsc::Sender<&'static str>);

impl Drop for Tell {
    fn drop(&mut self) {
        let _ = self.0.send("result dropped");
    }
}

#[test]
fn cancelling_a_task_in_unblock_returns_at_once_and_drops_the_result_later() {
    guard(|| {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (told_tx, told_rx) = mpsc::channel();
        let (running_tx, running_rx) = mpsc::channel::<()>();
        let waiter = copas::spawn(move || {
            copas::unblock(move || {
                running_tx.send(()).unwrap();
                gate_rx.recv().unwrap();
                Tell(told_tx)
            })
            .map(drop)
        });
        // Cancel once the call is running on its worker.
        let cancelled = Rc::new(Cell::new(false));
        let c = cancelled.clone();
        let waiter = Rc::new(RefCell::new(Some(waiter)));
        let wh = waiter.clone();
        copas::spawn(move || {
            let h = copas::unblock(move || running_rx.recv().unwrap());
            h.unwrap();
            c.set(wh.borrow().as_ref().unwrap().cancel());
        });
        // run() returns although the worker is still blocked: the cancelled call did
        // not wait for it.
        copas::run().unwrap();
        assert!(cancelled.get());
        let r = waiter.borrow_mut().take().unwrap().join().unwrap();
        assert!(copas::is_cancelled(&r.unwrap_err()));
        assert!(told_rx.try_recv().is_err(), "f has not finished yet");
        gate_tx.send(()).unwrap();
        assert_eq!(told_rx.recv_timeout(HANG_GUARD), Ok("result dropped"));
    });
}

#[test]
fn a_panic_in_unblock_is_raised_in_the_calling_task_and_the_loop_goes_on() {
    guard(|| {
        let reports = Rc::new(RefCell::new(Vec::<String>::new()));
        let r = reports.clone();
        copas::Runtime::current().set_error_handler(move |p| r.borrow_mut().push(p.to_string()));
        let bad = copas::Builder::new()
            .name("caller".into())
            .spawn(|| copas::unblock(|| -> u32 { panic!("legacy library exploded") }))
            .unwrap();
        let after = copas::spawn(|| copas::unblock(|| 7).unwrap());
        copas::run().unwrap();
        let err = bad.join().unwrap_err();
        assert_eq!(err.panic_message(), Some("legacy library exploded"));
        assert_eq!(after.join().unwrap(), 7);
        let reports = reports.borrow();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].contains("'caller'") && reports[0].contains("legacy library exploded"));
    });
}

#[test]
fn unblock_under_with_timeout_fails_with_timed_out() {
    guard(|| {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let h = copas::spawn(move || {
            copas::with_timeout(Duration::from_millis(5), || {
                copas::unblock(move || gate_rx.recv().is_ok())
            })
        });
        copas::run().unwrap();
        assert_eq!(
            h.join().unwrap().unwrap_err().kind(),
            std::io::ErrorKind::TimedOut
        );
        drop(gate_tx);
    });
}

#[test]
fn the_old_park_unpark_offload_trap_now_works_with_block_on_and_channels() {
    guard(|| {
        // A std thread does the work and completes a future the task waits on: run()
        // must not return before the task has its answer.
        let (tx, rx) = copas::sync::channel::<u64>(1);
        let worker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(41).unwrap();
        });
        let waiting = copas::spawn(move || rx.recv().unwrap() + 1);
        copas::run().unwrap();
        assert_eq!(waiting.join().unwrap(), 42);
        worker.join().unwrap();

        let got = copas::spawn(|| {
            let (tx, rx) = copas::sync::channel::<&'static str>(1);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                tx.send("from a thread").unwrap();
            });
            copas::block_on(std::future::poll_fn(|cx| {
                // A hand-written future over try_recv, woken by a thread.
                match rx.try_recv() {
                    Ok(v) => std::task::Poll::Ready(v),
                    Err(_) => {
                        let w = cx.waker().clone();
                        thread::spawn(move || {
                            thread::sleep(Duration::from_millis(5));
                            w.wake();
                        });
                        std::task::Poll::Pending
                    }
                }
            }))
        });
        copas::run().unwrap();
        assert_eq!(got.join().unwrap().unwrap(), "from a thread");
    });
}

/// A future that completes when a flag is set from another thread, holding the waker
/// that it was last polled with.
struct Flag {
    done: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Flag {
    fn new() -> Arc<Flag> {
        Arc::new(Flag {
            done: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
    }

    fn set(&self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    fn wait(self: &Arc<Self>) -> impl std::future::Future<Output = ()> {
        let me = self.clone();
        std::future::poll_fn(move |cx| {
            *me.waker.lock().unwrap() = Some(cx.waker().clone());
            if me.done.load(Ordering::SeqCst) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

#[test]
fn block_on_outside_a_task_drives_the_loop_and_wakes_from_a_thread() {
    guard(|| {
        let flag = Flag::new();
        let ticks = Rc::new(Cell::new(0u32));
        let t = ticks.clone();
        let f = flag.clone();
        // A task of this loop ticks, then asks a thread to set the flag: the loop must be
        // driven by block_on for that to happen at all.
        copas::spawn(move || {
            for _ in 0..3 {
                copas::sleep(Duration::from_millis(1)).unwrap();
                t.set(t.get() + 1);
            }
            thread::spawn(move || f.set());
        });
        copas::block_on(flag.wait()).unwrap();
        assert_eq!(ticks.get(), 3);
    });
}

#[test]
fn block_on_fails_with_timed_out_and_cancelled() {
    guard(|| {
        let t = copas::spawn(|| {
            copas::with_timeout(Duration::from_millis(5), || {
                copas::block_on(std::future::pending::<()>())
            })
        });
        let c = copas::spawn(|| copas::block_on(std::future::pending::<()>()));
        let cid = Rc::new(c);
        let c2 = cid.clone();
        copas::spawn(move || {
            copas::sleep(Duration::from_millis(2)).unwrap();
            c2.cancel();
        });
        copas::run().unwrap();
        assert_eq!(
            t.join().unwrap().unwrap_err().kind(),
            std::io::ErrorKind::TimedOut
        );
        let c = Rc::try_unwrap(cid).unwrap();
        assert!(copas::is_cancelled(&c.join().unwrap().unwrap_err()));
        // Outside a task, too.
        let r = copas::with_timeout(Duration::from_millis(5), || {
            copas::block_on(std::future::pending::<()>())
        });
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    });
}

#[test]
fn remote_spawns_from_8_std_threads_all_run_on_the_runtime_thread() {
    let rt = copas::Runtime::spawn_thread("copas-remote").unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let h = rt.handle();
            thread::spawn(move || {
                let mut sum = 0;
                for i in 0..50u64 {
                    let r = h.spawn(move || {
                        assert!(copas::try_current().is_some(), "runs as a task");
                        (thread::current().name().map(str::to_owned), t * 1000 + i)
                    });
                    let (name, v) = r.join().unwrap();
                    assert_eq!(name.as_deref(), Some("copas-remote"));
                    sum += v;
                }
                sum
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let expected: u64 = (0..8u64)
        .map(|t| (0..50).map(|i| t * 1000 + i).sum::<u64>())
        .sum();
    assert_eq!(total, expected);
    rt.handle().exit();
    rt.join().unwrap();
}

#[test]
fn a_remote_join_in_a_task_suspends_it_and_the_loop_goes_on() {
    guard(|| {
        let rt = copas::Runtime::spawn_thread("remote-b").unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let remote = rt.handle().spawn(move || {
            gate_rx.recv().unwrap();
            "opened"
        });
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        copas::spawn(move || {
            for _ in 0..3 {
                copas::sleep(Duration::from_millis(1)).unwrap();
                t.set(t.get() + 1);
            }
            gate_tx.send(()).unwrap();
        });
        let tk = ticks.clone();
        let joined = copas::spawn(move || (remote.join().unwrap(), tk.get()));
        copas::run().unwrap();
        assert_eq!(joined.join().unwrap(), ("opened", 3));
        rt.handle().exit();
        rt.join().unwrap();
    });
}

#[test]
fn a_remote_spawn_panic_is_reported_there_and_given_to_the_joiner() {
    let rt = copas::Runtime::spawn_thread("remote-panic").unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    rt.handle()
        .spawn(move || {
            let tx = tx.lock().unwrap().clone();
            copas::Runtime::current().set_error_handler(move |p| {
                let _ = tx.send(p.to_string());
            });
        })
        .join()
        .unwrap();
    let err = rt
        .handle()
        .spawn(|| -> u8 { panic!("remote boom") })
        .join()
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("remote boom"));
    assert!(rx.recv_timeout(HANG_GUARD).unwrap().contains("remote boom"));
    rt.handle().exit();
    rt.join().unwrap();
}

#[test]
fn run_does_not_end_while_an_accepted_remote_spawn_has_not_run() {
    guard(|| {
        let handle = copas::Runtime::current().handle();
        assert!(handle.is_current());
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        // Accepted before run() starts; nothing else is on the loop.
        let joiner = thread::spawn(move || handle.spawn(move || r.store(true, Ordering::SeqCst)))
            .join()
            .unwrap();
        copas::run().unwrap();
        assert!(
            ran.load(Ordering::SeqCst),
            "the remote spawn ran before run() returned"
        );
        assert!(joiner.is_finished());
        joiner.join().unwrap();
        assert!(!copas::Runtime::spawn_thread("other")
            .map(|t| {
                let cur = t.handle().is_current();
                t.handle().exit();
                t.join().unwrap();
                cur
            })
            .unwrap());
    });
}

#[test]
fn a_runtime_thread_serves_a_server_until_handle_exit() {
    let rt = copas::Runtime::spawn_thread("copas-server").unwrap();
    let addr = rt
        .handle()
        .spawn(|| {
            let server = copas::add_server("127.0.0.1:0", |mut conn: copas::TcpStream| {
                while let Some(line) = conn.receive_line()? {
                    conn.send(&line)?;
                    conn.send(b"\n")?;
                }
                Ok(())
            })
            .unwrap();
            server.local_addr()
        })
        .join()
        .unwrap();
    for round in 0..3 {
        let mut s = BufReader::new(StdStream::connect(addr).unwrap());
        s.get_mut()
            .write_all(format!("hi {round}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        assert_eq!(line, format!("hi {round}\n"));
    }
    // The loop was idle between clients and did not end: exit is what ends it.
    rt.handle().exit();
    rt.join().unwrap();
    assert!(StdStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn copas_exit_from_a_task_ends_a_runtime_thread_and_later_spawns_are_cancelled() {
    let rt = copas::Runtime::spawn_thread("copas-exit").unwrap();
    let handle = rt.handle();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    rt.handle()
        .spawn(move || {
            c.fetch_add(1, Ordering::SeqCst);
            copas::exit();
        })
        .join()
        .unwrap();
    rt.join().unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let late = handle.spawn(|| 1);
    assert!(late.join().unwrap_err().is_cancelled());
    assert!(handle.spawn_boxed(Box::new(|| {})).is_err());
}

#[test]
fn a_runtime_thread_join_in_a_task_suspends_it() {
    guard(|| {
        let rt = copas::Runtime::spawn_thread("copas-join").unwrap();
        let handle = rt.handle();
        let joined = copas::spawn(move || rt.join());
        let exiter = copas::spawn(move || {
            copas::sleep(Duration::from_millis(2)).unwrap();
            handle.exit();
        });
        copas::run().unwrap();
        joined.join().unwrap().unwrap();
        exiter.join().unwrap();
    });
}

#[test]
fn resolve_parses_ips_in_place_and_looks_names_up_off_the_loop() {
    guard(|| {
        let h = copas::spawn(|| {
            let ip = copas::resolve("127.0.0.1:80").unwrap();
            let name = copas::resolve("localhost:80").unwrap();
            let bad = copas::resolve("no port here").unwrap_err();
            (ip, name, bad.kind())
        });
        copas::run().unwrap();
        let (ip, name, bad) = h.join().unwrap();
        assert_eq!(ip, vec!["127.0.0.1:80".parse().unwrap()]);
        assert!(!name.is_empty() && name.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        assert_eq!(bad, std::io::ErrorKind::InvalidInput);
    });
}

/// The `legacy` example's binary, built by `cargo test` next to this test binary.
fn legacy_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("legacy");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds examples; with a test filter, run \
         `cargo build --example legacy` first",
        bin.display()
    );
    bin
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drive_legacy(args: &[&str]) {
    let port = common::listener().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(legacy_example());
    cmd.args(args).arg("--addr").arg(&addr);
    cmd.stdout(std::process::Stdio::piped());
    let mut child = Child(cmd.spawn().expect("start the legacy example"));
    // The example says where it listens once it does.
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut banner = String::new();
    out.read_line(&mut banner).unwrap();
    assert!(banner.contains(&addr), "{banner}");
    // A slow client (waiting for the slow legacy call) and a quick one at once: the quick
    // one is answered while the slow call is still running.
    let mut slow = BufReader::new(StdStream::connect(&addr).unwrap());
    slow.get_mut().write_all(b"REPORT 300\n").unwrap();
    let mut quick = BufReader::new(StdStream::connect(&addr).unwrap());
    let mut line = String::new();
    quick.get_mut().write_all(b"HELLO rust\n").unwrap();
    quick.read_line(&mut line).unwrap();
    assert_eq!(line, "hello, rust\n");
    line.clear();
    quick.get_mut().write_all(b"PING\n").unwrap();
    quick.read_line(&mut line).unwrap();
    assert_eq!(line, "PONG\n");
    line.clear();
    quick.get_mut().write_all(b"bogus\n").unwrap();
    quick.read_line(&mut line).unwrap();
    assert!(line.starts_with("ERR unknown command"), "{line}");
    line.clear();
    slow.read_line(&mut line).unwrap();
    assert_eq!(line, "report: 300 ms of legacy work done\n");
    line.clear();
    quick.get_mut().write_all(b"QUIT\n").unwrap();
    quick.read_line(&mut line).unwrap();
    assert_eq!(line, "BYE\n");
    line.clear();
    assert_eq!(quick.read_line(&mut line).unwrap(), 0, "closed after QUIT");
}

#[test]
fn the_legacy_example_serves_the_same_protocol_on_copas_and_on_threads() {
    drive_legacy(&[]);
    drive_legacy(&["--threads"]);
}

#[test]
fn the_legacy_example_reports_a_bad_address_as_a_sentence() {
    let out = std::process::Command::new(legacy_example())
        .args(["--addr", "not-an-address"])
        .output()
        .expect("run the legacy example");
    assert_eq!(out.status.code(), Some(2), "a command-line mistake");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("legacy: option '--addr' wants HOST:PORT"),
        "{err}"
    );
    // A port already taken is a failure at run time, said as a sentence.
    let taken = common::listener();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(legacy_example())
        .args(["--threads", "--addr", &taken_addr])
        .output()
        .expect("run the legacy example");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("legacy: cannot listen on {taken_addr}: ")),
        "{err}"
    );
    let help = std::process::Command::new(legacy_example())
        .arg("--help")
        .output()
        .expect("run the legacy example");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--threads"));
    let bad = std::process::Command::new(legacy_example())
        .arg("--bogus")
        .output()
        .expect("run the legacy example");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("legacy: unknown option '--bogus'"));
    let valued = std::process::Command::new(legacy_example())
        .arg("--threads=yes")
        .output()
        .expect("run the legacy example");
    assert_eq!(valued.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&valued.stderr)
        .starts_with("legacy: option '--threads' takes no value"));
}

#[test]
fn tasks_spawned_on_a_thread_that_never_runs_its_loop_are_reported_when_it_exits() {
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    thread::Builder::new()
        .name("forgetful".into())
        .spawn(move || {
            copas::Runtime::current().set_error_handler(move |p| {
                let _ = tx.send((
                    matches!(p.problem(), copas::Problem::NeverRan),
                    p.to_string(),
                ));
            });
            // Ran: not reported.
            copas::spawn(|| ()).join().unwrap();
            // Never run: the thread ends without driving its loop again.
            let _ = copas::Builder::new().name("forgotten".into()).spawn(|| ());
        })
        .unwrap()
        .join()
        .unwrap();
    let reports: Vec<_> = rx.iter().collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (lost, text) = &reports[0];
    assert!(*lost);
    assert!(
        text.contains("'forgotten'") && text.contains("never ran"),
        "{text}"
    );
}

#[test]
fn the_cross_thread_types_are_send() {
    fn send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug>() {}
    fn send<T: Send>() {}
    send_sync_clone::<copas::Handle>();
    send::<copas::RemoteJoinHandle<String>>();
    send::<copas::RuntimeThread>();
}
