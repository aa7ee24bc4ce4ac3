//! TLS for the benchmark (rustls 0.23 on the `ring` provider): the self-signed certificate
//! made at bench start (rcgen), the tokio + tokio-rustls `current_thread` echo server
//! (`copas-bench serve-tokio-tls`), and the two TLS load modes.
//!
//! - `tls-echo`: closed loop of echo round trips over established TLS connections, one
//!   client thread per connection (blocking rustls `StreamOwned`).
//! - `tls-handshake`: `--connections` client threads, each connecting, making a full
//!   handshake (session resumption is off in the client), one echo round trip, sending
//!   close_notify and closing, again and again; counts handshakes per second.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::load::{announce_window, message, LoadConfig, LoadResult, Mode, Tally};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

/// Writes a fresh self-signed certificate for `localhost` and `127.0.0.1` and its key as
/// PEM files into `dir`; returns their paths `(cert, key)`.
pub(crate) fn make_cert(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| io::Error::other(format!("making a certificate: {e}")))?;
    std::fs::create_dir_all(dir)?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// A server configuration from PEM files.
pub(crate) fn server_config(cert: &Path, key: &Path) -> io::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(&format!("reading {}", cert.display()), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&format!("reading {}", cert.display()), e))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(&format!("reading {}", key.display()), e))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("the certificate", e))?;
    Ok(Arc::new(cfg))
}

/// A client configuration that trusts the certificates in `ca` and never resumes a
/// session (every connection makes a full handshake).
pub(crate) fn client_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| tls_err(&format!("reading {}", ca.display()), e))?
    {
        let c = c.map_err(|e| tls_err(&format!("reading {}", ca.display()), e))?;
        roots
            .add(c)
            .map_err(|e| tls_err(&format!("trusting {}", ca.display()), e))?;
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Serves echo over TLS on `addr` until killed: tokio `current_thread`, tokio-rustls, one
/// task per connection, `TCP_NODELAY` on, the same echo loop as `serve-tokio`.
pub(crate) fn serve(addr: &str, cert: &Path, key: &Path) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(server_config(cert, key)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!("tokio TLS echo listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tokio TLS echo: accept: {e}");
                    continue;
                }
            };
            // Without TCP_NODELAY, Nagle's algorithm holds the session tickets written
            // after the handshake flight until the client's delayed ACK (~40 ms per
            // handshake in a smoke run).
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Failed handshakes, resets and early closes are a client's business.
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = crate::serve_tokio::handle(tls).await;
                }
            });
        }
    })
}

fn tls_connect(
    addr: SocketAddr,
    cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| tls_err("TLS", e))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

fn round_trip(
    s: &mut StreamOwned<ClientConnection, TcpStream>,
    msg: &[u8],
    buf: &mut [u8],
) -> io::Result<()> {
    s.write_all(msg)?;
    s.flush()?;
    s.read_exact(buf)
}

/// The TLS load modes.
pub(crate) fn run_load(cfg: &LoadConfig) -> io::Result<LoadResult> {
    let ca = cfg
        .ca
        .as_deref()
        .ok_or_else(|| io::Error::other("TLS modes need --ca PEM (the server's certificate)"))?;
    let client = client_config(ca)?;
    let name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| tls_err(&format!("server name '{}'", cfg.server_name), e))?;
    let msg = Arc::new(message(cfg.size));
    let start = Instant::now();
    let warm_end = start + cfg.warmup;
    let end = warm_end + cfg.duration;
    let mut streams = Vec::new();
    if cfg.mode == Mode::TlsEcho {
        for i in 0..cfg.connections.max(1) {
            streams.push(
                tls_connect(cfg.addr, &client, &name)
                    .map_err(|e| io::Error::new(e.kind(), format!("connection {}: {e}", i + 1)))?,
            );
        }
    }
    let handles: Vec<_> = if cfg.mode == Mode::TlsEcho {
        streams
            .into_iter()
            .map(|mut s| {
                let msg = msg.clone();
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut buf = vec![0u8; msg.len()];
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        match round_trip(&mut s, &msg, &mut buf) {
                            Ok(()) => {
                                let done = Instant::now();
                                if t0 >= warm_end && done < end {
                                    tally.record(done - t0);
                                }
                            }
                            Err(e) => {
                                tally.error(|| e.to_string());
                                break;
                            }
                        }
                    }
                    s.conn.send_close_notify();
                    let _ = s.flush();
                    tally
                })
            })
            .collect()
    } else {
        (0..cfg.connections.max(1))
            .map(|_| {
                let (msg, client, name, addr) =
                    (msg.clone(), client.clone(), name.clone(), cfg.addr);
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut buf = vec![0u8; msg.len()];
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        let once = tls_connect(addr, &client, &name).and_then(|mut s| {
                            round_trip(&mut s, &msg, &mut buf)?;
                            s.conn.send_close_notify();
                            s.flush()
                        });
                        match once {
                            Ok(()) => {
                                let done = Instant::now();
                                if t0 >= warm_end && done < end {
                                    tally.record(done - t0);
                                }
                            }
                            Err(e) => {
                                if t0 >= warm_end {
                                    tally.error(|| e.to_string());
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    tally
                })
            })
            .collect()
    };
    announce_window(warm_end, end);
    let mut tally = Tally::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| io::Error::other("a TLS load thread panicked"))?;
        tally.round_trips += t.round_trips;
        tally.errors += t.errors;
        tally.latencies.extend_from_slice(&t.latencies);
        if tally.first_error.is_none() {
            tally.first_error = t.first_error;
        }
    }
    Ok(tally.finish(cfg.duration.as_secs_f64(), 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokio TLS server and both load modes, over loopback with a fresh certificate.
    #[test]
    fn tls_echo_and_handshakes() {
        let dir = std::env::temp_dir().join(format!("copas-bench-tls-test-{}", std::process::id()));
        let (cert, key) = make_cert(&dir).unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (c2, k2) = (cert.clone(), key.clone());
        std::thread::spawn(move || serve(&addr.to_string(), &c2, &k2));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the TLS server never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        for mode in [Mode::TlsEcho, Mode::TlsHandshake] {
            let cfg = LoadConfig {
                addr,
                mode,
                protocol: crate::load::Protocol::Echo,
                connections: 2,
                size: 64,
                warmup: Duration::from_millis(100),
                duration: Duration::from_millis(300),
                threads: 1,
                idle: false,
                rate: None,
                count: None,
                ca: Some(cert.clone()),
                server_name: "localhost".to_owned(),
                send: None,
                server_pid: None,
            };
            let r = run_load(&cfg).unwrap();
            assert_eq!(r.errors, 0, "{mode:?}: {}", r.first_error);
            assert!(r.round_trips > 0, "{mode:?}");
        }
        // A name the certificate does not carry is refused.
        let client = client_config(&cert).unwrap();
        let wrong = ServerName::try_from("example.com".to_owned()).unwrap();
        assert!(tls_connect(addr, &client, &wrong).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
