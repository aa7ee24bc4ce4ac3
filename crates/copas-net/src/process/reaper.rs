//! The reaper: one background thread per process that waits for the children whose
//! [`Child`](super::Child) handle was dropped while they still ran, and reaps them, so
//! that no zombie is left behind.
//!
//! Invariant: an orphan's `std::process::Child` (and with it the right to reap its pid)
//! is owned by exactly one place at a time — the copas handle, the queue, or the reaper
//! thread's list — and leaves the list only once `try_wait` has reaped it (or failed, which
//! means it is no longer our child to reap).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::sys;

/// A child to reap, with the pidfd that says when it exits (where there is one).
pub(super) struct Orphan {
    pub(super) child: std::process::Child,
    pub(super) pidfd: Option<OwnedFd>,
}

struct Reaper {
    queue: Mutex<Vec<Orphan>>,
    /// Written to (one byte) to wake the thread when the queue grows.
    wake: UnixStream,
}

static REAPER: OnceLock<Result<Reaper, String>> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first poll interval for orphans without a pidfd; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Hands `orphan` to the reaper thread (started on first use). Never blocks.
pub(super) fn adopt(mut orphan: Orphan) {
    // It may have exited meanwhile: then there is nothing to hand over.
    if !matches!(orphan.child.try_wait(), Ok(None)) {
        return;
    }
    match REAPER.get_or_init(start) {
        Ok(r) => {
            lock(&r.queue).push(orphan);
            // A full socket buffer means a wake-up is pending already.
            let _ = (&r.wake).write(&[1]);
        }
        Err(e) => eprintln!(
            "copas: child process {} is left unreaped (it will be a zombie once it \
             exits): {e}",
            orphan.child.id()
        ),
    }
}

fn start() -> Result<Reaper, String> {
    let setup = || -> io::Result<(UnixStream, UnixStream)> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((tx, rx))
    };
    let (tx, rx) =
        setup().map_err(|e| format!("cannot create the reaper's wake-up socket: {e}"))?;
    std::thread::Builder::new()
        .name("copas-reaper".into())
        .spawn(move || reap_forever(&rx))
        .map_err(|e| format!("cannot start the reaper thread: {e}"))?;
    Ok(Reaper {
        queue: Mutex::new(Vec::new()),
        wake: tx,
    })
}

fn reap_forever(wake: &UnixStream) {
    let mut orphans: Vec<Orphan> = Vec::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(Ok(reaper)) = REAPER.get() else {
            // `start` has not stored the reaper yet: the first wake-up byte follows.
            let _ = sys::poll_readable(&[wake.as_fd()], Some(MIN_BACKOFF));
            continue;
        };
        let new: Vec<Orphan> = std::mem::take(&mut *lock(&reaper.queue));
        if !new.is_empty() {
            backoff = MIN_BACKOFF;
            orphans.extend(new);
        }
        // Reaped, or no longer ours to reap (an error): either way, done with it.
        orphans.retain_mut(|o| matches!(o.child.try_wait(), Ok(None)));
        let mut fds: Vec<BorrowedFd<'_>> = vec![wake.as_fd()];
        fds.extend(
            orphans
                .iter()
                .filter_map(|o| o.pidfd.as_ref().map(AsFd::as_fd)),
        );
        let timeout = if fds.len() == orphans.len() + 1 {
            None
        } else {
            let t = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            Some(t)
        };
        if sys::poll_readable(&fds, timeout).is_err() {
            // poll itself failed (out of memory): do not spin.
            std::thread::sleep(MIN_BACKOFF);
        }
        drop(fds);
        let mut sink = [0u8; 64];
        while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
    }
}
