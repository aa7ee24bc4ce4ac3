//! HTTP/1.1 "Hello, World!" on copas: one task per connection, keep-alive and pipelining,
//! requests parsed with `httparse`. Compare with `examples/http_threads.rs`, the same
//! server with one OS thread per connection.
//!
//! ```text
//! cargo run --release --example http                         # 127.0.0.1:8080
//! cargo run --release --example http -- --addr 127.0.0.1:9000
//! curl -v http://127.0.0.1:8080/
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Every request gets `200 OK` and `Hello, World!` (no body for `HEAD`). A malformed
//! request gets `400` and the connection closes; a request head over 64 KiB (or with too
//! many header lines) gets `431` and closes; a body over 1 MiB gets `413`; a chunked body
//! gets `501`. `Connection: close` is honoured, and HTTP/1.0 closes unless the client
//! asked for keep-alive. Pipelined requests are parsed as long as complete ones are
//! buffered; their responses are written with one flush.

use std::io::{self, BufRead};

use copas::TcpStream;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mod.rs"]
mod support;

use cli::Args;
use support::{parse, Parsed, BODY};

const USAGE: &str = "\
Usage: http [--addr HOST:PORT] [--threads N]

HTTP/1.1 \"Hello, World!\" on copas, one task per connection.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:8080)
  --threads N       serve on N threads, one runtime and SO_REUSEPORT listener each
                    (default 1)
  -h, --help        print this help
";

fn respond(conn: &mut TcpStream, keep_alive: bool, head_only: bool) -> io::Result<()> {
    // Whole responses, so that the common case is a single `send`.
    const HEAD: &str =
        "HTTP/1.1 200 OK\r\nServer: copas\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n";
    const KEEP: &[u8] = concat!(
        "HTTP/1.1 200 OK\r\nServer: copas\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n",
        "Connection: keep-alive\r\n\r\nHello, World!"
    )
    .as_bytes();
    const CLOSE: &[u8] = concat!(
        "HTTP/1.1 200 OK\r\nServer: copas\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n",
        "Connection: close\r\n\r\nHello, World!"
    )
    .as_bytes();
    debug_assert!(KEEP.ends_with(BODY) && KEEP.starts_with(HEAD.as_bytes()));
    let full = if keep_alive { KEEP } else { CLOSE };
    if head_only {
        conn.send(&full[..full.len() - BODY.len()])
    } else {
        conn.send(full)
    }
}

fn respond_error(conn: &mut TcpStream, status: u16) -> io::Result<()> {
    let mut out = Vec::new();
    support::respond_error(&mut out, "copas", status);
    conn.send(&out)
}

fn handle(mut conn: TcpStream) -> io::Result<()> {
    loop {
        // Answer every complete request that is buffered (pipelining), parsing straight
        // from the stream's own buffer.
        loop {
            let request = parse(conn.buffered());
            match request {
                Parsed::Request {
                    head_len,
                    body_len,
                    keep_alive,
                    head_only,
                } => {
                    if conn.buffered().len() < head_len + body_len {
                        break; // the body is still on its way
                    }
                    conn.consume(head_len + body_len);
                    respond(&mut conn, keep_alive, head_only)?;
                    if !keep_alive {
                        return conn.close();
                    }
                }
                Parsed::Partial => break,
                Parsed::Error(status) => {
                    respond_error(&mut conn, status)?;
                    return conn.close();
                }
            }
        }
        // All buffered requests are answered: send the responses in one write.
        conn.flush()?;
        // Wait for more input, keeping what is buffered (a partial request).
        if conn.receive_more()? == 0 {
            // The client closed; an incomplete request left buffered gets no answer.
            return conn.close();
        }
    }
}

fn main() {
    let args = Args::parse("http", USAGE, &["--addr", "--threads"], 0);
    let addr = args.addr("127.0.0.1:8080");
    let threads = args.threads();
    cli::serve("http", &addr, threads, handle);
}
