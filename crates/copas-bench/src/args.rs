//! Command-line parsing with `std::env::args` only: `--key value`, `--key=value`, flags.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::driver::{Options, Section, ServerKind};
use crate::load::{LoadConfig, Mode, Protocol};

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

    fn get_parsed<T: FromStr<Err = String>>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: String| format!("--{name}: {e}")),
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

    /// `--addr` and `--workers` (default 1).
    pub(crate) fn addr_workers(&self) -> Result<(String, usize), String> {
        Ok((self.addr()?, self.get::<usize>("workers", 1)?.max(1)))
    }

    /// `--addr`, `--cert` and `--key` for the TLS server.
    pub(crate) fn addr_cert_key(&self) -> Result<(String, PathBuf, PathBuf), String> {
        let path = |k: &str| {
            self.values
                .get(k)
                .map(PathBuf::from)
                .ok_or_else(|| format!("--{k} PEM is required"))
        };
        Ok((self.addr()?, path("cert")?, path("key")?))
    }

    /// `--dir` for `make-cert`.
    pub(crate) fn dir(&self) -> Result<PathBuf, String> {
        self.values
            .get("dir")
            .map(PathBuf::from)
            .ok_or_else(|| "make-cert needs --dir DIR".to_owned())
    }

    /// The load generator's configuration.
    pub(crate) fn load_config(&self) -> Result<LoadConfig, String> {
        let addr: SocketAddr = self
            .values
            .get("addr")
            .ok_or("load needs --addr")?
            .parse()
            .map_err(|_| "bad --addr".to_owned())?;
        let rate: Option<f64> = match self.values.get("rate") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| format!("bad value '{v}' for --rate (requests per second)"))?,
            ),
        };
        let count: Option<u64> = match self.values.get("count") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .ok()
                    .filter(|&n: &u64| n > 0)
                    .ok_or_else(|| format!("bad value '{v}' for --count"))?,
            ),
        };
        let mode: Mode = self.get_parsed("mode", Mode::Echo)?;
        if rate.is_some() && !matches!(mode, Mode::Echo | Mode::Http) {
            return Err("--rate needs --mode echo or http".to_owned());
        }
        if rate.is_some() && count.is_some() {
            return Err("--rate and --count do not go together".to_owned());
        }
        Ok(LoadConfig {
            addr,
            mode,
            protocol: self.get_parsed("protocol", Protocol::Echo)?,
            connections: self.get::<usize>("connections", 1)?.max(1),
            size: self.get::<usize>("size", 64)?.max(1),
            warmup: self.secs("warmup", 1.0)?,
            duration: self.secs("duration", 3.0)?,
            threads: self.get::<usize>("threads", 2)?.max(1),
            idle: self.flag("hold"),
            rate,
            count,
            ca: self.values.get("ca").map(PathBuf::from),
            server_name: self.get("server-name", "localhost".to_owned())?,
            send: self.values.get("send").cloned(),
            server_pid: match self.values.get("server-pid") {
                None => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| format!("bad value '{v}' for --server-pid"))?,
                ),
            },
        })
    }

    /// The comparison's options; `--quick` changes the defaults, explicit values win.
    pub(crate) fn options(&self) -> Result<Options, String> {
        let quick = self.flag("quick");
        let (warmup, duration, passes, conns, idle, loads) = if quick {
            (0.2, 0.6, 1, "50,1000", 2000, "90")
        } else {
            (1.0, 3.0, 3, "1,50,1000", 10_000, "50,90")
        };
        let servers: Vec<ServerKind> = self.list(
            "servers",
            "copas,threads,tokio,epoll,may,lua-copas,copas-hook",
        )?;
        if servers.is_empty() {
            return Err("--servers names no server".to_owned());
        }
        let sections: Vec<Section> = self.list("sections", "echo,mt2,churn,open,http,tls,idle")?;
        let open_loads: Vec<f64> = self.list("open-loads", loads)?;
        if open_loads.iter().any(|&p| !(p > 0.0 && p <= 200.0)) {
            return Err("--open-loads are percentages of the peak, in (0, 200]".to_owned());
        }
        Ok(Options {
            connections: self.list("connections", conns)?,
            size: self.get::<usize>("size", 64)?.max(1),
            idle: self.get("idle", idle)?,
            warmup: self.secs("warmup", warmup)?,
            duration: self.secs("duration", duration)?,
            passes: self.get::<usize>("passes", passes)?.max(1),
            load_threads: self.get::<usize>("load-threads", 2)?.max(1),
            servers,
            sections,
            open_connections: self.get::<usize>("open-connections", 50)?.max(1),
            open_loads,
            churn_clients: self.get::<usize>("churn-clients", 16)?.max(1),
            http_connections: self.get::<usize>("http-connections", 50)?.max(1),
            tls_connections: self.get::<usize>("tls-connections", 50)?.max(1),
            handshake_clients: self.get::<usize>("handshake-clients", 8)?.max(1),
            pin: self.flag("pin"),
            build: !self.flag("no-build"),
            quick,
            out_md: self.get("out-md", PathBuf::from("docs/bench-results.md"))?,
            out_svg: self.get("out-svg", PathBuf::from("docs/bench-results.svg"))?,
        })
    }
}
