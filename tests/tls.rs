//! TLS on loopback (feature `tls`): certificates made at test time with rcgen (a test CA
//! and server certificates it signs), verification failures (unknown issuer, wrong
//! name, the default roots), plaintext on the TLS port, the handshake timeout and a
//! stalled handshake, 100 concurrent clients, 8 MiB byte-exact, close_notify sent and
//! missing, ALPN and SNI on both sides, bounded output, std's `Write` contract, the
//! `tls_echo` example driven as a child process, and the handshake's stack use.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use copas::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use copas::tls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use copas::tls::{self, TlsStream};

use common::{guard, on_thread, serve_during, serve_while, Rng};

/// A certificate authority made for one test.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` signed by this CA, and its key.
    fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let (cert, key) = self.leaf(names);
        tls::server_config(vec![cert], key).unwrap()
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        tls::client_config_with_roots(roots)
    }
}

fn localhost(ca: &Ca) -> Arc<ServerConfig> {
    ca.server_config(&["localhost", "127.0.0.1"])
}

/// Echoes lines, each back with `\n` in one send; closes with close_notify at the end.
/// Lines are received into one reused `Vec` (`receive_line_into`).
fn echo(mut conn: TlsStream) -> io::Result<()> {
    let mut line = Vec::new();
    while conn.receive_line_into(&mut line)? {
        line.push(b'\n');
        conn.send(&line)?;
        line.clear();
    }
    conn.close()
}

