//! A Copas-style echo server: every line a client sends comes back followed by `\n`; the
//! line `quit` closes the connection. Any number of clients at once, on one thread.
//!
//! ```text
//! cargo run --release --example echo                         # 127.0.0.1:7000
//! cargo run --release --example echo -- --addr 127.0.0.1:9000
//! cargo run --release --example echo -- --unix /tmp/echo.sock   # a Unix socket instead
//! nc 127.0.0.1 7000                                          # or: nc -U /tmp/echo.sock
//! ```

use std::io;
use std::path::PathBuf;

use copas::{Stream, StreamSocket};

#[path = "support/mod.rs"]
mod support;

use support::cli::{self, Args};

const USAGE: &str = "\
Usage: echo [--addr HOST:PORT | --unix PATH]

A line echo server on copas: each line comes back; the line `quit` closes.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7000)
  --unix PATH       listen on a Unix domain socket at PATH instead (a stale socket
                    file is replaced; the file is removed when the server stops)
  -h, --help        print this help
";

/// One handler for TCP and Unix connections alike.
fn handle<S: StreamSocket>(mut conn: Stream<S>) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        if &line[..] == b"quit" {
            break;
        }
        conn.send(&line)?;
        conn.send(b"\n")?;
    }
    conn.close()
}

fn main() {
    let args = Args::parse("echo", USAGE, &["--addr", "--unix"], 0);
    let builder = copas::ServerBuilder::new().name("echo");
    let listening = match args.value("--unix") {
        Some(_) if args.value("--addr").is_some() => {
            args.usage_error("options '--addr' and '--unix' exclude each other")
        }
        Some(path) => builder
            .serve(PathBuf::from(path), handle)
            .map(|_| path.to_owned())
            .unwrap_or_else(|e| cli::cannot_listen("echo", path, &e)),
        None => {
            let addr = args.addr("127.0.0.1:7000");
            builder
                .serve(addr.as_str(), handle)
                .map(|server| server.local_addr().to_string())
                .unwrap_or_else(|e| cli::cannot_listen("echo", &addr, &e))
        }
    };
    println!("echo server listening on {listening}");
    cli::run("echo");
}
