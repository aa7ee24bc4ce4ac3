//! The HTTP request-head parsing and responses shared by `examples/http.rs`,
//! `examples/http_threads.rs` and copas-bench's tokio server, so that they differ only in
//! how they do I/O (included with `#[path = "support/mod.rs"] mod support;`). The
//! examples' command line is in `support/cli.rs`.
#![allow(dead_code)]

use httparse::Status;

/// The largest request head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The largest request body accepted (and discarded).
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Header lines beyond this count get `431` too.
pub(crate) const MAX_HEADERS: usize = 64;
pub(crate) const BODY: &[u8] = b"Hello, World!";

/// What the front of the input buffer holds.
pub(crate) enum Parsed {
    /// A complete head: its length, the body length, whether to keep the connection
    /// open afterwards, and whether it is a `HEAD` request.
    Request {
        head_len: usize,
        body_len: usize,
        keep_alive: bool,
        head_only: bool,
    },
    /// Not a complete head yet.
    Partial,
    /// Answer with this status and close.
    Error(u16),
}

pub(crate) fn parse(buf: &[u8]) -> Parsed {
    // Uninitialised header slots: the parser writes only the ones it fills, instead of
    // this function clearing all 64 (2 KiB) for every request.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(Status::Complete(n)) if n > MAX_HEAD => return Parsed::Error(431),
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Error(431),
        Ok(Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(431),
        Err(_) => return Parsed::Error(400),
    };
    // HTTP/1.1 keeps the connection by default, HTTP/1.0 closes by default.
    let mut keep_alive = req.version == Some(1);
    let mut body_len = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(n) if n > MAX_BODY => return Parsed::Error(413),
                Some(n) => body_len = n,
                None => return Parsed::Error(400),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Error(501);
        }
    }
    Parsed::Request {
        head_len,
        body_len,
        keep_alive,
        head_only: req.method == Some("HEAD"),
    }
}

/// Appends a `200 OK` response (`Hello, World!`, no body for `HEAD`) naming `server`.
pub(crate) fn respond(out: &mut Vec<u8>, server: &str, keep_alive: bool, head_only: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: ");
    out.extend_from_slice(server.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n");
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"Connection: close\r\n\r\n".as_slice()
    });
    if !head_only {
        out.extend_from_slice(BODY);
    }
}

/// Appends an error response with `status`, after which the connection closes.
pub(crate) fn respond_error(out: &mut Vec<u8>, server: &str, status: u16) {
    let reason = match status {
        400 => "Bad Request",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Not Implemented",
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: {server}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    out.extend_from_slice(msg.as_bytes());
}
