//! TCP streams on loopback: many concurrent clients, every receive form and its edge
//! cases (segments, EOF, limits), large transfers, back-pressure from a peer that does not
//! read, OS errors passing through, and blocking-style std I/O on copas sockets. Clients
//! are copas tasks in the same runtime or std threads with blocking sockets.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream as StdStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use copas::TcpStream;

use common::{
    close_with_reset, closed_port, echo_lines, exchange, guard, pair, settle, std_exchange, Rng,
};

const CLIENTS: usize = 200;
const LINES: usize = 10;

/// An echo handler that also tracks how many connections it serves at once.
fn counting_echo(
    live: Rc<Cell<usize>>,
    peak: Rc<Cell<usize>>,
) -> impl Fn(TcpStream) -> io::Result<()> {
    move |conn| {
        live.set(live.get() + 1);
        peak.set(peak.get().max(live.get()));
        let r = echo_lines(conn);
        live.set(live.get() - 1);
        r
    }
}

#[test]
fn echo_200_client_tasks_each_get_their_own_lines() {
    guard(|| {
        let (live, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let server = copas::add_server("127.0.0.1:0", counting_echo(live, peak.clone())).unwrap();
        let addr = server.local_addr();
        // A barrier between the first line and the rest: every client holds its
        // connection open until all 200 are being served at once.
        let arrived = Rc::new(Cell::new(0));
        let waiting = Rc::new(RefCell::new(Vec::<copas::Task>::new()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (arrived, waiting) = (arrived.clone(), waiting.clone());
                copas::spawn(move || -> io::Result<usize> {
                    let mut s = TcpStream::connect(addr)?;
                    let first = format!("client {i} hello");
                    assert_eq!(exchange(&mut s, first.as_bytes())?, first.as_bytes());
                    arrived.set(arrived.get() + 1);
                    if arrived.get() == CLIENTS {
                        for t in waiting.borrow_mut().drain(..) {
                            t.unpark();
                        }
                    } else {
                        waiting.borrow_mut().push(copas::current());
                        while arrived.get() < CLIENTS {
                            copas::park()?;
                        }
                    }
                    for j in 0..LINES {
                        let line = format!("client {i} line {j} {}", "x".repeat(i));
                        assert_eq!(exchange(&mut s, line.as_bytes())?, line.as_bytes());
                    }
                    s.shutdown(Shutdown::Write)?;
                    assert_eq!(s.receive_line()?, None, "client {i}: echo after the end");
                    Ok(i)
                })
            })
            .collect();
        let srv = server.clone();
        let stopper = copas::spawn(move || {
            let done: Vec<usize> = clients
                .into_iter()
                .map(|c| c.join().unwrap().unwrap())
                .collect();
            srv.stop();
            done
        });
        copas::run().unwrap();
        assert_eq!(stopper.join().unwrap(), (0..CLIENTS).collect::<Vec<_>>());
        assert_eq!(server.accepted(), CLIENTS as u64);
        assert_eq!(
            peak.get(),
            CLIENTS,
            "all clients were served at the same time"
        );
        assert_eq!(server.connections(), 0);
    });
}

#[test]
fn echo_200_std_thread_clients_each_get_their_own_lines() {
    guard(|| {
        let (live, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let server = copas::add_server("127.0.0.1:0", counting_echo(live, peak.clone())).unwrap();
        let addr = server.local_addr();
        // The last client thread to finish wakes a task that stops the server.
        let finished = Arc::new(AtomicUsize::new(0));
        let srv = server.clone();
        let fin = finished.clone();
        let stopper = copas::spawn(move || {
            while fin.load(Ordering::Acquire) < CLIENTS {
                copas::park().unwrap();
            }
            srv.stop();
        });
        let stopper_task = stopper.task().clone();
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (barrier, finished, stopper_task) =
                    (barrier.clone(), finished.clone(), stopper_task.clone());
                thread::spawn(move || {
                    let mut s = BufReader::new(StdStream::connect(addr).unwrap());
                    let first = format!("thread {i} hello");
                    assert_eq!(std_exchange(&mut s, &first), first);
                    barrier.wait();
                    for j in 0..LINES {
                        let line = format!("thread {i} line {j}");
                        assert_eq!(std_exchange(&mut s, &line), line);
                    }
                    s.get_mut().shutdown(Shutdown::Write).unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).unwrap();
                    assert!(rest.is_empty(), "thread {i}: unexpected {rest:?}");
                    if finished.fetch_add(1, Ordering::AcqRel) + 1 == CLIENTS {
                        stopper_task.unpark();
                    }
                })
            })
            .collect();
        copas::run().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        stopper.join().unwrap();
        assert_eq!(server.accepted(), CLIENTS as u64);
        assert_eq!(
            peak.get(),
            CLIENTS,
            "all clients were served at the same time"
        );
    });
}

