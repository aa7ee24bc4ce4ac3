//! Reliability against unlucky and hostile peers, on real loopback sockets with clients on
//! threads of their own: an endless line, resets in the middle of a line and of a send,
//! half-closed connections, the connection limit, a peer that never reads, input that
//! arrives while a handler waits for something else, and many connections at once whose
//! every byte is checked.
//!
//! Nothing here waits a fixed time to synchronise; time appears only as "not before"
//! (a timeout never fires early) and as "nothing happens within" a window.

mod common;

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use copas::{ServerBuilder, TcpStream};

use common::{guard, on_thread, serve_during, serve_while, std_exchange, Rng};

type Kinds = Rc<RefCell<Vec<io::ErrorKind>>>;

/// An error hook that records the kinds of the errors it is told about.
fn record_kinds(kinds: &Kinds) -> impl Fn(&str, Option<SocketAddr>, &io::Error) + 'static {
    let kinds = kinds.clone();
    move |_, _, e| kinds.borrow_mut().push(e.kind())
}

/// How long a blocking client waits for one read or write before it fails instead of
/// hanging: a hang guard that names the stuck call, not a measure of speed.
const CLIENT_GUARD: Duration = Duration::from_secs(30);

/// Connects a blocking client that sends each write at once (no Nagle delay).
#[track_caller]
fn connect(addr: SocketAddr) -> StdStream {
    let s = StdStream::connect(addr).expect("connect to the server");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(CLIENT_GUARD)).unwrap();
    s.set_write_timeout(Some(CLIENT_GUARD)).unwrap();
    s
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
#[track_caller]
fn reset(s: StdStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER 0");
    drop(s);
}

/// Reads one line (without its `\n`), failing at end of stream.
#[track_caller]
fn read_line(s: &mut BufReader<StdStream>) -> String {
    let mut line = String::new();
    s.read_line(&mut line).expect("read a line");
    assert!(line.ends_with('\n'), "line cut short: {line:?}");
    line.pop();
    line
}

/// Echoes lines until end of stream, leaving the stream to the caller.
fn echo_until_end(conn: &mut TcpStream) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        conn.send(&line)?;
        conn.send(b"\n")?;
    }
    Ok(())
}

/// An echo handler that records the kind of the error it ends with, if any.
fn echo_recording(kinds: &Kinds) -> impl Fn(TcpStream) -> io::Result<()> + 'static {
    let kinds = kinds.clone();
    move |mut conn| {
        let r = echo_until_end(&mut conn);
        if let Err(e) = &r {
            kinds.borrow_mut().push(e.kind());
        }
        r
    }
}

#[test]
fn endless_line_is_refused_with_invalid_data_while_another_client_is_served() {
    const MAX_LINE: usize = 64 * 1024;
    guard(|| {
        let seen = Kinds::default();
        let reported = Kinds::default();
        let server = ServerBuilder::new()
            .max_line_length(MAX_LINE)
            .on_error(record_kinds(&reported))
            .serve("127.0.0.1:0", echo_recording(&seen))
            .unwrap();
        let flooded = serve_while(&server, |addr| {
            let mut polite = BufReader::new(connect(addr));
            assert_eq!(std_exchange(&mut polite, "before"), "before");

            let mut flood = connect(addr);
            let chunk = vec![b'x'; 16 * 1024];
            // Half the limit: a line in the making, not too long yet.
            let mut sent = 0;
            while sent < MAX_LINE / 2 {
                flood.write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            assert_eq!(std_exchange(&mut polite, "during"), "during");
            // Then without end, until the server cuts the connection.
            let err = loop {
                match flood.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => break e,
                }
                assert!(
                    sent < 1 << 30,
                    "1 GiB of one line and the server still reads"
                );
            };
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "the flood ended with {err:?}"
            );
            assert_eq!(std_exchange(&mut polite, "after"), "after");
            sent
        });
        assert!(flooded > MAX_LINE, "cut off after {flooded} bytes");
        assert_eq!(*seen.borrow(), [io::ErrorKind::InvalidData]);
        assert_eq!(*reported.borrow(), [io::ErrorKind::InvalidData]);
        assert_eq!((server.accepted(), server.connections()), (2, 0));
    });
}

