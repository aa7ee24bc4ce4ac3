//! `std::net` inside tasks, with `copas_hook` installed: blocking calls suspend the task
//! and the other tasks run; outside tasks everything keeps its blocking semantics.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn install() {
    copas_hook::install().expect("hooks install on Linux/glibc");
}

/// A plain-thread upstream that answers each line only once `n` requests are in flight at
/// once (or once `guard` has passed since it started, so a broken test fails instead of
/// hanging). Returns its address
/// and the largest number of requests it saw in flight together.
fn gathering_upstream(n: usize, guard: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let max = Arc::new(AtomicUsize::new(0));
    let state = Arc::new((Mutex::new(0usize), Condvar::new()));
    let m = max.clone();
    let until = Instant::now() + guard;
    thread::spawn(move || {
        for conn in listener.incoming().take(n) {
            let mut conn = conn.unwrap();
            let (state, m) = (state.clone(), m.clone());
            thread::spawn(move || {
                let mut line = String::new();
                if BufReader::new(conn.try_clone().unwrap())
                    .read_line(&mut line)
                    .is_err()
                {
                    return;
                }
                let (lock, cv) = &*state;
                let mut in_flight = lock.lock().unwrap();
                *in_flight += 1;
                m.fetch_max(*in_flight, Ordering::SeqCst);
                cv.notify_all();
                while m.load(Ordering::SeqCst) < n && Instant::now() < until {
                    in_flight = cv
                        .wait_timeout(in_flight, until - Instant::now())
                        .unwrap()
                        .0;
                }
                drop(in_flight);
                let _ = conn.write_all(format!("re {}", line).as_bytes());
            });
        }
    });
    (addr, max)
}

/// Adds one to the counter when dropped.
struct Count(Rc<Cell<usize>>);

impl Drop for Count {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn two_hundred_std_clients_are_all_in_flight_at_once() {
    install();
    let (upstream, max) = gathering_upstream(200, Duration::from_secs(30));
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(0usize));
    let mut clients = Vec::new();
    for i in 0..200 {
        let done = done.clone();
        clients.push(copas::spawn(move || -> io::Result<String> {
            // Counted however the client ends, so the ticker stops even on a failure.
            let _done = Count(done);
            let mut s = TcpStream::connect(upstream)?;
            writeln!(s, "hello {i}")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        }));
    }
    let (t, d) = (ticks.clone(), done.clone());
    copas::spawn(move || {
        while d.get() < 200 {
            t.set(t.get() + 1);
            copas::sleep(Duration::from_millis(1)).unwrap();
        }
    });
    copas::run().unwrap();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap().unwrap(), format!("re hello {i}\n"));
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        200,
        "the 200 requests did not overlap"
    );
    assert!(
        ticks.get() > 0,
        "the ticker never ran while the clients waited"
    );
}

#[test]
fn so_rcvtimeo_gives_would_block_in_a_task_and_the_loop_runs_meanwhile() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_secs(2));
        drop(conn);
    });
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let reader = copas::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let start = Instant::now();
        let err = s.read(&mut [0; 16]).unwrap_err();
        (err.kind(), start.elapsed(), t.get())
    });
    let t = ticks.clone();
    copas::spawn(move || {
        for _ in 0..5 {
            t.set(t.get() + 1);
            copas::sleep(Duration::from_millis(1)).unwrap();
        }
    });
    copas::run().unwrap();
    let (kind, took, ticks_seen) = reader.join().unwrap();
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(
        took >= Duration::from_millis(50),
        "timed out early: {took:?}"
    );
    assert!(ticks_seen > 0, "the loop was blocked during the read");
}

#[test]
fn plain_threads_keep_blocking_semantics_and_timeouts() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut b = [0; 1];
        conn.read_exact(&mut b).unwrap();
        thread::sleep(Duration::from_millis(30));
        conn.write_all(b"late").unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"x").unwrap();
    // A blocking read waits for data that comes later...
    let mut buf = [0; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"late");
    // ...and a read timeout is the kernel's: WouldBlock, never before the deadline.
    s.set_read_timeout(Some(Duration::from_millis(40))).unwrap();
    let start = Instant::now();
    assert_eq!(
        s.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert!(start.elapsed() >= Duration::from_millis(40));
    server.join().unwrap();
}