#[test]
fn client_sending_half_a_line_does_not_delay_others() {
    guard(|| {
        let rt = copas::Runtime::current();
        let server = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        let addr = server.local_addr();
        let events = Rc::new(RefCell::new(Vec::<String>::new()));

        let ev = events.clone();
        let slow = copas::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.send(b"half a li")?;
            s.flush()?;
            copas::park()?;
            s.send(b"ne\n")?;
            let echo = s.receive_line()?;
            assert_eq!(echo.as_deref(), Some(&b"half a line"[..]));
            ev.borrow_mut().push("slow echoed".into());
            Ok(())
        });
        // Now the slow client's handler sits in receive_line with half a line buffered.
        settle(&rt);
        assert!(!slow.is_finished());

        // Meanwhile, copas clients and a std thread client are served in full.
        let fast: Vec<_> = (0..20)
            .map(|i| {
                let ev = events.clone();
                copas::spawn(move || -> io::Result<()> {
                    let mut s = TcpStream::connect(addr)?;
                    for j in 0..5 {
                        let line = format!("fast {i}.{j}");
                        assert_eq!(exchange(&mut s, line.as_bytes())?, line.as_bytes());
                    }
                    ev.borrow_mut().push(format!("fast {i} done"));
                    Ok(())
                })
            })
            .collect();
        let slow_task = slow.task().clone();
        let ev = events.clone();
        let thread_done = Arc::new(AtomicUsize::new(0));
        let td = thread_done.clone();
        let coordinator = copas::spawn(move || {
            for f in fast {
                f.join().unwrap().unwrap();
            }
            while td.load(Ordering::Acquire) == 0 {
                copas::park().unwrap();
            }
            ev.borrow_mut().push("others done".into());
            assert!(slow_task.unpark());
        });
        let coordinator_task = coordinator.task().clone();
        let thread_client = thread::spawn(move || {
            let mut s = BufReader::new(StdStream::connect(addr).unwrap());
            for j in 0..5 {
                let line = format!("thread {j}");
                assert_eq!(std_exchange(&mut s, &line), line);
            }
            thread_done.store(1, Ordering::Release);
            coordinator_task.unpark();
        });
        let srv = server.clone();
        let stopper = copas::spawn(move || {
            slow.join().unwrap().unwrap();
            srv.stop();
        });
        copas::run().unwrap();
        thread_client.join().unwrap();
        coordinator.join().unwrap();
        stopper.join().unwrap();
        let events = events.borrow();
        assert_eq!(events.len(), 22);
        assert_eq!(events[20], "others done");
        assert_eq!(events[21], "slow echoed");
    });
}

