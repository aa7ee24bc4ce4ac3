//! Scale: thousands of connections held open at once by one server, and a server that
//! runs out of descriptors while accepting.
//!
//! The process may hold 20,000 descriptors: 5,000 connections take 10,000 (both ends
//! live in this process). The descriptor shortage is made in a child process, which
//! lowers its own limit, so that nothing else in this binary runs short.
#![allow(unsafe_code)] // `setrlimit` and `kill` in the child-process test.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use copas::{ServerBuilder, TcpStream};

use common::{echo_lines, exchange, guard, serve_during, HANG_GUARD};

/// Connections held open at once.
const CONNECTIONS: usize = 5_000;
/// Clients that connect together; the next wave starts when this one is served, so the
/// listener's backlog never overflows (an overflow costs a one-second SYN retry).
const WAVE: usize = 250;

/// Lets every client go when dropped, so that a failing test ends instead of hanging
/// with connections held open.
struct Release {
    go: Rc<Cell<bool>>,
    clients: Vec<copas::Task>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.go.set(true);
        for c in &self.clients {
            c.unpark();
        }
    }
}

/// Descriptors open in this process.
fn open_fds() -> usize {
    // The directory being read holds one descriptor itself.
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

#[test]
fn five_thousand_connections_held_open_at_once_then_closed() {
    guard(|| {
        let listener = common::listener_with_backlog(1024);
        let server = ServerBuilder::new().serve(listener, echo_lines).unwrap();
        let addr = server.local_addr();
        let srv = server.clone();
        let (held, fds) = serve_during(&server, move || -> (usize, usize) {
            let me = copas::current();
            let ready = Rc::new(Cell::new(0usize));
            let mut release = Release {
                go: Rc::new(Cell::new(false)),
                clients: Vec::with_capacity(CONNECTIONS),
            };
            let mut handles = Vec::with_capacity(CONNECTIONS);
            for wave in 0..CONNECTIONS / WAVE {
                for i in 0..WAVE {
                    let n = wave * WAVE + i;
                    let (me, ready, go) = (me.clone(), ready.clone(), release.go.clone());
                    let h = copas::spawn(move || -> io::Result<()> {
                        let served = (|| -> io::Result<TcpStream> {
                            let mut s = TcpStream::connect(addr)?;
                            let line = format!("client {n}");
                            assert_eq!(exchange(&mut s, line.as_bytes())?, line.as_bytes());
                            Ok(s)
                        })();
                        ready.set(ready.get() + 1);
                        me.unpark();
                        let s = served?;
                        while !go.get() {
                            copas::park()?;
                        }
                        s.close()
                    });
                    release.clients.push(h.task().clone());
                    handles.push(h);
                }
                while ready.get() < (wave + 1) * WAVE {
                    copas::park_timeout(HANG_GUARD).expect("a wave of clients is served");
                }
            }
            // Every client has had its answer and holds its connection: all are open now.
            let held = (srv.connections(), open_fds());
            drop(release);
            for (n, h) in handles.into_iter().enumerate() {
                match h.join() {
                    Ok(r) => r.unwrap_or_else(|e| panic!("client {n}: {e}")),
                    Err(e) => e.into_panic(),
                }
            }
            held
        });
        assert_eq!(held, CONNECTIONS, "connections open at once");
        assert!(
            fds >= 2 * CONNECTIONS,
            "only {fds} descriptors open at the peak"
        );
        assert_eq!(server.accepted(), CONNECTIONS as u64);
        assert_eq!(server.connections(), 0);
    });
}

/// Tells the test binary, run again as a child, to run [`emfile_child`].
const EMFILE_CHILD: &str = "COPAS_TEST_EMFILE_CHILD";
/// The child's descriptor limit.
const CHILD_FD_LIMIT: usize = 64;

#[test]
fn accept_out_of_descriptors_is_reported_once_backs_off_and_recovers() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let child = Command::new(exe)
        .args(["emfile_child", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(EMFILE_CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test binary as a child");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // The child has a hang guard of its own; this one is only for a child that wedges.
    let out = match rx.recv_timeout(HANG_GUARD + Duration::from_secs(30)) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            let pid = libc::pid_t::try_from(pid).unwrap();
            // SAFETY: kill has no memory preconditions; `pid` is our own child, which has
            // not been reaped (its waiter is still waiting), so the id is still its own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child process hangs");
        }
    };
    waiter.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("emfile child: recovered"),
        "the child failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Lowers this process's soft limit on open descriptors.
fn set_fd_limit(limit: usize) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    assert_eq!(r, 0, "getrlimit: {}", io::Error::last_os_error());
    rl.rlim_cur = limit as libc::rlim_t;
    // SAFETY: `rl` is a valid rlimit for the duration of the call.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    assert_eq!(r, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// Reads what is there without waiting: `None` if nothing is.
fn try_read(s: &mut StdStream) -> Option<String> {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("client read: {e}"),
    }
}

/// What the server's error hook was told: the peer and the OS error code.
type Reports = Rc<RefCell<Vec<(Option<SocketAddr>, Option<i32>)>>>;

/// Runs only as the child of
/// [`accept_out_of_descriptors_is_reported_once_backs_off_and_recovers`], with a limit of
/// [`CHILD_FD_LIMIT`] descriptors: clients take about two thirds of what is free, so the
/// server runs out after accepting about half of them.
#[test]
#[ignore = "runs in a child process of accept_out_of_descriptors_is_reported_once_backs_off_and_recovers"]
fn emfile_child() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        return;
    }
    set_fd_limit(CHILD_FD_LIMIT);
    guard(|| {
        let rt = copas::Runtime::current();
        let step = || rt.step(Some(Duration::from_millis(50))).expect("step");
        let reports = Reports::default();
        let r = reports.clone();
        let server = ServerBuilder::new()
            .name("tight")
            .on_error(move |_, peer, e| r.borrow_mut().push((peer, e.raw_os_error())))
            .serve("127.0.0.1:0", echo_lines)
            .unwrap();
        let addr = server.local_addr();
        let free = CHILD_FD_LIMIT - open_fds();
        let count = free * 2 / 3;
        // Blocking connects: the kernel completes them in the backlog, unaccepted.
        let mut clients: Vec<StdStream> = (0..count)
            .map(|i| {
                let mut s = StdStream::connect(addr).expect("connect");
                writeln!(s, "{i}").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();

        // The server accepts until the descriptors run out, and says so.
        while reports.borrow().is_empty() {
            step();
        }
        assert_eq!(reports.borrow()[0], (None, Some(libc::EMFILE)));
        let served = server.connections();
        assert!(
            served > 0 && served < count,
            "{served} of {count} clients served before running out"
        );

        // Out of descriptors, the accept task must back off instead of spinning.
        let before = rt.stats().steps;
        let window = Instant::now();
        while window.elapsed() < Duration::from_millis(500) {
            step();
        }
        let spent = rt.stats().steps - before;
        assert!(
            spent < 10_000,
            "{spent} loop steps in 500 ms: the accept loop spins"
        );
        assert_eq!(reports.borrow().len(), 1, "reported more than once");
        assert_eq!(server.connections(), served);

        // The served clients have their echo; they leave, and the descriptors they free
        // let the server take the rest, which are served in turn.
        let mut waiting = Vec::new();
        for (i, mut c) in clients.drain(..).enumerate() {
            match try_read(&mut c) {
                Some(echo) => assert_eq!(echo, format!("{i}\n")),
                None => waiting.push((i, c)),
            }
        }
        assert_eq!(waiting.len(), count - served);
        while !waiting.is_empty() {
            step();
            waiting.retain_mut(|(i, c)| match try_read(c) {
                Some(echo) => {
                    assert_eq!(echo, format!("{i}\n"));
                    false
                }
                None => true,
            });
        }
        assert_eq!(server.accepted(), count as u64);

        // And a new client is served.
        let mut fresh = StdStream::connect(addr).expect("connect after recovery");
        fresh.write_all(b"fresh\n").unwrap();
        fresh.set_nonblocking(true).unwrap();
        let echo = loop {
            step();
            if let Some(echo) = try_read(&mut fresh) {
                break echo;
            }
        };
        assert_eq!(echo, "fresh\n");
        assert_eq!(reports.borrow().len(), 1, "errors after recovering");
        drop(fresh);
        server.stop();
        copas::run().unwrap();
        println!(
            "emfile child: recovered; {served} of {count} clients served before EMFILE, \
             {spent} loop steps in the 500 ms back-off window"
        );
    });
}
