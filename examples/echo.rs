//! A Copas-style echo server: every line a client sends comes back followed by `\n`; the
//! line `quit` closes the connection. Any number of clients at once, on one thread.
//!
//! ```text
//! cargo run --release --example echo                         # 127.0.0.1:7000
//! cargo run --release --example echo -- --addr 127.0.0.1:9000
//! nc 127.0.0.1 7000
//! ```

use std::io;

use copas::TcpStream;

#[path = "support/mod.rs"]
mod support;

use support::parse_addr;

fn handle(mut conn: TcpStream) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        if &line[..] == b"quit" {
            break;
        }
        conn.send(&line)?;
        conn.send(b"\n")?;
    }
    conn.close()
}

fn main() -> io::Result<()> {
    let addr = parse_addr("127.0.0.1:7000");
    let server = copas::ServerBuilder::new()
        .name("echo")
        .serve(addr.as_str(), handle)?;
    // `kill -USR1 PID` prints what every task is doing (docs/diagnostics.md).
    if let Err(e) = copas::dump_on_sigusr1() {
        eprintln!("echo: cannot install the SIGUSR1 task dump: {e}");
    }
    println!("echo server listening on {}", server.local_addr());
    copas::run()
}
