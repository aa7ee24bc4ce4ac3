//! The echo protocol over TLS: every line a client sends comes back followed by `\n`; the
//! line `quit` closes the connection (with a TLS `close_notify`). Any number of clients at
//! once, on one thread. Needs the `tls` feature.
//!
//! Without `--cert`/`--key` it makes a self-signed certificate for `localhost` and
//! `127.0.0.1` at start, writes it to a temporary file and prints the path, so clients can
//! trust it at once:
//!
//! ```text
//! cargo run --release --features tls --example tls_echo
//! openssl s_client -connect 127.0.0.1:7443 -CAfile /tmp/copas-tls-echo-1234/cert.pem
//! cargo run --release --features tls --example tls_echo -- --addr 0.0.0.0:8443 \
//!     --cert fullchain.pem --key privkey.pem
//! ```

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use copas::tls::{self, rustls, TlsStream};

const USAGE: &str = "\
usage: tls_echo [--addr HOST:PORT] [--cert PEM --key PEM]

Serves the echo protocol over TLS: each line comes back; `quit` closes.

  --addr HOST:PORT  where to listen (default 127.0.0.1:7443)
  --cert PEM        the certificate chain, server certificate first
  --key PEM         its private key (PKCS#8, PKCS#1 or SEC1)
  --help            this text

Without --cert and --key, a self-signed certificate for localhost and 127.0.0.1 is
made at start and written to a temporary file, whose path is printed: pass it to
`openssl s_client -CAfile` or `curl --cacert`.";

struct Options {
    addr: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The command line, or the sentence saying what is wrong with it (`Ok(None)`: --help).
fn parse_args() -> Result<Option<Options>, String> {
    let mut opts = Options {
        addr: "127.0.0.1:7443".to_owned(),
        cert: None,
        key: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--help" | "-h" => return Ok(None),
            "--addr" => opts.addr = value("an address such as 127.0.0.1:7443")?,
            "--cert" => opts.cert = Some(value("a PEM file")?.into()),
            "--key" => opts.key = Some(value("a PEM file")?.into()),
            _ => return Err(format!("unknown argument '{arg}' (try --help)")),
        }
    }
    if opts.cert.is_some() != opts.key.is_some() {
        return Err("--cert and --key go together: give both or neither".to_owned());
    }
    Ok(Some(opts))
}

/// A self-signed certificate for localhost and 127.0.0.1: the server configuration, and
/// where its certificate was written.
fn self_signed() -> Result<(Arc<rustls::ServerConfig>, PathBuf), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let dir = std::env::temp_dir().join(format!("copas-tls-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("cert.pem");
    std::fs::write(&path, made.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let config = tls::server_config(vec![made.cert.der().clone()], key)
        .map_err(|e| format!("cannot use the self-signed certificate: {e}"))?;
    Ok((config, path))
}

fn handle(mut conn: TlsStream) -> io::Result<()> {
    while let Some(line) = conn.receive_line()? {
        if &line[..] == b"quit" {
            break;
        }
        let mut reply = Vec::with_capacity(line.len() + 1);
        reply.extend_from_slice(&line);
        reply.push(b'\n');
        conn.send(&reply)?;
    }
    conn.close()
}

fn run(opts: Options) -> Result<(), String> {
    let (config, ca_file) = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => (
            tls::server_config_from_pem_files(cert, key).map_err(|e| e.to_string())?,
            None,
        ),
        _ => {
            let (config, path) = self_signed()?;
            println!("made a self-signed certificate for localhost and 127.0.0.1");
            println!("CA file: {}", path.display());
            (config, Some(path))
        }
    };
    let server = copas::ServerBuilder::new()
        .name("tls_echo")
        .tls(config)
        .serve(opts.addr.as_str(), handle)
        .map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
    let addr = server.local_addr();
    println!("listening on {addr}");
    if let Some(ca) = ca_file {
        println!(
            "try: openssl s_client -connect {addr} -CAfile {}",
            ca.display()
        );
    }
    copas::run().map_err(|e| format!("the loop failed: {e}"))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("tls_echo: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tls_echo: {msg}");
            ExitCode::FAILURE
        }
    }
}
