//! Diagnostics (issue 12): the blocked-loop warning on stderr (child processes), the task
//! dump of tasks in known waits, `Handle::dump` from another thread, stack high-water
//! marks, and the SIGUSR1 dump of the echo example.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use copas::sync::{Mutex, Queue, Semaphore};
use copas::{hooks, Builder, Runtime, WaitOn};

const CHILD_ENV: &str = "COPAS_DIAG_CHILD";

/// Runs this test binary's `child_scenarios` test with `mode`; returns its stderr.
fn run_child(mode: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_scenarios",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .env_remove("COPAS_BLOCK_WARNING");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child {mode} failed: {stderr}");
    stderr
}

fn blocking_task(peer: bool) {
    let mut b = Builder::new().name("echo:client-7".into());
    if peer {
        b = b.peer_addr("127.0.0.1:5123".parse().unwrap());
    }
    let h = b
        .spawn(|| std::thread::sleep(Duration::from_millis(300)))
        .unwrap();
    // Another task that has to wait for the blocking one.
    let other = copas::spawn(|| copas::sleep(Duration::from_millis(10)));
    copas::run().unwrap();
    h.join().unwrap();
    other.join().unwrap().unwrap();
}

/// The scenarios the child processes run; does nothing in the normal test run.
#[test]
fn child_scenarios() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    match mode.as_str() {
        "blocking" => blocking_task(true),
        "blocking-no-peer" => blocking_task(false),
        "set-off" => {
            Runtime::current().set_block_warning(None);
            blocking_task(true);
        }
        "well-behaved" => {
            let mut hs = Vec::new();
            for i in 0..20 {
                hs.push(copas::spawn(move || {
                    for _ in 0..30 {
                        copas::sleep(Duration::from_millis(1 + i % 3))?;
                        copas::yield_now()?;
                    }
                    Ok::<_, std::io::Error>(())
                }));
            }
            copas::run().unwrap();
            for h in hs {
                h.join().unwrap().unwrap();
            }
        }
        "stuck" => {
            let h = Builder::new()
                .name("stuck".into())
                .spawn(|| std::thread::sleep(Duration::from_millis(1600)))
                .unwrap();
            copas::run().unwrap();
            h.join().unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn a_task_that_blocks_the_loop_is_reported_once_with_name_id_peer_and_duration() {
    let stderr = run_child("blocking", &[]);
    // Only the blocking task's lines: on a loaded machine the other task may be stalled
    // by the OS and reported too.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("copas:") && l.contains("#1"))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    let line = lines[0];
    assert!(
        line.starts_with("copas: task 'echo:client-7' (#1, 127.0.0.1:5123) ran ")
            && line.ends_with(" ms without yielding; every other task waited"),
        "stderr: {stderr}"
    );
    let ms: u64 = line
        .split(" ran ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!((100..10_000).contains(&ms), "stderr: {stderr}");
}

#[test]
fn the_warning_without_a_peer_names_the_task() {
    let stderr = run_child("blocking-no-peer", &[]);
    assert!(
        stderr.contains("copas: task 'echo:client-7' (#1) ran "),
        "stderr: {stderr}"
    );
}

#[test]
fn a_well_behaved_program_prints_nothing() {
    let stderr = run_child("well-behaved", &[]);
    assert!(!stderr.contains("copas:"), "stderr: {stderr}");
}

#[test]
fn the_warning_can_be_switched_off_by_environment_or_call() {
    let stderr = run_child("blocking", &[("COPAS_BLOCK_WARNING", "off")]);
    assert!(!stderr.contains("copas:"), "stderr: {stderr}");
    let stderr = run_child("set-off", &[]);
    assert!(!stderr.contains("copas:"), "stderr: {stderr}");
    // A threshold above the block: nothing either.
    let stderr = run_child("blocking", &[("COPAS_BLOCK_WARNING", "5000")]);
    assert!(!stderr.contains("copas:"), "stderr: {stderr}");
}

#[test]
fn a_task_still_blocking_is_announced_by_the_watchdog_before_it_yields() {
    let stderr = run_child("stuck", &[]);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("copas:") && l.contains("#1"))
        .collect();
    assert_eq!(lines.len(), 2, "stderr: {stderr}");
    assert!(
        lines[0].starts_with("copas: task #1 has been running for ")
            && lines[0].contains("without yielding and still runs"),
        "stderr: {stderr}"
    );
    assert!(
        lines[1].starts_with("copas: task 'stuck' (#1) ran "),
        "stderr: {stderr}"
    );
}

#[test]
fn set_block_warning_reads_back() {
    common::guard(|| {
        let rt = Runtime::current();
        rt.set_block_warning(Some(Duration::from_millis(250)));
        assert_eq!(rt.block_warning(), Some(Duration::from_millis(250)));
        rt.set_block_warning(None);
        assert_eq!(rt.block_warning(), None);
        rt.set_block_warning(Some(Duration::ZERO));
        assert_eq!(rt.block_warning(), None);
    });
}

/// The dump line of the task named `name`.
fn line_of<'a>(dump: &'a str, name: &str) -> &'a str {
    let pat = format!("'{name}'");
    dump.lines()
        .find(|l| l.contains(&pat))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{dump}"))
}

