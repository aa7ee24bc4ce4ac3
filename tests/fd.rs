//! `Fd` and `Registration` over real pipes, socketpairs and eventfds: reads suspend the
//! task while others run, EOF, timeouts, closing a registration wakes its waiters with an
//! error, cancellation, and register/close cycles with descriptor reuse.
#![allow(unsafe_code)] // the eventfd test makes its descriptor with libc

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::guard;
use copas::{Fd, Interest, Registration};

/// A deadline far enough away that it only stops a hang.
fn far() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(20))
}

#[test]
fn pipe_read_suspends_while_another_task_runs() {
    guard(|| {
        let (r, w) = io::pipe().unwrap();
        let (mut r, mut w) = (Fd::new(r).unwrap(), Fd::new(w).unwrap());
        let log = Rc::new(RefCell::new(Vec::<String>::new()));
        let l = log.clone();
        let reader = copas::spawn(move || {
            l.borrow_mut().push("reader waits".into());
            let mut buf = [0u8; 16];
            let n = r.read(&mut buf)?;
            l.borrow_mut().push(format!("read {:?}", &buf[..n]));
            io::Result::Ok(())
        });
        let l = log.clone();
        copas::spawn(move || {
            for _ in 0..3 {
                l.borrow_mut().push("tick".into());
                copas::yield_now().unwrap();
            }
            w.write_all(b"hi")
        });
        copas::run().unwrap();
        reader.join().unwrap().unwrap();
        assert_eq!(
            *log.borrow(),
            ["reader waits", "tick", "tick", "tick", "read [104, 105]"]
        );
    });
}

#[test]
fn pipe_carries_8_mib_exactly_and_ends_with_eof() {
    guard(|| {
        let (r, w) = io::pipe().unwrap();
        let (mut r, mut w) = (Fd::new(r).unwrap(), Fd::new(w).unwrap());
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
        let expect = data.clone();
        let reader = copas::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got)?;
            // After EOF, reads keep returning 0.
            assert_eq!(r.read(&mut [0; 8])?, 0);
            io::Result::Ok(got)
        });
        copas::spawn(move || {
            w.write_all(&data)?;
            drop(w); // EOF for the reader
            io::Result::Ok(())
        });
        copas::run().unwrap();
        let got = reader.join().unwrap().unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "the bytes differ");
    });
}

#[test]
fn shared_reference_reads_and_writes_from_two_tasks() {
    guard(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let a = Rc::new(Fd::new(a).unwrap());
        let mut b = Fd::new(b).unwrap();
        let reader = {
            let a = a.clone();
            copas::spawn(move || {
                let mut buf = [0u8; 5];
                (&*a).read_exact(&mut buf)?;
                io::Result::Ok(buf)
            })
        };
        let writer = {
            let a = a.clone();
            copas::spawn(move || (&*a).write_all(b"abc"))
        };
        let echo = copas::spawn(move || {
            let mut buf = [0u8; 3];
            b.read_exact(&mut buf)?;
            b.write_all(b"hello")?;
            io::Result::Ok(buf)
        });
        copas::run().unwrap();
        assert_eq!(&reader.join().unwrap().unwrap(), b"hello");
        writer.join().unwrap().unwrap();
        assert_eq!(&echo.join().unwrap().unwrap(), b"abc");
    });
}

#[test]
fn eventfd_read_suspends_until_a_write() {
    guard(|| {
        // SAFETY: eventfd returns a fresh descriptor or -1, checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        let ev = Rc::new(Fd::new(file).unwrap());
        let order = Rc::new(RefCell::new(Vec::new()));
        let (e, o) = (ev.clone(), order.clone());
        let reader = copas::spawn(move || {
            let mut buf = [0u8; 8];
            (&*e).read_exact(&mut buf)?;
            o.borrow_mut().push("read");
            io::Result::Ok(u64::from_ne_bytes(buf))
        });
        let (e, o) = (ev.clone(), order.clone());
        copas::spawn(move || {
            o.borrow_mut().push("write");
            (&*e).write_all(&5u64.to_ne_bytes())
        });
        copas::run().unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), 5);
        assert_eq!(*order.borrow(), ["write", "read"]);
    });
}

