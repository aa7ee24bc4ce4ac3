//! A one-value channel between threads, as a `Future` for [`block_on`](super::block_on):
//! carries the results of [`unblock`](super::unblock) and remote spawns.
//!
//! Key invariant: the receiver's waker is stored under the same lock as the value, so a
//! value sent after the receiver's last poll always finds the waker to wake.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender was dropped without sending.
    sender_gone: bool,
    /// The receiver was dropped: a value sent now is dropped by the sender.
    receiver_gone: bool,
}

type Shared<T> = Arc<Mutex<Slot<T>>>;

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
        receiver_gone: false,
    }));
    (Sender(Some(slot.clone())), Receiver(slot))
}

fn lock<T>(s: &Shared<T>) -> std::sync::MutexGuard<'_, Slot<T>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Sender<T>(Option<Shared<T>>);

impl<T> Sender<T> {
    /// Hands over the value; if the receiver is gone it is dropped here, on the
    /// sender's thread, after the lock is released.
    pub(crate) fn send(mut self, value: T) {
        let Some(s) = self.0.take() else { return };
        let mut slot = lock(&s);
        if slot.receiver_gone {
            drop(slot);
            drop(value);
            return;
        }
        slot.value = Some(value);
        let waker = slot.waker.take();
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let mut slot = lock(&s);
            slot.sender_gone = true;
            let waker = slot.waker.take();
            drop(slot);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The sender went away without a value.
#[derive(Debug)]
pub(crate) struct Lost;

pub(crate) struct Receiver<T>(Shared<T>);

impl<T> Receiver<T> {
    /// The value, if it has arrived.
    pub(crate) fn try_take(&self) -> Option<Result<T, Lost>> {
        let mut slot = lock(&self.0);
        match slot.value.take() {
            Some(v) => Some(Ok(v)),
            None if slot.sender_gone => Some(Err(Lost)),
            None => None,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        let slot = lock(&self.0);
        slot.value.is_some() || slot.sender_gone
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Lost>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.0);
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Ok(v));
        }
        if slot.sender_gone {
            return Poll::Ready(Err(Lost));
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let value = {
            let mut slot = lock(&self.0);
            slot.receiver_gone = true;
            slot.waker = None;
            slot.value.take()
        };
        drop(value);
    }
}
