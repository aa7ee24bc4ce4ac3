//! `copas-bench`: side-by-side comparisons of servers on loopback.
//!
//! ```text
//! cargo run --release -p copas-bench                 # the full matrix (see docs/benchmarks.md)
//! cargo run --release -p copas-bench -- --quick      # about a minute
//! cargo run --release -p copas-bench -- --help
//! cargo run --release -p copas-bench -- load --addr 127.0.0.1:7000 --mode echo
//! ```
//!
//! Each server runs as its own child process on a free loopback port: the copas examples,
//! thread-per-connection servers on `std::net`, tokio (`current_thread` and 2 workers),
//! may and may_minihttp (1 and 2 workers), hand-written epoll loops as the lower bound,
//! Lua Copas on LuaJIT, and TLS echo servers. The load generator is another child process
//! (`copas-bench load`, or `wrk` for the HTTP rows), so each side has its own descriptor
//! limit and its CPU time is measured apart. Results go to `docs/bench-results.md` and
//! `docs/bench-results.svg`; see `docs/benchmarks.md`.

mod args;
mod driver;
mod epoll;
mod load;
mod procfs;
mod report;
mod serve_epoll;
mod serve_may;
mod serve_tokio;
mod serve_tokio_http;
mod tls;

use std::process::ExitCode;

const HELP: &str = "\
copas-bench: servers side by side (copas, threads, tokio, may, epoll, Lua Copas)

USAGE:
    copas-bench [OPTIONS]                   run the comparison (the default)
    copas-bench load --addr A [OPTIONS]     drive any running server (see LOAD)
    copas-bench serve-tokio --addr A [--workers N]       tokio echo (1: current_thread)
    copas-bench serve-tokio-http --addr A [--workers N]  tokio HTTP/1.1 hello world
    copas-bench serve-tokio-tls --addr A --cert PEM --key PEM
                                            tokio + tokio-rustls current_thread TLS echo
    copas-bench serve-may --addr A [--workers N]         may echo
    copas-bench serve-may-http --addr A [--workers N]    may_minihttp hello world
    copas-bench serve-epoll --addr A        hand-written epoll echo server
    copas-bench serve-epoll-http --addr A   hand-written epoll HTTP hello world
    copas-bench make-cert --dir DIR         write a self-signed cert.pem/key.pem (rcgen)

OPTIONS (comparison):
    --quick                 one short pass over a smaller matrix (about a minute)
    --sections LIST         any of echo,mt2,churn,open,http,tls,idle [default: all]
    --servers LIST          any of copas,threads,tokio,epoll,may,lua-copas,copas-hook
                            [default: all; absent ones are skipped with a note]; a name
                            also selects its HTTP, 2-thread and TLS servers
    --connections LIST      echo connection counts [default: 1,50,1000]
    --size BYTES            echo message size, including the \\n [default: 64]
    --idle N                idle connections for the memory test [default: 10000]
    --open-connections N    connections of the open-loop runs [default: 50]
    --open-loads LIST       offered load in percent of each server's peak [default: 50,90]
    --churn-clients N       concurrent clients of the churn runs [default: 16]
    --http-connections N    wrk -c for the HTTP rows [default: 50]
    --tls-connections N     connections of the TLS echo runs [default: 50]
    --handshake-clients N   concurrent clients of the TLS handshake runs [default: 8]
    --warmup SECS           warm-up before each measured window [default: 1]
    --duration SECS         measured window [default: 3]
    --passes N              passes over the matrix; medians are reported [default: 3]
    --load-threads N        load generator threads [default: 2]
    --pin                   pin servers to CPU 0 and the load generator to CPU 1 (taskset)
    --no-build              do not run cargo build for the example servers
    --out-md PATH           [default: docs/bench-results.md]
    --out-svg PATH          [default: docs/bench-results.svg]

LOAD (copas-bench load --addr HOST:PORT ...):
    --mode M                echo (lines echoed back), http (GET / keep-alive), churn (a new
                            connection per round trip), tls-echo, tls-handshake [default: echo]
    --protocol P            churn only: echo or http (Connection: close) [default: echo]
    --connections N         connections (churn, tls-handshake: concurrent clients) [default: 1]
    --rate R                open loop: R requests/s in total on a fixed schedule, latency
                            from the scheduled send time (echo and http modes)
    --count N               closed loop: stop after N requests instead of a duration
    --size BYTES --warmup SECS --duration SECS --threads N
    --send TEXT             send the line TEXT instead of an echo line; any one line back is
                            the answer (drives any line protocol: --send PING)
    --server-pid PID        sample that process's CPU in /proc and report it per request
    --ca PEM --server-name NAME   TLS modes: the certificate to trust [name: localhost]
    --hold                  open --connections, one round trip each, hold until stdin closes
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.first().map(String::as_str) {
        Some(
            c @ ("serve-tokio" | "serve-tokio-http" | "serve-tokio-tls" | "serve-may"
            | "serve-may-http" | "serve-epoll" | "serve-epoll-http" | "make-cert" | "load"
            | "run"),
        ) => (c, &argv[1..]),
        _ => ("run", &argv[..]),
    };
    let parsed = match args::Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("copas-bench: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if parsed.flag("help") || parsed.flag("h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let outcome = match cmd {
        "serve-tokio" => parsed.addr_workers().and_then(|(a, w)| {
            serve_tokio::serve(&a, w).map_err(|e| listen_error("tokio echo", &a, e))
        }),
        "serve-tokio-http" => parsed.addr_workers().and_then(|(a, w)| {
            serve_tokio_http::serve(&a, w).map_err(|e| listen_error("tokio http", &a, e))
        }),
        "serve-tokio-tls" => parsed.addr_cert_key().and_then(|(a, c, k)| {
            tls::serve(&a, &c, &k).map_err(|e| listen_error("tokio tls echo", &a, e))
        }),
        "serve-may" => parsed.addr_workers().and_then(|(a, w)| {
            serve_may::serve(&a, w).map_err(|e| listen_error("may echo", &a, e))
        }),
        "serve-may-http" => parsed.addr_workers().and_then(|(a, w)| {
            serve_may::serve_http(&a, w).map_err(|e| listen_error("may_minihttp", &a, e))
        }),
        "serve-epoll" => parsed
            .addr()
            .and_then(|a| serve_epoll::serve(&a).map_err(|e| listen_error("epoll echo", &a, e))),
        "serve-epoll-http" => parsed.addr().and_then(|a| {
            serve_epoll::serve_http(&a).map_err(|e| listen_error("epoll http", &a, e))
        }),
        "make-cert" => parsed.dir().and_then(|d| {
            tls::make_cert(&d)
                .map(|(c, k)| println!("wrote {} and {}", c.display(), k.display()))
                .map_err(|e| e.to_string())
        }),
        "load" => parsed
            .load_config()
            .and_then(|c| load::run(&c).map_err(|e| e.to_string())),
        _ => parsed
            .options()
            .and_then(|o| driver::run(&o).map_err(|e| e.to_string())),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("copas-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// "tokio echo: cannot serve on 127.0.0.1:7000: address in use" style messages.
fn listen_error(what: &str, addr: &str, e: std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    };
    format!("{what}: cannot serve on {addr}: {why}")
}