fn exchange(s: &mut TlsStream, line: &str) -> io::Result<String> {
    s.send(format!("{line}\n").as_bytes())?;
    match s.receive_line()? {
        Some(l) => Ok(String::from_utf8(l.to_vec()).unwrap()),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

/// An error hook that records the error kinds it is given.
fn recording_hook(
    seen: &Rc<RefCell<Vec<io::ErrorKind>>>,
) -> impl Fn(&str, Option<SocketAddr>, &io::Error) + 'static {
    let seen = seen.clone();
    move |_, _, e| seen.borrow_mut().push(e.kind())
}

/// The rustls error behind a handshake failure.
fn rustls_error(e: &io::Error) -> &rustls::Error {
    let mut cur: &(dyn std::error::Error + 'static) = e.get_ref().expect("an inner error");
    loop {
        if let Some(r) = cur.downcast_ref::<rustls::Error>() {
            return r;
        }
        cur = cur
            .source()
            .unwrap_or_else(|| panic!("no rustls error in {e:?}"));
    }
}

#[test]
fn echo_with_alpn_and_sni_negotiated_on_both_sides() {
    guard(|| {
        let ca = Ca::new("test CA");
        let mut server_config = (*localhost(&ca)).clone();
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"x-copas".to_vec()];
        let seen = Rc::new(RefCell::new(None));
        let seen2 = seen.clone();
        let server = tls::add_server("127.0.0.1:0", Arc::new(server_config), move |conn| {
            *seen2.borrow_mut() = Some((
                conn.server_name().map(str::to_owned),
                conn.alpn_protocol().map(<[u8]>::to_vec),
            ));
            echo(conn)
        })
        .unwrap();
        let addr = server.local_addr();
        let mut client_config = (*ca.client_config()).clone();
        client_config.alpn_protocols = vec![b"x-copas".to_vec(), b"http/1.1".to_vec()];
        let client_config = Arc::new(client_config);
        let (alpn, name, version, reply) = serve_during(&server, move || {
            let mut s = TlsStream::connect(addr, "localhost", client_config).unwrap();
            let reply = exchange(&mut s, "hello over TLS").unwrap();
            let r = (
                s.alpn_protocol().map(<[u8]>::to_vec),
                s.server_name().map(str::to_owned),
                s.protocol_version(),
                reply,
            );
            s.close().unwrap();
            r
        });
        assert_eq!(reply, "hello over TLS");
        assert_eq!(alpn.as_deref(), Some(&b"x-copas"[..]));
        assert_eq!(name.as_deref(), Some("localhost"));
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(
            *seen.borrow(),
            Some((Some("localhost".to_owned()), Some(b"x-copas".to_vec())))
        );
    });
}

#[test]
fn a_certificate_from_an_unknown_issuer_is_refused_and_nothing_is_served() {
    guard(|| {
        let (trusted, other) = (Ca::new("trusted CA"), Ca::new("other CA"));
        let served = Rc::new(Cell::new(0));
        let served2 = served.clone();
        let errors = Rc::new(RefCell::new(Vec::new()));
        let server = copas::ServerBuilder::new()
            .on_error(recording_hook(&errors))
            .tls(localhost(&other))
            .serve("127.0.0.1:0", move |conn| {
                served2.set(served2.get() + 1);
                echo(conn)
            })
            .unwrap();
        let addr = server.local_addr();
        let config = trusted.client_config();
        let err = serve_during(&server, move || {
            let e = TlsStream::connect(addr, "localhost", config).unwrap_err();
            // Let the server see the client's alert.
            copas::sleep(Duration::from_millis(50)).unwrap();
            e
        });
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(
            matches!(
                rustls_error(&err),
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err}"
        );
        assert!(err.to_string().contains("TLS handshake"), "{err}");
        assert_eq!(
            served.get(),
            0,
            "a failed handshake must not reach the handler"
        );
        assert_eq!(*errors.borrow(), [io::ErrorKind::InvalidData]);
    });
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    guard(|| {
        let ca = Ca::new("test CA");
        let server =
            tls::add_server("127.0.0.1:0", ca.server_config(&["example.com"]), echo).unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let (wrong, right) = serve_during(&server, move || {
            let wrong = TlsStream::connect(addr, "localhost", config.clone()).unwrap_err();
            // The same server under its own name is fine: only the name was wrong.
            let mut s = TlsStream::wrap_client(
                copas::TcpStream::connect(addr).unwrap(),
                "example.com",
                config,
                Duration::from_secs(10),
            )
            .unwrap();
            let right = exchange(&mut s, "named").unwrap();
            s.close().unwrap();
            (wrong, right)
        });
        assert!(
            matches!(
                rustls_error(&wrong),
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{wrong}"
        );
        assert_eq!(right, "named");
    });
}

#[test]
fn verification_is_on_by_default_and_off_only_by_the_danger_config() {
    guard(|| {
        let ca = Ca::new("private CA");
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), echo).unwrap();
        let addr = server.local_addr();
        let (default, danger) = serve_during(&server, move || {
            // The default roots (Mozilla's) do not include a private CA.
            let default = TlsStream::connect(addr, "localhost", tls::client_config()).unwrap_err();
            let mut s = TlsStream::connect(
                addr,
                "localhost",
                tls::danger_accept_invalid_certs_client_config(),
            )
            .unwrap();
            let danger = exchange(&mut s, "unverified").unwrap();
            s.close().unwrap();
            (default, danger)
        });
        assert!(
            matches!(
                rustls_error(&default),
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{default}"
        );
        assert_eq!(danger, "unverified");
    });
}

#[test]
fn plaintext_sent_to_the_tls_port_gets_no_plaintext_answer() {
    guard(|| {
        let ca = Ca::new("test CA");
        let served = Rc::new(Cell::new(0));
        let served2 = served.clone();
        let errors = Rc::new(RefCell::new(Vec::new()));
        let server = copas::ServerBuilder::new()
            .on_error(recording_hook(&errors))
            .tls(localhost(&ca))
            .serve("127.0.0.1:0", move |conn| {
                served2.set(served2.get() + 1);
                echo(conn)
            })
            .unwrap();
        let answer = serve_while(&server, |addr| {
            let mut s = StdStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"hello in plaintext\nGET / HTTP/1.0\r\n\r\n")
                .unwrap();
            let mut answer = Vec::new();
            // The server answers with an alert record at most, then closes.
            let _ = s.read_to_end(&mut answer);
            answer
        });
        assert!(
            !answer.windows(5).any(|w| w == b"hello"),
            "plaintext came back: {answer:?}"
        );
        if let Some(&first) = answer.first() {
            assert_eq!(
                first, 0x15,
                "the only answer may be a TLS alert record: {answer:?}"
            );
        }
        assert_eq!(served.get(), 0);
        assert_eq!(*errors.borrow(), [io::ErrorKind::InvalidData]);
    });
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    guard(|| {
        let ca = Ca::new("test CA");
        let errors = Rc::new(RefCell::new(Vec::new()));
        let served = Rc::new(Cell::new(0));
        let served2 = served.clone();
        let server = copas::ServerBuilder::new()
            .on_error(recording_hook(&errors))
            .tls(localhost(&ca))
            .handshake_timeout(Duration::from_millis(300))
            .serve("127.0.0.1:0", move |conn| {
                served2.set(served2.get() + 1);
                echo(conn)
            })
            .unwrap();
        let got = serve_while(&server, |addr| {
            let mut s = StdStream::connect(addr).unwrap();
            // A hang guard only: the server closes long before.
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).map(|_| buf)
        });
        // Closed by the server, without a byte: not served, not answered.
        assert_eq!(got.unwrap(), b"");
        assert_eq!(served.get(), 0);
        assert_eq!(*errors.borrow(), [io::ErrorKind::TimedOut]);
    });
}

