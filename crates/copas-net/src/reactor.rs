//! The readiness loop: copas-core's [`Driver`] on epoll directly on Linux (see
//! [`crate::epoll`] for why) and on a `polling::Poller` elsewhere; `polling`'s notifier
//! wakes the loop from other threads on every platform.
//!
//! Every socket is registered once, edge-triggered where the platform supports it (with
//! `polling`'s oneshot mode otherwise, re-armed when a task waits), under a key made of its slab index and a
//! generation number; an event whose generation no longer matches its slot (the socket was
//! closed and the slot reused) is ignored, so a late event cannot wake the wrong task.
//!
//! Invariants:
//! - A slot's `reader`/`writer` is the one task suspended waiting for that direction;
//!   at most one of each. `waiters` counts the filled ones plus the sockets whose buffered
//!   output waits for writability.
//! - No `RefCell` borrow of the reactor is held while waking a task or flushing a socket.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::BorrowedFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copas_core::{hooks, Driver, Notify, Runtime, TaskId};
use polling::{Event, Events, PollMode, Poller};
use slab::Slab;

/// Which readiness a task waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// Output that the reactor writes out in the background (before each wait, and when the
/// socket becomes writable again).
pub(crate) trait BackgroundFlush {
    /// Writes as much buffered output as the socket takes without blocking. Returns
    /// whether output is still pending.
    fn flush_background(&self) -> bool;
}

struct Slot {
    generation: u32,
    reader: Option<TaskId>,
    writer: Option<TaskId>,
    /// Whose output waits for writability, if any.
    flusher: Option<Weak<dyn BackgroundFlush>>,
    /// Read and write interest for the oneshot fallback.
    interest: (bool, bool),
    /// (epoll backend) An event reported readiness (read, write) since the last waiter in
    /// that direction resumed: the next `wait` returns at once, so an edge that came while
    /// no task waited is not lost.
    ready: (bool, bool),
    /// (epoll backend) The peer shut down its side or the connection failed: a read must
    /// not be skipped, since no further edge will come.
    read_closed: bool,
}

struct Inner {
    slots: Slab<Slot>,
    next_generation: u32,
    waiters: usize,
    /// Sockets with output buffered during this step.
    flush_queue: Vec<Rc<dyn BackgroundFlush>>,
}

impl Inner {
    /// Applies one event to the slot of `key`: wakes its reader and writer, or queues its
    /// background flush when it became writable with no writer waiting. `tracked` is the
    /// event's read-closed bit where the backend reports readiness precisely (epoll):
    /// then the slot also remembers the readiness for a later `wait`. Returns whether the
    /// key was live (a stale generation is ignored).
    fn dispatch(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        tracked: Option<bool>,
        wake: &mut dyn FnMut(TaskId),
    ) -> bool {
        let (index, generation) = split_key(key);
        let slot = match self.slots.get_mut(index) {
            Some(s) if s.generation == generation => s,
            _ => return false,
        };
        if let Some(read_closed) = tracked {
            slot.read_closed |= read_closed;
            slot.ready.0 |= readable;
            slot.ready.1 |= writable;
        }
        if readable {
            if let Some(id) = slot.reader {
                wake(id);
            }
        }
        if writable {
            if let Some(id) = slot.writer {
                wake(id);
            } else if let Some(f) = slot.flusher.as_ref().and_then(Weak::upgrade) {
                self.flush_queue.push(f);
            }
        }
        true
    }
}

