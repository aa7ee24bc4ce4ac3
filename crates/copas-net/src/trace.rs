//! Events of the `tracing` feature that copas-net emits: accept errors, and TLS handshake
//! failures (for the TLS code: it calls [`tls_handshake_failed`]). Each function compiles
//! to nothing without the feature.
//!
//! Invariant: nothing here allocates or formats unless the feature is on and a
//! subscriber is interested.

use std::io;
use std::net::SocketAddr;

/// An accept on the server `server` failed (other than the retried transient errors).
#[inline]
pub(crate) fn accept_failed(server: &str, err: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(server, error = %err, "copas: accept failed");
    #[cfg(not(feature = "tracing"))]
    let _ = (server, err);
}

/// A TLS handshake with `peer` failed. Called by the TLS layer (feature `tls`).
#[inline]
#[allow(dead_code)] // until the TLS layer calls it
pub(crate) fn tls_handshake_failed(server: &str, peer: Option<SocketAddr>, err: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        server,
        peer = peer.map(tracing::field::display),
        error = %err,
        "copas: TLS handshake failed"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (server, peer, err);
}