#[test]
fn a_stalled_handshake_does_not_delay_other_clients() {
    guard(|| {
        let ca = Ca::new("test CA");
        let events = Rc::new(RefCell::new(Vec::<String>::new()));
        let ev = events.clone();
        let ev2 = events.clone();
        let server = copas::ServerBuilder::new()
            .on_error(move |_, _, e| ev.borrow_mut().push(format!("error {:?}", e.kind())))
            .tls(localhost(&ca))
            .handshake_timeout(Duration::from_secs(5))
            .serve("127.0.0.1:0", move |conn| {
                let r = echo(conn);
                ev2.borrow_mut().push("served".to_owned());
                r
            })
            .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let events2 = events.clone();
        serve_during(&server, move || {
            // Half a ClientHello's record header, then silence.
            let stalled = on_thread(move || {
                let mut s = StdStream::connect(addr).unwrap();
                s.write_all(&[0x16, 0x03, 0x01]).unwrap();
                s
            });
            for i in 0..3 {
                let mut s = TlsStream::connect(addr, "localhost", config.clone()).unwrap();
                assert_eq!(
                    exchange(&mut s, &format!("client {i}")).unwrap(),
                    format!("client {i}")
                );
                s.close().unwrap();
            }
            events2.borrow_mut().push("clients done".to_owned());
            // Now wait for the stalled one to be dropped.
            let mut stalled = stalled;
            on_thread(move || {
                stalled
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut buf = Vec::new();
                let _ = stalled.read_to_end(&mut buf);
            });
            copas::sleep(Duration::from_millis(50)).unwrap();
        });
        let events = events.borrow();
        let done = events.iter().position(|e| e == "clients done").unwrap();
        let timeout = events.iter().position(|e| e == "error TimedOut").unwrap();
        assert!(
            done < timeout,
            "the stalled handshake held the others up: {events:?}"
        );
        assert_eq!(events.iter().filter(|e| *e == "served").count(), 3);
    });
}

#[test]
fn a_hundred_concurrent_clients_are_served_at_once() {
    const CLIENTS: usize = 100;
    guard(|| {
        let ca = Ca::new("test CA");
        let (live, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (live2, peak2) = (live.clone(), peak.clone());
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), move |conn| {
            live2.set(live2.get() + 1);
            peak2.set(peak2.get().max(live2.get()));
            let r = echo(conn);
            live2.set(live2.get() - 1);
            r
        })
        .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let counts = serve_during(&server, move || {
            // Every client holds its connection after the first line until all are in.
            let arrived = Rc::new(Cell::new(0));
            let waiting = Rc::new(RefCell::new(Vec::<copas::Task>::new()));
            let clients: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let (arrived, waiting, config) =
                        (arrived.clone(), waiting.clone(), config.clone());
                    copas::spawn(move || -> io::Result<usize> {
                        let mut s = TlsStream::connect(addr, "localhost", config)?;
                        let first = format!("client {i} hello");
                        assert_eq!(exchange(&mut s, &first)?, first);
                        arrived.set(arrived.get() + 1);
                        if arrived.get() == CLIENTS {
                            for t in waiting.borrow_mut().drain(..) {
                                t.unpark();
                            }
                        } else {
                            waiting.borrow_mut().push(copas::current());
                            while arrived.get() < CLIENTS {
                                copas::park_timeout(Duration::from_secs(30))?;
                            }
                        }
                        let mut n = 1;
                        for j in 0..10 {
                            let line = format!("client {i} line {j}");
                            assert_eq!(exchange(&mut s, &line)?, line);
                            n += 1;
                        }
                        s.close()?;
                        Ok(n)
                    })
                })
                .collect();
            clients
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(counts, vec![11; CLIENTS]);
        assert_eq!(peak.get(), CLIENTS, "all clients were served at once");
        assert_eq!(live.get(), 0);
    });
}

