//! TLS servers: a [`ServerBuilder`] whose handler tasks first run the server handshake,
//! under a handshake timeout, and then get a [`TlsStream`].
//!
//! Invariant: the handler never sees a connection whose handshake failed or timed out;
//! such a connection is reported to the server's error hook and closed (never served in
//! plaintext, Copas #189). The handshake runs in the connection's own task, so a client
//! that stalls it holds only that task and one of the `max_connections` slots.

use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

use super::stream::{TlsStream, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::server::{IntoListener, Server, ServerBuilder};

/// A [`ServerBuilder`] for TLS (from [`ServerBuilder::tls`]): the builder's name,
/// timeouts, connection limit, backlog, line limit and error hook apply as for TCP; the
/// read and write timeouts pass to each [`TlsStream`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// # let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
/// # let key = copas_net::tls::rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
/// let config = copas_net::tls::server_config(vec![ck.cert.der().clone()], key).unwrap();
/// let server = copas_net::ServerBuilder::new()
///     .name("echo-tls")
///     .read_timeout(Duration::from_secs(30))
///     .tls(config)
///     .handshake_timeout(Duration::from_secs(5))
///     .serve("127.0.0.1:0", |mut conn| {
///         while let Some(line) = conn.receive_line()? {
///             conn.send(&[&line[..], b"\n"].concat())?;
///         }
///         conn.close()
///     })
///     .unwrap();
/// server.stop();
/// ```
#[must_use = "a TlsServerBuilder does nothing until .serve() is called"]
pub struct TlsServerBuilder {
    builder: ServerBuilder,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerBuilder")
            .field("builder", &self.builder)
            .field("alpn", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServerBuilder {
    pub(crate) fn new(builder: ServerBuilder, config: Arc<ServerConfig>) -> TlsServerBuilder {
        TlsServerBuilder {
            builder,
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long a client has to complete the handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s); one that has not is dropped and reported to
    /// the error hook as `TimedOut`.
    pub fn handshake_timeout(mut self, d: Duration) -> TlsServerBuilder {
        self.handshake_timeout = d;
        self
    }

    /// Starts serving as [`ServerBuilder::serve`]: each accepted connection runs the
    /// handshake and then `handler` in a task of its own.
    ///
    /// # Errors
    /// As [`ServerBuilder::serve`]; `InvalidInput` for a zero handshake timeout.
    pub fn serve<L, H>(self, listener: L, handler: H) -> io::Result<Server>
    where
        L: IntoListener,
        H: Fn(TlsStream) -> io::Result<()> + 'static,
    {
        crate::shared::check_timeout(Some(self.handshake_timeout))?;
        let max_line = self.builder.line_limit();
        let config = self.config;
        let timeout = self.handshake_timeout;
        let handler = Rc::new(handler);
        self.builder.serve(listener, move |tcp| {
            // The handshake's last flights and the session tickets that follow them are
            // small writes in a row: with Nagle on, the tickets wait for the client's
            // delayed ACK (about 40 ms per handshake).
            tcp.set_nodelay(true)?;
            let mut tls = TlsStream::wrap_server(tcp, config.clone(), timeout)?;
            if let Some(n) = max_line {
                tls.set_max_line_length(n);
            }
            handler(tls)
        })
    }
}

/// Serves TLS connections on `listener` with `config`, running `handler` for each in its
/// own task after a successful handshake ([`ServerBuilder::tls`] with the defaults).
///
/// # Errors
/// When binding or registering the listener fails.
pub fn add_server<L, H>(listener: L, config: Arc<ServerConfig>, handler: H) -> io::Result<Server>
where
    L: IntoListener,
    H: Fn(TlsStream) -> io::Result<()> + 'static,
{
    ServerBuilder::new().tls(config).serve(listener, handler)
}