/// The per-thread readiness loop. Created on first use of a copas socket and installed as
/// the runtime's driver; applications normally never touch it.
pub struct Reactor {
    poller: Arc<Poller>,
    /// Linux: the epoll instance that carries the sockets (see [`crate::epoll`]);
    /// elsewhere `None`, and `poller` carries them.
    #[cfg(target_os = "linux")]
    epoll: Option<RefCell<crate::epoll::Epoll>>,
    mode: PollMode,
    inner: RefCell<Inner>,
    events: RefCell<Events>,
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
            .field("mode", &self.mode)
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
    // The poller reserves usize::MAX: the generation never fills every bit (see
    // `insert_slot`), so no key is all ones.
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
        let poller = Poller::new()?;
        let mode = if poller.supports_edge() {
            PollMode::Edge
        } else {
            PollMode::Oneshot
        };
        #[cfg(target_os = "linux")]
        let epoll = {
            use std::os::fd::AsRawFd;
            let ep = crate::epoll::Epoll::new()?;
            // polling's epoll descriptor becomes readable when its notifier fires.
            ep.add(poller.as_raw_fd(), NOTIFY_KEY, libc::EPOLLIN as u32)?;
            Some(RefCell::new(ep))
        };
        let reactor = Rc::new(Reactor {
            poller: Arc::new(poller),
            #[cfg(target_os = "linux")]
            epoll,
            mode,
            inner: RefCell::new(Inner {
                slots: Slab::new(),
                next_generation: 0,
                waiters: 0,
                flush_queue: Vec::new(),
            }),
            events: RefCell::new(Events::new()),
            runtime: rt.clone(),
            polls: Cell::new(0),
            scratch: RefCell::new(Vec::new()),
        });
        rt.set_driver(reactor.clone())?;
        Ok(reactor)
    }

    pub(crate) fn poller(&self) -> &Poller {
        &self.poller
    }

    /// The epoll instance that carries the sockets, on Linux.
    #[cfg(target_os = "linux")]
    pub(crate) fn epoll(&self) -> Option<&RefCell<crate::epoll::Epoll>> {
        self.epoll.as_ref()
    }

    /// Whether events say exactly when a socket became ready and when its peer closed
    /// (the epoll backend), so that a read known to find nothing can be skipped.
    fn precise(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.epoll.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Whether a read on the socket may be skipped after one that drained the kernel's
    /// buffer: true when readiness is tracked precisely and the peer has not closed.
    pub(crate) fn may_skip_read(&self, key: usize) -> bool {
        if !self.precise() {
            return false;
        }
        let (index, generation) = split_key(key);
        let inner = self.inner.borrow();
        matches!(inner.slots.get(index), Some(s) if s.generation == generation && !s.read_closed)
    }

    pub(crate) fn mode(&self) -> PollMode {
        self.mode
    }

    /// Reserves a slot; returns its poller key.
    pub(crate) fn insert_slot(&self) -> usize {
        let mut inner = self.inner.borrow_mut();
        let generation = inner.next_generation;
        inner.next_generation = (generation + 1) % GENERATION_LIMIT;
        let index = inner.slots.insert(Slot {
            generation,
            reader: None,
            writer: None,
            flusher: None,
            interest: (false, false),
            ready: (false, false),
            read_closed: false,
        });
        key_of(index, generation)
    }

    /// Frees a slot. Tasks still recorded as waiting are woken so they see the socket gone.
    pub(crate) fn remove_slot(&self, key: usize) {
        let (index, generation) = split_key(key);
        let slot = {
            let mut inner = self.inner.borrow_mut();
            match inner.slots.get(index) {
                Some(s) if s.generation == generation => {}
                _ => return,
            }
            let slot = inner.slots.remove(index);
            let n = usize::from(slot.reader.is_some())
                + usize::from(slot.writer.is_some())
                + usize::from(slot.flusher.is_some());
            inner.waiters -= n;
            slot
        };
        for id in [slot.reader, slot.writer].into_iter().flatten() {
            hooks::wake(&self.runtime, id);
        }
    }

    /// Wakes whoever waits on the socket in either direction (they re-check their state).
    pub(crate) fn wake_waiters(&self, key: usize) {
        let (index, generation) = split_key(key);
        let ids = {
            let inner = self.inner.borrow();
            match inner.slots.get(index) {
                Some(s) if s.generation == generation => [s.reader, s.writer],
                _ => return,
            }
        };
        for id in ids.into_iter().flatten() {
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

    /// Number of registered sockets and listeners.
    pub fn sources(&self) -> usize {
        self.inner.borrow().slots.len()
    }

    /// How many times the reactor has polled the operating system.
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }

    /// Suspends the caller until the socket registered under `key` may be ready in
    /// direction `dir`, the deadline passes, or the task is cancelled. The caller must
    /// have seen `WouldBlock` from the operation it retries afterwards.
    ///
    /// # Errors
    /// `ResourceBusy` if another task waits in the same direction; `TimedOut`; a
    /// cancellation error; `NotConnected` if the socket was closed meanwhile.
    pub(crate) fn wait(
        &self,
        key: usize,
        fd: BorrowedFd<'_>,
        dir: Direction,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let me = hooks::waiter_id();
        let (index, generation) = split_key(key);
        let rearm = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            let slot = match inner.slots.get_mut(index) {
                Some(s) if s.generation == generation => s,
                _ => return Err(closed()),
            };
            let waiter = match dir {
                Direction::Read => &mut slot.reader,
                Direction::Write => &mut slot.writer,
            };
            match waiter {
                Some(other) if *other != me => {
                    return Err(io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        match dir {
                            Direction::Read => "copas: another task is already reading this socket",
                            Direction::Write => {
                                "copas: another task is already writing this socket"
                            }
                        },
                    ));
                }
                Some(_) => {}
                None => {
                    let ready = match dir {
                        Direction::Read => &mut slot.ready.0,
                        Direction::Write => &mut slot.ready.1,
                    };
                    if std::mem::take(ready) {
                        // An edge came while nobody waited: retry the operation now.
                        return Ok(());
                    }
                    let waiter = match dir {
                        Direction::Read => &mut slot.reader,
                        Direction::Write => &mut slot.writer,
                    };
                    *waiter = Some(me);
                    inner.waiters += 1;
                }
            }
            if self.mode == PollMode::Oneshot {
                slot.interest = (slot.reader.is_some(), slot.writer.is_some());
                Some(slot.interest)
            } else {
                None
            }
        };
        let _guard = WaitGuard {
            reactor: self,
            key,
            dir,
            me,
        };
        if let Some((r, w)) = rearm {
            self.poller
                .modify_with_mode(fd, Event::new(key, r, w), PollMode::Oneshot)?;
        }
        hooks::suspend_on(&self.runtime, deadline)
    }

    /// Queues `f` to be flushed before the loop next waits.
    pub(crate) fn queue_flush(&self, f: Rc<dyn BackgroundFlush>) {
        self.inner.borrow_mut().flush_queue.push(f);
    }

    /// Records (or clears) that the socket's output waits for writability.
    pub(crate) fn set_flusher(&self, key: usize, f: Option<Weak<dyn BackgroundFlush>>) {
        let (index, generation) = split_key(key);
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if let Some(slot) = inner.slots.get_mut(index) {
            if slot.generation == generation {
                match (&slot.flusher, &f) {
                    (None, Some(_)) => inner.waiters += 1,
                    (Some(_), None) => inner.waiters -= 1,
                    _ => {}
                }
                slot.flusher = f;
            }
        }
    }
}