#[test]
fn a_listener_used_in_a_task_then_handed_to_a_thread_still_blocks_there() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A task accepts on it (the hooks make it non-blocking internally)...
    let h = copas::spawn(move || {
        let client = copas::spawn(move || TcpStream::connect(addr).map(drop));
        let (conn, _) = listener.accept().unwrap();
        drop(conn);
        client.join().unwrap().unwrap();
        listener
    });
    copas::run().unwrap();
    let listener = h.join().unwrap();
    // ...yet the user still sees it blocking,
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(fl & libc::O_NONBLOCK, 0);
    // and a plain thread's accept waits for a client that connects later.
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let t = thread::spawn(move || {
        let r = listener.accept().map(drop);
        a.store(1, Ordering::SeqCst);
        r
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "accept did not block");
    let _c = TcpStream::connect(addr).unwrap();
    t.join().unwrap().unwrap();
    // set_nonblocking still works as the user expects.
}

#[test]
fn user_nonblocking_sockets_pass_through() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = copas::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nonblocking(true).unwrap();
        let r = (&s).read(&mut [0; 4]).map_err(|e| e.kind());
        s.set_nonblocking(false).unwrap();
        // Blocking again: now a read waits (and times out as asked).
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let r2 = (&s).read(&mut [0; 4]).map_err(|e| e.kind());
        (r, r2)
    });
    copas::run().unwrap();
    let (r, r2) = h.join().unwrap();
    assert_eq!(r, Err(io::ErrorKind::WouldBlock));
    assert_eq!(r2, Err(io::ErrorKind::WouldBlock));
    drop(listener);
}

#[test]
fn fds_are_reused_cleanly_over_10000_connections() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const N: u32 = 10_000;
    let server = copas::spawn(move || {
        for _ in 0..N {
            let (mut conn, _) = listener.accept().unwrap();
            copas::spawn(move || {
                let mut b = [0; 4];
                conn.read_exact(&mut b).unwrap();
                conn.write_all(&b).unwrap();
            });
        }
    });
    let client = copas::spawn(move || {
        let mut fds = std::collections::HashSet::new();
        for i in 0..N {
            let mut s = TcpStream::connect(addr).unwrap();
            fds.insert(s.as_raw_fd());
            s.write_all(&i.to_le_bytes()).unwrap();
            let mut b = [0; 4];
            s.read_exact(&mut b).unwrap();
            assert_eq!(u32::from_le_bytes(b), i);
        }
        fds.len()
    });
    copas::run().unwrap();
    server.join().unwrap();
    let distinct = client.join().unwrap();
    assert!(
        distinct < 100,
        "fd numbers were not reused ({distinct} distinct)"
    );
    // Nothing the hooks registered outlives its wait.
    assert_eq!(copas::Reactor::current().unwrap().sources(), 0);
}

#[test]
fn close_from_another_task_wakes_a_blocked_reader_with_an_error() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _peer = thread::spawn(move || {
        let c = listener.accept();
        thread::sleep(Duration::from_secs(2));
        drop(c);
    });
    let reader = copas::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        let fd = s.as_raw_fd();
        copas::spawn(move || {
            copas::sleep(Duration::from_millis(20)).unwrap();
            // SAFETY: `fd` is open; the reader forgets its stream below instead of
            // closing it again.
            unsafe { libc::close(fd) };
        });
        let r = (&s).read(&mut [0; 4]).map_err(|e| e.raw_os_error());
        std::mem::forget(s);
        r
    });
    copas::run().unwrap();
    assert_eq!(reader.join().unwrap(), Err(Some(libc::EBADF)));
}

#[test]
fn close_from_another_thread_wakes_a_blocked_reader_with_an_error() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _peer = thread::spawn(move || {
        let c = listener.accept();
        thread::sleep(Duration::from_secs(3));
        drop(c);
    });
    let reader = copas::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        let fd = s.as_raw_fd();
        let closer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            // SAFETY: `fd` is open; the reader forgets its stream instead of closing it.
            unsafe { libc::close(fd) }
        });
        let r = (&s).read(&mut [0; 4]).map_err(|e| e.raw_os_error());
        std::mem::forget(s);
        (r, closer)
    });
    copas::run().unwrap();
    let (r, closer) = reader.join().unwrap();
    assert_eq!(r, Err(Some(libc::EBADF)));
    assert_eq!(closer.join().unwrap(), 0);
}

#[test]
fn connect_refused_and_poll_report_as_blocking_code_expects() {
    install();
    // A port with nothing listening: bind, note it, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = copas::spawn(move || {
        let refused = TcpStream::connect(dead).map(drop).map_err(|e| e.kind());
        let timed = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(drop);
        (refused, timed.is_ok())
    });
    copas::run().unwrap();
    let (refused, timed_ok) = h.join().unwrap();
    assert_eq!(refused, Err(io::ErrorKind::ConnectionRefused));
    assert!(timed_ok);
}

