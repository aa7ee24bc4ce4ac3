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

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: echo [--addr HOST:PORT [--threads N] | --unix PATH]

A line echo server on copas: each line comes back; the line `quit` closes.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7000)
  --threads N       serve on N threads, one runtime and SO_REUSEPORT listener each
                    (default 1)
  --unix PATH       listen on a Unix domain socket at PATH instead (a stale socket
                    file is replaced; the file is removed when the server stops)
  -h, --help        print this help
";

/// One handler for TCP and Unix connections alike.
/// One `Vec` per connection holds each line in turn (`receive_line_into`), so serving a
/// line allocates nothing; the line goes back with its `\n` in one `send`.
fn handle<S: StreamSocket>(mut conn: Stream<S>) -> io::Result<()> {
    let mut line = Vec::with_capacity(128);
    while conn.receive_line_into(&mut line)? {
        if line == b"quit" {
            break;
        }
        line.push(b'\n');
        conn.send(&line)?;
        line.clear();
    }
    conn.close()
}

fn main() {
    let args = Args::parse("echo", USAGE, &["--addr", "--threads", "--unix"], 0);
    let Some(path) = args.value("--unix") else {
        let addr = args.addr("127.0.0.1:7000");
        let threads = args.threads();
        return cli::serve("echo", &addr, threads, handle::<std::net::TcpStream>);
    };
    if args.value("--addr").is_some() || args.value("--threads").is_some() {
        args.usage_error("option '--unix' goes with neither '--addr' nor '--threads'");
    }
    copas::ServerBuilder::new()
        .name("echo")
        .serve(PathBuf::from(path), handle)
        .unwrap_or_else(|e| cli::cannot_listen("echo", path, &e));
    println!("echo server listening on {path}");
    cli::run("echo");
}