/// The key of polling's own descriptor in the epoll backend.
#[cfg(target_os = "linux")]
const NOTIFY_KEY: u64 = u64::MAX;

impl Reactor {
    #[cfg(target_os = "linux")]
    fn park_epoll(
        &self,
        ep: &RefCell<crate::epoll::Epoll>,
        timeout: Option<Duration>,
        wake: &mut dyn FnMut(TaskId),
    ) -> io::Result<usize> {
        self.polls.set(self.polls.get() + 1);
        let mut ep = ep.borrow_mut();
        let events = match ep.wait(timeout) {
            Ok(events) => events,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut handled = 0;
        let mut notified = false;
        {
            let mut inner = self.inner.borrow_mut();
            for ev in events {
                let r = crate::epoll::readiness(ev);
                if r.key == NOTIFY_KEY {
                    notified = true;
                    continue;
                }
                let tracked = Some(r.read_closed);
                handled += usize::from(inner.dispatch(
                    r.key as usize,
                    r.readable,
                    r.writable,
                    tracked,
                    wake,
                ));
            }
        }
        drop(ep);
        if notified {
            // Let polling consume its notification and re-arm its notifier.
            let mut events = self.events.borrow_mut();
            events.clear();
            self.poller.wait(&mut events, Some(Duration::ZERO))?;
            handled += 1;
        }
        Ok(handled)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "copas: the socket was closed")
}

/// Clears the waiter record when the wait ends, also when the task unwinds.
struct WaitGuard<'a> {
    reactor: &'a Reactor,
    key: usize,
    dir: Direction,
    me: TaskId,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let (index, generation) = split_key(self.key);
        let mut inner = self.reactor.inner.borrow_mut();
        let inner = &mut *inner;
        if let Some(slot) = inner.slots.get_mut(index) {
            if slot.generation == generation {
                let waiter = match self.dir {
                    Direction::Read => &mut slot.reader,
                    Direction::Write => &mut slot.writer,
                };
                if *waiter == Some(self.me) {
                    *waiter = None;
                    inner.waiters -= 1;
                    // The event that woke us is consumed by the retry that follows.
                    match self.dir {
                        Direction::Read => slot.ready.0 = false,
                        Direction::Write => slot.ready.1 = false,
                    }
                }
            }
        }
    }
}

impl Driver for Reactor {
    fn park(&self, timeout: Option<Duration>, wake: &mut dyn FnMut(TaskId)) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        if let Some(ep) = &self.epoll {
            return self.park_epoll(ep, timeout, wake);
        }
        let mut events = self.events.borrow_mut();
        events.clear();
        self.polls.set(self.polls.get() + 1);
        match self.poller.wait(&mut events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
        let mut inner = self.inner.borrow_mut();
        let mut handled = 0;
        for ev in events.iter() {
            handled += usize::from(inner.dispatch(ev.key, ev.readable, ev.writable, None, wake));
        }
        Ok(handled)
    }

    fn before_park(&self) {
        let queue = std::mem::take(&mut self.inner.borrow_mut().flush_queue);
        for f in queue {
            f.flush_background();
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
        let poller = self.poller.clone();
        Arc::new(move || {
            let _ = poller.notify();
        })
    }
}
