//! The readiness loop: copas-core's [`Driver`] over the platform's poller
//! ([`crate::sys::Backend`]: epoll on Linux, `polling` elsewhere).
//!
//! Every descriptor is registered once, for both directions, under a key made of its slab
//! index and a generation number. An event whose generation no longer matches its slot
//! (the descriptor was deregistered and the slot reused) is ignored, so a late event can
//! never wake the wrong task. [`live`] is the one place that checks it.
//!
//! Invariants:
//! - Per direction ([`Interest`] indexes `Slot::first` and `Slot::more`), the slot holds
//!   the tasks suspended waiting for it. An exclusive slot (a copas socket) holds at most one; a shared one (a
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

/// The tasks waiting in one direction of a slot: a view of the slot's `first[dir]` (in its
/// first cache line) and `more[dir]` (in its second). `first` is `None` only when `more` is
/// empty, and `more` is empty unless the slot is shared, so an exclusive slot (a copas
/// socket) is only ever read and written in its first line.
struct Waiters<'a> {
    first: &'a mut Option<TaskId>,
    more: &'a mut Vec<TaskId>,
    shared: bool,
}

impl Waiters<'_> {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn contains(&self, id: TaskId) -> bool {
        *self.first == Some(id) || (self.shared && self.more.contains(&id))
    }

    /// Adds `id`; the caller has checked that an exclusive slot has no waiter yet.
    fn push(&mut self, id: TaskId) {
        if self.first.is_none() {
            *self.first = Some(id);
        } else {
            debug_assert!(self.shared);
            self.more.push(id);
        }
    }

    /// Removes `id`; returns whether it was there. Keeps `first` set while any remain.
    fn remove(&mut self, id: TaskId) -> bool {
        if *self.first == Some(id) {
            *self.first = if self.shared { self.more.pop() } else { None };
            true
        } else if let Some(i) = self.more.iter().position(|&w| w == id) {
            self.more.swap_remove(i);
            true
        } else {
            false
        }
    }
}

/// A registered descriptor. `repr(C)` with 64-byte alignment keeps everything a wait, a
/// wake-up and an event of an exclusive slot touch in its first cache line: with many
/// connections each slot is cold by the time its socket is used again, and a slot spread
/// over three lines (as before) cost a miss per line at each of those steps.
#[repr(C, align(64))]
struct Slot {
    // First line (61 bytes).
    generation: u32,
    /// The descriptor, for re-arming a oneshot registration.
    fd: RawFd,
    /// Per direction ([`Interest::index`]), the first waiting task (see [`Waiters`]).
    first: [Option<TaskId>; 2],
    /// (precise backends) Per direction, an event reported readiness since the last
    /// waiter resumed: the next `wait` returns at once, so an edge that came while no task
    /// waited is not lost.
    ready: [bool; 2],
    /// Whether several tasks may wait in one direction at once.
    shared: bool,
    /// (precise backends) The peer shut down its side or the connection failed: a read
    /// must not be skipped, since no further edge will come.
    read_closed: bool,
    /// `flusher.is_some()`, kept in the first line for the events that check it.
    has_flusher: bool,
    // Second line: touched only by shared slots and while output waits for writability.
    /// Per direction, the waiting tasks after the first (shared slots only).
    more: [Vec<TaskId>; 2],
    /// Whose output waits for writability, if any.
    flusher: Option<Weak<dyn BackgroundFlush>>,
}

struct Inner {
    slots: Slab<Slot>,
    next_generation: u32,
    waiters: usize,
    /// Sockets with output buffered during this step.
    flush_queue: Vec<Rc<dyn BackgroundFlush>>,
}

impl Slot {
    fn new(generation: u32, fd: RawFd, shared: bool) -> Slot {
        Slot {
            generation,
            fd,
            first: [None; 2],
            ready: [false; 2],
            shared,
            read_closed: false,
            has_flusher: false,
            more: Default::default(),
            flusher: None,
        }
    }

