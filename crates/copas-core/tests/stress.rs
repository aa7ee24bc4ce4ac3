//! Drives the scheduler's invariants hard: many tasks waking, unparking and cancelling
//! each other at random, stale ids, wake-ups from destructors, tasks spawned during
//! passes, joins (of tasks of several result types) and join handles dropped from
//! destructors, across 40 seeds, while records and join states are reused. Every task
//! must end exactly once, with destructors run, every join must give that task's own
//! result, and the loop must end.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use copas_core::{hooks, JoinHandle, Runtime, TaskId};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct World {
    rng: RefCell<Rng>,
    ids: RefCell<Vec<TaskId>>,
    handles: RefCell<Vec<copas_core::Task>>,
    cancels: RefCell<Vec<Rc<JoinHandle<usize>>>>,
    /// Handles to join (or to drop from a destructor), by task index; `None` once taken.
    joinable: RefCell<Vec<Option<JoinHandle<usize>>>>,
    /// Whether the task of that index is in `cancels` (else in `joinable`).
    in_cancels: RefCell<Vec<bool>>,
    spawned: Cell<usize>,
    started: Cell<usize>,
    dropped: Cell<usize>,
    joined: Cell<usize>,
    handles_dropped: Cell<usize>,
}

impl World {
    fn pick(&self, n: usize) -> usize {
        self.rng.borrow_mut().below(n as u64) as usize
    }
}

/// Wakes a random (possibly finished, so stale) task when dropped, and drops a random
/// join handle (detaching that task, maybe the very task being torn down).
struct WakeOnDrop(Rc<World>);
impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        let w = &self.0;
        w.dropped.set(w.dropped.get() + 1);
        let id = {
            let ids = w.ids.borrow();
            ids[w.pick(ids.len())]
        };
        if let Some(rt) = Runtime::try_current() {
            hooks::wake(&rt, id);
        }
        let victim = {
            let mut js = w.joinable.borrow_mut();
            let i = w.pick(js.len());
            js[i].take()
        };
        if victim.is_some() {
            w.handles_dropped.set(w.handles_dropped.get() + 1);
        }
        drop(victim);
    }
}

fn spawn_one(w: &Rc<World>, depth: u32) {
    let w2 = w.clone();
    let me = w.spawned.get();
    w.spawned.set(me + 1);
    let h = copas_core::spawn(move || {
        w2.started.set(w2.started.get() + 1);
        let _d = WakeOnDrop(w2.clone());
        for _ in 0..20 {
            let action = w2.rng.borrow_mut().below(10);
            match action {
                0 => {
                    let _ = copas_core::yield_now();
                }
                1 => {
                    let _ = copas_core::sleep(Duration::from_micros(50));
                }
                2 => {
                    // Wake anyone, maybe stale: a spurious wake-up must be harmless.
                    let id = {
                        let ids = w2.ids.borrow();
                        ids[w2.pick(ids.len())]
                    };
                    hooks::wake(&Runtime::current(), id);
                    let _ = hooks::suspend(Some(
                        std::time::Instant::now() + Duration::from_micros(100),
                    ));
                }
                3 => {
                    let t = {
                        let hs = w2.handles.borrow();
                        hs[w2.pick(hs.len())].clone()
                    };
                    t.unpark();
                    let _ = copas_core::park_timeout(Duration::from_micros(100));
                }
                4 => {
                    let victim = {
                        let cs = w2.cancels.borrow();
                        if cs.is_empty() {
                            None
                        } else {
                            Some(cs[w2.pick(cs.len())].clone())
                        }
                    };
                    if let Some(v) = victim {
                        v.cancel(); // may be itself, or finished
                    }
                    let _ = copas_core::yield_now();
                }
                5 if depth < 3 && w2.spawned.get() < 400 => spawn_one(&w2, depth + 1),
                6 => {
                    // Join a task spawned after this one (so joins never form a cycle):
                    // its own result, whatever record and join state it was given.
                    let n = w2.joinable.borrow().len();
                    if n > me + 1 {
                        let j = me + 1 + w2.pick(n - me - 1);
                        let h = w2.joinable.borrow_mut()[j].take();
                        if let Some(h) = h {
                            // Counted now: a cancelled joiner may unwind inside `join`.
                            w2.joined.set(w2.joined.get() + 1);
                            match h.join() {
                                Ok(v) => assert_eq!(v, j, "a join gave another task's result"),
                                Err(e) => assert!(e.is_cancelled(), "{e}"),
                            }
                        }
                    }
                }
                7 => {
                    // A short task of another result type, joined at once.
                    let k = w2.pick(1000);
                    let h = copas_core::spawn(move || format!("r{k}"));
                    match h.join() {
                        Ok(v) => assert_eq!(v, format!("r{k}")),
                        Err(e) => assert!(e.is_cancelled(), "{e}"),
                    }
                }
                _ => copas_core::cooperate(),
            }
        }
        me
    });
    w.ids.borrow_mut().push(h.id());
    w.handles.borrow_mut().push(h.task().clone());
    let cancellable = w.pick(2) == 0;
    w.in_cancels.borrow_mut().push(cancellable);
    if cancellable {
        w.cancels.borrow_mut().push(Rc::new(h));
        w.joinable.borrow_mut().push(None);
    } else {
        w.joinable.borrow_mut().push(Some(h));
    }
}