#[test]
fn every_receive_form_including_crlf() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        peer.write_all(
            b"lf line\ncrlf line\r\n\r\n\nbare\rcr\r\nEXACT12345some bytes, then the rest",
        )
        .unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        let h = copas::spawn(move || -> io::Result<()> {
            let line = |conn: &mut TcpStream| conn.receive_line().map(|l| l.map(|b| b.to_vec()));
            assert_eq!(line(&mut conn)?.as_deref(), Some(&b"lf line"[..]));
            assert_eq!(line(&mut conn)?.as_deref(), Some(&b"crlf line"[..]));
            assert_eq!(
                line(&mut conn)?.as_deref(),
                Some(&b""[..]),
                "empty CRLF line"
            );
            assert_eq!(line(&mut conn)?.as_deref(), Some(&b""[..]), "empty LF line");
            assert_eq!(
                line(&mut conn)?.as_deref(),
                Some(&b"bare\rcr"[..]),
                "inner CR kept"
            );
            assert_eq!(&conn.receive_exact(5)?[..], b"EXACT");
            assert_eq!(&conn.receive_exact(0)?[..], b"");
            assert_eq!(&conn.receive_exact(5)?[..], b"12345");
            assert_eq!(&conn.receive_some(4)?[..], b"some");
            assert_eq!(conn.buffered(), b" bytes, then the rest");
            assert_eq!(&conn.receive_to_end()?[..], b" bytes, then the rest");
            // End of stream, in every form.
            assert_eq!(conn.receive_line()?, None);
            assert!(conn.receive_some(10)?.is_empty());
            assert!(conn.receive_to_end()?.is_empty());
            let e = conn.receive_exact(1).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn receive_line_into_appends_every_line_form_and_reports_the_end() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"lf line\ncrlf line\r\n\r\n\nbare\rcr\r\nEXACTthe rest\n")
            .unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        let h = copas::spawn(move || -> io::Result<()> {
            let mut line = b"kept:".to_vec();
            assert!(conn.receive_line_into(&mut line)?);
            assert_eq!(line, b"kept:lf line", "appends to what the Vec holds");
            let mut next = |conn: &mut TcpStream| -> io::Result<Option<Vec<u8>>> {
                line.clear();
                Ok(conn.receive_line_into(&mut line)?.then(|| line.clone()))
            };
            assert_eq!(next(&mut conn)?.as_deref(), Some(&b"crlf line"[..]));
            assert_eq!(next(&mut conn)?.as_deref(), Some(&b""[..]), "empty CRLF");
            assert_eq!(next(&mut conn)?.as_deref(), Some(&b""[..]), "empty LF");
            assert_eq!(next(&mut conn)?.as_deref(), Some(&b"bare\rcr"[..]));
            // The other receive forms see exactly what is left.
            assert_eq!(&conn.receive_exact(5)?[..], b"EXACT");
            assert_eq!(next(&mut conn)?.as_deref(), Some(&b"the rest"[..]));
            // A clean end: `false`, nothing appended, and the same again.
            let mut end = b"untouched".to_vec();
            assert!(!conn.receive_line_into(&mut end)?);
            assert!(!conn.receive_line_into(&mut end)?);
            assert_eq!(end, b"untouched");
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn receive_line_into_keeps_what_follows_a_line_read_in_one_piece() {
    guard(|| {
        let listener = copas::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let taken = Rc::new(Cell::new(0));
        let step = taken.clone();
        let receiver = copas::spawn(move || -> io::Result<Vec<Vec<u8>>> {
            let (mut conn, _) = listener.accept()?;
            let mut got = Vec::new();
            let mut line = Vec::new();
            // Each piece arrives while nothing is buffered: a line whole in one read goes
            // straight to `line`, and what follows it (a partial line, more lines) must
            // stay buffered for the next calls.
            while conn.receive_line_into(&mut line)? {
                got.push(std::mem::take(&mut line));
                step.set(step.get() + 1);
            }
            assert!(conn.buffered().is_empty());
            Ok(got)
        });
        let sender = copas::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            for (piece, lines_before) in [
                (&b"one\n"[..], 0),
                (b"two\r\nthr", 1),
                (b"ee\nfour\nfive\n", 2),
                (b"six", 5),
                (b"\r\n", 5),
            ] {
                // Wait until the receiver has taken every line sent so far and waits
                // again, so the next piece lands on an empty buffer.
                while taken.get() < lines_before {
                    copas::yield_now()?;
                }
                copas::yield_now()?;
                s.send(piece)?;
                s.flush()?;
            }
            s.close()
        });
        copas::run().unwrap();
        sender.join().unwrap().unwrap();
        let got = receiver.join().unwrap().unwrap();
        assert_eq!(
            got,
            [&b"one"[..], b"two", b"three", b"four", b"five", b"six"]
        );
    });
}

#[test]
fn receive_line_into_errors_append_nothing_and_lose_nothing() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        conn.set_max_line_length(16);
        // One line over the limit arriving whole, one at the limit, then EOF mid-line.
        peer.write_all(b"0123456789abcdefg\n").unwrap();
        let h = copas::spawn(move || -> io::Result<TcpStream> {
            let mut line = b"x".to_vec();
            let e = conn.receive_line_into(&mut line).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert_eq!(line, b"x", "nothing appended");
            assert_eq!(conn.buffered(), b"0123456789abcdefg\n", "the bytes stay");
            Ok(conn)
        });
        copas::run().unwrap();
        let mut conn = h.join().unwrap().unwrap();
        let h = copas::spawn(move || -> io::Result<()> {
            let _ = conn.receive_exact(18)?;
            conn.set_read_timeout(Some(Duration::from_millis(50)))?;
            peer.write_all(b"0123456789abcdef\r\npartial").unwrap();
            let mut line = Vec::new();
            assert!(conn.receive_line_into(&mut line)?);
            assert_eq!(line, b"0123456789abcdef");
            line.clear();
            // No newline yet: the timeout keeps the partial line buffered.
            let e = conn.receive_line_into(&mut line).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(line.is_empty());
            assert_eq!(conn.buffered(), b"partial");
            drop(peer);
            let e = conn.receive_line_into(&mut line).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert!(line.is_empty());
            assert_eq!(&conn.receive_to_end()?[..], b"partial");
            assert!(!conn.receive_line_into(&mut line)?);
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn output_sent_after_a_flush_still_leaves_when_the_task_waits() {
    guard(|| {
        let (mut conn, peer) = pair();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(peer);
            let mut lines = Vec::new();
            for _ in 0..4 {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                lines.push(l);
            }
            r.get_mut().write_all(b"done\n").unwrap();
            lines
        });
        let h = copas::spawn(move || -> io::Result<()> {
            // A flush takes this stream out of the loop's flush queue; what is sent after
            // it, with no flush of its own, must still go out before the task waits.
            conn.send(b"one\n")?;
            conn.flush()?;
            conn.send(b"two\n")?;
            copas::yield_now()?;
            conn.send(b"three\n")?;
            conn.flush()?;
            conn.send(b"four\n")?;
            assert_eq!(conn.receive_line()?.as_deref(), Some(&b"done"[..]));
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
        assert_eq!(
            reader.join().unwrap(),
            ["one\n", "two\n", "three\n", "four\n"]
        );
    });
}

#[test]
fn receive_some_waits_only_when_nothing_is_buffered() {
    guard(|| {
        let (mut conn, peer) = pair();
        let h = copas::spawn(move || -> io::Result<()> {
            let mut peer = peer;
            peer.write_all(b"abc").unwrap();
            // Waits for the first bytes, then returns what is there without waiting for
            // more than `max`.
            assert_eq!(&conn.receive_some(100)?[..], b"abc");
            peer.write_all(b"defgh").unwrap();
            assert_eq!(&conn.receive_some(2)?[..], b"de");
            assert_eq!(&conn.receive_some(100)?[..], b"fgh");
            assert!(conn.receive_some(0)?.is_empty());
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn line_split_across_many_segments_from_a_std_thread() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        let text: Vec<u8> = b"a line sent one byte at a time\r\nand a second one\n".to_vec();
        let sender = thread::spawn(move || {
            peer.set_nodelay(true).unwrap();
            for b in text {
                peer.write_all(&[b]).unwrap();
                peer.flush().unwrap();
            }
            peer
        });
        let h = copas::spawn(move || -> io::Result<(Vec<u8>, Vec<u8>)> {
            let one = conn.receive_line()?.expect("first line").to_vec();
            let two = conn.receive_line()?.expect("second line").to_vec();
            Ok((one, two))
        });
        copas::run().unwrap();
        let (one, two) = h.join().unwrap().unwrap();
        assert_eq!(one, b"a line sent one byte at a time");
        assert_eq!(two, b"and a second one");
        drop(sender.join().unwrap());
    });
}

#[test]
fn line_and_exact_reads_split_across_segments_between_tasks() {
    guard(|| {
        let listener = copas::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut rng = Rng::new(7);
        let blob = rng.bytes(1000);
        let mut message = b"header line split in bytes\r\n".to_vec();
        message.extend_from_slice(&blob);
        let receiver = copas::spawn(move || -> io::Result<(Vec<u8>, Vec<u8>)> {
            let (mut conn, _) = listener.accept()?;
            let line = conn.receive_line()?.expect("a line").to_vec();
            let mut exact = Vec::new();
            for n in [333, 1, 600, 66] {
                exact.extend_from_slice(&conn.receive_exact(n)?);
            }
            Ok((line, exact))
        });
        let to_send = message.clone();
        let sender = copas::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            // One byte per loop step for the line, then 7-byte pieces: the receiver sees
            // the data in many small reads.
            let (line, rest) = to_send.split_at(28);
            for b in line {
                s.send(&[*b])?;
                s.flush()?;
                copas::yield_now()?;
            }
            for piece in rest.chunks(7) {
                s.send(piece)?;
                s.flush()?;
                copas::yield_now()?;
            }
            s.close()
        });
        copas::run().unwrap();
        sender.join().unwrap().unwrap();
        let (line, exact) = receiver.join().unwrap().unwrap();
        assert_eq!(line, b"header line split in bytes");
        assert_eq!(exact, blob);
    });
}

#[test]
fn eof_in_the_middle_of_a_line_keeps_the_partial_bytes() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"complete\nno newline at the end").unwrap();
        drop(peer);
        let h = copas::spawn(move || -> io::Result<()> {
            assert_eq!(conn.receive_line()?.as_deref(), Some(&b"complete"[..]));
            let e = conn.receive_line().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(conn.buffered(), b"no newline at the end");
            // Asking again gives the same answer and still loses nothing.
            let e = conn.receive_line().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(&conn.receive_to_end()?[..], b"no newline at the end");
            assert_eq!(conn.receive_line()?, None);
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn eof_in_the_middle_of_an_exact_read_keeps_the_partial_bytes() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"abc").unwrap();
        drop(peer);
        let h = copas::spawn(move || -> io::Result<()> {
            let e = conn.receive_exact(5).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(conn.buffered(), b"abc");
            assert_eq!(&conn.receive_some(2)?[..], b"ab");
            assert_eq!(&conn.receive_exact(1)?[..], b"c");
            assert!(conn.receive_some(9)?.is_empty());
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn oversize_line_is_invalid_data() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        conn.set_max_line_length(16);
        // Exactly at the limit (the CRLF does not count), then one byte over.
        peer.write_all(b"0123456789abcdef\r\n0123456789abcdefg\n")
            .unwrap();
        let h = copas::spawn(move || -> io::Result<()> {
            assert_eq!(
                conn.receive_line()?.as_deref(),
                Some(&b"0123456789abcdef"[..])
            );
            let e = conn.receive_line().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            // The bytes stay buffered, and the error repeats.
            assert_eq!(conn.buffered(), b"0123456789abcdefg\n");
            let e = conn.receive_line().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            Ok(())
        });
        copas::run().unwrap();
        h.join().unwrap().unwrap();
        drop(peer);
    });
}

#[test]
fn oversize_line_fails_before_its_newline_arrives() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        // Default limit; the peer sends one byte more and then nothing, staying open
        // (the thread hands the socket back): waiting for the newline would hang.
        let writer = thread::spawn(move || {
            peer.write_all(&vec![b'x'; copas::DEFAULT_MAX_LINE + 1])
                .unwrap();
            peer
        });
        let h = copas::spawn(move || conn.receive_line().map(|_| ()).unwrap_err().kind());
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), io::ErrorKind::InvalidData);
        drop(writer.join().unwrap());
    });
}

