//! Timers, sleeping and timeouts without any socket: a recurring timer that stops itself,
//! a one-shot timer re-armed from its own callback, tasks sleeping in deadline order, and
//! `with_timeout` around a wait that would take too long.
//!
//! ```text
//! cargo run --example timers
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: timers

Shows recurring and one-shot timers, sleeping tasks and a timeout, with no sockets.

Options:
  -h, --help  print this help
";

fn main() {
    Args::parse("timers", USAGE, &[], 0);
    let start = Instant::now();
    let at = move || start.elapsed().as_millis();

    // Copas `copas.timer.new{ recurring = true }`: every 100 ms, five times.
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    copas::Timer::interval(Duration::from_millis(100), move |timer| {
        t.set(t.get() + 1);
        println!("{:>5} ms  tick {}", at(), t.get());
        if t.get() == 5 {
            timer.cancel();
        }
    });

    // A one-shot timer that re-arms itself with a growing delay.
    let delay = Rc::new(Cell::new(50u64));
    let d = delay.clone();
    copas::Timer::after(Duration::from_millis(50), move |timer| {
        println!("{:>5} ms  back-off fired after {} ms", at(), d.get());
        d.set(d.get() * 2);
        if d.get() <= 400 {
            timer.arm(Duration::from_millis(d.get()));
        }
    });

    // Sleepers wake in deadline order, never early.
    for ms in [300u64, 100, 200] {
        copas::spawn(move || {
            copas::sleep(Duration::from_millis(ms)).unwrap();
            println!("{:>5} ms  slept {ms} ms", at());
        });
    }

    // Copas `copas.timeout`: give up on a wait after 150 ms.
    copas::spawn(move || {
        let r = copas::with_timeout(Duration::from_millis(150), || {
            copas::sleep(Duration::from_secs(10))
        });
        println!(
            "{:>5} ms  long wait ended: {:?}",
            at(),
            r.map_err(|e| e.kind())
        );
    });

    cli::run("timers");
    println!("{:>5} ms  loop finished: no task and no timer left", at());
}
