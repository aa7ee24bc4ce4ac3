//! The comparison: starts each server as a child process on a free loopback port, runs the
//! load generator (or `wrk`) against it as another child, samples both in `/proc` at the
//! edges of the measured window, and reports medians over several passes.
//!
//! Invariants: a fresh server process serves each cell, so no cell inherits another's
//! memory or warm caches; within a pass the servers of a section take turns (their order
//! rotates from pass to pass), so a slow drift of the machine spreads over all of them;
//! every child is killed and reaped when its guard drops, also on error; a server that is
//! absent (an example not written yet, a flag it lacks, a package not installed) is
//! skipped with a note, and a cell that fails is reported as failed, never as a number.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::load::LoadResult;
use crate::procfs::{self, Machine, ProcSample};
use crate::report;

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// `examples/echo.rs`.
    Copas,
    /// `examples/echo_threads.rs`.
    Threads,
    /// `copas-bench serve-tokio`.
    Tokio,
    /// `copas-bench serve-epoll`.
    Epoll,
    /// `copas-bench serve-may --workers 1`.
    May,
    /// `luajit crates/copas-bench/lua/echo.lua` (Debian's lua-copas and lua-socket).
    Lua,
    /// `examples/hooked_echo.rs`: `std::net` code under `copas-hook`.
    Hooked,
    /// `examples/echo.rs --threads 2`.
    CopasT2,
    /// `copas-bench serve-tokio --workers 2`.
    TokioMt2,
    /// `copas-bench serve-may --workers 2`.
    MayT2,
    /// `examples/http.rs`.
    CopasHttp,
    /// `examples/http_threads.rs`.
    ThreadsHttp,
    /// `copas-bench serve-tokio-http`.
    TokioHttp,
    /// `copas-bench serve-epoll-http`.
    EpollHttp,
    /// `copas-bench serve-may-http --workers 1` (may_minihttp).
    MayHttp,
    /// `examples/http.rs --threads 2`.
    CopasHttpT2,
    /// `copas-bench serve-tokio-http --workers 2`.
    TokioHttpMt2,
    /// `copas-bench serve-may-http --workers 2`.
    MayHttpT2,
    /// `examples/tls_echo.rs`.
    CopasTls,
    /// `copas-bench serve-tokio-tls`.
    TokioTls,
}

impl FromStr for ServerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ServerKind, String> {
        match s {
            "copas" => Ok(ServerKind::Copas),
            "threads" => Ok(ServerKind::Threads),
            "tokio" => Ok(ServerKind::Tokio),
            "epoll" => Ok(ServerKind::Epoll),
            "may" => Ok(ServerKind::May),
            "lua-copas" | "lua" => Ok(ServerKind::Lua),
            "copas-hook" | "hooked" => Ok(ServerKind::Hooked),
            other => Err(format!(
                "unknown echo server '{other}' (copas, threads, tokio, epoll, may, lua-copas, copas-hook)"
            )),
        }
    }
}

impl ServerKind {
    pub(crate) fn name(self) -> &'static str {
        use ServerKind::*;
        match self {
            Copas | CopasHttp | CopasTls => "copas",
            Threads | ThreadsHttp => "threads",
            Tokio | TokioHttp | TokioTls => "tokio",
            Epoll | EpollHttp => "epoll",
            May => "may",
            MayHttp => "may_minihttp",
            Lua => "lua-copas",
            Hooked => "copas-hook",
            CopasT2 | CopasHttpT2 => "copas ×2",
            TokioMt2 | TokioHttpMt2 => "tokio ×2",
            MayT2 => "may ×2",
            MayHttpT2 => "may_minihttp ×2",
        }
    }

    /// The echo server of the same family, which `--servers` names.
    pub(crate) fn family(self) -> ServerKind {
        use ServerKind::*;
        match self {
            Copas | CopasT2 | CopasHttp | CopasHttpT2 | CopasTls => Copas,
            Threads | ThreadsHttp => Threads,
            Tokio | TokioMt2 | TokioHttp | TokioHttpMt2 | TokioTls => Tokio,
            Epoll | EpollHttp => Epoll,
            May | MayT2 | MayHttp | MayHttpT2 => May,
            Lua => Lua,
            Hooked => Hooked,
        }
    }

    pub(crate) fn description(self) -> &'static str {
        use ServerKind::*;
        match self {
            Copas => "examples/echo.rs: copas, one thread, a coroutine per connection",
            Threads => "examples/echo_threads.rs: std::net, one OS thread per connection",
            Tokio => "tokio current_thread, one task per connection",
            Epoll => "hand-written level-triggered epoll loop (lower bound)",
            May => "may, 1 worker, one coroutine per connection",
            Lua => "Lua Copas (Debian lua-copas) on LuaJIT with LuaSocket, select()-based",
            Hooked => "examples/hooked_echo.rs: std::net code under copas-hook",
            CopasT2 => "examples/echo.rs --threads 2: one copas runtime per core",
            TokioMt2 => "tokio multi-thread, 2 workers",
            MayT2 => "may, 2 workers",
            CopasHttp => "examples/http.rs: copas, one thread",
            ThreadsHttp => "examples/http_threads.rs: one OS thread per connection",
            TokioHttp => "tokio current_thread, same parser and response as copas",
            EpollHttp => "hand-written epoll loop, same parser and response (lower bound)",
            MayHttp => "may_minihttp, 1 worker (its own parser; adds a Date header)",
            CopasHttpT2 => "examples/http.rs --threads 2",
            TokioHttpMt2 => "tokio multi-thread, 2 workers",
            MayHttpT2 => "may_minihttp, 2 workers",
            CopasTls => "examples/tls_echo.rs: copas with rustls",
            TokioTls => "tokio current_thread + tokio-rustls",
        }
    }
}

