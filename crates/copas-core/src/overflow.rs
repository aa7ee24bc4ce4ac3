//! Stack-overflow reports: a task that runs off the end of its stack hits the stack's guard
//! page; a `SIGSEGV`/`SIGBUS` handler running on an alternate signal stack recognises the
//! address, prints which task overflowed (name and stack size) and aborts, as std does for
//! threads. Faults anywhere else go to the handler that was installed before ours (std's,
//! or the default action).
//!
//! Invariants:
//! - `LOOKUP` (set once, by the first runtime) gives the [`TaskInfo`] of the task running
//!   on this thread, or null: `context.rs`'s running-task pointer, which the scheduler
//!   sets at each switch anyway, so this costs the switch nothing. The info lives in the
//!   task's record (and its name in the task's name), which the scheduler keeps alive
//!   while the task runs.
//! - The handler only reads thread-locals with constant initialisers (no lazy init, no
//!   allocation), formats into a stack buffer and calls `write` and `abort`, all of which
//!   are async-signal-safe.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Once;
use std::sync::OnceLock;

/// What the handler needs to know about a task; kept in the task's record.
#[derive(Clone, Copy)]
pub(crate) struct TaskInfo {
    guard: (usize, usize),
    name: *const u8,
    name_len: usize,
    stack_size: usize,
    serial: u64,
}

thread_local! {
    static ALTSTACK: Cell<bool> = const { Cell::new(false) };
}

/// The handlers that were installed before ours, to pass other faults on to.
static PREVIOUS: OnceLock<[Prev; 2]> = OnceLock::new();
static INSTALL: Once = Once::new();
/// Finds the running task's info; reads only a constant-initialised thread-local.
static LOOKUP: OnceLock<fn() -> *const TaskInfo> = OnceLock::new();

#[derive(Clone, Copy)]
struct Prev {
    signal: libc::c_int,
    action: libc::sigaction,
}

// SAFETY: `sigaction` is plain data (a function address, flags and a signal mask); it is
// written once before any reader can see it (through `OnceLock`).
unsafe impl Sync for Prev {}
// SAFETY: as for `Sync`: plain data with no thread affinity.
unsafe impl Send for Prev {}

fn page_size() -> usize {
    // Asked once: this runs at every spawn.
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p).unwrap_or(4096)
    })
}

