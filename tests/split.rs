//! A stream split into halves used by two tasks at once (Copas `close.lua` and friends).

mod common;

use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;

use common::guard;

#[test]
fn halves_read_and_write_concurrently() {
    guard(|| {
        let (conn, peer) = common::pair();
        // The peer echoes lines from a thread of its own.
        let echo = std::thread::spawn(move || {
            let mut w = peer.try_clone().unwrap();
            for line in BufReader::new(peer).lines() {
                let line = line.unwrap();
                writeln!(w, "{line}").unwrap();
            }
        });
        let (mut r, mut w) = conn.split();
        let reader = copas::spawn(move || -> io::Result<Vec<String>> {
            let mut got = Vec::new();
            while let Some(line) = r.receive_line()? {
                got.push(String::from_utf8(line.to_vec()).unwrap());
            }
            Ok(got)
        });
        let writer = copas::spawn(move || -> io::Result<()> {
            for i in 0..100 {
                w.send(format!("line {i}\n").as_bytes())?;
                if i % 10 == 0 {
                    copas::yield_now()?;
                }
            }
            w.shutdown(Shutdown::Write)
        });
        writer.join().unwrap().unwrap();
        let got = reader.join().unwrap().unwrap();
        assert_eq!(
            got,
            (0..100).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        echo.join().unwrap();
    });
}

/// Copas `close.lua`: closing the socket wakes the task blocked reading on it at once.
#[test]
fn closing_write_half_wakes_blocked_reader_with_error() {
    guard(|| {
        let (conn, _peer) = common::pair(); // the peer stays open and silent
        let (mut r, w) = conn.split();
        let reader = copas::spawn(move || r.receive_line().map(|_| ()));
        let closer = copas::spawn(move || {
            copas::yield_now().unwrap(); // the reader is blocked now
            w.close()
        });
        closer.join().unwrap().unwrap();
        let err = reader.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    });
}

#[test]
fn read_half_shutdown_wakes_blocked_writer_with_error() {
    guard(|| {
        let (conn, _peer) = common::pair(); // the peer never reads
        let (r, mut w) = conn.split();
        w.set_write_buffer_size(1024);
        let writer = copas::spawn(move || -> io::Result<()> {
            let chunk = vec![7u8; 64 * 1024];
            loop {
                w.send(&chunk)?;
            }
        });
        let stopper = copas::spawn(move || {
            // Let the writer fill the socket's buffers and block.
            for _ in 0..50 {
                copas::yield_now().unwrap();
            }
            r.shutdown(Shutdown::Both)
        });
        stopper.join().unwrap().unwrap();
        let err = writer.join().unwrap().unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe
            ),
            "{err:?}"
        );
    });
}

#[test]
fn halves_reunite_only_with_their_own() {
    guard(|| {
        let (a, _pa) = common::pair();
        let (b, _pb) = common::pair();
        let (ar, aw) = a.split();
        let (br, bw) = b.split();
        let copas::ReuniteError(ar, bw) = ar.reunite(bw).unwrap_err();
        let a = ar.reunite(aw).unwrap();
        let b = br.reunite(bw).unwrap();
        assert_ne!(a.local_addr().unwrap(), b.local_addr().unwrap());
    });
}
