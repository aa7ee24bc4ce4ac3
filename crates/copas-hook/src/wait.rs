//! Waiting for a descriptor on the current thread's reactor from inside a hook, and
//! waking those waits when the descriptor is closed — on this thread or any other.
//!
//! A hook registers the fd with [`Registration`] the first time a task of this thread
//! waits on it, and keeps the registration for the next waits while the fd stays the same
//! file: same generation in the fd table (no `close` through libc since) and same device
//! and inode (no raw close and reuse either; one `fstat` per wait checks it). `close` on
//! this thread drops it at once; registrations of fds closed elsewhere are swept when the
//! thread's map has doubled since the last sweep, so a closed fd's registration never
//! outlives the next sweep and a reused number always starts clean.
//!
//! `close` on the waiting thread closes the registration at once (the waiters wake with
//! `NotConnected`). `close` on another thread cannot touch a `!Send` registration: it
//! queues the fd in the waiting thread's inbox and unparks that thread's reaper task,
//! which closes the registration there; the closing thread waits (bounded) until those
//! waiters have left, so the fd is deregistered before its number can be reused. A reaper
//! exists only while some task on its thread waits in a hook, so it never keeps
//! [`copas_core::run`] from returning.
//!
//! # Invariant
//! `Local::regs[fd].users` is the number of tasks of this thread inside [`wait`] on that
//! entry's registration; an entry is removed only by `close`, by a sweep (when it has no
//! users and its generation has ended), or when a wait finds it stale.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use copas_core::Task;
use copas_net::{Interest, Registration};
use libc::c_int;

use crate::fdtab::{self, Slot};
use crate::sys;

/// Why a wait ended without readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The fd was closed (by anyone) while the task waited.
    Closed,
    /// The deadline passed — the call's own, or a `with_timeout` scope's.
    TimedOut,
    /// The task was cancelled, or the runtime is shutting down.
    Cancelled,
    /// Some other error, as an errno value.
    Os(c_int),
}

struct Reg {
    reg: Rc<Registration>,
    users: usize,
    /// The fd's generation when registered.
    generation: u32,
    /// Device and inode of the file registered.
    identity: (u64, u64),
}

/// A thread's hook waits.
struct Local {
    regs: RefCell<HashMap<c_int, Reg>>,
    /// Tasks of this thread inside `wait`.
    waiting: Cell<usize>,
    /// `regs` is swept for registrations of closed fds when it grows to this size.
    sweep_at: Cell<usize>,
    inbox: Arc<Inbox>,
}

/// What other threads tell this one: fds they closed while tasks here waited on them.
#[derive(Debug, Default)]
struct Inbox {
    closed: Mutex<Vec<c_int>>,
    /// The thread's reaper, while it has one.
    reaper: Mutex<Option<Task>>,
}

/// A task waiting in a hook, as other threads see it.
struct Remote {
    ticket: u64,
    fd: c_int,
    /// The fd's generation when the wait began: a close of a later file that reused the
    /// number does not concern this wait (which its own thread has woken already).
    generation: u32,
    thread: ThreadId,
    inbox: Arc<Inbox>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    waits: Vec<Remote>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    waits: Vec::new(),
});
/// Signalled when a wait leaves the registry.
static LEFT: Condvar = Condvar::new();

/// How long `close` on one thread waits for another thread's tasks to leave their waits
/// on the fd before it closes it anyway (a loop thread stuck in a blocking call).
const REMOTE_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The smallest registration map that is swept.
const SWEEP_MIN: usize = 64;

