//! # copas
//!
//! A dispatcher that runs every TCP connection handler as a stackful coroutine, after Lua's
//! [Copas](https://lunarmodules.github.io/copas/). A handler is an ordinary synchronous
//! function — `let line = sock.receive_line()?; sock.send(b"...")?;` — and yet thousands of
//! connections are served by one thread: when a call would block, the task yields to the
//! readiness loop, which resumes it when its socket is ready.
//!
//! ```
//! use copas::TcpStream;
//!
//! // Copas `addserver`: an echo server on a free loopback port.
//! let server = copas::add_server("127.0.0.1:0", |mut conn: TcpStream| {
//!     while let Some(line) = conn.receive_line()? {
//!         if &line[..] == b"quit" {
//!             break;
//!         }
//!         conn.send(&line)?;
//!         conn.send(b"\n")?;
//!     }
//!     Ok(())
//! })?;
//! let addr = server.local_addr();
//!
//! // Copas `addthread`: a client in the same thread.
//! let client = copas::spawn(move || -> std::io::Result<_> {
//!     let mut sock = TcpStream::connect(addr)?;
//!     sock.send(b"hello\nquit\n")?;
//!     let reply = sock.receive_line()?;
//!     server.stop();
//!     Ok(reply)
//! });
//!
//! // Copas `loop`: returns once the server is stopped and the client is done.
//! copas::run()?;
//! assert_eq!(client.join().unwrap()?.as_deref(), Some(&b"hello"[..]));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! This crate re-exports [`copas_core`] (the scheduler: tasks, timers, sleeping, wake-ups)
//! and [`copas_net`] (the readiness loop and sockets), so everything is `copas::...`.
//!
//! # Crate features
//! - `tls` (off by default): TLS on rustls (ring provider) — `tls::TlsStream` with the
//!   calls of `TcpStream`, TLS servers (`ServerBuilder::tls`, `tls::add_server`) and
//!   verifying client configurations (`tls::client_config`, webpki-roots). See
//!   `docs/tls.md`.
//! - `hook` (off by default): `copas::hook`, the `copas_hook` crate. After
//!   `copas::hook::install()`, blocking libc calls made inside tasks — by `std::net`,
//!   `std::thread::sleep` or any library built on them — suspend the task instead of the
//!   thread. Linux with glibc only; see `docs/hook.md`.
//! - `tracing` (off by default): spans per task and per connection, events for panics,
//!   cancellations, timeouts, accept errors and blocked-loop warnings, through the
//!   `tracing` crate; compiled out when off. See `docs/diagnostics.md`.
//!
//! # Threads
//! One runtime per thread, created on first use. Tasks and sockets never leave their
//! thread, so they are `!Send` and may use `Rc` and `RefCell` freely. To use several cores,
//! [`Threads`] starts one runtime per thread, each with its own listener on one address
//! (`SO_REUSEPORT`), running the same setup; [`ThreadGroup`] exits, shuts down, queries and
//! joins them. The pieces that cross threads: [`Handle`] (spawn on, or exit, another
//! thread's runtime; [`Runtime::spawn_thread`] starts one), [`sync::channel`],
//! [`unblock`] (blocking work on a worker pool), [`block_on`] (any `Future`) and
//! [`Task::unpark`]. See `docs/embedding.md` for embedding copas in blocking and threaded
//! programs.
//!
//! # Child processes
//! [`process`] spawns children whose pipes and exit suspend the task (a pidfd on Linux);
//! see `docs/processes-and-threads.md`.
//!
//! # Panics
//! A panic in a handler or task is caught at the task's root and reported to the error
//! handler ([`Runtime::set_error_handler`]) with the task's name and, for connection
//! handlers, the peer address; the loop and the other connections go on, and the panicking
//! connection's socket is closed by its destructor.
#![warn(missing_docs, missing_debug_implementations)]

pub use copas_core::*;
pub use copas_net::*;

/// Unmodified blocking code (`std::net`, `std::thread::sleep`, third-party sync clients)
/// yields inside tasks: the [`copas_hook`] crate, with the `hook` feature.
#[cfg(feature = "hook")]
pub use copas_hook as hook;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[doc = include_str!("../docs/embedding.md")]
#[cfg(doctest)]
pub struct EmbeddingDoctests;