#[test]
fn eight_mib_round_trip_byte_exact_through_read_and_write() {
    const SIZE: usize = 8 * 1024 * 1024;
    guard(|| {
        let ca = Ca::new("test CA");
        // The server collects everything up to the client's close_notify, then sends it
        // back and closes.
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), |mut conn| {
            let all = conn.receive_to_end()?;
            conn.send(&all)?;
            conn.close()
        })
        .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let data = Rng::new(8).bytes(SIZE);
        let expected = data.clone();
        let back = serve_during(&server, move || {
            let mut s = TlsStream::connect(addr, "localhost", config).unwrap();
            s.write_all(&data).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            back
        });
        assert_eq!(back.len(), SIZE);
        assert!(back == expected, "the echo differs from what was sent");
    });
}

#[test]
fn close_sends_close_notify_and_a_missing_one_is_unexpected_eof() {
    guard(|| {
        let ca = Ca::new("test CA");
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), |mut conn| {
            match conn.receive_line()?.as_deref() {
                // A clean end: close_notify, so the client's receive_to_end succeeds.
                Some(b"close") => {
                    conn.send(b"bye")?;
                    conn.close()
                }
                // Dropped without close: the output is delivered, close_notify is not.
                Some(b"drop") => {
                    conn.send(b"partial")?;
                    conn.flush()?;
                    drop(conn);
                    Ok(())
                }
                _ => Ok(()),
            }
        })
        .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let (clean, cut, cut_buffered, between_lines) = serve_during(&server, move || {
            let mut s = TlsStream::connect(addr, "localhost", config.clone()).unwrap();
            s.send(b"close\n").unwrap();
            let clean = s.receive_to_end().unwrap();
            // After close_notify the stream stays at a clean end.
            assert_eq!(s.receive_line().unwrap(), None);

            let mut s = TlsStream::connect(addr, "localhost", config.clone()).unwrap();
            s.send(b"drop\n").unwrap();
            let cut = s.receive_to_end().unwrap_err();
            let cut_buffered = s.buffered().to_vec();

            let mut s = TlsStream::connect(addr, "localhost", config).unwrap();
            s.send(b"drop\n").unwrap();
            assert_eq!(s.receive_exact(7).unwrap(), &b"partial"[..]);
            let between_lines = s.receive_line().unwrap_err();
            (clean, cut, cut_buffered, between_lines)
        });
        assert_eq!(clean, &b"bye"[..]);
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");
        assert!(cut.to_string().contains("close_notify"), "{cut}");
        assert_eq!(cut_buffered, b"partial");
        assert_eq!(between_lines.kind(), io::ErrorKind::UnexpectedEof);
    });
}

#[test]
fn output_to_a_peer_that_does_not_read_stays_bounded() {
    guard(|| {
        let ca = Ca::new("test CA");
        let release = Rc::new(Cell::new(None::<copas::Task>));
        let release2 = release.clone();
        // The handler reads nothing until the client is done trying to send.
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), move |mut conn| {
            release2.set(Some(copas::current()));
            copas::park_timeout(Duration::from_secs(30))?;
            let _ = conn.receive_to_end();
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let (err, pending) = serve_during(&server, move || {
            let mut s = TlsStream::connect(addr, "localhost", config).unwrap();
            s.set_write_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let big = vec![7u8; 32 * 1024 * 1024];
            let err = s.send(&big).unwrap_err();
            let pending = s.pending_output();
            if let Some(t) = release.take() {
                t.unpark();
            }
            (err, pending)
        });
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // The TCP write buffer (64 KiB) plus at most one record piece beyond it.
        assert!(
            pending <= copas::DEFAULT_WRITE_BUFFER,
            "{pending} bytes buffered"
        );
    });
}

