//! The echo server of `examples/echo_threads.rs` — `std::net` + `std::io` code, a
//! `BufReader`/`BufWriter` pair per connection — run in copas tasks on one thread with
//! `copas-hook` instead of one OS thread per connection. Every line a client sends comes
//! back followed by `\n`; the line `quit` closes the connection. `copas-bench` compares it
//! with copas's own `TcpStream` (`echo`) and with thread-per-connection (`echo_threads`).
//!
//! ```text
//! cargo run --release --example hooked_echo                         # 127.0.0.1:7000
//! cargo run --release --example hooked_echo -- --addr 127.0.0.1:9000
//! nc 127.0.0.1 7000
//! ```

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

#[path = "support/cli.rs"]
mod cli;

const USAGE: &str = "usage: hooked_echo [--addr HOST:PORT]

An echo server written with std::net, run in copas tasks through copas-hook.
  --addr HOST:PORT  where to listen (default 127.0.0.1:7000)
  --help            this text
";

/// The longest line accepted, as copas's default.
const MAX_LINE: u64 = 64 * 1024;

/// Plain blocking std code: the same handler as `echo_threads`.
fn handle(stream: TcpStream) -> io::Result<()> {
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

fn main() -> ExitCode {
    let args = cli::Args::parse("hooked_echo", USAGE, &["--addr"], 0);
    let addr = args.addr("127.0.0.1:7000");
    if let Err(e) = copas_hook::install() {
        eprintln!("hooked_echo: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(addr.as_str()) {
        Ok(l) => l,
        Err(e) => cli::cannot_listen("hooked_echo", &addr, &e),
    };
    match listener.local_addr() {
        Ok(a) => println!("hooked std::net echo server listening on {a}"),
        Err(e) => {
            eprintln!("hooked_echo: cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    }
    copas::spawn(move || loop {
        match listener.accept() {
            Ok((s, _)) => {
                copas::spawn(move || {
                    // Resets and early closes are the client's business.
                    let _ = handle(s);
                });
            }
            Err(e) => {
                eprintln!("hooked_echo: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    match copas::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hooked_echo: the loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