/// Installs the process-wide handler (once) and this thread's alternate signal stack (if
/// it has none). Called when a runtime is created on a thread; `lookup` gives the running
/// task's info (null when none runs) and must be async-signal-safe.
pub(crate) fn init_thread(lookup: fn() -> *const TaskInfo) {
    let _ = LOOKUP.set(lookup);
    INSTALL.call_once(install_handlers);
    if ALTSTACK.with(Cell::get) {
        return;
    }
    ALTSTACK.with(|c| c.set(true));
    let mut old = MaybeUninit::<libc::stack_t>::uninit();
    // SAFETY: querying the current alternate stack; `old` is valid for writing.
    if unsafe { libc::sigaltstack(ptr::null(), old.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: sigaltstack succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    if old.ss_flags & libc::SS_DISABLE == 0 {
        return; // std (or someone) gave this thread one already
    }
    let size = 64 * 1024;
    // SAFETY: an anonymous private mapping; the result is checked below.
    let mem = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return;
    }
    let stack = libc::stack_t {
        ss_sp: mem,
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `stack` describes the mapping above, which is never unmapped: it stays valid
    // for the thread's whole life (64 KiB per thread that runs a copas runtime).
    unsafe { libc::sigaltstack(&stack, ptr::null_mut()) };
}

fn install_handlers() {
    let mut prev = [Prev {
        signal: 0,
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags, empty mask).
        action: unsafe { std::mem::zeroed() },
    }; 2];
    for (slot, signal) in prev.iter_mut().zip([libc::SIGSEGV, libc::SIGBUS]) {
        // SAFETY: an all-zero sigaction is valid; the fields are set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action.sa_mask` is valid memory for sigemptyset.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        slot.signal = signal;
        // SAFETY: valid pointers to a new action and to storage for the old one.
        unsafe { libc::sigaction(signal, &action, &mut slot.action) };
    }
    let _ = PREVIOUS.set(prev);
}

impl TaskInfo {
    /// The record for a task whose stack's guard page is `guard`; `name` must live as
    /// long as the record.
    pub(crate) fn new(
        guard: (usize, usize),
        name: Option<&str>,
        stack_size: usize,
        serial: u64,
    ) -> TaskInfo {
        let (name, name_len) = name.map_or((ptr::null(), 0), |s| (s.as_ptr(), s.len()));
        TaskInfo {
            guard,
            name,
            name_len,
            stack_size,
            serial,
        }
    }
}

impl TaskInfo {
    /// The usable pages of the task's stack, `[lo, hi)`: above the guard page, the
    /// requested size rounded up to whole pages (as both kinds of stack are laid out).
    pub(crate) fn stack_range(&self) -> (usize, usize) {
        let page = page_size();
        let lo = self.guard.1;
        (lo, lo + self.stack_size.max(page).div_ceil(page) * page)
    }

    pub(crate) fn stack_size(&self) -> usize {
        self.stack_size
    }
}

/// The guard page of a stack whose lowest address (guard included) is `limit`.
pub(crate) fn guard_range(limit: usize) -> (usize, usize) {
    (limit, limit + page_size())
}

/// A small formatter into a fixed buffer, for use in the signal handler.
struct Msg {
    buf: [u8; 512],
    len: usize,
}

impl Msg {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let running = LOOKUP.get().map_or(ptr::null(), |f| f());
    // SAFETY: by the module invariant, a non-null pointer is the running task's info,
    // alive while it runs; a fault on this thread happens while it runs.
    let running = (!running.is_null()).then(|| unsafe { *running });
    if let Some(running) = running.filter(|r| r.guard.0 <= addr && addr < r.guard.1) {
        let mut msg = Msg {
            buf: [0; 512],
            len: 0,
        };
        msg.push(b"\ncopas: task ");
        let (name, len) = (running.name, running.name_len);
        if name.is_null() {
            msg.push(b"#");
            msg.push_num(running.serial);
        } else {
            msg.push(b"'");
            // SAFETY: by the module invariant, `name` points at `len` bytes of the running
            // task's name, alive while the task runs (and it is running: it faulted).
            msg.push(unsafe { std::slice::from_raw_parts(name, len) });
            msg.push(b"' (#");
            msg.push_num(running.serial);
            msg.push(b")");
        }
        msg.push(b" has overflowed its stack of ");
        msg.push_num(running.stack_size as u64);
        msg.push(b" bytes; raise it with copas::Builder::stack_size or Runtime::set_default_stack_size\nfatal runtime error: stack overflow, aborting\n");
        // SAFETY: write and abort are async-signal-safe; the buffer is valid for `len`.
        unsafe {
            libc::write(2, msg.buf.as_ptr().cast(), msg.len);
            libc::abort();
        }
    }
    // Not ours: hand over to whoever handled this signal before.
    let Some(prev) = PREVIOUS
        .get()
        .and_then(|p| p.iter().find(|p| p.signal == signal))
    else {
        return;
    };
    let action = prev.action;
    if action.sa_sigaction == libc::SIG_DFL || action.sa_sigaction == libc::SIG_IGN {
        // Restore the default and return: the faulting instruction runs again and the
        // default action (a core dump) happens.
        // SAFETY: valid pointer to the saved action.
        unsafe { libc::sigaction(signal, &action, ptr::null_mut()) };
    } else if action.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed as an SA_SIGINFO handler with this
        // signature; we call it with the arguments we were given.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(action.sa_sigaction) };
        f(signal, info, ctx);
    } else {
        // SAFETY: a plain handler installed with this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action.sa_sigaction) };
        f(signal);
    }
}
