//! The readiness loop: copas-core's [`Driver`] over the platform's poller
//! ([`crate::sys::Backend`]: epoll on Linux, `polling` elsewhere).
//!
//! Every descriptor is registered once, for both directions, under a key made of its slab
//! index and a generation number. An event whose generation no longer matches its slot
//! (the descriptor was deregistered and the slot reused) is ignored, so a late event can
//! never wake the wrong task. [`live`] is the one place that checks it.
//!
//! Invariants:
//! - Per direction ([`Interest`] indexes `Slot::dirs`), `waiters` holds the tasks suspended
//!   waiting for it. An exclusive slot (a copas socket) holds at most one; a shared one (a
//!   [`Registration`](crate::Registration)) any number. `Inner::waiters` counts every
//!   recorded waiter plus the sockets whose buffered output waits for writability.
//! - A wait that ends finds its slot alive or fails: a task woken because its slot was
//!   deregistered gets an error, never `Ok`.
//! - No `RefCell` borrow of the reactor is held while waking a task or flushing a socket.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use copas_core::{hooks, Driver, Notify, Runtime, TaskId};
use slab::Slab;

use crate::sys::{Backend, Readiness};

/// A direction of readiness: what a task waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interest {
    /// The descriptor is readable (or at end of stream, or in error).
    Read,
    /// The descriptor is writable (or in error).
    Write,
}

impl Interest {
    fn index(self) -> usize {
        self as usize
    }
}

/// Output that the reactor writes out in the background (before each wait, and when the
/// socket becomes writable again).
pub(crate) trait BackgroundFlush {
    /// Writes as much buffered output as the socket takes without blocking. Returns
    /// whether output is still pending.
    fn flush_background(&self) -> bool;

    /// The reactor key of the socket.
    fn key(&self) -> usize;
}

/// One direction of a slot.
#[derive(Default)]
struct DirState {
    /// The tasks suspended waiting for this direction.
    waiters: Waiters,
    /// (precise backends) An event reported readiness since the last waiter resumed: the
    /// next `wait` returns at once, so an edge that came while no task waited is not lost.
    ready: bool,
}

/// A set of waiting tasks: the first inline (an exclusive slot, a copas socket, never has
/// more, so its waits touch no memory outside the slot), any others (shared slots only)
/// in `more`. `first` is `None` only when `more` is empty.
#[derive(Default)]
struct Waiters {
    first: Option<TaskId>,
    more: Vec<TaskId>,
}

impl Waiters {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    fn contains(&self, id: TaskId) -> bool {
        self.first == Some(id) || self.more.contains(&id)
    }

    fn push(&mut self, id: TaskId) {
        if self.first.is_none() {
            self.first = Some(id);
        } else {
            self.more.push(id);
        }
    }

    /// Removes `id`; returns whether it was there. Keeps `first` set while any remain.
    fn remove(&mut self, id: TaskId) -> bool {
        if self.first == Some(id) {
            self.first = self.more.pop();
            true
        } else if let Some(i) = self.more.iter().position(|&w| w == id) {
            self.more.swap_remove(i);
            true
        } else {
            false
        }
    }

    /// Calls `f` on each waiter; an empty or single-waiter set touches only the slot.
    fn for_each(&self, f: &mut dyn FnMut(TaskId)) {
        if let Some(first) = self.first {
            f(first);
            self.more.iter().for_each(|&id| f(id));
        }
    }

    fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

struct Slot {
    generation: u32,
    /// The descriptor, for re-arming a oneshot registration.
    fd: RawFd,
    /// Whether several tasks may wait in one direction at once.
    shared: bool,
    dirs: [DirState; 2],
    /// Whose output waits for writability, if any.
    flusher: Option<Weak<dyn BackgroundFlush>>,
    /// (precise backends) The peer shut down its side or the connection failed: a read
    /// must not be skipped, since no further edge will come.
    read_closed: bool,
}

struct Inner {
    slots: Slab<Slot>,
    next_generation: u32,
    waiters: usize,
    /// Sockets with output buffered during this step.
    flush_queue: Vec<Rc<dyn BackgroundFlush>>,
}

impl Slot {
    /// The directions a oneshot registration must be armed for: those with a waiter, and
    /// writability while buffered output waits for it.
    fn interest(&self) -> (bool, bool) {
        let [r, w] = &self.dirs;
        (
            !r.waiters.is_empty(),
            !w.waiters.is_empty() || self.flusher.is_some(),
        )
    }
}

/// The live slot of `key`; `None` when it was freed (and perhaps reused). The one place
/// that checks a key's generation.
fn live(slots: &mut Slab<Slot>, key: usize) -> Option<&mut Slot> {
    let (index, generation) = split_key(key);
    slots.get_mut(index).filter(|s| s.generation == generation)
}

impl Inner {
    /// Applies one event to the slot of `key`: wakes its waiters, or queues its background
    /// flush when it became writable with no writer waiting. Returns whether the key was
    /// live.
    fn dispatch(&mut self, key: usize, r: Readiness, wake: &mut dyn FnMut(TaskId)) -> bool {
        let Some(slot) = live(&mut self.slots, key) else {
            return false;
        };
        let mut flush = None;
        if let Some(read_closed) = r.read_closed {
            slot.read_closed |= read_closed;
        }
        for (dir, ready) in [(Interest::Read, r.readable), (Interest::Write, r.writable)] {
            if !ready {
                continue;
            }
            let state = &mut slot.dirs[dir.index()];
            state.ready |= r.read_closed.is_some();
            state.waiters.for_each(wake);
            if dir == Interest::Write && state.waiters.is_empty() {
                flush = slot.flusher.as_ref().and_then(Weak::upgrade);
            }
        }
        if let Some(f) = flush {
            self.flush_queue.push(f);
        }
        true
    }
}

/// The per-thread readiness loop. Created on first use of a copas socket and installed as
/// the runtime's driver; applications normally never touch it.
pub struct Reactor {
    backend: Backend,
    inner: RefCell<Inner>,
    runtime: Runtime,
    polls: Cell<u64>,
    /// Where small reads land before they are copied into a stream's buffer, so an idle
    /// stream holds no buffer and a busy one allocates only what it received.
    scratch: RefCell<Vec<u8>>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("Reactor")
            .field("sources", &inner.slots.len())
            .field("waiters", &inner.waiters)
            .finish()
    }
}

/// Bits of a key that hold the slab index; the rest hold the generation. On 64-bit
/// targets 2^32 slots; on 32-bit ones 2^20 slots with a 12-bit generation.
const INDEX_BITS: u32 = if usize::BITS >= 64 { 32 } else { 20 };
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

fn key_of(index: usize, generation: u32) -> usize {
    // Backends reserve usize::MAX: the generation never fills every bit (see
    // `GENERATION_LIMIT`), so no key is all ones.
    (index & INDEX_MASK) | ((generation as usize) << INDEX_BITS)
}

fn split_key(key: usize) -> (usize, u32) {
    (key & INDEX_MASK, (key >> INDEX_BITS) as u32)
}

/// Generations wrap below the largest value so that `key_of` never yields `usize::MAX`.
const GENERATION_LIMIT: u32 = if usize::BITS >= 64 {
    u32::MAX
} else {
    (1 << (usize::BITS - INDEX_BITS)) - 1
};

impl Reactor {
    /// The current thread's reactor, installed into the thread's runtime on first use.
    ///
    /// # Errors
    /// When the poller cannot be created (out of descriptors), or when the runtime has a
    /// driver of another kind.
    pub fn current() -> io::Result<Rc<Reactor>> {
        let rt = Runtime::try_current().ok_or_else(|| {
            io::Error::other("copas: the runtime is not available while the thread exits")
        })?;
        if let Some(r) = rt.driver::<Reactor>() {
            return Ok(r);
        }
        let reactor = Rc::new(Reactor {
            backend: Backend::new()?,
            inner: RefCell::new(Inner {
                slots: Slab::new(),
                next_generation: 0,
                waiters: 0,
                flush_queue: Vec::new(),
            }),
            runtime: rt.clone(),
            polls: Cell::new(0),
            scratch: RefCell::new(Vec::new()),
        });
        rt.set_driver(reactor.clone())?;
        hooks::set_fd_describer(&rt, crate::sys::unix::describe_fd);
        Ok(reactor)
    }

