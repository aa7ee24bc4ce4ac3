//! The load generator, run as its own process (`copas-bench load ...`) so that its
//! descriptors and CPU time are apart from the server's and from the driver's. It also
//! drives any running server on its own: `copas-bench load --addr HOST:PORT --mode M`.
//!
//! Modes:
//! - `echo`: each connection sends one line of `size` bytes (ending in `\n`) and expects it
//!   back. Closed loop by default: the next line goes out once the whole echo is back.
//!   With `--rate R` it is an open loop: R requests per second in total, each connection
//!   sending on a fixed schedule whether or not the previous answers are back (lines are
//!   pipelined), and latency counted from the *scheduled* send time, so that a server
//!   that stalls is charged for every request it delayed (no coordinated omission).
//! - `http`: the same loops with `GET / HTTP/1.1` keep-alive requests; a response is
//!   complete when its head and `Content-Length` body have arrived.
//! - `churn`: a new connection per round trip (connect, one request, one answer, close),
//!   from `--connections` concurrent clients; `--protocol http` sends a
//!   `Connection: close` GET instead of an echo line.
//! - `tls-echo` and `tls-handshake`: see [`crate::tls`].
//!
//! `--send TEXT` replaces the echo line by `TEXT\n` and counts any one line back as the
//! answer, so the echo, open and churn loops drive any line protocol (`PING` → `PONG`).
//! `--server-pid PID` samples that process in `/proc` at the window's edges and adds its
//! CPU per request to the summary.
//!
//! Connections of the echo and http loops are spread over `--threads` threads, each with
//! its own level-triggered epoll loop. Only requests sent (closed loop) or scheduled (open
//! loop) inside the measured window count, and all their latencies are kept.
//!
//! It talks to the driver through stdout lines: `measure` when the measured window opens,
//! `end` when it closes, then `result key=value...` and a human-readable `summary: ...`.
//! In idle mode (`--hold`) it prints `ready` once every connection has made one round
//! trip, and holds them until its stdin closes.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::epoll::{self, Epoll, TimerFd, ERR_HUP, IN, OUT};

/// What the load generator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Echo,
    Http,
    Churn,
    TlsEcho,
    TlsHandshake,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "echo" => Ok(Mode::Echo),
            "http" => Ok(Mode::Http),
            "churn" => Ok(Mode::Churn),
            "tls-echo" => Ok(Mode::TlsEcho),
            "tls-handshake" => Ok(Mode::TlsHandshake),
            other => Err(format!(
                "unknown mode '{other}' (echo, http, churn, tls-echo, tls-handshake)"
            )),
        }
    }
}

/// The request protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// A line of `size` bytes, echoed back.
    Echo,
    /// `GET /`, answered by a response with a `Content-Length`.
    Http,
    /// A given line, answered by any one line.
    Line,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "echo" => Ok(Protocol::Echo),
            "http" => Ok(Protocol::Http),
            other => Err(format!("unknown protocol '{other}' (echo, http)")),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) mode: Mode,
    /// For `churn`: what each connection sends.
    pub(crate) protocol: Protocol,
    pub(crate) connections: usize,
    pub(crate) size: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) threads: usize,
    pub(crate) idle: bool,
    /// Open loop: requests per second in total.
    pub(crate) rate: Option<f64>,
    /// Stop after this many requests in total (closed loop), instead of after a duration.
    pub(crate) count: Option<u64>,
    /// TLS: the PEM file of the CA (here: the self-signed certificate) to trust.
    pub(crate) ca: Option<PathBuf>,
    /// TLS: the name the certificate must carry.
    pub(crate) server_name: String,
    /// `--send`: the line to send instead of the echo message (without its `\n`).
    pub(crate) send: Option<String>,
    /// `--server-pid`: the server process to sample.
    pub(crate) server_pid: Option<u32>,
}

/// The outcome of a measured window.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// Requests (round trips, connects, handshakes) completed in the window.
    pub(crate) round_trips: u64,
    /// The window's length in seconds.
    pub(crate) seconds: f64,
    /// Latency percentiles in nanoseconds.
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    /// Connections that failed (closed or reset by the server, connect errors), and in
    /// the open loop requests scheduled in the window that got no answer in time.
    pub(crate) errors: u64,
    /// Open loop: the offered rate, requests per second.
    pub(crate) offered: f64,
    /// The first error seen, for the report.
    pub(crate) first_error: String,
}

