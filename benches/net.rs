//! Socket micro-benchmarks: line framing with `TcpStream::receive_line` over a loopback
//! pair with many lines already buffered in the kernel, a full echo round trip between
//! two tasks of one thread, and a one-byte ping-pong over two pipes between two tasks
//! (`Fd`), side by side with the same ping-pong between two threads on blocking pipes.
//!
//! ```text
//! cargo bench --bench net
//! ```
//!
//! A run of `cargo bench --bench net -- "pipe ping-pong"` on the 2-core build machine
//! (with another build running, so noisy): 5.06 µs per round trip for two copas tasks on
//! `Fd`s against 11.73 µs for two threads on blocking pipes, a ratio of 0.43.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A connected loopback pair: a blocking std client and the accepted side wrapped in copas.
fn pair() -> (StdStream, copas::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, copas::TcpStream::from_std(server).unwrap())
}

/// Lines per chunk written by the client; 16 KiB of 64-byte lines fits the loopback
/// socket buffers, so the client's blocking write never waits for the reader.
const LINES_PER_CHUNK: u64 = 256;

fn line_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("receive_line");
    for len in [16usize, 64, 1024] {
        let line_count = if len > 64 { 16 } else { LINES_PER_CHUNK };
        let mut line = vec![b'x'; len - 1];
        line.push(b'\n');
        let chunk: Vec<u8> = line.repeat(line_count as usize);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len} B lines, buffered"), |b| {
            let (mut client, mut conn) = pair();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    client.write_all(&chunk).unwrap();
                    let n = left.min(line_count);
                    // Outside a task, receive_line drives the loop itself if it must wait;
                    // here the data is already in the kernel, so it never waits.
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(conn.receive_line().unwrap().unwrap());
                    }
                    total += start.elapsed();
                    // Drain the rest of the chunk untimed.
                    for _ in n..line_count {
                        conn.receive_line().unwrap().unwrap();
                    }
                    left -= n;
                }
                total
            });
        });
    }
    g.finish();
}

/// One 64-byte echo round trip between a client task and a server task on one thread:
/// send, loop flush, readiness, receive_line on both sides.
fn echo_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("echo");
    g.throughput(Throughput::Elements(1));
    g.bench_function("64 B round trip, client and server tasks", |b| {
        b.iter_custom(|iters| {
            let server = copas::add_server("127.0.0.1:0", |mut conn: copas::TcpStream| {
                while let Some(line) = conn.receive_line()? {
                    conn.send(&line)?;
                    conn.send(b"\n")?;
                }
                Ok(())
            })
            .unwrap();
            let addr = server.local_addr();
            let client = copas::spawn(move || {
                let mut s = copas::TcpStream::connect(addr).unwrap();
                let msg = [b'x'; 63];
                let start = Instant::now();
                for _ in 0..iters {
                    s.send(&msg).unwrap();
                    s.send(b"\n").unwrap();
                    black_box(s.receive_line().unwrap().unwrap());
                }
                let elapsed = start.elapsed();
                server.stop();
                elapsed
            });
            copas::run().unwrap();
            client.join().unwrap()
        });
    });
    g.finish();
}

/// One-byte ping-pong over two pipes: two copas tasks on `Fd`s (each read suspends the
/// task until the other writes), and, as the baseline in the same run, two threads on
/// blocking pipes (each read blocks the thread in the kernel).
fn pipe_ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe ping-pong");
    g.throughput(Throughput::Elements(1));
    g.bench_function("copas Fd, two tasks", |b| {
        b.iter_custom(|iters| {
            let (r1, w1) = std::io::pipe().unwrap();
            let (r2, w2) = std::io::pipe().unwrap();
            let (mut r1, mut w1) = (copas::Fd::new(r1).unwrap(), copas::Fd::new(w1).unwrap());
            let (mut r2, mut w2) = (copas::Fd::new(r2).unwrap(), copas::Fd::new(w2).unwrap());
            copas::spawn(move || {
                let mut buf = [0u8; 1];
                for _ in 0..iters {
                    r1.read_exact(&mut buf).unwrap();
                    w2.write_all(&buf).unwrap();
                }
            });
            let ping = copas::spawn(move || {
                let mut buf = [7u8; 1];
                let start = Instant::now();
                for _ in 0..iters {
                    w1.write_all(&buf).unwrap();
                    r2.read_exact(&mut buf).unwrap();
                }
                start.elapsed()
            });
            copas::run().unwrap();
            ping.join().unwrap()
        });
    });
    g.bench_function("std blocking pipes, two threads", |b| {
        b.iter_custom(|iters| {
            let (mut r1, mut w1) = std::io::pipe().unwrap();
            let (mut r2, mut w2) = std::io::pipe().unwrap();
            let pong = std::thread::spawn(move || {
                let mut buf = [0u8; 1];
                for _ in 0..iters {
                    r1.read_exact(&mut buf).unwrap();
                    w2.write_all(&buf).unwrap();
                }
            });
            let mut buf = [7u8; 1];
            let start = Instant::now();
            for _ in 0..iters {
                w1.write_all(&buf).unwrap();
                r2.read_exact(&mut buf).unwrap();
            }
            let elapsed = start.elapsed();
            pong.join().unwrap();
            elapsed
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = line_framing, echo_round_trip, pipe_ping_pong
}
criterion_main!(benches);