/// Steps the loop until every task in `ids` waits on something.
fn settle(rt: &Runtime, ids: &[copas::TaskId]) {
    let start = Instant::now();
    while ids
        .iter()
        .any(|id| matches!(rt.wait_of(*id), Some(WaitOn::Nothing) | None))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tasks did not settle:\n{}",
            rt.dump()
        );
        rt.step(Some(Duration::from_millis(5))).unwrap();
    }
}

#[test]
fn the_dump_names_every_kind_of_wait_in_plain_words() {
    common::guard(|| {
        let rt = Runtime::current();
        let named = |n: &str| Builder::new().name(n.into());
        let mut ids = Vec::new();

        let sleeper = named("sleeper")
            .spawn(|| copas::sleep(Duration::from_secs(30)))
            .unwrap();
        ids.push(sleeper.id());
        let m = Rc::new(Mutex::new(()));
        let holder = named("holder")
            .spawn({
                let m = m.clone();
                move || {
                    let _g = m.lock().unwrap();
                    copas::park()
                }
            })
            .unwrap();
        ids.push(holder.id());
        let locker = named("locker")
            .spawn({
                let m = m.clone();
                move || m.lock().map(drop)
            })
            .unwrap();
        ids.push(locker.id());
        let sem = Rc::new(Semaphore::new(1, 0));
        let acquirer = named("acquirer")
            .spawn({
                let sem = sem.clone();
                move || sem.acquire(1).map(drop)
            })
            .unwrap();
        ids.push(acquirer.id());
        let q: Queue<u32> = Queue::new();
        let popper = named("popper")
            .spawn({
                let q = q.clone();
                move || q.pop()
            })
            .unwrap();
        ids.push(popper.id());
        let joined_id = holder.id();
        let joiner = named("joiner").spawn(move || holder.join()).unwrap();
        ids.push(joiner.id());
        let exiter = named("exiter").spawn(copas::wait_for_exit).unwrap();
        ids.push(exiter.id());
        let unblocker = named("unblocker")
            .spawn(|| {
                let rt = Runtime::current();
                hooks::suspend_for(&rt, WaitOn::Unblock, None)
            })
            .unwrap();
        ids.push(unblocker.id());
        let chan = named("receiver")
            .spawn(|| {
                let rt = Runtime::current();
                hooks::suspend_for(&rt, WaitOn::Channel, None)
            })
            .unwrap();
        ids.push(chan.id());

        // A reader whose peer never sends, and a writer whose peer never reads.
        let (mut rconn, rpeer) = common::pair();
        let reader_peer = rpeer.local_addr().unwrap();
        let reader = named("reader")
            .spawn(move || rconn.receive_line().map(drop))
            .unwrap();
        ids.push(reader.id());
        let (mut wconn, wpeer) = common::pair();
        let writer_peer = wpeer.local_addr().unwrap();
        let writer = named("writer")
            .spawn(move || wconn.write_all(&vec![7u8; 32 << 20]))
            .unwrap();
        ids.push(writer.id());

        settle(&rt, &ids);
        let dump = rt.dump();
        eprint!("{dump}"); // shown with --nocapture (docs/diagnostics.md)
        assert!(
            dump.starts_with("copas: thread '") && dump.contains("stack pool:"),
            "{dump}"
        );
        let expect = |name: &str, words: &str| {
            let line = line_of(&dump, name);
            assert!(
                line.contains(&format!("waits on {words}")),
                "{name}: {line}\n{dump}"
            );
            assert!(line.contains(" KiB of 128 KiB used"), "{line}");
            line.to_owned()
        };
        expect("sleeper", "sleep until +");
        expect("holder", "park");
        expect("locker", "mutex for ");
        expect("acquirer", "semaphore for ");
        expect("popper", "queue for ");
        expect("joiner", &format!("join {joined_id}"));
        expect("exiter", "exit");
        expect("unblocker", "unblock");
        expect("receiver", "channel");
        expect("reader", &format!("read on {reader_peer}"));
        expect("writer", &format!("write on {writer_peer}"));
        let sleep_line = line_of(&dump, "sleeper");
        let left: f64 = sleep_line
            .split("sleep until +")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(left > 0.0 && left <= 30.0, "{sleep_line}");
        // Every live task has a line, sorted by id.
        assert_eq!(dump.lines().count(), 1 + rt.stats().tasks, "{dump}");
        drop((rpeer, wpeer, sleeper, locker, acquirer, popper, joiner));
        drop((exiter, unblocker, chan, reader, writer));
        copas::cancel_all();
    });
}

