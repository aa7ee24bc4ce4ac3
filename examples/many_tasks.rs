//! Holds many live tasks at once, each parked on a timer, and reports the process's
//! memory per task and its number of kernel mappings (each corosensei `DefaultStack`
//! would take two, and Linux allows 65,530 by default).
//!
//! ```text
//! cargo run --release --example many_tasks -- 100000
//! ```

use std::time::{Duration, Instant};

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

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rss_before = status("VmRSS:");
    let maps_before = maps();
    let start = Instant::now();
    let wake_at = Instant::now() + Duration::from_secs(3600);
    let handles: Vec<_> = (0..n)
        .map(|_| copas::spawn(move || copas::sleep_until(wake_at)))
        .collect();
    // One step starts every task; each then sleeps on its timer.
    copas::Runtime::current().step(Some(Duration::ZERO))?;
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
    copas::run()?;
    assert_eq!(copas::Runtime::current().stats().tasks, 0);
    println!("all {n} cancelled and finished");
    Ok(())
}
