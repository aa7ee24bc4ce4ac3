//! The lower bound: a hand-written, single-threaded, level-triggered epoll echo loop with
//! the echo example's protocol (each line comes back followed by `\n`, a `\r` before the
//! `\n` dropped; the line `quit` closes). Per request it makes one `read`, one `write` and
//! its share of one `epoll_wait` — nothing a general runtime could do with fewer.
//!
//! `serve_http` is the same loop for `examples/http.rs`'s protocol (HTTP/1.1 hello world,
//! the shared request parser): the lower bound of the HTTP rows.
//!
//! Invariant: a connection with unsent output is registered for `OUT` only, so a client
//! that does not read cannot make the server buffer without bound.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};

use bytes::BytesMut;

use crate::epoll::{self, Epoll, IN, OUT};

const LISTENER: u64 = u64::MAX;
const READ_CHUNK: usize = 64 * 1024;
/// A line longer than this closes the connection (the copas example's limit).
const MAX_LINE: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    /// The start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    /// Output the kernel did not take yet.
    out: Vec<u8>,
    /// Close once `out` is sent.
    closing: bool,
    /// Registered for `OUT` (not `IN`) because `out` is not empty.
    waiting_out: bool,
    /// HTTP: received bytes not yet answered.
    http_in: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Echo,
    Http,
}

/// Serves echo on `addr` until killed.
pub(crate) fn serve(addr: &str) -> io::Result<()> {
    serve_proto(addr, Proto::Echo)
}

/// Serves HTTP hello world on `addr` until killed.
pub(crate) fn serve_http(addr: &str) -> io::Result<()> {
    serve_proto(addr, Proto::Http)
}

fn serve_proto(addr: &str, proto: Proto) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    match proto {
        Proto::Echo => println!("epoll echo listening on {}", listener.local_addr()?),
        Proto::Http => println!(
            "epoll http server listening on http://{}/",
            listener.local_addr()?
        ),
    }
    let mut ep = Epoll::new(1024)?;
    ep.add(listener.as_fd(), IN, LISTENER)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; READ_CHUNK];
    loop {
        let n = ep.wait(-1)?;
        for i in 0..n {
            let ev = ep.event(i);
            if ev.token == LISTENER {
                accept_all(&listener, &ep, &mut conns, &mut free)?;
                continue;
            }
            let idx = ev.token as usize;
            let Some(conn) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let keep = if ev.events & OUT != 0 && !conn.out.is_empty() {
                flush(&ep, conn, idx)
            } else if proto == Proto::Http {
                on_readable_http(&ep, conn, idx, &mut scratch)
            } else {
                on_readable(&ep, conn, idx, &mut scratch)
            };
            if !keep {
                // Dropping the stream closes the descriptor, which also removes it from
                // the epoll interest list.
                conns[idx] = None;
                free.push(idx);
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    ep: &Epoll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> io::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                eprintln!("epoll echo: accept: {e}");
                return Ok(());
            }
        };
        stream.set_nonblocking(true)?;
        let idx = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        ep.add(stream.as_fd(), IN, idx as u64)?;
        conns[idx] = Some(Conn {
            stream,
            partial: Vec::new(),
            out: Vec::new(),
            closing: false,
            waiting_out: false,
            http_in: BytesMut::new(),
        });
    }
}

/// Reads once, echoes every complete line; returns whether to keep the connection.
fn on_readable(ep: &Epoll, conn: &mut Conn, idx: usize, scratch: &mut [u8]) -> bool {
    let n = match epoll::read(conn.stream.as_raw_fd(), scratch) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
        Err(_) => return false,
    };
    let mut data = &scratch[..n];
    while let Some(pos) = data.iter().position(|&b| b == b'\n') {
        let line_end = &data[..pos];
        data = &data[pos + 1..];
        let line: &[u8] = if conn.partial.is_empty() {
            line_end
        } else {
            conn.partial.extend_from_slice(line_end);
            &conn.partial
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"quit" {
            conn.closing = true;
            break;
        }
        conn.out.extend_from_slice(line);
        conn.out.push(b'\n');
        conn.partial.clear();
    }
    if !conn.closing {
        conn.partial.extend_from_slice(data);
        if conn.partial.len() > MAX_LINE {
            return false;
        }
    }
    flush(ep, conn, idx)
}

/// Reads once, answers every complete request; returns whether to keep the connection.
fn on_readable_http(ep: &Epoll, conn: &mut Conn, idx: usize, scratch: &mut [u8]) -> bool {
    let n = match epoll::read(conn.stream.as_raw_fd(), scratch) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
        Err(_) => return false,
    };
    conn.http_in.extend_from_slice(&scratch[..n]);
    if !crate::serve_tokio_http::answer_buffered(&mut conn.http_in, &mut conn.out, "epoll") {
        conn.closing = true;
    }
    flush(ep, conn, idx)
}

/// Writes pending output; switches the registration between `IN` and `OUT`. Returns
/// whether to keep the connection.
fn flush(ep: &Epoll, conn: &mut Conn, idx: usize) -> bool {
    let mut sent = 0;
    while sent < conn.out.len() {
        match epoll::write(conn.stream.as_raw_fd(), &conn.out[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    conn.out.drain(..sent);
    let blocked = !conn.out.is_empty();
    if blocked != conn.waiting_out {
        conn.waiting_out = blocked;
        let interest = if blocked { OUT } else { IN };
        if ep
            .modify(conn.stream.as_fd(), interest, idx as u64)
            .is_err()
        {
            return false;
        }
    }
    blocked || !conn.closing
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::Duration;

    #[test]
    fn echoes_lines_and_closes_on_quit() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::thread::spawn(move || super::serve(&addr.to_string()));
        let mut s = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"one\r\ntw").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b"o\nthree\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut got = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            got.push(line);
        }
        assert_eq!(got, ["one\n", "two\n", "three\n"]);
        s.write_all(b"quit\n").unwrap();
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    }
}