#[test]
fn random_wakes_unparks_cancels_joins_and_spawns_keep_every_invariant() {
    let (mut joins, mut detaches, mut cancelled_early) = (0, 0, 0);
    for seed in 1..=40u64 {
        let w = Rc::new(World {
            rng: RefCell::new(Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            ids: RefCell::new(Vec::new()),
            handles: RefCell::new(Vec::new()),
            cancels: RefCell::new(Vec::new()),
            joinable: RefCell::new(Vec::new()),
            in_cancels: RefCell::new(Vec::new()),
            spawned: Cell::new(0),
            started: Cell::new(0),
            dropped: Cell::new(0),
            joined: Cell::new(0),
            handles_dropped: Cell::new(0),
        });
        for _ in 0..60 {
            spawn_one(&w, 0);
        }
        copas_core::run().unwrap();
        let rt = Runtime::current();
        assert_eq!(rt.stats().tasks, 0, "seed {seed}: tasks left");
        assert_eq!(rt.stats().timers, 0, "seed {seed}: timers left");
        // Every task that started ran its destructor exactly once; those cancelled
        // before they started never ran.
        assert_eq!(w.dropped.get(), w.started.get(), "seed {seed}");
        assert!(w.started.get() <= w.spawned.get(), "seed {seed}");
        let finished = w
            .cancels
            .borrow()
            .iter()
            .filter(|h| h.is_finished())
            .count();
        assert_eq!(finished, w.cancels.borrow().len(), "seed {seed}");
        // The handles nobody took: finished, each with its own result or cancelled.
        let left: Vec<(usize, JoinHandle<usize>)> = w
            .joinable
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.take().map(|h| (i, h)))
            .collect();
        let taken = w.in_cancels.borrow().iter().filter(|c| !**c).count() - left.len();
        assert_eq!(
            taken,
            w.joined.get() + w.handles_dropped.get(),
            "seed {seed}: handles lost"
        );
        for (i, h) in left {
            match h.try_join() {
                Ok(Ok(v)) => assert_eq!(v, i, "seed {seed}: another task's result"),
                Ok(Err(e)) => assert!(e.is_cancelled(), "seed {seed}: {e}"),
                Err(_) => panic!("seed {seed}: task {i} unfinished after run"),
            }
        }
        // Stale ids are harmless now that everything ended (their records may be
        // reused by the next seed's tasks).
        for id in w.ids.borrow().iter() {
            hooks::wake(&rt, *id);
            assert_eq!(rt.wait_of(*id), None);
        }
        for t in w.handles.borrow().iter() {
            assert!(!t.unpark(), "seed {seed}: a finished task was parked");
        }
        assert!(rt.is_finished());
        joins += w.joined.get();
        detaches += w.handles_dropped.get();
        cancelled_early += w.spawned.get() - w.started.get();
        w.cancels.borrow_mut().clear();
    }
    // The paths this test is about were taken.
    assert!(joins > 100, "{joins} joins");
    assert!(
        detaches > 100,
        "{detaches} handles dropped from destructors"
    );
    assert!(
        cancelled_early > 0,
        "no task was cancelled before it started"
    );
}
