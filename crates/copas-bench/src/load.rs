//! The load generator, run as its own process (`copas-bench load ...`) so that its
//! descriptors and CPU time are apart from the server's and from the driver's.
//!
//! Closed loop: each connection sends one line of `size` bytes (ending in `\n`) and sends
//! the next only once the whole echo is back. Connections are spread over several threads,
//! each with its own level-triggered epoll loop. Only round trips that complete inside the
//! measured window count, and only their latencies are kept.
//!
//! It talks to the driver through stdout lines: `measure` when the measured window opens,
//! `end` when it closes, then `result key=value...`. In idle mode it prints `ready` once
//! every connection has made one round trip, and holds them until its stdin closes.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::epoll::{self, Epoll, ERR_HUP, IN, OUT};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: usize,
    pub(crate) size: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) threads: usize,
    pub(crate) idle: bool,
}

/// The outcome of a measured window.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// Round trips completed in the window.
    pub(crate) round_trips: u64,
    /// The window's length in seconds.
    pub(crate) seconds: f64,
    /// Latency percentiles in nanoseconds.
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    /// Connections that failed (closed or reset by the server, connect errors).
    pub(crate) errors: u64,
}

impl LoadResult {
    fn to_line(&self) -> String {
        format!(
            "result rt={} secs={:.6} p50={} p99={} p999={} max={} errors={}",
            self.round_trips, self.seconds, self.p50, self.p99, self.p999, self.max, self.errors
        )
    }

    /// Parses the `result ...` line.
    pub(crate) fn parse(line: &str) -> Option<LoadResult> {
        let rest = line.strip_prefix("result ")?;
        let mut r = LoadResult::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "rt" => r.round_trips = v.parse().ok()?,
                "secs" => r.seconds = v.parse().ok()?,
                "p50" => r.p50 = v.parse().ok()?,
                "p99" => r.p99 = v.parse().ok()?,
                "p999" => r.p999 = v.parse().ok()?,
                "max" => r.max = v.parse().ok()?,
                "errors" => r.errors = v.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }
}

fn message(size: usize) -> Vec<u8> {
    let mut m = vec![b'x'; size.max(1)];
    let last = m.len() - 1;
    m[last] = b'\n';
    m
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    // The driver reading these lines is the only consumer; if it is gone, so are we.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Runs the load generator and reports on stdout.
pub(crate) fn run(cfg: &LoadConfig) -> io::Result<()> {
    if cfg.idle {
        return hold_idle(cfg);
    }
    let msg = Arc::new(message(cfg.size));
    let mut groups: Vec<Vec<TcpStream>> = (0..cfg.threads.clamp(1, cfg.connections.max(1)))
        .map(|_| Vec::new())
        .collect();
    let n_groups = groups.len();
    for i in 0..cfg.connections {
        let s = connect(cfg.addr)?;
        s.set_nonblocking(true)?;
        groups[i % n_groups].push(s);
    }
    let warm_end = Instant::now() + cfg.warmup;
    let end = warm_end + cfg.duration;
    let handles: Vec<_> = groups
        .into_iter()
        .map(|conns| {
            let msg = msg.clone();
            std::thread::spawn(move || drive(conns, &msg, warm_end, end))
        })
        .collect();
    sleep_until(warm_end);
    say("measure");
    sleep_until(end);
    say("end");
    let mut lat: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut round_trips = 0;
    let mut open = Vec::new();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))??;
        round_trips += t.round_trips;
        errors += t.errors;
        lat.extend_from_slice(&t.latencies);
        open.push(t.clients);
    }
    // Keep the connections open a little longer: the driver samples the server's memory
    // and threads when it reads `end`, and they must still be there.
    std::thread::sleep(Duration::from_millis(200));
    drop(open);
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        u64::from(lat[rank - 1])
    };
    let result = LoadResult {
        round_trips,
        seconds: cfg.duration.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        max: lat.last().copied().map_or(0, u64::from),
        errors,
    };
    say(&result.to_line());
    Ok(())
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

struct ThreadResult {
    round_trips: u64,
    errors: u64,
    latencies: Vec<u32>,
    /// The connections, still open: the driver samples the server after `end`.
    clients: Vec<Client>,
}

struct Client {
    stream: TcpStream,
    /// How much of the current request has been written.
    written: usize,
    /// How much of the current echo has arrived.
    received: usize,
    sent_at: Instant,
    alive: bool,
}