/// A part of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Echo,
    Mt2,
    Churn,
    Open,
    Http,
    Tls,
    Idle,
}

impl FromStr for Section {
    type Err = String;
    fn from_str(s: &str) -> Result<Section, String> {
        match s {
            "echo" => Ok(Section::Echo),
            "mt2" => Ok(Section::Mt2),
            "churn" => Ok(Section::Churn),
            "open" => Ok(Section::Open),
            "http" => Ok(Section::Http),
            "tls" => Ok(Section::Tls),
            "idle" => Ok(Section::Idle),
            other => Err(format!(
                "unknown section '{other}' (echo, mt2, churn, open, http, tls, idle)"
            )),
        }
    }
}

/// One table of the report: what was measured, with which load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Table {
    /// Closed-loop echo at this many connections, one server thread.
    Echo(usize),
    /// Closed-loop echo at this many connections, two server threads.
    EchoT2(usize),
    /// A new connection per echo round trip.
    Churn,
    /// Open-loop echo at this percentage of the server's own closed-loop peak.
    Open(f64),
    /// HTTP keep-alive hello, one server thread.
    Http,
    /// HTTP keep-alive hello, two server threads.
    HttpT2,
    /// TLS echo round trips on established connections.
    TlsEcho,
    /// Full TLS handshakes (plus one round trip) per connection.
    TlsHandshake,
}

/// The comparison's settings.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) connections: Vec<usize>,
    pub(crate) size: usize,
    pub(crate) idle: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) passes: usize,
    pub(crate) load_threads: usize,
    pub(crate) servers: Vec<ServerKind>,
    pub(crate) sections: Vec<Section>,
    pub(crate) open_connections: usize,
    pub(crate) open_loads: Vec<f64>,
    pub(crate) churn_clients: usize,
    pub(crate) http_connections: usize,
    pub(crate) tls_connections: usize,
    pub(crate) handshake_clients: usize,
    pub(crate) pin: bool,
    pub(crate) build: bool,
    pub(crate) quick: bool,
    pub(crate) out_md: PathBuf,
    pub(crate) out_svg: PathBuf,
}

/// One measured window of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadCell {
    pub(crate) load: LoadResult,
    /// Server CPU time in the window.
    pub(crate) server_cpu: Duration,
    /// Load generator CPU time in the window.
    pub(crate) load_cpu: Duration,
    /// Server at the end of the window.
    pub(crate) server_end: ProcSample,
    /// CPU used during the window by everything but the server and the load generator
    /// (other processes, kernel work charged to no process), in percent of one core.
    pub(crate) other_cpu_pct: f64,
    /// The server exited during the window (how), e.g. Lua Copas past its select() limit.
    pub(crate) server_died: Option<String>,
}

impl LoadCell {
    pub(crate) fn rps(&self) -> f64 {
        self.load.round_trips as f64 / self.load.seconds.max(1e-9)
    }

    /// Server CPU per round trip in microseconds.
    pub(crate) fn cpu_us_per_rt(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / (self.load.round_trips.max(1) as f64)
    }

    /// Server CPU use in percent of one core.
    pub(crate) fn server_cpu_pct(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 100.0 / self.load.seconds.max(1e-9)
    }

    /// Load generator CPU use in percent of one core.
    pub(crate) fn load_cpu_pct(&self) -> f64 {
        self.load_cpu.as_secs_f64() * 100.0 / self.load.seconds.max(1e-9)
    }
}

/// One idle-memory measurement.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdleCell {
    pub(crate) before: ProcSample,
    pub(crate) after: ProcSample,
    pub(crate) connections: usize,
    /// How long opening all connections (with one round trip each) took.
    pub(crate) setup: Duration,
}

impl IdleCell {
    /// Resident memory per held connection, in bytes.
    pub(crate) fn rss_per_conn(&self) -> f64 {
        (self.after.rss as f64 - self.before.rss as f64) / self.connections.max(1) as f64
    }
}