#[test]
fn write_takes_at_most_the_buffer_and_reports_partial_counts() {
    guard(|| {
        let ca = Ca::new("test CA");
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), |mut conn| {
            let all = conn.receive_to_end()?;
            conn.send(format!("{}\n", all.len()).as_bytes())?;
            conn.close()
        })
        .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        let (first, total) = serve_during(&server, move || {
            let mut s = TlsStream::connect(addr, "localhost", config).unwrap();
            s.set_write_buffer_size(4096);
            let data = vec![1u8; 100_000];
            let first = s.write(&data).unwrap();
            s.write_all(&data[first..]).unwrap();
            assert_eq!(s.write(&[]).unwrap(), 0);
            s.shutdown(Shutdown::Write).unwrap();
            // Sending after close_notify is refused.
            assert_eq!(
                s.send(b"late").unwrap_err().kind(),
                io::ErrorKind::NotConnected
            );
            let total = s.receive_line().unwrap().unwrap();
            (first, String::from_utf8(total.to_vec()).unwrap())
        });
        assert!(first > 0 && first <= 4096, "write took {first} bytes");
        assert_eq!(total, "100000");
    });
}

#[test]
fn read_timeouts_come_from_the_builder_and_keep_what_arrived() {
    guard(|| {
        let ca = Ca::new("test CA");
        let seen = Rc::new(RefCell::new(None));
        let seen2 = seen.clone();
        // The client waits here until the server's receive has timed out.
        let client_task = Rc::new(Cell::new(None::<copas::Task>));
        let client_task2 = client_task.clone();
        let server = copas::ServerBuilder::new()
            .read_timeout(Duration::from_millis(300))
            .max_line_length(10)
            .tls(localhost(&ca))
            .serve("127.0.0.1:0", move |mut conn| {
                let timeout = conn.read_timeout();
                // The client sends half a line and then nothing.
                let err = conn.receive_line().unwrap_err();
                let kept = conn.buffered().to_vec();
                conn.set_read_timeout(None)?;
                if let Some(t) = client_task2.take() {
                    t.unpark();
                }
                // The line limit came from the builder too.
                let too_long = conn.receive_line().unwrap_err();
                *seen2.borrow_mut() = Some((timeout, err.kind(), kept, too_long.kind()));
                conn.close()
            })
            .unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        serve_during(&server, move || {
            client_task.set(Some(copas::current()));
            let mut s = TlsStream::connect(addr, "localhost", config).unwrap();
            s.send(b"half a").unwrap();
            s.flush().unwrap();
            copas::park_timeout(Duration::from_secs(30)).unwrap();
            s.send(b" line that is long\n").unwrap();
            s.flush().unwrap();
            assert_eq!(s.receive_to_end().unwrap(), &b""[..]);
        });
        let (timeout, err, kept, too_long) = seen.borrow_mut().take().unwrap();
        assert_eq!(timeout, Some(Duration::from_millis(300)));
        assert_eq!(err, io::ErrorKind::TimedOut);
        assert_eq!(kept, b"half a");
        assert_eq!(too_long, io::ErrorKind::InvalidData);
    });
}

