//! Unix domain sockets: `UnixStream` has every call of `TcpStream` (the same generic
//! `Stream` code), `add_server` serves a path next to a TCP server on the same loop,
//! Linux abstract addresses, the stale-socket-file policy (with a file left behind by a
//! killed child process), and the echo example's `--unix` as a child process.

mod common;

#[path = "../examples/support/child.rs"]
mod child;

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{guard, on_thread, Rng};
use copas::{Stream, StreamSocket, UnixListener, UnixStream};

/// A fresh directory for socket files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "copas-unix-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An abstract name no other test (or test run) uses.
fn abstract_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "copas-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One echo handler for both kinds of stream.
fn echo<S: StreamSocket>(mut conn: Stream<S>) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        conn.send(&line)?;
        conn.send(b"\n")?;
    }
    conn.close()
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// A copas stream and its blocking std peer.
fn pair() -> (UnixStream, StdUnixStream) {
    let (a, b) = StdUnixStream::pair().expect("socketpair");
    (UnixStream::from_std(a).expect("wrap"), b)
}

#[test]
fn two_hundred_concurrent_clients_on_a_path() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("echo.sock");
        let server = copas::add_server(path.clone(), echo).unwrap();
        assert_eq!(server.local_addr().as_pathname(), Some(path.as_path()));
        let clients: Vec<_> = (0..200)
            .map(|i| {
                let path = path.clone();
                copas::spawn(move || {
                    let mut s = UnixStream::connect(&path)?;
                    for j in 0..10 {
                        let line = format!("client {i} line {j}");
                        s.send(line.as_bytes())?;
                        s.send(b"\n")?;
                        let back = s.receive_line()?.expect("an echo");
                        assert_eq!(back, line.as_bytes());
                    }
                    s.close()
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap().expect("a client's exchange");
        }
        assert_eq!(server.accepted(), 200);
        server.stop();
        copas::run().unwrap();
        assert!(
            !path.exists(),
            "the server removes its socket file when it stops"
        );
    });
}

#[test]
fn every_receive_form_and_std_traits() {
    guard(|| {
        let (mut conn, peer) = pair();
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            peer.write_all(b"line one\r\nline two\nEXACT").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b"some").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b"read\nbufread line\nmore").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b" and the rest").unwrap();
            // peer dropped: end of stream
        });
        let h = copas::spawn(move || -> io::Result<()> {
            assert_eq!(conn.receive_line()?.unwrap(), &b"line one"[..]);
            assert_eq!(conn.receive_line()?.unwrap(), &b"line two"[..]);
            assert_eq!(conn.receive_exact(5)?, &b"EXACT"[..]);
            let some = conn.receive_some(4)?;
            assert_eq!(some, &b"some"[..]);
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf)?;
            assert_eq!(&buf, b"read\n");
            let mut line = String::new();
            conn.read_line(&mut line)?;
            assert_eq!(line, "bufread line\n");
            while !conn.buffered().starts_with(b"more") {
                assert!(conn.receive_more()? > 0);
            }
            let rest = conn.receive_to_end()?;
            assert_eq!(rest, &b"more and the rest"[..]);
            assert_eq!(conn.receive_line()?, None, "clean end of stream");
            assert!(conn.receive_some(10)?.is_empty());
            Ok(())
        });
        h.join().unwrap().unwrap();
        writer.join().unwrap();
    });
}

#[test]
fn eight_mib_byte_exact_through_a_path_server() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("bulk.sock");
        // Echoes raw chunks until end of stream, then closes.
        let server = copas::add_server(path.clone(), |mut conn: UnixStream| {
            loop {
                let chunk = conn.receive_some(64 * 1024)?;
                if chunk.is_empty() {
                    break;
                }
                conn.send(&chunk)?;
            }
            conn.close()
        })
        .unwrap();
        let data = Rc::new(Rng::new(11).bytes(8 * 1024 * 1024));
        let expected = data.clone();
        let client = copas::spawn(move || -> io::Result<Vec<u8>> {
            let s = UnixStream::connect(&path)?;
            let (mut r, mut w) = s.split();
            let writer = copas::spawn(move || -> io::Result<()> {
                for piece in data.chunks(100_003) {
                    w.send(piece)?;
                }
                w.shutdown(Shutdown::Write)
            });
            let got = r.receive_to_end()?;
            writer.join().unwrap()?;
            Ok(got.to_vec())
        });
        let got = client.join().unwrap().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == *expected, "the echo differs from what was sent");
        server.stop();
        copas::run().unwrap();
    });
}

