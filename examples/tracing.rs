//! copas under `tracing`: an echo server whose tasks and connections are spans, with
//! events for timeouts, cancellations, panics, accept errors and blocked-loop warnings,
//! printed by `tracing-subscriber`'s formatter (level from `--level`, default `debug`).
//!
//! ```text
//! cargo run --example tracing --features tracing                     # serve 127.0.0.1:7001
//! cargo run --example tracing --features tracing -- --demo           # a short scripted run
//! ```
//!
//! `--demo` serves on a free port, connects one client that echoes a line, one that idles
//! into the server's 200 ms read timeout, one whose handler panics, and a task that
//! blocks the loop for 150 ms; then it exits.

use std::io::{self, BufRead, BufReader, Write};
use std::time::Duration;

use copas::TcpStream;

#[path = "support/cli.rs"]
mod cli;

fn handle(mut conn: TcpStream) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        if &line[..] == b"panic" {
            panic!("the client asked for a panic");
        }
        conn.send(&line)?;
        conn.send(b"\n")?;
    }
    conn.close()
}

fn demo(addr: std::net::SocketAddr) {
    // Blocking std clients on a thread of their own, so the loop serves them.
    std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.write_all(b"hello\n").expect("send");
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).expect("echo");
        drop(c);
        let idle = std::net::TcpStream::connect(addr).expect("connect");
        std::thread::sleep(Duration::from_millis(400));
        drop(idle);
        let mut p = std::net::TcpStream::connect(addr).expect("connect");
        p.write_all(b"panic\n").expect("send");
        std::thread::sleep(Duration::from_millis(100));
    });
    copas::Builder::new()
        .name("legacy-call".into())
        .spawn(|| {
            copas::sleep(Duration::from_millis(600)).expect("sleep");
            // A blocking call in a task: the blocked-loop warning.
            std::thread::sleep(Duration::from_millis(150));
            copas::exit();
        })
        .expect("spawn");
}

const USAGE: &str = "\
usage: tracing [--addr HOST:PORT] [--level LEVEL] [--demo]

An echo server whose tasks and connections are tracing spans, printed on stderr.
  --addr HOST:PORT  where to listen (default 127.0.0.1:7001)
  --level LEVEL     error, warn, info, debug (default) or trace
  --demo            serve on a free port, run a short scripted session, exit
  --help            this text
";

fn main() {
    let args =
        cli::Args::parse_with_flags("tracing", USAGE, &["--addr", "--level"], &["--demo"], 0);
    let level = args.value("--level").unwrap_or("debug");
    let level: tracing::Level = match level.parse() {
        Ok(l) => l,
        Err(_) => args.usage_error(&format!(
            "option '--level' wants error, warn, info, debug or trace, not '{level}'"
        )),
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .without_time()
        .init();
    let is_demo = args.flag("--demo");
    let addr = if is_demo {
        "127.0.0.1:0".to_owned()
    } else {
        args.addr("127.0.0.1:7001")
    };
    let server = match copas::ServerBuilder::new()
        .name("echo")
        .read_timeout(Duration::from_millis(200))
        .serve(addr.as_str(), handle)
    {
        Ok(s) => s,
        Err(e) => cli::cannot_listen("tracing", &addr, &e),
    };
    println!("echo server listening on {}", server.local_addr());
    if is_demo {
        demo(server.local_addr());
    }
    if let Err(e) = copas::run() {
        cli::fail(
            "tracing",
            &format!("the loop failed: {}", cli::describe(&e)),
        );
    }
}