#[test]
fn poll_on_several_fds_waits_on_the_reactor() {
    install();
    let (a, _a_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let (b, b_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let b_peer = Rc::new(b_peer);
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let o = order.clone();
    let poller = copas::spawn(move || {
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        o.borrow_mut().push("poll");
        // SAFETY: `fds` is two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 5000) };
        o.borrow_mut().push("polled");
        (n, fds[0].revents, fds[1].revents)
    });
    let (o, w) = (order.clone(), b_peer.clone());
    copas::spawn(move || {
        o.borrow_mut().push("writer");
        copas::sleep(Duration::from_millis(10)).unwrap();
        (&*w).write_all(b"x").unwrap();
    });
    copas::run().unwrap();
    let (n, ra, rb) = poller.join().unwrap();
    assert_eq!((n, ra, rb), (1, 0, libc::POLLIN));
    assert_eq!(*order.borrow(), ["poll", "writer", "polled"]);
}

#[test]
fn a_blocking_writev_sends_everything_and_readers_see_it_in_order() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const HALF: usize = 2 << 20;
    let a: Vec<u8> = (0..HALF).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..HALF).map(|i| (i % 239) as u8).collect();
    let expected: Vec<u8> = a.iter().chain(&b).copied().collect();
    let writer = copas::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // Far more than the socket buffers hold: a blocking writev returns only when all
        // of it is sent, so the task must wait for the reader several times.
        s.write_vectored(&[io::IoSlice::new(&a), io::IoSlice::new(&b)])
            .unwrap()
    });
    let reader = copas::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let (mut x, mut y) = (vec![0; 1000], vec![0; 7000]);
        loop {
            let n = (&conn)
                .read_vectored(&mut [io::IoSliceMut::new(&mut x), io::IoSliceMut::new(&mut y)])
                .unwrap();
            if n == 0 {
                break got;
            }
            let first = n.min(x.len());
            got.extend_from_slice(&x[..first]);
            got.extend_from_slice(&y[..n - first]);
            if got.len() == 2 * HALF {
                break got;
            }
        }
    });
    copas::run().unwrap();
    assert_eq!(writer.join().unwrap(), 2 * HALF);
    assert!(
        reader.join().unwrap() == expected,
        "bytes lost or out of order"
    );
}

#[test]
fn msg_waitall_fills_the_buffer_across_several_arrivals() {
    install();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let reader = copas::spawn(move || {
        let mut buf = [0u8; 6];
        // SAFETY: `buf` is valid for its length.
        let n = unsafe {
            libc::recv(
                a.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_WAITALL,
            )
        };
        (n, buf)
    });
    copas::spawn(move || {
        for part in [&b"ab"[..], b"cd", b"ef"] {
            (&b).write_all(part).unwrap();
            copas::sleep(Duration::from_millis(5)).unwrap();
        }
    });
    copas::run().unwrap();
    assert_eq!(reader.join().unwrap(), (6, *b"abcdef"));
}

#[test]
fn with_timeout_and_cancel_end_a_hooked_read() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _peer = thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(2).collect();
        thread::sleep(Duration::from_secs(3));
        drop(conns);
    });
    // A copas timeout scope around legacy code: the read fails with TimedOut.
    let scoped = copas::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        copas::with_timeout(Duration::from_millis(30), || s.read(&mut [0; 4])).map_err(|e| e.kind())
    });
    // A cancelled task: its blocked read fails with ECANCELED.
    let blocked = copas::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.read(&mut [0; 4]).map_err(|e| e.raw_os_error())
    });
    let canceller = copas::spawn(move || {
        copas::sleep(Duration::from_millis(30)).unwrap();
        blocked.cancel();
        blocked
    });
    copas::run().unwrap();
    assert_eq!(scoped.join().unwrap(), Err(io::ErrorKind::TimedOut));
    let blocked = canceller.join().unwrap();
    assert_eq!(blocked.join().unwrap(), Err(Some(libc::ECANCELED)));
}

#[test]
fn pipes_keep_their_real_blocking_calls_in_tasks() {
    install();
    // Documented choice (docs/hook.md): pipes are not made cooperative, so a task's read
    // of an empty pipe blocks the thread until the writer (a plain thread) writes.
    let (mut r, mut w) = io::pipe().unwrap();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let o = order.clone();
    copas::spawn(move || {
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            w.write_all(b"p").unwrap();
        });
        let mut b = [0; 1];
        r.read_exact(&mut b).unwrap();
        o.borrow_mut().push("pipe read");
        writer.join().unwrap();
    });
    let o = order.clone();
    copas::spawn(move || o.borrow_mut().push("other task"));
    copas::run().unwrap();
    assert_eq!(*order.borrow(), ["pipe read", "other task"]);
}