impl Client {
    /// Writes the rest of the request; returns whether it is all out.
    fn push(&mut self, msg: &[u8]) -> io::Result<bool> {
        while self.written < msg.len() {
            match epoll::write(self.stream.as_raw_fd(), &msg[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// One load thread: a closed loop over its connections until `end`.
fn drive(
    conns: Vec<TcpStream>,
    msg: &[u8],
    warm_end: Instant,
    end: Instant,
) -> io::Result<ThreadResult> {
    let mut ep = Epoll::new(conns.len().clamp(1, 1024))?;
    let mut clients: Vec<Client> = Vec::with_capacity(conns.len());
    let mut out = ThreadResult {
        round_trips: 0,
        errors: 0,
        latencies: Vec::with_capacity(1 << 16),
        clients: Vec::new(),
    };
    for (i, stream) in conns.into_iter().enumerate() {
        ep.add(stream.as_fd(), IN, i as u64)?;
        clients.push(Client {
            stream,
            written: 0,
            received: 0,
            sent_at: Instant::now(),
            alive: true,
        });
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.sent_at = Instant::now();
        if !c.push(msg)? {
            ep.modify(c.stream.as_fd(), IN | OUT, i as u64)?;
        }
    }
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let left_ms = (end - now).as_millis().clamp(1, 10) as i32;
        let n = ep.wait(left_ms)?;
        for i in 0..n {
            let ev = ep.event(i);
            let idx = ev.token as usize;
            let c = &mut clients[idx];
            if !c.alive {
                continue;
            }
            if ev.events & OUT != 0 && c.written < msg.len() {
                match c.push(msg) {
                    Ok(true) => ep.modify(c.stream.as_fd(), IN, idx as u64)?,
                    Ok(false) => {}
                    Err(_) => {
                        c.alive = false;
                        out.errors += 1;
                        continue;
                    }
                }
            }
            if ev.events & (IN | ERR_HUP) == 0 {
                continue;
            }
            let got = match epoll::read(c.stream.as_raw_fd(), &mut scratch) {
                Ok(0) => {
                    c.alive = false;
                    out.errors += 1;
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.alive = false;
                    out.errors += 1;
                    continue;
                }
            };
            c.received += got;
            if c.received < msg.len() || c.written < msg.len() {
                continue;
            }
            // The whole echo is back: count it and send the next request.
            c.received -= msg.len();
            let done = Instant::now();
            if c.sent_at >= warm_end && done < end {
                out.round_trips += 1;
                let ns = done.duration_since(c.sent_at).as_nanos();
                out.latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
            }
            c.written = 0;
            c.sent_at = done;
            match c.push(msg) {
                Ok(true) => {}
                Ok(false) => ep.modify(c.stream.as_fd(), IN | OUT, idx as u64)?,
                Err(_) => {
                    c.alive = false;
                    out.errors += 1;
                }
            }
        }
    }
    out.clients = clients;
    Ok(out)
}

/// Idle mode: opens every connection, makes one round trip on each (so the server has set
/// up whatever a served connection costs), says `ready` and holds them until stdin closes.
fn hold_idle(cfg: &LoadConfig) -> io::Result<()> {
    let msg = message(cfg.size);
    let mut conns = Vec::with_capacity(cfg.connections);
    let mut echo = vec![0u8; msg.len()];
    // Open in batches, one round trip each, so the server's backlog never overflows.
    let mut left = cfg.connections;
    while left > 0 {
        let batch = left.min(64);
        let start = conns.len();
        for _ in 0..batch {
            conns.push(connect(cfg.addr)?);
        }
        for s in &mut conns[start..] {
            s.write_all(&msg)?;
        }
        for s in &mut conns[start..] {
            s.read_exact(&mut echo)?;
        }
        left -= batch;
    }
    say("ready");
    // Hold until the driver closes our stdin.
    let mut sink = String::new();
    while io::stdin().lock().read_line(&mut sink)? > 0 {
        sink.clear();
    }
    drop(conns);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_round_trips() {
        let r = LoadResult {
            round_trips: 12345,
            seconds: 3.0,
            p50: 17_000,
            p99: 45_000,
            p999: 2_000_000,
            max: 9_000_000,
            errors: 2,
        };
        let back = LoadResult::parse(&r.to_line()).unwrap();
        assert_eq!(back.round_trips, 12345);
        assert_eq!(back.p50, 17_000);
        assert_eq!(back.p999, 2_000_000);
        assert_eq!(back.errors, 2);
        assert!((back.seconds - 3.0).abs() < 1e-9);
        assert!(LoadResult::parse("measure").is_none());
    }

    #[test]
    fn message_ends_in_newline() {
        assert_eq!(message(4), b"xxx\n");
        assert_eq!(message(0), b"\n");
    }
}
