//! A real third-party blocking client from crates.io (`ureq`, built on `std::net`) used
//! from 100 tasks at once, with `copas_hook` installed, against a copas HTTP server on
//! the same thread; and name lookups (`getaddrinfo`) from tasks.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use copas::TcpStream;

fn install() {
    copas_hook::install().expect("hooks install on Linux/glibc");
}

/// Counts a finished client; the last one stops the server.
struct Done(Rc<Cell<usize>>, copas::Server);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
        if self.0.get() == 100 {
            self.1.stop();
        }
    }
}

#[test]
fn ureq_from_100_tasks_keeps_all_requests_in_flight_at_once() {
    install();
    const N: usize = 100;
    let in_flight = Rc::new(Cell::new(0usize));
    let max = Rc::new(Cell::new(0usize));
    let (f, m) = (in_flight.clone(), max.clone());
    let until = Instant::now() + Duration::from_secs(30);
    // Answers each request only once all N are in (or after a guard, so a broken hook
    // fails the assertion below instead of hanging the test).
    let server = copas::add_server("127.0.0.1:0", move |mut conn: TcpStream| {
        let mut path = None;
        while let Some(line) = conn.receive_line()? {
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            if path.is_none() {
                path = line.split(' ').nth(1).map(str::to_owned);
            }
        }
        f.set(f.get() + 1);
        m.set(m.get().max(f.get()));
        while m.get() < N && Instant::now() < until {
            copas::sleep(Duration::from_millis(1))?;
        }
        let body = format!("hello {}", path.unwrap_or_default());
        conn.send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )?;
        conn.flush()?;
        f.set(f.get() - 1);
        Ok(())
    })
    .unwrap();
    let port = server.local_addr().port();
    let done = Rc::new(Cell::new(0usize));
    let mut clients = Vec::new();
    for i in 0..N {
        let (done, server) = (done.clone(), server.clone());
        clients.push(copas::spawn(move || -> Result<String, ureq::Error> {
            // Counted however the call ends, so the server stops even on a failure.
            let _done = Done(done, server);
            let url = format!("http://127.0.0.1:{port}/{i}");
            // A bound on each call, so a hook that blocked the thread fails the test.
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into();
            let body = agent.get(&url).call()?.body_mut().read_to_string()?;
            Ok(body)
        }));
    }
    copas::run().unwrap();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap().unwrap(), format!("hello /{i}"));
    }
    assert_eq!(max.get(), N, "the {N} requests were not in flight together");
}

#[test]
fn name_lookups_in_tasks_run_on_the_offload_pool_and_work() {
    install();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = copas::spawn(move || {
        let addrs: Vec<_> = ("localhost", port).to_socket_addrs().unwrap().collect();
        // std tries every address; the one we listen on answers.
        let mut s = std::net::TcpStream::connect(("localhost", port)).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        io::Write::write_all(&mut conn, b"ok").unwrap();
        let mut buf = [0; 2];
        s.read_exact(&mut buf).unwrap();
        let numeric: Vec<_> = "127.0.0.1:7".to_socket_addrs().unwrap().collect();
        (addrs, buf, numeric)
    });
    copas::run().unwrap();
    let (addrs, buf, numeric) = h.join().unwrap();
    assert!(addrs
        .iter()
        .any(|a| a.ip().is_loopback() && a.port() == port));
    assert_eq!(&buf, b"ok");
    assert_eq!(numeric, ["127.0.0.1:7".parse().unwrap()]);
}

#[test]
fn a_failed_lookup_reports_the_resolver_error() {
    install();
    let h = copas::spawn(|| {
        let mut res = std::ptr::null_mut();
        // A service name that does not exist: EAI_SERVICE (or EAI_NONAME), never a hang.
        // SAFETY: both strings are NUL-terminated; `res` is writable.
        #[allow(unsafe_code)]
        let code = unsafe {
            libc::getaddrinfo(
                c"localhost".as_ptr(),
                c"no-such-service-copas".as_ptr(),
                std::ptr::null(),
                &mut res,
            )
        };
        (code, res.is_null())
    });
    copas::run().unwrap();
    let (code, null) = h.join().unwrap();
    assert!(
        code == libc::EAI_SERVICE || code == libc::EAI_NONAME,
        "code {code}"
    );
    assert!(null);
}