#[test]
fn half_close_then_reply() {
    guard(|| {
        let (mut conn, peer) = pair();
        let h = copas::spawn(move || -> io::Result<()> {
            let request = conn.receive_to_end()?;
            conn.send(b"got ")?;
            conn.send(request.len().to_string().as_bytes())?;
            conn.close()
        });
        let client = std::thread::spawn(move || {
            let mut peer = peer;
            peer.write_all(b"a request without framing").unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            let mut reply = String::new();
            peer.read_to_string(&mut reply).unwrap();
            reply
        });
        h.join().unwrap().unwrap();
        assert_eq!(client.join().unwrap(), "got 25");
    });
}

#[test]
fn split_halves_reunite_and_close_wakes_the_reader() {
    guard(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let (ra, wa) = a.split();
        let (rc, wc) = c.split();
        // Halves of different streams do not reunite; both come back.
        let copas::ReuniteError(ra, wc) = ra.reunite(wc).unwrap_err();
        let _c = rc.reunite(wc).unwrap();
        let a = ra.reunite(wa).unwrap();
        let (mut ra, mut wa) = a.split();
        let mut b = b;
        let reader = copas::spawn(move || -> io::Result<()> {
            assert_eq!(ra.receive_line()?.unwrap(), &b"ping"[..]);
            // Blocks until the write half closes the stream.
            let e = ra.receive_line().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotConnected);
            Ok(())
        });
        let writer = copas::spawn(move || -> io::Result<()> {
            assert_eq!(b.receive_line()?.unwrap(), &b"to b"[..]);
            b.send(b"ping\n")?;
            b.flush()?;
            copas::sleep(Duration::from_millis(20))?;
            Ok(())
        });
        wa.send(b"to b\n").unwrap();
        writer.join().unwrap().unwrap();
        wa.close().unwrap();
        reader.join().unwrap().unwrap();
    });
}

#[test]
fn a_peer_that_never_reads_is_bounded() {
    guard(|| {
        let (mut conn, peer) = pair();
        conn.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        conn.set_write_buffer_size(32 * 1024);
        let h = copas::spawn(move || -> io::Result<(io::Error, usize, usize)> {
            let chunk = vec![7u8; 16 * 1024];
            let mut sent = 0usize;
            let err = loop {
                match conn.send(&chunk) {
                    Ok(()) => sent += chunk.len(),
                    Err(e) => break e,
                }
                assert!(sent < 256 * 1024 * 1024, "send never pushed back");
                assert!(conn.pending_output() <= 32 * 1024);
            };
            // std's contract for Write::write under a full socket: Err only if nothing
            // was accepted (a timeout here: output is still buffered, so a write of the
            // buffer's size must flush first), never a silent drop.
            assert!(conn.pending_output() > 0);
            let w = conn.write(&vec![7u8; 32 * 1024]);
            assert!(
                matches!(&w, Err(e) if e.kind() == io::ErrorKind::TimedOut),
                "{w:?}"
            );
            Ok((err, sent, conn.pending_output()))
        });
        let (err, sent, pending) = h.join().unwrap().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(pending <= 32 * 1024);
        assert!(sent > 0);
        drop(peer);
    });
}

#[test]
fn write_is_partial_ok_when_the_kernel_takes_some() {
    guard(|| {
        let (mut conn, peer) = pair();
        conn.set_write_buffer_size(1024);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            // The writer finds the socket full first; then everything is drained.
            wait.recv().unwrap();
            let mut peer = peer;
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let data = Rng::new(5).bytes(4 * 1024 * 1024);
        let expected = data.clone();
        let h = copas::spawn(move || -> io::Result<usize> {
            let first = conn.write(&data)?;
            assert!(first > 0 && first <= data.len());
            go.send(()).unwrap();
            conn.write_all(&data[first..])?;
            conn.close()?;
            Ok(first)
        });
        let first = h.join().unwrap().unwrap();
        assert!(
            first < expected.len(),
            "4 MiB does not fit a Unix socket's buffer"
        );
        assert!(reader.join().unwrap() == expected);
    });
}

