//! `copas::Threads` over real sockets: two threads accept on one port (SO_REUSEPORT) and
//! both serve, exit from the group and from inside a task ends every thread,
//! `shutdown(grace)` lets handlers finish and cancels what outlives it, a thread whose
//! setup panics leaves its peer serving, setup errors fail `start`, per-thread stats.

mod common;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::guard;
use copas::{ServerBuilder, TcpStream, Threads};

type Counts = Arc<Vec<AtomicUsize>>;

fn counts(n: usize) -> Counts {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

/// One request: a line out, its echo back.
fn ask(addr: SocketAddr, line: &str) -> io::Result<String> {
    let mut s = StdStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply)
}

/// An echo handler that counts its connections in `counts[index]`; `quit` calls
/// `copas::exit()`, `boom` panics.
fn echo(counts: Counts, index: usize) -> impl Fn(TcpStream) -> io::Result<()> {
    move |mut conn| {
        counts[index].fetch_add(1, Ordering::SeqCst);
        while let Some(line) = conn.receive_line()? {
            match &line[..] {
                b"quit" => copas::exit(),
                b"boom" => panic!("boom requested"),
                _ => {}
            }
            conn.send(&line)?;
            conn.send(b"\n")?;
        }
        Ok(())
    }
}

fn echo_group(n: usize, counts: &Counts) -> copas::ThreadGroup {
    let c = counts.clone();
    Threads::new(n)
        .name("echo")
        .start(move |t| {
            ServerBuilder::new()
                .name("echo")
                .serve(t.listener("127.0.0.1:0")?, echo(c.clone(), t.index()))?;
            Ok(())
        })
        .unwrap()
}

