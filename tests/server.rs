//! Servers: panics in handlers, stopping, the connection limit, per-connection settings
//! and error reports, the kinds of listener accepted, and exit.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdStream};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use copas::{ServerBuilder, TcpStream};

use common::{echo_lines, exchange, guard, settle, std_exchange};

type Report = (Option<String>, Option<SocketAddr>, String);

#[test]
fn panicking_handler_does_not_disturb_other_connections() {
    guard(|| {
        let reports = Rc::new(RefCell::new(Vec::<Report>::new()));
        let r = reports.clone();
        copas::Runtime::current().set_error_handler(move |p| {
            r.borrow_mut().push((
                p.name().map(str::to_owned),
                p.peer_addr(),
                p.message().to_owned(),
            ))
        });
        let server = ServerBuilder::new()
            .name("panicky")
            .serve("127.0.0.1:0", |mut conn: TcpStream| {
                while let Some(line) = conn.receive_line()? {
                    if &line[..] == b"boom" {
                        panic!("handler blew up");
                    }
                    conn.send(&line)?;
                    conn.send(b"\n")?;
                }
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let srv = server.clone();
        let bystander = copas::spawn(move || -> io::Result<SocketAddr> {
            let mut s = TcpStream::connect(addr)?;
            assert_eq!(exchange(&mut s, b"before")?, b"before");
            // A std thread's connection makes its handler panic meanwhile.
            let me = copas::current();
            let bomber_addr = Arc::new(Mutex::new(None));
            let ba = bomber_addr.clone();
            let bomber = thread::spawn(move || {
                let mut b = StdStream::connect(addr).unwrap();
                *ba.lock().unwrap() = Some(b.local_addr().unwrap());
                b.write_all(b"boom\n").unwrap();
                let mut rest = Vec::new();
                // The panicking handler's socket is closed by its destructor.
                b.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
                me.unpark();
            });
            copas::park_timeout(common::HANG_GUARD)?;
            bomber.join().unwrap();
            assert_eq!(exchange(&mut s, b"after")?, b"after");
            assert_eq!(exchange(&mut s, b"and again")?, b"and again");
            srv.stop();
            let bomber_addr = bomber_addr.lock().unwrap().unwrap();
            Ok(bomber_addr)
        });
        copas::run().unwrap();
        let bomber_addr = bystander.join().unwrap().unwrap();
        let reports = reports.borrow();
        assert_eq!(reports.len(), 1, "{reports:?}");
        let (name, peer, message) = &reports[0];
        assert_eq!(name.as_deref(), Some("panicky"));
        assert_eq!(*peer, Some(bomber_addr));
        assert_eq!(message, "handler blew up");
        assert_eq!(server.accepted(), 2);
        assert_eq!(server.connections(), 0);
    });
}

#[test]
fn stop_makes_run_return_and_closes_the_listener() {
    guard(|| {
        let server = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        let addr = server.local_addr();
        assert!(!server.is_stopped());
        let srv = server.clone();
        let client = copas::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            assert_eq!(exchange(&mut s, b"one")?, b"one");
            srv.stop();
            srv.stop();
            // The connection being served goes on after stop().
            assert_eq!(exchange(&mut s, b"two")?, b"two");
            Ok(())
        });
        copas::run().unwrap();
        client.join().unwrap().unwrap();
        assert!(server.is_stopped());
        assert_eq!(
            std::net::TcpStream::connect(addr).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    });
}

/// `stop` closes the listener at once: a connect made right after it, in the same step
/// (before the accept task could run again), is refused, and a connection still in the
/// backlog is reset rather than served.
#[test]
fn stop_closes_the_listener_at_once() {
    guard(|| {
        let served = Rc::new(Cell::new(0u32));
        let s = served.clone();
        let server = copas::add_server("127.0.0.1:0", move |c: TcpStream| {
            s.set(s.get() + 1);
            echo_lines(c)
        })
        .unwrap();
        let addr = server.local_addr();
        let srv = server.clone();
        let h = copas::spawn(move || {
            copas::yield_now()?; // the accept task now waits for a connection
            let backlog = StdStream::connect(addr)?; // completed by the kernel, not accepted
            srv.stop();
            let after = StdStream::connect(addr).map(drop).map_err(|e| e.kind());
            io::Result::Ok((after, backlog))
        });
        copas::run().unwrap();
        let (after, mut backlog) = h.join().unwrap().unwrap();
        assert_eq!(after, Err(io::ErrorKind::ConnectionRefused));
        backlog.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
        let _ = backlog.write_all(b"hello\n");
        let mut buf = [0u8; 8];
        match backlog.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "a connection was served after stop"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert_eq!((served.get(), server.accepted()), (0, 0));
    });
}

#[test]
fn stop_before_the_server_ever_ran() {
    guard(|| {
        let server = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        let addr = server.local_addr();
        server.stop();
        copas::run().unwrap();
        assert!(server.is_stopped());
        assert_eq!(server.accepted(), 0);
        assert_eq!(
            std::net::TcpStream::connect(addr).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    });
}

#[test]
fn exit_stops_servers_and_run_returns() {
    guard(|| {
        let a = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        let b = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        let addr = a.local_addr();
        let client = copas::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            assert_eq!(exchange(&mut s, b"hello")?, b"hello");
            copas::exit();
            Ok(())
        });
        copas::run().unwrap();
        client.join().unwrap().unwrap();
        assert!(a.is_stopped() && b.is_stopped());
    });
}

