//! Helpers shared by the integration tests: a hang guard that runs each test body on a
//! thread of its own (so with a fresh copas runtime), loopback sockets on port 0, a socket
//! closed with a reset, a closed port, a deterministic PRNG, and a way to let the loop
//! settle.
//!
//! Every test body runs under [`guard`]; tasks that panic without the test expecting it
//! fail the test, because the guard installs an error handler that records them.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::panic::{self, Location};
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// How long a test body may take before it counts as hung. A hang guard only: nothing
/// here measures speed.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(60);

/// Runs `body` on a fresh thread, so with a runtime of its own, and fails the test if the
/// body panics, does not finish within [`HANG_GUARD`], or if a copas task panicked while
/// the guard's error handler was installed (a test that expects panics installs its own).
#[track_caller]
pub(crate) fn guard<F>(body: F)
where
    F: FnOnce() + Send + 'static,
{
    let at = Location::caller();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let body_thread = thread::Builder::new()
        .name(format!("test body at {at}"))
        .spawn(move || {
            // A loaded machine (or a backtrace printed by a panic) may stall a task past
            // the blocked-loop warning's threshold; tests/diagnostics.rs turns it on
            // where it is under test.
            copas::Runtime::current().set_block_warning(None);
            let panics = Rc::new(RefCell::new(Vec::<String>::new()));
            let seen = panics.clone();
            copas::Runtime::current().set_error_handler(move |p| match p.problem() {
                // A loaded machine may stall a task: a warning, not a failure.
                copas::Problem::Blocked { .. } => eprintln!("copas: {p}"),
                _ => seen.borrow_mut().push(p.to_string()),
            });
            body();
            let panics = panics.borrow();
            assert!(panics.is_empty(), "copas tasks panicked: {panics:#?}");
            let _ = done_tx.send(());
        })
        .expect("spawn the test body's thread");
    match done_rx.recv_timeout(HANG_GUARD) {
        // Disconnected: the body panicked; join gives the payload.
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            if let Err(payload) = body_thread.join() {
                panic::resume_unwind(payload);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("test body at {at} did not finish within {HANG_GUARD:?}: it hangs")
        }
    }
}

