//! The echo server of `examples/echo.rs`, the classic way: one OS thread per connection
//! on `std::net`, for comparison (`copas-bench` measures both). Every line a client sends
//! comes back followed by `\n`; the line `quit` closes the connection.
//!
//! ```text
//! cargo run --release --example echo_threads                         # 127.0.0.1:7000
//! cargo run --release --example echo_threads -- --addr 127.0.0.1:9000
//! nc 127.0.0.1 7000
//! ```

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: echo_threads [--addr HOST:PORT]

The echo server with one OS thread per connection, for comparison with `echo`.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7000)
  -h, --help        print this help
";

/// The longest line accepted, as copas's default.
const MAX_LINE: u64 = 64 * 1024;

fn handle(stream: TcpStream) -> io::Result<()> {
    // Both halves borrow the one socket: no dup'd descriptor, so a connection costs one.
    let mut reader = BufReader::with_capacity(16 * 1024, &stream);
    let mut writer = BufWriter::with_capacity(64 * 1024, &stream);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 2)
            .read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line == b"quit" {
            break;
        }
        writer.write_all(&line)?;
        writer.write_all(b"\n")?;
        // Pipelined lines already buffered are answered with one write, as copas does.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
    }
    writer.flush()
}

fn main() {
    let args = Args::parse("echo_threads", USAGE, &["--addr"], 0);
    let addr = args.addr("127.0.0.1:7000");
    let listener = TcpListener::bind(addr.as_str())
        .unwrap_or_else(|e| cli::cannot_listen("echo_threads", &addr, &e));
    println!(
        "thread-per-connection echo server listening on {}",
        listener
            .local_addr()
            .expect("a bound listener has an address")
    );
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                std::thread::spawn(move || {
                    // Resets and early closes are the client's business.
                    let _ = handle(s);
                });
            }
            Err(e) => {
                // Out of descriptors, typically: report and back off instead of spinning.
                eprintln!("echo_threads: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
