//! A bounded FIFO channel between threads and tasks in any mix: [`channel`].
//!
//! The channel is our own rather than a wrapper over flume or crossbeam-channel: a send
//! interrupted by a cancellation or a `with_timeout` scope must give its value back
//! (flume's `SendFut` drops it; crossbeam-channel cannot wait for a `Waker` at all), and
//! a waiting task must hold a keep-alive guard, which both need from copas anyway. It is
//! a mutex-protected queue with two FIFO lines of waiters; waiting goes through
//! [`block_on`](crate::block_on), so a task suspends, code outside a task drives its
//! loop, and a plain thread blocks.
//!
//! Key invariants:
//! - `queue.len() <= cap`.
//! - A sender may push only when no earlier sender waits (`send_waiters` empty or it is
//!   at the head); a receiver may pop only when no earlier receiver waits. So both ends
//!   are served first come, first served.
//! - Whenever a state change may let the head waiter of a line proceed (room freed, a
//!   value pushed, a waiter leaving the head, the other side gone), the new head is woken;
//!   a woken waiter that does not proceed passes the wake-up on by leaving.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Creates a bounded FIFO channel holding at most `capacity` values in flight.
///
/// Both ends are `Send` and `Clone`. [`Sender::send`] and [`Receiver::recv`] suspend the
/// caller inside a copas task and block a plain std thread, in any mix: thread→task,
/// task→thread, task→task on one runtime or across runtimes. A task waiting on the
/// channel keeps its loop alive, since the other end may live on another thread.
///
/// # Panics
/// If `capacity` is 0 (a rendezvous channel is not supported).
///
/// # Examples
/// ```
/// let (tx, rx) = copas_core::sync::channel::<u32>(4);
/// // A plain thread produces, a copas task consumes.
/// let producer = std::thread::spawn(move || {
///     for i in 0..10 {
///         tx.send(i).unwrap();
///     }
/// });
/// let consumer = copas_core::spawn(move || {
///     let mut sum = 0;
///     while let Ok(v) = rx.recv() {
///         sum += v;
///     }
///     sum
/// });
/// copas_core::run()?;
/// assert_eq!(consumer.join().unwrap(), 45);
/// producer.join().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "copas: channel capacity must be at least 1");
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity.min(1024)),
            cap: capacity,
            senders: 1,
            receivers: 1,
            send_waiters: Line::default(),
            recv_waiters: Line::default(),
            next_ticket: 0,
        }),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

struct Chan<T> {
    state: Mutex<State<T>>,
}

/// A FIFO line of waiters: ticket and the waker to call.
#[derive(Default)]
struct Line {
    waiters: VecDeque<(u64, Waker)>,
}

impl Line {
    fn is_head(&self, ticket: Option<u64>) -> bool {
        match self.waiters.front() {
            None => true,
            Some((t, _)) => Some(*t) == ticket,
        }
    }

    fn register(&mut self, ticket: u64, waker: &Waker) {
        if let Some((_, w)) = self.waiters.iter_mut().find(|(t, _)| *t == ticket) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        } else {
            self.waiters.push_back((ticket, waker.clone()));
        }
    }

    /// Removes `ticket`; returns whether it was the head.
    fn remove(&mut self, ticket: u64) -> bool {
        match self.waiters.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                self.waiters.remove(i);
                i == 0
            }
            None => false,
        }
    }

    fn head(&self) -> Option<Waker> {
        self.waiters.front().map(|(_, w)| w.clone())
    }

    fn all(&self) -> Vec<Waker> {
        self.waiters.iter().map(|(_, w)| w.clone()).collect()
    }
}

struct State<T> {
    queue: VecDeque<T>,
    cap: usize,
    senders: usize,
    receivers: usize,
    send_waiters: Line,
    recv_waiters: Line,
    next_ticket: u64,
}

impl<T> State<T> {
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// The ticket a waiting future holds, drawn on its first wait.
    fn ticket_for(&mut self, held: &mut Option<u64>) -> u64 {
        *held.get_or_insert_with(|| self.ticket())
    }
}

