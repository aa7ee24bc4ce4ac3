//! Ready-made rustls configurations: verifying clients (webpki-roots), servers from a
//! certificate chain or PEM files, and the one loudly named client that does not verify.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The crypto provider copas's configurations use: rustls's `ring` provider (its default
/// cipher suites and key exchange groups).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The Mozilla root certificates shipped by the `webpki-roots` crate.
pub fn webpki_root_store() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A client configuration that verifies the server's certificate chain against the
/// Mozilla root store ([`webpki_root_store`]) and its name against the name given to
/// [`TlsStream::connect`](crate::tls::TlsStream::connect); TLS 1.2 and 1.3, no client
/// certificate, no ALPN. For ALPN, clone it and set `alpn_protocols`:
///
/// ```
/// let mut config = (*copas_net::tls::client_config()).clone();
/// config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
/// ```
pub fn client_config() -> Arc<ClientConfig> {
    client_config_with_roots(webpki_root_store())
}

/// A verifying client configuration that trusts only the certificates in `roots` (a
/// private CA, a test certificate).
pub fn client_config_with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("copas: the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// **Dangerous**: a client configuration that accepts **any** server certificate — expired,
/// self-signed, issued for another name, or forged. The connection is encrypted, but
/// anyone on the path can impersonate the server and read everything. Use it only to talk
/// to a test server whose certificate you cannot get; otherwise trust the server's
/// certificate with [`client_config_with_roots`].
///
/// The handshake signatures are still checked, so the server must hold the key of the
/// certificate it shows; nothing ties that certificate to the name.
pub fn danger_accept_invalid_certs_client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("copas: the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server configuration presenting `cert_chain` (the server's certificate first, then
/// its intermediates) and `key`; TLS 1.2 and 1.3, no client authentication, no ALPN (set
/// `alpn_protocols` on a clone for ALPN).
///
/// # Errors
/// `InvalidInput` when the key does not suit the certificate or is of an unsupported
/// kind.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("copas: the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("copas: unusable TLS certificate or key: {e}"),
            )
        })?;
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM files: `cert_path` holds the certificate chain (server
/// certificate first), `key_path` the private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// `NotFound` and the other errors of opening the files, `InvalidData` when a file holds
/// no certificate or no key, `InvalidInput` as [`server_config`]; the message names the
/// file.
pub fn server_config_from_pem_files(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> io::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert_path, "certificates", e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("copas: {} holds no PEM certificate", cert_path.display()),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, "a key", e))?;
    server_config(certs, key)
}

fn pem_error(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> io::Error {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => io::Error::new(
            e.kind(),
            format!("copas: cannot read {}: {e}", path.display()),
        ),
        E::NoItemsFound => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("copas: {} holds no PEM {what}", path.display()),
        ),
        e => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("copas: cannot read {what} from {}: {e}", path.display()),
        ),
    }
}
