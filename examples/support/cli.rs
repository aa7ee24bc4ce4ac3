//! The examples' command line: `--help`, options with values (`--addr HOST:PORT` or
//! `--addr=HOST:PORT`), flags without one (`--demo`), positional arguments, and errors
//! printed as sentences.
//!
//! Exit codes: 0 after `--help`, 2 for a command-line mistake (with a hint to try
//! `--help`), 1 for a failure at run time such as a port already in use. Every example
//! includes it with `#[path = "support/cli.rs"] mod cli;`.
#![allow(dead_code)]

use std::io;
use std::process::exit;

/// A parsed command line.
pub(crate) struct Args {
    prog: &'static str,
    values: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
    positional: Vec<String>,
}

impl Args {
    /// Parses `std::env::args()` for program `prog`: `options` are the names (with their
    /// `--`) that take a value, `max_positional` how many other arguments are allowed.
    /// `--help` / `-h` prints `usage` and exits 0; anything else unexpected prints a
    /// sentence and exits 2.
    pub(crate) fn parse(
        prog: &'static str,
        usage: &str,
        options: &[&'static str],
        max_positional: usize,
    ) -> Args {
        Args::parse_with_flags(prog, usage, options, &[], max_positional)
    }

    /// As [`Args::parse`], and `flags` are the names (with their `--`) that take no
    /// value; [`Args::flag`] tells whether one was given. A flag given a value
    /// (`--demo=yes`) is a usage error.
    pub(crate) fn parse_with_flags(
        prog: &'static str,
        usage: &str,
        options: &[&'static str],
        flags: &[&'static str],
        max_positional: usize,
    ) -> Args {
        let mut args = Args {
            prog,
            values: Vec::new(),
            flags: Vec::new(),
            positional: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                print!("{usage}");
                exit(0);
            }
            if arg == "--" {
                args.positional.extend(it.by_ref());
                break;
            }
            if arg.starts_with('-') && arg.len() > 1 {
                let (name, inline) = match arg.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (arg.as_str(), None),
                };
                if let Some(&flag) = flags.iter().find(|&&f| f == name) {
                    if inline.is_some() {
                        args.usage_error(&format!("option '{flag}' takes no value"));
                    }
                    args.flags.push(flag);
                    continue;
                }
                let Some(&known) = options.iter().find(|&&o| o == name) else {
                    args.usage_error(&format!("unknown option '{name}'"));
                };
                let value = match inline.or_else(|| it.next()) {
                    Some(v) => v,
                    None => args.usage_error(&format!("option '{known}' needs a value")),
                };
                args.values.push((known, value));
            } else {
                args.positional.push(arg);
            }
        }
        if args.positional.len() > max_positional {
            let extra = &args.positional[max_positional];
            args.usage_error(&format!("unexpected argument '{extra}'"));
        }
        args
    }

    /// Whether flag `name` was given.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// The value of option `name` (the last one given), if any.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of option `name`, or a usage error if it is missing.
    pub(crate) fn required(&self, name: &str) -> &str {
        match self.value(name) {
            Some(v) => v,
            None => self.usage_error(&format!("option '{name}' is required")),
        }
    }

    /// The `i`-th positional argument.
    pub(crate) fn positional(&self, i: usize) -> Option<&str> {
        self.positional.get(i).map(String::as_str)
    }

    /// Option `name` as a number, or `default`; a usage error if it is not one.
    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.value(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.usage_error(&format!("option '{name}' wants a number, not '{v}'"))
            }),
        }
    }

    /// `--threads N` (at least 1), or 1.
    pub(crate) fn threads(&self) -> usize {
        let n = self.number("--threads", 1usize);
        if n == 0 {
            self.usage_error("option '--threads' wants at least 1");
        }
        n
    }

    /// `--addr HOST:PORT`, or `default`; a usage error if it does not have that form.
    pub(crate) fn addr(&self, default: &str) -> String {
        let addr = self.value("--addr").unwrap_or(default);
        self.host_port("--addr", addr);
        addr.to_owned()
    }

    /// Checks that `value` of option `name` looks like `HOST:PORT` with a numeric port.
    pub(crate) fn host_port(&self, name: &str, value: &str) {
        let ok = value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            self.usage_error(&format!(
                "option '{name}' wants HOST:PORT (such as 127.0.0.1:7000), not '{value}'"
            ));
        }
    }

    /// Prints `prog: msg` and a hint, and exits 2.
    pub(crate) fn usage_error(&self, msg: &str) -> ! {
        eprintln!("{}: {msg}", self.prog);
        eprintln!("Try '{} --help' for more information.", self.prog);
        exit(2)
    }
}

