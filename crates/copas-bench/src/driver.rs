//! The comparison: starts each server as a child process on a free loopback port, runs the
//! load generator against it as another child, samples both in `/proc` at the edges of the
//! measured window, and reports medians over several passes.
//!
//! Invariants: a fresh server process serves each cell, so no cell inherits another's
//! memory or warm caches; within a pass the servers take turns (their order rotates from
//! pass to pass), so a slow drift of the machine spreads over all of them; every child is
//! killed and reaped when its guard drops, also on error.

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
}

impl FromStr for ServerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ServerKind, String> {
        match s {
            "copas" => Ok(ServerKind::Copas),
            "threads" => Ok(ServerKind::Threads),
            "tokio" => Ok(ServerKind::Tokio),
            "epoll" => Ok(ServerKind::Epoll),
            other => Err(format!("unknown server '{other}'")),
        }
    }
}

impl ServerKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ServerKind::Copas => "copas",
            ServerKind::Threads => "threads",
            ServerKind::Tokio => "tokio",
            ServerKind::Epoll => "epoll",
        }
    }

    pub(crate) fn description(self) -> &'static str {
        match self {
            ServerKind::Copas => "copas echo example, one thread, coroutine per connection",
            ServerKind::Threads => "std::net, one OS thread per connection",
            ServerKind::Tokio => "tokio current_thread, one task per connection",
            ServerKind::Epoll => "hand-written level-triggered epoll loop (lower bound)",
        }
    }
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
        self.server_cpu_pct_of(Duration::from_secs_f64(self.load.seconds.max(1e-9)))
    }

    /// Load generator CPU use in percent of one core.
    pub(crate) fn load_cpu_pct(&self) -> f64 {
        self.load_cpu_pct_of(Duration::from_secs_f64(self.load.seconds.max(1e-9)))
    }

    fn server_cpu_pct_of(&self, window: Duration) -> f64 {
        self.server_cpu.as_secs_f64() * 100.0 / window.as_secs_f64().max(1e-9)
    }

    fn load_cpu_pct_of(&self, window: Duration) -> f64 {
        self.load_cpu.as_secs_f64() * 100.0 / window.as_secs_f64().max(1e-9)
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
    /// `(connections, server, cell)` for every pass.
    pub(crate) load: Vec<(usize, ServerKind, LoadCell)>,
    pub(crate) idle: Vec<(ServerKind, IdleCell)>,
}

/// Where the binaries are.
#[derive(Debug)]
struct Paths {
    root: PathBuf,
    examples: PathBuf,
    me: PathBuf,
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
        Ok(Paths {
            examples: target.join("release").join("examples"),
            me: std::env::current_exe()?,
            root,
        })
    }

    fn server_command(&self, kind: ServerKind, addr: SocketAddr, pin: bool) -> Command {
        let (program, mut args): (PathBuf, Vec<String>) = match kind {
            ServerKind::Copas => (self.examples.join("echo"), vec![]),
            ServerKind::Threads => (self.examples.join("echo_threads"), vec![]),
            ServerKind::Tokio => (self.me.clone(), vec!["serve-tokio".to_owned()]),
            ServerKind::Epoll => (self.me.clone(), vec!["serve-epoll".to_owned()]),
        };
        args.push("--addr".to_owned());
        args.push(addr.to_string());
        pinned(program, args, pin.then_some(0))
    }
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
            std::thread::sleep(Duration::from_millis(100));
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

