//! A probe for counting the instructions of the scheduler's hot paths with callgrind,
//! which counts reliably even on a loaded machine (timings do not). Run it twice with
//! different iteration counts and divide the difference by the difference in iterations:
//! that cancels start-up and tear-down.
//!
//! ```text
//! cargo build --release -p copas-core --example switch_probe
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/switch_probe pingpong $n 2>&1 | grep refs
//! done
//! # (refs(200000) - refs(100000)) / 100000 = instructions per iteration
//! ```
//!
//! Modes (one iteration each):
//! - `raw`: corosensei's own resume + suspend, no scheduler.
//! - `pingpong`: one task switch (two tasks take turns with `yield_now`).
//! - `spawnjoin`: inside a task, `spawn` a task, let it run, `join` it.

use std::hint::black_box;
use std::process::ExitCode;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") || args.len() != 2 {
        eprintln!("usage: switch_probe raw|pingpong|spawnjoin ITERATIONS");
        return if args.len() == 2 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let Ok(n) = args[1].parse::<u64>() else {
        eprintln!(
            "switch_probe: the iteration count must be a whole number, not {:?}",
            args[1]
        );
        return ExitCode::FAILURE;
    };
    match args[0].as_str() {
        "raw" => {
            let stack = match DefaultStack::new(64 * 1024) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("switch_probe: cannot allocate a stack: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut coro = Coroutine::with_stack(stack, |y, mut v: u64| loop {
                v = y.suspend(black_box(v));
            });
            for _ in 0..n {
                match coro.resume(black_box(1)) {
                    CoroutineResult::Yield(v) => black_box(v),
                    CoroutineResult::Return(()) => unreachable!(),
                };
            }
        }
        "pingpong" => {
            let half = n.div_ceil(2);
            for _ in 0..2 {
                copas_core::spawn(move || {
                    for _ in 0..half {
                        copas_core::yield_now().unwrap();
                    }
                });
            }
            if let Err(e) = copas_core::run() {
                eprintln!("switch_probe: the loop failed: {e}");
                return ExitCode::FAILURE;
            }
        }
        "spawnjoin" => {
            let h = copas_core::spawn(move || {
                for i in 0..n {
                    let h = copas_core::spawn(move || black_box(i));
                    black_box(h.join().unwrap());
                }
            });
            if let Err(e) = copas_core::run() {
                eprintln!("switch_probe: the loop failed: {e}");
                return ExitCode::FAILURE;
            }
            if let Err(e) = h.join() {
                eprintln!("switch_probe: the probe task failed: {e}");
                return ExitCode::FAILURE;
            }
        }
        other => {
            eprintln!("switch_probe: unknown mode {other:?} (raw, pingpong or spawnjoin)");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
