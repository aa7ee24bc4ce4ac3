//! A Copas-style echo server: every line a client sends comes back followed by `\n`; the
//! line `quit` closes the connection. Any number of clients at once, on one thread.
//!
//! ```text
//! cargo run --release --example echo                         # 127.0.0.1:7000
//! cargo run --release --example echo -- --addr 127.0.0.1:9000
//! nc 127.0.0.1 7000
//! ```

use std::io;

use copas::TcpStream;

#[path = "support/mod.rs"]
mod support;

use support::cli::{self, Args};

const USAGE: &str = "\
Usage: echo [--addr HOST:PORT]

A line echo server on copas: each line comes back; the line `quit` closes.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7000)
  -h, --help        print this help
";

fn handle(mut conn: TcpStream) -> io::Result<()> {
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
    let args = Args::parse("echo", USAGE, &["--addr"], 0);
    let addr = args.addr("127.0.0.1:7000");
    let server = copas::ServerBuilder::new()
        .name("echo")
        .serve(addr.as_str(), handle)
        .unwrap_or_else(|e| cli::cannot_listen("echo", &addr, &e));
    println!("echo server listening on {}", server.local_addr());
    cli::run("echo");
}