#[test]
fn two_threads_accept_on_one_port_and_both_serve() {
    guard(|| {
        let served = counts(2);
        let group = echo_group(2, &served);
        let addr = group.local_addr().unwrap();
        assert_eq!(group.local_addrs(), [addr]);
        // Four client threads, 50 connections each, every one from a new source port.
        let clients: Vec<_> = (0..4)
            .map(|c| {
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let msg = format!("client {c} request {i}");
                        assert_eq!(ask(addr, &msg).unwrap(), format!("{msg}\n"));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let (a, b) = (
            served[0].load(Ordering::SeqCst),
            served[1].load(Ordering::SeqCst),
        );
        assert_eq!(a + b, 200);
        assert!(a > 0 && b > 0, "both threads served: {a} and {b}");
        group.exit();
        group.join().unwrap();
        assert!(
            StdStream::connect(addr).is_err(),
            "the listeners are closed"
        );
    });
}

#[test]
fn exit_from_inside_a_task_ends_every_thread() {
    guard(|| {
        let served = counts(2);
        let group = echo_group(2, &served);
        let addr = group.local_addr().unwrap();
        let handle = group.handle();
        assert!(!handle.is_exiting());
        // Whichever thread gets this connection, the whole group ends.
        // (Exit does not end connections: the handler ends when its client goes.)
        assert_eq!(ask(addr, "quit").unwrap(), "quit\n");
        group.join().unwrap();
        assert!(handle.is_exiting());
        assert_eq!(handle.stats(), [None, None], "both runtimes are gone");
        assert!(StdStream::connect(addr).is_err());
    });
}

#[test]
fn shutdown_lets_handlers_finish_within_grace_and_cancels_the_rest() {
    guard(|| {
        let started = counts(1);
        let s2 = started.clone();
        let group = Threads::new(2)
            .name("slow")
            .start(move |t| {
                let started = s2.clone();
                ServerBuilder::new().serve(t.listener("127.0.0.1:0")?, move |mut conn| {
                    let line = conn.receive_line()?.unwrap_or_default();
                    started[0].fetch_add(1, Ordering::SeqCst);
                    let nap = if &line[..] == b"forever" {
                        3_600_000
                    } else {
                        300
                    };
                    copas::sleep(Duration::from_millis(nap))?;
                    conn.send(b"done\n")
                })?;
                Ok(())
            })
            .unwrap();
        let addr = group.local_addr().unwrap();
        let mut quick = StdStream::connect(addr).unwrap();
        quick.write_all(b"quick\n").unwrap();
        let mut slow = StdStream::connect(addr).unwrap();
        slow.write_all(b"forever\n").unwrap();
        while started[0].load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        group.shutdown(Duration::from_secs(3));
        group.join().unwrap();
        // The quick handler finished within the grace period and answered...
        let mut reply = String::new();
        quick
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        BufReader::new(quick).read_line(&mut reply).unwrap();
        assert_eq!(reply, "done\n");
        // ...the hour-long one was cancelled at its end: closed without an answer.
        let mut reply = String::new();
        slow.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let n = BufReader::new(slow).read_line(&mut reply).unwrap_or(0);
        assert_eq!(n, 0, "got {reply:?}");
    });
}

#[test]
fn a_thread_whose_setup_panics_leaves_its_peer_serving() {
    guard(|| {
        let served = counts(2);
        let c = served.clone();
        let group = Threads::new(2)
            .name("half")
            .start(move |t| {
                let listener = t.listener("127.0.0.1:0")?;
                if t.index() == 1 {
                    panic!("setup of thread 1 fails on purpose");
                }
                ServerBuilder::new().serve(listener, echo(c.clone(), t.index()))?;
                Ok(())
            })
            .unwrap();
        let addr = group.local_addr().unwrap();
        for i in 0..50 {
            assert_eq!(ask(addr, &format!("r{i}")).unwrap(), format!("r{i}\n"));
        }
        // A panic in a handler task is the runtime's business: the thread goes on.
        let mut s = StdStream::connect(addr).unwrap();
        s.write_all(b"boom\n").unwrap();
        let mut rest = String::new();
        let _ = BufReader::new(s).read_line(&mut rest);
        assert_eq!(ask(addr, "after").unwrap(), "after\n");
        assert_eq!(served[0].load(Ordering::SeqCst), 52);
        assert_eq!(served[1].load(Ordering::SeqCst), 0);
        let stats = group.stats();
        assert!(stats[0].is_some() && stats[1].is_none(), "{stats:?}");
        group.exit();
        let err = group.join().unwrap_err();
        assert_eq!(err.failures().len(), 1);
        let f = &err.failures()[0];
        assert_eq!((f.index(), f.name(), f.is_panic()), (1, "half-1", true));
        let text = err.to_string();
        assert!(
            text.contains("setup of thread 1 fails on purpose"),
            "{text}"
        );
    });
}

#[test]
fn a_setup_error_fails_start_with_its_kind() {
    guard(|| {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Threads::new(2)
            .name("busy")
            .start(move |t| {
                ServerBuilder::new().serve(t.listener(addr)?, |_| Ok(()))?;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("thread 'busy-"), "{err}");
        let err = Threads::new(0).start(|_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn stats_are_per_thread_and_can_be_asked_from_a_task() {
    guard(|| {
        let group = Threads::new(2)
            .name("stats")
            .start(|t| {
                // Thread i holds 3 * i idle tasks.
                for _ in 0..3 * t.index() {
                    copas::spawn(copas::wait_for_exit);
                }
                Ok(())
            })
            .unwrap();
        let tasks = |stats: Vec<Option<copas::Stats>>| -> Vec<usize> {
            stats.into_iter().map(|s| s.unwrap().tasks).collect()
        };
        // The spawns of the setup run at each thread's first step, but are counted at once.
        assert_eq!(tasks(group.stats()), [0, 3]);
        // From a copas task of this thread's runtime: the task is suspended meanwhile.
        let handle = group.handle();
        let ticks = Arc::new(AtomicUsize::new(0));
        let t2 = ticks.clone();
        let ticker = copas::spawn(move || {
            for _ in 0..3 {
                copas::yield_now()?;
                t2.fetch_add(1, Ordering::SeqCst);
            }
            io::Result::Ok(())
        });
        let asker = copas::spawn(move || handle.stats());
        copas::run().unwrap();
        ticker.join().unwrap().unwrap();
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
        assert_eq!(tasks(asker.join().unwrap()), [0, 3]);
        group.exit();
        group.join().unwrap();
    });
}
