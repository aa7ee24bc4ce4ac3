//! The report: medians over passes as Markdown tables, and a bar chart written by hand
//! as SVG text (no plotting crate).

use std::fmt::Write as _;

use crate::driver::{IdleCell, LoadCell, Measurements, Options, RunInfo, ServerKind, Table};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A short tag for a table, for the progress log and the chart.
pub(crate) fn table_tag(t: Table) -> String {
    match t {
        Table::Echo(c) => format!("echo {c}c"),
        Table::EchoT2(c) => format!("echo {c}c 2 threads"),
        Table::Churn => "churn".to_owned(),
        Table::Open(p) => format!("open loop {p:.0}%"),
        Table::Http => "http".to_owned(),
        Table::HttpT2 => "http 2 threads".to_owned(),
        Table::TlsEcho => "tls echo".to_owned(),
        Table::TlsHandshake => "tls handshakes".to_owned(),
    }
}

fn title(opts: &Options, m: &Measurements, t: Table) -> String {
    let conns = |c: usize| format!("{c} connection{}", if c == 1 { "" } else { "s" });
    match t {
        Table::Echo(c) => format!("Echo, {}, {} B messages, closed loop", conns(c), opts.size),
        Table::EchoT2(c) => format!(
            "Echo on 2 threads, {}, {} B messages, closed loop",
            conns(c),
            opts.size
        ),
        Table::Churn => format!(
            "Connection churn: a new connection per {} B echo round trip, {} concurrent clients",
            opts.size, opts.churn_clients
        ),
        Table::Open(p) => format!(
            "Open loop at {p:.0}% of each server's own peak, {}, {} B echo",
            conns(opts.open_connections),
            opts.size
        ),
        Table::Http => format!("HTTP/1.1 keep-alive hello world, {}", m.http_client),
        Table::HttpT2 => format!(
            "HTTP/1.1 keep-alive hello world on 2 threads, {}",
            m.http_client
        ),
        Table::TlsEcho => format!(
            "TLS echo round trips, {}, {} B messages, closed loop",
            conns(opts.tls_connections),
            opts.size
        ),
        Table::TlsHandshake => format!(
            "TLS full handshakes (connect, handshake, one round trip, close_notify), {} concurrent clients",
            opts.handshake_clients
        ),
    }
}

fn op(t: Table) -> (&'static str, &'static str) {
    match t {
        Table::Echo(_) | Table::EchoT2(_) | Table::Open(_) | Table::TlsEcho => {
            ("round trips/s", "µs/rt")
        }
        Table::Churn => ("connects/s", "µs/connect"),
        Table::Http | Table::HttpT2 => ("requests/s", "µs/request"),
        Table::TlsHandshake => ("handshakes/s", "µs/handshake"),
    }
}

/// Medians over the passes of one cell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) rps: f64,
    rps_min: f64,
    rps_max: f64,
    offered: f64,
    other_cpu_pct: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    p999_us: f64,
    pub(crate) cpu_us: f64,
    server_cpu_pct: f64,
    load_cpu_pct: f64,
    rss_mib: f64,
    threads: f64,
    errors: f64,
    passes: usize,
}

pub(crate) fn row(m: &Measurements, t: Table, kind: ServerKind) -> Option<Row> {
    let cells: Vec<&LoadCell> = m
        .load
        .iter()
        .filter(|(tt, k, _)| *tt == t && *k == kind)
        .map(|(_, _, cell)| cell)
        .collect();
    if cells.is_empty() {
        return None;
    }
    let med = |f: &dyn Fn(&LoadCell) -> f64| median(cells.iter().map(|c| f(c)).collect());
    Some(Row {
        rps: med(&LoadCell::rps),
        rps_min: cells.iter().map(|c| c.rps()).fold(f64::INFINITY, f64::min),
        rps_max: cells.iter().map(|c| c.rps()).fold(0.0, f64::max),
        offered: med(&|c| c.load.offered),
        other_cpu_pct: med(&|c| c.other_cpu_pct),
        p50_us: med(&|c| c.load.p50 as f64 / 1e3),
        p99_us: med(&|c| c.load.p99 as f64 / 1e3),
        p999_us: med(&|c| c.load.p999 as f64 / 1e3),
        cpu_us: med(&LoadCell::cpu_us_per_rt),
        server_cpu_pct: med(&LoadCell::server_cpu_pct),
        load_cpu_pct: med(&LoadCell::load_cpu_pct),
        rss_mib: med(&|c| c.server_end.rss as f64 / 1048576.0),
        threads: med(&|c| c.server_end.threads as f64),
        errors: cells.iter().map(|c| c.load.errors as f64).sum(),
        passes: cells.len(),
    })
}

