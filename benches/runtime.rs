//! Scheduler micro-benchmarks: spawn + join on a pooled stack, a yield/resume switch,
//! timers inserted and fired by the loop, and corosensei's raw resume + suspend as the
//! baseline: read `yield_now/two tasks ping-pong (per switch)` and `spawn_join/inside a
//! task` as ratios to `raw corosensei/resume+suspend` from the same run.
//!
//! ```text
//! cargo bench --bench runtime
//! cargo bench --bench runtime -- 'raw|ping-pong|inside a task'   # just the ratios
//! ```
//!
//! Everything runs on the bench thread's own runtime, with copas-core's default driver
//! (no sockets are involved, so no reactor is installed).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Spawns a task, runs the loop until it ends, joins it. After the first iteration the
/// task's stack comes from the pool, so this is the steady-state cost of a short task.
fn spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_join");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one task per run", |b| {
        b.iter(|| {
            let h = copas::spawn(|| black_box(7u64));
            copas::run().unwrap();
            h.join().unwrap()
        });
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("100 tasks per run", |b| {
        b.iter_batched(
            || Vec::with_capacity(100),
            |mut handles| {
                for i in 0..100u64 {
                    handles.push(copas::spawn(move || black_box(i)));
                }
                copas::run().unwrap();
                handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            },
            BatchSize::SmallInput,
        );
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("inside a task (spawn, join suspends)", |b| {
        b.iter_custom(|iters| {
            let outer = copas::spawn(move || {
                let start = Instant::now();
                for i in 0..iters {
                    let h = copas::spawn(move || black_box(i));
                    black_box(h.join().unwrap());
                }
                start.elapsed()
            });
            copas::run().unwrap();
            outer.join().unwrap()
        });
    });
    g.finish();
}

/// `yield_now` in a loop: each iteration is one suspend, one loop step and one resume.
fn yield_switch(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield_now");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one task", |b| {
        b.iter_custom(|iters| {
            let h = copas::spawn(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    copas::yield_now().unwrap();
                }
                start.elapsed()
            });
            copas::run().unwrap();
            h.join().unwrap()
        });
    });
    // Two tasks take turns: per iteration, each yields once (two switches in one step).
    g.bench_function("two tasks ping-pong (per switch)", |b| {
        b.iter_custom(|iters| {
            let half = iters.div_ceil(2);
            let start = Instant::now();
            for _ in 0..2 {
                copas::spawn(move || {
                    for _ in 0..half {
                        copas::yield_now().unwrap();
                    }
                });
            }
            copas::run().unwrap();
            start.elapsed()
        });
    });
    g.finish();
}

/// Timers: inserted, found due by the loop, fired (each firing runs in a fresh task).
fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("Timer::after(0) + run", |b| {
        b.iter(|| {
            let t = copas::Timer::after(Duration::ZERO, |_| {
                black_box(());
            });
            copas::run().unwrap();
            black_box(t)
        });
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 timers, distinct deadlines, + run", |b| {
        b.iter(|| {
            let timers: Vec<_> = (0..1000u64)
                .map(|i| {
                    copas::Timer::after(Duration::from_nanos(999 - i), |_| {
                        black_box(());
                    })
                })
                .collect();
            copas::run().unwrap();
            timers
        });
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 timers armed then cancelled", |b| {
        b.iter(|| {
            let timers: Vec<_> = (0..1000u64)
                .map(|i| copas::Timer::after(Duration::from_secs(60 + i), |_| {}))
                .collect();
            for t in &timers {
                t.cancel();
            }
            timers
        });
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("sleep(1 µs) in a task", |b| {
        b.iter_custom(|iters| {
            let h = copas::spawn(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    copas::sleep(Duration::from_micros(1)).unwrap();
                }
                start.elapsed()
            });
            copas::run().unwrap();
            h.join().unwrap()
        });
    });
    g.finish();
}

/// corosensei's own resume + suspend on a plain coroutine, with no scheduler around it:
/// the floor for a task switch (the coroutine is unwound when it drops). One iteration is one resume and one suspend (what one
/// task switch costs copas: the loop resumes a task, the task suspends back).
fn raw_switch(c: &mut Criterion) {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, CoroutineResult};
    let mut g = c.benchmark_group("raw corosensei");
    g.throughput(Throughput::Elements(1));
    g.bench_function("resume+suspend", |b| {
        let stack = DefaultStack::new(64 * 1024).unwrap();
        let mut coro = Coroutine::with_stack(stack, |y, mut v: u64| loop {
            v = y.suspend(black_box(v));
        });
        b.iter(|| match coro.resume(black_box(1)) {
            CoroutineResult::Yield(v) => v,
            CoroutineResult::Return(()) => unreachable!(),
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = raw_switch, spawn_join, yield_switch, timers
}
criterion_main!(benches);
