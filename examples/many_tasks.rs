//! Holds many live tasks at once, each parked on a timer, and reports the process's
//! memory per task and its number of kernel mappings (each corosensei `DefaultStack`
//! would take two, and Linux allows 65,530 by default).
//!
//! ```text
//! cargo run --release --example many_tasks -- 100000
//! ```

use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: many_tasks [N]

Spawns N tasks (default 100000) that sleep on timers, and reports the memory and kernel
mappings they take; then cancels them all.

Options:
  -h, --help  print this help
";

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
}

fn main() {
    let args = Args::parse("many_tasks", USAGE, &[], 1);
    let n: usize = match args.positional(0) {
        None => 100_000,
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| args.usage_error(&format!("N must be a number, not '{v}'"))),
    };
    let rss_before = status("VmRSS:");
    let maps_before = maps();
    let start = Instant::now();
    let wake_at = Instant::now() + Duration::from_secs(3600);
    let handles: Vec<_> = (0..n)
        .map(|_| copas::spawn(move || copas::sleep_until(wake_at)))
        .collect();
    // One step starts every task; each then sleeps on its timer.
    if let Err(e) = copas::Runtime::current().step(Some(Duration::ZERO)) {
        cli::fail(
            "many_tasks",
            &format!("the loop failed: {}", cli::describe(&e)),
        );
    }
    let spawned = start.elapsed();
    let stats = copas::Runtime::current().stats();
    let rss = status("VmRSS:");
    println!(
        "{} live tasks ({} sleeping) in {:.0?}: {:.2} KiB RSS per task, {} kernel mappings (+{})",
        stats.tasks,
        stats.sleeping,
        spawned,
        (rss - rss_before) as f64 / n as f64,
        maps(),
        maps() - maps_before,
    );
    for h in &handles {
        h.cancel();
    }
    cli::run("many_tasks");
    assert_eq!(copas::Runtime::current().stats().tasks, 0);
    println!("all {n} cancelled and finished");
}
