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

#[path = "support/cli.rs"]
mod cli;

const USAGE: &str = "\
usage: tls_echo [--addr HOST:PORT] [--cert PEM --key PEM]

Serves the echo protocol over TLS: each line comes back; `quit` closes.

  --addr HOST:PORT  where to listen (default 127.0.0.1:7443)
  --cert PEM        the certificate chain, server certificate first
  --key PEM         its private key (PKCS#8, PKCS#1 or SEC1)
  --help            this text

Without --cert and --key, a self-signed certificate for localhost and 127.0.0.1 is
made at start and written to a temporary file, whose path is printed: pass it to
`openssl s_client -CAfile` or `curl --cacert`.
";

struct Options {
    addr: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The command line (`--help` and mistakes end the program there, see `support/cli.rs`).
fn parse_args() -> Options {
    let args = cli::Args::parse("tls_echo", USAGE, &["--addr", "--cert", "--key"], 0);
    let opts = Options {
        addr: args.addr("127.0.0.1:7443"),
        cert: args.value("--cert").map(PathBuf::from),
        key: args.value("--key").map(PathBuf::from),
    };
    if opts.cert.is_some() != opts.key.is_some() {
        args.usage_error("--cert and --key go together: give both or neither");
    }
    opts
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
    let opts = parse_args();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tls_echo: {msg}");
            ExitCode::FAILURE
        }
    }
}
