//! TLS on [rustls] (feature `tls`): [`TlsStream`], a TLS connection with the same calls as
//! [`TcpStream`](crate::TcpStream); TLS servers ([`ServerBuilder::tls`](crate::ServerBuilder::tls),
//! [`add_server`]); and client configurations ([`client_config`]).
//!
//! Certificates are verified by default: [`client_config`] checks the server's chain
//! against the Mozilla root store shipped by `webpki-roots` and its name against the name
//! given to [`TlsStream::connect`]. Turning verification off takes
//! [`danger_accept_invalid_certs_client_config`], whose name says what it does.
//!
//! The crypto provider is rustls's `ring` provider. The [`rustls`] crate is re-exported,
//! so configurations can be built with the same version copas uses.
//!
//! ```
//! use std::sync::Arc;
//! use copas_net::tls::{self, rustls, TlsStream};
//!
//! // A certificate for "localhost", made on the spot (tests and examples use rcgen).
//! # let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
//! # let cert_der = ck.cert.der().clone();
//! # let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
//! let server_config = tls::server_config(vec![cert_der.clone()], key_der).unwrap();
//! let server = tls::add_server("127.0.0.1:0", server_config, |mut conn: TlsStream| {
//!     while let Some(line) = conn.receive_line()? {
//!         conn.send(&[&line[..], b"\n"].concat())?;
//!     }
//!     conn.close()
//! })
//! .unwrap();
//! let addr = server.local_addr();
//!
//! // A client trusting that certificate only.
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(cert_der).unwrap();
//! let client_config = tls::client_config_with_roots(roots);
//! let client = copas_core::spawn(move || {
//!     let mut s = TlsStream::connect(addr, "localhost", client_config)?;
//!     s.send(b"hello\n")?;
//!     let echo = s.receive_line()?;
//!     s.close()?;
//!     server.stop();
//!     std::io::Result::Ok(echo)
//! });
//! copas_core::run().unwrap();
//! assert_eq!(client.join().unwrap().unwrap().unwrap(), &b"hello"[..]);
//! ```

mod config;
mod server;
mod stream;

pub use rustls;

pub use config::{
    client_config, client_config_with_roots, danger_accept_invalid_certs_client_config, provider,
    server_config, server_config_from_pem_files, webpki_root_store,
};
pub use server::{add_server, TlsServerBuilder};
pub use stream::{TlsStream, DEFAULT_HANDSHAKE_TIMEOUT};
