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
usage: pipeline [--addr HOST:PORT]

Serves the line protocol: send lines, then an empty line; the answer is the output of
`sort | uniq -c | sort -rn` run on them, then a line with a single '.'.

options:
  --addr HOST:PORT   address to listen on (default 127.0.0.1:7002; keep it on loopback
                     unless you mean to let others run the pipeline)
  --help             print this help";

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

fn main() -> ExitCode {
    let mut addr = "127.0.0.1:7002".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--addr" => match args.next() {
                Some(v) => addr = v,
                None => {
                    eprintln!("pipeline: --addr needs a HOST:PORT value\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => match other.strip_prefix("--addr=") {
                Some(v) => addr = v.to_owned(),
                None => {
                    eprintln!("pipeline: unknown option {other}\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let server = match copas::ServerBuilder::new()
        .name("pipeline")
        .read_timeout(Duration::from_secs(60))
        .serve(addr.as_str(), handle)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeline: cannot listen on {addr}: {e}");
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
            eprintln!("pipeline: the loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