#[test]
fn a_listener_waits_on_accept_and_a_runnable_task_says_so() {
    common::guard(|| {
        let rt = Runtime::current();
        let server = copas::ServerBuilder::new()
            .name("srv")
            .serve("127.0.0.1:0", |_conn| Ok(()))
            .unwrap();
        let spinner = Builder::new()
            .name("spinner".into())
            .spawn(|| loop {
                if copas::yield_now().is_err() {
                    break;
                }
            })
            .unwrap();
        for _ in 0..5 {
            rt.step(Some(Duration::from_millis(5))).unwrap();
        }
        let dump = rt.dump();
        let line = line_of(&dump, "srv:accept");
        assert!(
            line.contains(&format!("waits on accept on {}", server.local_addr())),
            "{dump}"
        );
        assert!(line_of(&dump, "spinner").contains(" runnable;"), "{dump}");
        server.stop();
        spinner.cancel();
    });
}

#[test]
fn a_deadlock_report_uses_the_dump_words() {
    common::guard(|| {
        let rt = Runtime::current();
        let reports = Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = reports.clone();
        rt.set_error_handler(move |p| seen.borrow_mut().push(p.to_string()));
        let m1 = Rc::new(Mutex::new(()));
        let m2 = Rc::new(Mutex::new(()));
        let cross = |name: &str, first: Rc<Mutex<()>>, second: Rc<Mutex<()>>| {
            Builder::new()
                .name(name.into())
                .spawn(move || {
                    let _g = first.lock().unwrap();
                    copas::yield_now().unwrap();
                    let _ = second.lock();
                })
                .unwrap()
        };
        let _a = cross("a", m1.clone(), m2.clone());
        let _b = cross("b", m2.clone(), m1.clone());
        let err = rt.run().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Deadlock);
        let reports = reports.borrow();
        eprintln!("{reports:#?}\n{err}");
        assert!(
            reports
                .iter()
                .any(|r| r.starts_with("task 'a' (#") && r.contains("waits on mutex for ")),
            "{reports:?} / {err}"
        );
        drop((m1, m2));
    });
}

#[test]
fn handle_dump_answers_from_another_thread_and_times_out_on_a_blocked_loop() {
    common::guard(|| {
        let rt = Runtime::current();
        let handle = rt.handle();
        let _p = Builder::new()
            .name("parked-one".into())
            .spawn(copas::park)
            .unwrap();
        settle(&rt, &[_p.id()]);
        let (tx, rx) = mpsc::channel();
        let h2 = handle.clone();
        std::thread::spawn(move || tx.send(h2.dump()).unwrap());
        let start = Instant::now();
        let text = loop {
            if let Ok(r) = rx.try_recv() {
                break r.unwrap();
            }
            assert!(start.elapsed() < Duration::from_secs(20));
            rt.step(Some(Duration::from_millis(20))).unwrap();
        };
        assert!(
            line_of(&text, "parked-one").contains("waits on park"),
            "{text}"
        );

        // A task blocks the loop: the request times out and names it.
        rt.set_block_warning(Some(Duration::from_millis(100)));
        let blocker = Builder::new()
            .name("blocker".into())
            .spawn(|| std::thread::sleep(Duration::from_millis(1200)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            tx.send(handle.dump_timeout(Duration::from_millis(300)))
                .unwrap()
        });
        rt.step(Some(Duration::ZERO)).unwrap();
        let err = rx.recv().unwrap().unwrap_err();
        eprintln!("{err}");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "task #{} has been running for",
                blocker.id().as_u64()
            )),
            "{err}"
        );
    });
}

