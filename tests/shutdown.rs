//! Graceful shutdown: stop accepting, let handlers finish and output drain, cancel the rest,
//! and count every byte.

mod common;

use std::io::Read;
use std::net::TcpStream as StdStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::guard;

const PER_CLIENT: usize = 1 << 20;
const CLIENTS: usize = 16;

#[test]
fn graceful_shutdown_delivers_every_byte_and_cancels_the_idle() {
    guard(|| {
        let server = copas::ServerBuilder::new()
            .name("bulk")
            .serve("127.0.0.1:0", |mut conn| {
                if conn.receive_line()?.as_deref() == Some(&b"idle"[..]) {
                    // Waits for input that never comes: only the grace deadline ends it.
                    conn.receive_line()?;
                    return Ok(());
                }
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..PER_CLIENT / chunk.len() {
                    conn.send(&chunk)?;
                }
                // Dropped with output still buffered: the stream lingers to deliver it.
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let readers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = StdStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
                    std::io::Write::write_all(&mut s, b"go\n").unwrap();
                    // Read slowly at first so output is still buffered at shutdown.
                    let mut first = [0u8; 1024];
                    s.read_exact(&mut first).unwrap();
                    std::thread::sleep(Duration::from_millis(50));
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).unwrap();
                    first.len() + rest.len()
                })
            })
            .collect();
        let idle = std::thread::spawn(move || {
            let mut s = StdStream::connect(addr).unwrap();
            s.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
            std::io::Write::write_all(&mut s, b"idle\n").unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).map(|_| buf.len())
        });
        let srv = Rc::new(server);
        let s2 = srv.clone();
        let grace = Duration::from_millis(1500);
        let started = copas::spawn(move || {
            while s2.accepted() < (CLIENTS + 1) as u64 {
                copas::sleep(Duration::from_millis(1)).unwrap();
            }
            copas::shutdown(grace);
            Instant::now()
        });
        copas::run().unwrap();
        let shutdown_at = started.join().unwrap();
        assert!(srv.is_stopped());
        assert!(
            shutdown_at.elapsed() >= grace,
            "the idle handler was cancelled only at the deadline"
        );
        for r in readers {
            assert_eq!(r.join().unwrap(), PER_CLIENT);
        }
        // The idle client sees its connection closed (cancelled handler), not data.
        assert_eq!(idle.join().unwrap().unwrap(), 0);
        // The listener is closed.
        assert!(StdStream::connect(addr).is_err());
    });
}

#[test]
fn shutdown_returns_early_when_work_ends_before_grace() {
    guard(|| {
        copas::spawn(|| copas::sleep(Duration::from_millis(5)).unwrap());
        copas::spawn(|| copas::shutdown(Duration::from_secs(3600)));
        let start = Instant::now();
        copas::run().unwrap();
        assert!(start.elapsed() < Duration::from_secs(3600));
        assert!(copas::is_finished());
    });
}
