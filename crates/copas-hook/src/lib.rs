//! # copas-hook
//!
//! Unmodified blocking code — `std::net`, `std::thread::sleep`, a third-party client
//! built on them — cooperates with copas: inside a task, a call that would block the
//! thread suspends the task instead, and the loop serves the other tasks meanwhile.
//!
//! It works by interposition, as C and C++ stackful runtimes do (libco, libgo): this
//! crate defines `read`, `write`, `connect`, `poll`, `nanosleep` and the other blocking
//! libc functions itself, and reaches the real ones with `dlsym(RTLD_NEXT)`. Inside a
//! copas task, on a socket the user left blocking, a hooked call becomes a non-blocking
//! try plus a wait on the reactor, with the errno, partial counts and timeouts blocking
//! code expects. Everywhere else — outside tasks, on non-blocking sockets, on files and
//! pipes — the real function runs unchanged. `docs/hook.md` lists what is hooked and
//! what is not, and why.
//!
//! Nothing changes until [`install`] is called: the functions are defined whenever the
//! crate is linked, but pass every call straight through (one relaxed atomic load).
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::time::Duration;
//!
//! // Fails with a clear error on a static or musl build, or another OS.
//! copas_hook::install()?;
//! // A plain std listener and std clients, all in tasks of one thread.
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = copas_core::spawn(move || {
//!     for _ in 0..2 {
//!         let (mut conn, _) = listener.accept().unwrap();
//!         copas_core::spawn(move || {
//!             let mut line = String::new();
//!             BufReader::new(conn.try_clone().unwrap()).read_line(&mut line).unwrap();
//!             std::thread::sleep(Duration::from_millis(20)); // yields, not blocks
//!             conn.write_all(line.as_bytes()).unwrap();
//!         });
//!     }
//! });
//! let clients: Vec<_> = (0..2)
//!     .map(|i| {
//!         copas_core::spawn(move || {
//!             let mut s = std::net::TcpStream::connect(addr).unwrap();
//!             writeln!(s, "hello {i}").unwrap();
//!             let mut line = String::new();
//!             BufReader::new(s).read_line(&mut line).unwrap();
//!             line
//!         })
//!     })
//!     .collect();
//! copas_core::run().unwrap();
//! server.join().unwrap();
//! for (i, c) in clients.into_iter().enumerate() {
//!     assert_eq!(c.join().unwrap(), format!("hello {i}\n"));
//! }
//! # Ok::<(), copas_hook::HookError>(())
//! ```
//!
//! # Scope
//! Linux with glibc, dynamically linked, on x86-64 or AArch64. Elsewhere (a static
//! build, musl, another OS or architecture) the crate defines no symbols and [`install`]
//! returns [`HookError::Unsupported`].
//!
//! # Threads
//! The hooks are process-wide; what they do depends on the calling thread. A thread
//! without copas, or code outside any task, gets the real calls (a listener that a task
//! made non-blocking for its `accept` keeps blocking for them: the hooks wait with the
//! real `poll`). An fd may move between tasks and plain threads freely.
//!
//! # Panics
//! Never: a hook cannot unwind into C. When the runtime unwinds a task at shutdown, the
//! hooked call it waits in fails with `ECANCELED` instead.
#![warn(missing_docs, missing_debug_implementations)]

use std::fmt;

#[cfg(copas_hooks)]
mod block;
#[cfg(copas_hooks)]
mod fdtab;
#[cfg(copas_hooks)]
mod hooks;
#[cfg(copas_hooks)]
mod poll;
#[cfg(copas_hooks)]
mod sys;
#[cfg(copas_hooks)]
mod wait;

/// Why [`install`] could not turn the hooks on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// This build cannot interpose libc: the platform is not dynamically linked Linux with
    /// glibc on x86-64 or AArch64. The string says what this build is.
    Unsupported(&'static str),
    /// The program does not call this crate's definition of the named function (the
    /// dynamic linker found another one first, e.g. an `LD_PRELOAD` library's).
    NotInterposed(&'static str),
    /// The real function behind the named hook could not be found with `dlsym`.
    NoRealFunction(&'static str),
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Unsupported(what) => write!(
                f,
                "copas-hook: hooks are unavailable in this build ({what}); they need Linux \
                 with glibc, dynamically linked, on x86-64 or AArch64"
            ),
            HookError::NotInterposed(name) => write!(
                f,
                "copas-hook: `{name}` does not resolve to the hook in this program (another \
                 definition comes first); hooks stay off"
            ),
            HookError::NoRealFunction(name) => write!(
                f,
                "copas-hook: the real `{name}` cannot be found with dlsym(RTLD_NEXT); hooks \
                 stay off"
            ),
        }
    }
}

impl std::error::Error for HookError {}

impl From<HookError> for std::io::Error {
    fn from(e: HookError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, e)
    }
}

/// Turns the hooks on for the whole process, from now on. Call it once at the start of
/// `main`; calling it again does nothing and returns `Ok`.
///
/// It checks that the hooks are live — that every hooked name resolves to this crate's
/// definition in the program's global scope, and that the real function behind it is
/// found — and only then turns them on. Referencing the hooks here also keeps the linker
/// from dropping them.
///
/// # Errors
/// [`HookError::Unsupported`] on a platform or build where interposition cannot work
/// (nothing is hooked there); [`HookError::NotInterposed`] or
/// [`HookError::NoRealFunction`] when the check fails (hooks stay off).
///
/// # Examples
/// ```
/// match copas_hook::install() {
///     Ok(()) => assert!(copas_hook::is_installed()),
///     Err(e) => eprintln!("running without hooks: {e}"),
/// }
/// ```
pub fn install() -> Result<(), HookError> {
    install_imp()
}

#[cfg(copas_hooks)]
fn install_imp() -> Result<(), HookError> {
    use std::sync::atomic::Ordering;
    if block::installed() {
        return Ok(());
    }
    for (name, ours) in hooks::table() {
        let shown = name.to_str().unwrap_or("?");
        let shown: &'static str = Box::leak(shown.into());
        if sys::default_symbol(name) != ours {
            return Err(HookError::NotInterposed(shown));
        }
        let real = sys::next_symbol(name);
        if real == 0 || real == ours {
            return Err(HookError::NoRealFunction(shown));
        }
    }
    block::INSTALLED.store(true, Ordering::Release);
    Ok(())
}

#[cfg(not(copas_hooks))]
fn install_imp() -> Result<(), HookError> {
    Err(HookError::Unsupported(
        if cfg!(target_feature = "crt-static") {
            "statically linked"
        } else if cfg!(target_env = "musl") {
            "musl libc"
        } else if cfg!(target_os = "linux") {
            "a Linux target other than glibc on x86-64 or AArch64"
        } else {
            "not Linux"
        },
    ))
}

/// Whether [`install`] has turned the hooks on.
pub fn is_installed() -> bool {
    #[cfg(copas_hooks)]
    return block::installed();
    #[cfg(not(copas_hooks))]
    return false;
}

/// Runs `f` with the hooks passing the current task's calls straight through: a blocking
/// call inside blocks the whole thread, as without hooks. For code that must not be
/// suspended (it holds a lock another task would wait for, it measures a real sleep), or
/// to compare. Outside a task it just runs `f`. Scopes nest; other tasks are not
/// affected, even if `f` suspends the task through copas's own calls.
///
/// # Examples
/// ```
/// let took = copas_core::spawn(|| {
///     copas_hook::passthrough(|| {
///         let t = std::time::Instant::now();
///         std::thread::sleep(std::time::Duration::from_millis(1)); // really sleeps
///         t.elapsed()
///     })
/// });
/// copas_core::run().unwrap();
/// assert!(took.join().unwrap() >= std::time::Duration::from_millis(1));
/// ```
pub fn passthrough<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(copas_hooks)]
    return block::passthrough(f);
    #[cfg(not(copas_hooks))]
    return f();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_is_missing() {
        let e = HookError::Unsupported("musl libc").to_string();
        assert!(e.contains("unavailable") && e.contains("musl libc"), "{e}");
        let e = HookError::NotInterposed("read").to_string();
        assert!(e.contains("`read`") && e.contains("stay off"), "{e}");
        let io: std::io::Error = HookError::NoRealFunction("poll").into();
        assert_eq!(io.kind(), std::io::ErrorKind::Unsupported);
    }

    #[cfg(copas_hooks)]
    #[test]
    fn install_finds_every_hook_live() {
        install().unwrap();
        assert!(is_installed());
        install().unwrap();
    }
}
