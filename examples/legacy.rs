//! "Using Copas with an existing server": a line protocol written once, the way legacy
//! code is, against `BufRead + Write`, served either thread-per-connection with
//! `std::net` (`--threads`, the "before" picture) or on copas, where only the accept loop
//! changes. One command calls a slow blocking "legacy library" function; on copas it goes
//! through `copas::unblock`, so the loop keeps serving everyone else meanwhile.
//!
//! ```text
//! cargo run --example legacy                              # copas, 127.0.0.1:7300
//! cargo run --example legacy -- --threads --addr 127.0.0.1:7301
//! nc 127.0.0.1 7300      # then: HELLO you / PING / REPORT 500 / QUIT
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

#[path = "support/cli.rs"]
mod cli;

const USAGE: &str = "\
usage: legacy [--threads] [--addr HOST:PORT]

A line server: HELLO <name>, PING, REPORT <ms> (a slow blocking legacy call), QUIT.
  --threads         serve thread-per-connection with std::net instead of copas
  --addr HOST:PORT  where to listen (default 127.0.0.1:7300)
  --help            this text
";

/// The "legacy library": a slow blocking call (a report generator, a sync database
/// client, a file crunch). Here it just sleeps.
fn legacy_report(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    format!("report: {ms} ms of legacy work done")
}

/// The protocol, written once against `BufRead + Write`. `report` runs the slow legacy
/// call; each mode passes its own way of running it.
fn session<S: BufRead + Write>(
    conn: &mut S,
    report: &dyn Fn(u64) -> io::Result<String>,
) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("HELLO"), Some(name)) => format!("hello, {name}"),
            (Some("PING"), None) => "PONG".to_owned(),
            (Some("REPORT"), Some(ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms <= 10_000 => report(ms)?,
                _ => "ERR REPORT takes a number of milliseconds up to 10000".to_owned(),
            },
            (Some("QUIT"), None) => {
                conn.write_all(b"BYE\n")?;
                return conn.flush();
            }
            _ => format!("ERR unknown command: {}", line.trim_end()),
        };
        conn.write_all(reply.as_bytes())?;
        conn.write_all(b"\n")?;
        conn.flush()?;
    }
}

/// The "before" picture: one OS thread per connection.
fn serve_threads(listener: TcpListener) -> io::Result<()> {
    for conn in listener.incoming() {
        let conn = conn?;
        std::thread::spawn(move || {
            let mut io = match conn.try_clone() {
                Ok(w) => ReadWrite(BufReader::new(conn), w),
                Err(_) => return,
            };
            let _ = session(&mut io, &|ms| Ok(legacy_report(ms)));
        });
    }
    Ok(())
}

/// The copas version: the accept loop is a copas server; the session code is unchanged,
/// and the slow call goes to a worker thread.
fn serve_copas(listener: TcpListener) -> io::Result<()> {
    copas::ServerBuilder::new()
        .name("legacy")
        .serve(listener, |mut conn: copas::TcpStream| {
            session(&mut conn, &|ms| copas::unblock(move || legacy_report(ms)))
        })?;
    copas::run()
}

/// A std socket as `BufRead + Write`: buffered reads from one handle, writes to a clone.
struct ReadWrite(BufReader<std::net::TcpStream>, std::net::TcpStream);

impl io::Read for ReadWrite {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for ReadWrite {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.0.consume(n);
    }
}

impl Write for ReadWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.1.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.1.flush()
    }
}

fn main() {
    let args = cli::Args::parse_with_flags("legacy", USAGE, &["--addr"], &["--threads"], 0);
    let threads = args.flag("--threads");
    let addr = args.addr("127.0.0.1:7300");
    let listener =
        TcpListener::bind(&addr).unwrap_or_else(|e| cli::cannot_listen("legacy", &addr, &e));
    let mode = if threads { "threads" } else { "copas" };
    println!("legacy server ({mode}) listening on {addr}");
    let _ = io::stdout().flush();
    let served = if threads {
        serve_threads(listener)
    } else {
        serve_copas(listener)
    };
    if let Err(e) = served {
        cli::fail(
            "legacy",
            &format!("serving on {addr} failed: {}", cli::describe(&e)),
        );
    }
}