#[test]
fn read_timeout_and_readable_deadline_time_out() {
    guard(|| {
        let (r, w) = io::pipe().unwrap();
        let mut r = Fd::new(r).unwrap();
        assert_eq!(
            r.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        r.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        assert_eq!(r.read_timeout(), Some(Duration::from_millis(30)));
        let ticks = Rc::new(Cell::new(0u32));
        let t = ticks.clone();
        let h = copas::spawn(move || {
            let err = r.read(&mut [0; 4]).unwrap_err();
            let deadline = Some(Instant::now() + Duration::from_millis(20));
            let err2 = r.readable(deadline).unwrap_err();
            drop(w);
            (err.kind(), err2.kind())
        });
        let ticker = copas::spawn(move || {
            while !h.is_finished() {
                t.set(t.get() + 1);
                copas::sleep(Duration::from_millis(5)).unwrap();
            }
            h.join().unwrap()
        });
        copas::run().unwrap();
        let kinds = ticker.join().unwrap();
        assert_eq!(kinds, (io::ErrorKind::TimedOut, io::ErrorKind::TimedOut));
        assert!(ticks.get() > 0, "the other task ran while the read waited");
    });
}

#[test]
fn write_to_a_full_pipe_times_out_after_partial_progress() {
    guard(|| {
        let (r, w) = io::pipe().unwrap();
        let r = Fd::new(r).unwrap();
        let mut w = Fd::new(w).unwrap();
        w.set_write_timeout(Some(Duration::from_millis(30)))
            .unwrap();
        let h = copas::spawn(move || {
            let chunk = vec![1u8; 4096];
            let mut written = 0usize;
            let err = loop {
                match w.write(&chunk) {
                    Ok(n) => {
                        assert!(n > 0 && n <= chunk.len());
                        written += n;
                    }
                    Err(e) => break e,
                }
            };
            // Exactly what `write` reported is in the pipe.
            let mut r = r;
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < written {
                got += r.read(&mut buf)?;
            }
            assert_eq!(got, written);
            io::Result::Ok((err.kind(), written))
        });
        copas::run().unwrap();
        let (kind, written) = h.join().unwrap().unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(written > 0);
    });
}

#[test]
fn closing_a_registration_wakes_every_waiter_with_an_error() {
    guard(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reg = Rc::new(Registration::new(a.as_raw_fd()).unwrap());
        let mut waiters = Vec::new();
        for interest in [Interest::Read, Interest::Read, Interest::Read] {
            let reg = reg.clone();
            waiters.push(copas::spawn(move || reg.wait(interest, far())));
        }
        let r = reg.clone();
        let closer = copas::spawn(move || {
            copas::yield_now().unwrap();
            r.close();
            assert!(r.is_closed());
            r.close(); // twice is harmless
            r.wait(Interest::Write, far())
        });
        copas::run().unwrap();
        for w in waiters {
            let err = w.join().unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
        }
        let err = closer.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        drop(reg);
        drop(a);
    });
}

#[test]
fn registration_wait_outside_a_task_drives_the_loop() {
    guard(|| {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reg = Registration::new(a.as_raw_fd()).unwrap();
        copas::spawn(move || {
            copas::sleep(Duration::from_millis(5))?;
            b.write_all(b"x")?;
            io::Result::Ok(b)
        });
        reg.wait(Interest::Read, far()).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!((&a).read(&mut buf).unwrap(), 1);
        // Writable at once: the wait does not suspend.
        reg.wait(Interest::Write, far()).unwrap();
        drop(reg);
    });
}

#[test]
fn cancelling_a_waiting_task_removes_its_wait() {
    guard(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reg = Rc::new(Registration::new(a.as_raw_fd()).unwrap());
        let r = reg.clone();
        let waiter = copas::spawn(move || r.wait(Interest::Read, far()));
        let w2 = Rc::new(RefCell::new(Some(waiter)));
        let w = w2.clone();
        copas::spawn(move || {
            copas::yield_now().unwrap();
            assert!(w.borrow().as_ref().unwrap().cancel());
        });
        // run() returns: the cancelled wait no longer counts as a waiter.
        copas::run().unwrap();
        let waiter = w2.borrow_mut().take().unwrap();
        match waiter.join() {
            Err(e) => assert!(e.is_cancelled()),
            Ok(r) => assert!(copas::is_cancelled(&r.unwrap_err())),
        }
        // The registration still works after a cancelled wait.
        reg.wait(Interest::Write, far()).unwrap();
    });
}