#[test]
fn max_connections_limits_the_handlers_alive_at_once() {
    guard(|| {
        let rt = copas::Runtime::current();
        let (live, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (l, p) = (live.clone(), peak.clone());
        let server = ServerBuilder::new()
            .max_connections(2)
            .serve("127.0.0.1:0", move |conn| {
                l.set(l.get() + 1);
                p.set(p.get().max(l.get()));
                let r = echo_lines(conn);
                l.set(l.get() - 1);
                r
            })
            .unwrap();
        let addr = server.local_addr();
        let holder = |name: &'static str| {
            copas::spawn(move || -> io::Result<()> {
                let mut s = TcpStream::connect(addr)?;
                assert_eq!(exchange(&mut s, name.as_bytes())?, name.as_bytes());
                // Hold the connection until released.
                copas::park()?;
                s.close()
            })
        };
        let first = holder("first");
        let second = holder("second");
        settle(&rt);
        assert_eq!(server.connections(), 2);

        let third = copas::spawn(move || -> io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(addr)?;
            exchange(&mut s, b"third")
        });
        settle(&rt);
        assert!(
            !third.is_finished(),
            "a third connection was served beyond the limit"
        );
        assert_eq!((server.connections(), server.accepted()), (2, 2));

        // One connection ends: the waiting one is accepted and served.
        assert!(first.task().unpark());
        let srv = server.clone();
        let second_task = second.task().clone();
        let finisher = copas::spawn(move || -> io::Result<()> {
            assert_eq!(third.join().unwrap()?, b"third");
            second_task.unpark();
            srv.stop();
            Ok(())
        });
        copas::run().unwrap();
        finisher.join().unwrap().unwrap();
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        assert_eq!(peak.get(), 2);
        assert_eq!(server.accepted(), 3);
    });
}

type ErrorLog = Rc<RefCell<Vec<(String, Option<SocketAddr>, io::ErrorKind)>>>;

#[test]
fn builder_settings_reach_connections_and_errors_reach_on_error() {
    guard(|| {
        const READ_TIMEOUT: Duration = Duration::from_millis(60);
        const WRITE_TIMEOUT: Duration = Duration::from_secs(7);
        let errors: ErrorLog = Rc::default();
        let e = errors.clone();
        let server = ServerBuilder::new()
            .name("strict")
            .read_timeout(READ_TIMEOUT)
            .write_timeout(WRITE_TIMEOUT)
            .max_line_length(8)
            .on_error(move |name, peer, err| {
                e.borrow_mut().push((name.to_owned(), peer, err.kind()))
            })
            .serve("127.0.0.1:0", |mut conn: TcpStream| {
                assert_eq!(conn.read_timeout(), Some(READ_TIMEOUT));
                assert_eq!(conn.write_timeout(), Some(WRITE_TIMEOUT));
                let start = Instant::now();
                let r = conn.receive_line();
                if let Err(e) = &r {
                    if e.kind() == io::ErrorKind::TimedOut {
                        assert!(start.elapsed() >= READ_TIMEOUT, "timed out early");
                    }
                }
                let line = r?.unwrap_or_default();
                conn.send(&line)?;
                conn.send(b"\n")?;
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let silent = copas::spawn(move || -> io::Result<SocketAddr> {
            let mut s = TcpStream::connect(addr)?;
            // Says nothing: the server gives up after its read timeout and closes.
            assert_eq!(s.receive_line()?, None);
            s.local_addr()
        });
        let verbose = copas::spawn(move || -> io::Result<SocketAddr> {
            let mut s = TcpStream::connect(addr)?;
            s.send(b"123456789\n")?;
            assert_eq!(s.receive_line()?, None);
            s.local_addr()
        });
        let fine = copas::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            assert_eq!(exchange(&mut s, b"12345678")?, b"12345678");
            Ok(())
        });
        let srv = server.clone();
        let stopper = copas::spawn(move || {
            let silent = silent.join().unwrap().unwrap();
            let verbose = verbose.join().unwrap().unwrap();
            fine.join().unwrap().unwrap();
            srv.stop();
            (silent, verbose)
        });
        copas::run().unwrap();
        let (silent, verbose) = stopper.join().unwrap();
        let mut errors = errors.borrow().clone();
        errors.sort_by_key(|(_, _, kind)| *kind == io::ErrorKind::TimedOut);
        assert_eq!(
            errors,
            vec![
                (
                    "strict".to_owned(),
                    Some(verbose),
                    io::ErrorKind::InvalidData
                ),
                ("strict".to_owned(), Some(silent), io::ErrorKind::TimedOut),
            ]
        );
    });
}

