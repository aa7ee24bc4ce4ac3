//! A line chat: every line a client sends goes to all other clients, prefixed with the
//! sender's address. Each connection is split: its read half runs in the handler task, its
//! write half in a writer task fed by a `Queue` of outgoing lines, so a slow client never
//! holds up the others (its queue is bounded: a client that falls too far behind is
//! dropped).
//!
//! ```text
//! cargo run --example chat                          # 127.0.0.1:7001
//! cargo run --example chat -- --addr 127.0.0.1:9001
//! nc 127.0.0.1 7001      # in two terminals; type in one, read in the other
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use copas::sync::Queue;
use copas::Bytes;

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: chat [--addr HOST:PORT]

A line chat: every line a client sends goes to all the other clients.

Options:
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7001)
  -h, --help        print this help
";

/// How many lines may wait for a slow client before it is disconnected.
const MAX_BACKLOG: usize = 1000;

type Clients = Rc<RefCell<HashMap<SocketAddr, Queue<Bytes>>>>;

fn broadcast(clients: &Clients, from: SocketAddr, text: &[u8]) {
    let mut line = format!("{from}: ").into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    let line = Bytes::from(line);
    for (addr, queue) in clients.borrow().iter() {
        if *addr == from {
            continue;
        }
        if queue.len() >= MAX_BACKLOG {
            queue.close(); // its writer ends, and with it the connection
        } else {
            let _ = queue.push(line.clone());
        }
    }
}

fn main() {
    let args = Args::parse("chat", USAGE, &["--addr"], 0);
    let addr = args.addr("127.0.0.1:7001");
    let clients: Clients = Rc::default();
    let server = copas::ServerBuilder::new()
        .name("chat")
        .max_line_length(4096)
        .serve(addr.as_str(), move |conn| {
            let peer = conn.peer_addr()?;
            let (mut reader, mut writer) = conn.split();
            let outbox: Queue<Bytes> = Queue::with_name(format!("chat:{peer}"));
            clients.borrow_mut().insert(peer, outbox.clone());
            let out = outbox.clone();
            let writer_task = copas::spawn(move || -> io::Result<()> {
                while let Ok(line) = out.pop() {
                    writer.send(&line)?;
                }
                writer.close()
            });
            broadcast(&clients, peer, b"(joined)");
            let result = (|| -> io::Result<()> {
                while let Some(line) = reader.receive_line()? {
                    broadcast(&clients, peer, &line);
                }
                Ok(())
            })();
            clients.borrow_mut().remove(&peer);
            broadcast(&clients, peer, b"(left)");
            outbox.close();
            let _ = writer_task.join();
            result
        })
        .unwrap_or_else(|e| cli::cannot_listen("chat", &addr, &e));
    println!("chat server listening on {}", server.local_addr());
    cli::run("chat");
}