/// Everything measured in one run, per pass.
#[derive(Debug, Default)]
pub(crate) struct Measurements {
    /// `(table, server, cell)` for every pass.
    pub(crate) load: Vec<(Table, ServerKind, LoadCell)>,
    pub(crate) idle: Vec<(ServerKind, IdleCell)>,
    /// Cells that failed: `(table or None for idle, server, why)`.
    pub(crate) failed: Vec<(Option<Table>, ServerKind, String)>,
    /// Servers skipped for the whole run, and why.
    pub(crate) skipped: Vec<(ServerKind, String)>,
    /// Which tables ran and with which servers, in order.
    pub(crate) tables: Vec<(Table, Vec<ServerKind>)>,
    pub(crate) idle_servers: Vec<ServerKind>,
    /// How the HTTP rows were loaded.
    pub(crate) http_client: String,
}

/// Where the binaries are.
#[derive(Debug)]
struct Paths {
    root: PathBuf,
    examples: PathBuf,
    me: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

impl Paths {
    fn find() -> io::Result<Paths> {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(|| root.join("target"), |t| root.join(t));
        let tls_dir = target.join("copas-bench-tls");
        Ok(Paths {
            examples: target.join("release").join("examples"),
            me: std::env::current_exe()?,
            cert: tls_dir.join("cert.pem"),
            key: tls_dir.join("key.pem"),
            root,
        })
    }

