//! The async reference for `examples/http.rs`: the same HTTP/1.1 "Hello, World!" on a
//! tokio `current_thread` runtime, one task per connection, requests parsed with
//! `httparse`. Same rules and the same response bytes (only the `Server` header says
//! `tokio` instead of `copas`, same length): keep-alive, `Connection: close` and the
//! HTTP/1.0 default honoured, `400`/`431`/`413`/`501` then close. Pipelined requests are
//! parsed as long as complete ones are buffered and their responses go out in one write.
//!
//! ```text
//! copas-bench serve-tokio-http --addr 127.0.0.1:8080
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// The same request parsing as the copas examples, so only the I/O differs.
#[path = "../../../examples/support/mod.rs"]
pub(crate) mod support;

use support::{parse, respond, respond_error, Parsed};

/// Room made in the read buffer before each read (the copas example's `receive_some`).
const READ_CHUNK: usize = 16 * 1024;

/// Serves HTTP on `addr` until killed (`workers` as in [`crate::serve_tokio::runtime`]).
pub(crate) fn serve(addr: &str, workers: usize) -> io::Result<()> {
    let rt = crate::serve_tokio::runtime(workers)?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!(
            "tokio http server listening on http://{}/",
            listener.local_addr()?
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tokio http: accept: {e}");
                    continue;
                }
            };
            tokio::spawn(async move {
                // Resets and early closes are a client's business.
                let _ = handle(stream).await;
            });
        }
    })
}

/// Answers every complete request at the front of `buf` into `out` and consumes it.
/// Returns `false` when the connection is to close after `out` is written.
pub(crate) fn answer_buffered(buf: &mut BytesMut, out: &mut Vec<u8>, server: &str) -> bool {
    loop {
        match parse(buf) {
            Parsed::Request {
                head_len,
                body_len,
                keep_alive,
                head_only,
            } => {
                if buf.len() < head_len + body_len {
                    return true; // the body is still on its way
                }
                buf.advance(head_len + body_len);
                respond(out, server, keep_alive, head_only);
                if !keep_alive {
                    return false;
                }
            }
            Parsed::Partial => return true,
            Parsed::Error(status) => {
                respond_error(out, server, status);
                return false;
            }
        }
    }
}

async fn handle(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let keep_open = answer_buffered(&mut buf, &mut out, "tokio");
        // All buffered requests are answered: one write for all their responses.
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if !keep_open {
            return Ok(());
        }
        // Reclaims the consumed front of the buffer when it can (no allocation while the
        // connection only ever holds partial requests).
        buf.reserve(READ_CHUNK);
        if stream.read_buf(&mut buf).await? == 0 {
            // The client closed; an incomplete request left in `buf` gets no answer.
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::support::{MAX_HEAD, MAX_HEADERS};
    use super::*;

    fn answers(input: &[u8]) -> (Vec<u8>, bool, usize) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let open = answer_buffered(&mut buf, &mut out, "tokio");
        (out, open, buf.len())
    }

    const OK_KEEP: &[u8] = b"HTTP/1.1 200 OK\r\nServer: tokio\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, World!";

    #[test]
    fn keep_alive_and_pipelining() {
        let (out, open, left) =
            answers(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /");
        assert_eq!(out, [OK_KEEP, OK_KEEP].concat());
        assert!(open);
        assert_eq!(left, 5);
    }

    #[test]
    fn close_rules() {
        let (out, open, _) =
            answers(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert!(out.ends_with(b"Connection: close\r\n\r\nHello, World!"));
        assert!(!open);
        let (_, open, _) = answers(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!open);
        let (out, open, _) = answers(b"HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(open);
        assert!(out.ends_with(b"Connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn bad_and_oversize_heads() {
        let (out, open, _) = answers(b"GET / HTTP/1.1\r\nHost x\r\n\r\n");
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(!open);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        let (out, open, _) = answers(&big);
        assert!(out.starts_with(b"HTTP/1.1 431 "));
        assert!(!open);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let (out, _, _) = answers(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert!(out.starts_with(b"HTTP/1.1 431 "));
    }

    #[test]
    fn bodies() {
        let (out, open, left) = answers(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
        assert!(out.is_empty() && open);
        assert_eq!(
            left,
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab".len()
        );
        let (out, _, left) = answers(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
        assert_eq!(out, OK_KEEP);
        assert_eq!(left, 0);
        let (out, _, _) = answers(b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
        assert!(out.starts_with(b"HTTP/1.1 413 "));
        let (out, _, _) = answers(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(out.starts_with(b"HTTP/1.1 501 "));
    }
}