thread_local! {
    static LOCAL: Local = Local {
        regs: RefCell::new(HashMap::new()),
        waiting: Cell::new(0),
        sweep_at: Cell::new(SWEEP_MIN),
        inbox: Arc::new(Inbox::default()),
    };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent under every panic point (pushes and removals).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Suspends the current task until `fd` may be ready for `interest`, `deadline`
/// passes, or the fd is closed. `generation` is the fd's generation when the caller
/// looked at it: if it has changed the fd is another file now and the wait fails with
/// [`Failure::Closed`].
pub(crate) fn wait(
    fd: c_int,
    slot: &Slot,
    generation: u32,
    interest: Interest,
    deadline: Option<Instant>,
) -> Result<(), Failure> {
    let Ok(result) = LOCAL.try_with(|local| {
        // Announce the wait before checking the generation: `close` bumps the generation
        // before it looks for waiters, so one of the two sees the other.
        slot.add_waiter();
        let ticket = enter(fd, generation, &local.inbox);
        let result = local.wait(fd, slot, generation, interest, deadline);
        leave(ticket);
        slot.remove_waiter();
        result
    }) else {
        // The thread is exiting: no runtime to wait on.
        return Err(Failure::Cancelled);
    };
    result
}

impl Local {
    fn wait(
        &self,
        fd: c_int,
        slot: &Slot,
        generation: u32,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> Result<(), Failure> {
        if slot.generation() != generation {
            return Err(Failure::Closed);
        }
        let reg = self.acquire(fd, generation)?;
        self.started();
        let result = if slot.generation() != generation {
            Err(Failure::Closed)
        } else {
            reg.wait(interest, deadline)
                .map_err(|e| classify(&e, slot, generation))
        };
        self.release(fd, &reg);
        drop(reg);
        self.finished();
        result
    }

    /// This thread's registration of `fd` (generation `generation`), made if there is
    /// none for this file yet.
    fn acquire(&self, fd: c_int, generation: u32) -> Result<Rc<Registration>, Failure> {
        let identity = sys::identity(fd).map_err(Failure::Os)?;
        let stale = {
            let mut regs = self.regs.borrow_mut();
            match regs.get_mut(&fd) {
                Some(r)
                    if r.generation == generation
                        && r.identity == identity
                        && !r.reg.is_closed() =>
                {
                    r.users += 1;
                    return Ok(r.reg.clone());
                }
                Some(_) => regs.remove(&fd),
                None => None,
            }
        };
        // Another file had the number: wake whoever still waits on it, and forget it.
        if let Some(old) = stale {
            old.reg.close();
        }
        self.sweep();
        // No borrow is held while copas-net registers: it may call hooked functions.
        let reg = Rc::new(Registration::new(fd).map_err(|e| os_failure(&e))?);
        self.regs.borrow_mut().insert(
            fd,
            Reg {
                reg: reg.clone(),
                users: 1,
                generation,
                identity,
            },
        );
        Ok(reg)
    }

    fn release(&self, fd: c_int, reg: &Rc<Registration>) {
        let mut regs = self.regs.borrow_mut();
        if let Some(r) = regs.get_mut(&fd) {
            // `close` may have replaced the entry: only ours is counted here.
            if Rc::ptr_eq(&r.reg, reg) {
                r.users -= 1;
            }
        }
    }

    /// Drops the registrations of fds closed since they were registered (on another
    /// thread, or behind libc's back), once the map has doubled since the last sweep.
    fn sweep(&self) {
        if self.regs.borrow().len() < self.sweep_at.get() {
            return;
        }
        let mut dead = Vec::new();
        self.regs.borrow_mut().retain(|&fd, r| {
            let live = r.users > 0
                || fdtab::existing_slot(fd).is_some_and(|s| s.generation() == r.generation);
            if !live {
                dead.push(r.reg.clone());
            }
            live
        });
        let len = self.regs.borrow().len();
        self.sweep_at.set((2 * len).max(SWEEP_MIN));
        // Deregistered with the map's borrow released.
        for reg in dead {
            reg.close();
        }
    }

    /// Closes this thread's registration of `fd`: its waiters wake with `Closed`.
    fn close(&self, fd: c_int) {
        let removed = self.regs.borrow_mut().remove(&fd);
        if let Some(r) = removed {
            r.reg.close();
        }
    }

    fn started(&self) {
        self.waiting.set(self.waiting.get() + 1);
        if self.waiting.get() == 1 {
            self.ensure_reaper();
        }
    }

    fn finished(&self) {
        self.waiting.set(self.waiting.get() - 1);
        if self.waiting.get() == 0 {
            // Let the reaper see there is nothing left to watch, and end.
            if let Some(t) = lock(&self.inbox.reaper).as_ref() {
                t.unpark();
            }
        }
    }

    fn ensure_reaper(&self) {
        let mut reaper = lock(&self.inbox.reaper);
        if reaper.is_some() {
            return;
        }
        let spawned = copas_core::Builder::new()
            .name("copas-hook reaper".to_owned())
            .stack_size(32 * 1024)
            .spawn(reap);
        // Without a reaper only closes from other threads go unnoticed until the
        // waits' deadlines; the waits themselves still work.
        if let Ok(h) = spawned {
            *reaper = Some(h.task().clone());
        }
    }
}

/// The reaper: closes the registrations of fds other threads closed, while this thread
/// has tasks waiting in hooks.
fn reap() {
    let _ = LOCAL.try_with(|local| loop {
        let closed = std::mem::take(&mut *lock(&local.inbox.closed));
        for fd in closed {
            local.close(fd);
        }
        if local.waiting.get() == 0 || copas_core::park().is_err() {
            let mut reaper = lock(&local.inbox.reaper);
            // A fd queued after the last look is handled before leaving.
            if lock(&local.inbox.closed).is_empty() {
                *reaper = None;
                return;
            }
        }
    });
}

fn enter(fd: c_int, generation: u32, inbox: &Arc<Inbox>) -> u64 {
    let mut reg = lock(&REGISTRY);
    reg.next += 1;
    let ticket = reg.next;
    reg.waits.push(Remote {
        ticket,
        fd,
        generation,
        thread: thread::current().id(),
        inbox: inbox.clone(),
    });
    ticket
}

fn leave(ticket: u64) {
    let mut reg = lock(&REGISTRY);
    if let Some(i) = reg.waits.iter().position(|w| w.ticket == ticket) {
        reg.waits.swap_remove(i);
    }
    drop(reg);
    LEFT.notify_all();
}

/// Drops this thread's registration of `fd`, which is being closed (waking its waiters).
pub(crate) fn forget_local(fd: c_int) {
    let _ = LOCAL.try_with(|local| local.close(fd));
}

/// Wakes every task waiting in a hook for `fd`, which the caller is about to close; the
/// caller has already bumped the fd's generation from `generation`. Returns once they
/// have all left their waits (or after [`REMOTE_CLOSE_WAIT`] for waits on threads that do
/// not respond).
pub(crate) fn close(fd: c_int, generation: u32) {
    let _ = LOCAL.try_with(|local| local.close(fd));
    let me = thread::current().id();
    let concerned = |w: &Remote| w.fd == fd && w.generation == generation && w.thread != me;
    let mut reg = lock(&REGISTRY);
    let mut any = false;
    for w in reg.waits.iter().filter(|w| concerned(w)) {
        any = true;
        lock(&w.inbox.closed).push(fd);
        if let Some(t) = lock(&w.inbox.reaper).as_ref() {
            t.unpark();
        }
    }
    if !any {
        return;
    }
    let limit = Instant::now() + REMOTE_CLOSE_WAIT;
    while reg.waits.iter().any(concerned) {
        let now = Instant::now();
        if now >= limit {
            return;
        }
        reg = LEFT
            .wait_timeout(reg, limit - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn classify(e: &std::io::Error, slot: &Slot, generation: u32) -> Failure {
    if slot.generation() != generation || e.kind() == std::io::ErrorKind::NotConnected {
        Failure::Closed
    } else if e.kind() == std::io::ErrorKind::TimedOut {
        Failure::TimedOut
    } else if copas_core::is_cancelled(e) {
        Failure::Cancelled
    } else {
        os_failure(e)
    }
}

fn os_failure(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind as K;
    // copas-net's errors wrap the OS error in a sentence: recover an errno from the kind.
    Failure::Os(e.raw_os_error().unwrap_or(match e.kind() {
        // The program registered this fd with copas itself (`copas::Registration`).
        K::AlreadyExists => libc::EEXIST,
        K::PermissionDenied => libc::EPERM,
        K::InvalidInput => libc::EINVAL,
        K::OutOfMemory => libc::ENOMEM,
        _ => libc::EIO,
    }))
}
