//! What the hooks know about each file descriptor, shared by all threads.
//!
//! One [`Slot`] per fd number, in chunks allocated on first use. A slot caches whether the
//! fd is a socket, its type, the blocking flag *the user* set, whether the hooks made it
//! non-blocking behind the user's back, and its `SO_RCVTIMEO`/`SO_SNDTIMEO`, so a hooked
//! call needs no extra system call to decide what to do.
//!
//! # Invariant
//! A slot's facts are valid for the generation stored with them. `close`, `dup2` and
//! `dup3` end the fd number's generation before the real call ([`Slot::close_begin`]) and
//! keep facts from being stored until it has returned ([`Slot::close_end`]), so facts
//! learnt about an earlier file never describe a later one that got the same number,
//! while the later file's users keep the one generation they saw: [`Slot::learn`] only
//! stores facts if the slot is not closing and its generation is the one it started
//! from (compare-and-swap).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libc::c_int;

use crate::sys;

const CHUNK: usize = 1024;
const CHUNKS: usize = 1024;
/// fds at or above this number are not tracked: hooks pass them straight through.
pub(crate) const MAX_FD: usize = CHUNK * CHUNKS;

/// The slot has been examined (the other flags are meaningful).
const KNOWN: u64 = 1;
/// The fd is a socket.
const SOCKET: u64 = 1 << 1;
/// The socket is `SOCK_STREAM` (a blocking send sends everything).
const STREAM: u64 = 1 << 2;
/// The user made the fd non-blocking (`O_NONBLOCK`, `FIONBIO`, `SOCK_NONBLOCK`).
const USER_NONBLOCK: u64 = 1 << 3;
/// The hooks set `O_NONBLOCK` on the file themselves (listeners, for `accept`).
const OWN_NONBLOCK: u64 = 1 << 4;
/// A close of the number is under way: facts learnt now are not stored.
const CLOSING: u64 = 1 << 5;
const FLAGS: u64 = 0xffff_ffff;

/// One fd's facts.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Generation in the high 32 bits, flags in the low.
    meta: AtomicU64,
    /// `SO_RCVTIMEO` in microseconds, 0 for none.
    rcvtimeo: AtomicU64,
    /// `SO_SNDTIMEO` in microseconds, 0 for none.
    sndtimeo: AtomicU64,
    /// Tasks (on any thread) waiting in a hook for this fd: `close` looks further only
    /// when this is not zero.
    waiters: AtomicU32,
}

static TABLE: [OnceLock<Box<[Slot]>>; CHUNKS] = [const { OnceLock::new() }; CHUNKS];

/// The slot of `fd`, or `None` for negative or huge fds.
pub(crate) fn slot(fd: c_int) -> Option<&'static Slot> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FD)?;
    let chunk = TABLE[fd / CHUNK].get_or_init(|| {
        (0..CHUNK)
            .map(|_| Slot {
                meta: AtomicU64::new(0),
                rcvtimeo: AtomicU64::new(0),
                sndtimeo: AtomicU64::new(0),
                waiters: AtomicU32::new(0),
            })
            .collect()
    });
    Some(&chunk[fd % CHUNK])
}

/// The slot of `fd` if its chunk exists already (for `close`, which must not allocate
/// for fds the hooks never saw).
pub(crate) fn existing_slot(fd: c_int) -> Option<&'static Slot> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FD)?;
    TABLE[fd / CHUNK].get().map(|chunk| &chunk[fd % CHUNK])
}

/// A snapshot of a slot: what a hooked call decides on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    meta: u64,
}