    /// Registers `fd` for both directions; returns its key. `shared`: several tasks may
    /// wait in one direction at once. The caller must [`deregister`](Self::deregister)
    /// it before the descriptor closes.
    pub(crate) fn register(&self, fd: RawFd, shared: bool) -> io::Result<usize> {
        let key = {
            let mut inner = self.inner.borrow_mut();
            let generation = inner.next_generation;
            inner.next_generation = (generation + 1) % GENERATION_LIMIT;
            let index = inner.slots.insert(Slot {
                generation,
                fd,
                shared,
                dirs: Default::default(),
                flusher: None,
                read_closed: false,
            });
            key_of(index, generation)
        };
        if let Err(e) = self.backend.add(fd, key) {
            self.remove_slot(key);
            return Err(e);
        }
        Ok(key)
    }

    /// Undoes [`register`](Self::register): deletes `fd` from the poller (unless
    /// `kernel` is false: the caller knows the descriptor no longer is the one registered)
    /// and frees the slot, waking every task still waiting on it (their waits fail).
    pub(crate) fn deregister(&self, key: usize, fd: RawFd, kernel: bool) {
        if kernel {
            // Deleting fails only if the descriptor is no longer registered, and then
            // there is nothing left to undo.
            let _ = self.backend.delete(fd);
        }
        self.remove_slot(key);
    }

    fn remove_slot(&self, key: usize) {
        let slot = {
            let mut inner = self.inner.borrow_mut();
            let (index, _) = split_key(key);
            if live(&mut inner.slots, key).is_none() {
                return;
            }
            let slot = inner.slots.remove(index);
            let n = slot.dirs.iter().map(|d| d.waiters.len()).sum::<usize>()
                + usize::from(slot.flusher.is_some());
            inner.waiters -= n;
            slot
        };
        for id in slot.dirs.iter().flat_map(|d| d.waiters.iter()) {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Whether a read on the socket may be skipped after one that drained the kernel's
    /// buffer: true when readiness is tracked precisely and the peer has not closed.
    pub(crate) fn may_skip_read(&self, key: usize) -> bool {
        Backend::PRECISE
            && matches!(live(&mut self.inner.borrow_mut().slots, key), Some(s) if !s.read_closed)
    }

    /// Wakes whoever waits on the socket in either direction (they re-check their state).
    pub(crate) fn wake_waiters(&self, key: usize) {
        let ids: Vec<TaskId> = match live(&mut self.inner.borrow_mut().slots, key) {
            Some(s) => s.dirs.iter().flat_map(|d| d.waiters.iter()).collect(),
            None => return,
        };
        for id in ids {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Runs `f` on the thread's scratch buffer of `len` bytes.
    pub(crate) fn with_scratch<R>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut scratch = self.scratch.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        f(&mut scratch[..len])
    }

    /// Number of registered sockets, listeners and raw registrations.
    pub fn sources(&self) -> usize {
        self.inner.borrow().slots.len()
    }

    /// How many times the reactor has polled the operating system.
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }

    /// Suspends the caller until the descriptor registered under `key` may be ready for
    /// `dir`, the deadline passes, or the task is cancelled. Wake-ups may be spurious: the
    /// caller retries its operation. With `check`, the descriptor's current readiness is
    /// polled first (one system call), so that a wait never misses readiness that came
    /// before it.
    ///
    /// # Errors
    /// `TimedOut` at the deadline; the cancellation error; `NotConnected` when the
    /// registration is (or becomes) closed; `ResourceBusy` when another task already waits
    /// in `dir` on an exclusive slot.
    pub(crate) fn wait(
        &self,
        key: usize,
        dir: Interest,
        deadline: Option<Instant>,
        check: bool,
    ) -> io::Result<()> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let me = hooks::waiter_id();
        let (fd, rearm) = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            let slot = live(&mut inner.slots, key).ok_or_else(closed)?;
            let shared = slot.shared;
            let state = &mut slot.dirs[dir.index()];
            if !state.waiters.contains(me) {
                if !shared && !state.waiters.is_empty() {
                    return Err(busy(dir));
                }
                if std::mem::take(&mut state.ready) {
                    // An edge came while nobody waited: retry the operation now.
                    return Ok(());
                }
                state.waiters.push(me);
                inner.waiters += 1;
            }
            (slot.fd, self.backend.needs_rearm().then(|| slot.interest()))
        };
        let guard = WaitGuard {
            reactor: self,
            key,
            dir,
            me,
        };
        if let Some((r, w)) = rearm {
            self.backend.rearm(fd, key, r, w)?;
        }
        if check && crate::sys::unix::ready_now(fd, dir)? {
            return Ok(());
        }
        let on = copas_core::WaitOn::Fd {
            fd,
            write: dir == Interest::Write,
        };
        hooks::suspend_for(&self.runtime, on, deadline)?;
        // One look-up both clears the waiter record and tells whether the slot survived.
        if guard.finish() {
            Ok(())
        } else {
            Err(closed())
        }
    }