#[test]
fn reset_in_the_middle_of_a_line_keeps_what_arrived_and_reports_connection_reset() {
    guard(|| {
        type Outcome = (io::ErrorKind, Vec<u8>);
        let outcomes = Rc::new(RefCell::new(Vec::<Outcome>::new()));
        let o = outcomes.clone();
        let server = ServerBuilder::new()
            .on_error(|_, _, _| {})
            .serve("127.0.0.1:0", move |mut conn: TcpStream| {
                let r = echo_until_end(&mut conn);
                if let Err(e) = &r {
                    o.borrow_mut().push((e.kind(), conn.buffered().to_vec()));
                }
                r
            })
            .unwrap();
        serve_while(&server, |addr| {
            let mut victim = BufReader::new(connect(addr));
            // A whole line first, so the handler is known to be waiting for the next.
            assert_eq!(std_exchange(&mut victim, "whole"), "whole");
            victim.get_mut().write_all(b"half a li").unwrap();
            reset(victim.into_inner());

            let mut other = BufReader::new(connect(addr));
            assert_eq!(std_exchange(&mut other, "still served"), "still served");
        });
        assert_eq!(
            *outcomes.borrow(),
            [(io::ErrorKind::ConnectionReset, b"half a li".to_vec())]
        );
    });
}

#[test]
fn reset_in_the_middle_of_a_send_fails_the_send_and_others_are_served() {
    // More than the kernel buffers of both sides hold, so the reset comes mid-send.
    const RESPONSE: usize = 64 * 1024 * 1024;
    guard(|| {
        let results = Rc::new(RefCell::new(Vec::<io::Result<usize>>::new()));
        let r = results.clone();
        let server = ServerBuilder::new()
            .on_error(|_, _, _| {})
            .serve("127.0.0.1:0", move |mut conn: TcpStream| {
                let Some(line) = conn.receive_line()? else {
                    return Ok(());
                };
                if &line[..] != b"send" {
                    conn.send(&line)?;
                    conn.send(b"\n")?;
                    return conn.close();
                }
                let chunk = vec![b'y'; 64 * 1024];
                let mut sent = 0;
                let outcome = (|| {
                    while sent < RESPONSE {
                        conn.send(&chunk)?;
                        sent += chunk.len();
                    }
                    conn.flush()?;
                    Ok(sent)
                })();
                r.borrow_mut().push(outcome);
                Ok(())
            })
            .unwrap();
        serve_while(&server, |addr| {
            let mut victim = connect(addr);
            victim.write_all(b"send\n").unwrap();
            // Part of the response has arrived: the server is in the middle of sending.
            let mut first = vec![0; 64 * 1024];
            victim.read_exact(&mut first).unwrap();
            assert!(first.iter().all(|&b| b == b'y'));
            reset(victim);

            let mut other = BufReader::new(connect(addr));
            assert_eq!(std_exchange(&mut other, "still served"), "still served");
        });
        let results = results.borrow();
        assert_eq!(results.len(), 1);
        let err = results[0].as_ref().expect_err("the send survived a reset");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "the send failed with {err:?}"
        );
        assert_eq!(server.connections(), 0);
    });
}

/// The response to a half-closed request: the request's lines, then `body_len` bytes of
/// a pattern.
fn half_close_response(lines: &[Vec<u8>], body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_len + 1024);
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out.extend((0..body_len).map(|i| (i % 251) as u8));
    out
}

