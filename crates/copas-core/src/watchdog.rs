//! The blocked-loop watchdog: one process-wide thread that notices a task running too long
//! without suspending (a handler calling blocking std code, a busy loop), so that "the
//! whole server stopped" comes with a name.
//!
//! The loop's side is two relaxed stores per resumption and one per suspension into the
//! runtime's [`Watch`] (a switch counter, odd while a task runs, and the running task's
//! serial), plus one relaxed load of `flagged` when the task suspends. The watchdog thread
//! samples every registered `Watch` every quarter threshold (at least 1 ms, at most
//! 25 ms); a counter that stays at the same odd value for the threshold means one task has
//! run that long. It then:
//! - sets `flagged`, so the loop's thread reports the task (name, id, peer, how long)
//!   through the error handler when it finally suspends ([`Problem::Blocked`]); the
//!   handler is `!Send` and the task's record lives on the loop's thread, so that report
//!   cannot come from here;
//! - if the task is still running after [`STUCK_AFTER`] (or 4 thresholds, whichever is
//!   longer), writes one line to stderr itself, naming the task by id only: the loop may
//!   never come back, and that is when the user needs to hear of it.
//!
//! Precision: the duration reported counts from the watchdog's first sample of that
//! resumption, so it may be short by up to one sampling period.
//!
//! Invariant: only the loop's thread writes `switches` and `serial`; only the watchdog
//! writes the sampling state (`seen`); `flagged` is set by the watchdog and cleared by the
//! loop.
//!
//! [`Problem::Blocked`]: crate::Problem::Blocked

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::report::short_duration;

/// The default threshold of the blocked-loop warning.
pub const DEFAULT_BLOCK_WARNING: Duration = Duration::from_millis(100);

/// After this long (or four thresholds, if longer) the watchdog also writes to stderr
/// itself, while the task still runs.
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(1);

/// What a runtime publishes for the watchdog.
pub(crate) struct Watch {
    /// Odd while a task runs: incremented at each resumption and each suspension.
    switches: AtomicU64,
    /// The serial of the task running (or that ran last).
    serial: AtomicU64,
    /// The threshold in microseconds; 0 = off.
    threshold_us: AtomicU64,
    /// The watchdog found the current resumption past the threshold.
    flagged: AtomicBool,
    /// The watchdog's sampling state: the counter value it saw, when it first saw it,
    /// whether it printed the stuck line for it.
    seen: Mutex<Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    switches: u64,
    since: Instant,
    printed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The threshold from `COPAS_BLOCK_WARNING` (`off`/`0`, or milliseconds), else the default.
fn threshold_from_env() -> Option<Duration> {
    match std::env::var("COPAS_BLOCK_WARNING") {
        Ok(v) => {
            let v = v.trim();
            if v.eq_ignore_ascii_case("off") || v == "0" {
                None
            } else {
                match v.trim_end_matches("ms").parse::<u64>() {
                    Ok(ms) => Some(Duration::from_millis(ms)),
                    Err(_) => {
                        eprintln!(
                            "copas: COPAS_BLOCK_WARNING={v:?} is neither \"off\" nor a number of milliseconds; using {} ms",
                            DEFAULT_BLOCK_WARNING.as_millis()
                        );
                        Some(DEFAULT_BLOCK_WARNING)
                    }
                }
            }
        }
        Err(_) => Some(DEFAULT_BLOCK_WARNING),
    }
}

impl Watch {
    /// A new record, with the threshold from the environment, registered with the
    /// watchdog (started on first use).
    pub(crate) fn new() -> Arc<Watch> {
        let watch = Arc::new(Watch {
            switches: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            threshold_us: AtomicU64::new(0),
            flagged: AtomicBool::new(false),
            seen: Mutex::new(Seen {
                switches: 0,
                since: Instant::now(),
                printed: false,
            }),
        });
        watch.set_threshold(threshold_from_env());
        watch
    }

    pub(crate) fn set_threshold(self: &Arc<Watch>, t: Option<Duration>) {
        let us = t.map_or(0, |t| (t.as_micros() as u64).max(1));
        self.threshold_us.store(us, Relaxed);
        if us != 0 {
            register(self);
        }
    }