    fn server_command(&self, kind: ServerKind, addr: SocketAddr, pin: bool) -> Command {
        use ServerKind::*;
        let ex = |name: &str| self.examples.join(name);
        let me = |args: &[&str]| {
            (
                self.me.clone(),
                args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        };
        let tls = vec![
            "--cert".to_owned(),
            self.cert.display().to_string(),
            "--key".to_owned(),
            self.key.display().to_string(),
        ];
        let t2 = vec!["--threads".to_owned(), "2".to_owned()];
        let (program, mut args): (PathBuf, Vec<String>) = match kind {
            Copas => (ex("echo"), vec![]),
            Threads => (ex("echo_threads"), vec![]),
            Tokio => me(&["serve-tokio"]),
            Epoll => me(&["serve-epoll"]),
            May => me(&["serve-may", "--workers", "1"]),
            Lua => (
                PathBuf::from("luajit"),
                vec![self
                    .root
                    .join("crates/copas-bench/lua/echo.lua")
                    .display()
                    .to_string()],
            ),
            Hooked => (ex("hooked_echo"), vec![]),
            CopasT2 => (ex("echo"), t2),
            TokioMt2 => me(&["serve-tokio", "--workers", "2"]),
            MayT2 => me(&["serve-may", "--workers", "2"]),
            CopasHttp => (ex("http"), vec![]),
            ThreadsHttp => (ex("http_threads"), vec![]),
            TokioHttp => me(&["serve-tokio-http"]),
            EpollHttp => me(&["serve-epoll-http"]),
            MayHttp => me(&["serve-may-http", "--workers", "1"]),
            CopasHttpT2 => (ex("http"), t2),
            TokioHttpMt2 => me(&["serve-tokio-http", "--workers", "2"]),
            MayHttpT2 => me(&["serve-may-http", "--workers", "2"]),
            CopasTls => (ex("tls_echo"), tls),
            TokioTls => {
                let (p, mut a) = me(&["serve-tokio-tls"]);
                a.extend(tls);
                (p, a)
            }
        };
        args.push("--addr".to_owned());
        args.push(addr.to_string());
        pinned(program, args, pin.then_some(0))
    }

    /// Whether `kind` can run here, or why not.
    fn available(&self, kind: ServerKind) -> Result<(), String> {
        use ServerKind::*;
        let example = |name: &str| -> Result<(), String> {
            if self.examples.join(name).is_file() {
                Ok(())
            } else if self
                .root
                .join("examples")
                .join(format!("{name}.rs"))
                .is_file()
            {
                Err(format!(
                    "examples/{name}.rs exists but target/release/examples/{name} was not built"
                ))
            } else {
                Err(format!("examples/{name}.rs does not exist yet"))
            }
        };
        let flag = |name: &str, flag: &str| -> Result<(), String> {
            example(name)?;
            let text = help_text(&self.examples.join(name))
                .map_err(|e| format!("examples/{name}.rs --help: {e}"))?;
            if text.contains(flag) {
                Ok(())
            } else {
                Err(format!(
                    "examples/{name}.rs has no {flag} flag yet (not in its --help)"
                ))
            }
        };
        match kind {
            Copas | CopasHttp => example(if kind == Copas { "echo" } else { "http" }),
            Threads => example("echo_threads"),
            ThreadsHttp => example("http_threads"),
            Hooked => example("hooked_echo"),
            CopasTls => example("tls_echo"),
            CopasT2 => flag("echo", "--threads"),
            CopasHttpT2 => flag("http", "--threads"),
            Lua => {
                let ok = Command::new("luajit")
                    .args(["-e", "require 'copas'; require 'socket'"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    Ok(())
                } else {
                    Err("luajit with lua-copas and lua-socket is not installed \
                         (apt-get install -y luajit lua-copas lua-socket)"
                        .to_owned())
                }
            }
            _ => Ok(()),
        }
    }
}

/// What `program --help` prints (stdout and stderr). A program that does not know
/// `--help` may start serving instead: it is killed after 3 s, and that is an error.
fn help_text(program: &Path) -> io::Result<String> {
    let mut child = Guard::spawn({
        let mut c = Command::new(program);
        // If it does not know `--help` and starts serving, let it take a free port.
        c.args(["--help", "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    })?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while child.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            return Err(io::Error::other(
                "it did not exit within 3 s (no --help: it started serving)",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut text = String::new();
    if let Some(mut out) = child.child.stdout.take() {
        io::Read::read_to_string(&mut out, &mut text)?;
    }
    if let Some(mut err) = child.child.stderr.take() {
        io::Read::read_to_string(&mut err, &mut text)?;
    }
    Ok(text)
}

fn pinned(program: PathBuf, args: Vec<String>, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

/// A child process that is killed and reaped when dropped.
struct Guard {
    child: Child,
}

impl Guard {
    fn spawn(mut cmd: Command) -> io::Result<Guard> {
        Ok(Guard {
            child: cmd.spawn()?,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it did.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> io::Result<SocketAddr> {
    // The port is free once this listener closes; the race with other programs taking it
    // in between is accepted (loopback, short window).
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn wait_ready(addr: SocketAddr, server: &mut Guard) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait()? {
            return Err(io::Error::other(format!(
                "server exited before listening: {status}"
            )));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Let the probe connection's handler end before measuring anything.
            std::thread::sleep(Duration::from_millis(50));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("server on {addr} never listened")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_server(paths: &Paths, kind: ServerKind, pin: bool) -> io::Result<(Guard, SocketAddr)> {
    let addr = free_addr()?;
    let mut cmd = paths.server_command(kind, addr, pin);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let mut guard = Guard::spawn(cmd)
        .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", kind.name())))?;
    wait_ready(addr, &mut guard)?;
    Ok((guard, addr))
}

fn load_command(paths: &Paths, opts: &Options, addr: SocketAddr, extra: &[String]) -> Command {
    let mut args = vec![
        "load".to_owned(),
        "--addr".to_owned(),
        addr.to_string(),
        "--size".to_owned(),
        opts.size.to_string(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = pinned(paths.me.clone(), args, opts.pin.then_some(1));
    cmd.stdout(Stdio::piped());
    cmd
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// The load generator's arguments for a table.
fn load_args(opts: &Options, paths: &Paths, table: Table, rate: Option<f64>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |k: &str, v: String| {
        a.push(k.to_owned());
        a.push(v);
    };
    push("--warmup", format!("{}", opts.warmup.as_secs_f64()));
    push("--duration", format!("{}", opts.duration.as_secs_f64()));
    push("--threads", opts.load_threads.to_string());
    match table {
        Table::Echo(c) | Table::EchoT2(c) => push("--connections", c.to_string()),
        Table::Open(_) => {
            push("--connections", opts.open_connections.to_string());
            push("--rate", format!("{:.1}", rate.unwrap_or(1.0)));
        }
        Table::Churn => {
            push("--mode", "churn".to_owned());
            push("--connections", opts.churn_clients.to_string());
        }
        Table::Http | Table::HttpT2 => {
            push("--mode", "http".to_owned());
            push("--connections", opts.http_connections.to_string());
        }
        Table::TlsEcho | Table::TlsHandshake => {
            let (mode, n) = if table == Table::TlsEcho {
                ("tls-echo", opts.tls_connections)
            } else {
                ("tls-handshake", opts.handshake_clients)
            };
            push("--mode", mode.to_owned());
            push("--connections", n.to_string());
            push("--ca", paths.cert.display().to_string());
        }
    }
    a
}

fn measure_load(
    paths: &Paths,
    opts: &Options,
    kind: ServerKind,
    table: Table,
    rate: Option<f64>,
) -> io::Result<LoadCell> {
    let (mut server, addr) = start_server(paths, kind, opts.pin)?;
    let mut cmd = load_command(paths, opts, addr, &load_args(opts, paths, table, rate));
    cmd.stdin(Stdio::null());
    let mut load = Guard::spawn(cmd)?;
    let stdout = load
        .child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut start: Option<(ProcSample, ProcSample, (u64, u64))> = None;
    let mut window = None;
    let mut cell = LoadCell::default();
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "measure" {
            start = Some((
                procfs::sample(server.pid())?,
                procfs::sample(load.pid())?,
                procfs::machine_ticks()?,
            ));
        } else if line == "end" {
            let (s0, l0, m0) = start.ok_or_else(|| io::Error::other("'end' before 'measure'"))?;
            // A server that died in the window has no /proc entry to sample any more.
            let s1 = procfs::sample(server.pid()).unwrap_or(s0);
            let l1 = procfs::sample(load.pid())?;
            let m1 = procfs::machine_ticks()?;
            cell.server_cpu = s1.cpu.saturating_sub(s0.cpu);
            cell.load_cpu = l1.cpu.saturating_sub(l0.cpu);
            cell.server_end = s1;
            window = Some((m0, m1));
        } else if let Some(r) = LoadResult::parse(&line) {
            result = Some(r);
        }
    }
    let status = load.child.wait()?;
    cell.load = result
        .ok_or_else(|| io::Error::other(format!("the load generator gave no result ({status})")))?;
    if let Some((m0, m1)) = window {
        cell.other_cpu_pct = other_cpu(m0, m1, cell.server_cpu + cell.load_cpu);
    }
    cell.server_died = server.exited();
    drop(server);
    Ok(cell)
}

/// Machine CPU busy beyond `ours` between two `/proc/stat` samples, in % of one core.
fn other_cpu(m0: (u64, u64), m1: (u64, u64), ours: Duration) -> f64 {
    let busy = m1.0.saturating_sub(m0.0) as f64;
    let total = m1.1.saturating_sub(m0.1).max(1) as f64;
    let hz = crate::epoll::clock_ticks_per_second() as f64;
    let wall = total / cores() / hz;
    let busy_pct = busy / total * 100.0 * cores();
    (busy_pct - ours.as_secs_f64() * 100.0 / wall.max(1e-9)).max(0.0)
}

/// An HTTP cell with `wrk`: a warm-up run, then the measured run with the server's CPU
/// sampled around it (wrk's own CPU comes from our children's times once it is reaped),
/// and its memory and threads near the end of the run, while wrk's connections are open.
fn measure_wrk(paths: &Paths, opts: &Options, kind: ServerKind) -> io::Result<LoadCell> {
    let (mut server, addr) = start_server(paths, kind, opts.pin)?;
    let url = format!("http://{addr}/");
    let secs = |d: Duration| format!("{}s", d.as_secs_f64().ceil().max(1.0) as u64);
    let wrk = |d: Duration| -> Command {
        let args = vec![
            "-t".to_owned(),
            opts.load_threads.to_string(),
            "-c".to_owned(),
            opts.http_connections.to_string(),
            "-d".to_owned(),
            secs(d),
            "--latency".to_owned(),
            url.clone(),
        ];
        let mut c = pinned(PathBuf::from("wrk"), args, opts.pin.then_some(1));
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    if opts.warmup >= Duration::from_millis(500) {
        wrk(opts.warmup).output()?;
    }
    let s0 = procfs::sample(server.pid())?;
    let c0 = procfs::children_cpu()?;
    let m0 = procfs::machine_ticks()?;
    let run = wrk(opts.duration).spawn()?;
    // Memory and threads while wrk's connections are open (CPU is taken around the run).
    std::thread::sleep(opts.duration.mul_f64(0.9));
    let during = procfs::sample(server.pid()).unwrap_or(s0);
    let out = run.wait_with_output()?;
    let m1 = procfs::machine_ticks()?;
    let c1 = procfs::children_cpu()?;
    let s1 = procfs::sample(server.pid()).unwrap_or(s0);
    let text = String::from_utf8_lossy(&out.stdout);
    let load = parse_wrk(&text).ok_or_else(|| {
        io::Error::other(format!(
            "could not read wrk's output ({}): {text}",
            out.status
        ))
    })?;
    let mut cell = LoadCell {
        load,
        server_cpu: s1.cpu.saturating_sub(s0.cpu),
        load_cpu: c1.saturating_sub(c0),
        server_end: ProcSample {
            cpu: s1.cpu,
            ..during
        },
        ..LoadCell::default()
    };
    cell.other_cpu_pct = other_cpu(m0, m1, cell.server_cpu + cell.load_cpu);
    cell.server_died = server.exited();
    Ok(cell)
}

/// `"610.35us"`, `"1.20ms"`, `"2.00s"` in nanoseconds.
fn wrk_time(v: &str) -> Option<u64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix("m") {
        (n, 60e9)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e9)
    } else {
        (v, 1e3)
    };
    Some((num.parse::<f64>().ok()? * scale) as u64)
}

/// Reads wrk 4's report (`--latency`): requests, seconds, p50/p99, errors. wrk gives no
/// p99.9 (0 here, shown as "–").
pub(crate) fn parse_wrk(text: &str) -> Option<LoadResult> {
    let mut r = LoadResult::default();
    let mut got = false;
    for line in text.lines() {
        let t = line.trim();
        let w: Vec<&str> = t.split_whitespace().collect();
        if w.len() >= 4 && w[1] == "requests" && w[2] == "in" {
            r.round_trips = w[0].parse().ok()?;
            r.seconds = wrk_time(w[3].trim_end_matches(','))? as f64 / 1e9;
            got = true;
        } else if w.len() == 2 && w[0] == "50%" {
            r.p50 = wrk_time(w[1])?;
        } else if w.len() == 2 && w[0] == "99%" {
            r.p99 = wrk_time(w[1])?;
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            r.errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
            r.first_error = format!("wrk socket errors:{rest}");
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += rest.trim().parse::<u64>().unwrap_or(0);
            r.first_error = "non-2xx/3xx responses".to_owned();
        }
    }
    got.then_some(r)
}

fn measure_idle(paths: &Paths, opts: &Options, kind: ServerKind) -> io::Result<IdleCell> {
    let (mut server, addr) = start_server(paths, kind, opts.pin)?;
    let before = procfs::sample(server.pid())?;
    let extra = vec![
        "--connections".to_owned(),
        opts.idle.to_string(),
        "--hold".to_owned(),
    ];
    let mut cmd = load_command(paths, opts, addr, &extra);
    cmd.stdin(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut load = Guard::spawn(cmd)?;
    let stdin: ChildStdin = load
        .child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?;
    let stdout = load
        .child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l == "ready" => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => {
                let mut why = String::new();
                if let Some(mut err) = load.child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut err, &mut why);
                }
                let _ = load.child.wait();
                let died = server
                    .exited()
                    .map(|s| format!("; the server exited ({s})"))
                    .unwrap_or_default();
                return Err(io::Error::other(format!(
                    "the load generator could not hold {} connections: {}{died}",
                    opts.idle,
                    why.trim().trim_start_matches("copas-bench: ")
                )));
            }
        }
    }
    let setup = t0.elapsed();
    // Let the server finish whatever the last round trips started.
    std::thread::sleep(Duration::from_millis(300));
    let after = procfs::sample(server.pid())?;
    drop(stdin);
    let _ = load.child.wait();
    drop(server);
    Ok(IdleCell {
        before,
        after,
        connections: opts.idle,
        setup,
    })
}

fn cargo(root: &Path, args: &[&str]) -> io::Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("cargo {}", args.join(" "));
    Ok(Command::new(cargo)
        .current_dir(root)
        .args(args)
        .status()?
        .success())
}

fn build_examples(root: &Path) -> io::Result<()> {
    let mut args = vec!["build", "--release", "-p", "copas"];
    for ex in ["echo", "echo_threads", "http", "http_threads"] {
        args.extend(["--example", ex]);
    }
    if !cargo(root, &args)? {
        return Err(io::Error::other(
            "cargo build of the example servers failed",
        ));
    }
    // Examples other helpers add; built when they exist (TLS may need a feature).
    for ex in ["hooked_echo", "tls_echo"] {
        if root.join("examples").join(format!("{ex}.rs")).is_file() {
            let plain = ["build", "--release", "-p", "copas", "--example", ex];
            if !cargo(root, &plain)? {
                let featured = [&plain[..], &["--features", "tls"]].concat();
                if !cargo(root, &featured)? {
                    eprintln!("examples/{ex}.rs did not build: its rows are skipped");
                }
            }
        }
    }
    Ok(())
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Facts about the run printed with the results.
#[derive(Debug)]
pub(crate) struct RunInfo {
    pub(crate) machine: Machine,
    /// CPU busy before the run, in percent of one core (other processes).
    pub(crate) background_pct: f64,
    pub(crate) rustc: String,
    pub(crate) revision: String,
    pub(crate) date: String,
    pub(crate) elapsed: Duration,
    pub(crate) command: String,
}

/// The tables of this run and their servers, before availability checks.
fn plan(opts: &Options) -> Vec<(Table, Vec<ServerKind>)> {
    use ServerKind::*;
    let has = |s: Section| opts.sections.contains(&s);
    let mut t = Vec::new();
    if has(Section::Echo) {
        for &c in &opts.connections {
            t.push((Table::Echo(c), opts.servers.clone()));
        }
    }
    if has(Section::Mt2) {
        for &c in &opts.connections {
            if c >= 50 && !(opts.quick && c > 50) {
                t.push((Table::EchoT2(c), vec![CopasT2, TokioMt2, MayT2, Threads]));
            }
        }
    }
    if has(Section::Churn) {
        t.push((Table::Churn, opts.servers.clone()));
    }
    if has(Section::Open) {
        for &p in &opts.open_loads {
            t.push((Table::Open(p), opts.servers.clone()));
        }
    }
    if has(Section::Http) {
        t.push((
            Table::Http,
            vec![CopasHttp, ThreadsHttp, TokioHttp, EpollHttp, MayHttp],
        ));
        if has(Section::Mt2) {
            t.push((
                Table::HttpT2,
                vec![CopasHttpT2, TokioHttpMt2, MayHttpT2, ThreadsHttp],
            ));
        }
    }
    if has(Section::Tls) {
        t.push((Table::TlsEcho, vec![CopasTls, TokioTls]));
        t.push((Table::TlsHandshake, vec![CopasTls, TokioTls]));
    }
    // `--servers` names families: `tokio` also selects tokio's HTTP, 2-worker and TLS
    // servers.
    for (_, servers) in &mut t {
        servers.retain(|k| opts.servers.contains(&k.family()));
    }
    t.retain(|(_, servers)| !servers.is_empty());
    t
}

/// The median closed-loop rate of `kind` at `conns` connections so far, if measured.
fn peak(m: &Measurements, kind: ServerKind, conns: usize) -> Option<f64> {
    let mut v: Vec<f64> = m
        .load
        .iter()
        .filter(|(t, k, c)| *t == Table::Echo(conns) && *k == kind && c.load.errors == 0)
        .map(|(_, _, c)| c.rps())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn log_cell(pass: usize, opts: &Options, table: Table, kind: ServerKind, cell: &LoadCell) {
    eprintln!(
        "pass {}/{} {:<18} {:>16}: {:>9.0}/s  p50 {:>8.1} µs  p99 {:>8.1} µs  server {:>6.2} µs/op ({:>3.0}% CPU)  load {:>3.0}%  other {:>3.0}%{}{}",
        pass + 1,
        opts.passes,
        report::table_tag(table),
        kind.name(),
        cell.rps(),
        cell.load.p50 as f64 / 1e3,
        cell.load.p99 as f64 / 1e3,
        cell.cpu_us_per_rt(),
        cell.server_cpu_pct(),
        cell.load_cpu_pct(),
        cell.other_cpu_pct,
        if cell.load.errors > 0 {
            format!("  {} errors ({})", cell.load.errors, cell.load.first_error)
        } else {
            String::new()
        },
        cell.server_died
            .as_ref()
            .map(|s| format!("  SERVER EXITED: {s}"))
            .unwrap_or_default()
    );
}

/// Runs the whole comparison and writes the report.
pub(crate) fn run(opts: &Options) -> io::Result<()> {
    let t0 = Instant::now();
    let paths = Paths::find()?;
    if opts.build {
        build_examples(&paths.root)?;
    }
    let machine = Machine::probe();
    eprintln!(
        "machine: {} cores, {}, Linux {}",
        machine.cores, machine.cpu_model, machine.kernel
    );
    if opts.pin && machine.cores < 2 {
        return Err(io::Error::other("--pin needs at least 2 cores"));
    }
    let background_pct = background_load()?;
    eprintln!(
        "before the run, {background_pct:.0}% of one core was busy with other work{}",
        if background_pct > 10.0 {
            " — other processes are running: expect noisy results"
        } else {
            ""
        }
    );
    let mut m = Measurements::default();
    if opts.sections.contains(&Section::Tls) {
        let dir = paths
            .cert
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        crate::tls::make_cert(&dir)?;
        eprintln!("TLS: a fresh self-signed certificate in {}", dir.display());
    }
    // Which servers can run at all.
    let mut all: Vec<ServerKind> = Vec::new();
    for (_, servers) in plan(opts) {
        for k in servers {
            if !all.contains(&k) {
                all.push(k);
            }
        }
    }
    if opts.sections.contains(&Section::Idle) {
        for &k in &opts.servers {
            if !all.contains(&k) {
                all.push(k);
            }
        }
    }
    for &k in &all {
        if let Err(why) = paths.available(k) {
            eprintln!("skipping {} ({}): {why}", k.name(), k.description());
            m.skipped.push((k, why));
        }
    }
    let usable = |k: &ServerKind| !m.skipped.iter().any(|(s, _)| s == k);
    m.tables = plan(opts)
        .into_iter()
        .map(|(t, s)| (t, s.into_iter().filter(usable).collect::<Vec<_>>()))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if opts.sections.contains(&Section::Idle) && opts.idle > 0 {
        m.idle_servers = opts.servers.iter().copied().filter(usable).collect();
    }
    let wrk = command_line("wrk", &["--version"]).is_some()
        || Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"));
    m.http_client = if wrk {
        format!(
            "wrk -t{} -c{} --latency",
            opts.load_threads, opts.http_connections
        )
    } else {
        format!(
            "copas-bench load --mode http (wrk is not installed), {} connections",
            opts.http_connections
        )
    };
    let tables = m.tables.clone();
    for pass in 0..opts.passes {
        for (table, servers) in &tables {
            let n = servers.len();
            for i in 0..n {
                let kind = servers[(i + pass) % n];
                let rate = match table {
                    Table::Open(pct) => {
                        let peak = match peak(&m, kind, opts.open_connections) {
                            Some(p) => Some(p),
                            None => {
                                // No closed-loop cell at this connection count: measure one.
                                let t = Table::Echo(opts.open_connections);
                                match measure_load(&paths, opts, kind, t, None) {
                                    Ok(c) => {
                                        log_cell(pass, opts, t, kind, &c);
                                        m.load.push((t, kind, c));
                                        peak(&m, kind, opts.open_connections)
                                    }
                                    Err(e) => {
                                        m.failed.push((Some(t), kind, e.to_string()));
                                        None
                                    }
                                }
                            }
                        };
                        match peak {
                            Some(p) if p > 0.0 => Some(p * pct / 100.0),
                            _ => {
                                m.failed.push((
                                    Some(*table),
                                    kind,
                                    "no error-free closed-loop peak to take a share of".into(),
                                ));
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                let result = match table {
                    Table::Http | Table::HttpT2 if wrk => measure_wrk(&paths, opts, kind),
                    _ => measure_load(&paths, opts, kind, *table, rate),
                };
                match result {
                    Ok(cell) => {
                        log_cell(pass, opts, *table, kind, &cell);
                        m.load.push((*table, kind, cell));
                    }
                    Err(e) => {
                        eprintln!(
                            "pass {}/{} {} {}: FAILED: {e}",
                            pass + 1,
                            opts.passes,
                            report::table_tag(*table),
                            kind.name()
                        );
                        m.failed.push((Some(*table), kind, e.to_string()));
                    }
                }
            }
        }
        let idle_servers = m.idle_servers.clone();
        let n = idle_servers.len();
        for i in 0..n {
            let kind = idle_servers[(i + pass) % n];
            match measure_idle(&paths, opts, kind) {
                Ok(cell) => {
                    eprintln!(
                        "pass {}/{} idle {} {:>10}: RSS {:.1} -> {:.1} MiB, {:.1} KiB/conn, {} threads, setup {:.2} s",
                        pass + 1,
                        opts.passes,
                        cell.connections,
                        kind.name(),
                        cell.before.rss as f64 / 1048576.0,
                        cell.after.rss as f64 / 1048576.0,
                        cell.rss_per_conn() / 1024.0,
                        cell.after.threads,
                        cell.setup.as_secs_f64()
                    );
                    m.idle.push((kind, cell));
                }
                Err(e) => {
                    eprintln!(
                        "pass {}/{} idle {}: FAILED: {e}",
                        pass + 1,
                        opts.passes,
                        kind.name()
                    );
                    m.failed.push((None, kind, e.to_string()));
                }
            }
        }
    }
    let info = RunInfo {
        machine,
        background_pct,
        rustc: command_line("rustc", &["-V"]).unwrap_or_else(|| "unknown".to_owned()),
        revision: revision(&paths.root),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_else(|| "unknown".to_owned()),
        elapsed: t0.elapsed(),
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
    };
    let md = report::markdown(opts, &info, &m);
    let svg = report::svg(opts, &m);
    print!("{md}");
    for (path, text) in [(&opts.out_md, &md), (&opts.out_svg, &svg)] {
        let path = if path.is_relative() {
            paths.root.join(path)
        } else {
            path.clone()
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(&path)?.write_all(text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// How busy the machine is without us: one second of `/proc/stat`, in percent of one core.
fn background_load() -> io::Result<f64> {
    let (b0, t0) = procfs::machine_ticks()?;
    std::thread::sleep(Duration::from_secs(1));
    let (b1, t1) = procfs::machine_ticks()?;
    Ok(b1.saturating_sub(b0) as f64 / t1.saturating_sub(t0).max(1) as f64 * 100.0 * cores())
}

fn revision(root: &Path) -> String {
    let root = root.to_string_lossy();
    let rev = command_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty =
        command_line("git", &["-C", &root, "status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    match rev {
        Some(r) if dirty => format!("{r} (with uncommitted changes)"),
        Some(r) => r,
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:8080/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   610.35us  200.00us   5.00ms   90.00%
  Latency Distribution
     50%  577.00us
     75%  700.00us
     90%  800.00us
     99%    1.20ms
  123456 requests in 1.00s, 15.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec: 123456.00
";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.round_trips, 123456);
        assert!((r.seconds - 1.0).abs() < 1e-9);
        assert_eq!(r.p50, 577_000);
        assert_eq!(r.p99, 1_200_000);
        assert_eq!(r.errors, 3);
        assert!(parse_wrk("nothing").is_none());
    }

    #[test]
    fn help_text_reads_output_and_gives_up_on_servers() {
        // `echo` prints its arguments and exits: the probe passes `--help` and a free port.
        let text = help_text(Path::new("/bin/echo")).unwrap();
        assert!(text.contains("--help --addr 127.0.0.1:0"), "{text}");
        assert!(help_text(Path::new("/nonexistent/program")).is_err());
    }

    #[test]
    fn plan_has_every_section() {
        let opts = crate::args::Args::parse(&[]).unwrap().options().unwrap();
        let p = plan(&opts);
        assert!(p.iter().any(|(t, _)| *t == Table::Churn));
        assert!(p.iter().any(|(t, _)| *t == Table::Open(90.0)));
        assert!(p
            .iter()
            .any(|(t, s)| *t == Table::HttpT2 && s.contains(&ServerKind::CopasHttpT2)));
        assert!(p
            .iter()
            .any(|(t, s)| *t == Table::TlsHandshake && s.contains(&ServerKind::TokioTls)));
        assert!(p
            .iter()
            .any(|(t, s)| *t == Table::Echo(1000) && s.contains(&ServerKind::Lua)));
    }
}