#[test]
fn after_a_half_close_the_whole_large_response_arrives_before_the_close() {
    const BODY: usize = 4 * 1024 * 1024;
    guard(|| {
        // The "drop" handler says when it has returned; its client reads only then.
        let (returned_tx, returned_rx) = std::sync::mpsc::channel::<()>();
        let server = ServerBuilder::new()
            .serve("127.0.0.1:0", move |mut conn: TcpStream| {
                let mut lines = Vec::new();
                while let Some(line) = conn.receive_line()? {
                    lines.push(line.to_vec());
                }
                let close = lines.first().map(Vec::as_slice) == Some(&b"close"[..]);
                if !close {
                    // The whole response fits the write buffer, so the handler returns
                    // while its client does not read yet.
                    conn.set_write_buffer_size(2 * BODY);
                }
                // End of stream: the peer half-closed; answer in pieces of many sizes.
                let response = half_close_response(&lines, BODY);
                let mut rng = Rng::new(response.len() as u64);
                let mut at = 0;
                while at < response.len() {
                    let n = rng.range(1, 256 * 1024).min(response.len() - at);
                    conn.send(&response[at..at + n])?;
                    at += n;
                }
                if close {
                    conn.close()
                } else {
                    // Dropped with output buffered: it must be delivered all the same.
                    assert!(conn.pending_output() > 0);
                    returned_tx.send(()).unwrap();
                    Ok(())
                }
            })
            .unwrap();
        serve_while(&server, move |addr| {
            let returned = Arc::new(Mutex::new(returned_rx));
            let clients: Vec<_> = ["close", "drop"]
                .into_iter()
                .map(|how| {
                    let returned = returned.clone();
                    thread::spawn(move || {
                        let mut s = connect(addr);
                        let lines: Vec<Vec<u8>> = std::iter::once(how.as_bytes().to_vec())
                            .chain((0..100).map(|i| format!("line {i} of {how}").into_bytes()))
                            .collect();
                        for l in &lines {
                            s.write_all(l).unwrap();
                            s.write_all(b"\n").unwrap();
                        }
                        s.shutdown(Shutdown::Write).unwrap();
                        if how == "drop" {
                            returned.lock().unwrap().recv().unwrap();
                        }
                        let mut got = Vec::new();
                        s.read_to_end(&mut got).unwrap();
                        let expected = half_close_response(&lines, BODY);
                        assert_eq!(got.len(), expected.len(), "{how}: length");
                        assert!(got == expected, "{how}: the response differs");
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
        });
        assert_eq!((server.accepted(), server.connections()), (2, 0));
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Start(u16),
    End(u16),
}

#[test]
fn connection_limit_holds_a_third_client_in_the_backlog_until_one_ends() {
    guard(|| {
        let log = Rc::new(RefCell::new(Vec::<Life>::new()));
        let l = log.clone();
        let server = ServerBuilder::new()
            .max_connections(2)
            .serve("127.0.0.1:0", move |conn: TcpStream| {
                let port = conn.peer_addr()?.port();
                l.borrow_mut().push(Life::Start(port));
                let r = common::echo_lines(conn);
                l.borrow_mut().push(Life::End(port));
                r
            })
            .unwrap();
        let ports = serve_while(&server, |addr| {
            let mut first = BufReader::new(connect(addr));
            let mut second = BufReader::new(connect(addr));
            assert_eq!(std_exchange(&mut first, "first"), "first");
            assert_eq!(std_exchange(&mut second, "second"), "second");

            // The kernel completes the third connection, but the server must not take it.
            let mut third = BufReader::new(connect(addr));
            third.get_mut().write_all(b"third\n").unwrap();
            let window = Duration::from_millis(300);
            third.get_mut().set_read_timeout(Some(window)).unwrap();
            let mut early = String::new();
            let e = third.read_line(&mut early).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{e:?}, read {early:?}"
            );
            assert_eq!(early, "", "the third client was served beyond the limit");

            // One connection ends: the third is accepted and served.
            let first_port = first.get_ref().local_addr().unwrap().port();
            drop(first);
            third
                .get_mut()
                .set_read_timeout(Some(CLIENT_GUARD))
                .unwrap();
            assert_eq!(read_line(&mut third), "third");
            assert_eq!(std_exchange(&mut second, "second again"), "second again");
            let ports = [
                first_port,
                second.get_ref().local_addr().unwrap().port(),
                third.get_ref().local_addr().unwrap().port(),
            ];
            drop((second, third));
            ports
        });
        let log = log.borrow();
        let at = |e: Life| log.iter().position(|&x| x == e).unwrap();
        let [first, second, third] = ports;
        assert_eq!(log.len(), 6, "{log:?}");
        assert!(at(Life::Start(first)) < at(Life::End(first)), "{log:?}");
        assert!(at(Life::Start(second)) < at(Life::Start(third)), "{log:?}");
        assert!(
            at(Life::End(first)) < at(Life::Start(third)),
            "the third handler started before a slot was free: {log:?}"
        );
        let mut live = 0i32;
        for e in log.iter() {
            live += if matches!(e, Life::Start(_)) { 1 } else { -1 };
            assert!(live <= 2, "more than 2 handlers alive: {log:?}");
        }
        assert_eq!(server.accepted(), 3);
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HogEvent {
    /// The hog's handler's `send` returned.
    Sent,
    /// The hog's handler's `send` failed, after waiting this long.
    Failed(io::ErrorKind, Duration),
    /// The loop served a line of another client.
    Served,
}

#[test]
fn peer_that_never_reads_times_out_the_send_while_others_are_served() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(300);
    guard(|| {
        let events = Arc::new(Mutex::new(Vec::<HogEvent>::new()));
        let hog_done = Arc::new(AtomicBool::new(false));
        let (ev, done) = (events.clone(), hog_done.clone());
        let reported = Kinds::default();
        let server = ServerBuilder::new()
            .write_timeout(WRITE_TIMEOUT)
            .on_error(record_kinds(&reported))
            .serve("127.0.0.1:0", move |mut conn: TcpStream| {
                let push = |e| ev.lock().unwrap().push(e);
                let Some(first) = conn.receive_line()? else {
                    return Ok(());
                };
                if &first[..] == b"hog" {
                    let chunk = vec![b'z'; 64 * 1024];
                    for _ in 0..(1usize << 30) / chunk.len() {
                        let started = Instant::now();
                        if let Err(e) = conn.send(&chunk) {
                            push(HogEvent::Failed(e.kind(), started.elapsed()));
                            done.store(true, Ordering::Release);
                            return Err(e);
                        }
                        push(HogEvent::Sent);
                    }
                    panic!("1 GiB sent to a peer that never reads");
                }
                let mut line = Some(first);
                while let Some(l) = line {
                    push(HogEvent::Served);
                    conn.send(&l)?;
                    conn.send(b"\n")?;
                    line = conn.receive_line()?;
                }
                conn.close()
            })
            .unwrap();
        serve_while(&server, move |addr| {
            let mut hog = connect(addr);
            hog.write_all(b"hog\n").unwrap();
            let mut polite = BufReader::new(connect(addr));
            let mut exchanges = 0u64;
            while !hog_done.load(Ordering::Acquire) {
                assert_eq!(std_exchange(&mut polite, "ping"), "ping");
                exchanges += 1;
                assert!(exchanges < 10_000_000, "the hog's send never timed out");
            }
            let mut late = BufReader::new(connect(addr));
            assert_eq!(std_exchange(&mut late, "late"), "late");
            drop(hog);
        });
        let events = events.lock().unwrap();
        let failed = events
            .iter()
            .position(|e| matches!(e, HogEvent::Failed(..)))
            .expect("the hog's send failed");
        let HogEvent::Failed(kind, waited) = events[failed] else {
            unreachable!()
        };
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(waited >= WRITE_TIMEOUT, "timed out early, after {waited:?}");
        let stalled = events[..failed]
            .iter()
            .rposition(|e| *e == HogEvent::Sent)
            .map_or(0, |i| i + 1);
        assert!(
            events[stalled..failed].contains(&HogEvent::Served),
            "no other client was served while the send was stalled"
        );
        assert_eq!(*reported.borrow(), [io::ErrorKind::TimedOut]);
    });
}

#[test]
fn input_that_arrives_while_the_handler_waits_for_something_else_is_not_missed() {
    guard(|| {
        // The handler hands its task over when it stops to wait for something else.
        let (task_tx, task_rx) = std::sync::mpsc::channel::<copas::Task>();
        let server = ServerBuilder::new()
            .serve("127.0.0.1:0", move |mut conn: TcpStream| {
                // A short line: the read that brings it empties the kernel's buffer.
                let first = conn.receive_line()?.expect("a first line");
                conn.send(&first)?;
                conn.send(b"\n")?;
                conn.flush()?;
                // The next line arrives, and the loop sees it, while the task is parked
                // and nobody waits to read: that readiness must not be lost.
                task_tx.send(copas::current()).unwrap();
                copas::park()?;
                let second = conn.receive_line()?.expect("a second line");
                conn.send(&second)?;
                conn.send(b"\n")?;
                conn.close()
            })
            .unwrap();
        serve_while(&server, move |addr| {
            let mut s = BufReader::new(connect(addr));
            assert_eq!(std_exchange(&mut s, "first"), "first");
            let handler = task_rx.recv().unwrap();
            s.get_mut().write_all(b"second\n").unwrap();
            handler.unpark();
            assert_eq!(read_line(&mut s), "second");
        });
    });
}

/// How a client of the "nothing lost" test ends its side.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Shuts down its write side after a random prefix of its data, while the echo of
    /// that prefix is still arriving; the rest is never sent.
    HalfCloseEarly,
    /// Shuts down its write side after all its data.
    HalfCloseAtEnd,
    /// Reads the whole echo back, then closes.
    CloseAfterEcho,
}

/// One client of the "nothing lost" test on copas: returns the bytes it had echoed.
fn copas_echo_client(addr: SocketAddr, seed: u64) -> io::Result<usize> {
    let mut rng = Rng::new(seed);
    let ending = [
        Ending::HalfCloseEarly,
        Ending::HalfCloseAtEnd,
        Ending::CloseAfterEcho,
    ][seed as usize % 3];
    let size = rng.range(0, 128 * 1024);
    let data = rng.bytes(size);
    let len = match ending {
        Ending::HalfCloseEarly => rng.range(0, data.len()),
        _ => data.len(),
    };
    let (mut rd, mut wr) = TcpStream::connect(addr)?.split();
    let to_send = data[..len].to_vec();
    let mut wrng = Rng::new(!seed);
    let writer = copas::spawn(move || -> io::Result<copas::WriteHalf> {
        let mut at = 0;
        while at < to_send.len() {
            let n = wrng.range(1, 8 * 1024).min(to_send.len() - at);
            wr.send(&to_send[at..at + n])?;
            at += n;
        }
        match ending {
            Ending::CloseAfterEcho => wr.flush()?,
            _ => wr.shutdown(Shutdown::Write)?,
        }
        Ok(wr)
    });
    let mut got = Vec::with_capacity(len);
    loop {
        if matches!(ending, Ending::CloseAfterEcho) && got.len() == len {
            break;
        }
        let piece = rd.receive_some(rng.range(1, 16 * 1024))?;
        if piece.is_empty() {
            break;
        }
        got.extend_from_slice(&piece);
        assert!(got.len() <= len, "client {seed}: more echoed than sent");
    }
    let wr = writer.join().expect("the writer task")?;
    assert_eq!(got.len(), len, "client {seed} ({ending:?}): echo length");
    assert!(
        got == data[..len],
        "client {seed} ({ending:?}): echo differs"
    );
    rd.reunite(wr).expect("halves of one stream").close()?;
    Ok(len)
}

/// One client of the "nothing lost" test on std threads (a writer thread and a reader).
fn std_echo_client(addr: SocketAddr, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let size = rng.range(0, 128 * 1024);
    let data = rng.bytes(size);
    let len = if seed.is_multiple_of(2) {
        rng.range(0, data.len())
    } else {
        data.len()
    };
    let mut s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let to_send = data[..len].to_vec();
    let writer = thread::spawn(move || {
        let mut wrng = Rng::new(!seed);
        let mut at = 0;
        while at < to_send.len() {
            let n = wrng.range(1, 8 * 1024).min(to_send.len() - at);
            w.write_all(&to_send[at..at + n]).unwrap();
            at += n;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), len, "std client {seed}: echo length");
    assert!(got == data[..len], "std client {seed}: echo differs");
    len
}

#[test]
fn nothing_lost_across_200_connections_with_random_chunks_and_half_closes() {
    const COPAS_CLIENTS: u64 = 192;
    const STD_CLIENTS: u64 = 8;
    guard(|| {
        let reported = Kinds::default();
        // Every client connects at once: the backlog must hold them all.
        let listener = common::listener_with_backlog(1024);
        let server = ServerBuilder::new()
            .on_error(record_kinds(&reported))
            .serve(listener, |mut conn: TcpStream| {
                let mut rng = Rng::new(u64::from(conn.peer_addr()?.port()));
                loop {
                    let data = conn.receive_some(rng.range(1, 32 * 1024))?;
                    if data.is_empty() {
                        break;
                    }
                    conn.send(&data)?;
                }
                conn.close()
            })
            .unwrap();
        let addr = server.local_addr();
        let total = serve_during(&server, move || {
            let clients: Vec<_> = (0..COPAS_CLIENTS)
                .map(|seed| copas::spawn(move || copas_echo_client(addr, seed)))
                .collect();
            let std_clients = on_thread(move || {
                let threads: Vec<_> = (0..STD_CLIENTS)
                    .map(|i| thread::spawn(move || std_echo_client(addr, 1000 + i)))
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .sum::<usize>()
            });
            let mut total = std_clients;
            for (seed, c) in clients.into_iter().enumerate() {
                match c.join() {
                    Ok(Ok(n)) => total += n,
                    Ok(Err(e)) => panic!("client {seed} failed: {e}"),
                    Err(e) => e.into_panic(),
                }
            }
            total
        });
        assert!(total > 1024 * 1024, "only {total} bytes echoed");
        assert_eq!(
            server.accepted(),
            COPAS_CLIENTS + STD_CLIENTS,
            "every client was served"
        );
        assert_eq!(server.connections(), 0);
        assert!(reported.borrow().is_empty(), "{:?}", reported.borrow());
    });
}