/// Medians over the passes of the idle test.
#[derive(Debug, Clone, Copy)]
struct IdleRow {
    before_mib: f64,
    after_mib: f64,
    kib_per_conn: f64,
    threads: f64,
    setup_s: f64,
}

fn idle_row(m: &Measurements, kind: ServerKind) -> Option<IdleRow> {
    let cells: Vec<&IdleCell> = m
        .idle
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, c)| c)
        .collect();
    if cells.is_empty() {
        return None;
    }
    let med = |f: &dyn Fn(&IdleCell) -> f64| median(cells.iter().map(|c| f(c)).collect());
    Some(IdleRow {
        before_mib: med(&|c| c.before.rss as f64 / 1048576.0),
        after_mib: med(&|c| c.after.rss as f64 / 1048576.0),
        kib_per_conn: med(&|c| c.rss_per_conn() / 1024.0),
        threads: med(&|c| c.after.threads as f64),
        setup_s: med(&|c| c.setup.as_secs_f64()),
    })
}

fn ratio(x: f64, base: f64) -> String {
    if base > 0.0 && x.is_finite() && base.is_finite() {
        format!("{:.2}×", x / base)
    } else {
        "–".to_owned()
    }
}

fn us(x: f64) -> String {
    if !x.is_finite() || x <= 0.0 {
        "–".to_owned()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Why `kind` has no numbers in `t` (its failures in this run), if it has none.
fn failures(m: &Measurements, t: Option<Table>, kind: ServerKind) -> Vec<String> {
    let mut v: Vec<String> = m
        .failed
        .iter()
        .filter(|(tt, k, _)| *tt == t && *k == kind)
        .map(|(_, _, why)| why.clone())
        .collect();
    v.dedup();
    v
}

/// The Markdown report.
pub(crate) fn markdown(opts: &Options, info: &RunInfo, m: &Measurements) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark results\n");
    let _ = writeln!(
        s,
        "Generated by `cargo run --release -p copas-bench --{}{}` on {} (revision {}), in {:.0} s.\n",
        if info.command.is_empty() { "" } else { " " },
        info.command,
        info.date,
        info.revision,
        info.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- Machine: {} cores (nproc), {}, Linux {}; {}. Before the run, {:.0}% of one \
         core was busy with other work{}.",
        info.machine.cores,
        info.machine.cpu_model,
        info.machine.kernel,
        info.rustc,
        info.background_pct,
        if info.background_pct > 10.0 {
            " (a shared machine: expect noise)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- Warm-up {:.1} s, measured window {:.1} s, {} pass{} (medians over passes); \
         a fresh server process per cell; servers take turns within a table, their order \
         rotating from pass to pass.",
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64(),
        opts.passes,
        if opts.passes == 1 { "" } else { "es" }
    );
    if opts.quick {
        let _ = writeln!(
            s,
            "- A `--quick` run: one short pass over a smaller matrix, so the numbers are rougher than a full run's."
        );
    }
    let _ = writeln!(
        s,
        "- Load generator: a separate process (`copas-bench load`), {} thread{} with epoll \
         for the echo and open loops, a thread per client for churn and TLS; HTTP: {}. {}.",
        opts.load_threads,
        if opts.load_threads == 1 { "" } else { "s" },
        m.http_client,
        if opts.pin {
            "Servers pinned to CPU 0 and the load generator to CPU 1"
        } else {
            "Nothing pinned (server and load generator share the cores)"
        }
    );
    let _ = writeln!(
        s,
        "- Server CPU is utime + stime from `/proc/PID/stat` over the measured window \
         (10 ms ticks), divided by the operations completed in it; RSS is `VmRSS` and \
         threads `Threads` from `/proc/PID/status` at the window's end. CPU columns are \
         percent of one core; \"other CPU\" is what `/proc/stat` shows busy beyond the \
         server and the load generator. Rates are medians with the range over passes; \
         \"vs\" columns divide by the first row of the same table in the same run.\n"
    );
    let _ = writeln!(s, "| server | what it is |\n|---|---|");
    let mut seen: Vec<ServerKind> = Vec::new();
    for (_, servers) in &m.tables {
        for &k in servers {
            if !seen.contains(&k) {
                seen.push(k);
                let _ = writeln!(s, "| {} | {} |", k.name(), k.description());
            }
        }
    }
    let _ = writeln!(s);
    if !m.skipped.is_empty() {
        let _ = writeln!(s, "Skipped in this run (no numbers, nothing estimated):\n");
        for (k, why) in &m.skipped {
            let _ = writeln!(s, "- {} ({}): {why}.", k.name(), k.description());
        }
        let _ = writeln!(s);
    }
    for (t, servers) in &m.tables {
        let t = *t;
        let (rate, per) = op(t);
        let _ = writeln!(s, "## {}\n", title(opts, m, t));
        if let Table::Open(_) = t {
            let _ = writeln!(
                s,
                "Each server is offered this share of its own closed-loop rate at {} \
                 connections (measured in this run), on a fixed schedule; latency counts from \
                 each request's scheduled send time, so a stall is charged to every request \
                 it delayed. Requests scheduled in the window but unanswered 1 s after it \
                 are errors.\n",
                opts.open_connections
            );
        }
        let base = servers.iter().find_map(|&k| row(m, t, k));
        let offered_col = matches!(t, Table::Open(_));
        let _ = writeln!(
            s,
            "| server | {rate} | (min–max) |{} vs first | p50 µs | p99 µs | p99.9 µs | server CPU {per} | vs first | server CPU | load CPU | other CPU | server RSS MiB | threads |",
            if offered_col { " offered/s |" } else { "" }
        );
        let _ = writeln!(
            s,
            "|---|--:|--:|{}--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            if offered_col { "--:|" } else { "" }
        );
        for &k in servers {
            let Some(r) = row(m, t, k) else {
                let why = failures(m, Some(t), k);
                let _ = writeln!(
                    s,
                    "| {} | failed: {} |",
                    k.name(),
                    if why.is_empty() {
                        "no result".to_owned()
                    } else {
                        why.join("; ")
                    }
                );
                continue;
            };
            let died = m
                .load
                .iter()
                .filter(|(tt, kk, c)| *tt == t && *kk == k && c.server_died.is_some())
                .count();
            let mut notes = Vec::new();
            if r.errors > 0.0 {
                notes.push(format!("{} errors", r.errors));
            }
            if died > 0 {
                notes.push(format!("server exited in {died} of {} passes", r.passes));
            }
            let _ = writeln!(
                s,
                "| {}{} | {:.0} | {:.0}–{:.0} |{} {} | {} | {} | {} | {:.2} | {} | {:.0}% | {:.0}% | {:.0}% | {:.1} | {:.0} |",
                k.name(),
                if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) },
                r.rps,
                r.rps_min,
                r.rps_max,
                if offered_col { format!(" {:.0} |", r.offered) } else { String::new() },
                base.map_or("–".to_owned(), |b| ratio(r.rps, b.rps)),
                us(r.p50_us),
                us(r.p99_us),
                us(r.p999_us),
                r.cpu_us,
                base.map_or("–".to_owned(), |b| ratio(r.cpu_us, b.cpu_us)),
                r.server_cpu_pct,
                r.load_cpu_pct,
                r.other_cpu_pct,
                r.rss_mib,
                r.threads
            );
        }
        let first_errors: Vec<String> = servers
            .iter()
            .filter_map(|&k| {
                m.load
                    .iter()
                    .find(|(tt, kk, c)| *tt == t && *kk == k && !c.load.first_error.is_empty())
                    .map(|(_, _, c)| format!("{}: {}", k.name(), c.load.first_error))
            })
            .collect();
        if !first_errors.is_empty() {
            let _ = writeln!(s, "\nFirst error seen: {}.", first_errors.join("; "));
        }
        let _ = writeln!(s);
    }
    if !m.idle_servers.is_empty() {
        let _ = writeln!(s, "## {} idle connections\n", opts.idle);
        let _ = writeln!(
            s,
            "Each connection made one round trip, then stays open and silent. Memory per \
             connection is (RSS after − RSS before) / {}.\n",
            opts.idle
        );
        let _ = writeln!(
            s,
            "| server | RSS before MiB | RSS after MiB | KiB per connection | vs first | threads | setup s |"
        );
        let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|");
        let base_row = m.idle_servers.iter().find_map(|&k| idle_row(m, k));
        for &k in &m.idle_servers {
            let Some(r) = idle_row(m, k) else {
                let why = failures(m, None, k);
                let _ = writeln!(
                    s,
                    "| {} | failed: {} |",
                    k.name(),
                    if why.is_empty() {
                        "no result".to_owned()
                    } else {
                        why.join("; ")
                    }
                );
                continue;
            };
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.2} |",
                k.name(),
                r.before_mib,
                r.after_mib,
                r.kib_per_conn,
                base_row.map_or("–".to_owned(), |br| ratio(
                    r.kib_per_conn,
                    br.kib_per_conn
                )),
                r.threads,
                r.setup_s
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// A fixed color per server name, the same in every panel.
fn color(name: &str) -> &'static str {
    match name {
        "copas" => "#d62728",
        "threads" => "#1f77b4",
        "tokio" => "#2ca02c",
        "epoll" => "#7f7f7f",
        "may" | "may_minihttp" => "#9467bd",
        "lua-copas" => "#17becf",
        "copas-hook" => "#ff7f0e",
        "copas ×2" => "#8c1c13",
        "tokio ×2" => "#145a14",
        _ => "#5b3a80",
    }
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= x {
            return m * p;
        }
    }
    10.0 * p
}