#[test]
fn timeouts_keep_what_arrived() {
    guard(|| {
        let (mut conn, mut peer) = pair();
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert_eq!(
            conn.set_read_timeout(Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        peer.write_all(b"partial").unwrap();
        let e = conn.receive_line().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(conn.buffered(), b"partial");
        peer.write_all(b" line\n").unwrap();
        assert_eq!(conn.receive_line().unwrap().unwrap(), &b"partial line"[..]);
    });
}

#[test]
fn dropped_stream_delivers_its_buffered_output() {
    guard(|| {
        let (conn, peer) = pair();
        let data = Rng::new(3).bytes(3 * 1024 * 1024);
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut peer = peer;
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let h = copas::spawn(move || -> io::Result<()> {
            let mut conn = conn;
            conn.set_write_buffer_size(8 * 1024 * 1024);
            conn.send(&data)?;
            drop(conn); // the linger task delivers the rest
            Ok(())
        });
        h.join().unwrap().unwrap();
        copas::run().unwrap();
        assert!(reader.join().unwrap() == expected);
    });
}

#[test]
fn addresses_names_and_debug() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("named.sock");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        let p = path.clone();
        let client = copas::spawn(move || UnixStream::connect(&p));
        let (conn, peer) = listener.accept().unwrap();
        let client = client.join().unwrap().unwrap();
        assert!(peer.is_unnamed(), "a connecting client is unnamed");
        assert_eq!(
            conn.local_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        assert_eq!(
            client.peer_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        assert!(conn.peer_addr().unwrap().is_unnamed());
        conn.set_name("control");
        assert_eq!(conn.name().as_deref(), Some("control"));
        let debug = format!("{conn:?}");
        assert!(debug.starts_with("UnixStream"), "{debug}");
        assert!(debug.contains("control"), "{debug}");
        assert!(format!("{listener:?}").contains("named.sock"));
    });
}

#[test]
fn connect_errors_are_the_os_kinds() {
    guard(|| {
        let dir = TempDir::new();
        let missing = dir.path("missing.sock");
        let e = UnixStream::connect(&missing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // A socket file nobody listens on.
        let stale = dir.path("stale.sock");
        drop(StdUnixListener::bind(&stale).unwrap());
        let e = UnixStream::connect(&stale).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let long = dir.path(&"x".repeat(200));
        let e = UnixStream::connect(&long).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = copas::add_server(long, echo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // A string is a TCP address, never a path; one that looks like a path says so.
        let e = copas::add_server("/tmp/looks-like-a.sock", echo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("pass a path"), "{e}");
        assert!(!Path::new("/tmp/looks-like-a.sock").exists());
    });
}

/// Starts the echo example on `path` as a child process and waits until it says it
/// listens.
fn start_echo_child(path: &Path) -> std::process::Child {
    let mut child = Command::new(child::path("echo"))
        .arg("--unix")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the echo example starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim_end(),
        format!("echo server listening on {}", path.display())
    );
    child
}

fn std_exchange(path: &Path, line: &str) -> String {
    let s = StdUnixStream::connect(path).expect("connect to the child");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = BufReader::new(s);
    s.get_mut()
        .write_all(format!("{line}\nquit\n").as_bytes())
        .unwrap();
    let mut back = String::new();
    s.read_line(&mut back).unwrap();
    back.trim_end().to_owned()
}

#[test]
fn echo_example_serves_a_unix_path_and_a_killed_one_leaves_a_stale_file() {
    let dir = TempDir::new();
    let path = dir.path("echo.sock");
    let mut first = start_echo_child(&path);
    assert_eq!(
        std_exchange(&path, "over a unix socket"),
        "over a unix socket"
    );
    // A second server on a path someone listens on is refused; the file stays.
    let out = child::run("echo", &["--unix", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "echo: cannot listen on {}: address in use\n",
            path.display()
        )
    );
    assert_eq!(std_exchange(&path, "still served"), "still served");
    // Killed: it cannot remove its file, which is now stale.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(is_socket(&path), "a killed server leaves its socket file");
    // std's rule for a plain bind: the file is in the way.
    guard({
        let path = path.clone();
        move || {
            let e = UnixListener::bind(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            let e = UnixStream::connect(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        }
    });
    // A new server replaces the stale file and serves.
    let mut second = start_echo_child(&path);
    assert_eq!(std_exchange(&path, "after a restart"), "after a restart");
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn stale_policy_replaces_only_dead_sockets() {
    guard(|| {
        let dir = TempDir::new();
        // A file that is not a socket is never removed.
        let plain = dir.path("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        let e = UnixListener::bind_replacing_stale(&plain).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("not a socket"), "{e}");
        let e = copas::add_server(plain.clone(), echo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
        // A socket someone listens on is left alone, and its listener still works.
        let live = dir.path("live.sock");
        let other = StdUnixListener::bind(&live).unwrap();
        let e = UnixListener::bind_replacing_stale(&live).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("listens"), "{e}");
        let _c = StdUnixStream::connect(&live).unwrap();
        assert!(other.accept().is_ok());
        // A dead socket is replaced.
        let dead = dir.path("dead.sock");
        drop(StdUnixListener::bind(&dead).unwrap());
        assert!(is_socket(&dead));
        let l = UnixListener::bind_replacing_stale(&dead).unwrap();
        let p = dead.clone();
        let c = copas::spawn(move || UnixStream::connect(&p));
        l.accept().unwrap();
        c.join().unwrap().unwrap();
        // Dropped: it removes the file it made...
        drop(l);
        assert!(!dead.exists());
        // ...but not a successor's socket at the same path.
        let l = UnixListener::bind(&dead).unwrap();
        std::fs::remove_file(&dead).unwrap();
        let successor = StdUnixListener::bind(&dead).unwrap();
        drop(l);
        assert!(is_socket(&dead), "a successor's socket is left alone");
        drop(successor);
        // And opting out keeps the file.
        std::fs::remove_file(&dead).unwrap();
        let mut l = UnixListener::bind(&dead).unwrap();
        l.set_remove_on_drop(false);
        drop(l);
        assert!(is_socket(&dead));
        // A listener from std never removes anything.
        let from_std = dir.path("from_std.sock");
        drop(UnixListener::from_std(StdUnixListener::bind(&from_std).unwrap()).unwrap());
        assert!(is_socket(&from_std));
    });
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn abstract_addresses() {
    use std::os::linux::net::SocketAddrExt;
    guard(|| {
        let name = abstract_name("listener");
        let listener = UnixListener::bind_abstract(&name).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().as_abstract_name(),
            Some(name.as_bytes())
        );
        let e = UnixListener::bind_abstract(&name).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let n = name.clone();
        let client = copas::spawn(move || -> io::Result<Vec<u8>> {
            let mut s = UnixStream::connect_abstract(&n)?;
            assert_eq!(s.peer_addr()?.as_abstract_name(), Some(n.as_bytes()));
            s.send(b"abstract\n")?;
            Ok(s.receive_line()?.unwrap().to_vec())
        });
        let (mut conn, _) = listener.accept().unwrap();
        let line = conn.receive_line().unwrap().unwrap();
        conn.send(&line).unwrap();
        conn.send(b"\n").unwrap();
        assert_eq!(client.join().unwrap().unwrap(), b"abstract");
        drop(listener);
        // The name is free again once the listener is closed.
        let e = UnixStream::connect_abstract(&name).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);

        // A server on an abstract std SocketAddr.
        let name = abstract_name("server");
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let server = copas::add_server(addr.clone(), echo).unwrap();
        assert_eq!(
            server.local_addr().as_abstract_name(),
            Some(name.as_bytes())
        );
        let client = copas::spawn(move || -> io::Result<Vec<u8>> {
            let mut s = UnixStream::connect_addr(&addr)?;
            s.send(b"via SocketAddr\n")?;
            Ok(s.receive_line()?.unwrap().to_vec())
        });
        assert_eq!(client.join().unwrap().unwrap(), b"via SocketAddr");
        server.stop();
        copas::run().unwrap();
        let too_long = "n".repeat(200);
        assert_eq!(
            UnixListener::bind_abstract(&too_long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    });
}

#[test]
fn unix_and_tcp_servers_share_one_loop() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("both.sock");
        let served_unix = Rc::new(Cell::new(0));
        let count = served_unix.clone();
        let unix = copas::ServerBuilder::new()
            .name("unix-echo")
            .read_timeout(Duration::from_secs(30))
            .serve(path.clone(), move |conn: UnixStream| {
                count.set(count.get() + 1);
                echo(conn)
            })
            .unwrap();
        let tcp = copas::add_server("127.0.0.1:0", echo).unwrap();
        let tcp_addr = tcp.local_addr();
        assert_eq!(unix.name(), "unix-echo");
        let p = path.clone();
        // Blocking std clients on another thread, alternating between the two servers,
        // while this thread's loop serves both.
        let script = copas::spawn(move || {
            on_thread(move || {
                for i in 0..20 {
                    let line = format!("round {i}");
                    assert_eq!(std_exchange(&p, &line), line);
                    let mut t = BufReader::new(std::net::TcpStream::connect(tcp_addr).unwrap());
                    t.get_mut()
                        .write_all(format!("{line}\n").as_bytes())
                        .unwrap();
                    let mut back = String::new();
                    t.read_line(&mut back).unwrap();
                    assert_eq!(back.trim_end(), line);
                }
            });
        });
        script.join().unwrap();
        assert_eq!(served_unix.get(), 20);
        assert_eq!(tcp.accepted(), 20);
        assert!(path.exists());
        unix.stop();
        assert!(!path.exists(), "stop removes the socket file at once");
        assert!(!tcp.is_stopped());
        tcp.stop();
        copas::run().unwrap();
    });
}

#[test]
fn exit_stops_a_unix_server_and_removes_its_file() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("exit.sock");
        let server = copas::add_server(path.clone(), echo).unwrap();
        copas::spawn(copas::exit);
        copas::run().unwrap();
        assert!(server.is_stopped());
        assert!(!path.exists());
    });
}

#[test]
fn writing_to_a_peer_that_has_gone_is_broken_pipe() {
    guard(|| {
        let (mut conn, peer) = pair();
        drop(peer);
        conn.send(b"into the void").unwrap();
        let e = conn.flush().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(conn.receive_line().unwrap(), None);
    });
}

#[test]
fn connect_retries_while_the_backlog_is_full() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("full.sock");
        let listener = UnixListener::bind_with_backlog(&path, 1).unwrap();
        let connected = Rc::new(Cell::new(0));
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let (path, connected) = (path.clone(), connected.clone());
                copas::spawn(move || -> io::Result<UnixStream> {
                    let s = UnixStream::connect(&path)?;
                    connected.set(connected.get() + 1);
                    Ok(s)
                })
            })
            .collect();
        // Nobody accepts: the backlog takes a few, the others keep retrying.
        let rt = copas::Runtime::current();
        for _ in 0..20 {
            rt.step(Some(Duration::from_millis(5))).unwrap();
        }
        let before = connected.get();
        assert!(before < 6, "all six connected into a backlog of one");
        for _ in 0..6 {
            listener.accept().unwrap();
        }
        for c in clients {
            c.join().unwrap().expect("a retried connect succeeds");
        }
        assert_eq!(connected.get(), 6);
    });
}

