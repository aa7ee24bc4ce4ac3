//! A task dump on `SIGUSR1` ([`dump_on_sigusr1`]): the signal handler writes one byte to
//! a pipe (the self-pipe trick: `write` is async-signal-safe, nothing else runs in the
//! handler); a thread of its own blocks reading the pipe and, for each byte, asks every
//! registered runtime for its dump through its [`Handle`] and prints it to stderr. So
//! nothing polls, the loop is not kept alive by the dump, and a blocked loop still gets a
//! line (the dump request times out and says which task runs).
//!
//! Invariant: `WRITE_FD` is -1 or the write end of the pipe, which is never closed; the
//! handler reads only that atomic and calls `write`.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::remote::Handle;
use crate::runtime::Runtime;

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static HANDLES: Mutex<Vec<Handle>> = Mutex::new(Vec::new());

fn lock() -> MutexGuard<'static, Vec<Handle>> {
    HANDLES.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(target_os = "linux")]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno slot; no preconditions.
    unsafe { libc::__errno_location() }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno slot; no preconditions.
    unsafe { libc::__error() }
}

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let errno = errno_location();
    // SAFETY: reading this thread's errno slot, valid for the thread's life.
    let saved = unsafe { *errno };
    let byte = 1u8;
    // SAFETY: `write` is async-signal-safe; `byte` is valid for one byte; the pipe's write
    // end is non-blocking, so a full pipe (dumps already pending) loses nothing needed.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    // SAFETY: as above; the interrupted code must see its own errno.
    unsafe { *errno = saved };
}

fn start() -> io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read, write] = fds;
    for fd in fds {
        // SAFETY: fcntl on descriptors we just created; only flags change.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: as above.
    let flags = unsafe { libc::fcntl(write, libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(write, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    WRITE_FD.store(write, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("copas-sigusr1".into())
        .spawn(move || reader(read))?;
    // SAFETY: an all-zero sigaction is valid (no flags, empty mask); the handler is set
    // below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa_mask` is valid memory for sigemptyset.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a valid action whose handler only makes async-signal-safe calls.
    if unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn reader(fd: libc::c_int) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for writing 64 bytes; `fd` is the pipe's read end, owned
        // by this thread for the life of the process.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return;
        }
        let handles: Vec<Handle> = lock().clone();
        let mut gone = Vec::new();
        for (i, h) in handles.iter().enumerate() {
            match h.dump() {
                Ok(text) => eprint!("{text}"),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => gone.push(i),
                Err(e) => eprintln!("{e}"),
            }
        }
        if !gone.is_empty() {
            let mut list = lock();
            list.retain(|h| {
                !gone
                    .iter()
                    .any(|&i| std::sync::Arc::ptr_eq(&handles[i].remote, &h.remote))
            });
        }
    }
}

/// Prints [`Runtime::dump`] of the current thread's runtime to stderr each time the
/// process receives `SIGUSR1` (`kill -USR1 PID`). The signal handler only writes a byte
/// to a pipe; a thread named `copas-sigusr1` reads it and asks the runtime for its dump
/// through its [`Handle`], so the loop answers at its next step. If a task blocks the
/// loop, that thread prints which task runs and for how long instead. Calling it from
/// several threads dumps each of their runtimes; calling it twice on one thread does
/// nothing more. It replaces any `SIGUSR1` handler installed before.
///
/// # Errors
/// When the pipe, the thread or the handler cannot be set up (the OS error).
///
/// # Examples
/// ```no_run
/// copas_core::dump_on_sigusr1().expect("install the SIGUSR1 dump");
/// copas_core::run().unwrap();
/// ```
pub fn dump_on_sigusr1() -> io::Result<()> {
    let handle = Runtime::current().handle();
    let mut list = lock();
    if WRITE_FD.load(Ordering::Relaxed) < 0 {
        start()?;
    }
    if !list
        .iter()
        .any(|h| std::sync::Arc::ptr_eq(&h.remote, &handle.remote))
    {
        list.push(handle);
    }
    Ok(())
}