#[test]
fn client_task_connects_to_a_server_in_the_same_runtime() {
    guard(|| {
        let seen_peer = Rc::new(Cell::new(None));
        let sp = seen_peer.clone();
        let server = copas::add_server("127.0.0.1:0", move |mut conn| {
            sp.set(Some(conn.peer_addr()?));
            conn.send(b"welcome\n")?;
            echo_lines(conn)
        })
        .unwrap();
        let addr = server.local_addr();
        let client = copas::spawn(move || -> io::Result<_> {
            let mut s = TcpStream::connect(addr)?;
            assert_eq!(s.peer_addr()?, addr);
            assert_eq!(s.receive_line()?.as_deref(), Some(&b"welcome"[..]));
            assert_eq!(exchange(&mut s, b"ping")?, b"ping");
            let local = s.local_addr()?;
            s.close()?;
            server.stop();
            Ok(local)
        });
        copas::run().unwrap();
        let local = client.join().unwrap().unwrap();
        assert_eq!(seen_peer.get(), Some(local));
    });
}

#[test]
fn blocking_calls_outside_a_task_drive_the_loop() {
    guard(|| {
        let server = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        // No task here: connect, send and receive drive the loop until they can finish,
        // and the server's tasks run meanwhile.
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.send(b"from main\n").unwrap();
        assert_eq!(
            s.receive_line().unwrap().as_deref(),
            Some(&b"from main"[..])
        );
        drop(s);
        server.stop();
        copas::run().unwrap();
    });
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    guard(|| {
        let addr = closed_port();
        let h = copas::spawn(move || {
            let a = TcpStream::connect(addr).unwrap_err().kind();
            let b = TcpStream::connect_timeout(addr, Duration::from_secs(30))
                .unwrap_err()
                .kind();
            (a, b)
        });
        copas::run().unwrap();
        let refused = io::ErrorKind::ConnectionRefused;
        assert_eq!(h.join().unwrap(), (refused, refused));
        // Outside a task as well.
        assert_eq!(TcpStream::connect(addr).unwrap_err().kind(), refused);
    });
}

