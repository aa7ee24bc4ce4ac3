//! `copas-bench`: a side-by-side comparison of echo servers on loopback.
//!
//! ```text
//! cargo run --release -p copas-bench                 # default matrix, a few minutes
//! cargo run --release -p copas-bench -- --quick      # about 30 s
//! cargo run --release -p copas-bench -- --help
//! ```
//!
//! Each server runs as its own child process on a free loopback port: the copas echo
//! example, a thread-per-connection echo on `std::net` (`examples/echo_threads.rs`), a
//! tokio `current_thread` echo (`copas-bench serve-tokio`), and a hand-written epoll loop
//! as the lower bound (`copas-bench serve-epoll`). The load generator is another child
//! process (`copas-bench load`), so each side has its own descriptor limit and its CPU
//! time is measured apart. Results go to `docs/bench-results.md` and
//! `docs/bench-results.svg`; see `docs/benchmarks.md`.

mod args;
mod driver;
mod epoll;
mod load;
mod procfs;
mod report;
mod serve_epoll;
mod serve_tokio;
mod serve_tokio_http;

use std::process::ExitCode;

const HELP: &str = "\
copas-bench: echo servers side by side (copas, threads, tokio, epoll)

USAGE:
    copas-bench [OPTIONS]                 run the comparison (the default)
    copas-bench serve-tokio --addr A      tokio current_thread echo server
    copas-bench serve-tokio-http --addr A tokio current_thread HTTP/1.1 hello world
                                          (examples/http.rs's twin, for wrk)
    copas-bench serve-epoll --addr A      hand-written epoll echo server
    copas-bench load --addr A [OPTIONS]   the load generator (used by the driver)

OPTIONS (comparison):
    --quick                 one short pass (about 35 s)
    --connections LIST      comma-separated connection counts [default: 1,50,1000]
    --size BYTES            message size, including the \\n [default: 64]
    --idle N                idle connections for the memory test, 0 to skip [default: 10000]
    --warmup SECS           warm-up before each measured window [default: 1]
    --duration SECS         measured window [default: 3]
    --passes N              passes over the matrix; medians are reported [default: 3]
    --load-threads N        load generator threads [default: 2]
    --servers LIST          any of copas,threads,tokio,epoll [default: all]
    --pin                   pin servers to CPU 0 and the load generator to CPU 1 (taskset)
    --no-build              do not run cargo build for the example servers
    --out-md PATH           [default: docs/bench-results.md]
    --out-svg PATH          [default: docs/bench-results.svg]

OPTIONS (load):
    --connections N --size BYTES --warmup SECS --duration SECS --threads N --idle
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.first().map(String::as_str) {
        Some(c @ ("serve-tokio" | "serve-tokio-http" | "serve-epoll" | "load" | "run")) => {
            (c, &argv[1..])
        }
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
        "serve-tokio" => parsed
            .addr()
            .and_then(|a| serve_tokio::serve(&a).map_err(|e| e.to_string())),
        "serve-tokio-http" => parsed
            .addr()
            .and_then(|a| serve_tokio_http::serve(&a).map_err(|e| e.to_string())),
        "serve-epoll" => parsed
            .addr()
            .and_then(|a| serve_epoll::serve(&a).map_err(|e| e.to_string())),
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
