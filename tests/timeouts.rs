//! Deadlines: read and write timeouts on sockets, park_timeout, and timers. Every check is
//! "not before the deadline"; nothing here bounds how late something may be.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use copas::{TcpStream, Timer};

use common::{guard, pair};

const READ_TIMEOUT: Duration = Duration::from_millis(60);

/// Runs `op` on a fresh stream whose peer sends nothing, with [`READ_TIMEOUT`] set, and
/// checks that it fails with `TimedOut`, not before the deadline.
fn times_out(name: &'static str, op: fn(&mut TcpStream) -> io::Result<()>) {
    let (mut conn, peer) = pair();
    conn.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert_eq!(conn.read_timeout(), Some(READ_TIMEOUT));
    let _ = copas::spawn(move || {
        let _peer = peer;
        let start = Instant::now();
        let e = op(&mut conn).unwrap_err();
        let waited = start.elapsed();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{name}: {e}");
        assert!(waited >= READ_TIMEOUT, "{name} timed out after {waited:?}");
    });
}

#[test]
fn read_timeout_fires_no_earlier_than_its_deadline_in_every_form() {
    guard(|| {
        times_out("receive_line", |c| c.receive_line().map(drop));
        times_out("receive_exact", |c| c.receive_exact(1).map(drop));
        times_out("receive_some", |c| c.receive_some(10).map(drop));
        times_out("receive_to_end", |c| c.receive_to_end().map(drop));
        times_out("Read::read", |c| c.read(&mut [0u8; 8]).map(drop));
        times_out("BufRead::read_line", |c| {
            c.read_line(&mut String::new()).map(drop)
        });
        copas::run().unwrap();
    });
}

#[test]
fn read_timeout_outside_a_task() {
    guard(|| {
        let (mut conn, _peer) = pair();
        conn.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let start = Instant::now();
        let e = conn.receive_line().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= READ_TIMEOUT);
    });
}

