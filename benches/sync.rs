//! Sync primitive micro-benchmarks (`copas::sync`): an uncontended mutex, a mutex handed
//! between two tasks, and a queue between a producer and a consumer task.
//!
//! ```text
//! cargo bench --bench sync
//! ```

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use copas::sync::{Mutex, Queue};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn mutex(c: &mut Criterion) {
    let mut g = c.benchmark_group("mutex");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lock + unlock, uncontended, in a task", |b| {
        b.iter_custom(|iters| {
            let h = copas::spawn(move || {
                let m = Mutex::new(0u64);
                let start = Instant::now();
                for _ in 0..iters {
                    *m.lock().unwrap() += 1;
                }
                black_box(m.into_inner());
                start.elapsed()
            });
            copas::run().unwrap();
            h.join().unwrap()
        });
    });
    // Two tasks that yield while holding the lock: every lock is a handoff to the other
    // task (its waiter wakes, runs next step).
    g.bench_function("handoff between two tasks (per lock)", |b| {
        b.iter_custom(|iters| {
            let m = Rc::new(Mutex::new(0u64));
            let half = iters.div_ceil(2);
            let start = Instant::now();
            for _ in 0..2 {
                let m = m.clone();
                copas::spawn(move || {
                    for _ in 0..half {
                        let mut guard = m.lock().unwrap();
                        *guard += 1;
                        copas::yield_now().unwrap();
                        drop(guard);
                    }
                });
            }
            copas::run().unwrap();
            start.elapsed()
        });
    });
    g.finish();
}

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push + pop, same task", |b| {
        b.iter_custom(|iters| {
            let h = copas::spawn(move || {
                let q: Queue<u64> = Queue::new();
                let start = Instant::now();
                for i in 0..iters {
                    q.push(i).unwrap();
                    black_box(q.pop().unwrap());
                }
                start.elapsed()
            });
            copas::run().unwrap();
            h.join().unwrap()
        });
    });
    // The consumer waits on an empty queue, so each push hands the item to a suspended
    // popper and wakes it: one switch per item in each direction.
    g.bench_function("producer → waiting consumer (per item)", |b| {
        b.iter_custom(|iters| {
            let q: Queue<u64> = Queue::new();
            let q2 = q.clone();
            let start = Instant::now();
            let consumer = copas::spawn(move || {
                let mut sum = 0u64;
                for _ in 0..iters {
                    sum = sum.wrapping_add(q2.pop().unwrap());
                }
                sum
            });
            copas::spawn(move || {
                for i in 0..iters {
                    q.push(i).unwrap();
                    copas::yield_now().unwrap();
                }
            });
            copas::run().unwrap();
            black_box(consumer.join().unwrap());
            start.elapsed()
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = mutex, queue
}
criterion_main!(benches);