impl<T> Chan<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// The sending end of a [`channel`]. Cloning it adds a sender; the receivers see the
/// channel disconnected once every sender is dropped and the queue is empty.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving end of a [`channel`]. Cloning it adds a receiver (each value goes to one
/// of them). When every receiver is dropped, sends fail and the values still queued are
/// dropped.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.lock().receivers += 1;
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.senders -= 1;
        let wakers = if st.senders == 0 {
            st.recv_waiters.all()
        } else {
            Vec::new()
        };
        drop(st);
        wake_all(wakers);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.receivers -= 1;
        let (wakers, lost) = if st.receivers == 0 {
            (st.send_waiters.all(), std::mem::take(&mut st.queue))
        } else {
            (Vec::new(), VecDeque::new())
        };
        drop(st);
        // Values dropped outside the lock: their destructors may use the channel.
        drop(lost);
        wake_all(wakers);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// Why [`Sender::send`] did not deliver; the value is given back ([`SendError::into_inner`]).
pub struct SendError<T> {
    value: T,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Disconnected,
    /// The wait was interrupted: cancellation, a `with_timeout` scope, or a wait that was
    /// not possible here.
    Interrupted(io::Error),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Whether every receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self.cause, Cause::Disconnected)
    }

    /// Whether the waiting task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(&self.cause, Cause::Interrupted(e) if crate::is_cancelled(e))
    }

    /// Whether a [`with_timeout`](crate::with_timeout) scope ended the wait.
    pub fn is_timeout(&self) -> bool {
        matches!(&self.cause, Cause::Interrupted(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("cause", &self.cause)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Disconnected => f.write_str("sending on a channel whose receivers are gone"),
            Cause::Interrupted(e) => write!(f, "send interrupted: {e}"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> From<SendError<T>> for io::Error {
    fn from(e: SendError<T>) -> io::Error {
        match e.cause {
            Cause::Disconnected => io::Error::new(
                io::ErrorKind::BrokenPipe,
                "sending on a channel whose receivers are gone",
            ),
            Cause::Interrupted(e) => e,
        }
    }
}

/// Why [`Sender::try_send`] did not send; the value is given back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel is full (or earlier senders are waiting for room).
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Disconnected(_) => "Disconnected(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "the channel is full",
            TrySendError::Disconnected(_) => "sending on a channel whose receivers are gone",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Receiver::recv`] has no value.
#[derive(Debug)]
pub struct RecvError {
    cause: Cause,
}

impl RecvError {
    /// Whether every sender is gone and the channel is empty.
    pub fn is_disconnected(&self) -> bool {
        matches!(self.cause, Cause::Disconnected)
    }

    /// Whether the waiting task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(&self.cause, Cause::Interrupted(e) if crate::is_cancelled(e))
    }

    /// Whether a [`with_timeout`](crate::with_timeout) scope ended the wait.
    pub fn is_timeout(&self) -> bool {
        matches!(&self.cause, Cause::Interrupted(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Disconnected => {
                f.write_str("receiving on an empty channel whose senders are gone")
            }
            Cause::Interrupted(e) => write!(f, "receive interrupted: {e}"),
        }
    }
}

impl std::error::Error for RecvError {}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        match e.cause {
            Cause::Disconnected => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "receiving on an empty channel whose senders are gone",
            ),
            Cause::Interrupted(e) => e,
        }
    }
}

/// Why [`Receiver::try_recv`] has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// The channel is empty (or earlier receivers are waiting).
    Empty,
    /// Every sender is gone and the channel is empty.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "the channel is empty",
            TryRecvError::Disconnected => "receiving on an empty channel whose senders are gone",
        })
    }
}

impl std::error::Error for TryRecvError {}

/// Why [`Receiver::recv_timeout`] has no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// The timeout passed first.
    Timeout,
    /// Every sender is gone and the channel is empty.
    Disconnected,
    /// The waiting task was cancelled, or waiting was not possible here.
    Interrupted(io::Error),
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on a channel"),
            RecvTimeoutError::Disconnected => {
                f.write_str("receiving on an empty channel whose senders are gone")
            }
            RecvTimeoutError::Interrupted(e) => write!(f, "receive interrupted: {e}"),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

impl From<RecvTimeoutError> for io::Error {
    fn from(e: RecvTimeoutError) -> io::Error {
        match e {
            RecvTimeoutError::Timeout => io::ErrorKind::TimedOut.into(),
            RecvTimeoutError::Disconnected => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "receiving on an empty channel whose senders are gone",
            ),
            RecvTimeoutError::Interrupted(e) => e,
        }
    }
}

/// The future of one send: owns the value until it is queued.
struct SendFut<'a, T> {
    chan: &'a Chan<T>,
    value: Option<T>,
    ticket: Option<u64>,
}

impl<T> Unpin for SendFut<'_, T> {}

impl<T> Future for SendFut<'_, T> {
    /// `Err` with the value: every receiver is gone.
    type Output = Result<(), T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut st = this.chan.lock();
        let Some(value) = this.value.take() else {
            return Poll::Ready(Ok(()));
        };
        if st.receivers == 0 {
            if let Some(t) = this.ticket.take() {
                st.send_waiters.remove(t);
            }
            return Poll::Ready(Err(value));
        }
        if st.queue.len() < st.cap && st.send_waiters.is_head(this.ticket) {
            if let Some(t) = this.ticket.take() {
                st.send_waiters.remove(t);
            }
            st.queue.push_back(value);
            let mut wake = Vec::with_capacity(2);
            wake.extend(st.recv_waiters.head());
            if st.queue.len() < st.cap {
                wake.extend(st.send_waiters.head());
            }
            drop(st);
            wake_all(wake);
            return Poll::Ready(Ok(()));
        }
        this.value = Some(value);
        let ticket = st.ticket_for(&mut this.ticket);
        st.send_waiters.register(ticket, cx.waker());
        Poll::Pending
    }
}

impl<T> Drop for SendFut<'_, T> {
    fn drop(&mut self) {
        let Some(t) = self.ticket.take() else { return };
        let mut st = self.chan.lock();
        let was_head = st.send_waiters.remove(t);
        let next = if was_head && st.queue.len() < st.cap {
            st.send_waiters.head()
        } else {
            None
        };
        drop(st);
        wake_all(next);
    }
}

/// The future of one receive.
struct RecvFut<'a, T> {
    chan: &'a Chan<T>,
    ticket: Option<u64>,
}

impl<T> Future for RecvFut<'_, T> {
    /// `None`: every sender is gone and the channel is empty.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut st = this.chan.lock();
        if !st.queue.is_empty() && st.recv_waiters.is_head(this.ticket) {
            if let Some(t) = this.ticket.take() {
                st.recv_waiters.remove(t);
            }
            let v = st.queue.pop_front();
            let mut wake = Vec::with_capacity(2);
            wake.extend(st.send_waiters.head());
            if !st.queue.is_empty() {
                wake.extend(st.recv_waiters.head());
            }
            drop(st);
            wake_all(wake);
            return Poll::Ready(v);
        }
        if st.queue.is_empty() && st.senders == 0 {
            if let Some(t) = this.ticket.take() {
                st.recv_waiters.remove(t);
            }
            return Poll::Ready(None);
        }
        let ticket = st.ticket_for(&mut this.ticket);
        st.recv_waiters.register(ticket, cx.waker());
        Poll::Pending
    }
}

impl<T> Drop for RecvFut<'_, T> {
    fn drop(&mut self) {
        let Some(t) = self.ticket.take() else { return };
        let mut st = self.chan.lock();
        let was_head = st.recv_waiters.remove(t);
        let next = if was_head && !st.queue.is_empty() {
            st.recv_waiters.head()
        } else {
            None
        };
        drop(st);
        wake_all(next);
    }
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the channel is full: inside a task the task is
    /// suspended, outside one the thread's loop is driven (or the thread blocks, when the
    /// loop has nothing to do). Senders are served in the order they started waiting.
    ///
    /// # Errors
    /// Gives the value back when every receiver is gone
    /// ([`SendError::is_disconnected`]), when the waiting task is cancelled, or when a
    /// [`with_timeout`](crate::with_timeout) scope ends.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        // The fast path: room, and nobody waiting ahead.
        let value = match self.try_send(value) {
            Ok(()) => {
                // A task that never has to wait still lets the others run now and then.
                crate::cooperate();
                return Ok(());
            }
            Err(TrySendError::Disconnected(value)) => {
                return Err(SendError {
                    value,
                    cause: Cause::Disconnected,
                })
            }
            Err(TrySendError::Full(value)) => value,
        };
        let mut fut = SendFut {
            chan: &self.chan,
            value: Some(value),
            ticket: None,
        };
        let cause = match crate::block_on(&mut fut) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(value)) => {
                return Err(SendError {
                    value,
                    cause: Cause::Disconnected,
                })
            }
            Err(e) => Cause::Interrupted(e),
        };
        match fut.value.take() {
            Some(value) => Err(SendError { value, cause }),
            // Not reachable: an interrupted wait happens only while the value is ours.
            None => Ok(()),
        }
    }

    /// Sends `value` if there is room right now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the channel is full or earlier senders are waiting,
    /// [`TrySendError::Disconnected`] when every receiver is gone.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut st = self.chan.lock();
        if st.receivers == 0 {
            return Err(TrySendError::Disconnected(value));
        }
        if st.queue.len() >= st.cap || !st.send_waiters.is_head(None) {
            return Err(TrySendError::Full(value));
        }
        st.queue.push_back(value);
        let wake = st.recv_waiters.head();
        drop(st);
        wake_all(wake);
        Ok(())
    }

    /// How many values are queued now.
    pub fn len(&self) -> usize {
        self.chan.lock().queue.len()
    }

    /// Whether no value is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The channel's capacity.
    pub fn capacity(&self) -> usize {
        self.chan.lock().cap
    }

    /// Whether every receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        self.chan.lock().receivers == 0
    }
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting while the channel is empty: inside a task the task
    /// is suspended, outside one the thread's loop is driven (or the thread blocks, when
    /// the loop has nothing to do). Receivers are served in the order they started
    /// waiting.
    ///
    /// # Errors
    /// [`RecvError::is_disconnected`] once every sender is gone and the channel is empty;
    /// also when the waiting task is cancelled or a
    /// [`with_timeout`](crate::with_timeout) scope ends.
    pub fn recv(&self) -> Result<T, RecvError> {
        match self.try_recv() {
            Ok(v) => {
                crate::cooperate();
                return Ok(v);
            }
            Err(TryRecvError::Disconnected) => {
                return Err(RecvError {
                    cause: Cause::Disconnected,
                })
            }
            Err(TryRecvError::Empty) => {}
        }
        let fut = RecvFut {
            chan: &self.chan,
            ticket: None,
        };
        match crate::block_on(fut) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(RecvError {
                cause: Cause::Disconnected,
            }),
            Err(e) => Err(RecvError {
                cause: Cause::Interrupted(e),
            }),
        }
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when `timeout` passes first (or an enclosing
    /// [`with_timeout`](crate::with_timeout) scope ends),
    /// [`RecvTimeoutError::Disconnected`] once every sender is gone and the channel is
    /// empty, [`RecvTimeoutError::Interrupted`] when the task is cancelled.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        match self.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        match crate::with_timeout(timeout, || self.recv()) {
            Ok(v) => Ok(v),
            Err(e) if e.is_disconnected() => Err(RecvTimeoutError::Disconnected),
            Err(e) if e.is_timeout() => Err(RecvTimeoutError::Timeout),
            Err(RecvError {
                cause: Cause::Interrupted(e),
            }) => Err(RecvTimeoutError::Interrupted(e)),
            Err(RecvError {
                cause: Cause::Disconnected,
            }) => Err(RecvTimeoutError::Disconnected),
        }
    }

    /// Receives a value if one is there right now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when there is none (or earlier receivers are waiting),
    /// [`TryRecvError::Disconnected`] once every sender is gone and the channel is empty.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut st = self.chan.lock();
        if !st.queue.is_empty() && st.recv_waiters.is_head(None) {
            let v = st.queue.pop_front();
            let wake = st.send_waiters.head();
            drop(st);
            wake_all(wake);
            return v.ok_or(TryRecvError::Empty);
        }
        if st.queue.is_empty() && st.senders == 0 {
            return Err(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }

    /// How many values are queued now.
    pub fn len(&self) -> usize {
        self.chan.lock().queue.len()
    }

    /// Whether no value is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every sender is gone (values may still be queued).
    pub fn is_disconnected(&self) -> bool {
        self.chan.lock().senders == 0
    }
}