fn measure_load(
    paths: &Paths,
    opts: &Options,
    kind: ServerKind,
    connections: usize,
) -> io::Result<LoadCell> {
    let (server, addr) = start_server(paths, kind, opts.pin)?;
    let extra = vec![
        "--connections".to_owned(),
        connections.to_string(),
        "--warmup".to_owned(),
        format!("{}", opts.warmup.as_secs_f64()),
        "--duration".to_owned(),
        format!("{}", opts.duration.as_secs_f64()),
        "--threads".to_owned(),
        opts.load_threads.to_string(),
    ];
    let mut cmd = load_command(paths, opts, addr, &extra);
    cmd.stdin(Stdio::null());
    let mut load = Guard::spawn(cmd)?;
    let stdout = load
        .child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut start: Option<(ProcSample, ProcSample, (u64, u64))> = None;
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
            let s1 = procfs::sample(server.pid())?;
            let l1 = procfs::sample(load.pid())?;
            let m1 = procfs::machine_ticks()?;
            let busy = m1.0.saturating_sub(m0.0) as f64;
            let total = m1.1.saturating_sub(m0.1).max(1) as f64;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            cell.other_cpu_pct = busy / total * 100.0 * cores;
            cell.server_cpu = s1.cpu.saturating_sub(s0.cpu);
            cell.load_cpu = l1.cpu.saturating_sub(l0.cpu);
            cell.server_end = s1;
            cell.other_cpu_pct = (cell.other_cpu_pct
                - cell.server_cpu_pct_of(opts.duration)
                - cell.load_cpu_pct_of(opts.duration))
            .max(0.0);
        } else if let Some(r) = LoadResult::parse(&line) {
            result = Some(r);
        }
    }
    let status = load.child.wait()?;
    cell.load = result
        .ok_or_else(|| io::Error::other(format!("the load generator gave no result ({status})")))?;
    drop(server);
    Ok(cell)
}

fn measure_idle(paths: &Paths, opts: &Options, kind: ServerKind) -> io::Result<IdleCell> {
    let (server, addr) = start_server(paths, kind, opts.pin)?;
    let before = procfs::sample(server.pid())?;
    let extra = vec![
        "--connections".to_owned(),
        opts.idle.to_string(),
        "--hold".to_owned(),
    ];
    let mut cmd = load_command(paths, opts, addr, &extra);
    cmd.stdin(Stdio::piped());
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
                return Err(io::Error::other(format!(
                    "{}: the load generator ended before holding {} connections",
                    kind.name(),
                    opts.idle
                )))
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

fn build_examples(root: &Path) -> io::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the example servers (cargo build --release --example echo --example echo_threads)");
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--example",
            "echo",
            "--example",
            "echo_threads",
        ])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("cargo build failed: {status}")))
    }
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
    let background_pct = background_load()?;
    eprintln!(
        "before the run, {background_pct:.0}% of one core was busy with other work{}",
        if background_pct > 10.0 {
            " — other processes are running: expect noisy results"
        } else {
            ""
        }
    );
    if opts.pin && machine.cores < 2 {
        return Err(io::Error::other("--pin needs at least 2 cores"));
    }
    let mut m = Measurements::default();
    let n = opts.servers.len();
    for pass in 0..opts.passes {
        for &conns in &opts.connections {
            for i in 0..n {
                let kind = opts.servers[(i + pass) % n];
                let cell = measure_load(&paths, opts, kind, conns)?;
                eprintln!(
                    "pass {}/{} {:>5} conns {:>8}: {:>9.0} rt/s  p50 {:>7.1} µs  p99 {:>7.1} µs  server {:>5.2} µs/rt ({:>3.0}% CPU)  load {:>3.0}% CPU  other {:>3.0}% CPU{}",
                    pass + 1,
                    opts.passes,
                    conns,
                    kind.name(),
                    cell.rps(),
                    cell.load.p50 as f64 / 1e3,
                    cell.load.p99 as f64 / 1e3,
                    cell.cpu_us_per_rt(),
                    cell.server_cpu_pct(),
                    cell.load_cpu_pct(),
                    cell.other_cpu_pct,
                    if cell.load.errors > 0 {
                        format!("  {} errors", cell.load.errors)
                    } else {
                        String::new()
                    }
                );
                m.load.push((conns, kind, cell));
            }
        }
        if opts.idle > 0 {
            for i in 0..n {
                let kind = opts.servers[(i + pass) % n];
                let cell = measure_idle(&paths, opts, kind)?;
                eprintln!(
                    "pass {}/{} idle {} {:>8}: RSS {:.1} -> {:.1} MiB, {:.1} KiB/conn, {} threads, setup {:.2} s",
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(b1.saturating_sub(b0) as f64 / t1.saturating_sub(t0).max(1) as f64 * 100.0 * cores)
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
