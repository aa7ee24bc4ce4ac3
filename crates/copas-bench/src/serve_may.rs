//! The other stackful-coroutine runtime: [may](https://crates.io/crates/may) with
//! `--workers N` worker threads (1 for the single-threaded rows, 2 for the 2-thread rows).
//!
//! - `copas-bench serve-may --addr A [--workers N]`: echo with the echo example's protocol
//!   (each line comes back followed by `\n`, a `\r` before the `\n` dropped, `quit`
//!   closes), one may coroutine per connection, written in blocking style on may's
//!   `TcpStream` like the copas example; output is flushed when no input is buffered.
//! - `copas-bench serve-may-http --addr A [--workers N]`: `may_minihttp`'s server
//!   answering `Hello, World!` to every request (its own parser and response head, which
//!   adds a `Date` header; keep-alive and pipelining as may_minihttp does them).
#![allow(unsafe_code)]

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

use may::net::{TcpListener, TcpStream};
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

/// A line longer than this closes the connection (the copas example's limit).
const MAX_LINE: usize = 64 * 1024;

fn configure(workers: usize) {
    may::config().set_workers(workers.max(1));
}

/// Serves echo on `addr` until killed.
pub(crate) fn serve(addr: &str, workers: usize) -> io::Result<()> {
    configure(workers);
    let listener = TcpListener::bind(addr)?;
    println!("may echo listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("may echo: accept: {e}");
                continue;
            }
        };
        // SAFETY: may's `spawn` is unsafe because a coroutine may move between worker
        // threads and must then neither hold thread-local storage across a suspension
        // nor block its thread in a non-may call. `handle` uses only may's socket and
        // std's buffering (no thread-locals, no blocking outside may's I/O).
        unsafe {
            may::coroutine::spawn(move || {
                // Resets and early closes are a client's business.
                let _ = handle(stream);
            });
        }
    }
    Ok(())
}

fn handle(stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 2)
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
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
    }
    writer.flush()
}

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request<'_, '_, '_>, res: &mut Response<'_>) -> io::Result<()> {
        res.body("Hello, World!");
        Ok(())
    }
}

struct HelloFactory;

impl HttpServiceFactory for HelloFactory {
    type Service = Hello;
    fn new_service(&self, _id: usize) -> Hello {
        Hello
    }
}

/// Serves may_minihttp's hello world on `addr` until killed.
pub(crate) fn serve_http(addr: &str, workers: usize) -> io::Result<()> {
    configure(workers);
    // may_minihttp does not tell the address it bound: resolve port 0 here first (the
    // port is free once this probe closes; the race with other programs is accepted).
    let addr = std::net::TcpListener::bind(addr)?.local_addr()?;
    let server = HelloFactory.start(addr)?;
    println!("may_minihttp listening on http://{addr}/");
    server
        .join()
        .map_err(|_| io::Error::other("the may_minihttp server panicked"))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::{Duration, Instant};

    #[test]
    fn may_echoes_lines_and_closes_on_quit() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::thread::spawn(move || super::serve(&addr.to_string(), 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("the may server never listened: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"one\r\ntwo\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut got = String::new();
        r.read_line(&mut got).unwrap();
        r.read_line(&mut got).unwrap();
        assert_eq!(got, "one\ntwo\n");
        s.write_all(b"quit\n").unwrap();
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    }
}