    pub(crate) fn threshold(&self) -> Option<Duration> {
        match self.threshold_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The loop resumes the task `serial`.
    #[inline]
    pub(crate) fn enter(&self, serial: u64) {
        self.serial.store(serial, Relaxed);
        self.switches
            .store(self.switches.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// The task suspended or ended. Returns how long it ran if the watchdog flagged it.
    #[inline]
    pub(crate) fn leave(&self) -> Option<Duration> {
        let sw = self.switches.load(Relaxed);
        self.switches.store(sw.wrapping_add(1), Relaxed);
        if self.flagged.load(Relaxed) {
            return self.take_flag(sw);
        }
        None
    }

    /// The flag, if it was raised for the resumption `sw` (a flag raised just as that
    /// resumption ended and the next began is dropped).
    #[cold]
    fn take_flag(&self, sw: u64) -> Option<Duration> {
        self.flagged.store(false, Relaxed);
        let seen = lock(&self.seen);
        (seen.switches == sw).then(|| seen.since.elapsed())
    }

    /// For a caller on another thread: the task running now and for how long, if it has
    /// run past the threshold (or, with the warning off, if it is running at all: unknown
    /// duration).
    pub(crate) fn running_long(&self) -> Option<(u64, Duration)> {
        let sw = self.switches.load(Relaxed);
        if sw.is_multiple_of(2) {
            return None;
        }
        let seen = *lock(&self.seen);
        (seen.switches == sw).then(|| (self.serial.load(Relaxed), seen.since.elapsed()))
    }

    /// One sample by the watchdog; returns whether the record wants sampling at all.
    fn sample(&self, now: Instant) -> bool {
        let Some(threshold) = self.threshold() else {
            return false;
        };
        let sw = self.switches.load(Relaxed);
        let mut seen = lock(&self.seen);
        if seen.switches != sw {
            *seen = Seen {
                switches: sw,
                since: now,
                printed: false,
            };
            return true;
        }
        if sw.is_multiple_of(2) {
            return true;
        }
        let ran = now.saturating_duration_since(seen.since);
        if ran >= threshold && !self.flagged.load(Relaxed) && !seen.printed {
            self.flagged.store(true, Relaxed);
        }
        if ran >= STUCK_AFTER.max(threshold * 4) && !seen.printed {
            seen.printed = true;
            let serial = self.serial.load(Relaxed);
            eprintln!(
                "copas: task #{serial} has been running for {} without yielding and still runs; every other task waits (its name follows when it yields)",
                short_duration(ran)
            );
            #[cfg(feature = "tracing")]
            tracing::warn!(
                task.id = serial,
                ran_ms = ran.as_millis() as u64,
                "copas: a task still blocks the loop"
            );
        }
        true
    }
}

struct Registry {
    watches: Vec<Weak<Watch>>,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

fn register(watch: &Arc<Watch>) {
    let mut start = false;
    let reg = REGISTRY.get_or_init(|| {
        start = true;
        Mutex::new(Registry {
            watches: Vec::new(),
        })
    });
    {
        let mut r = lock(reg);
        if !r.watches.iter().any(|w| w.as_ptr() == Arc::as_ptr(watch)) {
            r.watches.push(Arc::downgrade(watch));
        }
    }
    if start {
        let spawned = std::thread::Builder::new()
            .name("copas-watchdog".into())
            .spawn(|| watchdog(reg));
        if let Err(e) = spawned {
            eprintln!("copas: cannot start the blocked-loop watchdog thread: {e}");
        }
    }
}

fn watchdog(reg: &'static Mutex<Registry>) {
    loop {
        let mut period = Duration::from_millis(25);
        let watches: Vec<Arc<Watch>> = {
            let mut r = lock(reg);
            r.watches.retain(|w| w.strong_count() > 0);
            r.watches.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for w in &watches {
            if w.sample(now) {
                if let Some(t) = w.threshold() {
                    period = period.min((t / 4).max(Duration::from_millis(1)));
                }
            }
        }
        drop(watches);
        std::thread::sleep(period);
    }
}