impl LoadResult {
    pub(crate) fn to_line(&self) -> String {
        format!(
            "result rt={} secs={:.6} p50={} p99={} p999={} max={} errors={} offered={:.1} error={}",
            self.round_trips,
            self.seconds,
            self.p50,
            self.p99,
            self.p999,
            self.max,
            self.errors,
            self.offered,
            self.first_error.replace(char::is_whitespace, "_")
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
                "offered" => r.offered = v.parse().ok()?,
                "error" => r.first_error = v.replace('_', " "),
                _ => {}
            }
        }
        Some(r)
    }

    /// A line for people.
    pub(crate) fn summary(&self, mode: Mode) -> String {
        let what = match mode {
            Mode::Echo | Mode::TlsEcho => "round trips/s",
            Mode::Http => "requests/s",
            Mode::Churn => "connects/s",
            Mode::TlsHandshake => "handshakes/s",
        };
        let mut s = format!(
            "summary: {:.0} {what}{}; latency p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs; {} errors",
            self.round_trips as f64 / self.seconds.max(1e-9),
            if self.offered > 0.0 {
                format!(" (offered {:.0}/s)", self.offered)
            } else {
                String::new()
            },
            self.p50 as f64 / 1e3,
            self.p99 as f64 / 1e3,
            self.p999 as f64 / 1e3,
            self.max as f64 / 1e3,
            self.errors
        );
        if !self.first_error.is_empty() {
            s.push_str(&format!(" (first: {})", self.first_error));
        }
        s
    }
}

/// Latency samples and counters of one load thread.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) round_trips: u64,
    pub(crate) errors: u64,
    pub(crate) latencies: Vec<u32>,
    pub(crate) first_error: Option<String>,
}

impl Tally {
    pub(crate) fn record(&mut self, d: Duration) {
        self.round_trips += 1;
        self.latencies
            .push(u32::try_from(d.as_nanos()).unwrap_or(u32::MAX));
    }

    pub(crate) fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.round_trips += other.round_trips;
        self.errors += other.errors;
        self.latencies.extend_from_slice(&other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub(crate) fn finish(mut self, seconds: f64, offered: f64) -> LoadResult {
        let lat = &mut self.latencies;
        lat.sort_unstable();
        let pct = |p: f64| -> u64 {
            if lat.is_empty() {
                return 0;
            }
            let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
            u64::from(lat[rank - 1])
        };
        LoadResult {
            round_trips: self.round_trips,
            seconds,
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            max: lat.last().copied().map_or(0, u64::from),
            errors: self.errors,
            offered,
            first_error: self.first_error.unwrap_or_default(),
        }
    }
}

pub(crate) fn message(size: usize) -> Vec<u8> {
    let mut m = vec![b'x'; size.max(1)];
    let last = m.len() - 1;
    m[last] = b'\n';
    m
}

const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const HTTP_GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/// The server process to sample at `measure` and `end`, and its samples.
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
static SERVER_SAMPLES: std::sync::Mutex<Vec<Duration>> = std::sync::Mutex::new(Vec::new());

/// The bytes of one request.
fn request_bytes(cfg: &LoadConfig, proto: Protocol) -> Vec<u8> {
    match proto {
        Protocol::Echo => message(cfg.size),
        Protocol::Http if cfg.mode == Mode::Churn => HTTP_GET_CLOSE.to_vec(),
        Protocol::Http => HTTP_GET.to_vec(),
        Protocol::Line => {
            let mut v = cfg.send.clone().unwrap_or_default().into_bytes();
            v.push(b'\n');
            v
        }
    }
}

pub(crate) fn say(line: &str) {
    if let (Some(&pid), "measure" | "end") = (SERVER_PID.get(), line) {
        if let Ok(sample) = crate::procfs::sample(pid) {
            if let Ok(mut v) = SERVER_SAMPLES.lock() {
                v.push(sample.cpu);
            }
        }
    }
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
    if let Some(pid) = cfg.server_pid {
        crate::procfs::sample(pid).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("--server-pid {pid}: cannot read /proc/{pid}: {e}"),
            )
        })?;
        let _ = SERVER_PID.set(pid);
    }
    let result = match cfg.mode {
        Mode::Echo | Mode::Http => run_loops(cfg)?,
        Mode::Churn => run_churn(cfg)?,
        Mode::TlsEcho | Mode::TlsHandshake => crate::tls::run_load(cfg)?,
    };
    say(&result.to_line());
    let mut summary = result.summary(cfg.mode);
    if let Ok(v) = SERVER_SAMPLES.lock() {
        if let [t0, t1] = v[..] {
            let cpu = t1.saturating_sub(t0);
            summary.push_str(&format!(
                "; server CPU {:.2} µs per request ({:.0}% of a core)",
                cpu.as_secs_f64() * 1e6 / result.round_trips.max(1) as f64,
                cpu.as_secs_f64() * 100.0 / result.seconds.max(1e-9)
            ));
        }
    }
    say(&summary);
    Ok(())
}