#[test]
fn add_server_takes_every_kind_of_listener() {
    guard(|| {
        let std_listener = common::listener();
        let copas_listener = copas::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let servers = vec![
            copas::add_server(std_listener, echo_lines).unwrap(),
            copas::add_server(copas_listener, echo_lines).unwrap(),
            copas::add_server(socket_addr, echo_lines).unwrap(),
            copas::add_server("127.0.0.1:0".to_owned(), echo_lines).unwrap(),
            copas::add_server("127.0.0.1:0", echo_lines).unwrap(),
        ];
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
        let stoppers = servers.clone();
        let client = copas::spawn(move || -> io::Result<usize> {
            for (i, addr) in addrs.iter().enumerate() {
                assert_ne!(addr.port(), 0);
                let mut s = TcpStream::connect(addr)?;
                let line = format!("server {i}");
                assert_eq!(exchange(&mut s, line.as_bytes())?, line.as_bytes());
            }
            for s in &stoppers {
                s.stop();
            }
            Ok(addrs.len())
        });
        copas::run().unwrap();
        assert_eq!(client.join().unwrap().unwrap(), 5);
        assert!(servers.iter().all(|s| s.accepted() == 1 && s.is_stopped()));
        assert_eq!(servers[0].name(), "server");
    });
}

#[test]
fn a_handler_error_does_not_stop_the_server() {
    guard(|| {
        let errors: ErrorLog = Rc::default();
        let e = errors.clone();
        let server = ServerBuilder::new()
            .name("picky")
            .on_error(move |name, peer, err| {
                e.borrow_mut().push((name.to_owned(), peer, err.kind()))
            })
            .serve("127.0.0.1:0", |mut conn: TcpStream| {
                let line = conn.receive_line()?.unwrap_or_default();
                if &line[..] != b"please" {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, "rude"));
                }
                conn.send(b"welcome\n")?;
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let srv = server.clone();
        // Std thread clients this time.
        let stopper = copas::spawn(move || {
            copas::park().unwrap();
            srv.stop();
        });
        let stopper_task = stopper.task().clone();
        let clients = thread::spawn(move || {
            let mut rude = BufReader::new(StdStream::connect(addr).unwrap());
            let rude_addr = rude.get_ref().local_addr().unwrap();
            rude.get_mut().write_all(b"gimme\n").unwrap();
            let mut rest = Vec::new();
            rude.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            let mut polite = BufReader::new(StdStream::connect(addr).unwrap());
            assert_eq!(std_exchange(&mut polite, "please"), "welcome");
            polite.get_mut().shutdown(Shutdown::Both).unwrap();
            stopper_task.unpark();
            rude_addr
        });
        copas::run().unwrap();
        let rude_addr = clients.join().unwrap();
        stopper.join().unwrap();
        assert_eq!(
            *errors.borrow(),
            vec![(
                "picky".to_owned(),
                Some(rude_addr),
                io::ErrorKind::PermissionDenied
            )]
        );
        assert_eq!(server.accepted(), 2);
    });
}

#[test]
fn program_drives_step_from_its_own_loop_while_serving() {
    guard(|| {
        let rt = copas::Runtime::current();
        let server = copas::add_server("127.0.0.1:0", echo_lines).unwrap();
        let addr = server.local_addr();
        let client = thread::spawn(move || {
            let mut s = BufReader::new(StdStream::connect(addr).unwrap());
            (0..20)
                .map(|i| std_exchange(&mut s, &format!("tick {i}")))
                .collect::<Vec<_>>()
        });
        // The program's own loop: its work, then one step with a short timeout.
        let mut own_iterations = 0u64;
        while !client.is_finished() {
            own_iterations += 1;
            rt.step(Some(Duration::from_millis(5))).unwrap();
        }
        let lines = client.join().unwrap();
        assert_eq!(
            lines,
            (0..20).map(|i| format!("tick {i}")).collect::<Vec<_>>()
        );
        assert!(own_iterations >= 20, "{own_iterations}");
        server.stop();
        while !rt.is_finished() {
            rt.step(Some(Duration::from_millis(5))).unwrap();
        }
        assert!(server.is_stopped());
    });
}

/// std's `bind` queues 128 pending connections; copas binds with a backlog of 1024, so a
/// burst of a few hundred clients is queued, not dropped (and retried seconds later).
#[test]
fn bind_queues_a_burst_of_connections_beyond_stds_backlog() {
    guard(|| {
        let listener = copas::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Nobody accepts: every connection waits in the backlog.
        let clients: Vec<_> = (0..400)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .unwrap_or_else(|e| panic!("connection {i} was not queued: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), 400);
        let server = copas::ServerBuilder::new()
            .backlog(16)
            .serve("127.0.0.1:0", |_c| Ok(()))
            .unwrap();
        server.stop();
        drop(listener);
    });
}
