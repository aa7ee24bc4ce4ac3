//! Embedding measurements, side by side in one run: a ticker's worst stall while blocking
//! work runs through `unblock` (against the same work done on the loop), the round trip
//! of a remote `Handle::spawn` + `join` from a std thread (against a std worker thread
//! fed through std channels), and channel throughput thread→task and task→task (against
//! crossbeam-channel between two std threads).
//!
//! ```text
//! cargo bench --bench embed            # about 10 s; prints a table
//! cargo bench --bench embed -- --quick # fewer rounds
//! ```
//!
//! Not criterion: these are latencies of rare events and one-off stalls, reported as
//! maxima, medians and p99s.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run passes nothing
    // we act on, and we still run: the numbers are the point.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!("embed benchmarks on {cores} cores (noisy if the machine is shared)\n");
    stall(quick);
    round_trip(if quick { 2_000 } else { 20_000 });
    throughput(if quick { 100_000 } else { 1_000_000 });
}

/// The worst gap between a 1 ms ticker's wake-ups, beyond its 1 ms, while `work` runs.
fn worst_stall(work: impl FnOnce() + 'static) -> Duration {
    let worst = Rc::new(Cell::new(Duration::ZERO));
    let done = Rc::new(Cell::new(false));
    let (w, d) = (worst.clone(), done.clone());
    copas::spawn(move || {
        let mut last = Instant::now();
        while !d.get() {
            copas::sleep(Duration::from_millis(1)).unwrap();
            let now = Instant::now();
            let gap = now - last;
            w.set(w.get().max(gap.saturating_sub(Duration::from_millis(1))));
            last = now;
        }
    });
    copas::spawn(move || {
        // Let the ticker take its first step.
        copas::sleep(Duration::from_millis(5)).unwrap();
        work();
        done.set(true);
    });
    copas::run().unwrap();
    worst.get()
}

fn stall(quick: bool) {
    let calls = 64;
    let nap = Duration::from_millis(300);
    let idle = worst_stall(|| copas::sleep(Duration::from_millis(300)).unwrap());
    let unblocked = worst_stall(move || {
        let hs: Vec<_> = (0..calls)
            .map(|_| copas::spawn(move || copas::unblock(move || thread::sleep(nap)).unwrap()))
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let on_loop = if quick {
        None
    } else {
        Some(worst_stall(move || thread::sleep(nap)))
    };
    println!("ticker (1 ms) worst stall");
    println!(
        "  idle loop, 300 ms                      {:>10.3} ms",
        ms(idle)
    );
    println!(
        "  64 x unblock(sleep 300 ms)             {:>10.3} ms",
        ms(unblocked)
    );
    if let Some(d) = on_loop {
        println!(
            "  1 x sleep(300 ms) on the loop          {:>10.3} ms",
            ms(d)
        );
    }
    println!();
}

fn round_trip(n: usize) {
    let rt = copas::Runtime::spawn_thread("bench-remote").unwrap();
    let h = rt.handle();
    let copas_times = thread::spawn(move || {
        let mut t = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            let v = h.spawn(move || i).join().unwrap();
            t.push(start.elapsed());
            assert_eq!(v, i);
        }
        t
    })
    .join()
    .unwrap();
    rt.handle().exit();
    rt.join().unwrap();

    type Job = Box<dyn FnOnce() -> usize + Send>;
    let (job_tx, job_rx) = mpsc::channel::<(Job, mpsc::SyncSender<usize>)>();
    let worker = thread::spawn(move || {
        for (job, reply) in job_rx {
            let _ = reply.send(job());
        }
    });
    let std_times = thread::spawn(move || {
        let mut t = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            let (tx, rx) = mpsc::sync_channel(1);
            job_tx.send((Box::new(move || i), tx)).unwrap();
            let v = rx.recv().unwrap();
            t.push(start.elapsed());
            assert_eq!(v, i);
        }
        t
    })
    .join()
    .unwrap();
    worker.join().unwrap();
    let (cm, cp) = percentiles(copas_times);
    let (sm, sp) = percentiles(std_times);
    println!("round trip from a std thread ({n} rounds)     median        p99");
    println!(
        "  Handle::spawn + join                   {:>7.1} us {:>7.1} us",
        us(cm),
        us(cp)
    );
    println!(
        "  std worker thread, std mpsc            {:>7.1} us {:>7.1} us",
        us(sm),
        us(sp)
    );
    println!(
        "  ratio copas / std                      {:>7.2}x   {:>7.2}x\n",
        cm.as_secs_f64() / sm.as_secs_f64(),
        cp.as_secs_f64() / sp.as_secs_f64()
    );
}

fn throughput(n: u64) {
    const CAP: usize = 128;
    let thread_to_task = {
        let (tx, rx) = copas::sync::channel::<u64>(CAP);
        let start = Instant::now();
        let t = thread::spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        });
        let h = copas::spawn(move || {
            let mut sum = 0u64;
            while let Ok(v) = rx.recv() {
                sum += v;
            }
            sum
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), n * (n - 1) / 2);
        t.join().unwrap();
        start.elapsed()
    };
    let task_to_task = {
        let (tx, rx) = copas::sync::channel::<u64>(CAP);
        let start = Instant::now();
        copas::spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        });
        let h = copas::spawn(move || {
            let mut sum = 0u64;
            while let Ok(v) = rx.recv() {
                sum += v;
            }
            sum
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap(), n * (n - 1) / 2);
        start.elapsed()
    };
    let copas_threads = {
        let (tx, rx) = copas::sync::channel::<u64>(CAP);
        let start = Instant::now();
        let t = thread::spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        });
        let mut sum = 0u64;
        let r = thread::spawn(move || {
            while let Ok(v) = rx.recv() {
                sum += v;
            }
            sum
        });
        t.join().unwrap();
        assert_eq!(r.join().unwrap(), n * (n - 1) / 2);
        start.elapsed()
    };
    let crossbeam = {
        let (tx, rx) = crossbeam_channel::bounded::<u64>(CAP);
        let start = Instant::now();
        let t = thread::spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        });
        let mut sum = 0u64;
        for v in rx {
            sum += v;
        }
        assert_eq!(sum, n * (n - 1) / 2);
        t.join().unwrap();
        start.elapsed()
    };
    let rate = |d: Duration| n as f64 / d.as_secs_f64() / 1e6;
    let base = rate(crossbeam);
    println!("channel throughput, capacity {CAP}, {n} u64s   Mmsg/s   vs crossbeam");
    for (what, d) in [
        ("copas channel thread -> task", thread_to_task),
        ("copas channel task -> task (one loop)", task_to_task),
        ("copas channel thread -> thread", copas_threads),
        ("crossbeam-channel thread -> thread", crossbeam),
    ] {
        println!("  {what:<38} {:>7.2}   {:>6.2}x", rate(d), rate(d) / base);
    }
}

fn percentiles(mut t: Vec<Duration>) -> (Duration, Duration) {
    t.sort_unstable();
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    (p(0.5), p(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