    /// Queues `f` to be flushed before the loop next waits.
    pub(crate) fn queue_flush(&self, f: Rc<dyn BackgroundFlush>) {
        self.inner.borrow_mut().flush_queue.push(f);
    }

    /// Records (or clears) that the socket's output waits for writability.
    pub(crate) fn set_flusher(&self, key: usize, f: Option<Weak<dyn BackgroundFlush>>) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(slot) = live(&mut inner.slots, key) else {
            return;
        };
        match (&slot.flusher, &f) {
            (None, Some(_)) => inner.waiters += 1,
            (Some(_), None) => inner.waiters -= 1,
            _ => {}
        }
        slot.flusher = f;
        self.rearm(slot, key);
    }

    /// Renews a oneshot registration's interest (nothing to do for edge-triggered ones).
    /// A failure leaves the socket without events; its next wait re-arms and reports it.
    fn rearm(&self, slot: &Slot, key: usize) {
        if self.backend.needs_rearm() {
            let (r, w) = slot.interest();
            let _ = self.backend.rearm(slot.fd, key, r, w);
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "copas: the descriptor's registration was closed",
    )
}

fn busy(dir: Interest) -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        match dir {
            Interest::Read => "copas: another task is already reading this socket",
            Interest::Write => "copas: another task is already writing this socket",
        },
    )
}

/// Clears the waiter record when the wait ends, also when the task unwinds.
struct WaitGuard<'a> {
    reactor: &'a Reactor,
    key: usize,
    dir: Interest,
    me: TaskId,
}

impl WaitGuard<'_> {
    /// Clears the waiter record now; returns whether the slot is still live.
    fn finish(self) -> bool {
        let live = self.clear();
        std::mem::forget(self);
        live
    }

    /// Removes the waiter record, if the slot is live; returns whether it is.
    fn clear(&self) -> bool {
        let mut inner = self.reactor.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(slot) = live(&mut inner.slots, self.key) else {
            return false;
        };
        let state = &mut slot.dirs[self.dir.index()];
        if state.waiters.remove(self.me) {
            inner.waiters -= 1;
            // The event that woke us is consumed by the retry that follows.
            state.ready = false;
        }
        true
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Driver for Reactor {
    fn park(&self, timeout: Option<Duration>, wake: &mut dyn FnMut(TaskId)) -> io::Result<usize> {
        self.polls.set(self.polls.get() + 1);
        let mut inner = self.inner.borrow_mut();
        let r = self
            .backend
            .wait(timeout, &mut |key, r| inner.dispatch(key, r, wake));
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            r => r,
        }
    }

    fn before_park(&self) {
        let queue = std::mem::take(&mut self.inner.borrow_mut().flush_queue);
        for f in queue {
            if f.flush_background() && self.backend.needs_rearm() {
                // Still pending: a oneshot registration fired for this writability and
                // must be armed again for the next.
                let key = f.key();
                if let Some(slot) = live(&mut self.inner.borrow_mut().slots, key) {
                    self.rearm(slot, key);
                }
            }
        }
    }

    fn has_waiters(&self) -> bool {
        let inner = self.inner.borrow();
        inner.waiters > 0 || !inner.flush_queue.is_empty()
    }

    fn sources(&self) -> usize {
        Reactor::sources(self)
    }

    fn notifier(&self) -> Notify {
        self.backend.notifier()
    }
}