#[test]
fn eight_mib_round_trip_with_random_chunks_std_client() {
    guard(|| {
        const TOTAL: usize = 8 << 20;
        let server = copas::add_server("127.0.0.1:0", |mut conn: TcpStream| {
            let mut rng = Rng::new(99);
            loop {
                let chunk = conn.receive_some(rng.range(1, 70_000))?;
                if chunk.is_empty() {
                    return conn.close();
                }
                conn.send(&chunk)?;
            }
        })
        .unwrap();
        let addr = server.local_addr();
        let data = Arc::new(Rng::new(1).bytes(TOTAL));
        let srv = server.clone();
        // Writer and reader threads share one connection, so neither side's buffers
        // fill up while the other waits.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let stopper = copas::spawn(move || {
            copas::park().unwrap();
            srv.stop();
        });
        let stopper_task = stopper.task().clone();
        let client = {
            let data = data.clone();
            thread::spawn(move || {
                let s = StdStream::connect(addr).unwrap();
                let mut w = s.try_clone().unwrap();
                let d = data.clone();
                let writer = thread::spawn(move || {
                    let mut rng = Rng::new(2);
                    let mut at = 0;
                    while at < d.len() {
                        let n = rng.range(1, 100_000).min(d.len() - at);
                        w.write_all(&d[at..at + n]).unwrap();
                        at += n;
                    }
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let mut back = Vec::with_capacity(TOTAL);
                let mut r = s;
                let mut rng = Rng::new(3);
                let mut buf = vec![0u8; 100_000];
                loop {
                    let want = rng.range(1, buf.len());
                    let n = r.read(&mut buf[..want]).unwrap();
                    if n == 0 {
                        break;
                    }
                    back.extend_from_slice(&buf[..n]);
                }
                writer.join().unwrap();
                done_tx.send(()).unwrap();
                stopper_task.unpark();
                back
            })
        };
        copas::run().unwrap();
        done_rx.recv().unwrap();
        stopper.join().unwrap();
        let back = client.join().unwrap();
        assert_eq!(back.len(), TOTAL);
        assert!(back == *data, "the echoed bytes differ");
    });
}

