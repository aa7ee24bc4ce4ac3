//! A server whose handler runs a shell pipeline per request: a client sends lines, then
//! an empty line; the server feeds them to `sort | uniq -c | sort -rn` (a child process)
//! and streams the pipeline's output back, followed by a line holding a single `.`.
//! Other clients are served meanwhile: the handler's pipe reads and writes suspend only
//! its own task.
//!
//! ```text
//! cargo run --example pipeline                          # 127.0.0.1:7002
//! cargo run --example pipeline -- --addr 127.0.0.1:9002
//! printf 'b\na\nb\n\n' | nc 127.0.0.1 7002
//! ```
//!
//! The pipeline is fixed; a client's bytes only ever reach the pipeline's standard input,
//! never a shell command line, so a client cannot run commands of its choosing. It still
//! runs processes for anyone who can connect: the default address is loopback, and a
//! batch is limited to 16 MiB and each read to 60 s. A client that disconnects has its
//! pipeline killed.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use copas::process::{Command, Stdio};
use copas::TcpStream;

/// The fixed pipeline each batch of lines is fed to.
const PIPELINE: &str = "sort | uniq -c | sort -rn";
/// The most input bytes accepted for one batch.
const MAX_BATCH: usize = 16 << 20;

const USAGE: &str = "\
Usage: pipeline [--addr HOST:PORT]

Serves a line protocol: send lines, then an empty line; the answer is the output of
`sort | uniq -c | sort -rn` run on them, then a line with a single '.'.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7002; keep it on loopback
                    unless you mean to let others run the pipeline)
  -h, --help        print this help
";
fn handle(mut conn: TcpStream) -> io::Result<()> {
    while let Some(first) = conn.receive_line()? {
        if first.is_empty() {
            continue;
        }
        let mut child = Command::new("sh")
            .args(["-c", PIPELINE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut total = 0;
        let mut line = first;
        loop {
            total += line.len() + 1;
            if total > MAX_BATCH {
                conn.send(b"error: a batch is limited to 16 MiB\n")?;
                return conn.close();
            }
            stdin.write_all(&line)?;
            stdin.write_all(b"\n")?;
            match conn.receive_line()? {
                Some(next) if !next.is_empty() => line = next,
                // An empty line, or the client closed its side: the batch is complete.
                _ => break,
            }
        }
        drop(stdin); // end of input: `sort` starts writing
        let mut out = child.stdout.take().expect("stdout is piped");
        while let Some(l) = out.receive_line()? {
            conn.send(&l)?;
            conn.send(b"\n")?;
        }
        let status = child.wait()?;
        if !status.success() {
            conn.send(format!("error: the pipeline failed ({status})\n").as_bytes())?;
        }
        conn.send(b".\n")?;
    }
    conn.close()
}

/// Prints `pipeline: msg` and a hint, and exits 2.
fn usage_error(msg: &str) -> ExitCode {
    eprintln!("pipeline: {msg}");
    eprintln!("Try 'pipeline --help' for more information.");
    ExitCode::from(2)
}

/// An I/O error as the end of a sentence ("address in use"), without std's
/// "(os error N)".
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = e.to_string();
            let text = text.find(" (os error").map_or(&text[..], |i| &text[..i]);
            let mut chars = text.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => "unknown error".to_owned(),
            }
        }
    }
}

fn main() -> ExitCode {
    let mut addr = "127.0.0.1:7002".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--addr" => match args.next() {
                Some(v) => addr = v,
                None => return usage_error("option '--addr' needs a value"),
            },
            other if other.starts_with("--addr=") => addr = other["--addr=".len()..].to_owned(),
            other if other.starts_with('-') => {
                return usage_error(&format!("unknown option '{other}'"))
            }
            other => return usage_error(&format!("unexpected argument '{other}'")),
        }
    }
    let host_port = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !host_port {
        return usage_error(&format!(
            "option '--addr' wants HOST:PORT (such as 127.0.0.1:7002), not '{addr}'"
        ));
    }
    let server = match copas::ServerBuilder::new()
        .name("pipeline")
        .read_timeout(Duration::from_secs(60))
        .serve(addr.as_str(), handle)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeline: cannot listen on {addr}: {}", describe(&e));
            return ExitCode::FAILURE;
        }
    };
    println!(
        "pipeline server listening on {} (runs `{PIPELINE}` per batch)",
        server.local_addr()
    );
    match copas::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline: the loop stopped: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}
