//! A TCP forwarder on copas: every connection accepted on `--addr` is connected to
//! `--upstream`, and two tasks pump the bytes, one per direction, on the split halves of
//! the two streams.
//!
//! ```text
//! cargo run --release --example proxy -- --addr 127.0.0.1:7002 --upstream 127.0.0.1:7000
//! cargo run --release --example echo            # the upstream
//! nc 127.0.0.1 7002
//! ```
//!
//! - Half-close goes through: when one side ends its output (EOF), the proxy flushes what
//!   it holds and shuts down writing on the other side; the opposite direction goes on.
//! - When the upstream cannot be reached (refused, unreachable, no answer in 10 s) the
//!   client's connection is closed at once. When either side fails (a reset), both
//!   connections are torn down: what the proxy already received for the healthy side is
//!   still delivered to it, then it is closed.
//! - Memory is bounded: each direction holds at most one read (16 KiB) and one write
//!   buffer (64 KiB). A side that does not read makes the proxy stop reading from the
//!   other, so TCP flow control holds the sender back.
//! - Bytes pass unchanged, whatever the data and however it is chunked.

use std::io::{self, BufRead};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use copas::{ReadHalf, TcpStream, WriteHalf};

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: proxy --upstream HOST:PORT [--addr HOST:PORT]

Forwards every TCP connection accepted on --addr to --upstream, both ways.

Options:
  --addr HOST:PORT      address to listen on (default 127.0.0.1:7002)
  --upstream HOST:PORT  where to forward connections (required)
  -h, --help            print this help
";

/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies `from` to `to` until `from` ends, then shuts down writing on `to` (half-close).
/// Returns the bytes copied. On failure both connections are shut down, which wakes and
/// ends the pump of the other direction.
fn pump(mut from: ReadHalf, mut to: WriteHalf) -> io::Result<u64> {
    let mut total = 0u64;
    let result = copy(&mut from, &mut to, &mut total);
    match &result {
        // NotConnected: the other pump failed and shut us down; it has done the rest.
        Err(e) if e.kind() != io::ErrorKind::NotConnected => {
            // One of the sockets failed. Drop what is queued for `from`'s socket and stop
            // reading `to`'s, which ends the other pump; what `to` still buffers is
            // delivered when it is dropped (within its linger time), then it closes.
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Read);
        }
        _ => {}
    }
    result.map(|()| total)
}

fn copy(from: &mut ReadHalf, to: &mut WriteHalf, total: &mut u64) -> io::Result<()> {
    loop {
        // At most one read's worth is buffered: `send` suspends while `to`'s write buffer
        // is full, and only then is `from` read again.
        let data = from.fill_buf()?;
        if data.is_empty() {
            return to.shutdown(Shutdown::Write);
        }
        let n = data.len();
        to.send(data)?;
        from.consume(n);
        *total += n as u64;
    }
}

fn connect(upstream: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in upstream {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
}

fn handle(client: TcpStream, upstream: &[SocketAddr], name: &str) -> io::Result<()> {
    let server = match connect(upstream) {
        Ok(s) => s,
        Err(e) => {
            // Dropping `client` closes it right away: nothing is buffered for it.
            let peer = client
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            eprintln!(
                "proxy: cannot connect {peer} to upstream {name}: {}",
                cli::describe(&e)
            );
            return Ok(());
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_in, client_out) = client.split();
    let (server_in, server_out) = server.split();
    let up = copas::spawn(move || pump(client_in, server_out));
    let down = pump(server_in, client_out);
    let up = up
        .join()
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    // Our own shutdown makes the other pump fail with NotConnected: not worth a report.
    let quiet = |r: io::Result<u64>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(0),
        other => other,
    };
    quiet(down).and(quiet(up)).map(drop)
}

fn main() {
    let args = Args::parse("proxy", USAGE, &["--addr", "--upstream"], 0);
    let addr = args.addr("127.0.0.1:7002");
    let upstream_name = args.required("--upstream").to_owned();
    args.host_port("--upstream", &upstream_name);
    let upstream: Vec<SocketAddr> = match upstream_name.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => cli::fail(
            "proxy",
            &format!(
                "cannot resolve upstream {upstream_name}: {}",
                cli::describe(&e)
            ),
        ),
    };
    let upstream: Rc<[SocketAddr]> = upstream.into();
    let name: Rc<str> = upstream_name.as_str().into();
    let server = copas::ServerBuilder::new()
        .name("proxy")
        .serve(addr.as_str(), move |conn| handle(conn, &upstream, &name))
        .unwrap_or_else(|e| cli::cannot_listen("proxy", &addr, &e));
    println!(
        "proxy listening on {}, forwarding to {upstream_name}",
        server.local_addr()
    );
    cli::run("proxy");
}