#[test]
fn eight_mib_round_trip_with_random_chunks_between_tasks() {
    guard(|| {
        const TOTAL: usize = 8 << 20;
        // The server takes everything in random exact-size pieces, then sends it back in
        // random pieces; the client sends in random pieces (some beyond the write buffer)
        // and reads back with random receive_some sizes.
        let server = copas::add_server("127.0.0.1:0", |mut conn: TcpStream| {
            let mut rng = Rng::new(11);
            let mut got = Vec::with_capacity(TOTAL);
            while got.len() < TOTAL {
                let n = rng.range(1, 90_000).min(TOTAL - got.len());
                got.extend_from_slice(&conn.receive_exact(n)?);
            }
            assert!(conn.receive_to_end()?.is_empty());
            let mut at = 0;
            while at < got.len() {
                let n = rng.range(1, 150_000).min(got.len() - at);
                conn.send(&got[at..at + n])?;
                at += n;
            }
            conn.close()
        })
        .unwrap();
        let addr = server.local_addr();
        let client = copas::spawn(move || -> io::Result<bool> {
            let data = Rng::new(5).bytes(TOTAL);
            let mut s = TcpStream::connect(addr)?;
            let mut rng = Rng::new(12);
            let mut at = 0;
            while at < data.len() {
                let n = rng.range(1, 150_000).min(data.len() - at);
                s.send(&data[at..at + n])?;
                assert!(s.pending_output() <= copas::DEFAULT_WRITE_BUFFER);
                at += n;
            }
            s.shutdown(Shutdown::Write)?;
            let mut back = Vec::with_capacity(TOTAL);
            loop {
                let chunk = s.receive_some(rng.range(1, 100_000))?;
                if chunk.is_empty() {
                    break;
                }
                back.extend_from_slice(&chunk);
            }
            server.stop();
            Ok(back == data)
        });
        copas::run().unwrap();
        assert!(
            client.join().unwrap().unwrap(),
            "the bytes came back different"
        );
    });
}