    fn waiters(&mut self, dir: Interest) -> Waiters<'_> {
        let i = dir.index();
        Waiters {
            first: &mut self.first[i],
            more: &mut self.more[i],
            shared: self.shared,
        }
    }

    fn has_waiter(&self, dir: Interest) -> bool {
        self.first[dir.index()].is_some()
    }

    /// Every waiting task in both directions; an exclusive slot's touches only its first
    /// line.
    fn all_waiters(&self) -> impl Iterator<Item = TaskId> + '_ {
        let more: &[Vec<TaskId>] = if self.shared { &self.more } else { &[] };
        self.first
            .iter()
            .flatten()
            .copied()
            .chain(more.iter().flatten().copied())
    }

    /// Calls `f` on each task waiting for `dir`.
    fn for_each_waiter(&self, dir: Interest, f: &mut dyn FnMut(TaskId)) {
        let i = dir.index();
        if let Some(first) = self.first[i] {
            f(first);
            if self.shared {
                self.more[i].iter().for_each(|&id| f(id));
            }
        }
    }

    /// The directions a oneshot registration must be armed for: those with a waiter, and
    /// writability while buffered output waits for it.
    fn interest(&self) -> (bool, bool) {
        (
            self.has_waiter(Interest::Read),
            self.has_waiter(Interest::Write) || self.has_flusher,
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
            slot.ready[dir.index()] |= r.read_closed.is_some();
            slot.for_each_waiter(dir, wake);
            if dir == Interest::Write && !slot.has_waiter(dir) && slot.has_flusher {
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
            let index = inner.slots.insert(Slot::new(generation, fd, shared));
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
            let n = slot.all_waiters().count() + usize::from(slot.has_flusher);
            inner.waiters -= n;
            slot
        };
        for id in slot.all_waiters() {
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
            Some(s) => s.all_waiters().collect(),
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
            let waiters = slot.waiters(dir);
            if !waiters.contains(me) {
                if !shared && !waiters.is_empty() {
                    return Err(busy(dir));
                }
                if std::mem::take(&mut slot.ready[dir.index()]) {
                    // An edge came while nobody waited: retry the operation now.
                    return Ok(());
                }
                slot.waiters(dir).push(me);
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

    /// Takes the socket of `key` back out of the flush queue when it is the last one
    /// queued (the usual case for a handler that sends and then flushes at once): its
    /// output is gone, and the background flush before the next wait would find nothing
    /// to do. Returns whether it was taken out.
    pub(crate) fn unqueue_flush(&self, key: usize) -> bool {
        let f = {
            let mut inner = self.inner.borrow_mut();
            if inner.flush_queue.last().is_none_or(|f| f.key() != key) {
                return false;
            }
            inner.flush_queue.pop()
        };
        // Dropped with no borrow held (it is not the last reference: the caller has one).
        drop(f);
        true
    }

    /// Records (or clears) that the socket's output waits for writability.
    pub(crate) fn set_flusher(&self, key: usize, f: Option<Weak<dyn BackgroundFlush>>) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(slot) = live(&mut inner.slots, key) else {
            return;
        };
        match (slot.has_flusher, &f) {
            (false, Some(_)) => inner.waiters += 1,
            (true, None) => inner.waiters -= 1,
            _ => {}
        }
        slot.has_flusher = f.is_some();
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
        if slot.waiters(self.dir).remove(self.me) {
            inner.waiters -= 1;
            // The event that woke us is consumed by the retry that follows.
            slot.ready[self.dir.index()] = false;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the layout of `Slot` is for: each slot of the slab starts a cache line, and
    /// its first 64 bytes hold the fields of the hot path (so the slab's entry tag fits a
    /// niche instead of adding a line).
    #[test]
    fn each_slot_starts_a_cache_line_and_takes_two() {
        assert_eq!(std::mem::size_of::<Slot>(), 128);
        assert!(std::mem::offset_of!(Slot, has_flusher) < 64);
        assert_eq!(std::mem::offset_of!(Slot, more), 64);
        let mut slab = Slab::new();
        let keys: Vec<usize> = (0..4)
            .map(|i| slab.insert(Slot::new(i, 3, false)))
            .collect();
        let addr = |k: usize| std::ptr::from_ref(&slab[k]) as usize;
        for &k in &keys {
            assert_eq!(addr(k) % 64, 0);
        }
        assert_eq!(
            addr(keys[1]) - addr(keys[0]),
            128,
            "no tag outside the slot"
        );
    }

    #[test]
    fn exclusive_and_shared_waiters() {
        let handles: Vec<_> = (0..3).map(|_| copas_core::spawn(|| ())).collect();
        let ids: Vec<TaskId> = handles.iter().map(|h| h.task().id()).collect();
        let mut shared = Slot::new(0, 3, true);
        for &id in &ids {
            shared.waiters(Interest::Read).push(id);
        }
        assert_eq!(shared.all_waiters().collect::<Vec<_>>(), ids);
        assert!(shared.waiters(Interest::Read).remove(ids[0]));
        assert!(
            shared.has_waiter(Interest::Read),
            "first refilled from more"
        );
        assert!(!shared.waiters(Interest::Read).remove(ids[0]));
        assert!(shared.waiters(Interest::Read).remove(ids[1]));
        assert!(shared.waiters(Interest::Read).remove(ids[2]));
        assert!(!shared.has_waiter(Interest::Read));
        let mut exclusive = Slot::new(0, 3, false);
        exclusive.waiters(Interest::Write).push(ids[0]);
        assert!(exclusive.waiters(Interest::Write).contains(ids[0]));
        assert!(!exclusive.has_waiter(Interest::Read));
        assert_eq!(exclusive.interest(), (false, true));
        assert!(exclusive.waiters(Interest::Write).remove(ids[0]));
        assert_eq!(exclusive.all_waiters().count(), 0);
        copas_core::run().expect("run");
    }
}
