//! Command-line parsing with `std::env::args` only: `--key value`, `--key=value`, flags.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::driver::{Options, ServerKind};
use crate::load::LoadConfig;

/// Options that take no value.
const FLAGS: &[&str] = &["quick", "pin", "no-build", "hold", "help", "h"];

/// Parsed command-line options.
#[derive(Debug, Default)]
pub(crate) struct Args {
    flags: HashSet<String>,
    values: HashMap<String, String>,
}

impl Args {
    pub(crate) fn parse(argv: &[String]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let key = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-'))
                .ok_or_else(|| format!("unexpected argument '{arg}'"))?;
            if let Some((k, v)) = key.split_once('=') {
                out.values.insert(k.to_owned(), v.to_owned());
            } else if FLAGS.contains(&key) {
                out.flags.insert(key.to_owned());
            } else {
                let v = it
                    .next()
                    .ok_or_else(|| format!("option --{key} needs a value"))?;
                out.values.insert(key.to_owned(), v.clone());
            }
        }
        Ok(out)
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("bad value '{v}' for --{name}")),
        }
    }

    fn secs(&self, name: &str, default: f64) -> Result<Duration, String> {
        let s: f64 = self.get(name, default)?;
        Duration::try_from_secs_f64(s).map_err(|_| format!("bad duration for --{name}"))
    }

    fn list<T: FromStr>(&self, name: &str, default: &str) -> Result<Vec<T>, String> {
        self.values
            .get(name)
            .map_or(default, String::as_str)
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|_| format!("bad item '{s}' in --{name}"))
            })
            .collect()
    }

    /// `--addr` for the servers, with the echo example's default.
    pub(crate) fn addr(&self) -> Result<String, String> {
        self.get("addr", "127.0.0.1:7000".to_owned())
    }

    /// The load generator's configuration.
    pub(crate) fn load_config(&self) -> Result<LoadConfig, String> {
        let addr: SocketAddr = self
            .values
            .get("addr")
            .ok_or("load needs --addr")?
            .parse()
            .map_err(|_| "bad --addr".to_owned())?;
        Ok(LoadConfig {
            addr,
            connections: self.get("connections", 1)?,
            size: self.get("size", 64)?,
            warmup: self.secs("warmup", 1.0)?,
            duration: self.secs("duration", 3.0)?,
            threads: self.get("threads", 2)?,
            idle: self.flag("hold"),
        })
    }

    /// The comparison's options; `--quick` changes the defaults, explicit values win.
    pub(crate) fn options(&self) -> Result<Options, String> {
        let quick = self.flag("quick");
        let (warmup, duration, passes) = if quick { (0.4, 1.2, 1) } else { (1.0, 3.0, 3) };
        let servers: Vec<ServerKind> = self.list("servers", "copas,threads,tokio,epoll")?;
        if servers.is_empty() {
            return Err("--servers names no server".to_owned());
        }
        Ok(Options {
            connections: self.list("connections", "1,50,1000")?,
            size: self.get("size", 64)?,
            idle: self.get("idle", 10_000)?,
            warmup: self.secs("warmup", warmup)?,
            duration: self.secs("duration", duration)?,
            passes: self.get::<usize>("passes", passes)?.max(1),
            load_threads: self.get::<usize>("load-threads", 2)?.max(1),
            servers,
            pin: self.flag("pin"),
            build: !self.flag("no-build"),
            quick,
            out_md: self.get("out-md", PathBuf::from("docs/bench-results.md"))?,
            out_svg: self.get("out-svg", PathBuf::from("docs/bench-results.svg"))?,
        })
    }
}