#[test]
fn handle_dump_of_an_ended_runtime_is_not_connected() {
    let handle = std::thread::spawn(|| Runtime::current().handle())
        .join()
        .unwrap();
    let err = handle.dump().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
}

#[inline(never)]
fn recurse(depth: usize) -> u64 {
    let buf = std::hint::black_box([depth as u8; 1024]);
    if depth == 0 {
        return buf[0] as u64;
    }
    recurse(depth - 1) + std::hint::black_box(buf[depth % 1024]) as u64
}

#[test]
fn the_high_water_mark_grows_after_deep_recursion() {
    common::guard(|| {
        let rt = Runtime::current();
        let shallow = Builder::new()
            .name("shallow".into())
            .spawn(copas::park)
            .unwrap();
        let deep = Builder::new()
            .name("deep".into())
            .spawn(|| {
                std::hint::black_box(recurse(40));
                copas::park()
            })
            .unwrap();
        settle(&rt, &[shallow.id(), deep.id()]);
        let used = |name: &str| -> f64 {
            let dump = rt.dump();
            let line = line_of(&dump, name).to_owned();
            line.split("; stack ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{line}"))
        };
        let (s, d) = (used("shallow"), used("deep"));
        assert!(s < 32.0, "shallow used {s} KiB");
        assert!(d >= 40.0, "deep used {d} KiB");
        assert!(rt.stats().stack_high_water >= 40 * 1024, "{:?}", rt.stats());
        shallow.cancel();
        deep.cancel();
    });
}

#[test]
fn sigusr1_makes_the_echo_example_print_a_dump() {
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    let echo = examples.join("echo");
    assert!(
        echo.exists(),
        "{} is missing: cargo test builds the examples",
        echo.display()
    );
    let mut child = Command::new(&echo)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first.trim().rsplit(' ').next().unwrap().to_owned();
    // One client connected, so the dump has a handler waiting to read from it.
    let mut client = std::net::TcpStream::connect(&addr).unwrap();
    client.write_all(b"hi\n").unwrap();
    let mut echoed = [0u8; 3];
    client.read_exact(&mut echoed).unwrap();
    let client_addr = client.local_addr().unwrap();
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    let mut sent = false;
    while start.elapsed() < Duration::from_secs(30) {
        if !sent {
            assert_eq!(kill(pid, libc::SIGUSR1), 0);
            sent = true;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let done = l.contains("'echo'");
                lines.push(l);
                if done {
                    break;
                }
            }
            Err(_) => sent = false,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("copas: thread 'main'"), "{text}");
    assert!(
        text.contains("'echo:accept'") && text.contains("waits on accept on"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "'echo' (serving {client_addr}) waits on read on {client_addr}"
        )),
        "{text}"
    );
}

#[allow(unsafe_code)]
fn kill(pid: libc::pid_t, sig: libc::c_int) -> libc::c_int {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    unsafe { libc::kill(pid, sig) }
}

#[test]
fn descriptors_that_are_not_connected_sockets_are_named_too() {
    common::guard(|| {
        use std::os::fd::AsRawFd;
        let rt = Runtime::current();
        let (reader, _writer) = std::io::pipe().unwrap();
        let raw = reader.as_raw_fd();
        let fd = copas::Fd::new(reader).unwrap();
        let piper = Builder::new()
            .name("piper".into())
            .spawn(move || fd.readable(None))
            .unwrap();
        let udp = copas::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = udp.local_addr().unwrap();
        let datagrams = Builder::new()
            .name("datagrams".into())
            .spawn(move || {
                let mut buf = [0u8; 16];
                udp.recv_from(&mut buf).map(drop)
            })
            .unwrap();
        settle(&rt, &[piper.id(), datagrams.id()]);
        let dump = rt.dump();
        assert!(
            line_of(&dump, "piper").contains(&format!("waits on read on fd {raw} for ")),
            "{dump}"
        );
        assert!(
            line_of(&dump, "datagrams").contains(&format!("waits on read on {local} (no peer)")),
            "{dump}"
        );
        piper.cancel();
        datagrams.cancel();
    });
}