#[test]
fn data_that_arrived_before_a_read_timeout_is_kept() {
    guard(|| {
        let (mut conn, peer) = pair();
        conn.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let h = copas::spawn(move || -> io::Result<()> {
            let mut peer = peer;
            // A line: half of it before the timeout, the rest after.
            peer.write_all(b"par").unwrap();
            let e = conn.receive_line().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(conn.buffered(), b"par");
            peer.write_all(b"tial\n").unwrap();
            assert_eq!(conn.receive_line()?.as_deref(), Some(&b"partial"[..]));

            // An exact read.
            peer.write_all(b"123").unwrap();
            let e = conn.receive_exact(6).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(conn.buffered(), b"123");
            peer.write_all(b"456789").unwrap();
            assert_eq!(&conn.receive_exact(6)?[..], b"123456");
            assert_eq!(&conn.receive_exact(3)?[..], b"789");

            // Everything to the end.
            peer.write_all(b"some").unwrap();
            let e = conn.receive_to_end().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(conn.buffered(), b"some");
            peer.write_all(b" more").unwrap();
            drop(peer);
            assert_eq!(&conn.receive_to_end()?[..], b"some more");
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn read_timeout_restarts_with_each_call() {
    guard(|| {
        let (mut conn, peer) = pair();
        conn.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let h = copas::spawn(move || -> io::Result<()> {
            let mut peer = peer;
            for i in 0..3 {
                let start = Instant::now();
                let e = conn.receive_line().unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::TimedOut, "call {i}");
                assert!(start.elapsed() >= READ_TIMEOUT, "call {i}");
            }
            peer.write_all(b"finally\n").unwrap();
            assert_eq!(conn.receive_line()?.as_deref(), Some(&b"finally"[..]));
            conn.set_read_timeout(None)?;
            assert_eq!(conn.read_timeout(), None);
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn zero_timeouts_are_invalid_input() {
    guard(|| {
        let (mut conn, _peer) = pair();
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(conn.set_read_timeout(Some(Duration::ZERO))),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(conn.set_write_timeout(Some(Duration::ZERO))),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(conn.read_timeout(), None);
        assert_eq!(conn.write_timeout(), None);
    });
}

#[test]
fn write_timeout_fires_no_earlier_than_its_deadline_when_the_peer_never_reads() {
    guard(|| {
        const WRITE_TIMEOUT: Duration = Duration::from_millis(100);
        const LIMIT: usize = 4096;
        let (mut conn, peer) = pair();
        conn.set_write_buffer_size(LIMIT);
        conn.set_write_timeout(Some(WRITE_TIMEOUT)).unwrap();
        assert_eq!(conn.write_timeout(), Some(WRITE_TIMEOUT));
        let h = copas::spawn(move || {
            let chunk = vec![b'w'; 1000];
            let mut max_pending = 0;
            loop {
                let steps = copas::Runtime::current().stats().steps;
                let start = Instant::now();
                match conn.send(&chunk) {
                    Ok(()) => max_pending = max_pending.max(conn.pending_output()),
                    Err(e) => {
                        let waited = start.elapsed();
                        let steps = copas::Runtime::current().stats().steps - steps;
                        drop(conn);
                        return (e.kind(), waited, steps, max_pending);
                    }
                }
            }
        });
        copas::run().unwrap();
        let (kind, waited, steps, max_pending) = h.join().unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(waited >= WRITE_TIMEOUT, "gave up after {waited:?}");
        assert!(max_pending <= LIMIT, "{max_pending} bytes buffered");
        // Suspended while it waited: a handful of loop steps, not one per poll.
        assert!(steps < 20, "the blocked send took {steps} loop steps");
        drop(peer);
    });
}

#[test]
fn park_timeout_and_sleep_are_never_early() {
    guard(|| {
        let h = copas::spawn(|| {
            let d = Duration::from_millis(25);
            let start = Instant::now();
            let e = copas::park_timeout(d).unwrap_err();
            let parked = start.elapsed();
            let start = Instant::now();
            copas::sleep(d).unwrap();
            let slept = start.elapsed();
            (e.kind(), parked, slept)
        });
        copas::run().unwrap();
        let (kind, parked, slept) = h.join().unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(parked >= Duration::from_millis(25), "{parked:?}");
        assert!(slept >= Duration::from_millis(25), "{slept:?}");
    });
}

#[test]
fn timer_after_fires_once_and_not_before_its_deadline() {
    guard(|| {
        let delay = Duration::from_millis(30);
        let fired = Rc::new(RefCell::new(Vec::new()));
        let f = fired.clone();
        let armed_at = Instant::now();
        let t = Timer::after(delay, move |_| f.borrow_mut().push(Instant::now()));
        assert!(t.is_armed());
        assert!(t.deadline().unwrap() >= armed_at + delay);
        copas::run().unwrap();
        let fired = fired.borrow();
        assert_eq!(fired.len(), 1);
        assert!(fired[0] >= armed_at + delay, "fired early");
        assert!(!t.is_armed());
        assert_eq!(t.deadline(), None);
    });
}

#[test]
fn cancelled_timer_never_fires() {
    guard(|| {
        let fired = Rc::new(Cell::new(0));
        let f = fired.clone();
        let t = Timer::after(Duration::from_millis(10), move |_| f.set(f.get() + 1));
        assert!(t.cancel(), "a firing was pending");
        assert!(!t.cancel(), "nothing pending any more");
        assert!(!t.is_armed());
        copas::run().unwrap();
        assert_eq!(fired.get(), 0);

        // Cancelled from a task whose sleep ends before the timer's deadline.
        let f = fired.clone();
        let t = Timer::after(Duration::from_millis(40), move |_| f.set(f.get() + 1));
        let _ = copas::spawn(move || {
            copas::sleep(Duration::from_millis(5)).unwrap();
            assert!(t.cancel());
        });
        copas::run().unwrap();
        assert_eq!(fired.get(), 0);
    });
}

#[test]
fn interval_fires_exactly_n_times_when_cancelled_from_its_own_callback() {
    guard(|| {
        const N: usize = 5;
        let period = Duration::from_millis(4);
        let start = Instant::now();
        let firings = Rc::new(RefCell::new(Vec::new()));
        let f = firings.clone();
        let t = Timer::interval(period, move |t| {
            f.borrow_mut().push(Instant::now());
            if f.borrow().len() == N {
                assert!(t.cancel());
            }
        });
        copas::run().unwrap();
        let firings = firings.borrow();
        assert_eq!(firings.len(), N);
        assert!(!t.is_armed());
        // Firing k is due k periods after the start, never earlier.
        for (k, at) in firings.iter().enumerate() {
            let due = start + period * (k as u32 + 1);
            assert!(*at >= due, "firing {k} came {:?} early", due - *at);
        }
    });
}

#[test]
fn timer_rearmed_from_its_callback() {
    guard(|| {
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        let start = Instant::now();
        let _t = Timer::after(Duration::from_millis(2), move |t| {
            c.set(c.get() + 1);
            if c.get() < 3 {
                t.arm(Duration::from_millis(2));
            }
        });
        copas::run().unwrap();
        assert_eq!(count.get(), 3);
        assert!(start.elapsed() >= Duration::from_millis(6));
    });
}

#[test]
fn timer_callback_may_block_and_panics_go_to_the_error_handler() {
    guard(|| {
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        copas::Runtime::current()
            .set_error_handler(move |p| r.borrow_mut().push(p.message().to_owned()));
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        let _t = Timer::interval(Duration::from_millis(3), move |t| {
            c.set(c.get() + 1);
            match c.get() {
                1 => panic!("first firing fails"),
                2 => copas::sleep(Duration::from_millis(1)).unwrap(),
                _ => {
                    t.cancel();
                }
            }
        });
        copas::run().unwrap();
        assert_eq!(count.get(), 3, "the interval kept running after the panic");
        assert_eq!(*reports.borrow(), vec!["first firing fails".to_owned()]);
    });
}

#[test]
#[should_panic(expected = "zero period")]
fn interval_with_a_zero_period_panics() {
    let _ = Timer::interval(Duration::ZERO, |_| {});
}

/// std's `Write::write` contract on a stream and on a write half: 32 MiB written with a
/// write timeout to a peer that does not read returns `Ok(n)` for the part the socket
/// took (0 < n < len), the next write fails with `TimedOut` having taken nothing, and the
/// peer then receives exactly those n bytes.
#[test]
fn write_of_32_mib_to_a_peer_that_does_not_read_is_a_partial_ok() {
    for split in [false, true] {
        guard(move || {
            const LEN: usize = 32 << 20;
            let (mut conn, mut peer) = pair();
            conn.set_write_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
            let expect = data.clone();
            let h = copas::spawn(move || {
                let mut w: Box<dyn Write> = if split {
                    Box::new(conn.split().1)
                } else {
                    Box::new(conn)
                };
                let n = w.write(&data)?;
                let again = w.write(&data[n..]).map_err(|e| e.kind());
                drop(w); // nothing is buffered: the socket closes cleanly
                io::Result::Ok((n, again))
            });
            copas::run().unwrap();
            let (n, again) = h.join().unwrap().unwrap();
            assert!(n > 0 && n < LEN, "write returned Ok({n}) for {LEN} bytes");
            assert_eq!(again, Err(io::ErrorKind::TimedOut));
            let mut got = Vec::new();
            peer.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
            peer.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), n, "the peer received {} of {n} bytes", got.len());
            assert!(got == expect[..n], "the bytes differ");
        });
    }
}

/// `write_all` over `write` may fail part-way: it reports `TimedOut` while some bytes
/// reached the peer, and `send`'s buffer stays within its limit meanwhile.
#[test]
fn write_all_fails_part_way_with_timed_out() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        conn.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let h = copas::spawn(move || {
            let e = conn.write_all(&vec![7u8; 32 << 20]).unwrap_err();
            assert!(conn.pending_output() <= copas::DEFAULT_WRITE_BUFFER);
            conn.set_write_timeout(None).unwrap();
            conn.close()?;
            io::Result::Ok(e.kind())
        });
        // The peer drains once the writer gave up.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            peer.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
            peer.read_to_end(&mut got).unwrap();
            got.len()
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap().unwrap(), io::ErrorKind::TimedOut);
        let got = reader.join().unwrap();
        assert!(got > 0 && got < 32 << 20, "the peer received {got} bytes");
    });
}
