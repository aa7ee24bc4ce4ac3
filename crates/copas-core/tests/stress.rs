//! Drives the scheduler's invariants hard: many tasks waking, unparking and cancelling
//! each other at random, stale ids, wake-ups from destructors, tasks spawned during
//! passes. Every task must end exactly once, with destructors run, and the loop must end.

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
    cancels: RefCell<Vec<Rc<JoinHandle<()>>>>,
    spawned: Cell<usize>,
    dropped: Cell<usize>,
}

/// Wakes a random (possibly finished, so stale) task when dropped.
struct WakeOnDrop(Rc<World>);
impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.dropped.set(self.0.dropped.get() + 1);
        let id = {
            let ids = self.0.ids.borrow();
            let i = self.0.rng.borrow_mut().below(ids.len() as u64) as usize;
            ids[i]
        };
        if let Some(rt) = Runtime::try_current() {
            hooks::wake(&rt, id);
        }
    }
}

fn spawn_one(w: &Rc<World>, depth: u32) {
    let w2 = w.clone();
    w.spawned.set(w.spawned.get() + 1);
    let h = copas_core::spawn(move || {
        let _d = WakeOnDrop(w2.clone());
        for _ in 0..20 {
            let action = w2.rng.borrow_mut().below(8);
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
                        let i = w2.rng.borrow_mut().below(ids.len() as u64) as usize;
                        ids[i]
                    };
                    hooks::wake(&Runtime::current(), id);
                    let _ = hooks::suspend(Some(
                        std::time::Instant::now() + Duration::from_micros(100),
                    ));
                }
                3 => {
                    let t = {
                        let hs = w2.handles.borrow();
                        let i = w2.rng.borrow_mut().below(hs.len() as u64) as usize;
                        hs[i].clone()
                    };
                    t.unpark();
                    let _ = copas_core::park_timeout(Duration::from_micros(100));
                }
                4 => {
                    let victim = {
                        let cs = w2.cancels.borrow();
                        let i = w2.rng.borrow_mut().below(cs.len() as u64) as usize;
                        cs[i].clone()
                    };
                    victim.cancel(); // may be itself, or finished
                    let _ = copas_core::yield_now();
                }
                5 if depth < 3 && w2.spawned.get() < 400 => spawn_one(&w2, depth + 1),
                _ => copas_core::cooperate(),
            }
        }
    });
    w.ids.borrow_mut().push(h.id());
    w.handles.borrow_mut().push(h.task().clone());
    w.cancels.borrow_mut().push(Rc::new(h));
}

#[test]
fn random_wakes_unparks_cancels_and_spawns_keep_every_invariant() {
    for seed in 1..=8u64 {
        let w = Rc::new(World {
            rng: RefCell::new(Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            ids: RefCell::new(Vec::new()),
            handles: RefCell::new(Vec::new()),
            cancels: RefCell::new(Vec::new()),
            spawned: Cell::new(0),
            dropped: Cell::new(0),
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
        let finished = w
            .cancels
            .borrow()
            .iter()
            .filter(|h| h.is_finished())
            .count();
        assert_eq!(finished, w.spawned.get(), "seed {seed}");
        assert!(w.dropped.get() <= w.spawned.get(), "seed {seed}");
        // Stale ids are harmless now that everything ended.
        for id in w.ids.borrow().iter() {
            hooks::wake(&rt, *id);
            assert_eq!(rt.wait_of(*id), None);
        }
        assert!(rt.is_finished());
        w.cancels.borrow_mut().clear();
    }
}
