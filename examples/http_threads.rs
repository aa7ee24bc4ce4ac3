//! HTTP/1.1 "Hello, World!" with one OS thread per connection on `std::net`: the same
//! server as `examples/http.rs` (keep-alive, pipelining, `httparse`), for comparison.
//!
//! ```text
//! cargo run --release --example http_threads                         # 127.0.0.1:8080
//! cargo run --release --example http_threads -- --addr 127.0.0.1:9000
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

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mod.rs"]
mod support;

use cli::Args;
use support::{parse, respond, respond_error, Parsed};

const USAGE: &str = "\
Usage: http_threads [--addr HOST:PORT]

The HTTP server of `http` with one OS thread per connection, for comparison.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:8080)
  -h, --help        print this help
";

fn handle(mut conn: TcpStream) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Answer every complete request that is buffered (pipelining).
        let mut used = 0;
        loop {
            match parse(&buf[used..]) {
                Parsed::Request {
                    head_len,
                    body_len,
                    keep_alive,
                    head_only,
                } => {
                    if buf.len() - used < head_len + body_len {
                        break; // the body is still on its way
                    }
                    used += head_len + body_len;
                    respond(&mut out, "threads", keep_alive, head_only);
                    if !keep_alive {
                        return conn.write_all(&out);
                    }
                }
                Parsed::Partial => break,
                Parsed::Error(status) => {
                    respond_error(&mut out, "threads", status);
                    return conn.write_all(&out);
                }
            }
        }
        buf.drain(..used);
        // All buffered requests are answered: one write for all their responses.
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            // The client closed; an incomplete request left in `buf` gets no answer.
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let args = Args::parse("http_threads", USAGE, &["--addr"], 0);
    let addr = args.addr("127.0.0.1:8080");
    let listener = TcpListener::bind(addr.as_str())
        .unwrap_or_else(|e| cli::cannot_listen("http_threads", &addr, &e));
    println!(
        "thread-per-connection http server listening on http://{}/",
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
                eprintln!("http_threads: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