pub(crate) fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Says `measure` at `warm_end` and `end` at `end`.
pub(crate) fn announce_window(warm_end: Instant, end: Instant) {
    sleep_until(warm_end);
    say("measure");
    sleep_until(end);
    say("end");
}

/// How a thread of the epoll loops knows when to stop.
struct Stop {
    warm_end: Instant,
    end: Instant,
    /// Counted mode: requests left to start, shared by all threads.
    left: Option<Arc<AtomicU64>>,
}

fn run_loops(cfg: &LoadConfig) -> io::Result<LoadResult> {
    let proto = match (cfg.mode, &cfg.send) {
        (Mode::Http, _) => Protocol::Http,
        (_, Some(_)) => Protocol::Line,
        _ => Protocol::Echo,
    };
    let request: Arc<Vec<u8>> = Arc::new(request_bytes(cfg, proto));
    let n_groups = cfg.threads.clamp(1, cfg.connections.max(1));
    let mut groups: Vec<Vec<(usize, TcpStream)>> = (0..n_groups).map(|_| Vec::new()).collect();
    for i in 0..cfg.connections.max(1) {
        let s = connect(cfg.addr)
            .map_err(|e| io::Error::new(e.kind(), format!("connection {}: connect: {e}", i + 1)))?;
        s.set_nonblocking(true)?;
        groups[i % n_groups].push((i, s));
    }
    let start = Instant::now();
    let (warm_end, end) = if cfg.count.is_some() {
        (start, start + Duration::from_secs(24 * 3600))
    } else {
        (start + cfg.warmup, start + cfg.warmup + cfg.duration)
    };
    let left = cfg.count.map(|n| Arc::new(AtomicU64::new(n)));
    let schedule = cfg.rate.map(|r| Schedule {
        interval: Duration::from_secs_f64(cfg.connections.max(1) as f64 / r.max(1e-3)),
        total: cfg.connections.max(1),
        start,
    });
    let handles: Vec<_> = groups
        .into_iter()
        .map(|conns| {
            let request = request.clone();
            let stop = Stop {
                warm_end,
                end,
                left: left.clone(),
            };
            std::thread::spawn(move || drive(conns, proto, &request, &stop, schedule))
        })
        .collect();
    let t_measure = if cfg.count.is_some() {
        say("measure");
        Instant::now()
    } else {
        announce_window(warm_end, end);
        warm_end
    };
    let mut tally = Tally::default();
    let mut open = Vec::new();
    for h in handles {
        let (t, clients) = h
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))??;
        tally.merge(t);
        open.push(clients);
    }
    let seconds = if cfg.count.is_some() {
        say("end");
        t_measure.elapsed().as_secs_f64()
    } else {
        cfg.duration.as_secs_f64()
    };
    // Keep the connections open a little longer: the driver samples the server's memory
    // and threads when it reads `end`, and they must still be there.
    std::thread::sleep(Duration::from_millis(100));
    drop(open);
    Ok(tally.finish(seconds, cfg.rate.unwrap_or(0.0)))
}

/// The open loop's fixed schedule: connection `g` of `total` sends at
/// `start + interval * (k + g / total)` for k = 0, 1, 2, ...
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval: Duration,
    total: usize,
    start: Instant,
}

/// A request pipeline's output beyond this many unsent bytes means the server stopped
/// reading: the open loop counts further scheduled requests as errors instead of
/// buffering without bound.
const MAX_UNSENT: usize = 1 << 20;
/// After the window, how long the open loop waits for answers to requests it scheduled
/// inside the window.
const DRAIN: Duration = Duration::from_secs(1);
const TIMER: u64 = u64::MAX;