/// An I/O error as the end of a sentence: "address in use", "connection refused", without
/// std's "(os error 98)" suffix.
pub(crate) fn describe(e: &io::Error) -> String {
    use io::ErrorKind::*;
    let phrase = match e.kind() {
        AddrInUse => "address in use",
        AddrNotAvailable => "address not available on this machine",
        PermissionDenied => "permission denied",
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        TimedOut => "timed out",
        _ => {
            let text = e.to_string();
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            // std's messages start with a capital ("Too many open files").
            let mut chars = text.chars();
            return match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => "unknown error".to_owned(),
            };
        }
    };
    phrase.to_owned()
}

/// Prints "`prog`: cannot listen on `addr`: `why`" and exits 1.
pub(crate) fn cannot_listen(prog: &str, addr: &str, e: &io::Error) -> ! {
    fail(prog, &format!("cannot listen on {addr}: {}", describe(e)))
}

/// Prints "`prog`: `msg`" and exits 1.
pub(crate) fn fail(prog: &str, msg: &str) -> ! {
    eprintln!("{prog}: {msg}");
    exit(1)
}

/// Runs the copas loop until it ends, printing a task dump on `SIGUSR1`; an error is
/// printed as a sentence (exit 1).
pub(crate) fn run(prog: &str) {
    // `kill -USR1 PID` prints what every task is doing (docs/diagnostics.md).
    if let Err(e) = copas::dump_on_sigusr1() {
        eprintln!(
            "{prog}: cannot install the SIGUSR1 task dump: {}",
            describe(&e)
        );
    }
    if let Err(e) = copas::run() {
        fail(prog, &format!("the loop stopped: {}", describe(&e)));
    }
}

/// Serves `handler` as server `prog` on `addr` until the loop ends: on this thread's
/// runtime when `threads` is 1, else on a group of `threads` threads, each with its own
/// runtime and its own `SO_REUSEPORT` listener on `addr` ([`copas::Threads`]). Prints the
/// address it listens on; failures are printed as sentences (exit 1).
pub(crate) fn serve<H>(prog: &'static str, addr: &str, threads: usize, handler: H)
where
    H: Fn(copas::TcpStream) -> io::Result<()> + Copy + Send + Sync + 'static,
{
    if threads <= 1 {
        let server = copas::ServerBuilder::new()
            .name(prog)
            .serve(addr, handler)
            .unwrap_or_else(|e| cannot_listen(prog, addr, &e));
        println!("{prog} server listening on {}", server.local_addr());
        return run(prog);
    }
    let bind = addr.to_owned();
    let group = copas::Threads::new(threads)
        .name(prog)
        .start(move |t| {
            let listener = t.listener(bind.as_str())?;
            copas::ServerBuilder::new()
                .name(prog)
                .serve(listener, handler)
                .map(drop)
        })
        .unwrap_or_else(|e| cannot_listen(prog, addr, &e));
    let local = group
        .local_addr()
        .map_or_else(|| addr.to_owned(), |a| a.to_string());
    println!("{prog} server listening on {local} ({threads} threads)");
    if let Err(e) = group.join() {
        fail(prog, &format!("the loop stopped: {e}"));
    }
}