#[test]
fn bad_arguments_are_clear_errors() {
    guard(|| {
        let ca = Ca::new("test CA");
        let server = tls::add_server("127.0.0.1:0", localhost(&ca), echo).unwrap();
        let addr = server.local_addr();
        let config = ca.client_config();
        serve_during(&server, move || {
            let e = TlsStream::connect(addr, "not a name!", config.clone()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            let e = TlsStream::connect_timeout(&addr, "localhost", config.clone(), Duration::ZERO)
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            let mut s =
                TlsStream::connect_timeout(&addr, "127.0.0.1", config, Duration::from_secs(10))
                    .unwrap();
            assert_eq!(
                s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            // Connected by IP address: verified against the certificate's IP SAN.
            assert_eq!(s.server_name(), Some("127.0.0.1"));
            assert_eq!(exchange(&mut s, "by address").unwrap(), "by address");
            s.close().unwrap();
        });
        let e = tls::server_config_from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    });
}

/// Kills the example's process however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/<profile>/examples/tls_echo`, which `cargo test` builds with the test.
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join("tls_echo")
}

#[test]
fn the_tls_echo_example_serves_a_client_that_trusts_its_printed_certificate() {
    let bin = example_binary();
    assert!(
        bin.exists(),
        "{} was not built: cargo test builds examples unless a single test target is picked; run cargo build --features tls --example tls_echo first",
        bin.display()
    );
    let child = Command::new(&bin)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let (mut ca_file, mut addr) = (None, None);
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the example ended early"
        );
        if let Some(p) = line.trim().strip_prefix("CA file: ") {
            ca_file = Some(p.to_owned());
        } else if let Some(a) = line.trim().strip_prefix("listening on ") {
            addr = Some(a.parse::<SocketAddr>().unwrap());
        }
    }
    let (ca_file, addr) = (ca_file.expect("the CA file is printed"), addr.unwrap());

    // A plain rustls client over a std socket, trusting only the printed file.
    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(&ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = tls::client_config_with_roots(roots);
    for name in ["localhost", "127.0.0.1"] {
        let conn = rustls::ClientConnection::new(
            config.clone(),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap();
        let sock = StdStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"hello example\nquit\n").unwrap();
        let mut reply = Vec::new();
        // quit: the example closes with close_notify, so read_to_end ends cleanly.
        tls.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"hello example\n");
    }

    // A client that does not trust it is refused.
    let conn = rustls::ClientConnection::new(
        tls::client_config(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let sock = StdStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let e = tls
        .write_all(b"x\n")
        .and_then(|()| tls.flush())
        .and_then(|()| {
            let mut b = [0u8; 1];
            tls.read(&mut b).map(|_| ())
        });
    assert!(
        e.is_err(),
        "an untrusted self-signed certificate was accepted"
    );
    drop(child);
    if let Some(dir) = std::path::Path::new(&ca_file).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn the_tls_echo_example_explains_bad_arguments() {
    let bin = example_binary();
    let out = Command::new(&bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--cert PEM"));
    let out = Command::new(&bin)
        .args(["--cert", "/nonexistent.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tls_echo: --cert and --key go together"),
        "{err}"
    );
    let out = Command::new(&bin)
        .args([
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tls_echo: copas: cannot read /nonexistent/c.pem"),
        "{err}"
    );
}

// The handshake's stack use: a full TLS 1.3 handshake and one exchange, both sides in
// tasks of the same size (certificates with rcgen's default ECDSA P-256 keys), at
// decreasing `Builder::stack_size`s, each in a child process, since an overflow aborts
// the process. The smallest size that works is printed; docs/tls.md records it.

const STACK_CHILD_ENV: &str = "COPAS_TLS_STACK_CHILD";

fn handshake_in_tasks_of(stack: usize) {
    let ca = Ca::new("test CA");
    let server_config = localhost(&ca);
    let client_config = ca.client_config();
    let listener = copas::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = copas::Builder::new()
        .name("tls-server".to_owned())
        .stack_size(stack)
        .spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut s =
                TlsStream::wrap_server(tcp, server_config, Duration::from_secs(10)).unwrap();
            let line = s.receive_line().unwrap().unwrap();
            s.send(&[&line[..], b"\n"].concat()).unwrap();
            // The client closes first.
            assert_eq!(s.receive_line().unwrap(), None);
            s.close().unwrap();
        })
        .unwrap();
    let client = copas::Builder::new()
        .name("tls-client".to_owned())
        .stack_size(stack)
        .spawn(move || {
            let mut s = TlsStream::connect(addr, "localhost", client_config).unwrap();
            assert_eq!(exchange(&mut s, "stack").unwrap(), "stack");
            s.close().unwrap();
        })
        .unwrap();
    copas::run().unwrap();
    client.join().unwrap();
    server.join().unwrap();
}

#[test]
fn handshake_stack_use() {
    if let Some(size) = std::env::var_os(STACK_CHILD_ENV) {
        let size: usize = size.to_str().unwrap().parse().unwrap();
        handshake_in_tasks_of(size);
        return;
    }
    let works = |size: usize| {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "handshake_stack_use",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STACK_CHILD_ENV, size.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        works(copas::DEFAULT_STACK_SIZE),
        "a handshake overflows the default task stack"
    );
    // Bisect in 4 KiB steps between 16 KiB (the least a task may have) and the default.
    let (mut lo, mut hi) = (16 / 4, copas::DEFAULT_STACK_SIZE / 4096);
    if works(lo * 4096) {
        hi = lo;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if works(mid * 4096) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    println!(
        "handshake stack use: the smallest task stack that completes a TLS 1.3 handshake \
         and an exchange is {} KiB (default {} KiB; {} build)",
        hi * 4,
        copas::DEFAULT_STACK_SIZE / 1024,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