struct Client {
    stream: TcpStream,
    /// Requests not yet written, from `tx_off`.
    tx: Vec<u8>,
    tx_off: usize,
    /// Registered for `OUT` too.
    want_out: bool,
    /// HTTP: received bytes not yet parsed.
    rx: Vec<u8>,
    /// Echo: bytes received of the answer at the front.
    rx_echo: usize,
    /// Send (closed loop) or scheduled (open loop) times of requests not answered yet.
    inflight: VecDeque<Instant>,
    /// Open loop: when the next request is due.
    next_due: Instant,
    alive: bool,
}

impl Client {
    fn enqueue(&mut self, request: &[u8], at: Instant) {
        if self.tx_off == self.tx.len() {
            self.tx.clear();
            self.tx_off = 0;
        }
        self.tx.extend_from_slice(request);
        self.inflight.push_back(at);
    }

    /// Writes what is unsent; returns whether it is all out.
    fn flush(&mut self) -> io::Result<bool> {
        while self.tx_off < self.tx.len() {
            match epoll::write(self.stream.as_raw_fd(), &self.tx[self.tx_off..]) {
                Ok(n) => self.tx_off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Takes complete answers out of the received bytes; returns how many.
    fn answers(&mut self, proto: Protocol, req_len: usize, got: &[u8]) -> io::Result<usize> {
        match proto {
            Protocol::Echo => {
                self.rx_echo += got.len();
                let n = self.rx_echo / req_len;
                self.rx_echo -= n * req_len;
                Ok(n)
            }
            Protocol::Line => Ok(got.iter().filter(|&&b| b == b'\n').count()),
            Protocol::Http => {
                self.rx.extend_from_slice(got);
                let mut n = 0;
                let mut at = 0;
                while let Some(len) = http_response_len(&self.rx[at..])? {
                    at += len;
                    n += 1;
                }
                self.rx.drain(..at);
                Ok(n)
            }
        }
    }
}

/// The length of the complete HTTP response at the front of `buf` (head plus
/// `Content-Length` body), `None` if it is not all there yet.
pub(crate) fn http_response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad HTTP response: {e}"),
            ))
        }
    };
    if resp.code != Some(200) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("HTTP status {}", resp.code.unwrap_or(0)),
        ));
    }
    let body = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP response without Content-Length",
            )
        })?;
    Ok((buf.len() >= head + body).then_some(head + body))
}

fn fail(c: &mut Client, tally: &mut Tally, e: &dyn std::fmt::Display) {
    c.alive = false;
    tally.error(|| e.to_string());
}

