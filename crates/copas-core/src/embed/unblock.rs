//! [`unblock`]: runs a blocking closure on a pool of worker threads while the calling task
//! is suspended.
//!
//! The pool is our own, not the `blocking` crate under [`block_on`](super::block_on): it
//! is about a hundred lines, needs no dependency (`blocking` brings `async-task`,
//! `async-channel`, `futures-lite`, `piper` and more), and its bound can be set from code
//! ([`set_max_unblock_threads`]) rather than only from an environment variable read once.
//!
//! Key invariants: jobs start in the order they were submitted (one FIFO queue); a new
//! thread is started only when the queued jobs outnumber the idle workers and the bound
//! allows it; an idle worker exits after [`IDLE_TIMEOUT`] without work.

use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::oneshot;

/// The default bound on the number of `unblock` worker threads.
pub const DEFAULT_MAX_UNBLOCK_THREADS: usize = 512;

/// How long a worker waits for a job before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    queue: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    /// Workers alive.
    threads: usize,
    max: usize,
}

pub(crate) struct Pool {
    state: Mutex<State>,
    cond: Condvar,
    idle_timeout: Duration,
    name: &'static str,
}

static POOL: Pool = Pool::new(DEFAULT_MAX_UNBLOCK_THREADS, IDLE_TIMEOUT, "copas-unblock");

impl Pool {
    pub(crate) const fn new(max: usize, idle_timeout: Duration, name: &'static str) -> Pool {
        Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                idle: 0,
                threads: 0,
                max,
            }),
            cond: Condvar::new(),
            idle_timeout,
            name,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, starting a worker for it if the idle ones are all spoken for and the
    /// bound allows.
    ///
    /// # Errors
    /// The error of `std::thread::Builder::spawn` when no worker exists and none can be
    /// started; the job is not queued then.
    pub(crate) fn submit(&'static self, job: Job) -> io::Result<()> {
        let mut st = self.lock();
        st.queue.push_back(job);
        if st.queue.len() > st.idle && st.threads < st.max.max(1) {
            st.threads += 1;
            let spawned = std::thread::Builder::new()
                .name(self.name.to_owned())
                .spawn(move || self.work());
            if let Err(e) = spawned {
                st.threads -= 1;
                if st.threads == 0 {
                    let job = st.queue.pop_back();
                    drop(st);
                    drop(job);
                    return Err(e);
                }
                // The workers there are will get to it.
            }
        }
        drop(st);
        self.cond.notify_one();
        Ok(())
    }

    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                // Jobs catch their own panics (see `unblock`); this is a second fence so a
                // worker never dies with its count still held.
                let _ = panic::catch_unwind(AssertUnwindSafe(job));
                st = self.lock();
                continue;
            }
            if st.threads > st.max.max(1) {
                break; // the bound was lowered
            }
            st.idle += 1;
            let (guard, timeout) = self
                .cond
                .wait_timeout(st, self.idle_timeout)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() {
                break;
            }
        }
        st.threads -= 1;
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.lock().threads
    }
}

/// Sets the largest number of worker threads [`unblock`] may use at once (default
/// [`DEFAULT_MAX_UNBLOCK_THREADS`]); calls beyond it wait their turn in FIFO order. A
/// bound of 0 counts as 1. Lowering it lets surplus workers exit once they are idle.
pub fn set_max_unblock_threads(max: usize) {
    POOL.lock().max = max;
}

/// Runs the blocking `f` on a worker thread and returns its result, while the calling
/// task is suspended and the loop goes on serving the other tasks.
///
/// For work that would block the loop: a `std::fs` call, a slow legacy library, a
/// synchronous database client, CPU-heavy work. The pool of workers grows on demand up to
/// a bound ([`set_max_unblock_threads`]), idle workers exit after a few seconds, and
/// calls beyond the bound wait their turn in FIFO order.
///
/// Outside any task the call drives the loop while it waits, as
/// [`block_on`](crate::block_on) does.
///
/// # Errors
/// If the calling task is cancelled, or a [`with_timeout`](crate::with_timeout) scope
/// ends ([`io::ErrorKind::TimedOut`]), the call returns at once; `f` runs on, and its
/// result is dropped on the worker when it finishes. Also the error of starting a worker
/// thread when there is none.
///
/// # Panics
/// A panic in `f` is caught on the worker and re-raised in the caller, with its payload
/// (as `std::thread::scope` does): in a task, the task panics and is reported like any
/// other task panic; it never reaches the loop.
///
/// # Examples
/// ```
/// let h = copas_core::spawn(|| {
///     copas_core::unblock(|| {
///         std::thread::sleep(std::time::Duration::from_millis(5)); // blocks a worker only
///         std::thread::current().name().map(str::to_owned)
///     })
/// });
/// copas_core::run()?;
/// assert_eq!(h.join().unwrap()?.as_deref(), Some("copas-unblock"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn unblock<F, T>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    POOL.submit(Box::new(move || {
        tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    }))?;
    match super::block_on(rx)? {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(oneshot::Lost) => Err(io::Error::other(
            "copas: the unblock worker dropped the call without running it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_beyond_the_bound_start_in_fifo_order_and_idle_workers_exit() {
        static P: Pool = Pool::new(1, Duration::from_millis(50), "copas-unblock-test");
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate_rx = std::sync::Arc::new(Mutex::new(gate_rx));
        let (order_tx, order_rx) = mpsc::channel::<usize>();
        // A blocker holds the only worker; nine more calls queue behind it.
        for i in 0..10 {
            let (gate, order) = (gate_rx.clone(), order_tx.clone());
            P.submit(Box::new(move || {
                order.send(i).unwrap();
                if i == 0 {
                    let _ = gate.lock().unwrap().recv();
                }
            }))
            .unwrap();
        }
        assert_eq!(P.threads(), 1, "the bound holds");
        gate_tx.send(()).unwrap();
        let order: Vec<usize> = (0..10).map(|_| order_rx.recv().unwrap()).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "FIFO start order");
        for _ in 0..500 {
            if P.threads() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the idle worker did not exit");
    }

    #[test]
    fn the_pool_grows_while_every_worker_is_busy() {
        static P: Pool = Pool::new(4, Duration::from_millis(50), "copas-unblock-test");
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate_rx = std::sync::Arc::new(Mutex::new(gate_rx));
        let (started_tx, started_rx) = mpsc::channel::<()>();
        for _ in 0..6 {
            let (gate, started) = (gate_rx.clone(), started_tx.clone());
            P.submit(Box::new(move || {
                started.send(()).unwrap();
                let _ = gate.lock().unwrap().recv();
            }))
            .unwrap();
        }
        // Four start at once (one per worker); the other two wait for the bound.
        for _ in 0..4 {
            started_rx.recv().unwrap();
        }
        assert_eq!(P.threads(), 4);
        for _ in 0..6 {
            gate_tx.send(()).unwrap();
        }
        for _ in 0..2 {
            started_rx.recv().unwrap();
        }
    }
}