#[test]
fn bad_descriptors_get_clear_errors() {
    guard(|| {
        let err = Registration::new(-1).unwrap_err();
        assert!(err.to_string().contains("descriptor -1"), "{err}");
        // epoll cannot poll a regular file.
        let file = File::open("Cargo.toml").unwrap();
        let err = Fd::new(file).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        // The same descriptor twice.
        let (a, _b) = UnixStream::pair().unwrap();
        let reg = Registration::new(a.as_raw_fd()).unwrap();
        let err = Registration::new(a.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        drop(reg);
        // Once closed, the number can be registered again.
        let reg = Registration::new(a.as_raw_fd()).unwrap();
        drop(reg);
    });
}

#[test]
fn into_inner_deregisters_and_leaves_the_descriptor_usable() {
    guard(|| {
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = Fd::new(a).unwrap();
        let before = copas::Reactor::current().unwrap().sources();
        let a = fd.into_inner();
        assert_eq!(copas::Reactor::current().unwrap().sources(), before - 1);
        // Still non-blocking: nothing is restored.
        assert_eq!(
            (&a).read(&mut [0; 1]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        b.write_all(b"z").unwrap();
        let mut fd = Fd::new(a).unwrap();
        let mut buf = [0u8; 1];
        fd.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"z");
    });
}

/// 10,000 register/close cycles on socketpairs whose numbers the kernel reuses. Every
/// cycle's waiter is woken by its own data; a waiter on a long-lived registration is never
/// woken; and every tenth cycle closes its descriptor before its registration (breaking
/// the owner's rule), so the next cycle registers a reused number while the stale
/// registration still exists: closing the stale one must not disturb the new one.
#[test]
fn ten_thousand_register_close_cycles_never_wake_the_wrong_waiter() {
    guard(|| {
        let (idle, _idle_peer) = UnixStream::pair().unwrap();
        idle.set_nonblocking(true).unwrap();
        let idle_reg = Rc::new(Registration::new(idle.as_raw_fd()).unwrap());
        let idle_wakes = Rc::new(Cell::new(0u32));
        let (r, wakes) = (idle_reg.clone(), idle_wakes.clone());
        let idle_task = copas::spawn(move || loop {
            match r.wait(Interest::Read, far()) {
                Ok(()) => wakes.set(wakes.get() + 1),
                Err(e) => return e.kind(),
            }
        });
        let driver = copas::spawn(move || {
            let mut numbers = HashSet::new();
            let mut stale: Option<Registration> = None;
            for i in 0..10_000u32 {
                let (a, mut b) = UnixStream::pair().unwrap();
                a.set_nonblocking(true).unwrap();
                numbers.insert(a.as_raw_fd());
                let reg = Rc::new(Registration::new(a.as_raw_fd()).unwrap());
                // The previous cycle's stale registration goes now, after its number may
                // have been reused by `a`.
                drop(stale.take());
                let r = reg.clone();
                let a = Rc::new(a);
                let a2 = a.clone();
                let waiter = copas::spawn(move || {
                    let mut buf = [0u8; 4];
                    loop {
                        match (&*a2).read(&mut buf) {
                            Ok(n) => return Ok(u32::from_ne_bytes(buf[..n].try_into().unwrap())),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                r.wait(Interest::Read, far())?
                            }
                            Err(e) => return Err(e),
                        }
                    }
                });
                copas::yield_now().unwrap();
                b.write_all(&i.to_ne_bytes()).unwrap();
                assert_eq!(waiter.join().unwrap().unwrap(), i);
                if i % 10 == 9 {
                    // Break the rule: close the descriptor first.
                    drop(a);
                    stale = Rc::into_inner(reg);
                    assert!(stale.is_some());
                } else {
                    drop(reg);
                    drop(a);
                }
            }
            drop(stale);
            numbers.len()
        });
        let closer = {
            let r = idle_reg.clone();
            copas::spawn(move || {
                let distinct = driver.join().unwrap();
                r.close();
                distinct
            })
        };
        copas::run().unwrap();
        let distinct = closer.join().unwrap();
        assert!(distinct < 100, "numbers were reused ({distinct} distinct)");
        assert_eq!(idle_task.join().unwrap(), io::ErrorKind::NotConnected);
        assert_eq!(idle_wakes.get(), 0, "the idle waiter was woken");
        // Nothing lingers: every registration, the closed idle one included, is gone.
        assert_eq!(copas::Reactor::current().unwrap().sources(), 0);
        drop(idle_reg);
    });
}
