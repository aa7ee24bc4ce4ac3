//! Legacy blocking code served concurrently: each client connection runs `handle`, plain
//! `std::net` + `std::io` + `std::thread::sleep` code that knows nothing of copas, in a
//! copas task. With `copas_hook::install()` its blocking calls suspend only its own task,
//! so one thread serves every client at once.
//!
//! Per client line: `sleep MS` sleeps MS milliseconds (`std::thread::sleep`) and answers
//! `slept MS`; any other line is written to the upstream (one `std::net::TcpStream` per
//! client connection), and the one line read back is the answer. When the upstream closes,
//! that client's connection ends; the server goes on.
//!
//! ```text
//! cargo run --example echo                                     # an upstream on 7000
//! cargo run --example hooked -- --addr 127.0.0.1:7100 --upstream 127.0.0.1:7000
//! nc 127.0.0.1 7100
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

#[path = "support/cli.rs"]
mod cli;

const USAGE: &str = "usage: hooked [--addr HOST:PORT] [--upstream HOST:PORT]

Serves each client with blocking std::net code in a copas task (copas-hook).
  --addr HOST:PORT      where to listen (default 127.0.0.1:7100)
  --upstream HOST:PORT  where other lines are relayed (default 127.0.0.1:7000)
Per line: `sleep MS` answers `slept MS` after MS milliseconds; any other line is
relayed to the upstream and its one-line answer sent back.
  --help                this text
";

/// The legacy handler: no copas types, only blocking std calls.
fn handle(client: TcpStream, upstream: &str) -> io::Result<()> {
    let mut up = TcpStream::connect(upstream)?;
    let mut up_reader = BufReader::new(up.try_clone()?);
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut line = String::new();
    let mut answer = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request = line.trim_end_matches(['\r', '\n']);
        if let Some(ms) = request.strip_prefix("sleep ") {
            match ms.trim().parse::<u64>() {
                Ok(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    writeln!(client, "slept {ms}")?;
                }
                Err(_) => writeln!(client, "error: `sleep` takes a number of milliseconds")?,
            }
            continue;
        }
        writeln!(up, "{request}")?;
        answer.clear();
        if up_reader.read_line(&mut answer)? == 0 {
            // The upstream closed: so does this client's connection.
            return Ok(());
        }
        client.write_all(answer.as_bytes())?;
    }
}

struct Options {
    addr: String,
    upstream: String,
}

/// The command line (`--help` and mistakes end the program there, see `support/cli.rs`).
fn options() -> Options {
    let args = cli::Args::parse("hooked", USAGE, &["--addr", "--upstream"], 0);
    let upstream = args
        .value("--upstream")
        .unwrap_or("127.0.0.1:7000")
        .to_owned();
    args.host_port("--upstream", &upstream);
    Options {
        addr: args.addr("127.0.0.1:7100"),
        upstream,
    }
}

fn main() -> ExitCode {
    let o = options();
    if let Err(e) = copas_hook::install() {
        eprintln!("hooked: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(o.addr.as_str()) {
        Ok(l) => l,
        Err(e) => cli::cannot_listen("hooked", &o.addr, &e),
    };
    match listener.local_addr() {
        Ok(a) => println!("hooked server listening on {a}, upstream {}", o.upstream),
        Err(e) => {
            eprintln!("hooked: cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    }
    let upstream: &'static str = Box::leak(o.upstream.into_boxed_str());
    // The accept loop is a task too: `accept` waits on the reactor like the handlers.
    copas::spawn(move || loop {
        match listener.accept() {
            Ok((client, peer)) => {
                copas::spawn(move || {
                    if let Err(e) = handle(client, upstream) {
                        eprintln!("hooked: client {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, typically: report and back off instead of spinning.
                eprintln!("hooked: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    match copas::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hooked: the loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
