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

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: echo [--addr HOST:PORT] [--threads N]

A line echo server on copas: each line comes back; the line `quit` closes.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7000)
  --threads N       serve on N threads, one runtime and SO_REUSEPORT listener each
                    (default 1)
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
    let args = Args::parse("echo", USAGE, &["--addr", "--threads"], 0);
    let addr = args.addr("127.0.0.1:7000");
    let threads = args.threads();
    cli::serve("echo", &addr, threads, handle);
}