impl Facts {
    /// The generation these facts belong to.
    pub(crate) fn generation(self) -> u32 {
        (self.meta >> 32) as u32
    }
    pub(crate) fn is_socket(self) -> bool {
        self.meta & SOCKET != 0
    }
    pub(crate) fn is_stream(self) -> bool {
        self.meta & STREAM != 0
    }
    pub(crate) fn user_nonblocking(self) -> bool {
        self.meta & USER_NONBLOCK != 0
    }
    pub(crate) fn own_nonblocking(self) -> bool {
        self.meta & OWN_NONBLOCK != 0
    }
    /// A socket the user left blocking: the hooks make its calls cooperative.
    pub(crate) fn cooperative(self) -> bool {
        self.is_socket() && !self.user_nonblocking()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Slot {
    /// The fd's facts, examining it first if they are not known (a few system calls,
    /// once per fd).
    pub(crate) fn facts(&self, fd: c_int) -> Facts {
        let meta = self.meta.load(Ordering::Acquire);
        if meta & KNOWN != 0 {
            return Facts { meta };
        }
        self.learn(fd, meta)
    }

    fn learn(&self, fd: c_int, old: u64) -> Facts {
        let closing = old & CLOSING != 0;
        let generation = old & !FLAGS;
        let mut flags = KNOWN;
        let (mut rcv, mut snd) = (0, 0);
        // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable `stat`.
        if unsafe { sys::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
            flags |= SOCKET;
            // SAFETY: F_GETFL takes no argument.
            let fl = unsafe { sys::fcntl(fd, libc::F_GETFL, 0) };
            if fl >= 0 && fl & libc::O_NONBLOCK != 0 {
                // Hooks pass a non-blocking socket's calls through: nothing else is needed
                // (if the user makes it blocking, the slot is examined again).
                flags |= USER_NONBLOCK;
            } else {
                if sockopt_int(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM) {
                    flags |= STREAM;
                }
                rcv = sockopt_timeout(fd, libc::SO_RCVTIMEO);
                snd = sockopt_timeout(fd, libc::SO_SNDTIMEO);
            }
        }
        let new = generation | flags;
        if closing {
            // The fd is the old file or already a new one: use these facts once.
            return Facts { meta: new };
        }
        // Timeouts first: a reader that sees KNOWN sees them.
        self.rcvtimeo.store(rcv, Ordering::Relaxed);
        self.sndtimeo.store(snd, Ordering::Relaxed);
        match self
            .meta
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::Acquire)
        {
            Ok(_) => Facts { meta: new },
            // Closed meanwhile, or another thread learnt first: use what is there now.
            Err(now) if now & KNOWN != 0 => Facts { meta: now },
            // Closed and not relearnt: the fd is another file now, or none. Report these
            // facts without storing them.
            Err(_) => Facts { meta: new },
        }
    }

    /// Ends the fd's generation before it is closed or replaced; until
    /// [`close_end`](Self::close_end), nothing learnt is stored. Returns the generation
    /// that ended.
    pub(crate) fn close_begin(&self) -> u32 {
        let mut cur = self.meta.load(Ordering::Relaxed);
        loop {
            let next = (cur & !FLAGS).wrapping_add(1 << 32) | CLOSING;
            match self
                .meta
                .compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return (cur >> 32) as u32,
                Err(now) => cur = now,
            }
        }
    }

    /// The real close has returned: the number is free, or already a new file's, whose
    /// facts may be learnt and stored from now on (in the generation begun by
    /// [`close_begin`](Self::close_begin)).
    pub(crate) fn close_end(&self) {
        let _ = self
            .meta
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                (m & CLOSING != 0).then_some(m & !FLAGS)
            });
    }

    /// Drops the facts (they proved wrong), keeping the generation: they are examined
    /// afresh on next use.
    pub(crate) fn unlearn(&self) {
        let _ = self
            .meta
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                (m & KNOWN != 0).then_some(m & !FLAGS)
            });
    }

    /// Counts a task starting to wait for this fd.
    pub(crate) fn add_waiter(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a task done waiting for this fd.
    pub(crate) fn remove_waiter(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether a task anywhere waits in a hook for this fd.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) != 0
    }

    /// The current generation (changes when the fd is closed).
    pub(crate) fn generation(&self) -> u32 {
        (self.meta.load(Ordering::SeqCst) >> 32) as u32
    }

    /// Sets or clears a flag if the facts are still those of generation `of`.
    fn set_flag(&self, of: Facts, flag: u64, on: bool) {
        let _ = self
            .meta
            .fetch_update(Ordering::SeqCst, Ordering::Acquire, |m| {
                (m >> 32 == of.meta >> 32 && m & KNOWN != 0).then_some(if on {
                    m | flag
                } else {
                    m & !flag
                })
            });
    }

    /// Records the blocking flag the user asked for. Making a socket blocking that the
    /// hooks learnt as non-blocking drops what they know, to examine it afresh (its type
    /// and timeouts were not looked at).
    pub(crate) fn set_user_nonblocking(&self, on: bool) {
        let _ = self
            .meta
            .fetch_update(Ordering::SeqCst, Ordering::Acquire, |m| {
                if m & KNOWN == 0 {
                    None
                } else if on {
                    Some(m | USER_NONBLOCK)
                } else if m & USER_NONBLOCK != 0 && m & OWN_NONBLOCK == 0 {
                    Some(m & !FLAGS)
                } else {
                    Some(m & !USER_NONBLOCK)
                }
            });
    }

    /// The facts if they are known, without examining the fd.
    pub(crate) fn peek(&self) -> Option<Facts> {
        let meta = self.meta.load(Ordering::Acquire);
        (meta & KNOWN != 0).then_some(Facts { meta })
    }

    /// Records that the hooks set `O_NONBLOCK` on the file.
    pub(crate) fn set_own_nonblocking(&self, of: Facts) {
        self.set_flag(of, OWN_NONBLOCK, true);
    }

    /// `SO_RCVTIMEO`, if set.
    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        match self.rcvtimeo.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// `SO_SNDTIMEO`, if set.
    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        match self.sndtimeo.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Records a timeout the user set with `setsockopt` (`None`: no timeout).
    pub(crate) fn set_timeout(&self, name: c_int, value: Option<Duration>) {
        let us = value.map_or(0, micros);
        match name {
            libc::SO_RCVTIMEO => self.rcvtimeo.store(us, Ordering::Relaxed),
            libc::SO_SNDTIMEO => self.sndtimeo.store(us, Ordering::Relaxed),
            _ => {}
        }
    }
}