fn short(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 100.0 || (x >= 10.0 && x.fract() == 0.0) {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

struct Panel {
    title: String,
    /// Group label and `(server, value)` bars (NaN values are not drawn).
    groups: Vec<(String, Vec<(ServerKind, f64)>)>,
}

fn draw_panel(s: &mut String, p: &Panel, x0: f64, y0: f64, w: f64, h: f64) {
    let max = nice_max(
        p.groups
            .iter()
            .flat_map(|(_, v)| v.iter().map(|b| b.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let (left, top, bottom) = (48.0, 28.0, 34.0);
    let plot_w = w - left - 8.0;
    let plot_h = h - top - bottom;
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
        x0 + left,
        y0 + 16.0,
        p.title
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = y0 + top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            x0 + left,
            x0 + left + plot_w,
            x0 + left - 4.0,
            y + 3.0,
            short(v)
        );
    }
    let n_groups = p.groups.len().max(1) as f64;
    let group_w = plot_w / n_groups;
    for (gi, (label, bars)) in p.groups.iter().enumerate() {
        let gx = x0 + left + group_w * gi as f64 + group_w * 0.1;
        let bar_w = (group_w * 0.8) / bars.len().max(1) as f64;
        for (bi, &(kind, v)) in bars.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let bh = plot_h * (v / max).clamp(0.0, 1.0);
            let bx = gx + bar_w * bi as f64;
            let by = y0 + top + plot_h - bh;
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" font-size="8" text-anchor="middle">{}</text>"#,
                (bar_w - 2.0).max(1.0),
                color(kind.name()),
                kind.name(),
                short(v),
                bx + bar_w / 2.0 - 1.0,
                by - 2.0,
                short(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            y0 + top + plot_h + 16.0,
            label
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        x0 + left,
        y0 + top + plot_h,
        x0 + left + plot_w,
        y0 + top + plot_h
    );
}

/// The chart: one panel per measurement (rates, CPU per operation, latency under load,
/// idle memory), bars colored by server.
pub(crate) fn svg(opts: &Options, m: &Measurements) -> String {
    let group =
        |tables: &[Table], f: &dyn Fn(&Row) -> f64| -> Vec<(String, Vec<(ServerKind, f64)>)> {
            m.tables
                .iter()
                .filter(|(t, _)| tables.contains(t))
                .map(|(t, servers)| {
                    let bars = servers
                        .iter()
                        .map(|&k| (k, row(m, *t, k).map_or(f64::NAN, |r| f(&r))))
                        .collect();
                    (table_tag(*t), bars)
                })
                .collect()
        };
    let of = |pred: &dyn Fn(Table) -> bool| -> Vec<Table> {
        m.tables
            .iter()
            .map(|(t, _)| *t)
            .filter(|&t| pred(t))
            .collect()
    };
    let echo = of(&|t| matches!(t, Table::Echo(_)));
    let t2 = of(&|t| matches!(t, Table::EchoT2(_)));
    let http = of(&|t| matches!(t, Table::Http | Table::HttpT2));
    let open = of(&|t| matches!(t, Table::Open(_)));
    let churn = of(&|t| t == Table::Churn);
    let tls_echo = of(&|t| t == Table::TlsEcho);
    let tls_hs = of(&|t| t == Table::TlsHandshake);
    let mut panels = vec![
        Panel {
            title: "echo round trips/s (higher is better)".into(),
            groups: group(&echo, &|r| r.rps),
        },
        Panel {
            title: "echo server CPU µs per round trip (lower is better)".into(),
            groups: group(&echo, &|r| r.cpu_us),
        },
        Panel {
            title: "2 threads: echo server CPU µs/rt (lower is better)".into(),
            groups: group(&t2, &|r| r.cpu_us),
        },
        Panel {
            title: "HTTP server CPU µs per request (lower is better)".into(),
            groups: group(&http, &|r| r.cpu_us),
        },
        Panel {
            title: "HTTP requests/s (higher is better)".into(),
            groups: group(&http, &|r| r.rps),
        },
        Panel {
            title: "open loop: p99 µs from scheduled send (lower is better)".into(),
            groups: group(&open, &|r| r.p99_us),
        },
        Panel {
            title: "open loop: p50 µs from scheduled send (lower is better)".into(),
            groups: group(&open, &|r| r.p50_us),
        },
        Panel {
            title: "churn: connects/s (higher is better)".into(),
            groups: group(&churn, &|r| r.rps),
        },
        Panel {
            title: "churn: server CPU µs per connect (lower is better)".into(),
            groups: group(&churn, &|r| r.cpu_us),
        },
        Panel {
            title: "TLS echo round trips/s (higher is better)".into(),
            groups: group(&tls_echo, &|r| r.rps),
        },
        Panel {
            title: "TLS full handshakes/s (higher is better)".into(),
            groups: group(&tls_hs, &|r| r.rps),
        },
    ];
    if !m.idle_servers.is_empty() {
        panels.push(Panel {
            title: "KiB RSS per idle connection (lower is better)".into(),
            groups: vec![(
                format!("{} idle", opts.idle),
                m.idle_servers
                    .iter()
                    .map(|&k| (k, idle_row(m, k).map_or(f64::NAN, |r| r.kib_per_conn)))
                    .collect(),
            )],
        });
    }
    panels.retain(|p| !p.groups.is_empty());
    let per_row = 3usize;
    let panel_w = 440.0;
    let panel_h = 250.0;
    let rows = panels.len().div_ceil(per_row).max(1);
    let width = panel_w * per_row as f64;
    let height = panel_h * rows as f64 + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, p) in panels.iter().enumerate() {
        let (col, r) = (i % per_row, i / per_row);
        draw_panel(
            &mut s,
            p,
            panel_w * col as f64,
            panel_h * r as f64,
            panel_w,
            panel_h,
        );
    }
    let mut names: Vec<&'static str> = Vec::new();
    for (_, servers) in &m.tables {
        for k in servers {
            if !names.contains(&k.name()) {
                names.push(k.name());
            }
        }
    }
    let y = panel_h * rows as f64 + 12.0;
    let mut x = 48.0;
    for name in names {
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            color(name),
            x + 16.0,
            y + 10.0,
            name
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
    let _ = writeln!(
        s,
        r##"<text x="48" y="{:.1}" font-size="11" fill="#555">{} B echo messages, medians of {} pass(es); every number in bench-results.md</text>"##,
        y + 32.0,
        opts.size,
        opts.passes
    );
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn axis_maximum_is_one_two_or_five() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120_000.0), 200_000.0);
        assert_eq!(nice_max(10.0), 10.0);
    }
}
