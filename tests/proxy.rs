//! `examples/proxy.rs`, the TCP forwarder, run as a child process between std clients and
//! a real upstream served by threads in this test: byte-exact forwarding of random data in
//! random chunks, half-close both ways, refused and resetting upstreams, and bounded
//! memory when a peer does not read.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "../examples/support/child.rs"]
mod child;

const TIMEOUT: Duration = Duration::from_secs(30);

fn proxy(upstream: SocketAddr) -> child::Server {
    let up = upstream.to_string();
    child::Server::start("proxy", &["--addr", "127.0.0.1:0", "--upstream", &up])
}

/// An upstream that runs `f` for each connection, in a thread of its own.
fn upstream(f: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let f = Arc::new(f);
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let f = f.clone();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            thread::spawn(move || f(s));
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// A small deterministic generator (xorshift64*), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Reads until EOF; an error (reset, timeout) fails the test.
#[track_caller]
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to EOF");
    v
}

/// Waits until `s` reports end of stream or a reset, as a promptly closed connection
/// does; a timeout fails.
#[track_caller]
fn assert_closed_soon(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

fn echo_upstream() -> SocketAddr {
    upstream(|mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

#[test]
fn random_data_in_random_chunks_arrives_byte_exact() {
    let server = proxy(echo_upstream());
    let clients: Vec<_> = (0..4u64)
        .map(|seed| {
            let addr = server.addr;
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                let data = Arc::new(rng.bytes(6 * 1024 * 1024 + seed as usize * 777));
                let mut s = connect(addr);
                let mut w = s.try_clone().unwrap();
                let sent = data.clone();
                let writer = thread::spawn(move || {
                    let mut at = 0;
                    while at < sent.len() {
                        let n = (1 + rng.below(70_000) as usize).min(sent.len() - at);
                        w.write_all(&sent[at..at + n]).unwrap();
                        at += n;
                        if rng.below(8) == 0 {
                            thread::sleep(Duration::from_micros(rng.below(2000)));
                        }
                    }
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let got = read_all(&mut s);
                writer.join().unwrap();
                assert_eq!(got.len(), data.len(), "seed {seed}");
                assert!(got == *data, "seed {seed}: the bytes differ");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn client_half_close_reaches_upstream_and_the_answer_still_comes_back() {
    // The upstream reads to EOF, then answers with what it counted and closes.
    let server = proxy(upstream(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .unwrap();
    }));
    let mut c = connect(server.addr);
    c.write_all(&vec![7u8; 100_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), b"got 100000 bytes");
}

#[test]
fn upstream_half_close_reaches_client_and_the_client_can_still_send() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = proxy(upstream(move |mut s| {
        s.write_all(b"hello, then EOF").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        tx.send(got).unwrap();
    }));
    let mut c = connect(server.addr);
    // The client sees the upstream's EOF while its own direction is still open...
    assert_eq!(read_all(&mut c), b"hello, then EOF");
    // ...and what it sends afterwards still reaches the upstream, then its EOF.
    c.write_all(b"goodbye").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), b"goodbye");
}

#[test]
fn refused_upstream_closes_the_client_promptly() {
    // A port that was just free: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = proxy(dead);
    for _ in 0..3 {
        let mut c = connect(server.addr);
        let _ = c.write_all(b"anyone there?");
        assert_closed_soon(&mut c);
    }
    assert!(server.is_running());
    let deadline = Instant::now() + TIMEOUT;
    while !server.stderr().contains("connection refused") {
        assert!(Instant::now() < deadline, "stderr: {}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stderr().contains("cannot connect 127.0.0.1:"));
}

/// Closes `s` with a reset (SO_LINGER 0).
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

#[test]
fn resetting_upstream_closes_the_client_promptly() {
    // The upstream reads a little, then resets.
    let server = proxy(upstream(|mut s| {
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        reset(s);
    }));
    // While the client is sending...
    let mut c = connect(server.addr);
    c.write_all(b"hello").unwrap();
    assert_closed_soon(&mut c);
    // ...and while it is idle, waiting for an answer that will never come.
    let mut c = connect(server.addr);
    c.write_all(b"12345").unwrap();
    let start = Instant::now();
    assert_closed_soon(&mut c);
    assert!(start.elapsed() < TIMEOUT);
}

#[test]
fn resetting_client_closes_the_upstream_connection() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = proxy(upstream(move |mut s| {
        let mut buf = [0u8; 1024];
        let mut total = 0;
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break "eof".to_owned(),
                Ok(n) => total += n,
                Err(e) => break format!("{:?}", e.kind()),
            }
        };
        tx.send((total, end)).unwrap();
    }));
    let mut c = connect(server.addr);
    c.write_all(b"abc").unwrap();
    thread::sleep(Duration::from_millis(100));
    reset(c);
    let (total, end) = rx
        .recv_timeout(TIMEOUT)
        .expect("the upstream side was closed");
    assert_eq!(total, 3);
    assert!(end == "eof" || end == "ConnectionReset", "{end}");
}

/// A client with a small receive window, so the kernel holds little for it.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(32 * 1024).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// The byte at offset `i` of the stream the flooding upstream sends.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

#[test]
fn a_client_that_does_not_read_holds_the_upstream_back() {
    const TOTAL: u64 = 96 * 1024 * 1024;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let server = proxy(upstream(move |mut s| {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        while at < TOTAL {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = pattern(at + j as u64);
            }
            if s.write_all(&chunk).is_err() {
                return;
            }
            at += chunk.len() as u64;
            w.store(at, Ordering::SeqCst);
        }
    }));
    let rss_before = server.rss_kib();
    let mut c = small_window_client(server.addr);
    // Wait until the upstream can write no more: the proxy stopped reading from it.
    let deadline = Instant::now() + TIMEOUT;
    let mut last = 0;
    let mut still_since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = written.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if last > 0 && still_since.elapsed() > Duration::from_millis(700) {
            break;
        }
        assert!(
            last < TOTAL,
            "the upstream wrote everything to a client that reads nothing"
        );
        assert!(Instant::now() < deadline, "the upstream never stalled");
    }
    // Kernel buffers on the way hold some MiB; the proxy itself holds at most ~160 KiB
    // per connection, so its RSS grows by far less than the 4 MiB allowed below.
    assert!(
        last < 48 * 1024 * 1024,
        "{last} bytes went into a non-reading client"
    );
    let rss = server.rss_kib();
    println!("stalled after {last} bytes; proxy RSS {rss_before} -> {rss} KiB");
    if rss_before > 0 {
        assert!(
            rss < rss_before + 4 * 1024,
            "proxy RSS grew from {rss_before} to {rss} KiB"
        );
    }
    // Now the client reads: everything arrives, in order, and the RSS stays bounded.
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    let mut max_rss = rss;
    while at < TOTAL {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {at} of {TOTAL} bytes");
        for (j, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(at + j as u64), "byte {}", at + j as u64);
        }
        at += n as u64;
        if at % (8 << 20) < n as u64 {
            max_rss = max_rss.max(server.rss_kib());
        }
    }
    if rss_before > 0 {
        assert!(
            max_rss < rss_before + 4 * 1024,
            "proxy RSS reached {max_rss} KiB"
        );
    }
}

#[test]
fn an_upstream_that_does_not_read_holds_the_client_back() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let (count_tx, count_rx) = std::sync::mpsc::channel();
    let server = proxy(upstream(move |mut s| {
        // Read nothing until released, then count everything to EOF.
        let _ = release_rx.lock().unwrap().recv();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) => panic!("{e}"),
            }
        }
        count_tx.send(total).unwrap();
    }));
    let rss_before = server.rss_kib();
    let c = connect(server.addr);
    c.set_write_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut w = &c;
    let chunk = vec![1u8; 64 * 1024];
    let mut sent = 0u64;
    // Write until a write makes no progress for 1.5 s.
    loop {
        match w.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 256 * 1024 * 1024, "the proxy took everything");
    }
    let rss = server.rss_kib();
    println!("stalled after {sent} bytes; proxy RSS {rss_before} -> {rss} KiB");
    if rss_before > 0 {
        assert!(
            rss < rss_before + 4 * 1024,
            "proxy RSS grew from {rss_before} to {rss} KiB"
        );
    }
    release_tx.send(()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(count_rx.recv_timeout(TIMEOUT).unwrap(), sent);
}