fn sockopt_int(fd: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and `len` is `v`'s size.
    let r = unsafe { sys::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

fn sockopt_timeout(fd: c_int, name: c_int) -> u64 {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid and `len` is `tv`'s size.
    let r = unsafe { sys::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut tv).cast(), &mut len) };
    if r != 0 {
        return 0;
    }
    timeval_duration(&tv).map_or(0, micros)
}

/// A socket timeout as the kernel reads it: zero means none.
pub(crate) fn timeval_duration(tv: &libc::timeval) -> Option<Duration> {
    let secs = u64::try_from(tv.tv_sec).ok()?;
    let us = u64::try_from(tv.tv_usec).ok()?;
    let d = Duration::from_secs(secs) + Duration::from_micros(us);
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn facts_are_learnt_once_and_forgotten_on_close() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let fd = a.as_raw_fd();
        let slot = slot(fd).unwrap();
        let f = slot.facts(fd);
        assert!(f.is_socket() && f.is_stream() && f.cooperative());
        assert!(!f.user_nonblocking() && !f.own_nonblocking());
        assert_eq!(slot.read_timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(slot.write_timeout(), None);
        // Known now: a peek sees the same facts without examining the fd.
        assert_eq!(slot.peek().map(|p| p.generation()), Some(f.generation()));
        // The user makes it non-blocking, then blocking again: relearnt from the kernel.
        slot.set_user_nonblocking(true);
        assert!(slot.peek().unwrap().user_nonblocking());
        slot.set_user_nonblocking(false);
        assert!(slot.peek().is_none_or(|p| !p.user_nonblocking()));
        // Closing ends the generation: nothing learnt before describes what comes next,
        // and nothing learnt during the close is kept.
        let g = slot.facts(fd).generation();
        assert_eq!(slot.close_begin(), g);
        assert!(slot.peek().is_none());
        assert!(slot.facts(fd).is_socket());
        assert!(
            slot.peek().is_none(),
            "facts learnt while closing were stored"
        );
        slot.close_end();
        assert_ne!(slot.generation(), g);
        assert_eq!(slot.facts(fd).generation(), slot.generation());
        assert!(slot.peek().is_some());
        // Closed as the close hook does (hooks are installed in this binary only by
        // `install_finds_every_hook_live`, maybe later), so a later fd with this number
        // starts clean.
        slot.close_begin();
        drop(a);
        slot.close_end();
    }

    #[test]
    fn pipes_and_out_of_range_fds_are_not_cooperative() {
        let (r, _w) = std::io::pipe().unwrap();
        let fd = r.as_raw_fd();
        let s = slot(fd).unwrap();
        assert!(!s.facts(fd).cooperative());
        // Closed as the close hook does: the other test in this binary may get this fd
        // number for its socket next, and must not find a pipe's facts there.
        s.close_begin();
        drop(r);
        s.close_end();
        assert!(slot(-1).is_none());
        assert!(slot(c_int::try_from(MAX_FD).unwrap()).is_none());
    }

    #[test]
    fn zero_timeouts_mean_none() {
        let tv = |s, u| libc::timeval {
            tv_sec: s,
            tv_usec: u,
        };
        assert_eq!(timeval_duration(&tv(0, 0)), None);
        assert_eq!(
            timeval_duration(&tv(2, 500)),
            Some(Duration::from_micros(2_000_500))
        );
        assert_eq!(timeval_duration(&tv(-1, 0)), None);
    }
}