/// One load thread: a closed or open loop over its connections until `end` (counted
/// mode: until the shared count runs out and every answer is in).
fn drive(
    conns: Vec<(usize, TcpStream)>,
    proto: Protocol,
    request: &[u8],
    stop: &Stop,
    schedule: Option<Schedule>,
) -> io::Result<(Tally, Vec<Client>)> {
    if schedule.is_some() {
        epoll::tight_timer_slack();
    }
    let mut ep = Epoll::new(conns.len().clamp(1, 1024) + 1)?;
    let timer = TimerFd::new()?;
    ep.add(timer.as_fd(), IN, TIMER)?;
    let mut clients: Vec<Client> = Vec::with_capacity(conns.len());
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let take_one = |stop: &Stop| -> bool {
        match &stop.left {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    };
    let now = Instant::now();
    for (i, (g, stream)) in conns.into_iter().enumerate() {
        ep.add(stream.as_fd(), IN, i as u64)?;
        let next_due = schedule.map_or(now, |s| {
            s.start + s.interval.mul_f64(g as f64 / s.total as f64)
        });
        clients.push(Client {
            stream,
            tx: Vec::with_capacity(request.len() * 4),
            tx_off: 0,
            want_out: false,
            rx: Vec::new(),
            rx_echo: 0,
            inflight: VecDeque::new(),
            next_due,
            alive: true,
        });
    }
    if schedule.is_none() {
        for (i, c) in clients.iter_mut().enumerate() {
            if take_one(stop) {
                c.enqueue(request, Instant::now());
                match c.flush() {
                    Ok(true) => {}
                    Ok(false) => {
                        c.want_out = true;
                        ep.modify(c.stream.as_fd(), IN | OUT, i as u64)?;
                    }
                    Err(e) => fail(c, &mut tally, &e),
                }
            }
        }
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let drain_end = stop.end + DRAIN;
    loop {
        let now = Instant::now();
        if schedule.is_none() && now >= stop.end {
            break;
        }
        if stop.left.is_some() && clients.iter().all(|c| !c.alive || c.inflight.is_empty()) {
            break;
        }
        if let Some(s) = schedule {
            if now >= drain_end
                || (now >= stop.end
                    && clients.iter().all(|c| {
                        // A thread that wakes late must still send what was due
                        // inside the window before it may stop.
                        !c.alive
                            || (c.next_due >= stop.end
                                && c.inflight.front().is_none_or(|&t| t >= stop.end))
                    }))
            {
                break;
            }
            // Send everything due; arm the timer for the earliest next request.
            let mut earliest = drain_end;
            for (i, c) in clients.iter_mut().enumerate() {
                if !c.alive {
                    continue;
                }
                while c.next_due <= now && c.next_due < stop.end {
                    if c.tx.len() - c.tx_off > MAX_UNSENT {
                        if c.next_due >= stop.warm_end {
                            tally.error(|| "the server stopped reading".to_owned());
                        }
                    } else {
                        c.enqueue(request, c.next_due);
                    }
                    c.next_due += s.interval;
                }
                if c.next_due < stop.end {
                    earliest = earliest.min(c.next_due);
                }
                if !c.want_out && c.tx_off < c.tx.len() {
                    match c.flush() {
                        Ok(true) => {}
                        Ok(false) => {
                            c.want_out = true;
                            ep.modify(c.stream.as_fd(), IN | OUT, i as u64)?;
                        }
                        Err(e) => fail(c, &mut tally, &e),
                    }
                }
            }
            timer.set(earliest.saturating_duration_since(Instant::now()))?;
        }
        let n = ep.wait(10)?;
        for i in 0..n {
            let ev = ep.event(i);
            if ev.token == TIMER {
                timer.drain();
                continue;
            }
            let idx = ev.token as usize;
            let c = &mut clients[idx];
            if !c.alive {
                continue;
            }
            if ev.events & OUT != 0 && c.want_out {
                match c.flush() {
                    Ok(true) => {
                        c.want_out = false;
                        ep.modify(c.stream.as_fd(), IN, idx as u64)?;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        fail(c, &mut tally, &e);
                        continue;
                    }
                }
            }
            if ev.events & (IN | ERR_HUP) == 0 {
                continue;
            }
            let got = match epoll::read(c.stream.as_raw_fd(), &mut scratch) {
                Ok(0) => {
                    fail(c, &mut tally, &"the server closed a connection");
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fail(c, &mut tally, &e);
                    continue;
                }
            };
            let answered = match c.answers(proto, request.len(), &scratch[..got]) {
                Ok(n) => n,
                Err(e) => {
                    fail(c, &mut tally, &e);
                    continue;
                }
            };
            let done = Instant::now();
            for _ in 0..answered {
                let Some(at) = c.inflight.pop_front() else {
                    fail(c, &mut tally, &"an answer nobody asked for");
                    break;
                };
                let counted =
                    at >= stop.warm_end && at < stop.end && (schedule.is_some() || done < stop.end);
                if counted {
                    tally.record(done.duration_since(at));
                }
            }
            if schedule.is_none() && answered > 0 && c.alive {
                // Closed loop: the next request goes out now.
                if take_one(stop) {
                    c.enqueue(request, done);
                }
                match c.flush() {
                    Ok(true) => {}
                    Ok(false) => {
                        if !c.want_out {
                            c.want_out = true;
                            ep.modify(c.stream.as_fd(), IN | OUT, idx as u64)?;
                        }
                    }
                    Err(e) => fail(c, &mut tally, &e),
                }
            }
        }
    }
    if schedule.is_some() {
        let late = clients
            .iter()
            .flat_map(|c| c.inflight.iter())
            .filter(|&&t| t >= stop.warm_end && t < stop.end)
            .count();
        for _ in 0..late {
            tally.error(|| format!("no answer within {} s after the window", DRAIN.as_secs()));
        }
    }
    Ok((tally, clients))
}

/// Churn: `connections` clients, each a thread that connects, makes one round trip and
/// closes, again and again. Counts the cycles started inside the window and completed
/// before its end; latency is the whole cycle (connect to answer).
fn run_churn(cfg: &LoadConfig) -> io::Result<LoadResult> {
    let protocol = match (cfg.protocol, &cfg.send) {
        (Protocol::Echo, Some(_)) => Protocol::Line,
        (p, _) => p,
    };
    let request = Arc::new(request_bytes(cfg, protocol));
    let start = Instant::now();
    let warm_end = start + cfg.warmup;
    let end = warm_end + cfg.duration;
    let handles: Vec<_> = (0..cfg.connections.max(1))
        .map(|_| {
            let request = request.clone();
            let (addr, proto) = (cfg.addr, protocol);
            std::thread::spawn(move || churn_client(addr, proto, &request, warm_end, end))
        })
        .collect();
    announce_window(warm_end, end);
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(
            h.join()
                .map_err(|_| io::Error::other("a churn thread panicked"))?,
        );
    }
    Ok(tally.finish(cfg.duration.as_secs_f64(), 0.0))
}

fn churn_client(
    addr: SocketAddr,
    proto: Protocol,
    request: &[u8],
    warm_end: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            return tally;
        }
        match churn_once(addr, proto, request, &mut buf) {
            Ok(()) => {
                let done = Instant::now();
                if t0 >= warm_end && done < end {
                    tally.record(done - t0);
                }
            }
            Err(e) => {
                if t0 >= warm_end {
                    tally.error(|| e.to_string());
                }
                // Do not spin on a refusing server.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn churn_once(
    addr: SocketAddr,
    proto: Protocol,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    match proto {
        Protocol::Echo => {
            buf.resize(request.len(), 0);
            s.read_exact(buf)?;
        }
        Protocol::Line => {
            let mut r = io::BufReader::new(&mut s);
            buf.clear();
            if r.read_until(b'\n', buf)? == 0 || buf.last() != Some(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed before a whole line",
                ));
            }
        }
        Protocol::Http => {
            buf.clear();
            loop {
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed before a whole response",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
                if http_response_len(buf)?.is_some() {
                    break;
                }
            }
        }
    }
    // The client closes first (it keeps the TIME_WAIT; Linux reuses those on loopback,
    // net.ipv4.tcp_tw_reuse = 2).
    drop(s);
    Ok(())
}