/// A std listener on a free loopback port.
#[track_caller]
pub(crate) fn listener() -> StdListener {
    StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// A connected loopback pair of std sockets: (client, accepted server side).
#[track_caller]
pub(crate) fn std_pair() -> (StdStream, StdStream) {
    let l = listener();
    let client = StdStream::connect(l.local_addr().unwrap()).expect("connect to own listener");
    let (server, _) = l.accept().expect("accept own connection");
    (client, server)
}

/// A copas stream and its blocking std peer. The peer may be used from another thread,
/// or from this one for writes small enough for the kernel's buffers.
#[track_caller]
pub(crate) fn pair() -> (copas::TcpStream, StdStream) {
    let (client, server) = std_pair();
    let conn = copas::TcpStream::from_std(server).expect("wrap the accepted socket");
    (conn, client)
}

/// The address of a loopback port that nothing listens on (bound, then released).
#[track_caller]
pub(crate) fn closed_port() -> SocketAddr {
    let l = listener();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Closes `s` so that the kernel answers with a reset instead of a FIN: closing a socket
/// with unread input does that. Waits (blocking) until input is there to leave unread.
#[track_caller]
pub(crate) fn close_with_reset(s: StdStream) {
    let mut probe = [0u8; 1];
    let n = s.peek(&mut probe).expect("peek for unread input");
    assert!(
        n > 0,
        "close_with_reset: the peer closed; there is nothing left unread"
    );
    drop(s);
}

/// Steps the loop until one step has nothing to do (no task ran, no event or timer
/// fired, nothing arrived for a while): every task is then blocked on something this
/// thread's loop alone cannot make happen. Returns the steps taken.
///
/// # Panics
/// If the loop is still busy after many steps: something spins.
#[track_caller]
pub(crate) fn settle(rt: &copas::Runtime) -> usize {
    const MAX_STEPS: usize = 100_000;
    for steps in 1..=MAX_STEPS {
        if !rt.step(Some(Duration::from_millis(50))).expect("step") {
            return steps;
        }
    }
    panic!("the loop was still busy after {MAX_STEPS} steps: something spins");
}

/// A std client's line exchange: sends `line` plus `\n` and reads one line back
/// (without its `\n`).
#[track_caller]
pub(crate) fn std_exchange(s: &mut BufReader<StdStream>, line: &str) -> String {
    let w = s.get_mut();
    w.write_all(line.as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    let mut back = String::new();
    s.read_line(&mut back).expect("read the echo");
    assert!(back.ends_with('\n'), "echo of {line:?} cut short: {back:?}");
    back.pop();
    back
}

/// A copas client's line exchange: sends `line` plus `\n` and returns the next line.
///
/// # Errors
/// The stream's error; `UnexpectedEof` when the peer closed instead of answering.
pub(crate) fn exchange(s: &mut copas::TcpStream, line: &[u8]) -> io::Result<Vec<u8>> {
    s.send(line)?;
    s.send(b"\n")?;
    match s.receive_line()? {
        Some(l) => Ok(l.to_vec()),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

/// A line echo handler: every line comes back followed by `\n`; ends at end of stream.
///
/// # Errors
/// The stream's error.
pub(crate) fn echo_lines(mut conn: copas::TcpStream) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        conn.send(&line)?;
        conn.send(b"\n")?;
    }
    conn.close()
}

/// A small deterministic PRNG (SplitMix64): reproducible test data without a dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Runs blocking `f` on a std thread of its own while the current copas task waits for
/// it (the loop goes on serving meanwhile), and returns its result; a panic in `f` is
/// resumed in the task. Outside a task it blocks the thread.
#[track_caller]
pub(crate) fn on_thread<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    /// Wakes the waiting task when the thread is done, also if `f` panicked.
    struct WakeOnDrop(Option<copas::Task>);
    impl Drop for WakeOnDrop {
        fn drop(&mut self) {
            if let Some(t) = &self.0 {
                t.unpark();
            }
        }
    }
    let result = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = result.clone();
    let waker = WakeOnDrop(copas::try_current());
    let blocking = thread::Builder::new()
        .name("on_thread".to_owned())
        .spawn(move || {
            let _waker = waker;
            let r = panic::catch_unwind(panic::AssertUnwindSafe(f));
            *slot.lock().unwrap() = Some(r);
        })
        .expect("spawn a blocking helper thread");
    if copas::try_current().is_some() {
        while result.lock().unwrap().is_none() {
            // The timer keeps the loop going while nothing else would.
            copas::park_timeout(HANG_GUARD).expect("wait for the blocking helper thread");
        }
    }
    blocking.join().expect("the helper thread catches panics");
    let r = result
        .lock()
        .unwrap()
        .take()
        .expect("the helper thread stored a result");
    r.unwrap_or_else(|payload| panic::resume_unwind(payload))
}

/// Runs `f` in a copas task while this thread's loop serves, stops the server once `f`
/// is done (also if it panicked), runs the loop until every connection has ended, and
/// returns `f`'s result (or resumes its panic).
#[track_caller]
pub(crate) fn serve_during<T, F>(server: &copas::Server, f: F) -> T
where
    T: 'static,
    F: FnOnce() -> T + 'static,
{
    let srv = server.clone();
    let h = copas::spawn(move || {
        let r = panic::catch_unwind(panic::AssertUnwindSafe(f));
        srv.stop();
        r
    });
    copas::run().expect("run the loop");
    match h.join().expect("the task is not cancelled") {
        Ok(v) => v,
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Runs `script` on a std thread with the server's address while this thread's loop
/// serves, then as [`serve_during`].
#[track_caller]
pub(crate) fn serve_while<T, F>(server: &copas::Server, script: F) -> T
where
    T: Send + 'static,
    F: FnOnce(SocketAddr) -> T + Send + 'static,
{
    let addr = server.local_addr();
    serve_during(server, move || on_thread(move || script(addr)))
}

/// A std listener on a free loopback port whose backlog holds `backlog` connections
/// (std's `bind` allows 128): clients that connect all at once are not dropped and made
/// to retry a second later.
#[track_caller]
pub(crate) fn listener_with_backlog(backlog: i32) -> StdListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&addr.into()).expect("bind 127.0.0.1:0");
    s.listen(backlog).expect("listen");
    s.into()
}