/// Bytes of the pattern the back-pressure test sends: byte `i` of the stream is
/// `i % 251`. A chunk of a multiple of 251 bytes is the same wherever it starts.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn peer_that_never_reads_bounds_output_and_suspends_the_sender() {
    guard(|| {
        const CHUNK: usize = 251 * 40;
        // Far more than the kernel's buffers on both sides hold, so the sender must block.
        const TOTAL: usize = CHUNK * 6400;
        let rt = copas::Runtime::current();
        let (mut conn, peer) = pair();
        let sent = Rc::new(Cell::new(0usize));
        let max_pending = Rc::new(Cell::new(0usize));
        let (s, m) = (sent.clone(), max_pending.clone());
        let sender = copas::spawn(move || -> io::Result<()> {
            let chunk = pattern(CHUNK);
            while s.get() < TOTAL {
                conn.send(&chunk)?;
                s.set(s.get() + CHUNK);
                m.set(m.get().max(conn.pending_output()));
            }
            conn.close()
        });

        // Run until nothing moves any more: the sender is blocked on the full socket.
        settle(&rt);
        assert!(!sender.is_finished());
        assert!(
            sent.get() < TOTAL,
            "the kernel cannot have taken {TOTAL} bytes"
        );
        assert!(
            max_pending.get() <= copas::DEFAULT_WRITE_BUFFER,
            "{}",
            max_pending.get()
        );
        let stats = rt.stats();
        assert_eq!(
            stats.runnable, 0,
            "the blocked sender is not in the run queue"
        );
        assert_eq!(stats.tasks, 1);
        // Suspended, not spinning: the loop stays idle with nothing to run.
        let steps = stats.steps;
        let polls = rt.driver::<copas::Reactor>().unwrap().polls();
        for _ in 0..3 {
            assert!(!rt.step(Some(Duration::from_millis(20))).unwrap());
        }
        assert_eq!(rt.stats().steps, steps + 3);
        assert_eq!(rt.driver::<copas::Reactor>().unwrap().polls(), polls + 3);
        let stuck_at = sent.get();

        // Once the peer reads, everything arrives, in order.
        let reader = thread::spawn(move || {
            let mut peer = peer;
            let expected = pattern(251 + (1 << 16));
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0usize;
            loop {
                let n = peer.read(&mut buf).unwrap();
                if n == 0 {
                    return total;
                }
                let at = total % 251;
                assert!(
                    buf[..n] == expected[at..at + n],
                    "wrong bytes after {total}"
                );
                total += n;
            }
        });
        copas::run().unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(reader.join().unwrap(), TOTAL);
        assert!(sent.get() > stuck_at);
        assert!(
            max_pending.get() <= copas::DEFAULT_WRITE_BUFFER,
            "{}",
            max_pending.get()
        );
    });
}

