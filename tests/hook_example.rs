//! `examples/hooked.rs` as a user runs it: a legacy std::net handler per client, relaying
//! to an upstream, served concurrently by one thread through `copas_hook`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// An example's binary, built by `cargo test` next to this test binary.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds examples; with a test filter, run \
         `cargo build --example {name}` first",
        bin.display()
    );
    bin
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the example on a free port; returns it and the address it listens on.
fn start(upstream: &str) -> (Child, String) {
    let mut child = Child(
        Command::new(example("hooked"))
            .args(["--addr", "127.0.0.1:0", "--upstream", upstream])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the hooked example"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "hooked server listening on 127.0.0.1:PORT, upstream ..."
    let addr = line
        .split_whitespace()
        .nth(4)
        .expect("the listening line")
        .trim_end_matches(',')
        .to_owned();
    (child, addr)
}

/// A plain-thread upstream: answers `up: LINE` to each line; `bye` closes the connection.
fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line.trim_end() == "bye" {
                        return;
                    }
                    if conn.write_all(format!("up: {line}").as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        // A guard against hanging, not a timing assertion.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }
    fn send(&mut self, line: &str) {
        writeln!(self.writer, "{line}").unwrap();
    }
    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l).unwrap() {
            0 => None,
            _ => Some(l.trim_end().to_owned()),
        }
    }
}

#[test]
fn a_sleeping_client_does_not_hold_up_the_others() {
    let up = upstream();
    let (_child, addr) = start(&up);
    let mut sleeper = Client::connect(&addr);
    let mut other = Client::connect(&addr);
    sleeper.send("sleep 1500");
    // Sent after the sleep began (the sleeper's connection is served first)...
    thread::sleep(Duration::from_millis(100));
    other.send("hello");
    other.send("sleep 1");
    // ...and answered while it goes on: the handler's std::thread::sleep yields.
    assert_eq!(other.line().as_deref(), Some("up: hello"));
    assert_eq!(other.line().as_deref(), Some("slept 1"));
    // The sleeper's answer has not come yet: its sleep did not block the server (with a
    // blocked thread, `slept 1500` would have been sent before the other's answers).
    sleeper.reader.get_ref().set_nonblocking(true).unwrap();
    assert_eq!(
        sleeper
            .reader
            .fill_buf()
            .map(|b| b.len())
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::WouldBlock
    );
    sleeper.reader.get_ref().set_nonblocking(false).unwrap();
    sleeper.send("again");
    assert_eq!(sleeper.line().as_deref(), Some("slept 1500"));
    assert_eq!(sleeper.line().as_deref(), Some("up: again"));
}

#[test]
fn an_upstream_close_ends_only_that_client() {
    let up = upstream();
    let (_child, addr) = start(&up);
    let mut leaving = Client::connect(&addr);
    let mut staying = Client::connect(&addr);
    staying.send("one");
    assert_eq!(staying.line().as_deref(), Some("up: one"));
    leaving.send("bye");
    assert_eq!(
        leaving.line(),
        None,
        "the client's connection ends with its upstream"
    );
    staying.send("two");
    assert_eq!(staying.line().as_deref(), Some("up: two"));
    let mut newcomer = Client::connect(&addr);
    newcomer.send("three");
    assert_eq!(newcomer.line().as_deref(), Some("up: three"));
}

#[test]
fn help_and_bad_arguments() {
    let help = Command::new(example("hooked"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--upstream HOST:PORT"));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let out = Command::new(example("hooked"))
        .args(["--addr", &busy])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("hooked: cannot listen on {busy}: ")),
        "stderr: {err}"
    );
    let out = Command::new(example("hooked"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_hooked_echo_server_echoes() {
    let mut child = Child(
        Command::new(example("hooked_echo"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start hooked_echo"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.split_whitespace().last().unwrap().to_owned();
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(&addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("line {i}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.line(), Some(format!("line {i}")));
        c.send("quit");
        assert_eq!(c.line(), None);
    }
}