#[test]
fn builder_options_apply_to_unix_servers() {
    guard(|| {
        let dir = TempDir::new();
        let path = dir.path("opts.sock");
        let errors = Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = errors.clone();
        let server = copas::ServerBuilder::new()
            .name("opts")
            .max_connections(1)
            .max_line_length(8)
            .on_error(move |name, peer, e| {
                seen.borrow_mut().push((name.to_owned(), peer, e.kind()));
            })
            .serve(path.as_path(), echo)
            .unwrap();
        let p = path.clone();
        let client = copas::spawn(move || -> io::Result<()> {
            let mut first = UnixStream::connect(&p)?;
            first.send(b"short\n")?;
            assert_eq!(first.receive_line()?.unwrap(), &b"short"[..]);
            // The only slot is taken: a second client waits in the backlog unserved.
            let mut second = UnixStream::connect(&p)?;
            second.set_read_timeout(Some(Duration::from_millis(100)))?;
            second.send(b"queued\n")?;
            assert_eq!(
                second.receive_line().unwrap_err().kind(),
                io::ErrorKind::TimedOut
            );
            // A line past the limit ends the first connection with InvalidData.
            first.send(b"far too long a line\n")?;
            assert_eq!(first.receive_line()?, None);
            // Its slot is free: the second client is served now.
            second.set_read_timeout(None)?;
            assert_eq!(second.receive_line()?.unwrap(), &b"queued"[..]);
            Ok(())
        });
        client.join().unwrap().unwrap();
        assert_eq!(
            *errors.borrow(),
            vec![("opts".to_owned(), None, io::ErrorKind::InvalidData)]
        );
        server.stop();
        copas::run().unwrap();
    });
}