#[test]
fn reset_by_peer_passes_through() {
    guard(|| {
        let (mut conn, peer) = pair();
        conn.send(b"never read\n").unwrap();
        conn.flush().unwrap();
        close_with_reset(peer);
        let h = copas::spawn(move || {
            let read = conn.receive_line().unwrap_err().kind();
            // Writing to a reset connection fails too, at the latest on flush.
            let write = conn
                .send(b"more")
                .and_then(|()| conn.flush())
                .unwrap_err()
                .kind();
            (read, write)
        });
        copas::run().unwrap();
        let (read, write) = h.join().unwrap();
        assert_eq!(read, io::ErrorKind::ConnectionReset);
        assert!(
            matches!(
                write,
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{write:?}"
        );
    });
}

#[test]
fn std_io_traits_in_a_handler_bufreader_copy_write_all() {
    guard(|| {
        // "Legacy" blocking code: BufReader, read_line, io::copy, write!, write_all.
        let server = copas::add_server("127.0.0.1:0", |mut conn: TcpStream| {
            let mut reader = BufReader::new(&mut conn);
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let name = header
                .trim_end()
                .strip_prefix("HELLO ")
                .unwrap_or("?")
                .to_owned();
            let mut body = Vec::new();
            io::copy(&mut reader, &mut body)?;
            drop(reader);
            write!(conn, "hi {name}, {} bytes\r\n", body.len())?;
            io::copy(&mut &body[..], &mut conn)?;
            conn.write_all(b"\r\nbye\r\n")?;
            conn.flush()
        })
        .unwrap();
        let addr = server.local_addr();
        let body = Rng::new(21).bytes(300_000);
        let expected = {
            let mut e = format!("hi tester, {} bytes\r\n", body.len()).into_bytes();
            e.extend_from_slice(&body);
            e.extend_from_slice(b"\r\nbye\r\n");
            e
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let srv = server.clone();
        let stopper = copas::spawn(move || {
            copas::park().unwrap();
            srv.stop();
        });
        let stopper_task = stopper.task().clone();
        let client = thread::spawn(move || {
            let mut s = StdStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = thread::spawn(move || {
                w.write_all(b"HELLO tester\r\n").unwrap();
                w.write_all(&body).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            writer.join().unwrap();
            tx.send(back).unwrap();
            stopper_task.unpark();
        });
        copas::run().unwrap();
        client.join().unwrap();
        stopper.join().unwrap();
        let back = rx.recv().unwrap();
        assert!(back == expected, "reply differs ({} bytes)", back.len());
    });
}

#[test]
fn std_io_traits_on_the_stream_itself_with_a_copas_client() {
    guard(|| {
        // The handler uses TcpStream's own BufRead and Read: lines(), read_exact.
        let server = copas::add_server("127.0.0.1:0", |mut conn: TcpStream| {
            let mut count_line = String::new();
            conn.read_line(&mut count_line)?;
            let n: usize = count_line.trim().parse().map_err(io::Error::other)?;
            let mut lines = Vec::new();
            for line in (&mut conn).lines().take(n) {
                lines.push(line?.to_uppercase());
            }
            let mut tail = [0u8; 4];
            conn.read_exact(&mut tail)?;
            writeln!(conn, "{}", lines.join(","))?;
            conn.write_all(&tail)?;
            conn.flush()
        })
        .unwrap();
        let addr = server.local_addr();
        let client = copas::spawn(move || -> io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(b"3\none\r\ntwo\nthree\nTAIL")?;
            s.flush()?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply)?;
            server.stop();
            Ok(reply)
        });
        copas::run().unwrap();
        assert_eq!(client.join().unwrap().unwrap(), b"ONE,TWO,THREE\nTAIL");
    });
}

#[test]
fn receive_to_end_beyond_its_limit_is_invalid_data() {
    guard(|| {
        let (mut conn, peer) = pair();
        conn.set_max_receive_to_end(100);
        let writer = thread::spawn(move || {
            let mut peer = peer;
            peer.write_all(&[b'z'; 1000]).unwrap();
        });
        let h = copas::spawn(move || {
            let e = conn.receive_to_end().unwrap_err();
            // What arrived stays buffered.
            (e.kind(), conn.buffered().len())
        });
        copas::run().unwrap();
        writer.join().unwrap();
        let (kind, kept) = h.join().unwrap();
        assert_eq!(kind, io::ErrorKind::InvalidData);
        assert!(kept > 100, "{kept}");
    });
}

#[test]
fn dropped_stream_still_delivers_its_buffered_output() {
    guard(|| {
        const TOTAL: usize = 6 << 20;
        // A write buffer larger than the kernel takes: when the handler returns, much of
        // the reply is still buffered, and dropping the stream must deliver it.
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<usize>();
        let server = copas::add_server("127.0.0.1:0", move |mut conn: TcpStream| {
            conn.set_write_buffer_size(TOTAL + 1);
            let data = Rng::new(31).bytes(TOTAL);
            for piece in data.chunks(50_000) {
                conn.send(piece)?;
            }
            sent_tx.send(conn.pending_output()).unwrap();
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let srv = server.clone();
        let stopper = copas::spawn(move || {
            copas::park().unwrap();
            srv.stop();
        });
        let stopper_task = stopper.task().clone();
        let client = thread::spawn(move || {
            let mut s = StdStream::connect(addr).unwrap();
            // Read nothing until the handler has returned.
            let pending_at_drop = sent_rx.recv().unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            stopper_task.unpark();
            (pending_at_drop, back)
        });
        copas::run().unwrap();
        stopper.join().unwrap();
        let (pending_at_drop, back) = client.join().unwrap();
        assert!(
            pending_at_drop > 0,
            "nothing was left buffered; the test proves nothing"
        );
        assert_eq!(back.len(), TOTAL);
        assert!(
            back == Rng::new(31).bytes(TOTAL),
            "the delivered bytes differ"
        );
    });
}

#[test]
fn eof_arriving_with_the_last_bytes_while_a_reader_waits_is_seen() {
    guard(|| {
        // The reader waits first; then, in the same loop pass, the peer's last bytes and
        // its FIN arrive together (one readiness edge). A read timeout turns a missed end
        // of stream into a failure instead of a hang.
        let (mut conn, peer) = pair();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = copas::spawn(move || -> io::Result<Vec<u8>> {
            let all = conn.receive_to_end()?.to_vec();
            assert_eq!(conn.receive_line()?, None);
            Ok(all)
        });
        let _closer = copas::spawn(move || {
            let mut peer = peer;
            peer.write_all(b"the tail").unwrap();
            drop(peer);
        });
        copas::run().unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"the tail");
    });
}