/// Idle mode: opens every connection, makes one round trip on each (so the server has set
/// up whatever a served connection costs), says `ready` and holds them until stdin closes.
fn hold_idle(cfg: &LoadConfig) -> io::Result<()> {
    let msg = message(cfg.size);
    let mut conns = Vec::with_capacity(cfg.connections);
    let mut echo = vec![0u8; msg.len()];
    // Open in batches, one round trip each, so the server's backlog never overflows.
    let mut left = cfg.connections;
    let failed = |n: usize, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("connection {n}: {e} (the first {} were served)", n - 1),
        )
    };
    while left > 0 {
        let batch = left.min(64);
        let start = conns.len();
        for i in 0..batch {
            let s = connect(cfg.addr).map_err(|e| failed(start + i + 1, e))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            conns.push(s);
        }
        for (i, s) in conns[start..].iter_mut().enumerate() {
            s.write_all(&msg).map_err(|e| failed(start + i + 1, e))?;
        }
        for (i, s) in conns[start..].iter_mut().enumerate() {
            s.read_exact(&mut echo)
                .map_err(|e| failed(start + i + 1, e))?;
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
            offered: 5000.0,
            first_error: "connection reset by peer".to_owned(),
        };
        let back = LoadResult::parse(&r.to_line()).unwrap();
        assert_eq!(back.round_trips, 12345);
        assert_eq!(back.p50, 17_000);
        assert_eq!(back.p999, 2_000_000);
        assert_eq!(back.errors, 2);
        assert_eq!(back.first_error, "connection reset by peer");
        assert!((back.offered - 5000.0).abs() < 1e-9);
        assert!((back.seconds - 3.0).abs() < 1e-9);
        assert!(LoadResult::parse("measure").is_none());
    }

    #[test]
    fn message_ends_in_newline() {
        assert_eq!(message(4), b"xxx\n");
        assert_eq!(message(0), b"\n");
    }

    #[test]
    fn http_response_framing() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(http_response_len(one).unwrap(), Some(one.len()));
        assert_eq!(http_response_len(&one[..one.len() - 1]).unwrap(), None);
        assert_eq!(http_response_len(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(http_response_len(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(http_response_len(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(http_response_len(b"garbage\r\n\r\n").is_err());
    }

    /// The open loop against a real echo server on loopback: it answers at the offered
    /// rate, and every request scheduled in the window is answered.
    #[test]
    fn open_loop_keeps_its_schedule() {
        let addr = spawn_server(crate::serve_epoll::serve);
        let cfg = LoadConfig {
            addr,
            mode: Mode::Echo,
            protocol: Protocol::Echo,
            connections: 4,
            size: 64,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
            threads: 1,
            idle: false,
            rate: Some(2000.0),
            count: None,
            ca: None,
            server_name: String::new(),
            send: None,
            server_pid: None,
        };
        let r = run_loops(&cfg).unwrap();
        assert_eq!(r.errors, 0, "{}", r.first_error);
        // 2000/s over 0.5 s on 4 connections: each sends every 2 ms, offset by a
        // quarter period, so exactly 250 sends each fall in the window, each answered
        // (however late the load thread wakes).
        assert_eq!(r.round_trips, 1000);
        assert!(r.p50 > 0 && r.p50 <= r.p99 && r.p99 <= r.max);
    }

    #[test]
    fn counted_closed_loop_stops_at_the_count() {
        let addr = spawn_server(crate::serve_epoll::serve);
        let cfg = LoadConfig {
            addr,
            mode: Mode::Echo,
            protocol: Protocol::Echo,
            connections: 3,
            size: 16,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            threads: 2,
            idle: false,
            rate: None,
            count: Some(777),
            ca: None,
            server_name: String::new(),
            send: None,
            server_pid: None,
        };
        let r = run_loops(&cfg).unwrap();
        assert_eq!(r.round_trips, 777);
        assert_eq!(r.errors, 0);
    }

    fn spawn_server(serve: fn(&str) -> io::Result<()>) -> SocketAddr {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::thread::spawn(move || serve(&addr.to_string()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the server never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        addr
    }

    fn counted(addr: SocketAddr, mode: Mode, send: Option<&str>, n: u64) -> LoadConfig {
        LoadConfig {
            addr,
            mode,
            protocol: Protocol::Echo,
            connections: 5,
            size: 32,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            threads: 2,
            idle: false,
            rate: None,
            count: Some(n),
            ca: None,
            server_name: String::new(),
            send: send.map(str::to_owned),
            server_pid: None,
        }
    }

    /// HTTP mode against the epoll HTTP server: every keep-alive request is answered.
    #[test]
    fn http_mode_against_the_epoll_http_server() {
        let addr = spawn_server(crate::serve_epoll::serve_http);
        let r = run_loops(&counted(addr, Mode::Http, None, 500)).unwrap();
        assert_eq!((r.round_trips, r.errors), (500, 0), "{}", r.first_error);
    }

    /// `--send`: a given line, any one line back; in the loops and in churn.
    #[test]
    fn line_mode_counts_lines() {
        let addr = spawn_server(crate::serve_epoll::serve);
        let r = run_loops(&counted(addr, Mode::Echo, Some("PING"), 300)).unwrap();
        assert_eq!((r.round_trips, r.errors), (300, 0), "{}", r.first_error);
        let mut cfg = counted(addr, Mode::Churn, Some("PING"), 1);
        cfg.count = None;
        cfg.connections = 2;
        cfg.duration = Duration::from_millis(300);
        let r = run_churn(&cfg).unwrap();
        assert_eq!(r.errors, 0, "{}", r.first_error);
        assert!(r.round_trips > 0);
    }

    /// A server that answers with the wrong thing is an error, not a count.
    #[test]
    fn churn_reports_a_refusing_server() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // Nothing listens on `addr` any more: every connect is refused.
        let mut cfg = counted(addr, Mode::Churn, None, 1);
        cfg.count = None;
        cfg.connections = 1;
        cfg.duration = Duration::from_millis(200);
        let r = run_churn(&cfg).unwrap();
        assert_eq!(r.round_trips, 0);
        assert!(r.errors > 0);
        assert!(r.first_error.contains("refused"), "{}", r.first_error);
    }
}
